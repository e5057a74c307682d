"""Aggregate: a consistency boundary whose state is rebuilt from its own stream.

Subclass it, give it ``apply_<EventType>(self, event)`` handlers that change the
state, and command methods that check the rules and call :meth:`emit`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .errors import EventlabError, UnknownEventError
from .events import Event, RecordedEvent

if TYPE_CHECKING:
    from .store import EventStore


class Aggregate:
    """Base class for event-sourced aggregates.

    A subclass's ``__init__`` takes the aggregate's id (its stream id) and sets
    the blank state; handlers named ``apply_<EventType>`` evolve it. Command
    methods validate and call :meth:`emit`, which applies the event at once and
    queues it until :meth:`save`.

    Attributes
    ----------
    id : str
        The stream id.
    version : int
        The stream version this state corresponds to, queued events included.
    ignore_unknown : bool
        Class attribute: skip event types without a handler instead of raising
        :class:`~eventlab.UnknownEventError`.

    Examples
    --------
    >>> import eventlab as el
    >>> class Counter(el.Aggregate):
    ...     def __init__(self, id):
    ...         super().__init__(id)
    ...         self.count = 0
    ...     def increment(self, by=1):
    ...         self.emit("Incremented", {"by": by})
    ...     def apply_Incremented(self, event):
    ...         self.count += event.data["by"]
    >>> store = el.EventStore()
    >>> counter = Counter.load(store, "counter-1")
    >>> counter.increment(2)
    >>> _ = counter.save(store)
    >>> Counter.load(store, "counter-1").count
    2
    """

    ignore_unknown: bool = False
    #: Take a snapshot on save whenever the stream crosses a multiple of this many versions.
    snapshot_every: int | None = None
    #: The version of the state's shape; snapshots of another version are ignored.
    schema_version: int = 1

    def __init__(self, id: str):
        self.id = id
        self._loaded_version = 0
        self._pending: list[Event] = []

    # ---------------------------------------------------------------- loading and saving

    @classmethod
    def load(
        cls,
        store: EventStore,
        stream_id: str,
        *,
        version: int | None = None,
        at: datetime | str | None = None,
        known_at: datetime | str | None = None,
    ):
        """Rebuild the aggregate from its stream, optionally as it was at some point.

        ``version=n`` stops after the first n events; ``at`` keeps events that
        occurred by then (business time); ``known_at`` keeps events recorded by
        then (knowledge time). A stream that does not exist yet gives a blank
        aggregate at version 0. An aggregate loaded as of the past (a ``version``
        before the stream's end, or ``at``/``known_at``) refuses to :meth:`save`.
        """
        return store.state_at(stream_id, cls, version=version, at=at, known_at=known_at)

    def save(self, store: EventStore) -> list[RecordedEvent]:
        """Append the queued events, expecting the version the aggregate was loaded at.

        Raises :class:`~eventlab.ConcurrencyError` (and writes nothing) when
        someone else appended to the stream since. An aggregate loaded as of the
        past (``version`` before the end, ``at`` or ``known_at``) refuses to save.

        When the save crosses a multiple of ``snapshot_every``, the snapshot
        commits with the events, in the same transaction: inside a
        ``store.transaction()`` block that rolls back, neither is kept.
        """
        if getattr(self, "_as_of", None):
            raise EventlabError(
                f"this {type(self).__name__} was loaded as of the past ({self._as_of}), so its "
                f"state may leave out events that exist today; load it without "
                f"version/at/known_at to change it"
            )
        before, after = self._loaded_version, self.version
        snapshot = None
        if type(self).snapshot_every:  # checked first: most aggregates take no snapshots
            from . import snapshots

            policy = snapshots.policy_of(type(self))
            if policy is not None and before // policy.every < after // policy.every:
                # Encoded before appending, so a state that is not JSON writes nothing.
                snapshot = snapshots.encode_state(policy, self, self.id)
        if snapshot is None:
            recorded = store.append(self.id, self._pending, expected_version=before)
        else:
            # Staged as a side row of the append's transaction (the caller's, if one is
            # open), so it commits, or rolls back, with the events it folds.
            with store.transaction():
                recorded = store.append(self.id, self._pending, expected_version=before)
                snapshots.stage(store, policy, self.id, after, snapshot)
        self._loaded_version = after
        self._pending = []
        return recorded

    @property
    def version(self) -> int:
        return self._loaded_version + len(self._pending)

    @property
    def pending_events(self) -> list[Event]:
        """Events emitted since the last load or save, not yet stored."""
        return list(self._pending)

    # ---------------------------------------------------------------- emitting and applying

    def emit(
        self,
        type: str,
        data: Mapping[str, Any] | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        occurred_at: datetime | str | None = None,
    ) -> Event:
        """Record that something happened: apply it now and queue it for :meth:`save`."""
        event = Event(type, dict(data or {}), metadata=metadata, occurred_at=occurred_at)
        self._apply(event)
        self._pending.append(event)
        return event

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._handlers: dict[str, Any] = {}  # event type -> apply_ function (or None)

    _handlers: dict[str, Any] = {}

    @classmethod
    def _handler_for(cls, event_type: str) -> Any:
        """The ``apply_<event_type>`` function, or None; looked up once per class and type."""
        # Replays ask for every event, and getattr on a class walks its whole MRO.
        try:
            return cls._handlers[event_type]
        except KeyError:
            handler = cls._handlers[event_type] = getattr(cls, f"apply_{event_type}", None)
            return handler

    def _apply(self, event: Event | RecordedEvent) -> None:
        handler = self._handler_for(event.type)
        if handler is not None:
            handler(self, event)
        elif not self.ignore_unknown:
            name = type(self).__name__
            if event.type.isidentifier():
                fix = f"add a method apply_{event.type}(self, event)"
            else:  # e.g. "order.placed": no method can be named after it
                fix = (
                    f"{event.type!r} is not a Python name, so no apply_ method can handle "
                    f"it: fold such events with a function reducer (state, event) -> state "
                    f"that checks event.type (el.replay, store.state_at)"
                )
            raise UnknownEventError(
                f"{name} has no handler for {event.type} events (stream {self.id!r}); "
                f"{fix}, or set ignore_unknown = True on the class to skip such events"
            )

    def _replay(self, event: RecordedEvent) -> None:
        self._apply(event)
        self._loaded_version = event.version

    def _loaded(self, version: int, as_of: str | None = None) -> None:
        self._loaded_version = version
        self._as_of = as_of

    def _snapshot_state(self) -> dict[str, Any]:
        internal = ("_pending", "_loaded_version", "_as_of")
        return {k: v for k, v in vars(self).items() if k not in internal}

    @classmethod
    def _from_snapshot(cls, state: dict[str, Any], stream_id: str, version: int):
        aggregate = cls.__new__(cls)
        aggregate.__dict__.update(state)
        aggregate.id = stream_id
        aggregate._pending = []
        aggregate._loaded_version = version
        return aggregate

    def __repr__(self) -> str:
        state = {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "id"}
        return f"{type(self).__name__}(id={self.id!r}, version={self.version}, {state})"

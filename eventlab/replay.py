"""Replay: the current state is a fold over the history, so any past state can be rebuilt.

A *reducer* is either a function ``reducer(state, event) -> state`` or an
:class:`~eventlab.Aggregate` subclass. Time travel filters the history before
folding it: by version (the first n events), by business time (``occurred_at``)
and by knowledge time (``recorded_at``).

Undo never deletes: :meth:`EventStore.revert` appends a ``Reverted`` event, and
replay, for every reducer, treats it as "the stream's state returns to what it
was at version n". Reducers never see ``Reverted`` events themselves.
"""

from __future__ import annotations

import copy
import gc
from collections.abc import Callable, Iterable, MutableMapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .errors import EventlabError, InvalidEventError, ReplayError, VersionNotFoundError
from .events import RecordedEvent, check_name

if TYPE_CHECKING:
    from .store import EventStore

REVERTED = "Reverted"

Reducer = Callable[[Any, RecordedEvent], Any]


def effective_events(events: Iterable[RecordedEvent]) -> list[RecordedEvent]:
    """The events a fold must apply once every ``Reverted`` is taken into account.

    Each stream's history is a chain: an ordinary event extends the chain of the
    version before it, and ``Reverted(to_version=n)`` continues from the chain
    of version n (the latest present version at or before n). Following the
    last chain back gives the events that make today's state, so a revert of a
    revert simply continues from the state the first revert replaced.
    """
    events = list(events)
    chains: dict[str, dict[int, tuple | None]] = {}  # stream -> version -> chain node
    last: dict[str, tuple | None] = {}
    reverts = False
    for event in events:
        nodes = chains.setdefault(event.stream_id, {})
        if event.type == REVERTED:
            reverts = True
            node = _node_at(nodes, _target(event))
        else:
            node = (event, last.get(event.stream_id))
        nodes[event.version] = node
        last[event.stream_id] = node
    if not reverts:
        return [e for e in events if e.type != REVERTED]
    keep: set[int] = set()
    for node in last.values():
        while node is not None:
            keep.add(node[0].position)
            node = node[1]
    return [event for event in events if event.position in keep]


def _target(event: RecordedEvent) -> int:
    target = event.data.get("to_version")
    if isinstance(target, bool) or not isinstance(target, int) or target < 0:
        raise EventlabError(
            f"the Reverted event at position {event.position} (stream {event.stream_id!r}) "
            f"has no valid to_version: {target!r}; append reverts with store.revert()"
        )
    return target


def _node_at(nodes: dict[int, tuple | None], version: int) -> tuple | None:
    """The chain at ``version``, or at the latest version before it that is present."""
    present = [v for v in nodes if v <= version]
    return nodes[max(present)] if present else None


def replay(events: Iterable[RecordedEvent], reducer: Any, initial: Any = None) -> Any:
    """Fold ``events`` into a state.

    Parameters
    ----------
    events : iterable of RecordedEvent
        In position (or version) order, e.g. ``store.read_stream("order-1")``.
    reducer : callable or Aggregate subclass
        ``reducer(state, event) -> state``, or an :class:`~eventlab.Aggregate`
        subclass whose ``apply_<Type>`` methods handle the events.
    initial : object, optional
        The state before the first event (deep-copied, so it is never mutated);
        ignored for aggregates, which start blank.

    Returns
    -------
    object
        The state after the last event (an aggregate instance for aggregates).

    Raises
    ------
    ReplayError
        A reducer raised; names the stream, version, position and event type.

    Examples
    --------
    >>> import eventlab as el
    >>> store = el.EventStore()
    >>> _ = store.append("cart-1", [el.Event("Added", {"n": 2}), el.Event("Added", {"n": 3})])
    >>> el.replay(store.read_stream("cart-1"), lambda total, e: total + e.data["n"], 0)
    5
    """
    events = list(events)
    fold = _Fold(reducer, initial)
    # The stream id and version come from the whole history: reverted events
    # still count, even when none of them is folded.
    state = fold.run(effective_events(events), _first_stream(events))
    if fold.is_aggregate and events:
        state._loaded(events[-1].version)
    return state


class _Fold:
    """Applies events to a state with one reducer, wrapping reducer failures."""

    def __init__(self, reducer: Any, initial: Any):
        from .aggregate import Aggregate

        self.is_aggregate = isinstance(reducer, type) and issubclass(reducer, Aggregate)
        if not self.is_aggregate and not callable(reducer):
            raise EventlabError(
                f"a reducer is a function (state, event) -> state or an el.Aggregate "
                f"subclass, got {type(reducer).__name__}: {reducer!r:.60}"
            )
        self.reducer = reducer
        self.initial = initial
        self.name = getattr(reducer, "__qualname__", None) or repr(reducer)
        self._fresh = _copier(initial)

    def start(self, stream_id: str | None) -> Any:
        if self.is_aggregate:
            return self.reducer(stream_id)
        return self._fresh(self.initial)

    def apply(self, state: Any, event: RecordedEvent) -> Any:
        try:
            if self.is_aggregate:
                state._replay(event)
                return state
            return self.reducer(state, event)
        except EventlabError:
            raise
        except Exception as exc:
            raise ReplayError(event, self.name, exc) from exc

    def run(self, events: list[RecordedEvent], stream_id: str | None = None) -> Any:
        state = self.start(stream_id if stream_id is not None else _first_stream(events))
        for event in events:
            state = self.apply(state, event)
        return state

    def fold_streams(
        self,
        batches: Iterable[list[RecordedEvent]],
        states: MutableMapping[str, Any],
        on_revert: Callable[[RecordedEvent], Any],
    ) -> None:
        """Fold lists of records of many interleaved streams into ``states`` (id -> state).

        The bulk replay's inner loop: the same as :meth:`start` and :meth:`apply`
        per event, inlined, because at a million events every call counts.
        A ``Reverted`` record's state is ``on_revert(record)`` instead.
        """
        if self.is_aggregate:
            for records in batches:
                self._fold_aggregates(records, states, on_revert)
        else:
            for records in batches:
                self._fold_functions(records, states, on_revert)

    def _fold_aggregates(self, records, states, on_revert) -> None:
        cls, reverted = self.reducer, REVERTED
        handler_of, handler_for = cls._handlers.get, cls._handler_for
        get = states.get
        # Records are tuples laid out as RECORD_FIELDS: 2 stream_id, 3 version, 4 type.
        for event in records:
            stream_id, kind = event[2], event[4]
            if kind == reverted:
                states[stream_id] = on_revert(event)
                continue
            aggregate = get(stream_id)
            if aggregate is None:
                aggregate = states[stream_id] = cls(stream_id)
            handler = handler_of(kind)
            if handler is None:  # not looked up yet, or no handler
                handler = handler_for(kind)
            if handler is None:
                aggregate._apply(event)  # skips it or raises UnknownEventError
            else:
                try:
                    handler(aggregate, event)
                except EventlabError:
                    raise
                except Exception as exc:
                    raise ReplayError(event, self.name, exc) from exc
            aggregate._loaded_version = event[3]

    def _fold_functions(self, records, states, on_revert) -> None:
        reducer, fresh, initial = self.reducer, self._fresh, self.initial
        get, reverted, unseen = states.get, REVERTED, _UNSEEN
        for event in records:
            stream_id = event[2]
            if event[4] == reverted:
                states[stream_id] = on_revert(event)
                continue
            state = get(stream_id, unseen)
            if state is unseen:
                state = fresh(initial)
            try:
                states[stream_id] = reducer(state, event)
            except EventlabError:
                raise
            except Exception as exc:
                raise ReplayError(event, self.name, exc) from exc


_UNSEEN = object()


def _copier(initial: Any) -> Callable[[Any], Any]:
    """A function giving a fresh deep copy of ``initial`` for each stream, as cheap as it can be.

    ``copy.deepcopy`` costs microseconds even for a three-key dict, which adds
    up over a hundred thousand streams; a value that is immutable needs no copy
    at all, and a plain dict of immutable values only a shallow one.
    """
    if _is_atom(initial):
        return _same
    if type(initial) is dict and all(map(_is_atom, [*initial, *initial.values()])):
        return dict.copy
    return copy.deepcopy


def _is_atom(value: Any) -> bool:
    if type(value) is tuple:
        return all(map(_is_atom, value))
    return value is None or type(value) in (bool, int, float, complex, str, bytes)


def _same(value: Any) -> Any:
    return value


class paused_gc:  # noqa: N801 - used like a function: ``with paused_gc():``
    """Pause the cyclic garbage collector for a bulk fold.

    A bulk replay creates millions of long-lived objects (payload dicts, records,
    states), and each allocation burst makes the collector walk the ever-growing
    heap again; it found nothing to free here and took half the replay's time.
    Reference counting still frees everything as usual; only cycles wait until
    the collector resumes. A pause inside another one (or inside a caller's own
    ``gc.disable()``) does not turn the collector back on.

    A class rather than a ``@contextmanager`` generator: the scheduler enters one
    per batch, and in a simulation that is once per command.
    """

    __slots__ = ("was_enabled",)

    def __enter__(self) -> None:
        self.was_enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc_info: object) -> None:
        if self.was_enabled:
            gc.enable()


def _first_stream(events: list[RecordedEvent]) -> str | None:
    return events[0].stream_id if events else None


def stream_history(
    store: EventStore,
    stream_id: str,
    *,
    version: int | None = None,
    at: datetime | str | None = None,
    known_at: datetime | str | None = None,
    after: int = 0,
) -> list[RecordedEvent]:
    """The stream's events after version ``after`` and up to ``version``, occurred by ``at``
    and recorded by ``known_at``."""
    check_name("stream_id", stream_id)
    if version is not None:
        _check_version(store, stream_id, version)
    return store._read_stream_as_of(
        stream_id, version=version, at=at, known_at=known_at, after=after
    )


def _check_version(store: EventStore, stream_id: str, version: Any) -> int:
    """The stream's current version, once ``version`` is known to be one of its versions."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise EventlabError(f"version must be a non-negative int or None, got {version!r}")
    current = store.version(stream_id)
    if version > current:
        raise VersionNotFoundError(stream_id, version, current)
    return current


def check_category(category: Any) -> None:
    """Refuse a ``category`` (a stream-id prefix) that is not a str."""
    if category is not None and not isinstance(category, str):
        raise InvalidEventError(
            f"category is the start of the stream ids to fold, a str such as 'order-', got "
            f"{type(category).__name__}: {category!r:.60}; leave it out for every stream"
        )


def state_at(
    store: EventStore,
    stream_id: str,
    reducer: Any,
    *,
    version: int | None = None,
    at: datetime | str | None = None,
    known_at: datetime | str | None = None,
    initial: Any = None,
) -> Any:
    """The state of one stream at a version, a business time, a knowledge time, or both.

    See :meth:`EventStore.state_at`.
    """
    from . import snapshots

    # Checked here, not only by the reads: a snapshot lookup would take any value.
    check_name("stream_id", stream_id)
    # A version before the end is the past too: saving on top of it would be refused
    # by the concurrency check, with a message blaming a concurrent writer.
    as_of = _as_of(at, known_at)
    if version is not None and version < _check_version(store, stream_id, version):
        as_of = ", ".join(filter(None, [f"version={version}", as_of]))
    policy = snapshots.policy_of(reducer)
    found = None
    if policy is not None:
        found = snapshots.find(store, stream_id, policy, version=version, at=at, known_at=known_at)
    if found is not None:
        start, state = found
        rest = stream_history(
            store, stream_id, version=version, at=at, known_at=known_at, after=start
        )
        # A revert after the snapshot may reach back before it: replay everything then.
        if not any(event.type == REVERTED for event in rest):
            fold = _Fold(reducer, initial)
            for event in rest:
                state = fold.apply(state, event)
            if fold.is_aggregate:
                state._loaded(rest[-1].version if rest else start, as_of=as_of)
            return state
    events = stream_history(store, stream_id, version=version, at=at, known_at=known_at)
    state = _Fold(reducer, initial).run(effective_events(events), stream_id)
    if isinstance(state, _aggregate_type()):
        state._loaded(events[-1].version if events else 0, as_of=as_of)
    return state


def _as_of(at: Any, known_at: Any) -> str | None:
    """How a time-travelled state was filtered, or None for today's state."""
    given = {"at": at, "known_at": known_at}
    return ", ".join(f"{k}={v}" for k, v in given.items() if v is not None) or None


def _aggregate_type() -> type:
    from .aggregate import Aggregate

    return Aggregate

"""The event bus: committed events delivered to subscribers, in position order.

A store given a bus publishes every event after its transaction commits (a
rolled-back transaction publishes nothing). Subscribers pick events by type and
by stream prefix (a category such as ``"order-"``). A subscriber that raises is
set aside, its failure recorded, and it is not called again until ``retry()``;
the others keep receiving. A catch-up subscription first reads the stored
history, then switches to live events without a gap or a duplicate.
"""

from __future__ import annotations

import operator
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from .errors import EventlabError

if TYPE_CHECKING:
    from .events import RecordedEvent
    from .store import EventStore

Handler = Callable[["RecordedEvent"], Any]

LIVE, CATCHING_UP, FAILED = "live", "catching up", "failed"
# Set by unsubscribe(): a dispatch or catch-up loop already running for this
# subscription sees it and stops delivering at once.
UNSUBSCRIBED = "unsubscribed"


class Subscription:
    """One subscriber: its handler, what it listens to and how far it has got.

    ``position`` is the last position the subscription has seen (delivered to
    the handler, or skipped because it did not match); ``state`` is ``"live"``,
    ``"catching up"``, ``"failed"`` or ``"unsubscribed"``.
    """

    def __init__(
        self,
        name: str,
        handler: Handler,
        types: frozenset[str] | None,
        streams: tuple[str, ...] | None,
        position: int,
    ):
        self.name = name
        self.handler = handler
        self.types = types
        self.streams = streams
        self.position = position
        self.state = LIVE
        self.delivered = 0
        # Events a failed subscription missed on a bus with no store to re-read.
        self._backlog: list[RecordedEvent] = []
        # Set when it failed on a bus with a store: the events it missed since are
        # only in that store (none go to the backlog), so retrying needs the store.
        self._needs_store = False

    def matches(self, event: RecordedEvent) -> bool:
        """Whether the event's type and stream are among those subscribed to."""
        if self.types is not None and event.type not in self.types:
            return False
        return self.streams is None or event.stream_id.startswith(self.streams)

    def __repr__(self) -> str:
        return f"Subscription({self.name!r}, state={self.state!r}, position={self.position})"


class EventBus:
    """In-process publish/subscribe for committed events.

    Examples
    --------
    >>> import eventlab as el
    >>> bus = el.EventBus()
    >>> store = el.EventStore(bus=bus)
    >>> seen = []
    >>> _ = bus.subscribe(lambda e: seen.append(e.type), streams="order-")
    >>> _ = store.append("order-1", [el.Event("OrderPlaced", {})])
    >>> _ = store.append("user-1", [el.Event("UserRegistered", {})])
    >>> seen
    ['OrderPlaced']
    """

    def __init__(self) -> None:
        self._subscriptions: dict[str, Subscription] = {}
        self._queue: deque[RecordedEvent] = deque()
        self._dispatching = False
        # Per event type, the subscriptions whose types take it, in subscription order
        # (see _route); emptied whenever a subscription comes or goes.
        self._routes: dict[str, tuple[Subscription, ...]] = {}
        # Set whenever a subscription starts catching up; cleared by _drain once none is.
        self._catching_up = False
        self._lock = threading.RLock()
        self._failures: list[dict[str, Any]] = []
        self._store: EventStore | None = None

    # ------------------------------------------------------------------ wiring

    @property
    def store(self) -> EventStore | None:
        """The store whose events this bus carries (needed for catch-up), if any."""
        return self._store

    def _attach(self, store: EventStore) -> None:
        if self._store is not None and self._store is not store and not self._store.closed:
            raise EventlabError(
                f"this bus already carries the events of {self._store!r}; a bus serves one "
                f"store, so create another el.EventBus() for the second store"
            )
        self._store = store
        # Share the store's lock: a commit (store lock, then bus) and a catch-up
        # (bus, then a store read) taking two locks in opposite orders could deadlock.
        self._lock = store._lock

    def _detach(self, store: EventStore) -> None:
        if self._store is store:
            self._store = None
            self._lock = threading.RLock()

    @property
    def has_subscribers(self) -> bool:
        """Whether anyone listens (the store skips publishing when nobody does)."""
        return bool(self._subscriptions)

    # ------------------------------------------------------------------ subscribing

    def subscribe(
        self,
        handler: Handler,
        *,
        types: str | Iterable[str] | None = None,
        streams: str | Iterable[str] | None = None,
        name: str | None = None,
        from_position: int | None = None,
    ) -> Subscription:
        """Call ``handler(event)`` for every matching event committed from now on.

        Parameters
        ----------
        handler : callable
            Receives one :class:`~eventlab.RecordedEvent` at a time.
        types : str or list of str, optional
            Only these event types (default: all).
        streams : str or list of str, optional
            Only streams whose id starts with one of these prefixes, e.g.
            ``"order-"`` for the order category (default: all streams).
        name : str, optional
            Names the subscription in ``failures()`` and ``retry()``; defaults to
            the handler's name. Names are unique on a bus.
        from_position : int, optional
            Catch up first: deliver the stored events after this position (0 for
            the whole history, at most the store's head), then the live ones, with
            no gap and no duplicate. Needs a bus given to a store.

        Returns
        -------
        Subscription

        Raises
        ------
        EventlabError
            If an argument is malformed, the name is taken, or ``from_position``
            is negative or beyond the store's head. Nothing is registered then.
        """
        if not callable(handler):
            raise EventlabError(
                f"handler must be a callable taking one event (a function or a bound "
                f"method), got {_shown(handler)}; pass the function itself, without calling it"
            )
        if name is None:
            name = getattr(handler, "__qualname__", None) or repr(handler)
        elif not isinstance(name, str) or not name:
            raise EventlabError(
                f"name must be a non-empty string naming the subscription, got {_shown(name)}; "
                f'e.g. name="billing", or leave it out to use the handler\'s name'
            )
        type_names = _names("types", types, "an event type", "types=None for every type")
        prefixes = _prefixes(streams)
        with self._lock:
            if name in self._subscriptions:
                raise EventlabError(
                    f"a subscription named {name!r} already exists on this bus; pass another "
                    f"name= or unsubscribe({name!r}) first"
                )
            subscription = Subscription(name, handler, type_names, prefixes, self._live_position())
            if from_position is not None:
                subscription.position = self._check_catch_up(from_position)
                subscription.state = CATCHING_UP
                self._catching_up = True
            self._subscriptions[name] = subscription
            self._routes = {}
            self._drain()
        return subscription

    def unsubscribe(self, subscription: str | Subscription) -> None:
        """Stop delivering to a subscription (by name or object).

        Takes effect at once, also from inside a handler: the subscription gets
        no further event, not even the rest of a catch-up or of the event being
        dispatched to the other subscribers.
        """
        name = subscription.name if isinstance(subscription, Subscription) else subscription
        with self._lock:
            removed = self._subscriptions.pop(name, None)
            if removed is None:
                raise EventlabError(
                    f"no subscription named {name!r} on this bus; its subscriptions are "
                    f"{sorted(self._subscriptions)}"
                )
            removed.state = UNSUBSCRIBED
            self._routes = {}

    def _live_position(self) -> int:
        return self._store.head if self._store is not None and not self._store.closed else 0

    def _check_catch_up(self, from_position: object) -> int:
        """The catch-up start as a plain int, or an error naming the fix."""
        try:
            if isinstance(from_position, bool):
                raise TypeError
            # operator.index takes numpy integers too (a position read from a frame).
            position = operator.index(from_position)  # type: ignore[arg-type]
        except TypeError:
            raise EventlabError(
                f"from_position must be an int position, got {_shown(from_position)}; "
                f"use 0 for the whole history, or e.g. from_position=3 to start after event 3"
            ) from None
        if position < 0:
            raise EventlabError(
                f"from_position must be 0 or more, got {position}; use 0 for the whole history"
            )
        if self._store is None:
            raise EventlabError(
                "a catch-up subscription reads the stored history, but this bus has no "
                "store; create the store with el.EventStore(..., bus=bus) first"
            )
        head = self._store.head
        if position > head:
            # Positions are gapless and start at 1, so a start beyond the head would
            # silently skip the live events up to it.
            raise EventlabError(
                f"from_position={position} is beyond the store's head ({head}): no event "
                f"is stored after it yet. Use from_position <= {head} (the head for live "
                f"events only, 0 for the whole history)"
            )
        return position

    # ------------------------------------------------------------------ publishing

    def publish(self, events: Iterable[RecordedEvent]) -> None:
        """Deliver committed events (in position order) to every matching subscriber.

        The store calls this after each commit. Events published while handlers
        run (a handler that appends) queue up and follow in order.
        """
        with self._lock:
            self._queue.extend(events)
            self._drain()

    def _advance(self) -> None:
        """The store grew without handing over records (a bulk insert): re-read them."""
        with self._lock:
            for subscription in self._subscriptions.values():
                if subscription.state == LIVE:
                    subscription.state = CATCHING_UP
                    self._catching_up = True
            self._drain()

    def _drain(self) -> None:
        if self._dispatching:
            return  # the dispatch loop further up the stack delivers them in order
        self._dispatching = True
        queue, seen = self._queue, 0
        try:
            while True:
                if self._catching_up:
                    self._catch_up_all()
                    continue
                if not queue:
                    self._settle(seen)
                    return
                event = queue.popleft()
                seen = max(seen, event.position)
                # Only the subscriptions whose types take the event: their positions
                # move here, the others' once the queue is empty (see _settle).
                for subscription in self._route(event.type):
                    state = subscription.state
                    if state == LIVE:
                        if event.position > subscription.position:
                            self._deliver(subscription, event)
                    elif state == FAILED and self._store is None:
                        subscription._backlog.append(event)
        finally:
            self._dispatching = False

    def _catch_up_all(self) -> None:
        """Catch up every subscription that is catching up, until none is."""
        self._catching_up = False
        for subscription in list(self._subscriptions.values()):
            if subscription.state == CATCHING_UP:
                self._catch_up(subscription)
        if any(s.state == CATCHING_UP for s in self._subscriptions.values()):
            self._catching_up = True

    def _route(self, event_type: str) -> tuple[Subscription, ...]:
        """The subscriptions whose types take ``event_type`` (made once per type)."""
        route = self._routes.get(event_type)
        if route is None:
            route = self._routes[event_type] = tuple(
                s for s in self._subscriptions.values() if s.types is None or event_type in s.types
            )
        return route

    def _settle(self, seen: int) -> None:
        """Move the live subscriptions that no event of the drain was for up to ``seen``,
        the last position it dispatched: they have seen those events, skipped."""
        for subscription in self._subscriptions.values():
            if subscription.state == LIVE and subscription.position < seen:
                subscription.position = seen

    def _deliver(self, subscription: Subscription, event: RecordedEvent) -> bool:
        if subscription.matches(event):
            store = self._store
            try:
                if store is not None and store._tx is not None:
                    with store.transaction():  # a failing handler's appends are undone
                        subscription.handler(event)
                else:
                    subscription.handler(event)
            except Exception as exc:  # noqa: BLE001 - isolating a failing handler is the point
                self._fail(subscription, event, exc)
                return False
            subscription.delivered += 1
        subscription.position = event.position
        return True

    def _catch_up(self, subscription: Subscription) -> None:
        """Deliver stored events until the subscription reaches the store's head."""
        store = self._store
        while subscription.state == CATCHING_UP:
            head = store.head
            if subscription.position >= head:
                subscription.state = LIVE
                return
            types = None if subscription.types is None else sorted(subscription.types)
            for event in store.read_all(after=subscription.position, types=types, until=head):
                # The state check stops a subscription its handler (or another's) has
                # just unsubscribed; _deliver returning False means it failed.
                if not self._deliver(subscription, event) or subscription.state != CATCHING_UP:
                    return
            if subscription.state == CATCHING_UP:
                subscription.position = head  # events of other types were seen, not delivered

    def _fail(self, subscription: Subscription, event: RecordedEvent, exc: Exception) -> None:
        subscription.state = FAILED
        subscription._backlog = [event]
        subscription._needs_store = self._store is not None
        self._failures.append(
            {
                "subscription": subscription.name,
                "position": event.position,
                "stream_id": event.stream_id,
                "version": event.version,
                "type": event.type,
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": "".join(traceback.format_exception(exc)),
                "failed_at": datetime.now(UTC),
                "retried": False,
            }
        )

    # ------------------------------------------------------------------ failures

    def failures(self) -> pd.DataFrame:
        """Every handler failure so far, one row each, oldest first.

        Columns: subscription, position, stream_id, version, type, error,
        traceback, failed_at (UTC), retried.
        """
        columns = [
            "subscription", "position", "stream_id", "version", "type",
            "error", "traceback", "failed_at", "retried",
        ]  # fmt: skip
        return pd.DataFrame(self._failures, columns=columns)

    def retry(self, name: str | None = None) -> int:
        """Resume failed subscriptions (all, or the one named) from the failing event.

        The failing event is delivered again first, then everything it missed.
        Returns how many subscriptions were resumed.

        Raises
        ------
        EventlabError
            If ``name`` is unknown, or a subscription failed while the bus carried
            a store's events and that store is closed now (the events it missed
            are only there). Nothing is retried then.
        """
        with self._lock:
            if name is not None and name not in self._subscriptions:
                raise EventlabError(
                    f"no subscription named {name!r} on this bus; its subscriptions are "
                    f"{sorted(self._subscriptions)}"
                )
            failed = [
                s
                for s in self._subscriptions.values()
                if s.state == FAILED and (name is None or s.name == name)
            ]
            self._check_store_for(failed)
            for subscription in failed:
                for failure in self._failures:
                    if failure["subscription"] == subscription.name:
                        failure["retried"] = True
                backlog, subscription._backlog = subscription._backlog, []
                if self._store is not None:
                    subscription.state = CATCHING_UP  # re-read from the failing event on
                    self._catching_up = True
                else:
                    subscription.state = LIVE
                    self._queue.extendleft(reversed(backlog))
                    # Those events are older than the position a live subscription
                    # has seen; let them through once.
                    subscription.position = backlog[0].position - 1 if backlog else 0
            self._drain()
            return len(failed)

    def _check_store_for(self, failed: list[Subscription]) -> None:
        """Refuse to retry, while the store is closed, subscriptions whose missed events
        only that store holds: resumed from the backlog, they would skip them."""
        if self._store is not None:
            return
        stranded = [s.name for s in failed if s._needs_store]
        if stranded:
            raise EventlabError(
                f"cannot retry {stranded} while their store is closed: they failed while "
                f"this bus carried a store's events, and the events they missed since are "
                f"only in that store. Open it again with el.EventStore(path, bus=bus), then "
                f"retry(); nothing was retried"
            )

    def subscriptions(self) -> pd.DataFrame:
        """One row per subscription: name, types, streams, position, state, delivered."""
        rows = [
            {
                "name": s.name,
                "types": None if s.types is None else sorted(s.types),
                "streams": None if s.streams is None else list(s.streams),
                "position": s.position,
                "state": s.state,
                "delivered": s.delivered,
            }
            for s in self._subscriptions.values()
        ]
        columns = ["name", "types", "streams", "position", "state", "delivered"]
        return pd.DataFrame(rows, columns=columns)

    def __repr__(self) -> str:
        return f"EventBus({len(self._subscriptions)} subscriptions)"


def _shown(value: object) -> str:
    """A value and its type for an error message, e.g. ``5 (int)``, kept short."""
    return f"{value!r:.60} ({type(value).__name__})"


def _names(
    what: str, values: str | Iterable[str] | None, one: str, everything: str
) -> frozenset[str] | None:
    """``values`` as a set of non-empty strings; a single string is one name.

    ``one`` says what a single value is (for the message), ``everything`` how to
    ask for no filter at all.
    """
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]  # one type or prefix, not its characters
    elif isinstance(values, (bytes, bytearray)) or not isinstance(values, Iterable):
        raise EventlabError(
            f"{what} must be {one} (str) or a list of them, got {_shown(values)}; "
            f'e.g. {what}="{"OrderPlaced" if what == "types" else "order-"}", or {everything}'
        )
    values = list(values)
    if not values:
        raise EventlabError(
            f"{what} is empty, so nothing would ever match; name at least one, or pass {everything}"
        )
    for value in values:
        if not isinstance(value, str) or not value:
            raise EventlabError(
                f"{what} must hold non-empty strings, but {_shown(value)} is not; fix that "
                f"entry, or pass {everything}"
            )
    return frozenset(values)


def _prefixes(streams: str | Iterable[str] | None) -> tuple[str, ...] | None:
    names = _names("streams", streams, "a stream prefix", "streams=None for every stream")
    return None if names is None else tuple(sorted(names))

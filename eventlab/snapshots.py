"""Snapshots: a stored state at some version, so a long stream replays from there.

Opt in per aggregate (class attribute ``snapshot_every = 100``) or per function
reducer (``el.Snapshots(reducer, every=100)``, also usable as a decorator).
Snapshots live in the ``snapshots`` table, keyed by stream, reducer name and
version, so two reducers over one stream never share one. A snapshot remembers
the latest ``occurred_at`` and ``recorded_at`` of the events it folds, so time
travel uses it only when every one of those events is inside the asked-for
window; one whose ``schema_version`` differs from the reducer's is ignored.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from .clock import now_micros, to_micros
from .errors import EventlabError
from .events import RecordedEvent, to_json
from .reading import upper_bounds

if TYPE_CHECKING:
    from .store import EventStore


class Snapshots:
    """Snapshot settings for a function reducer; the result is itself a reducer.

    Parameters
    ----------
    reducer : callable, optional
        ``reducer(state, event) -> state`` whose state is plain JSON (dicts,
        lists, numbers, strings). Leave it out to use this as a decorator.
    every : int
        Take a snapshot at every multiple of this many versions.
    name : str, optional
        The name snapshots are stored under; defaults to ``module.qualname``.
    schema_version : int
        Bump it when the state's shape changes: older snapshots are then ignored.

    Examples
    --------
    >>> import eventlab as el
    >>> @el.Snapshots(every=2)
    ... def balance(state, event):
    ...     return state + event.data["amount"]
    >>> store = el.EventStore()
    >>> _ = store.append("acct-1", [el.Event("Deposited", {"amount": n}) for n in (1, 2, 3)])
    >>> store.rebuild_snapshots(balance, initial=0)
    1
    >>> store.state_at("acct-1", balance, initial=0)
    6
    """

    def __init__(
        self,
        reducer: Callable[[Any, RecordedEvent], Any] | None = None,
        *,
        every: int,
        name: str | None = None,
        schema_version: int = 1,
    ):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise EventlabError(f"every must be a positive number of versions, got {every!r}")
        self.reducer = reducer
        # Names the wrapped reducer in ReplayError messages.
        self.__qualname__ = getattr(reducer, "__qualname__", "Snapshots")
        self.every = every
        self.name = name
        self.schema_version = schema_version

    def __call__(self, *args: Any) -> Any:
        if self.reducer is None:  # used as a decorator: @el.Snapshots(every=...)
            (reducer,) = args
            return Snapshots(
                reducer, every=self.every, name=self.name, schema_version=self.schema_version
            )
        return self.reducer(*args)


@dataclass(frozen=True)
class Policy:
    """How one reducer's states are snapshotted and restored."""

    name: str
    every: int
    schema_version: int
    encode: Callable[[Any], Any]
    decode: Callable[[Any, str, int], Any]


def policy_of(reducer: Any) -> Policy | None:
    """The snapshot policy of a reducer, or None when it does not take snapshots."""
    from .aggregate import Aggregate

    if isinstance(reducer, type) and issubclass(reducer, Aggregate):
        if not reducer.snapshot_every:
            return None
        return Policy(
            f"{reducer.__module__}.{reducer.__qualname__}",
            reducer.snapshot_every,
            reducer.schema_version,
            lambda aggregate: aggregate._snapshot_state(),
            lambda state, stream_id, version: reducer._from_snapshot(state, stream_id, version),
        )
    if isinstance(reducer, Snapshots) and reducer.reducer is not None:
        inner = reducer.reducer
        name = reducer.name or f"{inner.__module__}.{getattr(inner, '__qualname__', inner)}"
        return Policy(name, reducer.every, reducer.schema_version, lambda s: s, lambda s, _i, _v: s)
    return None


def find(
    store: EventStore,
    stream_id: str,
    policy: Policy,
    *,
    version: int | None,
    at: Any,
    known_at: Any,
) -> tuple[int, Any] | None:
    """The latest usable snapshot (version, decoded state) for this target, if any."""
    sql = (
        "SELECT version, CAST(state AS VARCHAR) FROM snapshots WHERE stream_id = $1 "
        "AND reducer = $2 AND schema_version = $3"
    )
    params: list[Any] = [stream_id, policy.name, policy.schema_version]
    sql += upper_bounds(params, version=version, last_occurred_at=at, last_recorded_at=known_at)
    if not store._has_snapshots_table():
        return None
    rows = store._cursor().execute(sql + " ORDER BY version DESC LIMIT 1", params).fetchall()
    if not rows:
        return None
    snapshot_version, state = rows[0]
    return snapshot_version, policy.decode(json.loads(state), stream_id, snapshot_version)


def write(
    store: EventStore, policy: Policy, rows: list[tuple[str, int, str]], *, cursor=None
) -> int:
    """Store snapshots given as (stream_id, version, state JSON); replaces equal keys."""
    if not rows:
        return 0
    cursor = cursor if cursor is not None else store._cursor()
    # Reading a SimulatedClock advances it; a snapshot should not shift event times.
    current = getattr(store.clock, "current", None)
    taken_us = to_micros(current) if current is not None else now_micros(store.clock)
    stream_ids, versions, states = zip(*rows, strict=True)
    new = pa.table(
        {
            "stream_id": pa.array(stream_ids, pa.string()),
            "version": pa.array(versions, pa.int32()),
            "state": pa.array(states, pa.string()),
        }
    )
    cursor.register("_new_snapshots", new)
    cursor.execute(
        """
        INSERT OR REPLACE INTO snapshots
        SELECT n.stream_id, $1, n.version, n.state, $2, make_timestamptz($3::BIGINT),
               max(e.occurred_at), max(e.recorded_at)
        FROM _new_snapshots n JOIN events e
          ON e.stream_id = n.stream_id AND e.version <= n.version
        GROUP BY n.stream_id, n.version, n.state
        """,
        [policy.name, policy.schema_version, taken_us],
    )
    cursor.unregister("_new_snapshots")
    return len(rows)


def encode_state(policy: Policy, state: Any, stream_id: str) -> str:
    """The state as JSON text, or a clear error when it is not plain JSON."""
    try:
        return to_json(policy.encode(state), f"the state of {stream_id!r}")
    except EventlabError as exc:
        raise EventlabError(
            f"cannot snapshot {policy.name}: {exc}. Snapshots store the state as JSON; keep "
            f"the state plain (dicts, lists, numbers, strings) or turn snapshots off."
        ) from None


def rebuild(store: EventStore, reducer: Any, *, initial: Any, category: str | None) -> int:
    """See :meth:`EventStore.rebuild_snapshots`."""
    from .replay import REVERTED, _Fold, effective_events

    store._check_writable()
    policy = policy_of(reducer)
    if policy is None:
        raise EventlabError(
            f"{reducer!r:.60} takes no snapshots: set snapshot_every on the aggregate class, "
            f"or wrap a function reducer in el.Snapshots(reducer, every=...)"
        )
    streams = [s for s in store.streams() if category is None or s.startswith(category)]
    rows = []
    fold = _Fold(reducer, initial)
    for stream_id in streams:
        events = store.read_stream(stream_id)
        state = fold.start(stream_id)
        for index, event in enumerate(events):
            if event.type == REVERTED:
                state = fold.run(effective_events(events[: index + 1]), stream_id)
            else:
                state = fold.apply(state, event)
            if event.version % policy.every == 0:
                rows.append((stream_id, event.version, encode_state(policy, state, stream_id)))
    # Every state is encoded before anything is deleted: a failure leaves the old ones.
    cursor = store._cursor()
    cursor.execute("BEGIN TRANSACTION")
    try:
        cursor.execute(
            "DELETE FROM snapshots WHERE reducer = $1 AND list_contains($2, stream_id)",
            [policy.name, streams],
        )
        count = write(store, policy, rows, cursor=cursor)
        cursor.execute("COMMIT")
    except BaseException:
        cursor.execute("ROLLBACK")
        raise
    return count

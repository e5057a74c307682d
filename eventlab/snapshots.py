"""Snapshots: a stored state at some version, so a long stream replays from there.

Opt in per aggregate (class attribute ``snapshot_every = 100``) or per function
reducer (``el.Snapshots(reducer, every=100)``, also usable as a decorator).
Snapshots live in the ``snapshots`` table, keyed by stream, reducer name and
version, so two reducers over one stream never share one. A snapshot remembers
the latest ``occurred_at`` and ``recorded_at`` of the events it folds, so time
travel uses it only when every one of those events is inside the asked-for
window; one whose ``schema_version`` differs from the reducer's is ignored.

A snapshot that :meth:`Aggregate.save` takes commits with the events it folds,
as a side row of their transaction (see :mod:`eventlab.sidetables`): a
transaction that rolls back takes its snapshots with it, and the snapshot's
time bounds are computed when it reaches DuckDB, where its events are by then.
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
from .sidetables import register_applier

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
        Required for a lambda, a function defined inside another function, or
        any callable without a ``__qualname__``: such names are not unique (every
        lambda of a module is ``module.<lambda>``), and reducers sharing a name
        would share snapshots.
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
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise EventlabError(
                f"name must be a non-empty str (what snapshots are stored under), got {name!r}"
            )
        if reducer is not None:
            if not callable(reducer):
                raise EventlabError(
                    f"el.Snapshots wraps a reducer function (state, event) -> state, got "
                    f"{type(reducer).__name__}: {reducer!r:.60}"
                )
            if name is None:
                _check_nameable(reducer, every)
        self.reducer = reducer
        # Names the wrapped reducer in ReplayError messages.
        self.__qualname__ = getattr(reducer, "__qualname__", "Snapshots")
        self.every = every
        self.name = name
        self.schema_version = schema_version

    def __call__(self, *args: Any) -> Any:
        if self.reducer is None:  # used as a decorator: @el.Snapshots(every=...)
            if len(args) != 1 or not callable(args[0]):
                raise EventlabError(
                    f"el.Snapshots(every={self.every}) has no reducer yet: it is a decorator. "
                    f"Put @el.Snapshots(every={self.every}) above a reducer function, or wrap "
                    f"one: el.Snapshots(reducer, every={self.every})"
                )
            (reducer,) = args
            return Snapshots(
                reducer, every=self.every, name=self.name, schema_version=self.schema_version
            )
        return self.reducer(*args)


def _check_nameable(reducer: Any, every: int) -> None:
    """Refuse a reducer whose ``module.qualname`` could name other reducers too."""
    qualname = getattr(reducer, "__qualname__", None)
    if not isinstance(qualname, str):
        why = f"{type(reducer).__name__} {reducer!r:.60} has no __qualname__ to name it by"
    elif "<lambda>" in qualname or "<locals>" in qualname:
        kind = "lambda" if qualname.endswith("<lambda>") else "function defined inside another"
        why = (
            f"{reducer.__module__}.{qualname} is a {kind}: every such reducer of the module "
            f"gets that same name, so different reducers would share (and return) each "
            f"other's snapshots"
        )
    else:
        return
    raise EventlabError(
        f"cannot name the snapshots of this reducer: {why}. Give it a name unique to this "
        f"reducer: el.Snapshots(reducer, every={every}, name='order-totals'), or define it "
        f"with def at the top level of a module"
    )


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
        name = reducer.name or f"{inner.__module__}.{inner.__qualname__}"
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
    params: list[Any] = [stream_id, policy.name, policy.schema_version]
    usable = "reducer = $2 AND schema_version = $3" + upper_bounds(
        params, version=version, last_occurred_at=at, last_recorded_at=known_at
    )
    # Only stream_id in WHERE, so DuckDB looks the stream up in its index (see
    # _ensure_index); any other condition there would make it scan the table.
    # The rest picks which states to send back.
    sql = (
        f"SELECT version, CASE WHEN {usable} THEN CAST(state AS VARCHAR) END "
        f"FROM snapshots WHERE stream_id = $1"
    )
    if not store._has_snapshots_table():
        return None
    rows = [row for row in store._cursor().execute(sql, params).fetchall() if row[1] is not None]
    if not rows:
        return None
    snapshot_version, state = max(rows)
    return snapshot_version, policy.decode(json.loads(state), stream_id, snapshot_version)


# The side table (see eventlab.sidetables) that carries snapshots from a transaction
# to DuckDB. A row: (stream_id, reducer, version, state JSON, schema_version, taken_at
# in epoch microseconds); the time bounds are computed when the row reaches DuckDB.
SIDE_TABLE = "snapshots"


def stage(store: EventStore, policy: Policy, stream_id: str, version: int, state: str) -> None:
    """Stage a snapshot (state as JSON text) in the store's open transaction.

    It commits with the transaction's events, or vanishes with them when the
    transaction (or the savepoint it was staged in) rolls back, and reaches
    DuckDB with the events at the next absorb.
    """
    owner = store.__dict__.get("_snapshot_rows")
    if owner is None:
        owner = store._snapshot_rows = StagedSnapshots()
        store._register_side(owner)
    row = (stream_id, policy.name, version, state, policy.schema_version, _taken_micros(store))
    store._stage_side(SIDE_TABLE, row)


class StagedSnapshots:
    """The owner of a store's committed snapshot rows until they reach DuckDB (the
    :class:`~eventlab.sidetables.SideTable` protocol)."""

    tables = (SIDE_TABLE,)

    def __init__(self) -> None:
        self._rows: list[tuple] = []

    def committed(self, rows: list[tuple[str, tuple]]) -> None:
        self._rows.extend(row for _table, row in rows)

    def has_pending(self) -> bool:
        return bool(self._rows)

    def take_pending(self) -> Any:
        rows, self._rows = self._rows, []

        def write(con) -> None:
            write_staged(con, rows)

        return write


def write_staged(con, rows: list[tuple]) -> None:
    """Write staged snapshot rows into DuckDB, replacing equal keys; also how rows
    recovered from a journal get there (idempotent).

    The absorb that calls this inserts the snapshots' events first, in the same
    DuckDB transaction, so the time bounds come from every event each snapshot
    folds, the ones staged in its own transaction included.
    """
    # One row per key, the latest: one INSERT OR REPLACE cannot replace a key twice.
    latest = list({(row[0], row[1], row[2]): row for row in rows}.values())
    stream_ids, reducers, versions, states, schemas, taken = zip(*latest, strict=True)
    new = pa.table(
        {
            "stream_id": pa.array(stream_ids, pa.string()),
            "reducer": pa.array(reducers, pa.string()),
            "version": pa.array(versions, pa.int32()),
            "state": pa.array(states, pa.string()),
            "schema_version": pa.array(schemas, pa.int32()),
            "taken": pa.array(taken, pa.int64()),
        }
    )
    con.execute(_INDEX_SQL)
    con.register("_staged_snapshots", new)
    try:
        con.execute(
            """
            INSERT OR REPLACE INTO snapshots
            SELECT n.stream_id, n.reducer, n.version, n.state, n.schema_version,
                   make_timestamptz(n.taken), max(e.occurred_at), max(e.recorded_at)
            FROM _staged_snapshots n JOIN events e
              ON e.stream_id = n.stream_id AND e.version <= n.version
            GROUP BY ALL
            """
        )
    finally:
        con.unregister("_staged_snapshots")


register_applier(SIDE_TABLE, write_staged)


# One index per store; the primary key does not serve lookups by stream (see below).
_INDEX_SQL = "CREATE INDEX IF NOT EXISTS snapshots_by_stream ON snapshots (stream_id)"


def _ensure_index(store: EventStore, cursor) -> None:
    """Index the snapshots by stream (once per store), so finding one is a lookup, not a scan.

    The primary key does not serve: DuckDB only looks up single-column indexes.
    Only snapshot writes pay for it, and those are rare next to event appends.
    """
    if not getattr(store, "_snapshots_indexed", False):
        cursor.execute(_INDEX_SQL)
        store._snapshots_indexed = True


def _taken_micros(store: EventStore) -> int:
    # Reading a SimulatedClock advances it; a snapshot should not shift event times.
    current = getattr(store.clock, "current", None)
    return to_micros(current) if current is not None else now_micros(store.clock)


def _write_folded(cursor, policy: Policy, taken_us: int, rows: list[tuple]) -> None:
    """Store snapshots given as (stream_id, version, state JSON, latest occurred_at and
    recorded_at of their events in epoch microseconds), as a rebuild's fold knows them."""
    stream_ids, versions, states, occurred, recorded = zip(*rows, strict=True)
    new = pa.table(
        {
            "stream_id": pa.array(stream_ids, pa.string()),
            "version": pa.array(versions, pa.int32()),
            "state": pa.array(states, pa.string()),
            "occurred": pa.array(occurred, pa.int64()),
            "recorded": pa.array(recorded, pa.int64()),
        }
    )
    cursor.register("_new_snapshots", new)
    cursor.execute(
        """
        INSERT OR REPLACE INTO snapshots
        SELECT stream_id, $1, version, state, $2, make_timestamptz($3::BIGINT),
               make_timestamptz(occurred), make_timestamptz(recorded)
        FROM _new_snapshots
        """,
        [policy.name, policy.schema_version, taken_us],
    )
    cursor.unregister("_new_snapshots")


def encode_state(policy: Policy, state: Any, stream_id: str) -> str:
    """The state as JSON text, or a clear error when it is not plain JSON.

    A state must also come back from JSON unchanged (a snapshot never changes a
    state): an int dict key would come back as a str, a tuple as a list, a
    ``defaultdict`` as a plain dict. Such a state is refused like one JSON
    cannot hold at all, before anything is written.
    """
    what = f"the state of {stream_id!r}"
    value = policy.encode(state)
    try:
        text = to_json(value, what)
    except EventlabError as exc:
        raise EventlabError(
            f"cannot snapshot {policy.name}: {exc}. Snapshots store the state as JSON; keep "
            f"the state plain (dicts, lists, numbers, strings) or turn snapshots off."
        ) from None
    change = _json_change(value, json.loads(text), what)
    if change is not None:
        raise EventlabError(
            f"cannot snapshot {policy.name}: {change}, so a state loaded from a snapshot "
            f"would differ from the replayed one. Keep the state plain JSON (dicts with str "
            f"keys, lists, str, int, float, bool, None), e.g. str(key) for dict keys and "
            f"lists instead of tuples, or turn snapshots off."
        )
    return text


def _json_change(value: Any, back: Any, where: str) -> str | None:
    """How ``back`` (``value`` after a JSON round trip) differs from ``value``, or None."""
    if type(value) is not type(back):
        return (
            f"{where} is a {type(value).__name__} ({value!r:.40}), which comes back from "
            f"JSON as a {type(back).__name__}"
        )
    if type(value) is dict:
        for (key, item), back_key in zip(value.items(), back, strict=False):
            if type(key) is not str:
                return (
                    f"{where} has the {type(key).__name__} key {key!r:.40}, which comes back "
                    f"from JSON as the str {back_key!r:.40}"
                )
            change = _json_change(item, back[key], f"{where}[{key!r}]")
            if change is not None:
                return change
    elif type(value) is list:
        for index, (item, back_item) in enumerate(zip(value, back, strict=True)):
            change = _json_change(item, back_item, f"{where}[{index}]")
            if change is not None:
                return change
    return None


def rebuild(
    store: EventStore,
    reducer: Any,
    *,
    initial: Any,
    category: str | None,
    progress: bool = False,
) -> int:
    """See :meth:`EventStore.rebuild_snapshots`.

    One streamed pass over the log folds every stream at once (a query per
    stream would take hours on a store of millions of streams) and writes the
    snapshots in chunks, inside one transaction: a failure leaves the old ones.
    """
    from .reading import decoded_batches, log_filter
    from .replay import _Fold, check_category, paused_gc
    from .schema import SELECT_RECORD

    check_category(category)
    store._check_writable()
    policy = policy_of(reducer)
    if policy is None:
        raise EventlabError(
            f"{reducer!r:.60} takes no snapshots: set snapshot_every on the aggregate class, "
            f"or wrap a function reducer in el.Snapshots(reducer, every=...)"
        )
    taken_us = _taken_micros(store)
    where, params = log_filter(category=category)
    reader = store._cursor().sql(SELECT_RECORD.format(src="events") + where, params=params)
    batches = decoded_batches(reader.to_arrow_reader(65_536))
    if progress:
        from .history import _with_bar

        total = store._cursor().execute(f"SELECT count(*) FROM events{where}", params)
        batches = _with_bar(batches, total.fetchall()[0][0])
    cursor = store._cursor()
    _ensure_index(store, cursor)  # outside the transaction, which may roll back
    cursor.execute("BEGIN TRANSACTION")
    try:
        old = "DELETE FROM snapshots WHERE reducer = $1"
        if category is None:
            cursor.execute(old, [policy.name])
        else:
            cursor.execute(old + " AND starts_with(stream_id, $2)", [policy.name, category])
        count = 0
        with paused_gc():
            for rows in _folded_snapshots(store, policy, _Fold(reducer, initial), batches):
                _write_folded(cursor, policy, taken_us, rows)
                count += len(rows)
        cursor.execute("COMMIT")
    except BaseException:
        cursor.execute("ROLLBACK")
        raise
    return count


def _folded_snapshots(
    store: EventStore, policy: Policy, fold: Any, batches: Any, chunk: int = 100_000
) -> Any:
    """Snapshot rows for :func:`_write_folded` at every multiple of the interval, in chunks."""
    from .replay import REVERTED, effective_events, stream_history

    # stream id -> (state, latest occurred_at, latest recorded_at), times in microseconds
    folded: dict[str, tuple[Any, int, int]] = {}
    rows: list[tuple] = []
    every = policy.every
    for batch in batches:
        for event in batch:
            stream_id, version, recorded, occurred = event[2], event[3], event[9], event[10]
            if stream_id in folded:
                state, occurred_max, recorded_max = folded[stream_id]
                occurred, recorded = max(occurred, occurred_max), max(recorded, recorded_max)
            else:
                state = fold.start(stream_id)
            if event[4] == REVERTED:  # rare: the stream's state as of the revert
                events = effective_events(stream_history(store, stream_id, version=version))
                state = fold.run(events, stream_id)
            else:
                state = fold.apply(state, event)
            folded[stream_id] = (state, occurred, recorded)
            if version % every == 0:
                state_json = encode_state(policy, state, stream_id)
                rows.append((stream_id, version, state_json, occurred, recorded))
                if len(rows) >= chunk:
                    yield rows
                    rows = []
    if rows:
        yield rows

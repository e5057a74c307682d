"""Analyses of an event history, each returning a pandas DataFrame.

Each is one DuckDB query, except ``directly_follows``: its grouping of the
log by stream is a NumPy sort of packed integers (see ``eventlab/follows.py``).

Every function takes a ``source``: an :class:`~eventlab.EventStore`, or the
Parquet files written by :meth:`~eventlab.EventStore.export_parquet` (a file,
a directory or a glob). Most take the same filters:

``types``
    only events of these types;
``streams``
    only these streams (a list of ids), or those whose id starts with a prefix
    (a string ending in ``*``, e.g. ``"order-*"``);
``start``, ``end``
    only events at or after ``start`` and before ``end`` (UTC datetimes or ISO
    text);
``time``
    which clock orders and measures events: ``"occurred_at"`` (business time,
    the default) or ``"recorded_at"`` (when the store learnt of them).

Within a stream, events are ordered by that time, ties broken by position
(the order the store received them). Times in the results are UTC pandas
Timestamps and durations pandas Timedeltas.

Examples
--------
>>> import eventlab as el
>>> store = el.EventStore(clock=el.SimulatedClock("2024-05-01", step=timedelta(hours=1)))
>>> for case, steps in [("c1", "ABC"), ("c2", "ABC"), ("c3", "AC")]:
...     _ = store.append(case, [el.Event(step, {}) for step in steps])
>>> el.analytics.variants(store)[["variant", "count", "share"]]
     variant  count     share
0  (A, B, C)      2  0.666667
1     (A, C)      1  0.333333
>>> el.analytics.directly_follows(store)[["source", "target", "count"]]
  source target  count
0      A      B      2
1      B      C      2
2      A      C      1
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from . import follows
from .errors import EventlabError
from .parquet import _parquet_files, _sql_string
from .reading import event_filter
from .store import EventStore

SAGA_PREFIX = "saga-"

__all__ = [
    "command_stats",
    "directly_follows",
    "event_rate",
    "funnel",
    "saga_stats",
    "stream_durations",
    "summary",
    "trace",
    "variants",
]

Source = EventStore | str | Path


# ---------------------------------------------------------------------- the events, filtered


class _Log:
    """The events of a source as the SQL relation ``log`` (filters applied), and a cursor.

    ``log`` has the columns of the events table plus ``t``: the chosen time.
    """

    def __init__(
        self,
        source: Source,
        *,
        types: Iterable[str] | str | None = None,
        streams: Iterable[str] | str | None = None,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        time: str = "occurred_at",
    ):
        self.store = source if isinstance(source, EventStore) else None
        if self.store is not None:
            self.cursor = self.store._cursor()
            relation = "events"
        elif isinstance(source, (str, Path)):
            files = _parquet_files(source)
            self.cursor = duckdb.connect(":memory:")
            self.cursor.execute("SET TimeZone = 'UTC'")
            relation = "read_parquet([" + ", ".join(_sql_string(f) for f in files) + "])"
        else:
            raise EventlabError(
                f"source must be an el.EventStore or the path of Parquet files (a file, a "
                f"directory or a glob), got {type(source).__name__}"
            )
        self.params: list[Any] = []
        where = event_filter(
            self.params, types=types, streams=streams, start=start, end=end, time=time
        )
        self.log = f"log AS (SELECT *, {time} AS t FROM {relation} WHERE {where})"

    def param(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

    def df(self, sql: str) -> pd.DataFrame:
        """Run ``WITH log AS (...) <sql>`` and return the result."""
        try:
            return self.cursor.execute(f"WITH {self.log} {sql}", self.params).df()
        except duckdb.Error as exc:
            raise EventlabError(f"the analysis query failed: {exc}") from None

    def arrow(self, sql: str) -> pa.Table:
        """Run ``WITH log AS (...) <sql>`` and return the result as Arrow."""
        try:
            return self.cursor.sql(f"WITH {self.log} {sql}", params=self.params).to_arrow_table()
        except duckdb.Error as exc:
            raise EventlabError(f"the analysis query failed: {exc}") from None

    def has_table(self, name: str) -> bool:
        if self.store is None:
            return False
        rows = self.cursor.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = $1", [name]
        ).fetchall()
        return rows[0][0] > 0


def _durations(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """Columns of microseconds (int or float: a median may fall between two) as Timedeltas.

    Whole microseconds become nanoseconds in integer arithmetic: through float64,
    ``micros * 1000`` passes 2**53 after about 104 days and would be off by a few
    nanoseconds, so a duration would differ from ``end - start``.
    """
    for column in columns:
        values = frame[column]
        if pd.api.types.is_integer_dtype(values.dtype) and not values.hasnans:
            nanos = values.to_numpy(dtype="int64") * 1000
        else:
            micros = values.to_numpy(dtype="float64", na_value=np.nan)
            missing = np.isnan(micros)
            known = np.where(missing, 0.0, micros)
            whole = np.floor(known)
            nanos = whole.astype("int64") * 1000 + np.round((known - whole) * 1000).astype("int64")
            nanos = np.where(missing, np.timedelta64("NaT", "ns"), nanos.astype("timedelta64[ns]"))
        frame[column] = pd.to_timedelta(nanos, unit="ns").astype("timedelta64[ns]")
    return frame


def _counts(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    for column in columns:
        frame[column] = frame[column].fillna(0).astype("int64")
    return frame


# ---------------------------------------------------------------------- the analyses


def summary(source: Source, **filters: Any) -> pd.DataFrame:
    """One row: how many events, streams and types, the first and last time, and the span.

    Examples
    --------
    >>> import eventlab as el
    >>> store = el.EventStore(clock=el.SimulatedClock("2024-05-01", step=timedelta(hours=1)))
    >>> _ = store.append("c1", [el.Event("Opened", {}), el.Event("Closed", {})])
    >>> row = el.analytics.summary(store).iloc[0]
    >>> row["events"], row["streams"], row["span"]
    (np.int64(2), np.int64(1), Timedelta('0 days 01:00:00'))
    """
    log = _Log(source, **filters)
    frame = log.df(
        "SELECT count(*) AS events, count(DISTINCT stream_id) AS streams, "
        "count(DISTINCT type) AS types, min(t) AS first, max(t) AS last, "
        "epoch_us(max(t)) - epoch_us(min(t)) AS span FROM log"
    )
    return _durations(_counts(frame, "events", "streams", "types"), "span")


def event_rate(
    source: Source, freq: str | timedelta = "1h", by: str | None = None, **filters: Any
) -> pd.DataFrame:
    """Events per time bucket: columns ``time`` (the bucket's start), [``by``], ``events``.

    Parameters
    ----------
    freq : str or timedelta
        The bucket width: pandas-style (``"1h"``, ``"15min"``, ``"1D"``, ``"7D"``)
        or a DuckDB interval (``"1 month"``). Buckets are aligned to UTC.
    by : str, optional
        A column to count separately, e.g. ``"type"`` or ``"stream_id"``.
        Without it, every bucket from the first to the last event appears, empty
        ones with 0; with it, only the (bucket, value) pairs that have events.
    """
    log = _Log(source, **filters)
    interval = log.param(_interval(freq))
    if by is None:
        return _counts(
            log.df(
                f"""
                , counted AS (SELECT time_bucket(CAST({interval} AS INTERVAL), t) AS time,
                              count(*) AS events FROM log GROUP BY 1),
                grid AS (SELECT unnest(generate_series(min(time), max(time),
                         CAST({interval} AS INTERVAL))) AS time FROM counted)
                SELECT grid.time, coalesce(counted.events, 0) AS events
                FROM grid LEFT JOIN counted USING (time) ORDER BY grid.time
                """
            ),
            "events",
        )
    column = _column(by)
    return _counts(
        log.df(
            f'SELECT time_bucket(CAST({interval} AS INTERVAL), t) AS time, {column} AS "{by}", '
            f"count(*) AS events FROM log GROUP BY 1, 2 ORDER BY 1, 2"
        ),
        "events",
    )


def _interval(freq: str | timedelta) -> str:
    """A DuckDB interval literal for a bucket width."""
    if isinstance(freq, timedelta):
        width = pd.Timedelta(freq)
    elif isinstance(freq, str):
        try:
            width = pd.to_timedelta(freq)
        except ValueError:
            try:
                duckdb.sql("SELECT CAST($1 AS INTERVAL)", params=[freq]).fetchall()
            except duckdb.Error:
                raise EventlabError(
                    f"freq must be a bucket width such as '1h', '15min', '1D' or '1 month', "
                    f"got {freq!r}"
                ) from None
            return freq
    else:
        raise EventlabError(f"freq must be a string like '1h' or a timedelta, got {freq!r}")
    micros = int(width / pd.Timedelta(microseconds=1))
    if micros <= 0:
        raise EventlabError(f"freq must be a positive width, got {freq!r}")
    return f"{micros} microseconds"


_COLUMNS = ("type", "stream_id", "correlation_id", "schema_version")


def _column(name: str) -> str:
    if name not in _COLUMNS:
        raise EventlabError(f"by must be one of {list(_COLUMNS)}, got {name!r}")
    return name


def stream_durations(
    source: Source,
    start_type: str | None = None,
    end_type: str | None = None,
    **filters: Any,
) -> pd.DataFrame:
    """How long each stream took: ``stream_id, start, end, duration, events``.

    By default from a stream's first event to its last. With ``start_type``,
    from its first event of that type; with ``end_type``, to the first event of
    that type after the start. Streams without those events are left out.
    ``events`` counts the events from start to end, both included. Sorted by
    stream id.

    Examples
    --------
    >>> import eventlab as el
    >>> store = el.EventStore(clock=el.SimulatedClock("2024-05-01", step=timedelta(hours=1)))
    >>> _ = store.append("c1", [el.Event(t, {}) for t in ["Open", "Pay", "Ship", "Close"]])
    >>> el.analytics.stream_durations(store, "Pay", "Close")[["stream_id", "duration", "events"]]
      stream_id        duration  events
    0        c1 0 days 02:00:00       3
    """
    log = _Log(source, **filters)
    if start_type is None and end_type is None:
        frame = log.df(
            'SELECT stream_id, min(t) AS start, max(t) AS "end", '
            "epoch_us(max(t)) - epoch_us(min(t)) AS duration, count(*) AS events "
            "FROM log GROUP BY stream_id ORDER BY stream_id"
        )
        return _durations(_counts(frame, "events"), "duration")
    start_filter = f"type = {log.param(start_type)}" if start_type is not None else "true"
    end_pick = (
        f"min(o.seq) FILTER (WHERE o.type = {log.param(end_type)} AND o.seq > s.seq)"
        if end_type is not None
        else "max(o.seq)"
    )
    frame = log.df(
        f"""
        , ordered AS (SELECT stream_id, type, t,
                      row_number() OVER (PARTITION BY stream_id ORDER BY t, position) AS seq
                      FROM log),
        starts AS (SELECT stream_id, min(seq) AS seq FROM ordered WHERE {start_filter}
                   GROUP BY stream_id),
        ends AS (SELECT s.stream_id, s.seq AS first, {end_pick} AS last
                 FROM starts s JOIN ordered o USING (stream_id) GROUP BY s.stream_id, s.seq)
        SELECT e.stream_id, a.t AS start, b.t AS "end",
               epoch_us(b.t) - epoch_us(a.t) AS duration, e.last - e.first + 1 AS events
        FROM ends e
        JOIN ordered a ON a.stream_id = e.stream_id AND a.seq = e.first
        JOIN ordered b ON b.stream_id = e.stream_id AND b.seq = e.last
        ORDER BY e.stream_id
        """
    )
    return _durations(_counts(frame, "events"), "duration")


def variants(source: Source, **filters: Any) -> pd.DataFrame:
    """The distinct sequences of event types of the streams: ``variant, length, count, share``.

    ``variant`` is a tuple of type names; ``share`` the fraction of streams
    that follow it. Sorted by count (most frequent first), then variant.
    """
    log = _Log(source, **filters)
    frame = log.df(
        """
        , sequences AS (SELECT list(type ORDER BY t, position) AS variant FROM log
                        GROUP BY stream_id)
        SELECT variant, len(variant) AS length, count(*) AS count,
               count(*) / sum(count(*)) OVER () AS share
        FROM sequences GROUP BY variant ORDER BY count DESC, variant
        """
    )
    frame["variant"] = [tuple(v) for v in frame["variant"]]
    return _counts(frame, "length", "count")


def directly_follows(source: Source, **filters: Any) -> pd.DataFrame:
    """How often one type directly follows another in a stream, and how long between.

    Columns ``source, target, count, mean_duration, median_duration``, one row
    per pair of types seen next to each other in some stream (with the filters
    applied first, "next" means next among the events kept). Sorted by count
    (most frequent first), then source and target.
    """
    log = _Log(source, **filters)
    types = log.arrow("SELECT DISTINCT type FROM log ORDER BY type")["type"].to_pylist()
    rows = _follow_rows(log, types)
    stats = follows.follow_stats(
        rows["h"].to_numpy(), rows["code"].to_numpy(), rows["us"].to_numpy(), len(types)
    )
    names = np.array(types, dtype=object)
    frame = pd.DataFrame(
        {
            "source": names[stats.source],
            "target": names[stats.target],
            "count": stats.count,
            "mean_duration": stats.mean_gap,
            "median_duration": stats.median_gap,
        }
    )
    frame = frame.sort_values(
        ["count", "source", "target"], ascending=[False, True, True], ignore_index=True
    )
    return _durations(_counts(frame, "count"), *_FOLLOW_TIMES)


# Up to this many types, a type's code is its place in a list; beyond, a join.
_CODES_BY_LIST = 128


def _follow_rows(log: _Log, types: list[str]) -> pa.Table:
    """``h`` (stream id hash), ``code`` (index into ``types``) and ``us`` of every event,
    in position order."""
    if not types:
        return pa.table(
            {"h": pa.array([], pa.uint64()), "code": [], "us": pa.array([], pa.int64())}
        )
    if len(types) <= _CODES_BY_LIST:
        code, join = f"list_position({log.param(types)}, type) - 1", ""
    else:
        log.cursor.register("_types", pa.table({"type": types, "code": range(len(types))}))
        code, join = "code", " JOIN _types USING (type)"
    try:
        # No ORDER BY: a plain scan keeps the table's order, which is position
        # order; checked below, since Parquet files may come in any order.
        rows = log.arrow(
            f"SELECT hash(stream_id) AS h, {code} AS code, epoch_us(t) AS us, position "
            f"FROM log{join}"
        )
    finally:
        if join:
            log.cursor.unregister("_types")
    positions = rows["position"].to_numpy()
    if len(positions) > 1 and not (positions[1:] > positions[:-1]).all():
        rows = rows.take(np.argsort(positions, kind="stable"))
    return rows


_FOLLOW_TIMES = ("mean_duration", "median_duration")


def funnel(source: Source, steps: Sequence[str], **filters: Any) -> pd.DataFrame:
    """How many streams went through ``steps`` in order: ``step, streams, share_of_first,
    share_of_previous``.

    A stream reaches step k when it has an event of type ``steps[k]`` after the
    one that made it reach step k - 1 (any events may come in between).

    Examples
    --------
    >>> import eventlab as el
    >>> store = el.EventStore()
    >>> for case, steps in [("c1", "ABC"), ("c2", "AC"), ("c3", "B")]:
    ...     _ = store.append(case, [el.Event(step, {}) for step in steps])
    >>> el.analytics.funnel(store, ["A", "B", "C"])
      step  streams  share_of_first  share_of_previous
    0    A        2             1.0                1.0
    1    B        1             0.5                0.5
    2    C        1             0.5                1.0
    """
    if isinstance(steps, str) or not steps or not all(isinstance(s, str) for s in steps):
        raise EventlabError(f"steps must be a non-empty list of event types, got {steps!r}")
    log = _Log(source, **filters)
    types = log.param(list(steps))
    reached = []
    for k, step in enumerate(steps):
        name = log.param(step)
        if k == 0:
            reached.append(
                f"r0 AS (SELECT stream_id, min(seq) AS seq FROM ordered WHERE type = {name} "
                f"GROUP BY stream_id)"
            )
        else:
            reached.append(
                f"r{k} AS (SELECT o.stream_id, min(o.seq) AS seq FROM ordered o "
                f"JOIN r{k - 1} p ON o.stream_id = p.stream_id AND o.seq > p.seq "
                f"WHERE o.type = {name} GROUP BY o.stream_id)"
            )
    counts = " UNION ALL ".join(
        f"SELECT {k} AS k, count(*) AS streams FROM r{k}" for k in range(len(steps))
    )
    frame = log.df(
        f"""
        , ordered AS (SELECT stream_id, type,
                      row_number() OVER (PARTITION BY stream_id ORDER BY t, position) AS seq
                      FROM log WHERE list_contains({types}, type)),
        {", ".join(reached)}
        {counts} ORDER BY k
        """
    )
    streams = frame["streams"].astype("int64").to_numpy()
    first = streams[0] if len(streams) else 0
    previous = np.r_[first, streams[:-1]]
    with np.errstate(divide="ignore", invalid="ignore"):
        return pd.DataFrame(
            {
                "step": list(steps),
                "streams": streams,
                "share_of_first": np.where(first > 0, streams / max(first, 1), np.nan),
                "share_of_previous": np.where(
                    previous > 0, streams / np.maximum(previous, 1), np.nan
                ),
            }
        )


def trace(source: Source, correlation_id: str) -> pd.DataFrame:
    """The causal tree of one business transaction: its commands and events.

    Every event (and, in a store with a command store, every command) with
    this ``correlation_id``, one row each: ``id, kind, type, stream_id,
    causation_id, depth, time``. A row's parent is the row whose id is its
    causation id (an event caused by a command, a command caused by an event:
    the ``causation_id`` in the command's context, or ``caused_by`` as the
    shop's reactions and choreographies write it); roots have depth 0. Rows
    come in tree order: each one after its parent, siblings by time.
    """
    if not isinstance(correlation_id, str):
        raise EventlabError(f"correlation_id must be a string, got {correlation_id!r}")
    log = _Log(source)
    cid = log.param(correlation_id)
    commands = ""
    if log.has_table("commands"):
        commands = (
            f"UNION ALL SELECT command_id AS id, 'command' AS kind, type, NULL AS stream_id, "
            f"coalesce(json_extract_string(context, '$.causation_id'), "
            f"json_extract_string(context, '$.caused_by')) AS causation_id, "
            f"submitted_at AS time, seq AS position FROM commands WHERE correlation_id = {cid}"
        )
    frame = log.df(
        f"""
        , nodes AS (
            SELECT event_id AS id, 'event' AS kind, type, stream_id, causation_id, t AS time,
                   position FROM log WHERE correlation_id = {cid}
            {commands}),
        tree AS (
            WITH RECURSIVE walk(id, depth, path) AS (
                SELECT id, 0, [struct_pack(time := time, kind := kind, position := position)]
                FROM nodes n
                WHERE causation_id IS NULL OR causation_id NOT IN (SELECT id FROM nodes)
                UNION ALL
                SELECT c.id, w.depth + 1,
                       list_append(w.path, struct_pack(time := c.time, kind := c.kind,
                                                       position := c.position))
                FROM walk w JOIN nodes c ON c.causation_id = w.id
                WHERE w.depth < 1000)
            SELECT * FROM walk)
        SELECT n.id, n.kind, n.type, n.stream_id, n.causation_id, tree.depth, n.time
        FROM nodes n JOIN tree USING (id) ORDER BY tree.path
        """
    )
    return _counts(frame, "depth")


# ---------------------------------------------------------------------- commands and sagas

_STATUS_COLUMNS = (
    "queued",
    "running",
    "succeeded",
    "rejected",
    "failed",
    "timed_out",
    "expired",
    "dead",
)
_COMMAND_COLUMNS = (
    "type",
    "commands",
    *_STATUS_COLUMNS,
    "attempts_mean",
    "retried",
    "p50_duration",
    "p95_duration",
    "p50_latency",
    "p95_latency",
)


def command_stats(store: EventStore) -> pd.DataFrame:
    """Per command type: how many, in each status, attempts, and how long they took.

    Columns: ``type``, ``commands``, one count per status (``queued`` ...
    ``dead``), ``attempts_mean``, ``retried`` (commands run more than once),
    ``p50_duration``/``p95_duration`` (the last run, start to finish) and
    ``p50_latency``/``p95_latency`` (submitted to finished). Empty (with these
    columns) when the store has no command store.
    """
    log = _Log(store)
    if not log.has_table("commands"):
        return pd.DataFrame(columns=list(_COMMAND_COLUMNS))
    statuses = ", ".join(f"count(*) FILTER (WHERE status = '{s}') AS {s}" for s in _STATUS_COLUMNS)
    frame = log.df(
        f"""
        , c AS (SELECT *, epoch_us(finished_at) - epoch_us(started_at) AS run,
                epoch_us(finished_at) - epoch_us(submitted_at) AS latency FROM commands)
        SELECT type, count(*) AS commands, {statuses}, avg(attempts) AS attempts_mean,
               count(*) FILTER (WHERE attempts > 1) AS retried,
               quantile_cont(run, 0.5) AS p50_duration, quantile_cont(run, 0.95) AS p95_duration,
               quantile_cont(latency, 0.5) AS p50_latency,
               quantile_cont(latency, 0.95) AS p95_latency
        FROM c GROUP BY type ORDER BY type
        """
    )
    frame = _counts(frame, "commands", "retried", *_STATUS_COLUMNS)
    return _durations(frame, "p50_duration", "p95_duration", "p50_latency", "p95_latency")


_SAGA_COLUMNS = (
    "saga", "sagas", "running", "compensating", "completed", "aborted", "stuck",
    "steps_mean", "retries", "timeouts", "compensated", "compensation_rate",
    "p50_duration", "p95_duration",
)  # fmt: skip
_SAGA_COUNTS = ("sagas", "running", "compensating", "completed", "aborted", "stuck")


def saga_stats(store: Source, *, time: str = "occurred_at") -> pd.DataFrame:
    """Per saga name: how many, in which state, their steps, and how long they took.

    Sagas keep their state as events in streams ``saga-<transaction id>`` (see
    :mod:`eventlab.saga.state`); the name is the ``saga`` field of
    ``SagaStarted``. A saga's state is the one :func:`el.saga_status
    <eventlab.saga.saga_status>` gives: ``completed``, ``aborted`` or ``stuck``
    when its last event is ``SagaCompleted``, ``SagaAborted`` or ``SagaStuck``,
    else ``compensating`` once a compensation was requested, else ``running``.

    Columns: ``saga``, ``sagas``, one count per state, ``steps_mean`` (distinct
    steps requested per saga), ``retries`` and ``timeouts`` (``StepRetried`` and
    ``StepTimedOut`` events), ``compensated`` (sagas that requested a
    compensation) and ``compensation_rate`` (their share), and
    ``p50_duration``/``p95_duration`` from start to end of the sagas that
    completed or aborted. Empty (with these columns) when there are no sagas.
    """
    log = _Log(store, streams=SAGA_PREFIX + "*", time=time)
    frame = log.df(
        """
        , per_saga AS (
            SELECT stream_id,
                   any_value(json_extract_string(data, '$.saga'))
                       FILTER (WHERE type = 'SagaStarted') AS saga,
                   count(*) FILTER (WHERE type = 'SagaStarted') AS started,
                   arg_max(type, position) AS last_event,
                   min(t) AS start, max(t) AS finish,
                   count(DISTINCT json_extract_string(data, '$.step'))
                       FILTER (WHERE type = 'StepRequested') AS steps,
                   count(*) FILTER (WHERE type = 'StepRetried') AS retries,
                   count(*) FILTER (WHERE type = 'StepTimedOut') AS timeouts,
                   bool_or(type = 'CompensationRequested') AS compensated
            FROM log GROUP BY stream_id),
        states AS (
            SELECT *, CASE last_event WHEN 'SagaCompleted' THEN 'completed'
                          WHEN 'SagaAborted' THEN 'aborted' WHEN 'SagaStuck' THEN 'stuck'
                          ELSE CASE WHEN compensated THEN 'compensating' ELSE 'running' END
                      END AS state
            FROM per_saga WHERE started > 0)
        SELECT saga, count(*) AS sagas,
               count(*) FILTER (WHERE state = 'running') AS running,
               count(*) FILTER (WHERE state = 'compensating') AS compensating,
               count(*) FILTER (WHERE state = 'completed') AS completed,
               count(*) FILTER (WHERE state = 'aborted') AS aborted,
               count(*) FILTER (WHERE state = 'stuck') AS stuck,
               avg(steps) AS steps_mean, sum(retries) AS retries, sum(timeouts) AS timeouts,
               count(*) FILTER (WHERE compensated) AS compensated,
               count(*) FILTER (WHERE compensated) / count(*) AS compensation_rate,
               quantile_cont(epoch_us(finish) - epoch_us(start), 0.5)
                   FILTER (WHERE state IN ('completed', 'aborted')) AS p50_duration,
               quantile_cont(epoch_us(finish) - epoch_us(start), 0.95)
                   FILTER (WHERE state IN ('completed', 'aborted')) AS p95_duration
        FROM states GROUP BY saga ORDER BY saga NULLS LAST
        """
    )
    if frame.empty:
        return pd.DataFrame(columns=list(_SAGA_COLUMNS))
    frame = _counts(frame, *_SAGA_COUNTS, "retries", "timeouts", "compensated")
    return _durations(frame, "p50_duration", "p95_duration")[list(_SAGA_COLUMNS)]

"""Streaming reads: SQL filters for the log and Arrow batches turned into records."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from itertools import chain
from typing import Any, NamedTuple

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .clock import to_micros
from .errors import EventlabError
from .events import RecordedEvent, from_json, make_decoded_record, make_record, upcast_payload
from .upcasting import upcasters


def filters(
    *, after: int, types: Sequence[str] | str | None, until: int | datetime | str | None
) -> tuple[str, list[Any]]:
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise EventlabError(f"after must be a non-negative position, got {after!r}")
    clauses = ["position > $1"]
    params: list[Any] = [after]
    if types is not None:
        params.append(_names(types, "types", EventlabError))
        clauses.append(f"list_contains(${len(params)}, type)")
    if until is not None:
        if isinstance(until, int) and not isinstance(until, bool):
            params.append(until)
            clauses.append(f"position <= ${len(params)}")
        else:
            params.append(to_micros(until))
            clauses.append(f"epoch_us(recorded_at) <= ${len(params)}")
    return " WHERE " + " AND ".join(clauses), params


def upper_bounds(params: list[Any], *, version: int | None = None, **times: Any) -> str:
    """SQL ``AND ... <= $n`` clauses for the bounds that are given, adding their values.

    ``version`` bounds the version column; each keyword in ``times`` names a
    timestamp column, compared with a timestamp made from epoch microseconds
    (exact and zone-free).
    """
    sql = ""
    if version is not None:
        params.append(version)
        sql += f" AND version <= ${len(params)}"
    for column, limit in times.items():
        if limit is not None:
            params.append(to_micros(limit))
            # The bare column, not epoch_us(column): DuckDB then skips row groups
            # by their min/max timestamps instead of converting every row.
            sql += f" AND {column} <= make_timestamptz(${len(params)}::BIGINT)"
    return sql


def log_filter(
    *, category: str | None = None, at: Any = None, known_at: Any = None
) -> tuple[str, list[Any]]:
    """The WHERE clause (and its parameters) of a whole-log fold: a stream-id prefix and
    the business-time and knowledge-time bounds, each optional."""
    where, params = filters(after=0, types=None, until=None)
    if category is not None:
        params.append(category)
        where += f" AND starts_with(stream_id, ${len(params)})"
    return where + upper_bounds(params, occurred_at=at, recorded_at=known_at), params


TIMES = ("occurred_at", "recorded_at")


def event_filter(
    params: list[Any],
    *,
    types: Iterable[str] | str | None = None,
    streams: Iterable[str] | str | None = None,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    time: str = "occurred_at",
    error: type[EventlabError] = EventlabError,
) -> str:
    """SQL conditions (joined with AND, or ``"TRUE"``) for the filters that the analyses,
    plots and widgets all take, adding their values to ``params`` as ``$n`` parameters.

    ``types`` is a type or several; ``streams`` a stream id, a prefix ending in
    ``*`` or several ids; ``start`` is inclusive and ``end`` exclusive, on the
    ``time`` clock. Bad arguments raise ``error`` (the caller's kind of error).
    """
    if time not in TIMES:
        raise error(f"time must be 'occurred_at' or 'recorded_at', got {time!r}")
    clauses = []
    if types is not None:
        params.append(_names(types, "types", error))
        clauses.append(f"list_contains(${len(params)}, type)")
    if isinstance(streams, str) and streams.endswith("*"):
        params.append(streams[:-1])
        clauses.append(f"starts_with(stream_id, ${len(params)})")
    elif streams is not None:
        params.append(_names(streams, "streams", error))
        clauses.append(f"list_contains(${len(params)}, stream_id)")
    for bound, operator in ((start, ">="), (end, "<")):
        if bound is not None:
            params.append(to_micros(bound))
            # The bare column (not epoch_us of it) lets DuckDB skip row groups by min/max.
            clauses.append(f"{time} {operator} make_timestamptz(${len(params)}::BIGINT)")
    return " AND ".join(clauses) or "TRUE"


def _names(values: Iterable[str] | str, what: str, error: type[EventlabError]) -> list[str]:
    if isinstance(values, str):
        return [values]
    try:
        values = list(values)
    except TypeError:
        raise error(
            f"{what} must be a string or a list of strings, got {type(values).__name__}: "
            f"{values!r:.80}"
        ) from None
    if not all(isinstance(v, str) for v in values):
        raise error(f"{what} must be strings, got {values!r:.80}; e.g. {what}=['OrderPlaced']")
    return values


def iterate_records(reader: pa.RecordBatchReader) -> Iterator[RecordedEvent]:
    """Records from Arrow batches in the RecordedEvent layout.

    Column-wise conversion, then one tuple per row built in C: the cheapest way
    to make millions of Python objects (see RecordedEvent's notes).
    """

    def records(batch: pa.RecordBatch) -> Iterator[RecordedEvent]:
        return map(make_record, zip(*_batch_values(batch), strict=True))

    # chain/map/zip hand out each record without resuming a Python frame per row.
    return chain.from_iterable(map(records, reader))


def decoded_batches(
    batches: Iterable[pa.RecordBatch | PayloadBatch],
) -> Iterator[list[RecordedEvent]]:
    """Lists of records with their payloads already decoded, one list per Arrow batch.

    For folds, which read every payload: each batch's ``data`` is parsed in one
    call, several times faster than one per event, straight from the Arrow
    buffer, without a Python string per payload. Lists rather than one
    record at a time, so the fold's loop runs over a list, not a generator.
    ``batches`` may come prepared by :func:`with_payload_text` (on a read-ahead
    thread, say).
    """
    for prepared in payload_batches(batches):
        batch = prepared.batch
        columns = _batch_values(batch, payloads=decode_payloads(prepared))
        if upcasters:
            columns[5] = list(map(upcast_payload, columns[4], columns[11], columns[5]))
        yield list(map(make_decoded_record, zip(*columns, strict=True)))


class PayloadBatch(NamedTuple):
    """An Arrow batch in the RecordedEvent layout, its payloads joined for decoding."""

    batch: pa.RecordBatch
    text: bytes  # every payload of the batch as one JSON array
    long_digits: bool | None  # whether a payload holds a run of 19 digits (None: not looked)


def with_payload_text(batch: pa.RecordBatch, *, look_for_digits: bool = False) -> PayloadBatch:
    """``batch`` with its payloads joined into one JSON array, made by Arrow.

    Arrow lets go of the GIL while it joins, so a read-ahead thread can do this
    for the next batch while the caller's thread folds this one. There, with
    ``look_for_digits``, RE2 also looks for the runs of digits that keep orjson
    from decoding (see :func:`~eventlab.events.from_json`): slower than the
    caller's own look would be, but off the caller's thread.
    """
    column = batch.column(_DATA)
    # 64-bit offsets: the joined text may outgrow what one 32-bit string column holds.
    whole = pa.LargeListArray.from_arrays(
        pa.array([0, len(column)], pa.int64()), column.cast(pa.large_string())
    )
    joined = pc.binary_join(whole, _COMMA)
    text = pc.binary_join_element_wise(_OPEN, joined, _CLOSE, _NOTHING)[0]
    long_digits = None
    if look_for_digits:
        long_digits = pc.any(pc.match_substring_regex(column, "[0-9]{19}")).as_py() is True
    # The bytes handed over as they are: no Python str is made, and orjson reads
    # bytes fastest.
    return PayloadBatch(batch, text.as_buffer().to_pybytes(), long_digits)


def payload_batches(batches: Iterable[pa.RecordBatch | PayloadBatch]) -> Iterator[PayloadBatch]:
    """The non-empty batches of ``batches`` with their payload text, made here unless
    a read-ahead thread made it already."""
    for item in batches:
        prepared = item if type(item) is PayloadBatch else with_payload_text(item)
        if prepared.batch.num_rows:
            yield prepared


def prepare_ahead(batch: pa.RecordBatch) -> PayloadBatch:
    """What a read-ahead thread makes of each batch it fetches for a decoding reader."""
    return with_payload_text(batch, look_for_digits=True)


def decode_payloads(prepared: PayloadBatch) -> list[dict[str, Any]]:
    """Every payload of a prepared batch, decoded in one call."""
    return from_json(prepared.text, long_digits=prepared.long_digits)


_OPEN, _CLOSE, _COMMA, _NOTHING = (
    pa.scalar(text, pa.large_string()) for text in ("[", "]", ",", "")
)


# Positions in the RecordedEvent layout of the columns whose values repeat or decode.
_STREAM_ID, _TYPE, _DATA, _RECORDED_AT, _OCCURRED_AT = 2, 4, 5, 9, 10


def _batch_values(batch: pa.RecordBatch, *, payloads: list | None = None) -> list[list]:
    """A batch in the RecordedEvent layout as one list per column.

    Making Python objects is most of the cost of a read, so repeated values
    share one object: a stream's events usually lie together (one object per
    run), there are few event types (one object per type), and business time
    is usually knowledge time (one list for both). With ``payloads`` (decoded)
    the data column holds them instead of JSON text.
    """
    columns = batch.columns
    values = []
    for index, column in enumerate(columns):
        if index == _STREAM_ID:
            values.append(_run_values(column))
        elif index == _TYPE:
            values.append(_distinct_values(column))
        elif index == _DATA and payloads is not None:
            values.append(payloads)
        elif index == _OCCURRED_AT and column.equals(columns[_RECORDED_AT]):
            values.append(values[_RECORDED_AT])
        else:
            values.append(_column_values(column))
    return values


def _run_values(column: pa.Array) -> list:
    """A string column as a list with one str object per run of equal values."""
    if column.null_count or len(column) < 2:
        return _column_values(column)
    runs = pc.run_end_encode(column)
    if 2 * len(runs.values) > len(column):  # mostly short runs: sharing would not pay
        return column.to_pylist()
    lengths = np.diff(runs.run_ends.to_numpy(), prepend=0)
    return np.repeat(np.array(runs.values.to_pylist(), dtype=object), lengths).tolist()


def _distinct_values(column: pa.Array) -> list:
    """A string column as a list with one str object per distinct value."""
    if column.null_count or len(column) < 2:
        return _column_values(column)
    encoded = pc.dictionary_encode(column)
    if 2 * len(encoded.dictionary) > len(column):  # mostly distinct: sharing would not pay
        return column.to_pylist()
    shared = np.array(encoded.dictionary.to_pylist(), dtype=object)
    return shared[encoded.indices.to_numpy()].tolist()


def _column_values(column: pa.Array) -> list:
    """A column as a Python list, skipping per-value conversion where it can."""
    size = len(column)
    if column.null_count == size:  # e.g. correlation ids nobody set
        return [None] * size
    if column.null_count == 0:
        if pa.types.is_integer(column.type):
            return _int_values(column.to_numpy())
        # The ends first: min_max compares every string, which costs more than
        # converting them when they differ (ids, payloads).
        if pa.types.is_string(column.type) and size > 1 and column[0] == column[size - 1]:
            bounds = pc.min_max(column)
            low = bounds["min"].as_py()
            if low == bounds["max"].as_py():  # e.g. metadata that is always "{}"
                return [low] * size
    return column.to_pylist()


def _int_values(values: np.ndarray) -> list:
    """Integers as a Python list, sharing what repeats and counting what counts up.

    Positions usually count up by one (a ``range`` makes them faster than any
    conversion) and timestamps repeat (a transaction's or a bulk append's events
    share one), so one int object serves each run of equal values.
    """
    size = len(values)
    if size < 2:
        return values.tolist()
    first = int(values[0])
    if int(values[-1]) - first == size - 1 and (np.diff(values) == 1).all():
        return list(range(first, first + size))
    low, high = int(values.min()), int(values.max())
    if low == high:
        return [first] * size
    if -5 <= low and high <= 256:  # CPython keeps one object for each of these
        return values.tolist()
    starts = np.flatnonzero(np.diff(values)) + 1
    if 2 * len(starts) >= size:  # mostly short runs: sharing would not pay
        return values.tolist()
    starts = np.r_[0, starts]
    shared = np.array(values[starts].tolist(), dtype=object)
    return np.repeat(shared, np.diff(np.r_[starts, size])).tolist()


# What read_query() runs. SET is excluded: a session setting such as TimeZone would
# change what every later read returns.
_READ_STATEMENTS = {"SELECT", "EXPLAIN", "PRAGMA", "CALL"}

# Statements a SELECT can hold (DuckDB runs ``WITH x AS (DELETE ... RETURNING *)
# SELECT ...``, a statement of type SELECT). A query that mentions one runs in a
# read-only transaction: DuckDB then refuses the write. Others pay nothing for it.
_MAY_WRITE = re.compile(r"\b(?:insert|update|delete|merge)\b", re.IGNORECASE)

# What may stand between EXPLAIN and the statement it explains.
_EXPLAIN_OPTIONS = {"ANALYZE", "ANALYSE", "VERBOSE"}
# Words a parenthesised statement under EXPLAIN can start with (not an option list).
_STATEMENT_STARTS = {"SELECT", "WITH", "FROM", "VALUES", "TABLE", "(", "INSERT", "UPDATE", "DELETE"}


def read_query(
    cursor: duckdb.DuckDBPyConnection,
    query: str,
    params: Sequence[Any] | Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Run a query that may only read (store.sql() and read models as of a time)."""
    if not isinstance(query, str):
        raise EventlabError(
            f"the SQL query must be a string, got {type(query).__name__}: {query!r:.80}; "
            f"e.g. store.sql('SELECT count(*) FROM events')"
        )
    try:
        statements = cursor.extract_statements(query)
    except duckdb.Error as exc:
        raise EventlabError(f"cannot parse the SQL query: {exc}") from None
    guard = False
    for statement in statements:
        kind = statement.type.name
        if kind not in _READ_STATEMENTS:
            raise _not_a_read(kind)
        if kind != "EXPLAIN":
            guard = guard or _MAY_WRITE.search(statement.query) is not None
            continue
        # A plain EXPLAIN only plans, whatever it explains; EXPLAIN ANALYZE runs it.
        analyze, explained = _explained(cursor, statement.query)
        if analyze:
            if explained != "SELECT":
                raise _not_a_read(f"{explained or 'non-SELECT'} statement under EXPLAIN ANALYZE")
            guard = True
    if guard:
        return _read_only(cursor, query, params)
    try:
        return cursor.execute(query, params).df()
    except duckdb.Error as exc:
        raise EventlabError(f"SQL query failed: {exc}") from None


def _not_a_read(what: str) -> EventlabError:
    if " " not in what:
        what += " statement"
    article = "an" if what[0] in "AEIOUaeiou" else "a"
    return EventlabError(
        f"store.sql() is for reading, but the query contains {article} {what}. The event log is "
        f"append-only: write through store.append() or store.append_frame(); and settings "
        f"stay fixed (timestamps are always UTC)."
    )


def _explained(cursor: duckdb.DuckDBPyConnection, text: str) -> tuple[bool, str | None]:
    """Whether an EXPLAIN statement analyzes (runs) the statement it explains, and that
    statement's type (None when it cannot be told)."""
    tokens = duckdb.tokenize(text)
    ends = [start for start, _ in tokens[1:]] + [len(text)]
    words = [
        (text[start:end].strip().upper(), start)
        for (start, kind), end in zip(tokens, ends, strict=True)
        if kind != duckdb.token_type.comment
    ]
    analyze, depth = False, 0
    for position, (word, start) in enumerate(words[1:], start=2):  # the first is EXPLAIN
        # "(" opens an option list, EXPLAIN (ANALYZE, FORMAT json) ..., unless the
        # explained statement itself starts with it: EXPLAIN ANALYZE (SELECT ...).
        following = words[position][0] if position < len(words) else ""
        if word == "(" and depth == 0 and following in _STATEMENT_STARTS:
            try:
                [inner] = cursor.extract_statements(text[start:])
            except (duckdb.Error, ValueError):
                return analyze, None
            return analyze, inner.type.name
        if word == "(":
            depth += 1
        elif word == ")":
            depth -= 1
        elif word in _EXPLAIN_OPTIONS:
            analyze = analyze or word != "VERBOSE"
        elif depth == 0:
            try:
                [inner] = cursor.extract_statements(text[start:])
            except (duckdb.Error, ValueError):
                return analyze, None
            return analyze, inner.type.name
    return analyze, None


def _read_only(
    cursor: duckdb.DuckDBPyConnection,
    query: str,
    params: Sequence[Any] | Mapping[str, Any] | None,
) -> pd.DataFrame:
    """Run ``query`` in a read-only transaction, which DuckDB keeps from writing."""
    cursor.execute("BEGIN TRANSACTION READ ONLY")
    try:
        return cursor.execute(query, params).df()
    except duckdb.TransactionException as exc:
        if "read-only" not in str(exc):
            raise EventlabError(f"SQL query failed: {exc}") from None
        raise _not_a_read("statement that writes (an INSERT, UPDATE or DELETE)") from None
    except duckdb.Error as exc:
        raise EventlabError(f"SQL query failed: {exc}") from None
    finally:
        cursor.execute("ROLLBACK")

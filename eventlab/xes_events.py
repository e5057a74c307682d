"""From a parsed XES log to the rows of events: names, times, and attributes as JSON.

Attributes arrive in file order, so each event's (and trace's) attributes are
neighbours; an object is built for all of them at once by joining each
attribute's ``"key":value`` text into an Arrow list per owner, with no sorting
or hashing of groups. Only the values that are not text (dates, numbers,
booleans, and event times) go through DuckDB, which reads them and says which
cannot be read.
"""

from __future__ import annotations

import json
from datetime import datetime

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import XesError
from .xes_log import (
    BOOLEAN,
    DATE,
    EARLIEST,
    FLOAT,
    ID,
    INT,
    JSON,
    LATEST,
    STRING,
    ParsedLog,
    time_sql,
)

NAME, TIMESTAMP = "concept:name", "time:timestamp"

EVENT_SCHEMA = pa.schema(
    [
        ("stream_id", pa.string()),
        ("type", pa.string()),
        ("occurred_at", pa.timestamp("us", tz="UTC")),
        ("data", pa.string()),
        ("metadata", pa.string()),
    ]
)

# A raw value as the JSON stored in data, NULL when it does not read as its type
# (xes_log.typed_value does the same in Python for nested values).
_TYPED = f"""CASE type
    WHEN {DATE} THEN to_json(strftime({time_sql("value")}, '%Y-%m-%dT%H:%M:%S.%fZ'))
    WHEN {INT} THEN CASE WHEN regexp_full_match(trim(value), '[+-]?[0-9]+')
        THEN to_json(TRY_CAST(trim(value) AS BIGINT)) END
    WHEN {FLOAT} THEN CASE
        WHEN isfinite(TRY_CAST(trim(value) AS DOUBLE)) THEN to_json(TRY_CAST(trim(value) AS DOUBLE))
        WHEN TRY_CAST(trim(value) AS DOUBLE) IS NOT NULL THEN 'null'::JSON END
    WHEN {BOOLEAN} THEN CASE WHEN lower(trim(value)) IN ('true', '1') THEN 'true'::JSON
        WHEN lower(trim(value)) IN ('false', '0') THEN 'false'::JSON END
    END::VARCHAR"""
_TYPE_NAMES = {DATE: "a date", INT: "an int", FLOAT: "a float", BOOLEAN: "a boolean"}


class NeedLines(Exception):
    """A value is bad, and the parsed log cannot say on which line."""


def assemble(parsed: ParsedLog) -> pa.Table:
    """The events of a parsed log (EVENT_SCHEMA): checked, typed, with their trace's attributes."""
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        problems: list[tuple[int, str]] = []
        n_events, n_traces = parsed.events.num_rows, parsed.traces.num_rows
        events = _Owners(parsed.event_attributes, n_events, (NAME, TIMESTAMP), con, problems)
        traces = _Owners(parsed.trace_attributes, n_traces, (NAME,), con, problems)
        times = _times(con, events, problems)
        trace_of = pa.array(parsed.events["trace"].to_numpy(), pa.int64())
        event_lines = parsed.events["line"].to_numpy()
        _missing(events.special[NAME], event_lines, "an event", "its type", problems)
        # Checked per event: a trace without events needs no name (it becomes no stream).
        named = traces.special[NAME].take(trace_of)
        trace_lines = parsed.traces["line"].to_numpy()[trace_of.to_numpy()]
        _missing(named, trace_lines, "a trace", "the stream id", problems)
        if problems:
            if not parsed.has_lines:
                raise NeedLines
            line, message = min(problems)
            raise XesError(f"line {line}: {message}. Nothing was imported.")
        return pa.table(
            [named, events.special[NAME], times, events.objects, traces.objects.take(trace_of)],
            schema=EVENT_SCHEMA,
        )
    finally:
        con.close()


class _Owners:
    """The attributes of every event (or trace): some keys apart, the rest as JSON objects."""

    def __init__(self, table, count, keys, con, problems):
        table = _in_file_order(table)
        codes, dictionary = _key_codes(table)
        table, codes = _deduplicated(table, codes)
        owners = table["owner"].to_numpy()
        apart = np.zeros(table.num_rows, bool)
        self.special: dict[str, pa.Array] = {}
        self.lines: dict[str, np.ndarray] = {}
        lines = table["line"].to_numpy()
        for key in keys:
            code = dictionary.index(key) if key in dictionary else -1
            rows = np.flatnonzero(codes == code)
            apart[rows] = True
            where = np.full(count, -1, np.int64)
            where[owners[rows]] = rows
            self.special[key] = table["value"].take(pa.array(where, mask=where < 0))
            self.lines[key] = np.where(where >= 0, lines[np.maximum(where, 0)], -1)
        rest = table.filter(pa.array(~apart))
        self.objects = _objects(rest, count, con, problems)


def _in_file_order(table: pa.Table) -> pa.Table:
    numbers = table["no"].to_numpy()
    if len(numbers) and np.any(numbers[1:] < numbers[:-1]):
        table = table.take(pa.array(np.argsort(numbers, kind="stable")))
    return table.combine_chunks()


def _key_codes(table: pa.Table) -> tuple[np.ndarray, list[str]]:
    """Each row's key as a small integer, and the keys those integers stand for."""
    if table.num_rows == 0:
        return np.zeros(0, np.int32), []
    encoded = pc.dictionary_encode(table["key"].combine_chunks())
    return encoded.indices.to_numpy(), encoded.dictionary.to_pylist()


def _deduplicated(table: pa.Table, codes: np.ndarray) -> tuple[pa.Table, np.ndarray]:
    """Without the earlier values of a key given twice to one owner (a dict keeps the last)."""
    if table.num_rows == 0:
        return table, codes
    owners = table["owner"].to_numpy()
    starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
    if codes.max() < 63:
        # With few keys, one bit per key: an owner repeats a key if OR and sum of its bits differ.
        bits = np.left_shift(np.uint64(1), codes.astype(np.uint64))
        if np.array_equal(np.bitwise_or.reduceat(bits, starts), np.add.reduceat(bits, starts)):
            return table, codes
    pairs = owners * (int(codes.max()) + 1) + codes
    order = np.lexsort((np.arange(len(pairs)), pairs))
    ordered = pairs[order]
    last = np.r_[ordered[1:] != ordered[:-1], True]
    if last.all():
        return table, codes
    keep = np.zeros(len(pairs), bool)
    keep[order[last]] = True
    return table.filter(pa.array(keep)), codes[keep]


def _objects(table: pa.Table, count: int, con, problems) -> pa.Array:
    """One JSON object per owner (0 to count - 1) of the attributes in ``table``."""
    if table.num_rows == 0:
        return pa.array(["{}"] * count, pa.string())
    types = table["type"].to_numpy()
    values = table["value"]
    typed = pa.nulls(table.num_rows, pa.string())
    text = np.flatnonzero((types == STRING) | (types == ID))
    ready = np.flatnonzero(types == JSON)
    other = np.flatnonzero((types != STRING) & (types != ID) & (types != JSON))
    parts = [_json_strings(values.take(pa.array(text))), values.take(pa.array(ready))]
    if len(other):
        parts.append(_read_values(table.take(pa.array(other)), con, problems))
    rows = np.concatenate([text, ready, other])
    inverse = np.empty_like(rows)
    inverse[rows] = np.arange(len(rows))
    typed = pa.concat_arrays(
        [p.combine_chunks() if isinstance(p, pa.ChunkedArray) else p for p in parts]
    )
    typed = typed.take(pa.array(inverse))
    pairs = pc.binary_join_element_wise(_json_strings(table["key"]), typed, ":")
    owners = table["owner"].to_numpy()
    offsets = np.searchsorted(owners, np.arange(count + 1)).astype(np.int32)
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), pairs), ",")
    return pc.binary_join_element_wise("{", joined, "}", "")


def _read_values(table: pa.Table, con, problems) -> pa.Array:
    """Dates, numbers and booleans as JSON; the first that cannot be read is a problem."""
    con.register("_values", table)
    try:
        typed = con.sql(f"SELECT {_TYPED} AS typed FROM _values").to_arrow_table()["typed"]
    finally:
        con.unregister("_values")
    bad = np.flatnonzero(typed.is_null().to_numpy(zero_copy_only=False))
    if len(bad):
        row = int(bad[0])
        key, value = table["key"][row].as_py(), table["value"][row].as_py()
        what = _TYPE_NAMES[table["type"][row].as_py()]
        problems.append(
            (
                table["line"][row].as_py(),
                f"cannot read {value!r} as {what} (attribute {key!r}); fix it in the file",
            )
        )
    return typed.combine_chunks()


def _times(con, events: _Owners, problems) -> pa.Array:
    """Event times (UTC); an event without time:timestamp gets NULL (the store then uses
    recorded_at). A time that cannot be read is a problem whatever its XES type."""
    values = events.special[TIMESTAMP]
    con.register("_times", pa.table({"value": values}))
    try:
        sql = f"SELECT {time_sql('value', in_range=False)} AS t FROM _times"
        times = con.sql(sql).to_arrow_table()["t"].combine_chunks()
    finally:
        con.unregister("_times")
    # Years 1 to 9999 (in UTC) checked here, by Arrow: cheaper than a second cast in SQL.
    outside = pc.or_(
        pc.less(times, pa.scalar(datetime.fromisoformat(EARLIEST), times.type)),
        pc.greater(times, pa.scalar(datetime.fromisoformat(LATEST), times.type)),
    )
    unread = pc.or_kleene(pc.is_null(times), outside)
    bad = np.flatnonzero(pc.and_(pc.is_valid(values), unread).to_numpy(zero_copy_only=False))
    if len(bad):
        row = int(bad[0])
        problems.append(
            (
                int(events.lines[TIMESTAMP][row]),
                f"cannot read {values[row].as_py()!r} as a time (time:timestamp); XES times "
                f"look like 2011-10-01T00:38:44.546+02:00",
            )
        )
    return times.cast(pa.timestamp("us", tz="UTC"))


def _missing(names, lines, what, role, problems) -> None:
    """A problem for the first ``names`` entry that is null or blank."""
    blank = pc.or_kleene(pc.is_null(names), pc.equal(pc.utf8_trim_whitespace(names), ""))
    bad = np.flatnonzero(pc.fill_null(blank, True).to_numpy(zero_copy_only=False))
    if len(bad):
        line = int(lines[int(bad[0])])
        problems.append(
            (
                line,
                f"{what} without a concept:name (or with an empty one): eventlab needs it "
                f"as {role}",
            )
        )


def _json_strings(strings: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Each string as a JSON string literal; only those that need escaping go through Python."""
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    strings = strings.cast(pa.string())
    if len(strings) == 0:
        return strings
    quoted = pc.binary_join_element_wise('"', strings, '"', "")
    offsets = np.frombuffer(strings.buffers()[1], np.int32)[
        strings.offset : strings.offset + len(strings) + 1
    ]
    data = np.frombuffer(strings.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    # JSON escapes quotes, backslashes and control characters; nothing else needs it.
    special = np.flatnonzero((data == 34) | (data == 92) | (data < 32)) + offsets[0]
    if len(special) == 0:
        return quoted
    rows = np.unique(np.searchsorted(offsets, special, side="right") - 1)
    fixed = quoted.to_pylist()
    for row in rows.tolist():
        fixed[row] = json.dumps(strings[row].as_py(), ensure_ascii=False)
    return pa.array(fixed, pa.string())

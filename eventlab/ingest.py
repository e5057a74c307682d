"""Bulk appends: a DataFrame or Arrow table of events in one transaction.

Everything per row is vectorised: positions, versions and timestamps are
computed with NumPy and Arrow, checks run as Arrow compute kernels, and DuckDB
receives the finished columns in one ``INSERT ... SELECT`` over the Arrow table,
in order, so no sort is needed. Either every row is written or none is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .clock import SimulatedClock, reserve_micros, to_micros
from .errors import (
    ConcurrencyError,
    DuplicateEventError,
    EventlabError,
    InvalidEventError,
    MissingColumnsError,
)
from .events import SURROGATE_FIX, to_json
from .upcasting import upcasters

if TYPE_CHECKING:
    from .store import EventStore

REQUIRED_COLUMNS = ("stream_id", "type", "data")
OPTIONAL_COLUMNS = (
    "event_id",
    "occurred_at",
    "metadata",
    "version",
    "correlation_id",
    "causation_id",
    "recorded_at",
    "schema_version",
    "position",
)
_UTC = pa.timestamp("us", tz="UTC")
_MICROSECOND = timedelta(microseconds=1)
_PAYLOADS = ("data", "metadata")
# The times a record can hold: it reads them back as Python datetimes (years 1 to 9999).
_EARLIEST_US = to_micros(datetime.min)
_LATEST_US = to_micros(datetime.max)


def append_table(store: EventStore, frame: pd.DataFrame | pa.Table) -> int:
    """Append a DataFrame or Arrow table of events; see :meth:`EventStore.append_frame`."""
    if isinstance(frame, pd.DataFrame):
        _check_unique_names(list(frame.columns))
        table = _frame_to_arrow(frame)
    elif isinstance(frame, pa.Table):
        table = frame
    elif isinstance(frame, pa.RecordBatch):
        table = pa.Table.from_batches([frame])
    else:
        raise EventlabError(
            f"append_frame takes a pandas DataFrame or a pyarrow Table, got {type(frame).__name__}"
        )
    _check_unique_names(table.column_names)
    check_columns(table.column_names, "the frame", allow_extra=False)
    return ingest(store, table, what="frame row")


def _check_unique_names(names: list) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise InvalidEventError(
                f"the frame has more than one column named {name!r}; keep one of them "
                f"(e.g. frame.loc[:, ~frame.columns.duplicated()]) or rename the others"
            )
        seen.add(name)


def _frame_to_arrow(frame: pd.DataFrame) -> pa.Table:
    """Convert a DataFrame, serialising dict payload columns to JSON text."""
    columns = {}
    for name in frame.columns:
        series = frame[name]
        try:
            if name in ("data", "metadata") and series.dtype == object:
                columns[name] = pa.array(_json_column(series, name), type=pa.string())
            else:
                columns[name] = pa.Array.from_pandas(series)
        except UnicodeEncodeError:
            raise InvalidEventError(f"column {name!r} holds a str that {SURROGATE_FIX}") from None
        except (pa.ArrowException, TypeError, ValueError) as exc:
            if isinstance(exc, InvalidEventError):
                raise
            raise InvalidEventError(
                f"column {name!r} cannot be read as one type ({exc}); give every value of "
                f"a column the same type, e.g. text for stream_id, type and event_id "
                f"(frame[{name!r}].astype(str) if that is what you mean)"
            ) from None
    return pa.table(columns)


def _json_column(series: pd.Series, name: str) -> list[str | None]:
    values: list[str | None] = []
    for row, value in enumerate(series.tolist()):
        if value is None or isinstance(value, str):
            values.append(value)
        elif isinstance(value, Mapping):
            values.append(to_json(value, f"row {row} {name}"))
        else:
            raise InvalidEventError(
                f"row {row}: {name} must be a dict or JSON text, got {type(value).__name__}: "
                f"{value!r:.60}"
            )
    return values


def check_columns(names: Sequence[str], where: str, *, allow_extra: bool) -> None:
    """Raise :class:`MissingColumnsError` unless ``names`` make an event table."""
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise MissingColumnsError(
            f"{where} lacks the required column(s) {missing}; an event table needs "
            f"{list(REQUIRED_COLUMNS)} and may have {list(OPTIONAL_COLUMNS)}. It has {list(names)}."
        )
    extra = [c for c in names if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if extra and not allow_extra:
        raise MissingColumnsError(
            f"{where} has unknown column(s) {extra}; an event table has "
            f"{list(REQUIRED_COLUMNS)} and optionally {list(OPTIONAL_COLUMNS)}. Rename them, "
            f"or move them into data."
        )


# ---------------------------------------------------------------------- the shared ingest


def ingest(store: EventStore, table: pa.Table, *, what: str) -> int:
    """Check ``table`` (rows in order) and append it to ``store`` in one transaction."""
    store._check_writable()
    with store._lock:
        if store._tx is not None:
            raise EventlabError(
                "bulk appends (append_frame, import_parquet) commit on their own; call them "
                "outside a store.transaction() block"
            )
        count = table.num_rows
        if count == 0:
            return 0
        cursor = store._cursor()  # absorbs pending appends first
        head = store.head
        staged = _stage(cursor, table, head, store, what)
        _check_duplicate_ids(cursor, staged, what)
        _insert(cursor, staged, table.column_names, store, what)
        if isinstance(store.clock, SimulatedClock):
            # Its readings were peeked (see _stamps): take them now that the rows are in.
            store.clock.reserve_micros(count)
        store._after_bulk_insert(head + count)
        return count


def _stamps(clock: object, count: int) -> tuple[int, int]:
    """The first of ``count`` clock readings and the step between them.

    A SimulatedClock is only peeked here, and moved by :func:`ingest` once the
    rows are in: a rejected frame must not shift the timestamps of later
    appends. (The store's lock keeps its other appends from reading it in
    between.) Reading any other clock changes nothing.
    """
    if isinstance(clock, SimulatedClock):
        return clock.peek_micros(), clock.step // _MICROSECOND
    return reserve_micros(clock, count)


def _stage(cursor, table: pa.Table, head: int, store: EventStore, what: str) -> pa.Table:
    """The rows as the columns of ``events``: checked, numbered and stamped."""
    count = table.num_rows
    stream_ids = _name_column(table, "stream_id", what)
    types = _name_column(table, "type", what)
    data = _json_text(cursor, table, "data", what)
    metadata = None
    if "metadata" in table.column_names:
        metadata = _json_text(cursor, table, "metadata", what)
    versions = _versions(cursor, stream_ids, table, what)
    event_ids = _event_ids(table, what)
    schema_versions = _schema_versions(table, types)
    first_us, step_us = _stamps(store.clock, count)
    stamps = pa.array(first_us + np.arange(count, dtype=np.int64) * step_us, type=_UTC)
    recorded = _timestamps(cursor, table, "recorded_at", stamps, what)
    occurred = _timestamps(cursor, table, "occurred_at", recorded, what)
    columns = {
        "position": pa.array(np.arange(head + 1, head + 1 + count, dtype=np.int64)),
        "event_id": event_ids,
        "stream_id": stream_ids,
        "version": pa.array(versions, type=pa.int32()),
        "type": types,
        "data": data,
        "metadata": metadata if metadata is not None else pa.repeat("{}", count),
        "correlation_id": _optional(table, "correlation_id", pa.string()),
        "causation_id": _optional(table, "causation_id", pa.string()),
        "recorded_at": recorded,
        "occurred_at": occurred,
        "schema_version": schema_versions,
    }
    return pa.table(columns)


def _first_bad(mask: pa.ChunkedArray | pa.Array) -> int | None:
    """Index of the first true value in a boolean mask (nulls count as true), or None."""
    mask = pc.fill_null(mask, True)
    if not pc.any(mask).as_py():
        return None
    return pc.index(mask, True).as_py()


def _name_column(table: pa.Table, name: str, what: str) -> pa.ChunkedArray:
    column = _text_column(table[name], name)
    # Empty or whitespace only, checked without building trimmed copies of the strings.
    blank = pc.or_(pc.equal(pc.binary_length(column), 0), pc.utf8_is_space(column))
    bad = _first_bad(blank)
    if bad is not None:
        raise InvalidEventError(
            f"{what} {bad}: {name} is empty or missing; every event needs a stream_id, a "
            f"type and data"
        )
    return column


def _text_column(column: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    """A column of text (or of nulls only) as Arrow strings; any other type is refused,
    not turned into text: an int stream id 1 is not the stream '1'."""
    kind = column.type
    if pa.types.is_dictionary(kind):  # e.g. a pandas categorical
        kind = kind.value_type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or kind == pa.null()):
        raise InvalidEventError(
            f"column {name!r} must hold text (str), not {column.type}; convert it if you "
            f"mean its values as text, e.g. frame[{name!r}] = frame[{name!r}].astype(str)"
        )
    return column if column.type == pa.string() else column.cast(pa.string())


def _event_ids(table: pa.Table, what: str) -> pa.ChunkedArray | pa.Array:
    """The given event ids (text; a null asks for a generated one), else all nulls."""
    if "event_id" not in table.column_names:
        return pa.nulls(table.num_rows, pa.string())
    column = _text_column(table["event_id"], "event_id")
    blank = pc.or_(pc.equal(pc.binary_length(column), 0), pc.utf8_is_space(column))
    bad = _first_bad(pc.fill_null(blank, False))
    if bad is not None:
        raise InvalidEventError(
            f"{what} {bad}: event_id is empty; give a non-empty id, or None (null) to have "
            f"one generated"
        )
    return column


def _json_text(cursor, table: pa.Table, name: str, what: str) -> pa.ChunkedArray:
    """A payload column as JSON text: text is kept (DuckDB validates it on insert)."""
    column = table[name]
    if pa.types.is_struct(column.type) or pa.types.is_map(column.type):
        cursor.register("_payload", pa.table({"value": column}))
        try:
            column = cursor.sql(
                "SELECT CAST(to_json(value) AS VARCHAR) FROM _payload"
            ).to_arrow_table()[0]
        finally:
            cursor.unregister("_payload")
    elif pa.types.is_large_string(column.type) or column.type == pa.null():
        column = column.cast(pa.string())
    elif not pa.types.is_string(column.type):
        raise InvalidEventError(
            f"column {name!r} must hold JSON objects (dicts or JSON text), not {column.type}"
        )
    if name == "data":
        bad = _first_bad(pc.is_null(column))
        if bad is not None:
            raise InvalidEventError(
                f"{what} {bad}: data is missing; every event needs a stream_id, a type and data"
            )
    else:
        column = pc.fill_null(column, "{}")
    # Objects only: cheap here; that the text is valid JSON is checked by the insert.
    # Trimming copies every string, so it is only done when some value needs it.
    bad = _first_bad(pc.invert(pc.starts_with(column, "{")))
    if bad is not None:
        bad = _first_bad(pc.invert(pc.starts_with(pc.utf8_ltrim_whitespace(column), "{")))
    if bad is not None:
        value = column[bad].as_py()
        raise InvalidEventError(f"{what} {bad}: {name} must be a JSON object, got {value!r:.80}")
    return column


def _check_finite(cursor, names: list[str], first_position: int, what: str) -> None:
    """Refuse payload text in ``_staged`` holding NaN or an infinity, which JSON has no
    value for (see _insert: only called when some payload holds such a word)."""
    for name in names:
        rows = cursor.execute(
            f"SELECT position, {name} FROM _staged WHERE {_MAY_BE_NON_FINITE.format(name)} "
            f"ORDER BY position"
        ).fetchall()
        for position, text in rows:
            try:  # the words may also stand in a string: only a number counts
                json.loads(text, parse_constant=_refuse_constant)
            except ValueError:
                raise InvalidEventError(
                    f"{what} {position - first_position}: {name} holds NaN or an infinity, "
                    f"which JSON has no value for; store None (null) or a number instead"
                ) from None


def _refuse_constant(word: str) -> float:
    raise ValueError(f"{word} is not JSON")


def _versions(cursor, stream_ids: pa.ChunkedArray, table: pa.Table, what: str) -> np.ndarray:
    """Each row's version: its stream's stored version plus its rank within the frame."""
    encoded = pc.dictionary_encode(stream_ids).combine_chunks()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    distinct = encoded.dictionary
    rank = _rank_in_stream(codes, len(distinct))
    stored = np.zeros(len(distinct), dtype=np.int64)
    frame_streams = pa.table({"code": np.arange(len(distinct)), "stream_id": distinct})
    cursor.register("_frame_streams", frame_streams)
    try:
        rows = cursor.execute(
            "SELECT f.code, max(e.version) AS version FROM _frame_streams f "
            "JOIN events e USING (stream_id) GROUP BY f.code"
        ).fetchnumpy()
    finally:
        cursor.unregister("_frame_streams")
    stored[rows["code"].astype(np.int64)] = rows["version"]
    versions = stored[codes] + rank + 1
    if "version" in table.column_names:
        given = _number_column(table["version"], "version").to_numpy()
        mismatch = np.flatnonzero(pd.notna(given) & (given != versions))
        if len(mismatch):
            row = int(mismatch[0])
            stream_id, computed = stream_ids[row].as_py(), int(versions[row])
            raise ConcurrencyError(
                stream_id,
                int(given[row]) - 1,
                computed - 1,
                detail=(
                    f"{what} {row} gives version {int(given[row])} for stream {stream_id!r}, "
                    f"but that stream is at version {computed - 1} there, so the next version "
                    f"is {computed}. Versions must continue each stream without gaps; drop "
                    f"the version column to have them assigned. Nothing was written."
                ),
            )
    return versions


def _rank_in_stream(codes: np.ndarray, streams: int) -> np.ndarray:
    """The rank of each row within its stream, in row order (a vectorised cumcount)."""
    positions = np.arange(len(codes))
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    if len(starts) == streams:
        # Each stream's rows lie together (the usual layout): no sort needed.
        return positions - np.repeat(starts, np.diff(np.r_[starts, len(codes)]))
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    rank = np.empty(len(codes), dtype=np.int64)
    rank[order] = positions - np.repeat(starts, np.diff(np.r_[starts, len(codes)]))
    return rank


def _timestamps(cursor, table: pa.Table, name: str, default: pa.Array, what: str) -> pa.Array:
    """A timestamp column in UTC microseconds; missing values take ``default``."""
    if name not in table.column_names:
        return default
    column = table[name]
    if pa.types.is_timestamp(column.type):
        if column.type.tz is None:  # naive timestamps are UTC by convention
            column = column.cast(pa.timestamp(column.type.unit, tz="UTC"))
        column = column.cast(_UTC, safe=False)
    else:
        # Text such as ISO 8601: DuckDB reads more formats than Arrow, offsets included.
        cursor.register("_times", pa.table({"value": column}))
        try:
            parsed = cursor.sql(
                "SELECT TRY_CAST(value AS TIMESTAMPTZ) AS t, value IS NOT NULL AS given FROM _times"
            ).to_arrow_table()
        finally:
            cursor.unregister("_times")
        bad = _first_bad(pc.and_(parsed["given"], pc.is_null(parsed["t"])))
        if bad is not None:
            raise InvalidEventError(
                f"{what} {bad}: cannot read {name} as a timestamp; use ISO 8601 text such "
                f"as '2024-05-01T12:00:00Z' or a datetime column"
            )
        column = parsed["t"].cast(_UTC)
    micros = column.cast(pa.int64())
    bounds = pc.min_max(micros)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low is not None and (low < _EARLIEST_US or high > _LATEST_US):
        outside = pc.or_(pc.less(micros, _EARLIEST_US), pc.greater(micros, _LATEST_US))
        bad = _first_bad(pc.fill_null(outside, False))
        raise InvalidEventError(
            f"{what} {bad}: {name} is not a date from year 1 to 9999 (e.g. 'infinity'); "
            f"give a real point in time, or a missing value (None/NaT) to default it"
        )
    return pc.if_else(pc.is_null(column), default, column).combine_chunks()


def _schema_versions(table: pa.Table, types: pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The given schema versions, else each type's current one (1 without upcasters)."""
    if "schema_version" in table.column_names:
        column = _number_column(table["schema_version"], "schema_version")
        try:
            return column.cast(pa.int32())
        except pa.ArrowException:
            raise InvalidEventError(
                "column 'schema_version' must hold whole numbers (the payload's schema "
                "version, from 1), or be left out to use each type's current one"
            ) from None
    if not upcasters:
        return pa.nulls(table.num_rows, pa.int32())  # the insert stores 1
    encoded = pc.dictionary_encode(types).combine_chunks()
    current = np.array(
        [upcasters.current_version(t) for t in encoded.dictionary.to_pylist()], dtype=np.int32
    )
    return pa.array(current[encoded.indices.to_numpy(zero_copy_only=False)])


def _number_column(column: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    """A column of numbers (or of nulls only); text or booleans are refused."""
    kind = column.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or kind == pa.null()):
        raise InvalidEventError(
            f"column {name!r} must hold numbers, not {kind}; convert it (e.g. "
            f"pd.to_numeric(frame[{name!r}])) or leave it out to have it assigned"
        )
    return column


def _optional(table: pa.Table, name: str, kind: pa.DataType) -> pa.ChunkedArray | pa.Array:
    if name in table.column_names:
        return table[name].cast(kind)
    return pa.nulls(table.num_rows, kind)


def _check_duplicate_ids(cursor, staged: pa.Table, what: str) -> None:
    ids = staged["event_id"]
    if ids.null_count == len(ids):
        return  # all generated: unique by construction
    counts = pc.value_counts(ids.drop_null())
    repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    if len(repeated):
        raise DuplicateEventError(
            f"event_id {repeated[0].as_py()!r} appears more than once in the "
            f"{what.split()[0]}; event ids must be unique"
        )
    cursor.register("_frame_ids", pa.table({"event_id": ids}))
    try:
        dup = cursor.execute(
            "SELECT f.event_id FROM _frame_ids f SEMI JOIN events e USING (event_id) LIMIT 1"
        ).fetchall()
    finally:
        cursor.unregister("_frame_ids")
    if dup:
        raise DuplicateEventError(
            f"event_id {dup[0][0]!r} is already stored; a bulk append cannot contain events "
            f"the store already has. Import into a new store, or drop those rows."
        )


def _insert(cursor, staged: pa.Table, given: Sequence[str], store: EventStore, what: str) -> None:
    """One INSERT over the staged Arrow table; metadata ids filled in SQL."""
    generated = _generated_ids(
        store._new_ids.prefix, store._new_ids.reserve(staged.num_rows), staged.num_rows
    )
    ids = staged["event_id"]
    if ids.null_count:
        ids = generated if ids.null_count == len(ids) else pc.coalesce(ids, generated)
        staged = staged.set_column(staged.column_names.index("event_id"), "event_id", ids)
    cursor.register("_staged", staged)
    try:
        try:
            cursor.execute(_insert_sql(staged, given, guard=True))
        except duckdb.InvalidInputException as exc:
            if _NON_FINITE not in str(exc):
                raise
            # A payload holds the word NaN or Infinity: refused if it stands for a number;
            # if it only stands in strings, the insert runs again without the guard.
            payloads = [name for name in _PAYLOADS if name in given]
            _check_finite(cursor, payloads, staged["position"][0].as_py(), what)
            cursor.execute(_insert_sql(staged, given, guard=False))
    except (duckdb.ConversionException, duckdb.InvalidInputException):
        store._new_ids.give_back(staged.num_rows)  # nothing stored: seeded ids stay as they were
        # The JSON type rejects malformed text; find the row to name it.
        raise InvalidEventError(
            _bad_json_message(cursor, what, staged["position"][0].as_py())
        ) from None
    except BaseException:
        store._new_ids.give_back(staged.num_rows)
        raise
    finally:
        cursor.unregister("_staged")


# The two hex digits of every byte value, as one little-endian uint16 each.
_HEX_PAIRS = np.frombuffer("".join(f"{byte:02x}" for byte in range(256)).encode(), dtype="<u2")


# Rows per chunk of generated ids: keeps each chunk's int32 string offsets far from overflow.
_ID_CHUNK_ROWS = 16_000_000


def _generated_ids(prefix: str, first: int, count: int) -> pa.ChunkedArray:
    """Ids ``prefix`` + ``first + i`` as 12 hex digits (see EventIds), in NumPy.

    Formatting them this way costs tens of milliseconds per million; DuckDB's
    printf in the INSERT cost about half a second of CPU.
    """
    end = first + count
    starts = range(first, end, _ID_CHUNK_ROWS)
    blocks = [_id_block(prefix, start, min(_ID_CHUNK_ROWS, end - start)) for start in starts]
    return pa.chunked_array(blocks, pa.string())


def _id_block(prefix: str, first: int, count: int) -> pa.StringArray:
    head = prefix.encode("ascii")  # 24 characters, so rows stay uint16-aligned
    pairs = len(head) // 2
    chars = np.empty((count, pairs + 6), dtype="<u2")
    chars[:, :pairs] = np.frombuffer(head, dtype="<u2")
    # The low 6 bytes of each counter, big-endian, each byte as two hex digits.
    counters = np.arange(first, first + count, dtype=">u8").view(np.uint8).reshape(count, 8)
    chars[:, pairs:] = np.take(_HEX_PAIRS, counters[:, 2:])
    width = 2 * (pairs + 6)
    offsets = np.arange(0, (count + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(chars))


def _bad_json_message(cursor, what: str, first_position: int) -> str:
    for column in ("data", "metadata"):
        rows = cursor.execute(
            f"SELECT position, {column} FROM _staged WHERE NOT json_valid({column}) "
            f"ORDER BY position LIMIT 1"
        ).fetchall()
        if rows:
            row = rows[0][0] - first_position
            return f"{what} {row}: {column} must be a JSON object, got {rows[0][1]!r:.80}"
    return f"a {what.split()[0]} value could not be stored; check its types"


def _insert_sql(staged: pa.Table, given: Sequence[str], *, guard: bool) -> str:
    """The INSERT over ``_staged``, with constants for the columns the frame left out.

    A constant costs DuckDB nothing per row, while a column of a million ``"{}"``
    still has to be scanned, parsed as JSON and compressed (a tenth of a bulk
    append's time when the frame had no metadata).

    With ``guard``, a payload holding the word NaN or Infinity fails the insert.
    DuckDB's JSON type takes NaN and infinities (and writes a struct's NaN double
    as NaN), and Python's json module writes them so too, but JSON has no value for
    them. Two substring searches in the insert's own pass cost about 20 ms per
    million events, a separate pass about twice that. (Other spellings DuckDB
    takes, such as nan or inf in any case, are not looked for: no encoder writes
    them, and finding them in strings would need a parse of every payload.)
    """
    # Ids in metadata only need looking for when the frame had a metadata column.
    metadata = "metadata" in given

    def metadata_id(name: str) -> str:
        from_metadata = f"json_extract_string(metadata, '$.{name}')" if metadata else "NULL"
        if name not in given:
            return from_metadata
        return f"coalesce({name}, {from_metadata})" if metadata else name

    fixed_schema = staged["schema_version"].null_count == staged.num_rows

    def payload(name: str) -> str:
        if not guard:
            return name
        return (
            f"CASE WHEN {_MAY_BE_NON_FINITE.format(name)} THEN error('{_NON_FINITE}') "
            f"ELSE {name} END"
        )

    return _INSERT_SQL.format(
        data=payload("data"),
        metadata=payload("metadata") if metadata else "'{}'",
        correlation=metadata_id("correlation_id"),
        causation=metadata_id("causation_id"),
        schema_version="1" if fixed_schema else "coalesce(schema_version, 1)",
    )


# The words Python's json module and DuckDB write for NaN and the infinities.
_MAY_BE_NON_FINITE = "(contains({0}, 'NaN') OR contains({0}, 'Infinity'))"
_NON_FINITE = "eventlab: a payload holds NaN or Infinity"

_INSERT_SQL = """
INSERT INTO events
SELECT
    position, event_id, stream_id, version, type, {data}, {metadata},
    {correlation}, {causation},
    recorded_at, occurred_at, {schema_version}
FROM _staged
"""

"""Bulk paths: frames and Parquet in, Parquet out, all vectorised inside DuckDB.

A bulk append is one DuckDB transaction: the rows are staged with their
positions and versions computed in SQL, checked, and inserted in position
order, or nothing is written at all.
"""

from __future__ import annotations

import glob
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from .clock import reserve_micros
from .errors import (
    ConcurrencyError,
    DuplicateEventError,
    EventlabError,
    InvalidEventError,
    MissingColumnsError,
    ParquetError,
)
from .events import to_json
from .schema import EVENT_COLUMNS

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
_SOURCE = "_ingest_source"
_STAGE = "_ingest_stage"


# ---------------------------------------------------------------------- frames


def append_table(store: EventStore, frame: pd.DataFrame | pa.Table) -> int:
    """Append a DataFrame or Arrow table of events; see :meth:`EventStore.append_frame`."""
    if isinstance(frame, pd.DataFrame):
        table = _frame_to_arrow(frame)
    elif isinstance(frame, pa.Table):
        table = frame
    elif isinstance(frame, pa.RecordBatch):
        table = pa.Table.from_batches([frame])
    else:
        raise EventlabError(
            f"append_frame takes a pandas DataFrame or a pyarrow Table, got {type(frame).__name__}"
        )
    _check_columns(table.column_names, "the frame", allow_extra=False)
    table = table.append_column("_row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    return _ingest(store, table, order_by="_row", what="frame row")


def _frame_to_arrow(frame: pd.DataFrame) -> pa.Table:
    """Convert a DataFrame, serialising dict payload columns to JSON text."""
    columns = {}
    for name in frame.columns:
        series = frame[name]
        if name in ("data", "metadata") and series.dtype == object:
            columns[name] = pa.array(_json_column(series, name), type=pa.string())
        else:
            columns[name] = pa.Array.from_pandas(series)
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


def _check_columns(names: Sequence[str], where: str, *, allow_extra: bool) -> None:
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


def _ingest(store: EventStore, source: pa.Table | str, *, order_by: str, what: str) -> int:
    """Stage, check and insert events from a registered Arrow table or a SQL source."""
    store._check_writable()
    with store._lock:
        if store._tx is not None:
            raise EventlabError(
                "bulk appends (append_frame, import_parquet) commit on their own; call them "
                "outside a store.transaction() block"
            )
        cursor = store._cursor()  # absorbs pending appends first
        if isinstance(source, pa.Table):
            cursor.register(_SOURCE, source)
            columns = source.schema
        else:
            cursor.execute(f"CREATE OR REPLACE TEMP VIEW {_SOURCE} AS {source}")
            columns = cursor.sql(f"SELECT * FROM {_SOURCE} LIMIT 0").to_arrow_table().schema
        head = store.head
        try:
            cursor.execute("BEGIN TRANSACTION")
            try:
                count = _stage(cursor, columns, head, store.clock, order_by)
                _validate(cursor, what)
                cursor.execute(
                    f"INSERT INTO events SELECT {', '.join(EVENT_COLUMNS)} FROM {_STAGE} "
                    f"ORDER BY position"
                )
                cursor.execute(f"DROP TABLE {_STAGE}")
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
        finally:
            if isinstance(source, pa.Table):
                cursor.unregister(_SOURCE)
            else:
                cursor.execute(f"DROP VIEW IF EXISTS {_SOURCE}")
        store._after_bulk_insert(head + count)
        return count


def _json_expr(name: str, schema: pa.Schema, default: str | None) -> str:
    """SQL turning a payload column (JSON text, or an Arrow struct/map) into JSON text."""
    if name not in schema.names:
        return f"'{default}'"
    kind = schema.field(name).type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or kind == pa.null():
        expr = f"CAST(s.{name} AS VARCHAR)"
    elif pa.types.is_struct(kind) or pa.types.is_map(kind):
        expr = f"CAST(to_json(s.{name}) AS VARCHAR)"
    else:
        raise InvalidEventError(
            f"column {name!r} must hold JSON objects (dicts or JSON text), not {kind}"
        )
    return expr if default is None else f"coalesce({expr}, '{default}')"


def _time_expr(name: str, schema: pa.Schema) -> str | None:
    if name not in schema.names:
        return None
    kind = schema.field(name).type
    if pa.types.is_timestamp(kind) and kind.tz is None:
        # Naive timestamps are UTC by convention; the session time zone is UTC.
        return f"CAST(s.{name} AS TIMESTAMPTZ)"
    return f"TRY_CAST(s.{name} AS TIMESTAMPTZ)"


def _stage(cursor, schema: pa.Schema, head: int, clock, order_by: str) -> int:
    names = schema.names
    rows = cursor.execute(f"SELECT count(*) FROM {_SOURCE}").fetchall()[0][0]
    first_us, step_us = reserve_micros(clock, rows)

    def optional(name: str, sql_type: str) -> str:
        return f"CAST(s.{name} AS {sql_type})" if name in names else f"CAST(NULL AS {sql_type})"

    metadata = _json_expr("metadata", schema, "{}")

    def id_column(key: str) -> str:
        # As with append, the id may travel in metadata (whose JSON is validated later).
        in_metadata = f"json_extract_string({metadata}, '$.{key}')"
        return (
            f"coalesce({optional(key, 'VARCHAR')}, "
            f"CASE WHEN json_valid({metadata}) THEN {in_metadata} END)"
        )

    recorded = _time_expr("recorded_at", schema)
    occurred = _time_expr("occurred_at", schema)
    now = f"make_timestamptz({first_us}::BIGINT + (s._n - 1) * {step_us}::BIGINT)"
    recorded_sql = f"coalesce({recorded}, {now})" if recorded else now
    cursor.execute(
        f"""
        CREATE TEMP TABLE {_STAGE} AS
        WITH src AS (
            SELECT *, row_number() OVER (ORDER BY {order_by}) AS _n FROM {_SOURCE}
        ),
        current AS (
            SELECT stream_id, max(version) AS v FROM events
            WHERE stream_id IN (SELECT DISTINCT CAST(stream_id AS VARCHAR) FROM src)
            GROUP BY stream_id
        )
        SELECT
            {head} + s._n AS position,
            coalesce({optional("event_id", "VARCHAR")}, CAST(uuid() AS VARCHAR)) AS event_id,
            CAST(s.stream_id AS VARCHAR) AS stream_id,
            CAST(coalesce(c.v, 0)
                 + row_number() OVER (PARTITION BY s.stream_id ORDER BY s._n) AS INTEGER)
                AS version,
            CAST(s.type AS VARCHAR) AS type,
            {_json_expr("data", schema, None)} AS data,
            {metadata} AS metadata,
            {id_column("correlation_id")} AS correlation_id,
            {id_column("causation_id")} AS causation_id,
            {recorded_sql} AS recorded_at,
            coalesce({occurred or "NULL"}, {recorded_sql}) AS occurred_at,
            coalesce({optional("schema_version", "INTEGER")}, 1) AS schema_version,
            {optional("version", "BIGINT")} AS _given_version,
            {f"s.occurred_at IS NOT NULL AND {occurred} IS NULL" if occurred else "false"}
                AS _bad_occurred,
            {f"s.recorded_at IS NOT NULL AND {recorded} IS NULL" if recorded else "false"}
                AS _bad_recorded,
            s._n AS _n
        FROM src s LEFT JOIN current c ON c.stream_id = CAST(s.stream_id AS VARCHAR)
        """
    )
    return rows


def _validate(cursor, what: str) -> None:
    """Raise on the first bad row of the stage, naming it (rows count from 0)."""

    def first(condition: str, columns: str = "_n - 1"):
        rows = cursor.execute(
            f"SELECT {columns} FROM {_STAGE} WHERE {condition} ORDER BY _n LIMIT 1"
        ).fetchall()
        return rows[0] if rows else None

    checks = [
        ("stream_id IS NULL OR trim(stream_id) = ''", "stream_id is empty or missing"),
        ("type IS NULL OR trim(type) = ''", "type is empty or missing"),
        ("data IS NULL", "data is missing"),
    ]
    for condition, problem in checks:
        bad = first(condition)
        if bad:
            raise InvalidEventError(
                f"{what} {bad[0]}: {problem}; every event needs a stream_id, a type and data"
            )
    for column in ("data", "metadata"):
        bad = first(
            f"NOT coalesce(json_valid({column}), false) "
            f"OR json_type(CAST({column} AS JSON)) <> 'OBJECT'",
            f"_n - 1, {column}",
        )
        if bad:
            raise InvalidEventError(
                f"{what} {bad[0]}: {column} must be a JSON object, got {bad[1]!r:.80}"
            )
    for column in ("occurred", "recorded"):
        bad = first(f"_bad_{column}")
        if bad:
            raise InvalidEventError(
                f"{what} {bad[0]}: cannot read {column}_at as a timestamp; use ISO 8601 "
                f"text such as '2024-05-01T12:00:00Z' or a datetime column"
            )
    bad = first(
        "_given_version IS NOT NULL AND _given_version <> version",
        "_n - 1, stream_id, _given_version, version",
    )
    if bad:
        row, stream_id, given, computed = bad
        raise ConcurrencyError(
            stream_id,
            given - 1,
            computed - 1,
            detail=(
                f"{what} {row} gives version {given} for stream {stream_id!r}, but that "
                f"stream is at version {computed - 1} there, so the next version is "
                f"{computed}. Versions must continue each stream without gaps; drop the "
                f"version column to have them assigned. Nothing was written."
            ),
        )
    dup = cursor.execute(
        f"SELECT event_id FROM {_STAGE} GROUP BY event_id HAVING count(*) > 1 LIMIT 1"
    ).fetchall()
    if dup:
        raise DuplicateEventError(
            f"event_id {dup[0][0]!r} appears more than once in the {what.split()[0]}; "
            f"event ids must be unique"
        )
    dup = cursor.execute(
        f"SELECT s.event_id FROM {_STAGE} s SEMI JOIN events e ON e.event_id = s.event_id LIMIT 1"
    ).fetchall()
    if dup:
        raise DuplicateEventError(
            f"event_id {dup[0][0]!r} is already stored; a bulk append cannot contain events "
            f"the store already has. Import into a new store, or drop those rows."
        )


# ---------------------------------------------------------------------- Parquet


def _parquet_files(path_or_glob: str | Path) -> list[str]:
    text = str(path_or_glob)
    path = Path(text)
    if path.is_dir():
        files = sorted(glob.glob(str(path / "**" / "*.parquet"), recursive=True))
    elif path.is_file():
        files = [text]
    else:
        files = sorted(glob.glob(text, recursive=True))
    if not files:
        raise ParquetError(
            f"no Parquet files at {text!r}; give a .parquet file, a directory holding "
            f"some (searched recursively), or a glob such as 'lake/**/*.parquet'"
        )
    return files


def import_parquet(store: EventStore, path_or_glob: str | Path) -> int:
    """Append events from Parquet files; see :meth:`EventStore.import_parquet`."""
    files = _parquet_files(path_or_glob)
    listing = "[" + ", ".join(_sql_string(f) for f in files) + "]"
    scan = (
        f"SELECT * FROM read_parquet({listing}, union_by_name = true, "
        f"hive_partitioning = false, filename = '_file', file_row_number = true)"
    )
    cursor = store._cursor()
    try:
        schema = cursor.sql(f"{scan} LIMIT 0").to_arrow_table().schema
        # Touch every file's footer now so a corrupt file is reported by name.
        for file in files:
            cursor.execute(f"SELECT count(*) FROM parquet_metadata({_sql_string(file)})").fetchall()
    except duckdb.Error as exc:
        raise _unreadable(path_or_glob, exc) from None
    names = [n for n in schema.names if n not in ("_file", "file_row_number")]
    _check_columns(names, f"the Parquet data at {str(path_or_glob)!r}", allow_extra=True)
    order = "position" if "position" in names else "_file, file_row_number"
    try:
        return _ingest(store, scan, order_by=order, what="Parquet row")
    except duckdb.Error as exc:
        raise _unreadable(path_or_glob, exc) from None


def _unreadable(path_or_glob: str | Path, exc: Exception) -> ParquetError:
    return ParquetError(
        f"cannot read Parquet from {str(path_or_glob)!r}: {exc}. Is it a complete Parquet "
        f"file written by export_parquet or another tool? Re-export it, or check the path."
    )


def export_parquet(
    store: EventStore,
    directory: str | Path,
    *,
    partition_by: str | Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the log as Parquet; see :meth:`EventStore.export_parquet`."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ParquetError(f"{directory} is a file; export_parquet writes into a directory")
    if directory.exists() and any(directory.iterdir()) and not overwrite:
        raise ParquetError(
            f"{directory} is not empty; export into a new or empty directory, or pass "
            f"overwrite=True to replace what is there"
        )
    cursor = store._cursor()
    columns = ", ".join(EVENT_COLUMNS)
    if partition_by is None:
        _prepare_directory(directory, overwrite)
        target = directory / "events.parquet"
        cursor.execute(
            f"COPY (SELECT {columns} FROM events ORDER BY position) "
            f"TO {_sql_string(str(target))} (FORMAT parquet)"
        )
        return directory
    if partition_by == "day":
        query = f"SELECT {columns}, CAST(recorded_at AS DATE) AS day FROM events ORDER BY position"
        options = "PARTITION_BY (day)"
    else:
        keys = [partition_by] if isinstance(partition_by, str) else list(partition_by)
        unknown = [k for k in keys if k not in EVENT_COLUMNS]
        if unknown or not keys:
            raise ParquetError(
                f"cannot partition by {unknown or keys}; use 'day' or columns of the "
                f"events table: {list(EVENT_COLUMNS)}"
            )
        query = f"SELECT {columns} FROM events ORDER BY position"
        # Keep the partition columns inside the files too, so each file is a
        # complete, self-describing slice of the log.
        options = f"PARTITION_BY ({', '.join(keys)}), WRITE_PARTITION_COLUMNS true"
    _prepare_directory(directory, overwrite)
    cursor.execute(
        f"COPY ({query}) TO {_sql_string(str(directory))} "
        f"(FORMAT parquet, {options}, OVERWRITE_OR_IGNORE true)"
    )
    return directory


def _prepare_directory(directory: Path, overwrite: bool) -> None:
    """Create the export directory once all checks passed, clearing old files if asked."""
    if overwrite and directory.exists():
        for file in directory.rglob("*.parquet"):
            file.unlink()
    directory.mkdir(parents=True, exist_ok=True)


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"

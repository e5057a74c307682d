"""Parquet in and out: the log as (optionally Hive-partitioned) Parquet files."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from .errors import ParquetError
from .ingest import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, check_columns, ingest
from .schema import EVENT_COLUMNS

if TYPE_CHECKING:
    from .store import EventStore


def _parquet_files(path_or_glob: str | Path) -> list[str]:
    text = str(path_or_glob)
    path = Path(text)
    if path.is_dir():
        # Escaped: a directory named like "run[1]" is a name, not a pattern.
        files = sorted(glob.glob(str(Path(glob.escape(text)) / "**" / "*.parquet"), recursive=True))
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
    check_columns(names, f"the Parquet data at {str(path_or_glob)!r}", allow_extra=True)
    types = dict(zip(schema.names, schema.types, strict=True))
    keep = [
        _payload(n, types[n]) if n in ("data", "metadata") else n
        for n in names
        if n in REQUIRED_COLUMNS + OPTIONAL_COLUMNS
    ]
    # Rows in log order: by position when the files have it, else as they lie.
    order = "position" if "position" in names else "_file, file_row_number"
    try:
        table = cursor.sql(
            f"SELECT {', '.join(keep)} FROM ({scan}) ORDER BY {order}"
        ).to_arrow_table()
    except duckdb.Error as exc:
        raise _unreadable(path_or_glob, exc) from None
    return ingest(store, table, what="Parquet row")


def _payload(name: str, kind: pa.DataType) -> str:
    """How a data or metadata column is read: JSON text as text, and nested values (a
    struct or map, as pandas writes dicts) kept as they are, for ingest to turn them
    into JSON (as append_frame does): CAST to text would give DuckDB's struct literal
    ``{'a': 1}``, which is not JSON."""
    if pa.types.is_struct(kind) or pa.types.is_map(kind):
        return name
    return f"CAST({name} AS VARCHAR) AS {name}"


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

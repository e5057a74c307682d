"""Importing event CSV files: columns mapped to stream, type, time, data and metadata.

Arrow reads the file (plain or gzipped, strictly: every row must have a value
for every column of the header) and infers each column's type; the values keep
those types in the JSON payloads (numbers, booleans, text;
times as UTC ISO text like ``2011-10-11T11:45:40.276000Z``). By default, as in
a CSV written from an XES log, columns named ``case:...`` describe the case and
go into ``metadata`` (as ``...``, like the trace attributes of an XES import);
every other column goes into ``data``. Empty cells are
left out of the payloads. The rows are appended in one transaction, so a bad
file writes nothing.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
from tqdm.auto import tqdm

from .errors import CsvError, MissingColumnsError
from .ingest import ingest

if TYPE_CHECKING:
    from .store import EventStore

CASE_PREFIX = "case:"


def import_csv(
    store: EventStore,
    path: str | Path,
    *,
    stream: str,
    type: str,  # noqa: A002 (the name users know from the rest of the API)
    occurred_at: str | None = None,
    data: Sequence[str] | None = None,
    metadata: Sequence[str] | None = None,
    delimiter: str | None = None,
    progress: bool = False,
) -> int:
    """Append the rows of an event CSV; see :meth:`EventStore.import_csv`."""
    store._check_writable()
    table = read_csv(
        path,
        stream=stream,
        type=type,
        occurred_at=occurred_at,
        data=data,
        metadata=metadata,
        delimiter=delimiter,
        progress=progress,
    )
    return ingest(store, table, what="CSV row")


def read_csv(
    path: str | Path,
    *,
    stream: str,
    type: str,  # noqa: A002
    occurred_at: str | None = None,
    data: Sequence[str] | None = None,
    metadata: Sequence[str] | None = None,
    delimiter: str | None = None,
    progress: bool = False,
) -> pa.Table:
    """The events of a CSV file as an Arrow table ready for ``append_frame``."""
    path = Path(path)
    if not path.is_file():
        where = "a directory" if path.is_dir() else "no file"
        raise CsvError(f"{where} at {str(path)!r}; give the path of a CSV file (.csv or .csv.gz)")
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        with tqdm(total=2, desc=f"importing {path.name}", disable=not progress) as bar:
            rows = _read(path, delimiter)
            bar.update()
            columns = dict(zip(rows.column_names, map(str, _duckdb_types(con, rows)), strict=True))
            mapping = _mapping(path, list(columns), stream, type, occurred_at, data, metadata)
            rows = rows.append_column("_row", pa.array(np.arange(1, rows.num_rows + 1)))
            con.register("_rows", rows)
            _check(con, mapping, columns)
            table = con.sql(_events_sql(mapping, columns)).to_arrow_table()
            bar.update()
    finally:
        con.close()
    return table.cast(
        pa.schema(
            [
                ("stream_id", pa.string()),
                ("type", pa.string()),
                ("occurred_at", pa.timestamp("us", tz="UTC")),
                ("data", pa.string()),
                ("metadata", pa.string()),
            ]
        )
    )


def _read(path: Path, delimiter: str | None) -> pa.Table:
    """The whole file as Arrow, types inferred; a malformed row is a CsvError naming it."""
    if delimiter is None:
        delimiter = _guess_delimiter(path)
    parse = pa_csv.ParseOptions(delimiter=delimiter)
    convert = pa_csv.ConvertOptions(strings_can_be_null=True)
    try:
        with _open(path) as stream:
            return pa_csv.read_csv(stream, parse_options=parse, convert_options=convert)
    except (pa.ArrowInvalid, OSError, EOFError, zlib.error) as exc:
        problem = str(exc).removeprefix("CSV parse error: ")
    row = _first_bad_row(path, delimiter)
    where = f"row {row}: " if row is not None else ""
    raise CsvError(
        f"cannot read {path.name} as CSV: {where}{problem}. Every row needs one value per "
        f"column of the header (quote values that hold the delimiter {delimiter!r}); "
        f"nothing was imported."
    )


def _open(path: Path):
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    return pa.input_stream(str(path), compression="gzip" if gzipped else None)


def _guess_delimiter(path: Path) -> str:
    """The most frequent of , ; tab and | in the header line (a comma if none)."""
    with _open(path) as stream:
        header = stream.read(64 * 1024).split(b"\n", 1)[0]
    counts = {d: header.count(d.encode()) for d in (",", ";", "\t", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _first_bad_row(path: Path, delimiter: str) -> int | None:
    """The number of the first malformed data row (1 = the row after the header)."""
    bad: list[int] = []

    def note(row) -> str:
        if row.number is not None:
            bad.append(row.number - 1)  # Arrow counts the header as row 1
        return "skip"

    parse = pa_csv.ParseOptions(delimiter=delimiter, invalid_row_handler=note)
    try:
        with _open(path) as stream:
            pa_csv.read_csv(
                stream, read_options=pa_csv.ReadOptions(use_threads=False), parse_options=parse
            )
    except (pa.ArrowInvalid, OSError, EOFError, zlib.error):
        pass
    return min(bad) if bad else None


def _duckdb_types(con: duckdb.DuckDBPyConnection, rows: pa.Table) -> list[str]:
    con.register("_probe", rows.slice(0, 0))
    try:
        return [str(t) for t in con.sql("SELECT * FROM _probe").types]
    finally:
        con.unregister("_probe")


def _mapping(path, names, stream, type_, occurred_at, data, metadata) -> dict:
    """Which column plays which part; checks that every named column exists."""
    given = {"stream": stream, "type": type_}
    if occurred_at is not None:
        given["occurred_at"] = occurred_at
    for role, column in given.items():
        if not isinstance(column, str):
            raise CsvError(f"{role} must name a column (a string), got {column!r}")
    named = list(given.values()) + list(data or []) + list(metadata or [])
    missing = [c for c in named if c not in names]
    if missing:
        raise MissingColumnsError(
            f"{path.name} has no column(s) {missing}; its columns are {names}. Pass the "
            f"names of its columns as stream=, type=, occurred_at= (and data=, metadata=)."
        )
    taken = set(given.values())
    if metadata is None:
        metadata = [c for c in names if c.startswith(CASE_PREFIX) and c not in taken]
    if data is None:
        data = [c for c in names if c not in taken and c not in metadata]
    return {**given, "data": list(data), "metadata": list(metadata)}


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _json_value(column: str, kind: str) -> str:
    """SQL for a cell as JSON text, NULL for an empty cell."""
    c = _quoted(column)
    if kind.startswith("TIMESTAMP"):  # with or without a zone, any precision
        return f"to_json(strftime(CAST({c} AS TIMESTAMPTZ), '%Y-%m-%dT%H:%M:%S.%fZ'))"
    if kind == "DATE":
        return f"to_json(strftime({c}, '%Y-%m-%d'))"
    if kind in ("DOUBLE", "FLOAT") or kind.startswith("DECIMAL"):
        return (
            f"CASE WHEN isfinite({c}::DOUBLE) THEN to_json({c}::DOUBLE) "
            f"WHEN {c} IS NOT NULL THEN 'null' END"
        )
    if kind in (
        "BIGINT",
        "INTEGER",
        "SMALLINT",
        "TINYINT",
        "HUGEINT",
        "UBIGINT",
        "BOOLEAN",
        "VARCHAR",
    ):
        return f"to_json({c})"
    return f"to_json(CAST({c} AS VARCHAR))"


def _object(columns: list[str], kinds: dict[str, str], strip: str = "") -> str:
    """SQL for a JSON object of the given columns, leaving out empty cells.

    Keys are the column names, without the prefix ``strip``.
    """
    if not columns:
        return "'{}'"
    parts = [
        f"CASE WHEN {_quoted(c)} IS NOT NULL THEN "
        f"'{_sql_text(json.dumps(c.removeprefix(strip), ensure_ascii=False))}:' "
        f"|| ({_json_value(c, kinds[c])}) END"
        for c in columns
    ]
    return "'{' || concat_ws(',', " + ", ".join(parts) + ") || '}'"


def _sql_text(text: str) -> str:
    return text.replace("'", "''")


def _time(column: str) -> str:
    """SQL for a cell as a UTC time (text without an offset, and naive times, read as UTC)."""
    return f"TRY_CAST({_quoted(column)} AS TIMESTAMPTZ)"


def _events_sql(mapping: dict, kinds: dict[str, str]) -> str:
    occurred = _time(mapping["occurred_at"]) if "occurred_at" in mapping else "NULL::TIMESTAMPTZ"
    return (
        f"SELECT CAST({_quoted(mapping['stream'])} AS VARCHAR) AS stream_id, "
        f"CAST({_quoted(mapping['type'])} AS VARCHAR) AS type, "
        f"{occurred} AS occurred_at, "
        f"{_object(mapping['data'], kinds)} AS data, "
        f"{_object(mapping['metadata'], kinds, CASE_PREFIX)} AS metadata "
        f"FROM _rows ORDER BY _row"
    )


def _check(con: duckdb.DuckDBPyConnection, mapping: dict, kinds: dict[str, str]) -> None:
    """Raise :class:`CsvError` naming the first row whose stream, type or time is unusable."""
    for role in ("stream", "type"):
        column = _quoted(mapping[role])
        bad = con.sql(
            f"SELECT min(_row) FROM _rows WHERE {column} IS NULL "
            f"OR trim(CAST({column} AS VARCHAR)) = ''"
        ).fetchall()[0][0]
        if bad is not None:
            raise CsvError(
                f"row {bad}: the {role} column {mapping[role]!r} is empty; every event needs "
                f"a stream id and a type. Fill it in, or drop the row. Nothing was imported."
            )
    if "occurred_at" in mapping:
        name = mapping["occurred_at"]
        column = _quoted(name)
        kind = kinds[name]
        if kind not in ("VARCHAR", "DATE") and not kind.startswith("TIMESTAMP"):
            raise CsvError(
                f"the occurred_at column {name!r} holds {kind} values, not times; give a "
                f"column of ISO 8601 times such as 2024-05-01T12:00:00+02:00"
            )
        bad = con.sql(
            f"SELECT _row, CAST({column} AS VARCHAR) FROM _rows WHERE {column} IS NOT NULL "
            f"AND {_time(name)} IS NULL ORDER BY _row LIMIT 1"
        ).fetchall()
        if bad:
            row, value = bad[0]
            raise CsvError(
                f"row {row}: cannot read {value!r} in column {name!r} as a time; use ISO 8601 "
                f"such as 2024-05-01T12:00:00+02:00 (no offset means UTC). Nothing was imported."
            )

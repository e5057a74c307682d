"""Importing event CSV files: columns mapped to stream, type, time, data and metadata.

Arrow reads the file (plain or gzipped, UTF-8, strictly: every row must have a
value for every column of the header) with every column as text, exactly as
written: only an empty cell is missing (``NA`` or ``null`` are text), and a
stream id or type such as ``01`` stays ``01``. The time column is read as ISO
8601 (see :data:`eventlab.xes_log.TIME_PATTERN`). A data or metadata column
holds numbers or booleans only when every value in it reads back exactly as
written (``12``, ``-3``, ``0.25``, ``true``/``false``), and times when every
value is an ISO date and time (stored as UTC text like
``2011-10-11T11:45:40.276000Z``, as in an XES import). A column with a value
such as ``01234``, ``1e1`` or ``1.50`` keeps all its values as text, so no
value a user wrote is changed, and one column has one type. By default, as in a CSV
written from an XES log, columns named ``case:...`` describe the case and go
into ``metadata`` (as ``...``, like the trace attributes of an XES import);
every other column goes into ``data``. Empty cells are left out of the
payloads; an empty time cell means the event occurs when it is recorded. The
rows are appended in one transaction, so a bad file writes nothing.
"""

from __future__ import annotations

import codecs
import json
import zlib
from collections import Counter
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
from .xes_log import EARLIEST, LATEST, time_sql

if TYPE_CHECKING:
    from .store import EventStore

CASE_PREFIX = "case:"
# The row numbers (1 = the row after the header) travel in a column of this name.
ROW = "_eventlab_row"
# Booleans as Arrow (and pandas, Excel) write them, as SQL lists.
TRUE, FALSE = "'true', 'True', 'TRUE'", "'false', 'False', 'FALSE'"
UTC_TEXT = "%Y-%m-%dT%H:%M:%S.%fZ"


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
            mapping = _mapping(path, rows.column_names, stream, type, occurred_at, data, metadata)
            rows = rows.append_column(ROW, pa.array(np.arange(1, rows.num_rows + 1)))
            con.register("_rows", rows)
            _check(con, mapping)
            kinds = _kinds(con, mapping["data"] + mapping["metadata"])
            table = con.sql(_events_sql(mapping, kinds)).to_arrow_table()
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
    """The whole file as Arrow, every column text; a malformed row is a CsvError naming it."""
    if delimiter is None:
        delimiter = _guess_delimiter(path)
    parse = pa_csv.ParseOptions(delimiter=delimiter)
    try:
        names = _header(path, parse)
        _check_unique(path, names)
        # Every column as text, so that Arrow's guesses change nothing: "01" is not 1,
        # "NA" is not missing. Only an empty cell is.
        convert = pa_csv.ConvertOptions(
            column_types={name: pa.string() for name in names},
            strings_can_be_null=True,
            null_values=[""],
        )
        with _open(path) as stream:
            return pa_csv.read_csv(stream, parse_options=parse, convert_options=convert)
    except (pa.ArrowInvalid, OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        problem = str(exc).removeprefix("CSV parse error: ")
    _check_utf8(path)
    row = _first_bad_row(path, delimiter)
    where = f"row {row}: " if row is not None else ""
    raise CsvError(
        f"cannot read {path.name} as CSV: {where}{problem}. Every row needs one value per "
        f"column of the header (quote values that hold the delimiter {delimiter!r}); "
        f"nothing was imported."
    )


def _header(path: Path, parse: pa_csv.ParseOptions) -> list[str]:
    """The column names, as Arrow reads the header (from the first block only)."""
    with _open(path) as stream:
        reader = pa_csv.open_csv(stream, parse_options=parse)
        try:
            return reader.schema.names
        finally:
            reader.close()


def _check_unique(path: Path, names: list[str]) -> None:
    twice = [name for name, count in Counter(names).items() if count > 1]
    if twice:
        raise CsvError(
            f"{path.name} has more than one column named {twice[0]!r} (header: {names}); "
            f"rename one of them so that every column has its own name. Nothing was imported."
        )


def _check_utf8(path: Path) -> None:
    """Raise CsvError naming the line of the first bytes that are not UTF-8, if any."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    try:
        with _open(path) as stream:
            while True:
                block = stream.read(1 << 20)
                try:
                    decoder.decode(block, final=not block)
                except UnicodeDecodeError as exc:
                    line += exc.object[: exc.start].count(b"\n")
                    byte = exc.object[exc.start]
                    break
                if not block:
                    return
                line += block.count(b"\n")
    except (OSError, EOFError, zlib.error):
        return  # not readable at all: the caller reports that
    raise CsvError(
        f"{path.name} is not UTF-8 text: line {line} holds the byte 0x{byte:02X}, which "
        f"UTF-8 does not allow there (the file is probably Latin-1 or Windows-1252, as older "
        f"Excel versions save CSV). Save it as UTF-8 (in Excel: 'CSV UTF-8'; or run "
        f"iconv -f latin1 -t utf-8) and import it again. Nothing was imported."
    )


def _open(path: Path):
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    return pa.input_stream(str(path), compression="gzip" if gzipped else None)


def _guess_delimiter(path: Path) -> str:
    """The most frequent of , ; tab and | in the header line (a comma if none)."""
    try:
        with _open(path) as stream:
            header = stream.read(64 * 1024).split(b"\n", 1)[0]
    except (OSError, EOFError, zlib.error):
        return ","  # reading the whole file fails too, and says why
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


def _sql_text(text: str) -> str:
    return text.replace("'", "''")


def _is_number(c: str) -> str:
    """SQL: whether the text ``c`` is a finite number written as DuckDB writes it back
    (``3``, ``3.0``, ``0.25``; not ``03``, ``1e1``, ``1.50``, ``+3``)."""
    number = f"TRY_CAST({c} AS DOUBLE)"
    return f"(isfinite({number}) AND CAST({number} AS VARCHAR) IN ({c}, {c} || '.0'))"


# Each kind a data column can have: whether a cell is one, and the cell as JSON
# (for a cell known to be one). A column takes the first kind all its cells are;
# every value of it then reads back as written, except times, which become UTC
# text as in an XES import.
_KINDS = {
    "boolean": (
        lambda c: f"{c} IN ({TRUE}, {FALSE})",
        lambda c: f"CASE WHEN {c} IN ({TRUE}) THEN 'true' ELSE 'false' END",
    ),
    "integer": (
        lambda c: f"CAST(TRY_CAST({c} AS BIGINT) AS VARCHAR) = {c}",
        lambda c: c,  # the text is already the JSON of the number
    ),
    "number": (_is_number, lambda c: f"CAST(to_json(CAST({c} AS DOUBLE)) AS VARCHAR)"),
    "time": (
        # A date alone (10 characters) is no time: a column of dates stays as written.
        lambda c: f"(({time_sql(c)}) IS NOT NULL AND length(trim({c})) > 10)",
        lambda c: f"to_json(strftime(CAST({c} AS TIMESTAMPTZ), '{UTC_TEXT}'))",
    ),
}
SAMPLE = 1000  # rows that rule out most kinds of a column before the whole column is tested


def _kinds(con: duckdb.DuckDBPyConnection, columns: list[str]) -> dict[str, str]:
    """Each column's kind: the first of _KINDS that every non-empty cell is, else "text".

    The kinds the first rows rule out are not tested on the whole column, and
    the whole column is tested for one kind at a time, in order: most columns
    take one pass (none for text).
    """
    candidates = {column: list(_KINDS) for column in columns}  # a column given twice: once
    for column, answers in zip(list(candidates), _all_of(con, candidates, SAMPLE), strict=True):
        candidates[column] = [k for k, yes in zip(_KINDS, answers, strict=True) if yes is not False]
    kinds = {}
    while candidates := {
        column: kinds_left for column, kinds_left in candidates.items() if kinds_left
    }:
        first = {column: kinds_left[:1] for column, kinds_left in candidates.items()}
        for column, (yes,) in zip(first, _all_of(con, first, None), strict=True):
            if yes is not False:  # None: no cell at all
                kinds[column] = candidates[column][0]
                candidates[column] = []
            else:
                candidates[column] = candidates[column][1:]
    return {column: kinds.get(column, "text") for column in columns}


def _all_of(con, tests: dict[str, list[str]], limit: int | None) -> list[tuple]:
    """For each column, whether all its non-empty cells (of the first ``limit`` rows) are
    of each given kind: True, False, or None when there is no such cell."""
    # coalesce: a test may be NULL for a cell that is not of its kind ("Alice" as a number).
    parts = [
        f"bool_and(coalesce({_KINDS[kind][0](_quoted(c))}, false)) "
        f"FILTER (WHERE {_quoted(c)} IS NOT NULL)"
        for c, kinds in tests.items()
        for kind in kinds
    ]
    if not parts:
        return [()] * len(tests)
    source = "_rows" if limit is None else f"(SELECT * FROM _rows LIMIT {limit})"
    found = iter(con.sql(f"SELECT {', '.join(parts)} FROM {source}").fetchall()[0])
    return [tuple(next(found) for _ in kinds) for kinds in tests.values()]


def _object(columns: list[str], kinds: dict[str, str], strip: str = "") -> str:
    """SQL for a JSON object of the given columns, leaving out empty cells.

    Keys are the column names, without the prefix ``strip``.
    """
    if not columns:
        return "'{}'"
    parts = []
    for column in columns:
        c = _quoted(column)
        kind = kinds[column]
        value = f"to_json({c})" if kind == "text" else _KINDS[kind][1](c)
        key = _sql_text(json.dumps(column.removeprefix(strip), ensure_ascii=False))
        parts.append(f"CASE WHEN {c} IS NOT NULL THEN '{key}:' || ({value}) END")
    return "'{' || concat_ws(',', " + ", ".join(parts) + ") || '}'"


def _events_sql(mapping: dict, kinds: dict[str, str]) -> str:
    # Every time was checked against time_sql by _check: a plain cast reads it the same.
    occurred = (
        f"CAST({_quoted(mapping['occurred_at'])} AS TIMESTAMPTZ)"
        if "occurred_at" in mapping
        else "NULL::TIMESTAMPTZ"
    )
    return (
        f"SELECT {_quoted(mapping['stream'])} AS stream_id, "
        f"{_quoted(mapping['type'])} AS type, "
        f"{occurred} AS occurred_at, "
        f"{_object(mapping['data'], kinds)} AS data, "
        f"{_object(mapping['metadata'], kinds, CASE_PREFIX)} AS metadata "
        f"FROM _rows ORDER BY {_quoted(ROW)}"
    )


def _check(con: duckdb.DuckDBPyConnection, mapping: dict) -> None:
    """Raise :class:`CsvError` naming the first row whose stream, type or time is unusable."""
    row = _quoted(ROW)
    for role in ("stream", "type"):
        column = _quoted(mapping[role])
        bad = con.sql(
            f"SELECT min({row}) FROM _rows WHERE {column} IS NULL OR trim({column}) = ''"
        ).fetchall()[0][0]
        if bad is not None:
            raise CsvError(
                f"row {bad}: the {role} column {mapping[role]!r} is empty; every event needs "
                f"a stream id and a type. Fill it in, or drop the row. Nothing was imported."
            )
    if "occurred_at" in mapping:
        name = mapping["occurred_at"]
        column = _quoted(name)
        # Checked here, not left to the store, so that every error counts rows alike.
        # The range is checked on the cast time, not by a second cast in time_sql.
        bad = con.sql(
            f"SELECT {row}, {column} FROM (SELECT {row}, {column}, "
            f"{time_sql(column, in_range=False)} AS t FROM _rows WHERE {column} IS NOT NULL) "
            f"WHERE t IS NULL OR t NOT BETWEEN TIMESTAMPTZ '{EARLIEST}' AND "
            f"TIMESTAMPTZ '{LATEST}' ORDER BY {row} LIMIT 1"
        ).fetchall()
        if bad:
            number, value = bad[0]
            raise CsvError(
                f"row {number}: cannot read {value!r} in column {name!r} as a time; use ISO "
                f"8601 such as 2024-05-01T12:00:00+02:00 (no offset means UTC; an offset is "
                f"under 24 hours; years 1 to 9999). Nothing was imported."
            )

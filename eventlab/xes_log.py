"""What both XES readers produce: the log's traces, events and attributes as Arrow columns.

An XES file (IEEE 1849) is XML: a ``<log>`` of ``<trace>`` elements (cases) that
hold ``<event>`` elements; attributes are child elements such as
``<string key="concept:name" value="A_SUBMITTED"/>`` whose tag is the value's
type. :mod:`eventlab.xes_fast` and :mod:`eventlab.xes_general` read a file into
a :class:`ParsedLog`; :mod:`eventlab.xes` turns it into events.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa

from .errors import XesError

# The element names of attributes, in the order of their type codes.
ATTRIBUTE_TYPES = ("string", "date", "int", "float", "boolean", "id")
STRING, DATE, INT, FLOAT, BOOLEAN, ID = range(6)
# A value the reader already turned into JSON text (a list, a container, or an
# attribute with nested attributes).
JSON = 6
NESTED_TYPES = ("list", "container")

BLOCK_SIZE = 1 << 24  # bytes of decompressed XML read at a time

ATTRIBUTE_SCHEMA = pa.schema(
    [
        ("owner", pa.int64()),  # the event (or trace) number
        ("no", pa.int64()),  # increases through the file: the attributes' order
        ("type", pa.int8()),
        ("key", pa.string()),
        ("value", pa.string()),
        ("line", pa.int64()),  # -1 when the reader did not count lines
    ]
)


@dataclass
class ParsedLog:
    """Traces, events and attributes of an XES log, in file order.

    ``events["trace"]`` is each event's trace number; attribute ``owner`` is an
    event number in ``event_attributes`` and a trace number in
    ``trace_attributes``. Lines are -1 when the reader did not count them (the
    fast reader does not; on a bad value the file is read again by the general
    one, which does, to name the line).
    """

    events: pa.Table  # trace (int64), line (int64)
    traces: pa.Table  # line (int64)
    event_attributes: pa.Table  # ATTRIBUTE_SCHEMA
    trace_attributes: pa.Table  # ATTRIBUTE_SCHEMA

    @property
    def has_lines(self) -> bool:
        lines = self.events["line"]
        return len(lines) == 0 or lines[0].as_py() >= 0


# ---------------------------------------------------------------------- reading bytes


class Source:
    """The decompressed bytes of a plain or gzipped file, in blocks, with progress.

    Gzip is recognised by its magic bytes, whatever the file is called.
    """

    def __init__(self, path: str | Path, bar: Any = None):
        self.path = Path(path)
        if not self.path.is_file():
            where = "a directory" if self.path.is_dir() else "no file"
            raise XesError(f"{where} at {str(path)!r}; give the path of an .xes or .xes.gz file")
        self.bar = bar
        self.size = self.path.stat().st_size

    def blocks(self, size: int = BLOCK_SIZE) -> Iterator[bytes]:
        """Decompressed blocks of ``size`` bytes (the last one shorter)."""
        with self.open() as (raw, stream):
            reported = 0
            while True:
                try:
                    block = stream.read(size)
                except (OSError, EOFError, zlib.error) as exc:
                    raise self.unreadable(exc) from None
                if self.bar is not None:
                    now = raw.tell()
                    self.bar.update(now - reported)
                    reported = now
                if not block:
                    return
                yield block

    def open(self):
        return _Opened(self)

    def unreadable(self, exc: Exception) -> XesError:
        return XesError(
            f"cannot read {self.path}: {exc}. Is it a complete .xes or .xes.gz file? "
            f"Download or export it again. Nothing was imported."
        )


class _Opened:
    def __init__(self, source: Source):
        self.source = source

    def __enter__(self) -> tuple[BinaryIO, BinaryIO]:
        self.raw = open(self.source.path, "rb")  # noqa: SIM115 (closed in __exit__)
        magic = self.raw.read(2)
        self.raw.seek(0)
        self.stream = gzip.GzipFile(fileobj=self.raw) if magic == b"\x1f\x8b" else self.raw
        return self.raw, self.stream

    def __exit__(self, *exc_info: object) -> None:
        if self.stream is not self.raw:
            self.stream.close()
        self.raw.close()


# ---------------------------------------------------------------------- values


_REFERENCE = re.compile(r"&(#[0-9]+|#x[0-9a-fA-F]+|[A-Za-z]+);|&")
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}


class BadReference(ValueError):
    """An ``&`` that does not start one of XML's predefined or numeric references."""


def attribute_value(raw: str) -> str:
    """An attribute value as XML reads it: whitespace normalised, references replaced.

    >>> attribute_value("a&amp;b&#233;\\tc")
    'a&bé c'
    """
    if "\r" in raw or "\n" in raw or "\t" in raw:
        raw = raw.replace("\r\n", " ").replace("\r", " ").replace("\n", " ").replace("\t", " ")
    if "&" in raw:
        raw = _REFERENCE.sub(_replace_reference, raw)
    return raw


def _replace_reference(match: re.Match[str]) -> str:
    name = match.group(1)
    if name is None:
        raise BadReference("a bare & (write &amp;)")
    if name[0] == "#":
        code = int(name[2:], 16) if name[1] == "x" else int(name[1:])
        if not (code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0x10FFFF):
            raise BadReference(f"&{name}; is not a character XML allows")
        return chr(code)
    try:
        return _NAMED[name]
    except KeyError:
        raise BadReference(f"&{name}; is not defined") from None


def typed_value(type_code: int, value: str) -> Any:
    """A raw XES value as the JSON value stored in ``data`` (the SQL in xes.py agrees).

    Raises ValueError when the value does not read as its type.

    >>> typed_value(INT, " 42"), typed_value(BOOLEAN, "true"), typed_value(FLOAT, "NaN")
    (42, True, None)
    >>> typed_value(DATE, "2011-10-01T00:38:44.546+02:00")
    '2011-09-30T22:38:44.546000Z'
    """
    if type_code in (STRING, ID):
        return value
    text = value.strip()
    if type_code == INT:
        if not re.fullmatch(r"[+-]?[0-9]+", text):
            raise ValueError(value)
        number = int(text)
        if not -(2**63) <= number < 2**63:
            raise ValueError(value)
        return number
    if type_code == FLOAT:
        number = float(text)
        return number if number - number == 0 else None  # NaN and infinities: null
    if type_code == BOOLEAN:
        lowered = text.lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
        raise ValueError(value)
    if type_code == DATE:
        return iso_utc(parse_time(text))
    raise ValueError(value)


# A time as the XES and CSV imports read it: an ISO 8601 date, optionally a time
# after "T" or a space, then optionally Z or an offset under 24 hours. DuckDB's cast
# alone would also take words ('epoch' is 1970, 'infinity' the end of time) and
# offsets such as +25:00; Python's fromisoformat takes other forms again. Both
# importers check values against this pattern first, so every path agrees.
TIME_PATTERN = (
    r"\s*[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]+)?)?"
    r"(Z|[+-]([01][0-9]|2[0-3])(:?[0-5][0-9])?)?)?\s*"
)
_TIME = re.compile(TIME_PATTERN)


# The times a store can hold: it reads them back as Python datetimes.
EARLIEST, LATEST = "0001-01-01 00:00:00+00", "9999-12-31 23:59:59.999999+00"


def time_sql(value: str, *, in_range: bool = True) -> str:
    """SQL for the text ``value`` as a TIMESTAMPTZ (naive means UTC), NULL unless it
    matches :data:`TIME_PATTERN` (and, with ``in_range``, lies in years 1 to 9999 in UTC).

    The connection must run with ``SET TimeZone = 'UTC'``. ``in_range=False`` saves
    a second cast where the caller checks the range itself.
    """
    parsed = f"TRY_CAST({value} AS TIMESTAMPTZ)"
    matches = f"regexp_full_match({value}, '{TIME_PATTERN}')"
    if in_range:
        matches += f" AND {parsed} BETWEEN TIMESTAMPTZ '{EARLIEST}' AND TIMESTAMPTZ '{LATEST}'"
    return f"CASE WHEN {matches} THEN {parsed} END"


def parse_time(text: str) -> datetime:
    """An XES ``date``: ISO 8601 by :data:`TIME_PATTERN`, naive times read as UTC.

    Raises ValueError for anything else, as :func:`time_sql` gives NULL.
    """
    if not _TIME.fullmatch(text):
        raise ValueError(text)
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 pushed past its end by the offset
        raise ValueError(text) from None


def iso_utc(moment: datetime) -> str:
    """A UTC time as stored in ``data``: ``2011-09-30T22:38:44.546000Z``."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def empty_attributes() -> pa.Table:
    return ATTRIBUTE_SCHEMA.empty_table()

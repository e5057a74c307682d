"""The append journal: how a file store acknowledges an append in microseconds.

DuckDB spends about a millisecond on any write statement, so committing every
command straight into DuckDB caps a file store at a few thousand events per
second. Instead, each committed append is first written to a small journal file
next to the database as one checksummed line, and ``fdatasync``'d before the
append returns: that is the durability point. The store later *absorbs* the
journal into DuckDB in one bulk insert (before any read, or when it grows) and
then empties it.

Crash safety:

- A record is one line ``<crc32 hex> <json rows>\\n``; a torn or corrupt tail
  (a write cut short by SIGKILL or power loss) fails its checksum and is dropped.
  It was never acknowledged, because acknowledgement follows the sync.
- Absorbing commits in DuckDB first and truncates the journal after. A crash in
  between leaves rows in both places; recovery skips journal rows whose
  position DuckDB already holds, so nothing is applied twice.
"""

from __future__ import annotations

import json
import os
import zlib
from json.encoder import encode_basestring as _quote
from pathlib import Path

from .errors import JournalError
from .events import to_json

Row = tuple  # laid out as eventlab.events.RECORD_FIELDS


class Journal:
    """An fsync'd, append-only file of committed-but-not-yet-absorbed rows."""

    def __init__(self, path: Path):
        self.path = path
        existed = path.exists()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = os.fstat(self._fd).st_size  # bytes of intact, synced records
        self._broken: str | None = None
        if not existed:
            # Make the new file's directory entry durable too.
            _fsync_directory(path.parent)

    def write(self, rows: list[Row]) -> None:
        """Append one record holding ``rows`` and make it durable before returning."""
        if self._broken:
            raise JournalError(self._broken)
        payload = ("[" + ",".join(map(_row_json, rows)) + "]").encode()
        line = b"%08x %s\n" % (zlib.crc32(payload), payload)
        try:
            written = os.write(self._fd, line)
            if written != len(line):
                raise OSError(f"short write ({written} of {len(line)} bytes)")
            os.fdatasync(self._fd)
        except OSError as exc:
            self._undo_failed_write(exc)
        self._size += len(line)

    def _undo_failed_write(self, exc: OSError) -> None:
        """Cut a failed record off the file, so it can neither be recovered later
        (its positions are about to be reused) nor hide the records after it."""
        try:
            os.ftruncate(self._fd, self._size)
            os.fsync(self._fd)
        except OSError as again:
            self._broken = (
                f"the journal {self.path} could not be written ({exc}) nor repaired "
                f"({again}); no more appends are accepted. Free disk space or fix the "
                f"device, then close and reopen the store: every acknowledged event is safe."
            )
            raise JournalError(self._broken) from exc
        raise JournalError(
            f"could not write the journal {self.path}: {exc}. Nothing was appended; "
            f"check free disk space and retry."
        ) from exc

    def clear(self) -> None:
        """Empty the journal once its rows are safely in DuckDB."""
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)
        self._size = 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @staticmethod
    def recover(path: Path, *, repair: bool) -> list[Row]:
        """Return every intact row in the journal at ``path``, in order.

        A torn or corrupt tail is dropped (and cut off the file when ``repair``).
        """
        if not path.exists():
            return []
        raw = path.read_bytes()
        rows: list[Row] = []
        offset = 0
        while offset < len(raw):
            end = raw.find(b"\n", offset)
            record = _decode(raw[offset:end]) if end >= 0 else None
            if record is None:
                break
            rows.extend(map(_row_from_json, record))
            offset = end + 1
        if repair and offset < len(raw):
            with open(path, "r+b") as handle:
                handle.truncate(offset)
                os.fsync(handle.fileno())
        return rows


def _row_json(row: Row) -> str:
    """One row as a JSON array, embedding the already-encoded data and metadata as is.

    Re-encoding them as JSON strings would escape every quote: slower and bigger.
    """
    correlation = "null" if row[7] is None else _quote(row[7])
    causation = "null" if row[8] is None else _quote(row[8])
    return (
        f"[{row[0]:d},{_quote(row[1])},{_quote(row[2])},{row[3]:d},{_quote(row[4])},"
        f"{row[5]},{row[6]},{correlation},{causation},{row[9]:d},{row[10]:d},{row[11]:d}]"
    )


def _row_from_json(values: list) -> Row:
    values[5] = to_json(values[5], "journal data")
    values[6] = to_json(values[6], "journal metadata")
    return tuple(values)


def _decode(line: bytes) -> list | None:
    """The rows of one journal line, or None when it is torn or corrupt."""
    if len(line) < 10 or line[8:9] != b" ":
        return None
    payload = line[9:]
    try:
        if int(line[:8], 16) != zlib.crc32(payload):
            return None
        return json.loads(payload)
    except ValueError:
        return None


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

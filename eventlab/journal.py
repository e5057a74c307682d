"""The append journal: how a file store acknowledges an append in microseconds.

DuckDB spends about a millisecond on any write statement, so committing every
command straight into DuckDB caps a file store at a few thousand events per
second. Instead, each committed transaction is first written to a journal file
next to the database as one checksummed record, and ``fdatasync``'d before the
append returns: that is the durability point. The store later *absorbs* the
journal into DuckDB in one bulk insert (before any read, or when it grows) and
then empties it.

A record is a header ``<kind:1 byte><length:u32><crc32:u32>`` and a payload:
``R``, a JSON array of rows, their JSON payloads as strings (cheapest for the
few rows of one command), or ``A``, an Arrow IPC stream of one record batch
(cheapest for big transactions, and the batch is reused as is for the absorb).
A synced journal writes that stream with LZ4-compressed buffers (see
``_SYNCED_COMPRESSION``); the stream says so itself, so recovery reads both.
``J`` (rows with the payloads embedded as JSON) is what journals held before
``R``; recovery reads both.

A transaction may also change *side tables* (the command store's tables, see
:mod:`eventlab.sidetables`): then its record is ``M``, holding an events
record and an ``S`` record (a JSON array of ``[table, row]`` pairs) under one
checksum, so the events and the side rows are durable together or not at all.

Crash safety:

- A torn or corrupt record (a write cut short by SIGKILL or power loss) fails
  its length or checksum and is dropped with everything after it. It was never
  acknowledged, because acknowledgement follows the sync.
- A synced journal writes zeros ahead of its small records, synced (see
  ``Journal._preallocate``): such a record then overwrites blocks the file
  already has, and its ``fdatasync`` flushes data only. Kind 0 is no record, so
  recovery stops at the first zero header, as at a torn record.
- A journal without sync copies its small records into a shared memory map of
  the file, over zeros written ahead (see ``Journal._map_ahead``). The copied
  bytes are in the operating system's page cache at once, as ``pwrite``'s are,
  so a killed process loses nothing; a copy cut short fails its checksum.
- A write that fails (disk full, I/O error) is cut off the file at once, so it
  can neither come back at recovery nor hide the records written after it.
- Absorbing commits in DuckDB first and empties the journal after. A crash in
  between leaves rows in both places; recovery skips journal rows whose
  position DuckDB already holds, so nothing is applied twice.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import orjson
import pyarrow as pa

from .errors import JournalError
from .events import to_json
from .schema import ARROW_SCHEMA, rows_to_batch

_HEADER = struct.Struct("<cII")
_SUB_HEADER = struct.Struct("<cI")
_JSON, _ROWS, _ARROW, _SIDE, _MULTI = b"J", b"R", b"A", b"S", b"M"

# A synced record costs its flush, and ``fdatasync`` takes time per byte (here about
# 0.2 ms plus 1.6 ms per MB). LZ4 shrinks a big commit's Arrow batch about fourfold
# at about 1.5 GB/s: for 6,000 events, 0.7 ms of compressing saves about 2.5 ms of
# flushing. Without sync the bytes only reach the page cache, where compressing
# would cost more than it saves.
_SYNCED_COMPRESSION = "lz4" if pa.Codec.is_available("lz4") else None

# A synced journal runs this far ahead of its small records with zeros (see
# Journal._preallocate), written from this buffer. A bigger record extends the file
# itself: there the flush of its bytes outweighs that of the file's new size, and
# writing zeros first would cost more than it saves.
_PREALLOCATE = 1 << 20
_SMALL_RECORD = 64 << 10
_ZEROS = memoryview(bytes(1 << 20))

# A journal without sync maps this much of the file ahead of its small records at a
# time (see Journal._map_ahead).
_MAP_AHEAD = 8 << 20

# What a side record holds: (table name, row) pairs in commit order.
SideRows = list[tuple[str, tuple]]


def journal_paths(store_path: Path) -> tuple[Path, Path]:
    """The journal of the store file at ``store_path``, and the name a journal takes
    while a background absorb empties it (see :mod:`eventlab.absorber`)."""
    journal = store_path.with_name(store_path.name + ".journal")
    return journal, journal.with_name(journal.name + ".absorbing")


class Journal:
    """An fsync'd, append-only file of committed-but-not-yet-absorbed events."""

    def __init__(self, path: Path, *, sync: bool = True):
        self.path = path
        # Without sync a record reaches the operating system, not the disk: a
        # killed process loses nothing, a power cut may lose the last records.
        self.sync = sync
        self._ipc_options = pa.ipc.IpcWriteOptions(
            compression=_SYNCED_COMPRESSION if sync else None
        )
        existed = path.exists()
        # Records go at _size with pwrite, not O_APPEND: a synced journal runs ahead of
        # them with zeros (see _preallocate). The store opens a journal only after
        # Journal.recover(repair=True) cut it after its last intact record.
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self._size = os.fstat(self._fd).st_size  # bytes of intact, synced records
        self._allocated = self._size  # bytes of the file: records, then zeros
        # Without sync, small records are copied into a map of the file (see _map_ahead).
        self._mapped = not sync and _HAS_PWRITE
        self._map: mmap.mmap | None = None
        self._broken: str | None = None
        if not existed:
            # Make the new file's directory entry durable too.
            _fsync_directory(path.parent)

    def write_rows(self, rows: Sequence[tuple], side: SideRows | None = None) -> None:
        """Durably append a JSON record of ``rows`` (RecordedEvent layout), and ``side``."""
        # Every value as it is, the JSON payloads as strings: orjson writes that several
        # times faster than embedding them with Python string formatting.
        self._write_with_side(_ROWS, orjson.dumps(rows), side)

    def write_batch(self, batch: pa.RecordBatch, side: SideRows | None = None) -> None:
        """Durably append an Arrow record of ``batch`` (the events table's layout), and
        ``side``."""
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema, options=self._ipc_options) as writer:
            writer.write_batch(batch)
        self._write_with_side(_ARROW, sink.getvalue(), side)

    def _write_with_side(self, kind: bytes, payload, side: SideRows | None) -> None:
        if not side:
            self._write(kind, payload)
            return
        side_payload = _side_json(side)
        parts = [_SUB_HEADER.pack(kind, len(payload)), bytes(payload)]
        parts += [_SUB_HEADER.pack(_SIDE, len(side_payload)), side_payload]
        self._write(_MULTI, b"".join(parts))

    def _write(self, kind: bytes, payload) -> None:
        if self._broken:
            raise JournalError(self._broken)
        header = _HEADER.pack(kind, len(payload), zlib.crc32(payload))
        start = self._size
        end = start + len(header) + len(payload)
        small = end - start <= _SMALL_RECORD
        try:
            if small and self._mapped and self._map_covers(end):
                self._map[start : start + len(header)] = header
                self._map[start + len(header) : end] = payload
            else:
                if self.sync and end > self._allocated and small:
                    self._preallocate(end)
                record = header + memoryview(payload)
                written = _pwrite(self._fd, record, start)
                if written != len(record):
                    raise OSError(f"short write ({written} of {len(record)} bytes)")
                if self.sync:
                    os.fdatasync(self._fd)
        except OSError as exc:
            self._undo_failed_write(exc)
        self._size = end
        self._allocated = max(self._allocated, end)

    def _map_covers(self, end: int) -> bool:
        """Whether the map reaches ``end`` bytes, mapping further ahead if need be
        (see :meth:`_map_ahead`); False from then on where the file cannot be mapped."""
        if self._map is not None and end <= len(self._map):
            return True
        self._map_ahead(end)
        return self._map is not None

    def _map_ahead(self, end: int) -> None:
        """Write zeros to at least ``end`` bytes and map the whole file, for copying
        small records into; where the file system cannot map files, leave the
        records to ``pwrite``.

        ``os.pwrite`` lets go of the GIL, and a background absorb's thread then
        takes it: getting it back cost a ``simulate()`` of 10,000 orders about a
        sixth of its time (2026-11-28: 9.5 s against 8.0 s with no write at all),
        for about 120,000 small records. A copy into a shared map keeps the GIL
        and makes no system call; the pages are the page cache's, as written
        bytes are. The zeros are written, not a hole left by ``ftruncate``: a
        full disk then fails here with an error instead of killing the process
        with SIGBUS when a copy touches a page no block backs.
        """
        self._unmap()
        stop = max(end, self._allocated + _MAP_AHEAD)
        stop += -stop % mmap.ALLOCATIONGRANULARITY
        self._write_zeros(self._allocated, stop)
        self._allocated = stop
        try:
            self._map = mmap.mmap(self._fd, stop)
        except OSError:  # e.g. ENODEV: a file system that cannot map files
            self._mapped = False

    def _unmap(self) -> None:
        # Before the file shrinks: a mapped page past its end would raise SIGBUS.
        if self._map is not None:
            self._map.close()
            self._map = None

    def _preallocate(self, end: int) -> None:
        """Extend the file with zeros, synced, to at least ``end`` bytes.

        A record that extends the file makes ``fdatasync`` flush the file's new
        size and blocks too, through the file system's journal. Measured here
        (2026-11-28), 1,000 synced 300-byte records took 370 ms appended and
        270 ms written over zeros synced before, zeros included; the gap grows
        when the disk is busy. So a synced journal writes zeros ahead of its small
        records, ``_PREALLOCATE`` bytes at a time, as databases do with their
        write-ahead logs. (For 290 kB records the zeros cost more than they save:
        20 of them took 17 ms appended, 24 ms with 8 MB of zeros written first.)
        Recovery stops at the first zero header: kind 0 is no record.
        """
        stop = max(end, self._allocated + _PREALLOCATE)
        self._write_zeros(self._allocated, stop)
        os.fsync(self._fd)
        self._allocated = stop

    def _write_zeros(self, start: int, stop: int) -> None:
        for offset in range(start, stop, len(_ZEROS)):
            size = min(len(_ZEROS), stop - offset)
            if _pwrite(self._fd, _ZEROS[:size], offset) != size:
                raise OSError(f"short write of zeros at byte {offset}")

    def _undo_failed_write(self, exc: OSError) -> None:
        """Cut a failed record off the file: its positions are about to be reused."""
        try:
            self._unmap()
            os.ftruncate(self._fd, self._size)
            self._allocated = self._size
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

    def move_to(self, path: Path) -> None:
        """Rename the file to ``path``, freeing its name for a new journal.

        Writing continues into the renamed file (the descriptor follows it). The
        new name becomes durable when the next journal at the old name is
        created, which syncs the directory before its first record.
        """
        os.replace(self.path, path)
        self.path = path

    def delete(self) -> None:
        """Close and remove the file once DuckDB has committed every row in it.

        Should the removal be lost in a crash, recovery finds rows DuckDB
        already holds, which it skips.
        """
        self.close()
        self.path.unlink(missing_ok=True)

    def clear(self) -> None:
        """Empty the journal once its rows are safely in DuckDB."""
        self._unmap()
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)
        self._size = self._allocated = 0

    def close(self) -> None:
        self._unmap()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @staticmethod
    def recover(path: Path, *, repair: bool) -> tuple[pa.Table, SideRows]:
        """Every intact event row in the journal at ``path``, in order, as one Arrow
        table, and every side row, in order.

        A torn or corrupt tail is dropped (and cut off the file when ``repair``),
        as are the zeros a synced journal writes ahead of its records.
        """
        batches, side, end, size = _read(path)
        if repair and end < size:
            with open(path, "r+b") as handle:
                handle.truncate(end)
                os.fsync(handle.fileno())
        return pa.Table.from_batches(batches, schema=ARROW_SCHEMA), side

    @staticmethod
    def intact_size(path: Path) -> int:
        """How many bytes at the start of the journal at ``path`` hold intact records:
        where recovery stops."""
        return _read(path)[2]


def _read(path: Path) -> tuple[list[pa.RecordBatch], SideRows, int, int]:
    """The intact records of the journal at ``path``: their event batches and side rows,
    where they end, and the file's size."""
    batches: list[pa.RecordBatch] = []
    side: SideRows = []
    raw = path.read_bytes() if path.exists() else b""
    offset = 0
    while offset + _HEADER.size <= len(raw):
        kind, length, checksum = _HEADER.unpack_from(raw, offset)
        payload = raw[offset + _HEADER.size : offset + _HEADER.size + length]
        try:
            decoded = _decode(kind, payload, length, checksum)
        except TypeError as exc:
            # Intact (its checksum holds), so acknowledged: never dropped silently.
            raise JournalError(
                f"the journal {path} holds an intact record at byte {offset} with a value "
                f"the events table cannot take ({exc}), such as a NaT timestamp that "
                f"eventlab versions before this check accepted. Nothing was changed. To "
                f"open the store, move that file aside: its events (acknowledged, not yet "
                f"in the database) are then missing from the store, and stay in the file."
            ) from exc
        if decoded is None:  # torn, corrupt, or the zeros ahead of the records
            break
        batches.append(decoded[0])
        side.extend(decoded[1])
        offset += _HEADER.size + length
    return batches, side, offset, len(raw)


def _decode(
    kind: bytes, payload: bytes, length: int, checksum: int
) -> tuple[pa.RecordBatch, SideRows] | None:
    """The event rows and side rows of one record, or None when it is torn or corrupt."""
    if len(payload) != length or zlib.crc32(payload) != checksum:
        return None
    try:
        if kind == _MULTI:
            return _decode_multi(payload)
        batch = _decode_events(kind, payload)
    except (ValueError, pa.ArrowException, IndexError, struct.error):
        return None
    return None if batch is None else (batch, [])


def _decode_events(kind: bytes, payload: bytes) -> pa.RecordBatch | None:
    if kind == _ROWS:
        return rows_to_batch([tuple(row) for row in json.loads(payload)])
    if kind == _JSON:
        return rows_to_batch([_row_from_json(row) for row in json.loads(payload)])
    if kind == _ARROW:
        return pa.ipc.open_stream(payload).read_all().to_batches()[0]
    return None


def _decode_multi(payload: bytes) -> tuple[pa.RecordBatch, SideRows] | None:
    """An events record and a side record written together (already checksummed)."""
    kind, length = _SUB_HEADER.unpack_from(payload, 0)
    start = _SUB_HEADER.size
    batch = _decode_events(kind, payload[start : start + length])
    side_kind, side_length = _SUB_HEADER.unpack_from(payload, start + length)
    side_start = start + length + _SUB_HEADER.size
    if batch is None or side_kind != _SIDE:
        return None
    side = json.loads(payload[side_start : side_start + side_length])
    return batch, [(table, tuple(row)) for table, row in side]


def _side_json(side: SideRows) -> bytes:
    """Side rows as a JSON array of ``[table, row]`` pairs.

    Side rows hold only strings, integers and None (JSON travels in them as
    text), which orjson writes exactly as the standard library would, faster.
    """
    try:
        return orjson.dumps(side)
    except TypeError:  # e.g. an integer beyond 64 bits
        return json.dumps(side, separators=(",", ":")).encode()


def _row_from_json(values: list) -> tuple:
    values[5] = to_json(values[5], "journal data")
    values[6] = to_json(values[6], "journal metadata")
    return tuple(values)


def _pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
    """Write ``data`` at ``offset`` of the file (where os.pwrite is missing, by seeking)."""
    if _HAS_PWRITE:
        return os.pwrite(fd, data, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover - Windows
    return os.write(fd, data)  # pragma: no cover


_HAS_PWRITE = hasattr(os, "pwrite")


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Reading ahead: DuckDB fetches the next Arrow batch while Python converts this one.

A big read spends its time in two places: DuckDB scanning and converting the
next batch to Arrow, and Python turning the current batch into records. DuckDB
releases the GIL while it works, so a background thread can fetch batch n + 1
while the caller's thread builds the records of batch n; on two cores a read
then takes about as long as the slower of the two instead of their sum.

At most one batch waits fetched, so memory stays bounded by the batch size. A
thread is started only once a read proves longer than one batch (the first
batch comes back full, or a second one follows), so a small read never pays
for one. A store stops its readers before closing its connection: DuckDB
refuses to close a connection while one of its cursors is fetching.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pyarrow as pa

from .errors import StoreClosedError

# How often a blocked reader thread checks whether it was stopped, in seconds.
_POLL_SECONDS = 0.05

_END = object()  # the reader is exhausted
_STOPPED = object()  # the store stopped the reader (it is closing)


class ReadAheads:
    """The read-ahead threads of one store, so that closing it can stop them first."""

    def __init__(self) -> None:
        self._active: set[_ReadAhead] = set()
        self._lock = threading.Lock()

    def batches(
        self,
        reader: pa.RecordBatchReader,
        batch_size: int,
        prepare: Callable[[pa.RecordBatch], Any] | None = None,
    ) -> Iterator[Any]:
        """The batches of ``reader`` in order, the next one fetched in a thread.

        With ``prepare``, each batch is handed out as ``prepare(batch)``, made by
        the thread for the batches it fetches: work that lets go of the GIL
        (Arrow's compute functions) then runs on the other core too.
        """
        fetched = []
        for batch in reader:
            fetched.append(batch)
            # Two batches, or one full one: more may follow, worth a thread.
            if len(fetched) == 2 or batch.num_rows >= batch_size:
                break
        else:  # the whole read fitted in one batch
            yield from fetched if prepare is None else map(prepare, fetched)
            return
        ahead = _ReadAhead(reader if prepare is None else map(prepare, reader))
        with self._lock:
            self._active.add(ahead)
        try:
            yield from fetched if prepare is None else map(prepare, fetched)
            yield from ahead
        finally:
            ahead.stop()
            with self._lock:
                self._active.discard(ahead)

    def stop_all(self) -> None:
        """Stop every reader thread and wait for it (before the connection closes)."""
        with self._lock:
            active = list(self._active)
        for ahead in active:
            ahead.stop()


class _ReadAhead:
    """One background thread feeding a reader's batches through a one-slot queue."""

    def __init__(self, reader: Iterable[Any]) -> None:
        self._reader = reader
        self._slot: queue.Queue = queue.Queue(maxsize=1)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="eventlab-read-ahead", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for batch in self._reader:
                if not self._offer(batch):
                    return
            self._offer(_END)
        except BaseException as exc:  # handed to the reading thread, which raises it
            self._offer(exc)
        finally:
            self._reader = None  # let DuckDB release the result as soon as possible

    def _offer(self, item: object) -> bool:
        """Put ``item`` in the slot once it is free; False when stopped first."""
        while not self._stopped.is_set():
            try:
                self._slot.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                pass
        return False

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._slot.get()
            if item is _END:
                return
            if item is _STOPPED:
                raise StoreClosedError(
                    "the store was closed while this read_all() was being iterated; "
                    "finish reading before store.close(), or open the store again and "
                    "read from where you stopped with read_all(after=position)"
                )
            if isinstance(item, BaseException):
                raise item
            yield item

    def stop(self) -> None:
        """Stop the thread, wait for it, and leave a marker for a reader still waiting."""
        self._stopped.set()
        self._thread.join()
        # Whatever was fetched is dropped: a later next() learns the store closed. If
        # all that waited was the end of the results, nothing is lost: the read ends.
        finished = False
        try:
            while True:
                finished = self._slot.get_nowait() is _END
        except queue.Empty:
            pass
        self._slot.put_nowait(_END if finished else _STOPPED)

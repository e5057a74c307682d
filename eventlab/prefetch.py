"""Read the next Arrow batch in a background thread while Python works on this one.

A bulk fold alternates two kinds of work: DuckDB producing a batch of rows
(C++, which lets go of the GIL) and Python turning it into records and folding
them. Done in turn they add up; with a reader thread a batch is produced on the
second core while the fold runs on the first.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


def prefetched(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """The items of ``items``, produced up to ``depth`` ahead in a daemon thread.

    An exception raised while producing is raised here, at the item it stopped
    at. Closing the returned generator early (the consumer failed or stopped)
    stops the thread at its next item.

    Examples
    --------
    >>> list(prefetched(range(5)))
    [0, 1, 2, 3, 4]
    """
    buffer: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _put(buffer, item, stop):
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            _put(buffer, _Failure(exc), stop)
            return
        _put(buffer, _DONE, stop)

    thread = threading.Thread(target=produce, name="eventlab-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def _put(buffer: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put ``item`` unless the consumer has stopped; False once it has."""
    while not stop.is_set():
        try:
            buffer.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False

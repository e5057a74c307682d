"""Every failure a user can cause is an :class:`EventlabError` subclass.

Messages say what was wrong and what to do about it, so a student reading a
traceback in a notebook learns the fix, not only the symptom.
"""

from __future__ import annotations


class EventlabError(Exception):
    """Base class of every error eventlab raises on purpose."""


class InvalidEventError(EventlabError, ValueError):
    """An event, stream id, type or payload is malformed (nothing was written)."""


class ConcurrencyError(EventlabError):
    """A stream's version is not the one the caller expected (optimistic concurrency).

    Attributes
    ----------
    stream_id : str
        The stream whose version was checked.
    expected : int
        The version the caller expected.
    actual : int
        The stream's version in the store.
    """

    def __init__(self, stream_id: str, expected: int, actual: int, detail: str | None = None):
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        message = detail or (
            f"stream {stream_id!r} is at version {actual}, but the append expected "
            f"version {expected}; someone else wrote to it first. Reload the stream "
            f"(store.read_stream), re-check your decision, and append "
            f"again with expected_version={actual}."
        )
        super().__init__(message)


class DuplicateEventError(EventlabError):
    """An event id is already stored with different content."""


class ReadOnlyError(EventlabError):
    """A write was attempted on a store opened with ``read_only=True``."""


class StoreLockedError(EventlabError):
    """Another process holds the DuckDB file open for writing."""


class StoreClosedError(EventlabError):
    """The store was used after :meth:`EventStore.close`."""


class ParquetError(EventlabError):
    """A Parquet file is missing, unreadable or lacks required columns."""


class MissingColumnsError(EventlabError, ValueError):
    """A frame or file lacks columns that an import requires."""


class XesError(EventlabError, ValueError):
    """An XES file is missing, not XML, not an XES log, or holds a value that cannot be read.

    The message names the line; nothing was imported.
    """


class CsvError(EventlabError, ValueError):
    """A CSV file is missing or malformed, or holds a value that cannot be read.

    The message names the row; nothing was imported.
    """


class JournalError(EventlabError, OSError):
    """The store's append journal could not be written (disk full, I/O error)."""


class UnknownEventError(EventlabError):
    """An aggregate met an event type it has no ``apply_<Type>`` handler for."""


class VersionNotFoundError(EventlabError):
    """A version beyond the end of a stream was asked for.

    Attributes
    ----------
    stream_id : str
    requested : int
    current : int
        The stream's current version.
    """

    def __init__(self, stream_id: str, requested: int, current: int):
        self.stream_id = stream_id
        self.requested = requested
        self.current = current
        super().__init__(
            f"stream {stream_id!r} has no version {requested}: it is at version {current}. "
            f"Ask for a version from 0 to {current}, or leave version=None for the latest."
        )


class ReplayError(EventlabError):
    """A reducer or aggregate handler raised while replaying an event.

    The original exception is chained (``__cause__``).
    """

    def __init__(self, event, reducer_name: str, cause: BaseException):
        self.stream_id = event.stream_id
        self.version = event.version
        self.position = event.position
        self.event_type = event.type
        super().__init__(
            f"{reducer_name} failed on {event.type} (stream {event.stream_id!r}, version "
            f"{event.version}, position {event.position}): {type(cause).__name__}: {cause}. "
            f"Fix the reducer for this kind of event; the original error is chained below."
        )


class UpcastError(EventlabError):
    """A stored event's schema version has no upcaster step to today's shape."""


class ProjectionError(EventlabError):
    """A projection is defined or used wrongly (name, schema, key, columns, state)."""


class ConsistencyTimeout(EventlabError):
    """A strongly consistent query could not see the store's head in time."""


class QueryError(EventlabError):
    """A query is unknown, or asked with parameters its handler does not take."""


class CommandError(EventlabError):
    """A command is malformed, unknown to the command store, or given a bad status."""


class ResilienceError(EventlabError, ValueError):
    """A retry policy, circuit breaker or rate limiter was given a bad argument."""


class SagaError(EventlabError):
    """A saga or step is malformed, unknown to the coordinator, or asked to do what its
    state does not allow (e.g. retrying a saga that is not stuck)."""


class PlotError(EventlabError, ValueError):
    """A plot or widget was given something it cannot show (an unknown option, an
    empty or unknown stream, a field the state does not have)."""


class CircuitOpenError(EventlabError):
    """A circuit breaker is open (or its half-open trial slots are taken): the call was not made.

    Attributes
    ----------
    name : str
        The breaker's name.
    retry_at : datetime or None
        When the breaker will let a trial call through (UTC), if known.
    """

    def __init__(self, message: str, *, name: str, retry_at=None):
        self.name = name
        self.retry_at = retry_at
        super().__init__(message)

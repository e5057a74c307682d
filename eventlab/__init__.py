"""eventlab: learn and analyse event sourcing, CQRS, commands and sagas on DuckDB.

Everything public is importable from the top level: ``import eventlab as el``.
"""

from .clock import SimulatedClock, SystemClock
from .errors import (
    ConcurrencyError,
    DuplicateEventError,
    EventlabError,
    InvalidEventError,
    JournalError,
    MissingColumnsError,
    ParquetError,
    ReadOnlyError,
    StoreClosedError,
    StoreLockedError,
)
from .events import Event, RecordedEvent
from .store import EventStore

__version__ = "0.1.0"

__all__ = [
    "ConcurrencyError",
    "DuplicateEventError",
    "Event",
    "EventStore",
    "EventlabError",
    "InvalidEventError",
    "JournalError",
    "MissingColumnsError",
    "ParquetError",
    "ReadOnlyError",
    "RecordedEvent",
    "SimulatedClock",
    "StoreClosedError",
    "StoreLockedError",
    "SystemClock",
]

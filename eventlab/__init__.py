"""eventlab: learn and analyse event sourcing, CQRS, commands and sagas on DuckDB.

Everything public is importable from the top level: ``import eventlab as el``.
"""

from .aggregate import Aggregate
from .clock import SimulatedClock, SystemClock
from .diff import diff
from .errors import (
    ConcurrencyError,
    DuplicateEventError,
    EventlabError,
    InvalidEventError,
    JournalError,
    MissingColumnsError,
    ParquetError,
    ReadOnlyError,
    ReplayError,
    StoreClosedError,
    StoreLockedError,
    UnknownEventError,
    UpcastError,
    VersionNotFoundError,
)
from .events import Event, RecordedEvent
from .history import history, replay_all
from .replay import replay
from .snapshots import Snapshots
from .store import EventStore
from .upcasting import Upcasters, upcaster, upcasters

__version__ = "0.1.0"

__all__ = [
    "Aggregate",
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
    "ReplayError",
    "SimulatedClock",
    "Snapshots",
    "StoreClosedError",
    "StoreLockedError",
    "SystemClock",
    "UnknownEventError",
    "UpcastError",
    "Upcasters",
    "VersionNotFoundError",
    "diff",
    "history",
    "replay",
    "replay_all",
    "upcaster",
    "upcasters",
]

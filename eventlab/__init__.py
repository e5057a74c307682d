"""eventlab: learn and analyse event sourcing, CQRS, commands and sagas on DuckDB.

Everything public is importable from the top level: ``import eventlab as el``.
"""

# el.analytics, el.plots, el.shop, el.widgets (matplotlib and ipywidgets load lazily)
from . import analytics, plots, shop, widgets
from .aggregate import Aggregate
from .asof import ReadModelsAsOf
from .breaker import CircuitBreaker
from .bus import EventBus, Subscription
from .clock import SimulatedClock, SystemClock
from .commands import Command, CommandStore
from .diff import diff
from .errors import (
    CircuitOpenError,
    CommandError,
    ConcurrencyError,
    ConsistencyTimeout,
    CsvError,
    DuplicateEventError,
    EventlabError,
    InvalidEventError,
    JournalError,
    MissingColumnsError,
    ParquetError,
    PlotError,
    ProjectionError,
    QueryError,
    ReadOnlyError,
    ReplayError,
    ResilienceError,
    SagaError,
    StoreClosedError,
    StoreLockedError,
    UnknownEventError,
    UpcastError,
    VersionNotFoundError,
    XesError,
)
from .events import Event, RecordedEvent
from .executor import CommandContext, CommandExecutor, CommandOutcome, CommandRejected
from .history import history, replay_all
from .projections import Projection, SqlProjection
from .queries import QueryBus, QueryContext
from .ratelimit import RateLimiter
from .replay import replay
from .resilience import RetryPolicy
from .runner import ProjectionFailedWarning, ProjectionRunner
from .saga import Choreography, Saga, SagaCoordinator, Step, saga_status, saga_timeline
from .scheduler import CommandScheduler
from .snapshots import Snapshots
from .store import EventStore
from .upcasting import Upcasters, upcaster, upcasters

__version__ = "0.1.0"

__all__ = [
    "Aggregate",
    "Choreography",
    "CircuitBreaker",
    "CircuitOpenError",
    "Command",
    "CommandContext",
    "CommandError",
    "CommandExecutor",
    "CommandOutcome",
    "CommandRejected",
    "CommandScheduler",
    "CommandStore",
    "ConcurrencyError",
    "ConsistencyTimeout",
    "CsvError",
    "DuplicateEventError",
    "Event",
    "EventBus",
    "EventStore",
    "EventlabError",
    "InvalidEventError",
    "JournalError",
    "MissingColumnsError",
    "ParquetError",
    "PlotError",
    "Projection",
    "ProjectionError",
    "ProjectionFailedWarning",
    "ProjectionRunner",
    "QueryBus",
    "QueryContext",
    "QueryError",
    "RateLimiter",
    "ReadModelsAsOf",
    "ReadOnlyError",
    "RecordedEvent",
    "ReplayError",
    "ResilienceError",
    "RetryPolicy",
    "Saga",
    "SagaCoordinator",
    "SagaError",
    "SimulatedClock",
    "Snapshots",
    "SqlProjection",
    "Step",
    "StoreClosedError",
    "StoreLockedError",
    "Subscription",
    "SystemClock",
    "UnknownEventError",
    "UpcastError",
    "Upcasters",
    "VersionNotFoundError",
    "XesError",
    "analytics",
    "diff",
    "history",
    "plots",
    "replay",
    "replay_all",
    "saga_status",
    "saga_timeline",
    "shop",
    "upcaster",
    "upcasters",
    "widgets",
]

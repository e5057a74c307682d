"""Sagas: long transactions made of short local ones, orchestrated or choreographed.

- :class:`Saga` and :class:`Step`: what to do, what undoes it, how to retry.
- :class:`SagaCoordinator`: orchestration. It gives each saga a transaction
  id, sends each step to its participant as a command, waits for the answer,
  retries what can be retried and compensates the finished steps in reverse
  order when a step fails for good. Its state is the saga's own stream
  ``saga-<transaction id>`` (see :mod:`eventlab.saga.state`), so a new
  coordinator resumes every open saga after a crash.
- :class:`Choreography`: the same flow with no coordinator, services reacting
  to each other's events.
- :func:`saga_timeline` and :func:`saga_status`: what happened, as DataFrames.
"""

from .choreography import Choreography, failure_event_id, reaction_id
from .coordinator import SagaCoordinator
from .definition import ACTION, COMPENSATION, Saga, Step
from .state import (
    ABORTED,
    COMPENSATING,
    COMPLETED,
    ENDED,
    EVENT_TYPES,
    RUNNING,
    STATES,
    STREAM_PREFIX,
    STUCK,
    SagaState,
    stream_of,
)
from .status import STATUS_COLUMNS, saga_status
from .timeline import saga_events, saga_timeline, timeline_from_events

__all__ = [
    "ABORTED",
    "ACTION",
    "COMPENSATING",
    "COMPENSATION",
    "COMPLETED",
    "Choreography",
    "ENDED",
    "EVENT_TYPES",
    "RUNNING",
    "STATES",
    "STATUS_COLUMNS",
    "STREAM_PREFIX",
    "STUCK",
    "Saga",
    "SagaCoordinator",
    "SagaState",
    "Step",
    "failure_event_id",
    "reaction_id",
    "saga_events",
    "saga_status",
    "saga_timeline",
    "stream_of",
    "timeline_from_events",
]

"""A saga's state, folded from the events of its stream ``saga-<transaction id>``.

The coordinator keeps no state but this: it decides from the state, records
its decision as events, and applies those same events to the state. A new
coordinator rebuilds every open saga by folding its stream, so after a crash
it knows exactly what was asked, what answered, and what is still due.

==========================  ====================================================
event                       data (besides ``step``, ``kind``, ``attempt``)
==========================  ====================================================
``SagaStarted``             ``saga`` (name), ``steps`` (names), ``data``
``StepRequested``           ``command_id`` (``kind`` is ``"action"``)
``StepSucceeded``           ``command_id``
``StepFailed``              ``command_id``, ``error``, ``declined`` (True when
                            the participant rejected the command)
``StepTimedOut``            ``command_id``, ``error``
``StepRetried``             ``delay_s`` and ``due`` (UTC) of the next attempt,
                            whose number ``attempt`` is
``CompensationRequested``   ``command_id`` (``kind`` is ``"compensation"``)
``StepCompensated``         ``command_id``
``SagaCompleted``           ``steps``
``SagaAborted``             ``failed_step``, ``reason``, ``compensated``; when
                            an operator abandoned a stuck saga, also
                            ``abandoned`` (true) and ``uncompensated`` (see
                            ``SagaCoordinator.abandon``)
``SagaStuck``               ``error``: a compensation was declined or ran out
                            of attempts; an operator decides (see
                            ``SagaCoordinator.retry`` and ``abandon``)
==========================  ====================================================

Every event carries the transaction id as its ``correlation_id``; the events
written on hearing a command's answer (the answer and the decision it led to)
carry that command's id as ``causation_id``.
"""

from __future__ import annotations

from typing import Any

from ..clock import to_micros
from .definition import ACTION, COMPENSATION

STREAM_PREFIX = "saga-"

SAGA_STARTED = "SagaStarted"
STEP_REQUESTED = "StepRequested"
STEP_SUCCEEDED = "StepSucceeded"
STEP_FAILED = "StepFailed"
STEP_RETRIED = "StepRetried"
STEP_TIMED_OUT = "StepTimedOut"
COMPENSATION_REQUESTED = "CompensationRequested"
STEP_COMPENSATED = "StepCompensated"
SAGA_COMPLETED = "SagaCompleted"
SAGA_ABORTED = "SagaAborted"
SAGA_STUCK = "SagaStuck"
EVENT_TYPES = (
    SAGA_STARTED,
    STEP_REQUESTED,
    STEP_SUCCEEDED,
    STEP_FAILED,
    STEP_RETRIED,
    STEP_TIMED_OUT,
    COMPENSATION_REQUESTED,
    STEP_COMPENSATED,
    SAGA_COMPLETED,
    SAGA_ABORTED,
    SAGA_STUCK,
)

# What a saga is doing. Completed and aborted sagas are over; a stuck one waits
# for an operator (it may be retried), so it stays open.
RUNNING, COMPENSATING, COMPLETED, ABORTED, STUCK = (
    "running",
    "compensating",
    "completed",
    "aborted",
    "stuck",
)
STATES = (RUNNING, COMPENSATING, COMPLETED, ABORTED, STUCK)
ENDED = frozenset({COMPLETED, ABORTED})


def stream_of(transaction_id: str) -> str:
    """The stream of a saga: ``saga-<transaction id>``."""
    return STREAM_PREFIX + transaction_id


class SagaState:
    """Where one saga stands: built by :meth:`apply` from its events, in order.

    Attributes
    ----------
    transaction_id, saga, data, steps
        From ``SagaStarted``.
    version : int
        Events applied (the stream's version).
    state : str
        One of ``running``, ``compensating``, ``completed``, ``aborted``, ``stuck``.
    done, compensated : list of str
        Steps whose action succeeded, and those compensated since, in order.
    step, kind, attempt
        The current attempt (``kind`` is ``"action"`` or ``"compensation"``).
    command_id : str or None
        The command of the current attempt while it is out (requested, no answer yet).
    due : int or None
        When the next attempt is due (epoch µs), after a ``StepRetried``.
    failed_step, error
        The last step that failed and why.
    started, updated : int
        Epoch µs of the first and the latest event.
    """

    __slots__ = (
        "transaction_id",
        "saga",
        "data",
        "steps",
        "version",
        "state",
        "done",
        "compensated",
        "step",
        "kind",
        "attempt",
        "command_id",
        "due",
        "failed_step",
        "error",
        "started",
        "updated",
    )

    def __init__(self, transaction_id: str):
        self.transaction_id = transaction_id
        self.saga: str | None = None
        self.data: dict[str, Any] = {}
        self.steps: list[str] = []
        self.version = 0
        self.state = RUNNING
        self.done: list[str] = []
        self.compensated: list[str] = []
        self.step: str | None = None
        self.kind = ACTION
        self.attempt = 0
        self.command_id: str | None = None
        self.due: int | None = None
        self.failed_step: str | None = None
        self.error: str | None = None
        self.started = 0
        self.updated = 0

    @classmethod
    def from_events(cls, transaction_id: str, events: list[Any]) -> SagaState:
        """Fold recorded events (anything with ``type``, ``data`` and ``occurred_at``)."""
        state = cls(transaction_id)
        for event in events:
            state.apply(event.type, event.data, to_micros(event.occurred_at))
        return state

    @property
    def open(self) -> bool:
        """Whether the saga is not over (a stuck saga is open: it waits for an operator)."""
        return self.state not in ENDED

    def apply(self, event_type: str, data: dict[str, Any], at: int) -> None:
        """Apply one event that happened at ``at`` (epoch µs)."""
        self.version += 1
        if not self.started:
            self.started = at
        self.updated = at
        if event_type == SAGA_STARTED:
            self.saga = data["saga"]
            self.steps = list(data["steps"])
            self.data = dict(data.get("data") or {})
            return
        if event_type in (STEP_REQUESTED, COMPENSATION_REQUESTED):
            self.step = data["step"]
            self.kind = ACTION if event_type == STEP_REQUESTED else COMPENSATION
            self.attempt = data["attempt"]
            self.command_id = data["command_id"]
            self.due = None
            if self.kind == COMPENSATION:
                self.state = COMPENSATING
        elif event_type == STEP_SUCCEEDED:
            self.done.append(data["step"])
            self.command_id = None
        elif event_type == STEP_COMPENSATED:
            self.compensated.append(data["step"])
            self.command_id = None
        elif event_type in (STEP_FAILED, STEP_TIMED_OUT):
            self.command_id = None
            self.failed_step = data["step"]
            self.error = data.get("error")
        elif event_type == STEP_RETRIED:
            self.step = data["step"]
            self.kind = data.get("kind", ACTION)
            self.attempt = data["attempt"]
            self.due = to_micros(data["due"])
            if self.state == STUCK:  # an operator asked for another try
                self.state = COMPENSATING
        elif event_type == SAGA_COMPLETED:
            self.state = COMPLETED
        elif event_type == SAGA_ABORTED:
            self.state = ABORTED
        elif event_type == SAGA_STUCK:
            self.state = STUCK
            self.error = data.get("error", self.error)

    def to_compensate(self, has_compensation: Any) -> list[str]:
        """The finished steps still to undo, in the order to undo them (latest first).

        ``has_compensation(step)`` tells which steps have a compensation at all.
        """
        return [
            step
            for step in reversed(self.done)
            if step not in self.compensated and has_compensation(step)
        ]

    def __repr__(self) -> str:
        return (
            f"SagaState({self.transaction_id!r}, saga={self.saga!r}, state={self.state!r}, "
            f"step={self.step!r}, kind={self.kind!r}, attempt={self.attempt})"
        )

"""A saga's history as a timeline: one row per step attempt, from request to answer."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import SagaError
from ..plots.saga import TIMELINE_COLUMNS
from ..reading import iterate_records
from ..schema import SELECT_RECORD
from .definition import ACTION, COMPENSATION
from .state import (
    COMPENSATION_REQUESTED,
    STEP_COMPENSATED,
    STEP_FAILED,
    STEP_REQUESTED,
    STEP_RETRIED,
    STEP_SUCCEEDED,
    STEP_TIMED_OUT,
    STREAM_PREFIX,
)

if TYPE_CHECKING:
    from ..events import RecordedEvent
    from ..store import EventStore

# Event type -> (its kind unless the data says, what it does to an attempt:
# "start", "retry" or an outcome).
_STEP_EVENTS = {
    STEP_REQUESTED: (ACTION, "start"),
    STEP_RETRIED: (ACTION, "retry"),
    STEP_SUCCEEDED: (ACTION, "succeeded"),
    STEP_FAILED: (ACTION, "failed"),
    STEP_TIMED_OUT: (ACTION, "timed_out"),
    COMPENSATION_REQUESTED: (COMPENSATION, "start"),
    STEP_COMPENSATED: (COMPENSATION, "compensated"),
    "CompensationFailed": (COMPENSATION, "failed"),
}


def timeline_from_events(events: Iterable[RecordedEvent]) -> pd.DataFrame:
    """Saga events as a timeline: one row per step attempt, in order of its start.

    An attempt starts at its ``StepRequested`` (or ``CompensationRequested``);
    a ``StepRetried`` for an attempt that no request starts marks the start
    instead. It ends at ``StepSucceeded``, ``StepFailed``, ``StepTimedOut`` or
    ``StepCompensated`` (outcomes ``"succeeded"``, ``"failed"``,
    ``"timed_out"``, ``"compensated"``); until then ``finished`` is NaT and
    ``outcome`` None. An event's ``kind`` (``"action"`` or ``"compensation"``)
    is read from its data, else from its type. A step event without
    ``attempt`` belongs to the step's latest attempt (a start without one
    opens the next attempt). Times are ``occurred_at``.

    Returns
    -------
    pandas.DataFrame
        Columns ``transaction_id``, ``step``, ``kind``, ``attempt``,
        ``started``, ``finished``, ``outcome``: what ``el.plots.saga_gantt`` draws.
    """
    attempts: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    latest: dict[tuple[str, str, str], int] = {}
    for event in sorted(events, key=lambda e: e.position):
        known = _STEP_EVENTS.get(event.type)
        if known is None:
            continue
        kind, effect = known
        data = event.data
        transaction = _transaction_id(event)
        step = str(data.get("step"))
        kind = data.get("kind") or kind
        lane = (transaction, step, kind)
        attempt = data.get("attempt")
        if attempt is None:
            attempt = max(1, latest.get(lane, 0) + (effect in ("start", "retry")))
            if effect == "start" and _opened_by_retry(attempts.get((*lane, attempt - 1))):
                attempt -= 1
        attempt = int(attempt)
        key = (*lane, attempt)
        latest[lane] = max(latest.get(lane, 0), attempt)
        moment = pd.Timestamp(event.occurred_at)
        row = attempts.get(key)
        if effect in ("start", "retry"):
            if row is None:
                attempts[key] = {
                    "started": moment,
                    "finished": pd.NaT,
                    "outcome": None,
                    "requested": effect == "start",
                }
            elif effect == "start" and not row["requested"] and row["outcome"] is None:
                row.update(started=moment, requested=True)  # the request is the real start
        elif row is None:  # an end without a start: a zero-length attempt
            attempts[key] = {
                "started": moment,
                "finished": moment,
                "outcome": effect,
                "requested": True,
            }
        else:
            row.update(finished=moment, outcome=effect)
    rows = [
        (transaction, step, kind, attempt, row["started"], row["finished"], row["outcome"])
        for (transaction, step, kind, attempt), row in attempts.items()
    ]
    frame = pd.DataFrame(rows, columns=TIMELINE_COLUMNS)
    frame["attempt"] = frame["attempt"].astype("int64")
    for column in ("started", "finished"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    # Built apart: pandas would read the Nones of a text column as NaN.
    frame["outcome"] = pd.Series([row[6] for row in rows], dtype=object)
    return frame.sort_values(["started", "transaction_id"], kind="stable", ignore_index=True)


def _opened_by_retry(row: dict[str, Any] | None) -> bool:
    return row is not None and not row["requested"] and row["outcome"] is None


def _transaction_id(event: RecordedEvent) -> str:
    stream = event.stream_id
    return stream[len(STREAM_PREFIX) :] if stream.startswith(STREAM_PREFIX) else stream


def saga_events(store: EventStore, transaction_id: str) -> list[RecordedEvent]:
    """The events of one saga (stream ``saga-<transaction_id>``), in order."""
    if not isinstance(transaction_id, str) or not transaction_id:
        raise SagaError(f"a transaction id is a non-empty string, got {transaction_id!r}")
    prefixed = transaction_id.startswith(STREAM_PREFIX)
    stream = transaction_id if prefixed else STREAM_PREFIX + transaction_id
    events = store.read_stream(stream)
    if not events and not prefixed:
        events = store.read_stream(transaction_id)  # an id that already is the stream
    if not events:
        raise SagaError(
            f"no saga events for transaction {transaction_id!r} (looked in stream "
            f"{stream!r}); sagas keep their events in streams named saga-<transaction id>, "
            f"and coordinator.status() lists them"
        )
    return events


def saga_timeline(store: EventStore, transaction_id: str | None = None) -> pd.DataFrame:
    """One row per step attempt of one saga, or of every saga in the store.

    Parameters
    ----------
    store : EventStore
        Its streams ``saga-<transaction id>`` are read.
    transaction_id : str, optional
        One saga (its id, or its stream id); by default every saga.

    Returns
    -------
    pandas.DataFrame
        ``transaction_id``, ``step``, ``kind`` (``"action"`` or
        ``"compensation"``), ``attempt``, ``started``, ``finished`` (UTC, NaT
        while running) and ``outcome`` (``"succeeded"``, ``"failed"``,
        ``"timed_out"``, ``"compensated"``, None while running), ordered by
        start: what ``el.plots.saga_gantt`` draws. See
        :func:`timeline_from_events`.

    Examples
    --------
    >>> import eventlab as el
    >>> store = el.EventStore(clock=el.SimulatedClock("2024-05-01"))
    >>> _ = store.append("saga-t1", [
    ...     el.Event("StepRequested", {"step": "pay", "kind": "action", "attempt": 1}),
    ...     el.Event("StepSucceeded", {"step": "pay", "kind": "action", "attempt": 1})])
    >>> el.saga_timeline(store)[["transaction_id", "step", "attempt", "outcome"]]
      transaction_id step  attempt    outcome
    0             t1  pay        1  succeeded
    """
    if transaction_id is not None:
        return timeline_from_events(saga_events(store, transaction_id))
    reader = (
        store._cursor()
        .sql(
            SELECT_RECORD.format(src="events")
            + " WHERE starts_with(stream_id, $1) AND list_contains($2, type) ORDER BY position",
            params=[STREAM_PREFIX, list(_STEP_EVENTS)],
        )
        .to_arrow_reader(65_536)
    )
    return timeline_from_events(iterate_records(reader))

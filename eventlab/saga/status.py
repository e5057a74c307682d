"""Where every saga stands, computed in DuckDB from the saga streams."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pandas as pd

from ..clock import from_micros, peek_micros
from ..errors import SagaError
from .state import (
    ABORTED,
    COMPENSATING,
    COMPLETED,
    RUNNING,
    SAGA_ABORTED,
    SAGA_COMPLETED,
    SAGA_STARTED,
    SAGA_STUCK,
    STATES,
    STREAM_PREFIX,
    STUCK,
)

if TYPE_CHECKING:
    from ..store import EventStore

STATUS_COLUMNS = [
    "transaction_id",
    "saga",
    "state",
    "step",
    "kind",
    "attempt",
    "last_event",
    "error",
    "started",
    "updated",
    "age",
]

_SQL = f"""
WITH saga_events AS (
    SELECT stream_id, position, type, data, occurred_at,
           json_extract_string(data, '$.step') AS step,
           json_extract_string(data, '$.kind') AS kind,
           TRY_CAST(json_extract_string(data, '$.attempt') AS INTEGER) AS attempt,
           json_extract_string(data, '$.error') AS error
    FROM events
    WHERE starts_with(stream_id, '{STREAM_PREFIX}')
)
SELECT substr(stream_id, {len(STREAM_PREFIX) + 1}) AS transaction_id,
       any_value(json_extract_string(data, '$.saga'))
           FILTER (WHERE type = '{SAGA_STARTED}') AS saga,
       arg_max(type, position) AS last_event,
       arg_max(step, position) FILTER (WHERE step IS NOT NULL) AS step,
       arg_max(kind, position) FILTER (WHERE kind IS NOT NULL) AS kind,
       arg_max(attempt, position) FILTER (WHERE attempt IS NOT NULL) AS attempt,
       arg_max(error, position) FILTER (WHERE error IS NOT NULL) AS error,
       bool_or(type = 'CompensationRequested') AS compensating,
       min(occurred_at) AS started,
       max(occurred_at) AS updated,
       min(position) AS first_position
FROM saga_events
GROUP BY stream_id
HAVING count(*) FILTER (WHERE type = '{SAGA_STARTED}') > 0
ORDER BY first_position
"""

_ENDS = {SAGA_COMPLETED: COMPLETED, SAGA_ABORTED: ABORTED, SAGA_STUCK: STUCK}


def saga_status(store: EventStore, *, states: Iterable[str] | str | None = None) -> pd.DataFrame:
    """Every saga in the store: its state, current step and age, oldest first.

    Parameters
    ----------
    store : EventStore
        Read its streams ``saga-<transaction id>``.
    states : str or list of str, optional
        Keep only sagas in these states (``running``, ``compensating``,
        ``completed``, ``aborted``, ``stuck``), e.g. ``states="stuck"`` for an
        operator's worklist.

    Returns
    -------
    pandas.DataFrame
        ``transaction_id``, ``saga`` (its name), ``state``, ``step``, ``kind``
        and ``attempt`` (the latest step attempt), ``last_event``, ``error``
        (the latest failure, if any), ``started`` and ``updated`` (UTC,
        business time), and ``age``: how long an open saga has been open (to
        the store's clock now), or how long a finished one took.
    """
    wanted = _states(states)
    frame = store.sql(_SQL)
    if frame.empty:
        return pd.DataFrame(columns=STATUS_COLUMNS)
    ended = frame["last_event"].map(_ENDS)
    frame["state"] = ended.where(
        ended.notna(), frame["compensating"].map({True: COMPENSATING, False: RUNNING})
    )
    now = pd.Timestamp(from_micros(peek_micros(store.clock)))
    over = frame["state"].isin([COMPLETED, ABORTED])
    frame["age"] = frame["updated"].where(over, now) - frame["started"]
    frame["attempt"] = frame["attempt"].astype("Int64")
    frame = frame[STATUS_COLUMNS]
    if wanted is not None:
        frame = frame[frame["state"].isin(wanted)].reset_index(drop=True)
    return frame


def _states(states: Iterable[str] | str | None) -> list[str] | None:
    if states is None:
        return None
    wanted = [states] if isinstance(states, str) else list(states)
    unknown = [s for s in wanted if s not in STATES]
    if unknown or not wanted:
        raise SagaError(f"states must be some of {list(STATES)}, got {wanted}")
    return wanted

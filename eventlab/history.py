"""Whole-history views: one stream's states event by event, and every stream at once."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd
from tqdm.auto import tqdm

from .events import RecordedEvent
from .reading import decoded_batches, log_filter, prepare_ahead
from .replay import (
    REVERTED,
    _as_of,
    _Fold,
    _is_atom,
    check_category,
    effective_events,
    paused_gc,
    state_at,
)
from .schema import SELECT_RECORD

if TYPE_CHECKING:
    from .store import EventStore


def history(
    store: EventStore, stream_id: str, reducer: Any, *, initial: Any = None
) -> pd.DataFrame:
    """One row per event of a stream, with the state right after it, flattened into columns.

    Columns: ``version``, ``type``, ``recorded_at``, ``occurred_at``, then one
    column per field of the state (nested fields joined with dots, e.g.
    ``customer.city``). A state field named like one of the event's four
    columns is prefixed with ``state.`` (a field ``type`` becomes
    ``state.type``), so the event's columns always hold the event's values.
    Each row holds a deep copy of the state's values as they were after its
    event. ``Reverted`` events appear too, with the state they restore.

    Examples
    --------
    >>> import eventlab as el
    >>> store = el.EventStore(clock=el.SimulatedClock("2024-05-01"))
    >>> _ = store.append("acct-1", [el.Event("Deposited", {"amount": 10}),
    ...                             el.Event("Deposited", {"amount": 5})])
    >>> def balance(state, event):
    ...     return {"balance": state["balance"] + event.data["amount"]}
    >>> el.history(store, "acct-1", balance, initial={"balance": 0})[["version", "balance"]]
       version  balance
    0        1       10
    1        2       15
    """
    events = store.read_stream(stream_id)
    fold = _Fold(reducer, initial)
    state = fold.start(stream_id)
    rows = []
    for index, event in enumerate(events):
        if event.type == REVERTED:
            state = fold.run(effective_events(events[: index + 1]), stream_id)
        else:
            state = fold.apply(state, event)
        row = {
            "version": event.version,
            "type": event.type,
            "recorded_at": event.recorded_at,
            "occurred_at": event.occurred_at,
        }
        row.update(state_columns(state))
        rows.append(row)
    frame = pd.DataFrame(rows, columns=None if rows else list(EVENT_COLUMNS))
    for column in ("recorded_at", "occurred_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


# The event's columns of a history row, ahead of the state's.
EVENT_COLUMNS = ("version", "type", "recorded_at", "occurred_at")


def state_columns(state: Any) -> dict[str, Any]:
    """A state as :func:`history` puts it in a row: flattened, and a field named like an
    event column prefixed with ``state.``."""
    return {
        f"state.{name}" if name in EVENT_COLUMNS else name: value
        for name, value in flatten(state_fields(state)).items()
    }


def state_fields(state: Any) -> dict[str, Any]:
    """A state as a dict of its fields: dicts as they are, dataclasses and aggregates by field."""
    from .aggregate import Aggregate

    if isinstance(state, Mapping):
        return dict(state)
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    if isinstance(state, Aggregate):
        return {k: v for k, v in vars(state).items() if not k.startswith("_") and k != "id"}
    return {"state": state}


def flatten(fields: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts (and dataclasses) as one level of dotted keys; other values deep-copied
    (the state may change in place after this row), sets as lists."""
    flat: dict[str, Any] = {}
    for key, value in fields.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) or (
            dataclasses.is_dataclass(value) and not isinstance(value, type)
        ):
            nested = flatten(state_fields(value), f"{name}.")
            flat.update(nested if nested else {name: {}})
        elif _is_atom(value):
            flat[name] = value
        else:
            flat[name] = _copy(list(value) if isinstance(value, set) else value)
    return flat


def _copy(value: Any) -> Any:
    """A deep copy of ``value``, or ``value`` itself when it cannot be copied (a lock, a
    file): a row then shows such a value as it is now, the rest as it was."""
    try:
        return copy.deepcopy(value)
    except (TypeError, copy.Error):
        return value


def replay_all(
    store: EventStore,
    reducer: Any,
    *,
    initial: Any = None,
    category: str | None = None,
    at: datetime | str | None = None,
    known_at: datetime | str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """The state of every stream, folded in one streamed pass over the log.

    Much faster than loading streams one by one: one query, read in Arrow
    batches. Same time-travel filters as :meth:`EventStore.state_at`.

    Parameters
    ----------
    category : str, optional
        Only streams whose id starts with this prefix, e.g. ``"order-"``.
    progress : bool
        Show a progress bar (tqdm) while folding.

    Returns
    -------
    dict
        Stream id to state, in order of each stream's first event. Aggregates
        folded as of a past time (``at`` or ``known_at``) refuse to save, like
        those :meth:`Aggregate.load` gives for the same times.
    """
    check_category(category)
    where, params = log_filter(category=category, at=at, known_at=known_at)
    cursor = store._cursor()
    total = None
    if progress:
        total = cursor.execute(f"SELECT count(*) FROM events{where}", params).fetchall()[0][0]
    reader = cursor.sql(SELECT_RECORD.format(src="events") + where, params=params)
    # DuckDB reads the next batch on the other core while this one is folded.
    batches = decoded_batches(
        store._read_aheads.batches(reader.to_arrow_reader(65_536), 65_536, prepare_ahead)
    )
    fold = _Fold(reducer, initial)
    if progress:
        batches = _with_bar(batches, total)

    def rebuild(event: RecordedEvent) -> Any:
        # Rare: this stream as of the revert, reverts of reverts included.
        return state_at(
            store,
            event.stream_id,
            reducer,
            version=event.version,
            at=at,
            known_at=known_at,
            initial=initial,
        )

    states: dict[str, Any] = {}
    with paused_gc():
        fold.fold_streams(batches, states, rebuild)
    as_of = _as_of(at, known_at)
    if fold.is_aggregate and as_of is not None:
        for aggregate in states.values():
            aggregate._as_of = as_of
    return states


def _with_bar(batches: Iterator[list[Any]], total: int) -> Iterator[list[Any]]:
    """The batches, advancing a tqdm bar by each one's size."""
    with tqdm(total=total, unit="event") as bar:
        for batch in batches:
            yield batch
            bar.update(len(batch))

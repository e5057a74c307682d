"""How one field of a stream's state evolved, over versions, business time or knowledge time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import PlotError
from ..history import history, state_columns
from ._base import check_choice, date_axis, new_axes, plain_times

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from ..store import EventStore

# The axis name and the history column it reads.
AXES = {"version": "version", "at": "occurred_at", "known_at": "recorded_at"}
_META = ("version", "type", "recorded_at", "occurred_at")


def state_series(
    store: EventStore,
    stream_id: str,
    reducer: Any,
    field: str | Sequence[str],
    *,
    axis: str = "version",
    initial: Any = None,
) -> pd.DataFrame:
    """The values of state fields after each point of a stream's history, on one time axis.

    Parameters
    ----------
    field : str or list of str
        Field paths as :func:`el.history <eventlab.history>` names its columns
        (nested fields joined with dots, e.g. ``"customer.city"``).
    axis : {"version", "at", "known_at"}
        ``"version"``: a row per event. ``"at"`` (business time): a row per
        distinct ``occurred_at``, holding the state as of that time as the store
        knows it now, i.e. ``store.state_at(..., at=t)``, so a late event that
        happened earlier changes the past. ``"known_at"`` (knowledge time): a
        row per distinct ``recorded_at``, the state the system believed then.

    Returns
    -------
    pandas.DataFrame
        A column named after the axis' clock (``version``, ``occurred_at`` or
        ``recorded_at``), then one column per field.

    Examples
    --------
    >>> import eventlab as el
    >>> store = el.EventStore(clock=el.SimulatedClock("2024-05-01"))
    >>> _ = store.append("acct-1", [el.Event("Deposited", {"amount": 10}),
    ...                             el.Event("Deposited", {"amount": 5})])
    >>> def balance(state, event):
    ...     return {"balance": state["balance"] + event.data["amount"]}
    >>> el.plots.state_series(store, "acct-1", balance, "balance", initial={"balance": 0})
       version  balance
    0        1       10
    1        2       15
    """
    check_choice("axis", axis, list(AXES))
    fields = [field] if isinstance(field, str) else list(field)
    if not fields:
        raise PlotError("give at least one field to plot, e.g. field='balance'")
    frame = history(store, stream_id, reducer, initial=initial)
    if frame.empty:
        raise PlotError(
            f"stream {stream_id!r} has no events; check the id (store.streams() lists them)"
        )
    known = [c for c in frame.columns if c not in _META]
    missing = [f for f in fields if f not in known]
    if missing:
        raise PlotError(
            f"the state of {stream_id!r} has no field {missing[0]!r}; it has {known}. "
            f"Nested fields are joined with dots, e.g. 'customer.city'"
        )
    clock = AXES[axis]
    if axis == "version":
        return frame[["version", *fields]].reset_index(drop=True)
    times = frame[clock]
    if axis == "known_at" or times.is_monotonic_increasing:
        # Events in version order are also in time order: the state after the last
        # event of each instant is the state as of that instant.
        last = frame.drop_duplicates(clock, keep="last")
        return last[[clock, *fields]].reset_index(drop=True)
    # Business time out of version order (late or backdated events): replay as of each time.
    rows = []
    for moment in sorted(times.unique()):
        state = store.state_at(stream_id, reducer, at=moment.to_pydatetime(), initial=initial)
        flat = state_columns(state)  # the columns history() gives the same state
        rows.append([moment, *(flat.get(f) for f in fields)])
    result = pd.DataFrame(rows, columns=[clock, *fields])
    result[clock] = pd.to_datetime(result[clock], utc=True)
    return result


def state_evolution(
    store: EventStore,
    stream_id: str,
    reducer: Any,
    field: str | Sequence[str],
    *,
    axis: str = "version",
    initial: Any = None,
    ax: Axes | None = None,
) -> Axes:
    """Plot fields of a stream's state over versions, business time or knowledge time.

    Numbers are drawn as steps (a value holds until the next event changes it);
    a text or boolean field (a status, say) as steps between its values, listed
    on the y axis in order of first appearance. Several fields must all be
    numeric. See :func:`state_series` for ``axis`` and the values plotted.

    Returns
    -------
    matplotlib.axes.Axes
    """
    series = state_series(store, stream_id, reducer, field, axis=axis, initial=initial)
    clock, fields = series.columns[0], list(series.columns[1:])
    x = series[clock].to_numpy() if axis == "version" else plain_times(series[clock])
    ax = new_axes(ax, (8, 3))
    categorical = [f for f in fields if not _numeric(series[f])]
    if categorical and len(fields) > 1:
        raise PlotError(
            f"field(s) {categorical} are not numbers; plot a text field on its own, or "
            f"several numeric fields together"
        )
    if categorical:
        values = series[fields[0]]
        _check_scalars(values, fields[0])
        labels = list(dict.fromkeys(_label(v) for v in values))
        codes = np.array([labels.index(_label(v)) for v in values], dtype=float)
        ax.step(x, codes, where="post", marker="o", label=fields[0])
        ax.set_yticks(range(len(labels)), labels)
        ax.set_ylim(-0.5, len(labels) - 0.5)
    else:
        for name in fields:
            values = pd.to_numeric(series[name], errors="coerce").astype(float)
            ax.step(x, values.to_numpy(), where="post", marker="o", label=name)
    ax.set_xlabel(
        {
            "version": "version",
            "at": "business time (occurred_at, UTC)",
            "known_at": "knowledge time (recorded_at, UTC)",
        }[axis]
    )
    if axis == "version":
        ax.xaxis.get_major_locator().set_params(integer=True)
    else:
        date_axis(ax)
    ax.set_ylabel(fields[0] if len(fields) == 1 else "value")
    ax.set_title(f"{stream_id}: {', '.join(fields)} by {axis}")
    ax.grid(alpha=0.3)
    if len(fields) > 1:
        ax.legend(fontsize="small")
    return ax


def _numeric(values: pd.Series) -> bool:
    present = values.dropna()
    return all(
        isinstance(v, int | float | np.number) and not isinstance(v, bool | np.bool_)
        for v in present
    )


def _check_scalars(values: pd.Series, name: str) -> None:
    for value in values:
        if isinstance(value, list | dict | set | tuple):
            raise PlotError(
                f"field {name!r} holds {type(value).__name__}s such as {value!r:.60}; plot a "
                f"number or a text field (a count of items can be a field of the state)"
            )


def _label(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "(none)"
    return str(value)

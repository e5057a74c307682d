"""Swimlanes: every event as a tick on its stream's (or its service's) lane over time."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import PlotError
from ._base import (
    OTHER_COLOUR,
    check_choice,
    date_axis,
    event_filter,
    new_axes,
    nice_width,
    open_events,
    plain_times,
    short_duration,
    type_colours,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# How a lane name is computed from an events row, in DuckDB SQL.
LANES = {
    "service": "split_part(stream_id, '-', 1)",  # order-17 -> order
    "stream": "stream_id",
    "stream_id": "stream_id",
}
SAMPLES = ("busiest", "first", "random")
MAX_TYPES = 20  # colours in the legend; more types share a grey "other types"


def event_timeline(
    source: Any,
    *,
    lanes: str = "service",
    time: str = "occurred_at",
    types: Iterable[str] | str | None = None,
    streams: Iterable[str] | str | None = None,
    start: Any = None,
    end: Any = None,
    max_lanes: int = 40,
    sample: str = "busiest",
    seed: int = 0,
    max_events: int = 20_000,
    bins: int = 200,
    ax: Axes | None = None,
    legend: bool = True,
) -> Axes:
    """Swimlanes of events over time: one lane per service or stream, coloured by type.

    Parameters
    ----------
    source : EventStore, DataFrame or str
        A store, a frame shaped like ``store.events()`` (it needs ``stream_id``,
        ``type`` and the ``time`` column), or a Parquet path written by
        ``store.export_parquet``. The selection runs in DuckDB, so a history of
        millions of events is fine.
    lanes : str
        ``"service"`` (the stream id up to its first ``-``: ``order-17`` is in
        lane ``order``), ``"stream"``, or the name of another column (e.g.
        ``"correlation_id"`` or ``"type"``).
    time : {"occurred_at", "recorded_at"}
        The clock along the x axis: business time or knowledge time.
    types, streams, start, end
        Filters, as in :mod:`el.analytics <eventlab.analytics>`: event types, a
        stream id, a ``"prefix*"`` or several ids, and a time range (start
        inclusive, end exclusive).
    max_lanes : int
        At most this many lanes are drawn, chosen by ``sample``; the title says
        how many there were.
    sample : {"busiest", "first", "random"}
        Which lanes to keep when there are too many: those with most events,
        those whose first event came first, or a random choice (``seed``).
    max_events : int
        Up to this many events are drawn one tick each; beyond it each lane is
        cut into ``bins`` time buckets and each type's count in a bucket is one
        square, its area growing with the count.
    ax : matplotlib Axes, optional
        Draw into this Axes; by default a new figure.
    legend : bool
        Show the colour of each type.

    Returns
    -------
    matplotlib.axes.Axes
        Lanes top to bottom in order of their first event.

    Examples
    --------
    >>> import eventlab as el
    >>> store = el.EventStore(clock=el.SimulatedClock("2024-05-01"))
    >>> _ = store.append("order-1", [el.Event("OrderPlaced", {}), el.Event("OrderPaid", {})])
    >>> _ = store.append("payment-1", [el.Event("PaymentTaken", {})])
    >>> ax = el.plots.event_timeline(store)
    >>> [label.get_text() for label in ax.get_yticklabels()]
    ['order', 'payment']
    """
    check_choice("sample", sample, SAMPLES)
    for name, value in (("max_lanes", max_lanes), ("max_events", max_events), ("bins", bins)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PlotError(f"{name} must be a positive int, got {value!r}")
    needed = ["stream_id", "type", time]
    if lanes in LANES:
        lane_sql = LANES[lanes]
    elif isinstance(lanes, str) and lanes.isidentifier():
        needed.append(lanes)
        lane_sql = f"coalesce(CAST(\"{lanes}\" AS VARCHAR), '(none)')"
    else:
        raise PlotError(
            f"lanes must be 'service', 'stream' or a column name such as 'correlation_id', "
            f"got {lanes!r}"
        )
    cursor, relation = open_events(source, needed)
    params: list[Any] = []
    where = event_filter(params, types=types, streams=streams, start=start, end=end, time=time)
    try:
        stats = cursor.execute(
            f"SELECT {lane_sql} AS lane, count(*) AS n, min(epoch_us({time})) AS first, "
            f"max(epoch_us({time})) AS last FROM {relation} WHERE {where} GROUP BY lane",
            params,
        ).df()
    except Exception as exc:  # a column the Parquet files or the frame do not have
        raise PlotError(f"cannot select lanes {lanes!r} from the events: {exc}") from None
    ax = new_axes(ax, (10, min(16.0, max(2.5, 0.3 * min(len(stats), max_lanes) + 1.2))))
    if stats.empty:
        ax.set_title("no events match")
        return ax
    chosen = _choose_lanes(stats, max_lanes, sample, seed)
    chosen = chosen.sort_values(["first", "lane"], kind="stable")
    lane_names = chosen["lane"].tolist()
    row_of = {lane: row for row, lane in enumerate(lane_names)}
    if len(chosen) < len(stats):
        params.append(lane_names)
        where += f" AND list_contains(${len(params)}, {lane_sql})"
    total = int(chosen["n"].sum())
    lo, hi = int(chosen["first"].min()), int(chosen["last"].max())
    if total <= max_events:
        rows = cursor.execute(
            f"SELECT {lane_sql} AS lane, type, epoch_us({time}) AS t FROM {relation} WHERE {where}",
            params,
        ).df()
        width = None
    else:
        width = nice_width(max(1, hi - lo) / bins)  # microseconds per bucket
        rows = cursor.execute(
            f"SELECT {lane_sql} AS lane, type, "
            f"(epoch_us({time}) // {width}) * {width} + {width // 2} AS t, "
            f"count(*) AS n FROM {relation} WHERE {where} GROUP BY ALL",
            params,
        ).df()
    _draw_lanes(ax, rows, row_of, width, legend)
    ax.set_yticks(
        range(len(lane_names)), lane_names, fontsize="small" if len(lane_names) > 40 else None
    )
    ax.set_ylim(len(lane_names) - 0.5, -0.5)  # first lane on top
    ax.set_xlabel(f"{time} (UTC)")
    date_axis(ax)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(_title(total, len(chosen), len(stats), lanes, sample, width))
    return ax


def _choose_lanes(stats: pd.DataFrame, max_lanes: int, sample: str, seed: int) -> pd.DataFrame:
    if len(stats) <= max_lanes:
        return stats
    if sample == "random":
        return stats.sort_values("lane").sample(n=max_lanes, random_state=seed)
    if sample == "busiest":
        ordered = stats.sort_values(["n", "lane"], ascending=[False, True], kind="stable")
    else:
        ordered = stats.sort_values(["first", "lane"], kind="stable")
    return ordered.head(max_lanes)


def _draw_lanes(
    ax: Axes, rows: pd.DataFrame, row_of: dict[str, int], width: int | None, legend: bool
) -> None:
    counts = rows.groupby("type")["n"].sum() if width else rows["type"].value_counts()
    types = counts.sort_index().sort_values(ascending=False, kind="stable").index.tolist()
    colours = type_colours(types, MAX_TYPES)
    y = rows["lane"].map(row_of).to_numpy(dtype=float)
    x = plain_times(pd.to_datetime(rows["t"], unit="us", utc=True))
    if width:
        # One row of squares per type inside the lane, so no type hides another.
        shown = types[:MAX_TYPES]
        offset = {name: 0.0 for name in types}
        if len(shown) > 1:
            offset.update(zip(shown, np.linspace(-0.3, 0.3, len(shown)), strict=True))
        y = y + rows["type"].map(offset).to_numpy(dtype=float)
        sizes = 6 + 60 * rows["n"].to_numpy() / rows["n"].max()
    for index, name in enumerate(types[:MAX_TYPES]):
        mask = (rows["type"] == name).to_numpy()
        _scatter(ax, x[mask], y[mask], sizes[mask] if width else None, colours[name], name)
        if index == MAX_TYPES - 1 and len(types) > MAX_TYPES:
            rest = ~rows["type"].isin(types[:MAX_TYPES]).to_numpy()
            label = f"{len(types) - MAX_TYPES} other types"
            _scatter(ax, x[rest], y[rest], sizes[rest] if width else None, OTHER_COLOUR, label)
    if legend:
        ax.legend(title="type", loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")


def _scatter(ax: Axes, x: Any, y: Any, sizes: Any, colour: Any, label: str) -> None:
    if sizes is None:
        ax.scatter(x, y, marker="|", s=120, linewidths=1.5, color=colour, label=label)
    else:
        ax.scatter(x, y, marker="s", s=sizes, color=colour, label=label, alpha=0.85)


def _title(
    events: int, shown: int, lanes_total: int, lanes: str, sample: str, width: int | None
) -> str:
    word = {"service": "services", "stream": "streams", "stream_id": "streams"}.get(
        lanes, f"{lanes} values"
    )
    title = f"{events:,} events"
    if shown < lanes_total:
        title += f" in {shown:,} of {lanes_total:,} {word} ({sample})"
    else:
        title += f" in {shown:,} {word}"
    if width:
        title += f", counted per {short_duration(pd.Timedelta(microseconds=width))}"
    return title

"""How often and how long: events per time bucket, and the distribution of durations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import PlotError
from ._base import (
    OTHER_COLOUR,
    analytics,
    check_choice,
    check_frame,
    date_axis,
    new_axes,
    plain_times,
    short_duration,
    type_colours,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

UNITS = {"ms": 0.001, "s": 1, "min": 60, "h": 3_600, "d": 86_400}


def event_rate(
    source: Any,
    freq: str | None = None,
    by: str | None = None,
    *,
    top: int = 8,
    kind: str = "line",
    ax: Axes | None = None,
    **filters: Any,
) -> Axes:
    """Events per time bucket, one line (or stacked band) per group.

    Parameters
    ----------
    source : DataFrame, EventStore or str
        The frame ``el.analytics.event_rate`` returns (columns ``time``,
        ``events`` and optionally one group column), or a store or Parquet path,
        which is handed to ``el.analytics.event_rate(source, freq, by, **filters)``.
    freq : str, optional
        The bucket width, e.g. ``"15min"`` or ``"1d"``. For a store it defaults
        to ``"1h"``; for a frame it is inferred from the spacing of the buckets.
        Buckets missing between the first and the last count as zero.
    by : str, optional
        The group column (``"type"``, ``"stream_id"``, ...). For a frame, its one
        column besides ``time`` and ``events`` is used when ``by`` is not given.
    top : int
        Groups beyond the ``top`` largest are summed into ``"other"``.
    kind : {"line", "area"}
        Steps per group, or stacked bands that add up to the total rate.
    **filters
        ``types``, ``streams``, ``start``, ``end``, ``time``: passed to the
        analysis when ``source`` is a store or a path.

    Returns
    -------
    matplotlib.axes.Axes
    """
    check_choice("kind", kind, ("line", "area"))
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise PlotError(f"top must be a positive int, got {top!r}")
    if isinstance(source, pd.DataFrame):
        if filters:
            raise PlotError(
                f"filters {sorted(filters)} apply when the rate is computed; pass them to "
                f"el.analytics.event_rate, or filter the frame before plotting"
            )
        frame = source
    else:
        # The width the analysis counts by is the plot's too: guessing it from the gaps
        # between buckets would miss empty buckets and mislabel the axis.
        freq = freq or "1h"
        frame = analytics().event_rate(source, freq=freq, by=by, **filters)
    table, group, step = rate_table(frame, freq, by, top)
    ax = new_axes(ax, (9, 3.5))
    x = plain_times(table.index)
    if kind == "line":
        for name in table.columns:
            # One more point so the last bucket's level is drawn across its width.
            ax.step(
                np.append(x, x[-1] + step.to_timedelta64()) if len(x) else x,
                np.append(table[name].to_numpy(), table[name].to_numpy()[-1:]),
                where="post",
                label=str(name),
                color=_colour(table.columns, name),
            )
    else:
        bottom = np.zeros(len(table))
        edges = np.append(x, x[-1] + step.to_timedelta64()) if len(x) else x
        for name in table.columns:
            top_values = bottom + table[name].to_numpy()
            ax.fill_between(
                edges,
                np.append(bottom, bottom[-1:]),
                np.append(top_values, top_values[-1:]),
                step="post",
                label=str(name),
                color=_colour(table.columns, name),
                alpha=0.8,
            )
            bottom = top_values
    ax.set_ylabel(f"events per {short_duration(step)}")
    ax.set_xlabel("time (UTC)")
    date_axis(ax)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if group is not None:
        ax.legend(title=group, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    return ax


def rate_table(
    frame: pd.DataFrame, freq: str | None, by: str | None, top: int
) -> tuple[pd.DataFrame, str | None, pd.Timedelta]:
    """An event-rate frame as a table: a row per bucket (gaps filled with 0), a column per group.

    Returns the table, the group column's name (None for one ``"events"``
    column) and the bucket width.
    """
    check_frame(frame, ["time", "events"], "event_rate")
    extra = [c for c in frame.columns if c not in ("time", "events")]
    if by is None and len(extra) > 1:
        raise PlotError(f"the frame has several group columns {extra}; say which one with by=...")
    group = by if by is not None else (extra[0] if extra else None)
    if group is not None:
        check_frame(frame, [group], f"event_rate(by={group!r})")
    times = pd.to_datetime(frame["time"], utc=True)
    if group is None:
        table = frame["events"].groupby(times).sum().to_frame("events")
    else:
        table = frame.assign(time=times).pivot_table(
            index="time", columns=group, values="events", aggfunc="sum", fill_value=0
        )
        table.columns = [str(c) for c in table.columns]
    table = table.sort_index()
    step = _bucket_width(table.index, freq)
    if len(table) > 1 and _aligned(table.index, step):
        full = pd.date_range(table.index[0], table.index[-1], freq=step)
        table = table.reindex(full, fill_value=0)
    if group is not None and len(table.columns) > top:
        order = table.sum().sort_index().sort_values(ascending=False, kind="stable").index
        kept, rest = list(order[: top - 1]), list(order[top - 1 :])
        table = table[kept].assign(other=table[rest].sum(axis=1))
    return table.astype("int64"), group, step


def _bucket_width(index: pd.DatetimeIndex, freq: str | None) -> pd.Timedelta:
    if freq is not None:
        try:
            return pd.Timedelta(pd.tseries.frequencies.to_offset(freq))
        except ValueError:
            raise PlotError(
                f"freq {freq!r} is not a fixed bucket width; use e.g. '30s', '15min', '1h' or '1d'"
            ) from None
    gaps = np.diff(index.asi8)
    gaps = gaps[gaps > 0]
    if len(gaps) == 0:
        return pd.Timedelta(hours=1)
    return pd.Timedelta(int(gaps.min()), unit=index.unit)


def _aligned(index: pd.DatetimeIndex, step: pd.Timedelta) -> bool:
    """Whether every bucket lies a whole number of steps after the first."""
    offsets = (index - index[0]) / step
    return bool(np.all(offsets == np.round(offsets)))


def _colour(columns: Sequence[str], name: str) -> Any:
    if name == "other" and "other" == columns[-1] and len(columns) > 1:
        return OTHER_COLOUR
    return type_colours(list(columns))[name]


def durations(
    source: Any,
    *,
    bins: int = 30,
    percentiles: Sequence[float] = (50, 90, 99),
    unit: str | None = None,
    log: bool = False,
    ax: Axes | None = None,
    **options: Any,
) -> Axes:
    """A histogram of durations with percentile lines (p50, p90, p99 by default).

    Parameters
    ----------
    source : DataFrame, Series, EventStore or str
        The frame ``el.analytics.stream_durations`` returns (its ``duration``
        column is used), any Series of Timedeltas or of seconds, or a store or
        Parquet path, handed to ``el.analytics.stream_durations(source, **options)``
        (``start_type``, ``end_type`` and the usual filters).
    bins : int
        Histogram bins.
    percentiles : sequence of float
        Percentiles (0-100) to mark with a vertical line and its value.
    unit : {"ms", "s", "min", "h", "d"}, optional
        The x axis unit; by default the one that suits the median.
    log : bool
        Log-spaced bins on a log x axis, for long-tailed durations (positive
        durations only; zeros are left out and counted in the title).

    Returns
    -------
    matplotlib.axes.Axes
    """
    if unit is not None:
        check_choice("unit", unit, list(UNITS))
    if options and isinstance(source, pd.DataFrame | pd.Series):
        raise PlotError(
            f"options {sorted(options)} apply when durations are computed; pass them to "
            f"el.analytics.stream_durations, or filter the frame before plotting"
        )
    if isinstance(source, pd.DataFrame):
        check_frame(source, ["duration"], "durations")
        series = source["duration"]
    elif isinstance(source, pd.Series):
        series = source
    else:
        series = analytics().stream_durations(source, **options)["duration"]
    seconds = duration_seconds(series)
    missing = int(seconds.isna().sum())
    seconds = seconds.dropna().to_numpy(dtype=float)
    left_out = missing
    if log:
        left_out += int((seconds <= 0).sum())
        seconds = seconds[seconds > 0]
    ax = new_axes(ax, (8, 3.5))
    if len(seconds) == 0:
        ax.set_title("no durations to show")
        return ax
    unit = unit or _unit_for(float(np.median(seconds)))
    values = seconds / UNITS[unit]
    if log:
        low, high = values.min(), values.max()
        edges = np.geomspace(low, high if high > low else low * 10, bins + 1)
        ax.set_xscale("log")
    else:
        edges = bins
    ax.hist(values, bins=edges, color="#9ecae1", edgecolor="#3182bd", label="count")
    marks = np.percentile(values, list(percentiles)) if len(percentiles) else []
    for p, value, style in zip(percentiles, marks, _styles(len(marks)), strict=True):
        ax.axvline(value, color="#d62728", linestyle=style, label=f"p{p:g} = {value:.3g} {unit}")
    ax.set_xlabel(f"duration ({unit})")
    ax.set_ylabel("count")
    title = f"{len(values):,} durations"
    if left_out:
        title += f" ({left_out:,} left out: unfinished" + (" or zero)" if log else ")")
    ax.set_title(title)
    ax.legend(fontsize="small")
    return ax


def duration_seconds(series: pd.Series) -> pd.Series:
    """Timedeltas (or numbers, taken as seconds) as float seconds; missing ones stay NaN."""
    if pd.api.types.is_timedelta64_dtype(series):
        return series.dt.total_seconds()
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.astype(float)
    try:
        return pd.to_timedelta(series).dt.total_seconds()
    except (ValueError, TypeError):
        raise PlotError(
            f"durations must be Timedeltas or numbers of seconds, got a {series.dtype} "
            f"column such as {series.dropna().iloc[0]!r}"
            if series.notna().any()
            else "durations must be Timedeltas or numbers of seconds"
        ) from None


def _unit_for(median_seconds: float) -> str:
    for unit, limit in (("ms", 1), ("s", 120), ("min", 7_200), ("h", 172_800)):
        if median_seconds < limit:
            return unit
    return "d"


def _styles(count: int) -> list[str]:
    return [("--", ":", "-.", "-")[i % 4] for i in range(count)]

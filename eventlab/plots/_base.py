"""What the plots share: where events come from, the common filters, axes and colours.

matplotlib is imported inside the functions that draw, so ``import eventlab``
(and the command line) does not pay for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pandas as pd

from ..clock import to_micros
from ..errors import MissingColumnsError, PlotError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

TIME_COLUMNS = ("occurred_at", "recorded_at")
OTHER_COLOUR = "#9e9e9e"


def new_axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    """``ax`` itself, or the Axes of a new pyplot figure (so notebooks show it inline)."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, created = plt.subplots(figsize=figsize, layout="constrained")
    return created


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise PlotError(f"{name} must be one of {list(choices)}, got {value!r}")


def check_frame(frame: pd.DataFrame, required: Iterable[str], what: str) -> None:
    """Raise :class:`MissingColumnsError` naming what ``frame`` lacks and where it comes from."""
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise MissingColumnsError(
            f"{what} needs the column(s) {missing}; the frame has {list(frame.columns)}. "
            f"Pass the DataFrame that the matching el.analytics function returns."
        )


def plain_times(values: Any) -> np.ndarray:
    """UTC timestamps as naive ``datetime64`` values, which every matplotlib date axis takes."""
    return pd.to_datetime(pd.Series(values), utc=True).dt.tz_localize(None).to_numpy()


def analytics() -> Any:
    """The analytics module, imported on first use (plots of a store compute through it)."""
    from .. import analytics as module

    return module


def open_events(source: Any, columns: Sequence[str]) -> tuple[duckdb.DuckDBPyConnection, str]:
    """A DuckDB cursor and a FROM clause over the events of a store, a DataFrame or Parquet.

    A DataFrame (shaped like ``store.events()``) must have ``columns``; only those
    are handed to DuckDB, so payload dicts never need converting. Naive
    timestamps in it are read as UTC.
    """
    from ..store import EventStore

    if isinstance(source, EventStore):
        return source._cursor(), "events"
    if isinstance(source, pd.DataFrame):
        check_frame(source, columns, "an events DataFrame for this plot")
        frame = source[list(dict.fromkeys(columns))].copy()
        for column in frame.columns:
            if column in TIME_COLUMNS or pd.api.types.is_datetime64_any_dtype(frame[column]):
                frame[column] = pd.to_datetime(frame[column], utc=True)
        cursor = _scratch_connection()
        cursor.register("frame_events", frame)
        return cursor, "frame_events"
    if isinstance(source, (str, Path)):
        from ..parquet import _parquet_files, _sql_string

        listing = ", ".join(_sql_string(name) for name in _parquet_files(source))
        return _scratch_connection(), f"read_parquet([{listing}], union_by_name = true)"
    raise PlotError(
        f"expected an el.EventStore, an events DataFrame or a Parquet path, got "
        f"{type(source).__name__}"
    )


def _scratch_connection() -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    return connection


def event_filter(
    params: list[Any],
    *,
    types: Iterable[str] | str | None = None,
    streams: Iterable[str] | str | None = None,
    start: Any = None,
    end: Any = None,
    time: str = "occurred_at",
) -> str:
    """SQL conditions (joined with AND, or ``"TRUE"``) for the filters every analysis takes.

    ``streams`` is a stream id, a prefix ending in ``*``, or several ids;
    ``start`` is inclusive and ``end`` exclusive, on the ``time`` clock.
    """
    check_choice("time", time, TIME_COLUMNS)
    clauses = []
    if types is not None:
        params.append([types] if isinstance(types, str) else list(types))
        clauses.append(f"list_contains(${len(params)}, type)")
    if isinstance(streams, str) and streams.endswith("*"):
        params.append(streams[:-1])
        clauses.append(f"starts_with(stream_id, ${len(params)})")
    elif streams is not None:
        params.append([streams] if isinstance(streams, str) else list(streams))
        clauses.append(f"list_contains(${len(params)}, stream_id)")
    for bound, operator in ((start, ">="), (end, "<")):
        if bound is not None:
            params.append(to_micros(bound))
            clauses.append(f"{time} {operator} make_timestamptz(${len(params)}::BIGINT)")
    return " AND ".join(clauses) or "TRUE"


def type_colours(types: Sequence[str], limit: int = 20) -> dict[str, Any]:
    """A colour for each of the first ``limit`` types (in the order given); the rest grey.

    The same type gets the same colour wherever it is in the first ten (tab10),
    and a plot with more types switches to tab20.
    """
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(types) <= 10 else "tab20"].colors
    return {
        name: (palette[index] if index < limit else OTHER_COLOUR)
        for index, name in enumerate(types)
    }


# Bucket widths a reader can take in at a glance, in microseconds.
_NICE_WIDTHS = [
    m * unit
    for unit, multiples in (
        (1_000, (1, 2, 5, 10, 20, 50, 100, 200, 500)),  # milliseconds
        (1_000_000, (1, 2, 5, 10, 15, 30)),  # seconds
        (60_000_000, (1, 2, 5, 10, 15, 30)),  # minutes
        (3_600_000_000, (1, 2, 3, 6, 12)),  # hours
        (86_400_000_000, (1, 2, 7, 14, 30, 91, 365)),  # days
    )
    for m in multiples
]


def nice_width(micros: float) -> int:
    """The smallest round bucket width (1 ms, 2 ms, ..., 15 min, 1 h, 1 d, ...) >= ``micros``."""
    for width in _NICE_WIDTHS:
        if width >= micros:
            return width
    return int(-(-micros // _NICE_WIDTHS[-1]) * _NICE_WIDTHS[-1])


def date_axis(ax: Axes) -> None:
    """Short date labels on the x axis: the day once, then hours and minutes."""
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def short_duration(delta: pd.Timedelta) -> str:
    """``'15 min'``, ``'1 h'``, ``'2 d'``, ``'30 s'``: a bucket width for a label."""
    seconds = delta.total_seconds()
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60), ("s", 1)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds * 1000:g} ms"

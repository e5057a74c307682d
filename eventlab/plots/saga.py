"""A saga's steps as a Gantt chart: one bar segment per attempt, coloured by how it ended."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import PlotError
from ._base import check_frame, date_axis, new_axes, plain_times

if TYPE_CHECKING:
    from matplotlib.axes import Axes

TIMELINE_COLUMNS = ["transaction_id", "step", "kind", "attempt", "started", "finished", "outcome"]

# Legend order and colours; each segment falls in exactly one category.
CATEGORIES = {
    "succeeded": "#2ca02c",
    "retried": "#ff7f0e",  # failed or timed out, and tried again
    "failed": "#d62728",
    "timed out": "#9467bd",
    "compensation": "#1f77b4",
    "compensation failed": "#8c564b",
    "running": "#c7c7c7",  # started, no outcome yet
}
_OUTCOMES = {
    "succeeded": "succeeded",
    "success": "succeeded",
    "ok": "succeeded",
    "completed": "succeeded",
    "compensated": "succeeded",
    "failed": "failed",
    "failure": "failed",
    "error": "failed",
    "timed_out": "timed_out",
    "timedout": "timed_out",
    "timeout": "timed_out",
    "timed out": "timed_out",
}
MAX_LABELS = 60  # write step names on the bars up to this many segments


def gantt_categories(timeline: pd.DataFrame) -> pd.Series:
    """The category (a key of ``CATEGORIES``) of each attempt in a saga timeline.

    An action attempt that failed or timed out is ``"retried"`` when a later
    attempt of the same step in the same transaction exists. Outcomes are read
    loosely (``"timeout"``, ``"TimedOut"``, ``"compensated"`` ...); no outcome
    means the attempt is still ``"running"``.
    """
    check_frame(timeline, TIMELINE_COLUMNS, "saga_gantt (a saga timeline)")
    kinds = timeline["kind"].astype(str).str.lower()
    unknown = sorted(set(kinds) - {"action", "compensation"})
    if unknown:
        raise PlotError(f"kind must be 'action' or 'compensation', got {unknown}")
    outcomes = [_outcome(value) for value in timeline["outcome"]]
    last_attempt = (
        timeline[kinds == "action"].groupby(["transaction_id", "step"])["attempt"].max().to_dict()
    )
    categories = []
    for (_, row), kind, outcome in zip(timeline.iterrows(), kinds, outcomes, strict=True):
        if outcome is None:
            categories.append("running")
        elif kind == "compensation":
            categories.append("compensation" if outcome == "succeeded" else "compensation failed")
        elif outcome == "succeeded":
            categories.append("succeeded")
        elif row["attempt"] < last_attempt[(row["transaction_id"], row["step"])]:
            categories.append("retried")
        else:
            categories.append("failed" if outcome == "failed" else "timed out")
    return pd.Series(categories, index=timeline.index, dtype=object, name="category")


def _outcome(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    text = str(value).strip().lower()
    if text in ("", "running", "pending", "started"):
        return None
    # Anything unrecognised counts as a failure: it did not succeed.
    return _OUTCOMES.get(text.replace("-", "_"), "failed")


def saga_gantt(
    timeline: pd.DataFrame,
    ax: Axes | None = None,
    *,
    lanes: str | None = None,
    now: Any = None,
) -> Axes:
    """Draw saga timelines as a Gantt chart: attempts as bar segments, retries and
    compensations in their own colours.

    Parameters
    ----------
    timeline : DataFrame
        One row per step attempt: ``transaction_id``, ``step``, ``kind``
        (``"action"`` or ``"compensation"``), ``attempt``, ``started``,
        ``finished`` and ``outcome`` (``"succeeded"``, ``"failed"``,
        ``"timed_out"``, ``"compensated"``; empty while running), as
        ``el.saga_timeline`` returns.
    ax : matplotlib Axes, optional
        Draw into this Axes; by default a new figure.
    lanes : {"transaction", "step"}, optional
        A row per transaction (its steps side by side), or a row per step of
        each transaction. By default rows per step for one transaction, per
        transaction for several.
    now : datetime, optional
        Where running attempts end; by default the latest time in the timeline.

    Returns
    -------
    matplotlib.axes.Axes
        Each segment is a Rectangle whose ``gid`` is
        ``"<transaction_id>/<step>/<kind>/<attempt>"``; colours are in
        :data:`CATEGORIES`.
    """
    categories = gantt_categories(timeline)
    transactions = list(dict.fromkeys(timeline.sort_values("started")["transaction_id"]))
    if lanes is None:
        lanes = "step" if len(transactions) == 1 else "transaction"
    if lanes not in ("transaction", "step"):
        raise PlotError(f"lanes must be 'transaction', 'step' or None, got {lanes!r}")
    ax = new_axes(ax, (10, max(2.0, 0.45 * _lane_count(timeline, lanes) + 1.2)))
    if timeline.empty:
        ax.set_title("no steps yet")
        ax.set_yticks([])
        return ax
    frame = timeline.assign(category=categories).copy()
    frame["started"] = pd.to_datetime(frame["started"], utc=True)
    frame["finished"] = pd.to_datetime(frame["finished"], utc=True)
    end_of_running = pd.Timestamp(now).tz_convert("UTC") if now is not None else None
    if end_of_running is None:
        end_of_running = max(frame["started"].max(), frame["finished"].max(skipna=True))
        if pd.isna(end_of_running):
            end_of_running = frame["started"].max()
    frame["finished"] = frame["finished"].fillna(end_of_running)
    frame = frame.sort_values(["started", "transaction_id", "attempt"], kind="stable")
    frame["lane"] = _lane_names(frame, lanes, len(transactions))
    lane_names = list(dict.fromkeys(frame["lane"]))
    row_of = {name: row for row, name in enumerate(lane_names)}
    left = plain_times(frame["started"])
    span = (frame["finished"].max() - frame["started"].min()) or pd.Timedelta(seconds=1)
    widths = (frame["finished"] - frame["started"]).clip(lower=span * 0.004).to_numpy()
    rows = frame["lane"].map(row_of).to_numpy()
    label_bars = len(frame) <= MAX_LABELS
    for x, width, y, (_, seg) in zip(left, widths, rows, frame.iterrows(), strict=True):
        [bar] = ax.barh(
            y,
            width,
            left=x,
            height=0.6,
            color=CATEGORIES[seg["category"]],
            edgecolor="black",
            linewidth=0.5,
            hatch="//" if seg["category"] == "running" else None,
        )
        bar.set_gid(f"{seg['transaction_id']}/{seg['step']}/{seg['kind']}/{seg['attempt']}")
        if label_bars:
            text = str(seg["step"]) if lanes == "transaction" else ""
            if seg["attempt"] > 1:
                text += f" #{seg['attempt']}"
            ax.text(
                x + width / 2, y, text.strip(), ha="center", va="center", fontsize=7, clip_on=True
            )
    ax.set_yticks(range(len(lane_names)), lane_names)
    ax.set_ylim(len(lane_names) - 0.5, -0.5)
    ax.set_xlabel("time (UTC)")
    date_axis(ax)
    ax.grid(axis="x", alpha=0.3)
    _legend(ax, frame["category"])
    ax.set_title(f"{len(transactions)} saga(s), {len(frame)} step attempt(s)")
    return ax


def _lane_count(timeline: pd.DataFrame, lanes: str) -> int:
    if lanes == "transaction":
        return timeline["transaction_id"].nunique()
    return len(timeline[["transaction_id", "step"]].drop_duplicates())


def _lane_names(frame: pd.DataFrame, lanes: str, transactions: int) -> pd.Series:
    ids = frame["transaction_id"].astype(str)
    if lanes == "transaction":
        return ids
    steps = frame["step"].astype(str)
    return steps if transactions == 1 else ids + " · " + steps


def _legend(ax: Axes, categories: pd.Series) -> None:
    from matplotlib.patches import Patch

    present = set(categories)
    handles = [
        Patch(facecolor=colour, edgecolor="black", linewidth=0.5, label=name)
        for name, colour in CATEGORIES.items()
        if name in present
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")

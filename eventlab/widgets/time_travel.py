"""Time travel over one stream: a slider along versions, business time or knowledge time."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..diff import COLUMNS as DIFF_COLUMNS
from ..diff import diff
from ..errors import PlotError
from ._html import changed_fields, diff_html, event_html, state_html

if TYPE_CHECKING:
    import ipywidgets

    from ..store import EventStore

AXES = {"version": "version", "at": "business time", "known_at": "knowledge time"}


def time_travel_points(store: EventStore, stream_id: str, axis: str = "version") -> list[Any]:
    """The stops of the time-travel slider: ``[0, 1, ..., n]`` versions, or ``[None, t1, ...]``.

    On the time axes the stops are the distinct ``occurred_at`` (business time)
    or ``recorded_at`` (knowledge time) values of the stream's events, sorted,
    after a first stop ``None`` for "before the first event".
    """
    _check_axis(axis)
    events = store.read_stream(stream_id)
    if not events:
        raise PlotError(
            f"stream {stream_id!r} has no events; check the id (store.streams() lists them)"
        )
    if axis == "version":
        return list(range(len(events) + 1))
    return [None, *sorted({_time(event, axis) for event in events})]


def time_travel_view(
    store: EventStore,
    stream_id: str,
    reducer: Any,
    position: int,
    *,
    axis: str = "version",
    initial: Any = None,
    points: list[Any] | None = None,
) -> dict[str, Any]:
    """What the time-travel widget shows at one slider ``position``.

    Parameters
    ----------
    position : int
        An index into :func:`time_travel_points` (0: before the first event).
    axis : {"version", "at", "known_at"}
        Replay up to a version, up to a business time (``state_at(at=...)``, as
        the store knows it now) or up to a knowledge time (what the system
        believed then).
    points : list, optional
        The stops, if already computed.

    Returns
    -------
    dict
        ``point`` (the version or time), ``label``, ``state``, ``previous`` (the
        state at the stop before), ``diff`` (``el.diff(previous, state)``),
        ``changed`` (dotted fields), ``events`` (the events that arrive at this
        stop) and ``html`` (the header, ``state``, ``diff`` and ``events`` parts).

    Examples
    --------
    >>> import eventlab as el
    >>> store = el.EventStore(clock=el.SimulatedClock("2024-05-01"))
    >>> _ = store.append("acct-1", [el.Event("Deposited", {"amount": 10}),
    ...                             el.Event("Deposited", {"amount": 5})])
    >>> def balance(state, event):
    ...     return {"balance": state["balance"] + event.data["amount"]}
    >>> view = el.widgets.time_travel_view(store, "acct-1", balance, 2, initial={"balance": 0})
    >>> view["label"], view["state"], view["changed"]
    ('version 2 of 2', {'balance': 15}, ['balance'])
    """
    _check_axis(axis)
    if points is None:
        points = time_travel_points(store, stream_id, axis)
    if isinstance(position, bool) or not isinstance(position, int):
        raise PlotError(f"position must be an int, got {position!r}")
    if not 0 <= position < len(points):
        raise PlotError(
            f"position {position} is off the slider: {stream_id!r} has stops 0 to "
            f"{len(points) - 1} on the {axis} axis"
        )
    point = points[position]
    state = _state_at(store, stream_id, reducer, axis, point, initial)
    if position == 0:
        previous, changes = state, pd.DataFrame(columns=DIFF_COLUMNS, dtype=object)
    else:
        previous = _state_at(store, stream_id, reducer, axis, points[position - 1], initial)
        changes = diff(previous, state)
    arrived = _arrivals(store, stream_id, axis, point)
    label = _label(axis, point, position, len(points) - 1)
    changed = changed_fields(previous, state)
    html = {
        "header": f"<b>{escape(stream_id)}</b>: {escape(label)}",
        "state": state_html(state, "state", changed),
        "diff": diff_html(changes, "changes from the stop before"),
        "events": "".join(event_html(e, f"event {e.version}") for e in arrived),
    }
    return {
        "axis": axis,
        "position": position,
        "point": point,
        "label": label,
        "state": state,
        "previous": previous,
        "diff": changes,
        "changed": changed,
        "events": arrived,
        "html": html,
    }


def _check_axis(axis: str) -> None:
    if axis not in AXES:
        raise PlotError(
            f"axis must be 'version', 'at' (business time) or 'known_at' (knowledge time), "
            f"got {axis!r}"
        )


def _time(event: Any, axis: str) -> pd.Timestamp:
    return pd.Timestamp(event.occurred_at if axis == "at" else event.recorded_at)


def _state_at(
    store: EventStore, stream_id: str, reducer: Any, axis: str, point: Any, initial: Any
) -> Any:
    if axis == "version" or point is None:
        version = point if axis == "version" else 0
        return store.state_at(stream_id, reducer, version=version, initial=initial)
    moment = point.to_pydatetime()
    if axis == "at":
        return store.state_at(stream_id, reducer, at=moment, initial=initial)
    return store.state_at(stream_id, reducer, known_at=moment, initial=initial)


def _arrivals(store: EventStore, stream_id: str, axis: str, point: Any) -> list[Any]:
    if point is None or (axis == "version" and point == 0):
        return []
    if axis == "version":
        return store.read_stream(stream_id, from_version=point, to_version=point)
    return [e for e in store.read_stream(stream_id) if _time(e, axis) == point]


def _label(axis: str, point: Any, position: int, last: int) -> str:
    if position == 0:
        return "before the first event"
    if axis == "version":
        return f"version {point} of {last}"
    moment = point.isoformat().replace("+00:00", "Z")
    return f"{AXES[axis]} {moment} (stop {position} of {last})"


def time_travel(
    store: EventStore,
    stream_id: str,
    reducer: Any,
    *,
    initial: Any = None,
    axis: str = "version",
) -> ipywidgets.VBox:
    """A slider through a stream's history showing the state and what changed.

    Switch the slider between versions, business time and knowledge time;
    at each stop the state (changed fields highlighted), the diff to the stop
    before and the events that arrived there. The logic is
    :func:`time_travel_view`.

    Returns
    -------
    ipywidgets.VBox
        With attributes ``axis`` (ToggleButtons), ``slider`` (IntSlider),
        ``header``, ``state_view``, ``diff_view`` and ``events_view`` (HTML).
    """
    import ipywidgets as w

    _check_axis(axis)
    points = {axis: time_travel_points(store, stream_id, axis)}
    views: dict[tuple[str, int], dict[str, Any]] = {}
    axis_buttons = w.ToggleButtons(
        options=[(label, key) for key, label in AXES.items()], value=axis, description="axis"
    )
    slider = w.IntSlider(
        min=0,
        max=len(points[axis]) - 1,
        value=len(points[axis]) - 1,
        description="stop",
        continuous_update=False,
    )
    header, state_view, diff_view, events_view = (w.HTML() for _ in range(4))
    busy = [False]

    def render(*_: Any) -> None:
        if busy[0]:
            return
        key = (axis_buttons.value, slider.value)
        if key not in views:
            views[key] = time_travel_view(
                store,
                stream_id,
                reducer,
                slider.value,
                axis=key[0],
                initial=initial,
                points=points[key[0]],
            )
        html = views[key]["html"]
        header.value, state_view.value = html["header"], html["state"]
        diff_view.value, events_view.value = html["diff"], html["events"]

    def switch_axis(change: dict[str, Any]) -> None:
        new = change["new"]
        if new not in points:
            points[new] = time_travel_points(store, stream_id, new)
        busy[0] = True
        try:
            slider.max = len(points[new]) - 1
            slider.value = slider.max
        finally:
            busy[0] = False
        render()

    slider.observe(render, names="value")
    axis_buttons.observe(switch_axis, names="value")
    render()
    box = w.VBox([axis_buttons, slider, header, w.HBox([state_view, diff_view]), events_view])
    box.axis, box.slider, box.header = axis_buttons, slider, header
    box.state_view, box.diff_view, box.events_view = state_view, diff_view, events_view
    return box

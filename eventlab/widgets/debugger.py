"""A projection debugger: feed a stream's events one at a time and watch the state change."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from ..diff import diff
from ..errors import PlotError
from ..projections import Changes, Projection, SqlProjection
from ..replay import REVERTED, _Fold, effective_events
from ._html import changed_fields, diff_html, event_html, message_html, state_html

if TYPE_CHECKING:
    import ipywidgets

    from ..store import EventStore


def projection_steps(
    store: EventStore, reducer_or_projection: Any, stream_id: str, *, initial: Any = None
) -> list[dict[str, Any]]:
    """Apply a stream's events one by one, keeping the state before and after each.

    Parameters
    ----------
    reducer_or_projection
        A reducer ``(state, event) -> state``, an :class:`~eventlab.Aggregate`
        subclass, or a :class:`~eventlab.Projection` instance. A projection
        starts from an empty read model held in memory (nothing is written to
        the store) and its state is its rows, ``{key: row}``; it sees only this
        stream's events.
    initial : object, optional
        The state before the first event, for function reducers.

    Returns
    -------
    list of dict
        One per event applied: ``index`` (from 1), ``event``, ``before``,
        ``after`` (deep copies), ``changed`` (dotted fields), ``diff``
        (``el.diff(before, after)``), ``handled`` (False when nothing handles
        the event's type) and ``error`` (the message if applying it raised; the
        list ends at that event).

    Examples
    --------
    >>> import eventlab as el
    >>> store = el.EventStore(clock=el.SimulatedClock("2024-05-01"))
    >>> _ = store.append("acct-1", [el.Event("Deposited", {"amount": 10}),
    ...                             el.Event("Deposited", {"amount": 5})])
    >>> def balance(state, event):
    ...     return {"balance": state["balance"] + event.data["amount"]}
    >>> steps = el.widgets.projection_steps(store, balance, "acct-1", initial={"balance": 0})
    >>> [(s["before"], s["after"]) for s in steps]
    [({'balance': 0}, {'balance': 10}), ({'balance': 10}, {'balance': 15})]
    """
    if isinstance(reducer_or_projection, SqlProjection):
        raise PlotError(
            f"{reducer_or_projection!r} is one SQL query over the whole log, not a handler per "
            f"event, so it cannot be stepped through; compare its table over time with "
            f"runner.as_of(...), or debug a Python el.Projection or a reducer"
        )
    if isinstance(reducer_or_projection, type) and issubclass(reducer_or_projection, Projection):
        raise PlotError(
            f"pass an instance of {reducer_or_projection.__name__} (e.g. "
            f"{reducer_or_projection.__name__}()), not the class"
        )
    events = store.read_stream(stream_id)
    if not events:
        raise PlotError(
            f"stream {stream_id!r} has no events; check the id (store.streams() lists them)"
        )
    if isinstance(reducer_or_projection, Projection):
        return _projection_steps(reducer_or_projection, events)
    return _reducer_steps(reducer_or_projection, events, stream_id, initial)


def _step(index: int, event: Any, before: Any, after: Any, handled: bool, error: str | None):
    return {
        "index": index,
        "event": event,
        "before": before,
        "after": after,
        "changed": changed_fields(before, after),
        "diff": diff(before, after),
        "handled": handled,
        "error": error,
    }


def _reducer_steps(reducer: Any, events: list, stream_id: str, initial: Any) -> list[dict]:
    fold = _Fold(reducer, initial)
    state = fold.start(stream_id)
    steps = []
    for index, event in enumerate(events, start=1):
        before = state
        handled = (
            event.type == REVERTED
            or not fold.is_aggregate
            or (reducer._handler_for(event.type) is not None)
        )
        try:
            if event.type == REVERTED:  # the state as of the version it returns to
                state = fold.run(effective_events(events[:index]), stream_id)
            else:
                # On a copy: a reducer (or an aggregate) that changes the state it is given
                # must not change the states already kept.
                state = fold.apply(copy.deepcopy(before), event)
        except Exception as exc:
            steps.append(_step(index, event, before, before, handled, _message(exc)))
            break
        steps.append(_step(index, event, before, state, handled, None))
    return steps


def _projection_steps(projection: Projection, events: list) -> list[dict]:
    # The runner's own change set, with no table behind it: no key exists yet,
    # so it never needs to query, and every handler behaves exactly as it would.
    rows = Changes(None, projection.name, projection, existing=set())
    handlers = projection.find_handlers()
    steps = []
    projection._bind(rows)
    try:
        for index, event in enumerate(events, start=1):
            before = _rows(rows)
            handler = handlers.get(event.type)
            error = None
            if handler is not None:
                try:
                    handler(event)
                except Exception as exc:
                    error = _message(exc)
            steps.append(_step(index, event, before, _rows(rows), handler is not None, error))
            if error is not None:
                break
    finally:
        projection._unbind()
    return steps


def _rows(rows: Changes) -> dict[Any, dict[str, Any]]:
    """The read model's rows as the handlers left them so far."""
    current = {key: rows.get(key) for key in list(rows.entries)}
    return copy.deepcopy({key: row for key, row in current.items() if row is not None})


def _message(exc: BaseException) -> str:
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    return f"{type(cause).__name__}: {cause}"


def step_html(step: dict[str, Any], total: int) -> dict[str, str]:
    """The HTML parts the debugger shows for one step."""
    event = step["event"]
    note = ""
    if step["error"] is not None:
        note = message_html(f"applying this event raised {step['error']}", error=True)
    elif not step["handled"]:
        note = message_html(f"nothing handles {event.type}: the state is unchanged")
    return {
        "header": f"<b>step {step['index']} of {total}</b>{note}",
        "event": event_html(event, f"event {step['index']}: {event.type}"),
        "before": state_html(step["before"], "before", step["changed"]),
        "after": state_html(step["after"], "after", step["changed"]),
        "diff": diff_html(step["diff"]),
    }


def projection_debugger(
    store: EventStore, reducer_or_projection: Any, stream_id: str, *, initial: Any = None
) -> ipywidgets.VBox:
    """Step through a stream's events one at a time: the event, the state before and
    after, the changed fields highlighted. The logic is :func:`projection_steps`.

    Returns
    -------
    ipywidgets.VBox
        With attributes ``slider`` (IntSlider over the steps, from 1),
        ``previous`` and ``next`` (Buttons), and the HTML views ``header``,
        ``event_view``, ``before_view``, ``after_view`` and ``diff_view``.
    """
    import ipywidgets as w

    steps = projection_steps(store, reducer_or_projection, stream_id, initial=initial)
    slider = w.IntSlider(min=1, max=len(steps), value=1, description="step")
    previous, following = w.Button(description="◀ previous"), w.Button(description="next ▶")
    header, event_view, before_view, after_view, diff_view = (w.HTML() for _ in range(5))

    def render(*_: Any) -> None:
        html = step_html(steps[slider.value - 1], len(steps))
        header.value, event_view.value = html["header"], html["event"]
        diff_view.value = html["diff"]
        before_view.value, after_view.value = html["before"], html["after"]

    slider.observe(render, names="value")
    previous.on_click(lambda _: setattr(slider, "value", max(slider.min, slider.value - 1)))
    following.on_click(lambda _: setattr(slider, "value", min(slider.max, slider.value + 1)))
    render()
    box = w.VBox(
        [
            w.HBox([previous, slider, following]),
            header,
            event_view,
            w.HBox([before_view, after_view]),
            diff_view,
        ]
    )
    box.slider, box.previous, box.next, box.header = slider, previous, following, header
    box.event_view, box.before_view, box.after_view = event_view, before_view, after_view
    box.diff_view = diff_view
    return box

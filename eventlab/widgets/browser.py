"""An event browser: filter the log by type, stream and time, page through it, open an event."""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from typing import TYPE_CHECKING, Any

from ..errors import EventlabError, PlotError
from ..plots._base import event_filter
from ._html import CHANGED, event_html, message_html, table, value_text

if TYPE_CHECKING:
    import ipywidgets

    from ..events import RecordedEvent
    from ..store import EventStore

CLOCKS = {"occurred_at": "business time", "recorded_at": "knowledge time"}
PAGE_COLUMNS = ["position", "stream_id", "version", "type", "occurred_at", "recorded_at", "data"]


def browse_events(
    store: EventStore,
    *,
    types: Iterable[str] | str | None = None,
    streams: Iterable[str] | str | None = None,
    start: Any = None,
    end: Any = None,
    time: str = "occurred_at",
    page: int = 0,
    page_size: int = 20,
) -> dict[str, Any]:
    """One page of the events that match the filters, in log order.

    Parameters
    ----------
    types : str or list of str, optional
        Only these event types.
    streams : str or list of str, optional
        A stream id, a prefix ending in ``*`` (``"order-*"``), or several ids.
    start, end : datetime or ISO string, optional
        From ``start`` (inclusive) to ``end`` (exclusive) on the ``time`` clock.
    time : {"occurred_at", "recorded_at"}
        Business time or knowledge time, for ``start`` and ``end``.
    page : int
        Which page, from 0.
    page_size : int
        Events per page.

    Returns
    -------
    dict
        ``events`` (a DataFrame with columns ``PAGE_COLUMNS``, ``data`` as JSON
        text), ``total`` (matching events), ``page`` and ``pages``.

    Examples
    --------
    >>> import eventlab as el
    >>> store = el.EventStore(clock=el.SimulatedClock("2024-05-01"))
    >>> _ = store.append("order-1", [el.Event("OrderPlaced", {}), el.Event("OrderPaid", {})])
    >>> found = el.widgets.browse_events(store, types=["OrderPaid"])
    >>> found["total"], found["events"]["position"].tolist()
    (1, [2])
    """
    for name, value, low in (("page", page, 0), ("page_size", page_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise PlotError(f"{name} must be an int of at least {low}, got {value!r}")
    params: list[Any] = []
    where = event_filter(params, types=types, streams=streams, start=start, end=end, time=time)
    total = int(store.sql(f"SELECT count(*) AS n FROM events WHERE {where}", params)["n"][0])
    pages = max(1, -(-total // page_size))
    if page >= pages:
        raise PlotError(
            f"page {page} is past the end: {total} matching events make {pages} page(s) of "
            f"{page_size}, numbered from 0"
        )
    frame = store.sql(
        f"SELECT position, stream_id, version, type, occurred_at, recorded_at, "
        f"data::VARCHAR AS data FROM events WHERE {where} "
        f"ORDER BY position LIMIT {page_size} OFFSET {page * page_size}",
        params,
    )
    return {"events": frame, "total": total, "page": page, "pages": pages}


def event_detail(store: EventStore, position: int) -> RecordedEvent:
    """The event at a position of the log."""
    if isinstance(position, bool) or not isinstance(position, int):
        raise PlotError(f"position must be an int, got {position!r}")
    found = list(store.read_all(after=max(0, position - 1), until=position)) if position else []
    if not found:
        raise PlotError(
            f"no event at position {position}; positions run from 1 to the head ({store.head})"
        )
    return found[0]


def page_html(events: Any, selected: int | None = None) -> str:
    """A page of :func:`browse_events` as a table, the ``selected`` position highlighted."""
    if events.empty:
        return "<i>no events match</i>"
    rows = [
        (
            str(row.position),
            escape(row.stream_id),
            str(row.version),
            escape(row.type),
            escape(row.occurred_at.isoformat().replace("+00:00", "Z")),
            escape(row.recorded_at.isoformat().replace("+00:00", "Z")),
            value_text(row.data, limit=80),
        )
        for row in events.itertuples()
    ]
    styles = [CHANGED if row.position == selected else "" for row in events.itertuples()]
    return table(PAGE_COLUMNS, rows, styles)


def event_browser(store: EventStore, *, page_size: int = 20) -> ipywidgets.VBox:
    """Browse the log: filter by type, stream and time, page through, open one event.

    The stream filter takes an id or a prefix ending in ``*``; start and end
    take ISO times (UTC unless an offset is given). The logic is
    :func:`browse_events` and :func:`event_detail`.

    Returns
    -------
    ipywidgets.VBox
        With attributes ``types`` (SelectMultiple), ``stream``, ``start``,
        ``end`` (Text), ``clock`` (ToggleButtons), ``page`` (BoundedIntText, from
        1), ``previous`` and ``next`` (Buttons), ``status`` and ``table`` (HTML),
        ``selected`` (Dropdown of the page's positions) and ``detail`` (HTML).
    """
    import ipywidgets as w

    known_types = store.sql("SELECT DISTINCT type FROM events ORDER BY type")["type"].tolist()
    types = w.SelectMultiple(
        options=known_types, rows=min(6, max(1, len(known_types))), description="types"
    )
    stream = w.Text(
        description="stream", placeholder="order-17 or order-*", continuous_update=False
    )
    start = w.Text(description="from", placeholder="2024-05-01T00:00Z", continuous_update=False)
    end = w.Text(description="until", placeholder="(exclusive)", continuous_update=False)
    clock = w.ToggleButtons(options=[(label, key) for key, label in CLOCKS.items()])
    page = w.BoundedIntText(value=1, min=1, max=1, description="page")
    previous, following = w.Button(description="◀ previous"), w.Button(description="next ▶")
    status, listing, detail = w.HTML(), w.HTML(), w.HTML()
    selected = w.Dropdown(description="event", options=[])
    current: dict[str, Any] = {"events": None}
    busy = [False]

    def filters() -> dict[str, Any]:
        text = stream.value.strip()
        return {
            "types": list(types.value) or None,
            "streams": text or None,
            "start": start.value.strip() or None,
            "end": end.value.strip() or None,
            "time": clock.value,
        }

    def show(*_: Any) -> None:
        if busy[0]:
            return
        busy[0] = True
        try:
            found = browse_events(store, page=page.value - 1, page_size=page_size, **filters())
        except EventlabError as exc:
            status.value, listing.value, detail.value = message_html(str(exc), True), "", ""
            selected.options = []
            return
        finally:
            busy[0] = False
        current["events"] = found["events"]
        busy[0] = True
        try:
            page.max = found["pages"]
            positions = found["events"]["position"].tolist()
            kept = selected.value if selected.value in positions else None
            selected.options = [
                (f"{p} · {t} · {s}", p)
                for p, t, s in zip(
                    positions, found["events"]["type"], found["events"]["stream_id"], strict=True
                )
            ]
            selected.value = kept if kept is not None else (positions[0] if positions else None)
        finally:
            busy[0] = False
        first = found["page"] * page_size + 1
        last = found["page"] * page_size + len(positions)
        status.value = message_html(
            f"{found['total']:,} events match; showing {first:,}-{last:,}, page "
            f"{found['page'] + 1} of {found['pages']}"
            if positions
            else "no events match"
        )
        show_detail()

    def show_detail(*_: Any) -> None:
        if busy[0]:
            return
        events = current["events"]
        listing.value = page_html(events, selected.value) if events is not None else ""
        detail.value = (
            event_html(event_detail(store, selected.value)) if selected.value is not None else ""
        )

    def refilter(*_: Any) -> None:
        if page.value != 1:
            page.value = 1  # which shows the first page
        else:
            show()

    def step(delta: int) -> None:
        page.value = min(page.max, max(1, page.value + delta))

    for control in (types, stream, start, end, clock):
        control.observe(refilter, names="value")
    page.observe(show, names="value")
    selected.observe(show_detail, names="value")
    previous.on_click(lambda _: step(-1))
    following.on_click(lambda _: step(1))
    show()
    box = w.VBox(
        [
            w.HBox([types, w.VBox([stream, start, end, clock])]),
            w.HBox([previous, page, following]),
            status,
            listing,
            selected,
            detail,
        ]
    )
    box.types, box.stream, box.start, box.end, box.clock = types, stream, start, end, clock
    box.page, box.previous, box.next = page, previous, following
    box.status, box.table, box.selected, box.detail = status, listing, selected, detail
    return box

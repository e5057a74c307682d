"""HTML snippets the widgets show: states with changed fields marked, diffs, events."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any

import pandas as pd

from ..diff import _same
from ..history import flatten, state_fields

CHANGED = "background:#fff3b0"  # the style of a changed field, also what tests look for
_TABLE = "border-collapse:collapse;font-family:monospace;font-size:12px"
_CELL = "border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top"
_MISSING = object()


def flat_state(state: Any) -> dict[str, Any]:
    """A state as one level of dotted field names (``{}`` for no state at all)."""
    if state is None:
        return {}
    return flatten(state_fields(state))


def changed_fields(before: Any, after: Any) -> list[str]:
    """The dotted fields whose value differs between two states (added and removed too)."""
    a, b = flat_state(before), flat_state(after)
    names = list(a) + [name for name in b if name not in a]
    return [n for n in names if not _same_value(a.get(n, _MISSING), b.get(n, _MISSING))]


def _same_value(x: Any, y: Any) -> bool:
    if x is _MISSING or y is _MISSING:
        return x is y
    return _same(x, y)


def value_text(value: Any, limit: int = 200) -> str:
    """A value as short escaped text: JSON for containers, ``repr`` for strings."""
    if isinstance(value, Mapping | list | tuple):
        try:
            text = json.dumps(value, default=str, ensure_ascii=False)
        except (TypeError, ValueError):
            text = repr(value)
    elif isinstance(value, str):
        text = repr(value)
    else:
        text = str(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return escape(text)


def table(header: Iterable[str], rows: Iterable[Iterable[str]], styles: Iterable[str] = ()) -> str:
    """An HTML table of already-escaped cells; ``styles`` gives each row's style (or '')."""
    styles = list(styles)
    head = "".join(f'<th style="{_CELL}">{escape(h)}</th>' for h in header)
    body = []
    for index, row in enumerate(rows):
        style = styles[index] if index < len(styles) and styles[index] else ""
        cells = "".join(f'<td style="{_CELL}">{cell}</td>' for cell in row)
        body.append(f'<tr style="{style}">{cells}</tr>' if style else f"<tr>{cells}</tr>")
    return f'<table style="{_TABLE}"><tr>{head}</tr>{"".join(body)}</table>'


def state_html(state: Any, title: str, changed: Iterable[str] = ()) -> str:
    """A state as a field/value table, the ``changed`` fields highlighted."""
    marked = set(changed)
    fields = flat_state(state)
    if not fields:
        return f"<b>{escape(title)}</b><div><i>no state</i></div>"
    rows = [(escape(name), value_text(value)) for name, value in fields.items()]
    styles = [CHANGED if name in marked else "" for name in fields]
    return f"<b>{escape(title)}</b>" + table(["field", "value"], rows, styles)


def diff_html(changes: pd.DataFrame, title: str = "changes") -> str:
    """An ``el.diff`` frame as a table (or a line saying nothing changed)."""
    if changes.empty:
        return f"<b>{escape(title)}</b><div><i>no change</i></div>"
    rows = [
        (
            escape(row.path or "(whole state)"),
            value_text(row.before),
            value_text(row.after),
            escape(row.kind),
        )
        for row in changes.itertuples()
    ]
    return f"<b>{escape(title)}</b>" + table(["path", "before", "after", "kind"], rows)


def event_html(event: Any, title: str = "event") -> str:
    """One recorded event: where it sits, its two times, its payload and metadata."""
    rows = [
        ("type", escape(event.type)),
        ("stream", f"{escape(event.stream_id)} v{event.version}"),
        ("position", str(event.position)),
        ("occurred_at", escape(_iso(event.occurred_at))),
        ("recorded_at", escape(_iso(event.recorded_at))),
        ("data", _json_block(event.data)),
        ("metadata", _json_block(event.metadata)),
    ]
    for name in ("correlation_id", "causation_id"):
        value = getattr(event, name)
        if value is not None:
            rows.append((name, escape(str(value))))
    return f"<b>{escape(title)}</b>" + table(["", ""], rows)


def _json_block(value: Any) -> str:
    text = json.dumps(value, indent=2, default=str, ensure_ascii=False, sort_keys=True)
    return f'<pre style="margin:0">{escape(text)}</pre>'


def _iso(moment: Any) -> str:
    return pd.Timestamp(moment).isoformat().replace("+00:00", "Z")


def message_html(text: str, error: bool = False) -> str:
    colour = "#b00020" if error else "#444"
    return f'<div style="color:{colour}">{escape(text)}</div>'

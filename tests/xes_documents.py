"""Random XES logs for the tests: a log as plain Python values, and XES text for it.

The text varies what XML lets vary (quotes, attribute order, spaces, line ends,
comments, character references, namespace prefixes), so the readers are tested
on what XML means, not on one tool's layout; the expected events come from the
Python values, not from any reader.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

# A value of each XES type, with what eventlab stores in data for it.
TEXT = st.text(
    alphabet=st.sampled_from(list("abcXYZ 019_-:.,;/é€&<>\"'\t") + ["\u00e9", "\u4e2d"]),
    max_size=12,
)


@dataclass
class Attribute:
    type: str  # string, int, float, boolean, date, id, list
    key: str
    value: Any  # the Python value

    def expected(self) -> Any:
        """What eventlab stores in data for this attribute."""
        if self.type == "date":
            return self.value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if self.type == "list":
            return [a.expected() for a in self.value]
        return self.value


@dataclass
class Event:
    name: str
    time: datetime | None
    attributes: list[Attribute] = field(default_factory=list)


@dataclass
class Trace:
    case: str
    attributes: list[Attribute]
    events: list[Event]


def expected_rows(traces: list[Trace]) -> list[dict[str, Any]]:
    """The events eventlab must import, in file order."""
    rows = []
    for trace in traces:
        metadata = {a.key: a.expected() for a in trace.attributes}
        for event in trace.events:
            rows.append(
                {
                    "stream_id": trace.case,
                    "type": event.name,
                    "occurred_at": None if event.time is None else event.time.astimezone(UTC),
                    "data": {a.key: a.expected() for a in event.attributes},
                    "metadata": metadata,
                }
            )
    return rows


# ---------------------------------------------------------------------- strategies

KEYS = st.sampled_from(["org:resource", "lifecycle:transition", "cost", "note", "ok", "x&y", "é"])
OFFSETS = st.sampled_from([0, 60, 120, -300, 330])


@st.composite
def moments(draw) -> datetime:
    base = datetime(2011, 10, 1, tzinfo=UTC) + timedelta(
        seconds=draw(st.integers(0, 10**8)), microseconds=draw(st.sampled_from([0, 546000, 1]))
    )
    return base.astimezone(timezone(timedelta(minutes=draw(OFFSETS))))


@st.composite
def attributes(draw, nested: bool) -> Attribute:
    kinds = ["string", "int", "float", "boolean", "date", "id"] + (["list"] if nested else [])
    kind = draw(st.sampled_from(kinds))
    key = draw(KEYS)
    if kind in ("string", "id"):
        value = draw(TEXT)
    elif kind == "int":
        value = draw(st.integers(-(2**62), 2**62))
    elif kind == "float":
        value = draw(st.floats(allow_nan=False, allow_infinity=False, width=64))
    elif kind == "boolean":
        value = draw(st.booleans())
    elif kind == "date":
        value = draw(moments())
    else:
        value = draw(st.lists(attributes(nested=False), max_size=3))
    return Attribute(kind, key, value)


def _unique(attrs: list[Attribute], taken: set[str]) -> list[Attribute]:
    seen = set(taken)
    kept = []
    for attribute in attrs:
        if attribute.key not in seen:
            seen.add(attribute.key)
            kept.append(attribute)
    return kept


@st.composite
def logs(draw, nested: bool = False) -> list[Trace]:
    traces = []
    for number in range(draw(st.integers(1, 4))):
        events = []
        for _ in range(draw(st.integers(0, 4))):
            name = draw(st.sampled_from(["A_SUBMITTED", "Take in charge", "Closed", "é&<"]))
            time = draw(st.one_of(st.none(), moments())) if draw(st.booleans()) else draw(moments())
            attrs = _unique(draw(st.lists(attributes(nested), max_size=3)), set())
            events.append(Event(name, time, attrs))
        trace_attrs = _unique(draw(st.lists(attributes(nested), max_size=2)), set())
        traces.append(
            Trace(f"case {number}{draw(st.sampled_from(['', '&', 'é']))}", trace_attrs, events)
        )
    return traces


@st.composite
def styles(draw) -> dict[str, Any]:
    """How to write the XML: everything XML allows to vary."""
    return {
        "quote": draw(st.sampled_from(['"', "'", "mixed"])),
        "value_first": draw(st.booleans()),
        "space_before_slash": draw(st.booleans()),
        "newline": draw(st.sampled_from(["\n", "\r\n", ""])),
        "indent": draw(st.sampled_from(["", "\t", "  "])),
        "comments": draw(st.booleans()),
        "prefix": draw(st.sampled_from(["", "xes:"])),
        "references": draw(st.booleans()),
        "declaration": draw(st.booleans()),
        "header": draw(st.booleans()),
        "seed": draw(st.integers(0, 1000)),
    }


# ---------------------------------------------------------------------- writing XES


def _escape(text: str, quote: str, references: bool, salt: int) -> str:
    out = []
    for i, char in enumerate(text):
        if char == "&":
            out.append("&amp;")
        elif char == "<":
            out.append("&lt;")
        elif char == quote:
            out.append("&quot;" if quote == '"' else "&apos;")
        elif char == "\t":
            out.append("&#9;")  # a literal tab would read as a space
        elif char == ">" and (salt + i) % 2:
            out.append("&gt;")
        elif references and ord(char) > 127 and (salt + i) % 2:
            out.append(f"&#{ord(char)};" if i % 2 else f"&#x{ord(char):X};")
        else:
            out.append(char)
    return "".join(out)


def _raw(attribute: Attribute) -> str:
    value = attribute.value
    if attribute.type == "boolean":
        return "true" if value else "false"
    if attribute.type == "float":
        return repr(value)
    if attribute.type == "date":
        return value.isoformat()
    return str(value)


class _Writer:
    def __init__(self, style: dict[str, Any]):
        self.style = style
        self.count = style["seed"]
        self.lines: list[str] = []

    def quote(self) -> str:
        self.count += 1
        if self.style["quote"] == "mixed":
            return '"' if self.count % 2 else "'"
        return self.style["quote"]

    def tag(self, name: str) -> str:
        return self.style["prefix"] + name

    def attr_pair(self, name: str, value: str) -> str:
        q = self.quote()
        return f"{name}={q}{_escape(value, q, self.style['references'], self.count)}{q}"

    def emit(self, depth: int, text: str) -> None:
        self.lines.append(self.style["indent"] * depth + text)
        if self.style["comments"] and self.count % 5 == 0:
            self.lines.append("<!-- a < comment \" with ' quotes -->")
        self.count += 1

    def attribute(self, attribute: Attribute, depth: int) -> None:
        key = self.attr_pair("key", attribute.key)
        if attribute.type == "list":
            self.emit(depth, f"<{self.tag('list')} {key}>")
            self.emit(depth + 1, f"<{self.tag('values')}>")
            for item in attribute.value:
                self.attribute(item, depth + 2)
            self.emit(depth + 1, f"</{self.tag('values')}>")
            self.emit(depth, f"</{self.tag('list')}>")
            return
        value = self.attr_pair("value", _raw(attribute))
        pairs = f"{value} {key}" if self.style["value_first"] else f"{key} {value}"
        space = " " if self.style["space_before_slash"] else ""
        self.emit(depth, f"<{self.tag(attribute.type)} {pairs}{space}/>")


def write(traces: list[Trace], style: dict[str, Any]) -> str:
    """XES text for ``traces`` in the given style."""
    w = _Writer(style)
    if style["declaration"]:
        w.lines.append('<?xml version="1.0" encoding="UTF-8" ?>')
    ns = ' xmlns:xes="http://www.xes-standard.org/"' if style["prefix"] else ""
    w.emit(0, f'<{w.tag("log")} xes.version="1.0"{ns} xmlns="http://www.xes-standard.org/">')
    if style["header"]:
        w.emit(1, '<extension name="Concept" prefix="concept" uri="http://x/concept.xesext"/>')
        w.emit(1, f'<{w.tag("global")} scope="event">')
        w.emit(2, '<string key="concept:name" value="UNKNOWN"/>')
        w.emit(1, f"</{w.tag('global')}>")
        w.emit(1, '<classifier name="Activity" keys="concept:name"/>')
        w.emit(
            1, '<string key="log attribute" value="ignored"><int key="nested" value="1"/></string>'
        )
    for trace in traces:
        w.emit(1, f"<{w.tag('trace')}>")
        name = Attribute("string", "concept:name", trace.case)
        attrs = [name, *trace.attributes] if w.count % 2 else [*trace.attributes, name]
        for attribute in attrs:
            w.attribute(attribute, 2)
        for event in trace.events:
            w.emit(2, f"<{w.tag('event')}>")
            own = [Attribute("string", "concept:name", event.name), *event.attributes]
            if event.time is not None:
                own.insert(
                    w.count % (len(own) + 1), Attribute("date", "time:timestamp", event.time)
                )
            for attribute in own:
                w.attribute(attribute, 3)
            w.emit(2, f"</{w.tag('event')}>")
        w.emit(1, f"</{w.tag('trace')}>")
    w.emit(0, f"</{w.tag('log')}>")
    return style["newline"].join(w.lines) + style["newline"]


def decoded(table) -> list[dict[str, Any]]:
    """An imported table (or store rows) as plain rows, JSON decoded, for comparison."""
    rows = table.to_pylist() if hasattr(table, "to_pylist") else table
    return [
        {
            "stream_id": r["stream_id"],
            "type": r["type"],
            "occurred_at": r["occurred_at"],
            "data": json.loads(r["data"]) if isinstance(r["data"], str) else r["data"],
            "metadata": json.loads(r["metadata"])
            if isinstance(r["metadata"], str)
            else r["metadata"],
        }
        for r in rows
    ]


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value

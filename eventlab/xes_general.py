"""The general XES reader: expat, one callback per element, any well-formed XES.

It reads what the fast reader (:mod:`eventlab.xes_fast`) leaves to it: nested
attributes (``list``, ``container``, attributes of attributes), DTDs and
their entities, encodings other than UTF-8, CDATA and text. It counts lines,
so every error it raises names one; malformed XML is reported as expat finds it.

Nested attributes become JSON: a ``list`` an array of its values, a
``container`` an object of them, and a plain attribute that carries attributes
of its own ``{"value": ..., "children": {...}}``.
"""

from __future__ import annotations

import json
import pyexpat
from typing import Any

import pyarrow as pa

from .errors import XesError
from .xes_log import (
    ATTRIBUTE_SCHEMA,
    ATTRIBUTE_TYPES,
    JSON,
    NESTED_TYPES,
    ParsedLog,
    Source,
    typed_value,
)

_CODES = {name: code for code, name in enumerate(ATTRIBUTE_TYPES)}
# An element eventlab does not import (global, extension, ...), and everything in it.
_IGNORED = "ignored"
# Keys whose own value matters (the type, the stream id, the time), nested attributes or not.
_OWN_VALUE = ("concept:name", "time:timestamp")


class _Attribute:
    """An attribute element being read; nested ones collect their children."""

    __slots__ = ("type", "key", "value", "line", "owner", "children")

    def __init__(self, type_: str, attrs: dict[str, str], line: int, owner: Any):
        self.type = type_
        key = attrs.get("key")
        if key is None:
            raise XesError(f'line {line}: a <{type_}> attribute has no key; give it key="..."')
        self.key = key
        self.value = attrs.get("value")
        if self.value is None and type_ not in NESTED_TYPES:
            raise XesError(
                f'line {line}: the <{type_}> attribute {key!r} has no value; give it value="..."'
            )
        self.line = line
        self.owner = owner  # "event", "trace" or the enclosing _Attribute
        self.children: list[tuple[str, Any]] = []

    def nested(self) -> bool:
        return bool(self.children) or self.type in NESTED_TYPES

    def python_value(self) -> Any:
        """The value as a JSON-ready Python object (for nested attributes)."""
        if self.type == "list":
            return [value for _, value in self.children]
        if self.type == "container":
            return dict(self.children)
        own = self._typed()
        if not self.children:
            return own
        return {"value": own, "children": dict(self.children)}

    def _typed(self) -> Any:
        try:
            return typed_value(_CODES[self.type], self.value)
        except ValueError:
            raise XesError(
                f"line {self.line}: cannot read {self.value!r} as {self.type} (attribute "
                f"{self.key!r}); fix the value in the file"
            ) from None


class _Reader:
    def __init__(self) -> None:
        self.parser = pyexpat.ParserCreate(namespace_separator="}")
        self.parser.StartElementHandler = self.start
        self.parser.EndElementHandler = self.end
        self.stack: list[Any] = []
        self.event_traces: list[int] = []
        self.event_lines: list[int] = []
        self.trace_lines: list[int] = []
        self.rows = {"event": _rows(), "trace": _rows()}

    def start(self, name: str, attrs: dict[str, str]) -> None:
        local = name.rpartition("}")[2]
        stack = self.stack
        parent = stack[-1] if stack else None
        line = self.parser.CurrentLineNumber
        if parent is None:
            if local != "log":
                raise XesError(
                    f"line {line}: this is not an XES log: its root element is <{local}>, not <log>"
                )
            stack.append("log")
        elif parent == "log":
            if local == "trace":
                self.trace_lines.append(line)
                stack.append("trace")
            elif local == "event":
                raise XesError(
                    f"line {line}: an <event> outside any <trace>; eventlab imports the events "
                    f"of traces (each trace becomes a stream)"
                )
            else:
                stack.append(_IGNORED)
        elif parent == "trace":
            if local == "event":
                self.event_traces.append(len(self.trace_lines) - 1)
                self.event_lines.append(line)
                stack.append("event")
            elif local in _CODES or local in NESTED_TYPES:
                stack.append(_Attribute(local, attrs, line, "trace"))
            else:
                stack.append(_IGNORED)
        elif parent == "event":
            if local in _CODES or local in NESTED_TYPES:
                stack.append(_Attribute(local, attrs, line, "event"))
            else:
                stack.append(_IGNORED)
        elif isinstance(parent, _Attribute):
            if local in _CODES or local in NESTED_TYPES:
                stack.append(_Attribute(local, attrs, line, parent))
            elif local == "values" and parent.type == "list":
                stack.append(parent)  # XES wraps a list's items in <values>: see through it
            else:
                stack.append(_IGNORED)
        else:
            stack.append(_IGNORED)

    def end(self, name: str) -> None:
        done = self.stack.pop()
        if not isinstance(done, _Attribute) or (self.stack and self.stack[-1] is done):
            return  # not an attribute, or the end of a list's <values>
        if isinstance(done.owner, _Attribute):
            done.owner.children.append((done.key, done.python_value()))
            return
        owner = len(self.event_lines) - 1 if done.owner == "event" else len(self.trace_lines) - 1
        if done.nested() and (done.key not in _OWN_VALUE or done.type in NESTED_TYPES):
            type_code, value = JSON, json.dumps(done.python_value(), ensure_ascii=False)
        else:
            type_code, value = _CODES[done.type], done.value
        rows = self.rows[done.owner]
        rows["owner"].append(owner)
        rows["type"].append(type_code)
        rows["key"].append(done.key)
        rows["value"].append(value)
        rows["line"].append(done.line)

    def feed(self, block: bytes, final: bool = False) -> None:
        try:
            self.parser.Parse(block, final)
        except pyexpat.ExpatError as exc:
            raise XesError(
                f"line {exc.lineno}, column {exc.offset + 1}: the file is not well-formed XML "
                f"({pyexpat.ErrorString(exc.code)}). Fix the file there (or export it again "
                f"from the tool that wrote it); nothing was imported."
            ) from None

    def result(self) -> ParsedLog:
        events = pa.table(
            {
                "trace": pa.array(self.event_traces, pa.int64()),
                "line": pa.array(self.event_lines, pa.int64()),
            }
        )
        traces = pa.table({"line": pa.array(self.trace_lines, pa.int64())})
        return ParsedLog(
            events,
            traces,
            _attribute_table(self.rows["event"]),
            _attribute_table(self.rows["trace"]),
        )


def _rows() -> dict[str, list[Any]]:
    return {"owner": [], "type": [], "key": [], "value": [], "line": []}


def _attribute_table(rows: dict[str, list[Any]]) -> pa.Table:
    count = len(rows["owner"])
    columns = dict(rows)
    columns["no"] = range(count)
    return pa.table(
        {field.name: pa.array(columns[field.name], field.type) for field in ATTRIBUTE_SCHEMA}
    )


def read(source: Source) -> ParsedLog:
    """Read an XES file with expat; raises :class:`XesError` naming the line of any problem."""
    reader = _Reader()
    for block in source.blocks():
        reader.feed(block)
    reader.feed(b"", final=True)
    return reader.result()

"""The fast XES reader: the usual shape of XES files, read with NumPy over the bytes.

An XML parser that calls Python once per element spends most of its time in
those calls: a log of 262,200 events has 1.6 million elements. Process-mining
tools, however, write XES in one regular shape: ``<trace>`` and ``<event>``
tags without attributes, and attributes as
``<string key="..." value="..."/>``. This reader finds every ``<`` and ``"``
of a block of bytes at once, recognises those tags by comparing the 16 bytes
after each ``<`` as two integers, slices keys and values straight out of the
block as Arrow string views, and checks the nesting of every tag with a few
array operations. The few other tags (the ``<log>`` header, extensions,
globals, classifiers) are read one by one with a regular expression.

Whatever it does not handle it leaves to :mod:`eventlab.xes_general` by
raising :class:`NotFast`: nested attributes, DTDs, CDATA, encodings other
than UTF-8, entity references it does not know, and anything that is not
well-formed, which the general reader then reports with its line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from .xes_log import (
    ATTRIBUTE_SCHEMA,
    ATTRIBUTE_TYPES,
    NESTED_TYPES,
    BadReference,
    ParsedLog,
    Source,
    attribute_value,
)

CHUNK_SIZE = 1 << 26  # bytes of XML read per step (the arrays per step take a few times that)


class NotFast(Exception):
    """The file holds something the fast reader leaves to the general one."""


# Name ids: the XES elements first, attribute types in the order of their type codes.
EVENT, TRACE, LOG = 0, 1, 2
ATTR0 = 3  # ATTR0 + type code: the attribute elements
_FIXED_NAMES = ("event", "trace", "log", *ATTRIBUTE_TYPES, *NESTED_TYPES)
_ATTR_IDS = range(ATTR0, ATTR0 + len(ATTRIBUTE_TYPES) + len(NESTED_TYPES))
_NESTED_IDS = range(ATTR0 + len(ATTRIBUTE_TYPES), ATTR0 + len(ATTRIBUTE_TYPES) + len(NESTED_TYPES))

OPEN, CLOSE, EMPTY = 1, -1, 0

# The tags recognised by their bytes after "<": (bytes, kind, name id).
_SIMPLE = [
    (b"event>", OPEN, EVENT),
    (b"/event>", CLOSE, EVENT),
    (b"trace>", OPEN, TRACE),
    (b"/trace>", CLOSE, TRACE),
]
_ATTRIBUTES = [
    (f'{name} key="'.encode(), ATTR0 + code) for code, name in enumerate(ATTRIBUTE_TYPES)
]

_TAG = re.compile(
    r"<(/?)([^\s/>=\"']+)((?:\s+[^\s/>=\"']+\s*=\s*(?:\"[^\"<]*\"|'[^'<]*'))*)\s*(/?)>", re.S
)
_ATTR = re.compile(r"([^\s=\"']+)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")
_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_UTF8 = {"utf-8", "utf8", "us-ascii", "ascii"}
_BOM = b"\xef\xbb\xbf"


@dataclass
class _State:
    """What one chunk hands to the next: the open elements and who owns what."""

    depth: int = 0
    stack: list[int] = field(default_factory=list)  # name ids of the open elements
    root_seen: bool = False
    tokens: int = 0  # tokens read so far: the next chunk's first token number
    names: dict[str, int] = field(
        default_factory=lambda: {n: i for i, n in enumerate(_FIXED_NAMES)}
    )
    # The open element at level 2 (a child of <log>) and at level 3 (a child of that).
    owner2: int = -1
    owner2_name: int = -1
    owner3: int = -1
    owner3_is_event: bool = False


def read(source: Source) -> ParsedLog:
    """Read ``source``; raises :class:`NotFast` for anything the general reader must do."""
    state = _State()
    parts: list[_Part] = []
    carry = b""
    for block in source.blocks(CHUNK_SIZE):
        text = carry + block if carry else block
        # Up to the last "<": the tag it starts may continue in the next block.
        part, cut = _read_chunk(text, text.rfind(b"<"), state)
        if part is not None:
            parts.append(part)
        carry = text[cut:]
    part, cut = _read_chunk(carry, len(carry), state)
    if cut != len(carry):
        raise NotFast("a comment, CDATA section or processing instruction is not closed")
    if part is not None:
        parts.append(part)
    if state.depth != 0 or not state.root_seen:
        raise NotFast("the root element is not closed")
    return _combine(parts)


def _specials(text: bytes, lt: np.ndarray, after: np.ndarray) -> list[tuple[int, int]]:
    """``(begin, end)`` of each comment, CDATA section, PI and DOCTYPE; end -1 if unclosed.

    ``lt`` holds the positions of every "<", ``after`` the byte that follows each.
    """
    regions = []
    for begin in lt[(after == 33) | (after == 63)].tolist():  # "<!" and "<?"
        if regions and begin < regions[-1][1]:
            continue  # inside the previous one
        if text.startswith(b"<?", begin):
            end = text.find(b"?>", begin + 2)
            end = end + 2 if end >= 0 else -1
        elif text.startswith(b"<!--", begin):
            end = text.find(b"-->", begin + 4)
            end = end + 3 if end >= 0 else -1
        elif text.startswith(b"<![CDATA[", begin):
            end = text.find(b"]]>", begin + 9)
            end = end + 3 if end >= 0 else -1
        elif text.startswith(b"<!DOCTYPE", begin):
            end = text.find(b">", begin)
            if end >= 0 and b"[" in text[begin:end]:
                raise NotFast("a DTD with declarations (entities may be defined there)")
            end = end + 1 if end >= 0 else -1
        else:
            raise NotFast("an unknown <! construct")
        regions.append((begin, end))
        if end < 0:
            break
    return regions


# ---------------------------------------------------------------------- one chunk


@dataclass
class _Part:
    """One chunk's traces, events and attributes, by global token numbers."""

    traces: np.ndarray
    events: np.ndarray
    event_traces: np.ndarray
    event_attributes: pa.Table  # owner = the event's token number
    trace_attributes: pa.Table  # owner = the trace's token number


def _read_chunk(text: bytes, stop: int, state: _State) -> tuple[_Part | None, int]:
    """Read ``text[:stop]`` (or less, so that no comment is cut in two).

    Returns the part read (None if nothing could be) and where reading stopped.
    """
    first = state.tokens == 0 and not state.root_seen
    if stop <= 0:
        return None, 0
    buf = np.frombuffer(text, np.uint8, count=stop)
    delims = np.flatnonzero((buf == 60) | (buf == 34))  # every < and "
    is_lt = buf[delims] == 60
    lt = delims[is_lt]
    whole = np.frombuffer(text, np.uint8)
    regions = _specials(text, lt, whole[np.minimum(lt + 1, len(whole) - 1)])
    if regions and (regions[-1][1] < 0 or regions[-1][1] > stop):
        stop = regions.pop()[0]  # that one continues after the cut: read it with the next block
        if stop == 0:
            return None, 0
        keep = np.searchsorted(delims, stop)
        delims, is_lt = delims[:keep], is_lt[:keep]
    if first:
        declared = _ENCODING.match(text[: min(stop, 4096)].removeprefix(_BOM))
        if declared and declared.group(1).decode().lower() not in _UTF8:
            raise NotFast("an encoding other than UTF-8")
    _check_utf8(text, stop)
    if regions:  # no tags inside comments, PIs and the like
        inside = np.zeros(len(delims), bool)
        for begin, end in regions:
            inside[np.searchsorted(delims, begin) : np.searchsorted(delims, end)] = True
        delims, is_lt = delims[~inside], is_lt[~inside]
    starts = np.flatnonzero(is_lt)
    lead = _outside(text, 0, delims[starts[0]] if len(starts) else stop, regions)
    if lead.removeprefix(_BOM if first else b"").strip():
        raise NotFast("text outside the root element")
    if len(starts) == 0:
        return None, stop
    return _read_tags(text, stop, delims, starts, state), stop


def _outside(text: bytes, begin: int, end: int, regions: list[tuple[int, int]]) -> bytes:
    """``text[begin:end]`` without the comments, PIs and the like in it."""
    pieces, at = [], begin
    for start, stop in regions:
        if stop <= at or start >= end:
            continue
        pieces.append(text[at:start])
        at = stop
    pieces.append(text[at:end])
    return b"".join(pieces)


def _check_utf8(text, stop: int) -> None:
    """Raise NotFast unless ``text[:stop]`` is UTF-8 (checked by Arrow at memory speed)."""
    offsets = pa.py_buffer(np.array([0, stop], np.int64))
    whole = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), 1, [None, offsets, pa.py_buffer(text)]
    )
    try:
        whole.cast(pa.large_string())
    except pa.ArrowInvalid:
        raise NotFast("bytes that are not UTF-8") from None


def _read_tags(text, stop, delims, starts, state: _State) -> _Part:
    pos = delims[starts]
    segments = np.diff(np.append(starts, len(delims)))  # 1 + the quotes in each tag
    kind, name, canonical = _classify(text, stop, delims, starts, pos, segments)
    generic = np.flatnonzero(name < 0)
    extra = _read_generic(text, stop, pos, generic, kind, name, state)
    tokens = state.tokens
    roles = _structure(kind, name, state)
    state.tokens += len(kind)
    # Canonical attributes: keys and values sliced from the chunk.
    i = starts[canonical]
    quotes = (delims[i + 1], delims[i + 2], delims[i + 3], delims[i + 4])
    rank = np.full(len(kind), -1, np.int64)  # a tag's row among the canonical attributes
    rank[canonical] = np.arange(len(canonical))
    attributes = {}
    for role in ("event", "trace"):
        rows = roles[role + "_attributes"]
        fast = np.flatnonzero(rank[rows] >= 0)
        picked = rank[rows[fast]]
        q0, q1, q2, q3 = (q[picked] for q in quotes)
        table = pa.table(
            {
                "owner": pa.array(roles[role + "_owners"][fast], pa.int64()),
                "no": pa.array(rows[fast] + tokens, pa.int64()),
                "type": pa.array((name[rows[fast]] - ATTR0).astype(np.int8)),
                "key": _text(_views(text, q0 + 1, q1)),
                "value": _text(_views(text, q2 + 1, q3)),
                "line": pa.array(np.full(len(fast), -1, np.int64)),
            }
        )
        slow = np.flatnonzero(rank[rows] < 0)
        if len(slow):
            owners = roles[role + "_owners"][slow]
            table = pa.concat_tables(
                [table, _generic_rows(rows[slow], owners, tokens, name, extra)]
            )
        attributes[role] = table
    return _Part(
        traces=roles["traces"] + tokens,
        events=roles["events"] + tokens,
        event_traces=roles["event_traces"],
        event_attributes=attributes["event"],
        trace_attributes=attributes["trace"],
    )


def _classify(text, stop, delims, starts, pos, segments):
    """Kind and name id of every tag; -1 names for tags left to the regular expression.

    Returns also the tag numbers of canonical attributes ``<type key="k" value="v"/>``.
    """
    n = stop
    count = len(pos)
    kind = np.zeros(count, np.int8)
    name = np.full(count, -1, np.int16)
    if n < 24:
        return kind, name, np.zeros(0, np.int64)
    words = np.ndarray((n - 7,), "<u8", buffer=text, strides=(1,))  # 8 bytes at any offset
    room = pos + 17 <= n
    at = np.minimum(pos + 1, n - 16)
    first, second = words[at], words[at + 8]
    # Tags without quotes may be <event>, </trace>...; with four, attributes.
    plain = np.flatnonzero(room & (segments == 1))
    for pattern, tag_kind, tag_name in _SIMPLE:
        hit = plain[_matches(first[plain], second[plain], pattern)]
        kind[hit] = tag_kind
        name[hit] = tag_name
    quoted = np.flatnonzero(room & (segments == 5))
    head, tail16 = first[quoted], second[quoted]
    for pattern, tag_name in _ATTRIBUTES:
        name[quoted[_matches(head, tail16, pattern)]] = tag_name
    candidates = quoted[name[quoted] >= 0]
    i = starts[candidates]
    q1, q2, q3 = delims[i + 2], delims[i + 3], delims[i + 4]
    fits = q3 + 8 <= n
    ok = fits & (q2 - q1 == 8)
    ok &= _matches(words[np.minimum(q1, n - 8)], 0, b'" value=')
    tail = words[np.minimum(q3, n - 8)]
    ok &= _matches(tail, 0, b'"/>') | _matches(tail, 0, b'" />')  # both are common
    name[candidates[~ok]] = -1  # read by the regular expression instead
    kind[candidates] = EMPTY
    return kind, name, candidates[ok]


def _matches(first: np.ndarray, second: np.ndarray | int, pattern: bytes) -> np.ndarray:
    """Whether the 16 bytes (as two little-endian words) start with ``pattern``."""
    padded = pattern.ljust(16, b"\0")
    mask = (b"\xff" * len(pattern)).ljust(16, b"\0")
    value = np.frombuffer(padded, "<u8")
    masks = np.frombuffer(mask, "<u8")
    hit = (first & masks[0]) == value[0]
    if masks[1]:
        hit &= (second & masks[1]) == value[1]
    return hit


def _read_generic(
    text, stop, pos, generic, kind, name, state
) -> dict[int, tuple[str | None, str | None]]:
    """Read the other tags with a regular expression; returns attribute keys and values."""
    attributes: dict[int, tuple[str | None, str | None]] = {}
    ends = np.append(pos[1:], stop)
    names = state.names
    for tag in generic.tolist():
        try:
            piece = bytes(text[pos[tag] : ends[tag]]).decode("utf-8")
        except UnicodeDecodeError:
            raise NotFast("bytes that are not UTF-8") from None
        match = _TAG.match(piece)
        if match is None:
            raise NotFast("a tag the fast reader cannot read")
        closing, qname, attrs, empty = match.groups()
        if closing and (attrs or empty):
            raise NotFast("a malformed end tag")
        local = qname.rpartition(":")[2]
        kind[tag] = CLOSE if closing else EMPTY if empty else OPEN
        name[tag] = names.setdefault(local, len(names))
        if name[tag] in _ATTR_IDS and not closing:
            values = {}
            for key, double, single in _ATTR.findall(attrs):
                if key in values:
                    raise NotFast("an attribute given twice")
                try:
                    values[key] = attribute_value(double or single)
                except BadReference:
                    raise NotFast("an unknown entity reference") from None
            attributes[tag] = (values.get("key"), values.get("value"))
    return attributes


def _structure(kind: np.ndarray, name: np.ndarray, state: _State) -> dict[str, np.ndarray]:
    """Check the nesting of a chunk's tags and find the traces, events and their attributes.

    Tag numbers in the result are chunk-local; owners are global token numbers.
    """
    count = len(kind)
    delta = kind.astype(np.int64)
    after = state.depth + np.cumsum(delta)
    before = after - delta
    if count and after.min() < 0:
        raise NotFast("an end tag without a start tag")
    at_top = np.flatnonzero(before == 0)
    if len(at_top):
        if state.root_seen or len(at_top) > 1 or kind[at_top[0]] == CLOSE:
            raise NotFast("more than one root element")
        if name[at_top[0]] != LOG:
            raise NotFast("the root element is not <log>")
        state.root_seen = True
    _check_nesting(kind, name, before, after, state)
    index = np.arange(count)
    # The element each tag sits in at levels 2 and 3 (chunk-local, or -1: from earlier chunks).
    own2 = np.maximum.accumulate(np.where((kind == OPEN) & (after == 2), index, -1))
    own3 = np.maximum.accumulate(np.where((kind == OPEN) & (after == 3), index, -1))
    own2_name = np.where(own2 >= 0, name[own2], state.owner2_name)
    own2_token = np.where(own2 >= 0, own2 + state.tokens, state.owner2)
    in_trace = (before >= 2) & (own2_name == TRACE)
    starts = kind != CLOSE
    is_event = starts & (name == EVENT) & (before == 2) & in_trace
    own3_is_event = np.where(own3 >= 0, is_event[own3], state.owner3_is_event)
    own3_token = np.where(own3 >= 0, own3 + state.tokens, state.owner3)
    is_attribute = (name >= _ATTR_IDS.start) & (name < _ATTR_IDS.stop)
    if np.any(starts & (name == EVENT) & ~is_event & ((before == 1) | in_trace)):
        raise NotFast("an event outside a trace, or inside an event")
    if np.any(starts & in_trace & ((before >= 4) | ((before == 3) & ~own3_is_event))):
        raise NotFast("nested elements in a trace or an event")
    if np.any(starts & in_trace & is_attribute & ((kind == OPEN) | (name >= _NESTED_IDS.start))):
        raise NotFast("nested attributes")
    event_attributes = np.flatnonzero(starts & is_attribute & (before == 3) & in_trace)
    trace_attributes = np.flatnonzero(starts & is_attribute & (before == 2) & in_trace)
    traces = np.flatnonzero(starts & (name == TRACE) & (before == 1))
    events = np.flatnonzero(is_event)
    if count:
        state.owner2, state.owner2_name = int(own2_token[-1]), int(own2_name[-1])
        state.owner3, state.owner3_is_event = int(own3_token[-1]), bool(own3_is_event[-1])
    return {
        "traces": traces,
        "events": events,
        "event_traces": own2_token[events],
        "event_attributes": event_attributes,
        "event_owners": own3_token[event_attributes],
        "trace_attributes": trace_attributes,
        "trace_owners": own2_token[trace_attributes],
    }


def _check_nesting(kind, name, before, after, state: _State) -> None:
    """Every end tag closes the element opened last at its level; carry the open ones on.

    Ordered by level (stably), a well-nested sequence alternates start and end
    tags at each level, so each end tag must follow a start tag of its name.
    """
    tags = np.flatnonzero(kind != EMPTY)
    levels = np.concatenate(
        [np.arange(1, state.depth + 1), np.where(kind[tags] == OPEN, after[tags], before[tags])]
    )
    kinds = np.concatenate([np.ones(state.depth, np.int8), kind[tags]])
    names = np.concatenate([np.array(state.stack, np.int16), name[tags]])
    order = np.argsort(levels, kind="stable")
    levels, kinds, names = levels[order], kinds[order], names[order]
    ends = np.flatnonzero(kinds == CLOSE)
    if len(ends):
        previous = ends - 1
        if (
            previous[0] < 0
            or np.any(kinds[previous] != OPEN)
            or np.any(levels[previous] != levels[ends])
            or np.any(names[previous] != names[ends])
        ):
            raise NotFast("an end tag that does not match its start tag")
    depth = int(after[-1]) if len(after) else state.depth
    last = np.searchsorted(levels, np.arange(1, depth + 1), side="right") - 1
    state.depth, state.stack = depth, names[last].tolist()


# Masks keeping the low n bytes of a word, for n = 0 to 8.
_LOW_BYTES = np.array([(1 << (8 * n)) - 1 for n in range(9)], np.uint64)


def _views(text, begin: np.ndarray, end: np.ndarray) -> pa.Array:
    """The byte ranges ``[begin, end)`` of ``text`` as an Arrow string-view array (no copy).

    A view is 16 bytes: the length (4), then up to 12 bytes of the string
    inline, zero-padded; a longer string has its first 4 bytes, a buffer index
    (0) and its offset instead.
    """
    count = len(begin)
    if count == 0:
        return pa.array([], pa.string_view())
    length = end - begin
    words = np.ndarray((len(text) - 7,), "<u8", buffer=text, strides=(1,))
    last = len(text) - 8
    head = words[np.minimum(begin, last)]  # bytes 0-7 of the string
    tail = words[np.minimum(begin + 4, last)]  # bytes 4-11
    inline = length <= 12
    views = np.empty((count, 2), "<u8")
    # Word 0: the length, then bytes 0-3 (all four of them when not inline: the prefix).
    kept = _LOW_BYTES[np.where(inline, np.minimum(length, 4), 4)]
    views[:, 0] = length.astype(np.uint64) | ((head & kept) << np.uint64(32))
    # Word 1: bytes 4-11 inline, else buffer 0 and the offset.
    inline_tail = tail & _LOW_BYTES[np.clip(length - 4, 0, 8)]
    views[:, 1] = np.where(inline, inline_tail, begin.astype(np.uint64) << np.uint64(32))
    return pa.StringViewArray.from_buffers(
        pa.string_view(), count, [None, pa.py_buffer(views), pa.py_buffer(text)]
    )


def _text(views: pa.Array) -> pa.Array:
    """Views as plain strings, XML's whitespace rules and references applied.

    The chunk is valid UTF-8 and views start and end at quotes, so they are too.
    """
    strings = views.cast(pa.string())
    if len(strings) == 0:
        return strings
    offsets = np.frombuffer(strings.buffers()[1], np.int32)[: len(strings) + 1]
    data = np.frombuffer(strings.buffers()[2], np.uint8)[: offsets[-1]]
    # "&" starts a reference; tabs and line ends in a value read as spaces.
    special = np.flatnonzero((data == 38) | (data == 9) | (data == 10) | (data == 13))
    if len(special) == 0:
        return strings
    values = strings.to_pylist()
    for i in np.unique(np.searchsorted(offsets, special, side="right") - 1).tolist():
        try:
            values[i] = attribute_value(values[i])
        except BadReference:
            raise NotFast("an unknown entity reference") from None
    return pa.array(values, pa.string())


def _generic_rows(tags, owners, tokens, name, extra) -> pa.Table:
    keys, values = [], []
    for tag in tags.tolist():
        key, value = extra[tag]
        if key is None or value is None:
            raise NotFast("an attribute without a key or a value")
        keys.append(key)
        values.append(value)
    return pa.table(
        {
            "owner": pa.array(owners, pa.int64()),
            "no": pa.array(tags + tokens, pa.int64()),
            "type": pa.array((name[tags] - ATTR0).astype(np.int8)),
            "key": pa.array(keys, pa.string()),
            "value": pa.array(values, pa.string()),
            "line": pa.array(np.full(len(tags), -1, np.int64)),
        },
        schema=ATTRIBUTE_SCHEMA,
    )


def _empty_part() -> _Part:
    none = np.zeros(0, np.int64)
    empty = ATTRIBUTE_SCHEMA.empty_table()
    return _Part(none, none, none, empty, empty)


def _combine(parts: list[_Part]) -> ParsedLog:
    """One ParsedLog: token numbers become event and trace numbers."""
    traces = np.concatenate([p.traces for p in parts])
    events = np.concatenate([p.events for p in parts])
    event_traces = np.searchsorted(traces, np.concatenate([p.event_traces for p in parts]))
    event_attributes = pa.concat_tables([p.event_attributes for p in parts])
    trace_attributes = pa.concat_tables([p.trace_attributes for p in parts])

    def renumber(table: pa.Table, owners: np.ndarray) -> pa.Table:
        numbers = np.searchsorted(owners, table["owner"].to_numpy())
        return table.set_column(0, "owner", pa.array(numbers, pa.int64()))

    no_lines = pa.array(np.full(len(events), -1, np.int64))
    return ParsedLog(
        events=pa.table({"trace": pa.array(event_traces, pa.int64()), "line": no_lines}),
        traces=pa.table({"line": pa.array(np.full(len(traces), -1, np.int64))}),
        event_attributes=renumber(event_attributes, events),
        trace_attributes=renumber(trace_attributes, traces),
    )

"""The store's JSON encoder: orjson's speed with the standard library's rules.

``eventlab.events.json_encoder`` encodes with orjson and lets the standard
encoder decide wherever the two could differ (NaN, big integers, non-string
keys, deep nesting). These tests pin that the stored text always decodes to
what :mod:`json` would have stored, and that bad values are refused the same
way on both paths.
"""

from __future__ import annotations

import enum
import json
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eventlab as el
from eventlab.events import json_encoder
from eventlab.journal import _side_json

STANDARD = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too: orjson refuses those, the fallback takes them
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=20,
)
_payloads = st.dictionaries(st.text(max_size=6), _values, max_size=6)


def _has_float(value: object) -> bool:
    if isinstance(value, dict):
        return any(map(_has_float, value.values()))
    if isinstance(value, list):
        return any(map(_has_float, value))
    return isinstance(value, float)


@settings(max_examples=400, deadline=None)
@given(_payloads)
def test_encoded_payload_decodes_to_what_the_standard_library_stores(payload):
    text = json_encoder(payload)
    # repr tells -0.0 from 0.0 and 1 from 1.0, which == would not.
    assert repr(json.loads(text)) == repr(json.loads(STANDARD(payload)))
    if not _has_float(payload):
        # Floats may be spelt differently (1e-5 and 1e-05); nothing else may.
        assert text == STANDARD(payload)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("neighbour", [{}, {"note": None}])
def test_non_finite_floats_are_refused_with_or_without_a_null_beside_them(bad, neighbour):
    # orjson would write NaN as null; the encoder must notice and refuse it.
    store = el.EventStore()
    with pytest.raises(el.InvalidEventError, match=r"events\[0\]\.data\['ratio'\] is not JSON"):
        store.append("s-1", el.Event("Measured", {**neighbour, "ratio": bad}))
    assert store.head == 0


def test_values_orjson_refuses_are_stored_as_the_standard_library_stores_them():
    store = el.EventStore()
    deep: dict = {"leaf": 1}
    for _ in range(300):  # deeper than orjson's limit of 254
        deep = {"n": deep}
    data = {"big": 2**80, "negative": -(2**70), "deep": deep}
    store.append("s-1", el.Event("Counted", data))
    stored = store.read_stream("s-1")[0]
    assert stored.data == data
    assert stored.data["big"] == 2**80 and isinstance(stored.data["big"], int)
    raw = store.sql("SELECT data::VARCHAR AS data FROM events")["data"][0]
    assert raw == STANDARD(data)


def test_non_string_keys_become_strings_as_json_makes_them():
    store = el.EventStore()
    store.append("s-1", el.Event("Keyed", {1: "one", 2.5: "half", False: "no", None: "none"}))
    stored = store.read_stream("s-1")[0].data
    assert stored == {"1": "one", "2.5": "half", "false": "no", "null": "none"}


class Colour(enum.Enum):
    RED = "red"
    NESTED = {"hue": 1}


@pytest.mark.parametrize("neighbour", [{}, {"note": None}])
def test_uuids_and_enum_members_are_stored_the_same_way_on_both_paths(neighbour):
    # A None in the payload sends it through the standard encoder: same result.
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    store = el.EventStore()
    data = {**neighbour, "id": ident, "colour": Colour.RED, "nested": Colour.NESTED}
    store.append("s-1", el.Event("Tagged", data))
    assert store.read_stream("s-1")[0].data == {
        **neighbour,
        "id": "12345678-1234-5678-1234-567812345678",
        "colour": "red",
        "nested": {"hue": 1},
    }


@dataclass
class Point:
    x: int


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (datetime(2024, 1, 1, tzinfo=UTC), "datetime"),
        (Point(1), "Point"),
        ({1, 2}, "set"),
        (Colour, "EnumType"),  # the enum class itself, not a member
    ],
)
def test_values_json_cannot_hold_are_refused_by_name(value, shown):
    store = el.EventStore()
    with pytest.raises(el.InvalidEventError) as info:
        store.append("s-1", el.Event("Bad", {"ok": 1, "note": None, "bad": value}))
    message = str(info.value)
    assert "events[0].data['bad'] is not JSON-serialisable" in message
    assert shown in message
    assert store.head == 0


def test_a_payload_that_refers_to_itself_is_refused():
    store = el.EventStore()
    data: dict = {"a": 1}
    data["self"] = data
    with pytest.raises(el.InvalidEventError, match="nested too deeply or refers to itself"):
        store.append("s-1", el.Event("Loop", data))
    assert store.head == 0


@pytest.mark.parametrize(
    "side",
    [
        [("commands", ("c-1", 1, "PlaceOrder", '{"a":"\\u00e9"}', None, 1_700_000_000_000_000))],
        [("command_history", ("c-1", 2**70, "queued", 0, 1, None))],  # the fallback path
    ],
)
def test_side_rows_are_written_as_the_standard_library_writes_them(side):
    assert _side_json(side) == json.dumps(side, separators=(",", ":")).encode()


_LONE = json.loads('"\\udc80"')  # a lone (low) surrogate, as json.loads makes of "\udc80"


@pytest.mark.parametrize(
    "payload, path",
    [
        ({"a": _LONE}, "data['a']"),
        ({"a": [1, "x" + _LONE]}, "data['a'][1]"),
        ({_LONE: 1}, "data key '\\udc80'"),
        ({"big": 2**70, "a": _LONE}, "data['a']"),  # on the standard encoder's path anyway
        ({"a": None, "b": {"c": _LONE}}, "data['b']['c']"),  # beside a null
    ],
)
def test_a_lone_surrogate_is_refused_on_every_path(payload, path):
    # orjson refuses it and the standard encoder would write it: text UTF-8 cannot hold.
    with pytest.raises(ValueError, match="lone surrogate"):
        json_encoder(payload)
    with pytest.raises(el.InvalidEventError) as info:
        el.events.to_json(payload, "data")
    assert str(info.value).startswith(f"{path} holds a lone surrogate")


def test_text_beyond_the_basic_plane_is_stored_as_it_is():
    payload = {
        "emoji": "🙂",
        "han": "漢字",
        "pair": "\ud83d\ude42".encode("utf-16", "surrogatepass").decode("utf-16"),
    }
    assert json_encoder(payload) == STANDARD(payload)
    assert json.loads(json_encoder(payload)) == payload


@pytest.mark.parametrize("key", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_float_key_is_named(key):
    with pytest.raises(el.InvalidEventError, match=f"^data key {key!r} is not JSON-serialisable"):
        el.events.to_json({"ok": 1, key: 2}, "data")

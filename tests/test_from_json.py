"""from_json decodes exactly as json.loads does: same values, same types, same errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventlab.events import from_json
from eventlab.reading import decode_payloads, prepare_ahead, with_payload_text
from eventlab.schema import rows_to_batch


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (1 and 1.0 differ, NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


def decodes_alike(text: str) -> None:
    expected = json.loads(text)
    assert same(from_json(text), expected)
    if text.isascii() or "\ud800" not in text:
        assert same(from_json(text.encode("utf-8", "surrogatepass")), expected)


json_values = st.recursive(
    st.none()
    | st.booleans()
    # Integers well beyond 64 bits, where orjson would give a float.
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats()  # NaN and infinities too: json.dumps writes NaN, Infinity
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(json_values, st.booleans())
def test_any_json_value_decodes_as_the_standard_library_does(value, ascii_only):
    decodes_alike(json.dumps(value, ensure_ascii=ascii_only))


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 18446744073709551616}',  # beyond unsigned 64 bits: orjson gives a float
        '{"a": -9223372036854775809}',  # below signed 64 bits: likewise
        '{"a": 123456789012345678901234567890}',
        '{"a": 9223372036854775807, "b": -9223372036854775808}',  # the limits: exact
        '{"a": "an id of 1234567890123456789012 digits"}',  # digits in a string
        '{"a": 0.12345678901234567890123}',
        '{"a": NaN, "b": Infinity, "c": -Infinity}',
        '{"a": 1e400}',  # overflows to inf in json.loads; orjson refuses it
        '{"a": 1e-400}',
        '{"a": -0.0, "b": -0}',
        '{"a": "\\ud800"}',  # an escaped lone surrogate
        '{"a": "\\u0000"}',
        '{"a": 1, "a": 2}',  # a repeated key: the last one wins
        " [1, 2.5, true, null] ",
        '"text"',
        "[" * 300 + "]" * 300,
    ],
)
def test_edge_cases_decode_as_the_standard_library_does(text):
    decodes_alike(text)


def test_nesting_deeper_than_orjson_goes_fails_as_json_loads_fails():
    text = "[" * 1100 + "]" * 1100
    with pytest.raises(RecursionError):
        json.loads(text)
    with pytest.raises(RecursionError):
        from_json(text)


def test_a_str_holding_a_lone_surrogate_decodes():
    # Not UTF-8 at all: json.loads reads the str as it is.
    assert from_json('{"a": "\ud800"}') == {"a": "\ud800"}


@pytest.mark.parametrize("text", ["{", '{"a": 1,}', "[1] 2", "", "nul"])
def test_bad_json_raises_what_json_loads_raises(text):
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as raised:
        from_json(text)
    assert str(raised.value) == str(expected.value)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.dictionaries(st.text(max_size=5), json_values, max_size=4), max_size=20))
def test_a_batch_of_payloads_decodes_in_one_call_as_each_would(payloads):
    texts = [json.dumps(payload) for payload in payloads]
    row = (0, "e", "s", 1, "T", "{}", "{}", None, None, 0, 0, 1)
    batch = rows_to_batch([(*row[:5], text, *row[6:]) for text in texts])
    expected = [json.loads(text) for text in texts]
    # Prepared on the caller's thread (digits looked for by from_json) and as a
    # read-ahead thread prepares it (digits looked for by Arrow).
    for prepared in (with_payload_text(batch), prepare_ahead(batch)):
        assert prepared.batch is batch
        assert same(decode_payloads(prepared), expected)


@pytest.mark.parametrize(
    "payload, long_digits",
    [
        ('{"a": 12345678901234567890}', True),
        ('{"a": "1234567890123456789"}', True),  # in a string: looked at all the same
        ('{"a": 123456789012345678}', False),  # 18 digits: within 64 bits
        ('{"a": 1.5, "b": "x"}', False),
    ],
)
def test_a_read_ahead_thread_looks_for_long_digit_runs(payload, long_digits):
    batch = rows_to_batch([(1, "e", "s-1", 1, "T", payload, "{}", None, None, 0, 0, 1)])
    prepared = prepare_ahead(batch)
    assert prepared.long_digits is long_digits
    assert prepared.text == ("[" + payload + "]").encode()
    assert same(decode_payloads(prepared), [json.loads(payload)])

"""diff(a, b): exact change tables for every kind of state, and a round-trip property."""

from __future__ import annotations

import ast
import copy
import re
from collections import namedtuple
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

from eventlab.aggregate import Aggregate
from eventlab.diff import diff

NAN = float("nan")


def frame(*rows: tuple[str, Any, Any, str]) -> pd.DataFrame:
    """The expected table, built by hand: one (path, before, after, kind) tuple per row."""
    return pd.DataFrame(list(rows), columns=["path", "before", "after", "kind"], dtype=object)


def check(a: Any, b: Any, *rows: tuple[str, Any, Any, str]) -> None:
    actual = diff(a, b)
    assert_frame_equal(actual, frame(*rows))
    # assert_frame_equal lets 1 == 1.0 == True pass: the values must be the very types given.
    assert [type(v) for v in actual.before] == [type(row[1]) for row in rows]
    assert [type(v) for v in actual.after] == [type(row[2]) for row in rows]


# ---------------------------------------------------------------------- dicts and order


def test_nested_dicts():
    a = {"id": 7, "customer": {"name": "Ada", "address": {"city": "Paris", "zip": "75001"}}}
    b = {"id": 7, "customer": {"name": "Ada", "address": {"city": "Lyon"}, "vip": True}}
    check(
        a,
        b,
        ("customer.address.city", "Paris", "Lyon", "changed"),
        ("customer.address.zip", "75001", None, "removed"),
        ("customer.vip", None, True, "added"),
    )


def test_rows_are_depth_first_in_key_order_of_a_then_new_keys_of_b():
    a = {"z": 1, "m": {"b": 1, "a": 2}, "k": [1]}
    b = {"new": 0, "m": {"c": 4, "a": 3}, "z": 2, "k": [1, 2]}
    check(
        a,
        b,
        ("z", 1, 2, "changed"),
        ("m.b", 1, None, "removed"),
        ("m.a", 2, 3, "changed"),
        ("m.c", None, 4, "added"),
        ("k[1]", None, 2, "added"),
        ("new", None, 0, "added"),
    )


def test_keys_that_are_not_identifiers_are_quoted():
    check(
        {"totals": {"EUR/USD": 1.1, 2024: "a", "ok": 1}},
        {"totals": {"EUR/USD": 1.2, 2024: "b", "ok": 2}},
        ("totals['EUR/USD']", 1.1, 1.2, "changed"),
        ("totals[2024]", "a", "b", "changed"),
        ("totals.ok", 1, 2, "changed"),
    )
    check({"a b": 1}, {}, ("['a b']", 1, None, "removed"))


# ---------------------------------------------------------------------- dataclasses and objects


@dataclass
class Address:
    city: str
    zip: str = "00000"


@dataclass
class Customer:
    name: str
    address: Address
    tags: list[str] = field(default_factory=list)


def test_dataclasses_nested():
    a = Customer("Ada", Address("Paris"), ["new"])
    b = Customer("Ada", Address("Lyon", "69001"), ["new", "vip"])
    check(
        a,
        b,
        ("address.city", "Paris", "Lyon", "changed"),
        ("address.zip", "00000", "69001", "changed"),
        ("tags[1]", None, "vip", "added"),
    )


def test_dataclass_inside_a_dict_and_values_are_not_copied():
    address = Address("Lyon")
    a = {"order": 1, "ship_to": Address("Paris")}
    b = {"order": 1, "ship_to": address, "bill_to": address}
    check(
        a,
        b,
        ("ship_to.city", "Paris", "Lyon", "changed"),
        ("bill_to", None, Address("Lyon"), "added"),
    )
    assert diff(a, b).after[1] is address


class Counter(Aggregate):
    def __init__(self, id: str, count: int = 0, **extra: Any):
        super().__init__(id)
        self.count = count
        self._cache = object()  # private: never part of the state
        vars(self).update(extra)

    def __eq__(self, other: object) -> bool:  # entity equality by id must not hide changes
        return isinstance(other, Counter) and other.id == self.id

    __hash__ = object.__hash__


class Plain:
    def __init__(self, **attributes: Any):
        vars(self).update(attributes)
        self._secret = id(self)


def test_aggregates_compare_their_public_attributes():
    check(
        Counter("c-1", 1, lines=[{"sku": "A"}]),
        Counter("c-1", 3, lines=[{"sku": "B"}], note="x"),
        ("count", 1, 3, "changed"),
        ("lines[0].sku", "A", "B", "changed"),
        ("note", None, "x", "added"),
    )
    check(Counter("c-1", 2), Counter("c-1", 2))


def test_objects_with_a_dict_compare_their_public_attributes():
    check(
        {"state": Plain(status="open", total=5)},
        {"state": Plain(status="paid", total=5)},
        ("state.status", "open", "paid", "changed"),
    )


class Money:
    """A value object: it defines ==, so it is a leaf."""

    def __init__(self, amount: int, currency: str):
        self.amount, self.currency = amount, currency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and vars(other) == vars(self)

    __hash__ = None


Point = namedtuple("Point", "x y")


class Status(Enum):
    OPEN = "open"
    PAID = "paid"


def test_value_objects_enums_and_namedtuples():
    eur, usd = Money(5, "EUR"), Money(5, "USD")
    check({"price": eur}, {"price": Money(5, "EUR")})
    check({"price": eur}, {"price": usd}, ("price", eur, usd, "changed"))
    check({"s": Status.OPEN}, {"s": Status.PAID}, ("s", Status.OPEN, Status.PAID, "changed"))
    check(Point(1, 2), Point(1, 3), ("y", 2, 3, "changed"))


# ---------------------------------------------------------------------- lists


def test_lists_grow_and_shrink_element_wise():
    check(
        {"items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 1}]},
        {"items": [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 1}, {"sku": "C", "qty": 1}]},
        ("items[0].qty", 1, 2, "changed"),
        ("items[2]", None, {"sku": "C", "qty": 1}, "added"),
    )
    check(
        [1, 2, 3, 4],
        [1, 5],
        ("[1]", 2, 5, "changed"),
        ("[2]", 3, None, "removed"),
        ("[3]", 4, None, "removed"),
    )
    check([[1], []], [[1, 2]], ("[0][1]", None, 2, "added"), ("[1]", [], None, "removed"))


def test_lists_and_tuples_compare_alike():
    check({"xs": (1, 2)}, {"xs": [1, 2]})
    check({"xs": (1, 2)}, {"xs": [1, 3]}, ("xs[1]", 2, 3, "changed"))


# ---------------------------------------------------------------------- types, None, NaN


@dataclass
class Town:
    city: str
    zip: str = "00000"


def test_a_value_that_changes_shape_is_one_changed_row():
    check({"a": {"x": 1}}, {"a": 1}, ("a", {"x": 1}, 1, "changed"))
    check({"a": [1]}, {"a": {"0": 1}}, ("a", [1], {"0": 1}, "changed"))
    check({"a": "12"}, {"a": [1, 2]}, ("a", "12", [1, 2], "changed"))
    check(
        {"a": Address("Paris")},
        {"a": Town("Paris")},
        ("a", Address("Paris"), Town("Paris"), "changed"),
    )
    check(
        {"a": {"city": "Paris"}},
        {"a": Town("Paris")},
        ("a", {"city": "Paris"}, Town("Paris"), "changed"),
    )


def test_top_level_leaves_use_the_empty_path():
    check(1, 2, ("", 1, 2, "changed"))
    check(None, {"a": 1}, ("", None, {"a": 1}, "changed"))
    check("x", "x")


def test_none_is_a_value_and_a_missing_key_is_not():
    check({"a": None}, {}, ("a", None, None, "removed"))
    check({}, {"a": None}, ("a", None, None, "added"))
    check({"a": None}, {"a": 0}, ("a", None, 0, "changed"))
    check({"a": 0}, {"a": None}, ("a", 0, None, "changed"))
    check(None, None)


def test_nan_equals_nan():
    check({"x": float("nan"), "y": [NAN]}, {"x": float("nan"), "y": [float("nan")]})
    check({"x": NAN}, {"x": 1.0}, ("x", NAN, 1.0, "changed"))
    check({"x": None}, {"x": NAN}, ("x", None, NAN, "changed"))
    check({"t": pd.NaT, "n": pd.NA}, {"t": pd.NaT, "n": pd.NA})


def test_identical_inputs_give_an_empty_frame_with_the_four_columns():
    state = {"a": [1, {"b": Address("Paris")}], "c": Counter("c-1", 2)}
    for a, b in [(state, state), (state, copy.deepcopy(state))]:
        result = diff(a, b)
        assert list(result.columns) == ["path", "before", "after", "kind"]
        assert len(result) == 0
        assert_frame_equal(result, frame())


# ---------------------------------------------------------------------- awkward input


class Touchy:
    def __eq__(self, other: object) -> bool:
        raise TypeError("no comparing")

    __hash__ = None


def test_leaves_whose_equality_is_awkward_never_raise():
    check({"v": np.array([1, 2])}, {"v": np.array([1, 2])})
    a, b = np.array([1, 2]), np.array([1, 3])
    result = diff({"v": a}, {"v": b})
    assert list(result.path) == ["v"] and result.before[0] is a and result.after[0] is b
    df = pd.DataFrame({"x": [1]})
    check({"f": df}, {"f": df.copy()})
    touchy, other = Touchy(), Touchy()
    check({"t": touchy}, {"t": other}, ("t", touchy, other, "changed"))


def test_self_referencing_states_do_not_loop():
    a: dict[str, Any] = {"n": 1}
    a["self"] = a
    b: dict[str, Any] = {"n": 2}
    b["self"] = b
    check(a, b, ("n", 1, 2, "changed"))
    check(a, copy.deepcopy(a))
    finite = {"n": 1, "self": {"n": 1, "self": {"n": 3}}}
    check(a, finite, ("self.self.n", 1, 3, "changed"), ("self.self.self", a, None, "removed"))


def test_deep_nesting_does_not_hit_the_recursion_limit():
    a: dict[str, Any] = {"v": 1}
    b: dict[str, Any] = {"v": 2}
    for _ in range(5000):
        a, b = {"d": a}, {"d": b}
    check(a, b, ("d." * 5000 + "v", 1, 2, "changed"))


# ---------------------------------------------------------------------- property: diff is a patch


TOKEN = re.compile(r"""\.?([A-Za-z_]\w*)|\[(-?\d+|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")\]""", re.A)


def parse(path: str) -> list[str | int]:
    """``a.b[0]['c d']`` -> ``['a', 'b', 0, 'c d']``."""
    tokens: list[str | int] = []
    position = 0
    while position < len(path):
        match = TOKEN.match(path, position)
        assert match, f"unparseable path {path!r} at {position}"
        tokens.append(match[1] if match[1] is not None else ast.literal_eval(match[2]))
        position = match.end()
    return tokens


def apply(state: Any, changes: pd.DataFrame) -> Any:
    """Patch a copy of ``state`` with the rows of a diff, checking each ``before`` on the way."""
    root = [copy.deepcopy(state)]  # a box, so the top-level path "" is a key like any other
    rows = list(changes.itertuples(index=False))
    # Removed list elements are a tail: delete them last and from the end, so indices hold.
    trailing = [r for r in rows if r.kind == "removed" and isinstance(parse(r.path)[-1], int)]
    for row in [r for r in rows if r not in trailing] + trailing[::-1]:
        *parents, last = [0, *parse(row.path)]
        container = root
        for token in parents:
            container = container[token]
        if row.kind == "added":
            if isinstance(container, list):
                assert last == len(container)
                container.append(row.after)
            else:
                assert last not in container
                container[last] = row.after
        else:
            assert container[last] == row.before
            if row.kind == "removed":
                assert not isinstance(container, list) or last == len(container) - 1
                del container[last]
            else:
                container[last] = row.after
    return root[0]


keys = st.text(alphabet="ab_1 .'\"[]\\", max_size=3)
leaves = st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False)
leaves |= st.text(alphabet="xy", max_size=2)
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=25,
)
states = st.dictionaries(keys, json_values, max_size=5)


def mutate(draw: Any, value: Any) -> Any:
    """A variant of ``value`` that keeps much of its structure, so that diffs go deep."""
    action = draw(st.sampled_from(["keep", "replace", "walk", "walk"]))
    if action == "replace":
        return draw(json_values)
    if action == "keep" or not isinstance(value, dict | list):
        return value
    if isinstance(value, list):
        items = [mutate(draw, item) for item in value]
        return items[: draw(st.integers(0, len(items)))] + draw(st.lists(json_values, max_size=2))
    kept = {key: mutate(draw, item) for key, item in value.items() if draw(st.integers(0, 4))}
    return kept | draw(st.dictionaries(keys, json_values, max_size=2))


@st.composite
def related_states(draw: Any) -> tuple[dict, dict]:
    a = draw(states)
    return a, mutate(draw, a)


@settings(max_examples=200, deadline=None)
@given(st.tuples(states, states) | related_states())
def test_applying_the_diff_to_a_gives_b(pair):
    a, b = pair
    assert apply(a, diff(a, b)) == b


@settings(max_examples=100, deadline=None)
@given(states)
def test_a_state_has_no_diff_with_itself_or_its_copy(a):
    assert diff(a, a).empty
    assert diff(a, copy.deepcopy(a)).empty
    assert list(diff(a, a).columns) == ["path", "before", "after", "kind"]


def test_parse_reads_every_kind_of_path():
    assert parse("") == []
    assert parse("a.b[0]['c d'][\"it's\"]") == ["a", "b", 0, "c d", "it's"]
    assert [parse(p) for p in diff({"x.y": [{"'": 1}]}, {"x.y": [{"'": 2}]}).path] == [
        ["x.y", 0, "'"]
    ]


@pytest.mark.parametrize("a, b", [({"a": [1, 2, 3]}, {"a": [1]}), ({"a": 1}, {"b": {"c": []}})])
def test_apply_helper_round_trips_examples(a, b):
    assert apply(a, diff(a, b)) == b
    assert apply(b, diff(b, a)) == a

"""Field-level differences between two states: what an event (or a revert) changed."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from enum import Enum
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from .aggregate import Aggregate

COLUMNS = ["path", "before", "after", "kind"]
_MISSING = object()  # a key or index that one side does not have (unlike a value of None)


def diff(a: Any, b: Any) -> pd.DataFrame:
    """List the field-level changes that turn state ``a`` into state ``b``.

    States are dicts (any mapping), dataclasses, objects such as aggregates (their
    public attributes: ``vars(obj)`` without names starting with ``_``), lists and
    tuples, nested in any combination. Containers are walked; everything else is a
    leaf compared with ``==``.

    Parameters
    ----------
    a, b : Any
        The state before and the state after.

    Returns
    -------
    pandas.DataFrame
        One row per changed leaf, with columns ``path``, ``before``, ``after`` and
        ``kind`` (``"added"``, ``"removed"`` or ``"changed"``). Rows are depth-first:
        the keys of ``a`` in their order, then the keys only ``b`` has. Identical
        states give an empty frame with the same four columns.

    Notes
    -----
    - Paths join keys with dots and list indices in brackets: ``items[0].qty``. A
      key that is not a Python identifier is quoted, as in ``totals['EUR/USD']``.
      Two top-level leaves that differ, as in ``diff(1, 2)``, give path ``""``.
    - An added or removed key or list element is one row holding the whole value
      (``None`` on the missing side); a key holding ``None`` is not a missing key.
    - A value whose shape changes (dict to int, list to dict, one class to
      another) is one ``"changed"`` row. Lists and tuples compare alike, and so do
      mappings of different types, so a state equals its own JSON round trip.
    - NaN equals NaN (likewise NaT and ``pd.NA``): a missing measurement that
      stays missing is not a change. A leaf whose ``==`` raises counts as changed.
    - ``before`` and ``after`` are the objects from ``a`` and ``b``, not copies.
    - Self-referencing states do not loop: a reference back to a pair of objects
      already being compared counts as unchanged, since any difference between
      them is reported where the walk first met them.

    Examples
    --------
    >>> import eventlab as el
    >>> before = {"status": "open", "items": [{"sku": "A", "qty": 1}]}
    >>> after = {"status": "paid", "items": [{"sku": "A", "qty": 2}], "paid_by": "card"}
    >>> el.diff(before, after)
               path before after     kind
    0        status   open  paid  changed
    1  items[0].qty      1     2  changed
    2       paid_by   None  card    added
    """
    rows = list(_changes(a, b))
    return pd.DataFrame(rows, columns=COLUMNS, dtype=object)


def _changes(a: Any, b: Any) -> Iterator[tuple[str, Any, Any, str]]:
    # An explicit stack instead of recursion: deep states cannot hit the recursion limit.
    stack: list[tuple[str, Any, Any, tuple[tuple[int, int], ...]]] = [("", a, b, ())]
    while stack:
        path, x, y, walking = stack.pop()
        if x is _MISSING:
            yield path, None, y, "added"
        elif y is _MISSING:
            yield path, x, None, "removed"
        elif x is y:
            continue
        elif (shape := _shape(x)) is not None and shape == _shape(y):
            pair = (id(x), id(y))
            if pair in walking:  # a cycle back to objects already being compared
                continue
            children = _children(path, x, y) if shape == "sequence" else _fields(path, x, y)
            stack.extend(
                (child, before, after, (*walking, pair))
                for child, before, after in reversed(children)
            )
        elif not _same(x, y):
            yield path, x, y, "changed"


def _shape(value: Any) -> object:
    """What kind of container ``value`` is (None for a leaf); equal shapes are walked."""
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, tuple) and hasattr(value, "_asdict"):  # a namedtuple: fields by name
        return type(value)
    if isinstance(value, list | tuple):
        return "sequence"
    if isinstance(value, Aggregate) or (
        dataclasses.is_dataclass(value) and not isinstance(value, type)
    ):
        return type(value)
    if (
        hasattr(value, "__dict__")
        # A class with its own == is a value object (a DataFrame, say): compare it whole.
        and type(value).__eq__ is object.__eq__
        and not isinstance(value, type | ModuleType | Enum | BaseException)
        and not callable(value)
    ):
        return type(value)
    return None


def _as_mapping(value: Any) -> Mapping[Any, Any]:
    if isinstance(value, Mapping):
        return value
    if isinstance(value, tuple):
        return value._asdict()
    if dataclasses.is_dataclass(value):
        # getattr, not dataclasses.asdict: asdict deep-copies and recurses by itself.
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    return {key: item for key, item in vars(value).items() if not key.startswith("_")}


def _fields(path: str, x: Any, y: Any) -> list[tuple[str, Any, Any]]:
    before, after = _as_mapping(x), _as_mapping(y)
    children = [(_key_path(path, key), before[key], after.get(key, _MISSING)) for key in before]
    children += [(_key_path(path, key), _MISSING, after[key]) for key in after if key not in before]
    return children


def _children(path: str, x: Any, y: Any) -> list[tuple[str, Any, Any]]:
    return [
        (
            f"{path}[{index}]",
            x[index] if index < len(x) else _MISSING,
            y[index] if index < len(y) else _MISSING,
        )
        for index in range(max(len(x), len(y)))
    ]


def _key_path(path: str, key: Any) -> str:
    if isinstance(key, str) and key.isidentifier():
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


def _same(x: Any, y: Any) -> bool:
    if _is_missing_value(x) and _is_missing_value(y):
        return True
    try:
        return bool(x == y)
    except Exception:  # element-wise == (NumPy arrays) has no single truth value
        try:
            return bool(np.array_equal(x, y))
        except Exception:
            return False


def _is_missing_value(value: Any) -> bool:
    """NaN, NaT or pd.NA (but not None, which is a value of its own here)."""
    return value is not None and pd.api.types.is_scalar(value) and bool(pd.isna(value))

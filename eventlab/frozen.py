"""Fast constructors for frozen, slotted dataclasses built on every command or event.

The ``__init__`` a frozen dataclass generates sets each field through
``object.__setattr__`` (its own ``__setattr__`` refuses), which costs about as
much as the rest of the object. A class made many times per command writes its
own ``__init__`` instead and fills its slots through their descriptors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class _NewDict:
    """The default of a dict field in a hand-written ``__init__``: a new dict per
    instance, as ``field(default_factory=dict)`` says (``is`` tells it apart)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "dict()"  # how the default shows in help() and inspect.signature


NEW_DICT: Any = _NewDict()


def slot_setters(cls: type, *names: str) -> tuple[Callable[[Any, Any], None], ...]:
    """The setters of the slots ``names`` of ``cls``, in that order.

    ``setter(instance, value)`` fills the slot without going through the class's
    ``__setattr__``, so it works on a frozen dataclass (inside its ``__init__``).
    """
    return tuple(vars(cls)[name].__set__ for name in names)

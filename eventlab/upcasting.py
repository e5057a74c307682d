"""Schema evolution by upcasting: old event shapes are converted when read, never rewritten.

Register one step per schema version with :func:`upcaster`; reads apply the
chain, so reducers only ever see today's shape. New events are stored with the
schema version at the end of their type's chain (1 when none is registered).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import EventlabError, UpcastError

Step = Callable[[dict[str, Any]], dict[str, Any]]


class Upcasters:
    """The registry of upcasting steps: event type -> from_version -> step.

    Examples
    --------
    >>> import eventlab as el
    >>> @el.upcaster("ItemAdded", from_version=1)
    ... def add_currency(data):
    ...     return {**data, "currency": "EUR"}
    >>> el.upcasters.current_version("ItemAdded")
    2
    >>> el.upcasters.remove("ItemAdded")
    """

    def __init__(self) -> None:
        self._steps: dict[str, dict[int, Step]] = {}

    def register(self, event_type: str, from_version: int, step: Step) -> None:
        """Add (or replace) the step from ``from_version`` to ``from_version + 1``."""
        if not isinstance(event_type, str) or not event_type:
            raise EventlabError(f"an upcaster needs an event type name, got {event_type!r}")
        if isinstance(from_version, bool) or not isinstance(from_version, int) or from_version < 1:
            raise EventlabError(
                f"from_version is the schema version the step reads (1 or more), got "
                f"{from_version!r}"
            )
        if not callable(step):
            raise EventlabError(f"an upcaster is a function data -> data, got {step!r}")
        self._steps.setdefault(event_type, {})[from_version] = step

    def remove(self, event_type: str | None = None) -> None:
        """Forget the steps of one event type, or of every type."""
        if event_type is None:
            self._steps.clear()
        else:
            self._steps.pop(event_type, None)

    def current_version(self, event_type: str) -> int:
        """The schema version new events of this type are stored with."""
        steps = self._steps.get(event_type)
        return max(steps) + 1 if steps else 1

    def chain(self, event_type: str) -> list[tuple[int, int, str]]:
        """The registered steps of a type as (from, to, function name), in order."""
        steps = self._steps.get(event_type, {})
        return [(v, v + 1, getattr(steps[v], "__name__", repr(steps[v]))) for v in sorted(steps)]

    def __bool__(self) -> bool:
        return bool(self._steps)

    def upcast(self, event_type: str, schema_version: int, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` stored at ``schema_version``, brought to the current version.

        Every read goes through here, so a step that raises, or returns something
        other than a dict, raises :class:`~eventlab.UpcastError` naming the event
        type, the versions and the step, whichever read met the event (a
        reducer's ``ReplayError`` passes it on unchanged).
        """
        steps = self._steps.get(event_type)
        if not steps:
            return data
        target = max(steps) + 1
        version = schema_version
        while version < target:
            step = steps.get(version)
            if step is None:
                raise UpcastError(
                    f"cannot upcast {event_type} from schema version {schema_version} to "
                    f"{target}: there is no step from version {version} to {version + 1}. "
                    f"Register one with @el.upcaster({event_type!r}, from_version={version})."
                )
            try:
                data = step(data)
            except Exception as exc:
                raise _step_failed(event_type, schema_version, version, step, exc) from exc
            if not isinstance(data, dict):
                raise _step_failed(event_type, schema_version, version, step, None, data)
            version += 1
        return data


def _step_failed(
    event_type: str,
    stored: int,
    version: int,
    step: Step,
    cause: BaseException | None,
    result: Any = None,
) -> UpcastError:
    """The error of a step that raised ``cause``, or returned ``result`` (not a dict)."""
    name = getattr(step, "__qualname__", None) or repr(step)
    what = (
        f"raised {type(cause).__name__}: {cause}"
        if cause is not None
        else f"returned {type(result).__name__} {result!r:.60}, not a dict"
    )
    return UpcastError(
        f"upcaster {name} ({event_type} from schema version {version} to {version + 1}) "
        f"{what}, upcasting data stored at schema version {stored}. Fix the upcaster "
        f"(registered with @el.upcaster({event_type!r}, from_version={version})); the "
        f"stored events are unchanged."
    )


upcasters = Upcasters()


def upcaster(event_type: str, from_version: int) -> Callable[[Step], Step]:
    """Register a function turning ``event_type`` data of ``from_version`` into the next version.

    Registering the same step again replaces it. Stored rows are never rewritten:
    the chain runs every time such an event is read.

    Examples
    --------
    >>> import eventlab as el
    >>> @el.upcaster("CustomerRegistered", from_version=1)
    ... def split_name(data):
    ...     first, _, last = data["name"].partition(" ")
    ...     return {"first_name": first, "last_name": last}
    >>> store = el.EventStore()
    >>> [new] = store.append("c-1", [el.Event("CustomerRegistered",
    ...                                        {"first_name": "Ada", "last_name": "L"})])
    >>> new.schema_version
    2
    >>> el.upcasters.remove("CustomerRegistered")
    """

    def register(step: Step) -> Step:
        upcasters.register(event_type, from_version, step)
        return step

    return register

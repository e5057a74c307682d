"""Resilience around flaky calls: retry policies here, and the shared recording of what
each component did (circuit breakers in :mod:`eventlab.breaker`, rate limiters in
:mod:`eventlab.ratelimit`).

Each component reads time from a clock. With a :class:`~eventlab.SimulatedClock`
a wait advances the simulated clock instead of sleeping, so a notebook can show
an hour of retries in a second. Time is read with ``clock.current`` (it does not
move a simulated clock); only waits move it.

Each component keeps a log of what it did (``.events()``, a DataFrame), and,
given ``store=``, also appends each entry as an :class:`~eventlab.Event` (with
``occurred_at`` set to the component's time) to a stream, so the breaker
opening and closing can be plotted on a timeline with the rest of the history.
A store that shares the component's simulated clock advances it by one step per
appended event, as every append does; give the store its own clock to keep the
component's time exact.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pandas as pd

from .clock import SimulatedClock, SystemClock
from .errors import ResilienceError
from .events import Event

T = TypeVar("T")

Clock = SystemClock | SimulatedClock
Duration = timedelta | int | float

_US = timedelta(microseconds=1)
# Longest delay a timedelta holds comfortably; an uncapped exponential stops here.
_MAX_SECONDS = 86_400 * 999_999_000


# ---------------------------------------------------------------------- helpers


def _read_time(clock: Any) -> datetime:
    """The clock's time now, without advancing a :class:`SimulatedClock`."""
    current = getattr(clock, "current", None)
    return current if current is not None else clock.now()


def _default_sleep(clock: Any) -> Callable[[float], None]:
    """Advance a simulated clock; really sleep for any other clock."""
    if isinstance(clock, SimulatedClock):
        return lambda seconds: clock.advance(timedelta(seconds=seconds))
    return time.sleep


def _duration(name: str, value: object, example: str) -> timedelta:
    """A non-negative timedelta from a timedelta or a number of seconds."""
    if isinstance(value, bool) or not isinstance(value, timedelta | int | float):
        raise ResilienceError(
            f"{name} must be a timedelta or a number of seconds, got "
            f"{type(value).__name__}: {value!r:.80}; e.g. {example}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ResilienceError(f"{name} must be finite, got {value!r}; e.g. {example}")
    delta = value if isinstance(value, timedelta) else timedelta(seconds=value)
    if delta < timedelta(0):
        raise ResilienceError(f"{name} must not be negative, got {value!r}; e.g. {example}")
    return delta


def _number(name: str, value: object, *, minimum: float, example: str, strict: bool) -> float:
    """A finite number >= minimum (> minimum when ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ResilienceError(
            f"{name} must be a finite number, got {type(value).__name__}: {value!r:.80}; "
            f"e.g. {example}"
        )
    if value < minimum or (strict and value == minimum):
        bound = f"greater than {minimum}" if strict else f"at least {minimum}"
        raise ResilienceError(f"{name} must be {bound}, got {value!r}; e.g. {example}")
    return value


def _count(name: str, value: object, example: str) -> int:
    """An int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ResilienceError(f"{name} must be an int of at least 1, got {value!r}; e.g. {example}")
    return value


def _name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ResilienceError(
            f"name must be a non-empty string, got {value!r}; e.g. name='payments'"
        )
    return value


def _seconds(delta: timedelta) -> float:
    return delta / timedelta(seconds=1)


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class _Timeline:
    """The in-memory log of one component, mirrored to a store stream when given one."""

    def __init__(self, component: str, store: Any, stream_id: str):
        self.component = component
        self.store = store
        self.stream_id = stream_id
        self.rows: list[dict[str, Any]] = []

    def record(self, at: datetime, kind: str, details: dict[str, Any]) -> None:
        self.rows.append({"at": at, "component": self.component, "kind": kind, "details": details})
        if self.store is not None:
            data = {"component": self.component, **details}
            self.store.append(self.stream_id, Event(kind, data, occurred_at=at))

    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows, columns=["at", "component", "kind", "details"])
        frame["at"] = pd.to_datetime(frame["at"], utc=True)
        return frame


class _Recorded:
    """Shared by the three components: the event log."""

    _timeline: _Timeline

    @property
    def name(self) -> str:
        """The component's name, used in the log, the stream id and error messages."""
        return self._timeline.component

    @property
    def stream_id(self) -> str:
        """The stream the log is appended to when a store is given."""
        return self._timeline.stream_id

    def events(self) -> pd.DataFrame:
        """What happened, in order: one row per entry.

        Returns
        -------
        pandas.DataFrame
            Columns ``at`` (UTC), ``component`` (the name), ``kind`` (such as
            ``RetryScheduled`` or ``CircuitOpened``) and ``details`` (a dict).
        """
        return self._timeline.frame()


# ---------------------------------------------------------------------- retry


class RetryPolicy(_Recorded):
    """When and how often to retry a failed call: fixed or exponential delays.

    Build one with :meth:`fixed` or :meth:`exponential`. ``max_attempts`` counts
    every attempt, the first included: ``max_attempts=3`` means two retries.

    Parameters
    ----------
    base : timedelta or float
        The first retry's delay (seconds if a number).
    factor : float
        Each retry's delay is the previous one times ``factor`` (1 for fixed delays).
    max_delay : timedelta or float, optional
        No delay exceeds this, jitter included. ``None``: no cap.
    jitter : float
        Each delay is scaled by a random factor in ``[1 - jitter, 1 + jitter]``
        (0 to 1; 0 means none), so many clients don't retry in lock-step.
    max_attempts : int
        Attempts in all, at least 1.
    retry_on : exception type or tuple of them
        Which exceptions are retried; any other propagates at once.
    seed : int, optional
        Seeds the jitter, for reproducible delays.
    name : str
        Names the policy in its log and stream.
    store : EventStore, optional
        Also append each log entry to this store.
    stream_id : str, optional
        The stream for those events; defaults to ``retry-<name>``.

    Examples
    --------
    >>> import eventlab as el
    >>> policy = el.RetryPolicy.exponential(1, factor=2, max_delay=5, max_attempts=5)
    >>> [policy.delay(n).total_seconds() for n in range(1, 5)]
    [1.0, 2.0, 4.0, 5.0]
    """

    def __init__(
        self,
        base: Duration,
        *,
        factor: float = 1.0,
        max_delay: Duration | None = None,
        jitter: float = 0.0,
        max_attempts: int = 3,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        seed: int | None = None,
        name: str = "retry",
        store: Any = None,
        stream_id: str | None = None,
    ):
        self.base = _duration("base", base, "timedelta(seconds=1)")
        self.factor = _number("factor", factor, minimum=1, example="factor=2.0", strict=False)
        self.max_delay = (
            None if max_delay is None else _duration("max_delay", max_delay, "timedelta(minutes=1)")
        )
        if self.max_delay is not None and self.max_delay < self.base:
            raise ResilienceError(
                f"max_delay ({self.max_delay}) is shorter than the base delay ({self.base}); "
                f"give a cap at least as long, e.g. max_delay=timedelta(minutes=1)"
            )
        self.jitter = _number("jitter", jitter, minimum=0, example="jitter=0.1", strict=False)
        if self.jitter > 1:
            raise ResilienceError(
                f"jitter must be between 0 and 1, got {jitter!r}; e.g. jitter=0.1"
            )
        self.max_attempts = _count("max_attempts", max_attempts, "max_attempts=3")
        self.retry_on = _exception_types(retry_on)
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        name = _name(name)
        self._timeline = _Timeline(name, store, stream_id or f"retry-{name}")

    @classmethod
    def fixed(
        cls,
        delay: Duration,
        *,
        max_attempts: int = 3,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        name: str = "retry",
        store: Any = None,
        stream_id: str | None = None,
    ) -> RetryPolicy:
        """The same delay before every retry.

        >>> RetryPolicy.fixed(2, max_attempts=3).delay(2)
        datetime.timedelta(seconds=2)
        """
        return cls(
            delay,
            max_attempts=max_attempts,
            retry_on=retry_on,
            name=name,
            store=store,
            stream_id=stream_id,
        )

    @classmethod
    def exponential(
        cls,
        base: Duration,
        *,
        factor: float = 2.0,
        max_delay: Duration | None = None,
        jitter: float = 0.0,
        max_attempts: int = 5,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        seed: int | None = None,
        name: str = "retry",
        store: Any = None,
        stream_id: str | None = None,
    ) -> RetryPolicy:
        """Delays ``base``, ``base*factor``, ``base*factor**2``, ... capped at ``max_delay``."""
        return cls(
            base,
            factor=factor,
            max_delay=max_delay,
            jitter=jitter,
            max_attempts=max_attempts,
            retry_on=retry_on,
            seed=seed,
            name=name,
            store=store,
            stream_id=stream_id,
        )

    def delay(self, attempt: int) -> timedelta:
        """The wait before retry number ``attempt`` (1 is the first retry).

        With jitter, each call draws a new random factor (reproducible with ``seed``).
        """
        _count("attempt", attempt, "policy.delay(1)")
        base = _seconds(self.base)
        try:
            seconds = base * self.factor ** (attempt - 1)
        except OverflowError:
            seconds = math.inf if base else 0.0
        if self.jitter:
            with self._lock:
                seconds *= 1 + self._random.uniform(-self.jitter, self.jitter)
        cap = _MAX_SECONDS if self.max_delay is None else _seconds(self.max_delay)
        return timedelta(seconds=min(seconds, cap))

    def should_retry(self, attempt: int) -> bool:
        """Whether to retry after ``attempt`` attempts have failed."""
        return attempt < self.max_attempts

    def retries_error(self, error: str | None) -> bool:
        """Whether ``retry_on`` covers a failure known only by its text, ``"Type: why"``.

        A command's outcome carries its error as text, not the exception, so its
        class is found by name among the listed classes and their subclasses
        (a same-named class from elsewhere would match too).
        """
        if any(issubclass(Exception, kind) for kind in self.retry_on):
            return True
        name = (error or "").partition(":")[0]
        pending = list(self.retry_on)
        seen: set[type] = set()
        while pending:
            kind = pending.pop()
            if kind in seen:
                continue
            seen.add(kind)
            if kind.__name__ == name:
                return True
            pending.extend(kind.__subclasses__())
        return False

    def call(
        self,
        fn: Callable[..., T],
        *args: Any,
        clock: Clock | None = None,
        sleep: Callable[[float], None] | None = None,
        **kwargs: Any,
    ) -> T:
        """Call ``fn(*args, **kwargs)``, retrying failures listed in ``retry_on``.

        Parameters
        ----------
        fn : callable
            What to call.
        clock : SystemClock or SimulatedClock, optional
            Dates the log. Defaults to the wall clock.
        sleep : callable, optional
            Waits the given number of seconds. Defaults to advancing a
            :class:`SimulatedClock`, or ``time.sleep`` for other clocks.

        Returns
        -------
        What ``fn`` returned.

        Raises
        ------
        Exception
            The last error once ``max_attempts`` attempts failed, or at once any
            error not in ``retry_on``.
        """
        clock = clock if clock is not None else SystemClock()
        sleep = sleep if sleep is not None else _default_sleep(clock)
        attempt = 1
        while True:
            try:
                result = fn(*args, **kwargs)
            except self.retry_on as error:
                if not self.should_retry(attempt):
                    self._timeline.record(
                        _read_time(clock),
                        "RetriesExhausted",
                        {"attempts": attempt, "error": _error_text(error)},
                    )
                    raise
                wait = self.delay(attempt)
                self._timeline.record(
                    _read_time(clock),
                    "RetryScheduled",
                    {"attempt": attempt, "delay_s": _seconds(wait), "error": _error_text(error)},
                )
                sleep(_seconds(wait))
                attempt += 1
                continue
            if attempt > 1:
                self._timeline.record(_read_time(clock), "RetrySucceeded", {"attempts": attempt})
            return result

    def __repr__(self) -> str:
        return (
            f"RetryPolicy(base={self.base!r}, factor={self.factor}, max_delay={self.max_delay!r}, "
            f"jitter={self.jitter}, max_attempts={self.max_attempts}, name={self.name!r})"
        )


def _exception_types(value: object) -> tuple[type[BaseException], ...]:
    types = value if isinstance(value, tuple) else (value,)
    if not types or not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
        raise ResilienceError(
            f"retry_on must be an exception class or a tuple of them, got {value!r:.80}; "
            f"e.g. retry_on=(TimeoutError, ConnectionError)"
        )
    return types

"""Resilience around flaky calls: retry policies, circuit breakers and rate limiters.

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
from fractions import Fraction
from typing import Any, TypeVar

import pandas as pd

from .clock import SimulatedClock, SystemClock, from_micros, to_micros
from .errors import CircuitOpenError, ResilienceError
from .events import Event

T = TypeVar("T")

Clock = SystemClock | SimulatedClock
Duration = timedelta | int | float

_US = timedelta(microseconds=1)
# Longest delay a timedelta holds comfortably; an uncapped exponential stops here.
_MAX_SECONDS = 86_400 * 999_999_000

__all__ = ["CircuitBreaker", "RateLimiter", "RetryPolicy"]


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


# ---------------------------------------------------------------------- circuit breaker

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"


class CircuitBreaker(_Recorded):
    """Stops calling a failing service for a while, then tries it again carefully.

    Closed: calls go through; ``failure_threshold`` consecutive failures open it.
    Open: calls are refused with :class:`~eventlab.CircuitOpenError` for
    ``cool_down``. Half-open: up to ``half_open_max_calls`` trial calls go
    through; any failure reopens it, and that many successes close it.

    Parameters
    ----------
    failure_threshold : int
        Consecutive failures that open the breaker (at least 1).
    cool_down : timedelta or float
        How long it stays open before letting a trial call through.
    half_open_max_calls : int
        Trial calls admitted while half-open; that many successes close it.
    clock : SystemClock or SimulatedClock, optional
        Measures the cool-down. Defaults to the wall clock.
    name : str
        Names the breaker in errors, its log and its stream.
    store : EventStore, optional
        Also append each state change to this store.
    stream_id : str, optional
        The stream for those events; defaults to ``circuit-<name>``.

    Examples
    --------
    >>> import eventlab as el
    >>> breaker = el.CircuitBreaker(failure_threshold=2, cool_down=30,
    ...                             clock=el.SimulatedClock("2024-01-01"), name="payments")
    >>> breaker.record_failure(); breaker.record_failure()
    >>> breaker.state
    'open'
    >>> list(breaker.events()["kind"])
    ['CircuitOpened']
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        cool_down: Duration = timedelta(seconds=30),
        half_open_max_calls: int = 1,
        clock: Clock | None = None,
        name: str = "breaker",
        *,
        store: Any = None,
        stream_id: str | None = None,
    ):
        self.failure_threshold = _count(
            "failure_threshold", failure_threshold, "failure_threshold=5"
        )
        self.cool_down = _duration("cool_down", cool_down, "cool_down=timedelta(seconds=30)")
        self.half_open_max_calls = _count(
            "half_open_max_calls", half_open_max_calls, "half_open_max_calls=1"
        )
        self.clock = clock if clock is not None else SystemClock()
        name = _name(name)
        self._timeline = _Timeline(name, store, stream_id or f"circuit-{name}")
        self._lock = threading.RLock()
        self._state = CLOSED
        self._failures = 0  # consecutive, while closed
        self._opened_at: datetime | None = None
        self._trials = 0  # admitted while half-open
        self._successes = 0  # trial successes while half-open

    @property
    def state(self) -> str:
        """``'closed'``, ``'open'`` or ``'half-open'``, as of the clock's time now."""
        with self._lock:
            self._refresh()
            return self._state

    @property
    def failures(self) -> int:
        """Consecutive failures counted while closed."""
        return self._failures

    @property
    def retry_at(self) -> datetime | None:
        """When an open breaker will half-open; ``None`` unless open."""
        with self._lock:
            self._refresh()
            if self._state != OPEN:
                return None
            return self._opened_at + self.cool_down

    def _refresh(self) -> None:
        if self._state == OPEN and _read_time(self.clock) >= self._opened_at + self.cool_down:
            # Dated when the cool-down ended, not when someone looked.
            self._transition(HALF_OPEN, self._opened_at + self.cool_down, {})

    def _transition(self, state: str, at: datetime, details: dict[str, Any]) -> None:
        self._state = state
        self._trials = self._successes = 0
        if state == OPEN:
            self._opened_at = at
            details = {**details, "retry_at": (at + self.cool_down).isoformat()}
        else:
            self._failures = 0
        kind = {OPEN: "CircuitOpened", HALF_OPEN: "CircuitHalfOpened", CLOSED: "CircuitClosed"}
        self._timeline.record(at, kind[state], details)

    def check(self) -> None:
        """Admit one call or raise :class:`~eventlab.CircuitOpenError`.

        :meth:`call` does this for you; use it with :meth:`record_success` and
        :meth:`record_failure` to guard code that is not a single call.
        """
        with self._lock:
            self._refresh()
            if self._state == CLOSED:
                return
            if self._state == HALF_OPEN and self._trials < self.half_open_max_calls:
                self._trials += 1
                return
            raise self._open_error()

    def _open_error(self) -> CircuitOpenError:
        now = _read_time(self.clock)
        if self._state == OPEN:
            retry_at = self._opened_at + self.cool_down
            wait = _seconds(retry_at - now)
            message = (
                f"circuit breaker {self.name!r} is open after repeated failures, so the call "
                f"was not made; it will half-open at {retry_at.isoformat()} (in {wait:g} s) "
                f"and let a trial call through. Catch el.CircuitOpenError and fall back "
                f"(queue the work, use a cached answer), or retry after that time."
            )
        else:
            retry_at = None
            message = (
                f"circuit breaker {self.name!r} is half-open and its "
                f"{self.half_open_max_calls} trial call(s) are already in progress, so the "
                f"call was not made. Retry once the trial has finished (it closes the "
                f"breaker on success), or raise half_open_max_calls."
            )
        return CircuitOpenError(message, name=self.name, retry_at=retry_at)

    def record_success(self) -> None:
        """Count a successful call: resets failures; closes a half-open breaker in time."""
        with self._lock:
            self._refresh()
            if self._state == CLOSED:
                self._failures = 0
            elif self._state == HALF_OPEN:
                self._successes += 1
                if self._successes >= self.half_open_max_calls:
                    self._transition(CLOSED, _read_time(self.clock), {"trials": self._successes})

    def record_failure(self) -> None:
        """Count a failed call: opens the breaker at the threshold, or reopens a half-open one."""
        with self._lock:
            self._refresh()
            now = _read_time(self.clock)
            if self._state == CLOSED:
                self._failures += 1
                if self._failures >= self.failure_threshold:
                    self._transition(OPEN, now, {"failures": self._failures})
            elif self._state == HALF_OPEN:
                self._transition(OPEN, now, {"failures": 1, "trial_failed": True})

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn(*args, **kwargs)`` through the breaker.

        Raises
        ------
        CircuitOpenError
            The breaker is open (or half-open with its trial slots taken); ``fn``
            was not called.
        Exception
            Whatever ``fn`` raised, after counting it as a failure.
        """
        self.check()
        try:
            result = fn(*args, **kwargs)
        except Exception:
            self.record_failure()
            raise
        self.record_success()
        return result

    def __repr__(self) -> str:
        return f"CircuitBreaker(name={self.name!r}, state={self.state!r})"


# ---------------------------------------------------------------------- rate limiter


class RateLimiter(_Recorded):
    """A token bucket: ``capacity`` tokens at most, refilled at ``rate`` per second.

    It starts full, so a burst of up to ``capacity`` passes at once, and then
    ``rate`` calls per second on average. Token counts are exact fractions,
    so long runs do not drift.

    Parameters
    ----------
    rate : float
        Tokens added per second (greater than 0).
    capacity : float
        The bucket's size (greater than 0).
    clock : SystemClock or SimulatedClock, optional
        Measures refills. Defaults to the wall clock.
    name : str
        Names the limiter in its log and stream.
    store : EventStore, optional
        Also append each ``RateLimited`` entry to this store.
    stream_id : str, optional
        The stream for those events; defaults to ``ratelimit-<name>``.
    sleep : callable, optional
        How :meth:`acquire` waits a number of seconds. Defaults to advancing a
        :class:`SimulatedClock`, or ``time.sleep`` for other clocks.

    Examples
    --------
    >>> import eventlab as el
    >>> limiter = el.RateLimiter(rate=2, capacity=2, clock=el.SimulatedClock("2024-01-01"))
    >>> [limiter.try_acquire() for _ in range(3)]
    [True, True, False]
    >>> limiter.wait_time(1)
    datetime.timedelta(microseconds=500000)
    """

    def __init__(
        self,
        rate: float,
        capacity: float,
        clock: Clock | None = None,
        *,
        name: str = "ratelimit",
        store: Any = None,
        stream_id: str | None = None,
        sleep: Callable[[float], None] | None = None,
    ):
        self.rate = _number(
            "rate", rate, minimum=0, example="rate=10 (tokens per second)", strict=True
        )
        self.capacity = _number("capacity", capacity, minimum=0, example="capacity=10", strict=True)
        self.clock = clock if clock is not None else SystemClock()
        self._sleep = sleep if sleep is not None else _default_sleep(self.clock)
        name = _name(name)
        self._timeline = _Timeline(name, store, stream_id or f"ratelimit-{name}")
        self._lock = threading.RLock()
        self._rate = Fraction(rate)
        self._capacity = Fraction(capacity)
        self._tokens = self._capacity
        self._last_us = to_micros(_read_time(self.clock))

    def _refill(self) -> int:
        now_us = to_micros(_read_time(self.clock))
        if now_us > self._last_us:
            added = self._rate * (now_us - self._last_us) / 1_000_000
            self._tokens = min(self._capacity, self._tokens + added)
            self._last_us = now_us
        return now_us

    def _check_tokens(self, tokens: object) -> Fraction:
        if isinstance(tokens, bool) or not isinstance(tokens, int | float) or not tokens > 0:
            raise ResilienceError(
                f"tokens must be a number greater than 0, got {tokens!r}; e.g. tokens=1"
            )
        if tokens > self.capacity:
            raise ResilienceError(
                f"tokens={tokens!r} is more than the bucket holds (capacity={self.capacity}), "
                f"so it could never be granted; ask for at most {self.capacity} or make "
                f"the capacity larger"
            )
        return Fraction(tokens)

    @property
    def available(self) -> float:
        """Tokens in the bucket now."""
        with self._lock:
            self._refill()
            return float(self._tokens)

    def _wait_us(self, need: Fraction) -> int:
        deficit = need - self._tokens
        if deficit <= 0:
            return 0
        return math.ceil(deficit * 1_000_000 / self._rate)

    def wait_time(self, tokens: float = 1) -> timedelta:
        """How long until ``tokens`` are available (zero if they are now)."""
        need = self._check_tokens(tokens)
        with self._lock:
            self._refill()
            return self._wait_us(need) * _US

    def try_acquire(self, tokens: float = 1) -> bool:
        """Take ``tokens`` if available now; otherwise log ``RateLimited`` and return False."""
        need = self._check_tokens(tokens)
        with self._lock:
            now_us = self._refill()
            if self._tokens >= need:
                self._tokens -= need
                return True
            wait = self._wait_us(need) * _US
            self._timeline.record(
                from_micros(now_us),
                "RateLimited",
                {"tokens": tokens, "wait_s": _seconds(wait), "waited": False},
            )
            return False

    def acquire(self, tokens: float = 1) -> timedelta:
        """Take ``tokens``, waiting for them if needed; returns how long it waited.

        With a :class:`SimulatedClock` the wait advances the clock.
        """
        need = self._check_tokens(tokens)
        waited = timedelta(0)
        while True:
            with self._lock:
                now_us = self._refill()
                if self._tokens >= need:
                    self._tokens -= need
                    return waited
                wait = self._wait_us(need) * _US
                self._timeline.record(
                    from_micros(now_us),
                    "RateLimited",
                    {"tokens": tokens, "wait_s": _seconds(wait), "waited": True},
                )
            self._sleep(_seconds(wait))
            waited += wait

    def __repr__(self) -> str:
        return f"RateLimiter(rate={self.rate}, capacity={self.capacity}, name={self.name!r})"

"""Circuit breakers: stop calling a failing service for a while (see :mod:`eventlab.resilience`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from .clock import SystemClock
from .errors import CircuitOpenError
from .resilience import (
    Clock,
    Duration,
    T,
    _count,
    _duration,
    _name,
    _read_time,
    _Recorded,
    _seconds,
    _Timeline,
)

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
    def busy(self) -> bool:
        """Whether it is half-open with every trial call taken (:meth:`check` would refuse)."""
        with self._lock:
            self._refresh()
            return self._state == HALF_OPEN and self._trials >= self.half_open_max_calls

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

    def release(self) -> None:
        """Give back a call admitted by :meth:`check` that ended without an outcome.

        Use it when the guarded code was interrupted (``KeyboardInterrupt``,
        ``SystemExit``, ``asyncio.CancelledError``) or abandoned before it could
        tell whether the service works: a half-open breaker frees that trial
        slot for the next caller, instead of waiting forever for an outcome that
        will never be recorded. Nothing is counted, as an interrupted call says
        nothing about the service. A no-op unless a trial is in progress.
        """
        with self._lock:
            self._refresh()
            # Trials in progress: admitted, not yet succeeded (a failure reopens the
            # breaker, which resets both counts).
            if self._state == HALF_OPEN and self._trials > self._successes:
                self._trials -= 1

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn(*args, **kwargs)`` through the breaker.

        Raises
        ------
        CircuitOpenError
            The breaker is open (or half-open with its trial slots taken); ``fn``
            was not called.
        Exception
            Whatever ``fn`` raised, after counting it as a failure.
        BaseException
            A ``KeyboardInterrupt``, ``SystemExit`` or ``asyncio.CancelledError``
            from ``fn``, after giving its trial slot back uncounted (see
            :meth:`release`).
        """
        self.check()
        try:
            result = fn(*args, **kwargs)
        except Exception:
            self.record_failure()
            raise
        except BaseException:
            self.release()
            raise
        self.record_success()
        return result

    def __repr__(self) -> str:
        return f"CircuitBreaker(name={self.name!r}, state={self.state!r})"

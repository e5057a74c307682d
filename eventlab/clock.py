"""Clocks give the store its knowledge time (``recorded_at``).

Every timestamp in eventlab is a timezone-aware UTC ``datetime``. Naive datetimes
and ISO strings are read as UTC, whatever the machine's time zone.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from .errors import EventlabError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_utc(value: datetime | str) -> datetime:
    """Return ``value`` as an aware UTC datetime.

    Naive datetimes and ISO 8601 strings without an offset are taken to be UTC.

    >>> to_utc("2024-01-02T03:04:05")
    datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    """
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise EventlabError(
                f"cannot read {value!r} as a timestamp; use ISO 8601, e.g. "
                f"'2024-05-01T12:00:00Z', or pass a datetime"
            ) from None
    if value.__class__ is not datetime:  # a plain datetime needs none of these checks
        if not isinstance(value, datetime):
            raise EventlabError(
                f"expected a datetime or an ISO 8601 string, got {type(value).__name__}: {value!r}"
            )
        # pandas' NaT passes for a datetime but is no point in time: it would become a
        # NaN timestamp that neither DuckDB nor the journal can hold.
        if value != value:
            raise EventlabError(
                f"{value!r} is a missing value, not a point in time; pass a real datetime "
                f"or ISO 8601 string, or leave the timestamp out (None) where it is optional"
            )
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def to_micros(value: datetime | str) -> int:
    """Microseconds since the Unix epoch for a timestamp (exact, no float rounding)."""
    delta = to_utc(value) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The aware UTC datetime ``micros`` microseconds after the Unix epoch."""
    return EPOCH + timedelta(microseconds=micros)


def now_micros(clock: object) -> int:
    """The clock's next reading in epoch microseconds (fast path for the store)."""
    fast = getattr(clock, "now_micros", None)
    return fast() if fast is not None else to_micros(clock.now())


def peek_micros(clock: object) -> int:
    """The clock's time now, without advancing a :class:`SimulatedClock`.

    For observers (lag, checkpoints): looking at the read side must not move
    the timestamps of the events written after.
    """
    fast = getattr(clock, "peek_micros", None)
    if fast is not None:
        return fast()
    current = getattr(clock, "current", None)
    return to_micros(current) if current is not None else now_micros(clock)


def reserve_micros(clock: object, count: int) -> tuple[int, int]:
    """Readings for ``count`` events at once: the first one and the step between them.

    A bulk append stamps its events from this, so a :class:`SimulatedClock`
    advances by one step per event exactly as with one-by-one appends.
    """
    fast = getattr(clock, "reserve_micros", None)
    return fast(count) if fast is not None else (now_micros(clock), 0)


class SystemClock:
    """The wall clock, in UTC."""

    def now(self) -> datetime:
        """The current time as an aware UTC datetime."""
        return datetime.now(UTC)

    def now_micros(self) -> int:
        """The current time in microseconds since the Unix epoch."""
        return time.time_ns() // 1000

    def reserve_micros(self, count: int) -> tuple[int, int]:
        """Readings for ``count`` events at once: all of them now (a step of 0)."""
        return time.time_ns() // 1000, 0

    def __repr__(self) -> str:
        return "SystemClock()"


class SimulatedClock:
    """A clock that moves only when told to, for reproducible notebooks and tests.

    Each call to :meth:`now` returns the current simulated time and then advances
    it by ``step``, so consecutive events get distinct, predictable timestamps.

    Parameters
    ----------
    start : datetime or str, optional
        The first time returned; naive values are UTC. Defaults to 2024-01-01 00:00 UTC.
    step : timedelta, optional
        How far each :meth:`now` call moves the clock. Defaults to one second.

    Examples
    --------
    >>> clock = SimulatedClock("2024-01-01", step=timedelta(minutes=1))
    >>> clock.now().isoformat()
    '2024-01-01T00:00:00+00:00'
    >>> clock.now().isoformat()
    '2024-01-01T00:01:00+00:00'
    """

    def __init__(
        self,
        start: datetime | str = "2024-01-01T00:00:00",
        step: timedelta = timedelta(seconds=1),
    ):
        # Kept in epoch microseconds: the store reads the clock for every append
        # and the scheduler for every command, and integers are cheap to move.
        self._micros = to_micros(start)
        self.step = step
        self._lock = threading.Lock()

    @property
    def step(self) -> timedelta:
        """How far each :meth:`now` call moves the clock."""
        return timedelta(microseconds=self._step_micros)

    @step.setter
    def step(self, step: timedelta) -> None:
        if not isinstance(step, timedelta) or step < timedelta(0):
            raise EventlabError(f"step must be a non-negative timedelta, got {step!r}")
        self._step_micros = step // timedelta(microseconds=1)

    @property
    def current(self) -> datetime:
        """The time the next :meth:`now` call will return, without advancing."""
        return from_micros(self._micros)

    def peek_micros(self) -> int:
        """:attr:`current` in epoch microseconds."""
        return self._micros

    def now(self) -> datetime:
        """Return the simulated time, then advance it by ``step``."""
        with self._lock:
            value = self._micros
            self._micros = value + self._step_micros
        return from_micros(value)

    def now_micros(self) -> int:
        """Like :meth:`now`, in epoch microseconds."""
        with self._lock:
            value = self._micros
            self._micros = value + self._step_micros
        return value

    def reserve_micros(self, count: int) -> tuple[int, int]:
        """Take ``count`` readings at once: (first, step) in microseconds."""
        with self._lock:
            first = self._micros
            self._micros = first + self._step_micros * count
        return first, self._step_micros

    def advance(self, delta: timedelta) -> datetime:
        """Jump forward by ``delta`` and return the new current time."""
        if not isinstance(delta, timedelta) or delta < timedelta(0):
            raise EventlabError(
                f"a clock only moves forward: advance() needs a non-negative timedelta, "
                f"got {delta!r}"
            )
        with self._lock:
            self._micros += delta // timedelta(microseconds=1)
            return from_micros(self._micros)

    def __repr__(self) -> str:
        return f"SimulatedClock(current={self.current.isoformat()!r}, step={self.step!r})"

"""Failure injection: how an outside participant (payment gateway, warehouse) misbehaves.

A :class:`Faults` object stands for one participant. A command handler calls
:meth:`Faults.call` where it would call the real service: during an outage
window it raises :class:`ParticipantDown`, otherwise it takes its latency on
the simulated clock (now and then a slow call, which a scheduler's timeout
turns into ``timed_out``) and fails at random with :class:`ParticipantFailed`.
Everything random comes from the object's own seeded ``random.Random``, so the
same seed and the same calls give the same failures.

Both errors are ``ConnectionError`` subclasses, not
:class:`~eventlab.CommandRejected`: to a scheduler they are failures, retried
with backoff and dead-lettered when the attempts run out.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from ..clock import SimulatedClock, to_utc
from ..errors import EventlabError


class ParticipantError(ConnectionError):
    """An injected technical failure of a participant (retried, never a rejection)."""


class ParticipantDown(ParticipantError):
    """The participant is in an outage window: every call fails at once."""


class ParticipantFailed(ParticipantError):
    """A random failure of one call (``failure_rate``)."""


class Faults:
    """Failure rate, latency and outage windows of one participant, driven by a clock.

    Parameters
    ----------
    name : str
        The participant, e.g. ``"payments"``; names it in errors.
    failure_rate : float
        Probability (0 to 1) that a call fails with :class:`ParticipantFailed`.
    latency : float
        Seconds (simulated) every call takes.
    slow_rate : float
        Probability (0 to 1) that a call takes ``slow_latency`` instead.
    slow_latency : float
        Seconds a slow call takes; longer than a scheduler's timeout, it makes
        the command ``timed_out``.
    outages : iterable of (start, end)
        Windows of business time (UTC, end excluded) in which every call raises
        :class:`ParticipantDown` without waiting.
    seed : int or str
        Seeds this participant's random draws.

    Examples
    --------
    >>> import eventlab as el
    >>> clock = el.SimulatedClock("2024-03-04T09:00", step=timedelta(0))
    >>> gateway = Faults("payments", latency=0.5,
    ...                  outages=[("2024-03-04T09:10", "2024-03-04T09:20")])
    >>> gateway.call(clock)
    >>> clock.current.isoformat()
    '2024-03-04T09:00:00.500000+00:00'
    >>> _ = clock.advance(timedelta(minutes=10))
    >>> gateway.call(clock)
    Traceback (most recent call last):
    ...
    eventlab.shop.failures.ParticipantDown: payments is down (outage 2024-03-04 09:10 to 09:20 UTC)
    """

    def __init__(
        self,
        name: str,
        *,
        failure_rate: float = 0.0,
        latency: float = 0.0,
        slow_rate: float = 0.0,
        slow_latency: float = 0.0,
        outages: Iterable[tuple[datetime | str, datetime | str]] = (),
        seed: int | str = 0,
    ):
        if not isinstance(name, str) or not name:
            raise EventlabError(f"a participant needs a name, e.g. 'payments', got {name!r}")
        self.name = name
        self.failure_rate = _probability("failure_rate", failure_rate)
        self.slow_rate = _probability("slow_rate", slow_rate)
        self.latency = timedelta(seconds=_seconds("latency", latency))
        self.slow_latency = timedelta(seconds=_seconds("slow_latency", slow_latency))
        self.outages = sorted(_window(window) for window in outages)
        self.seed = seed
        self._random = random.Random(f"{seed}:{name}")
        self.stats = {"calls": 0, "failed": 0, "down": 0, "slow": 0}

    def outage_at(self, when: datetime) -> tuple[datetime, datetime] | None:
        """The outage window containing ``when``, if any."""
        for start, end in self.outages:
            if start <= when < end:
                return start, end
            if start > when:
                break
        return None

    def call(self, clock: Any) -> None:
        """Act as one call to the participant: raise, or take its latency on ``clock``.

        ``clock`` is the store's clock; a :class:`~eventlab.SimulatedClock`
        is advanced by the latency (other clocks are only read).
        """
        stats = self.stats
        stats["calls"] += 1
        now = getattr(clock, "current", None) or clock.now()
        window = self.outage_at(now)
        if window is not None:
            stats["down"] += 1
            start, end = window
            raise ParticipantDown(
                f"{self.name} is down (outage {start:%Y-%m-%d %H:%M} to {end:%H:%M} UTC)"
            )
        # Draw both numbers on every call, so that changing one rate does not
        # shift every later draw of the other.
        slow, fail = self._random.random(), self._random.random()
        wait = self.latency
        if slow < self.slow_rate:
            stats["slow"] += 1
            wait = self.slow_latency
        if wait and isinstance(clock, SimulatedClock):
            clock.advance(wait)
        if fail < self.failure_rate:
            stats["failed"] += 1
            raise ParticipantFailed(f"{self.name} failed to answer (injected failure)")

    def __repr__(self) -> str:
        return (
            f"Faults({self.name!r}, failure_rate={self.failure_rate}, "
            f"latency={self.latency.total_seconds():g}, slow_rate={self.slow_rate}, "
            f"slow_latency={self.slow_latency.total_seconds():g}, outages={len(self.outages)})"
        )


def _probability(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise EventlabError(f"{name} must be a probability from 0 to 1, e.g. 0.05, got {value!r}")
    return float(value)


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise EventlabError(f"{name} must be a number of seconds, 0 or more, got {value!r}")
    return float(value)


def _window(window: Any) -> tuple[datetime, datetime]:
    try:
        start, end = window
    except (TypeError, ValueError):
        raise EventlabError(
            f"an outage is a (start, end) pair of UTC times, e.g. ('2024-03-04T10:00', "
            f"'2024-03-04T10:30'), got {window!r}"
        ) from None
    start, end = to_utc(start), to_utc(end)
    if end <= start:
        raise EventlabError(f"an outage must end after it starts, got {start} to {end}")
    return start, end

"""What a saga is made of: steps, each an action with an optional compensation.

A step's action (and compensation) is a command sent to a participant
service: either a command type, whose payload is the saga's data, or a
function of the saga's data that returns an :class:`~eventlab.Command` or a
``(command type, payload)`` pair. The coordinator gives every command its id
and correlation id, so a function need not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any

from ..commands import Command
from ..errors import SagaError
from ..events import check_name
from ..resilience import RetryPolicy
from ..scheduler import _MAX_TIMEOUT_S

ACTION, COMPENSATION = "action", "compensation"

# A command type (payload: the saga's data), or data -> Command | (type, payload).
Action = str | Callable[[dict[str, Any]], Any]


def default_retry() -> RetryPolicy:
    """Three attempts in all, 1 s then 2 s apart: the policy of a step given none."""
    return RetryPolicy.exponential(1, max_attempts=3, name="saga-step")


class Step:
    """One step of a saga: an action, the compensation that undoes it, and how to retry.

    Parameters
    ----------
    name : str
        Unique within its saga (no ``:``, which separates the parts of command ids).
    action : str or callable
        A command type (the payload is the saga's data) or ``fn(data)`` returning
        an :class:`~eventlab.Command` or a ``(command type, payload)`` pair.
    compensation : str or callable, optional
        The same, for the command that undoes the action; ``None`` for a step
        with nothing to undo (a read, or the last step: nothing after it can fail).
    retry : RetryPolicy, optional
        How often and when to try the action again after it failed or timed out
        (by ``max_attempts`` and ``delay``, on the store's clock). A failure
        whose exception the policy's ``retry_on`` does not list is not retried
        (a timeout always is), nor is one whose next attempt would fall after
        the year 9999 (give an exponential policy a ``max_delay``). A
        participant that declines (a rejected command) is never retried.
        Defaults to three attempts, 1 s and 2 s apart.
    compensation_retry : RetryPolicy, optional
        The same for the compensation; defaults to ``retry``. A compensation
        that is declined or keeps failing parks the saga as ``stuck``.
    timeout : timedelta or float, optional
        How long (seconds) the participant may take to answer one attempt; a
        longer run is undone and counts as timed out. At most about 8.64e13 s
        (a timedelta's range). Defaults to the scheduler's timeout.

    Examples
    --------
    >>> import eventlab as el
    >>> step = el.Step("charge", "ChargePayment", "RefundPayment",
    ...                retry=el.RetryPolicy.fixed(5, max_attempts=4), timeout=10)
    >>> step.name, step.retry.max_attempts, step.timeout
    ('charge', 4, 10.0)
    """

    __slots__ = ("name", "action", "compensation", "retry", "compensation_retry", "timeout")

    def __init__(
        self,
        name: str,
        action: Action,
        compensation: Action | None = None,
        *,
        retry: RetryPolicy | None = None,
        compensation_retry: RetryPolicy | None = None,
        timeout: timedelta | float | None = None,
    ):
        if not isinstance(name, str) or not name or ":" in name:
            raise SagaError(
                f"a step name must be a non-empty string without ':', e.g. 'reserve', got {name!r}"
            )
        self.name = name
        self.action = _action(name, "action", action)
        self.compensation = (
            None if compensation is None else _action(name, "compensation", compensation)
        )
        for what, policy in (("retry", retry), ("compensation_retry", compensation_retry)):
            if policy is not None and not isinstance(policy, RetryPolicy):
                raise SagaError(
                    f"step {name!r}: {what} must be an el.RetryPolicy, e.g. "
                    f"el.RetryPolicy.fixed(1, max_attempts=3), got {policy!r:.80}"
                )
        self.retry = retry if retry is not None else default_retry()
        self.compensation_retry = (
            compensation_retry if compensation_retry is not None else self.retry
        )
        self.timeout = _timeout(name, timeout)

    def command(
        self,
        kind: str,
        data: Mapping[str, Any],
        command_id: str,
        correlation_id: str,
        context: dict[str, Any],
    ) -> Command:
        """The command of the action or compensation (``kind``) for the saga's ``data``."""
        spec = self.action if kind == ACTION else self.compensation
        if isinstance(spec, str):
            command_type, payload = spec, data
            deadline = None
        else:
            made = spec(dict(data))
            if isinstance(made, Command):
                command_type, payload, deadline = made.type, made.payload, made.deadline
                if made.context:
                    context = {**made.context, **context}
            elif isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], str):
                command_type, payload = made
                deadline = None
            else:
                raise SagaError(
                    f"the {kind} of step {self.name!r} returned {made!r:.80}; return an "
                    f"el.Command or a (command type, payload) pair"
                )
        if self.timeout is not None:
            context["timeout"] = self.timeout
        check_name("command type", command_type)
        if not isinstance(payload, Mapping):
            raise SagaError(
                f"the {kind} of step {self.name!r} gave a {type(payload).__name__} payload; a "
                f"payload is a dict (a JSON object)"
            )
        return _trusted_command(
            command_type, dict(payload), command_id, correlation_id, deadline, context
        )

    def __repr__(self) -> str:
        action = _describe(self.action)
        compensation = "" if self.compensation is None else f", {_describe(self.compensation)}"
        return f"Step({self.name!r}, {action}{compensation})"


class Saga:
    """A named sequence of steps: a long transaction made of short local ones.

    Parameters
    ----------
    name : str
        The saga's name, kept in every ``SagaStarted`` (``el.analytics.saga_stats``
        groups by it); a coordinator knows one saga per name.
    steps : list of Step
        Run in order; on a final failure the finished ones are compensated in
        reverse order.

    Examples
    --------
    >>> import eventlab as el
    >>> checkout = el.Saga("checkout", [
    ...     el.Step("reserve", "ReserveStock", "ReleaseStock"),
    ...     el.Step("charge", "ChargePayment", "RefundPayment"),
    ...     el.Step("ship", "CreateShipment"),
    ... ])
    >>> checkout.step_names
    ['reserve', 'charge', 'ship']
    """

    __slots__ = ("name", "steps", "_index")

    def __init__(self, name: str, steps: Iterable[Step]):
        if not isinstance(name, str) or not name:
            raise SagaError(f"a saga needs a name, e.g. 'checkout', got {name!r}")
        if isinstance(steps, Step):
            steps = [steps]
        self.steps = list(steps) if isinstance(steps, Iterable) else None
        if not self.steps or not all(isinstance(step, Step) for step in self.steps):
            raise SagaError(
                f"saga {name!r} needs a non-empty list of el.Step, e.g. "
                f"[el.Step('reserve', 'ReserveStock', 'ReleaseStock')], got {steps!r:.80}"
            )
        names = [step.name for step in self.steps]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise SagaError(f"saga {name!r} has steps named {repeated} more than once")
        self.name = name
        self._index = {step.name: index for index, step in enumerate(self.steps)}

    @property
    def step_names(self) -> list[str]:
        """The steps' names, in order."""
        return [step.name for step in self.steps]

    def step(self, name: str) -> Step:
        """The step called ``name``."""
        index = self._index.get(name)
        if index is None:
            raise SagaError(
                f"saga {self.name!r} has no step {name!r}; its steps: {self.step_names}"
            )
        return self.steps[index]

    def after(self, name: str) -> Step | None:
        """The step that follows ``name``, None after the last."""
        index = self._index[name] + 1
        return self.steps[index] if index < len(self.steps) else None

    def __repr__(self) -> str:
        return f"Saga({self.name!r}, {self.step_names})"


def _trusted_command(
    command_type: str,
    payload: dict[str, Any],
    command_id: str,
    correlation_id: str,
    deadline: Any,
    context: dict[str, Any],
) -> Command:
    """A :class:`~eventlab.Command` made without its checks, which the coordinator has
    done (or the command log does when it is submitted: it encodes, and so checks, the
    payload and context). One is made for every step attempt; checking twice cost a
    tenth of a saga's time."""
    command = object.__new__(Command)
    put = object.__setattr__
    put(command, "type", command_type)
    put(command, "payload", payload)
    put(command, "command_id", command_id)
    put(command, "correlation_id", correlation_id)
    put(command, "deadline", deadline)
    put(command, "context", context)
    return command


def _action(step: str, what: str, value: Any) -> Action:
    if isinstance(value, str) and value:
        return value
    if callable(value):
        return value
    raise SagaError(
        f"step {step!r}: the {what} must be a command type (e.g. 'ReserveStock') or a "
        f"function of the saga's data returning an el.Command, got {value!r:.80}"
    )


def _timeout(step: str, value: Any) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise SagaError(
            f"step {step!r}: timeout must be positive, e.g. timedelta(seconds=10) or 10.0, "
            f"got {value!r}"
        )
    # The scheduler's bound (a timedelta's range): refused now, not in every saga at run time.
    if not seconds <= _MAX_TIMEOUT_S:  # also inf
        raise SagaError(
            f"step {step!r}: timeout must be positive and at most {_MAX_TIMEOUT_S:.3g} s (a "
            f"timedelta's range), e.g. timedelta(seconds=10) or 10.0, got {value!r}; leave it "
            f"out for the scheduler's timeout"
        )
    return float(seconds)


def _describe(action: Action) -> str:
    return repr(action) if isinstance(action, str) else getattr(action, "__name__", repr(action))

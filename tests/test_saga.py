"""The saga coordinator on a simulated clock, with scripted participants.

Each participant command type follows a script: what its n-th call does
(``ok``, ``fail`` (a ConnectionError), ``bad`` (a ValueError), ``decline`` or
``slow``), per transaction. Every call is
logged, so a test can check which commands ran, in which order, how often.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import timedelta

import pandas as pd
import pytest

import eventlab as el
from tests.conftest import START

SECOND = timedelta(seconds=1)


class Participants:
    """Scripted handlers for the command types of a test saga."""

    def __init__(self, executor: el.CommandExecutor, clock: el.SimulatedClock, *types: str):
        self.clock = clock
        self.scripts: dict[tuple[str, str], list[str]] = {}
        self.default: dict[str, list[str]] = {}
        self.calls: list[tuple[str, str, int]] = []  # (transaction, type, attempt of the step)
        self.count: dict[tuple[str, str], int] = defaultdict(int)
        for command_type in types:
            executor.register(command_type, self._handler(command_type))

    def script(self, command_type: str, *plan: str, transaction: str | None = None) -> None:
        if transaction is None:
            self.default[command_type] = list(plan)
        else:
            self.scripts[transaction, command_type] = list(plan)

    def _handler(self, command_type: str):
        def handle(command: el.Command, ctx: el.CommandContext):
            transaction = command.correlation_id
            key = (transaction, command_type)
            plan = self.scripts.get(key, self.default.get(command_type, []))
            n = self.count[key]
            self.count[key] += 1
            attempt = (command.context or {}).get("attempt", ctx.attempt)
            self.calls.append((transaction, command_type, attempt))
            what = plan[n] if n < len(plan) else (plan[-1] if plan else "ok")
            if what == "fail":
                raise ConnectionError(f"{command_type} is down")
            if what == "bad":
                raise ValueError(f"{command_type} got a bad request")
            if what == "decline":
                raise el.CommandRejected(f"{command_type} declined")
            if what == "slow":
                self.clock.advance(timedelta(seconds=60))
            return {f"{command_type.lower()}-{transaction}": [el.Event(f"{command_type}Done", {})]}

        return handle


TYPES = ("Reserve", "Release", "Charge", "Refund", "Ship", "Notify")


def checkout(retry=None, timeout=None) -> el.Saga:
    retry = retry or el.RetryPolicy.fixed(5, max_attempts=3)
    return el.Saga(
        "checkout",
        [
            el.Step("reserve", "Reserve", "Release", retry=retry),
            el.Step("charge", "Charge", "Refund", retry=retry, timeout=timeout),
            el.Step("ship", "Ship", retry=retry),
        ],
    )


@pytest.fixture
def clock():
    return el.SimulatedClock(START, step=SECOND)


@pytest.fixture
def world(clock):
    with el.EventStore(clock=clock) as store:
        yield make_world(store, clock)


def make_world(store, clock, **scheduler_options):
    executor = el.CommandExecutor(store)
    participants = Participants(executor, clock, *TYPES)
    scheduler = el.CommandScheduler(store, executor, **scheduler_options)
    coordinator = el.SagaCoordinator(store, scheduler)
    return store, coordinator, participants


def types(store, transaction):
    return [e.type for e in store.read_stream(f"saga-{transaction}")]


def steps(store, transaction):
    return [
        (e.type, e.data.get("step"), e.data.get("kind"), e.data.get("attempt"))
        for e in store.read_stream(f"saga-{transaction}")
    ]


# ---------------------------------------------------------------------- the happy path


def test_a_saga_runs_its_steps_in_order_and_completes(world):
    store, coordinator, participants = world
    transaction = coordinator.start(checkout(), {"order_id": "o-1"}, transaction_id="t-1")
    assert transaction == "t-1"
    assert coordinator.run() == 1
    assert steps(store, "t-1") == [
        ("SagaStarted", None, None, None),
        ("StepRequested", "reserve", "action", 1),
        ("StepSucceeded", "reserve", "action", 1),
        ("StepRequested", "charge", "action", 1),
        ("StepSucceeded", "charge", "action", 1),
        ("StepRequested", "ship", "action", 1),
        ("StepSucceeded", "ship", "action", 1),
        ("SagaCompleted", None, None, None),
    ]
    events = store.read_stream("saga-t-1")
    assert events[0].data == {
        "saga": "checkout",
        "steps": ["reserve", "charge", "ship"],
        "data": {"order_id": "o-1"},
    }
    assert {e.correlation_id for e in events} == {"t-1"}
    # An answer is caused by its command; the command's events share the correlation id.
    assert events[2].causation_id == "t-1:reserve:action:1"
    assert events[1].data["command_id"] == "t-1:reserve:action:1"
    [reserved] = store.read_stream("reserve-t-1")
    assert (reserved.correlation_id, reserved.causation_id) == ("t-1", "t-1:reserve:action:1")
    assert participants.calls == [("t-1", "Reserve", 1), ("t-1", "Charge", 1), ("t-1", "Ship", 1)]
    command = coordinator.scheduler.commands.get("t-1:charge:action:1")
    assert command["payload"] == {"order_id": "o-1"}
    assert command["context"] == {
        "saga": "checkout",
        "step": "charge",
        "kind": "action",
        "attempt": 1,
        "max_attempts": 1,
    }
    assert coordinator.open_sagas == []


def test_status_lists_every_saga_with_state_step_and_age(world, clock):
    store, coordinator, participants = world
    participants.script("Charge", "decline", transaction="t-2")
    participants.script("Release", "decline", transaction="t-3")
    participants.script("Charge", "decline", transaction="t-3")
    saga = checkout()
    for n in range(1, 5):
        coordinator.start(saga, {"n": n}, transaction_id=f"t-{n}")
    coordinator.run(until_idle=False, max_commands=4)  # every saga's first step
    coordinator.run()
    status = coordinator.status()
    assert list(status.columns) == el.saga.STATUS_COLUMNS
    assert status[
        ["transaction_id", "saga", "state", "step", "kind", "attempt"]
    ].values.tolist() == [
        ["t-1", "checkout", "completed", "ship", "action", 1],
        ["t-2", "checkout", "aborted", "reserve", "compensation", 1],
        ["t-3", "checkout", "stuck", "reserve", "compensation", 1],
        ["t-4", "checkout", "completed", "ship", "action", 1],
    ]
    assert status["error"].tolist()[1:3] == ["Charge declined", "Release declined"]
    assert status["last_event"].tolist() == [
        "SagaCompleted", "SagaAborted", "SagaStuck", "SagaCompleted"
    ]  # fmt: skip
    ended = status.set_index("transaction_id")
    assert ended.loc["t-1", "age"] == ended.loc["t-1", "updated"] - ended.loc["t-1", "started"]
    # An open (stuck) saga ages with the clock.
    clock.advance(timedelta(hours=1))
    later = coordinator.status(states="stuck")
    assert later["transaction_id"].tolist() == ["t-3"]
    assert later["age"].iloc[0] == pd.Timestamp(clock.current) - later["started"].iloc[0]
    assert coordinator.status(states=["running", "compensating"]).empty
    with pytest.raises(el.SagaError, match=r"states must be some of \['running', 'compens"):
        coordinator.status(states="done")


def test_status_of_a_store_without_sagas_is_empty(world):
    store, coordinator, _ = world
    status = coordinator.status()
    assert status.empty and list(status.columns) == el.saga.STATUS_COLUMNS


# ---------------------------------------------------------------------- failing steps


def test_compensation_runs_in_exact_reverse_order_of_the_completed_steps(world):
    store, coordinator, participants = world
    saga = el.Saga(
        "long",
        [
            el.Step("a", "Reserve", "Release"),
            el.Step("b", "Notify"),  # nothing to undo
            el.Step("c", "Charge", "Refund"),
            el.Step("d", "Ship", "Release"),
            el.Step("e", "Notify", "Refund"),
        ],
    )
    participants.script("Notify", "ok", "decline", transaction="t")
    coordinator.start(saga, transaction_id="t")
    coordinator.run()
    assert steps(store, "t")[-8:] == [
        ("StepFailed", "e", "action", 1),
        ("CompensationRequested", "d", "compensation", 1),
        ("StepCompensated", "d", "compensation", 1),
        ("CompensationRequested", "c", "compensation", 1),
        ("StepCompensated", "c", "compensation", 1),
        ("CompensationRequested", "a", "compensation", 1),
        ("StepCompensated", "a", "compensation", 1),
        ("SagaAborted", None, None, None),
    ]
    assert [call[1] for call in participants.calls] == [
        "Reserve", "Notify", "Charge", "Ship", "Notify", "Release", "Refund", "Release",
    ]  # fmt: skip
    aborted = store.read_stream("saga-t")[-1].data
    assert aborted == {
        "failed_step": "e",
        "reason": "Notify declined",
        "compensated": ["d", "c", "a"],
    }


def test_a_declined_step_is_not_retried(world):
    store, coordinator, participants = world
    participants.script("Charge", "decline")
    coordinator.start(checkout(), transaction_id="t")
    coordinator.run()
    assert ("t", "Charge", 2) not in participants.calls
    assert participants.count["t", "Charge"] == 1
    failed = [e for e in store.read_stream("saga-t") if e.type == "StepFailed"]
    assert [e.data for e in failed] == [
        {
            "step": "charge",
            "kind": "action",
            "attempt": 1,
            "command_id": "t:charge:action:1",
            "error": "Charge declined",
            "declined": True,
        }
    ]
    assert "StepRetried" not in types(store, "t")
    assert types(store, "t")[-3:] == ["CompensationRequested", "StepCompensated", "SagaAborted"]


def test_a_failed_first_step_aborts_with_nothing_to_compensate(world):
    store, coordinator, participants = world
    participants.script("Reserve", "decline")
    coordinator.start(checkout(), transaction_id="t")
    coordinator.run()
    assert types(store, "t") == ["SagaStarted", "StepRequested", "StepFailed", "SagaAborted"]
    assert store.read_stream("saga-t")[-1].data == {
        "failed_step": "reserve",
        "reason": "Reserve declined",
        "compensated": [],
    }


def test_retries_follow_the_policy_on_the_simulated_clock(world):
    store, coordinator, participants = world
    policy = el.RetryPolicy.exponential(10, factor=3, max_attempts=3)
    participants.script("Charge", "fail", "fail", "ok")
    coordinator.start(checkout(retry=policy), transaction_id="t")
    coordinator.run()
    assert [c for c in participants.calls if c[1] == "Charge"] == [
        ("t", "Charge", 1),
        ("t", "Charge", 2),
        ("t", "Charge", 3),
    ]
    events = store.read_stream("saga-t")
    charge = [e for e in events if e.data.get("step") == "charge"]
    assert [(e.type, e.data["attempt"]) for e in charge] == [
        ("StepRequested", 1), ("StepFailed", 1), ("StepRetried", 2),
        ("StepRequested", 2), ("StepFailed", 2), ("StepRetried", 3),
        ("StepRequested", 3), ("StepSucceeded", 3),
    ]  # fmt: skip
    for failed, retried, requested, delay in ((1, 2, 3, 10), (4, 5, 6, 30)):
        due = charge[failed].occurred_at + timedelta(seconds=delay)
        assert charge[retried].data["delay_s"] == delay
        assert pd.Timestamp(charge[retried].data["due"]) == due
        assert charge[requested].occurred_at == due  # sent exactly when due, not before
    assert charge[1].data["error"] == "ConnectionError: Charge is down"
    assert types(store, "t")[-1] == "SagaCompleted"
    # Each attempt is its own command, run once.
    commands = coordinator.scheduler.commands
    assert [commands.get(f"t:charge:action:{n}")["status"] for n in (1, 2, 3)] == [
        "dead", "dead", "succeeded",
    ]  # fmt: skip
    assert [commands.get(f"t:charge:action:{n}")["attempts"] for n in (1, 2, 3)] == [1, 1, 1]


def test_retries_run_out_then_the_saga_compensates(world):
    store, coordinator, participants = world
    participants.script("Ship", "fail")
    coordinator.start(checkout(retry=el.RetryPolicy.fixed(1, max_attempts=2)), transaction_id="t")
    coordinator.run()
    assert participants.count["t", "Ship"] == 2
    assert steps(store, "t")[-6:] == [
        ("StepFailed", "ship", "action", 2),
        ("CompensationRequested", "charge", "compensation", 1),
        ("StepCompensated", "charge", "compensation", 1),
        ("CompensationRequested", "reserve", "compensation", 1),
        ("StepCompensated", "reserve", "compensation", 1),
        ("SagaAborted", None, None, None),
    ]


def test_a_participant_that_overruns_the_step_timeout_is_undone_and_retried(world):
    store, coordinator, participants = world
    participants.script("Charge", "slow", "ok")
    coordinator.start(checkout(timeout=30), transaction_id="t")
    coordinator.run()
    assert store.version("charge-t") == 1  # the slow attempt's event was undone
    timed_out = [e for e in store.read_stream("saga-t") if e.type == "StepTimedOut"]
    assert [(e.data["step"], e.data["attempt"]) for e in timed_out] == [("charge", 1)]
    assert "longer than the timeout 0:00:30" in timed_out[0].data["error"]
    assert coordinator.scheduler.commands.get("t:charge:action:1")["context"]["timeout"] == 30.0
    assert types(store, "t")[-1] == "SagaCompleted"


def test_a_failing_compensation_is_retried_and_one_that_keeps_failing_parks_the_saga(world):
    store, coordinator, participants = world
    policy = el.RetryPolicy.fixed(2, max_attempts=3)
    saga = el.Saga(
        "checkout",
        [
            el.Step("reserve", "Reserve", "Release", compensation_retry=policy),
            el.Step("charge", "Charge", "Refund", compensation_retry=policy),
        ],
    )
    participants.script("Charge", "decline")
    participants.script("Release", "fail", "ok", transaction="healed")
    participants.script("Release", "fail", transaction="broken")
    coordinator.start(saga, transaction_id="healed")
    coordinator.start(saga, transaction_id="broken")
    assert coordinator.run() == 2
    assert types(store, "healed")[-4:] == [
        "StepRetried", "CompensationRequested", "StepCompensated", "SagaAborted",
    ]  # fmt: skip
    assert steps(store, "broken")[-3:] == [
        ("CompensationRequested", "reserve", "compensation", 3),
        ("StepFailed", "reserve", "compensation", 3),
        ("SagaStuck", "reserve", "compensation", 3),
    ]
    assert participants.count["broken", "Release"] == 3
    assert coordinator.open_sagas == ["broken"]
    stuck = coordinator.status(states="stuck")
    assert stuck[["transaction_id", "step", "kind", "attempt", "error"]].values.tolist() == [
        ["broken", "reserve", "compensation", 3, "ConnectionError: Release is down"]
    ]
    # The operator repairs the participant and retries the saga.
    participants.script("Release", "ok", transaction="broken")
    participants.count["broken", "Release"] = 0
    coordinator.retry("broken")
    assert coordinator.run() == 1
    assert steps(store, "broken")[-4:] == [
        ("StepRetried", "reserve", "compensation", 4),
        ("CompensationRequested", "reserve", "compensation", 4),
        ("StepCompensated", "reserve", "compensation", 4),
        ("SagaAborted", None, None, None),
    ]
    assert coordinator.open_sagas == []
    with pytest.raises(el.SagaError, match="only a stuck saga is retried by hand; 'broken' is not"):
        coordinator.retry("broken")


def test_a_declined_compensation_parks_the_saga_at_once(world):
    store, coordinator, participants = world
    participants.script("Charge", "decline")
    participants.script("Release", "decline")
    coordinator.start(checkout(), transaction_id="t")
    coordinator.run()
    assert participants.count["t", "Release"] == 1
    assert types(store, "t")[-2:] == ["StepFailed", "SagaStuck"]
    assert store.read_stream("saga-t")[-1].data["error"] == "Release declined"


def test_a_step_retries_only_the_failures_its_policy_lists(world):
    store, coordinator, participants = world
    # OSError covers ConnectionError (a subclass); a ValueError is not retried.
    policy = el.RetryPolicy.fixed(1, max_attempts=4, retry_on=OSError)
    saga = el.Saga(
        "s",
        [
            el.Step("reserve", "Reserve", "Release"),
            el.Step("charge", "Charge", "Refund", retry=policy, timeout=30),
        ],
    )
    participants.script("Charge", "bad", transaction="bad")
    participants.script("Charge", "fail", "fail", "ok", transaction="down")
    participants.script("Charge", "slow", "ok", transaction="slow")  # a timeout: retried
    for transaction in ("bad", "down", "slow"):
        coordinator.start(saga, transaction_id=transaction)
    coordinator.run()
    assert participants.count["bad", "Charge"] == 1
    assert steps(store, "bad")[3:] == [
        ("StepRequested", "charge", "action", 1),
        ("StepFailed", "charge", "action", 1),
        ("CompensationRequested", "reserve", "compensation", 1),
        ("StepCompensated", "reserve", "compensation", 1),
        ("SagaAborted", None, None, None),
    ]
    failed = store.read_stream("saga-bad")[4]
    assert failed.data["error"] == (
        "ValueError: Charge got a bad request (not retried: the step's retry policy "
        "retries only OSError)"
    )
    assert failed.data["declined"] is False
    assert participants.count["down", "Charge"] == 3
    assert participants.count["slow", "Charge"] == 2
    assert types(store, "down")[-1] == types(store, "slow")[-1] == "SagaCompleted"


def test_a_retry_that_would_fall_after_the_year_9999_gives_up_the_step(world):
    store, coordinator, participants = world
    # Uncapped: the 13th retry waits 10**12 s (31,700 years).
    uncapped = el.RetryPolicy.exponential(1, factor=10, max_attempts=30)
    saga = el.Saga(
        "s",
        [
            el.Step("reserve", "Reserve", "Release", compensation_retry=uncapped),
            el.Step("charge", "Charge", "Refund", retry=uncapped),
        ],
    )
    participants.script("Charge", "fail", transaction="action")
    participants.script("Charge", "decline", transaction="compensation")
    participants.script("Release", "fail", transaction="compensation")
    coordinator.start(saga, transaction_id="action")
    coordinator.start(saga, transaction_id="compensation")
    coordinator.run()  # used to raise OverflowError, in this run and every later one
    # A failing action gives up and compensates ...
    assert types(store, "action")[-4:] == [
        "StepFailed",
        "CompensationRequested",
        "StepCompensated",
        "SagaAborted",
    ]
    gave_up = store.read_stream("saga-action")[-4].data["error"]
    assert re.fullmatch(
        r"ConnectionError: Charge is down \(not retried: its next attempt, [\d,]+ days, "
        r"[\d:]+ from now, would fall after the year 9999, the latest time a clock can "
        r"show; give the step's RetryPolicy a max_delay, e.g. "
        r"el\.RetryPolicy\.exponential\(1, max_delay=60\)\)",
        gave_up,
    )
    # ... a failing compensation parks the saga for an operator.
    assert types(store, "compensation")[-2:] == ["StepFailed", "SagaStuck"]
    stuck = coordinator.status(states="stuck")
    assert stuck["transaction_id"].tolist() == ["compensation"]
    assert "give the step's RetryPolicy a max_delay" in stuck["error"].iloc[0]
    # Nothing is jammed: another saga still runs.
    coordinator.start(el.Saga("o", [el.Step("ship", "Ship")]), transaction_id="other")
    assert coordinator.run() == 1 and types(store, "other")[-1] == "SagaCompleted"


def test_a_saga_step_command_is_not_requeued_behind_the_sagas_back(world):
    store, coordinator, participants = world
    participants.script("Ship", "fail")
    coordinator.start(checkout(retry=el.RetryPolicy.fixed(1, max_attempts=2)), transaction_id="t")
    coordinator.run()
    assert types(store, "t")[-1] == "SagaAborted"
    commands = coordinator.scheduler.commands
    assert commands.by_status("dead")["command_id"].tolist() == [
        "t:ship:action:1",
        "t:ship:action:2",
    ]
    head = store.head
    with pytest.raises(
        el.CommandError,
        match=r"command 't:ship:action:2' is attempt 2 of step 'ship' of saga 'checkout' "
        r"\(transaction 't'\); its saga decides whether the step runs again, "
        r"and requeued here it could run after the saga compensated or aborted.*"
        r"coordinator.status\(\).* coordinator.retry\('t'\)",
    ):
        coordinator.scheduler.requeue("t:ship:action:2")
    assert store.head == head and coordinator.scheduler.pending() == 0
    assert commands.get("t:ship:action:2")["status"] == "dead"
    # A command that only mentions a saga in its context is anybody's to requeue.
    coordinator.scheduler.submit(
        el.Command("Ship", {}, command_id="mine", context={"saga": "checkout", "max_attempts": 1})
    )
    coordinator.scheduler.run()
    participants.script("Ship", "ok")
    coordinator.scheduler.requeue("mine")
    coordinator.scheduler.run()
    assert commands.get("mine")["status"] == "succeeded"


def test_an_operator_abandons_a_stuck_saga(world, clock):
    store, coordinator, participants = world
    participants.script("Ship", "decline")
    participants.script("Refund", "decline")  # e.g. the bank no longer knows the charge
    coordinator.start(checkout(), transaction_id="t")
    coordinator.start(checkout(), transaction_id="u")
    participants.script("Ship", "ok", transaction="u")
    coordinator.run()
    assert coordinator.status()[["transaction_id", "state"]].values.tolist() == [
        ["t", "stuck"],
        ["u", "completed"],
    ]
    coordinator.retry("t")
    coordinator.run()  # declined again: only an operator can close it
    assert coordinator.state("t").state == "stuck"
    head = store.head
    with pytest.raises(el.SagaError, match=r"only a stuck saga is abandoned; 'u' is not open"):
        coordinator.abandon("u", "done")
    with pytest.raises(el.SagaError, match="reason must be a non-empty string"):
        coordinator.abandon("t", "")
    with pytest.raises(el.SagaError, match=r"abandon\(\) commits its own transaction"):
        with store.transaction():
            coordinator.abandon("t", "refunded by hand")
    with pytest.raises(el.SagaError, match=r"retry\(\) commits its own transaction"):
        with store.transaction():
            coordinator.retry("t")
    assert store.head == head
    coordinator.abandon("t", "refunded by hand at the bank")
    assert types(store, "t")[-2:] == ["SagaStuck", "SagaAborted"]
    ended = store.read_stream("saga-t")[-1]
    assert ended.data == {
        "failed_step": "charge",
        "reason": "refunded by hand at the bank",
        "compensated": [],
        "abandoned": True,
        "uncompensated": ["charge", "reserve"],
    }
    assert ended.correlation_id == "t"
    assert coordinator.open_sagas == [] and coordinator.state("t").state == "aborted"
    status = coordinator.status()
    assert status[["transaction_id", "state"]].values.tolist() == [
        ["t", "aborted"],
        ["u", "completed"],
    ]
    assert status["error"].iloc[0] == "Refund declined"
    with pytest.raises(el.SagaError, match="only a stuck saga is abandoned; 't' is not open"):
        coordinator.abandon("t", "again")
    # Nothing of the old definition is open: a changed one may be registered now.
    coordinator.register(el.Saga("checkout", [el.Step("reserve", "Reserve", "Release")]))
    # A new coordinator does not resume it.
    _, again, _ = make_world(store, clock)
    assert again.open_sagas == []


# ---------------------------------------------------------------------- steps as functions


def test_steps_may_build_their_commands_from_the_data(world):
    store, coordinator, participants = world
    saga = el.Saga(
        "functions",
        [
            el.Step("reserve", lambda d: el.Command("Reserve", {"sku": d["sku"]}), "Release"),
            el.Step("charge", lambda d: ("Charge", {"cents": d["qty"] * 250})),
        ],
    )
    coordinator.start(saga, {"sku": "MUG", "qty": 2}, transaction_id="t")
    coordinator.run()
    commands = coordinator.scheduler.commands
    reserve = commands.get("t:reserve:action:1")
    assert (reserve["payload"], reserve["correlation_id"]) == ({"sku": "MUG"}, "t")
    assert commands.get("t:charge:action:1")["payload"] == {"cents": 500}
    assert types(store, "t")[-1] == "SagaCompleted"


def test_a_step_whose_command_cannot_be_built_fails_without_retry(world):
    store, coordinator, participants = world
    saga = el.Saga(
        "broken",
        [el.Step("reserve", "Reserve", "Release"), el.Step("charge", lambda d: d["missing"])],
    )
    coordinator.start(saga, transaction_id="t")
    coordinator.run()
    failed = [e.data for e in store.read_stream("saga-t") if e.type == "StepFailed"]
    assert failed == [
        {
            "step": "charge",
            "kind": "action",
            "attempt": 1,
            "command_id": None,
            "error": "could not build the action command: KeyError: 'missing'",
            "declined": True,
        }
    ]
    assert types(store, "t")[-3:] == ["CompensationRequested", "StepCompensated", "SagaAborted"]
    # A payload that is not a JSON object is refused the same way.
    for n, bad in enumerate([lambda d: ("Charge", [1]), lambda d: ("Charge", {"at": object()})]):
        odd = el.Saga(f"odd{n}", [el.Step("reserve", "Reserve", "Release"), el.Step("pay", bad)])
        coordinator.start(odd, transaction_id=f"odd-{n}")
    coordinator.run()
    errors = [
        e.data["error"]
        for n in range(2)
        for e in store.read_stream(f"saga-odd-{n}")
        if e.type == "StepFailed"
    ]
    assert errors[0] == (
        "could not build the action command: SagaError: the action of step 'pay' gave a list "
        "payload; a payload is a dict (a JSON object)"
    )
    assert errors[1].startswith(
        "could not build the action command: InvalidEventError: command payload['at'] is not "
        "JSON-serialisable (object"
    )
    assert types(store, "odd-1")[-1] == "SagaAborted"
    # At the first step, start() refuses and writes nothing.
    first = el.Saga("first", [el.Step("x", lambda d: 42)])
    head = store.head
    with pytest.raises(el.SagaError, match=r"could not build the command of its first step 'x'"):
        coordinator.start(first, transaction_id="u")
    assert store.head == head and store.version("saga-u") == 0


# ---------------------------------------------------------------------- starting


def test_start_is_idempotent_by_transaction_id(world, clock):
    store, coordinator, _ = world
    saga = checkout()
    coordinator.start(saga, {"n": 1, "lines": [["MUG", 2]]}, transaction_id="t")
    head = store.head
    # The same start again (keys in another order, a tuple for a list) is a no-op.
    assert coordinator.start(saga, {"lines": [("MUG", 2)], "n": 1}, transaction_id="t") == "t"
    assert store.head == head
    # Other data under the same id is a client bug, refused as the command side does.
    with pytest.raises(
        el.SagaError,
        match=r"transaction 't' already runs saga 'checkout' with data "
        r'\{"n":1,"lines":\[\["MUG",2\]\]\}, not \{"n":2\}; .* leave transaction_id out',
    ):
        coordinator.start(saga, {"n": 2}, transaction_id="t")
    other = el.Saga("refund", [el.Step("refund", "Refund")])
    with pytest.raises(el.SagaError, match="transaction 't' already runs saga 'checkout'"):
        coordinator.start(other, transaction_id="t")
    assert store.head == head and coordinator.scheduler.pending() == 1
    # A new coordinator reads the stored start back and decides the same.
    _, again, _ = make_world(store, clock)
    assert again.start(saga, {"n": 1, "lines": [["MUG", 2]]}, transaction_id="t") == "t"
    with pytest.raises(el.SagaError, match="already runs saga 'checkout' with data"):
        again.start(saga, {}, transaction_id="t")
    assert store.head == head
    fresh = coordinator.start(saga)
    assert len(fresh) == 32 and fresh != "t"


def test_a_start_retried_after_the_callers_transaction_rolled_back_starts_the_saga(world):
    store, coordinator, participants = world
    saga = checkout()
    for retried_inside_a_transaction in (False, True):
        transaction = f"t-{retried_inside_a_transaction}"
        with pytest.raises(RuntimeError), store.transaction():
            coordinator.start(saga, {"n": 1}, transaction_id=transaction)
            raise RuntimeError("the caller's transaction fails")
        assert store.version(f"saga-{transaction}") == 0
        if retried_inside_a_transaction:
            with store.transaction():
                assert coordinator.start(saga, {"n": 1}, transaction_id=transaction)
        else:
            assert coordinator.start(saga, {"n": 1}, transaction_id=transaction)
        assert types(store, transaction) == ["SagaStarted", "StepRequested"]
        assert coordinator.scheduler.pending() == 1
        assert coordinator.run() == 1
        assert types(store, transaction)[-1] == "SagaCompleted"
    assert [c[1] for c in participants.calls] == ["Reserve", "Charge", "Ship"] * 2


def test_sagas_started_inside_a_transaction_count_once_it_commits(world):
    store, coordinator, participants = world
    saga = checkout()
    with store.transaction():
        for n in range(3):
            coordinator.start(saga, transaction_id=f"t-{n}")
    with pytest.raises(RuntimeError), store.transaction():
        coordinator.start(saga, transaction_id="gone")
        raise RuntimeError("the caller changed its mind")
    assert store.version("saga-gone") == 0
    assert coordinator.run() == 3
    assert coordinator.status()["transaction_id"].tolist() == ["t-0", "t-1", "t-2"]
    assert ("gone", "Reserve", 1) not in participants.calls


def test_run_refuses_to_run_inside_a_transaction(world):
    store, coordinator, _ = world
    with pytest.raises(el.SagaError, match=r"run\(\) commits its own transactions"):
        with store.transaction():
            coordinator.run()


# ---------------------------------------------------------------------- resuming


def test_a_new_coordinator_resumes_where_the_last_one_stopped(store_path, clock):
    store = el.EventStore(store_path, clock=clock)
    store, coordinator, participants = make_world(store, clock)
    participants.script("Charge", "fail", "ok")
    saga = checkout()
    for n in range(5):
        coordinator.start(saga, transaction_id=f"t-{n}")
    coordinator.run(max_commands=7)  # part way: some reserved, some charging, a retry due
    open_before = sorted(coordinator.open_sagas)
    assert open_before == [f"t-{n}" for n in range(5)]
    calls_before = list(participants.calls)
    store.close()

    store = el.EventStore(store_path, clock=clock)
    _, resumed, participants = make_world(store, clock)
    with pytest.raises(
        el.SagaError, match=r"open sagas of \{'checkout': 5\} .* have no definition"
    ):
        resumed.run()
    resumed.register(saga)
    assert sorted(resumed.open_sagas) == open_before
    participants.script("Charge", "ok")
    assert resumed.run() == 5
    assert resumed.open_sagas == []
    every_call = calls_before + participants.calls
    # No attempt ran twice, none was forgotten: each saga has each step once.
    assert len(every_call) == len(set(every_call))
    for n in range(5):
        assert types(store, f"t-{n}")[-1] == "SagaCompleted"
        assert [store.version(f"{kind}-t-{n}") for kind in ("reserve", "charge", "ship")] == [
            1,
            1,
            1,
        ]
    store.close()


def test_answers_the_coordinator_never_heard_are_read_from_the_command_store(world, clock):
    store, coordinator, participants = world
    saga = checkout()
    coordinator.start(saga, transaction_id="t")
    coordinator.scheduler.run()  # someone else runs the queue: the answer waits in the log
    assert types(store, "t") == ["SagaStarted", "StepRequested"]
    _, again, participants = make_world(store, clock)
    again.register(saga)
    again.run()
    assert types(store, "t")[-1] == "SagaCompleted"
    assert participants.calls == [("t", "Charge", 1), ("t", "Ship", 1)]


def test_a_changed_definition_is_refused_while_its_sagas_are_open(world, clock):
    store, coordinator, _ = world
    coordinator.start(checkout(), transaction_id="t")
    changed = el.Saga("checkout", [el.Step("reserve", "Reserve", "Release")])
    refused = (
        r"saga 'checkout' is defined here with steps \['reserve'\], but 1 open saga\(s\) of "
        r"that name \(e.g. 't'\) run with \['reserve', 'charge', 'ship'\]; finish them first "
        r".*coordinator.abandon.*or give the new definition another name"
    )
    # Refused before anything is written: on register, start, or a new coordinator.
    head = store.head
    _, again, _ = make_world(store, clock)
    with pytest.raises(el.SagaError, match=refused):
        again.register(changed)
    with pytest.raises(el.SagaError, match=refused):
        again.start(changed, transaction_id="new")
    with pytest.raises(el.SagaError, match=refused):
        el.SagaCoordinator(store, again.scheduler, sagas=[changed])
    assert store.head == head and store.version("saga-new") == 0
    # The old definition (a new object with the same steps) is still welcome.
    again.register(checkout())
    assert again.run() == 1
    again.register(changed)  # nothing of the old one is open any more
    again.start(changed, transaction_id="new")
    assert again.run() == 1 and types(store, "new")[-1] == "SagaCompleted"


# ---------------------------------------------------------------------- guards


def test_a_breaker_holds_saga_commands_without_using_attempts(clock):
    with el.EventStore(clock=clock) as store:
        breaker = el.CircuitBreaker(failure_threshold=1, cool_down=60, clock=clock)
        store, coordinator, participants = make_world(store, clock, breakers={"Charge": breaker})
        participants.script("Charge", "fail", "ok", transaction="a")
        saga = checkout(retry=el.RetryPolicy.fixed(1, max_attempts=2))
        coordinator.start(saga, transaction_id="a")
        coordinator.start(saga, transaction_id="b")
        coordinator.run()
        # a's first charge opened the breaker: b's charge waited instead of failing.
        assert [c[0] for c in participants.calls if c[1] == "Charge"] == ["a", "b", "a"]
        assert types(store, "a")[-1] == types(store, "b")[-1] == "SagaCompleted"
        assert participants.count["b", "Charge"] == 1


def test_bad_definitions_and_arguments(world):
    store, coordinator, _ = world
    with pytest.raises(el.SagaError, match="a step name must be a non-empty string without ':'"):
        el.Step("a:b", "X")
    with pytest.raises(el.SagaError, match="the action must be a command type"):
        el.Step("a", 42)
    with pytest.raises(el.SagaError, match="retry must be an el.RetryPolicy"):
        el.Step("a", "X", retry=3)
    with pytest.raises(el.SagaError, match="timeout must be positive"):
        el.Step("a", "X", timeout=0)
    # What the scheduler cannot take is refused now, not at run time in every saga.
    for too_long in (float("inf"), 1e300, timedelta.max):
        with pytest.raises(el.SagaError, match=r"timeout must be positive and at most 8.64e\+13"):
            el.Step("a", "X", timeout=too_long)
    assert el.Step("a", "X", timeout=timedelta(days=10**8)).timeout == 8.64e12
    with pytest.raises(el.SagaError, match="needs a non-empty list of el.Step"):
        el.Saga("empty", [])
    with pytest.raises(el.SagaError, match=r"has steps named \['a'\] more than once"):
        el.Saga("twice", [el.Step("a", "X"), el.Step("a", "Y")])
    with pytest.raises(el.SagaError, match="scheduler must be an el.CommandScheduler"):
        el.SagaCoordinator(store, None)
    with el.EventStore() as other:
        scheduler = el.CommandScheduler(other, el.CommandExecutor(other))
        with pytest.raises(el.SagaError, match="the scheduler works on another store"):
            el.SagaCoordinator(store, scheduler)
    with pytest.raises(el.SagaError, match="saga data must be a dict"):
        coordinator.start(checkout(), [1, 2])
    with pytest.raises(el.InvalidEventError, match=r"saga data\['when'\] is not JSON-serial"):
        coordinator.start(checkout(), {"when": object()}, transaction_id="bad")
    assert store.version("saga-bad") == 0 and coordinator.scheduler.pending() == 0
    with pytest.raises(el.SagaError, match="expected an el.Saga"):
        coordinator.register("checkout")
    with pytest.raises(el.SagaError, match="no saga with transaction id 'nope'"):
        coordinator.state("nope")


def test_bad_arguments_of_the_coordinator_name_the_fix(world):
    store, coordinator, _ = world
    coordinator.start(checkout(), transaction_id="t")
    head, pending = store.head, coordinator.scheduler.pending()
    for bad in ("5", -1, 1.5, True):
        with pytest.raises(
            el.SagaError, match=r"max_commands must be None \(no limit\) or an int of 0 or more"
        ):
            coordinator.run(max_commands=bad)
    for bad in (None, 5, ""):
        with pytest.raises(el.SagaError, match="transaction_id must be a non-empty string"):
            coordinator.state(bad)
    saga = checkout()
    for bad in (saga, 5, "checkout"):
        with pytest.raises(el.SagaError, match=r"sagas must be a list of el.Saga, e.g. sagas=\["):
            el.SagaCoordinator(store, coordinator.scheduler, sagas=bad)
    for bad in (None, 5):
        with pytest.raises(el.SagaError, match="transaction_id must be a non-empty string"):
            coordinator.abandon(bad, "why")
    assert store.head == head and coordinator.scheduler.pending() == pending
    assert coordinator.run(max_commands=0) == 0


# ---------------------------------------------------------------------- timelines


def test_the_timeline_has_a_row_per_attempt_with_its_outcome(world):
    store, coordinator, participants = world
    participants.script("Charge", "fail", "ok", transaction="t")
    participants.script("Ship", "decline", transaction="t")
    coordinator.start(checkout(), transaction_id="t")
    coordinator.start(checkout(), transaction_id="u")
    coordinator.run()
    timeline = el.saga_timeline(store, "t")
    assert list(timeline.columns) == el.plots.saga.TIMELINE_COLUMNS
    assert timeline[["step", "kind", "attempt", "outcome"]].values.tolist() == [
        ["reserve", "action", 1, "succeeded"],
        ["charge", "action", 1, "failed"],
        ["charge", "action", 2, "succeeded"],
        ["ship", "action", 1, "failed"],
        ["charge", "compensation", 1, "compensated"],
        ["reserve", "compensation", 1, "compensated"],
    ]
    assert (timeline["finished"] >= timeline["started"]).all()
    # Attempt 2 was due 5 s after attempt 1 failed, and did not start before (the
    # other saga's events moved this clock on meanwhile).
    [retried] = [e for e in store.read_stream("saga-t") if e.type == "StepRetried"]
    due = pd.Timestamp(retried.data["due"])
    assert due - timeline["finished"].iloc[1] == timedelta(seconds=5)
    assert timeline["started"].iloc[2] >= due
    everything = el.saga_timeline(store)
    assert everything.groupby("transaction_id").size().to_dict() == {"t": 6, "u": 3}
    assert el.plots.gantt_categories(timeline).tolist() == [
        "succeeded", "retried", "succeeded", "failed", "compensation", "compensation",
    ]  # fmt: skip
    with pytest.raises(el.SagaError, match="no saga events for transaction 'nope'"):
        el.saga_timeline(store, "nope")


def test_state_folds_a_saga_stream(world):
    store, coordinator, participants = world
    participants.script("Ship", "decline")
    coordinator.start(checkout(), {"n": 1}, transaction_id="t")
    coordinator.run()
    state = coordinator.state("t")
    assert (state.saga, state.state, state.done, state.compensated) == (
        "checkout",
        "aborted",
        ["reserve", "charge"],
        ["charge", "reserve"],
    )
    assert (state.failed_step, state.error, state.data, state.version) == (
        "ship",
        "Ship declined",
        {"n": 1},
        len(store.read_stream("saga-t")),
    )

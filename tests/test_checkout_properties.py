"""Property test: the checkout's invariants hold whatever the participants do.

Hypothesis draws a failure schedule (each participant's failure rate, slow
calls that overrun the timeout, an outage window, the bank's decline rate),
the orders and the stock, and the saga's retry budget. Orchestrated or
choreographed, every run must end with the invariants of
:func:`~eventlab.shop.check_checkout`; an orchestrated run must also follow
the saga's rules in every stream.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventlab as el
from eventlab.shop import Checkout, ChoreographedCheckout, Faults, check_checkout

START = datetime(2024, 3, 4, 9, 0, tzinfo=UTC)
SKUS = ["MUG-001", "TEE-010", "BAG-020"]
COMPENSATED = {"reserve", "charge"}  # the steps with a compensation

participants = st.fixed_dictionaries(
    {
        "failure_rate": st.sampled_from([0.0, 0.1, 0.3, 0.6, 1.0]),
        "slow_rate": st.sampled_from([0.0, 0.0, 0.2]),
        "outage": st.none() | st.tuples(st.integers(0, 60), st.integers(1, 900)),
        "seed": st.integers(0, 10_000),
    }
)
lines = st.lists(
    st.tuples(st.sampled_from(SKUS), st.integers(1, 3)),
    min_size=1,
    max_size=3,
    unique_by=lambda line: line[0],
)


def faults(name: str, schedule: dict) -> Faults:
    outages = []
    if schedule["outage"] is not None:
        begin, length = schedule["outage"]
        outages = [(START + timedelta(seconds=begin), START + timedelta(seconds=begin + length))]
    return Faults(
        name,
        failure_rate=schedule["failure_rate"],
        slow_rate=schedule["slow_rate"],
        slow_latency=45,  # longer than the scheduler's 30 s timeout
        outages=outages,
        seed=schedule["seed"],
    )


def check_saga_rules(store: el.EventStore, max_attempts: int) -> None:
    """Each saga stream follows the rules: steps in order, retries within the policy,
    no retry after a refusal, compensations in exact reverse order."""
    for transaction in el.saga_status(store)["transaction_id"]:
        events = store.read_stream(f"saga-{transaction}")
        done = [e.data["step"] for e in events if e.type == "StepSucceeded"]
        assert done == ["reserve", "charge", "ship"][: len(done)]
        undone = [e.data["step"] for e in events if e.type == "StepCompensated"]
        end = events[-1].type
        if end == "SagaCompleted":
            assert done == ["reserve", "charge", "ship"] and undone == []
        elif end == "SagaAborted":
            assert undone == [step for step in reversed(done) if step in COMPENSATED]
        else:
            assert end == "SagaStuck"
        for previous, event in zip(events, events[1:], strict=False):
            if event.type == "StepRetried":
                assert previous.type in ("StepFailed", "StepTimedOut")
                assert not previous.data.get("declined")
        action_attempts = [e.data["attempt"] for e in events if e.type == "StepRequested"]
        assert max(action_attempts) <= max_attempts


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    inventory=participants,
    payments=participants,
    warehouse=participants,
    decline_rate=st.sampled_from([0.0, 0.2, 1.0]),
    orders=st.lists(lines, min_size=1, max_size=6),
    stock=st.integers(0, 6),
    attempts=st.integers(1, 4),
    choreographed=st.booleans(),
)
def test_invariants_hold_for_every_failure_schedule(
    inventory, payments, warehouse, decline_rate, orders, stock, attempts, choreographed
):
    clock = el.SimulatedClock(START, step=timedelta(milliseconds=10))
    with el.EventStore(clock=clock) as store:
        options = {
            "inventory": faults("inventory", inventory),
            "payments": faults("payments", payments),
            "warehouse": faults("warehouse", warehouse),
            "decline_rate": decline_rate,
            "seed": inventory["seed"],
        }
        if choreographed:
            shop = ChoreographedCheckout(store, max_attempts=attempts, **options)
        else:
            retry = el.RetryPolicy.exponential(2, max_attempts=attempts)
            shop = Checkout(store, retry=retry, **options)
        shop.stock({sku: stock for sku in SKUS})
        for n, order in enumerate(orders):
            shop.start(f"{n:06d}", [list(line) for line in order])
        shop.run()
        report = check_checkout(store)
        assert report["violations"] == []
        assert report["orders"] == len(orders) == sum(report["outcomes"].values())
        if choreographed:
            assert set(report["outcomes"]) <= {"shipped", "undone", "stuck"}
        else:
            assert set(report["outcomes"]) <= {"completed", "aborted", "stuck"}
            check_saga_rules(store, attempts)

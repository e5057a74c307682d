"""Choreography: the checkout flow as services reacting to each other's events."""

from __future__ import annotations

from datetime import timedelta

import pytest

import eventlab as el
from tests.conftest import START
from tests.test_saga import Participants

TYPES = ("Reserve", "Release", "Charge", "Refund", "Ship")


def wire(store, clock, *, with_failures=True):
    executor = el.CommandExecutor(store)
    participants = Participants(executor, clock, *TYPES)
    scheduler = el.CommandScheduler(
        store, executor, max_attempts=2, backoff=el.RetryPolicy.fixed(1, max_attempts=2)
    )
    flow = el.Choreography(store, scheduler, name="checkout")
    flow.on("CheckoutRequested", lambda e: ("Reserve", e.data), service="inventory")
    flow.on("ReserveDone", lambda e: ("Charge", {}), service="billing")
    flow.on("ChargeDone", lambda e: ("Ship", {}), service="shipping")
    flow.on("ChargeFailed", lambda e: ("Release", {}), service="inventory")
    flow.on("ShipFailed", lambda e: [("Refund", {}), ("Release", {})], service="billing")
    if with_failures:
        flow.on_failure("Charge", "ChargeFailed", service="billing")
        flow.on_failure("Ship", "ShipFailed", service="shipping")
    return flow, participants


@pytest.fixture
def clock():
    return el.SimulatedClock(START, step=timedelta(seconds=1))


def by_stream(store, transaction):
    return [(e.stream_id, e.type) for e in store.read_all() if e.correlation_id == transaction]


def test_each_service_reacts_to_the_previous_ones_event(clock):
    with el.EventStore(clock=clock) as store:
        flow, participants = wire(store, clock)
        assert flow.start("CheckoutRequested", {"sku": "MUG"}, transaction_id="t") == "t"
        assert flow.run() == 3
        assert by_stream(store, "t") == [
            ("checkout-t", "CheckoutRequested"),
            ("reserve-t", "ReserveDone"),
            ("charge-t", "ChargeDone"),
            ("ship-t", "ShipDone"),
        ]
        commands = flow.scheduler.commands
        reserve = commands.get("Reserve:checkout-t@1")
        assert (reserve["payload"], reserve["correlation_id"]) == ({"sku": "MUG"}, "t")
        assert reserve["context"] == {
            "caused_by": "checkout-t:started",
            "service": "inventory",
        }
        assert commands.get("Ship:charge-t@1")["status"] == "succeeded"
        # Starting again changes nothing (the first event has a fixed id).
        flow.start("CheckoutRequested", {"sku": "MUG"}, transaction_id="t")
        assert flow.run() == 0 and len(by_stream(store, "t")) == 4


def test_a_participant_that_gives_up_announces_it_and_the_others_compensate(clock):
    with el.EventStore(clock=clock) as store:
        flow, participants = wire(store, clock)
        participants.script("Charge", "decline", transaction="declined")
        participants.script("Ship", "fail", transaction="down")
        flow.start("CheckoutRequested", transaction_id="declined")
        flow.start("CheckoutRequested", transaction_id="down")
        flow.run()
        assert by_stream(store, "declined") == [
            ("checkout-declined", "CheckoutRequested"),
            ("reserve-declined", "ReserveDone"),
            ("billing-declined", "ChargeFailed"),
            ("release-declined", "ReleaseDone"),
        ]
        [failed] = store.read_stream("billing-declined")
        assert failed.event_id == "Charge:reserve-declined@1:failed"
        assert failed.causation_id == "Charge:reserve-declined@1"
        assert failed.data == {
            "command_id": "Charge:reserve-declined@1",
            "command_type": "Charge",
            "payload": {},
            "error": "Charge declined",
            "declined": True,
        }
        # The shipment failed twice (the scheduler's attempts) before it was announced.
        assert participants.count["down", "Ship"] == 2
        assert sorted(by_stream(store, "down")[3:]) == [
            ("refund-down", "RefundDone"),
            ("release-down", "ReleaseDone"),
            ("shipping-down", "ShipFailed"),
        ]


def test_without_announcements_a_failure_leaves_the_flow_hanging(clock):
    with el.EventStore(clock=clock) as store:
        flow, participants = wire(store, clock, with_failures=False)
        participants.script("Charge", "decline")
        flow.start("CheckoutRequested", transaction_id="t")
        flow.run()
        # Stock stays reserved: nobody heard that the charge was declined.
        assert by_stream(store, "t")[-1] == ("reserve-t", "ReserveDone")
        assert flow.scheduler.commands.get("Charge:reserve-t@1")["status"] == "rejected"
        # A choreography that announces failures catches up when it starts listening.
        again, _ = wire(store, clock)
        assert again.run() == 1
        assert by_stream(store, "t")[-2:] == [
            ("billing-t", "ChargeFailed"),
            ("release-t", "ReleaseDone"),
        ]


def test_reactions_missed_while_nobody_listened_are_caught_up_once(clock):
    with el.EventStore(clock=clock) as store:
        # An event committed before the choreography listens (a crash lost its delivery).
        store.append("reserve-t", [el.Event("ReserveDone", {}, {"correlation_id": "t"})])
        flow, participants = wire(store, clock)
        assert flow.run() == 2  # Charge, then Ship
        assert [c[1] for c in participants.calls] == ["Charge", "Ship"]
        store.bus.unsubscribe("choreography.checkout")
        again, participants = wire(store, clock)
        assert again.run() == 0 and participants.calls == []  # replayed: nothing sent twice


def test_bad_wiring_is_refused(clock):
    with el.EventStore(clock=clock) as store:
        flow, _ = wire(store, clock)
        with pytest.raises(el.SagaError, match="a choreography needs an el.CommandScheduler"):
            el.Choreography(store, None)
        with pytest.raises(el.SagaError, match="the reaction to 'X' must be callable"):
            flow.on("X", "Reserve")
        flow.run()  # listening: a reaction added now is listened for at once
        flow.on("Odd", lambda e: 42)
        store.append("odd-1", [el.Event("Odd", {})])
        failures = store.bus.failures()
        assert (
            failures["error"]
            .iloc[-1]
            .startswith("SagaError: the reaction to Odd returned 42; return an el.Command")
        )


def test_once_per_reacts_once_to_all_the_events_of_one_command(clock):
    with el.EventStore(clock=clock) as store:
        executor = el.CommandExecutor(store)
        charged = []

        @executor.handler("Reserve")
        def reserve(command, ctx):  # one event per line, on each product's stream
            return {f"product-{sku}": [el.Event("StockReserved", {})] for sku in ("A", "B")}

        @executor.handler("Charge")
        def charge(command, ctx):
            charged.append(command.command_id)

        flow = el.Choreography(store, el.CommandScheduler(store, executor), name="checkout")
        flow.on("CheckoutRequested", lambda e: ("Reserve", {}))
        flow.on("StockReserved", lambda e: ("Charge", {}), once_per=lambda e: e.causation_id)
        flow.start("CheckoutRequested", transaction_id="t")
        flow.run()
        assert charged == ["Charge:Reserve:checkout-t@1"]
        with pytest.raises(el.SagaError, match="once_per must be a function of the event"):
            flow.on("StockReserved", lambda e: None, once_per="causation_id")


def test_a_reaction_delivered_again_with_another_payload_is_a_no_op(clock):
    # Since a resubmitted command id with another payload is refused (a client bug on
    # the command side), a reaction must not be resubmitted at all: here a once_per
    # reaction whose payload names the event that triggered it, and one stamping the
    # time it was sent. Both used to fail the subscription, and no later flow moved.
    with el.EventStore(clock=clock) as store:
        executor = el.CommandExecutor(store)
        ran = []

        @executor.handler("Reserve")
        def reserve(command, ctx):  # one event per line, on each product's stream
            return {f"product-{s}": [el.Event("StockReserved", {"sku": s})] for s in "AB"}

        @executor.handler("Charge")
        def charge(command, ctx):
            ran.append((command.command_id, command.payload))
            return {f"charge-{command.correlation_id}": [el.Event("Charged", {})]}

        @executor.handler("Ship")
        def ship(command, ctx):
            ran.append((command.command_id, sorted(command.payload)))

        flow = el.Choreography(store, el.CommandScheduler(store, executor), name="checkout")
        flow.on("CheckoutRequested", lambda e: ("Reserve", {}))
        flow.on(
            "StockReserved",
            lambda e: ("Charge", {"first_sku": e.data["sku"]}),
            once_per=lambda e: e.causation_id,
        )
        flow.on("Charged", lambda e: ("Ship", {"requested_at": clock.current.isoformat()}))
        for transaction in ("t", "u"):
            flow.start("CheckoutRequested", transaction_id=transaction)
            flow.run()
        assert ran == [
            ("Charge:Reserve:checkout-t@1", {"first_sku": "A"}),
            ("Ship:charge-t@1", ["requested_at"]),
            ("Charge:Reserve:checkout-u@1", {"first_sku": "A"}),
            ("Ship:charge-u@1", ["requested_at"]),
        ]
        assert store.bus.failures().empty
        # Redelivering an old event (a catch-up) sends nothing: the id is known.
        [charged] = store.read_stream("charge-t")
        clock.advance(timedelta(minutes=5))
        flow._react(charged)
        assert flow.scheduler.pending() == 0
        # The command side still refuses a client that reuses an id for another command.
        with pytest.raises(el.CommandError, match="is already stored as a Ship"):
            flow.scheduler.submit(el.Command("Ship", {"x": 1}, command_id="Ship:charge-t@1"))


def test_a_restarted_choreography_catches_up_without_resending_changed_reactions(store_path, clock):
    def wire(store):
        executor = el.CommandExecutor(store)

        @executor.handler("Reserve")
        def reserve(command, ctx):
            return {f"reserve-{command.correlation_id}": [el.Event("Reserved", {})]}

        @executor.handler("Charge")
        def charge(command, ctx):
            return {f"charge-{command.correlation_id}": [el.Event("Charged", {})]}

        flow = el.Choreography(store, el.CommandScheduler(store, executor), name="checkout")
        flow.on("CheckoutRequested", lambda e: ("Reserve", {}))
        flow.on("Reserved", lambda e: ("Charge", {"requested_at": clock.current.isoformat()}))
        return flow

    with el.EventStore(store_path, clock=clock) as store:
        flow = wire(store)
        flow.start("CheckoutRequested", transaction_id="t")
        assert flow.run() == 2
    with el.EventStore(store_path, clock=clock) as store:
        flow = wire(store)  # catches up from position 0: every old reaction again
        flow.start("CheckoutRequested", transaction_id="u")
        assert flow.run() == 2
        assert [(e.stream_id, e.type) for e in store.read_all()][3:] == [
            ("checkout-u", "CheckoutRequested"),
            ("reserve-u", "Reserved"),
            ("charge-u", "Charged"),
        ]
        assert store.bus.failures().empty


def test_an_expired_command_is_announced_at_once(clock):
    with el.EventStore(clock=clock) as store:
        executor = el.CommandExecutor(store)
        participants = Participants(executor, clock, *TYPES)
        scheduler = el.CommandScheduler(store, executor, max_attempts=2)
        flow = el.Choreography(store, scheduler, name="checkout")
        flow.on("CheckoutRequested", lambda e: ("Reserve", {}), service="inventory")
        # The charge is pointless unless it runs within 5 s of the reservation.
        flow.on(
            "ReserveDone",
            lambda e: el.Command("Charge", {}, deadline=e.recorded_at + timedelta(seconds=5)),
            service="billing",
        )
        flow.on("ChargeFailed", lambda e: ("Release", {}), service="inventory")
        flow.on_failure("Charge", "ChargeFailed", service="billing")
        flow.start("CheckoutRequested", transaction_id="t")
        scheduler.run_once()  # the reservation; the charge then waits past its deadline
        clock.advance(timedelta(seconds=60))
        flow.run()
        assert scheduler.commands.get("Charge:reserve-t@1")["status"] == "expired"
        assert by_stream(store, "t")[2:] == [
            ("billing-t", "ChargeFailed"),
            ("release-t", "ReleaseDone"),
        ]
        [failed] = store.read_stream("billing-t")
        assert failed.data["error"].startswith("deadline ") and not failed.data["declined"]
        assert [c[1] for c in participants.calls] == ["Reserve", "Release"]


def test_a_command_that_runs_out_of_attempts_is_announced_once(clock):
    with el.EventStore(clock=clock) as store:
        flow, participants = wire(store, clock)
        participants.script("Charge", "fail")
        flow.start("CheckoutRequested", transaction_id="t")
        flow.run()
        # Heard as failed, then as dead: one announcement, one release.
        assert participants.count["t", "Charge"] == 2
        assert by_stream(store, "t")[2:] == [
            ("billing-t", "ChargeFailed"),
            ("release-t", "ReleaseDone"),
        ]
        assert store.read_stream("billing-t")[0].data["error"] == "ConnectionError: Charge is down"

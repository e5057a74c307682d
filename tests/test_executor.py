"""The command executor: the four stages, rejections, failures, ids on the events."""

from __future__ import annotations

import dataclasses
import pickle
from datetime import timedelta

import pytest

import eventlab as el
from eventlab.commands import Command, CommandStore
from eventlab.executor import CommandExecutor, CommandRejected


class Order(el.Aggregate):
    def __init__(self, id):
        super().__init__(id)
        self.items = []

    def add(self, sku):
        if sku in self.items:
            raise CommandRejected(f"{sku} is already in the order")
        self.emit("ItemAdded", {"sku": sku})

    def apply_OrderPlaced(self, event):
        self.items = list(event.data["items"])

    def apply_ItemAdded(self, event):
        self.items.append(event.data["sku"])


@pytest.fixture
def executor(store):
    executor = CommandExecutor(store, system={"currency": "EUR"})
    seen = []

    @executor.handler("PlaceOrder")
    def place_order(command, ctx):
        seen.append((ctx.transaction_id, ctx.user, ctx.attempt, ctx.system["currency"]))
        if not command.payload.get("items"):
            raise CommandRejected("an order needs at least one item")
        stream = f"order-{command.payload['order_id']}"
        return {stream: [el.Event("OrderPlaced", {"items": command.payload["items"]})]}

    @executor.handler("AddItem")
    def add_item(command, ctx):
        order = Order.load(ctx.store, f"order-{command.payload['order_id']}")
        order.add(command.payload["sku"])
        return order

    @executor.handler("Explode")
    def explode(command, ctx):
        ctx.store.append("junk-1", [el.Event("Half", {})])  # undone with the failure
        raise RuntimeError("boom")

    executor.seen = seen
    return executor


def test_success_appends_events_with_causation_and_correlation(executor, store):
    cmd = Command(
        "PlaceOrder",
        {"order_id": 1, "items": ["pen"]},
        command_id="c-1",
        correlation_id="t-9",
        context={"user": "ann"},
    )
    outcome = executor.execute(cmd)
    assert (outcome.status, outcome.events, outcome.error) == ("succeeded", 1, None)
    [event] = store.read_stream("order-1")
    assert (event.causation_id, event.correlation_id) == ("c-1", "t-9")
    assert executor.seen == [("t-9", "ann", 1, "EUR")]
    row = executor.commands.get("c-1")
    assert (row["status"], row["attempts"], row["result"]) == ("succeeded", 1, {"events": 1})
    assert executor.commands.history("c-1")["status"].tolist() == [
        "queued",
        "running",
        "succeeded",
    ]


def test_aggregates_are_saved_and_stamped(executor, store):
    executor.execute(Command("PlaceOrder", {"order_id": 2, "items": ["pen"]}))
    outcome = executor.execute(Command("AddItem", {"order_id": 2, "sku": "ink"}, command_id="c-2"))
    assert outcome.status == "succeeded"
    last = store.read_stream("order-2")[-1]
    assert (last.type, last.data, last.causation_id, last.correlation_id) == (
        "ItemAdded",
        {"sku": "ink"},
        "c-2",
        "c-2",  # no correlation id given: the command starts its own transaction
    )


def test_rejections_are_final_and_store_nothing(executor, store):
    outcome = executor.execute(Command("PlaceOrder", {"order_id": 3}, command_id="c-3"))
    assert (outcome.status, outcome.error) == ("rejected", "an order needs at least one item")
    executor.execute(Command("PlaceOrder", {"order_id": 4, "items": ["pen"]}))
    dup = executor.execute(Command("AddItem", {"order_id": 4, "sku": "pen"}))
    assert (dup.status, dup.error) == ("rejected", "pen is already in the order")
    assert store.version("order-3") == 0 and store.version("order-4") == 1
    assert executor.commands.get("c-3")["error"] == "an order needs at least one item"


def test_failures_undo_everything_the_handler_wrote(executor, store):
    outcome = executor.execute(Command("Explode", {}, command_id="c-5"))
    assert (outcome.status, outcome.error) == ("failed", "RuntimeError: boom")
    assert store.version("junk-1") == 0
    assert executor.commands.get("c-5")["status"] == "failed"


def test_unknown_types_and_bad_returns(executor, store):
    outcome = executor.execute(Command("Teleport", {}))
    assert outcome.status == "rejected"
    assert "no handler for command type 'Teleport'" in outcome.error

    @executor.handler("Weird")
    def weird(command, ctx):
        return 42

    outcome = executor.execute(Command("Weird", {}))
    assert outcome.status == "failed" and "returned int" in outcome.error
    with pytest.raises(el.CommandError, match="already has a handler"):
        executor.register("Weird", weird)


def test_subscribers_hear_every_outcome(executor):
    heard = []
    executor.subscribe(heard.append)
    executor.execute(Command("PlaceOrder", {"order_id": 6, "items": ["a"]}, command_id="c-6"))
    executor.execute(Command("PlaceOrder", {"order_id": 7}, command_id="c-7"))
    assert [(o.command_id, o.status) for o in heard] == [("c-6", "succeeded"), ("c-7", "rejected")]


def test_executing_an_existing_command_keeps_one_record(executor):
    commands: CommandStore = executor.commands
    cmd = Command("PlaceOrder", {"order_id": 8, "items": ["a"]}, command_id="c-8")
    commands.add(cmd)
    executor.execute(cmd, attempt=2)
    assert len(commands.df()) == 1
    assert commands.get("c-8")["attempts"] == 2


def test_the_command_stamp_matches_the_general_one():
    from eventlab.executor import _stamp

    for command_id, transaction_id in [("c-1", "t-1"), ('c-"é"\n', "tx-ü")]:
        assert _stamp(command_id, transaction_id) == el.EventStore._make_stamp(
            {"causation_id": command_id, "correlation_id": transaction_id}
        )


def test_context_and_outcome_keep_their_dataclass_behaviour():
    from eventlab.executor import CommandContext, CommandOutcome

    first = CommandContext(None, None, "c-1", "t-1", 1)  # type: ignore[arg-type]
    second = CommandContext(None, None, "c-1", "t-1", 1)  # type: ignore[arg-type]
    assert (first.user, first.context, first.system) == (None, {}, {})
    assert first.context is not second.context and first == second
    assert dataclasses.replace(first, attempt=2).attempt == 2
    outcome = el.CommandOutcome("c-1", "failed", 2, error="boom")
    assert (outcome.events, outcome.result) == (0, None)
    assert outcome == CommandOutcome(command_id="c-1", status="failed", attempt=2, error="boom")
    assert pickle.loads(pickle.dumps(outcome)) == outcome
    with pytest.raises(dataclasses.FrozenInstanceError):
        outcome.status = "succeeded"  # type: ignore[misc]


def test_a_finished_command_executed_again_returns_its_recorded_outcome(executor, store):
    heard = []
    executor.subscribe(heard.append)
    cmd = Command("PlaceOrder", {"order_id": 1, "items": ["pen"]}, command_id="c-1")
    first = executor.execute(cmd)
    again = executor.execute(cmd)  # a client retrying after a lost reply
    assert (
        again == first == el.CommandOutcome("c-1", "succeeded", 1, events=1, result={"events": 1})
    )
    assert len(executor.seen) == 1 and store.version("order-1") == 1
    assert executor.commands.history("c-1")["status"].tolist() == ["queued", "running", "succeeded"]
    assert [o.command_id for o in heard] == ["c-1"]  # subscribers heard it when it happened
    rejected = Command("PlaceOrder", {"order_id": 2}, command_id="c-2")
    executor.execute(rejected)
    outcome = executor.execute(rejected)
    assert (outcome.status, outcome.error) == ("rejected", "an order needs at least one item")
    assert len(executor.seen) == 2
    # Another payload under a finished id is a client bug, not a way round the rejection.
    with pytest.raises(el.CommandError, match="command id 'c-2' is already stored"):
        executor.execute(Command("PlaceOrder", {"order_id": 2, "items": ["x"]}, command_id="c-2"))
    assert executor.commands.get("c-2")["status"] == "rejected" and store.version("order-2") == 0


@pytest.mark.parametrize("status", ["dead", "expired"])
def test_a_dead_or_expired_command_is_not_run_by_execute(executor, store, status):
    cmd = Command("PlaceOrder", {"order_id": 3, "items": ["pen"]}, command_id="c-3")
    executor.commands.add(cmd)
    executor.commands.set_status("c-3", status, attempts=2, error="gave up")
    outcome = executor.execute(cmd)
    assert outcome == el.CommandOutcome("c-3", status, 2, error="gave up")
    assert executor.seen == [] and store.version("order-3") == 0


def test_a_running_command_is_refused_and_a_failed_one_runs_as_its_next_attempt(executor, store):
    cmd = Command("PlaceOrder", {"order_id": 4, "items": ["pen"]}, command_id="c-4")
    executor.commands.add(cmd)
    executor.commands.set_status("c-4", "running", attempts=1)
    with pytest.raises(el.CommandError, match=r"'c-4' is running \(attempt 1, started "):
        executor.execute(cmd)
    assert executor.seen == [] and executor.commands.get("c-4")["status"] == "running"
    executor.commands.set_status("c-4", "failed", error="RuntimeError: boom")
    outcome = executor.execute(cmd)
    assert (outcome.status, outcome.attempt) == ("succeeded", 2)
    assert executor.seen == [("c-4", None, 2, "EUR")] and store.version("order-4") == 1
    with pytest.raises(el.CommandError, match="attempt must be an int of 1 or more, got int: 0"):
        executor.execute(Command("PlaceOrder", {"order_id": 5}), attempt=0)


def test_an_executor_needs_an_event_store_and_a_command_store_on_it(store):
    with pytest.raises(
        el.CommandError, match="CommandExecutor needs an el.EventStore, got NoneType"
    ):
        CommandExecutor(None)  # type: ignore[arg-type]
    with el.EventStore() as other:
        with pytest.raises(
            el.CommandError, match="commands must be an el.CommandStore on the same"
        ):
            CommandExecutor(store, CommandStore(other))
    with pytest.raises(el.CommandError, match="commands must be an el.CommandStore"):
        CommandExecutor(store, "commands")  # type: ignore[arg-type]


def test_a_read_only_store_cannot_execute(store_path):
    with el.EventStore(store_path) as store:
        store.append("s", [el.Event("E", {})])
    with el.EventStore(store_path, read_only=True) as ro:
        executor = CommandExecutor(ro)
        executor.register("P", lambda command, ctx: None)
        with pytest.raises(el.ReadOnlyError, match="its command store cannot record commands"):
            executor.execute(Command("P", {}, command_id="c-1"))


def test_the_timeout_counts_the_handler_time_not_the_clock_steps_of_its_events(store, clock):
    # The store's clock steps 1 s per appended event (see conftest).
    executor = CommandExecutor(store)

    @executor.handler("Import")
    def import_rows(command, ctx):
        ctx.store.append("log-1", [el.Event("Started", {})])  # appended by the handler itself
        clock.advance(timedelta(seconds=command.payload["wait"]))
        return {"batch-1": [el.Event("Row", {"i": i}) for i in range(command.payload["n"])]}

    scheduler = el.CommandScheduler(store, executor, max_attempts=1)  # timeout 30 s
    scheduler.submit(el.Command("Import", {"n": 40, "wait": 30}, command_id="big"))
    scheduler.submit(el.Command("Import", {"n": 40, "wait": 31}, command_id="slow"))
    scheduler.run()
    big, slow = scheduler.commands.get("big"), scheduler.commands.get("slow")
    # Its result counts every event it caused: the 40 returned and the one appended.
    assert (big["status"], big["result"]) == ("succeeded", {"events": 41})
    assert store.version("batch-1") == 40 and store.version("log-1") == 1
    assert (slow["status"], slow["attempts"]) == ("dead", 1)
    assert slow["error"] == "ran 0:00:31, longer than the timeout 0:00:30; undone"
    # The events keep their stepped timestamps: 1 s apart.
    rows = store.read_stream("batch-1")
    assert rows[1].recorded_at - rows[0].recorded_at == timedelta(seconds=1)


def test_the_result_counts_the_events_the_handler_appended_itself(executor, store):
    @executor.handler("Import")
    def import_rows(command, ctx):
        ctx.store.append("log-1", [el.Event("Started", {}), el.Event("Read", {})])
        return {"batch-1": [el.Event("Row", {})]} if command.payload["returns"] else None

    both = executor.execute(Command("Import", {"returns": True}, command_id="both"))
    direct = executor.execute(Command("Import", {"returns": False}, command_id="direct"))
    assert (both.events, both.result, direct.events, direct.result) == (
        3,
        {"events": 3},
        2,
        {"events": 2},
    )
    assert executor.commands.get("direct")["result"] == {"events": 2}
    # The same count scan() records for a command whose events it finds (see
    # test_scan_marks_a_command_whose_events_are_stored_as_succeeded).
    caused = store.sql("SELECT count(*) AS n FROM events WHERE causation_id = 'direct'")
    assert caused["n"].tolist() == [2]


def test_an_error_quoting_a_badly_decoded_name_is_stored_escaped(store_path):
    name = b"caf\xe9.csv".decode("utf-8", "surrogateescape")  # holds a lone surrogate
    with el.EventStore(store_path) as store:
        executor = CommandExecutor(store)

        @executor.handler("Import")
        def import_file(command, ctx):
            raise FileNotFoundError(f"no such file: {name}")

        @executor.handler("Check")
        def check(command, ctx):
            raise CommandRejected(f"cannot read {name}")

        failed = executor.execute(Command("Import", {}, command_id="c-1"))
        rejected = executor.execute(Command("Check", {}, command_id="c-2"))
        assert failed.error == "FileNotFoundError: no such file: caf\\udce9.csv"
        assert rejected.error == "cannot read caf\\udce9.csv"
        executor.commands.set_status("c-1", "dead", error=f"gave up on {name}")
    with el.EventStore(store_path) as store:  # the file reopens, and says what happened
        commands = CommandStore(store)
        assert commands.get("c-1")["error"] == "gave up on caf\\udce9.csv"
        assert commands.get("c-2")["error"] == "cannot read caf\\udce9.csv"


def test_execute_discards_a_command_past_its_deadline_as_expired(executor, store, clock):
    heard = []
    executor.subscribe(heard.append)
    deadline = clock.current + timedelta(minutes=5)
    on_time = Command(
        "PlaceOrder", {"order_id": 7, "items": ["pen"]}, command_id="c-7", deadline=deadline
    )
    late = Command(
        "PlaceOrder", {"order_id": 8, "items": ["pen"]}, command_id="c-8", deadline=deadline
    )
    assert executor.execute(on_time).status == "succeeded"
    clock.advance(timedelta(minutes=10))
    outcome = executor.execute(late)
    error = f"deadline {deadline.isoformat()} passed before it ran"
    assert outcome == el.CommandOutcome("c-8", "expired", 0, error=error)
    assert heard[-1] == outcome and len(heard) == 2
    assert executor.seen == [("c-7", None, 1, "EUR")] and store.version("order-8") == 0
    assert [h["status"] for h in executor.commands.history("c-8").to_dict("records")] == [
        "queued",
        "expired",
    ]
    assert executor.execute(late) == outcome  # finished: the recorded outcome

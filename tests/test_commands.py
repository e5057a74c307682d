"""Commands and the command store: validation, idempotent add, status history, queries."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

import eventlab as el
from eventlab.commands import Command, CommandStore
from tests.conftest import START


@pytest.fixture
def commands(clock):
    with el.EventStore(clock=clock) as store:
        yield CommandStore(store)


def test_command_defaults_and_validation():
    cmd = Command("PlaceOrder", {"order_id": "o-1"}, deadline="2024-01-01T00:05:00")
    assert len(cmd.command_id) == 36  # a UUID
    assert cmd.deadline == datetime(2024, 1, 1, 0, 5, tzinfo=UTC)
    assert Command("X").payload == {}
    with pytest.raises(el.InvalidEventError, match="command type must be a non-empty string"):
        Command("")
    with pytest.raises(el.CommandError, match="payload must be a dict"):
        Command("X", ["not", "a", "dict"])
    with pytest.raises(el.InvalidEventError, match=r"command payload\['when'\] is not JSON"):
        Command("X", {"when": datetime(2024, 1, 1)})
    with pytest.raises(el.CommandError, match="context must be a dict"):
        Command("X", {}, context="alice")


def test_command_is_a_frozen_dataclass_with_its_constructor():
    cmd = Command("X", {"a": 1}, "c-1", "t-1", "2024-01-01T00:00:00", {"user": "ann"})
    assert (cmd.type, cmd.payload, cmd.command_id, cmd.correlation_id, cmd.context) == (
        "X",
        {"a": 1},
        "c-1",
        "t-1",
        {"user": "ann"},
    )
    assert cmd == Command(
        type="X",
        payload={"a": 1},
        command_id="c-1",
        correlation_id="t-1",
        deadline=cmd.deadline,
        context={"user": "ann"},
    )
    assert dataclasses.replace(cmd, type="Y").type == "Y"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cmd.type = "Y"  # type: ignore[misc]
    first, second = Command("X"), Command("X")
    first.payload["k"] = 1
    assert second.payload == {} and first.command_id != second.command_id
    with pytest.raises(el.InvalidEventError, match=r"command context\['when'\] is not JSON"):
        Command("X", {}, context={"when": datetime(2024, 1, 1)})
    with pytest.raises(el.InvalidEventError, match="correlation_id must be a non-empty string"):
        Command("X", correlation_id="")


def test_add_is_idempotent_by_command_id(commands):
    cmd = Command("PlaceOrder", {"order_id": "o-1"}, command_id="c-1", correlation_id="t-1")
    assert commands.add(cmd) is True
    assert commands.add(Command("PlaceOrder", {"order_id": "other"}, command_id="c-1")) is False
    row = commands.get("c-1")
    assert (row["type"], row["payload"], row["status"], row["attempts"]) == (
        "PlaceOrder",
        {"order_id": "o-1"},
        "queued",
        0,
    )
    assert row["correlation_id"] == "t-1" and row["context"] == {}
    assert row["submitted_at"] == START
    assert len(commands.df()) == 1


def test_status_changes_are_stamped_and_kept_in_history(commands, clock):
    commands.add(Command("PlaceOrder", {}, command_id="c-1", context={"user": "ann"}))
    clock.advance(timedelta(seconds=10))
    commands.set_status("c-1", "running", attempts=1)
    clock.advance(timedelta(seconds=5))
    commands.set_status("c-1", "failed", error="ValueError: flaky")
    commands.set_status("c-1", "queued", available_at=START + timedelta(seconds=30))
    clock.advance(timedelta(seconds=20))
    commands.set_status("c-1", "running", attempts=2)
    commands.set_status("c-1", "succeeded", result={"events": 6})
    row = commands.get("c-1")
    assert row["status"] == "succeeded" and row["attempts"] == 2
    assert row["started_at"] == START + timedelta(seconds=35)
    assert row["finished_at"] == START + timedelta(seconds=35)
    assert row["available_at"] == START + timedelta(seconds=30)
    assert row["result"] == {"events": 6} and row["context"] == {"user": "ann"}
    history = commands.history("c-1")
    history["error"] = history["error"].fillna("-")
    assert history[["status", "attempt", "error"]].values.tolist() == [
        ["queued", 0, "-"],
        ["running", 1, "-"],
        ["failed", 1, "ValueError: flaky"],
        ["queued", 1, "-"],
        ["running", 2, "-"],
        ["succeeded", 2, "-"],
    ]
    assert history["at"].tolist() == [START + timedelta(seconds=s) for s in (0, 10, 15, 15, 35, 35)]


def test_queries_by_time_and_status(commands, clock):
    for i in range(4):
        commands.add(Command("PlaceOrder", {"n": i}, command_id=f"c-{i}"))
        clock.advance(timedelta(minutes=1))
    commands.set_status("c-1", "rejected", error="no stock")
    commands.set_status("c-3", "dead", error="gave up")
    window = commands.between(START + timedelta(minutes=1), START + timedelta(minutes=3))
    assert window["command_id"].tolist() == ["c-1", "c-2"]
    assert commands.by_status("rejected", "dead")["command_id"].tolist() == ["c-1", "c-3"]
    assert commands.by_status("queued")["payload"].tolist() == [{"n": 0}, {"n": 2}]
    assert commands.counts() == {"dead": 1, "queued": 2, "rejected": 1}
    assert commands.df()["seq"].tolist() == [1, 2, 3, 4]


def test_bad_use_is_refused_with_the_fix(commands):
    with pytest.raises(el.CommandError, match="no command with id 'nope'"):
        commands.get("nope")
    with pytest.raises(el.CommandError, match="no command with id 'nope'"):
        commands.set_status("nope", "running")
    with pytest.raises(el.CommandError, match="no command with id 'nope'"):
        commands.history("nope")
    commands.add(Command("X", {}, command_id="c-1"))
    with pytest.raises(el.CommandError, match="unknown command status 'done'"):
        commands.set_status("c-1", "done")
    with pytest.raises(el.CommandError, match="by_status"):
        commands.by_status("done")
    with pytest.raises(el.CommandError, match="expected an el.Command"):
        commands.add({"type": "X"})
    assert commands.history("c-1")["status"].tolist() == ["queued"]


def test_commands_survive_reopening(store_path):
    clock = el.SimulatedClock(START, step=timedelta(seconds=1))
    with el.EventStore(store_path, clock=clock) as store:
        commands = CommandStore(store)
        commands.add(Command("A", {}, command_id="c-1"))
        commands.set_status("c-1", "running", attempts=1)
    with el.EventStore(store_path, clock=clock) as store:
        commands = CommandStore(store)
        commands.add(Command("B", {}, command_id="c-2"))
        assert commands.df()[["command_id", "seq", "status"]].values.tolist() == [
            ["c-1", 1, "running"],
            ["c-2", 2, "queued"],
        ]
        assert commands.history("c-2")["status"].tolist() == ["queued"]


def test_df_of_finished_and_unfinished_commands(commands):
    commands.add(Command("A", {"n": 1}, command_id="a"))
    commands.add(Command("B", {"n": 2}, command_id="b"))
    commands.set_status("a", "succeeded", result={"events": 1})
    frame = commands.df()
    assert frame["result"].tolist() == [{"events": 1}, None]
    assert commands.by_status("queued", "succeeded")["command_id"].tolist() == ["a", "b"]


def test_a_payload_of_another_mapping_type_is_checked_even_when_empty():
    import types

    message = r"command payload is not JSON-serialisable \(mappingproxy: "
    with pytest.raises(el.InvalidEventError, match=message):
        Command("X", types.MappingProxyType({}))
    assert Command("X", {}).payload == {} and Command("X", context={}).context == {}

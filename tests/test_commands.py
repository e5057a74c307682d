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
    # The same command again (even rebuilt, a tuple for a list) is a no-op.
    assert commands.add(Command("PlaceOrder", {"order_id": "o-1"}, command_id="c-1")) is False
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


def test_a_command_id_resubmitted_with_other_content_is_refused(commands):
    commands.add(Command("PlaceOrder", {"order_id": "o-1", "items": [1, 2]}, command_id="c-1"))
    same = Command("PlaceOrder", {"items": (1, 2), "order_id": "o-1"}, command_id="c-1")
    assert commands.add(same) is False  # same JSON object: an idempotent resubmission
    with pytest.raises(el.CommandError, match=r"command id 'c-1' is already stored.*payload"):
        commands.add(Command("PlaceOrder", {"order_id": "other"}, command_id="c-1"))
    with pytest.raises(el.CommandError, match=r"already stored as a PlaceOrder.*new id"):
        commands.add(Command("CancelOrder", {"order_id": "o-1", "items": [1, 2]}, "c-1"))
    # Inside a transaction, against the row staged in it, too.
    with commands.store.transaction():
        commands.add(Command("A", {"n": 1}, command_id="c-2"))
        with pytest.raises(el.CommandError, match="command id 'c-2' is already stored"):
            commands.add(Command("A", {"n": 2}, command_id="c-2"))
    assert commands.get("c-1")["payload"] == {"order_id": "o-1", "items": [1, 2]}
    assert commands.get("c-2")["payload"] == {"n": 1}
    assert commands.history("c-1")["status"].tolist() == ["queued"]


def test_a_none_payload_is_refused_and_an_omitted_one_is_empty():
    with pytest.raises(el.CommandError, match=r"payload must be a dict.*got NoneType.*pass \{\}"):
        Command("P", None)  # type: ignore[arg-type]
    assert Command("P").payload == {} and Command("P", {}).payload == {}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempts": "two"}, r"attempts must be an int from 0 to 2147483647, got str: 'two'"),
        ({"attempts": 2**31}, r"attempts must be an int from 0 to 2147483647, got int: 2147483648"),
        ({"attempts": -1}, r"attempts must be an int from 0"),
        ({"attempts": 1.5}, r"attempts must be an int from 0 to 2147483647, got float"),
        ({"attempts": True}, r"attempts must be an int from 0 to 2147483647, got bool"),
        ({"error": 5}, r"error must be a str \(why\) or None, got int: 5; pass e.g. error=str"),
        ({"error": b"x"}, r"error must be a str \(why\) or None, got bytes"),
        ({"result": [1]}, r"result must be a dict \(a JSON object\) or None, got list"),
        ({"result": {"when": datetime(2024, 1, 1)}}, r"command result\['when'\] is not JSON"),
        (
            {"available_at": 2**70},
            r"available_at must be a datetime.*got int: 1180591620717411303424",
        ),
        ({"available_at": True}, r"available_at must be a datetime.*got bool"),
        ({"available_at": "soon"}, r"available_at: cannot read 'soon' as a timestamp"),
        ({"available_at": 1.5}, r"available_at must be a datetime.*got float: 1.5"),
        ({"status": None}, r"unknown command status None"),
    ],
)
def test_bad_set_status_arguments_are_refused_and_the_store_reopens(store_path, kwargs, message):
    kwargs = {"status": "failed", **kwargs}
    with el.EventStore(store_path, clock=el.SimulatedClock(START)) as store:
        commands = CommandStore(store)
        commands.add(Command("P", {}, command_id="c-1"))
        with pytest.raises((el.CommandError, el.InvalidEventError), match=message):
            commands.set_status("c-1", **kwargs)
        with store.transaction():  # nothing staged, in or out of a transaction
            with pytest.raises((el.CommandError, el.InvalidEventError), match=message):
                commands.set_status("c-1", **kwargs)
            assert commands.log.status("c-1") == "queued"
        assert commands.history("c-1")["status"].tolist() == ["queued"]
        store.append("s", [el.Event("E", {})])  # the store still writes and reads
        assert len(store.events()) == 1
    with el.EventStore(store_path) as again:
        row = CommandStore(again).get("c-1")
        assert (row["status"], row["attempts"], row["error"]) == ("queued", 0, None)


def test_good_set_status_arguments_at_their_limits_are_kept(commands):
    commands.add(Command("P", {}, command_id="c-1"))
    late = datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
    commands.set_status("c-1", "queued", attempts=2**31 - 1, available_at=late)
    commands.set_status("c-1", "failed", error="", result={})
    row = commands.get("c-1")
    assert (row["attempts"], row["available_at"], row["error"], row["result"]) == (
        2**31 - 1,
        late,
        "",
        {},
    )
    with pytest.raises(el.CommandError, match="command_id must be a str, got list"):
        commands.set_status(["c-1"], "failed")  # type: ignore[arg-type]


def test_a_command_store_needs_an_event_store_and_a_sane_limit(commands):
    with pytest.raises(el.CommandError, match=r"CommandStore needs an el.EventStore, got NoneType"):
        CommandStore(None)  # type: ignore[arg-type]
    commands.add(Command("P", {}, command_id="c-1"))
    commands.add(Command("P", {}, command_id="c-2"))
    assert commands.df(limit=1)["command_id"].tolist() == ["c-1"]
    assert commands.df(limit=0).empty
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(el.CommandError, match="limit must be an int of 0 or more, or None"):
            commands.df(limit=bad)
    with pytest.raises(el.CommandError, match="command_id must be a str, got int"):
        commands.get(5)  # type: ignore[arg-type]


def test_a_read_only_store_answers_queries_and_refuses_writes(store_path):
    with el.EventStore(store_path, clock=el.SimulatedClock(START)) as store:
        commands = CommandStore(store)
        commands.add(Command("P", {"n": 1}, command_id="c-1"))
        commands.set_status("c-1", "succeeded", attempts=1, result={"events": 0})
    with el.EventStore(store_path, read_only=True) as ro:
        commands = CommandStore(ro)
        assert commands.get("c-1")["status"] == "succeeded"
        assert commands.between(START, START + timedelta(days=1))["command_id"].tolist() == ["c-1"]
        assert commands.by_status("succeeded")["payload"].tolist() == [{"n": 1}]
        assert commands.history("c-1")["status"].tolist() == ["queued", "succeeded"]
        assert len(commands.df()) == 1 and commands.counts() == {"succeeded": 1}
        message = r"opened with read_only=True, so its command store cannot record commands"
        with pytest.raises(el.ReadOnlyError, match=message):
            commands.add(Command("P", {}, command_id="c-2"))
        with pytest.raises(el.ReadOnlyError, match=message):
            commands.set_status("c-1", "dead")
        assert commands.counts() == {"succeeded": 1}


def test_a_read_only_store_without_commands_has_an_empty_command_store(store_path):
    with el.EventStore(store_path, clock=el.SimulatedClock(START)) as store:
        store.append("s", [el.Event("E", {})])
    with el.EventStore(store_path, read_only=True) as ro:
        commands = CommandStore(ro)
        frame = commands.df()
        assert frame.empty and list(frame.columns)[:3] == ["command_id", "seq", "type"]
        assert commands.counts() == {} and commands.by_status("queued").empty
        with pytest.raises(el.CommandError, match="no command with id 'c-1'"):
            commands.get("c-1")

"""The ``eventlab`` command line (eventlab.cli), the demo it runs (eventlab.demo) and data/."""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from contract import EVENT_COLUMNS

import eventlab as el
from eventlab.cli import build_parser, main, store_summary
from eventlab.demo import (
    SHOP_COLUMNS,
    SHOP_EVENT_TYPES,
    record_shop_history,
    run_demo,
    shop_history_frame,
)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "shop_sample.parquet"
SIMULATION = ROOT / "data" / "shop_simulation"
CONSOLE_SCRIPT = Path(sys.executable).parent / "eventlab"
SUBCOMMANDS = ("info", "export", "import", "demo", "generate")


def build_store(path: Path) -> Path:
    """A closed file store of 6 events: 3 streams, 3 types, known times."""
    clock = el.SimulatedClock("2024-05-01T10:00:00", step=timedelta(minutes=1))
    with el.EventStore(path, clock=clock) as store:
        store.append(
            "order-1",
            [
                el.Event("OrderPlaced", {"customer": "c-1"}, occurred_at="2024-04-30T09:00:00"),
                el.Event("ItemAdded", {"sku": "MUG", "quantity": 2}),
            ],
            expected_version=0,
        )
        store.append(
            "order-2",
            [
                el.Event("OrderPlaced", {"customer": "c-2"}),
                el.Event("ItemAdded", {"sku": "TEE", "quantity": 1}),
                el.Event("ItemAdded", {"sku": "BAG", "quantity": 3}),
            ],
            expected_version=0,
        )
        store.append("cart-1", el.Event("CartOpened", {}))
    return path


@pytest.fixture
def shop_file(tmp_path: Path) -> Path:
    return build_store(tmp_path / "shop.duckdb")


def events_of(path: Path) -> pd.DataFrame:
    with el.EventStore(path, read_only=True) as store:
        return store.events()


def parse_info(text: str) -> tuple[dict[str, str], dict[str, int]]:
    """Split ``eventlab info`` output into its fields and its type -> count lines."""
    fields: dict[str, str] = {}
    types: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("  "):
            name, count = line.split()
            types[name] = int(count.replace(",", ""))
        else:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields, types


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------- the parser and --help


def subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_registered_subcommand_is_documented_and_listed(capsys):
    parser = build_parser()
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {choice.dest: choice.help for choice in action._choices_actions}
    assert sorted(action.choices) == sorted(SUBCOMMANDS)

    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    for name, sub in action.choices.items():
        assert helps[name] and helps[name].strip(), f"{name} has no one-line help"
        assert sub.description and sub.description.strip(), f"{name} has no description"
        assert "examples:" in (sub.epilog or ""), f"{name} has no examples"
        assert f"eventlab {name}" in sub.epilog, f"{name}'s examples do not run it"
        assert f"    {name}  " in top and helps[name].split()[0] in top


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_help_of_each_subcommand(name, capsys):
    assert main([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: eventlab {name}")
    assert "examples:" in out
    for option in subcommand_parsers()[name]._actions:
        assert option.help, f"{name}: {option.dest} has no help"


def test_top_level_help_lists_commands_and_examples(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: eventlab")
    for name in SUBCOMMANDS:
        assert f"eventlab {name}" in out  # an example of each


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"eventlab {el.__version__}\n"


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("usage: eventlab")
    assert "commands:" in captured.err


def test_usage_errors_exit_2(capsys):
    assert main(["nosuchcommand"]) == 2
    assert "invalid choice: 'nosuchcommand'" in capsys.readouterr().err
    assert main(["info"]) == 2
    assert "the following arguments are required: STORE" in capsys.readouterr().err
    assert main(["demo", "--orders", "0"]) == 2
    assert "argument --orders: must be 1 or more, got 0" in capsys.readouterr().err
    assert main(["info", "x.duckdb", "--top", "many"]) == 2
    assert "not a whole number: 'many'" in capsys.readouterr().err


# ---------------------------------------------------------------------- info


def test_info_exact_counts(shop_file, capsys):
    assert main(["info", str(shop_file)]) == 0
    fields, types = parse_info(capsys.readouterr().out)
    assert fields == {
        "store": str(shop_file),
        "events": "6",
        "streams": "3",
        "types": "3",
        "recorded_at": "2024-05-01 10:00:00+00:00 .. 2024-05-01 10:05:00+00:00",
        "occurred_at": "2024-04-30 09:00:00+00:00 .. 2024-05-01 10:05:00+00:00",
        "head": "6",
    }
    # Most frequent first, ties by name.
    assert list(types.items()) == [("ItemAdded", 3), ("OrderPlaced", 2), ("CartOpened", 1)]


def test_info_top_limits_the_type_list(shop_file, capsys):
    assert main(["info", str(shop_file), "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert "  ItemAdded" in out and "OrderPlaced" not in out
    assert "  ... and 2 more (--top N to list more)" in out


def test_info_of_an_empty_store(tmp_path, capsys):
    path = tmp_path / "empty.duckdb"
    el.EventStore(path).close()
    assert main(["info", str(path)]) == 0
    fields, types = parse_info(capsys.readouterr().out)
    assert (fields["events"], fields["streams"], fields["types"], fields["head"]) == (
        "0",
        "0",
        "0",
        "0",
    )
    assert fields["recorded_at"] == fields["occurred_at"] == "-"
    assert types == {}


def test_info_does_not_change_the_store(shop_file, capsys):
    before = file_digest(shop_file)
    assert main(["info", str(shop_file)]) == 0
    assert file_digest(shop_file) == before


def test_store_summary(shop_file):
    with el.EventStore(shop_file, read_only=True) as store:
        summary = store_summary(store, top=2)
    assert summary == {
        "events": 6,
        "streams": 3,
        "types": 3,
        "top_types": {"ItemAdded": 3, "OrderPlaced": 2},
        "recorded_at": (
            pd.Timestamp("2024-05-01T10:00:00Z"),
            pd.Timestamp("2024-05-01T10:05:00Z"),
        ),
        "occurred_at": (
            pd.Timestamp("2024-04-30T09:00:00Z"),
            pd.Timestamp("2024-05-01T10:05:00Z"),
        ),
        "head": 6,
    }


# ---------------------------------------------------------------------- export and import


@pytest.mark.parametrize(
    ("partition", "files", "how"),
    [
        ([], 1, ""),
        (["--partition-by", "day"], 1, ", partitioned by day"),
        (["--partition-by", "type"], 3, ", partitioned by type"),
        # order-1 and order-2 hold two types each, cart-1 one
        (["--partition-by", "stream_id", "type"], 5, ", partitioned by stream_id, type"),
    ],
    ids=["single-file", "day", "type", "stream_id+type"],
)
def test_export_import_round_trip(shop_file, tmp_path, capsys, partition, files, how):
    lake = tmp_path / "lake"
    copy = tmp_path / "copy.duckdb"
    assert main(["export", str(shop_file), str(lake), *partition]) == 0
    written = sorted(lake.rglob("*.parquet"))
    assert len(written) == files
    if not partition:
        assert written == [lake / "events.parquet"]
    plural = "s" if files > 1 else ""
    assert capsys.readouterr().out == (
        f"Exported 6 events from {shop_file} to {lake}{how}: {files} Parquet file{plural}.\n"
    )

    assert main(["import", str(lake), str(copy)]) == 0
    assert capsys.readouterr().out == (
        f"Imported 6 events from {lake} into {copy} (a new store); head is now 6.\n"
    )
    pd.testing.assert_frame_equal(events_of(copy), events_of(shop_file))


def test_day_partitions_follow_recorded_at(tmp_path, capsys):
    path = tmp_path / "days.duckdb"
    clock = el.SimulatedClock("2024-05-01T23:59:59", step=timedelta(seconds=1))
    with el.EventStore(path, clock=clock) as store:
        store.append("s-1", [el.Event("A", {}), el.Event("B", {})])
    assert main(["export", str(path), str(tmp_path / "lake"), "--partition-by", "day"]) == 0
    days = sorted(p.parent.name for p in (tmp_path / "lake").rglob("*.parquet"))
    assert days == ["day=2024-05-01", "day=2024-05-02"]


def test_import_a_glob_into_an_existing_store(shop_file, tmp_path, capsys):
    lake = tmp_path / "lake"
    assert main(["export", str(shop_file), str(lake), "--partition-by", "type"]) == 0
    target = tmp_path / "target.duckdb"
    with el.EventStore(target) as store:
        store.append("other-1", el.Event("Noted", {"n": 1}))
    capsys.readouterr()

    pattern = str(lake / "type=*" / "*.parquet")
    assert main(["import", pattern, str(target)]) == 0
    assert capsys.readouterr().out == (
        f"Imported 6 events from {pattern} into {target}; head is now 7.\n"
    )
    events = events_of(target)
    original = events_of(shop_file)
    assert events["position"].tolist() == list(range(1, 8))
    assert events["stream_id"].tolist() == ["other-1", *original["stream_id"]]
    assert events["type"].tolist() == ["Noted", *original["type"]]
    assert events["version"].tolist() == [1, *original["version"]]


def test_import_of_a_partial_export_that_breaks_versions(shop_file, tmp_path, capsys):
    lake = tmp_path / "lake"
    assert main(["export", str(shop_file), str(lake), "--partition-by", "type"]) == 0
    capsys.readouterr()
    target = tmp_path / "items.duckdb"
    # ItemAdded events are versions 2.. of their streams: they cannot start a new store.
    assert main(["import", str(lake / "type=ItemAdded"), str(target)]) == 1
    assert_error(capsys, "gives version 2 for stream 'order-1'", "Nothing was written")
    assert not target.exists()


def test_export_refuses_a_non_empty_directory_unless_overwrite(shop_file, tmp_path, capsys):
    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "old.parquet").write_bytes(b"old")
    assert main(["export", str(shop_file), str(lake)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"eventlab: error: {lake} is not empty")
    assert "--overwrite" in captured.err
    assert (lake / "old.parquet").read_bytes() == b"old"

    assert main(["export", str(shop_file), str(lake), "--overwrite"]) == 0
    assert sorted(p.name for p in lake.rglob("*.parquet")) == ["events.parquet"]


# ---------------------------------------------------------------------- errors


def assert_error(capsys, *texts: str) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("eventlab: error: ")
    assert captured.err.count("\n") == 1, "one line, no traceback"
    assert "Traceback" not in captured.err
    for text in texts:
        assert text in captured.err
    return captured.err


def test_info_on_a_missing_file(tmp_path, capsys):
    missing = tmp_path / "missing.duckdb"
    assert main(["info", str(missing)]) == 1
    assert_error(capsys, f"there is no store at {missing}")
    assert not missing.exists()


def test_info_on_a_directory_or_a_file_that_is_not_a_store(tmp_path, capsys):
    assert main(["info", str(tmp_path)]) == 1
    assert_error(capsys, "is a directory")
    junk = tmp_path / "junk.duckdb"
    junk.write_text("not a database" * 100)
    assert main(["info", str(junk)]) == 1
    assert_error(capsys, f"cannot open {junk}")


def test_info_on_a_duckdb_file_without_events(tmp_path, capsys):
    import duckdb

    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).close()
    assert main(["info", str(other)]) == 1
    assert_error(capsys, "without an eventlab 'events' table")


def test_export_of_a_missing_store(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope.duckdb"), str(tmp_path / "lake")]) == 1
    assert_error(capsys, "there is no store at")
    assert not (tmp_path / "lake").exists()


def test_export_with_an_unknown_partition_column(shop_file, tmp_path, capsys):
    assert main(["export", str(shop_file), str(tmp_path / "lake"), "--partition-by", "colour"]) == 1
    assert_error(capsys, "cannot partition by ['colour']")


def test_import_of_a_missing_path_creates_no_store(tmp_path, capsys):
    target = tmp_path / "new.duckdb"
    assert main(["import", str(tmp_path / "nowhere"), str(target)]) == 1
    assert_error(capsys, "no Parquet files at")
    assert sorted(tmp_path.iterdir()) == []


def test_import_of_a_corrupt_file_leaves_an_existing_store_unchanged(shop_file, tmp_path, capsys):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not really parquet")
    before = events_of(shop_file)
    assert main(["import", str(bad), str(shop_file)]) == 1
    assert_error(capsys, "cannot read Parquet")
    pd.testing.assert_frame_equal(events_of(shop_file), before)


def test_import_of_parquet_without_event_columns(tmp_path, capsys):
    source = tmp_path / "plain.parquet"
    pd.DataFrame({"a": [1, 2]}).to_parquet(source)
    assert main(["import", str(source), str(tmp_path / "s.duckdb")]) == 1
    assert_error(capsys, "lacks the required column(s) ['stream_id', 'type', 'data']")
    assert not (tmp_path / "s.duckdb").exists()


def test_info_while_another_process_writes(shop_file, capsys):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, eventlab as el\n"
            f"store = el.EventStore({str(shop_file)!r})\n"
            "print('open', flush=True)\n"
            "sys.stdin.read()\n"
            "store.close()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "open\n"
        assert main(["info", str(shop_file)]) == 1
        assert_error(capsys, "another process has it open", "read_only=True")
    finally:
        holder.communicate("", timeout=30)
    assert main(["info", str(shop_file)]) == 0


# ---------------------------------------------------------------------- demo


def test_demo_command(tmp_path, capsys):
    directory = tmp_path / "demo"
    assert main(["demo", "--dir", str(directory), "--orders", "30", "--simulated-orders", "8"]) == 0
    out = capsys.readouterr().out
    frame = shop_history_frame(30, 7)
    assert out.splitlines()[0] == (
        f"Generated a shop history (seed 7): 30 orders, {len(frame)} events of types "
        f"{', '.join(t for t in SHOP_EVENT_TYPES if t in set(frame['type']))}."
    )
    assert "raised ConcurrencyError" in out
    assert f"Read it back with EventStore.from_parquet: {len(frame)} events in 30 streams." in out
    assert "Round trip identical" in out
    assert out.splitlines()[-1] == f"Try: eventlab info {directory / 'shop.duckdb'}"
    # Then the shop simulation: commands by status and events by type, after the rest.
    lines = out.splitlines()
    simulated = lines.index("Commands by status:")
    assert simulated > lines.index(next(line for line in lines if "Round trip" in line))
    assert lines[simulated - 1].startswith(
        "Simulated 8 orders over 3 days (seed 7): 2024-03-01 08:00"
    )
    assert lines[simulated + 1].split()[0] == "succeeded"
    assert "Events by type:" in lines and any(line.split()[:1] == ["OrderPlaced"] for line in lines)
    with el.EventStore(directory / "shop-simulation.duckdb", read_only=True) as store:
        assert store.sql("SELECT count(*) AS n FROM events WHERE type = 'OrderPlaced'")["n"][0] == 8

    events = events_of(directory / "shop.duckdb")
    assert len(events) == len(frame)
    assert events["stream_id"].nunique() == 30
    assert (events["recorded_at"] >= events["occurred_at"]).all()
    assert list(directory.joinpath("parquet").glob("day=*/*.parquet"))


def test_run_demo_summary(tmp_path):
    summary = run_demo(tmp_path, orders=40, seed=3, simulated_orders=10)
    frame = shop_history_frame(40, 3)
    assert summary["orders"] == 40
    assert summary["events"] == summary["restored_events"] == len(frame)
    assert summary["streams"] == 40
    assert summary["types"] == frame["type"].value_counts().to_dict()
    settled = frame["type"].isin(["OrderShipped", "OrderCancelled"]).sum()
    assert summary["commands"] == 40 + settled
    assert summary["per_command_appends"] + summary["batched_appends"] == summary["commands"]
    assert summary["batched_appends"] > 0 and summary["per_command_appends"] > 0
    assert "is at version" in summary["concurrency_error"]
    assert summary["round_trip_identical"] is True
    assert summary["parquet_files"] == summary["partitions"] >= 2
    assert summary["store_path"] == str(tmp_path / "shop.duckdb")
    assert all(isinstance(line, str) and line for line in summary["lines"])
    simulation = summary["simulation"]
    assert (simulation["orders"], simulation["seed"]) == (10, 3)
    assert (
        el.shop.summary_lines(simulation)
        == summary["lines"][-len(el.shop.summary_lines(simulation)) :]
    )
    assert run_demo(tmp_path, orders=5, simulated_orders=0)["simulation"] is None


def test_run_demo_is_reproducible_and_rerunnable(tmp_path):
    first = run_demo(tmp_path / "a", orders=25, simulated_orders=5)
    again = run_demo(tmp_path / "a", orders=25, simulated_orders=5)  # replaces its outputs
    other = run_demo(tmp_path / "b", orders=25, simulated_orders=0)
    assert first["events"] == again["events"] == other["events"]
    a = events_of(tmp_path / "a" / "shop.duckdb").drop(columns="event_id")
    b = events_of(tmp_path / "b" / "shop.duckdb").drop(columns="event_id")
    pd.testing.assert_frame_equal(a, b)


def test_run_demo_rejects_bad_arguments(tmp_path):
    with pytest.raises(el.EventlabError, match="at least one order"):
        run_demo(tmp_path, orders=0)
    with pytest.raises(el.EventlabError, match="simulated_orders must be 0"):
        run_demo(tmp_path, simulated_orders=-1)
    afile = tmp_path / "file"
    afile.write_text("")
    with pytest.raises(el.EventlabError, match="is a file"):
        run_demo(afile)


def test_shop_history_frame():
    frame = shop_history_frame(50, seed=11)
    assert tuple(frame.columns) == SHOP_COLUMNS
    assert str(frame["occurred_at"].dtype) == "datetime64[us, UTC]"
    assert frame["occurred_at"].is_monotonic_increasing
    assert frame["stream_id"].nunique() == 50
    assert set(frame["type"]) <= set(SHOP_EVENT_TYPES)
    pd.testing.assert_frame_equal(frame, shop_history_frame(50, seed=11))
    assert not frame.equals(shop_history_frame(50, seed=12))
    for _, rows in frame.groupby("stream_id"):
        types = rows["type"].tolist()
        assert types[0] == "OrderPlaced"
        assert 1 <= types.count("ItemAdded") <= 4
        items = rows[rows["type"] == "ItemAdded"]["data"]
        paid = rows[rows["type"] == "OrderPaid"]["data"].tolist()
        if paid:
            total = sum(d["quantity"] * d["unit_price"] for d in items)
            assert paid[0]["amount"] == round(total, 2)
        assert types.count("OrderShipped") + types.count("OrderCancelled") <= 1


def test_shop_history_frame_event_ids_and_append_frame():
    frame = shop_history_frame(20, seed=5, event_ids=True)
    assert list(frame.columns) == [*SHOP_COLUMNS, "event_id"]
    assert frame["event_id"].is_unique
    assert (
        frame["event_id"].tolist() == shop_history_frame(20, 5, event_ids=True)["event_id"].tolist()
    )
    with el.EventStore() as store:
        assert store.append_frame(frame) == len(frame)
        events = store.events()
    assert events["event_id"].tolist() == frame["event_id"].tolist()
    assert events["data"].tolist() == frame["data"].tolist()


def test_record_shop_history_replays_commands_in_time_order():
    frame = shop_history_frame(30, seed=2)
    clock = el.SimulatedClock(datetime(2024, 1, 1, tzinfo=UTC))
    with el.EventStore(clock=clock) as store:
        assert record_shop_history(store, frame) == len(frame)
        events = store.events()
        with pytest.raises(el.ConcurrencyError):  # every order must be a new stream
            record_shop_history(store, frame.head(1))
    assert events["recorded_at"].is_monotonic_increasing
    assert (events["recorded_at"] >= events["occurred_at"]).all()
    assert (
        events.groupby("stream_id")["version"]
        .apply(list)
        .map(lambda v: v == list(range(1, len(v) + 1)))
        .all()
    )
    by_stream = events.sort_values(["stream_id", "version"])
    expected = frame.sort_values(["stream_id", "occurred_at"], kind="stable")
    assert by_stream["type"].tolist() == expected["type"].tolist()


# ---------------------------------------------------------------------- generate


def simulated_events(orders: int, seed: int, **kwargs) -> pd.DataFrame:
    """The events el.shop.simulate writes, as `eventlab generate` runs it."""
    clock = el.SimulatedClock("2024-03-04T00:00:00", step=timedelta(0))
    with el.EventStore(clock=clock) as store:
        el.shop.simulate(store, orders=orders, seed=seed, **kwargs)
        return store.events()


def test_generate_a_store_file(tmp_path, capsys):
    target = tmp_path / "shop.duckdb"
    assert main(["generate", "--orders", "12", "--seed", "3", "--out", str(target)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Simulated 12 orders over 3 days (seed 3): 2024-03-04 00:00 to ")
    assert lines[1] == "Commands by status:" and lines[2].split()[0] == "succeeded"
    assert lines[-1] == f"Wrote {target} (events, commands and command_history tables). " + (
        f"Try: eventlab info {target}"
    )
    with el.EventStore(target, read_only=True) as store:
        events = store.events()
        commands = store.sql("SELECT status, count(*) AS n FROM commands GROUP BY status")
    pd.testing.assert_frame_equal(events, simulated_events(12, 3))
    succeeded = int(commands.set_index("status")["n"]["succeeded"])
    assert any(line.split() == ["succeeded", f"{succeeded:,}"] for line in lines)
    assert not target.with_name("shop.duckdb.journal").exists()


def test_generate_parquet(tmp_path, capsys):
    target = tmp_path / "lake"
    args = ["generate", "--orders", "10", "--seed", "4", "--failure-rate", "0.2"]
    assert main([*args, "--out", f"{target}/"]) == 0
    out = capsys.readouterr().out
    expected = simulated_events(10, 4, failure_rate=0.2)
    assert out.splitlines()[-1] == f"Wrote {len(expected):,} events to {target}: 1 Parquet file."
    with el.EventStore.from_parquet(target / "events.parquet") as store:
        pd.testing.assert_frame_equal(store.events(), expected)
    # An existing empty directory is fine too (no trailing slash needed); by day:
    days = tmp_path / "days"
    days.mkdir()
    assert main([*args, "--out", str(days), "--partition-by", "day"]) == 0
    capsys.readouterr()
    partitions = sorted(path.name for path in days.glob("day=*"))
    assert partitions[0] == "day=2024-03-04" and len(partitions) >= 3
    with el.EventStore.from_parquet(days) as store:
        pd.testing.assert_frame_equal(store.events(), expected)


def test_generate_never_overwrites(tmp_path, capsys):
    store_file = build_store(tmp_path / "shop.duckdb")
    digest = file_digest(store_file)
    assert main(["generate", "--orders", "3", "--out", str(store_file)]) == 1
    assert capsys.readouterr().err == (
        f"eventlab: error: {store_file} already exists; generate into a new store file "
        "(nothing is overwritten)\n"
    )
    assert file_digest(store_file) == digest
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    assert main(["generate", "--orders", "3", "--out", f"{full}/"]) == 1
    assert capsys.readouterr().err == (
        f"eventlab: error: {full} is not empty; generate into a new or empty directory "
        "(nothing is overwritten)\n"
    )
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    assert main(["generate", "--orders", "3", "--out", f"{store_file}/"]) == 1
    assert "is a file; give a directory for Parquet output" in capsys.readouterr().err
    new = tmp_path / "new.duckdb"
    assert main(["generate", "--orders", "3", "--out", str(new), "--partition-by", "day"]) == 1
    assert "--partition-by applies to Parquet output" in capsys.readouterr().err
    assert main(["generate", "--orders", "3", "--out", str(new), "--start", "soon"]) == 1
    assert "cannot read 'soon' as a timestamp" in capsys.readouterr().err
    assert not new.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--orders", "0"], "--orders: must be 1 or more, got 0"),
        (["--failure-rate", "1.5"], "--failure-rate: must be from 0 to 1, got 1.5"),
        ([], "the following arguments are required: --out"),
    ],
)
def test_generate_usage_errors(args, message, tmp_path, capsys):
    out = [] if not args else ["--out", str(tmp_path / "s.duckdb")]
    assert main(["generate", *args, *out]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("out", ["", "  "])
def test_generate_refuses_an_empty_out(out, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--orders", "3", "--out", out]) == 2
    assert "argument --out: must not be empty; give a store file to create" in (
        capsys.readouterr().err
    )
    assert list(tmp_path.iterdir()) == []  # nothing written into the current directory


@pytest.mark.parametrize("out", ["late.duckdb", "late/"])
def test_generate_refuses_a_start_too_late_for_the_history(out, tmp_path, capsys):
    target = tmp_path / out
    assert main(["generate", "--orders", "3", "--start", "9999-12-31", "--out", str(target)]) == 1
    assert_error(
        capsys,
        "--start 9999-12-31T00:00:00+00:00 leaves no room for the history: 3 days of orders",
        "would run past 9999-12-31, the last day a timestamp can show; give an earlier --start",
    )
    assert list(tmp_path.iterdir()) == []
    # The room needed grows with --days.
    args = ["generate", "--orders", "3", "--start", "9999-12-01", "--days", "30"]
    assert main([*args, "--out", str(target)]) == 1
    assert_error(capsys, "30 days of orders")
    assert list(tmp_path.iterdir()) == []


def test_generate_reports_a_clock_overflow_as_an_error_and_leaves_nothing(
    tmp_path, monkeypatch, capsys
):
    def overflowing(store, **kwargs):
        store.append("s", [el.Event("Happened", {})])
        raise OverflowError("date value out of range")

    monkeypatch.setattr(el.shop, "simulate", overflowing)
    target = tmp_path / "s.duckdb"
    assert main(["generate", "--orders", "3", "--start", "9999-12-01", "--out", str(target)]) == 1
    assert_error(capsys, "--start 9999-12-01T00:00:00+00:00 leaves no room for the history")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- data/


def test_shop_sample_parquet_loads():
    with el.EventStore.from_parquet(SAMPLE) as store:
        events = store.events()
        types = store.sql("SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY type")
    assert list(events.columns) == EVENT_COLUMNS
    assert len(events) == 1419
    assert events["position"].tolist() == list(range(1, 1420))
    assert events["stream_id"].nunique() == 300
    assert dict(zip(types["type"], types["n"], strict=True)) == {
        "ItemAdded": 573,
        "OrderCancelled": 55,
        "OrderPaid": 259,
        "OrderPlaced": 300,
        "OrderShipped": 232,
    }
    assert events["occurred_at"].min() == pd.Timestamp("2024-03-01 08:09:47Z")
    assert events["event_id"].is_unique


def test_shop_sample_is_what_make_sample_writes(tmp_path):
    spec = importlib.util.spec_from_file_location("make_sample", ROOT / "data" / "make_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    target = tmp_path / "sample.parquet"
    assert module.make_sample(target) == 1419
    assert file_digest(target) == file_digest(SAMPLE)


def test_shop_sample_via_the_cli(tmp_path, capsys):
    target = tmp_path / "shop.duckdb"
    assert main(["import", str(SAMPLE), str(target)]) == 0
    capsys.readouterr()
    assert main(["info", str(target)]) == 0
    fields, types = parse_info(capsys.readouterr().out)
    assert (fields["events"], fields["streams"], fields["types"]) == ("1,419", "300", "5")
    assert types["OrderPlaced"] == 300


def test_shop_simulation_is_what_the_documented_command_writes(tmp_path, capsys):
    readme = (ROOT / "data" / "README.md").read_text()
    assert "eventlab generate --orders 2000 --seed 7 --out data/shop_simulation/" in readme
    target = tmp_path / "shop_simulation"
    assert main(["generate", "--orders", "2000", "--seed", "7", "--out", f"{target}/"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in SIMULATION.iterdir()) == ["events.parquet"]
    with (
        el.EventStore.from_parquet(target) as fresh,
        el.EventStore.from_parquet(SIMULATION) as kept,
    ):
        pd.testing.assert_frame_equal(fresh.events(), kept.events())


def test_shop_simulation_readme_counts_match_the_file():
    readme = (ROOT / "data" / "README.md").read_text()
    section = readme[readme.index("## `shop_simulation/`") :]
    documented = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`") and cells[1].isdigit():
            documented[cells[0].strip("`")] = int(cells[1])
    with el.EventStore.from_parquet(SIMULATION) as store:
        counts = store.sql("SELECT type, count(*) AS n FROM events GROUP BY type")
        orders = el.shop.order_states(store)
        assert store.head == 21_613
    assert documented == dict(zip(counts["type"], counts["n"], strict=True))
    assert "**2,000 orders, 21,613 events**" in section
    assert orders == {"submitted": 6, "shipped": 1758, "cancelled": 236}
    assert "1,758 were shipped, 236 cancelled, and 6 are still" in section


# ---------------------------------------------------------------------- the console script


def run_script(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_console_script_is_installed():
    assert CONSOLE_SCRIPT.exists(), f"no eventlab console script next to {sys.executable}"


def test_console_script_version_and_help():
    result = run_script("--version")
    assert (result.returncode, result.stdout) == (0, f"eventlab {el.__version__}\n")
    result = run_script("--help")
    assert result.returncode == 0
    for name in SUBCOMMANDS:
        assert f"    {name}  " in result.stdout


def test_console_script_info_is_utc_whatever_the_time_zone(shop_file):
    result = run_script("info", str(shop_file), TZ="America/New_York")
    assert result.returncode == 0, result.stderr
    fields, _ = parse_info(result.stdout)
    assert fields["events"] == "6"
    assert fields["recorded_at"] == "2024-05-01 10:00:00+00:00 .. 2024-05-01 10:05:00+00:00"


def test_console_script_error_exit_status(tmp_path):
    result = run_script("info", str(tmp_path / "missing.duckdb"))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"eventlab: error: there is no store at {tmp_path / 'missing.duckdb'}; check the "
        f"path, or create one with 'eventlab import SOURCE {tmp_path / 'missing.duckdb'}' or "
        f"'eventlab demo'\n"
    )
    result = run_script("import", str(tmp_path / "nowhere"), str(tmp_path / "s.duckdb"))
    assert result.returncode == 1
    assert result.stderr.startswith("eventlab: error: no Parquet files at")
    assert "Traceback" not in result.stderr


def test_console_script_demo(tmp_path):
    result = run_script("demo", "--dir", str(tmp_path), "--orders", "20")
    assert result.returncode == 0, result.stderr
    assert "Round trip identical" in result.stdout
    assert (tmp_path / "shop.duckdb").exists()

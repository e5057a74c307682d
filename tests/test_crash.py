"""Crash tests: a child process appends to a file store and is killed with SIGKILL.

The child prints an *intent* line before each append or transaction, and an
*ack* line (with the positions and ids the store returned) after it returns.
On reopen the store must hold every acknowledged append exactly, plus at most
the one append that was in flight when the kill landed, whole or not at all.
Rejected appends and aborted transaction blocks must never appear.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pytest

import eventlab as el
from eventlab.journal import Journal

STREAMS = ("order-0", "order-1", "order-2", "order-3")

CHILD = r"""
import json, os, random, sys

config = json.loads(sys.argv[1])
import eventlab.store
eventlab.store.ABSORB_THRESHOLD = config["threshold"]
import eventlab as el

STREAMS = config["streams"]
rng = random.Random(config["seed"])
prefix = config["prefix"]


def say(**line):
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


class Abort(Exception):
    pass


say(opening=True)
store = el.EventStore(config["path"], sync=config.get("sync", True))
versions = {s: store.version(s) for s in STREAMS}
say(opened=store.head)


def make_events(unit, count, explicit_ids):
    events = []
    for k in range(count):
        pad = "x" * rng.choice([0, 0, 0, 10, 300, 3000])
        data = {"u": unit, "k": k, "pad": pad, "text": "caf\u00e9 \u2713"}
        event_id = f"{unit}-{k}" if explicit_ids else None
        events.append(el.Event(rng.choice(["Placed", "Paid", "Shipped"]), data, event_id=event_id))
    return events


def describe(stream, expected, events):
    return [stream, expected, [[e.event_id, e.type, e.data] for e in events]]


def acked(recorded):
    return [[r.position, r.event_id, r.stream_id, r.version] for r in recorded]


n = 0
limit = config.get("limit")
while limit is None or n < limit:
    n += 1
    unit = f"{prefix}{n}"
    kind = rng.choice(["single", "single", "multi", "multi", "tx", "wrong", "abort"])
    explicit = rng.random() < 0.15
    if kind in ("single", "multi"):
        stream = rng.choice(STREAMS)
        events = make_events(unit, 1 if kind == "single" else rng.randint(2, 5), explicit)
        expected = versions[stream] if rng.random() < 0.7 else None
        say(intent=unit, kind=kind, appends=[describe(stream, expected, events)], dropped=[])
        recorded = store.append(stream, events, expected_version=expected)
        versions[stream] += len(events)
        say(ack=unit, records=acked(recorded))
    elif kind == "wrong":
        stream = rng.choice(STREAMS)
        events = make_events(unit, rng.randint(1, 3), explicit)
        current = versions[stream]
        expected = current + 1 if current == 0 or rng.random() < 0.5 else current - 1
        say(intent=unit, kind=kind, appends=[describe(stream, expected, events)], dropped=[])
        try:
            store.append(stream, events, expected_version=expected)
        except el.ConcurrencyError as exc:
            say(rejected=unit, expected=exc.expected, actual=exc.actual)
        else:
            say(error=f"append with expected_version={expected} at {current} was accepted")
            sys.exit(1)
    else:
        # A transaction of several appends; "abort" raises at the end of the block,
        # and a "tx" may contain an inner block that raises and is caught.
        plan = []
        staged = dict(versions)
        for index in range(rng.randint(2, 4)):
            stream = rng.choice(STREAMS)
            events = make_events(f"{unit}.{index}", rng.randint(1, 3), explicit)
            inner = kind == "tx" and rng.random() < 0.25
            plan.append((stream, events, inner))
        appends = []
        dropped = []
        for stream, events, inner in plan:
            if inner:
                dropped.extend([e.data["u"], e.data["k"]] for e in events)
            else:
                appends.append(describe(stream, staged[stream], events))
                staged[stream] += len(events)
        say(intent=unit, kind=kind, appends=appends, dropped=dropped)
        records = []
        try:
            with store.transaction():
                for stream, events, inner in plan:
                    if inner:
                        try:
                            with store.transaction():
                                store.append(stream, events)
                                raise Abort
                        except Abort:
                            pass
                    else:
                        records.extend(
                            store.append(stream, events, expected_version=versions[stream])
                        )
                        versions[stream] += len(events)
                if kind == "abort":
                    raise Abort
        except Abort:
            versions = {s: store.version(s) for s in STREAMS}
            say(aborted=unit)
        else:
            say(ack=unit, records=acked(records))
say(done=n)
"""


# --------------------------------------------------------------------------- running a child


@dataclass
class Unit:
    """One append or transaction the child attempted."""

    name: str
    kind: str
    appends: list  # [stream, expected_version, [[event_id, type, data], ...]]
    dropped: list  # [[u, k], ...] appended inside a caught inner block
    outcome: str | None = None  # "ack" | "rejected" | "aborted" | None (in flight)
    records: list = field(default_factory=list)  # [[position, event_id, stream, version]]

    def events(self) -> list[tuple]:
        """(stream, type, data) of every event this unit writes when it commits."""
        return [(stream, t, d) for stream, _, events in self.appends for _, t, d in events]


@dataclass
class Run:
    units: list[Unit]
    stdout: list[dict]

    @property
    def acks(self) -> int:
        return sum(1 for unit in self.units if unit.outcome == "ack")


def child_config(path: Path, **options) -> str:
    config = {
        "path": str(path),
        "streams": list(STREAMS),
        "seed": 0,
        "threshold": 50_000,
        "prefix": "u",
    }
    config.update(options)
    return json.dumps(config)


def run_child(
    path: Path,
    *,
    kill_after_acks: int | None,
    kill_after_opening_s: float | None = None,
    timeout: float = 60.0,
    **options,
) -> Run:
    """Start the child, let it acknowledge some appends, SIGKILL it, and parse what it said."""
    stderr_path = path.with_name(f"child-{time.monotonic_ns()}.stderr")
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, child_config(path, **options)],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    lines: list[bytes] = []
    acks = 0
    # A hung child must fail the test, not hang it: kill it after ``timeout``.
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    try:
        while True:
            line = proc.stdout.readline()
            if not line:
                break  # the child ended on its own (or the watchdog killed it)
            lines.append(line)
            message = json.loads(line)
            if kill_after_opening_s is not None and "opening" in message:
                time.sleep(kill_after_opening_s)
                break
            if "ack" in message:
                acks += 1
                if kill_after_acks is not None and acks >= kill_after_acks:
                    break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        lines.extend(proc.stdout.read().splitlines(keepends=True))
    finally:
        timed_out = not watchdog.is_alive()
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert not timed_out, f"the child did not reach its kill point within {timeout} s"
    errors = stderr_path.read_text()
    assert proc.returncode == -signal.SIGKILL, errors
    messages = [json.loads(line) for line in lines if line.endswith(b"\n")]
    assert not [m for m in messages if "error" in m], messages
    return Run(parse_units(messages), messages)


def parse_units(messages: list[dict]) -> list[Unit]:
    units: list[Unit] = []
    for message in messages:
        if "intent" in message:
            assert not units or units[-1].outcome is not None, "two units in flight"
            units.append(
                Unit(message["intent"], message["kind"], message["appends"], message["dropped"])
            )
        for outcome in ("ack", "rejected", "aborted"):
            if outcome in message:
                unit = units[-1]
                assert unit.name == message[outcome] and unit.outcome is None
                unit.outcome = outcome
                if outcome == "ack":
                    unit.records = message["records"]
                    assert unit.kind in ("single", "multi", "tx")
                if outcome == "rejected":
                    stream, expected, _ = unit.appends[0]
                    assert unit.kind == "wrong"
                    assert message["expected"] == expected
                    assert message["actual"] != expected
                if outcome == "aborted":
                    assert unit.kind == "abort"
    return units


# --------------------------------------------------------------------------- checking a store


def identity(data: dict) -> tuple:
    return (data["u"], data["k"])


def assert_log_invariants(records: list[el.RecordedEvent]) -> None:
    assert [r.position for r in records] == list(range(1, len(records) + 1))
    seen: dict[str, int] = {}
    for record in records:
        seen[record.stream_id] = seen.get(record.stream_id, 0) + 1
        assert record.version == seen[record.stream_id], record
    assert len({r.event_id for r in records}) == len(records)
    assert len({identity(r.data) for r in records}) == len(records)


def expected_history(units: list[Unit], stored: list[el.RecordedEvent]) -> list[tuple]:
    """The exact history the store must hold: every acknowledged unit, and the one in flight
    if (and only if) any of its events made it.

    Returns (position, stream, version, type, data) tuples; event ids are checked
    separately against the acknowledgements.
    """
    present = {identity(r.data) for r in stored}
    history: list[tuple] = []
    versions: dict[str, int] = {}
    for unit in units:
        writes = unit.outcome == "ack" or (
            unit.outcome is None
            and unit.kind in ("single", "multi", "tx")
            and any(identity(data) in present for _, _, data in unit.events())
        )
        if not writes:
            continue
        for stream, event_type, data in unit.events():
            versions[stream] = versions.get(stream, 0) + 1
            history.append((len(history) + 1, stream, versions[stream], event_type, data))
    return history


def assert_store_holds(store: el.EventStore, units: list[Unit]) -> list[el.RecordedEvent]:
    records = list(store.read_all())
    assert_log_invariants(records)
    assert [(r.position, r.stream_id, r.version, r.type, r.data) for r in records] == (
        expected_history(units, records)
    )
    by_position = {r.position: r for r in records}
    by_identity = {identity(r.data): r for r in records}
    for unit in units:
        # What the store acknowledged is exactly what is stored.
        for position, event_id, stream, version in unit.records:
            record = by_position[position]
            assert (record.event_id, record.stream_id, record.version) == (
                event_id,
                stream,
                version,
            )
        for _, _, events in unit.appends:
            for event_id, _, data in events:
                if event_id is not None and identity(data) in by_identity:
                    assert by_identity[identity(data)].event_id == event_id
    never = set()
    for unit in units:
        never.update(tuple(d) for d in unit.dropped)
        if unit.outcome in ("rejected", "aborted"):
            never.update(identity(data) for _, _, data in unit.events())
    assert never.isdisjoint(identity(r.data) for r in records)
    for stream in STREAMS:
        stream_records = store.read_stream(stream)
        assert stream_records == [r for r in records if r.stream_id == stream]
        assert store.version(stream) == len(stream_records)
    assert store.head == len(records)
    return records


def file_state(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if ".stderr" not in p.name}


def journal_of(path: Path) -> Path:
    return path.with_name(path.name + ".journal")


def journal_written(path: Path) -> bytes:
    """The journal's records, without the zeros a synced journal writes ahead of them."""
    journal = journal_of(path)
    return journal.read_bytes()[: Journal.intact_size(journal)]


def journal_bytes(path: Path) -> bytes:
    """The journal's content; a clean close may remove the (then empty) file."""
    journal = journal_of(path)
    return journal.read_bytes() if journal.exists() else b""


# --------------------------------------------------------------------------- the SIGKILL runs

_rng = random.Random(20240601)
KILL_RUNS = [
    # (seed, acks before the kill, ABSORB_THRESHOLD in the child, journal flushed per commit)
    (1, _rng.randint(20, 400), 50_000, True),  # everything still in the journal
    (2, _rng.randint(20, 400), 50, True),  # absorbs every few dozen events
    (3, _rng.randint(20, 400), 5, True),  # absorbs nearly every commit: kills land in DuckDB
    (4, _rng.randint(20, 400), 1, True),  # absorbs every commit
    (5, 400, 50, True),
    (6, 20, 50_000, True),
    # sync=False leaves the flush to the OS: a killed process still loses nothing.
    (7, _rng.randint(20, 400), 50_000, False),
    (8, _rng.randint(20, 400), 5, False),
]


@pytest.mark.parametrize(("seed", "kill_after", "threshold", "sync"), KILL_RUNS)
def test_sigkill_keeps_every_acknowledged_append_and_nothing_partial(
    tmp_path: Path, seed: int, kill_after: int, threshold: int, sync: bool
) -> None:
    path = tmp_path / "store.duckdb"
    run = run_child(path, kill_after_acks=kill_after, seed=seed, threshold=threshold, sync=sync)
    assert run.acks >= kill_after
    if threshold == 50_000:
        # Nothing was absorbed: the reopen below must recover from the journal alone.
        assert journal_bytes(path) != b""

    with el.EventStore(path) as store:
        first = assert_store_holds(store, run.units)
    assert journal_bytes(path) == b""

    # Reopening again changes nothing: recovery is idempotent.
    with el.EventStore(path) as store:
        again = assert_store_holds(store, run.units)
        assert again == first
        # The recovered store keeps working where the log left off.
        stream = STREAMS[0]
        recorded = store.append(
            stream,
            [el.Event("Placed", {"u": "after", "k": 0})],
            expected_version=store.version(stream),
        )
        assert recorded[0].position == len(first) + 1
    with el.EventStore(path, read_only=True) as store:
        assert list(store.read_all()) == first + recorded


@pytest.mark.parametrize(
    ("seed", "threshold", "torn"), [(11, 50_000, False), (12, 7, False), (13, 50_000, True)]
)
def test_read_only_open_right_after_a_crash_shows_everything_and_writes_nothing(
    tmp_path: Path, seed: int, threshold: int, torn: bool
) -> None:
    path = tmp_path / "store.duckdb"
    run = run_child(path, kill_after_acks=60, seed=seed, threshold=threshold)
    if threshold == 50_000:
        assert journal_bytes(path) != b""
    if torn:
        with open(journal_of(path), "ab") as journal:
            journal.write(b"0badc0de [[1,")
    before = file_state(tmp_path)

    with el.EventStore(path, read_only=True) as reader:
        seen = assert_store_holds(reader, run.units)
        with pytest.raises(el.ReadOnlyError):
            reader.append(STREAMS[0], [el.Event("Placed", {"u": "ro", "k": 0})])
    assert file_state(tmp_path) == before

    # A second read-only open sees the same; then the writer recovers the same history.
    with el.EventStore(path, read_only=True) as reader:
        assert list(reader.read_all()) == seen
    assert file_state(tmp_path) == before
    with el.EventStore(path) as store:
        assert list(store.read_all()) == seen


def test_repeated_crashes_including_during_recovery(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    units: list[Unit] = []
    rounds = [
        dict(kill_after_acks=150, threshold=50_000),
        # Killed while opening: the journal left by round 0 may be mid-absorb.
        dict(kill_after_acks=None, kill_after_opening_s=0.03, threshold=50_000),
        dict(kill_after_acks=90, threshold=50_000),
        dict(kill_after_acks=120, threshold=5),
        dict(kill_after_acks=None, kill_after_opening_s=0.0, threshold=50_000),
    ]
    for number, options in enumerate(rounds):
        run = run_child(path, seed=100 + number, prefix=f"r{number}-", **options)
        units.extend(run.units)
    with el.EventStore(path) as store:
        first = assert_store_holds(store, units)
    assert sum(1 for unit in units if unit.outcome == "ack") >= 360
    with el.EventStore(path) as store:
        assert list(store.read_all()) == first


# --------------------------------------------------------------------------- torn journal tails


@pytest.fixture(scope="module")
def crashed_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Unit]]:
    """A store whose writer was killed with unabsorbed appends in the journal."""
    directory = tmp_path_factory.mktemp("crashed")
    path = directory / "store.duckdb"
    run = run_child(path, kill_after_acks=80, seed=21, threshold=50_000)
    assert journal_bytes(path) != b""
    return path, run.units


def copy_store(source: Path, directory: Path) -> Path:
    for item in source.parent.iterdir():
        if item.name.startswith(source.name):
            shutil.copy2(item, directory / item.name)
    return directory / source.name


def crash_image(path: Path, directory: Path) -> Path:
    """Copy a store's files while its writer is idle: what a SIGKILL now would leave."""
    directory.mkdir()
    return copy_store(path, directory)


# A journal record: <kind:1 byte><payload length:u32><crc32:u32><payload>.
RECORD_HEADER = struct.Struct("<cII")


def journal_records(data: bytes) -> list[bytes]:
    """The records of a journal's bytes, up to the zeros a synced journal writes ahead."""
    records, offset = [], 0
    while offset < len(data) and data[offset] != 0:
        _, length, _ = RECORD_HEADER.unpack_from(data, offset)
        end = offset + RECORD_HEADER.size + length
        records.append(data[offset:end])
        offset = end
    return records


def last_record(data: bytes) -> bytes:
    return journal_records(data)[-1]


def with_bad_checksum(record: bytes) -> bytes:
    kind, length, checksum = RECORD_HEADER.unpack_from(record)
    return RECORD_HEADER.pack(kind, length, checksum ^ 1) + record[RECORD_HEADER.size :]


TORN_TAILS = {
    "half of a record": lambda journal: last_record(journal)[: len(last_record(journal)) // 2],
    "record short of its last byte": lambda journal: last_record(journal)[:-1],
    "header only": lambda journal: last_record(journal)[: RECORD_HEADER.size],
    "garbage": lambda journal: b"\x00\xff garbage \x13",
    "bad checksum": lambda journal: with_bad_checksum(last_record(journal)),
    "json cut short": lambda journal: RECORD_HEADER.pack(b"J", 100, 0) + b'[[9999,"x"',
}


@pytest.mark.parametrize("tail", sorted(TORN_TAILS))
def test_torn_journal_tail_after_a_crash_is_dropped(
    tmp_path: Path, crashed_store: tuple[Path, list[Unit]], tail: str
) -> None:
    source, units = crashed_store
    path = copy_store(source, tmp_path)
    journal = journal_of(path)
    intact = journal_written(path)
    journal.write_bytes(intact + TORN_TAILS[tail](intact))

    with el.EventStore(path) as store:
        seen = assert_store_holds(store, units)
        recorded = store.append(STREAMS[1], [el.Event("Paid", {"u": "after-tear", "k": 0})])
        # The files as a crash right now would leave them: the new append must not be
        # lost behind what is left of the torn tail.
        image = crash_image(path, tmp_path / "image")
    with el.EventStore(image) as store:
        assert list(store.read_all()) == seen + recorded
    with el.EventStore(path) as store:
        assert list(store.read_all()) == seen + recorded


@pytest.mark.parametrize("tail", sorted(TORN_TAILS))
def test_torn_journal_tail_on_a_closed_store_is_dropped(tmp_path: Path, tail: str) -> None:
    path = tmp_path / "store.duckdb"
    with el.EventStore(path) as store:
        with store.transaction():
            two = [el.Event("A", {"u": "a", "k": 0}), el.Event("A", {"u": "a", "k": 1})]
            store.append("a", two)
            store.append("b", [el.Event("B", {"u": "b", "k": 0})], expected_version=0)
        assert len(list(store.read_all())) == 3  # reading absorbs the journal into DuckDB
        # One more record, left in the journal (copied before close absorbs it).
        store.append("a", [el.Event("A", {"u": "a", "k": 2})], expected_version=2)
        record_line = journal_written(path)
        assert len(journal_records(record_line)) == 1
        before = list(store.read_all())
    assert journal_bytes(path) == b""
    journal_of(path).write_bytes(TORN_TAILS[tail](record_line))

    with el.EventStore(path) as store:
        assert list(store.read_all()) == before
    assert journal_bytes(path) == b""
    with el.EventStore(path) as store:
        assert list(store.read_all()) == before
        assert [(r.position, r.stream_id, r.version) for r in before] == [
            (1, "a", 1),
            (2, "a", 2),
            (3, "b", 1),
            (4, "a", 3),
        ]


@pytest.mark.parametrize("cut", ["half", "last byte", "bad checksum"])
def test_torn_arrow_record_of_a_big_transaction_is_dropped(tmp_path: Path, cut: str) -> None:
    # A transaction of many events is journalled as one Arrow record, not JSON.
    path = tmp_path / "store.duckdb"
    with el.EventStore(path) as store:
        store.append("a", [el.Event("A", {"u": "a", "k": 0})])
        small = journal_written(path)
        with store.transaction():
            for k in range(100):
                store.append(f"big-{k}", [el.Event("B", {"u": "big", "k": k})])
        data = journal_written(path)
        big = data[len(small) :]
        assert [r[:1] for r in journal_records(data)] == [b"R", b"A"]
        torn = {
            "half": big[: len(big) // 2],
            "last byte": big[:-1],
            "bad checksum": with_bad_checksum(big),
        }[cut]
        image = tmp_path / "image"
        image.mkdir()
        (image / "store.duckdb.journal").write_bytes(small + torn)
        shutil.copy2(path, image / "store.duckdb")
    with el.EventStore(image / "store.duckdb") as store:
        assert [(r.stream_id, r.version, r.data) for r in store.read_all()] == [
            ("a", 1, {"u": "a", "k": 0})
        ]
    # Intact, the same record brings back all 100 events.
    (image / "store.duckdb.journal").write_bytes(data)
    with el.EventStore(image / "store.duckdb") as store:
        records = list(store.read_all())
        assert [r.position for r in records] == list(range(1, 102))
        assert [r.data["k"] for r in records[1:]] == list(range(100))


@pytest.mark.parametrize("sync", [True, False])
def test_a_big_transaction_is_journalled_lz4_compressed_only_when_synced(
    tmp_path: Path, sync: bool
) -> None:
    # A synced flush costs time per byte, so a synced journal compresses its Arrow
    # records; without sync compressing would cost more than it saves.
    path = tmp_path / "store.duckdb"
    with el.EventStore(path, sync=sync) as store:
        with store.transaction():
            for k in range(500):
                store.append(f"big-{k}", [el.Event("B", {"k": k, "note": "the same words " * 4})])
        data = journal_of(path).read_bytes()
        image = tmp_path / "image"
        image.mkdir()
        shutil.copy2(path, image / "store.duckdb")
        (image / "store.duckdb.journal").write_bytes(data)  # as a crash would leave it
        expected = list(store.read_all())
    (record,) = journal_records(data)
    assert record[:1] == b"A"
    payload = record[RECORD_HEADER.size :]
    table = pa.ipc.open_stream(payload).read_all()
    plain = pa.BufferOutputStream()
    with pa.ipc.new_stream(plain, table.schema) as writer:
        writer.write_table(table)
    if sync:
        assert len(payload) < plain.getvalue().size / 3
    else:
        assert payload == plain.getvalue().to_pybytes()
    with el.EventStore(image / "store.duckdb") as store:
        assert list(store.read_all()) == expected
        assert [r.data["k"] for r in expected] == list(range(500))


def test_crash_between_absorb_and_journal_truncate_applies_nothing_twice(
    tmp_path: Path, crashed_store: tuple[Path, list[Unit]]
) -> None:
    # Absorbing commits into DuckDB, then empties the journal. Recreate a crash in
    # between: the absorbed rows are in DuckDB and still in the journal.
    source, units = crashed_store
    path = copy_store(source, tmp_path)
    stale = journal_of(path).read_bytes()
    with el.EventStore(path) as store:
        seen = assert_store_holds(store, units)
    journal_of(path).write_bytes(stale)

    with el.EventStore(path, read_only=True) as reader:
        assert list(reader.read_all()) == seen
    with el.EventStore(path) as store:
        assert list(store.read_all()) == seen
        recorded = store.append(STREAMS[2], [el.Event("Paid", {"u": "after", "k": 0})])
        assert recorded[0].position == len(seen) + 1
    with el.EventStore(path) as store:
        assert list(store.read_all()) == seen + recorded


# --------------------------------------------------------------------------- I/O faults

FAULT_CHILD = r"""
import json, os, signal, sys
import eventlab as el
import eventlab.journal

path, fault = sys.argv[1], sys.argv[2]
store = el.EventStore(path)
first = store.append("a", [el.Event("A", {"u": "first", "k": 0})])
print(json.dumps([[r.position, r.event_id, r.stream_id, r.version] for r in first]), flush=True)
journal_fd = store._pending.journal._fd
real_write, real_sync = os.pwrite, os.fdatasync
state = {"armed": True}


def short_write(fd, data, offset):
    if fd == journal_fd and state["armed"]:
        state["armed"] = False
        return real_write(fd, data[: len(data) // 2], offset)
    return real_write(fd, data, offset)


def failing_sync(fd):
    if fd == journal_fd and state["armed"]:
        state["armed"] = False
        raise OSError(5, "Input/output error")
    return real_sync(fd)


if fault == "short-write":
    eventlab.journal.os.pwrite = short_write
else:
    eventlab.journal.os.fdatasync = failing_sync
try:
    store.append("b", [el.Event("B", {"u": "failed", "k": 0})])
except OSError:
    print(json.dumps("failed"), flush=True)
else:
    print(json.dumps("not failed"), flush=True)
try:
    later = store.append("c", [el.Event("C", {"u": "later", "k": 0})])
except Exception as exc:
    print(json.dumps(f"refused: {type(exc).__name__}"), flush=True)
else:
    print(json.dumps([[r.position, r.event_id, r.stream_id, r.version] for r in later]), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("fault", ["short-write", "failed-sync"])
def test_an_append_that_failed_on_io_does_not_corrupt_later_acknowledged_ones(
    tmp_path: Path, fault: str
) -> None:
    # A journal write that fails (ENOSPC cut it short, or fdatasync raised EIO)
    # makes that append raise. Appends acknowledged after it must survive a crash
    # with the positions they were given, and the log must stay gapless.
    path = tmp_path / "store.duckdb"
    proc = subprocess.run(
        [sys.executable, "-c", FAULT_CHILD, str(path), fault],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    said = [json.loads(line) for line in proc.stdout.splitlines()]
    assert said[1] == "failed"
    acknowledged = [said[0]]
    if isinstance(said[2], list):
        acknowledged.append(said[2])
    with el.EventStore(path) as store:
        records = list(store.read_all())
        assert_log_invariants(records)
        by_position = {r.position: r for r in records}
        for ack in acknowledged:
            for position, event_id, stream, version in ack:
                assert position in by_position, (ack, records)
                stored = by_position[position]
                assert (stored.event_id, stored.stream_id, stored.version) == (
                    event_id,
                    stream,
                    version,
                )
        assert {r.data["u"] for r in records} <= {"first", "failed", "later"}


def _legacy_row_json(row: tuple) -> str:
    """A row as the older "J" records held it: the JSON payloads embedded as JSON."""
    quote = json.encoder.encode_basestring
    correlation = "null" if row[7] is None else quote(row[7])
    causation = "null" if row[8] is None else quote(row[8])
    return (
        f"[{row[0]:d},{quote(row[1])},{quote(row[2])},{row[3]:d},{quote(row[4])},"
        f"{row[5]},{row[6]},{correlation},{causation},{row[9]:d},{row[10]:d},{row[11]:d}]"
    )


def test_a_journal_of_the_older_json_kind_is_recovered_exactly(tmp_path: Path) -> None:
    # Journals written before the "R" kind hold "J" records (payloads embedded as
    # JSON objects); a store crashed then must still recover them, byte for byte.
    from eventlab.journal import _JSON, Journal

    source = tmp_path / "source.duckdb"
    with el.EventStore(source) as store:
        store.append("a", [el.Event("A", {"u": "a", "k": 0, "s": 'q"é'}, metadata={"m": 1})])
        store.append(
            "b", [el.Event("B", {"u": "b", "k": 1}), el.Event("B", {"nested": {"x": [1]}})]
        )
        expected = list(store.read_all())
    rows = [tuple(record) for record in expected]
    path = tmp_path / "store.duckdb"
    el.EventStore(path).close()  # an empty store file
    journal = Journal(journal_of(path))
    journal._write(_JSON, ("[" + ",".join(map(_legacy_row_json, rows[:1])) + "]").encode())
    journal._write(_JSON, ("[" + ",".join(map(_legacy_row_json, rows[1:])) + "]").encode())
    journal.close()
    with el.EventStore(path) as store:
        assert list(store.read_all()) == expected
        assert [r.metadata for r in store.read_all()] == [{"m": 1}, {}, {}]


@pytest.mark.parametrize("read_only", [False, True], ids=["writer", "read-only"])
def test_an_intact_journal_record_the_table_cannot_take_is_reported_not_dropped(
    tmp_path: Path, read_only: bool
) -> None:
    # What an eventlab that accepted occurred_at=pd.NaT journalled: a null timestamp.
    from eventlab.journal import Journal, journal_paths

    path = tmp_path / "store.duckdb"
    with el.EventStore(path) as store:
        store.append("a", [el.Event("A", {})])
    journal = Journal(journal_paths(path)[0], sync=False)
    good = (2, "id-2", "b", 1, "B", "{}", "{}", None, None, 1_000, 1_000, 1)
    bad = (3, "id-3", "b", 2, "B", "{}", "{}", None, None, 2_000, None, 1)
    journal.write_rows([good])
    offset = Journal.intact_size(journal.path)  # where the bad record starts
    journal.write_rows([bad])
    journal.close()
    before = file_state(tmp_path)
    with pytest.raises(el.JournalError, match=f"an intact record at byte {offset} with a value"):
        el.EventStore(path, read_only=read_only)
    assert file_state(tmp_path) == before  # nothing dropped, nothing truncated

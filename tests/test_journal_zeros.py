"""A journal writes zeros ahead of its records, and recovery stops at them.

A synced journal overwrites blocks the file already has, so each commit's
fdatasync flushes data only (see eventlab.journal.Journal._preallocate). A
journal without sync copies its small records into a memory map of the file over
zeros written ahead (see Journal._map_ahead). These tests pin down the file
layout and that a crash at any point of it recovers exactly what was acknowledged.
"""

from __future__ import annotations

import errno
import mmap
from pathlib import Path

import pytest

import eventlab as el
import eventlab.journal
from eventlab.journal import Journal, journal_paths
from tests.conftest import crash


def history(store: el.EventStore) -> list[tuple]:
    return [(r.position, r.stream_id, r.version, r.type, r.data) for r in store.read_all()]


@pytest.mark.parametrize(
    ("sync", "ahead"), [(True, "_PREALLOCATE"), (False, "_MAP_AHEAD")], ids=["synced", "mapped"]
)
def test_a_journal_runs_ahead_with_zeros_that_recovery_skips(
    tmp_path: Path, sync: bool, ahead: str
) -> None:
    # A synced journal writes its records over zeros synced before; one without sync
    # copies them into a map of the file over zeros, and the file shows them at once
    # (the map's pages are the page cache's).
    path = tmp_path / "store.duckdb"
    journal = journal_paths(path)[0]
    store = el.EventStore(path, sync=sync)
    store.append("a", [el.Event("A", {"k": 1})])
    first = Journal.intact_size(journal)
    store.append("a", [el.Event("A", {"k": 2}), el.Event("A", {"k": 3})])
    written = Journal.intact_size(journal)
    data = journal.read_bytes()
    assert 0 < first < written < len(data) == getattr(eventlab.journal, ahead)
    assert data[written:] == bytes(len(data) - written)
    assert (store._pending.journal._map is None) == sync
    crash(store)
    with el.EventStore(path) as reopened:
        assert history(reopened) == [
            (1, "a", 1, "A", {"k": 1}),
            (2, "a", 2, "A", {"k": 2}),
            (3, "a", 3, "A", {"k": 3}),
        ]
    assert not journal.exists() or journal.read_bytes() == b""


def test_a_full_disk_while_mapping_ahead_fails_that_append_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(eventlab.journal, "_MAP_AHEAD", 1)
    path = tmp_path / "store.duckdb"
    journal = journal_paths(path)[0]
    store = el.EventStore(path, sync=False)
    store.append("a", [el.Event("A", {"k": 1})])
    before = journal.read_bytes()[: Journal.intact_size(journal)]

    def full(self: Journal, start: int, stop: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(Journal, "_write_zeros", full)
        with pytest.raises(el.JournalError, match="No space left on device. Nothing was appended"):
            store.append("a", [el.Event("A", {"pad": "y" * 5000})])
    # The failed record is cut off with the zeros, and the store is as it was.
    assert journal.read_bytes() == before
    assert store.version("a") == 1
    store.append("a", [el.Event("A", {"k": 2})])
    crash(store)
    with el.EventStore(path) as reopened:
        assert history(reopened) == [(1, "a", 1, "A", {"k": 1}), (2, "a", 2, "A", {"k": 2})]


@pytest.mark.parametrize(
    ("sync", "step", "small"),
    [
        (True, 1, 10**6),
        (True, 64, 10**6),
        (True, 1000, 10**6),
        (True, 64, 300),
        (False, 1, 10**6),
        (False, 4096, 10**6),
        (False, 3 * 4096, 300),
    ],
)
def test_records_across_many_small_steps_recover_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync: bool, step: int, small: int
) -> None:
    # With tiny steps, records start, end and straddle the zeros' boundaries (synced),
    # or the map's end, which is then mapped again and again (not synced). Records
    # above ``small`` bytes extend the file themselves, over the zeros and past them
    # (with pwrite, past the map's end too; the small records after them go into a
    # new, longer map).
    monkeypatch.setattr(eventlab.journal, "_PREALLOCATE", step)
    monkeypatch.setattr(eventlab.journal, "_MAP_AHEAD", step)
    monkeypatch.setattr(eventlab.journal, "_SMALL_RECORD", small)
    path = tmp_path / "store.duckdb"
    journal = journal_paths(path)[0]
    store = el.EventStore(path, sync=sync)
    expected = []
    for n in range(1, 40):
        events = [el.Event("E", {"n": n, "pad": "x" * (37 * n)})]
        store.append(f"s{n % 3}", events)
        expected.append((f"s{n % 3}", "E", {"n": n, "pad": "x" * (37 * n)}))
        if n % 10 == 0:
            with store.transaction():
                for m in range(100):
                    store.append(f"big-{n}-{m}", [el.Event("B", {"m": m})])
                    expected.append((f"big-{n}-{m}", "B", {"m": m}))
    store.append("after", [el.Event("E", {"n": 0})])  # a small record
    expected.append(("after", "E", {"n": 0}))
    size = journal.stat().st_size
    written = Journal.intact_size(journal)
    if sync:
        assert written <= size < written + step + 1
    else:  # mapped: whole pages
        granularity = mmap.ALLOCATIONGRANULARITY
        assert size % granularity == 0
        assert written <= size < written + max(step, granularity) + granularity
    assert journal.read_bytes()[written:] == bytes(size - written)
    crash(store)
    with el.EventStore(path) as reopened:
        assert [(r.stream_id, r.type, r.data) for r in reopened.read_all()] == expected
        assert [r.position for r in reopened.read_all()] == list(range(1, len(expected) + 1))


@pytest.mark.parametrize("sync", [True, False], ids=["synced", "mapped"])
def test_an_emptied_journal_brings_back_none_of_its_old_records(tmp_path: Path, sync: bool) -> None:
    # Reading absorbs the journal into DuckDB and empties it; the zeros written after
    # that must not let an old, longer record show through behind a new, shorter one.
    path = tmp_path / "store.duckdb"
    store = el.EventStore(path, sync=sync)
    store.append("a", [el.Event("Long", {"pad": "y" * 500}) for _ in range(5)])
    assert len(list(store.read_all())) == 5  # absorbed; the journal emptied
    store.append("b", [el.Event("Short", {})])
    crash(store)
    with el.EventStore(path) as reopened:
        assert [(r.position, r.stream_id, r.type) for r in reopened.read_all()] == [
            *[(n, "a", "Long") for n in range(1, 6)],
            (6, "b", "Short"),
        ]


@pytest.mark.parametrize("sync", [True, False], ids=["synced", "mapped"])
def test_reopening_cuts_the_zeros_and_goes_on_after_the_last_record(
    tmp_path: Path, sync: bool
) -> None:
    path = tmp_path / "store.duckdb"
    journal = journal_paths(path)[0]
    store = el.EventStore(path, sync=sync)
    store.append("a", [el.Event("A", {"k": 1})])
    crash(store)
    store = el.EventStore(path, sync=sync)  # recovers, then appends after what it recovered
    store.append("a", [el.Event("A", {"k": 2})])
    assert journal.read_bytes()[Journal.intact_size(journal) :].count(0) == (
        journal.stat().st_size - Journal.intact_size(journal)
    )
    crash(store)
    with el.EventStore(path) as reopened:
        assert history(reopened) == [(1, "a", 1, "A", {"k": 1}), (2, "a", 2, "A", {"k": 2})]


def test_a_file_system_that_cannot_map_files_gets_its_records_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args, **kwargs):
        raise OSError(errno.ENODEV, "No such device")

    monkeypatch.setattr(eventlab.journal.mmap, "mmap", refuse)
    path = tmp_path / "store.duckdb"
    journal = journal_paths(path)[0]
    store = el.EventStore(path, sync=False)
    store.append("a", [el.Event("A", {"k": 1})])
    store.append("a", [el.Event("A", {"k": 2})])
    assert store._pending.journal._map is None
    written = Journal.intact_size(journal)
    # The zeros written ahead for the map stay, and the records go over them.
    assert journal.read_bytes()[written:] == bytes(journal.stat().st_size - written)
    crash(store)
    with el.EventStore(path) as reopened:
        assert history(reopened) == [(1, "a", 1, "A", {"k": 1}), (2, "a", 2, "A", {"k": 2})]

"""A synced journal writes zeros ahead of its records, and recovery stops at them.

Overwriting blocks the file already has makes each commit's fdatasync flush data
only (see eventlab.journal.Journal._preallocate). These tests pin down the file
layout and that a crash at any point of it recovers exactly what was acknowledged.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import eventlab as el
import eventlab.journal
from eventlab.journal import Journal, journal_paths
from tests.conftest import crash


def history(store: el.EventStore) -> list[tuple]:
    return [(r.position, r.stream_id, r.version, r.type, r.data) for r in store.read_all()]


def test_a_synced_journal_runs_ahead_with_zeros_that_recovery_skips(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    journal = journal_paths(path)[0]
    store = el.EventStore(path)
    store.append("a", [el.Event("A", {"k": 1})])
    store.append("a", [el.Event("A", {"k": 2}), el.Event("A", {"k": 3})])
    written = Journal.intact_size(journal)
    data = journal.read_bytes()
    assert 0 < written < len(data) == eventlab.journal._PREALLOCATE
    assert data[written:] == bytes(len(data) - written)
    crash(store)
    with el.EventStore(path) as reopened:
        assert history(reopened) == [
            (1, "a", 1, "A", {"k": 1}),
            (2, "a", 2, "A", {"k": 2}),
            (3, "a", 3, "A", {"k": 3}),
        ]


def test_an_unsynced_journal_writes_no_zeros(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    journal = journal_paths(path)[0]
    store = el.EventStore(path, sync=False)
    store.append("a", [el.Event("A", {"k": 1})])
    assert Journal.intact_size(journal) == journal.stat().st_size > 0
    crash(store)
    with el.EventStore(path) as reopened:
        assert history(reopened) == [(1, "a", 1, "A", {"k": 1})]


@pytest.mark.parametrize(("step", "small"), [(1, 10**6), (64, 10**6), (1000, 10**6), (64, 300)])
def test_records_across_many_small_steps_recover_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: int, small: int
) -> None:
    # With tiny steps, records start, end and straddle the zeros' boundaries, and a
    # big transaction's record is longer than a step. Records above ``small`` bytes
    # extend the file themselves, over the zeros and past them.
    monkeypatch.setattr(eventlab.journal, "_PREALLOCATE", step)
    monkeypatch.setattr(eventlab.journal, "_SMALL_RECORD", small)
    path = tmp_path / "store.duckdb"
    journal = journal_paths(path)[0]
    store = el.EventStore(path)
    expected = []
    for n in range(1, 8):
        events = [el.Event("E", {"n": n, "pad": "x" * (37 * n)})]
        store.append(f"s{n % 3}", events)
        expected.append((f"s{n % 3}", "E", {"n": n, "pad": "x" * (37 * n)}))
    with store.transaction():
        for n in range(100):
            store.append(f"big-{n}", [el.Event("B", {"n": n})])
            expected.append((f"big-{n}", "B", {"n": n}))
    store.append("after", [el.Event("E", {"n": 0})])
    expected.append(("after", "E", {"n": 0}))
    size = journal.stat().st_size
    written = Journal.intact_size(journal)
    assert written <= size < written + step + 1
    assert journal.read_bytes()[written:] == bytes(size - written)
    crash(store)
    with el.EventStore(path) as reopened:
        assert [(r.stream_id, r.type, r.data) for r in reopened.read_all()] == expected
        assert [r.position for r in reopened.read_all()] == list(range(1, len(expected) + 1))


def test_an_emptied_journal_brings_back_none_of_its_old_records(tmp_path: Path) -> None:
    # Reading absorbs the journal into DuckDB and empties it; the zeros written after
    # that must not let an old, longer record show through behind a new, shorter one.
    path = tmp_path / "store.duckdb"
    store = el.EventStore(path)
    store.append("a", [el.Event("Long", {"pad": "y" * 500}) for _ in range(5)])
    assert len(list(store.read_all())) == 5  # absorbed; the journal emptied
    store.append("b", [el.Event("Short", {})])
    crash(store)
    with el.EventStore(path) as reopened:
        assert [(r.position, r.stream_id, r.type) for r in reopened.read_all()] == [
            *[(n, "a", "Long") for n in range(1, 6)],
            (6, "b", "Short"),
        ]


def test_reopening_cuts_the_zeros_and_goes_on_after_the_last_record(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    journal = journal_paths(path)[0]
    store = el.EventStore(path)
    store.append("a", [el.Event("A", {"k": 1})])
    crash(store)
    store = el.EventStore(path)  # recovers, then appends after what it recovered
    store.append("a", [el.Event("A", {"k": 2})])
    assert journal.read_bytes()[Journal.intact_size(journal) :].count(0) == (
        journal.stat().st_size - Journal.intact_size(journal)
    )
    crash(store)
    with el.EventStore(path) as reopened:
        assert history(reopened) == [(1, "a", 1, "A", {"k": 1}), (2, "a", 2, "A", {"k": 2})]

"""DuckDB's one-writer rule across processes: clear errors, and read-only access after."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import eventlab as el

OTHER_PROCESS = r"""
import json, sys
import eventlab as el

path, modes = sys.argv[1], sys.argv[2].split(",")
report = {}
for mode in modes:
    try:
        store = el.EventStore(path, read_only=(mode == "read_only"))
    except Exception as exc:
        report[mode] = {
            "error": type(exc).__name__,
            "is_eventlab_error": isinstance(exc, el.EventlabError),
            "is_store_locked": isinstance(exc, el.StoreLockedError),
            "message": str(exc),
        }
        continue
    with store:
        entry = {
            "events": [
                [r.position, r.stream_id, r.version, r.type, r.data] for r in store.read_all()
            ],
            "version": store.version("order-1"),
            "head": store.head,
        }
        try:
            store.append("order-1", [el.Event("Paid", {"by": "other process"})])
        except Exception as exc:
            entry["append_error"] = type(exc).__name__
            entry["append_is_read_only_error"] = isinstance(exc, el.ReadOnlyError)
            entry["append_message"] = str(exc)
        else:
            entry["append_error"] = None
        report[mode] = entry
print(json.dumps(report))
"""


def in_other_process(path: Path, *modes: str) -> dict:
    """Open the store at ``path`` in a fresh Python process, once per mode; report what happened."""
    proc = subprocess.run(
        [sys.executable, "-c", OTHER_PROCESS, str(path), ",".join(modes)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def file_state(directory: Path) -> dict[str, tuple]:
    """Size and modification time of every file, plus the journal's bytes.

    The DuckDB file itself is only stat'ed, never opened: closing any descriptor of
    a file drops the POSIX record locks this process holds on it, DuckDB's included.
    """
    return {
        p.name: (p.stat().st_size, p.stat().st_mtime_ns)
        + ((p.read_bytes(),) if p.name.endswith(".journal") else ())
        for p in sorted(directory.iterdir())
    }


HISTORY = [
    [1, "order-1", 1, "Placed", {"total": 12.5}],
    [2, "order-1", 2, "Paid", {"amount": 12.5}],
    [3, "order-2", 1, "Placed", {"total": 3}],
]


def write_history(store: el.EventStore) -> None:
    store.append(
        "order-1",
        [el.Event("Placed", {"total": 12.5}), el.Event("Paid", {"amount": 12.5})],
        expected_version=0,
    )
    store.append("order-2", el.Event("Placed", {"total": 3}), expected_version=0)


def assert_explains_one_writer_rule(report: dict, path: Path) -> None:
    assert report["error"] == "StoreLockedError"
    assert report["is_store_locked"] is True
    assert report["is_eventlab_error"] is True
    message = report["message"]
    assert message.startswith(
        f"cannot open {path}: another process has it open. DuckDB allows one writing "
        f"process per database file, and while it writes no other process can open the "
        f"file, not even with read_only=True"
    )
    # What to do: close the writer and then open read-only, or a copy, or Parquet.
    assert "Close the store in the other process" in message
    assert "with read_only=True if you only read" in message
    assert "work on a copy of the file" in message
    assert "export it to Parquet (store.export_parquet)" in message


def test_a_second_process_cannot_open_a_file_held_by_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    with el.EventStore(path) as writer:
        write_history(writer)
        before = file_state(tmp_path)
        # The writer's appends are still only in its journal, which must stay intact.
        assert before["store.duckdb.journal"][2].count(b'"Placed"') == 2

        report = in_other_process(path, "write", "read_only")

        assert set(report) == {"write", "read_only"}
        assert_explains_one_writer_rule(report["write"], path)
        assert_explains_one_writer_rule(report["read_only"], path)
        # The refused opens touched nothing, and the writer carries on.
        assert file_state(tmp_path) == before
        writer.append("order-2", el.Event("Paid", {"amount": 3}), expected_version=1)
        assert [
            [r.position, r.stream_id, r.version, r.type, r.data] for r in writer.read_all()
        ] == HISTORY + [[4, "order-2", 2, "Paid", {"amount": 3}]]


def test_after_the_writer_closes_another_process_reads_and_cannot_append(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    with el.EventStore(path) as writer:
        write_history(writer)
    before = file_state(tmp_path)

    # Several readers at once are fine: this process holds a reader open too.
    with el.EventStore(path, read_only=True) as reader:
        report = in_other_process(path, "read_only")
        assert [
            [r.position, r.stream_id, r.version, r.type, r.data] for r in reader.read_all()
        ] == HISTORY

    entry = report["read_only"]
    assert entry["events"] == HISTORY
    assert entry["version"] == 2
    assert entry["head"] == 3
    assert entry["append_error"] == "ReadOnlyError"
    assert entry["append_is_read_only_error"] is True
    assert "read_only=True" in entry["append_message"]
    assert "without read_only" in entry["append_message"]
    assert file_state(tmp_path) == before

    # And the file is still writable afterwards, with nothing appended by the reader.
    with el.EventStore(path) as writer:
        assert writer.version("order-1") == 2
        assert writer.head == 3


def test_a_writer_is_refused_while_another_process_reads(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    with el.EventStore(path) as writer:
        write_history(writer)
    with el.EventStore(path, read_only=True) as reader:
        report = in_other_process(path, "write")
        assert report["write"]["error"] == "StoreLockedError"
        assert report["write"]["is_store_locked"] is True
        assert str(path) in report["write"]["message"]
        assert len(list(reader.read_all())) == 3


def test_read_only_in_this_process_raises_read_only_error(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    with el.EventStore(path) as writer:
        write_history(writer)
    with el.EventStore(path, read_only=True) as reader:
        with pytest.raises(el.ReadOnlyError) as caught:
            reader.append("order-1", [el.Event("Paid", {})], expected_version=2)
        assert isinstance(caught.value, el.EventlabError)
        assert reader.head == 3
        assert [r.position for r in reader.read_all()] == [1, 2, 3]

"""Crash test: a child process catching projections up is killed with SIGKILL.

Each batch of read-model changes commits with its checkpoint, so after reopening
and catching up, every read model must equal a clean rebuild: no event applied
twice, none skipped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

import eventlab as el
from tests.test_projections import ITEMS, CustomerDays, Tolerant

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import sys
sys.path.insert(0, sys.argv[2])
import eventlab as el
from tests.test_projections import ITEMS, CustomerDays, Tolerant

# Report each committed batch, so the parent can kill at a chosen point under any load.
committed = el.ProjectionRunner._committed
def report(self, cursor, name):
    committed(self, cursor, name)
    print("committed", name, flush=True)
el.ProjectionRunner._committed = report

store = el.EventStore(sys.argv[1])
runner = el.ProjectionRunner(store, [Tolerant, CustomerDays, ITEMS], batch_size=int(sys.argv[3]))
print("catching up", flush=True)
runner.catch_up()
print("done", flush=True)
store.close()
"""


def build_history(path: Path, orders: int) -> None:
    rows = []
    for i in range(orders):
        stream = f"order-{i % 997}"
        rows.append((stream, "OrderPlaced", {"customer": f"c{i % 7}"}))
        rows += [(stream, "ItemAdded", {"price": (i * k) % 11}) for k in range(1, 4)]
        if i % 5 == 0:
            rows.append((stream, "OrderCancelled", {}))
    with el.EventStore(path) as store:
        store.append_frame(pd.DataFrame(rows, columns=["stream_id", "type", "data"]))


def read_models(store: el.EventStore) -> dict[str, pd.DataFrame]:
    return {
        name: store.sql(f"SELECT * FROM {name} ORDER BY ALL")
        for name in ("orders", "customer_days", "items_per_order")
    }


def run_and_kill(path: Path, after_commits: int, delay: float, batch_size: int) -> str:
    """Kill the child ``delay`` seconds after its ``after_commits``-th batch commit."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(ROOT), str(batch_size)],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = []
    while True:
        line = child.stdout.readline()
        lines.append(line)
        if not line or line.startswith("done") or len(lines) > after_commits:
            break
    time.sleep(delay)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    return "".join(lines) + child.stdout.read()


def test_killed_catch_up_resumes_to_exactly_a_clean_rebuild(tmp_path):
    path = tmp_path / "shop.duckdb"
    build_history(path, orders=2000)
    checkpoints = []
    kill_points = [(1, 0.0), (2, 0.003), (4, 0.0), (3, 0.01), (6, 0.001)]
    for after_commits, delay in kill_points:
        output = run_and_kill(path, after_commits, delay, batch_size=500)
        with el.EventStore(path) as store:
            runner = el.ProjectionRunner(store, [Tolerant, CustomerDays, ITEMS])
            checkpoints.append(runner.status()["checkpoint"].tolist())
        if "done" in output:
            break
    # The kills landed part-way at least once: some projection had a checkpoint
    # strictly between 0 and the head.
    with el.EventStore(path) as store:
        head = store.head
        assert any(0 < c < head for row in checkpoints for c in row), checkpoints
        runner = el.ProjectionRunner(store, [Tolerant, CustomerDays, ITEMS])
        runner.catch_up()
        assert runner.status()["checkpoint"].tolist() == [head] * 3
        resumed = read_models(store)
        runner.rebuild()
        clean = read_models(store)
    for name, frame in clean.items():
        pd.testing.assert_frame_equal(resumed[name], frame, check_dtype=False)

"""Crash test: a child process running checkout sagas is killed with SIGKILL, again and again.

Each run opens the store, starts the same orders (a started saga is not
started twice), and resumes every open saga. The parent kills it at random
moments: while it starts the sagas, right after a saga decision commits, or
right after a batch of step commands commits but before the coordinator heard
the answers. After a last
run, every saga must have ended (completed, aborted or stuck), every step
must have run at most once, and the shop's invariants must hold.
"""

from __future__ import annotations

import random
from pathlib import Path

import eventlab as el
from eventlab.shop import check_checkout
from tests.kill_child import run_and_kill

ORDERS = 100

CHILD = r"""
import random
import sys
import time
from datetime import timedelta

import eventlab as el

path, orders, run = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = el.EventStore(path)
# Carry on from the latest time in the store: the clock never goes back.
latest = store.sql("SELECT max(recorded_at) AS t FROM events")["t"].iloc[0]
start = "2024-03-04T09:00" if latest is None or latest != latest else latest
store.clock = el.SimulatedClock(start, step=timedelta(milliseconds=10))


def faults(name):
    return el.shop.Faults(name, failure_rate=0.15, slow_rate=0.05, slow_latency=45, seed=run)


shop = el.shop.Checkout(
    store,
    inventory=faults("inventory"),
    payments=faults("payments"),
    warehouse=faults("warehouse"),
    decline_rate=0.1,
    seed=run,
    batch_size=3,
)
skus = ["MUG-001", "MUG-002", "TEE-010", "BAG-020", "BOK-030", "STK-040"]
shop.stock({sku: 6 for sku in skus})
rng = random.Random(0)  # the same orders in every run
for n in range(orders):
    lines = [[sku, rng.randint(1, 3)] for sku in rng.sample(skus, rng.randint(1, 3))]
    shop.start(f"{n:06d}", lines)
    print("start", n, flush=True)


def decided(event):  # after a saga decision commits: linger, so a kill lands between two
    print("saga", event.stream_id, event.type, flush=True)
    time.sleep(0.002)


store.bus.subscribe(decided, streams="saga-", name="crash-window")
# After a batch of step commands commits, before the coordinator records the answers.
shop.executor.subscribe(lambda outcome: print("done", outcome.command_id, flush=True))
print("running", flush=True)
shop.run()
print("idle", flush=True)
store.close()
"""


def run_child(path: Path, run: int, kill_after: int | None, at: str = "done") -> list[str]:
    """Run the child; SIGKILL it on its ``kill_after``-th line starting with ``at``."""
    return run_and_kill(CHILD, [str(path), str(ORDERS), str(run)], kill_after, at)


def test_killed_sagas_resume_and_every_step_runs_at_most_once(tmp_path):
    path = tmp_path / "checkout.duckdb"
    rng = random.Random(11)
    kills = 0
    points = ["start", "saga", "done", "saga", "done", "saga", "done", "saga", "done"]
    for run, point in enumerate(points):
        lines = run_child(path, run, kill_after=rng.randint(1, 6), at=point)
        kills += "idle" not in lines
    # Most runs were cut short (how far each got before the kill landed varies,
    # so a late run may find too little left to do to be killed).
    assert kills >= 6
    lines = run_child(path, 99, kill_after=None)
    assert lines[-1] == "idle"
    with el.EventStore(path, read_only=True) as store:
        status = el.saga_status(store)
        assert len(status) == ORDERS
        assert set(status["state"]) <= {"completed", "aborted", "stuck"}
        assert set(status["state"]) >= {"completed", "aborted"}  # both kinds of end happened
        report = check_checkout(store)
        assert report["violations"] == []
        # Only a command that succeeded left events, and each attempt is its own command.
        leftovers = store.sql(
            "SELECT count(*) AS n FROM events e JOIN commands c ON e.causation_id = c.command_id "
            "WHERE c.status <> 'succeeded' AND NOT starts_with(e.stream_id, 'saga-')"
        )
        assert leftovers["n"].iloc[0] == 0
        attempts = store.sql(
            "SELECT json_extract_string(context, '$.attempt') AS attempt, attempts FROM commands "
            "WHERE json_extract_string(context, '$.saga') = 'checkout'"
        )
        assert (attempts["attempts"] <= 1).all()
        # Every request in a saga stream names a command the store knows, once.
        requested = store.sql(
            "SELECT json_extract_string(data, '$.command_id') AS command_id, count(*) AS n "
            "FROM events WHERE type IN ('StepRequested', 'CompensationRequested') GROUP BY 1"
        )
        assert (requested["n"] == 1).all()
        known = set(store.sql("SELECT command_id FROM commands")["command_id"])
        assert set(requested["command_id"]) <= known

"""Crash test: a child process running the scheduler is killed with SIGKILL.

After restarting and ``run(until_idle=True)``, every submitted command must be
in a terminal state and the events it produced must appear exactly once.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import eventlab as el
from tests.kill_child import run_and_kill

COMMANDS = 60

CHILD = r"""
import sys
import time
import eventlab as el
import eventlab.store

# A small threshold hands the buffer to a background absorb every few commits.
eventlab.store.ABSORB_THRESHOLD = int(sys.argv[3])
store = el.EventStore(sys.argv[1])
executor = el.CommandExecutor(store)

@executor.handler("PlaceOrder")
def place_order(command, ctx):
    n = command.payload["n"]
    return {f"order-{n}": [el.Event("OrderPlaced", {"n": n}), el.Event("ItemAdded", {"n": n})]}

# After each commit (before the scheduler records the outcome), say so and linger,
# so the parent can kill inside that window: events stored, status not yet.
def committed(event):
    if event.type == "ItemAdded":
        print("committed", event.causation_id, flush=True)
        time.sleep(0.05)

store.bus.subscribe(committed, name="crash-window")
scheduler = el.CommandScheduler(store, executor, batch_size=3)  # group commit
for n in range(int(sys.argv[2])):
    scheduler.submit(el.Command("PlaceOrder", {"n": n}, command_id=f"cmd-{n}"))
executor.subscribe(lambda outcome: print("done", outcome.command_id, flush=True))
print("running", flush=True)
scheduler.run()
print("idle", flush=True)
store.close()
"""


def run_child(
    path: Path, kill_after: int | None, at: str = "done", threshold: int = 100_000
) -> list[str]:
    """Run the child; SIGKILL it on its ``kill_after``-th line starting with ``at``."""
    return run_and_kill(CHILD, [str(path), str(COMMANDS), str(threshold)], kill_after, at)


@pytest.mark.parametrize("threshold", [100_000, 4], ids=["journal-only", "background-absorbs"])
def test_no_command_lost_and_none_applied_twice(tmp_path, threshold):
    path = tmp_path / "shop.duckdb"
    rng = random.Random(7)
    kills = 0
    for point in ("committed", "done", "committed", "done", "committed"):
        lines = run_child(path, kill_after=rng.randint(1, 10), at=point, threshold=threshold)
        kills += "idle" not in lines
    assert kills == 5  # every run was cut short
    run_child(path, kill_after=None, threshold=threshold)  # the last run finishes the queue
    with el.EventStore(path, read_only=True) as store:
        statuses = store.sql("SELECT status, count(*) AS n FROM commands GROUP BY status")
        assert statuses.set_index("status")["n"].to_dict() == {"succeeded": COMMANDS}
        per_command = store.sql(
            "SELECT causation_id, count(*) AS n FROM events GROUP BY causation_id"
        )
        assert len(per_command) == COMMANDS
        assert set(per_command["n"]) == {2}  # each command's two events, exactly once
        assert store.head == 2 * COMMANDS
        for n in range(COMMANDS):
            assert [e.type for e in store.read_stream(f"order-{n}")] == [
                "OrderPlaced",
                "ItemAdded",
            ]

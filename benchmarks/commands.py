"""Commands through the command side, ours and the peer's.

Ours: every order is a ``PlaceOrder`` command submitted to an
``el.CommandScheduler`` and run by an ``el.CommandExecutor`` whose handler
builds the order's six events, on a file store. The scheduler group-commits
``batch_size`` commands per journal sync: each command's events, its status
changes and its history are durable together when its batch commits.

The peer: the same command as an ``eventsourcing`` application method that
builds the aggregate from the order and saves it (one durable SQLite commit
per command), which is how that library processes a command.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import eventlab as el
from benchmarks import peer, workload
from benchmarks.ours import Timing, _close

BATCH_SIZE = 500


def time_scheduler(path: Path, orders: Sequence[workload.Order]) -> Timing:
    """Seconds to submit every order as a command and run the queue until idle."""
    store = el.EventStore(path, clock=el.SimulatedClock("2024-05-01"))
    try:
        executor = el.CommandExecutor(store)
        by_id = {order.order_id: order for order in orders}

        @executor.handler("PlaceOrder")
        def place_order(command: el.Command, ctx: el.CommandContext) -> dict:
            order = by_id[command.payload["order_id"]]
            return {order.order_id: [el.Event(e["type"], e["data"]) for e in order.events()]}

        scheduler = el.CommandScheduler(store, executor, batch_size=BATCH_SIZE)
        commands = [
            el.Command("PlaceOrder", {"order_id": o.order_id}, command_id=f"place-{o.order_id}")
            for o in orders
        ]
        workload.settle()
        start = time.perf_counter()
        scheduler.submit_many(commands)
        ran = scheduler.run(until_idle=True)
        seconds = time.perf_counter() - start
        if ran != len(orders):
            raise AssertionError(f"the scheduler ran {ran} commands, expected {len(orders)}")
        # This first read waits for DuckDB to absorb what the run left pending (work
        # deferred past the timed run): counted with the close, as the other appends do.
        drain_start = time.perf_counter()
        counts = executor.commands.counts()
        drain = time.perf_counter() - drain_start
        if counts != {"succeeded": len(orders)}:
            raise AssertionError(f"commands did not all succeed: {counts}")
    except BaseException:
        store.close()
        raise
    return Timing(seconds, drain + _close(store))


class ShopApplication(peer.OrderApplication):
    """The peer's command handler: an application method per command."""

    def place_order(self, order: workload.Order) -> None:
        aggregate = peer.build_aggregate(order)
        self.save(aggregate)


def time_peer(path: Path, orders: Sequence[workload.Order]) -> float:
    """Seconds for one ``place_order`` application call (one save) per order."""
    app = ShopApplication(
        env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}
    )
    try:
        workload.settle()
        start = time.perf_counter()
        for order in orders:
            app.place_order(order)
        return time.perf_counter() - start
    finally:
        app.close()

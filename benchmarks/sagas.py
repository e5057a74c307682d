"""Checkout sagas end to end: the orchestrated saga on the shop's services.

Each checkout is an ``el.shop.Checkout`` saga (reserve stock, charge the
payment, create the shipment) started on a file store and run by its
``el.SagaCoordinator`` until every saga has ended. Every participant fails 5%
of its calls (``el.shop.Faults``): those attempts are undone and retried on
the saga's policy, on the simulated clock; the scheduler group-commits
``BATCH_SIZE`` commands per journal sync. The timed part is starting the
sagas and running them; creating the catalogue is set-up.
"""

from __future__ import annotations

import random
import time
from datetime import timedelta
from pathlib import Path

import eventlab as el
from benchmarks.checks import BenchmarkError
from benchmarks.ours import Timing, _close

BATCH_SIZE = 500
FAILURE_RATE = 0.05
SKUS = [sku for sku, _, _ in el.shop.CATALOGUE]


def checkouts(n: int, seed: int = 1) -> list[tuple[str, list[list]]]:
    """``n`` orders of one to three lines over the whole catalogue, reproducibly."""
    rng = random.Random(seed)
    return [
        (f"{i:06d}", [[sku, rng.randint(1, 3)] for sku in rng.sample(SKUS, rng.randint(1, 3))])
        for i in range(n)
    ]


def time_checkouts(path: Path, orders: list[tuple[str, list[list]]]) -> tuple[Timing, dict]:
    """Seconds to start every checkout saga and run them all to their end."""
    store = el.EventStore(path, clock=el.SimulatedClock("2024-03-04T09:00", step=timedelta(0)))
    try:
        faults = {
            name: el.shop.Faults(name, failure_rate=FAILURE_RATE, seed=1)
            for name in ("inventory", "payments", "warehouse")
        }
        shop = el.shop.Checkout(store, **faults, seed=1, batch_size=BATCH_SIZE)
        shop.stock(10 * len(orders))  # enough for every order: failures are the faults'
        start = time.perf_counter()
        with store.transaction():  # the sagas' first steps commit together
            for order_id, lines in orders:
                shop.start(order_id, lines)
        shop.run()
        seconds = time.perf_counter() - start
        report = el.shop.check_checkout(store)
        if report["violations"] or report["orders"] != len(orders):
            raise BenchmarkError(f"the checkout invariants do not hold: {report}")
        failures = sum(f.stats["failed"] for f in faults.values())
    except BaseException:
        store.close()
        raise
    return Timing(seconds, _close(store)), {**report["outcomes"], "failed_calls": failures}

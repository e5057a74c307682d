"""Regenerate data/shop_sample.parquet, the sample shop history described in data/README.md.

Run from the project root:

    .venv/bin/python data/make_sample.py

The history is generated from a fixed seed on a simulated clock, with event ids
derived from the seed, so every run writes the same events.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import eventlab as el
from eventlab.demo import SHOP_START, record_shop_history, shop_history_frame

ORDERS = 300
SEED = 7
TARGET = Path(__file__).resolve().parent / "shop_sample.parquet"


def make_sample(target: Path = TARGET, *, orders: int = ORDERS, seed: int = SEED) -> int:
    """Write the sample history to ``target`` as one Parquet file; return its event count."""
    frame = shop_history_frame(orders, seed, event_ids=True)
    with el.EventStore(clock=el.SimulatedClock(SHOP_START)) as store:
        with store.transaction():
            count = record_shop_history(store, frame)
        with tempfile.TemporaryDirectory() as scratch:
            # Without partitioning, export_parquet writes one file: events.parquet.
            exported = store.export_parquet(scratch) / "events.parquet"
            shutil.move(exported, target)
    return count


if __name__ == "__main__":
    events = make_sample()
    print(f"wrote {TARGET} ({events} events, {ORDERS} orders, seed {SEED})", file=sys.stderr)

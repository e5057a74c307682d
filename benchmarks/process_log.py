"""Import and analytics benchmarks: the BPI Challenge 2012 log, and a synthetic process log.

The synthetic log is what a live system records: cases (streams) that walk a
small process model (a Markov chain over twelve activities, a few events to a
few dozen per case), started over a year and interleaved in time, appended in
business-time order. It is generated with NumPy in seconds, so a store of ten
million events is built from it without building payloads.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

import eventlab as el

PROJECT_ROOT = Path(__file__).resolve().parent.parent
REAL_LOGS = Path(
    os.environ.get("EVENTLAB_REAL_LOGS", PROJECT_ROOT / "tests" / "data" / "real-logs")
)
REAL_LOG_EVENTS = {"bpic2012.xes.gz": 262_200, "helpdesk.xes.gz": 21_348}
# Per real log: (start_type, end_type) for stream_durations and the steps of a funnel.
REAL_LOG_STEPS = {
    "bpic2012.xes.gz": (
        ("A_SUBMITTED", "A_APPROVED"),
        ["A_SUBMITTED", "A_PREACCEPTED", "A_ACCEPTED", "A_APPROVED"],
    ),
    "helpdesk.xes.gz": (
        ("Take in charge ticket", "Closed"),
        ["Assign seriousness", "Take in charge ticket", "Resolve ticket", "Closed"],
    ),
}

ACTIVITIES = [
    "Submit", "Check", "Request info", "Receive info", "Assess", "Escalate",
    "Approve", "Reject", "Notify", "Pay", "Archive", "Close",
]  # fmt: skip
SEED = 2012
YEAR_US = 365 * 24 * 3600 * 1_000_000


def _transitions(rng: np.random.Generator) -> np.ndarray:
    """A row-stochastic matrix: from each activity, a few likely next ones."""
    n = len(ACTIVITIES)
    weights = rng.random((n, n)) ** 4  # a few strong successors per activity
    for a in range(n - 1):
        weights[a, a + 1] += 2.0  # the happy path: Submit -> Check -> ... -> Close
    weights[n - 1] = 0  # Close ends a case
    weights[:, 0] = 0  # nothing goes back to Submit
    sums = weights.sum(axis=1, keepdims=True)
    return np.divide(weights, sums, out=np.zeros_like(weights), where=sums > 0)


MAX_STEPS = 40  # a case that has not closed by then stops


def process_frame(n_events: int, seed: int = SEED) -> pa.Table:
    """``n_events`` events of cases walking the process, as a table for append_frame.

    Columns stream_id, type, data ("{}"), occurred_at; rows in business-time
    order, ties broken by case and step.
    """
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(_transitions(rng), axis=1)
    close = len(ACTIVITIES) - 1
    batches, total = [], 0
    while total < n_events:
        walks = np.full((max(1000, n_events // 7), MAX_STEPS), -1, np.int64)
        state = np.zeros(len(walks), np.int64)  # every case starts with Submit
        for step in range(MAX_STEPS):
            walks[:, step] = state
            draw = rng.random(len(state))
            nxt = np.minimum((draw[:, None] > cumulative[np.maximum(state, 0)]).sum(axis=1), close)
            state = np.where((state >= 0) & (state != close), nxt, -1)
        batches.append(walks)
        total += int((walks >= 0).sum())
    walks = np.concatenate(batches)
    case, step = np.nonzero(walks >= 0)  # row-major: case by case, steps in order
    case, step = case[:n_events], step[:n_events]
    kind = walks[case, step]
    n_cases = int(case[-1]) + 1
    start = rng.integers(0, YEAR_US, n_cases)
    gaps = rng.exponential(6 * 3600 * 1e6, len(case)).astype(np.int64) * (step > 0)
    micros = 1_704_067_200_000_000 + start[case] + _cumsum_by_group(gaps, case)
    by_time = np.lexsort((step, case, micros))
    names = pc.binary_join_element_wise("case-", pa.array(case[by_time]).cast(pa.string()), "")
    return pa.table(
        {
            "stream_id": names,
            "type": pa.array(np.array(ACTIVITIES)[kind[by_time]]),
            "data": pa.repeat(pa.scalar("{}"), len(by_time)),
            "occurred_at": pa.array(micros[by_time], pa.timestamp("us", tz="UTC")),
        }
    )


def _cumsum_by_group(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Running sums that restart at each new group (rows sorted by group)."""
    total = np.cumsum(values)
    starts = np.r_[True, groups[1:] != groups[:-1]]
    base = np.maximum.accumulate(np.where(starts, total - values, 0))
    return total - base


def build_store(path: Path, n_events: int) -> tuple[float, int, int]:
    """A file store of the synthetic log (untimed by the caller).

    Returns (seconds, events, directly-follows pairs: events minus cases).
    """
    start = time.perf_counter()
    frame = process_frame(n_events)
    cases = len(pc.unique(frame["stream_id"]))
    with el.EventStore(path) as store:
        for offset in range(0, frame.num_rows, 1_000_000):
            store.append_frame(frame.slice(offset, 1_000_000))
        count = store.head
    return time.perf_counter() - start, count, count - cases


def pair_count(frame: pd.DataFrame) -> int:
    """Directly-follows pairs in pm4py's DataFrame: events minus cases."""
    return len(frame) - frame["case:concept:name"].nunique()


def peer_frame(path: Path, n_events: int) -> pd.DataFrame:
    """The same events as the pandas DataFrame pm4py works on (read from the store, untimed)."""
    with el.EventStore(path, read_only=True) as store:
        frame = store.sql(
            f'SELECT stream_id AS "case:concept:name", type AS "concept:name", '
            f'occurred_at AS "time:timestamp" FROM events WHERE position <= {n_events} '
            f"ORDER BY position"
        )
    return frame


# ---------------------------------------------------------------------- timed calls


def time_import_xes(path: Path, source: Path) -> tuple[float, int]:
    """``import_xes`` into a fresh file store: (seconds, events stored)."""
    with el.EventStore(path) as store:
        start = time.perf_counter()
        count = store.import_xes(source)
        seconds = time.perf_counter() - start
        stored = store.head
    if count != stored:
        raise RuntimeError(f"import_xes said {count} events, the store holds {stored}")
    return seconds, stored


def pm4py():
    """pm4py, imported quietly (it prints a banner and suggests its Rust reader)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pm4py as module
    return module


def time_peer_read_xes(source: Path) -> tuple[float, int]:
    """pm4py's ``read_xes`` (its default reader, no progress bar): (seconds, events)."""
    module = pm4py()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        frame = module.read_xes(str(source), show_progress_bar=False)
        seconds = time.perf_counter() - start
    return seconds, len(frame)


def time_directly_follows(path: Path) -> tuple[float, pd.DataFrame]:
    with el.EventStore(path, read_only=True) as store:
        start = time.perf_counter()
        frame = el.analytics.directly_follows(store)
        return time.perf_counter() - start, frame


def time_peer_dfg(frame: pd.DataFrame) -> tuple[float, dict]:
    module = pm4py()
    start = time.perf_counter()
    dfg, _, _ = module.discover_dfg(frame)
    return time.perf_counter() - start, dfg


def analyses(log: str) -> dict[str, Callable[[Any], Any]]:
    """The analyses timed on a real log, with types of that log where they need some."""
    (first, last), steps = REAL_LOG_STEPS[log]
    a = el.analytics
    return {
        "summary": lambda s: a.summary(s),
        "event_rate": lambda s: a.event_rate(s, "1D", by="type"),
        "stream_durations": lambda s: a.stream_durations(s),
        "stream_durations_typed": lambda s: a.stream_durations(s, first, last),
        "variants": lambda s: a.variants(s),
        "directly_follows": lambda s: a.directly_follows(s),
        "funnel": lambda s: a.funnel(s, steps),
    }


def time_analyses(path: Path, log: str) -> dict[str, float]:
    """Seconds of each analysis over a store (opened read-only)."""
    seconds = {}
    with el.EventStore(path, read_only=True) as store:
        for name, run in analyses(log).items():
            start = time.perf_counter()
            run(store)
            seconds[name] = time.perf_counter() - start
    return seconds

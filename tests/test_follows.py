"""The NumPy directly-follows core (eventlab/follows.py) against a plain-Python recount.

The hashes are chosen by the tests, so the hard cases are forced rather than
hoped for: streams whose hash tops collide (the sort key keeps only the top
bits), whole-hash ties kept apart only by position, and streams whose business
time goes back against position order.
"""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventlab import follows


def plain_stats(hashes, codes, times):
    """Pairs per (source, target): gaps, with each stream ordered by (time, row)."""
    streams = defaultdict(list)
    for row, (h, code, t) in enumerate(zip(hashes, codes, times, strict=True)):
        streams[h].append((t, row, code))
    gaps = defaultdict(list)
    for events in streams.values():
        for (t1, _, a), (t2, _, b) in itertools.pairwise(sorted(events)):
            gaps[a, b].append(t2 - t1)
    return gaps


def as_dict(stats):
    return {
        (int(a), int(b)): (int(n), float(mean), float(median))
        for a, b, n, mean, median in zip(
            stats.source,
            stats.target,
            stats.count,
            stats.mean_gap,
            stats.median_gap,
            strict=True,
        )
    }


def expected_dict(gaps):
    return {
        pair: (len(g), pytest.approx(statistics.fmean(g)), float(statistics.median(g)))
        for pair, g in gaps.items()
    }


# Hash pools: spread over 64 bits (no collisions in practice), all below the
# row-number bits (every top collides), or equal tops with different low bits.
HASH_POOLS = {
    "spread": [0x9E3779B97F4A7C15 * (i + 1) % 2**64 for i in range(8)],
    "low": list(range(1, 9)),
    "shared_top": [(0xABCD << 48) | i for i in range(8)],
}


@settings(max_examples=200, deadline=None)
@given(
    pool=st.sampled_from(sorted(HASH_POOLS)),
    rows=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 3), st.integers(0, 50)), max_size=60),
    n_types=st.integers(4, 6),
)
def test_follow_stats_equal_a_plain_recount(pool, rows, n_types):
    hashes = np.array([HASH_POOLS[pool][s] for s, _, _ in rows], np.uint64)
    codes = np.array([c for _, c, _ in rows], np.int64)
    times = np.array([t for _, _, t in rows], np.int64)
    stats = follows.follow_stats(hashes, codes, times, n_types)
    assert as_dict(stats) == expected_dict(plain_stats(hashes.tolist(), codes, times))
    pairs = list(zip(stats.source.tolist(), stats.target.tolist(), strict=True))
    assert pairs == sorted(pairs)


@settings(max_examples=100, deadline=None)
@given(
    pool=st.sampled_from(sorted(HASH_POOLS)),
    rows=st.lists(st.tuples(st.integers(0, 7), st.integers(-5, 5)), max_size=60),
)
def test_stream_order_groups_streams_each_in_time_then_row_order(pool, rows):
    hashes = np.array([HASH_POOLS[pool][s] for s, _ in rows], np.uint64)
    times = np.array([t for _, t in rows], np.int64)
    order = follows.stream_order(hashes, times).tolist()
    assert sorted(order) == list(range(len(rows)))
    assert order == sorted(order, key=lambda r: (int(hashes[r]), int(times[r]), r))


def test_a_late_correction_is_reordered_only_within_its_stream():
    # Stream 1's third event (row 4) happened before its second (row 2).
    hashes = np.array([1 << 60, 2 << 60, 1 << 60, 2 << 60, 1 << 60], np.uint64)
    times = np.array([0, 5, 30, 6, 10], np.int64)
    assert follows.stream_order(hashes, times).tolist() == [0, 4, 2, 1, 3]


def test_a_million_types_need_no_table_of_every_pair():
    hashes = np.array([7, 7, 7, 9, 9], np.uint64) << np.uint64(40)
    codes = np.array([0, 999_999, 0, 999_999, 0], np.int64)
    times = np.array([0, 1, 3, 0, 10], np.int64)
    assert as_dict(follows.follow_stats(hashes, codes, times, 1_000_000)) == {
        (0, 999_999): (1, 1.0, 1.0),
        (999_999, 0): (2, 6.0, 6.0),
    }


def test_pairs_and_gaps_too_wide_for_one_word_are_sorted_by_lexsort():
    pair = np.array([1, 0, 1, 0, 1, 0], np.int64)
    gap = np.array([2**62, 3, 1, 5, 7, -9], np.int64)
    keep = np.array([True] * 5 + [False])  # a gap across two streams: dropped
    pairs, gaps = follows._sorted_by_pair(pair, gap, keep)
    assert pairs.tolist() == [0, 0, 1, 1, 1]
    assert gaps.tolist() == [3, 5, 1, 7, 2**62]


def test_an_empty_log_has_no_pairs():
    empty = np.zeros(0, np.int64)
    stats = follows.follow_stats(empty.astype(np.uint64), empty, empty, 1)
    assert as_dict(stats) == {}


@pytest.mark.parametrize(
    "times",
    [
        [-(2**40), 5, -3, 2**40, 0, 7],  # fits in a word beside the codes: packed together
        [-(2**61), 5, -3, 2**61, 0, 7],  # too wide: taken column by column
    ],
)
def test_times_of_any_width_are_taken_exactly(times):
    hashes = np.array([3, 3, 5, 5, 3, 5], np.uint64) << np.uint64(50)
    codes = np.array([0, 1, 2, 0, 1, 2], np.int64)
    times = np.array(times, np.int64)
    stats = follows.follow_stats(hashes, codes, times, 3)
    assert as_dict(stats) == expected_dict(plain_stats(hashes.tolist(), codes, times))

"""Directly-follows pairs of a whole log in NumPy, with one sort of 64-bit integers.

``el.analytics.directly_follows`` needs each event next to the one after it in
its stream: the log grouped by stream, each stream in time order. A database
sort on (stream, time, position) costs seconds per ten million events, and so
does NumPy's ``argsort``. NumPy's plain ``sort`` of 64-bit integers is several
times faster, so the grouping is packed into the integers themselves:

- the high bits hold the top of a 64-bit hash of the stream id, the low bits
  the event's row number (rows arrive in position order). Sorting these keys
  groups the streams, keeps each one in position order, and the low bits give
  the permutation back without an ``argsort``;
- position order is time order for almost every stream; streams where it is not
  (a late correction), and groups of streams whose hash tops collide, are
  found afterwards and only their rows are re-sorted exactly, by (hash, time,
  row).

Two streams whose whole 64-bit hashes are equal would still be taken for one
(about one chance in 10^7 for a million streams).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FollowStats:
    """One entry per pair of types seen next to each other: codes into the type list."""

    source: np.ndarray  # int64 type codes
    target: np.ndarray
    count: np.ndarray  # int64
    mean_gap: np.ndarray  # float64, in the unit of the times given
    median_gap: np.ndarray  # float64 (a median may fall between two gaps)


def stream_order(stream_hash: np.ndarray, time: np.ndarray) -> np.ndarray:
    """The permutation that groups rows by stream, each stream by (time, row).

    Parameters
    ----------
    stream_hash : numpy.ndarray
        uint64 hash of each row's stream id.
    time : numpy.ndarray
        int64 time of each row; rows are in position order.

    Returns
    -------
    numpy.ndarray
        int64 row numbers: streams in ascending hash order, each stream's rows
        in (time, row) order.
    """
    return _grouped(stream_hash, time, np.zeros(len(stream_hash), np.int64))[0]


def _grouped(
    stream_hash: np.ndarray, time: np.ndarray, code: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``stream_order``; whether each row is of the same stream as the next; and the
    times and codes taken in that order."""
    n = len(stream_hash)
    bits = max(1, (n - 1).bit_length())
    shift = np.uint64(bits)
    keys = stream_hash >> shift
    keys <<= shift
    keys |= np.arange(n, dtype=np.uint64)
    keys.sort()
    prefix = keys >> shift
    keys &= np.uint64((1 << bits) - 1)
    order = keys.view(np.int64)  # row numbers < 2**bits: the same bits either way
    hashes, times, codes = _take(order, stream_hash, time, code)
    same = hashes[1:] == hashes[:-1]
    # Different streams in one prefix group (more neighbours share a prefix
    # than a hash), or a stream going back in time, need the exact sort for
    # their groups' rows. Both are rare, so first only count and look.
    prefix_same = prefix[1:] == prefix[:-1]
    if (
        np.count_nonzero(prefix_same) != np.count_nonzero(same)
        or ((times[1:] < times[:-1]) & same).any()
    ):
        suspect = prefix_same & ((hashes[1:] != hashes[:-1]) | (times[1:] < times[:-1]))
        groups = np.unique(prefix[1:][suspect])
        slots = np.flatnonzero(np.isin(prefix, groups))
        rows = order[slots]
        rows = rows[np.lexsort((rows, time[rows], stream_hash[rows]))]
        order[slots] = rows
        hashes[slots] = stream_hash[rows]
        times[slots] = time[rows]
        codes[slots] = code[rows]
        same = hashes[1:] == hashes[:-1]
    return order, same, times, codes


def _take(
    order: np.ndarray, stream_hash: np.ndarray, time: np.ndarray, code: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three columns taken in ``order``, in one pass when they fit in two words.

    A random gather's cost is its cache misses, one per row and column: with
    the time and the code packed into one word beside the hash, a row's
    values share a cache line, and one ``take`` of 16-byte rows costs about
    what one column alone would.
    """
    n = len(order)
    if n == 0:
        return stream_hash[order], time[order], code.astype(np.int64)[order]
    low = int(time.min())
    code_bits = max(1, int(code.max()).bit_length())
    if (int(time.max()) - low).bit_length() + code_bits > 63:
        return stream_hash[order], time[order], code.astype(np.int64)[order]
    rows = np.empty((n, 2), np.int64)
    rows[:, 0] = stream_hash.view(np.int64)
    packed = rows[:, 1]
    np.subtract(time, low, out=packed)
    packed <<= code_bits
    packed |= code
    taken = np.take(rows, order, axis=0)
    del rows, packed
    hashes = taken[:, 0].view(np.uint64)
    packed = taken[:, 1]
    codes = packed & ((1 << code_bits) - 1)
    times = packed >> code_bits
    times += low
    return hashes, times, codes


def follow_stats(
    stream_hash: np.ndarray, type_code: np.ndarray, time: np.ndarray, n_types: int
) -> FollowStats:
    """Count each pair of types that directly follow in a stream, with the gaps between.

    Parameters
    ----------
    stream_hash : numpy.ndarray
        uint64 hash of each row's stream id.
    type_code : numpy.ndarray
        Integer code (``0 <= code < n_types``) of each row's type.
    time : numpy.ndarray
        int64 time of each row; rows are in position order.
    n_types : int
        How many type codes there are.

    Returns
    -------
    FollowStats
        Pairs in ascending (source, target) code order.
    """
    order, same, times, codes = _grouped(stream_hash, time, type_code)
    del order
    pair = codes[:-1] * n_types
    pair += codes[1:]
    gap = times[1:] - times[:-1]
    del codes, times
    pairs, gaps = _sorted_by_pair(pair, gap, same)
    del pair, gap, same
    # Runs of equal pairs: each run's gaps are sorted, so its median is the
    # middle one, or halfway between the middle two.
    starts = np.flatnonzero(pairs[1:] != pairs[:-1]) + 1
    starts = np.concatenate((np.zeros(min(1, len(pairs)), np.int64), starts))
    counts = np.diff(np.append(starts, len(pairs)))
    present = pairs[starts]
    sums = np.add.reduceat(gaps, starts, dtype=np.float64) if len(starts) else np.zeros(0)
    low = gaps[starts + (counts - 1) // 2]
    high = gaps[starts + counts // 2]
    return FollowStats(
        source=present // n_types,
        target=present % n_types,
        count=counts,
        mean_gap=sums / counts,
        median_gap=(low + high) / 2,
    )


def _sorted_by_pair(
    pair: np.ndarray, gap: np.ndarray, keep: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The kept ``pair`` and ``gap`` values (non-negative int64) sorted by pair, then gap.

    One plain sort of the two packed in a word when they fit, as in
    ``_grouped``: it leaves each pair's gaps together and in order, which
    gives counts, sums and medians in one pass. They are packed before the
    rows not kept are dropped, so that is done once, not per column.
    """
    gap_bits = max(1, int(np.max(gap, where=keep, initial=0)).bit_length())
    pair_bits = max(1, int(np.max(pair, initial=0)).bit_length())
    if gap_bits + pair_bits > 63:
        pair, gap = pair[keep], gap[keep]
        order = np.lexsort((gap, pair))
        return pair[order], gap[order]
    pair <<= gap_bits
    pair |= gap  # rows not kept may get nonsense here; they are dropped next
    packed = pair[keep]
    packed.sort()
    pairs = packed >> gap_bits
    packed &= (1 << gap_bits) - 1
    return pairs, packed

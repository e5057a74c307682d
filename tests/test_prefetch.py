"""prefetched(): the same items in order, producer errors re-raised, early close stops it."""

from __future__ import annotations

import threading
import time

import pytest

from eventlab.prefetch import prefetched


def test_items_arrive_in_order():
    assert list(prefetched(iter(range(1000)), depth=3)) == list(range(1000))
    assert list(prefetched([])) == []


def test_an_error_while_producing_is_raised_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise ValueError("bad batch")

    seen = []
    with pytest.raises(ValueError, match="bad batch"):
        for item in prefetched(items()):
            seen.append(item)
    assert seen == [1, 2]


def test_closing_early_stops_the_producer_thread():
    produced = []

    def items():
        for n in range(10_000):
            produced.append(n)
            yield n

    before = threading.active_count()
    iterator = prefetched(items(), depth=2)
    assert next(iterator) == 0
    iterator.close()  # what a for loop does when its body raises
    assert threading.active_count() == before
    count = len(produced)
    time.sleep(0.1)
    assert len(produced) == count <= 4  # the item handed out, plus at most depth + 1 ahead

"""An in-process cache of aggregates, so a command need not replay its streams.

A product's stream grows by one event per order line that reserves it:
replaying it from the store for every order would cost more than the rest of
the command. :class:`Repository` keeps the aggregates it handed out and gives
the same object back as long as it matches the store, i.e. its version equals
the stream's version in the store. A handler that failed after emitting (its
events were rolled back, or never saved) leaves an aggregate ahead of the
store: it is then replayed afresh. Saving still checks the version
(``expected_version``), so a stale aggregate could never overwrite news with a
:class:`~eventlab.ConcurrencyError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from ..aggregate import Aggregate

if TYPE_CHECKING:
    from ..store import EventStore

A = TypeVar("A", bound=Aggregate)


class Repository:
    """Loads aggregates from a store, keeping up to ``capacity`` of them in memory.

    Parameters
    ----------
    store : EventStore
        Where the streams are.
    capacity : int
        How many aggregates to keep; the least recently used go first (orders
        are busy for a few days, products for ever).

    Examples
    --------
    >>> import eventlab as el
    >>> from eventlab.shop import Order, Repository
    >>> store = el.EventStore(clock=el.SimulatedClock("2024-03-04"))
    >>> orders = Repository(store)
    >>> order = orders.get(Order, "order-000001")
    >>> order.place("000001", "c-0001", [("MUG-001", 1, 1250)])
    >>> _ = order.save(store)
    >>> orders.get(Order, "order-000001") is order
    True
    """

    def __init__(self, store: EventStore, *, capacity: int = 50_000):
        self.store = store
        self.capacity = capacity
        self._cache: dict[str, Aggregate] = {}
        self.hits = self.loads = 0

    def get(self, cls: type[A], stream_id: str) -> A:
        """The aggregate of ``stream_id`` as the store has it now (blank if the stream is new)."""
        cache = self._cache
        version = self.store.version(stream_id)
        cached = cache.pop(stream_id, None)  # re-inserted below: most recently used last
        if (
            cached is not None
            and type(cached) is cls
            and cached._loaded_version == version
            and not cached._pending
        ):
            self.hits += 1
            cache[stream_id] = cached
            return cached
        if version == 0:
            aggregate = cls(stream_id)  # a new stream: nothing to read
        else:
            self.loads += 1
            aggregate = cls.load(self.store, stream_id)
        cache[stream_id] = aggregate
        if len(cache) > self.capacity:
            del cache[next(iter(cache))]
        return aggregate

    def clear(self) -> None:
        """Forget every cached aggregate."""
        self._cache.clear()

    def __len__(self) -> int:
        return len(self._cache)

    def __repr__(self) -> str:
        return f"Repository({len(self._cache)} cached, {self.hits} hits, {self.loads} loads)"

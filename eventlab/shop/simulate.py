"""simulate(): days of shop orders driven through the real scheduler, deterministically.

The simulation plays the shop's customers and back office on a
:class:`~eventlab.SimulatedClock`. Everything it does is a command submitted to
a :class:`~eventlab.shop.Shop` (and so to an :class:`~eventlab.CommandScheduler`
and :class:`~eventlab.CommandExecutor`); everything the shop does is an event.

- The catalogue (:data:`CATALOGUE`, 40 products) is created at the start, each
  product stocked for 1.8 days of its average demand; every morning at
  06:00 the buyer restocks what runs low, though a supplier misses a delivery
  now and then, so popular products run out (an order that wants more than
  is left is rejected at ``SubmitOrder``, and its customer cancels it).
- Orders arrive over ``days`` days, more by day than by night, fewer at the
  weekend. A customer places an order with one to four lines, sometimes adds an
  item, and submits it minutes later; a few abandon their cart (the shop
  cancels it a day later) or cancel, before or after submitting (too late once
  the order has left the warehouse).
- Billing charges each submitted order through a payment gateway that fails
  at ``failure_rate`` and has outages (10 to 45 minutes, on about
  ``5 * failure_rate`` of the days). The scheduler retries a failed payment
  with backoff (1, 2, 4, 8 s) and dead-letters it after 5 attempts; its
  circuit breaker for the gateway opens after 5 failures in a row and holds
  the payments in the queue (no attempt used) until a trial call after 60 s
  succeeds; so during an outage only the trial payments use up attempts. The
  gateway takes one call a second (bursts of 10), so after an outage the held
  payments go through at that pace. About 2% of cards are declined, and those
  orders are cancelled.
- The warehouse ships paid orders at its pick-ups (11:00 and 16:00 UTC). Now
  and then its system is slow (``failure_rate / 2`` of the calls take 45 s),
  longer than the scheduler's 30 s timeout: the shipment is undone and
  retried.

The same seed gives the same history, event ids included (see
:meth:`~eventlab.EventStore.seed_event_ids`): everything random is drawn from
generators seeded by ``seed``, and all waiting happens on the simulated clock.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..breaker import CircuitBreaker
from ..clock import SimulatedClock, from_micros, to_micros, to_utc
from ..commands import REJECTED, Command, CommandStore
from ..errors import EventlabError
from ..ratelimit import RateLimiter
from ..replay import paused_gc
from .aggregates import ORDER_STATUSES, order_stream, product_stream
from .app import Shop
from .failures import Faults

if TYPE_CHECKING:
    from ..executor import CommandOutcome
    from ..store import EventStore

#: The catalogue: (sku, name, price in cents).
CATALOGUE: tuple[tuple[str, str, int], ...] = (
    ("MUG-001", "Enamel mug", 1250),
    ("MUG-002", "Espresso cup set", 2400),
    ("MUG-003", "Travel mug", 1890),
    ("TEE-010", "Organic T-shirt", 1990),
    ("TEE-011", "Long-sleeve shirt", 2990),
    ("TEE-012", "Hoodie", 4990),
    ("BAG-020", "Canvas tote bag", 995),
    ("BAG-021", "Laptop sleeve", 3450),
    ("BAG-022", "Backpack", 6900),
    ("BOK-030", "Event Sourcing pocket guide", 1499),
    ("BOK-031", "Designing Data Systems", 4200),
    ("BOK-032", "CQRS by example", 3290),
    ("BOK-033", "Sagas in practice", 2890),
    ("STK-040", "Sticker pack", 350),
    ("STK-041", "Laptop sticker", 250),
    ("NTB-050", "Dot-grid notebook", 725),
    ("NTB-051", "Hardcover journal", 1650),
    ("NTB-052", "Sticky notes", 399),
    ("PEN-060", "Fountain pen", 3400),
    ("PEN-061", "Gel pen set", 899),
    ("PEN-062", "Pencil tin", 650),
    ("CAP-070", "Baseball cap", 1750),
    ("CAP-071", "Beanie", 1590),
    ("SOC-080", "Striped socks", 890),
    ("SOC-081", "Wool socks", 1490),
    ("PST-090", "Event storming poster", 1200),
    ("PST-091", "Architecture poster", 1400),
    ("USB-100", "USB-C cable", 1290),
    ("USB-101", "USB stick 64 GB", 1590),
    ("DSK-110", "Desk mat", 2290),
    ("DSK-111", "Monitor stand", 4590),
    ("DSK-112", "Cable organiser", 790),
    ("LMP-120", "Desk lamp", 3990),
    ("BTL-130", "Water bottle", 1990),
    ("BTL-131", "Insulated flask", 2790),
    ("KEY-140", "Mechanical keyboard", 8900),
    ("KEY-141", "Keycap set", 2990),
    ("MSE-150", "Wireless mouse", 2490),
    ("PLN-160", "Desk plant", 1590),
    ("GFT-170", "Gift card", 2500),
)

ORDERS_PER_DAY = 500  # when days is not given
_LINES = ((1, 2, 3, 4), (45, 30, 17, 8))  # lines per order, weights
_QUANTITIES = ((1, 2, 3, 5), (70, 20, 7, 3))
_CHANNELS = ("web", "web", "web", "app", "app", "phone")
_METHODS = ("card", "card", "card", "paypal", "paypal", "invoice")
# Orders per hour of the day (UTC): quiet nights, busy late mornings and evenings.
_HOURS = (1, 0.5, 0.3, 0.3, 0.3, 0.5, 1, 2, 4, 6, 8, 9, 9, 8, 7, 7, 7, 7, 8, 9, 9, 7, 4, 2)
_WEEKEND = 0.7  # a Saturday or Sunday has this share of a weekday's orders
_ADD_ITEM = 0.25  # share of orders that get one more item before submitting
_ABANDON = 0.03  # carts never submitted (the shop cancels them after a day)
_CANCEL_EARLY = 0.02  # cancelled by the customer before submitting
_CANCEL_LATE = 0.06  # cancelled by the customer after submitting (refused once shipped)
_DECLINE_RATE = 0.02
_SUPPLIER_MISS = 0.12  # a product's morning restock does not come
_COVER_DAYS = 1.8  # stock kept for this many days of a product's average demand
_RESTOCK_HOUR = 6
_PICKUP_HOURS = (11, 16)
_TIMEOUT = timedelta(seconds=30)
_SLOW_CALL = 45.0  # seconds: longer than the timeout
_US = 1_000_000
_DAY_US = 86_400 * _US


def simulate(
    store: EventStore,
    *,
    orders: int = 2000,
    seed: int | str = 0,
    failure_rate: float = 0.05,
    start: datetime | str | None = None,
    days: int | None = None,
    batch_size: int = 1,
    progress: bool = False,
) -> dict[str, Any]:
    """Generate a shop history by running days of orders through the real command side.

    Parameters
    ----------
    store : EventStore
        An empty, writable store on a :class:`~eventlab.SimulatedClock` (the
        simulation moves its clock through the days; a system clock would make
        it wait for real, so it is refused). A clock ``step`` of 0 keeps
        ``recorded_at`` on the simulated business time; the default 1 s step
        adds a second per event, which is fine as long as the shop is not busy.
    orders : int
        How many orders the customers place.
    seed : int or str
        Seeds everything random: the same seed on the same kind of store gives
        the same events, ids and timestamps included.
    failure_rate : float
        Probability that a call to the payment gateway fails; also sets how
        often it has an outage and how often the warehouse is too slow. 0 gives
        a history without technical failures (declines and stock-outs remain:
        they are business, not faults).
    start : datetime or str, optional
        When the history begins (UTC); the store's clock is moved there.
        Defaults to the clock's current time.
    days : int, optional
        Over how many days the orders arrive; defaults to one day per 500
        orders (at least 3). The warehouse works one more day to ship the last
        orders.
    batch_size : int
        The scheduler's group commit (see :class:`~eventlab.CommandScheduler`).
    progress : bool
        Show a progress bar (tqdm) of orders placed.

    Returns
    -------
    dict
        ``orders``, ``days``, ``seed``, ``start`` and ``end`` (the clock at the
        end), ``commands`` (status -> count), ``events`` (type -> count, most
        frequent first), ``order_states`` (final status -> count of orders),
        ``faults`` (calls, failures, outage refusals and slow calls of each
        participant, and how often the payments breaker opened) and
        ``seconds`` (wall time).

    Raises
    ------
    EventlabError
        Bad arguments, a store that is not empty or not on a simulated clock,
        a ``start`` the clock has passed, or a reaction that failed.

    Examples
    --------
    >>> import eventlab as el
    >>> store = el.EventStore(clock=el.SimulatedClock("2024-03-04", step=timedelta(0)))
    >>> summary = el.shop.simulate(store, orders=30, seed=3)
    >>> summary["order_states"]["shipped"] > 20
    True
    """
    _check_arguments(orders, seed, failure_rate, days, batch_size)
    clock = store.clock
    if not isinstance(clock, SimulatedClock):
        raise EventlabError(
            f"simulate() moves time through days of orders, so it needs a store on a "
            f"simulated clock, not {clock!r}; create it with e.g. "
            f"el.EventStore(path, clock=el.SimulatedClock('2024-03-04', step=timedelta(0)))"
        )
    store._check_writable()
    if store.head:
        raise EventlabError(
            f"simulate() writes a whole shop history and needs an empty store; this one "
            f"holds {store.head} events. Use a new store (el.EventStore() or a new file)"
        )
    if CommandStore(store).counts():
        raise EventlabError(
            "simulate() needs a store without commands; this one has commands in its "
            "command store already. Use a new store"
        )
    if start is not None:
        start = to_utc(start)
        if clock.current > start:
            raise EventlabError(
                f"the store's clock is at {clock.current.isoformat()}, after start "
                f"{start.isoformat()}, and a clock only moves forward; give a later start "
                f"or a store whose clock starts earlier"
            )
        clock.advance(start - clock.current)
    start = clock.current
    if days is None:
        days = max(3, math.ceil(orders / ORDERS_PER_DAY))
    began = time.perf_counter()
    store.seed_event_ids(seed)
    run = _Simulation(store, orders, seed, failure_rate, days, batch_size)
    # Days of commands build a heap of long-lived rows (the command log, cached
    # aggregates, pending events) that the cyclic collector kept re-walking: a
    # tenth of the time, to free almost nothing. Reference counting frees the rest.
    with paused_gc():
        run.play(progress)
    failures = store.bus.failures()
    if len(failures):
        raise EventlabError(
            f"a reaction failed during the simulation:\n{failures['traceback'].iloc[0]}"
        )
    return run.summary(start, time.perf_counter() - began)


def _check_arguments(
    orders: object, seed: object, failure_rate: object, days: object, batch_size: object
) -> None:
    if isinstance(orders, bool) or not isinstance(orders, int) or orders < 1:
        raise EventlabError(f"orders must be a whole number of 1 or more, got {orders!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | str):
        raise EventlabError(f"seed must be an int or a str, got {seed!r}")
    if (
        isinstance(failure_rate, bool)
        or not isinstance(failure_rate, int | float)
        or not 0 <= failure_rate <= 1
    ):
        raise EventlabError(f"failure_rate must be from 0 to 1, e.g. 0.05, got {failure_rate!r}")
    if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days < 1):
        raise EventlabError(f"days must be a whole number of 1 or more, got {days!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise EventlabError(f"batch_size must be a whole number of 1 or more, got {batch_size!r}")


class _Simulation:
    """One run: the shop, the customers' plans and the agenda of what happens when."""

    def __init__(
        self,
        store: EventStore,
        orders: int,
        seed: int | str,
        failure_rate: float,
        days: int,
        batch_size: int,
    ):
        self.store = store
        self.clock: SimulatedClock = store.clock
        self.orders = orders
        self.seed = seed
        self.days = days
        self.rng = random.Random(f"{seed}:simulate")
        self.start_us = to_micros(self.clock.current)
        midnight = self.clock.current.replace(hour=0, minute=0, second=0, microsecond=0)
        self.midnight_us = to_micros(midnight)
        self.width = max(6, len(str(orders)))
        self.agenda: list[tuple[int, int, str, Any]] = []  # (when, seq, what, details)
        self.seq = 0

        self.payments = Faults(
            "payments",
            failure_rate=failure_rate,
            latency=0.3,
            outages=self._outages(failure_rate),
            seed=seed,
        )
        self.warehouse = Faults(
            "warehouse", latency=0.2, slow_rate=failure_rate / 2, slow_latency=_SLOW_CALL, seed=seed
        )
        self.breaker = CircuitBreaker(
            failure_threshold=5, cool_down=timedelta(seconds=60), clock=self.clock, name="payments"
        )
        limiter = RateLimiter(1, 10, self.clock, name="payments-quota")
        self.shop = Shop(
            store,
            payments=self.payments,
            warehouse=self.warehouse,
            breaker=self.breaker,
            limiter=limiter,
            decline_rate=_DECLINE_RATE,
            pickups=True,
            seed=seed,
            timeout=_TIMEOUT,
            batch_size=batch_size,
        )
        self.shop.executor.subscribe(self._on_outcome)
        self.submits: dict[str, str] = {}  # SubmitOrder command id -> order id
        self.customers = max(50, orders // 4)
        skus = [sku for sku, _, _ in CATALOGUE]
        self.rng.shuffle(skus)  # which products sell best depends on the seed
        self.skus = skus
        self.popularity = [1 / (rank + 1) ** 0.9 for rank in range(len(skus))]
        self.cumulative = list(itertools.accumulate(self.popularity))
        share = sum(self.popularity)
        lines, weights = _LINES
        mean_lines = sum(n * w for n, w in zip(lines, weights, strict=True)) / sum(weights)
        quantities, weights = _QUANTITIES
        mean_quantity = sum(q * w for q, w in zip(quantities, weights, strict=True)) / sum(weights)
        units_per_order = mean_lines * mean_quantity + _ADD_ITEM
        per_day = orders / days
        self.target = {
            sku: math.ceil(per_day * units_per_order * weight / share * _COVER_DAYS) + 3
            for sku, weight in zip(skus, self.popularity, strict=True)
        }

    # ------------------------------------------------------------------ planning

    def _outages(self, failure_rate: float) -> list[tuple[datetime, datetime]]:
        """Payment gateway outages: on some days, 10 to 45 minutes in business hours."""
        rng = random.Random(f"{self.seed}:outages")
        windows = []
        for day in range(self.days + 1):
            if rng.random() < min(1.0, failure_rate * 5):
                begin = self.midnight_us + day * _DAY_US + rng.randrange(8 * 3600, 20 * 3600) * _US
                length = rng.randrange(10 * 60, 45 * 60) * _US
                windows.append((from_micros(begin), from_micros(begin + length)))
        return windows

    def _arrivals(self) -> list[int]:
        """When each order is placed (epoch microseconds), sorted."""
        rng = self.rng
        weekday = self.clock.current.weekday()
        day_weights = [_WEEKEND if (weekday + day) % 7 >= 5 else 1.0 for day in range(self.days)]
        days = rng.choices(range(self.days), weights=day_weights, k=self.orders)
        hours = rng.choices(range(24), weights=_HOURS, k=self.orders)
        arrivals = []
        for day, hour in zip(days, hours, strict=True):
            when = self.midnight_us + day * _DAY_US + hour * 3600 * _US
            when += rng.randrange(3600) * _US
            while when < self.start_us:  # before the history starts (on its first day)
                when = self.start_us + rng.randrange(_DAY_US - self.start_us % _DAY_US)
                when -= when % _US
            arrivals.append(when)
        arrivals.sort()
        return arrivals

    def _plan(self, when: int, what: str, details: Any = None) -> None:
        self.seq += 1
        heapq.heappush(self.agenda, (when, self.seq, what, details))

    # ------------------------------------------------------------------ playing

    def play(self, progress: bool) -> None:
        """Create the catalogue, then play the agenda in time order; run the shop as time moves."""
        from tqdm.auto import tqdm

        for sku, name, price in CATALOGUE:
            self._submit(
                "CreateProduct",
                f"CreateProduct:{sku}",
                {"sku": sku, "name": name, "price_cents": price, "stock": self.target[sku]},
                product_stream(sku),
            )
        for day in range(self.days + 1):
            base = self.midnight_us + day * _DAY_US
            if day:
                self._plan(base + _RESTOCK_HOUR * 3600 * _US, "restock", day)
            for hour in _PICKUP_HOURS:
                if base + hour * 3600 * _US >= self.start_us:
                    self._plan(base + hour * 3600 * _US, "pickup")
        arrivals = self._arrivals()
        number, agenda = 0, self.agenda
        bar = tqdm(total=self.orders, unit="order", disable=not progress, desc="simulate")
        try:
            while number < len(arrivals) or agenda:
                if agenda and (number == len(arrivals) or agenda[0][0] <= arrivals[number]):
                    when, _, what, details = heapq.heappop(agenda)
                else:
                    when, what, details = arrivals[number], "place", number + 1
                    number += 1
                self._move_to(when)
                getattr(self, f"_{what}")(details)
                if what == "place":
                    bar.update()
            self.shop.run()
        finally:
            bar.close()

    def _move_to(self, when: int) -> None:
        """Run what is due until ``when`` (moving the clock to each retry or hold), then
        move the clock to ``when``."""
        clock, scheduler = self.clock, self.shop.scheduler
        while when > (now := clock.peek_micros()):
            scheduler.run(until_idle=False)
            # Not run(until_idle=True): it would move the clock past the customers'
            # next actions while, say, an open breaker holds the payments.
            due = scheduler.log.next_due()
            now = clock.peek_micros()
            if due is None or due >= when or due <= now:
                break
            clock.advance(timedelta(microseconds=due - now))
        if when > now:
            clock.advance(timedelta(microseconds=when - now))

    def _submit(
        self, kind: str, command_id: str, payload: dict[str, Any], correlation_id: str
    ) -> str:
        return self.shop.submit(
            Command(kind, payload, command_id=command_id, correlation_id=correlation_id)
        )

    def _on_outcome(self, outcome: CommandOutcome) -> None:
        """A customer told that their order is out of stock cancels it."""
        if outcome.status == REJECTED and outcome.command_id in self.submits:
            if (outcome.error or "").startswith("out of stock"):
                order_id = self.submits[outcome.command_id]
                self._plan(self.clock.peek_micros(), "cancel", (order_id, "out of stock"))

    # ------------------------------------------------------------------ what happens

    def _place(self, number: int) -> None:
        rng = self.rng
        order_id = f"{number:0{self.width}d}"
        stream = order_stream(order_id)
        count = rng.choices(*_LINES)[0]
        skus = self._pick(count)
        items = [[sku, rng.choices(*_QUANTITIES)[0]] for sku in skus]
        payload = {
            "order_id": order_id,
            "customer_id": f"c-{rng.randint(1, self.customers):05d}",
            "channel": rng.choice(_CHANNELS),
            "payment_method": rng.choice(_METHODS),
            "items": items,
        }
        self._submit("PlaceOrder", f"PlaceOrder:{order_id}", payload, stream)
        now = self.clock.peek_micros()
        at = now
        if rng.random() < _ADD_ITEM:
            at += rng.randrange(60, 600) * _US
            extra = self._pick(1, avoid=set(skus))
            if extra:
                self._plan(at, "add", (order_id, extra[0]))
        fate = rng.random()
        if fate < _ABANDON:
            self._plan(now + _DAY_US, "cancel", (order_id, "abandoned cart"))
        elif fate < _ABANDON + _CANCEL_EARLY:
            self._plan(at + rng.randrange(120, 900) * _US, "cancel", (order_id, "customer request"))
        else:
            submit_at = at + rng.randrange(120, 1200) * _US
            self._plan(submit_at, "submit_order", order_id)
            if rng.random() < _CANCEL_LATE:
                later = submit_at + rng.randrange(300, 36 * 3600) * _US
                self._plan(later, "cancel", (order_id, "customer request"))

    def _pick(self, count: int, avoid: set[str] | None = None) -> list[str]:
        """``count`` distinct skus, popular ones more often."""
        picked: list[str] = []
        avoid = avoid or set()
        for _ in range(count * 10):  # bounded: popular skus repeat
            sku = self.rng.choices(self.skus, cum_weights=self.cumulative)[0]
            if sku not in avoid and sku not in picked:
                picked.append(sku)
                if len(picked) == count:
                    break
        return picked

    def _add(self, details: tuple[str, str]) -> None:
        order_id, sku = details
        payload = {"order_id": order_id, "sku": sku, "quantity": 1}
        self._submit("AddItem", f"AddItem:{order_id}", payload, order_stream(order_id))

    def _submit_order(self, order_id: str) -> None:
        command_id = f"SubmitOrder:{order_id}"
        self.submits[command_id] = order_id
        self._submit("SubmitOrder", command_id, {"order_id": order_id}, order_stream(order_id))

    def _cancel(self, details: tuple[str, str]) -> None:
        order_id, reason = details
        suffix = ":out-of-stock" if reason == "out of stock" else ""
        payload = {"order_id": order_id, "reason": reason}
        self._submit(
            "CancelOrder", f"CancelOrder:{order_id}{suffix}", payload, order_stream(order_id)
        )

    def _restock(self, day: int) -> None:
        date = from_micros(self.midnight_us + day * _DAY_US).date().isoformat()
        for sku in self.skus:
            if self.rng.random() < _SUPPLIER_MISS:
                continue
            missing = self.target[sku] - self.shop.product(sku).stock
            if missing > 0:
                self._submit(
                    "Restock",
                    f"Restock:{sku}:{date}",
                    {"sku": sku, "quantity": missing},
                    product_stream(sku),
                )

    def _pickup(self, _: Any) -> None:
        self.shop.dispatch()

    # ------------------------------------------------------------------ summary

    def summary(self, start: datetime, seconds: float) -> dict[str, Any]:
        store = self.store
        events = store.sql(
            "SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY n DESC, type"
        )
        return {
            "orders": self.orders,
            "days": self.days,
            "seed": self.seed,
            "start": start,
            "end": self.clock.current,
            "commands": self.shop.commands.counts(),
            "events": dict(zip(events["type"], map(int, events["n"]), strict=True)),
            "order_states": order_states(store),
            "faults": {
                "payments": dict(self.payments.stats),
                "warehouse": dict(self.warehouse.stats),
                "breaker_opened": int((self.breaker.events()["kind"] == "CircuitOpened").sum()),
            },
            "seconds": round(seconds, 3),
        }


# The event types that set an order's status, and the status each sets.
_STATUS_OF = {
    "OrderPlaced": "placed",
    "OrderSubmitted": "submitted",
    "OrderPaid": "paid",
    "OrderShipped": "shipped",
    "OrderCancelled": "cancelled",
}


def order_states(store: EventStore) -> dict[str, int]:
    """How many orders are in each status (their last status-setting event), in SQL.

    Examples
    --------
    >>> import eventlab as el
    >>> store = el.EventStore()
    >>> _ = store.append("order-1", [el.Event("OrderPlaced", {}), el.Event("OrderSubmitted", {})])
    >>> order_states(store)
    {'submitted': 1}
    """
    frame = store.sql(
        "SELECT arg_max(type, version) AS last FROM events "
        "WHERE stream_id LIKE 'order-%' AND list_contains($1, type) GROUP BY stream_id",
        [list(_STATUS_OF)],
    )
    counts = frame["last"].map(_STATUS_OF).value_counts()
    return {status: int(counts[status]) for status in ORDER_STATUSES if status in counts}


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The summary of :func:`simulate` in words, one line per fact (for the CLI and demo).

    Examples
    --------
    >>> import eventlab as el
    >>> store = el.EventStore(clock=el.SimulatedClock("2024-03-04", step=timedelta(0)))
    >>> print(summary_lines(el.shop.simulate(store, orders=10, seed=2))[1])
    Commands by status:
    """
    start, end = summary["start"], summary["end"]
    states = ", ".join(f"{state} {n:,}" for state, n in summary["order_states"].items())
    lines = [
        f"Simulated {summary['orders']:,} orders over {summary['days']} "
        f"day{'s' if summary['days'] != 1 else ''} (seed "
        f"{summary['seed']}): {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC on the "
        f"simulated clock, in {summary['seconds']:.1f} s.",
        "Commands by status:",
    ]
    width = max(map(len, [*summary["commands"], *summary["events"]]))
    for status, count in sorted(summary["commands"].items(), key=lambda item: -item[1]):
        lines.append(f"  {status:<{width}}  {count:>10,}")
    lines.append("Events by type:")
    for kind, count in summary["events"].items():
        lines.append(f"  {kind:<{width}}  {count:>10,}")
    lines.append(f"Orders by final state: {states}.")
    payments, warehouse = summary["faults"]["payments"], summary["faults"]["warehouse"]
    lines.append(
        f"Injected faults: the payment gateway failed {payments['failed']:,} and refused "
        f"{payments['down']:,} of {payments['calls']:,} calls (outages; its breaker opened "
        f"{summary['faults']['breaker_opened']:,} times); the warehouse was too slow "
        f"{warehouse['slow']:,} times in {warehouse['calls']:,} calls."
    )
    return lines

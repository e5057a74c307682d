"""The shop wired on one store: one executor, one scheduler, four services and their reactions."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from ..bus import EventBus
from ..commands import Command, CommandStore
from ..executor import CommandExecutor
from ..resilience import RetryPolicy
from ..scheduler import CommandScheduler
from .failures import Faults
from .repository import Repository
from .services import BillingService, OrderService, ProductService, ShippingService

if TYPE_CHECKING:
    from ..breaker import CircuitBreaker
    from ..ratelimit import RateLimiter
    from ..store import EventStore


class Shop:
    """The course's shop: every service's handlers on one executor, fed by one scheduler.

    Commands go in with :meth:`submit` and run with :meth:`run`. The billing,
    shipping, order and product services subscribe to the store's bus and
    submit their follow-up commands to the same scheduler, so one :meth:`run`
    carries an order from ``SubmitOrder`` to its payment (and, unless
    ``pickups``, its shipment).

    Parameters
    ----------
    store : EventStore
        A writable store; the shop subscribes to its :attr:`~EventStore.bus`
        (one shop per store: the subscriptions are named ``shop.<service>``).
    payments, warehouse : Faults, optional
        How the payment gateway and the warehouse misbehave (default: never).
    breaker : CircuitBreaker, optional
        Guards the payment gateway: the scheduler holds ``ChargePayment`` and
        ``RefundPayment`` commands while it is open (see its ``breakers=``).
    limiter : RateLimiter, optional
        The payment gateway's API quota: the scheduler runs a ``ChargePayment``
        or ``RefundPayment`` only with a token (see its ``limits=``).
    decline_rate : float
        Probability that the bank declines a charge.
    pickups : bool
        Ship at the warehouse's pick-ups (:meth:`dispatch`) instead of at once.
    seed : int or str
        Seeds the services' random choices (declines, carriers, tracking codes).
    timeout, max_attempts, backoff, batch_size
        Passed to the :class:`~eventlab.CommandScheduler`. The default backoff
        waits 1, 2, 4, 8 s between attempts (at most 60 s).

    Examples
    --------
    >>> import eventlab as el
    >>> store = el.EventStore(clock=el.SimulatedClock("2024-03-04T09:00"))
    >>> shop = el.shop.Shop(store)
    >>> _ = shop.submit(el.Command("CreateProduct",
    ...     {"sku": "MUG-001", "name": "Enamel mug", "price_cents": 1250, "stock": 5}))
    >>> _ = shop.submit(el.Command("PlaceOrder", {"order_id": "000001",
    ...     "customer_id": "c-0001", "items": [["MUG-001", 2]]}))
    >>> _ = shop.submit(el.Command("SubmitOrder", {"order_id": "000001"}))
    >>> shop.run()
    7
    >>> shop.order("000001").status
    'shipped'
    """

    def __init__(
        self,
        store: EventStore,
        *,
        payments: Faults | None = None,
        warehouse: Faults | None = None,
        breaker: CircuitBreaker | None = None,
        limiter: RateLimiter | None = None,
        decline_rate: float = 0.0,
        pickups: bool = False,
        seed: int | str = 0,
        timeout: timedelta | float = timedelta(seconds=30),
        max_attempts: int = 5,
        backoff: RetryPolicy | None = None,
        batch_size: int = 1,
    ):
        self.store = store
        self.repository = Repository(store)
        self.commands = CommandStore(store)
        self.executor = CommandExecutor(store, self.commands)
        self.scheduler = CommandScheduler(
            store,
            self.executor,
            timeout=timeout,
            max_attempts=max_attempts,
            backoff=backoff or RetryPolicy.exponential(1, max_delay=60, max_attempts=max_attempts),
            batch_size=batch_size,
            breakers={kind: breaker for kind in BillingService.handlers} if breaker else None,
            limits={kind: limiter for kind in BillingService.handlers} if limiter else None,
        )
        submit = self.scheduler.submit
        self.products = ProductService(self.repository, submit)
        self.orders = OrderService(self.repository, self.products, submit)
        self.billing = BillingService(
            self.repository,
            submit,
            gateway=payments,
            decline_rate=decline_rate,
            seed=seed,
        )
        self.shipping = ShippingService(
            self.repository,
            submit,
            warehouse=warehouse,
            pickups=pickups,
            seed=seed,
        )
        bus: EventBus = store.bus
        for service in self.services:
            service.register(self.executor)
            service.subscribe(bus)

    @property
    def services(self) -> tuple:
        """The four services, in the order they react to an event."""
        return (self.products, self.orders, self.billing, self.shipping)

    def submit(self, command: Command) -> str:
        """Queue a command (idempotent: the same id twice is queued once); returns its id."""
        return self.scheduler.submit(command)

    def run(self) -> int:
        """Run queued commands and the follow-ups they cause until none is left.

        Retries are waited for (on a simulated clock, by moving it); returns how
        many commands were taken.
        """
        return self.scheduler.run(until_idle=True)

    def dispatch(self) -> int:
        """A warehouse pick-up: queue a shipment for every paid order waiting for one."""
        return self.shipping.dispatch()

    def order(self, order_id: str):
        """The :class:`~eventlab.shop.Order` as the store has it now."""
        return self.orders._order(order_id)

    def product(self, sku: str):
        """The :class:`~eventlab.shop.Product` as the store has it now."""
        return self.products._product(sku)

    def __repr__(self) -> str:
        return f"Shop({self.store!r}, commands={self.commands.counts()})"

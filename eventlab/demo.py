"""A small generated shop history, and the headless demo that ``eventlab demo`` runs.

:func:`shop_history_frame` generates a reproducible history of web-shop orders as a
pandas DataFrame, ready for :meth:`EventStore.append_frame` or for
:func:`record_shop_history`. :func:`run_demo` walks through the event store's
basics with it: appending with optimistic concurrency, a transaction, a caught
:class:`~eventlab.ConcurrencyError`, a Parquet export and an exact round trip.

Nothing here prints; :func:`run_demo` returns the lines that the CLI prints.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from .clock import SimulatedClock
from .demo_read_side import show_read_side
from .errors import ConcurrencyError, EventlabError
from .events import Event
from .store import EventStore

SHOP_COLUMNS = ("stream_id", "type", "data", "occurred_at")
SHOP_EVENT_TYPES = (
    "OrderPlaced",
    "ItemAdded",
    "OrderPaid",
    "OrderShipped",
    "OrderCancelled",
)
SHOP_START = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)

# (sku, name, unit price in EUR)
_CATALOG = (
    ("MUG-001", "Enamel mug", 12.5),
    ("MUG-002", "Espresso cup set", 24.0),
    ("TEE-010", "Organic T-shirt", 19.9),
    ("TEE-011", "Long-sleeve shirt", 29.9),
    ("BAG-020", "Canvas tote bag", 9.95),
    ("BOK-030", "Event Sourcing pocket guide", 14.99),
    ("BOK-031", "Designing Data Systems", 42.0),
    ("STK-040", "Sticker pack", 3.5),
    ("NTB-050", "Dot-grid notebook", 7.25),
    ("PEN-060", "Fountain pen", 34.0),
    ("CAP-070", "Baseball cap", 17.5),
    ("SOC-080", "Striped socks", 8.9),
)
_CHANNELS = ("web", "web", "web", "app", "app", "phone")
_PAYMENT_METHODS = ("card", "card", "card", "paypal", "paypal", "invoice")
_CARRIERS = ("DHL", "UPS", "DPD", "PostNL")
_CANCEL_UNPAID = ("payment timeout", "customer request", "customer request")
_CANCEL_PAID = ("out of stock", "customer request", "address undeliverable")
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://eventlab.invalid/shop")


def shop_history_frame(
    orders: int = 200, seed: int = 7, *, event_ids: bool = False
) -> pd.DataFrame:
    """Generate a reproducible history of web-shop orders, one row per event.

    Each order is a stream ``order-NNNN``: ``OrderPlaced`` (customer, channel),
    one to four ``ItemAdded`` (sku, name, quantity, unit price), then usually
    ``OrderPaid`` (amount, method) and ``OrderShipped`` (carrier, tracking code),
    or an ``OrderCancelled`` (reason) before or after payment; a few orders are
    still open at the end. Orders arrive about every 25 minutes from
    2024-03-01 08:00 UTC.

    Parameters
    ----------
    orders : int
        How many orders (streams) to generate.
    seed : int
        Seed of the ``random.Random`` that draws everything: the same seed gives
        the same history.
    event_ids : bool
        Add an ``event_id`` column of ids derived from the seed, stream and
        version, so that appending the frame twice is detectably the same events.

    Returns
    -------
    pandas.DataFrame
        Columns ``stream_id``, ``type``, ``data`` (a dict) and ``occurred_at``
        (UTC business time), plus ``event_id`` when asked; rows in
        ``occurred_at`` order, so orders interleave as they would in a real shop.
        Within a stream, rows are in version order.

    Examples
    --------
    >>> frame = shop_history_frame(orders=3, seed=1)
    >>> list(frame.columns)
    ['stream_id', 'type', 'data', 'occurred_at']
    >>> frame.groupby("stream_id").size().tolist()
    [4, 3, 7]
    >>> import eventlab as el
    >>> store = el.EventStore()
    >>> store.append_frame(frame)
    14
    """
    if isinstance(orders, bool) or not isinstance(orders, int) or orders < 0:
        raise EventlabError(f"orders must be a non-negative int, got {orders!r}")
    rng = random.Random(seed)
    customers = max(10, orders // 3)  # so that customers come back
    rows: list[tuple[str, str, dict[str, Any], datetime, int]] = []
    placed = SHOP_START
    width = max(4, len(str(orders)))
    for number in range(1, orders + 1):
        placed += timedelta(seconds=round(rng.expovariate(1 / (25 * 60))))
        stream_id = f"order-{number:0{width}d}"
        rows.extend(_one_order(rng, stream_id, placed, customers))
    frame = pd.DataFrame(rows, columns=["stream_id", "type", "data", "occurred_at", "version"])
    frame["occurred_at"] = pd.to_datetime(frame["occurred_at"], utc=True).astype(
        "datetime64[us, UTC]"
    )
    frame = frame.sort_values(["occurred_at", "stream_id", "version"], kind="stable")
    frame = frame.reset_index(drop=True)
    if event_ids:
        frame["event_id"] = [
            str(uuid.uuid5(_ID_NAMESPACE, f"{seed}/{stream}/{version}"))
            for stream, version in zip(frame["stream_id"], frame["version"], strict=True)
        ]
    return frame.drop(columns="version")


def _one_order(
    rng: random.Random, stream_id: str, placed: datetime, customers: int
) -> list[tuple[str, str, dict[str, Any], datetime, int]]:
    """The events of one order, as (stream_id, type, data, occurred_at, version)."""
    events: list[tuple[str, dict[str, Any], datetime]] = []
    at = placed
    events.append(
        (
            "OrderPlaced",
            {
                "customer_id": f"c-{rng.randint(1, customers):04d}",
                "channel": rng.choice(_CHANNELS),
                "currency": "EUR",
            },
            at,
        )
    )
    total = 0.0
    lines = rng.choices((1, 2, 3, 4), weights=(45, 30, 17, 8))[0]
    for sku, name, price in rng.sample(_CATALOG, lines):
        quantity = rng.choices((1, 2, 3, 5), weights=(70, 20, 7, 3))[0]
        total += quantity * price
        at += timedelta(seconds=rng.randint(10, 180))
        events.append(
            (
                "ItemAdded",
                {"sku": sku, "name": name, "quantity": quantity, "unit_price": price},
                at,
            )
        )
    outcome = rng.random()
    if outcome < 0.86:
        at += timedelta(seconds=rng.randint(30, 1800))
        events.append(
            (
                "OrderPaid",
                {"amount": round(total, 2), "method": rng.choice(_PAYMENT_METHODS)},
                at,
            )
        )
        at += timedelta(minutes=rng.randint(90, 2880))
        if outcome < 0.78:
            tracking = "".join(rng.choices("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", k=12))
            events.append(
                ("OrderShipped", {"carrier": rng.choice(_CARRIERS), "tracking_code": tracking}, at)
            )
        else:
            events.append(
                (
                    "OrderCancelled",
                    {"reason": rng.choice(_CANCEL_PAID), "refund": round(total, 2)},
                    at,
                )
            )
    elif outcome < 0.96:
        at += timedelta(minutes=rng.randint(15, 720))
        events.append(("OrderCancelled", {"reason": rng.choice(_CANCEL_UNPAID), "refund": 0.0}, at))
    # else: still open, waiting for payment
    return [
        (stream_id, kind, data, when, version)
        for version, (kind, data, when) in enumerate(events, start=1)
    ]


def record_shop_history(store: EventStore, frame: pd.DataFrame) -> int:
    """Append a shop history to ``store`` the way the shop would, one command at a time.

    Each order is recorded in one or two appends, replayed in time order:

    - the checkout (``OrderPlaced``, its ``ItemAdded`` events and ``OrderPaid``)
      with ``expected_version=0``: the order must be a new stream;
    - later, its ``OrderShipped`` or ``OrderCancelled`` with ``expected_version``
      set to the order's version after checkout.

    When the store runs on a :class:`~eventlab.SimulatedClock`, the clock is moved
    forward to each command's last ``occurred_at`` first, so knowledge time
    (``recorded_at``) follows business time. Call it inside
    ``with store.transaction():`` to commit everything at once.

    Parameters
    ----------
    store : EventStore
        A writable store.
    frame : pandas.DataFrame
        Rows as made by :func:`shop_history_frame` (``event_id`` is optional).

    Returns
    -------
    int
        The number of events appended.

    Raises
    ------
    ConcurrencyError
        An order's stream already exists in the store.

    Examples
    --------
    >>> import eventlab as el
    >>> store = el.EventStore(clock=el.SimulatedClock())
    >>> record_shop_history(store, shop_history_frame(orders=3, seed=1))
    14
    """
    return sum(_append_command(store, command) for command in _shop_commands(frame))


_SETTLEMENTS = frozenset({"OrderShipped", "OrderCancelled"})


def _shop_commands(frame: pd.DataFrame) -> list[tuple[str, int, list[Event]]]:
    """Split a history into (stream_id, expected_version, events) commands, in time order."""
    has_ids = "event_id" in frame.columns
    timed = []
    for stream_id, rows in frame.groupby("stream_id", sort=False):
        ids = rows["event_id"].tolist() if has_ids else [None] * len(rows)
        events = [
            Event(kind, data, occurred_at=when.to_pydatetime(), event_id=event_id)
            for kind, data, when, event_id in zip(
                rows["type"], rows["data"], rows["occurred_at"], ids, strict=True
            )
        ]
        cut = len(events) - 1 if len(events) > 1 and events[-1].type in _SETTLEMENTS else None
        parts = [(0, events)] if cut is None else [(0, events[:cut]), (cut, events[cut:])]
        for expected, part in parts:
            timed.append((part[-1].occurred_at, str(stream_id), expected, part))
    timed.sort(key=lambda item: item[:3])
    return [(stream_id, expected, part) for _, stream_id, expected, part in timed]


def _append_command(store: EventStore, command: tuple[str, int, list[Event]]) -> int:
    stream_id, expected, events = command
    clock = store.clock
    when = events[-1].occurred_at
    if isinstance(clock, SimulatedClock) and clock.current < when:
        clock.advance(when - clock.current)
    return len(store.append(stream_id, events, expected_version=expected))


def _show_concurrency_error(
    store: EventStore, commands: list[tuple[str, int, list[Event]]]
) -> tuple[str, str]:
    """Append with a stale expected version, catch the ConcurrencyError, and describe it."""
    settled = [(stream, expected) for stream, expected, _ in commands if expected > 0]
    stream_id, stale = settled[0] if settled else (commands[0][0], 0)
    head = store.head
    try:
        store.append(
            stream_id,
            [Event("OrderCancelled", {"reason": "customer request", "refund": 0.0})],
            expected_version=stale,
        )
    except ConcurrencyError as error:
        if store.head != head:  # pragma: no cover - would be a bug in the store
            raise EventlabError("a rejected append changed the store's head") from error
        return str(error), (
            f"Optimistic concurrency: a clerk who loaded {stream_id} at version {stale} "
            f"tried to cancel it, but it had moved on; append(expected_version={stale}) "
            f"raised ConcurrencyError (expected {error.expected}, actual {error.actual}) "
            f"and wrote nothing (head still {store.head})."
        )
    raise EventlabError(  # pragma: no cover - would be a bug in the store
        f"appending to {stream_id} with the stale expected_version={stale} did not raise"
    )


def run_demo(
    directory: str | Path, *, orders: int = 200, seed: int = 7, simulated_orders: int = 300
) -> dict[str, Any]:
    """Build a store from a generated shop history, export it to Parquet and read it back.

    The steps: generate ``orders`` orders with :func:`shop_history_frame` and
    replay them as the shop's commands, in time order (see
    :func:`record_shop_history`): checkouts appended with ``expected_version=0``,
    shipments and cancellations with the order's version. The first half of the
    commands get one ``append`` (one commit) each; the second half share one
    ``store.transaction()``. Then an append with a stale expected version raises
    :class:`~eventlab.ConcurrencyError`, which is caught and shown to change
    nothing. Then projections build two read models and a query is answered
    twice, the second time from the cache. Finally the log is exported to
    Parquet partitioned by day, read back into an in-memory store with
    :meth:`EventStore.from_parquet`, and both stores' ``events()`` frames are
    compared. Last, :func:`eventlab.shop.simulate` runs ``simulated_orders``
    orders through the shop's command side into ``shop-simulation.duckdb``, and
    its commands by status and events by type are listed.

    Writes ``shop.duckdb`` and ``parquet/`` inside ``directory`` (created if
    needed), replacing those two from an earlier run; it touches nothing else.

    Parameters
    ----------
    directory : str or Path
        Where to put the store file and the Parquet export.
    orders : int
        How many orders to generate (at least 1).
    seed : int
        Seed of the generated history; the same seed gives the same store.
    simulated_orders : int
        Orders in the closing shop simulation (0 skips it).

    Returns
    -------
    dict
        ``orders``, ``events``, ``streams``, ``types`` (type -> count, most
        frequent first), ``commands``, ``per_command_appends``,
        ``batched_appends``, ``concurrency_error`` (the caught error's
        message), ``store_path``, ``parquet_dir``, ``parquet_files``,
        ``partitions``, ``restored_events``, ``round_trip_identical`` (bool),
        ``read_models``, ``order_statuses``, ``query_hits`` (the read-side
        step, see :func:`eventlab.demo_read_side.show_read_side`),
        ``simulation`` (the summary of :func:`eventlab.shop.simulate`, or None)
        and ``lines``: what was done, in words.

    Examples
    --------
    >>> import tempfile
    >>> summary = run_demo(tempfile.mkdtemp(), orders=20)
    >>> summary["round_trip_identical"], summary["streams"]
    (True, 20)
    """
    if isinstance(orders, bool) or not isinstance(orders, int) or orders < 1:
        raise EventlabError(f"the demo needs at least one order, got orders={orders!r}")
    if (
        isinstance(simulated_orders, bool)
        or not isinstance(simulated_orders, int)
        or simulated_orders < 0
    ):
        raise EventlabError(
            f"simulated_orders must be 0 (no simulation) or more, got {simulated_orders!r}"
        )
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise EventlabError(f"{directory} is a file; give the demo a directory to write into")
    directory.mkdir(parents=True, exist_ok=True)
    store_path = directory / "shop.duckdb"
    parquet_dir = directory / "parquet"
    simulation_path = directory / "shop-simulation.duckdb"
    for path in (store_path, simulation_path):
        for leftover in (
            path,
            path.with_name(path.name + ".wal"),
            path.with_name(path.name + ".journal"),
        ):
            leftover.unlink(missing_ok=True)

    lines: list[str] = []
    frame = shop_history_frame(orders, seed)
    kinds = set(frame["type"])
    lines.append(
        f"Generated a shop history (seed {seed}): {orders} orders, {len(frame)} events "
        f"of types {', '.join(t for t in SHOP_EVENT_TYPES if t in kinds)}."
    )
    commands = _shop_commands(frame)
    half = (len(commands) + 1) // 2
    one_by_one, batched = commands[:half], commands[half:]
    start = commands[0][2][-1].occurred_at
    clock = SimulatedClock(start, step=timedelta(seconds=1))

    with EventStore(store_path, clock=clock) as store:
        lines.append(
            f"Created the store {store_path} on a SimulatedClock starting "
            f"{start:%Y-%m-%d %H:%M} UTC."
        )
        count = sum(_append_command(store, command) for command in one_by_one)
        checkouts = sum(1 for _, expected, _ in one_by_one if expected == 0)
        lines.append(
            f"Recorded {len(one_by_one)} commands ({count} events) with one append each: "
            f"{checkouts} checkouts with expected_version=0 (a new order stream) and "
            f"{len(one_by_one) - checkouts} shipments/cancellations with expected_version "
            f"= the order's version after checkout."
        )
        with store.transaction():
            count = sum(_append_command(store, command) for command in batched)
        lines.append(
            f"Recorded the other {len(batched)} commands ({count} events) inside one "
            f"store.transaction(): a single atomic commit."
        )

        caught, line = _show_concurrency_error(store, commands)
        lines.append(line)

        original = store.events()
        types = original["type"].value_counts().to_dict()
        streams = int(original["stream_id"].nunique())
        lines.append(
            f"The store holds {len(original)} events in {streams} streams: "
            + ", ".join(f"{name} {n}" for name, n in types.items())
            + "."
        )
        read_lines, read_side = show_read_side(store)
        lines.extend(read_lines)
        store.export_parquet(parquet_dir, partition_by="day", overwrite=True)

    files = sorted(parquet_dir.rglob("*.parquet"))
    partitions = sorted({file.parent.name for file in files})
    lines.append(
        f"Exported to Parquet in {parquet_dir} partitioned by day: {len(files)} files in "
        f"{len(partitions)} partitions ({partitions[0]} .. {partitions[-1]})."
    )
    with EventStore.from_parquet(parquet_dir) as restored:
        copy = restored.events()
        restored_streams = len(restored.streams())
    lines.append(
        f"Read it back with EventStore.from_parquet: {len(copy)} events in "
        f"{restored_streams} streams."
    )
    identical = bool(original.equals(copy) and list(original.dtypes) == list(copy.dtypes))
    if identical:
        lines.append(
            f"Round trip identical: store.events() of both stores are equal in all "
            f"{len(original.columns)} columns ({', '.join(original.columns)})."
        )
    else:
        lines.append("Round trip NOT identical: the store read back from Parquet differs.")

    simulation = None
    if simulated_orders:
        from .shop import simulate, summary_lines

        clock = SimulatedClock(SHOP_START, step=timedelta(0))
        with EventStore(simulation_path, clock=clock) as shop_store:
            simulation = simulate(shop_store, orders=simulated_orders, seed=seed)
        lines.append(
            f"Ran the shop on its command side: every order through the scheduler, the "
            f"services' handlers and their reactions, into {simulation_path}."
        )
        lines.extend(summary_lines(simulation))

    return {
        "orders": orders,
        "events": len(original),
        "streams": streams,
        "types": {str(name): int(n) for name, n in types.items()},
        "commands": len(commands),
        "per_command_appends": len(one_by_one),
        "batched_appends": len(batched),
        "concurrency_error": caught,
        "store_path": str(store_path),
        "parquet_dir": str(parquet_dir),
        "parquet_files": len(files),
        "partitions": len(partitions),
        "restored_events": len(copy),
        "round_trip_identical": identical,
        **read_side,
        "simulation": simulation,
        "lines": lines,
    }

"""The results table: one row per metric, with its peer, ratio, target and verdict."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from benchmarks import machine, workload

if TYPE_CHECKING:
    from benchmarks.run import Bench, Config


@dataclass(frozen=True)
class Row:
    """One line of the table: our metric, its peer, and the target it must meet."""

    label: str
    unit: str
    metric: str
    target: str = "-"
    passes: Callable[[dict[str, float]], bool] | None = None
    peer: str | None = None
    ratio: str | None = None
    fmt: str = ",.0f"


ROWS = [
    Row(
        "append, one commit per order",
        "events/s",
        "append_per_command_eps",
        target=">= 1x peer",
        passes=lambda r: r["append_per_command_ratio"] >= 1.0,
        peer="peer_append_per_command_eps",
        ratio="append_per_command_ratio",
    ),
    Row(
        "append, 1000 orders per commit",
        "events/s",
        "append_batched_eps",
        target=">= 10x peer",
        passes=lambda r: r["append_batched_ratio"] >= 10.0,
        peer="peer_append_batched_eps",
        ratio="append_batched_ratio",
    ),
    Row(
        "append_many, 1000 orders per call",
        "events/s",
        "append_many_eps",
        target=">= 10x peer",
        passes=lambda r: r["append_many_ratio"] >= 10.0,
        peer="peer_append_batched_eps",
        ratio="append_many_ratio",
    ),
    Row(
        "append_frame",
        "events/s",
        "append_frame_eps",
        target=">= 1,000,000",
        passes=lambda r: r["append_frame_eps"] >= 1_000_000,
    ),
    Row(
        "read_all",
        "events/s",
        "read_all_eps",
        target=">= 1,000,000",
        passes=lambda r: r["read_all_eps"] >= 1_000_000,
    ),
    Row("read_all, reading each ev.data", "events/s", "read_all_decoded_eps"),
    Row(
        "read_all peak RSS",
        "MB",
        "read_all_peak_rss_mb",
        target="< 500",
        passes=lambda r: r["read_all_peak_rss_mb"] < 500,
    ),
    Row(
        "Python projection catch-up",
        "events/s",
        "projection_catch_up_eps",
        target=">= 300,000",
        passes=lambda r: r["projection_catch_up_eps"] >= 300_000,
    ),
    Row(
        "SQL projection rebuild (revenue/day)",
        "events/s",
        "sql_projection_rebuild_eps",
        target=">= 2,000,000",
        passes=lambda r: r["sql_projection_rebuild_eps"] >= 2_000_000,
    ),
    Row("SQL projection rebuild (per order)", "events/s", "sql_projection_per_order_rebuild_eps"),
    Row(
        "query, cached (p50)",
        "µs",
        "query_cached_us_p50",
        target="< 100",
        passes=lambda r: r["query_cached_us_p50"] < 100,
        fmt=",.1f",
    ),
    Row("query, uncached (p50)", "ms", "query_uncached_ms_p50", fmt=",.2f"),
    Row(
        "commands through scheduler + executor",
        "commands/s",
        "scheduler_commands_per_s",
        target=">= 10x peer",
        passes=lambda r: r["scheduler_commands_ratio"] >= 10.0,
        peer="peer_commands_per_s",
        ratio="scheduler_commands_ratio",
    ),
]


def saga_rows(config: Config) -> list[Row]:
    """The checkout sagas' row, labelled with this run's size."""
    return [
        Row(
            f"checkout sagas, {_short(config.saga_checkouts)}, 5% failures",
            "sagas/s",
            "sagas_per_s",
            target=">= 1,000",
            passes=lambda r: r["sagas_per_s"] >= 1_000,
        )
    ]


def _short(n: int) -> str:
    """A count as a compact label: 600000 -> 600k, 10000000 -> 10M."""
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= size and n % size == 0:
            return f"{n // size:,}{suffix}"
    return f"{n:,}"


def replay_rows(config: Config) -> list[Row]:
    """The replay and time-travel rows, labelled with this run's sizes."""
    c = config
    events = c.replay_orders * workload.EVENTS_PER_ORDER
    # The target is for 1M events; smaller stores get it scaled down in proportion.
    limit_s = 3.0 * c.all_streams_events / 1_000_000
    scaled = " scaled" if c.all_streams_events != 1_000_000 else ""
    return [
        Row(
            f"replay_all, {_short(c.replay_orders)} orders ({_short(events)} ev)",
            "events/s",
            "replay_eps",
            target=">= 20x peer",
            passes=lambda r: r["replay_ratio"] >= 20.0,
            peer="peer_replay_eps",
            ratio="replay_ratio",
        ),
        Row(
            f"Order.load 1 by 1 ({c.load_sample:,} of {_short(c.replay_orders)})",
            "events/s",
            "replay_one_by_one_eps",
            peer="peer_replay_eps",
            ratio="replay_one_by_one_ratio",
        ),
        Row(
            f"state_at every stream, {_short(c.all_streams_events)} ev",
            "s",
            "state_at_all_streams_s",
            target=f"< {limit_s:g} s{scaled}",
            passes=lambda r: r["state_at_all_streams_s"] < limit_s,
            fmt=",.2f",
        ),
        Row(
            f"state_at p50, {_short(c.state_at_events)} ev, 6-event streams, snapshots every 3",
            "ms",
            "state_at_ms_p50",
            target="< 10 ms",
            passes=lambda r: r["state_at_ms_p50"] < 10.0,
            fmt=",.1f",
        ),
        Row(
            f"state_at p95, {_short(c.state_at_events)} ev, 6-event streams, snapshots every 3",
            "ms",
            "state_at_ms_p95",
            fmt=",.1f",
        ),
    ]


def simulation_metric(orders: int) -> str:
    """The metric of a simulation of ``orders`` orders: ``simulate_100k_orders_s`` at full size."""
    return f"simulate_{_short(orders)}_orders_s"


def simulate_rows(config: Config) -> list[Row]:
    """The shop simulation's rows: end to end on a file store (the target) and in memory."""
    orders = config.simulate_orders
    metric = simulation_metric(orders)
    # The target is for 100k orders; fewer get it scaled down in proportion.
    limit_s = 60.0 * orders / 100_000
    scaled = " scaled" if orders != 100_000 else ""
    return [
        Row(
            f"shop.simulate, {_short(orders)} orders, file store",
            "s",
            metric,
            target=f"< {limit_s:g} s{scaled}",
            passes=lambda r: r[metric] < limit_s,
            fmt=",.1f",
        ),
        Row(
            f"shop.simulate, {_short(orders)} orders, in memory",
            "s",
            f"{metric}_memory",
            fmt=",.1f",
        ),
        Row("shop.simulate commands, file store", "commands/s", "simulate_commands_per_s"),
        Row("shop.simulate commands, in memory", "commands/s", "simulate_commands_per_s_memory"),
    ]


def analytics_rows(config: Config) -> list[Row]:
    """The import and analytics rows, labelled with this run's log and sizes."""
    c = config
    log = c.xes_log.split(".")[0]
    title = {"bpic2012": "BPI Challenge 2012"}.get(log, log)
    return [
        Row(
            f"import_xes, {title}",
            "events/s",
            "import_xes_eps",
            target=">=100k, 5x peer",
            passes=lambda r: r["import_xes_eps"] >= 100_000 and r["import_xes_ratio"] >= 5.0,
            peer="peer_import_xes_eps",
            ratio="import_xes_ratio",
        ),
        Row(
            f"slowest analysis, {title}",
            "s",
            f"analytics_{log}_max_s",
            target="< 1 s",
            passes=lambda r: r[f"analytics_{log}_max_s"] < 1.0,
            fmt=",.3f",
        ),
        Row(
            f"directly_follows, {_short(c.follows_events)} ev",
            "events/s",
            "directly_follows_eps",
            target=">=5M, 3x peer",
            passes=lambda r: (
                r["directly_follows_eps"] >= 5_000_000 and r["directly_follows_ratio"] >= 3.0
            ),
            peer="peer_directly_follows_eps",
            ratio="directly_follows_ratio",
        ),
    ]


def format_table(config: Config, bench: Bench, results: dict[str, float]) -> str:
    """The results table, with the machine it ran on in the header.

    Only rows whose metric this run measured appear (``--only`` runs some groups).
    """
    info = machine.describe()
    c = config
    lines = [
        f"eventlab benchmarks, {c.mode} mode: file stores, median of {c.repeat} run(s) each",
        f"machine:  {info['cpu']}, nproc {info['nproc']}, {info['memory']}, {info['os']}, "
        f"load average {info['load']} at the end",
        f"software: Python {info['python']}, duckdb {info['duckdb']}, pyarrow {info['pyarrow']}, "
        f"eventsourcing {info['eventsourcing']} (SQLite {info['sqlite']})",
        *_workload_lines(c, results),
        "",
    ]
    header = (
        f"{'metric':<40} {'unit':<9} {'eventlab':>12} {'peer':>10} {'ratio':>7} "
        f"{'spread':>7}  {'target':<15} result"
    )
    lines += [header, "-" * len(header)]
    for row in (
        ROWS
        + replay_rows(config)
        + simulate_rows(config)
        + saga_rows(config)
        + analytics_rows(config)
    ):
        if row.metric not in results:
            continue
        value = results[row.metric]
        peer_value = f"{results[row.peer]:,.0f}" if row.peer else "-"
        ratio = f"{results[row.ratio]:.2f}x" if row.ratio else "-"
        verdict = "-" if row.passes is None else "PASS" if row.passes(results) else "FAIL"
        lines.append(
            f"{row.label:<40} {row.unit:<9} {value:>12{row.fmt}} {peer_value:>10} {ratio:>7} "
            f"{bench.spread(row.metric):>6.0%}  {row.target:<15} {verdict}"
        )
    lines += ["", "spread: (max - min) / median of eventlab's runs."]
    closes = ", ".join(
        f"{name} {results[f'{name}_close_s'] * 1000:,.0f} ms"
        for name in (
            "append_per_command",
            "append_batched",
            "append_many",
            "append_frame",
            "scheduler",
        )
        if f"{name}_close_s" in results
    )
    if closes:
        lines.append(
            f"close() after the timed calls (not in the rates above; for the scheduler, "
            f"its first read too, which waits for the last absorb): {closes}."
        )
    if "read_all_rss_before_mb" in results:
        lines.append(
            f"read_all child process: {results['read_all_rss_before_mb']:,.0f} MB resident "
            "after imports and open, before iterating."
        )
    if "replay_eps" in results:
        lines.append(
            f"replay: Order.load timed on {c.load_sample:,} and the peer's "
            f"app.repository.get on {c.peer_sample:,} evenly spread orders of the "
            f"{c.replay_orders:,}; their rates stand for all of them."
        )
    if "import_xes_eps" in results:
        lines.append(
            f"import_xes: {c.xes_log} (tests/data/real-logs) into a new file store, against "
            "pm4py's read_xes (its default reader, no progress bar) on the same file."
        )
    if "directly_follows_eps" in results:
        lines.append(
            f"directly_follows: el.analytics.directly_follows over a file store of "
            f"{results['directly_follows_events']:,.0f} synthetic events (counts, mean and "
            f"median times); pm4py: discover_dfg (counts only) on a DataFrame of the first "
            f"{results['peer_directly_follows_events']:,.0f} of them, built untimed."
        )
    if "state_at_ms_p50" in results:
        lines.append(
            f"state_at: an el.Snapshots reducer with a snapshot every 3 events "
            f"({results.get('state_at_snapshots', 0):,.0f} snapshots, rebuilt untimed); the "
            f"{c.state_at_events:,}-event store took {results['state_at_build_s']:,.0f} s to "
            "build (append_frame in 1M chunks, untimed)."
        )
    return "\n".join(lines)


def _workload_lines(c: Config, results: dict[str, float]) -> list[str]:
    """What each measured group ran on, one line each."""
    lines = []
    if "append_per_command_eps" in results or "append_frame_eps" in results:
        lines.append(
            f"workload: orders of {workload.EVENTS_PER_ORDER} events; per-command "
            f"{c.per_command_orders:,} orders; batched {c.batches} x {c.batch_orders:,} orders; "
            f"append_frame and read_all {c.bulk_events:,} events"
        )
    if "replay_eps" in results:
        lines.append(
            f"replay:   {c.replay_orders:,} orders "
            f"({c.replay_orders * workload.EVENTS_PER_ORDER:,} events) rebuilt as an "
            "el.Aggregate (status, items, total); peer: the eventsourcing aggregate"
        )
    if "simulate_commands" in results:
        lines.append(
            f"simulate: el.shop.simulate(orders={c.simulate_orders:,}, seed=7), store opened "
            f"to closed, one run each: {results['simulate_commands']:,.0f} commands, "
            f"{results['simulate_events']:,.0f} events"
        )
    if "sagas_per_s" in results:
        lines.append(
            f"sagas:    {c.saga_checkouts:,} el.shop.Checkout sagas (reserve, charge, ship), "
            "every participant failing 5% of its calls, scheduler batches of 500; started and "
            "run to their end"
        )
    if "state_at_all_streams_s" in results or "state_at_ms_p50" in results:
        lines.append(
            "business time: order n placed n s after 2024-01-01, its events 1 min apart; "
            "function reducer over dicts"
        )
    if "state_at_all_streams_s" in results:
        lines.append(
            f"state_at every stream: el.replay_all(at=median occurred_at) over "
            f"{c.all_streams_events:,} events"
        )
    if "directly_follows_eps" in results:
        lines.append(
            "process log: cases walking a 12-activity process (Markov chain, ~13 events per "
            "case), started over a year, interleaved and appended in business-time order"
        )
    if "state_at_ms_p50" in results:
        lines.append(
            f"state_at one stream: {c.state_at_queries} random (stream, time in its life) per "
            f"run, {c.state_at_events:,} events"
        )
    return lines

"""Run the benchmarks, print a table and write ``benchmarks/results.json``.

Usage, from the project root::

    python -m benchmarks.run            # full size (make bench)
    python -m benchmarks.run --quick    # scaled down to finish within a minute
    python benchmarks/run.py [--quick]  # the same, run as a script
    python -m benchmarks.run --only replay state_at   # some groups (merged into results)

Every store is a file in a temporary directory. Each figure is measured
``--repeat`` times and the median is reported: appends on a fresh database each
time; reads, replays and time travel on a store built once beforehand (untimed)
and reopened for each run. Measurements with a peer (the ``eventsourcing``
library, SQLite module) alternate with the peer's in the same run, and the ratio
ours/peer is printed. Rebuilt states are checked against the workload, so a
broken replay fails the run instead of posting a figure.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402

from benchmarks import (  # noqa: E402
    checks,
    commands,
    ours,
    peer,
    process_log,
    read_side,
    sagas,
    simulation,
    workload,
)
from benchmarks.checks import BenchmarkError  # noqa: E402
from benchmarks.table import format_table, simulation_metric  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RESULTS_PATH = PROJECT_ROOT / "benchmarks" / "results.json"


@dataclass(frozen=True)
class Config:
    """Sizes of one benchmark run."""

    mode: str
    per_command_orders: int
    batch_orders: int
    batches: int
    bulk_events: int
    repeat: int
    replay_orders: int  # orders rebuilt by replay_all (and sampled one by one)
    load_sample: int  # of them, loaded one by one with Order.load (rate extrapolated)
    peer_sample: int  # of them, got by the peer with app.repository.get
    all_streams_events: int  # store size for state_at_all_streams_s
    state_at_events: int  # store size for state_at_ms_p50 / p95
    state_at_queries: int  # timed state_at calls per run
    command_orders: int  # PlaceOrder commands through the scheduler (and the peer)
    simulate_orders: int  # orders in el.shop.simulate, timed once per store kind
    saga_checkouts: int  # checkout sagas started and run to their end
    xes_log: str  # the real log imported by the analytics group (tests/data/real-logs)
    follows_events: int  # synthetic store size for directly_follows_eps
    peer_follows_events: int  # the peer's directly-follows input (the first events of that store)


FULL = Config(
    "full",
    per_command_orders=3000,
    batch_orders=1000,
    batches=20,
    bulk_events=1_000_000,
    repeat=3,
    replay_orders=100_000,
    load_sample=2000,
    peer_sample=5000,
    all_streams_events=1_000_000,
    state_at_events=10_000_000,
    state_at_queries=200,
    command_orders=10_000,
    simulate_orders=100_000,
    saga_checkouts=10_000,
    xes_log="bpic2012.xes.gz",
    follows_events=10_000_000,
    peer_follows_events=10_000_000,
)
QUICK = Config(
    "quick",
    per_command_orders=500,
    batch_orders=1000,
    batches=3,
    bulk_events=100_000,
    repeat=3,
    replay_orders=10_000,
    load_sample=200,
    peer_sample=1000,
    all_streams_events=100_000,
    state_at_events=200_000,
    state_at_queries=60,
    command_orders=1_000,
    simulate_orders=1_000,
    saga_checkouts=1_000,
    xes_log="helpdesk.xes.gz",
    follows_events=200_000,
    peer_follows_events=200_000,
)

# Groups of measurements, in the order they run; ``--only`` picks some of them.
GROUPS = (
    "per_command",
    "batched",
    "bulk",
    "replay",
    "all_streams",
    "state_at",
    "read_side",
    "commands",
    "simulate",
    "sagas",
    "analytics",
)


class Bench:
    """Collects the repeated samples of one run and reduces them to medians."""

    def __init__(self, config: Config, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.samples: dict[str, list[float]] = defaultdict(list)

    def fresh_dir(self, name: str) -> Path:
        """An empty directory for one measurement (a fresh database)."""
        path = self.workdir / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def record(self, metric: str, value: float) -> None:
        self.samples[metric].append(value)

    def medians(self) -> dict[str, float]:
        return {name: statistics.median(values) for name, values in self.samples.items()}

    def spread(self, metric: str) -> float:
        """(max - min) / median of a metric's samples, as a fraction."""
        values = self.samples[metric]
        middle = statistics.median(values)
        return (max(values) - min(values)) / middle if middle else 0.0

    def compare(
        self,
        name: str,
        n_events: int,
        run_ours: Callable[[Path], ours.Timing],
        run_peer: Callable[[Path], float],
        also: dict[str, Callable[[Path], ours.Timing]] | None = None,
    ) -> None:
        """Measure ours and the peer alternately, ``repeat`` times each, fresh files each time.

        The order flips every repetition so that drift on a shared machine hits both.
        ``also`` maps metric names to other ways of ours to do the same work, measured
        in the same repetitions (against the same peer runs).
        """
        ways = {name: run_ours, **(also or {})}
        for rep in range(self.config.repeat):
            sides = (*ways, "peer") if rep % 2 == 0 else ("peer", *reversed(ways))
            line = []
            for side in sides:
                directory = self.fresh_dir(f"{name}-{side}-{rep}")
                label = "eventlab" if side == name else side
                if side != "peer":
                    path = directory / "store.duckdb"
                    timing = ways[side](path)
                    checks.check_count(f"{side} (eventlab)", ours.event_count(path), n_events)
                    eps = n_events / timing.seconds
                    self.record(f"{side}_eps", eps)
                    self.record(f"{side}_close_s", timing.close_seconds)
                else:
                    path = directory / "peer.sqlite"
                    seconds = run_peer(path)
                    checks.check_count(f"{name} (peer)", peer.stored_event_count(path), n_events)
                    eps = n_events / seconds
                    self.record(f"peer_{name}_eps", eps)
                shutil.rmtree(directory)
                line.append(f"{label} {eps:>11,.0f} ev/s")
            _progress(f"{name:<19} run {rep + 1}/{self.config.repeat}: " + ",  ".join(line))

    def per_command(self) -> None:
        """One commit per order, ours and peer."""
        orders = workload.orders(self.config.per_command_orders)
        n_events = len(orders) * workload.EVENTS_PER_ORDER
        self.compare(
            "append_per_command",
            n_events,
            lambda path: ours.time_per_command(path, orders),
            lambda path: peer.time_per_command(path, orders),
        )

    def batched(self) -> None:
        """One commit per batch of orders, ours and peer."""
        size = self.config.batch_orders
        batches = [workload.orders(size, start=b * size) for b in range(self.config.batches)]
        n_events = size * self.config.batches * workload.EVENTS_PER_ORDER
        self.compare(
            "append_batched",
            n_events,
            lambda path: ours.time_batched(path, batches),
            lambda path: peer.time_batched(path, batches),
            also={"append_many": lambda path: ours.time_append_many(path, batches)},
        )

    def bulk(self) -> None:
        """``append_frame`` into fresh stores, then reads of the last one (time and memory)."""
        n_events = self.config.bulk_events
        frame = workload.event_frame(n_events)
        path: Path | None = None
        for rep in range(self.config.repeat):
            if path is not None:  # keep only the last store: the reads use it
                shutil.rmtree(path.parent)
            path = self.fresh_dir(f"frame-{rep}") / "store.duckdb"
            timing = ours.time_append_frame(path, frame)
            checks.check_count("append_frame", ours.event_count(path), n_events)
            self.record("append_frame_eps", n_events / timing.seconds)
            self.record("append_frame_close_s", timing.close_seconds)
            _progress(
                f"{'append_frame':<19} run {rep + 1}/{self.config.repeat}: "
                f"eventlab {n_events / timing.seconds:>11,.0f} ev/s"
            )
        del frame
        assert path is not None
        for rep in range(self.config.repeat):
            seconds, count = ours.time_read_all(path)
            checks.check_count("read_all", count, n_events)
            self.record("read_all_eps", count / seconds)
            decode_seconds, _ = ours.time_read_all(path, decode=True)
            self.record("read_all_decoded_eps", count / decode_seconds)
            child = _read_in_child(path)
            checks.check_count("read_all (child)", int(child["count"]), n_events)
            self.record("read_all_peak_rss_mb", child["peak_rss_mb"])
            self.record("read_all_rss_before_mb", child["rss_before_mb"])
            _progress(
                f"{'read_all':<19} run {rep + 1}/{self.config.repeat}: "
                f"eventlab {count / seconds:>11,.0f} ev/s "
                f"({count / decode_seconds:,.0f} reading ev.data),  "
                f"child peak RSS {child['peak_rss_mb']:,.0f} MB"
            )

    def replay(self) -> None:
        """Every order rebuilt: in one ``replay_all`` pass and one by one, against the peer.

        Both stores hold the same orders, built untimed beforehand; the timed
        runs only read. ``Order.load`` and the peer's ``repository.get`` are timed
        on fixed, evenly spread samples and reported as rates.
        """
        c = self.config
        n_orders = c.replay_orders
        n_events = n_orders * workload.EVENTS_PER_ORDER
        path = self.fresh_dir("replay-eventlab") / "store.duckdb"
        ours_build, count = ours.build_store(path, [workload.event_frame(n_events)])
        checks.check_count("replay store (eventlab)", count, n_events)
        peer_path = self.fresh_dir("replay-peer") / "peer.sqlite"
        peer_build = peer.build_store(
            peer_path, workload.orders(n_orders, seed=workload.FRAME_SEED)
        )
        checks.check_count("replay store (peer)", peer.stored_event_count(peer_path), n_events)
        _progress(
            f"{'replay':<19} stores of {n_orders:,} orders built (untimed): "
            f"eventlab {ours_build:.1f} s, peer {peer_build:.1f} s"
        )
        all_ids = [f"order-{n}" for n in range(n_orders)]
        load_ids = _spread_sample(all_ids, c.load_sample)
        peer_ids = _spread_sample(all_ids, c.peer_sample)
        for rep in range(c.repeat):
            sides = ("eventlab", "peer") if rep % 2 == 0 else ("peer", "eventlab")
            line = []
            for side in sides:
                if side == "eventlab":
                    seconds, rebuilt = ours.time_replay_all(path)
                    checks.check_orders(
                        "replay_all", list(rebuilt), list(rebuilt.values()), all_ids
                    )
                    bulk_eps = n_events / seconds
                    self.record("replay_eps", bulk_eps)
                    seconds, loaded = ours.time_load_each(path, load_ids)
                    checks.check_orders("Order.load", [o.id for o in loaded], loaded, load_ids)
                    each_eps = len(load_ids) * workload.EVENTS_PER_ORDER / seconds
                    self.record("replay_one_by_one_eps", each_eps)
                    line.append(
                        f"eventlab {bulk_eps:>9,.0f} ev/s replay_all, {each_eps:,.0f} one by one"
                    )
                else:
                    seconds, got = peer.time_get_each(peer_path, peer_ids)
                    checks.check_peer_orders(got, peer_ids)
                    peer_eps = len(peer_ids) * workload.EVENTS_PER_ORDER / seconds
                    self.record("peer_replay_eps", peer_eps)
                    line.append(f"peer {peer_eps:>7,.0f} ev/s")
            _progress(f"{'replay':<19} run {rep + 1}/{c.repeat}: " + ",  ".join(line))
        self.record("replay_orders", n_orders)
        self.record("replay_one_by_one_sample", len(load_ids))
        self.record("peer_replay_sample", len(peer_ids))
        shutil.rmtree(path.parent)
        shutil.rmtree(peer_path.parent)

    def all_streams(self) -> None:
        """Every stream's state as of one business time (the median), with a function reducer."""
        n_events = self.config.all_streams_events
        path = self.fresh_dir("all-streams") / "store.duckdb"
        build, count = ours.build_store(path, workload.event_frames(n_events, occurred_at=True))
        checks.check_count("state_at_all_streams store", count, n_events)
        at = ours.median_occurred_at(path)
        expected = workload.states_as_of(n_events, at)
        _progress(
            f"{'state_at all':<19} store of {n_events:,} events built in {build:.1f} s "
            f"(untimed); as of {at:%Y-%m-%d %H:%M:%S}, {len(expected):,} streams"
        )
        for rep in range(self.config.repeat):
            seconds, states = ours.time_state_at_all(path, at)
            checks.check_states("state_at_all_streams", states, expected)
            self.record("state_at_all_streams_s", seconds)
            _progress(
                f"{'state_at all':<19} run {rep + 1}/{self.config.repeat}: "
                f"eventlab {seconds:.2f} s for {len(states):,} streams"
            )
        self.record("state_at_all_streams_store_events", n_events)
        self.record("state_at_all_streams_streams", len(expected))
        shutil.rmtree(path.parent)

    def state_at(self) -> None:
        """Latency of one stream's state at a random business time, in a big store."""
        c = self.config
        n_events = c.state_at_events
        path = self.fresh_dir("state-at") / "store.duckdb"
        frames = workload.event_frames(n_events, occurred_at=True)
        build, count = ours.build_store(path, frames)
        checks.check_count("state_at store", count, n_events)
        snapshot_seconds, snapshots = ours.take_snapshots(path)
        checks.check_count("state_at snapshots", snapshots, n_events // ours.SNAPSHOT_EVERY)
        _progress(
            f"{'state_at':<19} store of {n_events:,} events built in {build:.1f} s, "
            f"{snapshots:,} snapshots (every {ours.SNAPSHOT_EVERY} events) taken in "
            f"{snapshot_seconds:.1f} s (untimed)"
        )
        warmup, _ = workload.state_at_queries(random.Random(99), n_events, 5)
        for rep in range(c.repeat):
            queries, expected = workload.state_at_queries(
                random.Random(rep), n_events, c.state_at_queries
            )
            latencies, states = ours.time_state_at(path, queries, warmup)
            for (stream_id, at), state, want in zip(queries, states, expected, strict=True):
                checks.check_state(f"state_at({stream_id!r}, at={at.isoformat()})", state, want)
            p50 = statistics.median(latencies) * 1000
            p95 = statistics.quantiles(latencies, n=20)[18] * 1000
            self.record("state_at_ms_p50", p50)
            self.record("state_at_ms_p95", p95)
            _progress(
                f"{'state_at':<19} run {rep + 1}/{c.repeat}: eventlab p50 {p50:,.1f} ms, "
                f"p95 {p95:,.1f} ms over {len(latencies)} queries"
            )
        self.record("state_at_store_events", n_events)
        self.record("state_at_build_s", build)
        self.record("state_at_snapshots", snapshots)
        shutil.rmtree(path.parent)

    def read_side(self) -> None:
        """Projections over the bulk-size store: Python catch-up, SQL rebuild, queries."""
        n_events = self.config.bulk_events
        n_orders = -(-n_events // workload.EVENTS_PER_ORDER)
        path = self.fresh_dir("read-side") / "store.duckdb"
        build, count = ours.build_store(path, [workload.event_frame(n_events)])
        checks.check_count("read-side store", count, n_events)
        _progress(f"{'read side':<19} store of {n_events:,} events built in {build:.1f} s")
        # The last order may be cut short: count what its first events hold.
        full, rest = divmod(n_events, workload.EVENTS_PER_ORDER)
        expected = {"orders": n_orders, "items": full * 3 + min(max(rest - 1, 0), 3)}
        paid = full + (1 if rest >= 5 else 0)
        for rep in range(self.config.repeat):
            seconds, summary = read_side.time_catch_up(path)
            if summary != expected:
                raise BenchmarkError(f"orders read model {summary}, expected {expected}")
            self.record("projection_catch_up_eps", n_events / seconds)
            sql_seconds, summary = read_side.time_sql_rebuild(path, read_side.REVENUE_PER_DAY)
            if summary != {"orders": paid}:
                raise BenchmarkError(f"revenue_per_day {summary}, expected {paid} paid orders")
            self.record("sql_projection_rebuild_eps", n_events / sql_seconds)
            heavy_seconds, summary = read_side.time_sql_rebuild(path, read_side.ORDER_TOTALS)
            if summary != expected:
                raise BenchmarkError(f"order_totals read model {summary}, expected {expected}")
            self.record("sql_projection_per_order_rebuild_eps", n_events / heavy_seconds)
            latency = read_side.time_queries(path, asks=200)
            for metric, value in latency.items():
                self.record(metric, value)
            _progress(
                f"{'read side':<19} run {rep + 1}/{self.config.repeat}: "
                f"projection {n_events / seconds:>9,.0f} ev/s, "
                f"SQL projection {n_events / sql_seconds:>11,.0f} ev/s "
                f"(per order {n_events / heavy_seconds:,.0f}), query cached "
                f"{latency['query_cached_us_p50']:.0f} µs / uncached "
                f"{latency['query_uncached_ms_p50']:.2f} ms"
            )
        shutil.rmtree(path.parent)

    def commands(self) -> None:
        """PlaceOrder commands through scheduler and executor, and the peer's app method."""
        orders = workload.orders(self.config.command_orders)
        n = len(orders)
        for rep in range(self.config.repeat):
            sides = ("eventlab", "peer") if rep % 2 == 0 else ("peer", "eventlab")
            line = []
            for side in sides:
                directory = self.fresh_dir(f"commands-{side}-{rep}")
                if side == "eventlab":
                    path = directory / "store.duckdb"
                    timing = commands.time_scheduler(path, orders)
                    expected = n * workload.EVENTS_PER_ORDER
                    checks.check_count("scheduler (eventlab)", ours.event_count(path), expected)
                    rate = n / timing.seconds
                    self.record("scheduler_commands_per_s", rate)
                    self.record("scheduler_close_s", timing.close_seconds)
                else:
                    path = directory / "peer.sqlite"
                    rate = n / commands.time_peer(path, orders)
                    expected = n * workload.EVENTS_PER_ORDER
                    checks.check_count("commands (peer)", peer.stored_event_count(path), expected)
                    self.record("peer_commands_per_s", rate)
                shutil.rmtree(directory)
                line.append(f"{side} {rate:>8,.0f} cmd/s")
            _progress(f"{'commands':<19} run {rep + 1}/{self.config.repeat}: " + ",  ".join(line))

    def simulate(self) -> None:
        """``el.shop.simulate`` end to end, once on a file store and once in memory.

        One run each, whatever ``--repeat``: at full size a run takes minutes.
        """
        orders = self.config.simulate_orders
        metric = simulation_metric(orders)
        for kind in ("file", "memory"):
            path = None
            if kind == "file":
                path = self.fresh_dir("simulate") / "store.duckdb"
            seconds, summary = simulation.time_simulate(path, orders)
            commands = sum(summary["commands"].values())
            events = sum(summary["events"].values())
            suffix = "" if kind == "file" else "_memory"
            self.record(f"{metric}{suffix}", seconds)
            self.record(f"simulate_commands_per_s{suffix}", commands / seconds)
            self.record("simulate_commands", commands)
            self.record("simulate_events", events)
            if path is not None:
                shutil.rmtree(path.parent)
            _progress(
                f"{'simulate':<19} {kind:<6}: {orders:,} orders, {commands:,} commands, "
                f"{events:,} events in {seconds:,.1f} s ({commands / seconds:,.0f} commands/s)"
            )

    def sagas(self) -> None:
        """Checkout sagas (reserve, charge, ship; 5% of participant calls fail) end to end."""
        orders = sagas.checkouts(self.config.saga_checkouts)
        n = len(orders)
        for rep in range(self.config.repeat):
            path = self.fresh_dir(f"sagas-{rep}") / "store.duckdb"
            timing, outcomes = sagas.time_checkouts(path, orders)
            rate = n / timing.seconds
            self.record("sagas_per_s", rate)
            shutil.rmtree(path.parent)
            ends = ", ".join(f"{count:,} {end}" for end, count in sorted(outcomes.items()))
            _progress(
                f"{'sagas':<19} run {rep + 1}/{self.config.repeat}: {rate:>8,.0f} sagas/s ({ends})"
            )

    def analytics(self) -> None:
        """XES import against pm4py's read_xes, analyses of the imported log, and
        directly-follows counts on a big synthetic store against pm4py's discover_dfg."""
        c = self.config
        source = process_log.REAL_LOGS / c.xes_log
        events = process_log.REAL_LOG_EVENTS[c.xes_log]
        process_log.pm4py()  # imported before any timing (it takes seconds)
        path: Path | None = None
        for rep in range(c.repeat):
            sides = ("eventlab", "peer") if rep % 2 == 0 else ("peer", "eventlab")
            line = []
            for side in sides:
                if side == "eventlab":
                    if path is not None:  # keep the last store: the analyses read it
                        shutil.rmtree(path.parent)
                    path = self.fresh_dir(f"xes-{rep}") / "store.duckdb"
                    seconds, count = process_log.time_import_xes(path, source)
                    checks.check_count("import_xes", count, events)
                    self.record("import_xes_eps", events / seconds)
                else:
                    seconds, count = process_log.time_peer_read_xes(source)
                    checks.check_count("pm4py read_xes", count, events)
                    self.record("peer_import_xes_eps", events / seconds)
                line.append(f"{side} {events / seconds:>9,.0f} ev/s")
            _progress(f"{'import_xes':<19} run {rep + 1}/{c.repeat}: " + ",  ".join(line))
        assert path is not None
        for rep in range(c.repeat):
            seconds = process_log.time_analyses(path, c.xes_log)
            slowest = max(seconds, key=seconds.get)
            self.record(f"analytics_{c.xes_log.split('.')[0]}_max_s", seconds[slowest])
            _progress(
                f"{'analytics':<19} run {rep + 1}/{c.repeat}: slowest {slowest} "
                f"{seconds[slowest]:.3f} s ("
                + ", ".join(f"{name} {s:.3f}" for name, s in seconds.items() if name != slowest)
                + ")"
            )
        shutil.rmtree(path.parent)
        self._directly_follows()

    def _directly_follows(self) -> None:
        c = self.config
        path = self.fresh_dir("follows") / "store.duckdb"
        build, count, pairs = process_log.build_store(path, c.follows_events)
        checks.check_count("directly_follows store", count, c.follows_events)
        frame = process_log.peer_frame(path, c.peer_follows_events)
        peer_pairs = process_log.pair_count(frame)
        _progress(
            f"{'directly_follows':<19} store of {count:,} events ({count - pairs:,} cases) "
            f"built in {build:.0f} s; pm4py's DataFrame of {len(frame):,} (untimed)"
        )
        for rep in range(c.repeat):
            sides = ("eventlab", "peer") if rep % 2 == 0 else ("peer", "eventlab")
            line = []
            for side in sides:
                if side == "eventlab":
                    seconds, result = process_log.time_directly_follows(path)
                    found = int(result["count"].sum())
                    if found != pairs:
                        raise BenchmarkError(
                            f"directly_follows found {found:,} pairs, not {pairs:,}"
                        )
                    eps = count / seconds
                    self.record("directly_follows_eps", eps)
                else:
                    seconds, dfg = process_log.time_peer_dfg(frame)
                    if sum(dfg.values()) != peer_pairs:
                        raise BenchmarkError(
                            f"pm4py found {sum(dfg.values()):,} pairs, not {peer_pairs:,}"
                        )
                    eps = len(frame) / seconds
                    self.record("peer_directly_follows_eps", eps)
                line.append(f"{side} {eps:>11,.0f} ev/s")
            _progress(f"{'directly_follows':<19} run {rep + 1}/{c.repeat}: " + ",  ".join(line))
        self.record("directly_follows_events", count)
        self.record("peer_directly_follows_events", len(frame))
        del frame
        shutil.rmtree(path.parent)

    def results(self) -> dict[str, float]:
        """Medians of every metric, plus the ours/peer ratios."""
        medians = self.medians()
        ratios = {
            "append_per_command_ratio": ("append_per_command_eps", "peer_append_per_command_eps"),
            "append_batched_ratio": ("append_batched_eps", "peer_append_batched_eps"),
            "append_many_ratio": ("append_many_eps", "peer_append_batched_eps"),
            "replay_ratio": ("replay_eps", "peer_replay_eps"),
            "replay_one_by_one_ratio": ("replay_one_by_one_eps", "peer_replay_eps"),
            "scheduler_commands_ratio": ("scheduler_commands_per_s", "peer_commands_per_s"),
            "import_xes_ratio": ("import_xes_eps", "peer_import_xes_eps"),
            "directly_follows_ratio": ("directly_follows_eps", "peer_directly_follows_eps"),
        }
        for name, (ours_metric, peer_metric) in ratios.items():
            if ours_metric in medians and peer_metric in medians:
                medians[name] = medians[ours_metric] / medians[peer_metric]
        return {name: round(value, 4) for name, value in sorted(medians.items())}


def _progress(message: str) -> None:
    print(f"  {message}", flush=True)


def _spread_sample(items: Sequence[str], size: int) -> list[str]:
    """``size`` items evenly spread over ``items`` (all of them if there are fewer)."""
    if size >= len(items):
        return list(items)
    step = len(items) / size
    return [items[int(i * step)] for i in range(size)]


def _read_in_child(path: Path) -> dict[str, float]:
    """Run ``benchmarks.read_child`` on ``path`` in a fresh interpreter; parse its report.

    It runs from the project root, so it imports the same ``eventlab`` as this process.
    """
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.read_child", str(path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BenchmarkError(f"read_all child failed ({done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Measure eventlab's throughput and memory, side by side with eventsourcing.",
    )
    parser.add_argument("--quick", action="store_true", help="scaled down: under a minute")
    parser.add_argument("--repeat", type=_positive_int, help="runs per measurement (default 3)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=GROUPS,
        metavar="GROUP",
        help=f"run only these groups ({', '.join(GROUPS)}); their figures replace "
        "the same keys in the results file, the others stay",
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS_PATH, help=f"results file (default {RESULTS_PATH})"
    )
    parser.add_argument(
        "--workdir", type=Path, help="where temporary stores go (default: the system temp dir)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every benchmark (or the ``--only`` groups), print the table, write the results file."""
    args = parse_args(argv)
    config = QUICK if args.quick else FULL
    if args.repeat:
        config = replace(config, repeat=args.repeat)
    groups = [g for g in GROUPS if args.only is None or g in args.only]
    print(
        f"eventlab benchmarks ({config.mode} mode), {config.repeat} run(s) each: "
        f"{', '.join(groups)}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="eventlab-bench-", dir=args.workdir) as tmp:
        bench = Bench(config, Path(tmp))
        for group in groups:
            getattr(bench, group)()
    results = bench.results()
    print()
    print(format_table(config, bench, results))
    written = results
    if args.only is not None and args.output.exists():
        written = {**json.loads(args.output.read_text()), **results}
        written = dict(sorted(written.items()))
    args.output.write_text(json.dumps(written, indent=2) + "\n")
    merged = " (merged: other keys kept)" if written is not results else ""
    print(f"\nwrote {args.output}{merged}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run the benchmarks, print a table and write ``benchmarks/results.json``.

Usage, from the project root::

    python -m benchmarks.run            # full size (make bench)
    python -m benchmarks.run --quick    # scaled down to finish within a minute
    python benchmarks/run.py [--quick]  # the same, run as a script

Every store is a file in a temporary directory. Each figure is measured
``--repeat`` times on a fresh database and the median is reported; measurements
with a peer (the ``eventsourcing`` library, SQLite module) alternate with the
peer's in the same run, and the ratio ours/peer is printed.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402

from benchmarks import machine, ours, peer, workload  # noqa: E402

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


FULL = Config(
    "full", per_command_orders=3000, batch_orders=1000, batches=20, bulk_events=1_000_000, repeat=3
)
QUICK = Config(
    "quick", per_command_orders=500, batch_orders=1000, batches=3, bulk_events=100_000, repeat=3
)


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
]


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
    ) -> None:
        """Measure ours and the peer alternately, ``repeat`` times each, fresh files each time.

        The order flips every repetition so that drift on a shared machine hits both.
        """
        for rep in range(self.config.repeat):
            sides = ("eventlab", "peer") if rep % 2 == 0 else ("peer", "eventlab")
            line = []
            for side in sides:
                directory = self.fresh_dir(f"{name}-{side}-{rep}")
                if side == "eventlab":
                    path = directory / "store.duckdb"
                    timing = run_ours(path)
                    _check_count(f"{name} (eventlab)", ours.event_count(path), n_events)
                    eps = n_events / timing.seconds
                    self.record(f"{name}_eps", eps)
                    self.record(f"{name}_close_s", timing.close_seconds)
                else:
                    path = directory / "peer.sqlite"
                    seconds = run_peer(path)
                    _check_count(f"{name} (peer)", peer.stored_event_count(path), n_events)
                    eps = n_events / seconds
                    self.record(f"peer_{name}_eps", eps)
                shutil.rmtree(directory)
                line.append(f"{side} {eps:>11,.0f} ev/s")
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
            _check_count("append_frame", ours.event_count(path), n_events)
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
            _check_count("read_all", count, n_events)
            self.record("read_all_eps", count / seconds)
            decode_seconds, _ = ours.time_read_all(path, decode=True)
            self.record("read_all_decoded_eps", count / decode_seconds)
            child = _read_in_child(path)
            _check_count("read_all (child)", int(child["count"]), n_events)
            self.record("read_all_peak_rss_mb", child["peak_rss_mb"])
            self.record("read_all_rss_before_mb", child["rss_before_mb"])
            _progress(
                f"{'read_all':<19} run {rep + 1}/{self.config.repeat}: "
                f"eventlab {count / seconds:>11,.0f} ev/s "
                f"({count / decode_seconds:,.0f} reading ev.data),  "
                f"child peak RSS {child['peak_rss_mb']:,.0f} MB"
            )

    def results(self) -> dict[str, float]:
        """Medians of every metric, plus the ours/peer ratios."""
        medians = self.medians()
        for name in ("append_per_command", "append_batched"):
            medians[f"{name}_ratio"] = medians[f"{name}_eps"] / medians[f"peer_{name}_eps"]
        return {name: round(value, 4) for name, value in sorted(medians.items())}


class BenchmarkError(RuntimeError):
    """A benchmark saw a wrong result (so its figure would be meaningless)."""


def _check_count(what: str, actual: int, expected: int) -> None:
    if actual != expected:
        raise BenchmarkError(f"{what}: expected {expected:,} events, found {actual:,}")


def _progress(message: str) -> None:
    print(f"  {message}", flush=True)


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


def format_table(config: Config, bench: Bench, results: dict[str, float]) -> str:
    """The results table, with the machine it ran on in the header."""
    info = machine.describe()
    c = config
    lines = [
        f"eventlab benchmarks, {c.mode} mode: file stores, median of {c.repeat} run(s) each",
        f"machine:  {info['cpu']}, nproc {info['nproc']}, {info['memory']}, {info['os']}, "
        f"load average {info['load']} at the end",
        f"software: Python {info['python']}, duckdb {info['duckdb']}, pyarrow {info['pyarrow']}, "
        f"eventsourcing {info['eventsourcing']} (SQLite {info['sqlite']})",
        f"workload: orders of {workload.EVENTS_PER_ORDER} events; per-command "
        f"{c.per_command_orders:,} orders; batched {c.batches} x {c.batch_orders:,} orders; "
        f"append_frame and read_all {c.bulk_events:,} events",
        "",
    ]
    header = (
        f"{'metric':<32} {'unit':<9} {'eventlab':>12} {'peer':>10} {'ratio':>7} "
        f"{'spread':>7}  {'target':<13} result"
    )
    lines += [header, "-" * len(header)]
    for row in ROWS:
        value = results[row.metric]
        peer_value = f"{results[row.peer]:,.0f}" if row.peer else "-"
        ratio = f"{results[row.ratio]:.2f}x" if row.ratio else "-"
        verdict = "-" if row.passes is None else "PASS" if row.passes(results) else "FAIL"
        lines.append(
            f"{row.label:<32} {row.unit:<9} {value:>12,.0f} {peer_value:>10} {ratio:>7} "
            f"{bench.spread(row.metric):>6.0%}  {row.target:<13} {verdict}"
        )
    closes = ", ".join(
        f"{name} {results[f'{name}_close_s'] * 1000:,.0f} ms"
        for name in ("append_per_command", "append_batched", "append_frame")
    )
    lines += [
        "",
        "spread: (max - min) / median of eventlab's runs.",
        f"close() after the timed calls (not in the rates above): {closes}.",
        f"read_all child process: {results['read_all_rss_before_mb']:,.0f} MB resident after "
        "imports and open, before iterating.",
    ]
    return "\n".join(lines)


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
        "--output", type=Path, default=RESULTS_PATH, help=f"results file (default {RESULTS_PATH})"
    )
    parser.add_argument(
        "--workdir", type=Path, help="where temporary stores go (default: the system temp dir)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every benchmark, print the table, write the results file."""
    args = parse_args(argv)
    config = QUICK if args.quick else FULL
    if args.repeat:
        config = replace(config, repeat=args.repeat)
    print(f"eventlab benchmarks ({config.mode} mode), {config.repeat} run(s) each:", flush=True)
    with tempfile.TemporaryDirectory(prefix="eventlab-bench-", dir=args.workdir) as tmp:
        bench = Bench(config, Path(tmp))
        bench.per_command()
        bench.batched()
        bench.bulk()
    results = bench.results()
    print()
    print(format_table(config, bench, results))
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

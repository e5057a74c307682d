"""The ``eventlab`` command: a thin shell over the public API.

Each subcommand opens a store, calls one or two library functions and prints
the result. Errors a user can cause (an :class:`~eventlab.EventlabError`) are
printed as ``eventlab: error: <message>`` with exit status 1, without a
traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

import eventlab as el

from .clock import to_utc
from .shop.simulate import ORDERS_PER_DAY

PROG = "eventlab"

_DESCRIPTION = """\
eventlab: an event store on DuckDB for learning and analysing event-driven systems.

Inspect a store file, move its events to and from Parquet, import event logs
(XES, CSV), generate a shop history, or run the demo.
Run 'eventlab COMMAND --help' for a command's options and examples."""

_EPILOG = """\
examples:
  eventlab demo                          build, export and re-read a sample shop store
  eventlab generate --orders 2000 --seed 7 --out shop.duckdb
  eventlab info shop.duckdb              counts, types and time range of a store
  eventlab export shop.duckdb lake/ --partition-by day
  eventlab import 'lake/**/*.parquet' copy.duckdb
  eventlab import bpic2012.xes.gz loans.duckdb   an XES event log
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``eventlab`` command line and return its exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name; defaults to ``sys.argv[1:]``.

    Returns
    -------
    int
        0 on success, 1 when eventlab reports an error (printed on stderr as
        ``eventlab: error: ...``), 2 for a usage error.

    Examples
    --------
    >>> main(["--version"])
    eventlab 0.1.0
    0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors
        return _exit_code(exit_.code)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.handler(args)
    except el.EventlabError as error:
        return _fail(str(error))
    except BrokenPipeError:  # e.g. `eventlab info s.duckdb | head -3`: not an error
        _silence_stdout()
        return 1
    except OSError as error:  # e.g. a directory we may not write into
        where = f": {error.filename}" if error.filename else ""
        return _fail(f"{error.strerror or error}{where}")
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``eventlab`` command, with every subcommand.

    Returns
    -------
    argparse.ArgumentParser
        Subcommands are registered under ``dest="command"``; each sets a
        ``handler`` default that runs it.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {el.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    def command(
        name: str, help_: str, description: str, epilog: str, handler: Callable[..., int]
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help_,
            description=description,
            epilog="examples:\n" + epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(handler=handler)
        return sub

    info = command(
        "info",
        "show event, stream and type counts, time range and head of a store",
        "Summarise a store file: how many events, streams and event types it holds,\n"
        "the most frequent types, the range of recorded_at (knowledge time) and\n"
        "occurred_at (business time), and the head position. The store is opened\n"
        "read-only, so it is never changed (but a process writing to it must close\n"
        "it first: DuckDB allows one writing process and no readers beside it).",
        "  eventlab info shop.duckdb\n  eventlab info shop.duckdb --top 3\n",
        _info,
    )
    info.add_argument("store", metavar="STORE", help="path of the store's DuckDB file")
    info.add_argument(
        "--top",
        type=_non_negative_int,
        default=10,
        metavar="N",
        help="list the N most frequent event types (default: 10; 0 lists none)",
    )

    export = command(
        "export",
        "write a store's events to Parquet files in a directory",
        "Export every event of a store to Parquet in DIR, in position order, keeping\n"
        "every column exactly. Without --partition-by, one file DIR/events.parquet\n"
        "is written; --partition-by day writes Hive partitions DIR/day=YYYY-MM-DD/ by\n"
        "the UTC date of recorded_at, and --partition-by COL... partitions by columns\n"
        "of the events table (e.g. type). DIR must be new or empty unless --overwrite\n"
        "is given. The store is opened read-only.",
        "  eventlab export shop.duckdb lake/\n"
        "  eventlab export shop.duckdb lake/ --partition-by day\n"
        "  eventlab export shop.duckdb lake/ --partition-by type --overwrite\n",
        _export,
    )
    export.add_argument("store", metavar="STORE", help="path of the store's DuckDB file")
    export.add_argument(
        "directory", metavar="DIR", help="directory to write the Parquet files into"
    )
    export.add_argument(
        "--partition-by",
        nargs="+",
        metavar="day|COL",
        help="'day' (UTC date of recorded_at) or one or more event columns",
    )
    export.add_argument(
        "--overwrite",
        action="store_true",
        help="replace Parquet files already in DIR instead of refusing",
    )

    import_ = command(
        "import",
        "append the events of Parquet, XES or CSV files to a store (created if needed)",
        "Append the events in SOURCE to the store file STORE, creating the store if it\n"
        "does not exist. The kind of SOURCE follows its name:\n"
        "  .xes, .xes.gz   an XES event log: each trace becomes a stream, each event an\n"
        "                  event (concept:name its type, time:timestamp its occurred_at,\n"
        "                  other attributes its data, the trace's its metadata)\n"
        "  .csv, .csv.gz   an event CSV, one event per row; --stream, --type and\n"
        "                  --occurred-at name its columns (by default the XES names),\n"
        "                  case:... columns go into metadata, the others into data\n"
        "  anything else   Parquet: a file, a directory (searched recursively for\n"
        "                  *.parquet) or a glob (quote it so the shell does not expand\n"
        "                  it) with the columns stream_id, type and data; an export from\n"
        "                  eventlab, imported into a new store, is reproduced exactly\n"
        "The import is one transaction: on any error nothing is written.",
        "  eventlab import lake/ copy.duckdb\n"
        "  eventlab import data/shop_sample.parquet shop.duckdb\n"
        "  eventlab import 'lake/day=2024-03-*/*.parquet' march.duckdb\n"
        "  eventlab import bpic2012.xes.gz loans.duckdb\n"
        "  eventlab import receipt.csv permits.duckdb\n"
        "  eventlab import orders.csv shop.duckdb --stream order_id --type event "
        "--occurred-at time\n",
        _import,
    )
    import_.add_argument(
        "source",
        metavar="SOURCE",
        help="an .xes/.xes.gz or .csv/.csv.gz file, or Parquet: a file, a directory or a glob",
    )
    import_.add_argument(
        "store", metavar="STORE", help="path of the store's DuckDB file (created if needed)"
    )
    import_.add_argument(
        "--stream",
        default="case:concept:name",
        metavar="COL",
        help="CSV only: the column of stream ids (default: case:concept:name)",
    )
    import_.add_argument(
        "--type",
        default="concept:name",
        metavar="COL",
        help="CSV only: the column of event types (default: concept:name)",
    )
    import_.add_argument(
        "--occurred-at",
        default="time:timestamp",
        metavar="COL",
        help="CSV only: the column of business times (default: time:timestamp)",
    )

    demo = command(
        "demo",
        "build a sample shop store, export it to Parquet and read it back",
        "Generate a reproducible web-shop history, record it in a file store (one\n"
        "append per command, then a batch in one transaction), show a caught\n"
        "ConcurrencyError, export the store to Parquet partitioned by day, rebuild\n"
        "a store from the Parquet files and check that the round trip is identical.\n"
        "Writes DIR/shop.duckdb and DIR/parquet/, replacing them if they exist.\n"
        "Exits with status 1 if the round trip is not identical.",
        "  eventlab demo\n"
        "  eventlab demo --dir /tmp/shop --orders 1000\n"
        "  eventlab info demo-output/shop.duckdb      (after the demo)\n",
        _demo,
    )
    demo.add_argument(
        "--dir",
        dest="directory",
        default="demo-output",
        metavar="DIR",
        help="directory for the store and its Parquet export (default: demo-output)",
    )
    demo.add_argument(
        "--orders",
        type=_positive_int,
        default=200,
        metavar="N",
        help="how many orders to generate (default: 200)",
    )
    demo.add_argument(
        "--seed", type=int, default=7, help="seed of the generated history (default: 7)"
    )
    demo.add_argument(
        "--simulated-orders",
        type=_non_negative_int,
        default=300,
        metavar="N",
        help="orders in the shop simulation that ends the demo (default: 300; 0 skips it)",
    )

    generate = command(
        "generate",
        "simulate days of shop orders and write the history to a store or Parquet",
        "Run the shop simulation (eventlab.shop.simulate): customers place, change,\n"
        "submit and cancel orders over several days, and every order goes through the\n"
        "command scheduler, the services' handlers and their reactions (payments,\n"
        "shipments), with failures injected at the payment gateway and the warehouse.\n"
        "The same --seed gives the same history, event ids included.\n"
        "OUT is a DuckDB store file (events, commands and command_history tables) or,\n"
        "when it ends with '/' or is a directory, a Parquet directory of the events\n"
        "(OUT/events.parquet, or day partitions with --partition-by day). An existing\n"
        "store file or a non-empty directory is never overwritten. A store file is\n"
        "durable at every commit (slower); Parquet output is simulated in memory.",
        "  eventlab generate --orders 2000 --seed 7 --out shop.duckdb\n"
        "  eventlab generate --orders 2000 --seed 7 --out data/shop_simulation/\n"
        "  eventlab generate --orders 100000 --failure-rate 0.1 --out big/ --partition-by day\n",
        _generate,
    )
    generate.add_argument(
        "--orders",
        type=_positive_int,
        default=2000,
        metavar="N",
        help="how many orders the customers place (default: 2000)",
    )
    generate.add_argument(
        "--seed", type=int, default=0, help="seed of everything random (default: 0)"
    )
    generate.add_argument(
        "--out",
        required=True,
        type=_out_path,
        metavar="OUT",
        help="a store file to create, or a directory (ending with '/') for Parquet",
    )
    generate.add_argument(
        "--failure-rate",
        type=_rate,
        default=0.05,
        metavar="R",
        help="how often the payment gateway fails, 0 to 1 (default: 0.05)",
    )
    generate.add_argument(
        "--start",
        default="2024-03-04T00:00:00",
        metavar="TIME",
        help="when the history begins, ISO 8601 UTC (default: 2024-03-04T00:00:00)",
    )
    generate.add_argument(
        "--days",
        type=_positive_int,
        metavar="N",
        help="days over which the orders arrive (default: one per 500 orders, at least 3)",
    )
    generate.add_argument(
        "--partition-by",
        choices=["day"],
        help="with a Parquet directory: one partition per UTC day of recorded_at",
    )
    return parser


# ---------------------------------------------------------------------- commands


def _info(args: argparse.Namespace) -> int:
    with el.EventStore(_existing(args.store), read_only=True) as store:
        summary = store_summary(store, top=args.top)
    rows = [
        ("store", args.store),
        ("events", f"{summary['events']:,}"),
        ("streams", f"{summary['streams']:,}"),
        ("types", f"{summary['types']:,}"),
    ]
    for name, value in rows:
        print(f"{name + ':':<13}{value}")
    if summary["top_types"]:
        width = max(len(name) for name in summary["top_types"])
        for name, count in summary["top_types"].items():
            print(f"  {name:<{width}}  {count:>10,}")
        hidden = summary["types"] - len(summary["top_types"])
        if hidden > 0:
            print(f"  ... and {hidden} more (--top N to list more)")
    for column in ("recorded_at", "occurred_at"):
        first, last = summary[column]
        span = "-" if first is None else f"{_when(first)} .. {_when(last)}"
        print(f"{column + ':':<13}{span}")
    print(f"{'head:':<13}{summary['head']:,}")
    return 0


def store_summary(store: el.EventStore, *, top: int = 10) -> dict[str, Any]:
    """Counts, the most frequent types, time ranges and head of a store.

    Parameters
    ----------
    store : EventStore
        An open store (read-only is fine).
    top : int
        How many of the most frequent event types to list.

    Returns
    -------
    dict
        ``events``, ``streams``, ``types`` (counts), ``top_types`` (type ->
        count, most frequent first, ties by name), ``recorded_at`` and
        ``occurred_at`` (each a ``(first, last)`` pair of UTC timestamps, or
        ``(None, None)`` for an empty store) and ``head`` (the last position).
    """
    totals = store.sql(
        "SELECT count(*) AS events, count(DISTINCT stream_id) AS streams, "
        "count(DISTINCT type) AS types, min(recorded_at) AS recorded_first, "
        "max(recorded_at) AS recorded_last, min(occurred_at) AS occurred_first, "
        "max(occurred_at) AS occurred_last FROM events"
    ).iloc[0]
    types = store.sql(
        "SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY n DESC, type LIMIT $1",
        [top],
    )
    return {
        "events": int(totals["events"]),
        "streams": int(totals["streams"]),
        "types": int(totals["types"]),
        "top_types": dict(zip(types["type"], (int(n) for n in types["n"]), strict=True)),
        "recorded_at": (_timestamp(totals["recorded_first"]), _timestamp(totals["recorded_last"])),
        "occurred_at": (_timestamp(totals["occurred_first"]), _timestamp(totals["occurred_last"])),
        "head": store.head,
    }


def _export(args: argparse.Namespace) -> int:
    partition_by = args.partition_by
    if partition_by is not None and len(partition_by) == 1:
        partition_by = partition_by[0]
    target = Path(args.directory)
    if not args.overwrite and target.is_dir() and any(target.iterdir()):
        raise el.EventlabError(
            f"{target} is not empty; export into a new or empty directory, or add "
            f"--overwrite to replace the Parquet files there"
        )
    with el.EventStore(_existing(args.store), read_only=True) as store:
        count = int(store.sql("SELECT count(*) AS n FROM events")["n"].iloc[0])
        directory = store.export_parquet(
            args.directory, partition_by=partition_by, overwrite=args.overwrite
        )
    files = sorted(Path(directory).rglob("*.parquet"))
    how = "" if partition_by is None else f", partitioned by {_partition_text(partition_by)}"
    print(
        f"Exported {count:,} events from {args.store} to {directory}{how}: {len(files)} Parquet "
        f"file{'s' if len(files) != 1 else ''}."
    )
    return 0


def _import(args: argparse.Namespace) -> int:
    target = Path(args.store)
    existed = target.exists()
    kind = _source_kind(args.source)
    store = el.EventStore(target)
    try:
        if kind == "xes":
            count = store.import_xes(args.source)
        elif kind == "csv":
            count = store.import_csv(
                args.source, stream=args.stream, type=args.type, occurred_at=args.occurred_at
            )
        else:
            count = store.import_parquet(args.source)
        head = store.head
    except BaseException:
        store.close()
        if not existed:  # don't leave behind an empty store we created for a failed import
            for path in (target, *(target.with_name(target.name + s) for s in _SIDE_FILES)):
                path.unlink(missing_ok=True)
        raise
    store.close()
    created = "" if existed else " (a new store)"
    print(
        f"Imported {count:,} events from {args.source} into {args.store}{created}; "
        f"head is now {head:,}."
    )
    return 0


def _source_kind(source: str) -> str:
    """The kind of the source file, from its name: "xes", "csv" or "parquet"."""
    name = source.lower().removesuffix(".gz")
    if name.endswith(".xes"):
        return "xes"
    if name.endswith(".csv"):
        return "csv"
    return "parquet"


# Files DuckDB and the store's journal keep next to a store file.
_SIDE_FILES = (".wal", ".journal")


def _generate(args: argparse.Namespace) -> int:
    out = Path(args.out)
    to_parquet = args.out.endswith(("/", os.sep)) or out.is_dir()
    if to_parquet:
        if out.is_file():
            raise el.EventlabError(f"{out} is a file; give a directory for Parquet output")
        if out.is_dir() and any(out.iterdir()):
            raise el.EventlabError(
                f"{out} is not empty; generate into a new or empty directory (nothing is "
                f"overwritten)"
            )
    else:
        if args.partition_by:
            raise el.EventlabError(
                "--partition-by applies to Parquet output; end OUT with '/' to write a "
                "Parquet directory"
            )
        taken = [p for p in (out, *_side_files(out)) if p.exists()]
        if taken:
            raise el.EventlabError(
                f"{taken[0]} already exists; generate into a new store file (nothing is "
                f"overwritten)"
            )
    start = to_utc(args.start)
    _check_room(start, args)
    progress = sys.stderr.isatty()
    if to_parquet:
        # In memory: a Parquet export needs no durable store, and a file store
        # syncs its journal at every commit (twice per command here).
        with _simulated_store(None, start) as store:
            summary = _simulate(store, args, start, progress)
            directory = store.export_parquet(out, partition_by=args.partition_by)
        files = sorted(Path(directory).rglob("*.parquet"))
        written = (
            f"Wrote {sum(summary['events'].values()):,} events to {directory}: {len(files)} "
            f"Parquet file{'s' if len(files) != 1 else ''}."
        )
    else:
        try:
            with _simulated_store(out, start) as store:
                summary = _simulate(store, args, start, progress)
        except BaseException:
            for path in (out, *_side_files(out)):
                path.unlink(missing_ok=True)  # no half-written store left behind
            raise
        written = (
            f"Wrote {out} (events, commands and command_history tables). Try: eventlab info {out}"
        )
    for line in el.shop.summary_lines(summary):
        print(line)
    print(written)
    return 0


def _simulated_store(path: Path | None, start: Any) -> el.EventStore:
    clock = el.SimulatedClock(start, step=timedelta(0))
    # A generated history can be generated again: no flush to disk per commit.
    return el.EventStore(path, clock=clock, sync=False)


# Besides its days of orders, a history runs on for late cancellations (up to a
# day and a half), the warehouse's last day and retries: a week covers them.
_TAIL = timedelta(days=7)
# The latest time a Python datetime (and so the simulated clock) can show.
_END_OF_TIME = datetime.max.replace(tzinfo=UTC)


def _days(args: argparse.Namespace) -> int:
    """The days over which the orders arrive (as el.shop.simulate defaults them)."""
    return args.days or max(3, math.ceil(args.orders / ORDERS_PER_DAY))


def _no_room(start: datetime, args: argparse.Namespace) -> el.EventlabError:
    return el.EventlabError(
        f"--start {start.isoformat()} leaves no room for the history: {_days(args)} days of "
        f"orders and up to a week of cancellations, retries and shipping after them would "
        f"run past {_END_OF_TIME.date().isoformat()}, the last day a timestamp can show; "
        f"give an earlier --start, e.g. --start 2024-03-04"
    )


def _check_room(start: datetime, args: argparse.Namespace) -> None:
    """Refuse a start so late that the simulated clock would run past the end of time."""
    if _END_OF_TIME - start < timedelta(days=_days(args)) + _TAIL:
        raise _no_room(start, args)


def _simulate(
    store: el.EventStore, args: argparse.Namespace, start: datetime, progress: bool
) -> dict[str, Any]:
    try:
        return el.shop.simulate(
            store,
            orders=args.orders,
            seed=args.seed,
            failure_rate=args.failure_rate,
            days=args.days,
            progress=progress,
        )
    except OverflowError as error:  # the clock ran past the year 9999 after all
        raise _no_room(start, args) from error


def _side_files(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in _SIDE_FILES]


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    summary = run_demo(
        args.directory,
        orders=args.orders,
        seed=args.seed,
        simulated_orders=args.simulated_orders,
    )
    for line in summary["lines"]:
        print(line)
    print(f"Try: eventlab info {summary['store_path']}")
    return 0 if summary["round_trip_identical"] else 1


# ---------------------------------------------------------------------- helpers


def _existing(path: str) -> str:
    """``path`` if a store file is there, else a clear error (never create one by reading)."""
    if not Path(path).exists():
        raise el.EventlabError(
            f"there is no store at {path}; check the path, or create one with "
            f"'eventlab import SOURCE {path}' or 'eventlab demo'"
        )
    if Path(path).is_dir():
        raise el.EventlabError(f"{path} is a directory; give the path of a store's DuckDB file")
    return path


def _timestamp(value: Any) -> pd.Timestamp | None:
    return None if pd.isna(value) else pd.Timestamp(value)


def _when(value: pd.Timestamp) -> str:
    return value.isoformat(sep=" ")


def _partition_text(partition_by: str | list[str]) -> str:
    return partition_by if isinstance(partition_by, str) else ", ".join(partition_by)


def _non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _out_path(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "must not be empty; give a store file to create (e.g. shop.duckdb) or a "
            "directory ending with '/' for Parquet (e.g. shop/)"
        )
    return text


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {text}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def _silence_stdout() -> None:
    # Python would report the broken pipe again when it flushes stdout at exit.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (e.g. captured in tests)
        pass


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 1


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

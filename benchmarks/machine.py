"""What the benchmarks ran on: CPU, cores, memory, OS and library versions."""

from __future__ import annotations

import os
import platform
import sqlite3
from importlib import metadata


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory() -> str:
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return "memory unknown"
    return f"{pages * page_size / 2**30:.0f} GiB RAM"


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def nproc() -> int:
    """CPUs this process may run on (what ``nproc`` prints)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def describe() -> dict[str, str]:
    """Machine and software facts for the table header."""
    return {
        "cpu": _cpu_model(),
        "nproc": str(nproc()),
        "memory": _memory(),
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "load": " ".join(f"{load:.2f}" for load in os.getloadavg()),
        "python": platform.python_version(),
        "duckdb": _version("duckdb"),
        "pyarrow": _version("pyarrow"),
        "eventsourcing": _version("eventsourcing"),
        "sqlite": sqlite3.sqlite_version,
        "eventlab": _version("eventlab"),
    }

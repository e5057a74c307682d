"""Child process for the memory benchmark: open a store, iterate ``read_all``, report.

Run as ``python -m benchmarks.read_child STORE`` from the project root; prints one JSON object with the
event count, the resident set size before iterating and the process's peak RSS
(``ru_maxrss``, kilobytes on Linux), both in MB.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def _current_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(path: str) -> dict[str, float]:
    """Iterate every event of the store at ``path`` and measure memory."""
    import eventlab as el

    with el.EventStore(path) as store:
        rss_before = _current_rss_mb()
        count = 0
        start = time.perf_counter()
        for _ in store.read_all():
            count += 1
        seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "count": count,
        "seconds": seconds,
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak_kb / 1024,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))

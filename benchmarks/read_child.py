"""Child process for the memory benchmark: open a store, iterate ``read_all``, report.

Run as ``python -m benchmarks.read_child STORE`` from the project root. Prints one
JSON object: the event count, the iteration time, the resident set size before
iterating and the process's peak resident set size, in MB.

The peak is read from ``VmHWM`` in ``/proc/self/status``, not from
``getrusage(RUSAGE_SELF).ru_maxrss``: on Linux a process started with
``subprocess`` inherits its parent's ``ru_maxrss`` through exec, so a parent
that once held a million-row frame would make the child look that big too.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def _status_mb(field: str) -> float | None:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MB, if available."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _peak_rss_mb() -> float:
    peak = _status_mb("VmHWM")
    if peak is None:  # no procfs: fall back to ru_maxrss (kilobytes on Linux)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return peak


def main(path: str) -> dict[str, float]:
    """Iterate every event of the store at ``path`` and measure memory."""
    import eventlab as el

    with el.EventStore(path) as store:
        rss_before = _status_mb("VmRSS") or 0.0
        count = 0
        start = time.perf_counter()
        for _ in store.read_all():
            count += 1
        seconds = time.perf_counter() - start
    return {
        "count": count,
        "seconds": seconds,
        "rss_before_mb": rss_before,
        "peak_rss_mb": _peak_rss_mb(),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))

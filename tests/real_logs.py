"""Where the real event logs of the tests are, and what they hold."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIRECTORY = Path(os.environ.get("EVENTLAB_REAL_LOGS", ROOT / "tests" / "data" / "real-logs"))


def path(name: str) -> Path:
    """The file ``name`` (or ``name`` gzipped) among the real logs; fails loudly if absent."""
    for candidate in (DIRECTORY / name, DIRECTORY / (name + ".gz")):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"the real log {name} is not in {DIRECTORY}; it ships in tests/data/real-logs (or set "
        f"EVENTLAB_REAL_LOGS to a directory holding receipt.csv, helpdesk.xes.gz, bpic2012.xes.gz)"
    )


HELPDESK = "helpdesk.xes.gz"
BPIC2012 = "bpic2012.xes.gz"
RECEIPT = "receipt.csv"
RECEIPT_COLUMNS = {
    "stream": "case:concept:name",
    "type": "concept:name",
    "occurred_at": "time:timestamp",
}
# (events, streams) of each log, from its README.
SIZES = {HELPDESK: (21_348, 4_580), BPIC2012: (262_200, 13_087), RECEIPT: (8_577, 1_434)}

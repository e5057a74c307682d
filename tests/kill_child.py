"""Run a Python child that reports progress line by line, and SIGKILL it mid-way.

Shared by the crash tests of the scheduler and of sagas.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_and_kill(code: str, args: list[str], kill_after: int | None, at: str) -> list[str]:
    """Run ``python -c code *args``; SIGKILL it on its ``kill_after``-th line starting
    with ``at`` (never, when None). Returns the lines it printed."""
    child = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    lines = []
    while True:
        line = child.stdout.readline()
        if not line:
            break
        lines.append(line.strip())
        seen = sum(1 for item in lines if item.startswith(at))
        if kill_after is not None and seen >= kill_after:
            os.kill(child.pid, signal.SIGKILL)
            break
    child.wait()
    return lines

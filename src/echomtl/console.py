"""One-line progress messages on the console (stderr), beside the job's log file.

Snakemake shows a job's stderr on the terminal; the log files keep the detail. Messages are short
and say where the detail is.
"""

from __future__ import annotations

import sys


def say(topic: str, message: str) -> None:
    """``[echomtl <topic>] message`` on stderr, flushed (jobs run in parallel)."""
    print(f"[echomtl {topic}] {message}", file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """``42 s``, ``3.5 min`` or ``1.2 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"

"""What a job says: one-line progress messages on the console (stderr), and its log file.

Snakemake shows a job's stderr on the terminal; the log files keep the detail. Messages are short
and say where the detail is. Every stage's jobs log through :func:`job_logging`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


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


def setup_logging(log_path: Path | None) -> logging.Logger:
    """Plain timestamped lines to the job's log file (and stderr when there is no file)."""
    logger = logging.getLogger("echomtl")
    logger.setLevel(logging.INFO)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(log_path, mode="a")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    return logger


@contextlib.contextmanager
def job_logging(snakemake: Any) -> Iterator[logging.Logger]:
    """Send the job's log lines (and any failure, with traceback) to its Snakemake log file."""
    log_path = Path(snakemake.log[0]) if len(snakemake.log) else None
    logger = setup_logging(log_path)
    try:
        yield logger
    except Exception:
        logger.exception("job failed")
        raise

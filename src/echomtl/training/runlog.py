"""Run logs: CSV tables written atomically, and progress lines for terminals and log files."""

from __future__ import annotations

import csv
import logging
import sys
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from echomtl.atomic import atomic_path


def write_csv(rows: Iterable[dict], path: Path, columns: list[str]) -> None:
    """Write rows with a fixed header (present even with no row), atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)


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


def progress(total: int, description: str) -> tqdm:
    """A progress bar on an interactive terminal only; log files get plain epoch lines instead."""
    return tqdm(total=total, desc=description, disable=not sys.stderr.isatty(), leave=False)

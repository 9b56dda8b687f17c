"""Run logs: CSV tables written atomically, and progress lines for terminals and log files."""

from __future__ import annotations

import csv
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


def progress(total: int, description: str) -> tqdm:
    """A progress bar on an interactive terminal only; log files get plain epoch lines instead."""
    return tqdm(total=total, desc=description, disable=not sys.stderr.isatty(), leave=False)

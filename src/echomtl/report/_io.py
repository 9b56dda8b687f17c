"""Small I/O helpers shared by the report modules (atomic writes re-exported, run-path parsing)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from echomtl.atomic import atomic_path, write_json, write_text

__all__ = ["atomic_path", "write_json", "write_text", "read_json", "run_id_from_path"]

PathLike = str | os.PathLike

_SEED_DIR = re.compile(r"^seed(\d+)$")
_FOLD_DIR = re.compile(r"^fold(\d+)$")


def read_json(path: PathLike) -> Any:
    """Read a JSON file, naming the file in the error when it is not valid JSON."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


def run_id_from_path(path: PathLike) -> tuple[str, int]:
    """``(experiment, seed)`` from a path inside ``.../<experiment>/seed<k>/`` (the run contract).

    The path may be the run folder itself, any file directly inside it, or a file of one of its
    cross-validation fold runs (``.../seed<k>/fold<f>/<file>``: the report reads one fold's
    training record per experiment and seed).
    """
    p = Path(path)
    for folder in (p, p.parent, p.parent.parent):
        m = _SEED_DIR.match(folder.name)
        if m and (folder in (p, p.parent) or _FOLD_DIR.match(p.parent.name)):
            return folder.parent.name, int(m.group(1))
    raise ValueError(
        f"{path}: expected a run path of the form <...>/<experiment>/seed<k>/<file>; "
        "pass an explicit {(experiment, seed): path} mapping instead"
    )

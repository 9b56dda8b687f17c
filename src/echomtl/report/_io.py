"""Small I/O helpers shared by the report modules (atomic writes, run-path parsing).

Every output is written to a temporary file in the destination folder and moved into place with
``os.replace``, so that an interrupted job never leaves a half-written file that Snakemake (or a
reader) would take for a finished one.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PathLike = str | os.PathLike

_SEED_DIR = re.compile(r"^seed(\d+)$")


@contextmanager
def atomic_path(path: PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.",
        suffix=suffix if suffix is not None else path.suffix,
        dir=path.parent,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _json_clean(value: Any) -> Any:
    """NaN/inf -> None recursively so that the file stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return _json_clean(value.item())
    return value


def write_json(path: PathLike, data: Any) -> Path:
    """Write strict JSON atomically (NaN written as null)."""
    text = json.dumps(_json_clean(data), indent=2, allow_nan=False, sort_keys=False)
    return write_text(path, text + "\n")


def read_json(path: PathLike) -> Any:
    """Read a JSON file, naming the file in the error when it is not valid JSON."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


def run_id_from_path(path: PathLike) -> tuple[str, int]:
    """``(experiment, seed)`` from a path inside ``.../<experiment>/seed<k>/`` (the run contract).

    The path may be the run folder itself or any file directly inside it.
    """
    p = Path(path)
    for folder in (p, p.parent):
        m = _SEED_DIR.match(folder.name)
        if m:
            return folder.parent.name, int(m.group(1))
    raise ValueError(
        f"{path}: expected a run path of the form <...>/<experiment>/seed<k>/<file>; "
        "pass an explicit {(experiment, seed): path} mapping instead"
    )


def none_to_nan(value: Any) -> float:
    """JSON null -> NaN, numbers -> float."""
    return math.nan if value is None else float(value)

"""Files, shared by every stage: atomic writes, the JSON reader and the run-path contract.

An output is written to a temporary file in its destination folder, flushed to disk, and moved
into place with ``os.replace`` only when writing succeeded, so an interrupted or failed job never
leaves a half-written file that Snakemake (or a reader) would take for a finished one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PathLike = str | os.PathLike


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as handle:
            os.fsync(handle.fileno())
        # mkstemp creates 0600; give the result the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def sha256_file(path: PathLike) -> str:
    """SHA-256 of a file, read in blocks (checkpoints and weights files are megabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` atomically (UTF-8, newlines as given)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
    return Path(path)


def json_clean(value: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python numbers, recursively: strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return json_clean(value.item())
    return value


def write_json(path: PathLike, data: Any) -> Path:
    """Write strict JSON atomically (NaN and infinities written as null)."""
    text = json.dumps(json_clean(data), indent=2, allow_nan=False)
    return write_text(path, text + "\n")


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


def files_by_run(
    files: Mapping[tuple[str, int], PathLike] | Iterable[PathLike],
) -> dict[tuple[str, int], Path]:
    """``{(experiment, seed): path}`` of run files given as paths (:func:`run_id_from_path`) or
    as that mapping already; two files of one run are an error."""
    if isinstance(files, Mapping):
        return {(str(e), int(s)): Path(p) for (e, s), p in files.items()}
    out: dict[tuple[str, int], Path] = {}
    for p in files:
        key = run_id_from_path(p)
        if key in out:
            raise ValueError(f"two files for run {key}: {out[key]} and {p}")
        out[key] = Path(p)
    return out

"""Resumable checkpoints that cannot be mistaken for good ones.

Each save writes ``last.pt`` atomically (temp file + rename) with a SHA-256 sidecar, after moving
the previous good checkpoint to ``prev.pt``. Loading verifies the checksum and the run
fingerprint (a hash of everything that shapes training): a truncated or corrupted file, or a
checkpoint of a different configuration, is skipped with a log line instead of being resumed.
Everything saved loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from echomtl.atomic import atomic_path, sha256_file, write_text

LOG = logging.getLogger(__name__)
NAMES = ("last.pt", "prev.pt")


def fingerprint(params: dict) -> str:
    """Stable hash of the training parameters (what a resumed run must share with the original)."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


def save_checkpoint(state: dict[str, Any], directory: Path) -> Path:
    """Write ``state`` as the newest checkpoint, keeping the previous good one."""
    directory.mkdir(parents=True, exist_ok=True)
    last, prev = directory / NAMES[0], directory / NAMES[1]
    with atomic_path(directory / ".last.pt.new") as tmp:
        torch.save(state, tmp)
        checksum = sha256_file(tmp)
    if last.exists() and (directory / "last.pt.sha256").exists():
        os.replace(last, prev)
        os.replace(directory / "last.pt.sha256", directory / "prev.pt.sha256")
    os.replace(directory / ".last.pt.new", last)
    write_text(directory / "last.pt.sha256", checksum + "\n")
    return last


def load_checkpoint(directory: Path, expected_fingerprint: str) -> dict[str, Any] | None:
    """Newest checkpoint that passes its checksum and matches the run, or None (start fresh)."""
    for name in NAMES:
        path = directory / name
        sidecar = directory / f"{name}.sha256"
        if not path.exists():
            continue
        if not sidecar.exists():
            LOG.warning("checkpoint %s has no checksum file: ignored", path)
            continue
        if sha256_file(path) != sidecar.read_text().strip():
            LOG.warning(
                "checkpoint %s fails its SHA-256 check (corrupt or truncated): ignored", path
            )
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any unreadable file is skipped, with the reason
            LOG.warning("checkpoint %s cannot be loaded (%s): ignored", path, error)
            continue
        if state.get("fingerprint") != expected_fingerprint:
            LOG.warning("checkpoint %s belongs to another configuration: ignored", path)
            continue
        LOG.info("resuming from %s (epoch %s, batch %s)", path, state["epoch"], state["batch"])
        return state
    return None


def remove_checkpoints(directory: Path) -> None:
    """Drop resume state once the run's outputs are complete."""
    for name in NAMES:
        for path in (directory / name, directory / f"{name}.sha256"):
            path.unlink(missing_ok=True)

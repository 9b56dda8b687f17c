"""What produced a paper: code, config, software, hardware, data, checkpoint and training time.

A reader holding two PDFs must be able to tell whether they came from the same code and inputs,
so the paper's reproducibility appendix and the Snakemake report are drawn from one record,
``provenance.json`` (rule ``provenance``). The git state is read when the workflow is parsed and
passed to the job as a parameter: a new commit or a change of dirtiness changes the parameter,
so Snakemake reruns the record and the paper with it. A dirty tree is recorded and printed,
never hidden.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from echomtl.atomic import PathLike, json_clean, sha256_file, write_json
from echomtl.data.export_reader import export_fingerprint
from echomtl.evaluation.tidy import benchmark_seconds
from echomtl.training.machine import MACHINE_COLUMNS, cpu_cores, cpu_model, gpu_name

__all__ = [
    "environment_pins",
    "git_state",
    "config_sha256",
    "package_versions",
    "hardware",
    "training_seconds",
    "training_machines",
    "provenance",
]

#: How many changed paths of a dirty tree the record lists (their count is always given).
DIRTY_LISTED = 20


def git_state(root: PathLike) -> dict[str, Any]:
    """The commit checked out at ``root`` and whether the tree differs from it (tracked changes
    or untracked files that git does not ignore). Outside a git checkout (an unpacked archive,
    no git installed) the commit is None and the paper says so."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=60
        ).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        changed = [line[3:] for line in git("status", "--porcelain").splitlines() if line]
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "changed": 0, "changed_paths": []}
    return {
        "commit": commit,
        "dirty": bool(changed),
        "changed": len(changed),
        "changed_paths": sorted(changed)[:DIRTY_LISTED],
    }


def config_sha256(config: Mapping[str, Any]) -> str:
    """SHA-256 of the resolved config as canonical JSON (sorted keys): two builds with the same
    hash ran the same settings, whatever the files' layout or comments."""
    text = json.dumps(json_clean(dict(config)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def environment_pins(environment_yml: PathLike) -> dict[str, str]:
    """The packages ``environment.yml`` pins (its pip list, ``name==version``), so that the
    record names exactly the pinned environment and the list lives in one place."""
    path = Path(environment_yml)
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    pins: dict[str, str] = {}
    for entry in data.get("dependencies", []):
        if not isinstance(entry, dict):
            continue
        for line in entry.get("pip", []):
            name, sep, version = str(line).partition("==")
            if not sep or not name.strip() or not version.strip():
                raise ValueError(f"{path}: pip entry {line!r} is not pinned as name==version")
            pins[name.strip()] = version.strip()
    if not pins:
        raise ValueError(f"{path}: no pinned pip packages (expected dependencies: - pip: [...])")
    return pins


def package_versions(pins: Mapping[str, str]) -> dict[str, dict[str, str | None]]:
    """Python's version, and for each pinned distribution the pin and the version installed
    where the record was written (None: not installed). A mismatch is printed, not hidden."""
    out: dict[str, dict[str, str | None]] = {
        "python": {"pinned": None, "installed": platform.python_version()}
    }
    for name, pinned in pins.items():
        try:
            installed: str | None = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        out[name] = {"pinned": pinned, "installed": installed}
    return out


def hardware(device: str) -> dict[str, Any]:
    """The machine this record is written on, described as a training process describes its
    own (:mod:`echomtl.training.machine`: CPU model, the cores this process may use, the GPU
    when the config trains on CUDA and one is visible here), with its architecture and system.
    Under a cluster profile this is the report job's node; the runs' own machines are
    :func:`training_machines`."""
    return {
        "cpu_model": cpu_model(),
        "cpu_cores": cpu_cores(),
        "gpu_name": gpu_name(device),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "device": device,
    }


def training_seconds(benchmarks: Sequence[PathLike]) -> dict[str, Any]:
    """Total wall seconds of the study's training jobs (every fold's, every seed's: one
    Snakemake benchmark file each) and how many jobs they are."""
    seconds = [benchmark_seconds(path) for path in benchmarks]
    return {"seconds": float(sum(seconds)), "runs": len(seconds)}


def training_machines(epochs_files: Sequence[PathLike]) -> dict[str, Any]:
    """The machines the runs trained on, from what each training process wrote beside its
    epochs (``epochs.csv``, :data:`~echomtl.training.machine.MACHINE_COLUMNS`): each distinct
    machine with how many runs and epochs it ran, and how many runs recorded none (trained
    before the columns existed; their machine is unknown, never guessed)."""
    counts: dict[tuple[Any, ...], dict[str, Any]] = {}
    unrecorded = 0
    for path in epochs_files:
        epochs = pd.read_csv(path, dtype={"cpu_model": str, "gpu_name": str})
        if not set(MACHINE_COLUMNS) <= set(epochs.columns):
            unrecorded += 1
            continue
        # epochs of a process older than the columns (a run resumed on newer code) are empty
        epochs = epochs.dropna(subset=["cpu_model"])
        if epochs.empty:
            unrecorded += 1
            continue
        for column in ("cpu_cores", "torch_threads"):
            # whole numbers on every epoch that names its machine (a float column when older
            # epochs of the same run left the cells empty)
            numbers = pd.to_numeric(epochs[column], errors="coerce")
            if numbers.isna().any() or (numbers % 1 != 0).any():
                raise ValueError(
                    f"{path}: column {column} must be a whole number on every epoch that names "
                    f"its cpu_model (got {epochs[column].tolist()})"
                )
            epochs[column] = numbers.astype(int)
        for values, group in epochs.groupby(MACHINE_COLUMNS, dropna=False, sort=True):
            key = tuple(None if v != v else v for v in values)  # NaN (no GPU) -> None
            entry = counts.setdefault(key, {"runs": 0, "epochs": 0})
            entry["runs"] += 1
            entry["epochs"] += len(group)
    machines = [
        {
            "cpu_model": str(cpu),
            "cpu_cores": int(cores),
            "torch_threads": int(threads),
            "gpu_name": None if gpu is None else str(gpu),
            **entry,
        }
        for (cpu, cores, threads, gpu), entry in sorted(
            counts.items(), key=lambda item: -item[1]["epochs"]
        )
    ]
    return {"machines": machines, "unrecorded_runs": unrecorded}


def provenance(
    *,
    git: Mapping[str, Any],
    config: Mapping[str, Any],
    records: PathLike,
    export: PathLike,
    benchmarks: Sequence[PathLike],
    epochs: Sequence[PathLike],
    checkpoint: Mapping[str, Any] | None,
    pins: Mapping[str, str],
    origin: Mapping[str, Any] | None = None,
    out_json: PathLike | None = None,
) -> dict[str, Any]:
    """The record: ``git`` (from :func:`git_state`, read at parse time), the resolved config and
    its hash, the versions, the hardware, the dataset (the export's content fingerprint,
    :func:`~echomtl.data.export_reader.export_fingerprint`, which does not depend on where the
    export lies, and the records file's SHA-256, whose image paths do), the checkpoint's
    SHA-256 (None for a study from random weights), the total training time and the machines
    the runs trained on (``epochs``: every run's ``epochs.csv``), the pinned
    packages' versions (``pins``: :func:`environment_pins`), and ``origin``: the results
    archive the runs were unpacked from (:data:`echomtl.archive.ORIGIN`), if they were."""
    device = str(config.get("train", {}).get("device", "cpu"))
    record = {
        "git": dict(git),
        "config_sha256": config_sha256(config),
        "config": json_clean(dict(config)),
        "versions": package_versions(pins),
        "hardware": hardware(device),
        "dataset": {
            "export_fingerprint": export_fingerprint(export),
            "records": Path(records).name,
            "sha256": sha256_file(records),
        },
        "checkpoint": None
        if not checkpoint
        else {"file": Path(str(checkpoint["file"])).name, "sha256": str(checkpoint["sha256"])},
        # how long the runs trained, and on which machines (each process's own record)
        "training": {**training_seconds(benchmarks), **training_machines(epochs)},
        # None: the runs were trained (or last unpacked) here; else the results archive they
        # were unpacked from, its commit and the machine that trained them
        "results_origin": dict(origin) if origin else None,
    }
    if out_json is not None:
        write_json(out_json, record)
    return record

"""A finished study's results in one file, with a SHA-256 manifest, that rebuilds its paper in a
fresh clone without retraining (``make archive``, ``make unpack``; docs/archive.md).

Sharing a study should not mean sharing its compute. The archive holds what the paper is built
from: every file under the study's results folder except the paper's own build products
(``paper/``), the model-input caches (``cache/``), resume checkpoints, other studies' folders
nested inside it, and (unless asked for) the final weights and weight snapshots. It also holds
Snakemake's metadata records of those files (``.snakemake/metadata``), so that the unpacked
study is tracked as the original was.

Two things make Snakemake rerun a finished job in a fresh clone, and unpacking handles both:

- *Time stamps.* A job reruns when an input is newer than its outputs, or when its script is
  (Snakemake's ``code`` trigger compares a ``script:`` file's time stamp with the outputs'). A
  fresh clone's scripts are as new as the clone, and the unpacked files would carry their old
  times. Unpacking stamps every file it writes with the time of unpacking plus one millisecond
  per rank of its original time, so the files keep their order (inputs before outputs) and are
  all newer than the clone.
- *Parameters.* With the metadata records restored, Snakemake compares each job's recorded
  parameters, input list and code with the current workflow's: if the code or the config
  changed in a way that reaches a run's parameters, that run does rerun, and what reads it.

Unpacking checks every file against the manifest before anything is written: a changed,
missing or unlisted file is an error that names it, and so is a file that already exists where
the archive would write (nothing is overwritten). Extraction refuses links, absolute paths and
paths that leave the target (tarfile's ``data`` filter, and the manifest's own paths are checked
before they are used). No file of the archive is executed or unpickled: weights stay bytes.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from echomtl.atomic import PathLike, atomic_path, write_json

__all__ = [
    "ARCHIVE_FORMAT",
    "ORIGIN",
    "ArchiveError",
    "archived_files",
    "pack",
    "snakemake_version",
    "unpack",
    "verify",
    "version_warning",
]

#: Bumped when the layout changes; unpacking refuses another format.
ARCHIVE_FORMAT = 1
MANIFEST = "MANIFEST.json"
#: Inside the tar: the study's files keep their paths relative to the working directory; the
#: metadata records sit under this prefix with their Snakemake record names.
METADATA_PREFIX = "snakemake-metadata"
#: Snakemake's metadata folder, relative to the working directory.
SNAKEMAKE_METADATA = Path(".snakemake") / "metadata"
#: Folders of a study never archived: the paper's build products (rebuilt from the archive),
#: the model-input caches (rebuilt from the data when a run is retrained) and resume checkpoints
#: (a finished run has none).
EXCLUDED_FOLDERS = ("paper", "cache")
EXCLUDED_ANYWHERE = ("checkpoints",)
#: The networks a run writes: archived only with ``weights=True`` (the paper reads none of them
#: once the runs are evaluated; they are most of a study's bytes).
WEIGHT_FILES = ("weights.pt", "snapshots.pt")
#: Written by unpacking into the study's folder: which archive its results came from, made at
#: which commit on which machine (the provenance record and the paper's appendix say so).
ORIGIN = "unpacked-from.json"
#: gzip's level: on a real-data study's predictions file (most of an archive's bytes: JSON),
#: 6 packed 34 MB to 8.09 MB in 4.1 s and 9 to 7.85 MB in 8.9 s (2026-12-07): 3% larger, half
#: the time.
COMPRESSLEVEL = 6
#: How far apart unpacking spaces the time stamps of files of successive original times.
STAMP_STEP_S = 0.001


def snakemake_version() -> str | None:
    """The installed Snakemake's version: the archive records the one that wrote its metadata
    records, whose format Snakemake may change between its versions."""
    try:
        return importlib.metadata.version("snakemake")
    except importlib.metadata.PackageNotFoundError:
        return None


def version_warning(manifest: dict[str, Any]) -> str | None:
    """A warning when the archive's metadata records were written by another Snakemake than the
    one installed here (None otherwise, and for archives that predate the record).

    Not an error: Snakemake may well read the records. If it does not, it sees outputs with no
    record and schedules the study's training again, which is hours to days of compute, so the
    user is told before running anything, and which version to install."""
    theirs, ours = manifest.get("snakemake"), snakemake_version()
    if theirs is None or theirs == ours:
        return None
    return (
        f"the archive's Snakemake metadata records were written by Snakemake {theirs}; this "
        f"environment has {ours or 'no Snakemake'}. If `snakemake -n` now schedules training or "
        f"evaluation jobs, install Snakemake {theirs} (environment.yml pins the version of the "
        "commit the archive was made at) and dry-run again before running anything."
    )


class ArchiveError(RuntimeError):
    """A results archive that cannot be made or unpacked as asked (the message names the file)."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def other_studies(results: PathLike) -> list[Path]:
    """Folders under ``results`` that hold other studies (a study whose results_dir lies inside
    this one's, such as ``results/real-cpu`` inside the default ``results``)."""
    results = Path(results)
    return sorted(p.parent for p in results.rglob("study.json") if p.parent != results)


def archived_files(results: PathLike, weights: bool = False) -> list[Path]:
    """The files of the study in ``results`` that an archive holds (see module docstring), in
    path order."""
    results = Path(results)
    if not (results / "study.json").is_file():
        raise ArchiveError(f"{results}: no study.json; is this a finished study's results folder?")
    others = set(other_studies(results))
    out: list[Path] = []
    for folder, dirs, names in os.walk(results):
        here = Path(folder)
        keep = []
        for d in sorted(dirs):
            sub = here / d
            excluded = (here == results and d in EXCLUDED_FOLDERS) or d in EXCLUDED_ANYWHERE
            if not excluded and sub not in others and not sub.is_symlink():
                keep.append(d)
        dirs[:] = keep
        for name in sorted(names):
            path = here / name
            if path.is_symlink() or not path.is_file():
                raise ArchiveError(f"{path}: not a plain file (links are not archived)")
            if (name in WEIGHT_FILES and not weights) or (here == results and name == ORIGIN):
                continue  # an unpacked study's origin: the new archive's manifest says its own
            out.append(path)
    return sorted(out)


def _record_path(name: str) -> str:
    """The output path a metadata record name stands for."""
    return base64.urlsafe_b64decode(name.encode()).decode()


def _git_state(root: Path) -> dict[str, Any]:
    from echomtl.report.provenance import git_state

    return git_state(root)


def _trained_on(provenance: Path) -> dict[str, Any] | None:
    """The machines the study's runs trained on, from its provenance record: as the training
    processes recorded them (``machines``, and how many runs recorded none), or, for a study
    that was itself unpacked from an archive, that archive's; None when the record says none."""
    if not provenance.is_file():
        return None
    record = json.loads(provenance.read_text(encoding="utf-8"))
    origin = record.get("results_origin") or {}
    if origin:
        return origin.get("made_on")
    training = record.get("training") or {}
    if not training.get("machines"):
        return None
    return {"machines": training["machines"], "unrecorded_runs": training["unrecorded_runs"]}


def pack(
    results: PathLike,
    out: PathLike,
    *,
    weights: bool = False,
    workdir: PathLike = ".",
) -> dict[str, Any]:
    """Write the archive of the study in ``results`` (a path relative to ``workdir``, the
    Snakemake working directory) to ``out`` (``.tar.gz``); returns its manifest."""
    workdir = Path(workdir).resolve()
    results_rel = Path(results)
    if results_rel.is_absolute():
        results_rel = results_rel.resolve().relative_to(workdir)
    results_abs = workdir / results_rel
    files = archived_files(results_abs, weights=weights)
    if not files:
        raise ArchiveError(f"{results_abs}: nothing to archive")
    entries = []
    for path in files:
        rel = path.relative_to(workdir).as_posix()
        entries.append(
            {"path": rel, "sha256": _sha256(path), "bytes": path.stat().st_size,
             "mtime": path.stat().st_mtime}
        )  # fmt: skip
    # Snakemake's records of every output of this study, the ones left out too (weights,
    # caches): Snakemake compares a job's parameters only when all its outputs have records
    records = []
    metadata_dir = workdir / SNAKEMAKE_METADATA
    prefixes = [f"{p.relative_to(workdir).as_posix()}/" for p in other_studies(results_abs)]
    ours = results_rel.as_posix().rstrip("/") + "/"
    if metadata_dir.is_dir():
        for record in sorted(metadata_dir.iterdir()):
            if not record.is_file():
                continue  # a split record name (very long path): never one of ours
            try:
                target = _record_path(record.name)
            except (ValueError, UnicodeDecodeError):
                continue
            if target.startswith(ours) and not any(target.startswith(p) for p in prefixes):
                records.append({"name": record.name, "path": target, "sha256": _sha256(record)})
    git = _git_state(workdir)
    manifest = {
        "format": ARCHIVE_FORMAT,
        "results": results_rel.as_posix(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git.get("commit"),
        "dirty": git.get("dirty"),
        "weights": weights,
        "made_on": _trained_on(results_abs / "provenance.json"),
        "snakemake": snakemake_version(),
        "files": entries,
        "snakemake_metadata": records,
    }
    with atomic_path(out) as tmp, tarfile.open(tmp, "w:gz", compresslevel=COMPRESSLEVEL) as tar:
        data = json.dumps(manifest, indent=1, sort_keys=True).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mtime = len(data), int(time.time())
        tar.addfile(info, io.BytesIO(data))
        for entry in entries:
            tar.add(workdir / entry["path"], arcname=entry["path"], recursive=False)
        for record in records:
            tar.add(
                metadata_dir / record["name"],
                arcname=f"{METADATA_PREFIX}/{record['name']}",
                recursive=False,
            )
    return manifest


def _safe_relative(path: str, what: str) -> PurePosixPath:
    p = PurePosixPath(path)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ArchiveError(f"{what}: path {path!r} is not relative to the working directory")
    return p


def _read_manifest(tar: tarfile.TarFile, archive: Path) -> dict[str, Any]:
    try:
        member = tar.getmember(MANIFEST)
    except KeyError:
        raise ArchiveError(f"{archive}: no {MANIFEST}; not a results archive") from None
    handle = tar.extractfile(member)
    if handle is None:
        raise ArchiveError(f"{archive}: {MANIFEST} is not a file")
    try:
        manifest = json.loads(handle.read().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArchiveError(f"{archive}: {MANIFEST} is not JSON ({exc})") from None
    missing = {"format", "files", "snakemake_metadata", "results"} - set(manifest)
    if missing:
        raise ArchiveError(f"{archive}: {MANIFEST} lacks {', '.join(sorted(missing))}")
    if manifest.get("format") != ARCHIVE_FORMAT:
        raise ArchiveError(
            f"{archive}: archive format {manifest.get('format')!r}; this version reads "
            f"format {ARCHIVE_FORMAT}"
        )
    _safe_relative(manifest["results"], str(archive))  # unpacking writes its origin there
    for entry in manifest["files"]:
        _safe_relative(entry["path"], str(archive))
    for record in manifest["snakemake_metadata"]:
        if "/" in record["name"] or record["name"] in ("", ".", ".."):
            raise ArchiveError(f"{archive}: bad metadata record name {record['name']!r}")
    return manifest


def verify(archive: PathLike, into: PathLike) -> dict[str, Any]:
    """Extract ``archive`` into the folder ``into`` and check it against its manifest; returns
    the manifest. Every listed file must be there with its SHA-256, and nothing else."""
    archive = Path(archive)
    into = Path(into)
    try:
        tar = tarfile.open(archive, "r:*")
    except (OSError, tarfile.TarError) as exc:
        raise ArchiveError(f"{archive}: not a readable results archive ({exc})") from None
    with tar:
        manifest = _read_manifest(tar, archive)
        for member in tar.getmembers():
            if not member.isfile():
                raise ArchiveError(f"{archive}: {member.name}: not a plain file; refused")
        tar.extractall(into, filter="data")
    listed = {e["path"]: e["sha256"] for e in manifest["files"]}
    listed.update(
        {f"{METADATA_PREFIX}/{r['name']}": r["sha256"] for r in manifest["snakemake_metadata"]}
    )
    present = {p.relative_to(into).as_posix() for p in into.rglob("*") if p.is_file()} - {MANIFEST}
    problems = []
    for path in sorted(set(listed) - present):
        problems.append(f"{path}: listed in the manifest but missing from the archive")
    for path in sorted(present - set(listed)):
        problems.append(f"{path}: in the archive but not in its manifest")
    for path in sorted(set(listed) & present):
        if _sha256(into / path) != listed[path]:
            problems.append(f"{path}: SHA-256 differs from the manifest (changed after packing)")
    if problems:
        raise ArchiveError(f"{archive}: refused:\n  " + "\n  ".join(problems))
    return manifest


def _stamps(entries: Sequence[dict[str, Any]], now: float) -> dict[str, float]:
    """New time stamps: ``now`` plus a step per rank of the original time (equal times keep
    equal stamps), so the files keep their order and are newer than anything in the clone."""
    ranks = {t: i for i, t in enumerate(sorted({float(e["mtime"]) for e in entries}))}
    return {e["path"]: now + STAMP_STEP_S * (1 + ranks[float(e["mtime"])]) for e in entries}


def unpack(archive: PathLike, workdir: PathLike = ".") -> dict[str, Any]:
    """Unpack ``archive`` into the Snakemake working directory ``workdir`` (a fresh clone):
    verify it, refuse to overwrite, write the study's files and Snakemake's metadata records,
    and stamp their times (module docstring). Returns the manifest."""
    archive, workdir = Path(archive).resolve(), Path(workdir).resolve()
    with tempfile.TemporaryDirectory(dir=workdir, prefix=".unpack-") as tmp:
        staging = Path(tmp)
        manifest = verify(archive, staging)
        targets = [(staging / e["path"], workdir / e["path"]) for e in manifest["files"]]
        metadata_dir = workdir / SNAKEMAKE_METADATA
        records = [
            (staging / METADATA_PREFIX / r["name"], metadata_dir / r["name"])
            for r in manifest["snakemake_metadata"]
        ]
        clashes = [str(dst.relative_to(workdir)) for _, dst in [*targets, *records] if dst.exists()]
        if clashes:
            shown = "\n  ".join(clashes[:20])
            more = f"\n  ... and {len(clashes) - 20} more" if len(clashes) > 20 else ""
            raise ArchiveError(
                f"{archive}: refused: {len(clashes)} file(s) already exist where it would "
                f"write (nothing was changed; unpack into a fresh clone):\n  {shown}{more}"
            )
        for src, dst in [*targets, *records]:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(src, dst)
        stamps = _stamps(manifest["files"], time.time())
        for entry in manifest["files"]:
            t = stamps[entry["path"]]
            os.utime(workdir / entry["path"], (t, t))
    origin = {
        "archive": archive.name,
        "sha256": _sha256(archive),
        "commit": manifest.get("commit"),
        "dirty": manifest.get("dirty"),
        "created": manifest.get("created"),
        "made_on": manifest.get("made_on"),
        "unpacked": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json(workdir / manifest["results"] / ORIGIN, origin)
    return manifest


def _summary(manifest: dict[str, Any], archive: Path) -> str:
    size = archive.stat().st_size
    n = len(manifest["files"])
    raw = sum(int(e["bytes"]) for e in manifest["files"])
    return (
        f"{archive}: {n} files of {manifest['results']} ({raw / 2**20:.1f} MiB unpacked, "
        f"{size / 2**20:.1f} MiB packed), {len(manifest['snakemake_metadata'])} Snakemake "
        f"metadata records; made at commit {manifest.get('commit') or 'unknown'}"
        + (", with the final weights" if manifest["weights"] else "")
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m echomtl.archive",
        description="Pack a finished study's results with a SHA-256 manifest, or unpack such "
        "an archive into a fresh clone so that the paper rebuilds without retraining.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="archive the study in RESULTS")
    p.add_argument("results", help="the study's results folder (config results_dir)")
    p.add_argument("out", help="the archive to write (.tar.gz)")
    p.add_argument("--weights", action="store_true", help="include the final weights")
    u = sub.add_parser("unpack", help="verify ARCHIVE and unpack it here")
    u.add_argument("archive")
    v = sub.add_parser("verify", help="check ARCHIVE against its manifest; write nothing")
    v.add_argument("archive")
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            manifest = pack(args.results, args.out, weights=args.weights)
            print(_summary(manifest, Path(args.out)))
        elif args.command == "unpack":
            manifest = unpack(args.archive)
            print(_summary(manifest, Path(args.archive)))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                manifest = verify(args.archive, tmp)
            print(_summary(manifest, Path(args.archive)) + ": every file matches its SHA-256")
        warning = version_warning(manifest) if args.command != "pack" else None
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    except ArchiveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

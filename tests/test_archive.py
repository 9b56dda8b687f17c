"""The results archive: a finished study packed with a SHA-256 manifest and unpacked into a fresh
clone rebuilds its paper without training or evaluating again (echomtl.archive)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from echomtl import archive as archive_module
from echomtl.archive import ArchiveError, archived_files, pack, unpack, verify
from echomtl.training.machine import cpu_model

from .checkpoints import stub_weights_env

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def _study(workdir: Path) -> Path:
    """A finished study's folder as the workflow leaves it (files only, no training)."""
    results = workdir / "results"
    files = {
        "study.json": "{}",
        "tidy.csv": "experiment,value\nfixed,0.5\n",
        "runs/fixed/seed0/metrics_test.json": '{"map50": 0.5}',
        "runs/fixed/seed0/steps.csv": "step\n0\n",
        "runs/fixed/seed0/weights.pt": "network bytes",
        "runs/fixed/seed0/snapshots.pt": "network bytes",
        "runs/fixed/seed0/checkpoints/last.pt": "resume state",
        "cache/holdout/train-64.npz": "images",
        "paper/main.tex": "built",
        "other/study.json": "{}",  # another study inside this one's folder
        "other/tidy.csv": "not ours",
    }
    for i, (name, text) in enumerate(files.items()):
        path = results / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.utime(path, (1_000_000 + i, 1_000_000 + i))  # old times, in this order
    metadata = workdir / ".snakemake" / "metadata"
    metadata.mkdir(parents=True)
    for name in (
        "results/tidy.csv",
        "results/runs/fixed/seed0/weights.pt",
        "results/other/tidy.csv",
    ):
        key = base64.urlsafe_b64encode(name.encode()).decode()
        (metadata / key).write_text(json.dumps({"rule": "x", "params": [name]}))
    return results


def test_the_archive_holds_what_the_paper_is_built_from_and_no_more(tmp_path):
    results = _study(tmp_path)
    names = {p.relative_to(results).as_posix() for p in archived_files(results)}
    assert names == {
        "study.json", "tidy.csv", "runs/fixed/seed0/metrics_test.json", "runs/fixed/seed0/steps.csv"
    }  # fmt: skip
    with_weights = {p.name for p in archived_files(results, weights=True)}
    assert {"weights.pt", "snapshots.pt"} <= with_weights


def test_unpacking_restores_files_records_and_their_order_newer_than_the_clone(tmp_path):
    source = tmp_path / "source"
    _study(source)
    archive = tmp_path / "study.tar.gz"
    manifest = pack("results", archive, workdir=source)
    # the records of this study's outputs, the weights' too (left out), never another study's
    assert sorted(r["path"] for r in manifest["snakemake_metadata"]) == [
        "results/runs/fixed/seed0/weights.pt", "results/tidy.csv"
    ]  # fmt: skip
    clone = tmp_path / "clone"
    (clone / "workflow").mkdir(parents=True)
    script = clone / "workflow" / "train.py"
    script.write_text("# a fresh clone's script")
    before = time.time()
    unpack(archive, clone)
    for entry in manifest["files"]:
        assert (clone / entry["path"]).read_bytes() == (source / entry["path"]).read_bytes()
    stamps = {e["path"]: os.stat(clone / e["path"]).st_mtime for e in manifest["files"]}
    assert min(stamps.values()) > script.stat().st_mtime and min(stamps.values()) >= before
    order = sorted(manifest["files"], key=lambda e: e["mtime"])
    assert [stamps[e["path"]] for e in order] == sorted(stamps.values())
    assert len(set(stamps.values())) == len(stamps)  # distinct original times stay distinct
    records = sorted(p.name for p in (clone / ".snakemake" / "metadata").iterdir())
    assert records == sorted(r["name"] for r in manifest["snakemake_metadata"])
    assert not list(clone.glob(".unpack-*"))  # the staging folder is gone


def _tampered(archive: Path, out: Path, victim: str | None, add: str | None = None) -> Path:
    """A copy of ``archive`` with ``victim`` changed (or dropped when add == "drop")."""
    with tarfile.open(archive) as src, tarfile.open(out, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name == victim:
                if add == "drop":
                    continue
                data += b"tampered\n"
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
        if add and add != "drop":
            info = tarfile.TarInfo(add)
            info.size = 1
            dst.addfile(info, io.BytesIO(b"x"))
    return out


@pytest.mark.parametrize(
    ("victim", "how", "message"),
    [
        ("results/tidy.csv", None, "results/tidy.csv: SHA-256 differs from the manifest"),
        ("results/tidy.csv", "drop", "results/tidy.csv: listed in the manifest but missing"),
        (None, "results/extra.csv", "results/extra.csv: in the archive but not in its manifest"),
    ],
)
def test_a_changed_missing_or_unlisted_file_is_refused_by_name(tmp_path, victim, how, message):
    source = tmp_path / "source"
    _study(source)
    archive = tmp_path / "study.tar.gz"
    pack("results", archive, workdir=source)
    bad = _tampered(archive, tmp_path / "bad.tar.gz", victim, how)
    clone = tmp_path / "clone"
    clone.mkdir()
    with pytest.raises(ArchiveError, match=message):
        unpack(bad, clone)
    assert not (clone / "results").exists()  # nothing written
    verify(archive, tmp_path / "check")  # the untouched archive passes


def test_unpacking_never_overwrites(tmp_path):
    source = tmp_path / "source"
    _study(source)
    archive = tmp_path / "study.tar.gz"
    pack("results", archive, workdir=source)
    clone = tmp_path / "clone"
    (clone / "results").mkdir(parents=True)
    (clone / "results" / "tidy.csv").write_text("mine")
    with pytest.raises(ArchiveError, match=r"already exist[\s\S]*results/tidy.csv"):
        unpack(archive, clone)
    assert (clone / "results" / "tidy.csv").read_text() == "mine"
    assert not (clone / "results" / "study.json").exists()


def test_unpacking_with_another_snakemake_warns_and_names_the_version_to_install(
    tmp_path, monkeypatch, capsys
):
    """Snakemake may change its metadata records' format between versions; one it cannot read
    would make it retrain the whole study, so unpack (and verify) say so before anything runs."""
    source = tmp_path / "source"
    _study(source)
    same, older = tmp_path / "same.tar.gz", tmp_path / "older.tar.gz"
    assert pack("results", same, workdir=source)["snakemake"] == archive_module.snakemake_version()
    monkeypatch.setattr(archive_module, "snakemake_version", lambda: "0.0.1")
    pack("results", older, workdir=source)
    monkeypatch.undo()
    for name, archive in (("same", same), ("older", older)):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        assert archive_module.main(["unpack", str(archive)]) == 0
        assert archive_module.main(["verify", str(archive)]) == 0
        err = capsys.readouterr().err
        if name == "same":
            assert err == ""
        else:
            assert err.count("warning: ") == 2
            assert "written by Snakemake 0.0.1" in err and "install Snakemake 0.0.1" in err
            assert f"this environment has {archive_module.snakemake_version()}" in err
    assert (tmp_path / "older" / "results" / "tidy.csv").is_file()  # a warning, not a refusal


def test_a_file_that_is_not_an_archive_is_refused_by_name(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tar file")
    with pytest.raises(ArchiveError, match="junk.tar.gz: not a readable results archive"):
        unpack(junk, tmp_path)


@pytest.mark.parametrize("field", ["files", "results"])
def test_a_path_leaving_the_working_directory_is_refused(tmp_path, field):
    archive = tmp_path / "evil.tar.gz"
    manifest = {"format": 1, "files": [{"path": "results/a", "sha256": "0"}],
                "snakemake_metadata": [], "results": "results", "weights": False}  # fmt: skip
    if field == "files":
        manifest["files"][0]["path"] = "../evil"
    else:
        manifest["results"] = "../../elsewhere"
    with tarfile.open(archive, "w:gz") as tar:
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("MANIFEST.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ArchiveError, match="not relative to the working directory"):
        verify(archive, tmp_path / "x")


# ---- end to end: a tiny study archived, unpacked into a fresh clone, its paper rebuilt --------

ARCHIVE_EXPERIMENTS = """\
experiment\tgroup\tmethod\tmodel\tw_det\tw_cls\talpha\taugment\tdescription
det_only\tdet_only\tfixed\tdet_only\t1.0\t0.0\t\tfalse\tdetector alone
fixed\tfixed\tfixed\tmultitask\t1.0\t0.01\t\tfalse\tfixed weights
gradnorm_a1.5\tgradnorm_a1.5\tgradnorm\tmultitask\t1.0\t0.01\t1.5\tfalse\tGradNorm 1.5
"""
CONFIG = "config/archive-test.yaml"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SNAKEMAKE, "--configfile", CONFIG, *args],
        cwd=workdir, capture_output=True, text=True, timeout=900,
        env={**os.environ, **stub_weights_env(), "MPLBACKEND": "Agg"},
    )  # fmt: skip


def _job_counts(dry_run: str) -> dict[str, int]:
    """The "Job stats" table of a dry run, ``{rule: count}``."""
    lines = dry_run.split("Job stats:", 1)[1].splitlines() if "Job stats:" in dry_run else []
    counts: dict[str, int] = {}
    for line in lines[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


@pytest.fixture(scope="module")
def archived_study(tmp_path_factory):
    """A copy of this working tree made a git repository, with a tiny study run in it and packed."""
    tmp = tmp_path_factory.mktemp("archive")
    source = tmp / "source"
    listed = _git(ROOT, "ls-files", "-co", "--exclude-standard", "-z").split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((ROOT / name).read_bytes())
    (source / "config" / "archive-test.tsv").write_text(ARCHIVE_EXPERIMENTS)
    config = {
        "results_dir": "results",
        "experiments": "config/archive-test.tsv",
        "seeds": [0],
        "decisive_seeds": [],
        "synthetic": {
            "seed": 1, "sizes": {"train": 24, "valid": 8, "test": 8},
            "frames_per_video": 2, "videos_per_patient": 2, "video_overlap": 0.5,
        },
        "data": {"grouped_fractions": {"train": 0.6, "valid": 0.2, "test": 0.2}, "min_patients": 2},
        "model": {"imgsz": 64},
        "train": {"epochs": 1, "batch_size": 8, "nominal_batch": 8},
        "report": {"bootstrap_resamples": 20},
    }  # fmt: skip
    (source / CONFIG).write_text(yaml.safe_dump(config))
    _git(source, "init", "-q")
    _git(source, "add", "-A")
    _git(source, "commit", "-qm", "the tree under test")
    run = _snakemake(source, "--cores", "2")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    archive = tmp / "study.tar.gz"
    pack("results", archive, workdir=source)
    return tmp, source, archive


def _fresh_clone(tmp: Path, source: Path, name: str) -> Path:
    clone = tmp / name
    subprocess.run(["git", "clone", "-q", str(source), str(clone)], check=True)
    return clone


@pytest.mark.slow
def test_an_unpacked_study_rebuilds_its_paper_without_training(archived_study):
    tmp, source, archive = archived_study
    clone = _fresh_clone(tmp, source, "clone")
    time.sleep(1.1)  # the clone's files are older than the unpacking by a visible margin
    unpack(archive, clone)
    dry = _snakemake(clone, "-n")
    assert dry.returncode == 0, dry.stderr[-3000:]
    jobs = _job_counts(dry.stdout)
    assert jobs, dry.stdout[-3000:]
    ran = {rule for rule in jobs if rule.startswith(("train", "evaluate", "interference"))}
    assert not ran, f"an unpacked study must not retrain or re-evaluate: {jobs}"
    assert not {"convert_export", "generate_synthetic", "build_cache"} & set(jobs)
    build = _snakemake(clone, "--cores", "2", "--omit-from", "compile_pdf")
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    paper, rebuilt = source / "results" / "paper", clone / "results" / "paper"
    assert (rebuilt / "numbers.tex").read_bytes() == (paper / "numbers.tex").read_bytes()
    tables = sorted(p.name for p in (paper / "tables").glob("*.tex"))
    assert tables and tables == sorted(p.name for p in (rebuilt / "tables").glob("*.tex"))
    for name in tables:
        assert (rebuilt / "tables" / name).read_bytes() == (paper / "tables" / name).read_bytes()
    # the appendix says where the results came from, and names the commit both were built at
    commit = _git(source, "rev-parse", "HEAD").strip()
    prose = " ".join((rebuilt / "main.tex").read_text().split())
    assert "unpacked from the results archive study.tar.gz" in prose
    assert f"made at commit \\texttt{{{commit[:12]}}}" in prose
    assert f"\\texttt{{{commit[:12]}}}, clean tree" in prose
    # ... and the machine its runs trained on, as the training processes recorded it
    trained = json.loads((source / "results" / "provenance.json").read_text())["training"]
    assert [m["cpu_model"] for m in trained["machines"]] == [cpu_model()]
    assert trained["unrecorded_runs"] == 0
    assert f"made at commit \\texttt{{{commit[:12]}}} on {cpu_model()}, " in prose


@pytest.mark.slow
def test_the_appendix_names_the_commit_and_flags_a_dirty_tree(archived_study):
    tmp, source, _ = archived_study
    commit = _git(source, "rev-parse", "HEAD").strip()
    clean = " ".join((source / "results" / "paper" / "main.tex").read_text().split())
    assert f"Code & \\texttt{{{commit[:12]}}}, clean tree" in clean
    assert "differed from its commit" not in clean
    record = json.loads((source / "results" / "provenance.json").read_text())
    assert record["git"] == {"commit": commit, "dirty": False, "changed": 0, "changed_paths": []}
    assert record["versions"]["torch"]["installed"] == record["versions"]["torch"]["pinned"]
    clone = _fresh_clone(tmp, source, "dirty")
    unpack(archive_of(tmp), clone)
    with (clone / "README.md").open("a") as readme:
        readme.write("an uncommitted change\n")
    build = _snakemake(clone, "--cores", "1", "results/paper/main.tex")
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    dirty = " ".join((clone / "results" / "paper" / "main.tex").read_text().split())
    assert (
        f"Code & \\texttt{{{commit[:12]}}}, \\textbf{{with uncommitted changes}} (1 path" in dirty
    )
    assert "\\textbf{The working tree differed from its commit}" in dirty


def archive_of(tmp: Path) -> Path:
    return tmp / "study.tar.gz"


@pytest.mark.slow
def test_the_arxiv_source_builds_alone_to_the_same_page_count(archived_study, tmp_path):
    _, source, _ = archived_study
    paper = source / "results" / "paper"
    if not (paper / "main.pdf").exists():
        pytest.skip("no TeX here: the workflow built no PDF and no arXiv source")
    with tarfile.open(paper / "arxiv.tar.gz") as tar:
        names = sorted(tar.getnames())
        tar.extractall(tmp_path, filter="data")
    assert "main.tex" in names and "main.bbl" in names and "numbers.tex" in names
    assert all(n.endswith((".tex", ".bbl", ".pdf")) for n in names), names
    assert not [n for n in names if n.endswith(".pdf") and not n.startswith("figures/")]
    # plain pdflatex, no latexmk, no shell escape; rerun while it asks (as arXiv's AutoTeX does)
    for _ in range(4):
        run = subprocess.run(
            ["pdflatex", "-no-shell-escape", "-interaction=nonstopmode", "-halt-on-error",
             "main.tex"],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout[-3000:]
        if "Rerun to get" not in (tmp_path / "main.log").read_text(encoding="latin-1"):
            break
    pages = re.compile(r"Output written on main\.pdf \((\d+) pages?")
    alone = pages.search((tmp_path / "main.log").read_text(encoding="latin-1"))
    built = pages.search((paper / "main.log").read_text(encoding="latin-1"))
    assert alone and built and alone.group(1) == built.group(1)
    from echomtl.report.pdf import scan_log

    assert scan_log(tmp_path / "main.log") == []


@pytest.mark.slow
def test_a_change_that_reaches_the_runs_parameters_retrains_them(archived_study):
    tmp, source, archive = archived_study
    clone = _fresh_clone(tmp, source, "changed")
    unpack(archive, clone)
    config = yaml.safe_load((clone / CONFIG).read_text())
    config["train"]["epochs"] = 2
    (clone / CONFIG).write_text(yaml.safe_dump(config))
    jobs = _job_counts(_snakemake(clone, "-n").stdout)
    assert jobs.get("train") == 3 and jobs.get("evaluate") == 3, jobs


@pytest.mark.slow
def test_a_tampered_study_archive_is_refused_by_name(archived_study):
    tmp, source, archive = archived_study
    bad = _tampered(archive, tmp / "bad.tar.gz", "results/tidy.csv")
    clone = _fresh_clone(tmp, source, "tampered")
    with pytest.raises(ArchiveError, match="results/tidy.csv: SHA-256 differs"):
        unpack(bad, clone)
    assert not (clone / "results").exists()

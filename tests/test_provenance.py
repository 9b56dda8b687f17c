"""The provenance record (echomtl.report.provenance) and the appendix drawn from it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from echomtl.report.context import _hardware_text, _provenance, _training_hardware
from echomtl.report.provenance import (
    config_sha256,
    environment_pins,
    git_state,
    package_versions,
    provenance,
    training_machines,
)
from echomtl.training.machine import this_machine

ROOT = Path(__file__).resolve().parents[1]


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo, check=True, capture_output=True,
    )  # fmt: skip


def test_git_state_names_the_commit_and_sees_every_kind_of_change(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / ".gitignore").write_text("results/\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "one")
    state = git_state(tmp_path)
    assert len(state["commit"]) == 40 and state["dirty"] is False and state["changed"] == 0
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "tidy.csv").write_text("ignored output")
    assert git_state(tmp_path)["dirty"] is False  # ignored files are not changes
    (tmp_path / "a.py").write_text("x = 2\n")
    (tmp_path / "new.py").write_text("untracked\n")
    state = git_state(tmp_path)
    assert state["dirty"] is True and state["changed"] == 2
    assert state["changed_paths"] == ["a.py", "new.py"]


def test_outside_a_checkout_the_commit_is_unknown(tmp_path):
    assert git_state(tmp_path / "nowhere") == {
        "commit": None, "dirty": None, "changed": 0, "changed_paths": []
    }  # fmt: skip


def test_the_pins_are_the_environment_files_and_a_mismatch_is_printed(tmp_path):
    pins = environment_pins(ROOT / "environment.yml")
    assert {"torch", "torchvision", "snakemake", "numpy"} <= set(pins)
    versions = package_versions({"torch": pins["torch"], "no-such-package": "1.0"})
    assert versions["python"]["installed"].startswith("3.11")
    assert versions["torch"] == {"pinned": pins["torch"], "installed": pins["torch"]}
    assert versions["no-such-package"]["installed"] is None
    bad = tmp_path / "environment.yml"
    bad.write_text("dependencies:\n  - pip:\n      - torch>=2\n")
    with pytest.raises(ValueError, match="'torch>=2' is not pinned as name==version"):
        environment_pins(bad)


def test_the_config_hash_ignores_layout_and_sees_values():
    a = {"train": {"epochs": 9, "lr0": 0.02}, "seeds": [0]}
    b = {"seeds": [0], "train": {"lr0": 0.02, "epochs": 9}}
    assert config_sha256(a) == config_sha256(b)
    assert config_sha256(a) != config_sha256({**a, "seeds": [1]})


#: epochs.csv columns a training process writes about its machine (echomtl.training.machine)
MACHINE_HEADER = "epoch,seconds,cpu_model,cpu_cores,torch_threads,gpu_name\n"


def _epochs(tmp_path: Path, name: str, rows: str, header: str = MACHINE_HEADER) -> Path:
    path = tmp_path / name
    path.write_text(header + rows)
    return path


def _record(
    tmp_path: Path, git: dict, origin: dict | None = None, epochs: list[Path] | None = None
) -> dict:
    export = tmp_path / "export"
    (export / "train" / "labels").mkdir(parents=True, exist_ok=True)
    (export / "train" / "labels" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    records = tmp_path / "records.csv"
    records.write_text("image_path\n/x/a.png\n")
    benchmarks = []
    for seconds in (3600, 1800):  # two training jobs' Snakemake benchmark files
        path = tmp_path / f"train{seconds}.benchmark.tsv"
        path.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:00\t1.0\n")
        benchmarks.append(path)
    return provenance(
        git=git, config={"train": {"device": "cpu"}}, records=records, export=export,
        benchmarks=benchmarks, epochs=epochs or [],
        checkpoint={"file": "/w/yolov5n.pt", "sha256": "ab" * 32}, pins={"torch": "0.0.1"},
        origin=origin, out_json=tmp_path / "provenance.json",
    )  # fmt: skip


def test_the_appendix_names_the_commit_and_flags_a_dirty_tree(tmp_path):
    clean = _record(tmp_path, {"commit": "0123456789abcdef" * 2 + "01234567", "dirty": False,
                               "changed": 0, "changed_paths": []})  # fmt: skip
    rows = {k: str(v) for k, v in _provenance(clean)["rows"]}
    assert rows["Code"] == r"\texttt{0123456789ab}, clean tree"
    assert _provenance(clean)["dirty"] is False
    assert rows["Checkpoint"] == r"yolov5n.pt SHA-256 \texttt{abababababababab}"
    assert rows["Training"] == r"1.5\,h of wall time over 2 runs"
    assert rows["Results"] == "trained and evaluated by this build"
    # the installed torch is not the pin given here: the appendix says so
    assert r"\textbf{(pinned 0.0.1)}" in rows["Software"]
    dirty = _record(tmp_path, {"commit": "f" * 40, "dirty": True, "changed": 3,
                               "changed_paths": ["a", "b", "c"]})  # fmt: skip
    section = _provenance(dirty)
    assert section["dirty"] is True
    assert dict(section["rows"])["Code"] == (
        r"\texttt{ffffffffffff}, \textbf{with uncommitted changes} (3 paths differ from the commit)"
    )
    one = _record(tmp_path, {"commit": "f" * 40, "dirty": True, "changed": 1,
                             "changed_paths": ["a"]})  # fmt: skip
    assert dict(_provenance(one)["rows"])["Code"].endswith("(1 path differs from the commit)")


def test_results_unpacked_from_an_archive_name_it_and_the_machine_that_trained_them(tmp_path):
    made_on = {"machines": [{"cpu_model": "Training CPU", "cpu_cores": 64, "torch_threads": 8,
                             "gpu_name": "H100", "runs": 2, "epochs": 18}],
               "unrecorded_runs": 0}  # fmt: skip
    origin = {"archive": "study.tar.gz", "sha256": "cd" * 32, "commit": "e" * 40,
              "made_on": made_on}  # fmt: skip
    record = _record(tmp_path, {"commit": None, "dirty": None, "changed": 0,
                                "changed_paths": []}, origin)  # fmt: skip
    rows = {k: str(v) for k, v in _provenance(record)["rows"]}
    assert rows["Code"] == "not a git checkout: the commit is unknown"
    assert rows["Results"].startswith(
        r"unpacked from the results archive study.tar.gz (SHA-256 \texttt{cdcdcdcdcdcdcdcd}), "
        r"made at commit \texttt{eeeeeeeeeeee} on Training CPU, 64 cores, 8 torch threads per "
        r"job; GPU H100"
    )
    # the cost table names the machine the runs trained on, not the one that rebuilt the paper
    assert _training_hardware(record) == "Training CPU, 64 cores, 8 torch threads per job; GPU H100"
    assert rows["Hardware"].startswith("training: Training CPU, 64 cores, 8 torch threads per job;")
    assert "; this record and the paper: " in rows["Hardware"]
    # an archive made before the keys were renamed still names its machine
    old = {**origin, "made_on": {"cpu": "Old CPU", "cores": 4, "gpu": None}}
    assert _training_hardware({**record, "results_origin": old}) == "Old CPU, 4 cores"
    # unpacked on the machine that trained them: said once
    here = {**this_machine("cpu"), "runs": 2, "epochs": 18}
    local = {**origin, "made_on": {"machines": [here], "unrecorded_runs": 0}}
    hardware = str(dict(_provenance({**record, "results_origin": local})["rows"])["Hardware"])
    assert hardware.endswith("per job; the paper was built on the same machine")
    # runs the archive's study did not record are still counted after unpacking
    some = {**origin, "made_on": {**made_on, "unrecorded_runs": 3}}
    assert _training_hardware({**record, "results_origin": some}).endswith(
        "; GPU H100 (3 runs did not record theirs)"
    )
    dirty = _record(tmp_path, {"commit": None, "dirty": None, "changed": 0, "changed_paths": []},
                    {**origin, "dirty": True})  # fmt: skip
    text = dict(_provenance(dirty)["rows"])["Results"]
    assert r"made at commit \texttt{eeeeeeeeeeee} with uncommitted changes on" in str(text)


def test_the_machines_the_runs_trained_on_come_from_their_own_epochs(tmp_path):
    """Each training process wrote its machine beside its epochs: the record counts each
    machine's runs and epochs (a run resumed on another node counts on both), and the runs that
    recorded none; the appendix and the cost table name the training machines, not the one
    that wrote the record (a cluster's report node), unless they are the same."""
    gpu_node = "Xeon,16,4,H100\n"
    a = _epochs(tmp_path, "a.csv", f"0,1,{gpu_node}1,1,{gpu_node}")
    b = _epochs(tmp_path, "b.csv", f"0,1,{gpu_node}1,1,EPYC,8,4,A100\n")  # resumed elsewhere
    old = _epochs(tmp_path, "old.csv", "0,1\n", header="epoch,seconds\n")
    record = _record(tmp_path, {"commit": "a" * 40, "dirty": False, "changed": 0,
                                "changed_paths": []}, epochs=[a, b, old])  # fmt: skip
    saved = json.loads((tmp_path / "provenance.json").read_text())
    assert saved["training"]["machines"] == [
        {"cpu_model": "Xeon", "cpu_cores": 16, "torch_threads": 4, "gpu_name": "H100",
         "runs": 2, "epochs": 3},
        {"cpu_model": "EPYC", "cpu_cores": 8, "torch_threads": 4, "gpu_name": "A100",
         "runs": 1, "epochs": 1},
    ]  # fmt: skip
    assert saved["training"]["unrecorded_runs"] == 1
    hardware = _training_hardware(record)
    assert hardware == (
        "Xeon, 16 cores, 4 torch threads per job; GPU H100 (3 epochs of 2 runs); "
        "EPYC, 8 cores, 4 torch threads per job; GPU A100 (1 epoch of 1 run) "
        "(1 run did not record its)"
    )
    rows = {k: str(v) for k, v in _provenance(record)["rows"]}
    assert rows["Hardware"] == f"training: {hardware}; this record and the paper: " + (
        str(_hardware_text(record["hardware"]))
    )


def test_a_study_trained_on_the_machine_that_built_it_says_so_once(tmp_path):
    here = this_machine("cpu")
    line = f"0,1,{here['cpu_model']},{here['cpu_cores']},1,\n"
    record = _record(tmp_path, {"commit": "a" * 40, "dirty": False, "changed": 0,
                                "changed_paths": []},
                     epochs=[_epochs(tmp_path, "a.csv", line)])  # fmt: skip
    rows = {k: str(v) for k, v in _provenance(record)["rows"]}
    assert rows["Hardware"] == (
        f"{_hardware_text(record['hardware'])}, 1 torch thread per job; "
        "the paper was built on the same machine"
    )


def test_runs_that_recorded_no_machine_are_not_given_one(tmp_path):
    old = _epochs(tmp_path, "old.csv", "0,1\n", header="epoch,seconds\n")
    record = _record(tmp_path, {"commit": "a" * 40, "dirty": False, "changed": 0,
                                "changed_paths": []}, epochs=[old])  # fmt: skip
    assert record["training"]["machines"] == [] and record["training"]["unrecorded_runs"] == 1
    assert _training_hardware(record) == (
        "not recorded by the runs (trained before they recorded it); this record was written "
        f"on {_hardware_text(record['hardware'])}"
    )


def test_a_malformed_machine_cell_is_an_error_naming_the_file(tmp_path):
    """A run resumed on newer code has empty machine cells on its older epochs (cores read as
    floats): still whole numbers, counted; a cell that is not a whole number is refused."""
    resumed = _epochs(tmp_path, "resumed.csv", "0,1,,,,\n1,1,EPYC,2,1,\n")
    assert training_machines([resumed])["machines"] == [
        {"cpu_model": "EPYC", "cpu_cores": 2, "torch_threads": 1, "gpu_name": None,
         "runs": 1, "epochs": 1}
    ]  # fmt: skip
    bad = _epochs(tmp_path, "bad.csv", "0,1,EPYC,two,1,\n")
    with pytest.raises(ValueError, match=r"bad\.csv: column cpu_cores must be a whole number"):
        training_machines([bad])

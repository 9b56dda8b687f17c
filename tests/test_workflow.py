"""The workflow end to end on a tiny config, and the DAG of every shipped config."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .checkpoints import stub_weights_env

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

TINY_EXPERIMENTS = """\
experiment\tgroup\tmethod\tmodel\tw_det\tw_cls\talpha\taugment\tdescription\tsplit
det_only\tdet_only\tfixed\tdet_only\t1.0\t0.0\t\tfalse\tdetector alone
fixed\tfixed\tfixed\tmultitask\t1.0\t0.01\t\tfalse\tfixed weights
manual_wcls0.1\tmanual\tfixed\tmultitask\t1.0\t0.1\t\tfalse\tgrid point
manual_wcls1.0\tmanual\tfixed\tmultitask\t1.0\t1.0\t\tfalse\tgrid point
gradnorm_a1.0\tgradnorm_a1.0\tgradnorm\tmultitask\t1.0\t0.01\t1.0\tfalse\tGradNorm 1.0
gradnorm_a1.5\tgradnorm_a1.5\tgradnorm\tmultitask\t1.0\t0.01\t1.5\tfalse\tGradNorm 1.5
gradnorm_a1.5_aug\tgradnorm_a1.5_aug\tgradnorm\tmultitask\t1.0\t0.01\t1.5\ttrue\taugmented
dual_backbone\tdual_backbone\tfixed\tdual_backbone\t1.0\t1.0\t\tfalse\ttwo networks
stopgrad\tstopgrad\tfixed\tstopgrad\t1.0\t1.0\t\tfalse\tdetached head
pcgrad\tpcgrad\tpcgrad\tmultitask\t1.0\t0.01\t\tfalse\tPCGrad\t
gradnorm_a1.5_original\tsplit\tgradnorm\tmultitask\t1.0\t0.01\t1.5\tfalse\tleaky split\toriginal
"""


def run_snakemake(*args: str, env: dict | None = None, timeout: int = 600):
    return subprocess.run(
        [SNAKEMAKE, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **stub_weights_env(), **(env or {})},
    )


def tiny_config(tmp: Path) -> Path:
    (tmp / "experiments.tsv").write_text(TINY_EXPERIMENTS)
    config = {
        "results_dir": str(tmp / "results"),
        "experiments": str(tmp / "experiments.tsv"),
        "synthetic": {
            "seed": 1, "sizes": {"train": 24, "valid": 8, "test": 8},
            "frames_per_video": 2, "videos_per_patient": 2, "video_overlap": 0.5,
        },
        "data": {
            "grouped_fractions": {"train": 0.6, "valid": 0.2, "test": 0.2},
            "min_patients": 2,  # 10 patients in all: a tiny study, not a protocol
        },
        "model": {"imgsz": 64},
        "train": {"epochs": 1, "batch_size": 8, "nominal_batch": 8},
        "report": {"bootstrap_resamples": 20},
    }  # fmt: skip
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiny_study")
    config = tiny_config(tmp)
    result = run_snakemake("--cores", "2", "--configfile", str(config), timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return tmp / "results", result


@pytest.mark.slow
def test_tiny_study_produces_metrics_for_every_run(tiny_study):
    results, _ = tiny_study
    experiments = ("det_only", "fixed", "gradnorm_a1.5", "dual_backbone", "stopgrad", "pcgrad")
    for experiment in (*experiments, "gradnorm_a1.5_original"):
        run = results / "runs" / experiment / "seed0"
        for split in ("valid", "test"):
            metrics = json.loads((run / f"metrics_{split}.json").read_text())
            assert metrics["split"] == split and metrics["experiment"] == experiment
            assert 0.0 <= metrics["detection"]["map50"] <= 1.0
            assert (metrics["classification"] is None) == (experiment == "det_only")
            assert metrics["versions"]["torch"].startswith("2.14.1")
        assert (run / "train.benchmark.tsv").exists()
        assert "epoch 1/1" in (run / "train.log").read_text()


@pytest.mark.slow
def test_the_chosen_manual_weight_trains_the_decisive_seeds_after_its_selection(tiny_study):
    results, _ = tiny_study
    chosen = json.loads((results / "selection" / "manual.json").read_text())["chosen"]
    for member in ("manual_wcls0.1", "manual_wcls1.0"):
        ran = [(results / "runs" / member / f"seed{s}" / "metrics_test.json").exists()
               for s in (0, 1, 2)]  # fmt: skip
        assert ran == [True, member == chosen, member == chosen], member
    tidy = pd.read_csv(results / "tidy.csv")
    assert set(tidy.loc[tidy.experiment == chosen, "seed"]) == {0, 1, 2}
    # the selection read seed 0 alone: the seeds every grid point ran; the paper says so
    assert json.loads((results / "selection" / "manual.json").read_text())["seeds"] == [0]
    prose = " ".join((results / "paper" / "main.tex").read_text().split())
    assert "The choice was made on seed 0, which every grid point ran; the chosen point" in prose
    assert "then trained seeds 1 and 2 as well" in prose


@pytest.mark.slow
def test_tiny_study_console_shows_defects_and_epochs(tiny_study):
    _, result = tiny_study
    console = result.stdout + result.stderr
    assert "[echomtl data] 40 images read (train " in console and "defects: none" in console
    for experiment in ("fixed", "stopgrad", "pcgrad"):
        line = f"[echomtl train] {experiment} seed 0: epoch 1/1 det "
        assert line in console, experiment
    assert "ETA" in console


@pytest.mark.slow
def test_tiny_study_builds_the_paper(tiny_study):
    results, _ = tiny_study
    paper = results / "paper"
    tidy = pd.read_csv(results / "tidy.csv")
    assert {"experiment", "group", "seed", "split", "metric", "value"} <= set(tidy.columns)
    assert json.loads((results / "selection" / "manual.json").read_text())
    assert r"\section" in (paper / "main.tex").read_text()
    # the split axis: the variant is in its own table, not among the study's comparisons
    split_table = (paper / "tables" / "split.tex").read_text()
    assert "export's split" in split_table and "grouped holdout" in split_table
    assert not (paper / "stats" / "paired" / "gradnorm_a1.5_original.json").exists()
    assert "original" not in (paper / "tables" / "main.tex").read_text()
    assert r"\newcommand" in (paper / "numbers.tex").read_text()
    # the provenance's training time covers every training job, the chosen weight's later seeds
    record = json.loads((results / "provenance.json").read_text())
    assert record["training"]["runs"] == len(list(results.glob("runs/*/seed*/train.benchmark.tsv")))
    # ... and every run recorded the machine it trained on (each run's epochs.csv is an input)
    (machine,) = record["training"]["machines"]
    assert machine["runs"] == record["training"]["runs"]
    assert record["training"]["unrecorded_runs"] == 0
    if shutil.which("latexmk") is None:
        pytest.skip("latexmk not installed: the PDF step is not in the DAG")
    assert (paper / "main.pdf").read_bytes().startswith(b"%PDF")
    from echomtl.report.pdf import scan_log

    assert scan_log(paper / "main.log") == []  # no undefined reference, citation or missing file


@pytest.mark.slow
def test_single_figure_is_one_rule(tiny_study):
    results, _ = tiny_study
    config = results.parent / "tiny.yaml"
    target = results / "paper" / "figures" / "per_class_ap.pdf"
    result = run_snakemake("-n", "--configfile", str(config), "--forcerun", "figure", str(target))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "figure" in result.stdout and "train" not in result.stdout.split("Job stats")[-1]


def test_bad_config_fails_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"epochz": 3}}))
    result = run_snakemake("-n", "--configfile", str(bad))
    assert result.returncode != 0
    assert "train: Additional properties are not allowed ('epochz' was unexpected)" in (
        result.stdout + result.stderr
    )


def test_default_config_dag_resolves():
    result = run_snakemake("-n", "--quiet", "rules")
    assert result.returncode == 0, result.stderr[-3000:]


def fake_export(root: Path, splits: tuple[str, ...]) -> Path:
    """An export's folder layout (no image: the DAG is resolved without reading data)."""
    for split in splits:
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
    return root


@pytest.mark.parametrize("splits", [("train", "valid", "test"), ("train", "valid")])
def test_paper_config_dag_resolves(tmp_path, splits):
    export = fake_export(tmp_path / "export", splits)
    result = run_snakemake(
        "-n", "--configfile", "config/paper.yaml", env={"REGURG_DATA": str(export)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for rule in ("train", "evaluate", "compile_pdf" if shutil.which("latexmk") else "render_paper"):
        assert rule in result.stdout
    # the split variant (the export's own split) is evaluated on what that split has
    variant_rule = "evaluate" if "test" in splits else "evaluate_available"
    assert f"rule {variant_rule}:" in result.stdout
    variant = result.stdout.split("runs/gradnorm_a1.5_original/seed0/metrics_valid.json")
    assert len(variant) > 1
    assert ("gradnorm_a1.5_original/seed0/metrics_test.json" in result.stdout) == ("test" in splits)


def test_study_on_an_export_split_without_test_fails_at_parse_time(tmp_path):
    export = fake_export(tmp_path / "export", ("train", "valid"))
    overlay = tmp_path / "original.yaml"
    table = tmp_path / "experiments.tsv"  # the study without its split variant
    rows = (ROOT / "config" / "experiments.tsv").read_text().splitlines(keepends=True)
    table.write_text("".join(r for r in rows if not r.rstrip("\n").endswith("\toriginal")))
    overlay.write_text(
        yaml.safe_dump({"experiments": str(table), "data": {"split_scheme": "original"}})
    )
    result = run_snakemake(
        "-n", "--quiet", "rules", "--configfile", "config/paper.yaml", str(overlay),
        env={"REGURG_DATA": str(export)},
    )  # fmt: skip
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "has no test split" in output and "'grouped'" in output


@pytest.mark.slow
def test_snakemake_report_bundles_figures(tiny_study):
    results, _ = tiny_study
    config = results.parent / "tiny.yaml"
    report = results / "report.html"
    result = run_snakemake("--configfile", str(config), "--report", str(report))
    assert result.returncode == 0, result.stderr[-3000:]
    assert report.stat().st_size > 100_000
    assert "provenance.json" in report.read_text()  # the provenance record, under its category


@pytest.mark.parametrize(
    "overlay,expected",
    [
        ({"data": {"grouped_fractions": {"train": 0.7, "valid": 0.2, "test": 0.2}}},
         "data.grouped_fractions: split fractions must sum to 1"),
        ({"data": {"grouped_fractions": {"train": 0.8, "valid": 0.0, "test": 0.2}}},
         "data.grouped_fractions.valid: must be > 0"),
    ],
)  # fmt: skip
def test_bad_split_fractions_fail_before_any_job(tmp_path, overlay, expected):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(overlay))
    result = run_snakemake("-n", "--quiet", "rules", "--configfile", str(bad))
    assert result.returncode != 0 and expected in result.stdout + result.stderr


def test_class_names_in_another_order_than_the_export_fail_before_any_job(tmp_path):
    export = fake_export(tmp_path / "export", ("train", "valid", "test"))
    (export / "data.yaml").write_text(yaml.safe_dump({"names": ["MR", "AR", "PR", "TR"]}))
    result = run_snakemake(
        "-n", "--quiet", "rules", "--configfile", "config/paper.yaml",
        env={"REGURG_DATA": str(export)},
    )  # fmt: skip
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "data.class_names:" in output and "order matters" in output


TINY_CV_EXPERIMENTS = "\n".join(
    line
    for line in TINY_EXPERIMENTS.splitlines()
    if line.split("\t")[0]
    in ("experiment", "det_only", "fixed", "manual_wcls0.1", "manual_wcls1.0", "gradnorm_a1.0",
        "gradnorm_a1.5", "stopgrad", "gradnorm_a1.5_original")
) + "\n"  # fmt: skip


@pytest.fixture(scope="module")
def tiny_cv_study(tmp_path_factory):
    """The tiny study under the cross-validated protocol: 2 folds, manual grid per fold."""
    tmp = tmp_path_factory.mktemp("tiny_cv_study")
    config_path = tiny_config(tmp)
    (tmp / "experiments.tsv").write_text(TINY_CV_EXPERIMENTS)
    config = yaml.safe_load(config_path.read_text())
    config["data"].update(split_scheme="cv", cv_folds=2, cv_valid_fraction=0.4)
    config_path.write_text(yaml.safe_dump(config))
    result = run_snakemake("--cores", "2", "--configfile", str(config_path), timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return tmp / "results"


def _split_patients(path: Path) -> dict[str, set[str]]:
    frame = pd.read_csv(path)
    return {
        s: set(frame.loc[frame["split"] == s, "patient_id"]) for s in ("train", "valid", "test")
    }


@pytest.mark.slow
def test_cv_folds_are_patient_disjoint_and_pool_every_image_once(tiny_cv_study):
    results = tiny_cv_study
    records = pd.read_csv(results / "data" / "records.csv")
    test_fold = {}
    for fold in (0, 1):
        split_file = results / "data" / "splits" / f"cv-fold{fold}.csv"
        parts = _split_patients(split_file)
        assert not parts["test"] & (parts["train"] | parts["valid"])
        assert not parts["valid"] & parts["train"] and parts["valid"]
        frame = pd.read_csv(split_file)
        test_fold.update(
            {Path(p).name: fold for p in frame.loc[frame.split == "test", "image_path"]}
        )
        run = results / "runs" / "gradnorm_a1.5" / "seed0" / f"fold{fold}"
        for split in ("valid", "test"):
            assert json.loads((run / f"metrics_{split}.json").read_text())["fold"] == fold
    pooled = json.loads(
        (results / "runs" / "gradnorm_a1.5" / "seed0" / "predictions_test.json").read_text()
    )
    names = [im["name"] for im in pooled["images"]]
    assert sorted(names) == sorted(Path(p).name for p in records["image_path"])
    assert all(im["fold"] == test_fold[im["name"]] for im in pooled["images"])
    metrics = json.loads(
        (results / "runs" / "gradnorm_a1.5" / "seed0" / "metrics_test.json").read_text()
    )
    assert metrics["fold"] == "pooled" and metrics["n_images"] == len(records)
    assert [f["fold"] for f in metrics["folds"]] == [0, 1]
    # the split variant stays a holdout run on the export's own split
    assert (results / "runs" / "gradnorm_a1.5_original" / "seed0" / "metrics_valid.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("selection_file", "composite_name"),
    [
        ("manual.json", "manual_per_fold"),  # a grid group
        ("choices/gradnorm_alpha.json", "gradnorm_alpha_per_fold"),  # choices among groups
        ("choices/front_detection.json", "front_detection_per_fold"),
    ],
)  # fmt: skip
def test_cv_choices_are_made_per_fold_and_pooled_from_the_choices(
    tiny_cv_study, selection_file, composite_name
):
    results = tiny_cv_study
    selection = json.loads((results / "selection" / selection_file).read_text())
    assert selection["chosen"] == composite_name and len(selection["per_fold"]) == 2
    assert selection["protocol"] == "cv"
    composite = json.loads(
        (results / "runs" / composite_name / "seed0" / "predictions_test.json").read_text()
    )
    for entry in selection["per_fold"]:
        fold, chosen = entry["fold"], entry["chosen"]
        source = json.loads(
            (
                results / "runs" / chosen / "seed0" / f"fold{fold}" / "predictions_test.json"
            ).read_text()
        )
        pooled = [
            {k: v for k, v in im.items() if k != "fold"}
            for im in composite["images"]
            if im["fold"] == fold
        ]
        assert pooled == source["images"]


@pytest.mark.slow
def test_cv_the_chosen_manual_weight_trains_the_decisive_seeds_on_its_folds(tiny_cv_study):
    results = tiny_cv_study
    selection = json.loads((results / "selection" / "manual.json").read_text())
    for seed in (1, 2):
        assert (results / "runs" / "manual_per_fold" / f"seed{seed}" / "metrics_test.json").exists()
        for entry in selection["per_fold"]:
            for member in ("manual_wcls0.1", "manual_wcls1.0"):
                run = results / "runs" / member / f"seed{seed}" / f"fold{entry['fold']}"
                assert (run / "metrics_test.json").exists() == (member == entry["chosen"])


@pytest.mark.slow
def test_cv_paper_reports_the_protocol_and_per_fold_spread(tiny_cv_study):
    paper = tiny_cv_study / "paper"
    tidy = pd.read_csv(tiny_cv_study / "tidy.csv")
    assert {"fold0/map50", "fold1/map50"} <= set(tidy.loc[tidy.experiment == "fixed", "metric"])
    assert "valid" not in set(tidy.loc[tidy.experiment == "fixed", "split"])
    main = (paper / "main.tex").read_text()
    assert r"\subsection{Evaluation protocol}" in main and "cross-validation" in main
    table = (paper / "tables" / "main.tex").read_text()
    assert "per fold" in table and "Manual weights (chosen per fold)" in table
    assert "Chosen in folds" in (paper / "tables" / "selection.tex").read_text()
    # GradNorm's alpha is chosen on each fold's validation part, as the grid's weight is
    prose = " ".join(main.split())
    assert "on each fold's validation part: the folds chose" in prose
    assert "\\textbackslash" not in main  # no LaTeX command escaped into text
    assert "GradNorm ($\\alpha$ chosen per fold)" in (paper / "tables" / "tuning.tex").read_text()
    assert "CV fold 2" in (paper / "tables" / "dataset.tex").read_text()
    # the provenance's training time covers every fold's training job, the later seeds' too
    record = json.loads((tiny_cv_study / "provenance.json").read_text())
    runs = tiny_cv_study / "runs"
    jobs = [
        *runs.glob("*/seed*/fold*/train.benchmark.tsv"),
        *runs.glob("*/seed*/train.benchmark.tsv"),
    ]
    assert record["training"]["runs"] == len(jobs) > 0  # the split variant's holdout run too
    assert sum(m["runs"] for m in record["training"]["machines"]) == len(jobs)
    if shutil.which("latexmk") is None:
        pytest.skip("latexmk not installed: the PDF step is not in the DAG")
    from echomtl.report.pdf import scan_log

    assert scan_log(paper / "main.log") == []


def test_real_cpu_config_dag_is_cross_validated(tmp_path):
    export = fake_export(tmp_path / "export", ("train", "valid"))
    result = run_snakemake(
        "-n", "--configfile", "config/real-cpu.yaml", env={"REGURG_DATA": str(export)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    stats = result.stdout.split("Job stats")[-1]
    counts = {
        line.split()[0]: int(line.split()[1])
        for line in stats.splitlines()[3:]
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }
    # the decisive set and the init axis (config/experiments-real-cpu.tsv): 13 cross-validated
    # experiments, 3 of them from random weights, on 3 folds; the 4 decisive runs (isolated
    # detector, view alone, fixed, reference) on a second seed (decisive_seeds); the split variant.
    # The chosen manual weight's second seed (3 more) appears only after the checkpoint.
    assert counts["train_fold"] == (13 + 4) * 3 and counts["pool_folds"] == 13 + 4
    assert counts["train"] == 1


def test_cv_grid_group_mixing_augmentation_fails_at_parse_time(tmp_path):
    table = tmp_path / "experiments.tsv"
    table.write_text(
        TINY_CV_EXPERIMENTS.replace(
            "manual_wcls1.0\tmanual\tfixed\tmultitask\t1.0\t1.0\t\tfalse",
            "manual_wcls1.0\tmanual\tfixed\tmultitask\t1.0\t1.0\t\ttrue",
        )
    )
    overlay = tmp_path / "cv.yaml"
    overlay.write_text(
        yaml.safe_dump({"experiments": str(table), "data": {"split_scheme": "cv", "cv_folds": 2}})
    )
    result = run_snakemake("-n", "--quiet", "rules", "--configfile", str(overlay))
    assert result.returncode != 0
    assert "may differ only in w_det, w_cls, alpha; they differ in augment" in (
        result.stdout + result.stderr
    )


@pytest.mark.parametrize(
    "weights,expected",
    [
        (None, "init 'pretrained' but config model.weights is null"),
        ("/nonexistent/yolov5n.pt", "model.weights: '/nonexistent/yolov5n.pt' is not a file"),
    ],
)
def test_pretrained_start_without_a_checkpoint_fails_before_any_job(tmp_path, weights, expected):
    header = "experiment\tgroup\tmethod\tmodel\tw_det\tw_cls\talpha\taugment\tinit\n"
    (tmp_path / "e.tsv").write_text(
        header
        + "det_only\tdet_only\tfixed\tdet_only\t1.0\t0.0\t\tfalse\tpretrained\n"
        + "gradnorm_a1.5\tgradnorm_a1.5\tgradnorm\tmultitask\t1.0\t0.01\t1.5\tfalse\t\n"
    )
    overlay = tmp_path / "o.yaml"
    overlay.write_text(
        yaml.safe_dump({"experiments": str(tmp_path / "e.tsv"), "model": {"weights": weights}})
    )
    result = run_snakemake("-n", "--quiet", "rules", "--configfile", str(overlay))
    assert result.returncode != 0 and expected in result.stdout + result.stderr


def test_wrong_scale_checkpoint_fails_before_any_job(tmp_path):
    overlay = tmp_path / "o.yaml"  # the default study (yolov5n) given a yolov5s file
    overlay.write_text(
        yaml.safe_dump({"model": {"weights": stub_weights_env()["YOLOV5S_WEIGHTS"]}})
    )
    result = run_snakemake("-n", "--quiet", "rules", "--configfile", str(overlay))
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "config model.weights:" in output
    assert "a yolov5s checkpoint, but config model.scale is 'n'" in output

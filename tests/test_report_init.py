"""The init axis in the report: runs of the other start are paired with their study runs, kept
out of the study's own comparisons, and reported in their own table and section."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "report"))
import report_fixture as rf  # noqa: E402

from echomtl.report import outputs, tables  # noqa: E402
from echomtl.report.labels import experiment_label  # noqa: E402
from echomtl.study import Study

SCRATCH = [f"{e}_scratch" for e in rf.INIT_VARIANTS]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("init")
    study = rf.make_study(root, n_images=16, init_axis=True)
    report = rf.build_report(study, root / "out", n_resamples=10, figures=False,
                             checkpoint=rf.CHECKPOINT)  # fmt: skip
    return study, report


def test_init_variants_pair_with_their_study_runs_and_leave_its_comparisons(built):
    study, report = built
    res = report["results"]
    assert res.study.start == "pretrained"
    assert res.study.init_pairs == [(e.removesuffix("_scratch"), e) for e in SCRATCH]
    main = [res.chosen[g] for g in res.study.main_groups]
    assert not set(SCRATCH) & set(main) and {"det_only", "fixed"} <= set(main)
    alphas = res.study.alpha_variants
    assert "gradnorm_a1.5_scratch" not in alphas and "gradnorm_a1.5" in alphas
    assert "fixed_scratch" not in res.study.front_runs
    flags = study.plan.flags
    assert flags["init"] and flags["alpha"]
    planned = outputs.planned(Study.from_table(study.experiments.drop(SCRATCH), "gradnorm_a1.5"))
    assert "init" not in [o.name for o in planned]


def test_labels_name_the_minority_start(built):
    study, _ = built
    assert "from scratch" in experiment_label(study.experiments, "fixed_scratch")
    assert "scratch" not in experiment_label(study.experiments, "fixed")


def test_init_table_and_section(built, tmp_path):
    study, report = built
    text = tables.table_init(report["results"], tmp_path / "init.tex").read_text()
    assert text.count("random weights") == len(SCRATCH)
    assert text.count("COCO checkpoint") == len(SCRATCH)
    tex = report["tex"].read_text()
    assert "\\label{tab:init}" in tex and "from the official COCO-pretrained" in tex
    assert rf.CHECKPOINT["sha256"][:16] in tex and "trained from scratch" not in tex
    assert not re.search(r"\\allowbreak[A-Za-z0-9]", tex)  # the digest never joins a macro name
    assert report["context"]["has"]["init"] and report["context"]["has"]["pretrained"]


def test_a_study_from_scratch_says_so(tmp_path):
    study = rf.make_study(tmp_path, n_images=16)
    report = rf.build_report(study, tmp_path / "out", n_resamples=10, figures=False)
    tex = report["tex"].read_text()
    assert "trained from scratch" in tex and "\\label{tab:init}" not in tex
    assert not report["context"]["has"]["init"]

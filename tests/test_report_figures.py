"""Figures of echomtl.report.figures: every figure is written as PDF and PNG, deterministically."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "report"))
import report_fixture as rf  # noqa: E402

from echomtl.report import figures as fig  # noqa: E402

EXPS = ["det_only", "fixed", "gradnorm_a1.0", "gradnorm_a1.5", "gradnorm_a1.5_aug", "dual_backbone"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("figs")
    study = rf.make_study(root, seeds=[0, 1], experiments=EXPS, n_images=12)
    res = rf.build_results(study, root / "out", n_resamples=5)
    return study, res, root / "out" / "figures"


def _ok(paths):
    assert [p.suffix for p in paths] == [".pdf", ".png"]
    for p in paths:
        assert p.exists() and p.stat().st_size > 1000, p
    assert paths[0].read_bytes().startswith(b"%PDF")
    assert paths[1].read_bytes().startswith(b"\x89PNG")


def test_run_figures(built):
    study, res, out = built
    labels = {e: res.plain_label(e) for e in EXPS}
    multitask = [e for e in EXPS if study.experiments.at[e, "model"] == "multitask"]
    gradnorm = [e for e in EXPS if e.startswith("gradnorm")]
    _ok(fig.fig_training_curves(study.files("epochs.csv"), out / "curves", labels, EXPS))
    _ok(fig.fig_gradnorm_weights(study.files("steps.csv", gradnorm), out / "weights", labels))
    _ok(
        fig.fig_gradient_diagnostics(
            study.files("diagnostics.csv", multitask), out / "diag", labels
        )
    )


def test_result_figures(built):
    _, res, out = built
    _ok(fig.fig_main_comparison(res, out / "main"))
    _ok(fig.fig_alpha_sensitivity(res, out / "alpha"))
    _ok(fig.fig_augmentation(res, out / "aug"))
    _ok(fig.fig_per_class_ap(res, out / "perclass"))


def test_prediction_figures(built):
    study, _, out = built
    run = study.runs["gradnorm_a1.5", 0]
    _ok(
        fig.fig_detection_examples(
            run / "predictions_test.json", study.records_csv, out / "examples",
            metrics_json=run / "metrics_test.json",
        )
    )  # fmt: skip
    _ok(
        fig.fig_confusion_matrix(
            study.experiment_files("gradnorm_a1.5", "metrics_test.json"), out / "cm"
        )
    )


def test_figures_are_deterministic(built):
    _, res, out = built
    a = fig.fig_main_comparison(res, out / "det_a")
    b = fig.fig_main_comparison(res, out / "det_b")
    assert a[0].read_bytes() == b[0].read_bytes()
    assert a[1].read_bytes() == b[1].read_bytes()


def test_missing_inputs_fail_clearly(built, tmp_path):
    study, res, out = built
    with pytest.raises(ValueError, match="no 'W' rows"):
        fig.fig_gradient_diagnostics(
            study.experiment_files("dual_backbone", "diagnostics.csv"), out / "x"
        )
    with pytest.raises(ValueError, match="no classification"):
        fig.fig_confusion_matrix(study.experiment_files("det_only", "metrics_test.json"), out / "x")
    with pytest.raises(ValueError, match="no run files"):
        fig.fig_training_curves([], out / "x")
    preds = json.loads((study.runs["fixed", 0] / "predictions_test.json").read_text())
    preds["images"][0]["name"] = "unknown.png"
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps(preds))
    with pytest.raises(ValueError, match="unknown.png"):
        fig.fig_detection_examples(bad, study.records_csv, out / "x", n_images=24)

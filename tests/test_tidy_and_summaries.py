"""The tidy table (echomtl.evaluation.tidy), validation selection and the report's summaries."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "report"))
import report_fixture as rf  # noqa: E402

from echomtl.atomic import run_id_from_path  # noqa: E402
from echomtl.evaluation import selection  # noqa: E402
from echomtl.evaluation import tidy as tidy_mod  # noqa: E402
from echomtl.report import summaries  # noqa: E402

EXPS = ["det_only", "fixed", "manual_wcls0.05", "manual_wcls0.2", "gradnorm_a1.5", "dual_backbone"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return rf.make_study(
        tmp_path_factory.mktemp("agg"), seeds=[0, 1], experiments=EXPS, n_images=12
    )


def _metric_files(study):
    return [d / f"metrics_{s}.json" for d in study.runs.values() for s in ("valid", "test")]


@pytest.fixture(scope="module")
def tidy(study):
    return tidy_mod.collect_metrics(
        _metric_files(study),
        study.experiments,
        steps_files=study.files("steps.csv"),
        benchmark_files=study.files("train.benchmark.tsv"),
        param_counts=study.param_counts,
    )


def test_tidy_table_shape_and_metrics(study, tidy, tmp_path):
    assert list(tidy.columns) == tidy_mod.TIDY_COLUMNS
    metrics = set(tidy.metric)
    for m in (
        "map50",
        "map50_95",
        "precision",
        "recall",
        "f1",
        "ap50/AR",
        "ap50_95/TR",
        "view_accuracy",
        "view_macro_f1",
        "n_parameters",
        "train_seconds",
        "loss_det_initial",
        "weight_cls_final",
    ):
        assert m in metrics, m
    assert set(tidy.split) == {"valid", "test", "train", "model"}
    manual = tidy[tidy.experiment == "manual_wcls0.2"]
    assert set(manual.group) == {"manual"}
    det = tidy[(tidy.experiment == "det_only") & (tidy.split == "test")]
    assert "view_accuracy" not in set(det.metric)
    assert (
        len(tidy[(tidy.experiment == "fixed") & (tidy.metric == "n_parameters")]) == 2
    )  # one per seed
    secs = tidy[(tidy.experiment == "fixed") & (tidy.metric == "train_seconds")].value
    assert (secs >= 100).all()
    out = tidy_mod.write_tidy(tidy, tmp_path / "t.csv")
    back = tidy_mod.read_tidy(out)
    pd.testing.assert_frame_equal(back, tidy, check_dtype=False, check_exact=False, rtol=1e-8)


def test_collect_metrics_errors(study, tmp_path):
    files = _metric_files(study)
    with pytest.raises(ValueError, match="second metrics file"):
        tidy_mod.collect_metrics(files + files[:1], study.experiments)
    other = tmp_path / "m.json"
    data = json.loads(files[0].read_text())
    data["experiment"] = "not_configured"
    other.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="not in the experiments table"):
        tidy_mod.collect_metrics([other], study.experiments)
    with pytest.raises(ValueError, match="no metrics"):
        tidy_mod.collect_metrics([], study.experiments)


def test_select_group_uses_validation_only(study, tidy, tmp_path):
    sel = selection.select_group(tidy, study.experiments, "manual", tmp_path / "manual.json")
    scores = {c["experiment"]: c["score"] for c in sel["candidates"]}
    assert sel["chosen"] == max(scores, key=scores.get)
    assert sel["varying"] == ["w_cls"]
    assert "validation" in sel["score"]["definition"]
    assert json.loads((tmp_path / "manual.json").read_text())["chosen"] == sel["chosen"]
    # changing test values cannot change the choice
    flipped = tidy.copy()
    mask = (flipped.split == "test") & (flipped.experiment == sel["chosen"])
    flipped.loc[mask, "value"] = 0.0
    assert selection.select_group(flipped, study.experiments, "manual")["chosen"] == sel["chosen"]
    # ties go to the first row of the table
    tied = tidy.copy()
    tied.loc[tied.split == "valid", "value"] = 0.5
    assert selection.select_group(tied, study.experiments, "manual")["chosen"] == "manual_wcls0.05"
    with pytest.raises(ValueError, match="not in the experiments table"):
        selection.select_group(tidy, study.experiments, "nope")
    det = selection.validation_score(tidy, "det_only", False)
    assert det["score"] == det["map50"]


def test_read_selections(study, tidy, tmp_path):
    with pytest.raises(ValueError, match="no selection.json"):
        selection.read_selections([], study.experiments)
    selection.select_group(tidy, study.experiments, "manual", tmp_path / "s.json")
    chosen, selections = selection.read_selections([tmp_path / "s.json"], study.experiments)
    assert chosen["fixed"] == "fixed" and chosen["manual"] == selections["manual"]["chosen"]
    assert list(chosen) == list(dict.fromkeys(study.experiments.group))


def test_diagnostics_summary_and_phases(study):
    diag = summaries.diagnostics_summary(study.files("diagnostics.csv"))
    assert set(diag.experiment) == {"fixed", "manual_wcls0.05", "manual_wcls0.2", "gradnorm_a1.5"}
    assert set(diag.scope) == {"W", "feature", "trunk"}
    assert diag.frac_negative.between(0, 1).all()
    phases = summaries.weight_phases(study.experiment_files("gradnorm_a1.5", "steps.csv"))
    assert list(phases.phase) == ["Initial", "Early", "Mid", "Final", "Overall"]
    runs = [pd.read_csv(f) for f in study.experiment_files("gradnorm_a1.5", "steps.csv")]
    assert phases.weight_det.iloc[0] == pytest.approx(runs[0].iloc[0].weight_det)
    overall = phases.set_index("phase").loc["Overall"]
    assert overall.weight_det == pytest.approx(sum(r.weight_det.mean() for r in runs) / len(runs))
    assert (phases.n_seeds == 2).all()
    assert phases.weight_cls.iloc[-1] > phases.weight_cls.iloc[0]


def test_run_id_from_path(tmp_path):
    assert run_id_from_path("results/runs/gradnorm_a1.5/seed3/steps.csv") == ("gradnorm_a1.5", 3)
    assert run_id_from_path("results/runs/fixed/seed0") == ("fixed", 0)
    with pytest.raises(ValueError, match="seed<k>"):
        run_id_from_path("results/other/steps.csv")


def test_cost_rows_come_from_the_epochs_and_are_absent_when_not_measured(tmp_path):
    from echomtl.evaluation.tidy import _cost_rows

    measured = tmp_path / "epochs.csv"
    measured.write_text(
        "epoch,seconds,batches,optimizer_steps,peak_rss_mib,cuda_peak_mib\n"
        "0,10.0,10,5,800,\n1,6.0,6,3,900,\n"
    )
    assert dict(_cost_rows(measured)) == {"seconds_per_step": 2.0, "peak_rss_mib": 900.0}
    cuda = tmp_path / "cuda.csv"
    cuda.write_text(
        "epoch,seconds,batches,optimizer_steps,peak_rss_mib,cuda_peak_mib\n0,1,1,1,10,300\n"
    )
    assert dict(_cost_rows(cuda))["cuda_peak_mib"] == 300.0
    resumed = tmp_path / "resumed.csv"  # its first epoch ran before the cost was recorded
    resumed.write_text(
        "epoch,seconds,batches,optimizer_steps,peak_rss_mib,cuda_peak_mib\n"
        "0,99.0,,,,\n1,6.0,6,3,900,\n"
    )
    assert dict(_cost_rows(resumed)) == {"seconds_per_step": 2.0, "peak_rss_mib": 900.0}
    old = tmp_path / "old.csv"
    old.write_text("epoch,seconds\n0,10.0\n")
    assert _cost_rows(old) == []
    none = tmp_path / "none.csv"
    none.write_text("epoch,seconds,batches,optimizer_steps,peak_rss_mib\n0,1,1,0,10\n")
    with pytest.raises(ValueError, match="counts no optimizer step"):
        _cost_rows(none)

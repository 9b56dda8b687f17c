"""Seed summaries, bootstrap wiring and verdicts of echomtl.evaluation.statistics."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from echomtl.evaluation.bootstrap import bootstrap_p_value
from echomtl.evaluation.statistics import (
    adjusted_verdict,
    bootstrap_experiment,
    holm,
    load_intervals,
    load_paired,
    load_predictions,
    paired_experiment,
    patient_of,
    verdict,
)
from echomtl.evaluation.vocabulary import UNDECIDED
from echomtl.report.summaries import summarise_seeds


def test_verdict():
    assert verdict(0.1, 0.02, 0.2) == "higher"
    assert verdict(-0.1, -0.2, -0.01) == "lower"
    assert verdict(0.05, -0.01, 0.1) == "not distinguishable at 95%"
    assert verdict(0.0, 0.0, 0.0) == "not distinguishable at 95%"
    with pytest.raises(ValueError):
        verdict(math.nan, 0.0, 1.0)
    with pytest.raises(ValueError):
        verdict(0.1, 0.2, 0.1)


def test_summarise_seeds_flags_single_seed():
    tidy = pd.DataFrame(
        [
            ("a", "a", 0, "test", "map50", 0.5),
            ("b", "b", 0, "test", "map50", 0.4),
            ("b", "b", 1, "test", "map50", 0.6),
            ("b", "b", 2, "test", "view_accuracy", math.nan),
        ],
        columns=["experiment", "group", "seed", "split", "metric", "value"],
    )
    out = summarise_seeds(tidy).set_index(["experiment", "metric"])
    assert out.loc[("a", "map50"), "one_seed"]
    assert math.isnan(out.loc[("a", "map50"), "std"])
    assert out.loc[("b", "map50"), "n_seeds"] == 2
    assert out.loc[("b", "map50"), "std"] == pytest.approx(0.1414213, rel=1e-5)
    assert ("b", "view_accuracy") not in out.index  # NaN values are not counted


def _images(n, correct, view_head=True, shift=0):
    out = []
    for i in range(n):
        box = [10.0 + i, 10.0, 60.0 + i, 50.0]
        pred_box = box if i < correct else [200.0, 200.0, 250.0, 240.0]
        out.append(
            {
                "name": f"img{i + shift}.png",
                "width": 300,
                "height": 300,
                "gt": [[i % 2, *box]],
                "pred": [[i % 2, 0.9, *pred_box]],
                "view_true": i % 3,
                "view_pred": (i % 3 if i < correct else (i + 1) % 3) if view_head else None,
                "view_probs": None,
            }
        )
    return out


def _write_run(root, exp, seed, images):
    d = root / exp / f"seed{seed}"
    d.mkdir(parents=True)
    path = d / "predictions_test.json"
    path.write_text(
        json.dumps({"class_names": ["AR", "MR"], "view_names": ["A", "B", "C"], "images": images})
    )
    return path


def test_load_predictions_pools_seeds(tmp_path):
    p0 = _write_run(tmp_path, "x", 0, _images(3, 3))
    p1 = _write_run(tmp_path, "x", 1, _images(3, 1))
    images, names, by_seed = load_predictions([p1, p0])
    assert names == ["AR", "MR"]
    assert sorted(by_seed) == [0, 1]
    assert [im["name"] for im in images][:2] == ["s0/img0.png", "s0/img1.png"]
    images, _, _ = load_predictions([p0])
    assert images[0]["name"] == "img0.png"  # one seed: names unchanged


def test_bootstrap_experiment_skips_view_metrics_without_head(tmp_path):
    path = _write_run(tmp_path, "det_only", 0, _images(4, 4, view_head=False))
    seen = {}

    def fake(images, class_names, n_resamples, seed, metrics, groups=None, strata=None):
        seen["metrics"] = metrics
        return {
            m: {"point": 0.5, "mean": 0.5, "low": 0.4, "high": 0.6, "n_valid": n_resamples}
            for m in metrics
        }

    out = bootstrap_experiment(
        "det_only", [path], tmp_path / "b.json", n_resamples=7, seed=3, bootstrap_fn=fake
    )
    assert seen["metrics"] == ["map50", "map50_95"]
    assert out["metrics"]["view_accuracy"]["low"] is None
    loaded = load_intervals([tmp_path / "b.json"])
    assert math.isnan(loaded["det_only"]["view_accuracy"]["low"])
    assert loaded["det_only"]["map50"]["high"] == 0.6


def test_paired_experiment_matches_seeds_and_words_the_result(tmp_path):
    ref = [_write_run(tmp_path, "ref", s, _images(4, 4)) for s in (0, 1)]
    other = [_write_run(tmp_path, "other", s, _images(4, 1)) for s in (1, 2)]
    calls = {}

    def fake(a, b, class_names, n_resamples, seed, metrics, groups=None, strata=None):
        calls["groups"] = groups
        calls["names"] = [im["name"] for im in a]
        return {
            m: {"diff": 0.3, "mean": 0.3, "low": 0.1, "high": 0.5, "n_valid": 5, "p": 0.002}
            for m in metrics
        }

    out = paired_experiment(
        "ref", "other", ref, other, tmp_path / "p.json", n_resamples=5, paired_fn=fake
    )
    assert out["seeds"] == [1] and out["seeds_left_out"] == [0, 2]
    assert calls["names"][0] == "img0.png"
    # patients are the clusters (the reader's file-name identity rule)
    assert calls["groups"] == [patient_of(n) for n in calls["names"]]
    assert out["unit"] == "patient" and out["n_patients"] == len(set(calls["groups"]))
    assert out["metrics"]["map50"]["verdict"] == "higher"
    assert load_paired([tmp_path / "p.json"], "ref")["other"]["map50"]["verdict"] == "higher"
    with pytest.raises(ValueError, match="reference"):
        load_paired([tmp_path / "p.json"], "someone_else")
    with pytest.raises(ValueError, match="no common seed"):
        paired_experiment("ref", "other", ref[:1], other[1:], None, paired_fn=fake)


def test_real_bootstrap_small(tmp_path):
    """The real echomtl.evaluation.bootstrap, on 8 images: a better model is 'higher'."""
    pytest.importorskip("faster_coco_eval")
    good = _write_run(tmp_path, "good", 0, _images(8, 8))
    bad = _write_run(tmp_path, "bad", 0, _images(8, 0))
    det = _write_run(tmp_path, "det", 0, _images(8, 8, view_head=False))
    b = bootstrap_experiment("good", [good], None, n_resamples=10, seed=0)
    assert b["metrics"]["map50"]["low"] <= b["metrics"]["map50"]["high"]
    p = paired_experiment("good", "bad", [good], [bad], None, n_resamples=10, seed=0)
    assert p["metrics"]["map50"]["verdict"] == "higher"
    assert p["metrics"]["view_accuracy"]["verdict"] == "higher"
    p = paired_experiment("good", "det", [good], [det], None, n_resamples=10, seed=0)
    assert p["metrics"]["view_accuracy"]["verdict"] is None
    assert p["metrics"]["map50"]["diff"] == pytest.approx(0.0)


def test_patient_of_follows_the_identity_rule_and_ignores_the_seed_prefix():
    assert patient_of("ZmNl=-unnamed_1_1.mp4-31.png") == "ZmNl="
    assert patient_of("s2/ZmNl=-unnamed_1_1.mp4-31.png") == "ZmNl="


def _patient_images(n, correct, view_head=True, order=1):
    images = _images(n, correct, view_head)
    for i, im in enumerate(images):
        im["name"] = f"P{i // 3}-v{i // 3}.mp4-{i}.png"  # three frames per patient
    return images[::order]


def test_paired_from_stored_values_equals_scoring_both_runs(tmp_path):
    """The paired job reads both runs' bootstrap values; same numbers as re-scoring both."""
    pytest.importorskip("faster_coco_eval")
    runs = {
        "ref": [_write_run(tmp_path, "ref", s, _patient_images(12, 9)) for s in (0, 1)],
        "other": [_write_run(tmp_path, "other", s, _patient_images(12, 5)) for s in (0, 1)],
        "det": [_write_run(tmp_path, "det", s, _patient_images(12, 7, False)) for s in (0, 1)],
        "shuffled": [_write_run(tmp_path, "shuffled", 0, _patient_images(12, 5, order=-1))],
    }
    stored = {}
    for name, files in runs.items():
        stored[name] = tmp_path / f"{name}.values.npz"
        bootstrap_experiment(name, files, None, n_resamples=40, seed=1, values_out=stored[name])
    for other in ("other", "det"):
        direct = paired_experiment("ref", other, runs["ref"], runs[other], None, 40, 1)
        read = paired_experiment(
            "ref", other, runs["ref"], runs[other], None, 40, 1,
            values=(stored["ref"], stored[other]),
        )  # fmt: skip
        assert read["computed_from"].startswith("resample values")
        assert direct["computed_from"].startswith("both runs scored")
        assert read["metrics"] == direct["metrics"]
    # other images, order or seeds: the stored values do not share the resamples, so both are scored
    ref0 = runs["ref"][:1]
    bootstrap_experiment("ref", ref0, None, n_resamples=40, seed=1, values_out=tmp_path / "r0.npz")
    fallback = paired_experiment(
        "ref", "shuffled", ref0, runs["shuffled"], None, 40, 1,
        values=(tmp_path / "r0.npz", stored["shuffled"]),
    )  # fmt: skip
    assert fallback["computed_from"].startswith("both runs scored")
    assert (
        fallback["metrics"]
        == paired_experiment("ref", "shuffled", ref0, runs["shuffled"], None, 40, 1)["metrics"]
    )


def test_bootstrap_p_value_is_two_sided_and_never_zero():
    assert bootstrap_p_value(np.full(999, 0.5)) == pytest.approx(2 / 1000)
    assert bootstrap_p_value(np.full(999, -0.5)) == pytest.approx(2 / 1000)
    centred = np.linspace(-1, 1, 1001)
    assert bootstrap_p_value(centred) == 1.0
    assert math.isnan(bootstrap_p_value(np.array([math.nan])))


def test_holm_adjusts_step_down_and_keeps_monotone_order():
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": None})
    assert adjusted["a"] == pytest.approx(0.03)  # 3 x 0.01
    assert adjusted["c"] == pytest.approx(0.06)  # 2 x 0.03
    assert adjusted["b"] == pytest.approx(0.06)  # max(1 x 0.04, 0.06): monotone
    assert math.isnan(adjusted["d"])  # undefined: not a member of the family
    assert holm({"a": 0.6, "b": 0.7}) == {"a": 1.0, "b": 1.0}  # capped at 1
    assert holm({"only": 0.02}) == {"only": 0.02}  # a family of one is not adjusted


def test_adjusted_verdict_both_directions():
    # survives the family: the interval's word stands
    assert adjusted_verdict("higher", 0.03) == "higher"
    assert adjusted_verdict("lower", 0.049) == "lower"
    # significant alone (p 0.02) but not after adjusting a family of three (0.06)
    assert adjusted_verdict("higher", holm({"a": 0.02, "b": 0.5, "c": 0.9})["a"]) == UNDECIDED
    assert adjusted_verdict(None, 0.01) is None


def _paired_file(tmp_path, other, entries):
    path = tmp_path / f"{other}.json"
    path.write_text(json.dumps({"reference": "ref", "other": other, "metrics": entries}))
    return path


def _entry(p, word):
    return {"diff": 0.1, "low": 0.01, "high": 0.2, "p": p, "verdict": word}


def test_load_paired_adjusts_each_metric_family_and_counts_one_isolated_detector(tmp_path):
    files = [
        _paired_file(tmp_path, "det_only", {
            "map50": _entry(0.02, "higher"), "view_accuracy": _entry(None, None),
        }),
        _paired_file(tmp_path, "stopgrad", {
            "map50": _entry(0.02, "higher"), "view_accuracy": _entry(0.002, "higher"),
        }),
        _paired_file(tmp_path, "fixed", {
            "map50": _entry(0.02, "higher"), "view_accuracy": _entry(0.002, "higher"),
        }),
    ]  # fmt: skip
    paired = load_paired(files, "ref", {"stopgrad": "det_only"})
    # map50: stopgrad's detector is det_only's, so the family has 2 members, not 3
    assert paired["fixed"]["map50"]["p_holm"] == pytest.approx(0.04)
    assert paired["fixed"]["map50"]["verdict"] == "higher"
    assert paired["stopgrad"]["map50"]["same_detector_as"] == "det_only"
    assert paired["stopgrad"]["map50"]["p_holm"] == paired["det_only"]["map50"]["p_holm"]
    # counted three times, the same p-values would not survive (3 x 0.02 = 0.06)
    tripled = load_paired(files, "ref")
    assert tripled["fixed"]["map50"]["verdict"] == UNDECIDED
    assert tripled["fixed"]["map50"]["verdict_unadjusted"] == "higher"
    # view: the isolated controls' views differ, so they stay apart (family of 2)
    assert paired["stopgrad"]["view_accuracy"]["p_holm"] == pytest.approx(0.004)
    assert paired["det_only"]["view_accuracy"]["verdict"] is None


def test_load_paired_refuses_a_verdict_without_p_value(tmp_path):
    entry = {"diff": 0.1, "low": 0.01, "high": 0.2, "verdict": "higher"}
    path = _paired_file(tmp_path, "old", {"map50": entry})
    with pytest.raises(ValueError, match="'old': map50 has a verdict but no p-value"):
        load_paired([path], "ref")

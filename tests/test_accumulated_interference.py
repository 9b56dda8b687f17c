"""The accumulated-gradient interference measurement (echomtl.evaluation.interference) on cases
whose answer is known, and on a real snapshot of a tiny run."""

from __future__ import annotations

import math

import pytest
import torch

from echomtl.evaluation.interference import (
    INTERFERENCE_WORDS,
    interference_word,
    null_band,
    summarise_gradients,
)

D, B = 4000, 16


def _batches(direction: torch.Tensor, noise: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return direction + noise * torch.randn(B, D, generator=gen)


def _unit(seed: int) -> torch.Tensor:
    v = torch.randn(D, generator=torch.Generator().manual_seed(seed))
    if seed:  # orthogonal to _unit(0): an exactly unrelated direction
        u = _unit(0)
        v = v - (v @ u) * u
    return v / v.norm()


@pytest.mark.parametrize(
    ("cls_direction", "expected"),
    [(-0.6, "conflict"), (0.6, "alignment"), (0.0, "inside the null band")],
)
def test_the_task_cosine_against_its_null_band_finds_the_known_answer(cls_direction, expected):
    u, v = _unit(0), _unit(1)
    det = _batches(u, 0.005, 10)
    # the classification gradient: along -u / +u, or along an unrelated direction v
    cls = _batches(cls_direction * u + (v if cls_direction == 0.0 else 0.0), 0.005, 11)
    out = summarise_gradients(det, cls, {"det": 1.0, "cls": 0.5})
    assert out["reading"] == expected, out
    assert out["null_low"] < 0 < out["null_high"]
    # with this little noise each task's direction is reproducible between the halves
    assert out["halves_det"] > 0.9 and out["halves_cls"] > 0.9
    expected_ratio = 1.0 * out["norm_det"] / (0.5 * out["norm_cls"])
    assert out["weighted_norm_ratio"] == pytest.approx(expected_ratio)


def test_a_weak_conflict_drowned_in_noise_is_not_read_as_one():
    """The same small negative direction is seen with little noise and not with much: the band
    widens with the noise of the batch gradients, which is what the per-step null could not do."""
    u, v = _unit(0), _unit(1)
    det = _batches(u, 0.02, 10)
    quiet = summarise_gradients(det, _batches(v - 0.3 * u, 0.02, 12), {"det": 1, "cls": 1})
    loud = summarise_gradients(det, _batches(v - 0.3 * u, 3.0, 12), {"det": 1, "cls": 1})
    assert quiet["reading"] == "conflict"
    assert loud["reading"] == "inside the null band"
    assert loud["null_high"] - loud["null_low"] > quiet["null_high"] - quiet["null_low"]
    assert loud["halves_cls"] < 0.5  # and the halves say the direction was not reproducible


def test_null_band_is_symmetric_and_words_follow_the_band():
    det, cls = _batches(_unit(0), 1.0, 2), _batches(_unit(1), 1.0, 3)
    low, high = null_band(det, cls)
    assert low == -high and high > 0
    assert interference_word(-0.5, (-0.1, 0.1)) == INTERFERENCE_WORDS[0]
    assert interference_word(0.5, (-0.1, 0.1)) == INTERFERENCE_WORDS[1]
    assert interference_word(0.05, (-0.1, 0.1)) == INTERFERENCE_WORDS[2]


def test_summary_refuses_mismatched_or_single_batches():
    with pytest.raises(ValueError, match="two or more batches"):
        summarise_gradients(torch.zeros(1, 5), torch.zeros(1, 5), {"det": 1, "cls": 1})
    out = summarise_gradients(torch.ones(2, 5), torch.zeros(2, 5), {"det": 1, "cls": 1})
    assert math.isnan(out["cosine"]) and out["reading"] is None  # a zero gradient: no direction


def test_the_null_band_holds_about_95_percent_of_cosines_when_the_tasks_are_unrelated():
    u, v = _unit(0), _unit(1)
    det = _batches(u, 0.5, 10)
    inside = sum(
        summarise_gradients(det, _batches(v, 3.0, 100 + s), {"det": 1, "cls": 1})["reading"]
        == "inside the null band"
        for s in range(100)
    )
    assert 88 <= inside <= 100


def test_a_run_saves_its_snapshots_and_the_job_measures_them(tmp_path, tiny_caches):
    """End to end on a tiny run: the snapshots at the three points, surviving a resume, and the
    job's measurement of each (16 images in batches of 4)."""
    from dataclasses import replace

    from echomtl.evaluation.interference import measure_snapshots
    from echomtl.training.trainer import SNAPSHOT_POINTS, TrainingInterrupted, train

    from .test_training import params, paths

    p = params(epochs=2, method="fixed", augment=False)
    whole = replace(paths(tmp_path / "a", tiny_caches["train"]), snapshots=tmp_path / "a" / "s.pt")
    train(p, whole)
    saved = torch.load(whole.snapshots, weights_only=True)
    assert list(saved["points"]) == list(SNAPSHOT_POINTS)
    # warm-up: max(1 epoch, 100 iterations), cut to the last iteration of this 8-step run
    assert [saved["points"][k]["step"] for k in SNAPSHOT_POINTS] == [7, 4, 8]
    # killed after the first snapshot, resumed: the same snapshots
    cut = replace(paths(tmp_path / "b", tiny_caches["train"]), snapshots=tmp_path / "b" / "s.pt")
    with pytest.raises(TrainingInterrupted):
        train(p, cut, stop_after_batches=6)
    train(p, cut)
    again = torch.load(cut.snapshots, weights_only=True)
    for k in SNAPSHOT_POINTS:
        for name, tensor in saved["points"][k]["state_dict"].items():
            assert torch.equal(tensor, again["points"][k]["state_dict"][name]), (k, name)
    out = measure_snapshots(whole.snapshots, tiny_caches["train"], tmp_path / "i.json", "t")
    assert out["n_images"] == 16 and list(out["points"]) == list(SNAPSHOT_POINTS)
    assert out["batch_size"] == 4  # the run's own
    # a set too small for two of the run's batches is measured in two halves, and says so
    few = measure_snapshots(whole.snapshots, tiny_caches["train"], tmp_path / "f.json", "t", 6)
    assert few["n_images"] == 6 and few["batch_size"] == 3
    with pytest.raises(ValueError, match="the null band needs at least two"):
        measure_snapshots(whole.snapshots, tiny_caches["train"], tmp_path / "g.json", "t", 1)
    for m in out["points"].values():
        assert -1 <= m["cosine"] <= 1 and m["null_high"] > 0
        assert m["reading"] in INTERFERENCE_WORDS
    # a run without a shared trunk saves no snapshot, and the job says so
    alone = replace(paths(tmp_path / "c", tiny_caches["train"]), snapshots=tmp_path / "c" / "s.pt")
    train(params(epochs=1, model="det_only", method="fixed", augment=False), alone)
    with pytest.raises(ValueError, match="saved no snapshot"):
        measure_snapshots(alone.snapshots, tiny_caches["train"], tmp_path / "j.json", "d")

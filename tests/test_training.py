"""Training: reproducible for a seed, and a killed run resumes to the same result."""

from __future__ import annotations

from dataclasses import MISSING, fields, replace
from importlib.resources import files
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from echomtl.training import checkpoint as ckpt
from echomtl.training.state import TrainState
from echomtl.training.trainer import (
    RunPaths,
    TrainingInterrupted,
    TrainParams,
    load_weights,
    run_length,
    train,
)

from .conftest import CLASS_NAMES, VIEW_NAMES

HYP = {
    "lr0": 0.01, "lrf": 0.01, "momentum": 0.937, "weight_decay": 0.0005, "warmup_epochs": 3.0,
    "warmup_momentum": 0.8, "warmup_bias_lr": 0.1, "box": 0.05, "obj": 1.0, "cls": 0.5,
    "anchor_t": 4.0, "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "translate": 0.1, "scale": 0.5,
    "fliplr": 0.5,
}  # fmt: skip


def schema_defaults() -> dict:
    """The training parameters a configuration may leave out, as the config schema fills them
    (rules/common.smk's ``train_params`` reads them from the validated config); the experiment
    columns ``alpha`` and ``init`` as an empty cell leaves them without ``model.weights``."""
    schema = yaml.safe_load((files("echomtl") / "schema" / "config.schema.yaml").read_text())
    model, train, balancing = (
        schema["properties"][k]["properties"] for k in ("model", "train", "balancing")
    )
    return {
        **{k: model[k]["default"] for k in ("attach_layer", "cls_dropout")},
        **{
            k: train[k]["default"]
            for k in ("nominal_batch", "cos_lr", "grad_clip", "ema", "amp", "warmup_min_iterations")
        },
        "gradnorm": {k: v["default"] for k, v in balancing["gradnorm"]["properties"].items()},
        "diagnostics_every": balancing["diagnostics_every"]["default"],
        "alpha": None,
        "init": "scratch",
        "weights_sha256": None,
    }


def params(**overrides) -> TrainParams:
    base = TrainParams(**{
        **schema_defaults(),
        **dict(
            experiment="t", seed=0, model="multitask", scale="n", class_names=CLASS_NAMES,
            view_names=VIEW_NAMES, imgsz=64, epochs=2, batch_size=4, nominal_batch=8,
            method="gradnorm", w_det=1.0, w_cls=0.01, alpha=1.5, augment=True, hyp=HYP,
            gradnorm={"lr": 0.025, "optimizer": "adam", "l0_window": 2}, diagnostics_every=3,
        ),
    })  # fmt: skip
    return replace(base, **overrides)


def test_train_params_are_all_required_and_checked():
    """No field repeats a default of the config schema; from_dict names what is wrong."""
    assert all(f.default is MISSING and f.default_factory is MISSING for f in fields(TrainParams))
    given = {f.name: getattr(params(), f.name) for f in fields(TrainParams)}
    assert TrainParams.from_dict(given) == params()
    with pytest.raises(ValueError, match="missing training parameters: amp"):
        TrainParams.from_dict({k: v for k, v in given.items() if k != "amp"})
    with pytest.raises(ValueError, match="unknown training parameters: nope"):
        TrainParams.from_dict({**given, "nope": 1})
    assert set(schema_defaults()) < set(given)


def paths(root: Path, cache: Path) -> RunPaths:
    return RunPaths(
        train_cache=cache, weights=root / "weights.pt", steps_csv=root / "steps.csv",
        epochs_csv=root / "epochs.csv", diagnostics_csv=root / "diagnostics.csv",
        checkpoint_dir=root / "checkpoints",
    )  # fmt: skip


def final_state(root: Path) -> dict[str, torch.Tensor]:
    return torch.load(root / "weights.pt", weights_only=True)["state_dict"]


def assert_same_run(a: Path, b: Path) -> None:
    sa, sb = final_state(a), final_state(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    pd.testing.assert_frame_equal(pd.read_csv(a / "steps.csv"), pd.read_csv(b / "steps.csv"))


def test_same_seed_gives_identical_runs(tmp_path, tiny_caches):
    for name in ("a", "b"):
        train(params(), paths(tmp_path / name, tiny_caches["train"]))
    assert_same_run(tmp_path / "a", tmp_path / "b")
    steps = pd.read_csv(tmp_path / "a" / "steps.csv")
    assert len(steps) == 2 * 4  # 16 images, batch 4, 2 epochs
    assert abs(steps["weight_det"].iloc[-1] + steps["weight_cls"].iloc[-1] - 1.01) < 1e-6
    diagnostics = pd.read_csv(tmp_path / "a" / "diagnostics.csv")
    assert {"W", "feature", "trunk"} <= set(diagnostics["scope"])
    assert not (tmp_path / "a" / "checkpoints" / "last.pt").exists()


def test_other_seed_differs(tmp_path, tiny_caches):
    train(params(epochs=1), paths(tmp_path / "a", tiny_caches["train"]))
    train(params(epochs=1, seed=1), paths(tmp_path / "b", tiny_caches["train"]))
    sa, sb = final_state(tmp_path / "a"), final_state(tmp_path / "b")
    assert any(not torch.equal(sa[k], sb[k]) for k in sa)


def test_each_epoch_records_what_it_cost_and_a_resumed_run_times_only_what_it_ran(
    tmp_path, tiny_caches
):
    """The cost table's inputs: wall seconds over the batches and optimizer steps this process
    timed, the process's peak RSS, no CUDA peak on CPU, and the machine that ran the epoch."""
    from echomtl.training.machine import this_machine
    from echomtl.training.trainer import EPOCH_COST

    train(params(), paths(tmp_path / "full", tiny_caches["train"]))
    epochs = pd.read_csv(tmp_path / "full" / "epochs.csv")
    assert set(EPOCH_COST) <= set(epochs.columns)
    assert list(epochs["batches"]) == [4, 4]  # 16 images, batch 4
    assert epochs["optimizer_steps"].between(1, 4).all() and (epochs["seconds"] > 0).all()
    assert (epochs["peak_rss_mib"] > 50).all() and epochs["cuda_peak_mib"].isna().all()
    # ... and on which machine: this one's CPU, the cores this process may use, its threads
    machine = this_machine("cpu")
    assert list(epochs["cpu_model"]) == [machine["cpu_model"]] * 2
    assert list(epochs["cpu_cores"]) == [machine["cpu_cores"]] * 2
    assert list(epochs["torch_threads"]) == [1, 1] and epochs["gpu_name"].isna().all()
    resumed = paths(tmp_path / "resumed", tiny_caches["train"])
    with pytest.raises(TrainingInterrupted):
        train(params(), resumed, stop_after_batches=5)  # stops after batch 1 of epoch 2
    train(params(), resumed)
    again = pd.read_csv(tmp_path / "resumed" / "epochs.csv")
    assert list(again["batches"]) == [4, 3]  # the resumed process timed the 3 batches it ran
    assert again["optimizer_steps"].sum() <= epochs["optimizer_steps"].sum()


@pytest.mark.parametrize("stop_after", [2, 5])  # mid-epoch with pending accumulation; 2nd epoch
def test_interrupted_run_resumes_to_identical_result(tmp_path, tiny_caches, stop_after):
    train(params(), paths(tmp_path / "full", tiny_caches["train"]))
    resumed = paths(tmp_path / "resumed", tiny_caches["train"])
    with pytest.raises(TrainingInterrupted):
        train(params(), resumed, stop_after_batches=stop_after)
    assert (resumed.checkpoint_dir / "last.pt").exists()
    assert not resumed.weights.exists()
    train(params(), resumed)
    assert_same_run(tmp_path / "full", tmp_path / "resumed")


@pytest.mark.parametrize("method", ["rlw", "imtl_g", "uncertainty"])
def test_new_methods_resume_to_identical_result(tmp_path, tiny_caches, method):
    """Random weighting's generator, the aggregators and the log-variances survive a resume."""
    p = params(method=method, augment=False)
    train(p, paths(tmp_path / "full", tiny_caches["train"]))
    resumed = paths(tmp_path / "resumed", tiny_caches["train"])
    with pytest.raises(TrainingInterrupted):
        train(p, resumed, stop_after_batches=3)
    train(p, resumed)
    assert_same_run(tmp_path / "full", tmp_path / "resumed")


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path, tiny_caches, caplog):
    run = paths(tmp_path / "run", tiny_caches["train"])
    with pytest.raises(TrainingInterrupted):
        train(params(), run, stop_after_batches=6)  # epoch 1 done (checkpoint) + 2 batches
    last = run.checkpoint_dir / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated
    with caplog.at_level("WARNING"):
        state = ckpt.load_checkpoint(run.checkpoint_dir, ckpt.fingerprint(_asdict(params())))
    assert "fails its SHA-256 check" in caplog.text
    assert state is not None and state["epoch"] == 1 and state["batch"] == 0
    train(params(), run)
    train(params(), paths(tmp_path / "full", tiny_caches["train"]))
    assert_same_run(tmp_path / "full", tmp_path / "run")


def test_train_state_saves_and_loads_every_entry(tmp_path):
    """The checkpoint's entries, in order (the resume format: older checkpoints keep loading)."""
    p = params(method="uncertainty")
    a = TrainState.create(p, torch.device("cpu"), weight_decay=0.0005)
    assert list(a.state_dict()) == [
        "fingerprint", "epoch", "batch", "last_opt_step", "model", "optimizer", "balancer",
        "ema", "grads", "precision", "torch_rng", "steps", "epochs", "diagnostics", "snapshots",
    ]  # fmt: skip
    a.last_opt_step, a.steps = 4, [{"epoch": 0, "step": 3}]
    first = next(a.model.parameters())
    first.grad = torch.ones_like(first)
    with torch.no_grad():
        a.balancer.log_vars.add_(0.5)
    a.save(tmp_path, epoch=1, batch=2)
    rng = torch.get_rng_state()
    torch.manual_seed(123)  # another model init and another global RNG state
    b = TrainState.create(p, torch.device("cpu"), weight_decay=0.0005)
    assert b.resume(tmp_path)
    assert (b.epoch, b.batch, b.last_opt_step, b.steps) == (1, 2, 4, [{"epoch": 0, "step": 3}])
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(b.balancer.log_vars, a.balancer.log_vars)
    for (name, qa), qb in zip(a.model.named_parameters(), b.model.parameters(), strict=True):
        assert torch.equal(qa, qb), name
        assert (qa.grad is None and qb.grad is None) or torch.equal(qa.grad, qb.grad), name
    # a checkpoint written before the snapshots entry existed still loads; a missing first-version
    # entry does not
    older = {k: v for k, v in a.state_dict().items() if k != "snapshots"}
    b.load_state_dict(older)
    assert b.snapshots == {}
    with pytest.raises(KeyError, match="lacks its entry 'steps'"):
        b.load_state_dict({k: v for k, v in older.items() if k != "steps"})
    other = TrainState.create(params(method="uncertainty", seed=1), torch.device("cpu"), 0.0005)
    assert not other.resume(tmp_path)
    with pytest.raises(ValueError, match="another configuration"):
        other.load_state_dict(a.state_dict())


def test_checkpoint_of_other_config_is_ignored(tmp_path, tiny_caches):
    run = paths(tmp_path / "run", tiny_caches["train"])
    with pytest.raises(TrainingInterrupted):
        train(params(), run, stop_after_batches=2)
    other = params(alpha=2.0)
    assert ckpt.load_checkpoint(run.checkpoint_dir, ckpt.fingerprint(_asdict(other))) is None


@pytest.mark.parametrize(
    "overrides",
    [
        {"model": "det_only", "method": "fixed", "augment": False},
        {"model": "view_only", "method": "fixed", "w_cls": 1.0},
        {"model": "dual_backbone", "method": "fixed", "w_cls": 1.0},
        {"method": "fixed"},
        {"method": "uncertainty"},
        {"method": "pcgrad"},
    ],
)
def test_every_variant_trains_and_loads(tmp_path, tiny_caches, overrides):
    p = params(epochs=1, **overrides)
    train(p, paths(tmp_path, tiny_caches["train"]))
    model, saved = load_weights(tmp_path / "weights.pt")
    assert saved["model"] == p.model
    out = model(torch.zeros(1, 3, 64, 64))
    assert (out.view_logits is None) == (p.model == "det_only")
    assert (out.det == []) == (p.model == "view_only")
    steps = pd.read_csv(tmp_path / "steps.csv")
    # the losses a model has are logged, the ones it lacks are NaN (never a made-up 0)
    assert steps["loss_det"].isna().all() == (p.model == "view_only")
    assert steps["loss_cls"].isna().all() == (p.model == "det_only")


def _asdict(p: TrainParams) -> dict:
    from dataclasses import asdict

    return asdict(p)


def test_run_length_matches_another_runs_iterations():
    assert run_length(9, 16, 358) == (9, 22 * 9)  # its own epochs of full batches
    # a split variant of 320 training images matching a study run of 358: 198 iterations in
    # ceil(198 / 20) = 10 epochs, the last one cut to 18 batches
    assert run_length(9, 16, 320, match_images=358) == (10, 198)
    assert run_length(9, 16, 400, match_images=358) == (8, 198)  # more images: fewer epochs


def test_a_matched_run_trains_the_matched_number_of_steps(tmp_path, tiny_caches):
    from dataclasses import replace as with_

    p = params(epochs=2, method="fixed", augment=False)
    run = with_(paths(tmp_path, tiny_caches["train"]), match_images=24)  # 6 x 2 = 12 steps
    train(p, run)
    steps = pd.read_csv(tmp_path / "steps.csv")
    assert len(steps) == 12 and steps["epoch"].max() == 2  # 16 images: epochs of 4, 4 and 4

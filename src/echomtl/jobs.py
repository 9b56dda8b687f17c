"""One function per workflow job: maps a Snakemake job's inputs/outputs/params onto the package.

Scripts in ``workflow/scripts/`` only call these with their ``snakemake`` object, so every job is
also callable from Python (tests, notebooks) with a plain namespace. Each job logs to its
Snakemake log file; an exception is logged with its traceback and re-raised so the job fails and
Snakemake removes its (atomically written, hence never half-written) outputs. Heavy imports
(torch) stay inside the jobs that need them: report jobs start in a fraction of the time.
"""

from __future__ import annotations

import json
import logging
import platform
from pathlib import Path
from typing import Any

from echomtl.atomic import read_json, run_id_from_path, write_json
from echomtl.console import job_logging, say

LOG = logging.getLogger("echomtl.jobs")


def versions() -> dict[str, str]:
    """Versions that produced a result (stored beside every metric)."""
    import faster_coco_eval
    import numpy
    import torch
    import torchvision

    from echomtl import __version__

    return {
        "echomtl": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "faster_coco_eval": faster_coco_eval.__version__,
        "machine": platform.machine(),
    }


def generate_synthetic(snakemake: Any) -> None:
    from echomtl.data.synthetic import generate_synthetic_export, synthetic_arguments

    with job_logging(snakemake):
        p = snakemake.params
        summary = generate_synthetic_export(
            Path(snakemake.output[0]),
            **synthetic_arguments(p.synthetic),
            class_names=list(p.class_names),
            view_names=list(p.view_names),
            workers=snakemake.threads,
        )
        summary.pop("images", None)
        LOG.info("synthetic export written: %s", json.dumps(summary, default=str))


def convert_export(snakemake: Any) -> None:
    from echomtl.data.audit import defect_counts
    from echomtl.data.export_reader import export_fingerprint, read_export
    from echomtl.data.records import write_defects, write_records

    with job_logging(snakemake):
        p = snakemake.params
        # the fingerprint the workflow tracks must be the export this job reads
        if p.export is not None and export_fingerprint(snakemake.input[0]) != p.export:
            raise RuntimeError(
                f"{snakemake.input[0]}: the export changed after the workflow read it; re-run"
            )
        records, defects = read_export(
            Path(snakemake.input[0]),
            list(p.class_names),
            list(p.view_names),
            on_defect=p.on_defect,
            coord_tolerance=p.coord_tolerance,
            all_boxes_defective=p.all_boxes_defective,
        )
        if not records:
            raise ValueError(f"{snakemake.input[0]}: no image with a label was read")
        write_defects(defects, snakemake.output.defects)
        write_records(records, snakemake.output.records)
        by_split: dict[str, int] = {}
        for record in records:
            by_split[record.split] = by_split.get(record.split, 0) + 1
        LOG.info("records per split: %s; defects: %d", by_split, len(defects))
        kinds = {k: n for k, n in defect_counts(defects).items() if n}
        summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none"
        say(
            "data",
            f"{len(records)} images read ({', '.join(f'{s} {n}' for s, n in by_split.items())}); "
            f"defects: {summary}" + (f" (see {snakemake.output.defects})" if defects else ""),
        )
        for defect in defects:
            LOG.warning(
                "defect %s:%d: %s: %s", defect.file, defect.line, defect.kind, defect.reason
            )


def split_records(snakemake: Any) -> None:
    from echomtl.data.records import read_records, write_records
    from echomtl.data.splits import apply_split

    with job_logging(snakemake):
        records = read_records(snakemake.input[0])
        scheme = snakemake.wildcards.scheme
        out = apply_split(
            records, scheme, dict(snakemake.params.fractions), seed=snakemake.params.seed,
            min_patients=snakemake.params.min_patients, cv_folds=snakemake.params.cv_folds,
            cv_valid_fraction=snakemake.params.cv_valid_fraction,
        )  # fmt: skip
        write_records(out, snakemake.output[0])
        LOG.info("%s split: %d records", scheme, len(out))


def audit_dataset(snakemake: Any) -> None:
    from echomtl.data.audit import audit, write_audit
    from echomtl.data.records import read_defects, read_records

    with job_logging(snakemake):
        records = read_records(snakemake.input.records)
        defects = read_defects(snakemake.input.defects)
        result = audit(
            records, defects, list(snakemake.params.class_names), list(snakemake.params.view_names)
        )
        write_audit(result, Path(snakemake.output.json).parent)
        LOG.info("leakage: %s", json.dumps(result["leakage"]))


def build_cache(snakemake: Any) -> None:
    from echomtl.data.cache import build_cache as build
    from echomtl.data.records import read_records

    with job_logging(snakemake):
        records = read_records(snakemake.input[0])
        split = snakemake.wildcards.split
        if not any(r.split == split for r in records):
            raise ValueError(f"{snakemake.input[0]}: split {split!r} has no image")
        stats = build(records, split, int(snakemake.wildcards.imgsz), Path(snakemake.output[0]))
        LOG.info("cache %s: %s", snakemake.output[0], stats)


def _images_of(caches: Any) -> int | None:
    """The training images of the one matched run's cache, or None without one."""
    from echomtl.data.cache import load_cache

    return len(load_cache(caches[0])["views"]) if caches else None


def train(snakemake: Any) -> None:
    from echomtl.config import weights_path
    from echomtl.training.trainer import RunPaths, TrainParams
    from echomtl.training.trainer import train as run_training

    with job_logging(snakemake):
        out = snakemake.output
        paths = RunPaths(
            train_cache=Path(snakemake.input.cache),
            weights=Path(out.weights),
            steps_csv=Path(out.steps),
            epochs_csv=Path(out.epochs),
            diagnostics_csv=Path(out.diagnostics),
            checkpoint_dir=Path(snakemake.params.checkpoint_dir),
            pretrained=weights_path(snakemake.config),
            snapshots=Path(out.snapshots),
            match_images=_images_of(snakemake.input.match),
        )
        params = TrainParams.from_dict(dict(snakemake.params.hp))
        summary = run_training(
            params, paths, threads=snakemake.threads, device=snakemake.params.device,
            workers=snakemake.params.workers,
        )  # fmt: skip
        LOG.info("training done: %s", summary)


def evaluate(snakemake: Any) -> None:
    from echomtl.data.cache import load_cache
    from echomtl.data.dataset import CachedDataset, make_loader
    from echomtl.evaluation.inference import evaluate_predictions, predict
    from echomtl.models.multitask import count_parameters
    from echomtl.training.trainer import configure_torch, load_weights

    with job_logging(snakemake):
        p = snakemake.params
        device = configure_torch(snakemake.threads, p.device)
        model, train_params = load_weights(Path(snakemake.input.weights), str(device))
        class_names, view_names = train_params["class_names"], train_params["view_names"]
        outputs = zip(
            p.splits, snakemake.input.caches, snakemake.output.metrics,
            snakemake.output.predictions, strict=True,
        )  # fmt: skip
        for split, cache_path, metrics_path, predictions_path in outputs:
            cache = load_cache(Path(cache_path))
            loader = make_loader(CachedDataset(cache), batch_size=p.batch_size, shuffle=False)
            images = predict(model, loader, cache, p.conf_thres, p.iou_thres, p.max_det, device)
            fold = snakemake.wildcards.get("fold")
            metrics = {
                "experiment": snakemake.wildcards.experiment,
                "seed": int(snakemake.wildcards.seed),
                **({} if fold is None else {"fold": int(fold)}),
                "split": split,
                "n_images": len(images),
                **evaluate_predictions(images, class_names, view_names),
                "n_parameters": count_parameters(model),
                "evaluator": "faster-coco-eval (COCO mAP, maxDets 100)",
                "evaluation": {
                    "conf_thres": p.conf_thres,
                    "iou_thres": p.iou_thres,
                    "max_det": p.max_det,
                },
                "config": train_params,
                "versions": versions(),
            }
            write_json(
                Path(predictions_path),
                {"class_names": class_names, "view_names": view_names, "images": images},
            )
            write_json(Path(metrics_path), metrics)
            det, cls = metrics["detection"] or {}, metrics.get("classification") or {}
            LOG.info(
                "%s: mAP@0.5 %s mAP@0.5:0.95 %s view accuracy %s",
                split, det.get("map50"), det.get("map50_95"), cls.get("accuracy"),
            )  # fmt: skip


def _fold_run(path: str) -> tuple[str, int, int]:
    """``(experiment, seed, fold)`` of a file in ``<experiment>/seed<k>/fold<f>/``."""
    fold_dir = Path(path).parent
    seed_dir = fold_dir.parent
    if not (fold_dir.name.startswith("fold") and seed_dir.name.startswith("seed")):
        raise ValueError(f"{path}: not inside a fold run <experiment>/seed<k>/fold<f>/")
    return seed_dir.parent.name, int(seed_dir.name[4:]), int(fold_dir.name[4:])


def pool_folds(snakemake: Any) -> None:
    """Pooled out-of-fold evaluation of one experiment and seed (rules pool_folds and
    pool_selected: the latter takes, per fold, the configuration its selection chose)."""
    from echomtl.data.records import read_records
    from echomtl.evaluation.inference import evaluate_predictions
    from echomtl.evaluation.pooling import check_folds_cover, fold_summary, pool_fold_predictions

    with job_logging(snakemake):
        experiment, seed = snakemake.wildcards.experiment, int(snakemake.wildcards.seed)
        test_images: dict[int, set[str]] = {}
        patients: dict[int, int] = {}
        cohort: list[str] = []
        for fold, path in enumerate(snakemake.input.splits):
            records = read_records(path)
            cohort = [r.name for r in records]
            test = [r for r in records if r.split == "test"]
            test_images[fold] = {r.name for r in test}
            patients[fold] = len({r.patient_id for r in test})
        check_folds_cover(test_images, cohort)
        chosen = {fold: experiment for fold in test_images}
        selection = None
        if "selection" in snakemake.input.keys():
            selection = read_json(snakemake.input.selection)
            chosen = {int(e["fold"]): str(e["chosen"]) for e in selection["per_fold"]}

        def pick(paths: list[str]) -> dict[int, str]:
            out = {}
            for path in paths:
                exp, k, fold = _fold_run(path)
                if k == seed and chosen.get(fold) == exp:
                    out[fold] = path
            if set(out) != set(test_images):
                raise ValueError(
                    f"pooling {experiment} seed {seed}: no run for folds "
                    f"{sorted(set(test_images) - set(out))} among the inputs"
                )
            return out

        predictions = {f: read_json(p) for f, p in pick(list(snakemake.input.predictions)).items()}
        fold_metrics = {f: read_json(p) for f, p in pick(list(snakemake.input.metrics)).items()}
        pooled = pool_fold_predictions(predictions, test_images)
        class_names, view_names = pooled["class_names"], pooled["view_names"]
        first = fold_metrics[min(fold_metrics)]
        metrics = {
            "experiment": experiment,
            "seed": seed,
            "fold": "pooled",
            "split": "test",
            "n_images": len(pooled["images"]),
            **evaluate_predictions(pooled["images"], class_names, view_names),
            "folds": [
                fold_summary(f, chosen[f], fold_metrics[f], patients[f]) for f in sorted(chosen)
            ],
            "n_parameters": first.get("n_parameters"),
            "evaluator": first.get("evaluator"),
            "evaluation": first.get("evaluation"),
            "versions": versions(),
        }
        if selection is None:
            metrics["config"] = first.get("config")
        write_json(Path(snakemake.output.predictions), pooled)
        write_json(Path(snakemake.output.metrics), metrics)
        det, cls = metrics["detection"] or {}, metrics.get("classification") or {}
        LOG.info(
            "pooled over %d folds (%d images): mAP@0.5 %s mAP@0.5:0.95 %s view accuracy %s",
            len(chosen), metrics["n_images"], det.get("map50"), det.get("map50_95"),
            cls.get("accuracy"),
        )  # fmt: skip


def plan_study(snakemake: Any) -> None:
    """The study's plan (``echomtl.study``) as ``study.json``, for the evaluation and report."""
    from echomtl.atomic import write_text
    from echomtl.study import Study

    with job_logging(snakemake):
        study = Study.from_dict(snakemake.params.study)
        write_text(snakemake.output[0], study.to_json())
        LOG.info("%d experiments, flags %s", len(study.names), study.flags)


def select_group(snakemake: Any) -> None:
    """Validation choice of a grid group: on its validation metrics, per fold under cv."""
    from echomtl.evaluation.selection import select
    from echomtl.study import Study

    with job_logging(snakemake):
        sel = select(
            list(snakemake.input.metrics),
            Study.read(snakemake.input.study),
            snakemake.wildcards.group,
            snakemake.output[0],
            snakemake.params.score,
        )
        LOG.info("group %s: chose %s", snakemake.wildcards.group, sel["chosen"])


def select_choice(snakemake: Any) -> None:
    """A validation choice among rows of different groups (``Study.choices``: the
    detection-optimal fixed weight, GradNorm's alpha), on the candidates' validation metrics."""
    from echomtl.evaluation.selection import select_choice as choose
    from echomtl.evaluation.selection import validation_values
    from echomtl.study import Study

    with job_logging(snakemake):
        tidies = validation_values(list(snakemake.input.metrics))
        name = snakemake.wildcards.choice
        if None in tidies and len(tidies) > 1:
            raise ValueError(f"choice {name}: fold and holdout runs mixed")
        by_fold = tidies[None] if None in tidies else tidies  # per fold under cv
        sel = choose(by_fold, Study.read(snakemake.input.study), name, snakemake.output[0],
                     snakemake.params.grid_score)  # fmt: skip
        LOG.info("%s: chose %s", name, sel["chosen"])


def bootstrap_experiment(snakemake: Any) -> None:
    from echomtl.evaluation.statistics import bootstrap_experiment as bootstrap

    with job_logging(snakemake):
        bootstrap(
            snakemake.wildcards.experiment,
            list(snakemake.input),
            snakemake.output.json,
            n_resamples=snakemake.params.n_resamples,
            seed=snakemake.params.seed,
            values_out=snakemake.output.values,
        )


def paired_bootstrap(snakemake: Any) -> None:
    from echomtl.evaluation.statistics import paired_experiment

    with job_logging(snakemake):
        paired_experiment(
            snakemake.params.reference,
            snakemake.wildcards.experiment,
            list(snakemake.input.reference),
            list(snakemake.input.other),
            snakemake.output[0],
            n_resamples=snakemake.params.n_resamples,
            seed=snakemake.params.seed,
            values=(snakemake.input.reference_values, snakemake.input.other_values),
        )


def sharing(snakemake: Any) -> None:
    from echomtl.evaluation.sharing import sharing as measure_sharing
    from echomtl.study import Study

    with job_logging(snakemake):
        runs = list(snakemake.params.runs)
        predictions: dict[str, list[str]] = {r: [] for r in runs}
        # the seeds a decisive grid's choice adds are a second input (known after its selection)
        for path in [*snakemake.input.predictions, *snakemake.input.later_predictions]:
            predictions[run_id_from_path(path)[0]].append(path)
        values = dict(zip(runs, snakemake.input["values"], strict=True))
        measure_sharing(
            Study.read(snakemake.input.study),
            predictions,
            values,
            snakemake.output[0],
            n_resamples=snakemake.params.n_resamples,
            seed=snakemake.params.seed,
        )


def interference(snakemake: Any) -> None:
    from echomtl.evaluation.interference import measure_snapshots
    from echomtl.training.trainer import configure_torch

    with job_logging(snakemake):
        device = configure_torch(snakemake.threads, snakemake.params.device)
        result = measure_snapshots(
            snakemake.input.snapshots,
            snakemake.input.cache,
            snakemake.output[0],
            snakemake.wildcards.experiment,
            n_images=snakemake.params.n_images,
            device=str(device),
        )
        for point, r in result["points"].items():
            LOG.info(
                "%s at step %d: task cosine %.3f, null band [%.3f, %.3f]: %s",
                point, r["step"], r["cosine"], r["null_low"], r["null_high"], r["reading"],
            )  # fmt: skip


def aggregate_metrics(snakemake: Any) -> None:
    from echomtl.evaluation.tidy import collect_metrics
    from echomtl.study import Study

    with job_logging(snakemake):
        i = snakemake.input
        collect_metrics(
            [*i.metrics, *i.later_metrics],
            Study.read(i.study),
            steps_files=list(i.steps),
            benchmark_files=list(i.benchmarks),
            epochs_files=list(i.epochs),
            out_csv=snakemake.output[0],
        )

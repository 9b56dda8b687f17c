"""The one registry of the paper's tables and figures.

Each :class:`Output` names its renderer, the exact files it reads for a configured study (a
:class:`Layout`, built by ``rules/common.smk``) and the condition under which the study has it.
The ``table``/``figure`` rules take their inputs per output from here, so that
``snakemake results/paper/figures/<name>.pdf`` runs only the jobs that figure reads; the paper
context checks the files against it and the Snakemake report takes its captions from it. Adding a
table is one entry here and one line in ``paper/main.tex.j2``.

No torch (nor matplotlib) import: the rules read this module at parse time; renderers import
their plotting or table modules when they run.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from echomtl.study import Study

__all__ = [
    "Layout",
    "Sources",
    "Output",
    "OUTPUTS",
    "TABLES",
    "FIGURES",
    "planned",
    "output",
]

Inputs = dict[str, str | list[str]]


@dataclass(frozen=True)
class Layout:
    """Where a configured study's files are (paths as the rules write them)."""

    paper: str
    #: every run's measurements (the evaluation's tidy table)
    tidy: str
    #: the evaluation's statistics (bootstrap intervals, paired comparisons)
    stats: str
    #: the study's plan (echomtl.study), which every renderer reads
    study_json: str
    reference: str
    #: the study's trained experiments (not split variants, not per-fold composites)
    trained: Sequence[str]
    #: the study's experiments (the rows of the result tables)
    study: Sequence[str]
    #: shared-trunk (multi-task) trained experiments: they log gradient diagnostics
    multitask: Sequence[str]
    #: trained GradNorm experiments: they log their task weights
    gradnorm: Sequence[str]
    #: the grid groups' validation choices (written by the evaluation stage)
    selections: Sequence[str]
    audits: Sequence[str]
    claims: str
    #: the reference's first evaluation folder (its test predictions and metrics)
    first_run: str
    #: the records (or splits) file that locates the reference's test images
    records: str
    #: ``run_files(names, filename)``: a training-record file of each experiment and seed
    run_files: Callable[[Sequence[str], str], list[str]]
    #: ``seed_files(name, filename)``: a file of an experiment's evaluation folder, per seed
    seed_files: Callable[[str, str], list[str]]
    #: whether the study measures the cost of sharing (``Study.flags["sharing"]``)
    sharing: bool = False
    #: the runs whose accumulated-gradient interference is measured (``Study.interference_runs``)
    interference: Sequence[str] = ()
    #: the validation choices among rows of different groups (``Study.choices``), one file each
    choices: Sequence[str] = ()

    def interference_files(self) -> Inputs:
        return {"interference": [f"{self.stats}/interference/{e}.json" for e in self.interference]}

    def results(self) -> Inputs:
        """The tidy table, selections and statistics (they read every run of the study)."""
        return {
            "study": self.study_json,
            "tidy": self.tidy,
            "selections": list(self.selections),
            "intervals": [f"{self.stats}/bootstrap/{n}.json" for n in self.study],
            "paired": [f"{self.stats}/paired/{n}.json" for n in self.study if n != self.reference],
            "sharing": [f"{self.stats}/sharing.json"] if self.sharing else [],
            "choices": list(self.choices),
        }

    def audit_files(self) -> Inputs:
        return {"audits": list(self.audits)}


class Sources:
    """What a renderer reads, from a job's named inputs and params (loaded once, on demand)."""

    def __init__(self, inputs: Any, params: Any) -> None:
        self.inputs = inputs
        self.params = params

    def files(self, key: str) -> list[str]:
        value = getattr(self.inputs, key)
        return [value] if isinstance(value, str) else list(value)

    def file(self, key: str) -> str:
        return str(getattr(self.inputs, key))

    @functools.cached_property
    def study(self) -> Study:
        return Study.read(self.inputs.study)

    @functools.cached_property
    def experiments(self) -> pd.DataFrame:
        return self.study.table

    @functools.cached_property
    def results(self) -> Any:
        from echomtl.report.results import load_results

        i = self.inputs
        return load_results(
            i.tidy,
            self.study,
            self.files("selections"),
            self.files("intervals"),
            self.files("paired"),
            self.files("sharing"),
            self.files("choices"),
        )

    @functools.cached_property
    def audits(self) -> dict[str, str]:
        return dict(zip(self.params.audit_schemes, self.files("audits"), strict=True))

    def plain_labels(self) -> dict[str, str]:
        from echomtl.report.labels import experiment_label, plain_text

        return {e: plain_text(experiment_label(self.experiments, e)) for e in self.study.names}

    def run_files(self, key: str) -> dict[tuple[str, int], Path]:
        from echomtl.atomic import run_id_from_path

        return {run_id_from_path(p): Path(p) for p in self.files(key)}


@dataclass(frozen=True)
class Output:
    """One table or figure of the paper."""

    name: str
    kind: Literal["table", "figure"]
    #: ``render(sources, out)``; ``out`` is the ``.tex`` path of a table, the stem of a figure
    render: Callable[[Sources, Path], Any]
    #: ``inputs(layout)``: the named files it reads (the rule's ``input:``)
    inputs: Callable[[Layout], Inputs]
    #: flag of the study's plan (``echomtl.study.FLAGS``) under which it exists; None: always
    condition: str | None
    #: one sentence for the Snakemake report (the paper's caption is in the template)
    caption: str


def _results(layout: Layout) -> Inputs:
    return layout.results()


def _renderers(kind: str) -> Any:
    """The module of a kind's renderers, imported when a job renders (never at parse time)."""
    return importlib.import_module(f"echomtl.report.{kind}s")


def _on_results(
    kind: Literal["table", "figure"], name: str, renderer: str, condition: str | None,
    caption: str, *args: Any,
) -> Output:  # fmt: skip
    """An output drawn from the study's results alone: ``renderer(results, *args, out)``."""

    def render(s: Sources, out: Path) -> Any:
        return getattr(_renderers(kind), renderer)(s.results, *args, out)

    return Output(name, kind, render, _results, condition, caption)


def _results_audits(layout: Layout) -> Inputs:
    return {**layout.results(), **layout.audit_files()}


def _tables() -> list[Output]:
    def tables() -> Any:
        return _renderers("table")

    return [
        Output(
            "dataset", "table",
            lambda s, out: tables().table_dataset(s.audits, out),
            lambda lay: lay.audit_files(), None,
            "Images, patients, videos and views per split of every partition.",
        ),
        Output(
            "leakage", "table",
            lambda s, out: tables().table_leakage(s.audits, out),
            lambda lay: lay.audit_files(), None,
            "Evaluation images whose video or patient is also in training, per partition.",
        ),
        _on_results(
            "table", "sharing", "table_sharing", "sharing",
            "The cost of sharing per task and the fraction of it each method recovers.",
        ),
        _on_results(
            "table", "tuning", "table_tuning", "comparisons",
            "The tuning budget of every method: what was chosen on validation, among how many.",
        ),
        _on_results(
            "table", "main", "table_main", None,
            "Test metrics of every configuration with 95% intervals.",
        ),
        _on_results(
            "table", "cost", "table_cost", None,
            "What each method cost to train (seconds per optimizer step, peak memory), beside "
            "its test accuracy.",
        ),
        Output(
            "claims", "table",
            lambda s, out: tables().table_claims(s.file("claims"), s.results, out),
            lambda lay: {**lay.results(), "claims": lay.claims}, None,
            "The seed guide's claimed numbers beside the measured ones.",
        ),
        _on_results(
            "table", "alpha", "table_alpha", "alpha",
            "GradNorm's asymmetry alpha against test metrics.",
        ),
        _on_results(
            "table", "augmentation", "table_augmentation", "augmentation",
            "The reference with and without augmentation.",
        ),
        _on_results(
            "table", "dual_backbone", "table_dual_backbone", "dual_backbone",
            "Shared trunk against two separate backbones.",
        ),
        _on_results(
            "table", "traditional", "table_traditional", "traditional",
            "Fixed and manually tuned loss weights.",
        ),
        _on_results(
            "table", "selection", "table_selection", "manual",
            "Validation scores of the manual weight grid.", "manual",
        ),
        Output(
            "weight_phases", "table",
            lambda s, out: tables().table_weight_phases(s.files("steps"), out),
            lambda lay: {"steps": lay.run_files([lay.reference], "steps.csv")}, "gradnorm",
            "GradNorm's task weights in three phases of training.",
        ),
        Output(
            "interference", "table",
            lambda s, out: tables().table_interference(s.files("interference"), s.experiments, out),
            lambda lay: lay.interference_files(), "interference",
            "Task cosines of gradients accumulated over training images, against their null band.",
        ),
        Output(
            "diagnostics", "table",
            lambda s, out: tables().table_diagnostics(
                _diagnostics(s.files("diagnostics")), s.experiments, out
            ),
            lambda lay: {"diagnostics": lay.run_files(lay.multitask, "diagnostics.csv")},
            "diagnostics", "Gradient cosines, null reference and weighted norm ratios.",
        ),
        _on_results(
            "table", "verdicts", "table_verdicts", "comparisons",
            "Paired verdicts of the reference against every configuration, per metric.",
        ),
        _on_results(
            "table", "init", "table_init", "init",
            "The same configurations from random weights and from the pretrained checkpoint.",
        ),
        Output(
            "split", "table",
            lambda s, out: tables().table_split(s.results, s.audits, out),
            _results_audits, "split",
            "The study's split against the export's own split (leakage).",
        ),
    ]  # fmt: skip


def _diagnostics(paths: list[str]) -> pd.DataFrame:
    from echomtl.report.summaries import diagnostics_summary

    return diagnostics_summary(paths)


def _claimed_differences(sources: Sources) -> dict[str, float]:
    from echomtl.report.queries import claimed_differences, load_claims

    claims = load_claims(sources.file("claims"))
    return claimed_differences(claims, sources.study.reference, sources.results.chosen)


def _figures() -> list[Output]:
    def figures() -> Any:
        return _renderers("figure")

    return [
        Output(
            "training_curves", "figure",
            lambda s, out: figures().fig_training_curves(
                s.run_files("epochs"), out, s.plain_labels(), s.study.names
            ),
            lambda lay: {"epochs": lay.run_files(lay.trained, "epochs.csv")}, None,
            "Training and validation losses per epoch.",
        ),
        Output(
            "gradnorm_weights", "figure",
            lambda s, out: figures().fig_gradnorm_weights(
                s.run_files("steps"), out, s.plain_labels(), s.study.names
            ),
            lambda lay: {"steps": lay.run_files(lay.gradnorm, "steps.csv")}, "gradnorm",
            "GradNorm's task weights over training.",
        ),
        Output(
            "gradient_diagnostics", "figure",
            lambda s, out: figures().fig_gradient_diagnostics(
                s.run_files("diagnostics"), out, s.plain_labels(), s.study.names
            ),
            lambda lay: {"diagnostics": lay.run_files(lay.multitask, "diagnostics.csv")},
            "diagnostics", "Per-step cosine between the task gradients, with the null band.",
        ),
        _on_results(
            "figure", "main_comparison", "fig_main_comparison", None,
            "Test mAP@0.5 and view accuracy with 95% intervals.",
        ),
        Output(
            "paired_differences", "figure",
            lambda s, out: figures().fig_paired_differences(
                s.results, out,
                claimed=_claimed_differences(s),
            ),
            lambda lay: {**lay.results(), "claims": lay.claims}, "comparisons",
            "Paired differences from the reference, with the seed guide's claimed difference.",
        ),
        _on_results(
            "figure", "front", "fig_front", "front",
            "Every configuration against the fixed-weight front.",
        ),
        _on_results(
            "figure", "alpha_sensitivity", "fig_alpha_sensitivity", "alpha",
            "Test metrics against GradNorm's alpha.",
        ),
        _on_results(
            "figure", "augmentation", "fig_augmentation", "augmentation",
            "The reference with and without augmentation.",
        ),
        _on_results(
            "figure", "per_class_ap", "fig_per_class_ap", None,
            "Test AP@0.5 per class, with the boxes per class.",
        ),
        Output(
            "confusion_matrix", "figure",
            lambda s, out: figures().fig_confusion_matrix(s.files("metrics"), out),
            lambda lay: {"metrics": lay.seed_files(lay.reference, "metrics_test.json")}, None,
            "The reference's view confusion matrix on the test images.",
        ),
        Output(
            "detection_examples", "figure",
            lambda s, out: figures().fig_detection_examples(
                s.file("predictions"), s.file("records"), out, metrics_json=s.file("metrics"),
                images_root=s.params.images_root,
            ),
            lambda lay: {
                "predictions": f"{lay.first_run}/predictions_test.json",
                "metrics": f"{lay.first_run}/metrics_test.json",
                "records": lay.records,
            },
            None, "The reference's detections beside the ground truth on test images.",
        ),
    ]  # fmt: skip


OUTPUTS: dict[str, Output] = {o.kind + "/" + o.name: o for o in _tables() + _figures()}
TABLES = [o.name for o in OUTPUTS.values() if o.kind == "table"]
FIGURES = [o.name for o in OUTPUTS.values() if o.kind == "figure"]


def output(kind: str, name: str) -> Output:
    """The registry entry; an unknown name is an error listing the known ones."""
    key = f"{kind}/{name}"
    if key not in OUTPUTS:
        known = TABLES if kind == "table" else FIGURES
        raise KeyError(f"unknown {kind} {name!r}; known: {', '.join(known)}")
    return OUTPUTS[key]


def planned(study: Study) -> list[Output]:
    """The outputs the study has (its plan's flags), in registry order."""
    return [o for o in OUTPUTS.values() if o.condition is None or study.flags[o.condition]]

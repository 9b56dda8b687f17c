"""Report-stage workflow jobs: one function per rule of ``rules/paper.smk``.

Every job reads only files earlier rules wrote (metrics, predictions, logs, audits) and the
experiments table, and writes its outputs atomically. Table and figure jobs render the entry of
the output registry (:mod:`echomtl.report.outputs`) named by the ``name`` wildcard, from the
inputs that entry declared.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from echomtl.jobs import job_logging


def aggregate_metrics(snakemake: Any) -> None:
    from echomtl.report.aggregate import collect_metrics

    with job_logging(snakemake):
        i = snakemake.input
        collect_metrics(
            list(i.metrics),
            snakemake.params.experiments,
            steps_files=list(i.steps),
            benchmark_files=list(i.benchmarks),
            out_csv=snakemake.output[0],
        )


def select_group(snakemake: Any) -> None:
    """Validation selection of a grid group: on its validation metrics, per fold under cv."""
    from echomtl.report._io import read_json
    from echomtl.report.aggregate import collect_metrics, select_group_per_fold
    from echomtl.report.aggregate import select_group as select

    with job_logging(snakemake):
        p, files = snakemake.params, list(snakemake.input)
        by_fold: dict[int | None, list[str]] = {}
        for path in files:
            by_fold.setdefault(read_json(path).get("fold"), []).append(path)
        tidies = {f: collect_metrics(paths, p.experiments) for f, paths in by_fold.items()}
        if list(tidies) == [None]:
            select(tidies[None], p.experiments, snakemake.wildcards.group, snakemake.output[0],
                   score=p.score)  # fmt: skip
        elif None in tidies:
            raise ValueError(
                f"selection of {snakemake.wildcards.group}: fold and holdout runs mixed"
            )
        else:
            select_group_per_fold(tidies, p.experiments, snakemake.wildcards.group,
                                  snakemake.output[0], score=p.score)  # fmt: skip


def bootstrap_experiment(snakemake: Any) -> None:
    from echomtl.report.stats import bootstrap_experiment as bootstrap

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
    from echomtl.report.stats import paired_experiment

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


def _render(snakemake: Any, kind: str, out: Path) -> None:
    from echomtl.report.outputs import Sources, output

    with job_logging(snakemake):
        entry = output(kind, snakemake.wildcards.name)
        entry.render(Sources(snakemake.input, snakemake.params), out)


def make_table(snakemake: Any) -> None:
    """One table of the registry (``echomtl.report.outputs``), by the ``name`` wildcard."""
    _render(snakemake, "table", Path(snakemake.output[0]))


def make_figure(snakemake: Any) -> None:
    """One figure of the registry, by the ``name`` wildcard (PDF and PNG from one stem)."""
    _render(snakemake, "figure", Path(snakemake.output.pdf).with_suffix(""))


def render_paper(snakemake: Any) -> None:
    from echomtl.report import aggregate, context, latex
    from echomtl.report.outputs import Sources

    with job_logging(snakemake):
        i, o, p = snakemake.input, snakemake.output, snakemake.params
        src = Sources(i, p)
        out_dir = Path(o.tex).parent
        files = {
            "numbers": Path(o.numbers),
            "bibliography": out_dir / "references.bib",
            "tables": {Path(t).stem: Path(t) for t in i.tables},
            "figures": {Path(f).stem: Path(f) for f in i.figures},
        }
        shutil.copyfile(i.bibliography, files["bibliography"])
        ctx = context.build_context(
            src.results,
            p.config,
            src.audits,
            i.claims,
            files,
            diagnostics=aggregate.diagnostics_summary(list(i.diagnostics)),
            phases=aggregate.weight_phases(list(i.steps)) if i.steps else None,
            checkpoint=p.checkpoint,
        )
        latex.write_numbers(ctx["numbers"], o.numbers)
        latex.render_paper(ctx, Path(i.template).parent, o.tex)


def compile_pdf(snakemake: Any) -> None:
    from echomtl.report.pdf import compile_pdf as compile_tex

    with job_logging(snakemake):
        compile_tex(snakemake.input.tex)

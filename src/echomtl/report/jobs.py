"""Report-stage workflow jobs: one function per rule of ``rules/paper.smk``.

Every job reads only files earlier rules wrote (metrics, predictions, logs, audits) and the
study's plan, and writes its outputs atomically. Table and figure jobs render the entry of
the output registry (:mod:`echomtl.report.outputs`) named by the ``name`` wildcard, from the
inputs that entry declared.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from echomtl.atomic import read_json
from echomtl.console import job_logging


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
    from echomtl.report import context, latex, summaries
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
            diagnostics=summaries.diagnostics_summary(list(i.diagnostics)),
            phases=summaries.weight_phases(list(i.steps)) if i.steps else None,
            checkpoint=p.checkpoint,
            interference=[read_json(f) for f in i.interference],
            provenance=read_json(i.provenance),
        )
        latex.write_numbers(ctx["numbers"], o.numbers)
        latex.render_paper(ctx, Path(i.template).parent, o.tex)


def provenance(snakemake: Any) -> None:
    """The build's provenance record (:mod:`echomtl.report.provenance`)."""
    from echomtl.report.provenance import provenance as record

    with job_logging(snakemake):
        i, p = snakemake.input, snakemake.params
        record(git=p.git, config=p.config, records=i.records, export=p.export,
               benchmarks=[*i.benchmarks, *i.later_benchmarks],
               epochs=[*i.epochs, *i.later_epochs],
               checkpoint=p.checkpoint, pins=p.pins, origin=p.origin,
               out_json=snakemake.output[0])  # fmt: skip


def arxiv(snakemake: Any) -> None:
    """The submission tarball (:mod:`echomtl.report.arxiv`)."""
    from echomtl.report.arxiv import write_arxiv

    with job_logging(snakemake) as log:
        i = snakemake.input
        members = write_arxiv(i.tex, i.bbl, snakemake.output[0])
        log.info("%s: %d files: %s", snakemake.output[0], len(members), ", ".join(members))


def compile_pdf(snakemake: Any) -> None:
    from echomtl.report.pdf import compile_pdf as compile_tex

    with job_logging(snakemake):
        compile_tex(snakemake.input.tex)

# Regenerates the paper from raw data: data -> training -> evaluation -> report.
# `snakemake --cores N` runs the whole study of the active config (default: config/config.yaml).
from importlib.resources import files
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")
# The paper's sources (template, bibliography, claims, captions) are package data of echomtl.
PAPER_SOURCES = Path(str(files("echomtl.paper")))


configfile: "config/config.yaml"


report: str(PAPER_SOURCES / "captions" / "workflow.rst")


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/paper.smk"


# Under a cluster executor (profiles/slurm) the data and report rules run on the submit host and
# only train and evaluate are submitted; ECHOMTL_SUBMIT_ALL=1 submits every rule (the SLURM proof).
if os.environ.get("ECHOMTL_SUBMIT_ALL") != "1":

    localrules:
        generate_synthetic,
        convert_export,
        split_records,
        audit_dataset,
        build_cache,
        aggregate_metrics,
        plan_study,
        select_group,
        bootstrap_experiment,
        paired_bootstrap,
        table,
        figure,
        render_paper,
        compile_pdf,
        arxiv,
        provenance,


onsuccess:
    # The TeX hint only when this run was asked for the paper (default target or a main.* file).
    _targets = (
        set(workflow.dag_settings.targets) if workflow.dag_settings else set()
    )
    _paper_asked = not _targets or any(
        t == "all" or Path(t).name in ("main.pdf", "main.tex") for t in _targets
    )
    if not LATEXMK and _paper_asked:
        print(
            f"{PAPER}/main.tex rendered; no PDF: latexmk is not installed. Install TeX with "
            "`scripts/install-tex.sh` (Debian/Ubuntu, as root) and re-run to build "
            f"{PAPER}/main.pdf."
        )


rule all:
    default_target: True
    input:
        all_outputs(),

# Report stage: tidy metrics -> tables and figures -> LaTeX -> PDF.
# Every table and figure is one job of one rule (`snakemake results/paper/figures/<name>.pdf`),
# whose inputs are that output's own (echomtl.report.outputs): nothing else is scheduled.


rule table:
    input:
        unpack(output_inputs("table")),
    output:
        f"{PAPER}/tables/{{name}}.tex",
    log:
        f"{R}/logs/paper/table_{{name}}.log",
    wildcard_constraints:
        name="|".join(TABLES),
    conda:
        "../environment.yml"
    params:
        audit_schemes=AUDIT_SCHEMES,
    script:
        "../workflow/scripts/make_table.py"


rule figure:
    input:
        unpack(output_inputs("figure")),
    output:
        pdf=f"{PAPER}/figures/{{name}}.pdf",
        png=report(
            f"{PAPER}/figures/{{name}}.png",
            caption=str(PAPER_SOURCES / "captions" / "figure.rst"),
            category="Figures",
            labels={"figure": "{name}"},
        ),
    log:
        f"{R}/logs/paper/figure_{{name}}.log",
    wildcard_constraints:
        name="|".join(FIGURES),
    conda:
        "../environment.yml"
    params:
        audit_schemes=AUDIT_SCHEMES,
        caption=lambda wildcards: output("figure", wildcards.name).caption,
        # where the detection examples' images are: the export, wherever it is on this machine
        images_root=export_dir(),
    script:
        "../workflow/scripts/make_figure.py"


# What produced the build (echomtl.report.provenance): the git state is read at parse time and
# passed as a parameter, so a new commit or a change of dirtiness reruns the record and the paper.
rule provenance:
    input:
        records=f"{DATA}/records.csv",
        benchmarks=training_files("train.benchmark.tsv"),
        later_benchmarks=lambda w: training_files("train.benchmark.tsv", later=True),
        # the machine each run trained on is in its epochs.csv (echomtl.training.machine)
        epochs=training_files("epochs.csv"),
        later_epochs=lambda w: training_files("epochs.csv", later=True),
    output:
        report(
            f"{R}/provenance.json",
            caption=str(PAPER_SOURCES / "captions" / "provenance.rst"),
            category="Provenance",
        ),
    log:
        f"{R}/logs/provenance.log",
    conda:
        "../environment.yml"
    params:
        git=GIT_STATE,
        config=config,
        checkpoint=CHECKPOINT,
        pins=PINS,
        export=export_dir(),
        origin=RESULTS_ORIGIN,
    script:
        "../workflow/scripts/provenance.py"


rule render_paper:
    input:
        unpack(paper_inputs),
        provenance=f"{R}/provenance.json",
        tables=[f"{PAPER}/tables/{name}.tex" for name in PLAN["tables"]],
        figures=[f"{PAPER}/figures/{name}.pdf" for name in PLAN["figures"]],
        claims=str(PAPER_SOURCES / "claims.yaml"),
        bibliography=str(PAPER_SOURCES / "references.bib"),
        template=str(PAPER_SOURCES / "main.tex.j2"),
        steps=run_files([REFERENCE], "steps.csv"),
        diagnostics=run_files(MULTITASK, "diagnostics.csv"),
    output:
        tex=f"{PAPER}/main.tex",
        numbers=f"{PAPER}/numbers.tex",
    log:
        f"{R}/logs/paper/render_paper.log",
    conda:
        "../environment.yml"
    params:
        audit_schemes=AUDIT_SCHEMES,
        config=config,
        checkpoint=CHECKPOINT,
    script:
        "../workflow/scripts/render_paper.py"


rule compile_pdf:
    input:
        tex=f"{PAPER}/main.tex",
        numbers=f"{PAPER}/numbers.tex",
        tables=[f"{PAPER}/tables/{name}.tex" for name in PLAN["tables"]],
        figures=[f"{PAPER}/figures/{name}.pdf" for name in PLAN["figures"]],
    output:
        pdf=report(
            f"{PAPER}/main.pdf",
            caption=str(PAPER_SOURCES / "captions" / "paper.rst"),
            category="Paper",
        ),
        # BibTeX's output: the arXiv source carries it instead of the .bib
        bbl=f"{PAPER}/main.bbl",
    log:
        f"{R}/logs/paper/compile_pdf.log",
    conda:
        "../environment.yml"
    script:
        "../workflow/scripts/compile_pdf.py"


# The submittable source (echomtl.report.arxiv): main.tex, what it inputs (numbers, tables, the
# figures as PDF) and the .bbl, nothing else; it builds alone with plain pdflatex.
rule arxiv:
    input:
        tex=f"{PAPER}/main.tex",
        bbl=f"{PAPER}/main.bbl",
        pdf=f"{PAPER}/main.pdf",
    output:
        f"{PAPER}/arxiv.tar.gz",
    log:
        f"{R}/logs/paper/arxiv.log",
    conda:
        "../environment.yml"
    script:
        "../workflow/scripts/arxiv.py"

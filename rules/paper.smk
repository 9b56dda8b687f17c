# Report stage: tidy metrics -> selection and statistics -> tables and figures -> LaTeX -> PDF.
# Every table and figure is one job of one rule (`snakemake results/paper/figures/<name>.pdf`),
# whose inputs are that output's own (echomtl.report.outputs): nothing else is scheduled.


rule aggregate_metrics:
    input:
        metrics=all_metrics(),
        steps=all_runs("{run}/steps.csv"),
        benchmarks=all_runs("{run}/train.benchmark.tsv"),
    output:
        f"{PAPER}/tidy.csv",
    log:
        f"{R}/logs/paper/aggregate_metrics.log",
    conda:
        "../environment.yml"
    params:
        experiments=EXPERIMENTS,
    script:
        "../workflow/scripts/aggregate_metrics.py"


rule select_group:
    input:
        selection_inputs,
    output:
        f"{PAPER}/selection/{{group}}.json",
    log:
        f"{R}/logs/paper/select_group_{{group}}.log",
    conda:
        "../environment.yml"
    params:
        experiments=EXPERIMENTS,
        score=config["report"]["selection_metric"],
    script:
        "../workflow/scripts/select_group.py"


rule bootstrap_experiment:
    input:
        lambda w: seed_files(w.experiment, "predictions_test.json"),
    output:
        json=f"{PAPER}/stats/bootstrap/{{experiment}}.json",
        # every resample's values: the paired comparisons read them instead of re-scoring
        values=f"{PAPER}/stats/bootstrap/{{experiment}}.values.npz",
    log:
        f"{R}/logs/paper/bootstrap_{{experiment}}.log",
    conda:
        "../environment.yml"
    params:
        n_resamples=config["report"]["bootstrap_resamples"],
        seed=config["report"]["bootstrap_seed"],
    script:
        "../workflow/scripts/bootstrap_experiment.py"


rule paired_bootstrap:
    input:
        reference=seed_files(REFERENCE, "predictions_test.json"),
        other=lambda w: seed_files(w.experiment, "predictions_test.json"),
        reference_values=f"{PAPER}/stats/bootstrap/{REFERENCE}.values.npz",
        other_values=f"{PAPER}/stats/bootstrap/{{experiment}}.values.npz",
    output:
        f"{PAPER}/stats/paired/{{experiment}}.json",
    log:
        f"{R}/logs/paper/paired_{{experiment}}.log",
    conda:
        "../environment.yml"
    params:
        reference=REFERENCE,
        n_resamples=config["report"]["bootstrap_resamples"],
        seed=config["report"]["bootstrap_seed"],
    script:
        "../workflow/scripts/paired_bootstrap.py"


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
        experiments=EXPERIMENTS,
        reference=REFERENCE,
        audit_schemes=AUDIT_SCHEMES,
        order=list(EXPERIMENTS.index),
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
        experiments=EXPERIMENTS,
        reference=REFERENCE,
        audit_schemes=AUDIT_SCHEMES,
        order=list(EXPERIMENTS.index),
        caption=lambda wildcards: output("figure", wildcards.name).caption,
    script:
        "../workflow/scripts/make_figure.py"


rule render_paper:
    input:
        unpack(paper_inputs),
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
        experiments=EXPERIMENTS,
        reference=REFERENCE,
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
        report(
            f"{PAPER}/main.pdf",
            caption=str(PAPER_SOURCES / "captions" / "paper.rst"),
            category="Paper",
        ),
    log:
        f"{R}/logs/paper/compile_pdf.log",
    conda:
        "../environment.yml"
    script:
        "../workflow/scripts/compile_pdf.py"

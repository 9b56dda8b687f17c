"""The paper end to end on a fixture study: context, numbers, rendered text, PDF."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "report"))
import report_fixture as rf  # noqa: E402

from echomtl.report import context as context_mod  # noqa: E402
from echomtl.report import summaries  # noqa: E402
from echomtl.report.pdf import LatexError, compile_pdf, scan_log  # noqa: E402

SMALL = ["det_only", "fixed", "manual_wcls0.05", "manual_wcls0.2", "gradnorm_a1.5", "dual_backbone"]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """Every experiment of the fixture, with figures (the PDF test needs them)."""
    root = tmp_path_factory.mktemp("paper")
    study = rf.make_study(root, n_images=16)
    return study, rf.build_report(study, root / "out", n_resamples=10)


def _abstract(tex: str) -> str:
    return tex.split("\\begin{abstract}", 1)[1].split("\\end{abstract}", 1)[0]


def test_template_renders_every_section(full):
    _, built = full
    tex = built["tex"].read_text()
    for section in ("Introduction", "Related Work", "Methodology", "Experiments",
                    "Analysis and Discussion", "Ablation Studies", "Comparison with Alternatives",
                    "Limitations", "Conclusion"):  # fmt: skip
        assert f"\\section{{{section}}}" in tex, section
    assert "\\begin{abstract}" in tex and "\\bibliography{" in tex
    assert "\\VAR{" not in tex and "\\BLOCK{" not in tex and "%%" not in tex
    assert "\\begin{tikzpicture}" in tex and "\\begin{algorithm}" in tex
    assert "synthetic" in _abstract(tex)


def test_every_macro_used_is_defined_and_every_input_exists(full):
    _, built = full
    out = built["tex"].parent
    tex = built["tex"].read_text()
    numbers = (out / "numbers.tex").read_text()
    defined = set(re.findall(r"\\newcommand\{\\(R[A-Za-z]+)\}", numbers))
    used = set(re.findall(r"\\(R[A-Z][A-Za-z]+)\{\}", tex))
    assert used and used <= defined, used - defined
    for path in re.findall(r"\\(?:input|includegraphics)(?:\[[^]]*\])?\{([^}]+)\}", tex):
        assert (out / path).exists(), path
    # results are never typed into the text: no decimal number outside macros and the preamble
    body = tex.split("\\begin{document}", 1)[1]
    body = re.sub(r"\\begin\{tikzpicture\}.*?\\end\{tikzpicture\}", "", body, flags=re.S)
    body = re.sub(r"mAP@0\.5:0\.95|0\.\d+\\linewidth|0\.5 to 0\.95", "", body)  # definitions
    assert not re.findall(r"(?<![\w.\\{])0\.\d\d+", body)


def test_limitations_report_leakage_view_order_and_scale(full):
    _, built = full
    ctx = built["context"]
    tex = built["tex"].read_text()
    limitations = tex.split("\\section{Limitations}", 1)[1].split("\\section{Conclusion}", 1)[0]
    assert "export's own split" in limitations and "Synthetic data" in limitations
    assert "PSAX, PLAX and A4C" in limitations  # the source's declared order (claims.yaml)
    assert "A4C, PSAX and PLAX" in limitations  # the configured order
    assert ctx["numbers"]["leak/original/test/images_video"] == 8
    assert ctx["numbers"]["cfg/epochs"] == 6 and ctx["numbers"]["cfg/imgsz"] == 128


def _render(tmp_path, quality, experiments=SMALL, n_resamples=10):
    study = rf.make_study(tmp_path, experiments=experiments, quality=quality, n_images=16)
    return rf.build_report(study, tmp_path / "out", n_resamples=n_resamples, figures=False)


def test_comparative_sentences_follow_the_data(tmp_path):
    # 200 resamples: the smallest p-value (2/201) survives Holm in a family of 4 (map50: det_only,
    # fixed, two manual points; the dual backbone's detector is det_only's and counts once)
    good = _render(tmp_path / "a", {"gradnorm_a1.5": 0.95, "fixed": 0.2}, n_resamples=200)
    bad = _render(tmp_path / "b", {"gradnorm_a1.5": 0.2, "fixed": 0.95}, n_resamples=200)
    a, b = _abstract(good["tex"].read_text()), _abstract(bad["tex"].read_text())
    assert good["context"]["verdict"]("fixed", "map50") == "higher"
    assert bad["context"]["verdict"]("fixed", "map50") == "lower"
    assert "these data support the claim" in a and "do not support" not in a
    assert "these data do not support the claim" in b
    conclusion = bad["tex"].read_text().split("\\section{Conclusion}", 1)[1]
    assert "do not show the improvement" in conclusion


def test_context_fails_clearly_on_missing_files(full):
    study, built = full
    files = dict(built["files"])
    files["tables"] = {k: v for k, v in files["tables"].items() if k != "alpha"}
    claims, res = rf.REPO / "paper" / "claims.yaml", built["results"]
    with pytest.raises(ValueError, match="shared-trunk runs, but their diagnostics have no rows"):
        context_mod.build_context(res, study.config, study.audits, claims, files)
    diagnostics = summaries.diagnostics_summary(study.files("diagnostics.csv", res.study.multitask))
    with pytest.raises(ValueError, match=r"tables.alpha \(the study has alpha\)"):
        context_mod.build_context(
            res, study.config, study.audits, claims, files, diagnostics=diagnostics
        )


def test_real_data_build_has_no_synthetic_caveat(tmp_path):
    study = rf.make_study(tmp_path, experiments=SMALL, n_images=8, source="export")
    tex = rf.build_report(study, tmp_path / "out", n_resamples=5, figures=False)["tex"].read_text()
    assert "synthetic" not in tex.lower()


def test_scan_log_finds_problems(tmp_path):
    log = tmp_path / "x.log"
    log.write_text(
        "LaTeX Warning: Reference `tab:nope' on page 3 undefined on input line 12.\n"
        "Package natbib Warning: Citation `nobody2020' on page 1 undefined on input line 5.\n"
        "! LaTeX Error: File `figures/missing.pdf' not found.\n"
        "LaTeX Warning: Reference `tab:nope' on page 3 undefined on input line 12.\n"
    )
    problems = scan_log(log)
    assert len(problems) == 3
    assert any("tab:nope" in p for p in problems) and any("missing.pdf" in p for p in problems)


@pytest.mark.skipif(shutil.which("latexmk") is None, reason="latexmk not installed (TeX Live)")
def test_pdf_builds_without_unresolved_items(full):
    _, built = full
    pdf = compile_pdf(built["tex"])
    assert pdf.exists() and pdf.read_bytes().startswith(b"%PDF")
    assert scan_log(pdf.with_suffix(".log")) == []


@pytest.mark.skipif(shutil.which("latexmk") is None, reason="latexmk not installed (TeX Live)")
def test_pdf_build_reports_a_missing_figure(full, tmp_path):
    _, built = full
    out = built["tex"].parent
    broken = out / "broken.tex"
    broken.write_text(
        built["tex"].read_text().replace("figures/main_comparison.pdf", "figures/nope.pdf")
    )
    with pytest.raises(LatexError, match="nope.pdf"):
        compile_pdf(broken, tmp_path)


def test_registry_declares_each_outputs_own_inputs():
    """What each entry declares is what the rule schedules (tests/test_report_dag.py runs the
    DAG; the fixture's build_report renders every entry from its declared inputs only)."""
    from echomtl.report.outputs import OUTPUTS, Layout

    layout = Layout(
        paper="P", tidy="T.csv", stats="S", study_json="study.json", reference="r",
        trained=["a", "r"], study=["a", "r"], multitask=["a", "r"], gradnorm=["r"],
        selections=["g.json"], audits=["x.json"], claims="c.yaml", first_run="r/seed0",
        records="rec.csv", run_files=lambda names, fn: [f"{n}/seed0/{fn}" for n in names],
        seed_files=lambda name, fn: [f"{name}/seed0/{fn}"],
    )  # fmt: skip
    for entry in OUTPUTS.values():
        assert entry.caption and "_" not in entry.caption, entry.name
    table = {o.name: o.inputs(layout) for o in OUTPUTS.values() if o.kind == "table"}
    figure = {o.name: o.inputs(layout) for o in OUTPUTS.values() if o.kind == "figure"}
    assert table["dataset"] == table["leakage"] == {"audits": ["x.json"]}
    assert figure["confusion_matrix"] == {"metrics": ["r/seed0/metrics_test.json"]}
    assert figure["gradnorm_weights"] == {"steps": ["r/seed0/steps.csv"]}
    assert table["weight_phases"] == {"steps": ["r/seed0/steps.csv"]}
    assert "tidy" not in figure["training_curves"] and "tidy" in table["main"]


def test_minimal_study_renders_without_untested_claims(tmp_path):
    study = rf.make_study(tmp_path, experiments=["gradnorm_a1.5", "det_only"], n_images=8)
    tex = rf.build_report(study, tmp_path / "out", n_resamples=5, figures=False)["tex"].read_text()
    abstract = _abstract(tex)
    assert "did not run the seed's fixed weights" in abstract
    assert "support the claim" not in abstract
    assert "\\ref{tab:alpha}" not in tex and "Only one value of $\\alpha$" in tex


HOSTILE_CLASSES = [r"A\input{/etc/passwd}", "M$(touch pwned)", "P%#_&", "Tü中"]
HOSTILE_VIEWS = [r"\immediate\write18{touch pwned}", "PS~AX", "PL^AX"]


def test_hostile_names_reach_the_paper_escaped_and_never_execute(tmp_path, monkeypatch):
    """Class and view names with TeX and shell metacharacters: escaped in every rendered file,
    and the PDF (when TeX is installed) builds without running anything."""
    monkeypatch.setattr(rf, "CLASS_NAMES", HOSTILE_CLASSES)
    monkeypatch.setattr(rf, "VIEW_NAMES", HOSTILE_VIEWS)
    study = rf.make_study(tmp_path / "study", n_images=16)
    built = rf.build_report(study, tmp_path / "out", n_resamples=5, figures=False)
    out = built["tex"].parent
    rendered = "".join(p.read_text() for p in out.rglob("*.tex"))
    for raw in ("\\input{/etc/passwd}", "\\write18", "\\immediate"):
        assert raw not in rendered, raw
    assert not re.search(r"(?<!\\)\$\(touch", rendered)  # only as the escaped text \$(touch
    assert "A\\textbackslash{}input\\{/etc/passwd\\}" in rendered
    if shutil.which("latexmk") is not None:
        try:
            compile_pdf(built["tex"], tmp_path / "pdf")
        except LatexError as exc:  # figures=False leaves \includegraphics targets missing
            assert "figures/" in str(exc), exc
        assert not any(p.name == "pwned" for p in tmp_path.rglob("*"))


def test_detection_floor_rule_decides_both_ways():
    from echomtl.report.reading import DETECTION_FLOOR, detection_learned

    assert not detection_learned([0.02, 0.05, DETECTION_FLOOR - 1e-6])
    assert detection_learned([0.02, DETECTION_FLOOR])
    assert detection_learned([])  # no interval: nothing to say


def test_failed_run_rule_decides_both_ways_per_task():
    from echomtl.report.reading import DETECTION_FLOOR, failure_reasons

    nan = float("nan")
    assert failure_reasons(DETECTION_FLOOR - 0.01, 0.9, 0.5) == ["detection"]
    assert failure_reasons(DETECTION_FLOOR, 0.9, 0.5) == []
    assert failure_reasons(0.5, 0.5, 0.5) == ["view"]  # not above the majority share: failed
    assert failure_reasons(0.5, 0.51, 0.5) == []
    assert failure_reasons(0.0, 0.2, 0.5) == ["detection", "view"]
    # a task the model lacks (NaN) decides nothing
    assert failure_reasons(nan, 0.9, 0.5) == [] and failure_reasons(0.5, nan, 0.5) == []


def test_direction_against_expectation_is_flagged_both_ways():
    from echomtl.report.reading import against_expectation

    assert against_expectation(-0.08, "split")  # the leaky split scored lower: flagged
    assert not against_expectation(+0.08, "split")
    assert against_expectation(+0.05, "init_scratch")  # random weights beat the checkpoint
    assert not against_expectation(-0.05, "init_scratch")
    assert against_expectation(-0.05, "init_pretrained")
    assert not against_expectation(0.0, "split") and not against_expectation(float("nan"), "split")


def test_gradnorms_detection_step_against_fixed_weights_is_read_both_ways():
    from echomtl.report.reading import STEP_TOLERANCE, detection_step_reading

    assert detection_step_reading(0.97, 1.0) == "the same"
    assert detection_step_reading(1.0 - STEP_TOLERANCE + 1e-9, 1.0) == "the same"
    assert detection_step_reading(0.70, 1.0) == "smaller"  # renormalised to the initial sum
    assert detection_step_reading(1.90, 1.0) == "larger"  # renormalised to the task count
    with pytest.raises(ValueError):
        detection_step_reading(0.9, 0.0)


def test_abstract_is_at_most_200_words_and_states_the_level_reached(full):
    _, built = full
    abstract = _abstract(built["tex"].read_text())
    text = re.sub(r"%%.*|%\n", "", abstract)
    text = re.sub(r"\\(?:citep|emph|VAR)\{[^}]*\}|\\[A-Za-z]+\{\}", " X ", text)
    words = [w for w in re.split(r"\s+", text) if re.search(r"[A-Za-z0-9]", w)]
    assert len(words) <= 200, (len(words), abstract)
    assert "reached an mAP@0.5 of" in abstract
    # the question in order: the cost of sharing comes before the verdict on the claim
    assert abstract.index("cost anything") < abstract.index("the claim that GradNorm improves")


def test_a_failed_run_makes_its_axis_unreadable(tmp_path):
    exps = ["fixed", "gradnorm_a1.5", "gradnorm_a1.5_aug"]
    failed = _render(tmp_path / "f", {"gradnorm_a1.5_aug": 0.0}, experiments=exps)
    fine = _render(tmp_path / "g", {"gradnorm_a1.5_aug": 0.9}, experiments=exps)
    assert "detection" in failed["context"]["failed"]["gradnorm_a1.5_aug"]
    aug_text = failed["tex"].read_text().split("\\subsection{Data augmentation}", 1)[1][:900]
    assert "The augmentation axis is not\nreadable" in aug_text
    assert "gradnorm_a1.5_aug" not in fine["context"]["failed"]
    fine_text = fine["tex"].read_text().split("\\subsection{Data augmentation}")[1][:900]
    assert "not\nreadable" not in fine_text


def test_view_accuracy_against_the_majority_view_decides_three_ways():
    from echomtl.report.reading import versus_majority

    assert versus_majority(0.70, 0.80, 0.6) == "above"
    assert versus_majority(0.40, 0.55, 0.6) == "below"
    assert versus_majority(0.55, 0.70, 0.6) == "indistinguishable"


def test_interference_reading_decides_every_way():
    from echomtl.report.reading import DOMINANCE_SHARE, interference_reading

    conflict = interference_reading(0.70, 400, 0.5)
    assert conflict.direction == "conflict" and conflict.negative_low > 0.5
    assert interference_reading(0.30, 400, 0.5).direction == "agreement"
    # 57% negative of 40 steps: the interval holds one half, so no direction can be read
    undecided = interference_reading(0.57, 40, 0.5)
    assert undecided.direction == "undecided"
    assert undecided.negative_low < 0.5 < undecided.negative_high
    # the same share over many steps is beyond chance
    assert interference_reading(0.57, 4000, 0.5).direction == "conflict"
    assert interference_reading(0.5, 100, DOMINANCE_SHARE).dominant == "detection"
    assert interference_reading(0.5, 100, 1 - DOMINANCE_SHARE).dominant == "classification"
    assert interference_reading(0.5, 100, 0.6).dominant is None
    assert interference_reading(float("nan"), 0, float("nan")).direction == "undecided"


#: the only words the paper may set in typewriter (software names, never config values)
#: software the paper names in typewriter, in its software paragraph only
SOFTWARE = (
    "echomtl",
    "snakemake",
    "torch",
    "torchvision",
    "torchjd",
    "faster-coco-eval",
    "scikit-learn",
)
TYPEWRITER_OK = {"StratifiedGroupKFold", *SOFTWARE}
_UNPRINTED = re.compile(
    r"\\(?:label|ref|eqref|input|includegraphics|citep?|citet|bibliography|bibliographystyle"
    r"|begin|end|usetikzlibrary|newcommand|renewcommand|captionsetup|floatname|newfloat"
    r"|setlength|arrow)\*?(?:\[[^\]]*\])*\{[^{}]*\}"
)


def printed_text(tex: str) -> str:
    """What a reader of the PDF sees of a LaTeX source: comments, the arguments of commands
    that print nothing (labels, paths, citations), command names and TikZ style options dropped."""
    tex = re.sub(r"(?<!\\)%.*", "", tex)
    # display maths (symbols, never identifiers) and TikZ pictures (drawing commands)
    tex = re.sub(r"\\begin\{(equation|tikzpicture)\}.*?\\end\{\1\}", " ", tex, flags=re.S)
    tex = re.sub(r"(?<!\\)\$.*?(?<!\\)\$", " ", tex, flags=re.S)  # inline maths
    tex = _UNPRINTED.sub(" ", tex)
    tex = re.sub(r"\[[^\]]*(?:/\.style|node distance|font=)[^\]]*\]", " ", tex)
    return re.sub(r"\\[A-Za-z@]+\*?", " ", tex)


def test_no_raw_identifier_reaches_the_paper(full):
    """Experiment keys, metric keys, config values in typewriter and task-weight names never
    reach the paper's text, its tables or its numbers (figure labels: test_report_figures)."""
    study, built = full
    tex = built["tex"].read_text()
    body = tex.split("\\begin{document}", 1)[1]
    numbers = built["files"]["numbers"].read_text()
    number_values = "\n".join(re.findall(r"\\newcommand\{\\\w+\}\{(.*)\}", numbers))
    tables = [p.read_text() for p in built["files"]["tables"].values()]
    keys = list(study.experiments.index)
    for name, text in [("main.tex", body), ("numbers.tex", number_values)] + [
        (f"table {n}", t) for n, t in zip(built["files"]["tables"], tables, strict=True)
    ]:
        typewriter = set(re.findall(r"\\texttt\{([^{}]*)\}", text))
        assert typewriter <= TYPEWRITER_OK, (name, typewriter - TYPEWRITER_OK)
        found = rf.raw_identifiers(printed_text(text), keys)
        assert not found, (name, found)


def test_identifier_scan_catches_raw_keys():
    """The scan above can fail: a key, a metric key and a config value are each found."""
    keys = ["gradnorm_a1.5", "det_only"]
    assert rf.raw_identifiers(printed_text(r"GradNorm (gradnorm\_a1.5) won"), keys)
    assert rf.raw_identifiers(printed_text(r"the loss\_det\_initial was"), keys)
    assert rf.raw_identifiers(printed_text(r"weights $w_\mathrm{cls}$ and w\_cls"), keys)
    assert not rf.raw_identifiers(
        printed_text(r"see Table~\ref{tab:main_x} and $w_\mathrm{cls}$"), keys
    )


@pytest.mark.parametrize(
    ("renormalise", "said", "not_said"),
    [
        ("initial_sum", "renormalised to their initial sum", "renormalised to the number of tasks"),
        ("task_count", "renormalised to the number of tasks", "renormalised to their initial sum"),
    ],
)
def test_paper_states_gradnorms_renormalisation_as_configured(tmp_path, renormalise, said,
                                                              not_said):  # fmt: skip
    study = rf.make_study(tmp_path, experiments=SMALL, n_images=8)
    study.config["balancing"]["gradnorm"]["renormalise"] = renormalise
    tex = rf.build_report(study, tmp_path / "out", n_resamples=5, figures=False)["tex"]
    text = " ".join(tex.read_text().split())
    assert said in text and not_said not in text
    # what it did to the detection step, read from the run's weights by rule
    assert "GradNorm's detection weight averaged" in text and "fixed weights' $\\wdet=" in text


def test_software_names_are_typewriter_only_in_the_software_paragraph(full):
    _, built = full
    body = built["tex"].read_text().split("\\begin{document}", 1)[1]
    software = body.split("\\paragraph{Software.}", 1)
    assert len(software) == 2, "the paper has a software paragraph"
    outside = software[0] + software[1].split("\\par", 1)[1]
    for name in SOFTWARE:
        assert f"\\texttt{{{name}}}" not in outside, name

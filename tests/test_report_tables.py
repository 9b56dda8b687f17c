"""LaTeX tables of echomtl.report.tables: booktabs rules, escaping, content."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "report"))
import report_fixture as rf  # noqa: E402

from echomtl.report import queries, summaries, tables  # noqa: E402
from echomtl.report.latex import Tex  # noqa: E402

CLAIMS = rf.REPO / "paper" / "claims.yaml"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("tables")
    study = rf.make_study(root, n_images=16)
    # 600 resamples: the smallest bootstrap p-value (2/601) survives Holm in a family of 12
    res = rf.build_results(study, root / "out", n_resamples=600)
    return study, res, root / "out"


def _unescaped(text):
    """Special characters that are not escaped (outside the header comment, column spec, math)."""
    body = "\n".join(line for line in text.splitlines()[1:] if "begin{tabular}" not in line)
    body = re.sub(r"\$[^$]*\$", "", body)
    return re.findall(r"(?<!\\)[_%#]", body)


def _rules(text):
    return all(r in text for r in ("\\toprule", "\\midrule", "\\bottomrule"))


def test_booktabs_escapes_headers_and_cells():
    frame = pd.DataFrame({"a_b": ["x&y", Tex(r"\textbf{1}")], "c%": [1, 2]})
    text = tables.booktabs(frame, midrule_before=[1])
    assert _rules(text)
    assert r"a\_b" in text and r"c\%" in text and r"x\&y" in text and r"\textbf{1}" in text
    assert text.count("\\midrule") == 2


def test_every_table_has_rules_and_escaped_names(built):
    study, res, out = built
    paths = [
        tables.table_dataset(study.audits, out / "t" / "dataset.tex"),
        tables.table_leakage(study.audits, out / "t" / "leakage.tex"),
        tables.table_main(res, out / "t" / "main.tex"),
        tables.table_weight_phases(
            study.experiment_files("gradnorm_a1.5", "steps.csv"), out / "t" / "phases.tex"
        ),
        tables.table_alpha(res, out / "t" / "alpha.tex"),
        tables.table_augmentation(res, out / "t" / "aug.tex"),
        tables.table_dual_backbone(res, out / "t" / "dual.tex"),
        tables.table_traditional(res, out / "t" / "trad.tex"),
        tables.table_selection(res, "manual", out / "t" / "sel.tex"),
        tables.table_claims(CLAIMS, res, out / "t" / "claims.tex"),
        tables.table_diagnostics(
            summaries.diagnostics_summary(study.files("diagnostics.csv")),
            res.experiments,
            out / "t" / "diag.tex",
        ),
    ]
    for p in paths:
        text = p.read_text()
        assert _rules(text), p.name
        assert "\\begin{tabular}" in text and "\\end{tabular}" in text
        assert not _unescaped(text), (p.name, _unescaped(text))
    claims = (out / "t" / "claims.tex").read_text()
    assert "gradnorm" not in claims and "GradNorm" in claims  # labels, never experiment keys


def test_main_table_rows_and_comparisons(built):
    _, res, out = built
    text = tables.table_main(res, out / "main.tex").read_text()
    for g in res.study.main_groups:
        assert str(res.group_label(g)) in text
    assert "Manual weights" in text and "$^\\dagger$" in text
    assert "reference" in text and "(higher)" in text
    assert "GradNorm ($\\alpha$\\,=\\,1)" not in text  # alpha variants live in the ablation table
    assert "[" in text  # bootstrap intervals


def test_dataset_and_leakage_tables(built):
    study, _, out = built
    text = tables.table_dataset(study.audits, out / "d.tex").read_text()
    assert "export's split" in text and "grouped holdout" in text and "missing" in text
    leak = tables.table_leakage(study.audits, out / "l.tex").read_text()
    assert "8/16 (50.0\\%)" in leak  # half the fixture's original test images share a train video
    assert "0/16 (0.0\\%)" in leak  # grouped split: none


def test_cv_folds_are_named_in_words_and_their_test_parts_pooled(built):
    study, _, _ = built
    grouped = study.audits["grouped"]
    audits = {"original": study.audits["original"], "cv-fold0": grouped, "cv-fold1": grouped}
    frame = queries.leakage_rows(audits)
    pooled = frame[frame["scheme"] == "cv"]
    fold_test = frame[(frame["scheme"] == "cv-fold0") & (frame["split"] == "test")]
    assert list(pooled["split"]) == ["test"]
    assert int(pooled["n_images"].iloc[0]) == 2 * int(fold_test["n_images"].iloc[0])
    assert queries.scheme_label("cv-fold0") == "CV fold 1" and queries.scheme_label("cv") != "cv"
    assert queries.protocol_name("cv") == "patient-grouped cross-validation"


def test_claims_table_uses_the_yaml_and_marks_what_did_not_run(built, tmp_path):
    study, res, _ = built
    claims = queries.load_claims(CLAIMS)
    rows = queries.claims_rows(claims, res)
    assert {r["id"] for r in rows} >= {"map_gradnorm", "params_dual", "time_gradnorm"}
    by_id = {r["id"]: r for r in rows}
    assert by_id["map_gradnorm"]["measured"] == pytest.approx(res.mean("gradnorm_a1.5", "map50"))
    assert by_id["params_dual"]["measured"] == pytest.approx(3.5)  # millions
    assert by_id["map_manual"]["experiment"] == res.chosen["manual"]
    text = tables.table_claims(CLAIMS, res, tmp_path / "c.tex").read_text()
    assert "5.7746" in text and "12.8M" in text
    # sources in words: no experiment key, no tidy-table metric key
    for raw in ("gradnorm\\_a1.5", "gradnorm_a1.5", "loss\\_det", "map50", "train\\_seconds"):
        assert raw not in text, raw
    assert "GradNorm" in text and "test mAP@0.5" in text
    # hardware-bound numbers are compared as ratios; the guide's decisive gain with its interval
    assert "(as a ratio, below)" in text and "ratio of two rows above" in text
    cmp = {r["id"]: r for r in queries.comparison_rows(claims, res)}
    gain = cmp["gain_gradnorm_over_fixed"]
    assert gain["claimed"] == pytest.approx(0.738 - 0.421)
    pair = res.pair("fixed", "map50")
    assert gain["measured"] == pytest.approx(pair["diff"]) and gain["low"] <= gain["high"]
    assert gain["verdict"] == pair["verdict"]
    ratio = cmp["time_ratio_dual"]
    assert ratio["claimed"] == pytest.approx(4.1 / 2.3)
    assert ratio["measured"] == pytest.approx(
        res.mean("dual_backbone", "train_seconds", "train")
        / res.mean("gradnorm_a1.5", "train_seconds", "train")
    )
    assert queries.claimed_differences(claims, "gradnorm_a1.5") == {
        "fixed": pytest.approx(0.738 - 0.421)
    }
    # a study without the alpha-1.0 run: its row says so instead of printing a number
    sub = res.tidy[res.tidy.experiment != "gradnorm_a1.0"]
    from echomtl.report.results import Results

    small = Results(
        study=res.study, tidy=sub, chosen=res.chosen, selections=res.selections,
        intervals=res.intervals, paired=res.paired,
    )  # fmt: skip
    assert {r["id"]: r for r in queries.claims_rows(claims, small)}["map_alpha_1.0"]["status"] == (
        "not run"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: {}\nclaims:\n  - {id: x, quantity: q, claimed: 1}\n")
    with pytest.raises(ValueError, match="lacks 'where'"):
        queries.load_claims(bad)


def test_ablation_tables_fail_clearly_without_their_runs(tmp_path):
    study = rf.make_study(tmp_path, experiments=["fixed", "gradnorm_a1.5"], n_images=8)
    res = rf.build_results(study, tmp_path / "out", n_resamples=5)
    with pytest.raises(ValueError, match="alpha"):
        tables.table_alpha(res, tmp_path / "a.tex")
    with pytest.raises(ValueError, match="augmentation"):
        tables.table_augmentation(res, tmp_path / "b.tex")
    with pytest.raises(ValueError, match="dual-backbone"):
        tables.table_dual_backbone(res, tmp_path / "c.tex")
    assert _rules(tables.table_main(res, tmp_path / "m.tex").read_text())


def test_split_table_puts_each_scheme_beside_its_leakage(built):
    study, res, out = built
    assert res.study.split_pairs == [("gradnorm_a1.5", "gradnorm_a1.5_original")]
    assert "split_original" not in res.study.groups  # not a study group: no main-table row
    assert "gradnorm_a1.5_original" not in res.study.alpha_variants
    text = tables.table_split(res, study.audits, out / "split.tex").read_text()
    body = [line for line in text.splitlines() if line.endswith("\\\\") and "Scheme" not in line]
    # the study run on valid and test, the variant on valid only (its export has no test split)
    assert [(("export" in r), r.split("&")[2].strip()) for r in body] == [
        (False, "validation"),
        (False, "test"),
        (True, "validation"),
    ]
    rows = queries.split_rows(res, study.audits)
    for row, line in zip(rows, body, strict=True):
        assert f"{row['n_from_train_videos']}/{row['n_images']}" in line
        assert f"{row['map50']:.3f}" in line
    assert "_" not in text.replace("\\_", "")


def test_claims_comparisons_name_their_claims(tmp_path):
    """A comparison of claims.yaml naming no claim, or of an unknown kind, fails naming the file."""
    base = (
        "source: {}\nclaims:\n  - {id: a, quantity: q, claimed: 1, where: w,\n"
        "      measured: {experiment: fixed, metric: map50}}\n"
    )
    bad = tmp_path / "claims.yaml"
    bad.write_text(
        base + "comparisons:\n  - {id: c, quantity: q, of: a, over: zz, kind: difference}\n"
    )
    with pytest.raises(ValueError, match=r"claims\.yaml: comparison c: over 'zz' is no claim id"):
        queries.load_claims(bad)
    bad.write_text(base + "comparisons:\n  - {id: c, quantity: q, of: a, over: a, kind: sum}\n")
    with pytest.raises(ValueError, match="kind 'sum'"):
        queries.load_claims(bad)


def test_one_detector_is_one_detection_verdict(built):
    _, res, out = built
    twins = set(res.study.same_detector)
    assert twins, "the fixture has isolated controls with the same detector"
    detection = {e for es in res.verdicts["map50"].values() for e in es}
    view = {e for es in res.verdicts["view_accuracy"].values() for e in es}
    assert not detection & twins  # counted once, through the first isolated detector
    assert twins & set(res.compared) & view  # on views they are models of their own


def test_a_model_without_a_detector_shows_its_seeds_and_delta_m_is_tabled(tmp_path):
    exps = ["det_only", "view_only", "fixed", "gradnorm_a1.5"]
    study = rf.make_study(tmp_path, seeds=[0, 1], n_images=8, experiments=exps)
    res = rf.build_results(study, tmp_path / "out", n_resamples=5)
    text = tables.table_main(res, tmp_path / "main.tex").read_text()
    row = next(line for line in text.splitlines() if line.startswith("View classification"))
    assert "& 2 &" in row  # not 0: it has no mAP@0.5, but it has two seeds
    # the cost-of-sharing table ends with each shared-trunk run's Δm against the single tasks
    sharing = tables.table_sharing(res, tmp_path / "sharing.tex").read_text()
    block = sharing.split("both ($\\Delta_m$")[1]
    for run in ("fixed", "gradnorm_a1.5"):
        assert f"$\\Delta_m$: {res.label(run)}" in block
        assert res.sharing["delta_m"][run]["reading"] in block


def test_the_cost_table_sits_beside_accuracy_and_shows_cuda_only_when_used(built, tmp_path):
    study, res, out = built
    text = tables.table_cost(res, tmp_path / "cost.tex").read_text()
    assert "Seconds per" in text and "Peak RSS" in text and "mAP@0.5" in text
    assert "CUDA" not in text  # no run of the fixture used CUDA
    exp = res.chosen[res.study.main_groups[0]]
    value, _ = tables.cost_value(res, exp, "seconds_per_step")
    assert value == pytest.approx(res.get(exp, "seconds_per_step", "train"))
    dual = [g for g in res.study.main_groups if res.row(res.chosen[g])["model"] == "dual_backbone"]
    if dual:  # the fixture's dual backbone peaks 300 MiB higher
        assert tables.cost_value(res, res.chosen[dual[0]], "peak_rss_mib")[0] == 1200.0
    # runs that did not measure their cost (trained before it was recorded): a dash, no error
    tidy = res.tidy[~res.tidy["metric"].isin(list(tables.COST_COLUMNS))]
    blind = dataclasses.replace(res, tidy=tidy)
    rows = [
        line
        for line in tables.table_cost(blind, tmp_path / "b.tex").read_text().splitlines()
        if line.endswith("\\\\") and "Method" not in line
    ]
    assert rows and all(line.count("--") >= 2 for line in rows)


def test_step_time_ratios_are_withheld_when_one_methods_runs_disagree(tmp_path):
    """The paper compares methods' step times as ratios only when each method's own seeds agree
    within COST_RATIO_SPREAD; a method whose runs differ more (a machine shared with other work)
    is named instead, and no ratio is stated."""
    from echomtl.report.context import COST_RATIO_SPREAD, _cost, _Numbers, _roles

    exps = ["det_only", "view_only", "fixed", "gradnorm_a1.5"]
    study = rf.make_study(tmp_path, seeds=[0, 1], n_images=8, experiments=exps)
    res = rf.build_results(study, tmp_path / "out", n_resamples=5)
    step = res.tidy["metric"] == "seconds_per_step"
    tidy = res.tidy.copy()
    tidy.loc[step, "value"] = 1.0  # every run: 1 s per step, no spread
    calm = _cost(dataclasses.replace(res, tidy=tidy), _roles(res), _Numbers())["cost"]
    assert calm["noisy"] is None and len(calm["ratios"]) == len(res.study.main_groups) - 1
    slow = step & (tidy["experiment"] == "fixed") & (tidy["seed"] == 1)
    tidy.loc[slow, "value"] = 1.0 + 4 * COST_RATIO_SPREAD  # relative SD above the bound
    nums = _Numbers()
    noisy = _cost(dataclasses.replace(res, tidy=tidy), _roles(res), nums)["cost"]
    assert noisy["noisy"] == "fixed" and noisy["ratios"] == []
    assert float(str(nums["cost/spread_pct"])) > 100 * COST_RATIO_SPREAD

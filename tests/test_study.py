"""The study model (echomtl.study) on its own, and the plan against what the paper reports.

The plan decides, before any run, which tables and figures exist and which sections the paper
has; the report's ``has`` takes the plan's flags instead of deciding again. One test per flag
checks, on the fixture studies the report tests use, that the paper's flag is the plan's and
that the outputs the flag conditions were rendered exactly when it is set.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "report"))
import report_fixture as rf  # noqa: E402

from echomtl.config import load_experiments, validate_config  # noqa: E402
from echomtl.report.outputs import OUTPUTS, planned  # noqa: E402
from echomtl.study import FLAGS, SETTINGS, Study, resolve_inits, train_parameters  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def default_table() -> pd.DataFrame:
    table = load_experiments(REPO / "config" / "experiments.tsv")
    table["init"] = resolve_inits(table, False, "config/experiments.tsv")
    return table


def full_table() -> pd.DataFrame:
    """The default table with config/experiments-full.tsv (as config/paper.yaml reads them)."""
    table = load_experiments(
        [REPO / "config" / "experiments.tsv", REPO / "config" / "experiments-full.tsv"]
    )
    table["init"] = resolve_inits(table, False, "config/experiments.tsv")
    return table


def plan(table: pd.DataFrame, scheme: str = "grouped", **kwargs) -> Study:
    return Study.plan(table, reference="gradnorm_a1.5", split_scheme=scheme, **kwargs)


def test_default_study_rows_roles_and_axes():
    study = plan(default_table())
    # the split and augmentation axes are in the full table (config/paper.yaml)
    assert study.split_pairs == [] and study.augmentation_variant is None
    assert study.trained == study.names
    assert study.alpha_variants == ["gradnorm_a1.0", "gradnorm_a1.5", "gradnorm_a2.0"]
    paper = plan(full_table())
    assert paper.split_pairs == [("gradnorm_a1.5", "gradnorm_a1.5_original")]
    assert "gradnorm_a1.5_original" not in paper.study
    assert paper.augmentation_variant == "gradnorm_a1.5_aug"
    assert study.grid_groups == ["manual"] and study.members("manual")[0] == "manual_wcls0.001"
    assert study.front_runs == ["manual_wcls0.001", "fixed", "manual_wcls0.1", "manual_wcls1.0",
                                "manual_wcls10.0"]  # fmt: skip
    assert study.roles["manual"] == "manual" and study.roles["fixed"] == "fixed"
    # the secondary methods are in the full table (config/paper.yaml), not the default study
    assert study.roles["torchjd"] == [] and study.roles["rlw"] is None
    full = plan(full_table())
    assert full.roles["torchjd"] == ["mgda", "alignedmtl", "pcgrad", "imtl_g"]
    assert full.roles["rlw"] == "rlw" and full.roles["stopgrad"] == "stopgrad"
    assert "gradnorm_a1.0" not in study.main_groups and "manual" in study.main_groups
    assert study.init_pairs == [] and study.start == "scratch"
    assert set(study.flags) == set(FLAGS)


def test_decisive_runs_get_the_decisive_seeds_and_the_rest_the_common_ones():
    study = plan(default_table(), seeds=[0], decisive_seeds=[1, 2])
    assert study.decisive == ["det_only", "view_only", "fixed", "gradnorm_a1.5"]
    for e in study.decisive:
        assert study.seeds_of(e) == [0, 1, 2]
    assert study.seeds_of("manual_wcls0.1") == [0] and study.seeds_of("dual_backbone") == [0]
    assert study.flags["multi_seed"] and not plan(default_table()).flags["multi_seed"]
    assert Study.from_dict(json.loads(study.to_json())).seeds_of("fixed") == [0, 1, 2]
    # a decisive seed every run has is no extra run (config/paper.yaml: three seeds for all)
    overlap = plan(default_table(), seeds=[0, 1], decisive_seeds=[0, 2])
    assert overlap.decisive_seeds == (2,) and overlap.seeds_of("fixed") == [0, 1, 2]
    everyone = plan(default_table(), seeds=[0, 1, 2], decisive_seeds=[1, 2])
    assert everyone.decisive_seeds == () and everyone.seeds_of("fixed") == [0, 1, 2]


def test_the_chosen_manual_weight_gets_the_decisive_seeds_once_chosen():
    study = plan(default_table(), seeds=[0], decisive_seeds=[1, 2])
    assert study.decisive_grids == ["manual"]
    chosen = {"manual": "manual_wcls0.1"}
    # before the selection every grid point has the common seeds (the choice is made on them)
    assert study.seeds_of("manual_wcls0.1") == [0]
    assert study.seeds_of("manual_wcls0.1", chosen) == [0, 1, 2]
    assert study.seeds_of("manual_wcls1.0", chosen) == [0]
    # another group's choice adds nothing (only the manual grid is decisive)
    assert study.seeds_of("gradnorm_a1.0", {"gradnorm_a1.0": "gradnorm_a1.0"}) == [0]
    # without decisive seeds there is nothing to add
    assert plan(default_table(), seeds=[0, 1, 2]).decisive_grids == []
    # under cv the choice is the composite: each fold's chosen run trains the extra seeds
    cv = plan(default_table(), "cv", cv_folds=3, seeds=[0], decisive_seeds=[1, 2])
    assert cv.seeds_of("manual_per_fold") == [0]
    assert cv.seeds_of("manual_per_fold", {"manual": "manual_per_fold"}) == [0, 1, 2]
    assert cv.seeds_of("manual_wcls0.1", {"manual": "manual_per_fold"}) == [0]


def test_cv_adds_one_composite_per_grid_group_never_trained():
    table = default_table()
    table = table[table["split"].isna()]  # the split variant stays on its own split
    study = plan(table, scheme="cv", cv_folds=3)
    # the grid group's composite, then one per validation choice among groups
    assert study.composite == [
        "manual_per_fold", "front_detection_per_fold", "gradnorm_alpha_per_fold"
    ]  # fmt: skip
    row = study.row("manual_per_fold")
    assert pd.isna(row["w_cls"]) and row["w_det"] == 1.0 and row["group"] == "manual"
    assert "manual_per_fold" not in study.trained and "manual_per_fold" in study.cv
    assert study.flags["cv"]
    assert "manual_per_fold" not in study.front_runs
    assert study.candidates("manual_per_fold") == study.members("manual")


def test_cv_makes_each_choice_among_groups_per_fold_in_a_composite_row():
    study = plan(default_table(), scheme="cv", cv_folds=3)
    alpha = study.row("gradnorm_alpha_per_fold")
    assert alpha["group"] == "gradnorm_alpha" and pd.isna(alpha["alpha"])
    assert alpha["method"] == "gradnorm" and alpha["w_cls"] == 0.01
    assert study.candidates("gradnorm_alpha_per_fold") == study.alpha_variants
    assert study.candidates("front_detection_per_fold") == study.front_runs
    # the composites are not candidates of a choice, not trained, and not main-table groups
    assert "gradnorm_alpha_per_fold" not in study.alpha_variants + study.trained
    assert {"gradnorm_alpha", "front_detection"}.isdisjoint(study.main_groups)
    assert "gradnorm_alpha_per_fold" in study.variants
    # their seeds are those every candidate ran; their pooled predictions enter the cost of
    # sharing beside the trained shared-trunk runs
    assert study.seeds_of("gradnorm_alpha_per_fold") == [0]
    assert {"gradnorm_alpha_per_fold", "front_detection_per_fold", "manual_per_fold"} <= set(
        study.sharing_runs
    )
    # a held-out study chooses among the trained rows themselves: no composite
    assert plan(default_table()).composite == []
    # the choices' names are reserved as group names
    taken = default_table().assign(group=lambda t: t["group"].replace("fixed", "gradnorm_alpha"))
    with pytest.raises(ValueError, match="reserved for the validation choices"):
        plan(taken)
    # a round trip through study.json keeps them
    again = Study.from_dict(json.loads(study.to_json()))
    assert again.composite == study.composite
    assert again.candidates("gradnorm_alpha_per_fold") == study.alpha_variants


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda t: pd.concat(
                [t, t.loc[["fixed"]].rename(index={"fixed": "again"}).assign(experiment="again")]
            ),
            "have the same settings",
        ),  # fmt: skip
        (lambda t: t.drop(index="gradnorm_a1.5"), "report.reference_method"),
        (
            lambda t: t.drop(index="gradnorm_a1.5_original").assign(
                split=t["split"].where(t.index != "gradnorm_a1.5", "original")
            ),
            "uses split 'original'",
        ),  # fmt: skip
    ],
)
def test_plan_refuses_a_table_that_cannot_be_reported(change, message):
    with pytest.raises(ValueError, match=message):
        plan(change(full_table()))


def test_a_cv_grid_may_vary_only_in_its_grid_settings():
    table = default_table()
    table = table[table["split"].isna()]
    table.loc["manual_wcls0.1", "augment"] = True
    with pytest.raises(ValueError, match="may differ only in w_det, w_cls, alpha.*augment"):
        plan(table, scheme="cv", cv_folds=3)
    renamed = default_table()
    renamed = renamed[renamed["split"].isna()]
    renamed = pd.concat([renamed, renamed.loc[["fixed"]].rename(index={"fixed": "manual_per_fold"})
                         .assign(experiment="manual_per_fold", w_cls=0.5)])  # fmt: skip
    with pytest.raises(ValueError, match="reserved for the per-fold selection"):
        plan(renamed, scheme="cv", cv_folds=3)


def test_study_json_round_trip(tmp_path):
    table = default_table()
    study = plan(table[table["split"].isna()], scheme="cv", cv_folds=3, seeds=[0, 1])
    path = tmp_path / "study.json"
    path.write_text(study.to_json())
    back = Study.read(path)
    pd.testing.assert_frame_equal(back.table, study.table)
    assert back.flags == study.flags and back.roles == study.roles
    assert (back.reference, back.seeds, back.cv_folds) == ("gradnorm_a1.5", (0, 1), 3)
    assert json.loads(path.read_text())["flags"] == study.flags
    path.write_text("{}")
    with pytest.raises(ValueError, match="not a study.json"):
        Study.read(path)


def test_train_parameters_come_from_the_config_and_the_row():
    config = validate_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    study = plan(default_table())
    params = train_parameters(config, study.row("gradnorm_a1.5"), 3, "ab" * 32)
    assert params["seed"] == 3 and params["alpha"] == 1.5 and params["scale"] == "n"
    assert params["weights_sha256"] is None  # a scratch row never carries the digest
    assert params["hyp"] == config["train"]["hyp"] and params["hyp"] is not config["train"]["hyp"]
    from echomtl.training.trainer import TrainParams

    TrainParams.from_dict(params)  # every field, nothing unknown


def test_adding_a_setting_is_one_line_in_study_settings():
    """A setting is a column of SETTINGS: the duplicate check, the axes' pairing and the
    selection's candidate list all read that one tuple (the note shows the diff)."""
    from echomtl.evaluation.selection import CANDIDATE_SETTINGS

    assert set(CANDIDATE_SETTINGS) <= set(SETTINGS)
    table = default_table()
    table.loc["fixed_again"] = table.loc["fixed"].copy()
    table.loc["fixed_again", "experiment"] = "fixed_again"
    with pytest.raises(ValueError, match=", ".join(SETTINGS)):
        plan(table)


# ---- the plan against the paper: one test per flag --------------------------------------
@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """Three fixture studies that set the flags differently, each rendered as the workflow
    renders it (tables only; figures are conditioned on the same flags)."""
    out = {}
    for name, kwargs in {
        "full": {"seeds": [0, 1]},
        "init": {"init_axis": True},
        "minimal": {"experiments": ["gradnorm_a1.5", "det_only"]},
        "alone": {"experiments": ["gradnorm_a1.5"]},
    }.items():
        root = tmp_path_factory.mktemp(name)
        study = rf.make_study(root, n_images=8, **kwargs)
        checkpoint = rf.CHECKPOINT if kwargs.get("init_axis") else None
        report = rf.build_report(study, root / "out", n_resamples=5, figures=False,
                                 checkpoint=checkpoint)  # fmt: skip
        out[name] = (study.plan, report)
    return out


@pytest.mark.parametrize("flag", list(FLAGS))
def test_the_paper_has_what_the_plan_has(flag, builds):
    conditioned = {o.name for o in OUTPUTS.values() if o.condition == flag and o.kind == "table"}
    for name, (study, report) in builds.items():
        assert report["context"]["has"][flag] == study.flags[flag], (name, flag)
        rendered = set(report["files"]["tables"])
        if study.flags[flag]:
            assert conditioned <= rendered, (name, flag)
        else:
            assert not conditioned & rendered, (name, flag)
        assert {o.name for o in planned(study) if o.kind == "table"} == rendered, name


def test_the_fixture_builds_set_most_flags_both_ways(builds):
    """Guards the per-flag test above: a flag the builds never vary is tested on plans alone."""
    values = {f: {b[0].flags[f] for b in builds.values()} for f in FLAGS}
    varied = {f for f, v in values.items() if v == {True, False}}
    assert varied >= {"alpha", "augmentation", "dual_backbone", "traditional", "front", "manual",
                      "split", "init", "comparisons", "pretrained",
                      "multi_seed", "fixed", "uncertainty", "torchjd"}  # fmt: skip
    table = full_table()
    assert plan(table).flags["stopgrad"] and not plan(table.drop("stopgrad")).flags["stopgrad"]
    assert not plan(table).flags["cv"]
    alone = Study.plan(table.loc[["det_only", "dual_backbone"]], reference="det_only",
                       split_scheme="grouped")  # fmt: skip
    assert not alone.flags["diagnostics"] and plan(table).flags["diagnostics"]
    assert plan(table).flags["sharing"] and not plan(table.drop("view_only")).flags["sharing"]
    assert plan(table).flags["view_only"] and not plan(table.drop("view_only")).flags["view_only"]
    assert plan(table).flags["interference"] and not alone.flags["interference"]
    no_gradnorm = Study.plan(table, reference="fixed", split_scheme="grouped")
    assert plan(table).flags["gradnorm"] and not no_gradnorm.flags["gradnorm"]
    assert not no_gradnorm.flags["alpha"] and not no_gradnorm.flags["augmentation"]


def _tidy(values: dict[str, dict[str, tuple[float, float]]]) -> pd.DataFrame:
    """A tidy table: ``{split: {experiment: (mAP@0.5, view accuracy)}}``, one seed."""
    rows = [
        {"experiment": e, "seed": 0, "split": split, "metric": metric, "value": v}
        for split, per_exp in values.items()
        for e, pair in per_exp.items()
        for metric, v in zip(("map50", "view_accuracy"), pair, strict=True)
    ]
    return pd.DataFrame(rows)


def test_gradnorms_alpha_is_chosen_on_validation_only_with_the_grids_score():
    from echomtl.evaluation.selection import select_choice

    study = plan(default_table())
    assert study.choices["gradnorm_alpha"] == ["gradnorm_a1.0", "gradnorm_a1.5", "gradnorm_a2.0"]
    valid = {"gradnorm_a1.0": (0.5, 0.9), "gradnorm_a1.5": (0.6, 0.6), "gradnorm_a2.0": (0.55, 0.8)}
    test = {"gradnorm_a1.0": (0.1, 0.1), "gradnorm_a1.5": (0.9, 0.9), "gradnorm_a2.0": (0.2, 0.2)}
    tidy = _tidy({"valid": valid, "test": test})
    # the grid's score (mean of mAP@0.5 and view accuracy): alpha 1.0, whatever the test says
    chosen = select_choice(tidy, study, "gradnorm_alpha")
    assert chosen["chosen"] == "gradnorm_a1.0" and chosen["varying"] == ["alpha"]
    # scored on mAP@0.5 alone, the same candidates give alpha 1.5: the score is the grid's
    assert select_choice(tidy, study, "gradnorm_alpha", grid_score="map50")["chosen"] == (
        "gradnorm_a1.5"
    )
    # the detection-optimal fixed weight keeps its own score (mAP@0.5) whatever the grid's is
    assert "front_detection" in study.choices
    with pytest.raises(ValueError, match="not a choice of this study"):
        select_choice(tidy, study, "nope")
    # candidates are scored on the seeds they all ran: alpha 1.5's extra seeds (a decisive run)
    # do not make its score more precise than the others'
    extra = pd.concat([tidy.assign(seed=k) for k in (1, 2)])
    extra = extra[extra.experiment == "gradnorm_a1.5"].assign(value=1.0)
    seeded = pd.concat([tidy, extra])
    chosen = select_choice(seeded, study, "gradnorm_alpha")
    assert chosen["chosen"] == "gradnorm_a1.0" and chosen["seeds"] == [0]
    # under cv the choice is made on each fold's validation part (the composite row pools it)
    cv = plan(default_table(), "cv", cv_folds=3)
    folds = {
        0: _tidy({"valid": valid})[lambda t: t.split == "valid"],
        1: _tidy({"valid": {**valid, "gradnorm_a2.0": (0.9, 0.9)}})[lambda t: t.split == "valid"],
    }
    per_fold = select_choice(folds, cv, "gradnorm_alpha")
    assert per_fold["chosen"] == "gradnorm_alpha_per_fold" and per_fold["protocol"] == "cv"
    assert [f["chosen"] for f in per_fold["per_fold"]] == ["gradnorm_a1.0", "gradnorm_a2.0"]
    assert {c["experiment"]: c["n_folds_chosen"] for c in per_fold["candidates"]} == {
        "gradnorm_a1.0": 1, "gradnorm_a1.5": 0, "gradnorm_a2.0": 1
    }  # fmt: skip
    # one alpha: nothing to choose
    assert (
        "gradnorm_alpha"
        not in plan(default_table().drop(["gradnorm_a1.0", "gradnorm_a2.0"])).choices
    )

"""Config and experiment-table validation: bad input fails early with the key named."""

from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config

from echomtl.config import ConfigError, load_experiments, validate_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def config():
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml", "real-cpu.yaml"])
def test_shipped_configs_are_valid(name):
    path = ROOT / "config" / name
    if not path.exists():
        pytest.skip(f"{name} not shipped yet")
    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    overlay = yaml.safe_load(path.read_text())
    update_config(base, overlay)  # how Snakemake layers --configfile over config.yaml
    validate_config(base)


def test_unknown_key_is_named(config):
    config["train"]["epochz"] = 3
    with pytest.raises(
        ConfigError, match=r"train: .*'epochz' was unexpected.*allowed keys: .*epochs"
    ):
        validate_config(config)


def test_wrong_type_is_named(config):
    config["train"]["epochs"] = "ten"
    with pytest.raises(ConfigError, match=r"train\.epochs: 'ten' is not of type 'integer'"):
        validate_config(config)


def test_amp_off_read_by_yaml_as_false_is_refused_with_the_allowed_values(config):
    config["train"]["amp"] = False  # what YAML makes of an unquoted `amp: off`
    with pytest.raises(ConfigError, match=r"train\.amp: False is not one of .*fp32.*bf16.*fp16"):
        validate_config(config)


def test_wrong_value_lists_allowed(config):
    config["model"]["scale"] = "x"
    with pytest.raises(ConfigError, match=r"model\.scale: .*allowed: 'n', 's', 'm'"):
        validate_config(config)


def test_imgsz_must_be_a_stride_multiple(config):
    config["model"]["imgsz"] = 100
    with pytest.raises(ConfigError, match=r"model\.imgsz"):
        validate_config(config)


def test_defaults_are_filled(config):
    del config["balancing"]["diagnostics_every"]
    validate_config(config)
    assert config["balancing"]["diagnostics_every"] == 10


def test_shipped_experiments_table_is_valid():
    table = load_experiments(ROOT / "config" / "experiments.tsv")
    assert {"det_only", "fixed", "gradnorm_a1.5", "dual_backbone"} <= set(table.index)
    assert table.loc["gradnorm_a1.5", "alpha"] == 1.5
    assert bool(table.loc["gradnorm_a1.5", "augment"]) is False
    full = load_experiments(
        [ROOT / "config" / "experiments.tsv", ROOT / "config" / "experiments-full.tsv"]
    )
    assert bool(full.loc["gradnorm_a1.5_aug", "augment"]) is True


def test_bad_experiment_row_names_line_and_column(tmp_path):
    header = "experiment\tgroup\tmethod\tmodel\tw_det\tw_cls\talpha\taugment\n"
    rows = "a\ta\tfixed\tmultitask\t1\t0.01\t\tfalse\nb\tb\tgradnorm\tmultitask\t1\tx\t\tmaybe\n"
    path = tmp_path / "experiments.tsv"
    path.write_text(header + rows)
    with pytest.raises(ConfigError) as error:
        load_experiments(path)
    message = str(error.value)
    assert f"{path}:3: column w_cls: 'x' is not a number" in message
    assert f"{path}:3: augment" in message
    assert f"{path}:3: column alpha: method gradnorm needs an alpha" in message


def test_duplicate_experiment_names(tmp_path):
    header = "experiment\tgroup\tmethod\tmodel\tw_det\tw_cls\talpha\taugment\n"
    row = "a\ta\tfixed\tmultitask\t1\t0.01\t\tfalse\n"
    path = tmp_path / "experiments.tsv"
    path.write_text(header + row + row)
    with pytest.raises(
        ConfigError,
        match=r"experiments.tsv:3: experiment 'a' is already defined at .*experiments.tsv:2",
    ):
        load_experiments(path)


def test_full_study_tables_concatenate_and_trace_a_fixed_weight_front():
    default = load_experiments(ROOT / "config" / "experiments.tsv")
    full = load_experiments(
        [ROOT / "config" / "experiments.tsv", ROOT / "config" / "experiments-full.tsv"]
    )
    assert set(default.index) < set(full.index)

    def front(table):
        rows = table[(table["model"] == "multitask") & (table["method"] == "fixed")]
        return sorted(rows["w_cls"])

    assert len(front(default)) >= 5 and len(front(full)) >= 7
    assert min(front(full)) <= 0.001 and max(front(full)) >= 10
    # the default study keeps the decisive set, the grid, the alphas and the dual backbone; the
    # secondary methods and the augmentation and split axes are in the full table
    assert {"dual_backbone", "view_only", "gradnorm_a1.0", "gradnorm_a2.0"} <= set(default.index)
    secondary = {"stopgrad", "uncertainty", "rlw", "pcgrad", "imtl_g", "gradnorm_a1.5_aug",
                 "gradnorm_a1.5_original"}  # fmt: skip
    assert secondary <= set(full.index) - set(default.index)
    assert "upgrad" not in full.index
    overlay = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    assert overlay["experiments"] == ["config/experiments.tsv", "config/experiments-full.tsv"]
    # real-cpu.yaml runs the decisive set and the init axis (its 2-hour budget)
    real = yaml.safe_load((ROOT / "config" / "real-cpu.yaml").read_text())
    assert real["experiments"] == "config/experiments-real-cpu.tsv"


def test_experiment_defined_in_two_tables_names_both(tmp_path):
    header = "experiment\tgroup\tmethod\tmodel\tw_det\tw_cls\talpha\taugment\n"
    (tmp_path / "a.tsv").write_text(header + "x\tx\tfixed\tmultitask\t1\t0.01\t\tfalse\n")
    (tmp_path / "b.tsv").write_text(header + "x\tx\tfixed\tmultitask\t1\t0.1\t\tfalse\n")
    with pytest.raises(
        ConfigError, match=r"b.tsv:2: experiment 'x' is already defined at .*a.tsv:2"
    ):
        load_experiments([tmp_path / "a.tsv", tmp_path / "b.tsv"])


def test_unknown_method_and_balancing_a_control_are_refused(tmp_path):
    header = "experiment\tgroup\tmethod\tmodel\tw_det\tw_cls\talpha\taugment\n"
    rows = "a\ta\tupgradx\tmultitask\t1\t0.01\t\tfalse\nb\tb\tpcgrad\tstopgrad\t1\t1\t\tfalse\n"
    path = tmp_path / "experiments.tsv"
    path.write_text(header + rows)
    with pytest.raises(ConfigError) as error:
        load_experiments(path)
    message = str(error.value)
    assert (
        f"{path}:2: column method: 'upgradx' is not a balancing method (allowed: fixed," in message
    )
    assert f"{path}:3: column method: model stopgrad shares no gradient" in message


def test_model_and_zero_detection_weight_are_checked_against_the_model_variants(tmp_path):
    header = "experiment\tgroup\tmethod\tmodel\tw_det\tw_cls\talpha\taugment\n"
    path = tmp_path / "experiments.tsv"
    # a view classifier alone has no detector: its detection weight may be 0
    path.write_text(header + "v\tv\tfixed\tview_only\t0\t1\t\tfalse\n")
    assert load_experiments(path).at["v", "model"] == "view_only"
    rows = (
        "a\ta\tfixed\tmultitask\t0\t1\t\tfalse\n"
        "b\tb\tfixed\tviewonly\t0\t1\t\tfalse\n"
        "c\tc\tgradnorm\tview_only\t0\t1\t1.5\tfalse\n"
    )
    path.write_text(header + rows)
    with pytest.raises(ConfigError) as error:
        load_experiments(path)
    message = str(error.value)
    assert f"{path}:2: column w_det: model multitask trains a detector" in message
    assert (
        f"{path}:3: column model: 'viewonly' is not a model variant (allowed: multitask" in message
    )
    assert f"{path}:4: column method: model view_only shares no gradient" in message


def test_method_needing_a_missing_solver_is_refused_before_any_job(tmp_path):
    from echomtl.methods import METHODS

    if not METHODS["cagrad"].missing():
        pytest.skip("cvxpy is installed here")
    header = "experiment\tgroup\tmethod\tmodel\tw_det\tw_cls\talpha\taugment\n"
    path = tmp_path / "experiments.tsv"
    path.write_text(header + "a\ta\tcagrad\tmultitask\t1\t0.01\t\tfalse\n")
    with pytest.raises(ConfigError, match=r"tsv:2: column method: 'cagrad' needs cvxpy"):
        load_experiments(path)


def _study(**data):
    base = {"min_patients": 5, "grouped_fractions": {"train": 0.7, "valid": 0.15, "test": 0.15},
            "cv_folds": 5, "cv_valid_fraction": 0.2}  # fmt: skip
    return {"data": {**base, **data}}


def test_patient_counts_that_cannot_fill_the_splits_are_named_before_any_job():
    from echomtl.config import patient_count_problems

    patients = {f"p{i}" for i in range(40)}
    assert patient_count_problems(_study(), {"grouped", "cv"}, patients) == []
    (grouped,) = patient_count_problems(
        _study(grouped_fractions={"train": 0.85, "valid": 0.05, "test": 0.1}), {"grouped"},
        {f"p{i}" for i in range(60)},
    )  # fmt: skip
    assert grouped.startswith("data.grouped_fractions.valid: 0.05 of 60 patients is 3.0")
    (folds,) = patient_count_problems(_study(cv_folds=10), {"cv"}, patients)
    assert (
        folds.startswith("data.cv_folds: 10 folds of 40 patients") and "min_patients (5)" in folds
    )
    (valid,) = patient_count_problems(_study(cv_valid_fraction=0.1), {"cv"}, patients)
    assert valid.startswith("data.cv_valid_fraction: 0.1 of the 32.0 patients")
    assert patient_count_problems(_study(cv_folds=10), {"grouped"}, patients) == []


def test_export_patients_come_from_file_names(tmp_path):
    from echomtl.config import export_patients

    for split, names in {
        "train": ["A-v1.mp4-1.png", "A-v1.mp4-2.png"],
        "valid": ["B-v.mp4-3.jpg"],
    }.items():
        (tmp_path / split / "images").mkdir(parents=True)
        for name in [*names, ".hidden.png", "notes.txt"]:
            (tmp_path / split / "images" / name).write_bytes(b"")
    assert export_patients(tmp_path) == {"A", "B"}

"""Figures of echomtl.report.figures: every figure is written as PDF and PNG, deterministically,
and no text a reader sees holds a raw identifier (experiment or metric key, ``w_cls``, an
underscore outside mathtext)."""

from __future__ import annotations

import itertools
import json
import shutil
import sys
from pathlib import Path

import matplotlib.text
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "report"))
import report_fixture as rf  # noqa: E402

from echomtl.report import figures as fig  # noqa: E402

EXPS = [
    "det_only",
    "fixed",
    "manual_wcls0.05",
    "manual_wcls0.2",
    "gradnorm_a1.0",
    "gradnorm_a1.5",
    "gradnorm_a1.5_aug",
    "dual_backbone",
    "uncertainty",
    "pcgrad",
]
#: Public figure functions: each must be rendered by test_no_raw_identifiers.
PUBLIC_FIGURES = sorted(n for n in fig.__all__ if n.startswith("fig_"))
#: Experiment keys no displayed text may hold: the whole fixture table's.
ALL_KEYS = [row[0] for row in rf.EXPERIMENTS]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("figs")
    study = rf.make_study(root, seeds=[0, 1], experiments=EXPS, n_images=12)
    res = rf.build_results(study, root / "out", n_resamples=5)
    return study, res, root / "out" / "figures"


def _ok(paths):
    assert [p.suffix for p in paths] == [".pdf", ".png"]
    for p in paths:
        assert p.exists() and p.stat().st_size > 1000, p
    assert paths[0].read_bytes().startswith(b"%PDF")
    assert paths[1].read_bytes().startswith(b"\x89PNG")


def _render(monkeypatch, call):
    """Run a figure function; returns (paths, every displayed string, the figure)."""
    seen: dict = {}
    real = fig.save_figure

    def spy(figure, out_stem):
        figure.canvas.draw()  # tick labels are only set when drawn
        seen["texts"] = [
            t.get_text()
            for t in figure.findobj(matplotlib.text.Text)
            if t.get_visible() and t.get_text().strip()
        ]
        seen["figure"] = figure
        return real(figure, out_stem)

    with monkeypatch.context() as m:
        m.setattr(fig, "save_figure", spy)
        paths = call()
    return paths, seen["texts"], seen["figure"]


def _claimed(res) -> dict[str, float]:
    """Claimed differences for the forest plot: fixture inputs derived from the measured ones
    (never the guide's numbers): one in the main table, one (an alpha variant) outside it."""
    return {e: res.pair(e, "map50")["diff"] + 0.1 for e in ("fixed", "gradnorm_a1.0")}


def _calls(study, res, out) -> dict:
    labels = {e: res.plain_label(e) for e in EXPS}
    multitask = [e for e in EXPS if study.experiments.at[e, "model"] == "multitask"]
    gradnorm = [e for e in EXPS if e.startswith("gradnorm")]
    run = study.runs["gradnorm_a1.5", 0]
    return {
        "fig_training_curves": lambda: fig.fig_training_curves(
            study.files("epochs.csv"), out / "curves", labels, EXPS
        ),
        "fig_gradnorm_weights": lambda: fig.fig_gradnorm_weights(
            study.files("steps.csv", gradnorm), out / "weights", labels, EXPS
        ),
        "fig_gradient_diagnostics": lambda: fig.fig_gradient_diagnostics(
            study.files("diagnostics.csv", multitask), out / "diag", labels, EXPS, norm_ratio=True
        ),
        "fig_main_comparison": lambda: fig.fig_main_comparison(res, out / "main"),
        "fig_front": lambda: fig.fig_front(res, out / "front"),
        "fig_paired_differences": lambda: fig.fig_paired_differences(
            res, out / "paired", claimed=_claimed(res)
        ),
        "fig_alpha_sensitivity": lambda: fig.fig_alpha_sensitivity(res, out / "alpha"),
        "fig_augmentation": lambda: fig.fig_augmentation(res, out / "aug"),
        "fig_detection_examples": lambda: fig.fig_detection_examples(
            run / "predictions_test.json",
            study.records_csv,
            out / "examples",
            metrics_json=run / "metrics_test.json",
        ),  # fmt: skip
        "fig_confusion_matrix": lambda: fig.fig_confusion_matrix(
            study.experiment_files("gradnorm_a1.5", "metrics_test.json"), out / "cm"
        ),
        "fig_per_class_ap": lambda: fig.fig_per_class_ap(res, out / "perclass"),
    }


def test_raw_identifiers_helper():
    keys = ["gradnorm_a1.5", "det_only", "fixed", "pcgrad"]
    for dirty, expected in [
        ("GradNorm gradnorm_a1.5", "gradnorm_a1.5"),
        (r"Detection only (det\_only)", "det_only"),
        ("test map50", "map50"),
        ("pcgrad", "pcgrad"),
        ("final $w_cls$", "w_cls"),
        ("loss_det_initial", "loss_det_initial"),
    ]:
        assert expected in rf.raw_identifiers(dirty, keys), dirty
    for clean in [
        "GradNorm (α=1.5)",
        "PCGrad",
        "Manual weights ($w_\\mathrm{cls}$=0.1)",
        "fixed weights (front)",
        "mAP@0.5:0.95",
        "log$_{10}$ weighted norm ratio",
        "Precision",
    ]:
        assert rf.raw_identifiers(clean, keys) == [], clean


@pytest.mark.parametrize("name", PUBLIC_FIGURES)
def test_no_raw_identifiers(built, monkeypatch, name):
    study, res, out = built
    calls = _calls(study, res, out)
    assert name in calls, f"{name} is public but not rendered by this test: add it to _calls"
    paths, texts, _ = _render(monkeypatch, calls[name])
    _ok(paths)
    assert texts, name
    keys = set(ALL_KEYS) | set(study.experiments.index)
    bad = {t: rf.raw_identifiers(t, keys) for t in texts}
    assert not {t: b for t, b in bad.items() if b}, name


def test_run_figures(built):
    study, res, out = built
    labels = {e: res.plain_label(e) for e in EXPS}
    multitask = [e for e in EXPS if study.experiments.at[e, "model"] == "multitask"]
    gradnorm = [e for e in EXPS if e.startswith("gradnorm")]
    _ok(fig.fig_training_curves(study.files("epochs.csv"), out / "curves", labels, EXPS))
    _ok(fig.fig_gradnorm_weights(study.files("steps.csv", gradnorm), out / "weights", labels))
    _ok(
        fig.fig_gradient_diagnostics(
            study.files("diagnostics.csv", multitask), out / "diag", labels
        )
    )


def test_gradient_diagnostics_rows_and_null_band(built, monkeypatch):
    study, res, out = built
    multitask = [e for e in EXPS if study.experiments.at[e, "model"] == "multitask"]
    labels = {e: res.plain_label(e) for e in EXPS}
    _, texts, figure = _render(
        monkeypatch,
        lambda: fig.fig_gradient_diagnostics(
            study.files("diagnostics.csv", multitask), out / "diag", labels, EXPS
        ),
    )
    ticks = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert ticks == [labels[e] for e in multitask]  # one row per configuration, in order
    assert "null reference, central 95%" in texts  # the fixture logs a trunk null


def test_result_figures(built):
    _, res, out = built
    _ok(fig.fig_main_comparison(res, out / "main"))
    _ok(fig.fig_alpha_sensitivity(res, out / "alpha"))
    _ok(fig.fig_augmentation(res, out / "aug"))
    _ok(fig.fig_per_class_ap(res, out / "perclass"))
    _ok(fig.fig_front(res, out / "front"))
    _ok(fig.fig_paired_differences(res, out / "paired"))


def test_front_places_every_configuration(built, monkeypatch):
    study, res, out = built
    _, texts, _ = _render(monkeypatch, lambda: fig.fig_front(res, out / "front"))
    legend = "\n".join(texts)
    placed = [e for e in EXPS if e not in res.study.front_runs and res.has(e, "view_accuracy")]
    assert "gradnorm_a1.0" in placed and "gradnorm_a1.5_aug" in placed  # not only the rivals
    for e in placed:
        assert res.plain_label(e) in legend, e


def test_paired_differences(built, monkeypatch):
    _, res, out = built
    claimed = _claimed(res)
    ref = res.plain_label(res.reference)
    _, with_claim, figure = _render(
        monkeypatch, lambda: fig.fig_paired_differences(res, out / "paired_c", claimed=claimed)
    )
    assert "claimed by the seed guide" in with_claim
    assert any(f"{ref} minus configuration" in t for t in with_claim)
    rows = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    main = [res.chosen[g] for g in res.study.main_groups if res.chosen[g] != res.reference]
    assert rows == [res.plain_label(e) for e in main] + [res.plain_label("gradnorm_a1.0")]
    # the claimed markers sit at the claimed values, on the mAP@0.5 panel only
    panel = {ax.get_title(): ax for ax in figure.axes}

    def markers(ax):
        return [
            float(x)
            for c in ax.collections
            if isinstance(c, PathCollection)
            for x in np.asarray(c.get_offsets())[:, 0]
        ]

    for value in claimed.values():
        assert any(abs(x - value) < 1e-9 for x in markers(panel["mAP@0.5"])), value
    assert not markers(panel["View accuracy"])

    _, plain, figure = _render(
        monkeypatch, lambda: fig.fig_paired_differences(res, out / "paired_p")
    )
    assert "claimed by the seed guide" not in plain
    rows = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert rows == [res.plain_label(e) for e in main]


def test_per_class_small_classes_flagged(built, monkeypatch):
    _, res, out = built
    counts = {c: int(res.get(res.reference, f"n_gt/{c}")) for c in res.class_names()}
    assert min(counts.values()) < fig.SMALL_CLASS_BOXES  # the fixture has small classes
    _, texts, _ = _render(monkeypatch, lambda: fig.fig_per_class_ap(res, out / "pc"))
    for c, n in counts.items():
        assert f"{c}\n(n={n})" in texts
    assert f"hatched: fewer than {fig.SMALL_CLASS_BOXES} test boxes" in texts
    threshold = min(counts.values())  # no class below it
    _, texts, _ = _render(
        monkeypatch,
        lambda: fig.fig_per_class_ap(res, out / "pc2", small_class_boxes=threshold),
    )
    assert not any("fewer than" in t for t in texts)


def test_prediction_figures(built, monkeypatch):
    study, _, out = built
    run = study.runs["gradnorm_a1.5", 0]
    paths, texts, figure = _render(
        monkeypatch,
        lambda: fig.fig_detection_examples(
            run / "predictions_test.json", study.records_csv, out / "examples",
            metrics_json=run / "metrics_test.json",
        ),
    )  # fmt: skip
    _ok(paths)
    assert "ground truth (solid)" in texts
    # the images shown follow DETECTION_EXAMPLES_RULE: per class, the first image by name
    assert "file-name order" in fig.DETECTION_EXAMPLES_RULE
    preds = json.loads((run / "predictions_test.json").read_text())
    images = sorted(preds["images"], key=lambda im: im["name"])
    expected = []
    for c in range(len(preds["class_names"])):
        expected.append(
            next(im for im in images if im not in expected and any(g[0] == c for g in im["gt"]))
        )
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    views = preds["view_names"]
    assert [t.split("\n")[0] for t in titles] == [
        f"true view: {views[im['view_true']] if im['view_true'] >= 0 else 'missing'}"
        for im in expected
    ]

    files = study.experiment_files("gradnorm_a1.5", "metrics_test.json")
    paths, texts, _ = _render(monkeypatch, lambda: fig.fig_confusion_matrix(files, out / "cm"))
    _ok(paths)
    cms = [json.loads(Path(f).read_text())["classification"] for f in files]
    rows = np.sum([np.asarray(c["confusion_matrix"]) for c in cms], axis=0).sum(axis=1)
    for view, n in zip(cms[0]["labels"], rows, strict=True):
        assert f"{view} (n={int(n)})" in texts
    assert any("%" in t and "(" in t for t in texts)  # cells: share and count


def test_figures_are_deterministic(built):
    study, res, out = built
    multitask = [e for e in EXPS if study.experiments.at[e, "model"] == "multitask"]
    for make in (
        lambda stem: fig.fig_main_comparison(res, stem),
        lambda stem: fig.fig_front(res, stem),
        lambda stem: fig.fig_paired_differences(res, stem, claimed=_claimed(res)),
        lambda stem: fig.fig_gradient_diagnostics(study.files("diagnostics.csv", multitask), stem),
    ):
        a = make(out / "det_a")
        b = make(out / "det_b")
        assert a[0].read_bytes() == b[0].read_bytes()
        assert a[1].read_bytes() == b[1].read_bytes()


def test_missing_inputs_fail_clearly(built, tmp_path):
    study, res, out = built
    with pytest.raises(ValueError, match="no 'W' rows"):
        fig.fig_gradient_diagnostics(
            study.experiment_files("dual_backbone", "diagnostics.csv"), out / "x"
        )
    with pytest.raises(ValueError, match="no classification"):
        fig.fig_confusion_matrix(study.experiment_files("det_only", "metrics_test.json"), out / "x")
    with pytest.raises(ValueError, match="no run files"):
        fig.fig_training_curves([], out / "x")
    with pytest.raises(ValueError, match="no configuration"):
        fig.fig_paired_differences(res, out / "x", experiments=[res.reference])
    with pytest.raises(ValueError, match="metric"):
        fig.fig_per_class_ap(res, out / "x", metric="n_gt")
    preds = json.loads((study.runs["fixed", 0] / "predictions_test.json").read_text())
    preds["images"][0]["name"] = "unknown.png"
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps(preds))
    with pytest.raises(ValueError, match="unknown.png"):
        fig.fig_detection_examples(bad, study.records_csv, out / "x", n_images=24)


def test_detection_example_labels_never_overlap(built, monkeypatch, tmp_path):
    """Boxes stacked on one spot (ground truth and three confident predictions): every label's
    bounding box is apart from every other one's in its panel."""
    study, _, out = built
    run = study.runs["gradnorm_a1.5", 0]
    preds = json.loads((run / "predictions_test.json").read_text())
    for im in preds["images"]:
        c, x1, y1, x2, y2 = im["gt"][0]
        im["pred"] = [
            [c, 0.9, x1 + 1, y1 + 1, x2 + 1, y2 + 1],
            [(c + 1) % 4, 0.8, x1 + 2, y1 + 2, x2, y2],
            [(c + 2) % 4, 0.7, x1, y1 + 3, x2 + 2, y2 + 1],
        ]
    crowded = tmp_path / "predictions_test.json"
    crowded.write_text(json.dumps(preds))
    _, _, figure = _render(
        monkeypatch,
        lambda: fig.fig_detection_examples(crowded, study.records_csv, out / "crowded",
                                           conf_threshold=0.5),
    )  # fmt: skip
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)  # the saved figure was closed: draw it again
    canvas.draw()
    renderer = canvas.get_renderer()
    for ax in figure.axes:
        boxes = [t.get_window_extent(renderer) for t in ax.texts if t.get_text().strip()]
        assert len(boxes) == 4 or not boxes
        for a, b in itertools.combinations(boxes, 2):
            assert fig._overlap(a, b) == 0, (a, b)


def test_detection_examples_read_the_export_where_it_lies_on_this_machine(built, tmp_path):
    """A results archive unpacked elsewhere keeps records whose image paths name the machine that
    converted the export: with images_root the figure reads <root>/<split>/images/<file>."""
    study, _, _ = built
    run = study.runs["gradnorm_a1.5", 0]
    records = pd.read_csv(study.records_csv)
    moved = tmp_path / "export"
    (moved / "test" / "images").mkdir(parents=True)
    for path in map(Path, records["image_path"]):
        shutil.copyfile(path, moved / "test" / "images" / path.name)
    records["image_path"] = [
        f"/the/converting/machine/test/images/{Path(p).name}" for p in records["image_path"]
    ]
    elsewhere = tmp_path / "records.csv"
    records.to_csv(elsewhere, index=False)
    predictions = run / "predictions_test.json"
    with pytest.raises(ValueError, match="/the/converting/machine/test/images/.* does not exist"):
        fig.fig_detection_examples(predictions, elsewhere, tmp_path / "a")
    _ok(fig.fig_detection_examples(predictions, elsewhere, tmp_path / "b", images_root=moved))

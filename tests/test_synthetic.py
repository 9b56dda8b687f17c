"""Synthetic export: determinism, on-disk format (round trip through the real reader), structure."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from echomtl.data.synthetic import generate_synthetic_export, plan_synthetic_export

CLASSES = ["AR", "MR", "PR", "TR"]
VIEWS = ["A4C", "PSAX", "PLAX"]
SMALL = {"train": 6, "valid": 3}
KW = {"frames_per_video": 3, "videos_per_patient": 2}


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def small_pair(tmp_path_factory) -> tuple[Path, Path, dict]:
    base = tmp_path_factory.mktemp("synth")
    s1 = generate_synthetic_export(base / "a", SMALL, seed=0, **KW)
    generate_synthetic_export(base / "b", SMALL, seed=0, **KW)
    return base / "a", base / "b", s1


def test_same_seed_is_byte_identical(small_pair):
    a, b, summary = small_pair
    fa, fb = _files(a), _files(b)
    assert fa.keys() == fb.keys()
    assert len(fa) == 2 * 9 + 1  # images + labels + data.yaml
    assert all(fa[k] == fb[k] for k in fa)
    assert summary["splits"]["train"]["images"] == 6 and summary["splits"]["valid"]["images"] == 3


def test_worker_processes_write_the_same_bytes_and_summary(small_pair, tmp_path):
    a, _, summary = small_pair
    parallel = generate_synthetic_export(tmp_path / "p", SMALL, seed=0, workers=2, **KW)
    assert _files(tmp_path / "p") == _files(a)
    strip = ("image_path", "label_path")
    assert [{k: v for k, v in i.items() if k not in strip} for i in parallel["images"]] == [
        {k: v for k, v in i.items() if k not in strip} for i in summary["images"]
    ]


def test_other_seed_differs(small_pair, tmp_path):
    a, _, _ = small_pair
    generate_synthetic_export(tmp_path / "c", SMALL, seed=1, **KW)
    fa, fc = _files(a), _files(tmp_path / "c")
    assert fa.keys() != fc.keys()  # patient ids are random
    pngs_a = sorted(v for k, v in fa.items() if k.endswith(".png"))
    pngs_c = sorted(v for k, v in fc.items() if k.endswith(".png"))
    assert not set(pngs_a) & set(pngs_c)


def test_growing_a_split_keeps_earlier_images(small_pair, tmp_path):
    _, _, s_small = small_pair
    s_big = generate_synthetic_export(tmp_path / "big", {"train": 8}, seed=0, **KW)
    small_train = [r for r in s_small["images"] if r["split"] == "train"]
    for r_small, r_big in zip(small_train, s_big["images"][:6], strict=True):
        assert r_small["name"] == r_big["name"]
        assert r_small["boxes"] == r_big["boxes"]
        assert Path(r_small["image_path"]).read_bytes() == Path(r_big["image_path"]).read_bytes()


def test_label_file_format(small_pair):
    a, _, summary = small_pair
    pattern = re.compile(r"^[0-3]( [0-9.e-]+){8}\n\n[01] [01] [01]$")
    for r in summary["images"]:
        text = Path(r["label_path"]).read_text()
        assert pattern.match(text), text
        tokens = text.split("\n")[0].split()
        x1, y1, x2, y1b, x2b, y2, x1b, y2b = map(float, tokens[1:])
        assert (x1, x2, y1, y2) == (x1b, x2b, y1b, y2b)  # clockwise corners of a rectangle
        assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
        assert text.split("\n")[2].split().count("1") == 1
        name = Path(r["image_path"]).name
        assert re.fullmatch(r"[A-Za-z0-9=]+-[A-Za-z0-9+_]+\.mp4-\d+\.png", name), name
    yaml_text = (a / "data.yaml").read_text()
    assert "names: ['AR', 'MR', 'PR', 'TR']" in yaml_text and "nc: 4" in yaml_text
    assert "val: ../valid/images" in yaml_text and "test:" not in yaml_text


def test_round_trip_through_export_reader(tmp_path):
    export_reader = pytest.importorskip("echomtl.data.export_reader")
    sizes = {"train": 8, "valid": 4, "test": 4}
    summary = generate_synthetic_export(
        tmp_path / "x", sizes, seed=5, frames_per_video=2, videos_per_patient=2,
        view_label_noise=0.3, ambiguous_fraction=0.3,
    )  # fmt: skip
    records, defects = export_reader.read_export(tmp_path / "x", CLASSES, VIEWS)
    assert defects == []
    assert Counter(r.split for r in records) == Counter(sizes)
    intended = {r["name"]: r for r in summary["images"]}
    assert len(intended) == len(records) == 16
    for rec in records:
        want = intended[Path(rec.image_path).name]
        assert rec.split == want["split"]
        assert rec.patient_id == want["patient_id"]
        assert rec.video_id == want["video_id"]
        assert rec.frame == want["frame"]
        assert (rec.width, rec.height) == (want["width"], want["height"]) == (430, 320)
        assert rec.view == want["view"] and rec.view_index == want["view_index"]
        assert Path(rec.label_path) == Path(want["label_path"])
        assert len(rec.boxes) == len(want["boxes"]) == 1
        assert int(rec.boxes[0][0]) == want["boxes"][0][0]
        np.testing.assert_allclose(rec.boxes[0][1:], want["boxes"][0][1:], atol=1e-6, rtol=0)
    # the label noise changed some labels away from the rendered view, and they read back as such
    assert any(r["view"] != r["true_view"] for r in summary["images"])


def test_box_encloses_a_coloured_jet(small_pair):
    _, _, summary = small_pair
    for r in summary["images"]:
        img = np.asarray(Image.open(r["image_path"]).convert("RGB")).astype(int)
        _, x1, y1, x2, y2 = (int(v) for v in r["boxes"][0])
        assert 0.04 * 430 <= x2 - x1 <= 0.5 * 430 and 0.04 * 320 <= y2 - y1 <= 0.6 * 320
        crop = img[y1:y2, x1:x2]
        colourful = (crop.max(axis=2) - crop.min(axis=2)) > 50
        assert colourful.mean() > 0.25
        # tight: every border row/column of the box touches the jet (some coloured pixel)
        assert colourful[0].any() and colourful[-1].any()
        assert colourful[:, 0].any() and colourful[:, -1].any()


def test_view_order_changes_only_the_label(tmp_path):
    s1 = generate_synthetic_export(tmp_path / "a", {"train": 3}, seed=2, frames_per_video=3)
    s2 = generate_synthetic_export(
        tmp_path / "b", {"train": 3}, seed=2, frames_per_video=3, view_names=VIEWS[::-1]
    )
    for r1, r2 in zip(s1["images"], s2["images"], strict=True):
        assert Path(r1["image_path"]).read_bytes() == Path(r2["image_path"]).read_bytes()
        assert r1["view"] == r2["view"] and r1["view_index"] == 2 - r2["view_index"]


def test_videos_and_patients_structure():
    plans = plan_synthetic_export({"train": 60, "valid": 24, "test": 24}, seed=0, **KW)
    frames = defaultdict(set)
    videos = defaultdict(set)
    for p in plans:
        frames[p.video_id].add(p.frame)
        videos[p.patient_id].add(p.video_id)
        assert p.name == f"{p.video_id}-{p.frame}.png" and p.video_id.startswith(p.patient_id + "-")
    assert all(len(f) == 3 for f in frames.values())  # several (distinct) frames per video
    assert all(len(v) == 2 for v in videos.values())  # several videos per patient
    by_split = defaultdict(set)
    for p in plans:
        by_split[p.split].add(p.patient_id)
    assert not by_split["train"] & (by_split["valid"] | by_split["test"])
    assert len({p.name for p in plans}) == len(plans)
    # each video has one class and one (rendered) view
    per_video = defaultdict(set)
    for p in plans:
        per_video[p.video_id].add((p.class_name, p.true_view))
    assert all(len(v) == 1 for v in per_video.values())


def test_patient_overlap_shares_patients_not_videos():
    plans = plan_synthetic_export({"train": 60, "valid": 30}, seed=0, patient_overlap=1.0, **KW)
    train = {p.patient_id for p in plans if p.split == "train"}
    valid = {p.patient_id for p in plans if p.split == "valid"}
    assert valid <= train
    tv = {p.video_id for p in plans if p.split == "train"}
    assert not tv & {p.video_id for p in plans if p.split == "valid"}


def test_video_overlap_leaks_new_frames_of_training_videos():
    sizes = {"train": 60, "valid": 30, "test": 30}
    plans = plan_synthetic_export(sizes, seed=0, video_overlap=1.0, **KW)
    train = {p.video_id: p for p in plans if p.split == "train"}
    frames = defaultdict(set)
    for p in plans:
        frames[p.video_id].add(p.frame)
    for p in (p for p in plans if p.split != "train"):
        source = train[p.video_id]  # every valid/test frame is from a training video ...
        assert (p.patient_id, p.class_name, p.true_view) == (
            source.patient_id,
            source.class_name,
            source.true_view,
        )
        assert p.video_key == source.video_key == ("train", source.video_index)
    # ... yet no image name (hence no frame of a video) is used twice across the splits
    assert len({p.name for p in plans}) == len(plans)
    assert sum(len(f) for f in frames.values()) == len(plans)


def test_video_overlap_zero_leaves_the_export_unchanged():
    sizes = {"train": 30, "valid": 12, "test": 12}
    base = plan_synthetic_export(sizes, seed=3, **KW)
    assert base == plan_synthetic_export(sizes, seed=3, video_overlap=0.0, **KW)
    partial = plan_synthetic_export(sizes, seed=3, video_overlap=0.5, **KW)
    assert [p for p in partial if p.split == "train"] == [p for p in base if p.split == "train"]
    leaked = sum(p.video_key[0] == "train" for p in partial if p.split != "train")
    assert 0 < leaked < 24


@pytest.mark.parametrize("name", ["video_overlap", "patient_overlap"])
def test_overlap_must_be_a_fraction(name):
    with pytest.raises(ValueError, match=name):
        plan_synthetic_export({"train": 4, "valid": 4}, **{name: 1.5})


def test_class_view_cooccurrence_skew():
    plans = plan_synthetic_export({"train": 3000}, seed=0, frames_per_video=1)
    table = Counter((p.class_name, p.true_view) for p in plans)
    n_cls = Counter(p.class_name for p in plans)
    assert table[("PR", "A4C")] == table[("PR", "PLAX")] == 0 and table[("PR", "PSAX")] > 100
    assert table[("AR", "PLAX")] > 0.75 * n_cls["AR"]
    assert table[("TR", "PSAX")] > 0.75 * n_cls["TR"]
    assert all(table[("MR", v)] > 0.15 * n_cls["MR"] for v in VIEWS)  # MR spread over views
    assert 0.04 < sum(p.ambiguous for p in plans) / 3000 < 0.08
    assert 0.01 < sum(p.label_noise for p in plans) / 3000 < 0.03


def test_refuses_non_empty_dir_and_unknown_names(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        generate_synthetic_export(tmp_path / "x", {"train": 1})
    with pytest.raises(ValueError, match="view"):
        plan_synthetic_export({"train": 1}, view_names=["A4C", "A2C"])


def test_sector_by_view_narrows_the_short_axis_sector(tmp_path):
    def sector_areas(cue):
        summary = generate_synthetic_export(
            tmp_path / str(cue), {"train": 24}, seed=5, frames_per_video=1, sector_by_view=cue
        )
        return {
            im["name"]: (
                im["true_view"],
                (np.asarray(Image.open(im["image_path"])).max(axis=2) > 20).mean(),
            )
            for im in summary["images"]
        }

    plain, cued = sector_areas(0.0), sector_areas(1.0)
    psax = [cued[n][1] / plain[n][1] for n in plain if plain[n][0] == "PSAX"]
    assert psax and max(psax) < 0.95  # shallower and narrower: a smaller fan
    with pytest.raises(ValueError, match="sector_by_view"):
        generate_synthetic_export(tmp_path / "bad", {"train": 1}, sector_by_view=2.0)

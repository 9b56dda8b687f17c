"""Reader of the Roboflow YOLO export: formats, every defect kind, policy, records CSV."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from echomtl.data import records as records_mod
from echomtl.data.export_reader import parse_identity, read_export
from echomtl.data.records import (
    DEFECT_COLUMNS,
    DatasetDefectError,
    Defect,
    Record,
    RecordsFormatError,
    frame_to_records,
    read_defects,
    read_records,
    records_to_frame,
    write_defects,
    write_records,
)

CLASSES = ["AR", "MR", "PR", "TR"]
VIEWS = ["A4C", "PSAX", "PLAX"]
W, H = 32, 24
# class 1 (MR), a 4-corner polygon from (0.25, 0.25) to (0.75, 0.75)
GOOD = "1 0.25 0.25 0.75 0.25 0.75 0.75 0.25 0.75"
GOOD_PX = [1, 8.0, 6.0, 24.0, 18.0]
STEM = "ZmNlwq5mZcKcwps=-unnamed_1_1.mp4-31"


def write_png(path: Path, size: tuple[int, int] = (W, H), color: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (color, color, color)).save(path)
    return path


def write_label(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_pair(
    root: Path, label: str, stem: str = STEM, split: str = "train", size: tuple = (W, H)
) -> tuple[Path, Path]:
    image = write_png(root / split / "images" / f"{stem}.png", size)
    return image, write_label(root / split / "labels" / f"{stem}.txt", label)


def read(root: Path, **kwargs) -> tuple[list[Record], list[Defect]]:
    return read_export(root, CLASSES, VIEWS, **kwargs)


def assert_single_defect(root: Path, file: Path, line: int, kind: str) -> Defect:
    """Exactly one defect, at file:line of the kind; fail mode raises it with file:line+reason."""
    _, defects = read(root)
    assert [(d.file, d.line, d.kind) for d in defects] == [(str(file.resolve()), line, kind)]
    defect = defects[0]
    assert defect.reason
    with pytest.raises(DatasetDefectError) as info:
        read(root, on_defect="fail")
    message = str(info.value)
    assert message == f"{file.resolve()}:{line}: {kind}: {defect.reason}"
    assert info.value.defect == defect
    return defect


# ----------------------------------------------------------------------------- line defects

LINE_CASES = [
    # id, label text, defect line, kind, boxes kept, view index kept
    ("wrong_token_count", f"{GOOD}\n2 0.5 0.5 0.2\n\n0 1 0", 2, "wrong_token_count", 1, 1),
    (
        "even_token_count",
        f"{GOOD}\n2 0.1 0.1 0.5 0.1 0.5\n\n0 1 0",
        2,
        "wrong_token_count",
        1,
        1,
    ),
    (
        "coordinate_out_of_range",
        f"2 0.2 0.2 1.2 0.2 1.2 0.6\n{GOOD}\n\n0 1 0",
        1,
        "coordinate_out_of_range",
        1,
        1,
    ),
    (
        "coordinate_negative",
        f"2 0.1 0.5 0.4 0.2\n{GOOD}\n\n0 1 0",
        1,
        "coordinate_out_of_range",
        1,
        1,
    ),
    ("class_too_large", f"4 0.5 0.5 0.2 0.2\n{GOOD}\n\n0 1 0", 1, "unknown_class", 1, 1),
    ("class_negative", f"-1 0.5 0.5 0.2 0.2\n{GOOD}\n\n0 1 0", 1, "unknown_class", 1, 1),
    ("class_not_integer", f"1.5 0.5 0.5 0.2 0.2\n{GOOD}\n\n0 1 0", 1, "unknown_class", 1, 1),
    ("onehot_two_ones", f"{GOOD}\n\n1 1 0", 3, "bad_onehot", 1, -1),
    ("onehot_no_one", f"{GOOD}\n\n0 0 0", 3, "bad_onehot", 1, -1),
    ("onehot_not_binary", f"{GOOD}\n\n0 2 0", 3, "bad_onehot", 1, -1),
    ("onehot_second_line", f"{GOOD}\n\n0 1 0\n1 0 0", 4, "bad_onehot", 1, 1),
    ("missing_onehot", f"{GOOD}\n", 0, "missing_onehot", 1, -1),
    ("duplicate_box_line", f"{GOOD}\n{GOOD}\n\n0 0 1", 2, "duplicate_line", 1, 2),
    ("duplicate_onehot_line", f"{GOOD}\n\n0 0 1\n0 0 1", 4, "duplicate_line", 1, 2),
    ("degenerate_zero_width", f"3 0.5 0.5 0 0.2\n{GOOD}\n\n0 1 0", 1, "degenerate_box", 1, 1),
    (
        "degenerate_flat_polygon",
        f"{GOOD}\n3 0.5 0.1 0.5 0.2 0.5 0.3\n\n0 1 0",
        2,
        "degenerate_box",
        1,
        1,
    ),
    ("not_a_number", f"1 0.2 abc 0.3 0.3\n{GOOD}\n\n0 1 0", 1, "not_a_number", 1, 1),
    ("nan_coordinate", f"1 nan 0.5 0.2 0.2\n{GOOD}\n\n0 1 0", 1, "not_a_number", 1, 1),
    ("onehot_not_a_number", f"{GOOD}\n\n0 x 0", 3, "not_a_number", 1, -1),
]


@pytest.mark.parametrize(
    ("label", "line", "kind", "n_boxes", "view_index"),
    [case[1:] for case in LINE_CASES],
    ids=[case[0] for case in LINE_CASES],
)
def test_line_defect_is_located_reported_and_fails(
    tmp_path, label, line, kind, n_boxes, view_index
):
    _, label_path = make_pair(tmp_path, label)
    assert_single_defect(tmp_path, label_path, line, kind)
    records, _ = read(tmp_path)
    # report policy: the image stays; bad lines are dropped, good lines kept
    assert len(records) == 1
    rec = records[0]
    assert len(rec.boxes) == n_boxes
    assert rec.boxes[0] == pytest.approx(GOOD_PX)
    assert rec.view_index == view_index
    assert rec.view == (VIEWS[view_index] if view_index >= 0 else "missing")


def test_wrong_token_count_reason_says_what_was_expected(tmp_path):
    _, label_path = make_pair(tmp_path, f"{GOOD}\n2 0.5 0.5 0.2\n\n0 1 0")
    defect = read(tmp_path)[1][0]
    assert "4 tokens" in defect.reason and "expected 5" in defect.reason


@pytest.mark.parametrize(
    "label",
    ["7 0.5 0.5 0.2 0.2\n\n1 0 0", "1 0.5 0.5 0.2\n1 0.2 abc 0.3 0.3\n\n1 0 0",
     "3 0.5 0.5 0 0.2\n\n1 0 0", "1 0.5 0.5 1.9 0.2\n\n1 0 0"],
    ids=["unknown_class", "token_count_and_nan", "zero_area", "out_of_range"],
)  # fmt: skip
def test_image_whose_every_box_is_defective_is_excluded_not_made_background(tmp_path, label):
    make_pair(tmp_path, label)
    records, defects = read(tmp_path)
    assert records == []  # default policy: never a silent background image
    assert defects[-1].kind == "all_boxes_defective" and defects[-1].line == 0
    assert "excluded" in defects[-1].reason and "data.all_boxes_defective" in defects[-1].reason
    assert len(defects) >= 2  # the line defects themselves are listed too
    kept, defects = read_export(tmp_path, CLASSES, VIEWS, all_boxes_defective="background")
    assert kept[0].boxes == [] and kept[0].view == "A4C"
    assert defects[-1].kind == "all_boxes_defective" and "background" in defects[-1].reason


def test_image_with_no_box_line_is_a_true_background(tmp_path):
    make_pair(tmp_path, "\n1 0 0")
    records, defects = read(tmp_path)
    assert defects == [] and records[0].boxes == []


def test_coordinates_within_tolerance_are_clipped(tmp_path):
    make_pair(tmp_path, "0 -0.005 0.1 1.005 0.1 1.005 0.9 -0.005 0.9\n\n1 0 0")
    records, defects = read(tmp_path, coord_tolerance=0.01)
    assert defects == []
    assert records[0].boxes[0] == pytest.approx([0, 0.0, 0.1 * H, W, 0.9 * H])
    _, defects = read(tmp_path, coord_tolerance=0.001)
    assert [d.kind for d in defects] == ["coordinate_out_of_range", "all_boxes_defective"]


# ----------------------------------------------------------------------------- file defects


def test_unreadable_image(tmp_path):
    image, _ = make_pair(tmp_path, f"{GOOD}\n\n0 1 0")
    image.write_bytes(b"this is not a png")
    defect = assert_single_defect(tmp_path, image, 0, "unreadable_image")
    assert "expected a readable image" in defect.reason
    assert read(tmp_path)[0] == []


def test_truncated_image_is_unreadable(tmp_path):
    image, _ = make_pair(tmp_path, f"{GOOD}\n\n0 1 0", size=(64, 48))
    Image.effect_noise((64, 48), 50).convert("RGB").save(image)  # incompressible pixels
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    assert_single_defect(tmp_path, image, 0, "unreadable_image")


def test_unreadable_image_label_is_still_checked(tmp_path):
    image, label = make_pair(tmp_path, f"{GOOD}\n")
    image.write_bytes(b"junk")
    records, defects = read(tmp_path)
    assert records == []
    assert [(Path(d.file).name, d.kind) for d in defects] == [
        (image.name, "unreadable_image"),
        (label.name, "missing_onehot"),
    ]


def test_unsupported_extension_is_reported(tmp_path):
    make_pair(tmp_path, f"{GOOD}\n\n0 1 0")
    gif = tmp_path / "train" / "images" / "other.gif"
    gif.write_bytes(b"GIF89a")
    _, defects = read(tmp_path)
    assert [(d.file, d.line, d.kind) for d in defects] == [
        (str(gif.resolve()), 0, "unreadable_image")
    ]


def test_label_without_image(tmp_path):
    make_pair(tmp_path, f"{GOOD}\n\n0 1 0")
    orphan = write_label(tmp_path / "train" / "labels" / "orphan-a.mp4-1.txt", f"{GOOD}\n\n0 1 0")
    assert_single_defect(tmp_path, orphan, 0, "label_without_image")
    assert [r.name for r in read(tmp_path)[0]] == [f"{STEM}.png"]


def test_image_without_label(tmp_path):
    make_pair(tmp_path, f"{GOOD}\n\n0 1 0")
    lonely = write_png(tmp_path / "train" / "images" / "lonely-a.mp4-1.png")
    defect = assert_single_defect(tmp_path, lonely, 0, "image_without_label")
    assert "lonely-a.mp4-1.txt" in defect.reason
    assert len(read(tmp_path)[0]) == 1


def test_on_defect_must_be_known(tmp_path):
    with pytest.raises(ValueError, match="on_defect"):
        read(tmp_path, on_defect="ignore")


# ----------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        ("0.25 0.5 0.75 0.25 0.5 0.75", [8.0, 6.0, 24.0, 18.0]),  # triangle
        ("0.25 0.25 0.75 0.25 0.75 0.75 0.25 0.75", [8.0, 6.0, 24.0, 18.0]),  # rectangle
        ("0.5 0.25 0.75 0.4 0.75 0.6 0.5 0.75 0.25 0.6 0.25 0.4", [8.0, 6.0, 24.0, 18.0]),
    ],
    ids=["3_points", "4_points", "6_points"],
)
def test_polygon_to_box(tmp_path, points, expected):
    make_pair(tmp_path, f"2 {points}\n\n1 0 0")
    records, defects = read(tmp_path)
    assert defects == []
    assert records[0].boxes == [pytest.approx([2, *expected])]
    assert isinstance(records[0].boxes[0][0], int)


def test_plain_yolo_box(tmp_path):
    make_pair(tmp_path, "2 0.5 0.5 0.5 0.25\n\n1 0 0")
    records, defects = read(tmp_path)
    assert defects == []
    assert records[0].boxes == [pytest.approx([2, 8.0, 9.0, 24.0, 15.0])]


def test_zero_boxes(tmp_path):
    make_pair(tmp_path, "0 1 0\n")
    records, defects = read(tmp_path)
    assert defects == []
    assert records[0].boxes == [] and records[0].view == "PSAX"


def test_several_boxes_in_one_image(tmp_path):
    make_pair(tmp_path, f"{GOOD}\n0 0.5 0.5 0.5 0.25\n3 0.1 0.1 0.2 0.1 0.2 0.2\n\n0 0 1")
    records, defects = read(tmp_path)
    assert defects == []
    assert [b[0] for b in records[0].boxes] == [1, 0, 3]
    assert records[0].view == "PLAX" and records[0].view_index == 2


def test_view_line_first_is_accepted(tmp_path):
    make_pair(tmp_path, f"0 1 0\n{GOOD}\n")
    records, defects = read(tmp_path)
    assert defects == [] and records[0].view == "PSAX" and len(records[0].boxes) == 1


def test_view_missing_image_keeps_its_box(tmp_path):
    make_pair(tmp_path, GOOD)  # real-data quirk: no one-hot line, no trailing newline
    records, defects = read(tmp_path)
    assert [d.kind for d in defects] == ["missing_onehot"]
    assert records[0].boxes == [pytest.approx(GOOD_PX)]
    assert (records[0].view, records[0].view_index) == ("missing", -1)


def test_five_views_onehot_is_last_line_of_zeros_and_ones(tmp_path):
    views = ["a", "b", "c", "d", "e"]
    make_pair(tmp_path, "1 0.5 0.5 0.5 0.5\n\n0 0 1 0 0\n")
    records, defects = read_export(tmp_path, CLASSES, views)
    assert defects == []
    assert records[0].view == "c" and records[0].boxes == [pytest.approx([1, 8, 6, 24, 18])]


def test_image_size_comes_from_the_file(tmp_path):
    make_pair(tmp_path, f"{GOOD}\n\n0 1 0", size=(50, 40))
    rec = read(tmp_path)[0][0]
    assert (rec.width, rec.height) == (50, 40)
    assert rec.boxes == [pytest.approx([1, 12.5, 10.0, 37.5, 30.0])]


def test_identity_fields_paths_and_order(tmp_path):
    make_pair(tmp_path, f"{GOOD}\n\n0 1 0", stem="b-x.mp4-2", split="valid")
    make_pair(tmp_path, f"{GOOD}\n\n0 1 0", stem="b-x.mp4-1", split="valid")
    make_pair(tmp_path, f"{GOOD}\n\n0 1 0")
    records, defects = read(tmp_path)
    assert defects == []
    assert [(r.split, r.name) for r in records] == [
        ("train", f"{STEM}.png"),
        ("valid", "b-x.mp4-1.png"),
        ("valid", "b-x.mp4-2.png"),
    ]
    rec = records[0]
    assert (rec.patient_id, rec.video_id, rec.frame) == (
        "ZmNlwq5mZcKcwps=",
        "ZmNlwq5mZcKcwps=-unnamed_1_1.mp4",
        31,
    )
    assert Path(rec.image_path).is_absolute() and Path(rec.label_path).is_absolute()
    assert Path(rec.label_path).name == f"{STEM}.txt"


@pytest.mark.parametrize(
    ("stem", "expected"),
    [
        (STEM, ("ZmNlwq5mZcKcwps=", "ZmNlwq5mZcKcwps=-unnamed_1_1.mp4", 31)),
        (
            "Zmpjwqtla8Kawpg=-unnamed_1_2.mp4-16(1)",
            ("Zmpjwqtla8Kawpg=", "Zmpjwqtla8Kawpg=-unnamed_1_2.mp4", 16),
        ),
        ("abc-clip.mp4-7_png.rf.0123abcdef", ("abc", "abc-clip.mp4", 7)),
        ("nodash", ("nodash", "nodash", None)),
        ("p-clip-final", ("p", "p-clip-final", None)),
    ],
)
def test_parse_identity(stem, expected):
    assert parse_identity(stem) == expected


def test_missing_splits_are_absent_not_errors(tmp_path):
    make_pair(tmp_path, f"{GOOD}\n\n0 1 0")
    records, defects = read(tmp_path)
    assert {r.split for r in records} == {"train"} and defects == []


# ----------------------------------------------------------------------------- data.yaml


def test_data_yaml_names_mismatch(tmp_path):
    make_pair(tmp_path, f"{GOOD}\n\n0 1 0")
    (tmp_path / "data.yaml").write_text("nc: 4\nnames: ['AR', 'MR', 'TR', 'PR']\n")
    with pytest.raises(ValueError) as info:
        read(tmp_path)
    message = str(info.value)
    assert "data.yaml" in message
    assert "['AR', 'MR', 'TR', 'PR']" in message and "['AR', 'MR', 'PR', 'TR']" in message


@pytest.mark.parametrize(
    "text", ["names: [AR, MR, PR, TR]\n", "names: {0: AR, 1: MR, 2: PR, 3: TR}\n", "nc: 4\n"]
)
def test_data_yaml_matching_names_are_accepted(tmp_path, text):
    make_pair(tmp_path, f"{GOOD}\n\n0 1 0")
    (tmp_path / "data.yaml").write_text(text)
    assert len(read(tmp_path)[0]) == 1


# ----------------------------------------------------------------------------- records CSV


def sample_records(tmp_path: Path) -> list[Record]:
    make_pair(tmp_path, f"{GOOD}\n0 0.5 0.5 0.5 0.25\n\n0 1 0")
    make_pair(tmp_path, "1 0 0\n", stem="p-v.mp4-2", split="valid")
    make_pair(tmp_path, GOOD, stem="noframe", split="valid")
    return read(tmp_path)[0]


def test_records_csv_round_trip(tmp_path):
    records = sample_records(tmp_path)
    assert any(r.frame is None for r in records) and any(r.boxes == [] for r in records)
    path = tmp_path / "out" / "records.csv"
    write_records(records, path)
    assert path.read_text().splitlines()[0] == ",".join(records_mod.RECORD_COLUMNS)
    assert read_records(path) == records
    assert frame_to_records(records_to_frame(records)) == records


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("width", "wide", "width"),
        ("boxes", "[[1, 2, 3", "not valid JSON"),
        ("boxes", "[[1, 2, 3]]", "class_id, x1"),
        ("frame", "x", "frame"),
    ],
)
def test_malformed_records_csv_names_file_and_row(tmp_path, column, value, message):
    path = tmp_path / "records.csv"
    write_records(sample_records(tmp_path), path)
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows[1][column] = value
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=records_mod.RECORD_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(RecordsFormatError) as info:
        read_records(path)
    text = str(info.value)
    assert str(path) in text and "row 2" in text and message in text


def test_records_csv_missing_column(tmp_path):
    path = tmp_path / "records.csv"
    path.write_text("image_path,split\n/a.png,train\n")
    with pytest.raises(RecordsFormatError, match="missing column"):
        read_records(path)


def test_records_csv_short_row(tmp_path):
    path = tmp_path / "records.csv"
    write_records(sample_records(tmp_path), path)
    path.write_text(path.read_text() + "/x.png,train\n")
    with pytest.raises(RecordsFormatError, match=r"row 4 .*too few cells"):
        read_records(path)


def test_defects_csv_has_header_when_empty_and_round_trips(tmp_path):
    path = tmp_path / "defects.csv"
    write_defects([], path)
    assert path.read_text() == ",".join(DEFECT_COLUMNS) + "\n"
    defects = [Defect("/a, b.txt", 3, "bad_onehot", 'says "x", y')]
    write_defects(defects, path)
    assert read_defects(path) == defects


def test_failed_write_leaves_previous_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "records.csv"
    records = sample_records(tmp_path)
    write_records(records, path)
    before = path.read_text()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_records(records[:1], path)
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["records.csv"]


def test_the_export_fingerprint_follows_content_not_time_stamps_or_location(tmp_path):
    from echomtl.data.export_reader import export_fingerprint

    root = tmp_path / "export"
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "labels").mkdir(parents=True)
    (root / "train" / "images" / "a.png").write_bytes(b"\x89PNG fake")
    (root / "train" / "labels" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n1 0 0\n")
    first = export_fingerprint(root)
    copy = tmp_path / "copied"
    shutil.copytree(root, copy)  # new folder, new time stamps
    os.utime(copy / "train" / "labels" / "a.txt", (0, 0))
    assert export_fingerprint(copy) == first
    (copy / "train" / "labels" / "a.txt").write_text("0 0.5 0.5 0.1 0.2\n1 0 0\n")  # a label
    assert export_fingerprint(copy) != first
    (root / "train" / "images" / "b.png").write_bytes(b"more")  # an image added
    assert export_fingerprint(root) != first

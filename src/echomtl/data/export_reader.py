"""Read a Roboflow "YOLO v5 PyTorch" export (polygon boxes + one-hot view line) into records.

Layout: ``<root>/<split>/images/*.{png,jpg,jpeg,bmp}`` and ``<root>/<split>/labels/<stem>.txt``;
splits that do not exist are simply absent. An optional ``<root>/data.yaml`` with ``names`` must
list exactly the configured class names (a silent class-order mismatch would mislabel every box).

Label file grammar (tokens split on whitespace, blank lines ignored, line numbers are physical
1-based lines):

* box line, polygon: ``cls x1 y1 ... xn yn`` with n >= 3 points (odd token count >= 7); the box is
  the min/max of the points;
* box line, plain YOLO: ``cls cx cy w h`` (5 tokens);
* view line: the one-hot view label, ``len(view_names)`` tokens.

How a view line is told from a box line (V = ``len(view_names)``): a line with exactly V tokens
is the view line when V cannot be a box token count (V is not 5 and not an odd number >= 7, e.g.
the default V = 3), wherever it appears; when V could also be a box count, the line is the view
line only if it is the *last* non-blank line and every token is literally ``0`` or ``1``. Every
other non-blank line is a box line. So ``0 2 0`` (V = 3) is a bad view line, not a bad box line.

Values: coordinates are normalised to [0, 1]; values outside by at most ``coord_tolerance`` are
clipped, further out is a defect. A class id must be an integral number (``2`` or ``2.0``) in
``0 .. len(class_names) - 1``. ``nan``/``inf`` count as non-numeric.

Defects (kinds in docs/architecture.md) and what ``on_defect="report"`` keeps:

* a bad box line (wrong token count, non-numeric, unknown class, out-of-range coordinate,
  zero-area box) is dropped and the file's other lines are kept;
* an image whose every box line was bad (at least one box line, none valid) gets one more defect,
  ``all_boxes_defective``, and, under the default policy ``all_boxes_defective="exclude"``, no
  record: kept, it would be a background image, i.e. a wrong label for training and evaluation.
  ``"background"`` keeps it with zero boxes (config ``data.all_boxes_defective``);
* a repeated identical line (same tokens) keeps the first occurrence; each repeat is reported;
* a missing or bad view line keeps the image and its boxes with view ``missing`` / -1; a second,
  different view line is reported as ``bad_onehot`` and ignored;
* an image without a label file, a label without an image, and an unreadable image produce no
  record (reported; an unreadable image's label is still checked so all its defects show at once);
* a file in ``images/`` with an unsupported extension is reported as ``unreadable_image``; two
  images with the same stem share one label: the second (by name) is ``image_without_label``.

Nothing is dropped without a row in the defects table. ``on_defect="fail"`` raises
``DatasetDefectError`` at the first defect, in the deterministic reading order (splits in the
given order, files sorted by stem, image before label, lines top to bottom).

Identity: patient id = stem text before the first ``-``; video id = stem text before the last
``-<frame>``; frame = that trailing integer. A copy marker such as ``-16(1)`` (present in the real
data) still gives frame 16, and a Roboflow suffix ``_png.rf.<hash>`` is removed before parsing.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from pathlib import Path

import yaml
from PIL import Image

from echomtl.data.records import MISSING_VIEW, DatasetDefectError, Defect, Record

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp"})
ON_DEFECT_CHOICES: tuple[str, ...] = ("report", "fail")
ALL_BOXES_DEFECTIVE_CHOICES: tuple[str, ...] = ("exclude", "background")

_ROBOFLOW_SUFFIX = re.compile(r"_(?:png|jpe?g|bmp)\.rf\.[0-9A-Za-z]+$", re.IGNORECASE)
_FRAME = re.compile(r"^(\d+)(?:\s*\(\d+\))?$")

NormBox = tuple[int, float, float, float, float]  # class_id, x1, y1, x2, y2 in [0, 1]
Report = Callable[[Defect], None]


class _LineProblem(Exception):
    """A defect found while parsing one line; the caller adds the file and line number."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


# --------------------------------------------------------------------------- public API


def read_export(
    root: Path,
    class_names: list[str],
    view_names: list[str],
    on_defect: str = "report",
    coord_tolerance: float = 0.01,
    splits: tuple[str, ...] = ("train", "valid", "test"),
    all_boxes_defective: str = "exclude",
) -> tuple[list[Record], list[Defect]]:
    """Read every split present under ``root``; return records sorted by (split, name) + defects."""
    if on_defect not in ON_DEFECT_CHOICES:
        raise ValueError(f"on_defect must be one of {ON_DEFECT_CHOICES}, got {on_defect!r}")
    if all_boxes_defective not in ALL_BOXES_DEFECTIVE_CHOICES:
        raise ValueError(
            f"all_boxes_defective must be one of {ALL_BOXES_DEFECTIVE_CHOICES}, "
            f"got {all_boxes_defective!r}"
        )
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} is not a directory")
    check_data_yaml(root, class_names)

    defects: list[Defect] = []

    def report(defect: Defect) -> None:
        if on_defect == "fail":
            raise DatasetDefectError(defect)
        defects.append(defect)

    records: list[Record] = []
    for split in splits:
        records.extend(
            _read_split(
                root / split,
                split,
                class_names,
                view_names,
                coord_tolerance,
                report,
                all_boxes_defective,
            )  # fmt: skip
        )
    order = {s: i for i, s in enumerate(splits)}
    records.sort(key=lambda r: (order[r.split], r.name))
    return records, defects


def present_splits(
    root: Path | str, splits: tuple[str, ...] = ("train", "valid", "test")
) -> list[str]:
    """Splits that exist under an export root (an ``images`` or ``labels`` folder), in order.

    Cheap (no file is read): the workflow uses it at parse time to know which splits an
    ``original``-scheme run can be evaluated on.
    """
    root = Path(root)
    return [s for s in splits if (root / s / "images").is_dir() or (root / s / "labels").is_dir()]


def export_fingerprint(root: Path | str) -> str:
    """SHA-256 of what an export holds, for Snakemake's parameter tracking of the conversion.

    The export is an input from outside the workflow: its folder's time stamp says when it was
    copied or downloaded, not whether it changed, so the conversion tracks this fingerprint
    instead (a copied export, or a results archive unpacked beside it, does not rerun the study;
    a changed one does). It covers every file's path relative to the root and size, and the
    content of every file that is not an image (labels, ``data.yaml``): an image edited in place
    to the same byte count is the one change it does not see. Cheap enough for parse time:
    images are only stat'ed."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        digest.update(f"{rel}\0{path.stat().st_size}\0".encode())
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def check_data_yaml(root: Path, class_names: list[str]) -> None:
    """Refuse an export whose data.yaml ``names`` differ from the configured class names."""
    path = Path(root) / "data.yaml"
    if not path.is_file():
        return
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    names = data.get("names") if isinstance(data, dict) else None
    if names is None:
        return
    if isinstance(names, dict):  # Ultralytics style {0: AR, 1: MR, ...}
        names = [names[k] for k in sorted(names)]
    found = [str(n) for n in names]
    if found != list(class_names):
        raise ValueError(
            f"{path}: class names {found} differ from the configured class_names "
            f"{list(class_names)}; fix config data.class_names (order matters)"
        )


def parse_identity(stem: str) -> tuple[str, str, int | None]:
    """Return (patient_id, video_id, frame) from an image stem, per the dataset README."""
    stem = _ROBOFLOW_SUFFIX.sub("", stem)
    patient = stem.split("-", 1)[0]
    head, sep, tail = stem.rpartition("-")
    match = _FRAME.match(tail) if sep else None
    if match is None:
        return patient, stem, None
    return patient, head, int(match.group(1))


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) after fully decoding the file, so truncated/corrupt images are caught."""
    with Image.open(path) as im:
        im.verify()  # checks structure and checksums; the object is unusable afterwards
    with Image.open(path) as im:
        im.load()  # decodes the pixels: catches truncated data that verify() lets through
        return im.size


def parse_label(
    path: Path,
    n_classes: int,
    view_names: list[str],
    coord_tolerance: float,
    report: Report,
    count_box_lines: bool = False,
) -> tuple[list[NormBox], int] | tuple[list[NormBox], int, int]:
    """Parse one label file into normalised boxes and a view index (-1 when missing or bad).

    ``count_box_lines``: also return the number of (distinct) lines read as box lines, valid or
    not, so that a caller can tell "no box" from "every box defective".
    """
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    lines = [(no, line.split()) for no, line in enumerate(text.splitlines(), start=1)]
    lines = [(no, tokens) for no, tokens in lines if tokens]
    last_no = lines[-1][0] if lines else 0
    n_views = len(view_names)
    seen: dict[tuple[str, ...], int] = {}
    boxes: list[NormBox] = []
    view_index, view_line = -1, 0
    n_box_lines = 0
    for no, tokens in lines:
        key = tuple(tokens)
        if key in seen:
            _report(report, path, no, "duplicate_line", f"repeats line {seen[key]}; kept the first")
            continue
        seen[key] = no
        try:
            if _is_view_line(tokens, n_views, is_last=no == last_no):
                if view_line:
                    raise _LineProblem(
                        "bad_onehot",
                        f"second view line (the first is line {view_line}); expected one",
                    )
                view_line = no
                view_index = _parse_onehot(tokens, view_names)
            else:
                n_box_lines += 1
                boxes.append(_parse_box(tokens, n_classes, n_views, coord_tolerance))
        except _LineProblem as problem:
            _report(report, path, no, problem.kind, problem.reason)
    if not view_line:
        _report(
            report,
            path,
            0,
            "missing_onehot",
            f"no one-hot view line; expected a line of {n_views} values 0/1 "
            f"({' '.join(view_names)})",
        )
    if count_box_lines:
        return boxes, view_index, n_box_lines
    return boxes, view_index


# --------------------------------------------------------------------------- split reading


def _read_split(
    split_dir: Path,
    split: str,
    class_names: list[str],
    view_names: list[str],
    tol: float,
    report: Report,
    all_boxes_defective: str = "exclude",
) -> list[Record]:
    images_dir, labels_dir = split_dir / "images", split_dir / "labels"
    if not images_dir.is_dir() and not labels_dir.is_dir():
        return []
    images = _list_images(images_dir, report)
    labels = _list_files(labels_dir, lambda p: p.suffix.lower() == ".txt")
    label_by_stem = {p.stem: p for p in labels}
    records = []
    claimed: dict[str, Path] = {}
    for image in images:
        label = label_by_stem.get(image.stem)
        if image.stem in claimed:
            _report(
                report,
                image,
                0,
                "image_without_label",
                f"label {image.stem}.txt already belongs to {claimed[image.stem].name}; "
                "expected one image per label stem",
            )
            continue
        claimed[image.stem] = image
        if label is None:
            _report(
                report,
                image,
                0,
                "image_without_label",
                f"expected label file {labels_dir / (image.stem + '.txt')}",
            )
            continue
        rec = _read_pair(
            image, label, split, class_names, view_names, tol, report, all_boxes_defective
        )
        if rec is not None:
            records.append(rec)
    for label in labels:
        if label.stem not in claimed:
            exts = "/".join(sorted(IMAGE_EXTENSIONS))
            _report(
                report,
                label,
                0,
                "label_without_image",
                f"expected an image {images_dir / label.stem}.{{{exts}}}",
            )
    return records


def _read_pair(
    image: Path,
    label: Path,
    split: str,
    class_names: list[str],
    view_names: list[str],
    tol: float,
    report: Report,
    all_boxes_defective: str = "exclude",
) -> Record | None:
    size: tuple[int, int] | None = None
    try:
        size = image_size(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        _report(report, image, 0, "unreadable_image", f"expected a readable image; PIL says: {exc}")
    boxes, view_index, n_box_lines = parse_label(
        label, len(class_names), view_names, tol, report, count_box_lines=True
    )
    if n_box_lines and not boxes:
        action = (
            "the image is excluded from training and evaluation"
            if all_boxes_defective == "exclude"
            else "the image is kept as a background image"
        )
        _report(
            report, label, 0, "all_boxes_defective",
            f"every box line ({n_box_lines}) is defective; {action} (config "
            f"data.all_boxes_defective: {all_boxes_defective})",
        )  # fmt: skip
        if all_boxes_defective == "exclude":
            return None
    if size is None:
        return None
    width, height = size
    patient, video, frame = parse_identity(image.stem)
    return Record(
        image_path=str(image),
        split=split,
        patient_id=patient,
        video_id=video,
        frame=frame,
        width=width,
        height=height,
        boxes=[
            [c, x1 * width, y1 * height, x2 * width, y2 * height] for c, x1, y1, x2, y2 in boxes
        ],
        view=view_names[view_index] if view_index >= 0 else MISSING_VIEW,
        view_index=view_index,
        label_path=str(label),
    )


def _list_files(directory: Path, keep: Callable[[Path], bool]) -> list[Path]:
    """Visible regular files of a directory, sorted by stem then name (deterministic order)."""
    if not directory.is_dir():
        return []
    files = [p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")]
    return sorted((p for p in files if keep(p)), key=lambda p: (p.stem, p.name))


def _list_images(images_dir: Path, report: Report) -> list[Path]:
    files = _list_files(images_dir, lambda p: True)
    images = []
    for path in files:
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(path)
        else:
            _report(
                report,
                path,
                0,
                "unreadable_image",
                f"unsupported extension {path.suffix!r}; "
                f"expected one of {sorted(IMAGE_EXTENSIONS)}",
            )
    return images


def _report(report: Report, file: Path, line: int, kind: str, reason: str) -> None:
    report(Defect(file=str(file), line=line, kind=kind, reason=reason))


# --------------------------------------------------------------------------- line parsing


def _could_be_box_count(n: int) -> bool:
    return n == 5 or (n >= 7 and n % 2 == 1)


def _is_view_line(tokens: list[str], n_views: int, is_last: bool) -> bool:
    if len(tokens) != n_views:
        return False
    if not _could_be_box_count(n_views):
        return True
    return is_last and all(t in ("0", "1") for t in tokens)


def _numbers(tokens: list[str]) -> list[float]:
    values = []
    for i, token in enumerate(tokens, start=1):
        try:
            value = float(token)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise _LineProblem("not_a_number", f"token {i} {token!r} is not a finite number")
        values.append(value)
    return values


def _parse_onehot(tokens: list[str], view_names: list[str]) -> int:
    values = _numbers(tokens)
    expected = f"expected exactly one 1 among {len(view_names)} values 0/1 ({' '.join(view_names)})"
    line = " ".join(tokens)
    if any(v not in (0.0, 1.0) for v in values):
        raise _LineProblem("bad_onehot", f"values other than 0/1 in {line!r}; {expected}")
    if sum(values) != 1:
        raise _LineProblem("bad_onehot", f"{int(sum(values))} ones in {line!r}; {expected}")
    return values.index(1.0)


def _parse_box(tokens: list[str], n_classes: int, n_views: int, tol: float) -> NormBox:
    n = len(tokens)
    if not _could_be_box_count(n):
        raise _LineProblem(
            "wrong_token_count",
            f"{n} tokens; expected 5 (class cx cy w h), an odd count >= 7 (class and >= 3 "
            f"polygon x y pairs) or {n_views} (the one-hot view line)",
        )
    values = _numbers(tokens)
    cls = _class_id(tokens[0], values[0], n_classes)
    if n == 5:
        cx, cy, w, h = values[1:]
        corners = [(cx - w / 2, "x1"), (cy - h / 2, "y1"), (cx + w / 2, "x2"), (cy + h / 2, "y2")]
        x1, y1, x2, y2 = (_in_range(v, what, tol) for v, what in corners)
    else:
        coords = [
            _in_range(v, f"{'xy'[i % 2]} (token {i + 2})", tol) for i, v in enumerate(values[1:])
        ]
        xs, ys = coords[0::2], coords[1::2]
        x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        raise _LineProblem(
            "degenerate_box",
            f"box width {x2 - x1:.6g}, height {y2 - y1:.6g}; expected both > 0",
        )
    return cls, x1, y1, x2, y2


def _class_id(token: str, value: float, n_classes: int) -> int:
    expected = f"expected an integer class id in 0..{n_classes - 1}"
    if value != int(value) or not 0 <= value < n_classes:
        raise _LineProblem("unknown_class", f"class id {token!r}; {expected}")
    return int(value)


def _in_range(value: float, what: str, tol: float) -> float:
    """Clip a normalised coordinate within tolerance; reject one beyond it."""
    if value < -tol or value > 1 + tol:
        raise _LineProblem(
            "coordinate_out_of_range",
            f"{what} = {value:.6g} is outside [0, 1] by more than the tolerance {tol:g}",
        )
    return min(max(value, 0.0), 1.0)

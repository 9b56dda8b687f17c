"""Records and defects: the data stage's two tables and their on-disk (CSV) form.

Every later stage reads ``records.csv`` / ``splits/<scheme>.csv`` rather than the raw export, so
the CSV form is a contract (docs/architecture.md): columns in a fixed order, boxes as JSON in
original-image pixels, ``frame`` empty when unknown. Reading validates every row, because a
hand-edited or truncated table must fail loudly with the file and row, not deep inside training.
Writes are atomic so a killed job never leaves a complete-looking half file behind.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from echomtl.atomic import write_text

RECORD_COLUMNS: list[str] = [
    "image_path",
    "split",
    "patient_id",
    "video_id",
    "frame",
    "width",
    "height",
    "boxes",
    "view",
    "view_index",
    "label_path",
]
DEFECT_COLUMNS: list[str] = ["file", "line", "kind", "reason"]
DEFECT_KINDS: tuple[str, ...] = (
    "unreadable_image",
    "label_without_image",
    "image_without_label",
    "wrong_token_count",
    "coordinate_out_of_range",
    "unknown_class",
    "bad_onehot",
    "missing_onehot",
    "duplicate_line",
    "degenerate_box",
    "not_a_number",
    "all_boxes_defective",
)
MISSING_VIEW = "missing"
SPLIT_NAMES: tuple[str, ...] = ("train", "valid", "test")

Box = list[float]  # [class_id, x1, y1, x2, y2], original-image pixels; class_id is an int


@dataclass
class Record:
    """One image of the dataset: what every later stage needs, nothing from the raw export."""

    image_path: str
    split: str
    patient_id: str
    video_id: str
    frame: int | None
    width: int
    height: int
    boxes: list[Box] = field(default_factory=list)
    view: str = MISSING_VIEW
    view_index: int = -1
    label_path: str = ""

    @property
    def name(self) -> str:
        """Image file name: the stable, human-readable key used in tables and sorting."""
        return Path(self.image_path).name


@dataclass(frozen=True)
class Defect:
    """One problem found in the export, located precisely enough to fix it by hand."""

    file: str
    line: int  # 1-based; 0 when the defect concerns the whole file
    kind: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.kind}: {self.reason}"


class DatasetDefectError(Exception):
    """Raised with ``on_defect="fail"`` so a defective export stops the workflow at once."""

    def __init__(self, defect: Defect) -> None:
        super().__init__(str(defect))
        self.defect = defect


class RecordsFormatError(ValueError):
    """A records CSV that does not follow the contract (names the file and the row)."""


# --------------------------------------------------------------------------- CSV text


def rows_to_csv_text(columns: list[str], rows: Iterable[dict[str, object]]) -> str:
    """Render rows as CSV text with a header (also when there are no rows)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: _csv_cell(row.get(c)) for c in columns})
    return buf.getvalue()


def _csv_cell(value: object) -> object:
    """None and NaN become empty cells so the CSV reads back as missing, not as 'None'/'nan'."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return value


# --------------------------------------------------------------------------- records


def _record_row(rec: Record) -> dict[str, object]:
    row = asdict(rec)
    row["frame"] = "" if rec.frame is None else rec.frame
    row["boxes"] = json.dumps(
        [[int(b[0]), *(float(v) for v in b[1:])] for b in rec.boxes], separators=(",", ":")
    )
    return row


def write_records(records: Iterable[Record], path: Path | str) -> None:
    """Write the records table (contract columns, boxes as JSON) atomically."""
    write_text(path, rows_to_csv_text(RECORD_COLUMNS, (_record_row(r) for r in records)))


def read_records(path: Path | str) -> list[Record]:
    """Read and validate a records table; any malformed row raises ``RecordsFormatError``."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in RECORD_COLUMNS if c not in header]
        if missing:
            raise RecordsFormatError(
                f"{path}: header: missing column(s) {missing}; expected {RECORD_COLUMNS}"
            )
        records = []
        for row_no, row in enumerate(reader, start=1):
            try:
                records.append(_parse_record_row(row))
            except (ValueError, TypeError, KeyError) as exc:
                raise RecordsFormatError(
                    f"{path}: row {row_no} (line {reader.line_num}): {exc}"
                ) from exc
    return records


def _parse_record_row(row: dict[str, str | None]) -> Record:
    if None in row:  # csv puts surplus cells under the key None
        raise ValueError(f"too many cells; expected {len(RECORD_COLUMNS)}")
    cells = {c: row[c] for c in RECORD_COLUMNS}
    if any(v is None for v in cells.values()):
        raise ValueError(f"too few cells; expected {len(RECORD_COLUMNS)}")
    frame = cells["frame"].strip()
    return Record(
        image_path=cells["image_path"],
        split=cells["split"],
        patient_id=cells["patient_id"],
        video_id=cells["video_id"],
        frame=_parse_int(frame, "frame") if frame else None,
        width=_parse_int(cells["width"], "width"),
        height=_parse_int(cells["height"], "height"),
        boxes=_parse_boxes(cells["boxes"]),
        view=cells["view"],
        view_index=_parse_int(cells["view_index"], "view_index"),
        label_path=cells["label_path"],
    )


def _parse_int(text: str, column: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"column {column!r}: expected an integer, got {text!r}") from None


def _parse_boxes(text: str) -> list[Box]:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"column 'boxes': not valid JSON ({exc.msg}): {text!r}") from None
    if not isinstance(raw, list):
        raise ValueError(f"column 'boxes': expected a JSON list, got {text!r}")
    boxes = []
    for box in raw:
        if not (isinstance(box, list) and len(box) == 5):
            raise ValueError(f"column 'boxes': expected [class_id, x1, y1, x2, y2], got {box!r}")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in box):
            raise ValueError(f"column 'boxes': non-numeric value in {box!r}")
        boxes.append([int(box[0]), *(float(v) for v in box[1:])])
    return boxes


def records_to_frame(records: Iterable[Record]) -> pd.DataFrame:
    """Records as a DataFrame (boxes stay Python lists) for grouping and counting."""
    rows = [asdict(r) for r in records]
    return pd.DataFrame(rows, columns=RECORD_COLUMNS)


def frame_to_records(frame: pd.DataFrame) -> list[Record]:
    """Inverse of ``records_to_frame``."""
    out = []
    for row in frame[RECORD_COLUMNS].to_dict(orient="records"):
        fr = row["frame"]
        row["frame"] = None if fr is None or pd.isna(fr) else int(fr)
        row["width"], row["height"] = int(row["width"]), int(row["height"])
        row["view_index"] = int(row["view_index"])
        row["boxes"] = [list(b) for b in row["boxes"]]
        out.append(Record(**row))
    return out


# --------------------------------------------------------------------------- defects


def write_defects(defects: Iterable[Defect], path: Path | str) -> None:
    """Write the defects table atomically; the header is written even when there is no defect."""
    write_text(path, rows_to_csv_text(DEFECT_COLUMNS, (asdict(d) for d in defects)))


def read_defects(path: Path | str) -> list[Defect]:
    """Read a defects table written by ``write_defects``."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        return [
            Defect(file=r["file"], line=int(r["line"]), kind=r["kind"], reason=r["reason"])
            for r in csv.DictReader(fh)
        ]

"""Synthetic colour-Doppler echo frames, written in the real Roboflow export's on-disk format.

Why this exists: the real dataset cannot ship with the project and its test split is withheld, so
the pipeline is developed, tested and demonstrated on a generated stand-in that has the same file
layout, the same label syntax and the same *kinds* of structure (views, valve classes, their
co-occurrence, videos and patients) without any real pixels.

On-disk format (identical to the real export, see the dataset README)::

    <out>/data.yaml                                   names, nc, train/val/test image folders
    <out>/<split>/images/<patient>-<clip>.mp4-<frame>.png
    <out>/<split>/labels/<same stem>.txt              "c x1 y1 x2 y1 x2 y2 x1 y2\\n\\n0 1 0"

Line 1 of a label is the Roboflow polygon (class id, then the 4 corners of the axis-aligned box,
normalised, clockwise from top-left, written with ``repr`` so that they round-trip exactly); then a
blank line; then the one-hot view line. Like the real files there is no trailing newline.

Generative model (hierarchical, so that patient- and video-level leakage is meaningful)
--------------------------------------------------------------------------------------------
* **Patient** (random base64-looking id, e.g. ``ZmRkwqVoa8Kc``): probe sector half-angle and radius,
  apex position, heart scale, tissue echogenicity, overall gain and whether the machine shows the
  Doppler *variance* (green) tint. Frames of one patient therefore share a "machine look", as real
  ones do.
  With ``sector_by_view`` > 0 the sector's half-angle and depth also follow an imaging preset
  of the video's view (:data:`VIEW_SECTOR`; overlapping with the patient spread, so a partial
  cue), as sonographers adjust width and depth to the structure in view.
* **Video** (``videos_per_patient`` per patient, clip names like ``unnamed_1_7.mp4`` or
  ``Mmode+2D+Doppler_Echo_color_1_3.mp4``): the valve class and the view (drawn jointly, see the
  co-occurrence table below), the chamber layout with per-chamber jitter, the jet's origin,
  direction, length, width, bend and turbulence, the colour box, and 0-2 laminar "normal flow"
  distractor patches. All frames of a video share these, so a frame in training makes its sibling
  frames in evaluation easy: video leakage matters, as in the real data.
* **Frame** (``frames_per_video`` per video, frame numbers sorted distinct integers < 64): small
  probe motion (shift, scale), cardiac phase (jet length x0.75-1.1), fresh speckle and turbulence
  noise, and random gain (x0.8-1.2) and gamma (0.8-1.25) so that brightness is not a cue.

Image formation (all in float, then 8-bit RGB):
1. Black background; an ultrasound *sector* (a wedge from an apex near the top centre) with thin
   grey edge lines and depth ticks, as the scanners draw them.
2. B-mode inside the sector: smooth tissue echogenicity x depth attenuation, a bright near-field
   band, **dark chambers** (blood pools: soft ellipses) with bright walls (rims). The layout is
   view-specific and is the cue for the view classifier:
   A4C = four chambers in a 2 x 2 cross (ventricles near the apex, atria deep);
   PSAX (aortic level) = a round central ring (aorta, thick bright wall) with the RVOT arching over
   it, RA lower left, LA below, pulmonary artery on the right;
   PLAX = elongated chambers lying across the sector (thin RV on top, long LV, aorta/LVOT and a
   round LA on the right).
3. **Speckle**: the B-mode is multiplied by the magnitude of a spatially correlated complex
   Gaussian field (normalised to mean 1), i.e. Rayleigh-distributed multiplicative noise with a
   grain of a few pixels, which is the standard fully-developed-speckle model.
4. **Colour Doppler** inside a colour box (a sub-wedge that contains the jet): velocities are
   coloured with a Doppler map (towards the probe red -> yellow, away blue -> cyan), values beyond
   the Nyquist limit *alias* (wrap to the other sign), and turbulence can add a green variance tint.
   The regurgitant **jet** is a tapered, possibly bent plume from the valve (narrow vena contracta,
   widening distally, ragged edges from smooth noise) whose velocity is high near the origin and
   noisy: with aliasing this produces the red/blue/yellow/cyan mosaic of a real jet. Laminar
   distractor patches (smooth, slow, no aliasing) sit in chambers and are *not* labelled.
5. The label box is the **tight pixel extent of the jet's visible colour pixels** (pixel edges: a
   jet covering columns 10..20 has x1 = 10, x2 = 21).

Class and view cues (so the task is learnable): each (class, view) pair has its own valve origin,
jet direction and velocity: MR comes from the mitral valve into the LA (away from the probe: blue/
cyan mosaic), TR from the tricuspid valve into the RA (blue, narrower, on the other side), AR from
the aortic valve into the LVOT/LV (towards the probe or across the beam: red/yellow mosaic; a round
en-face blob in PSAX), PR from the pulmonary valve back into the RVOT (slow, red flame, little
aliasing). MR also changes with the view: along the beam into the LA in A4C, a short en-face
mosaic in PSAX, posteriorly (about 50 degrees off the beam) in PLAX. Origins and directions
are jittered per video so that positions overlap between classes.

What makes it *not* trivial (a YOLOv5n at 128 px should reach mAP@0.5 >= 0.5 and view accuracy
between 0.8 and 0.98): jets are 8-30 % of the image width but with ragged edges, per-video jitter,
laminar distractors and gain/gamma changes; ``ambiguous_fraction`` (default 6 %) of frames are
"off-axis": their chamber contrast is faded to 15-40 % and the chambers of another view are blended
in, so the layout is genuinely ambiguous; ``view_label_noise`` (default 2 %) of frames carry a wrong
view label (annotation noise; the rendered view is recorded as ``true_view`` in the summary).

Class x view co-occurrence: by default taken from the real training split (counts of class, view
with the default view order ``[A4C, PSAX, PLAX]``):
AR: PSAX 52 / PLAX 268; MR: A4C 77 / PSAX 141 / PLAX 99; PR: PSAX 84; TR: A4C 34 / PSAX 278 /
PLAX 7. So PR is PSAX only, AR mostly PLAX, MR spread over all three, TR mostly PSAX. Class and view
are drawn per video (class from ``CLASS_PROBS``, view from ``VIEW_GIVEN_CLASS``); both tables are
keyed by *name*, so changing the one-hot order (``view_names``) changes only the label line.

Determinism: every random number comes from a ``numpy.random.Generator`` seeded from
``(seed, split, level, index)`` (level = patient, video or frame). Image ``i`` of a split belongs
to video ``i // frames_per_video`` and patient ``video // videos_per_patient``, so growing a split
appends images and leaves the earlier ones byte-identical. PNGs are written by Pillow with fixed
settings and no metadata: byte-identical on the same platform and library versions.

By default no patient is shared between splits. Two knobs mimic the leakage of the real export
(77 of its 80 validation videos also have frames in train): ``patient_overlap`` > 0 makes a
fraction of the validation/test patients training patients (same patient look, new videos);
``video_overlap`` > 0 makes a fraction of the validation/test *videos* training videos: new frames
(frame numbers the training split does not use) of a training video, so same patient, class, view,
chamber layout and jet, only the frame-level variation differs. That is what a random frame-level
split of a video dataset does, and what the ``original`` vs ``grouped`` split comparison measures.
Leaked frames avoid the frame numbers already used by the training video and by earlier leaked
frames (in plan order), so image names stay unique across splits.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import multiprocessing
import shutil
import sys
import zlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

DEFAULT_SIZES: dict[str, int] = {"train": 1042, "valid": 183, "test": 306}
DEFAULT_CLASS_NAMES: tuple[str, ...] = ("AR", "MR", "PR", "TR")
DEFAULT_VIEW_NAMES: tuple[str, ...] = ("A4C", "PSAX", "PLAX")
SPLIT_NUMBERS: dict[str, int] = {"train": 1, "valid": 2, "test": 3}

# Real training split: class counts AR 321, MR 318, PR 84, TR 319 (of 1,042).
CLASS_PROBS: dict[str, float] = {"AR": 0.31, "MR": 0.31, "PR": 0.08, "TR": 0.30}
# P(view | class), from the real training split's class x one-hot counts (see module docstring).
VIEW_GIVEN_CLASS: dict[str, dict[str, float]] = {
    "AR": {"A4C": 0.00, "PSAX": 0.16, "PLAX": 0.84},
    "MR": {"A4C": 0.24, "PSAX": 0.45, "PLAX": 0.31},
    "PR": {"A4C": 0.00, "PSAX": 1.00, "PLAX": 0.00},
    "TR": {"A4C": 0.11, "PSAX": 0.87, "PLAX": 0.02},
}

# Chamber layouts in sector units: (u lateral, v depth, semi-axis a, semi-axis b, angle degrees),
# where a point is apex + R * (u, v) and R is the sector radius in pixels.
LAYOUTS: dict[str, list[tuple[float, float, float, float, float]]] = {
    "A4C": [
        (-0.17, 0.40, 0.115, 0.21, 12.0),  # RV
        (0.17, 0.41, 0.135, 0.24, -10.0),  # LV
        (-0.19, 0.76, 0.13, 0.11, 0.0),  # RA
        (0.19, 0.77, 0.14, 0.11, 0.0),  # LA
    ],
    "PSAX": [
        (0.0, 0.55, 0.12, 0.12, 0.0),  # aorta: the central ring (thick wall below)
        (0.04, 0.33, 0.30, 0.075, -12.0),  # RVOT arching over the aorta
        (-0.29, 0.71, 0.12, 0.10, 20.0),  # RA
        (0.02, 0.82, 0.16, 0.08, 0.0),  # LA
        (0.31, 0.47, 0.065, 0.16, 12.0),  # pulmonary artery
    ],
    "PLAX": [
        (-0.05, 0.29, 0.38, 0.065, -10.0),  # RV
        (-0.12, 0.55, 0.36, 0.105, -10.0),  # LV
        (0.31, 0.45, 0.20, 0.065, -10.0),  # aortic root / LVOT
        (0.29, 0.72, 0.13, 0.11, 0.0),  # LA
    ],
}
# Imaging presets per view (``sector_by_view``): sonographers set depth and sector width for the
# structure in view, e.g. a wide sector for the four chambers, a shallower, narrower one for the
# short axis. (sector half-angle offset in degrees, depth factor) at full strength; ranges overlap
# with the per-patient spread (half-angle 38-46 degrees, depth 0.88-0.95), so the cue is partial.
VIEW_SECTOR: dict[str, tuple[float, float]] = {
    "A4C": (4.0, 1.0),
    "PSAX": (-8.0, 0.8),
    "PLAX": (-2.0, 0.9),
}
# Chamber indices that get a thick bright wall (the PSAX ring).
RING_CHAMBERS: dict[str, tuple[int, ...]] = {"A4C": (), "PSAX": (0,), "PLAX": ()}


@dataclass(frozen=True)
class JetSpec:
    """Where a (class, view) jet starts and how it looks, in sector units.

    ``direction`` is the angle of the jet axis in degrees from "straight down the beam" (+v),
    positive towards screen right (+u); ``speed`` is the peak velocity in Nyquist units (> 1
    aliases); ``taper`` is the exponent of the width profile (small = widens fast).
    """

    origin: tuple[float, float]
    direction: float
    length: tuple[float, float]
    width: tuple[float, float]
    speed: float
    turbulence: float
    taper: float


JETS: dict[tuple[str, str], JetSpec] = {
    ("MR", "A4C"): JetSpec((0.18, 0.60), 0.0, (0.26, 0.40), (0.06, 0.09), 1.5, 0.55, 0.5),
    ("TR", "A4C"): JetSpec((-0.18, 0.60), -8.0, (0.24, 0.36), (0.045, 0.07), 1.35, 0.45, 0.8),
    ("AR", "A4C"): JetSpec((0.04, 0.58), 165.0, (0.22, 0.34), (0.05, 0.08), 1.25, 0.45, 0.6),
    ("PR", "A4C"): JetSpec((-0.26, 0.45), 200.0, (0.18, 0.26), (0.06, 0.09), 0.85, 0.25, 0.4),
    ("MR", "PSAX"): JetSpec((0.04, 0.67), 0.0, (0.09, 0.14), (0.09, 0.12), 1.5, 0.6, 0.3),
    ("TR", "PSAX"): JetSpec((-0.20, 0.56), -35.0, (0.22, 0.34), (0.045, 0.07), 1.35, 0.45, 0.8),
    ("AR", "PSAX"): JetSpec((0.0, 0.58), 180.0, (0.10, 0.16), (0.08, 0.11), 1.25, 0.5, 0.3),
    ("PR", "PSAX"): JetSpec((0.27, 0.33), 230.0, (0.18, 0.30), (0.06, 0.10), 0.85, 0.25, 0.4),
    ("MR", "PLAX"): JetSpec((0.19, 0.62), 50.0, (0.20, 0.32), (0.06, 0.09), 1.5, 0.55, 0.5),
    ("TR", "PLAX"): JetSpec((-0.10, 0.36), 10.0, (0.18, 0.28), (0.045, 0.07), 1.35, 0.45, 0.8),
    ("AR", "PLAX"): JetSpec((0.17, 0.47), -105.0, (0.22, 0.40), (0.05, 0.08), 1.25, 0.45, 0.6),
    ("PR", "PLAX"): JetSpec((0.20, 0.28), 200.0, (0.16, 0.24), (0.06, 0.09), 0.85, 0.25, 0.4),
}

_LEVEL_PATIENT, _LEVEL_VIDEO, _LEVEL_FRAME = 1, 2, 3


@dataclass
class ImagePlan:
    """Everything decided about one image before rendering (the box is known only after)."""

    split: str
    index: int
    patient_id: str
    patient_key: tuple[str, int]
    video_index: int
    #: (split, index) of the video whose layout and jet are rendered: its own, or a training
    #: video's when the frame leaks from train (``video_overlap``)
    video_key: tuple[str, int]
    video_id: str
    frame: int
    class_name: str
    true_view: str
    label_view: str
    ambiguous: bool
    label_noise: bool
    width: int
    height: int
    name: str = ""


# ----------------------------------------------------------------------------------- seeding
def _split_code(split: str) -> int:
    return zlib.crc32(split.encode("utf-8"))


def _rng(seed: int, split: str, level: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _split_code(split), level, int(index)])


def _patient_id(rng: np.random.Generator) -> str:
    """Base64-looking id like the real hashed names (never contains '-' or '/')."""
    n = int(rng.choice([8, 9, 10, 11]))
    raw = bytes(rng.integers(0, 256, size=n, dtype=np.uint8).tolist())
    return base64.b64encode(raw).decode("ascii").replace("/", "w").replace("+", "K")


def _choice(rng: np.random.Generator, probs: Mapping[str, float]) -> str:
    names = list(probs)
    p = np.array([max(float(probs[k]), 0.0) for k in names])
    if p.sum() <= 0:
        raise ValueError(f"probabilities sum to zero: {dict(probs)}")
    return names[int(rng.choice(len(names), p=p / p.sum()))]


# ----------------------------------------------------------------------------------- planning
def plan_synthetic_export(
    sizes: Mapping[str, int] = DEFAULT_SIZES,
    seed: int = 0,
    image_size: tuple[int, int] = (430, 320),
    class_names: Sequence[str] = DEFAULT_CLASS_NAMES,
    view_names: Sequence[str] = DEFAULT_VIEW_NAMES,
    frames_per_video: int = 8,
    videos_per_patient: int = 3,
    class_probs: Mapping[str, float] | None = None,
    view_given_class: Mapping[str, Mapping[str, float]] | None = None,
    ambiguous_fraction: float = 0.06,
    view_label_noise: float = 0.02,
    patient_overlap: float = 0.0,
    video_overlap: float = 0.0,
) -> list[ImagePlan]:
    """Decide ids, class, view and noise flags of every image without rendering (cheap).

    Used by :func:`generate_synthetic_export`, and by tests that need large samples of the joint
    class/view distribution without writing images.
    """
    class_probs = dict(CLASS_PROBS if class_probs is None else class_probs)
    view_given_class = {
        k: dict(v)
        for k, v in (VIEW_GIVEN_CLASS if view_given_class is None else view_given_class).items()
    }
    _check_names(class_names, view_names, class_probs, view_given_class)
    if frames_per_video < 1 or videos_per_patient < 1:
        raise ValueError("frames_per_video and videos_per_patient must be >= 1")
    width, height = int(image_size[0]), int(image_size[1])
    # draws run over the canonical name order, so reordering class_names / view_names changes
    # only the ids written in the labels, never which image gets which class or view
    classes = [c for c in DEFAULT_CLASS_NAMES if c in class_names]
    views = [v for v in LAYOUTS if v in view_names]
    probs = {c: class_probs.get(c, 0.0) for c in classes}
    for name, value in (("patient_overlap", patient_overlap), ("video_overlap", video_overlap)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be within [0, 1], got {value}")
    n_train_images = int(sizes.get("train", 0))
    n_train_patients = _n_groups(n_train_images, frames_per_video * videos_per_patient)
    n_train_videos = _n_groups(n_train_images, frames_per_video)

    def own_video(split: str, v_idx: int) -> dict[str, Any]:
        vrng = _rng(seed, split, _LEVEL_VIDEO, v_idx)
        cls = _choice(vrng, probs)
        view = _choice(vrng, {v: view_given_class[cls].get(v, 0.0) for v in views})
        prefix = "Mmode+2D+Doppler_Echo_color" if vrng.random() < 0.1 else "unnamed"
        frames = np.sort(vrng.choice(np.arange(1, 64), size=frames_per_video, replace=False))
        split_no = SPLIT_NUMBERS.get(split, 4 + _split_code(split) % 90)
        return {
            "class": cls,
            "view": view,
            "clip": f"{prefix}_{split_no}_{v_idx + 1}.mp4",
            "frames": [int(f) for f in frames],
            "key": (split, v_idx),
        }

    # frame numbers taken per training video (its own, then each leaked copy's), for unique names
    used_frames: dict[int, set[int]] = {}

    def leaked_video(split: str, v_idx: int, vrng: np.random.Generator) -> dict[str, Any] | None:
        if split == "train" or n_train_videos == 0 or vrng.random() >= video_overlap:
            return None
        t_idx = int(vrng.integers(n_train_videos))
        source = own_video("train", t_idx)
        used = used_frames.setdefault(t_idx, set(source["frames"]))
        free = np.array(sorted(set(range(1, 64)) - used))
        if len(free) < frames_per_video:
            return None  # the training video has no unused frame numbers left
        frames = np.sort(vrng.choice(free, size=frames_per_video, replace=False))
        used.update(int(f) for f in frames)
        p_key = ("train", t_idx // videos_per_patient)
        return {**source, "frames": [int(f) for f in frames], "patient_key": p_key}

    plans: list[ImagePlan] = []
    for split, n_images in sizes.items():
        if n_images <= 0:
            continue
        patients: dict[int, tuple[str, tuple[str, int]]] = {}
        videos: dict[int, dict[str, Any]] = {}
        for i in range(int(n_images)):
            v_idx = i // frames_per_video
            p_idx = v_idx // videos_per_patient
            if p_idx not in patients:
                prng = _rng(seed, split, _LEVEL_PATIENT, p_idx)
                key = (split, p_idx)
                overlap_draw = prng.random()
                if split != "train" and n_train_patients > 0 and overlap_draw < patient_overlap:
                    key = ("train", int(prng.integers(n_train_patients)))
                pid = _patient_id(_rng(seed, key[0], _LEVEL_PATIENT, key[1]))
                patients[p_idx] = (pid, key)
            if v_idx not in videos:
                leak_rng = _rng(seed, split, _LEVEL_VIDEO + 20, v_idx)
                videos[v_idx] = leaked_video(split, v_idx, leak_rng) or own_video(split, v_idx)
            video = videos[v_idx]
            if "patient_key" in video:
                pkey = video["patient_key"]
                pid = _patient_id(_rng(seed, pkey[0], _LEVEL_PATIENT, pkey[1]))
            else:
                pid, pkey = patients[p_idx]
            frng = _rng(seed, split, _LEVEL_FRAME, i)
            ambiguous = bool(frng.random() < ambiguous_fraction)
            noisy = bool(frng.random() < view_label_noise) and len(view_names) > 1
            label_view = video["view"]
            if noisy:
                others = [v for v in views if v != video["view"]]
                label_view = others[int(frng.integers(len(others)))]
            frame = video["frames"][i % frames_per_video]
            video_id = f"{pid}-{video['clip']}"
            plans.append(
                ImagePlan(
                    split=split,
                    index=i,
                    patient_id=pid,
                    patient_key=pkey,
                    video_index=v_idx,
                    video_key=video["key"],
                    video_id=video_id,
                    frame=frame,
                    class_name=video["class"],
                    true_view=video["view"],
                    label_view=label_view,
                    ambiguous=ambiguous,
                    label_noise=noisy,
                    width=width,
                    height=height,
                    name=f"{video_id}-{frame}.png",
                )
            )
    return plans


def _n_groups(n: int, per: int) -> int:
    return (int(n) + per - 1) // per


def _check_names(
    class_names: Sequence[str],
    view_names: Sequence[str],
    class_probs: Mapping[str, float],
    view_given_class: Mapping[str, Mapping[str, float]],
) -> None:
    for c in class_names:
        if c not in {k[0] for k in JETS}:
            raise ValueError(
                f"no synthetic jet model for class {c!r}; known: {DEFAULT_CLASS_NAMES}"
            )
        if c not in view_given_class:
            raise ValueError(f"view_given_class has no row for class {c!r}")
    for v in view_names:
        if v not in LAYOUTS:
            raise ValueError(f"no synthetic layout for view {v!r}; known: {tuple(LAYOUTS)}")
    if len(set(class_names)) != len(class_names) or len(set(view_names)) != len(view_names):
        raise ValueError("class_names and view_names must be unique")
    if sum(class_probs.get(c, 0.0) for c in class_names) <= 0:
        raise ValueError("class_probs give zero probability to every class")


# ----------------------------------------------------------------------------------- rendering
def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Zero-mean, roughly unit-variance noise with correlation length ``cell`` pixels."""
    lh, lw = max(int(math.ceil(h / cell)) + 1, 2), max(int(math.ceil(w / cell)) + 1, 2)
    low = rng.standard_normal((lh, lw)).astype(np.float32)
    img = Image.fromarray(low).resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32) * 1.6


def _speckle(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Rayleigh speckle: |correlated complex Gaussian|, normalised to mean 1."""
    lh, lw = h // 2 + 1, w // 3 + 1
    parts = []
    for _ in range(2):
        low = rng.standard_normal((lh, lw)).astype(np.float32)
        parts.append(np.asarray(Image.fromarray(low).resize((w, h), Image.Resampling.BILINEAR)))
    mag = np.sqrt(parts[0] ** 2 + parts[1] ** 2)
    return mag / np.float32(mag.mean() + 1e-6)


def _ellipse_distance(
    xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, a: float, b: float, angle_deg: float
) -> np.ndarray:
    t = math.radians(angle_deg)
    c, s = math.cos(t), math.sin(t)
    dx, dy = xx - cx, yy - cy
    xr = (dx * c + dy * s) / a
    yr = (-dx * s + dy * c) / b
    return np.sqrt(xr * xr + yr * yr)


def _doppler_rgb(vel: np.ndarray, variance: np.ndarray | None) -> np.ndarray:
    """Colour map of a Doppler velocity in [-1, 1): red->yellow towards, blue->cyan away."""
    pos = np.clip(vel, 0, 1)
    neg = np.clip(-vel, 0, 1)
    r = np.where(vel >= 0, 0.30 + 0.70 * np.clip(pos * 1.7, 0, 1), np.clip(neg - 0.8, 0, 1) * 2.5)
    g = np.clip(np.maximum(pos, neg) - 0.5, 0, 1) * 1.9
    b = np.where(vel < 0, 0.35 + 0.65 * np.clip(neg * 1.7, 0, 1), 0.0)
    rgb = np.stack([r, g, b], axis=-1)
    if variance is not None:
        rgb[..., 1] += variance
    return np.clip(rgb, 0, 1).astype(np.float32)


class _Renderer:
    """Renders one image from its plan; patient and video parameters are cached."""

    def __init__(self, seed: int, sector_by_view: float = 0.0) -> None:
        self.seed = seed
        self.sector_by_view = float(sector_by_view)
        self._patients: dict[tuple[str, int], dict[str, Any]] = {}
        self._videos: dict[tuple[str, int], dict[str, Any]] = {}

    # -- hierarchical parameters
    def patient(self, key: tuple[str, int]) -> dict[str, Any]:
        if key not in self._patients:
            rng = _rng(self.seed, key[0], _LEVEL_PATIENT + 10, key[1])
            self._patients[key] = {
                "half_angle": float(rng.uniform(38.0, 46.0)),
                "radius": float(rng.uniform(0.88, 0.95)),
                "apex_dx": float(rng.uniform(-0.03, 0.03)),
                "heart_scale": float(rng.uniform(0.92, 1.08)),
                "tissue": float(rng.uniform(0.28, 0.40)),
                "gain": float(rng.uniform(0.9, 1.1)),
                "variance_tint": bool(rng.random() < 0.5),
                "tissue_seed": int(rng.integers(2**31)),
            }
        return self._patients[key]

    def video(self, plan: ImagePlan) -> dict[str, Any]:
        key = plan.video_key
        if key not in self._videos:
            rng = _rng(self.seed, key[0], _LEVEL_VIDEO + 10, key[1])
            chambers = [
                (
                    u + rng.normal(0, 0.02),
                    v + rng.normal(0, 0.02),
                    a * rng.uniform(0.85, 1.15),
                    b * rng.uniform(0.85, 1.15),
                    ang + rng.normal(0, 5.0),
                )
                for (u, v, a, b, ang) in LAYOUTS[plan.true_view]
            ]
            spec = JETS[(plan.class_name, plan.true_view)]
            jet = {
                "origin": (
                    spec.origin[0] + rng.normal(0, 0.035),
                    spec.origin[1] + rng.normal(0, 0.035),
                ),
                "direction": spec.direction + rng.normal(0, 14.0),
                "length": rng.uniform(*spec.length),
                "width": rng.uniform(*spec.width),
                "bend": rng.normal(0, 0.25),
                "speed": spec.speed * rng.uniform(0.85, 1.15),
                "turbulence": spec.turbulence * rng.uniform(0.7, 1.3),
                "taper": spec.taper,
            }
            distractors = []
            for _ in range(int(rng.integers(0, 3))):
                ch = chambers[int(rng.integers(len(chambers)))]
                distractors.append(
                    {
                        "centre": (ch[0] + rng.normal(0, 0.03), ch[1] + rng.normal(0, 0.03)),
                        "axes": (ch[2] * rng.uniform(0.4, 0.8), ch[3] * rng.uniform(0.4, 0.8)),
                        "angle": ch[4],
                        "speed": float(rng.choice([-1, 1]) * rng.uniform(0.25, 0.65)),
                    }
                )
            self._videos[key] = {
                "chambers": chambers,
                "jet": jet,
                "distractors": distractors,
                "box_margin": rng.uniform(0.04, 0.12, size=4),
                "noise_seed": int(rng.integers(2**31)),
            }
        return self._videos[key]

    # -- image
    def render(self, plan: ImagePlan, all_views: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        pat = self.patient(plan.patient_key)
        vid = self.video(plan)
        rng = _rng(self.seed, plan.split, _LEVEL_FRAME + 10, plan.index)
        w, h = plan.width, plan.height
        d_angle, depth_factor = VIEW_SECTOR.get(plan.true_view, (0.0, 1.0))
        cue = self.sector_by_view
        radius = pat["radius"] * (1.0 + cue * (depth_factor - 1.0)) * h
        ax = w / 2 + pat["apex_dx"] * w + rng.normal(0, 0.004) * w
        ay = 0.02 * h + rng.normal(0, 0.003) * h
        # the sector fits the frame (a 430 x 320 frame limits the half-angle to about 45 degrees)
        fit = (min(ax, w - ax) - 3.0) / radius
        half = min(math.radians(pat["half_angle"] + cue * d_angle), math.asin(min(fit, 1.0)))
        # heart motion within the video: a small shift and scale of the whole layout
        shift = rng.normal(0, 0.012, size=2)
        scale = pat["heart_scale"] * (1 + rng.normal(0, 0.02))

        def to_px(u: float, v: float) -> tuple[float, float]:
            return ax + (u * scale + shift[0]) * radius, ay + (v * scale + shift[1]) * radius

        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        dx, dy = xx - ax, yy - ay
        rr = np.sqrt(dx * dx + dy * dy)
        theta = np.arctan2(dx, dy)  # 0 straight down, + towards screen right
        depth = rr / radius
        sector = (depth < 1.0) & (np.abs(theta) < half) & (dy > 0)

        # B-mode tissue
        tissue_rng = np.random.default_rng(pat["tissue_seed"] + vid["noise_seed"])
        tissue = pat["tissue"] * (1.0 + 0.35 * _smooth_noise(tissue_rng, h, w, 0.12 * radius))
        tissue = np.clip(tissue, 0.05, None) * (1.0 - 0.35 * depth)
        tissue += 0.45 * np.exp(-depth / 0.05)
        chambers = list(vid["chambers"])
        contrast = 1.0
        extra: list[tuple[float, float, float, float, float]] = []
        if plan.ambiguous:
            contrast = float(rng.uniform(0.15, 0.4))
            other = [v for v in LAYOUTS if v in all_views and v != plan.true_view]
            other = other or [plan.true_view]
            extra = LAYOUTS[other[int(rng.integers(len(other)))]]
        blood = np.zeros((h, w), np.float32)
        rims = np.zeros((h, w), np.float32)
        wobble = _smooth_noise(tissue_rng, h, w, 0.06 * radius)
        ring_ids = RING_CHAMBERS.get(plan.true_view, ())
        layers = [(c, contrast, k in ring_ids) for k, c in enumerate(chambers)]
        layers += [(c, float(rng.uniform(0.3, 0.6)), False) for c in extra]
        for (u, v, a, b, ang), weight, ring in layers:
            cx, cy = to_px(u, v)
            d = _ellipse_distance(xx, yy, cx, cy, a * radius * scale, b * radius * scale, ang)
            d = d + 0.06 * wobble  # irregular walls
            blood = np.maximum(blood, weight / (1.0 + np.exp((d - 1.0) * 12.0)))
            rim_w = 0.30 if ring else 0.12
            rims = np.maximum(
                rims, weight * (1.4 if ring else 1.0) * np.exp(-(((d - 1.18) / rim_w) ** 2))
            )
        rims *= np.clip(0.75 + 0.5 * _smooth_noise(tissue_rng, h, w, 0.1 * radius), 0.0, 1.3)
        bmode = tissue * (1.0 - 0.9 * blood) + 0.4 * rims * (1.0 - blood)
        bmode *= _speckle(rng, h, w)
        gain = pat["gain"] * rng.uniform(0.8, 1.2)
        gamma = rng.uniform(0.8, 1.25)
        bmode = np.clip(bmode * gain, 0, 1) ** gamma
        bmode = np.where(sector, bmode, 0.0).astype(np.float32)
        img = np.repeat(bmode[..., None], 3, axis=2)
        img += rng.uniform(0, 0.015, size=(h, w, 1)).astype(np.float32)  # faint background noise
        # scanner graphics go under the colour layer, so the jet's colour pixels stay visible
        graphics = self._overlay(np.zeros((h, w, 3), np.uint8), ax, ay, radius, half)
        img = np.where(graphics.any(axis=2, keepdims=True), graphics / np.float32(255), img)

        # Colour Doppler. The jet is clipped to the sector; should jitter push it (almost) out,
        # its origin is pulled towards the sector centre and it is redrawn (deterministically).
        jet = vid["jet"]
        vrng = np.random.default_rng(vid["noise_seed"])
        for _attempt in range(6):
            jet_mask, vel, var = self._jet_field(jet, rng, xx, yy, to_px, radius * scale)
            jet_mask &= sector
            if jet_mask.sum() >= 40:
                break
            u0, v0 = jet["origin"]
            jet = dict(jet, origin=(0.7 * u0, 0.55 + 0.7 * (v0 - 0.55)))
        if not jet_mask.any():
            raise RuntimeError(f"{plan.name}: the synthetic jet fell outside the sector")
        # colour box: a sub-wedge around the jet (with per-video margins)
        ys, xs = np.nonzero(jet_mask)
        th_j, d_j = theta[ys, xs], depth[ys, xs]
        m = vid["box_margin"]
        cb = (
            (theta > th_j.min() - m[0] * 2.0)
            & (theta < th_j.max() + m[1] * 2.0)
            & (depth > d_j.min() - m[2])
            & (depth < d_j.max() + m[3])
            & sector
        )
        flow = np.zeros((h, w), np.float32)
        has_flow = np.zeros((h, w), bool)
        for dd in vid["distractors"]:
            cx, cy = to_px(*dd["centre"])
            a, b = dd["axes"]
            d = _ellipse_distance(
                xx, yy, cx, cy, a * radius * scale, b * radius * scale, dd["angle"]
            )
            patch = (d < 1.0 + 0.25 * _smooth_noise(vrng, h, w, 10.0)) & cb
            flow = np.where(patch, dd["speed"] * np.clip(1.2 - d, 0.3, 1.0), flow)
            has_flow |= patch
        colour = _doppler_rgb(flow, None)
        img = np.where(has_flow[..., None], colour, img)
        jet_rgb = _doppler_rgb(vel, var if pat["variance_tint"] else None)
        img = np.where(jet_mask[..., None], jet_rgb, img)

        x1, x2 = int(xs.min()), int(xs.max()) + 1
        y1, y2 = int(ys.min()), int(ys.max()) + 1
        out = (np.clip(img, 0, 1) * 255.0 + 0.5).astype(np.uint8)
        return out, [x1, y1, x2, y2]

    @staticmethod
    def _jet_field(
        jet: dict[str, Any],
        rng: np.random.Generator,
        xx: np.ndarray,
        yy: np.ndarray,
        to_px: Any,
        radius: float,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mask, aliased velocity and variance of a tapered, bent, turbulent plume."""
        h, w = xx.shape
        ox, oy = to_px(*jet["origin"])
        phi = math.radians(jet["direction"] + rng.normal(0, 3.0))
        ddx, ddy = math.sin(phi), math.cos(phi)  # unit vector along the jet
        length = 1.2 * jet["length"] * radius * rng.uniform(0.75, 1.1)
        width = 1.3 * jet["width"] * radius * rng.uniform(0.9, 1.1)
        px, py = xx - ox, yy - oy
        t = (px * ddx + py * ddy) / length
        s = (-px * ddy + py * ddx) - jet["bend"] * length * np.clip(t, 0, None) ** 2
        tc = np.clip(t, 0, 1)
        half_w = width * (0.22 + 0.78 * tc ** jet["taper"])
        core = np.exp(-((s / half_w) ** 2))
        start = np.clip((t + 0.04) / 0.06, 0, 1)
        tail = np.clip((1.1 - t) / 0.35, 0, 1)
        edge = _smooth_noise(rng, h, w, 0.035 * radius + 2.0)
        mask = core * start * tail * (1.0 + 0.4 * edge) > 0.45  # ragged edges, no far islands
        # velocity: high at the vena contracta, decaying distally; turbulence makes the mosaic
        radial = np.array([ox - to_px(0.0, 0.0)[0], oy - to_px(0.0, 0.0)[1]])
        radial /= np.linalg.norm(radial) + 1e-6
        along = ddx * radial[0] + ddy * radial[1]  # > 0: flowing away from the probe
        if abs(along) > 0.15:
            sign = -1.0 if along > 0 else 1.0  # away from the probe is negative (blue)
        else:  # across the beam: the scanner shows whichever small axial component wins
            sign = 1.0 if jet["speed"] < 1.3 else -1.0
        fine = _smooth_noise(rng, h, w, 0.015 * radius + 1.0)
        speed = (
            jet["speed"]
            * (1.0 - 0.55 * np.sqrt(tc))
            * (1.0 - 0.3 * np.clip(np.abs(s / half_w), 0, 1))
        )
        vel = sign * speed + 0.5 * jet["turbulence"] * fine * (0.3 + 0.7 * tc)
        vel = np.mod(vel + 1.0, 2.0) - 1.0  # aliasing above the Nyquist limit
        var = np.clip(jet["turbulence"] * np.abs(fine) * 0.45 - 0.1, 0, 0.5)
        return mask, vel.astype(np.float32), var.astype(np.float32)

    @staticmethod
    def _overlay(img: np.ndarray, ax: float, ay: float, radius: float, half: float) -> np.ndarray:
        pil = Image.fromarray(img)
        draw = ImageDraw.Draw(pil)
        grey = (170, 170, 170)
        for sgn in (-1, 1):
            end = (ax + sgn * radius * math.sin(half), ay + radius * math.cos(half))
            draw.line([(ax, ay), end], fill=grey, width=1)
        box = [ax - radius, ay - radius, ax + radius, ay + radius]
        start_deg = 90 - math.degrees(half)
        draw.arc(box, start=start_deg, end=180 - start_deg, fill=grey, width=1)
        for k in range(1, 6):  # depth ticks along the left edge
            r = radius * k / 6
            x = ax - r * math.sin(half) - 4
            y = ay + r * math.cos(half)
            draw.line([(x - 3, y), (x, y)], fill=grey, width=1)
        draw.polygon([(ax - 0.33 * radius, ay + 6), (ax - 0.31 * radius, ay + 12),
                      (ax - 0.35 * radius, ay + 12)], fill=(230, 200, 40))  # fmt: skip
        return np.asarray(pil)


# ----------------------------------------------------------------------------------- writing
def _label_text(
    class_id: int, box: Sequence[int], width: int, height: int, onehot: list[int]
) -> str:
    x1, y1, x2, y2 = (box[0] / width, box[1] / height, box[2] / width, box[3] / height)
    corners = [x1, y1, x2, y1, x2, y2, x1, y2]
    poly = " ".join([str(class_id)] + [repr(float(c)) for c in corners])
    return f"{poly}\n\n{' '.join(str(v) for v in onehot)}"


def _data_yaml(class_names: Sequence[str], splits: Sequence[str]) -> str:
    keys = {"train": "train", "valid": "val", "test": "test"}
    lines = [f"{keys.get(s, s)}: ../{s}/images" for s in ("train", "valid", "test") if s in splits]
    lines += [f"{s}: ../{s}/images" for s in splits if s not in keys]
    names = ", ".join(f"'{c}'" for c in class_names)
    lines += ["", f"nc: {len(class_names)}", f"names: [{names}]", ""]
    return "\n".join(lines)


_WRITER: dict[str, Any] = {}


def _init_writer(
    seed: int,
    sector_by_view: float,
    out: Path,
    class_names: tuple[str, ...],
    view_names: tuple[str, ...],
) -> None:
    """Per-process state of :func:`_write_image` (a renderer and where to write)."""
    _WRITER.update(
        renderer=_Renderer(seed, sector_by_view), out=out, class_names=class_names,
        view_names=view_names,
    )  # fmt: skip


def _write_image(plan: ImagePlan) -> dict[str, Any]:
    """Render one planned image, write its PNG and label file, return its summary row."""
    out, class_names, view_names = _WRITER["out"], _WRITER["class_names"], _WRITER["view_names"]
    pixels, box = _WRITER["renderer"].render(plan, view_names)
    class_id = list(class_names).index(plan.class_name)
    view_index = list(view_names).index(plan.label_view)
    onehot = [1 if k == view_index else 0 for k in range(len(view_names))]
    image_path = (out / plan.split / "images" / plan.name).resolve()
    label_path = image_path.parent.parent / "labels" / (Path(plan.name).stem + ".txt")
    Image.fromarray(pixels).save(image_path, format="PNG", compress_level=3)
    label_path.write_text(_label_text(class_id, box, plan.width, plan.height, onehot), "utf-8")
    return {
        "name": plan.name,
        "split": plan.split,
        "patient_id": plan.patient_id,
        "video_id": plan.video_id,
        "frame": plan.frame,
        "width": plan.width,
        "height": plan.height,
        "boxes": [[class_id, *(float(v) for v in box)]],
        "view": plan.label_view,
        "view_index": view_index,
        "image_path": str(image_path),
        "label_path": str(label_path),
        "class_name": plan.class_name,
        "true_view": plan.true_view,
        "ambiguous": plan.ambiguous,
        "label_noise": plan.label_noise,
    }


def synthetic_arguments(section: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`generate_synthetic_export`'s arguments from the validated config's ``synthetic``
    section (which holds every default: the schema's); its keys are the arguments' names, but
    ``width`` and ``height``, which make ``image_size``."""
    args = {k: v for k, v in section.items() if k not in ("width", "height")}
    args["sizes"] = dict(args["sizes"])
    return {**args, "image_size": (int(section["width"]), int(section["height"]))}


def generate_synthetic_export(
    out_dir: Path | str,
    sizes: Mapping[str, int] = DEFAULT_SIZES,
    seed: int = 0,
    image_size: tuple[int, int] = (430, 320),
    class_names: Sequence[str] = DEFAULT_CLASS_NAMES,
    view_names: Sequence[str] = DEFAULT_VIEW_NAMES,
    frames_per_video: int = 8,
    videos_per_patient: int = 3,
    class_probs: Mapping[str, float] | None = None,
    view_given_class: Mapping[str, Mapping[str, float]] | None = None,
    ambiguous_fraction: float = 0.06,
    view_label_noise: float = 0.02,
    patient_overlap: float = 0.0,
    video_overlap: float = 0.0,
    sector_by_view: float = 0.0,
    overwrite: bool = False,
    workers: int = 1,
) -> dict[str, Any]:
    """Write a synthetic export to ``out_dir`` and return a summary.

    ``image_size`` is ``(width, height)``. ``out_dir`` must be empty or absent unless
    ``overwrite`` (which removes only the split folders and ``data.yaml`` it would write).
    ``workers``: processes that render images (the output does not depend on it).

    Returns ``{"seed", "image_size", "class_names", "view_names", "splits": {split: {"images",
    "patients", "videos", "classes", "views", "class_view", "ambiguous", "label_noise"}},
    "class_view": {class: {view: n}} (all splits), "images": [per-image dict]}`` where each image
    dict holds what a reader must find: ``name, split, patient_id, video_id, frame, width, height,
    boxes [[class_id, x1, y1, x2, y2]] (pixels), view, view_index, image_path, label_path`` plus
    ``class_name, true_view, ambiguous, label_noise``.
    """
    out = Path(out_dir)
    splits = [s for s, n in sizes.items() if n > 0]
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty (pass overwrite=True to replace)")
        for s in [*splits, *DEFAULT_SIZES]:
            shutil.rmtree(out / s, ignore_errors=True)
        (out / "data.yaml").unlink(missing_ok=True)
    plans = plan_synthetic_export(
        sizes,
        seed=seed,
        image_size=image_size,
        class_names=class_names,
        view_names=view_names,
        frames_per_video=frames_per_video,
        videos_per_patient=videos_per_patient,
        class_probs=class_probs,
        view_given_class=view_given_class,
        ambiguous_fraction=ambiguous_fraction,
        view_label_noise=view_label_noise,
        patient_overlap=patient_overlap,
        video_overlap=video_overlap,
    )
    out.mkdir(parents=True, exist_ok=True)
    for s in splits:
        (out / s / "images").mkdir(parents=True, exist_ok=True)
        (out / s / "labels").mkdir(parents=True, exist_ok=True)
    if not 0.0 <= sector_by_view <= 1.0:
        raise ValueError(f"sector_by_view must be within [0, 1], got {sector_by_view}")
    # Every image depends on its plan and the seed alone (each patient's and video's parameters
    # come from their own seeded generator), so workers render the same bytes as one process.
    task = (seed, sector_by_view, out, tuple(class_names), tuple(view_names))
    if workers <= 1:
        _init_writer(*task)
        images = [_write_image(plan) for plan in plans]
    else:
        # fork: a spawned worker would re-run the calling script (a Snakemake job's is one);
        # this process holds no threads (no torch), which is what makes forking it safe
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, context, _init_writer, task) as pool:
            images = list(pool.map(_write_image, plans, chunksize=16))
    (out / "data.yaml").write_text(_data_yaml(class_names, splits), "utf-8")
    return _summary(images, seed, image_size, class_names, view_names, splits)


def _summary(
    images: list[dict[str, Any]],
    seed: int,
    image_size: tuple[int, int],
    class_names: Sequence[str],
    view_names: Sequence[str],
    splits: Sequence[str],
) -> dict[str, Any]:
    def table(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
        t = {c: {v: 0 for v in view_names} for c in class_names}
        for r in rows:
            t[r["class_name"]][r["view"]] += 1
        return t

    per_split = {}
    for s in splits:
        rows = [r for r in images if r["split"] == s]
        widths = [(r["boxes"][0][3] - r["boxes"][0][1]) / r["width"] for r in rows]
        per_split[s] = {
            "images": len(rows),
            "patients": len({r["patient_id"] for r in rows}),
            "videos": len({r["video_id"] for r in rows}),
            "classes": {c: sum(r["class_name"] == c for r in rows) for c in class_names},
            "views": {v: sum(r["view"] == v for r in rows) for v in view_names},
            "class_view": table(rows),
            "ambiguous": sum(r["ambiguous"] for r in rows),
            "label_noise": sum(r["label_noise"] for r in rows),
            "box_width_fraction_mean": float(np.mean(widths)) if widths else 0.0,
        }
    return {
        "seed": seed,
        "image_size": list(image_size),
        "class_names": list(class_names),
        "view_names": list(view_names),
        "splits": per_split,
        "class_view": table(images),
        "images": images,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m echomtl.data.synthetic OUT --seed 0 --train N --valid N --test N``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    for s, n in DEFAULT_SIZES.items():
        p.add_argument(f"--{s}", type=int, default=n, help=f"images in {s} (default {n})")
    p.add_argument("--frames-per-video", type=int, default=8)
    p.add_argument("--videos-per-patient", type=int, default=3)
    p.add_argument("--patient-overlap", type=float, default=0.0)
    p.add_argument("--video-overlap", type=float, default=0.0)
    p.add_argument("--sector-by-view", type=float, default=0.0)
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    summary = generate_synthetic_export(
        a.out,
        {"train": a.train, "valid": a.valid, "test": a.test},
        seed=a.seed,
        frames_per_video=a.frames_per_video,
        videos_per_patient=a.videos_per_patient,
        patient_overlap=a.patient_overlap,
        video_overlap=a.video_overlap,
        sector_by_view=a.sector_by_view,
        overwrite=a.overwrite,
    )
    summary.pop("images")
    json.dump(summary, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Fixed task weights: the model gradient is that of ``sum_i w_i L_i`` with constant ``w_i``."""

from __future__ import annotations

from collections.abc import Mapping

from echomtl.balancing.base import TASKS, Balancer


class FixedWeights(Balancer):
    """Constant weights from the config (seed default ``w_det`` 1.0, ``w_cls`` 0.01).

    Also the ``manual`` grid points, ``det_only`` (only ``det`` present: backward of
    ``w_det L_det``) and ``dual_backbone`` (no shared trunk: plain weighted backward, no
    diagnostics). ``cheap_diagnostics=True`` adds per-step ``W``/``feature`` rows (one local
    backward through the last shared layer per task); the ``trunk`` row comes every
    ``diagnostics_due`` step regardless.
    """

    name = "fixed"

    def __init__(self, w: Mapping[str, float], cheap_diagnostics: bool = False) -> None:
        unknown = sorted(set(w) - set(TASKS))
        if unknown or not w:
            raise ValueError(f"weights must be given for a non-empty subset of {TASKS}, got {w}")
        if any(float(v) < 0 for v in w.values()):
            raise ValueError(f"weights must be >= 0, got {dict(w)}")
        self._w = {t: float(w[t]) for t in TASKS if t in w}
        self.cheap_diagnostics = cheap_diagnostics

    @property
    def weights(self) -> dict[str, float]:
        return dict(self._w)

"""The fitted margin -> probability map of a model: pure data, applied with numpy.

Training fits it (``training/calibration.py``) and stores it in the bundle; serving applies it
without importing training.

Probabilities are kept inside ``[P_MIN, 1 - P_MIN]``: a calibration fitted on a few dozen
held-out concerns cannot know that a case is certainly (not) a concern, and an isotonic map fitted
on them showed 100% for two cases that were not concerns (issue 14). The ``"platt"`` map may
carry the covariance of its two parameters (``cov``: var(slope), cov, var(intercept)), which
gives every case an interval: the Wald interval of ``slope * margin + intercept`` mapped through
the sigmoid (:meth:`Calibration.interval`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from triage.model.errors import BundleError

__all__ = ["P_MIN", "Calibration", "format_probability"]

P_MIN = 1e-6  # the smallest probability (and 1 - the largest) a calibration returns
_Z = {0.8: 1.2815515655446004, 0.9: 1.6448536269514722, 0.95: 1.959963984540054}


@dataclass(frozen=True)
class Calibration:
    """Map a raw LightGBM margin to a calibrated probability; pure data, applied with numpy.

    ``method`` is ``"isotonic"`` (piecewise-linear through ``x`` -> ``y`` with ``np.interp``,
    clipped at both ends, as sklearn's ``IsotonicRegression(out_of_bounds="clip")`` predicts),
    ``"platt"`` (``sigmoid(slope * margin + intercept)``) or ``"none"`` (plain ``sigmoid(margin)``,
    the uncalibrated LightGBM probability).
    """

    method: str = "none"
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    slope: float = 1.0
    intercept: float = 0.0
    cov: tuple[float, ...] = ()  # platt only: (var slope, cov slope-intercept, var intercept)
    level: float = 0.9  # nominal coverage of :meth:`interval`

    def __post_init__(self) -> None:
        if self.method not in ("isotonic", "platt", "none"):
            raise BundleError(f"unknown calibration method {self.method!r}")
        object.__setattr__(self, "x", tuple(float(v) for v in self.x))
        object.__setattr__(self, "y", tuple(float(v) for v in self.y))
        object.__setattr__(self, "cov", tuple(float(v) for v in self.cov))
        if self.cov and (self.method != "platt" or len(self.cov) != 3):
            raise BundleError("cov is three numbers, and only for a platt calibration")
        if self.cov and (self.cov[0] < 0 or self.cov[2] < 0 or not np.isfinite(self.cov).all()):
            raise BundleError("cov must hold finite, non-negative variances")
        if self.level not in _Z:
            raise BundleError(f"interval level must be one of {sorted(_Z)}")
        if self.method == "isotonic":
            x, y = np.asarray(self.x), np.asarray(self.y)
            if len(x) == 0 or len(x) != len(y):
                raise BundleError("isotonic calibration needs equally long, non-empty x and y")
            # np.interp silently returns garbage on unsorted x; a non-monotone y would reorder cases.
            if np.any(np.diff(x) <= 0):
                raise BundleError("isotonic calibration x must be strictly increasing")
            if np.any(np.diff(y) < 0) or y.min() < 0 or y.max() > 1:
                raise BundleError("isotonic calibration y must be non-decreasing within [0, 1]")

    def apply(self, margin: np.ndarray) -> np.ndarray:
        """Return calibrated probabilities for raw margins."""
        margin = np.asarray(margin, dtype=np.float64)
        if self.method == "isotonic":
            p = np.interp(margin, self.x, self.y)
        else:
            z = self.slope * margin + self.intercept if self.method == "platt" else margin
            p = _sigmoid(z)
        return np.clip(p, P_MIN, 1.0 - P_MIN)

    @property
    def has_interval(self) -> bool:
        """Whether :meth:`interval` can say how uncertain each probability is."""
        return bool(self.cov)

    def interval(self, margin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper ends of each case's probability interval at ``level``.

        The uncertainty is the calibration's own (two parameters fitted on held-out cases),
        which dominates when few concerns are labelled. Without ``cov`` both ends equal the
        probability (no interval is claimed).
        """
        p = self.apply(margin)
        if not self.cov:
            return p, p
        m = np.asarray(margin, dtype=np.float64)
        v_s, c_si, v_i = self.cov
        se = np.sqrt(np.maximum(m * m * v_s + 2 * m * c_si + v_i, 0.0))
        z = self.slope * m + self.intercept
        lo = _sigmoid(z - _Z[self.level] * se)
        hi = _sigmoid(z + _Z[self.level] * se)
        return np.clip(lo, P_MIN, 1 - P_MIN), np.clip(hi, P_MIN, 1 - P_MIN)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored under ``calibration`` in ``bundle.json``."""
        if self.method == "isotonic":
            return {"method": "isotonic", "x": list(self.x), "y": list(self.y)}
        if self.method == "platt":
            out = {"method": "platt", "slope": self.slope, "intercept": self.intercept}
            if self.cov:
                out.update(cov=list(self.cov), level=self.level)
            return out
        return {"method": "none"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """Inverse of :meth:`to_dict`."""
        return cls(**dict(data))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # Clipped so that exp never overflows; the result is clipped to [P_MIN, 1 - P_MIN] anyway.
    return 1.0 / (1.0 + np.exp(-np.clip(z, -500.0, 500.0)))


def format_probability(p: float | None, digits: int = 2) -> str:
    """A probability as a reviewer reads it, never "0.00%" or "100.00%".

    A calibrated probability is never exactly 0 or 1, but rounding would show it so: a value
    below the smallest step shown reads "<0.01%" (at two digits), above the largest ">99.99%".
    """
    if p is None or not np.isfinite(p):
        return "–"
    step = 10.0 ** (-digits) / 100.0
    if p < step:
        return f"<{100 * step:.{digits}f}%"
    if p > 1.0 - step:
        return f">{100 * (1.0 - step):.{digits}f}%"
    return f"{100 * p:.{digits}f}%"

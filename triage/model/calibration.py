"""The fitted margin -> probability map of a model: pure data, applied with numpy.

Training fits it (``training/calibration.py``) and stores it in the bundle; serving applies it
without importing training.

Probabilities are kept inside ``[P_MIN, 1 - P_MIN]``: a calibration fitted on a few dozen
held-out concerns cannot know that a case is certainly (not) a concern, and an isotonic map fitted
on them showed 100% for two cases that were not concerns (issue 14). The ``"platt"`` map may
carry what gives every case an interval (:meth:`Calibration.interval`): bootstrap refits of its
two parameters (``draws``: the percentile interval of ``slope_b * margin + intercept_b`` over
the refits, mapped through the sigmoid; what training ships), or their covariance (``cov``:
var(slope), cov, var(intercept); the Wald interval).
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
    draws: tuple[tuple[float, float], ...] = ()  # platt only: bootstrap (slope, intercept) refits

    def __post_init__(self) -> None:
        if self.method not in ("isotonic", "platt", "none"):
            raise BundleError(f"unknown calibration method {self.method!r}")
        object.__setattr__(self, "x", tuple(float(v) for v in self.x))
        object.__setattr__(self, "y", tuple(float(v) for v in self.y))
        object.__setattr__(self, "cov", tuple(float(v) for v in self.cov))
        draws = tuple((float(a), float(b)) for a, b in self.draws)
        object.__setattr__(self, "draws", draws)
        if draws and (self.method != "platt" or len(draws) < 20):
            raise BundleError("draws are at least 20 bootstrap refits, and only for platt")
        if draws and not np.isfinite(draws).all():
            raise BundleError("bootstrap draws must be finite")
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
        return bool(self.cov or self.draws)

    def interval(self, margin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper ends of each case's probability interval at ``level``.

        The uncertainty is the calibration's own (two parameters fitted on a few thousand
        audited cases with a few dozen concerns), which dominates when few concerns are
        labelled. With ``draws`` it is the bootstrap percentile interval, widened where needed
        to hold the point probability; else the Wald interval from ``cov``; without either both
        ends equal the probability (no interval is claimed).
        """
        p = self.apply(margin)
        if self.draws:
            return self._bootstrap_interval(np.asarray(margin, dtype=np.float64), p)
        if not self.cov:
            return p, p
        m = np.asarray(margin, dtype=np.float64)
        v_s, c_si, v_i = self.cov
        se = np.sqrt(np.maximum(m * m * v_s + 2 * m * c_si + v_i, 0.0))
        z = self.slope * m + self.intercept
        lo = _sigmoid(z - _Z[self.level] * se)
        hi = _sigmoid(z + _Z[self.level] * se)
        return np.clip(lo, P_MIN, 1 - P_MIN), np.clip(hi, P_MIN, 1 - P_MIN)

    def _bootstrap_interval(self, m: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        draws = np.asarray(self.draws)
        q = ((1 - self.level) / 2, (1 + self.level) / 2)
        flat = m.ravel()
        lo, hi = np.empty_like(flat), np.empty_like(flat)
        step = 20_000  # cases per block: 200 refits x 20,000 cases = 32 MB of margins at a time
        for start in range(0, len(flat), step):
            z = np.outer(flat[start : start + step], draws[:, 0]) + draws[:, 1]
            lo[start : start + step], hi[start : start + step] = np.quantile(z, q, axis=1)
        lo = np.minimum(_sigmoid(lo).reshape(m.shape), p)
        hi = np.maximum(_sigmoid(hi).reshape(m.shape), p)
        return np.clip(lo, P_MIN, 1 - P_MIN), np.clip(hi, P_MIN, 1 - P_MIN)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored under ``calibration`` in ``bundle.json``."""
        if self.method == "isotonic":
            return {"method": "isotonic", "x": list(self.x), "y": list(self.y)}
        if self.method == "platt":
            out = {"method": "platt", "slope": self.slope, "intercept": self.intercept}
            if self.cov:
                out.update(cov=list(self.cov), level=self.level)
            if self.draws:
                out.update(draws=[list(d) for d in self.draws], level=self.level)
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

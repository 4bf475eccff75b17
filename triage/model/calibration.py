"""The fitted margin -> probability map of a model: pure data, applied with numpy.

Training fits it (``training/calibration.py``) and stores it in the bundle; serving applies it
without importing training.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from triage.model.errors import BundleError

__all__ = ["Calibration"]


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

    def __post_init__(self) -> None:
        if self.method not in ("isotonic", "platt", "none"):
            raise BundleError(f"unknown calibration method {self.method!r}")
        object.__setattr__(self, "x", tuple(float(v) for v in self.x))
        object.__setattr__(self, "y", tuple(float(v) for v in self.y))
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
            return np.interp(margin, self.x, self.y)
        z = self.slope * margin + self.intercept if self.method == "platt" else margin
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored under ``calibration`` in ``bundle.json``."""
        if self.method == "isotonic":
            return {"method": "isotonic", "x": list(self.x), "y": list(self.y)}
        if self.method == "platt":
            return {"method": "platt", "slope": self.slope, "intercept": self.intercept}
        return {"method": "none"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """Inverse of :meth:`to_dict`."""
        return cls(**dict(data))

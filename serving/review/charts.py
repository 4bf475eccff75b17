"""Global explanation and calibration charts for the model page and the notebooks.

Drawn from stored numbers only: the batch run's SHAP matrix (mean |SHAP| per feature, and a
sample of rows for the beeswarm) and the reliability curves in ``evaluation.json``. Like
``serving.review.plots`` they use matplotlib's object API on an Agg canvas, so the server can draw
them in worker threads; the notebooks display the same figures.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure

from serving.review.plots import NEGATIVE, POSITIVE

__all__ = [
    "beeswarm_figure",
    "calibration_figure",
    "feature_meanings",
    "importance_figure",
    "new_axes",
    "png",
]

INK, MUTED, GRID = "#1f2937", "#6b7280", "#e5e7eb"
# Low feature value blue, high red: shap's convention for beeswarms.
_VALUE_CMAP = LinearSegmentedColormap.from_list("shap_like", [NEGATIVE, "#b0a4c8", POSITIVE])


def png(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def feature_meanings(feature_names: Sequence[str]) -> list[str]:
    """What each feature means, from the catalog (the name itself if the catalog lacks it)."""
    from features import catalog

    out = []
    for name in feature_names:
        try:
            meaning = catalog.feature(name).meaning
        except KeyError:
            meaning = name
        meaning = meaning.removeprefix("1 if ")  # flags: "1 if admitted in class B2"
        out.append(meaning[:1].upper() + meaning[1:])
    return out


def new_axes(width: float, height: float) -> tuple[Figure, Any]:
    """A figure with one axes in the charts' style (light spines, small ticks)."""
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.spines["left"].set_color(GRID)
    ax.spines["bottom"].set_color(MUTED)
    ax.tick_params(colors=INK, labelsize=8)
    return fig, ax


def _wrap(label: str, width: int = 58) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def importance_figure(
    mean_abs_shap: np.ndarray, labels: Sequence[str], top: int = 20, width: float = 8.0
) -> Figure:
    """A bar per feature: mean |SHAP| over every scored case, the largest at the top."""
    order = np.argsort(-np.asarray(mean_abs_shap), kind="stable")[:top]
    fig, ax = new_axes(width, 0.3 * len(order) + 1.1)
    ys = np.arange(len(order))[::-1]
    ax.barh(ys, np.asarray(mean_abs_shap)[order], height=0.65, color=POSITIVE, alpha=0.85)
    ax.set_yticks(ys, [_wrap(labels[j]) for j in order])
    ax.set_xlabel("mean |SHAP value| (average impact on the log-odds)", color=MUTED, fontsize=8)
    ax.grid(axis="x", color=GRID, lw=0.6)
    ax.set_axisbelow(True)
    return fig


def _swarm_offsets(x: np.ndarray, bins: int = 60, spread: float = 0.38) -> np.ndarray:
    """Vertical offsets that spread points where they are dense (shap's beeswarm idea)."""
    if len(x) == 0:
        return x
    lo, hi = float(np.min(x)), float(np.max(x))
    idx = (
        np.zeros(len(x), dtype=int) if hi == lo else ((x - lo) / (hi - lo) * (bins - 1)).astype(int)
    )
    offsets = np.zeros(len(x))
    for b in np.unique(idx):
        members = np.flatnonzero(idx == b)
        k = len(members)
        # alternate above and below: 0, +1, -1, +2, -2, ...
        ranks = np.arange(k)
        signed = np.where(ranks % 2 == 0, ranks // 2, -(ranks // 2 + 1))
        offsets[members] = signed
    peak = max(np.abs(offsets).max(), 1.0)
    return offsets / peak * spread


def beeswarm_figure(
    shap_rows: np.ndarray,
    value_rows: np.ndarray,
    labels: Sequence[str],
    top: int = 15,
    width: float = 8.0,
) -> Figure:
    """One row of dots per feature (a sample of cases): SHAP value across, feature value as colour.

    Features are ordered by mean |SHAP| in the sample. Colour is the feature value's rank
    within the sample (so counts and days share one scale); missing values are grey.
    """
    shap_rows = np.asarray(shap_rows, dtype=np.float64)
    value_rows = np.asarray(value_rows, dtype=np.float64)
    order = np.argsort(-np.abs(shap_rows).mean(axis=0), kind="stable")[:top]
    fig, ax = new_axes(width, 0.36 * len(order) + 1.3)
    for pos, j in enumerate(order):
        y = len(order) - 1 - pos
        x, v = shap_rows[:, j], value_rows[:, j]
        offsets = _swarm_offsets(x)
        known = ~np.isnan(v)
        colour = np.full(len(v), 0.5)
        if known.any():
            ranks = np.argsort(np.argsort(v[known], kind="stable"), kind="stable")
            colour[known] = ranks / max(known.sum() - 1, 1)
        ax.scatter(x[~known], y + offsets[~known], s=5, color="#c0c0c0", lw=0)
        ax.scatter(
            x[known],
            y + offsets[known],
            s=5,
            c=colour[known],
            cmap=_VALUE_CMAP,
            vmin=0,
            vmax=1,
            lw=0,
        )
    ax.axvline(0, color=MUTED, lw=0.6, zorder=0)
    ax.set_yticks(np.arange(len(order))[::-1], [_wrap(labels[j]) for j in order])
    ax.set_ylim(-0.7, len(order) - 0.3)
    ax.set_xlabel(
        "SHAP value (impact on the log-odds of confirmed concern)", color=MUTED, fontsize=8
    )
    mappable = ax.collections[-1] if ax.collections else None
    if mappable is not None:
        bar = fig.colorbar(mappable, ax=ax, aspect=40, pad=0.01, ticks=[0, 1])
        bar.ax.set_yticklabels(["low", "high"], fontsize=7)
        bar.set_label("feature value", fontsize=7, color=MUTED)
        bar.outline.set_visible(False)
    return fig


def calibration_figure(
    curves: Mapping[str, Mapping[str, Sequence[float]]], width: float = 5.2
) -> Figure:
    """Observed concern rate against mean predicted probability, per bin, on log axes.

    Concern is rare (well under 1%), so linear axes would crowd every bin into a corner.
    Bins with a mean prediction of 0 cannot sit on a log axis and are left out.
    """
    fig, ax = new_axes(width, width * 0.82)
    colours = [POSITIVE, MUTED, NEGATIVE]
    lo, hi = 1.0, 0.0
    for (name, curve), colour in zip(curves.items(), colours, strict=False):
        x = np.asarray(curve["mean_predicted"], dtype=np.float64)
        y = np.asarray(curve["observed_rate"], dtype=np.float64)
        keep = (x > 0) & (y > 0)
        if not keep.any():
            continue
        ax.plot(x[keep], y[keep], marker="o", ms=3.5, lw=1.4, color=colour, label=name)
        lo, hi = min(lo, x[keep].min(), y[keep].min()), max(hi, x[keep].max(), y[keep].max())
    if hi > 0:
        lo, hi = lo / 1.5, min(hi * 1.5, 1.0)
        ax.plot([lo, hi], [lo, hi], ls="--", lw=0.8, color="#9ca3af", label="perfectly calibrated")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
    ax.set_xlabel("mean predicted probability (bin)", color=MUTED, fontsize=8)
    ax.set_ylabel("observed concern rate", color=MUTED, fontsize=8)
    ax.grid(color=GRID, lw=0.6, which="major")
    ax.set_axisbelow(True)
    ax.legend(frameon=False, fontsize=8)
    return fig

"""Plots for the training run and the evaluation report (PNG files, matplotlib's Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from training.calibration import ReliabilityCurve

__all__ = [
    "plot_fairness",
    "plot_feature_importance",
    "plot_precision_at_k",
    "plot_reliability",
]


def _pyplot():
    # Imported lazily and forced to Agg: plots are written to files, never shown.
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_reliability(curves: Mapping[str, ReliabilityCurve], path: Path, title: str) -> Path:
    """Reliability diagram: observed rate against mean prediction per bin, one line per curve.

    Both axes are logarithmic because confirmed concern is rare: on linear axes every bin but
    the last sits in the bottom-left corner.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    lo = 1e-4
    for name, curve in curves.items():
        x = np.clip(curve.mean_predicted, lo, 1)
        y = np.clip(curve.observed_rate, lo, 1)
        ax.plot(x, y, marker="o", ms=4, label=name)
    ax.plot([lo, 1], [lo, 1], color="grey", lw=1, ls="--", label="perfect calibration")
    ax.set(
        xscale="log",
        yscale="log",
        xlim=(lo, 1),
        ylim=(lo, 1),
        xlabel="mean predicted probability (bin)",
        ylabel="observed rate of confirmed concern (bin)",
        title=title,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_precision_at_k(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str
) -> Path:
    """Precision among the top k against k (log scale), one line per ordering."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (k, precision) in curves.items():
        ax.plot(k, precision, label=name, lw=1.5)
    for k in (1_000, 10_000, 50_000):
        ax.axvline(k, color="grey", lw=0.6, ls=":")
    ax.set(xscale="log", xlabel="cases reviewed (k, in ranked order)", ylabel="precision at k")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_feature_importance(names: list[str], gain: np.ndarray, path: Path, top: int = 25) -> Path:
    """Horizontal bar chart of the ``top`` features by total split gain."""
    plt = _pyplot()
    order = np.argsort(gain)[::-1][:top][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(order) + 1))
    ax.barh([names[i] for i in order], np.asarray(gain)[order])
    ax.set(xlabel="total split gain", title=f"Top {len(order)} features by gain")
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_fairness(fairness: Mapping[str, object], path: Path) -> Path:
    """True positive rate per group at the review capacity, one panel per attribute."""
    plt = _pyplot()
    attrs = fairness["attributes"]  # type: ignore[index]
    fig, axes = plt.subplots(1, len(attrs), figsize=(4.2 * len(attrs), 4), squeeze=False)
    for ax, (attr, entry) in zip(axes[0], attrs.items(), strict=True):
        groups = list(entry["by_group"])
        tpr = [entry["by_group"][g]["tpr"] or 0.0 for g in groups]
        ax.barh(groups, tpr, color="tab:blue")
        overall = entry["overall"]["tpr"]
        if overall is not None:
            ax.axvline(overall, color="black", lw=1, ls="--", label="all cases")
        ax.set(xlabel=f"share of concern cases in top {fairness['k']:,}", title=attr)
        ax.tick_params(axis="y", labelsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

"""Explanation plots: SHAP waterfalls of one case, drawn from a batch run's stored SHAP rows.

A waterfall follows ``shap.plots.waterfall``: features sorted by |SHAP|, the largest at the
top; when there are more than ``max_display`` features the smallest are summed into one
"N other features" bar at the bottom; the bars walk from the base value E[f(X)] to the
case's margin f(x) = base value + sum of contributions (log-odds, before calibration).
Labels are the catalog's plain language instead of raw column names.

Drawing uses matplotlib's object API on an Agg canvas (no pyplot state), so the service
can render in worker threads and the reviewer pages can call the same functions.
``RunShap`` reads ``scores/<run>/shap.parquet`` (one float32 row per case, in
``scores.parquet`` order; ``expected_value`` in the run's ``manifest.json``) and, given a
cache directory, keeps it as a memory-mapped ``.npy`` (``<cache>/shap/<run_id>/``, built once
by :class:`triage.runcache.RunCache`) so a row costs a page read.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from triage.paths import ScoresRun
from triage.runcache import RunCache, file_stamp, map_npy

__all__ = [
    "CACHE_KIND",
    "RunShap",
    "Step",
    "catalog_labels",
    "waterfall_figure",
    "waterfall_png",
    "waterfall_steps",
]

log = logging.getLogger(__name__)

CACHE_KIND = "shap"  # <cache_dir>/shap/<run_id>/matrix.npy (triage.runcache)
_CACHE_VERSION = "1"
_MATRIX_FILE = "matrix.npy"

# shap's own colours, so a reviewer who knows shap reads these plots the same way.
POSITIVE, NEGATIVE = "#ff0051", "#008bfb"


@dataclass(frozen=True)
class Step:
    """One bar of a waterfall: a feature's (or the grouped rest's) move from ``start`` to ``end``."""

    label: str
    feature: str | None  # None for the "N other features" bar
    shap: float
    start: float
    end: float


def waterfall_steps(
    values: np.ndarray,
    base_value: float,
    feature_names: Sequence[str],
    labels: Sequence[str] | None = None,
    max_display: int = 10,
) -> list[Step]:
    """The bars of a waterfall, top (largest |SHAP|) first, as ``shap.plots.waterfall`` draws them.

    Args:
        values: one case's SHAP values, in ``feature_names`` order.
        base_value: the explainer's expected value E[f(X)].
        feature_names: model feature order.
        labels: display label per feature (default: the names).
        max_display: bars at most, the grouped "other features" bar included.

    Returns:
        Steps from the top bar (ending at the margin) to the bottom bar (starting at
        ``base_value``); consecutive steps join end to start.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) != len(feature_names):
        raise ValueError(f"{values.shape} SHAP values for {len(feature_names)} features")
    if max_display < 2:
        raise ValueError("max_display must be at least 2")
    labels = list(labels) if labels is not None else list(feature_names)
    order = np.argsort(-np.abs(values), kind="stable")
    shown = len(values) if len(values) <= max_display else max_display - 1
    top = float(base_value) + float(values.sum())  # f(x): where the top bar ends
    steps, loc = [], top
    for j in order[:shown]:
        v = float(values[j])
        steps.append(Step(labels[j], feature_names[j], v, loc - v, loc))
        loc -= v
    if shown < len(values):
        rest = float(values[order[shown:]].sum())
        steps.append(Step(f"{len(values) - shown} other features", None, rest, loc - rest, loc))
    return steps


def catalog_labels(feature_names: Sequence[str], known: Mapping[str, float | None]) -> list[str]:
    """Plain-language labels from the feature catalog.

    A feature whose value is known (``known``: e.g. a case's stored top reasons) gets its
    reason text with the value ("3 arrests recorded in criminal history"); the others get
    what the feature means; a name the catalog does not know stays as it is.
    """
    from features import catalog

    out = []
    for name in feature_names:
        try:
            entry = catalog.feature(name)
        except KeyError:
            out.append(name)
            continue
        if name in known:
            value = known[name]
            out.append(catalog.reason(name, float("nan") if value is None else float(value)))
        else:
            out.append(entry.meaning)
    return out


def waterfall_figure(
    steps: Sequence[Step], base_value: float, *, title: str | None = None, width: float = 9.0
) -> Figure:
    """Draw ``steps`` (from :func:`waterfall_steps`) as a horizontal waterfall."""
    n = len(steps)
    fig = Figure(figsize=(width, 0.5 * n + 1.7), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ys = np.arange(n)[::-1]  # first step at the top
    for y, s in zip(ys, steps, strict=True):
        colour = POSITIVE if s.shap >= 0 else NEGATIVE
        ax.barh(y, s.end - s.start, left=s.start, height=0.7, color=colour)
        ax.annotate(
            f"{s.shap:+.3f}",
            (max(s.start, s.end), y),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
            color=colour,
        )
        if y > 0:  # the dashed connector shap draws between consecutive bars
            ax.plot([s.start, s.start], [y - 1.35, y + 0.35], ls="--", lw=0.5, color="#888888")
    margin = steps[0].end if steps else base_value
    ax.axvline(base_value, color="#bbbbbb", lw=0.8, zorder=0)
    ax.axvline(margin, color="#bbbbbb", lw=0.8, zorder=0)
    ax.set_yticks(ys, [_wrap(s.label) for s in steps], fontsize=8)
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xlabel("model output (log-odds of confirmed concern)")
    secondary = ax.secondary_xaxis("top")
    secondary.set_xticks(
        [base_value, margin], [f"E[f(X)] = {base_value:.3f}", f"f(x) = {margin:.3f}"]
    )
    secondary.tick_params(labelsize=8)
    for side in ("right", "left"):
        ax.spines[side].set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def waterfall_png(
    values: np.ndarray,
    base_value: float,
    feature_names: Sequence[str],
    *,
    labels: Sequence[str] | None = None,
    max_display: int = 10,
    title: str | None = None,
) -> bytes:
    """A PNG of one case's waterfall (see :func:`waterfall_steps` for the arguments)."""
    steps = waterfall_steps(values, base_value, feature_names, labels, max_display)
    fig = waterfall_figure(steps, base_value, title=title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _wrap(label: str, width: int = 48) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


@dataclass(frozen=True)
class RunShap:
    """The stored SHAP matrix of one batch run: row ``i`` explains row ``i`` of ``scores.parquet``."""

    run_id: str
    feature_names: tuple[str, ...]
    expected_value: float
    matrix: np.ndarray  # float32 [n_cases, n_features]; memory-mapped when cached

    @classmethod
    def open(cls, run_dir: Path, cache_dir: Path | None = None) -> RunShap:
        """Read a run's SHAP rows and expected value.

        Args:
            run_dir: ``scores/<run_id>``.
            cache_dir: where to keep a memory-mapped copy (built once per run, under a
                file lock, so several workers share one copy); None reads into memory.

        Raises:
            FileNotFoundError: the run has no ``manifest.json`` or ``shap.parquet``.
            ValueError: the manifest lacks ``expected_value``/``feature_names``, or the
                SHAP file's columns differ from them.
        """
        run = ScoresRun(Path(run_dir))
        manifest = json.loads(run.manifest.read_text())
        try:
            names = tuple(str(n) for n in manifest["feature_names"])
            expected = float(manifest["expected_value"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{run.manifest} lacks {exc}") from None
        parquet = run.shap_file
        if not parquet.is_file():
            raise FileNotFoundError(f"{parquet} is missing")
        missing = set(names) - set(pq.read_schema(parquet).names)
        if missing:
            raise ValueError(f"{parquet} lacks SHAP columns {sorted(missing)[:5]}")
        matrix = None
        if cache_dir is not None:
            try:
                matrix = _cached(run, names, Path(cache_dir))
            except OSError as exc:  # read-only or full disk: keep it in memory instead
                log.warning("no SHAP cache in %s (%s); loading into memory", cache_dir, exc)
        if matrix is None:
            matrix = _read(parquet, names)
        return cls(run.run_id, names, expected, matrix)

    def row(self, i: int) -> np.ndarray:
        """The SHAP values of row ``i`` (float64 copy, model feature order)."""
        return np.asarray(self.matrix[i], dtype=np.float64)


def _read(parquet: Path, names: Sequence[str], out: np.ndarray | None = None) -> np.ndarray:
    """The SHAP columns as a float32 matrix, streamed one record batch at a time."""
    f = pq.ParquetFile(parquet)
    if out is None:
        out = np.empty((f.metadata.num_rows, len(names)), dtype=np.float32)
    start = 0
    for batch in f.iter_batches(batch_size=65_536, columns=list(names)):
        n = batch.num_rows
        for j, name in enumerate(names):
            out[start : start + n, j] = batch.column(name).to_numpy(zero_copy_only=False)
        start += n
    return out


def _cached(run: ScoresRun, names: Sequence[str], cache_dir: Path) -> np.ndarray:
    """The SHAP matrix from the shared run cache (built once per run), memory-mapped."""
    stamp = {"version": _CACHE_VERSION, "shap": file_stamp(run.shap_file), "names": ",".join(names)}

    def build(directory: Path) -> None:
        n_rows = pq.ParquetFile(run.shap_file).metadata.num_rows
        out = np.lib.format.open_memmap(
            directory / _MATRIX_FILE, "w+", np.float32, (n_rows, len(names))
        )
        _read(run.shap_file, names, out)
        out.flush()
        del out

    entry = RunCache(cache_dir / CACHE_KIND).get(run.run_id, stamp, build)
    return map_npy(entry / _MATRIX_FILE)

"""Exact path-dependent TreeSHAP and raw margins for LightGBM, fast enough for the whole backlog.

``shap.TreeExplainer`` on a LightGBM booster calls LightGBM's own ``pred_contrib``, which runs
the O(leaves x depth^2) TreeSHAP recursion per tree per row. This engine returns the same
values (to float rounding) from lookup tables compiled once per model (``treeshap_compile``):
per row and tree it does a few table lookups and adds. Usage for streaming::

    engine = ShapEngine.from_booster(booster)      # compile once (seconds)
    for chunk in chunks:
        ex = engine.explain(chunk)                 # ex.values, ex.margin, ex.expected_value

``explain(booster, X)`` and ``predict_margin(booster, X)`` are one-shot conveniences that
compile on every call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from serving.explain.lgbm_trees import parse_booster
from serving.explain.treeshap_compile import DEFAULT_MAX_KEYS, CompiledEnsemble, compile_ensemble
from serving.explain.treeshap_kernels import bin_features, explain_rows

__all__ = ["DEFAULT_BLOCK_ROWS", "Explanation", "ShapEngine", "explain", "predict_margin"]

# Largest number of rows per parallel task. Every task streams all of the model's tables once,
# so bigger blocks mean less table traffic; its float64 accumulator is n_features x rows
# (32768 x 60 features = 15 MB). Measured on the benchmark model: 4096 -> 32768 rows per
# block is ~1.3x faster.
DEFAULT_BLOCK_ROWS = 32768


def _block_rows(n: int, n_threads: int, cap: int) -> int:
    """Rows per task so that tasks come in multiples of the thread count (no idle thread)."""
    per_round = n_threads * max(1, -(-n // (n_threads * cap)))
    return max(1, -(-n // per_round))


@dataclass(frozen=True)
class Explanation:
    """SHAP values of a batch of rows.

    Attributes:
        values: float32 [n_rows, n_features], in the model's feature order.
        expected_value: the model's mean raw output under its own cover (``shap``'s
            ``expected_value``); ``values.sum(1) + expected_value == margin`` up to rounding.
        margin: float64 [n_rows], raw score (log-odds for a binary model), equal to
            ``booster.predict(X, raw_score=True)``.
    """

    values: np.ndarray
    expected_value: float
    margin: np.ndarray


def _as_matrix(X: Any, feature_names: tuple[str, ...]) -> np.ndarray:
    """A 2-D float32/float64 array in the model's feature order (DataFrames are reordered)."""
    if hasattr(X, "columns"):
        cols = [str(c) for c in X.columns]
        default = all(n == f"Column_{i}" for i, n in enumerate(feature_names))
        if not default and cols != list(feature_names):
            missing = [n for n in feature_names if n not in cols]
            if missing:
                raise ValueError(f"input lacks model features: {missing[:5]}")
            X = X[list(feature_names)]
        X = X.to_numpy()
    arr = np.asarray(X)
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    if arr.ndim != 2 or arr.shape[1] != len(feature_names):
        raise ValueError(
            f"expected a 2-D array with {len(feature_names)} columns, got shape {arr.shape}"
        )
    return arr


class ShapEngine:
    """A LightGBM model compiled for exact TreeSHAP; reuse it across chunks."""

    def __init__(self, compiled: CompiledEnsemble, feature_names: tuple[str, ...]):
        self.compiled = compiled
        self.feature_names = feature_names

    @classmethod
    def from_model_text(cls, model_text: str, *, max_keys: int = DEFAULT_MAX_KEYS) -> ShapEngine:
        """Compile from the text of a LightGBM model (the bundle's ``model.txt``).

        Raises:
            ValueError: see :meth:`from_booster`.
        """
        import lightgbm as lgb

        return cls.from_booster(lgb.Booster(model_str=model_text), max_keys=max_keys)

    @classmethod
    def from_booster(cls, booster: Any, *, max_keys: int = DEFAULT_MAX_KEYS) -> ShapEngine:
        """Compile from a ``lightgbm.Booster`` (all its trees, as ``shap`` explains them).

        Raises:
            ValueError: the model has categorical splits, linear trees, several outputs
                per iteration, or random-forest averaging.
        """
        parsed = parse_booster(booster)
        return cls(compile_ensemble(parsed, max_keys=max_keys), parsed.feature_names)

    @property
    def expected_value(self) -> float:
        return self.compiled.expected_value

    def _run(self, X: Any, n_threads: int, block_rows: int, want_values: bool):
        n_threads = max(1, min(n_threads, numba.config.NUMBA_NUM_THREADS))
        c = self.compiled
        arr = _as_matrix(X, self.feature_names)
        n = arr.shape[0]
        values = np.zeros((n, c.n_features) if want_values else (0, c.n_features), np.float32)
        margin = np.zeros(n, dtype=np.float64)
        if n == 0:
            return values, margin
        codes = np.empty((len(c.used), n), dtype=c.code_dtype)
        previous = numba.get_num_threads()
        numba.set_num_threads(n_threads)
        try:
            bin_features(arr, c.used, c.thr_off, c.thr, c.miss, codes)
            explain_rows(
                codes, _block_rows(n, n_threads, block_rows), c.n_features,
                c.g_kind, c.g_keys, c.g_tab_off, c.g_leaf_off, c.g_fs, c.g_fe, c.g_leaf,
                c.gf_row, c.gf_col, c.gf_lut_off, c.lut, c.tables, c.leaf_values,
                c.leaf_d, c.leaf_v, c.z_off, c.z_flat, c.w_off, c.w_flat,
                values, margin, want_values,
            )  # fmt: skip
        finally:
            numba.set_num_threads(previous)
        return values, margin

    def explain(
        self, X: Any, *, n_threads: int = 2, block_rows: int = DEFAULT_BLOCK_ROWS
    ) -> Explanation:
        """SHAP values, expected value and raw margin for every row of ``X``.

        Args:
            X: [n_rows, n_features] array or DataFrame (float32 or float64; NaN = missing,
                handled exactly as LightGBM does).
            n_threads: worker threads.
            block_rows: largest number of rows per parallel task.

        Returns:
            The explanation; memory is ``n_rows x n_features`` float32 for the values plus
            about 2 bytes per row and used feature for the coded input.
        """
        values, margin = self._run(X, n_threads, block_rows, want_values=True)
        return Explanation(values=values, expected_value=self.expected_value, margin=margin)

    def predict_margin(
        self, X: Any, *, n_threads: int = 2, block_rows: int = DEFAULT_BLOCK_ROWS
    ) -> np.ndarray:
        """Raw score per row (float64), summed in LightGBM's tree order."""
        return self._run(X, n_threads, block_rows, want_values=False)[1]


def explain(
    booster: Any,
    X: Any,
    *,
    n_threads: int = 2,
    chunk_rows: int = 200_000,
    max_keys: int = DEFAULT_MAX_KEYS,
) -> Explanation:
    """Explain ``X`` with ``booster`` in chunks of ``chunk_rows`` (compiles the model first).

    For a stream of chunks build one ``ShapEngine`` instead: compiling takes seconds.
    """
    engine = (
        booster
        if isinstance(booster, ShapEngine)
        else ShapEngine.from_booster(booster, max_keys=max_keys)
    )
    arr = _as_matrix(X, engine.feature_names)
    values = np.empty((arr.shape[0], engine.compiled.n_features), dtype=np.float32)
    margin = np.empty(arr.shape[0], dtype=np.float64)
    for start in range(0, arr.shape[0], chunk_rows):
        part = engine.explain(arr[start : start + chunk_rows], n_threads=n_threads)
        values[start : start + len(part.margin)] = part.values
        margin[start : start + len(part.margin)] = part.margin
    return Explanation(values=values, expected_value=engine.expected_value, margin=margin)


def predict_margin(booster: Any, X: Any, *, n_threads: int = 2) -> np.ndarray:
    """Raw score per row, equal to ``booster.predict(X, raw_score=True)``."""
    engine = booster if isinstance(booster, ShapEngine) else ShapEngine.from_booster(booster)
    return engine.predict_margin(X, n_threads=n_threads)

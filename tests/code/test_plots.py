"""Explanation plots: shap's waterfall semantics, catalog labels, PNG output, stored SHAP rows."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from features import catalog
from serving.review.plots import RunShap, catalog_labels, waterfall_png, waterfall_steps

NAMES = [f"f{i}" for i in range(12)]
shap_rows = arrays(
    np.float64, st.integers(2, 30), elements=st.floats(-5, 5, allow_nan=False, width=32)
)


@given(values=shap_rows, base=st.floats(-5, 5), max_display=st.integers(2, 40))
@settings(max_examples=200, deadline=None)
def test_steps_walk_from_the_base_value_to_the_margin(values, base, max_display) -> None:
    """Bars join end to start, the top one ends at base + sum(SHAP), the bottom one starts
    at the base value, and no more than max_display bars are drawn."""
    names = [f"f{i}" for i in range(len(values))]
    steps = waterfall_steps(values, base, names, max_display=max_display)
    assert len(steps) == min(len(values), max_display)
    assert steps[0].end == pytest.approx(base + values.sum(), abs=1e-9)
    assert steps[-1].start == pytest.approx(base, abs=1e-9)
    for upper, lower in zip(steps, steps[1:], strict=False):
        assert upper.start == pytest.approx(lower.end, abs=1e-9)
    for s in steps:
        assert s.end - s.start == pytest.approx(s.shap, abs=1e-9)


def test_order_and_grouping_match_shap_waterfall() -> None:
    """The same bars, in the same order, with the same "N other features" group as
    shap.plots.waterfall draws for the same explanation."""
    import matplotlib.pyplot as plt
    import shap

    rng = np.random.default_rng(0)
    values = rng.normal(size=len(NAMES))
    for max_display in (3, 5, 12, 20):
        plt.figure()
        explanation = shap.Explanation(values=values, base_values=0.7, feature_names=NAMES)
        shap.plots.waterfall(explanation, max_display=max_display, show=False)
        # shap sets each y tick label twice (value and name, drawn in two colours); the
        # first half sits at y = 0 (bottom bar) .. n - 1 (top bar).
        ticks = [t.get_text() for t in plt.gca().get_yticklabels()]
        theirs = ticks[: len(ticks) // 2][::-1]
        plt.close("all")
        ours = [s.label for s in waterfall_steps(values, 0.7, NAMES, max_display=max_display)]
        assert ours == theirs[: len(ours)] and len(ours) == len(theirs)


def test_catalog_labels_use_reason_texts_where_the_value_is_known() -> None:
    """Known values read as the catalog's reason text, others as the feature's meaning."""
    names = catalog.model_features()[:3] + ["not_in_catalog"]
    labels = catalog_labels(names, {names[0]: 3.0, names[1]: None})
    assert labels[0] == catalog.reason(names[0], 3.0)
    assert labels[1] == catalog.reason(names[1], float("nan"))  # "...: no record"
    assert labels[2] == catalog.feature(names[2]).meaning
    assert labels[3] == "not_in_catalog"


def test_png_renders_concurrently() -> None:
    """PNGs render from several threads at once (no pyplot state) and differ by content."""
    rng = np.random.default_rng(1)
    rows = [rng.normal(size=len(NAMES)) for _ in range(4)]
    out: list[bytes | None] = [None] * len(rows)

    def draw(i: int) -> None:
        out[i] = waterfall_png(rows[i], -1.0, NAMES, title=f"case {i}", max_display=6)

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(len(rows))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(png is not None and png.startswith(b"\x89PNG\r\n\x1a\n") for png in out)
    assert len(set(out)) == len(rows)


def test_bad_input_is_refused() -> None:
    """A SHAP row of the wrong length or a max_display under 2 is a ValueError."""
    with pytest.raises(ValueError, match="features"):
        waterfall_steps(np.zeros(3), 0.0, NAMES)
    with pytest.raises(ValueError, match="max_display"):
        waterfall_steps(np.zeros(len(NAMES)), 0.0, NAMES, max_display=1)


def write_run(run: Path, n: int = 1000) -> np.ndarray:
    """A run directory with a SHAP file in two row groups, columns in another order."""
    run.mkdir(parents=True)
    matrix = np.random.default_rng(2).normal(size=(n, len(NAMES))).astype(np.float32)
    table = pa.table({name: matrix[:, j] for j, name in reversed(list(enumerate(NAMES)))})
    pq.write_table(table, run / "shap.parquet", row_group_size=n // 2 + 1)
    manifest = {"expected_value": -1.25, "feature_names": NAMES}
    (run / "manifest.json").write_text(json.dumps(manifest))
    return matrix


@pytest.mark.parametrize("cached", [False, True])
def test_run_shap_reads_rows_in_order(tmp_path: Path, cached: bool) -> None:
    """Row i of the stored matrix is row i of shap.parquet, in the manifest's feature order,
    memory-mapped from one cache file when a cache directory is given."""
    matrix = write_run(tmp_path / "run-1")
    cache = tmp_path / "cache" if cached else None
    shap = RunShap.open(tmp_path / "run-1", cache)
    assert shap.expected_value == -1.25 and shap.feature_names == tuple(NAMES)
    assert np.array_equal(shap.matrix, matrix)
    assert np.array_equal(shap.row(777), matrix[777].astype(np.float64))
    if cached:
        assert isinstance(shap.matrix, np.memmap)
        (file,) = cache.rglob("*.npy")
        assert file.parent == cache / "shap" / "run-1"
        built = file.stat().st_mtime_ns
        again = RunShap.open(tmp_path / "run-1", cache)  # reuses the file
        assert list(cache.rglob("*.npy")) == [file] and np.array_equal(again.matrix, matrix)
        assert file.stat().st_mtime_ns == built


def test_run_shap_refuses_an_incomplete_run(tmp_path: Path) -> None:
    """No SHAP file, or a manifest without the expected value, is a clear error."""
    write_run(tmp_path / "run-2")
    (tmp_path / "run-2" / "shap.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="shap.parquet"):
        RunShap.open(tmp_path / "run-2")
    write_run(tmp_path / "run-3")
    (tmp_path / "run-3" / "manifest.json").write_text(json.dumps({"feature_names": NAMES}))
    with pytest.raises(ValueError, match="expected_value"):
        RunShap.open(tmp_path / "run-3")

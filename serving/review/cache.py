"""What the reviewer pages precompute once per batch run, so a case page is a few reads.

A case page needs, besides the case's score (``serving.batch.lookup``) and SHAP row
(``serving.review.plots.RunShap``): the case's lead (names, date of birth, documents), its feature
values (to label every waterfall bar in plain language), and every linked source record of
its cluster. Reading those from ``features/*.parquet`` per request would scan files of
millions of rows, so the first worker to start on a run writes them, under a file lock, to
``<data-dir>/service/cache/pages/<run_id>/`` (one :class:`triage.runcache.RunCache` entry):

- ``leads.arrow``: one row per scored case, in ``scores.parquet`` row order (the order of
  ``ScoresLookup`` rows and of ``RunShap`` rows): case id, cluster id, lead fields, the
  admission and admit-until dates;
- ``values.npy``: float32 feature values, same rows, model feature order (memory-mapped);
- ``records.duckdb``: the linked records of the scored cases' clusters, sorted by cluster id
  (DuckDB's min/max zone maps then skip every row group but one on a point query);
- ``importance.npz``: mean |SHAP| per feature over the whole run, and a fixed random sample
  of rows for the beeswarm;
- ``stamp.json``: the fingerprint of the inputs (the entry is swapped in complete).

Workers memory-map the files; a restart or a second worker reuses them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from triage.paths import Paths, ScoresRun
from triage.runcache import RunCache, file_stamp, map_arrow, map_npy, write_arrow

__all__ = [
    "BEESWARM_SAMPLE",
    "CACHE_KIND",
    "PagesUnavailable",
    "RunFiles",
    "build_run_files",
    "open_run_files",
]

log = logging.getLogger(__name__)

CACHE_VERSION = "4"  # 3: leads carry admit_date and admit_until; 4: records their link evidence
CACHE_KIND = "pages"  # <cache_dir>/pages/<run_id>/ (triage.runcache)
BEESWARM_SAMPLE = 2_000  # rows drawn for the beeswarm: enough for its shape, fast to draw

# One row per scored case, in scores.parquet order. The backlog is the case management
# export (names and documents as the lead shows them): the reviewer compares linked records
# against it to spot a wrong link. It is world data, not truth.
LEADS_SQL = """
SELECT s.case_id,
       c.cluster_id,
       CAST(c.lead_date AS VARCHAR)    AS lead_date,
       CAST(c.scoring_date AS VARCHAR) AS scoring_date,
       CAST(c.admit_until AS VARCHAR)  AS admit_until,
       -- the admission date, back from the stay's length (features_admission.sql's stay_days)
       CAST(c.admit_until - CAST(c.stay_days AS INTEGER) AS VARCHAR) AS admit_date,
       b.family_name, b.given_name,
       CAST(b.birth_date AS VARCHAR)   AS birth_date,
       b.passport_number, b.i94_number
FROM read_parquet($scores, file_row_number = true) s
LEFT JOIN read_parquet($cases) c USING (case_id)
LEFT JOIN read_parquet($backlog) b USING (case_id)
ORDER BY s.file_row_number
"""

# Only the clusters of scored cases; sorted so that one cluster is one contiguous run.
RECORDS_SQL = """
CREATE TABLE records AS
SELECT l.cluster_id, l.system, l.record_id, l.link_method, l.link_confidence,
       l.event_date, l.family_name, l.given_name, l.birth_date, l.summary, l.identity_id,
       l.link_weight, l.link_agreement
FROM read_parquet($linked) l
WHERE l.cluster_id IN (
    SELECT c.cluster_id FROM read_parquet($cases) c
    WHERE c.case_id IN (SELECT s.case_id FROM read_parquet($scores) s)
)
ORDER BY l.cluster_id, l.system, l.event_date DESC NULLS LAST, l.record_id
"""


class PagesUnavailable(RuntimeError):
    """The inputs of the reviewer pages are missing or inconsistent."""


@dataclass(frozen=True)
class RunFiles:
    """The opened per-run files (see the module docstring)."""

    run_id: str
    directory: Path
    feature_names: tuple[str, ...]
    leads: pa.Table  # scores.parquet row order
    values: np.ndarray  # float32 [n_cases, n_features], memory-mapped
    mean_abs_shap: np.ndarray  # float64 [n_features]
    sample_rows: np.ndarray  # int64 rows for the beeswarm

    @property
    def records_db(self) -> Path:
        """The DuckDB file of linked records."""
        return self.directory / "records.duckdb"


def _stamp(paths: Paths, run: ScoresRun) -> dict[str, str]:
    files = {
        "scores": run.scores_file,
        "shap": run.shap_file,
        "cases": paths.cases_file,
        "linked": paths.linked_records_file,
        "backlog": paths.backlog_file,
    }
    stamp = {"version": CACHE_VERSION}
    for key, path in files.items():
        try:
            stamp[key] = file_stamp(path)
        except FileNotFoundError:
            raise PagesUnavailable(f"{path} is missing: the pages need it") from None
    return stamp


def _inputs(paths: Paths, run: ScoresRun) -> dict[str, str]:
    return {
        "scores": str(run.scores_file),
        "cases": str(paths.cases_file),
        "linked": str(paths.linked_records_file),
        "backlog": str(paths.backlog_file),
    }


def _write_leads(con: duckdb.DuckDBPyConnection, params: dict, target: Path) -> int:
    used = {k: params[k] for k in ("scores", "cases", "backlog")}  # DuckDB refuses extras
    table = con.sql(LEADS_SQL, params=used).to_arrow_table().combine_chunks()
    write_arrow(table, target)
    return table.num_rows


def _write_values(
    con: duckdb.DuckDBPyConnection, params: dict, names: Sequence[str], n: int, target: Path
) -> None:
    """Feature values in scores.parquet order, streamed into a float32 memmap."""
    cols = ", ".join(f'CAST(c."{name}" AS FLOAT) AS "{name}"' for name in names)
    sql = (
        f"SELECT {cols} FROM read_parquet($scores, file_row_number = true) s "
        "LEFT JOIN read_parquet($cases) c USING (case_id) ORDER BY s.file_row_number"
    )
    out = np.lib.format.open_memmap(target, "w+", np.float32, (n, len(names)))
    rel = con.sql(sql, params={"scores": params["scores"], "cases": params["cases"]})
    start = 0
    for batch in rel.to_arrow_reader(batch_size=65_536):
        rows = batch.num_rows
        for j in range(len(names)):
            col = batch.column(j).to_numpy(zero_copy_only=False)
            out[start : start + rows, j] = col
        start += rows
    out.flush()
    del out


def _write_importance(shap: np.ndarray, target: Path, seed: int = 7) -> None:
    mean_abs = np.zeros(shap.shape[1], dtype=np.float64)
    for lo in range(0, len(shap), 200_000):  # bounded memory on the full backlog
        mean_abs += np.abs(shap[lo : lo + 200_000]).sum(axis=0, dtype=np.float64)
    mean_abs /= max(len(shap), 1)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(shap), size=min(BEESWARM_SAMPLE, len(shap)), replace=False))
    np.savez(target, mean_abs_shap=mean_abs, sample_rows=sample.astype(np.int64))


def build_run_files(
    paths: Paths, run_id: str, feature_names: Sequence[str], shap: np.ndarray, target: Path
) -> None:
    """Write the per-run files of the pages into ``target`` (created if missing).

    Args:
        paths: the data directory's layout.
        run_id: the batch run (``scores/<run_id>``).
        feature_names: model feature order (``RunShap.feature_names``).
        shap: the run's SHAP matrix in scores.parquet order (``RunShap.matrix``).
        target: where to write; created.
    """
    params = _inputs(paths, paths.scores_run(run_id))
    target.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(target / "records.duckdb"))
    try:
        n = _write_leads(con, params, target / "leads.arrow")
        if n != len(shap):
            raise PagesUnavailable(f"{n} scored cases but {len(shap)} SHAP rows in run {run_id}")
        _write_values(con, params, feature_names, n, target / "values.npy")
        con.execute(RECORDS_SQL, {k: params[k] for k in ("linked", "cases", "scores")})
        con.execute("CHECKPOINT")
    except duckdb.Error as exc:
        raise PagesUnavailable(f"cannot build the pages' files for run {run_id}: {exc}") from None
    finally:
        con.close()
    _write_importance(shap, target / "importance.npz")


def open_run_files(
    paths: Paths,
    run_id: str,
    feature_names: Sequence[str],
    shap: np.ndarray,
    cache_dir: Path,
) -> RunFiles:
    """The pages' files of ``run_id``, built first if missing or stale.

    Several workers may start at once: one builds under a file lock while the others
    wait, then all map the same files. Files of other runs are removed.

    Raises:
        PagesUnavailable: an input is missing or does not match the run.
        OSError: the cache directory cannot be written.
    """
    stamp = _stamp(paths, paths.scores_run(run_id))
    stamp["features"] = ",".join(feature_names)

    def build(directory: Path) -> None:
        log.info("building the reviewer pages' files for run %s", run_id)
        build_run_files(paths, run_id, feature_names, shap, directory)

    target = RunCache(Path(cache_dir) / CACHE_KIND).get(run_id, stamp, build)
    importance = np.load(target / "importance.npz")
    return RunFiles(
        run_id=run_id,
        directory=target,
        feature_names=tuple(feature_names),
        leads=map_arrow(target / "leads.arrow"),
        values=map_npy(target / "values.npy"),
        mean_abs_shap=importance["mean_abs_shap"],
        sample_rows=importance["sample_rows"],
    )

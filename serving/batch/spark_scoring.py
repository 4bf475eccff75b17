"""``triage score --engine spark``: the same run as :mod:`serving.batch.runner`, scored on Spark.

The open cases are read as a Spark DataFrame, range-partitioned by case id and scored inside
``mapInArrow`` by the project's own :class:`~serving.batch.scoring.Scorer` (exact TreeSHAP,
calibration, reasons), so every partition is explained by exactly the code and state that
score on one machine. Arrow batches rather than ``mapInPandas``: pandas here is 3.x, which
pyspark 4 does not fully support, and only the feature columns ever become a pandas frame
(the one the Scorer takes).

The model reaches the workers as bytes (the bundle's ``model.txt`` and ``bundle.json``,
broadcast once) and is loaded once per Python worker, keyed by its digest: no worker talks to
MLflow. Ranks are global, computed after scoring with the DuckDB path's order (margin
descending, oldest lead first, then case id): a range sort, each row's place in its sorted
partition (``monotonically_increasing_id``) plus the rows of the partitions before it. No
step moves every row to one partition.

Spark writes its working files under ``scores/.partial-spark-<fingerprint>/``; the driver
then streams them, in case id order, into the run's single ``scores.parquet`` and
``shap.parquet`` (tiers by the bundle's own ``Tiers.assign``) and hands the run to
:func:`~serving.batch.runner.publish_run`, the DuckDB path's own index, manifest, contract
check, rename and ``LATEST`` move. A failure anywhere leaves the previous run ``LATEST``.
Unlike the DuckDB path a Spark run does not resume: it starts afresh (a Spark job is
retried by task, not by process).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import secrets
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from serving.batch.runner import (
    KEEP_RUNS,
    PASSTHROUGH,
    BatchResult,
    prune_runs,
    publish_run,
    remove_stale_partials,
    scores_lock,
)
from serving.batch.scoring import Scorer
from triage.atomic import atomic_file
from triage.model import ModelBundle
from triage.paths import Paths, ScoresRun

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["SHAP_PREFIX", "bundle_payload", "run_spark_batch", "score_batch", "scores_schema"]

log = logging.getLogger(__name__)

SHAP_PREFIX = "shap__"  # SHAP columns of the working files (feature names may be anything)
ROWS_PER_PARTITION = 100_000  # default split: 12 partitions for the full world's 1.2M
REASON = pa.struct(
    [("feature", pa.string()), ("value", pa.float64()), ("shap", pa.float64()), ("text", pa.string())]
)  # fmt: skip
RANK_ORDER = (("margin", "desc"), ("lead_date", "asc_nulls_last"), ("case_id", "asc"))


def scores_schema(passthrough: tuple[str, ...]) -> pa.Schema:
    """The schema of ``scores.parquet`` as the DuckDB path writes it (column order included)."""
    return pa.schema(
        [
            ("case_id", pa.string()), ("probability", pa.float64()),
            ("probability_low", pa.float64()), ("probability_high", pa.float64()),
            ("margin", pa.float64()), ("rank", pa.int64()), ("tier", pa.int8()),
            ("lead_date", pa.date32()), *[(c, pa.string()) for c in passthrough],
            ("reasons", pa.list_(pa.field("element", REASON))),
            ("model_version", pa.string()), ("run_id", pa.string()),
        ]
    )  # fmt: skip


def _scored_schema(passthrough: tuple[str, ...], features: list[str]) -> pa.Schema:
    """The working files' schema: one scored row, unranked, with its SHAP row beside it."""
    return pa.schema(
        [
            ("case_id", pa.string()), ("margin", pa.float64()), ("probability", pa.float64()),
            ("probability_low", pa.float64()), ("probability_high", pa.float64()),
            ("lead_date", pa.date32()), *[(c, pa.string()) for c in passthrough],
            ("reasons", pa.list_(pa.field("element", REASON))),
            *[(SHAP_PREFIX + f, pa.float32()) for f in features],
        ]
    )  # fmt: skip


def score_batch(
    scorer: Scorer, batch: pa.RecordBatch, passthrough: tuple[str, ...]
) -> pa.RecordBatch:
    """Score one Arrow batch of open cases: the columns of the DuckDB path's chunk files plus
    the SHAP row (``shap__<feature>``), in input order. Only the model features become pandas."""
    scored = scorer.score(batch.select(scorer.feature_names).to_pandas())
    n = batch.num_rows
    lead = (
        batch.column("lead_date").cast(pa.date32())
        if "lead_date" in batch.schema.names
        else pa.nulls(n, pa.date32())
    )
    arrays = [
        batch.column("case_id").cast(pa.string()),
        pa.array(scored.margin, pa.float64()),
        pa.array(scored.probability, pa.float64()),
        pa.array(scored.probability_low, pa.float64()),
        pa.array(scored.probability_high, pa.float64()),
        lead,
        *[batch.column(c).cast(pa.string()) for c in passthrough],
        scorer.reasons_arrow(scored),
        *[pa.array(scored.shap[:, j], pa.float32()) for j in range(len(scorer.feature_names))],
    ]
    schema = _scored_schema(passthrough, scorer.feature_names)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


# --- the model on the workers -------------------------------------------------------------
def bundle_payload(bundle: ModelBundle) -> dict[str, Any]:
    """The bundle as the bytes of its two files (what a worker needs), and their digest."""
    with tempfile.TemporaryDirectory(prefix="triage-bundle-") as tmp:
        bundle.save(tmp)
        files = {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir())}
    digest = hashlib.sha256(b"".join(k.encode() + v for k, v in files.items())).hexdigest()
    return {"digest": digest, "files": files}


_WORKER_SCORERS: dict[str, Scorer] = {}  # per Python worker: digest -> loaded Scorer


def _worker_scorer(
    payload: dict[str, Any], text: Callable[[str, float], str], threads: int
) -> Scorer:
    """The Scorer of this worker for ``payload``, loaded on its first task and kept (Spark
    reuses Python workers), so the SHAP engine compiles once per worker, not per partition."""
    scorer = _WORKER_SCORERS.get(payload["digest"])
    if scorer is None:
        with tempfile.TemporaryDirectory(prefix="triage-bundle-") as tmp:
            for name, data in payload["files"].items():
                (Path(tmp) / name).write_bytes(data)
            bundle = ModelBundle.load(tmp)  # the reader batch and service use: no MLflow
        scorer = _WORKER_SCORERS[payload["digest"]] = Scorer(bundle, text=text, n_threads=threads)
    return scorer


# --- the Spark job ----------------------------------------------------------------------------
def _default_partitions(spark: SparkSession, n_cases: int) -> int:
    return max(spark.sparkContext.defaultParallelism, math.ceil(n_cases / ROWS_PER_PARTITION))


def _sort_columns(order: tuple[tuple[str, str], ...]) -> list:
    from pyspark.sql import functions as F

    return [getattr(F.col(name), how)() for name, how in order]


def _score_on_spark(
    spark: SparkSession,
    cases: DataFrame,
    scorer: Scorer,
    passthrough: tuple[str, ...],
    partitions: int,
    threads: int,
    out: Path,
) -> None:
    """Score every row of ``cases`` inside ``mapInArrow``; write the working files to ``out``
    in case id order (file ``part-i`` holds range partition ``i``)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    broadcast = spark.sparkContext.broadcast(bundle_payload(scorer.bundle))
    text, features = scorer.text, scorer.feature_names

    def score_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        worker = _worker_scorer(broadcast.value, text, threads)
        for batch in batches:
            if batch.num_rows:
                yield score_batch(worker, batch, passthrough)

    schema = from_arrow_schema(_scored_schema(passthrough, features))
    try:
        with warnings.catch_warnings():
            # mapInArrow checks the pandas version although Arrow batches never meet pandas
            # on the Spark side ("PySpark does not yet fully support pandas >= 3.0.0").
            warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas")
            scored = cases.repartitionByRange(partitions, "case_id").sortWithinPartitions("case_id")
            scored = scored.mapInArrow(score_partition, schema)
        scored.write.mode("overwrite").parquet(str(out))
    finally:
        broadcast.destroy()


def _rank_on_spark(spark: SparkSession, scored: Path, partitions: int, work: Path) -> Path:
    """Global ranks, 1 = highest margin, ties FIFO (``RANK_ORDER``: runner.py's window order),
    written sorted by case id to ``work/ranks``; returns that folder."""
    from pyspark.sql import functions as F

    order = _sort_columns(RANK_ORDER)
    positioned = work / "positions"
    # Each row's place: its partition of the range sort and its position within it (the ids
    # monotonically_increasing_id gives rise by one per row, partition by partition). Written
    # out so that the counts below and the ranks read the very same positions.
    (
        spark.read.parquet(str(scored))
        .select("case_id", "margin", "lead_date")
        .repartitionByRange(partitions, *order)
        .sortWithinPartitions(*order)
        .select(
            "case_id",
            F.spark_partition_id().alias("part"),
            F.monotonically_increasing_id().alias("pos"),
        )
        .write.mode("overwrite")
        .parquet(str(positioned))
    )
    places = spark.read.parquet(str(positioned))
    counts = places.groupBy("part").agg(F.count("*").alias("n"), F.min("pos").alias("first"))
    offsets, before = [], 0
    for row in sorted(counts.collect(), key=lambda r: r["part"]):
        offsets.append((row["part"], before + 1 - row["first"]))  # rank = pos + offset
        before += row["n"]
    shifts = spark.createDataFrame(offsets, "part int, offset long")
    ranks = work / "ranks"
    (
        places.join(F.broadcast(shifts), "part")
        .select("case_id", (F.col("pos") + F.col("offset")).alias("rank"))
        .orderBy("case_id")
        .write.mode("overwrite")
        .parquet(str(ranks))
    )
    return ranks


def _parts(folder: Path) -> list[Path]:
    """Spark's part files of one write, in partition order (their names carry the index)."""
    return sorted(folder.glob("part-*.parquet"))


def _write_run(
    partial: ScoresRun,
    scored: Path,
    ranks: Path,
    scorer: Scorer,
    run_id: str,
    passthrough: tuple[str, ...],
) -> int:
    """Stream the working files into the run's ``scores.parquet`` and ``shap.parquet`` (case
    id order, the DuckDB path's schemas); returns the rows written.

    Raises:
        ValueError: the scored rows and the ranks do not name the same cases in the same order.
    """
    rank_table = pa.concat_tables(pq.read_table(f) for f in _parts(ranks))
    rank_ids, rank_values = rank_table["case_id"], rank_table["rank"].to_numpy()
    schema, features = scores_schema(passthrough), scorer.feature_names
    shap_schema = pa.schema([(f, pa.float32()) for f in features])
    done = 0
    with (
        atomic_file(partial.scores_file, suffix=".parquet") as scores_tmp,
        atomic_file(partial.shap_file, suffix=".parquet") as shap_tmp,
        pq.ParquetWriter(scores_tmp, schema, compression="zstd") as scores_out,
        pq.ParquetWriter(shap_tmp, shap_schema, compression="zstd") as shap_out,
    ):
        for part in _parts(scored):
            for batch in pq.ParquetFile(part).iter_batches(batch_size=65_536):
                n = batch.num_rows
                ids = batch.column("case_id")
                if not pc.all(pc.equal(ids, rank_ids.slice(done, n))).as_py():
                    raise ValueError(f"ranks and scores disagree on the cases near row {done}")
                rank = rank_values[done : done + n]
                columns = {
                    "case_id": ids,
                    **{c: batch.column(c) for c in ("probability", "probability_low")},
                    "probability_high": batch.column("probability_high"),
                    "margin": batch.column("margin"),
                    "rank": pa.array(rank, pa.int64()),
                    "tier": pa.array(scorer.bundle.tiers.assign(rank), pa.int8()),
                    **{c: batch.column(c) for c in ("lead_date", *passthrough, "reasons")},
                    "model_version": pa.array([scorer.model_version] * n, pa.string()),
                    "run_id": pa.array([run_id] * n, pa.string()),
                }
                scores_out.write_table(pa.table(columns).cast(schema))
                shap = [batch.column(SHAP_PREFIX + f) for f in features]
                shap_out.write_table(pa.Table.from_arrays(shap, schema=shap_schema))
                done += n
    if done != len(rank_values):
        raise ValueError(f"{len(rank_values):,} ranks for {done:,} scored cases")
    return done


def _fingerprint(model_version: str, cases_file: Path) -> str:
    st = cases_file.stat()
    key = f"spark|{model_version}|{cases_file.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def run_spark_batch(
    paths: Paths,
    scorer: Scorer,
    *,
    spark: SparkSession | None = None,
    partitions: int | None = None,
    threads: int = 1,
    keep_runs: int = KEEP_RUNS,
) -> BatchResult:
    """Score every open case of ``features/cases.parquet`` on Spark; same run as ``run_batch``.

    Args:
        paths: project layout.
        scorer: the loaded model; its bundle is shipped to the workers.
        spark: the session (default ``triage.spark.spark_session()``).
        partitions: range partitions of the cases (default one per 100,000 cases, at least
            the session's default parallelism).
        threads: SHAP threads per Spark task (Spark runs one task per core already).
        keep_runs: complete runs kept once the new one is ``LATEST`` (it included).

    Raises:
        FileNotFoundError: no feature table.
        FeatureMismatchError: the feature table lacks model features.
        ScoresBusy: another run holds the lock on ``scores/``.
        ContractError: the run breaks its contract (LATEST unmoved).
        SparkUnavailable: no pyspark or no Java.
    """
    if keep_runs < 1:
        raise ValueError("keep_runs must be at least 1 (the new run)")
    if partitions is not None and partitions < 1:
        raise ValueError("partitions must be a positive integer")
    t0 = time.perf_counter()
    if not paths.cases_file.exists():
        raise FileNotFoundError(
            f"no feature table at {paths.cases_file}; run `triage features` first"
        )
    if spark is None:
        from triage.spark import spark_session

        # In local mode the session makes the Python workers run this interpreter (the
        # project's environment); on a cluster, spark-submit's settings say which Python.
        spark = spark_session()
    from pyspark.sql import functions as F

    cases = spark.read.parquet(str(paths.cases_file)).where(F.col("is_open"))
    scorer.bundle.check_columns(cases.columns, allow_extra=True)
    passthrough = tuple(c for c in PASSTHROUGH if c in cases.columns)
    keep = ["case_id", *(["lead_date"] if "lead_date" in cases.columns else []), *passthrough]
    cases = cases.select(*keep, *[c for c in scorer.feature_names if c not in keep])
    n_cases = cases.count()
    if n_cases == 0:
        raise ValueError(f"{paths.cases_file} holds no open cases")
    partitions = partitions or _default_partitions(spark, n_cases)

    with scores_lock(paths):
        fp = _fingerprint(scorer.model_version, paths.cases_file)
        partial = paths.scores.partial(f"spark-{fp}")
        shutil.rmtree(partial.directory, ignore_errors=True)  # no resume: start afresh
        work = partial.directory / "spark"
        work.mkdir(parents=True)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        run_id = f"{stamp}-{fp[:8]}-{secrets.token_hex(3)}"
        log.info("scoring %d open cases on Spark in %d partitions", n_cases, partitions)
        steps = {"read_s": time.perf_counter() - t0}
        t = time.perf_counter()
        _score_on_spark(spark, cases, scorer, passthrough, partitions, threads, work / "scored")
        steps["score_s"], t = time.perf_counter() - t, time.perf_counter()
        ranks = _rank_on_spark(spark, work / "scored", partitions, work)
        steps["rank_s"], t = time.perf_counter() - t, time.perf_counter()
        written = _write_run(partial, work / "scored", ranks, scorer, run_id, passthrough)
        steps["write_s"] = time.perf_counter() - t
        if written != n_cases:
            raise ValueError(f"Spark scored {written:,} of {n_cases:,} open cases")
        log.info("Spark steps: %s", ", ".join(f"{k} {v:.1f}" for k, v in steps.items()))
        engine = {
            "name": "spark",
            "spark_version": spark.version,
            "master": spark.sparkContext.master,
            "partitions": _count_parts(work / "scored"),
            "steps_s": {k: round(v, 2) for k, v in steps.items()},
        }
        final = paths.scores_run(run_id)
        publish_run(
            paths, partial, final, n_cases=n_cases, scorer=scorer, engine=engine,
            discard=lambda: shutil.rmtree(work),
        )  # fmt: skip
        remove_stale_partials(paths)
        prune_runs(paths, keep_runs)
    return BatchResult(run_id, final.directory, n_cases, 0, time.perf_counter() - t0)


def _count_parts(folder: Path) -> int:
    """How many partitions were scored (each writes its own part file, empty ones none)."""
    return len(_parts(folder))

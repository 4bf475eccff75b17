"""The linkage stage: strong keys, identities, the probabilistic step, clusters, output."""

from __future__ import annotations

import logging

import duckdb
import numpy as np

from features.engine import check_engine, spark_connection
from features.ingest import update_manifest
from features.linkage.clusters import final_links
from features.linkage.config import LinkageConfig
from features.linkage.evidence import link_evidence
from features.linkage.identities import final_identities, identity_groups, record_identities
from features.linkage.keys import guarded_rows, keys_sql, strong_clusters
from features.linkage.model import ModelNotLearned, estimation_method, save_model, train_model
from features.linkage.predict import decide_links, score_pairs
from features.linkage.report import LinkageResult, Stopwatch, summarize
from features.linkage.reps import build_reps, build_training, record_attributes, record_extras
from features.linkage.splits import (
    ReviewerSplit,
    apply_splits,
    locate_splits,
    read_splits,
    split_keys,
)
from features.linkage.sql import fetch, lit, record_count, record_offsets
from features.linkage.write import write_linked_records
from features.registry import Registry, world_registry
from triage.paths import Paths

__all__ = ["EM_WARNING", "NOT_LEARNED", "run_linkage"]

log = logging.getLogger("features.linkage")

EM_WARNING = (
    "too few strong-key clusters to learn the comparison model from labels: m probabilities "
    "estimated by EM (unsupervised) and u by random sampling; check the links before use"
)
NOT_LEARNED = (
    "no probabilistic links were made: records are linked on strong identifiers only, and "
    "records without one are singletons"
)


def _warn(message: str) -> str:
    log.warning("LINKAGE WARNING: %s", message)
    return message


def _connect(cfg: LinkageConfig, paths: Paths, engine: str = "duckdb") -> duckdb.DuckDBPyConnection:
    if check_engine(engine) == "spark":
        return spark_connection(paths, "linkage")
    con = duckdb.connect(cfg.database)
    con.execute(f"SET memory_limit = '{cfg.memory_limit}'")
    con.execute(f"SET temp_directory = {lit(str(paths.features_dir / '.spill'))}")
    con.execute("SET enable_progress_bar = false")
    return con


def run_linkage(
    paths: Paths,
    cfg: LinkageConfig = LinkageConfig(),
    registry: Registry | None = None,
    splits: list[ReviewerSplit] | None = None,
    engine: str = "duckdb",
) -> LinkageResult:
    """Link every clean record to a person cluster; write ``features/linked_records.parquet``.

    Needs ``features.ingest.ingest`` to have written the clean tables. Also writes the
    trained model (``features/linkage_model.json``: the m and u values of every
    comparison level, so any link's match weight can be explained) and a ``linkage``
    section in ``features/manifest.json``.

    Args:
        paths: project layout.
        cfg: linkage settings.
        registry: the declared systems (the world's 27 by default): which clean tables
            to read, the columns of each role and the identifier types.
        splits: reviewers' wrong links to honour (``features.linkage.splits``; None: read
            from ``paths``' dispositions store and published run, before anything is written).
        engine: ``duckdb`` or ``spark``: the linkage SQL on Spark SQL and Splink's Spark
            backend (``features.engine``, ``features.linkage.backend``). The graph steps
            (connected components, identity groups, the decision's guard) run on the driver
            in numpy either way, over a dozen per-record arrays (about 100 bytes a record):
            at cluster scale that is the driver's memory, not the executors'.

    Returns:
        Counts, comparisons made and timings.
    """
    clock = Stopwatch()
    registry = registry or world_registry()
    if splits is None:
        splits = read_splits(paths)
    con = _connect(cfg, paths, engine)
    n_pairs = 0
    method, warnings = "none", []
    try:
        offsets = record_offsets(paths, tuple(registry.systems))
        n = record_count(paths, offsets)
        keys = fetch(con, keys_sql(paths, offsets, registry))
        strong_id, strong_key = strong_clusters(n, keys)
        located, gone = locate_splits(con, paths, offsets, splits)
        keep_keys = split_keys(keys, strong_id, located)
        if keep_keys is not None:  # a split record shares an identifier with its case
            keys = {name: values[keep_keys] for name, values in keys.items()}
            strong_id, strong_key = strong_clusters(n, keys)
        # The attributes read the travel documents' last four characters from ``keys``;
        # after them only the guarded identifiers are needed (the merge guard), so the
        # driver holds those alone: about a quarter of the key rows, in narrow types.
        attrs = (
            record_attributes(con, paths, offsets, n, keys, registry) if cfg.probabilistic else {}
        )
        keys = guarded_rows(keys, registry.guarded)
        clock.lap("strong")

        named, h = record_identities(con, paths, offsets, n, registry)
        rec = np.flatnonzero(named)
        ident, cid = identity_groups(con, strong_id[rec], h[rec], np.ones(rec.size, np.int64))
        clock.lap("identities")

        merges = np.zeros((0, 3))
        model, pairs = None, ""
        if cfg.probabilistic:
            extras = record_extras(con, paths, offsets, registry)
            build_reps(con, strong_id, named, ident, cid, attrs, extras)
            build_training(
                con, strong_id, named, h[rec], ident, attrs, cfg.training_clusters, extras
            )
            del attrs  # 14 bytes a record, not needed past the representatives
            clock.lap("representatives")
            method = estimation_method(con, cfg)
            if method == "em":
                warnings.append(_warn(EM_WARNING))
                try:
                    model = train_model(con, cfg, method)
                except ModelNotLearned as exc:
                    warnings.append(_warn(f"{exc}: {NOT_LEARNED}"))
                    method = "none"
            else:
                model = train_model(con, cfg, method)
            clock.lap("train")
            if model is not None:
                save_model(paths, model)
                pairs, n_pairs = score_pairs(con, model, threshold=min(cfg.threshold, 0.5))
                clock.lap("score")
                typos = tuple(registry.key_names.index(k) for k in registry.compared)
                merges = decide_links(
                    con,
                    pairs,
                    cfg.threshold,
                    strong_id,
                    keys,
                    cfg.weak_share,
                    registry.guarded,
                    typos,
                )
                merges = apply_splits(merges, strong_id, located)
                clock.lap("decide")
        links = final_links(n, strong_id, strong_key, merges)
        if model is not None:
            links.update(
                link_evidence(
                    con, pairs, merges, model, strong_id, links["method"], (rec, ident, h, cid)
                )
            )
            clock.lap("evidence")
        links["identity_id"], links["alias_count"] = final_identities(con, links, named, ident, cid)
        clock.lap("clusters")
        # The write needs the links alone: the working arrays go first (the strong clusters,
        # identities, guarded keys: about 45 bytes a record, gigabytes at tens of millions).
        del strong_id, strong_key, keys, named, h, rec, ident, cid
        written = write_linked_records(con, paths, offsets, links, registry)
        if written != n:
            raise RuntimeError(f"wrote {written} linked records for {n} clean records")
        clock.lap("write")
    finally:
        con.close()
    result = summarize(
        paths.linked_records_file, links, n_pairs, merges, clock.total(), registry.link_methods
    )
    result.estimation, result.warnings = method, warnings
    result.reviewer_splits = {"honoured": len(located), "record_gone": gone}
    update_manifest(paths, linkage=result.as_dict())
    return result

"""Write a whole world: 27 extracts, the open backlog, the truth folder and a manifest.

Persons are generated in fixed-size chunks, each with its own seed spawned from the
world seed, so memory stays flat at full scale and the same seed and scale give
the same files byte for byte. Output goes to a temporary directory that replaces
the world only when complete.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.world.config import WorldConfig
from features.world.formats import SYSTEM_CODES, apply_spec, to_arrow
from features.world.leads import make_leads
from features.world.names import build_pools
from features.world.people import fmt_ids, make_chunk
from features.world.records import SYSTEM_BUILDERS, _benefits, _encounters, trips
from triage.atomic import atomic_dir
from triage.checksum import sha256_file
from triage.paths import SYSTEMS, Paths

__all__ = ["generate_world"]

log = logging.getLogger(__name__)


class _Writers:
    """One Parquet writer per output file, opened lazily with the first chunk's schema."""

    def __init__(self, root: Path):
        self.root = root
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.rows: dict[str, int] = {}

    def write(self, rel: str, table: pa.Table) -> None:
        if rel not in self.writers:
            path = self.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writers[rel] = pq.ParquetWriter(path, table.schema, compression="zstd")
            self.rows[rel] = 0
        self.writers[rel].write_table(table.cast(self.writers[rel].schema), row_group_size=256_000)
        self.rows[rel] += table.num_rows

    def close(self) -> None:
        for w in self.writers.values():
            w.close()


def _chunk_tables(
    cfg: WorldConfig, start: int, n: int, seed: np.random.SeedSequence
) -> tuple[dict[str, pa.Table], dict]:
    """Generate one chunk: per-system tables (with ``_person``), backlog, truth cases, fault counts.

    Runs in a worker process; everything it needs comes in its arguments, so the result
    depends only on (cfg, start, n, seed) and chunks can be made in any order.
    """
    rng = np.random.default_rng(seed)
    chunk = make_chunk(cfg, _pools(), rng, start, n)
    t = trips(chunk, rng)
    t["benefits"] = _benefits(chunk, rng)
    t["encounters"] = _encounters(chunk, rng)
    leads = make_leads(cfg, chunk, t, rng)
    tables: dict[str, pa.Table] = {}
    counts: dict[str, dict[str, int]] = {}
    for system in SYSTEMS:
        raw = (
            leads["prior_leads"]
            if system == "prior_leads"
            else SYSTEM_BUILDERS[system](chunk, t, rng)
        )
        if isinstance(raw, pd.DataFrame):
            raw = {k: raw[k].to_numpy() for k in raw.columns}
        cols, counts[system] = apply_spec(system, raw, cfg.faults, rng)
        tables[system] = to_arrow(cols)
    tables["backlog"] = to_arrow(leads["backlog"].drop(columns="_person"))
    tables["truth_cases"] = to_arrow(leads["truth_cases"])
    return tables, counts


_POOLS = None


def _pools():
    global _POOLS  # one build per process: pools are the same for every chunk and world
    if _POOLS is None:
        _POOLS = build_pools()
    return _POOLS


def _emit(writers: _Writers, system: str, table: pa.Table, counter: dict[str, int]) -> pa.Table:
    """Give rows their record ids (global, in chunk order), write the extract, return truth rows."""
    start = counter.get(system, 0)
    n = table.num_rows
    record_id = pa.array(
        fmt_ids(f"{SYSTEM_CODES[system]}-", np.arange(start + 1, start + n + 1), 9),
        type=pa.string(),
    )
    counter[system] = start + n
    person = table.column("_person")
    table = table.drop_columns(["_person"])
    writers.write(f"extracts/{system}.parquet", table.add_column(0, "record_id", record_id))
    return pa.table(
        {
            "system": pa.array([system] * n, type=pa.string()),
            "record_id": record_id,
            "person_id": person.cast(pa.int64()),
        }
    )


def _chunks_in_order(
    cfg: WorldConfig, plan: list[tuple[int, int, np.random.SeedSequence]], workers: int
) -> Iterator:
    """Yield chunk results in plan order, computing up to ``workers`` of them in parallel."""
    if workers <= 1 or len(plan) <= 1:
        for start, n, seed in plan:
            yield _chunk_tables(cfg, start, n, seed)
        return
    # spawn, not fork: the parent runs a progress-bar thread, and forking threads is unsafe.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        pending: deque = deque()
        todo = iter(plan)
        for item in todo:  # keep at most workers + 1 chunks in flight to bound memory
            pending.append(pool.submit(_chunk_tables, cfg, *item))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def generate_world(
    cfg: WorldConfig,
    paths: Paths,
    *,
    force: bool = False,
    on_chunk=None,
    workers: int | None = None,
) -> dict:
    """Generate the world described by ``cfg`` into ``paths.world_dir``.

    Args:
        cfg: rates, scale and seed.
        paths: project layout; the world goes to ``paths.world_dir``.
        force: replace an existing world (otherwise FileExistsError).
        on_chunk: optional callback ``(done_persons, total_persons)`` for progress.
        workers: processes generating chunks (default: up to 2, the cores here). The
            output does not depend on it.

    Returns:
        The manifest written to ``world/manifest.json``.
    """
    if paths.world_dir.exists() and not force:
        raise FileExistsError(
            f"a world already exists at {paths.world_dir} (use --force to replace it)"
        )
    t0 = time.perf_counter()
    scale = cfg.scale
    n_prior = round(
        cfg.p_prior_lead * scale.open_cases * 0.55
    )  # ~share of prior leads among open persons with earlier trips
    total = scale.open_cases + max(scale.historical_cases - n_prior, 0)
    starts = list(range(0, total, scale.chunk_persons))
    seeds = np.random.SeedSequence([cfg.seed, 0x7219]).spawn(len(starts))
    plan = [
        (s, min(scale.chunk_persons, total - s), seed)
        for s, seed in zip(starts, seeds, strict=True)
    ]
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    fault_counts: dict[str, dict[str, int]] = {}
    counter: dict[str, int] = {}

    with atomic_dir(paths.world_dir, replace=True) as tmp:
        writers = _Writers(tmp)
        try:
            for (start, n, _), (tables, counts) in zip(
                plan, _chunks_in_order(cfg, plan, workers), strict=True
            ):
                truth_parts = []
                for system in SYSTEMS:
                    acc = fault_counts.setdefault(system, {})
                    for k, v in counts[system].items():
                        acc[k] = acc.get(k, 0) + v
                    truth_parts.append(_emit(writers, system, tables[system], counter))
                writers.write("truth/record_person.parquet", pa.concat_tables(truth_parts))
                writers.write("backlog.parquet", tables["backlog"])
                writers.write("truth/cases.parquet", tables["truth_cases"])
                if on_chunk:
                    on_chunk(start + n, total)
        finally:
            writers.close()
        files = sorted(p for p in tmp.rglob("*.parquet"))
        manifest = {
            "seed": cfg.seed,
            "scale": scale.name,
            "snapshot_date": cfg.snapshot_date.isoformat(),
            "persons": total,
            "open_cases": writers.rows["backlog.parquet"],
            "systems": {s: writers.rows.get(f"extracts/{s}.parquet", 0) for s in SYSTEMS},
            "faults": fault_counts,
            "checksums": {str(p.relative_to(tmp)): sha256_file(p) for p in files},
            "config": cfg.to_dict(),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    log.info("world written to %s in %.1fs", paths.world_dir, time.perf_counter() - t0)
    return manifest

"""What the linkage step reports: counts, comparisons and timings (``LinkageResult``)."""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

from features.linkage.config import LINK_METHODS

__all__ = ["LinkageResult", "Stopwatch", "summarize"]

log = logging.getLogger("features.linkage")


@dataclass
class LinkageResult:
    """What ``run_linkage`` produced.

    Attributes:
        path: the written ``features/linked_records.parquet``.
        records: rows written (every valid source record).
        clusters: distinct clusters.
        by_method: records per ``link_method``.
        comparisons: pairs of representatives scored by the probabilistic step.
        merges: strong clusters joined by a probabilistic link.
        seconds: wall time per step.
        estimation: how the comparison model was estimated: ``labels`` (m from strong-key
            clusters), ``em`` (m by expectation maximisation: no or few shared
            identifiers), ``none`` (strong keys only, or no model could be learnt).
        warnings: what the reader of the report must know (a model learnt without labels,
            or not learnt at all).
        reviewer_splits: reviewers' wrong links honoured (``honoured``: the record kept
            out of the case's person) and those that could not be applied because the
            record or the case is gone from this run (``record_gone``).
    """

    path: Path
    records: int
    clusters: int
    by_method: dict[str, int]
    comparisons: int = 0
    merges: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    estimation: str = "none"
    warnings: list[str] = field(default_factory=list)
    reviewer_splits: dict[str, int] = field(
        default_factory=lambda: {"honoured": 0, "record_gone": 0}
    )

    def as_dict(self) -> dict:
        """The result as the manifest's ``linkage`` section (seconds rounded)."""
        return {
            "records": self.records,
            "clusters": self.clusters,
            "by_method": self.by_method,
            "comparisons": self.comparisons,
            "merges": self.merges,
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
            "estimation": self.estimation,
            "warnings": self.warnings,
            "reviewer_splits": self.reviewer_splits,
        }


class Stopwatch:
    """Wall time per step (logged with the step's CPU time), and in total."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.start = self._since = time.perf_counter()
        self._cpu = time.process_time()

    def lap(self, name: str) -> None:
        """Record the time since the previous lap (or the start) as step ``name``."""
        now, now_cpu = time.perf_counter(), time.process_time()
        self.seconds[name] = now - self._since
        log.info(
            "linkage %s: %.1fs (cpu %.1fs; this process %.2f GB, its peak so far %.2f GB)",
            name,
            self.seconds[name],
            now_cpu - self._cpu,
            psutil.Process().memory_info().rss / 2**30,
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,  # KiB on Linux
        )
        self._since, self._cpu = now, now_cpu

    def total(self) -> dict[str, float]:
        """The steps' seconds with ``total`` (since the start) added."""
        self.seconds["total"] = time.perf_counter() - self.start
        return self.seconds


def summarize(
    path: Path,
    links: dict[str, np.ndarray],
    comparisons: int,
    merges: np.ndarray,
    seconds: dict[str, float],
    methods: tuple[str, ...] = LINK_METHODS,
) -> LinkageResult:
    """Count records, clusters and records per link method of the final ``links``."""
    n = links["cluster_id"].size
    counts = np.bincount(links["method"], minlength=len(methods))
    return LinkageResult(
        path=path,
        records=n,
        clusters=int(np.count_nonzero(links["cluster_id"] == np.arange(n))),
        by_method={m: int(c) for m, c in zip(methods, counts, strict=True) if c},
        comparisons=comparisons,
        merges=len(merges),
        seconds=seconds,
    )

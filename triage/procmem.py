"""Run a child process and measure its wall time and the peak memory of its whole process tree.

The benchmarks (``features.bench``, ``serving.bench.spark``) time stages as child processes, the
way a user runs them. Peak memory is the sampled sum of resident memory of the child and all its
descendants (a Spark run's JVM, DuckDB's threads are in-process), and the largest single
descendant's own peak from ``RUSAGE_CHILDREN``; the report takes the larger. Sampling every
0.2 s can miss a spike shorter than that: the figure is a lower bound of the true peak.
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psutil

__all__ = ["GB", "Measured", "TreeSampler", "run_measured"]

GB = 1024**3


class TreeSampler(threading.Thread):
    """Samples the summed resident memory of a process and all its descendants."""

    def __init__(self, pid: int, every_s: float = 0.2):
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.every_s = every_s
        self.peak = 0
        self.peak_at_s = 0.0  # seconds from the start of sampling to the peak
        self.stop = threading.Event()

    def run(self) -> None:
        """Sample until :attr:`stop` is set or the process is gone."""
        t0 = time.perf_counter()
        while not self.stop.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                rss = 0
                for p in procs:
                    with contextlib.suppress(psutil.Error):  # a child may exit mid-sample
                        rss += p.memory_info().rss
                if rss > self.peak:
                    self.peak, self.peak_at_s = rss, time.perf_counter() - t0
            except psutil.Error:
                return
            self.stop.wait(self.every_s)


@dataclass(frozen=True)
class Measured:
    """One measured child run."""

    returncode: int
    wall_s: float
    peak_bytes: int  # max(sampled tree sum, largest child's own peak)
    peak_at_s: float
    largest_child_bytes: int

    @property
    def peak_gb(self) -> float:
        return round(self.peak_bytes / GB, 2)


def run_measured(cmd: Sequence[str], env: Mapping[str, str] | None = None) -> Measured:
    """Run ``cmd`` to completion (output goes to this process's stdout/stderr) and measure it.

    ``RUSAGE_CHILDREN`` is cumulative over every child this process has waited for, so the
    largest-child figure is the largest of all runs so far: run one measured command per process
    when that matters, or read the sampled tree figure.
    """
    t0 = time.perf_counter()
    child = subprocess.Popen(list(cmd), env=None if env is None else {**os.environ, **env})
    sampler = TreeSampler(child.pid)
    sampler.start()
    code = child.wait()
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    return Measured(code, wall, max(sampler.peak, child_peak), sampler.peak_at_s, child_peak)

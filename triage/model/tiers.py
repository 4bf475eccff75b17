"""Priority tiers: cumulative rank cut-offs that cut the ranked backlog into work queues."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from triage.model.errors import BundleError

__all__ = ["DEFAULT_TIER_CUTOFFS", "Tiers"]

# Tier k holds ranks (cutoffs[k-2], cutoffs[k-1]]; the last tier holds every rank after the last
# cut-off. Tier 1 is the top 10,000: the investigations opened in a year, the capacity a ranking is
# judged on. Tier 2 is the next 40,000 (ranks to 50,000), tier 3 the next 150,000 (to 200,000).
DEFAULT_TIER_CUTOFFS: tuple[int, ...] = (10_000, 50_000, 200_000)


@dataclass(frozen=True)
class Tiers:
    """Priority tiers as cumulative rank cut-offs (rank 1 = highest risk)."""

    cutoffs: tuple[int, ...] = DEFAULT_TIER_CUTOFFS

    def __post_init__(self) -> None:
        cutoffs = tuple(int(c) for c in self.cutoffs)
        if not cutoffs or cutoffs[0] < 1 or np.any(np.diff(cutoffs) <= 0):
            raise BundleError(f"tier cutoffs must be positive and strictly increasing: {cutoffs}")
        object.__setattr__(self, "cutoffs", cutoffs)

    @property
    def n_tiers(self) -> int:
        return len(self.cutoffs) + 1

    def assign(self, ranks: np.ndarray) -> np.ndarray:
        """Return the tier (1..n_tiers, int8) of each 1-based rank."""
        ranks = np.asarray(ranks)
        if ranks.size and ranks.min() < 1:
            raise ValueError("ranks are 1-based")
        return (np.searchsorted(np.asarray(self.cutoffs), ranks, side="left") + 1).astype(np.int8)

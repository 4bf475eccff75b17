"""The knobs of the linkage step and the link methods it records."""

from __future__ import annotations

from dataclasses import dataclass

from features.schemas import KEYS

__all__ = ["LINK_METHODS", "LinkageConfig"]

# ``link_method`` codes: 0 singleton, 1 probabilistic, 2 + index in KEYS for a strong key.
LINK_METHODS = ("singleton", "probabilistic", *(f"strong:{k}" for k in KEYS))


@dataclass(frozen=True)
class LinkageConfig:
    """Knobs of the linkage step.

    Attributes:
        probabilistic: run the probabilistic step (strong keys only when False).
        threshold: minimum match probability for a probabilistic link.
        weak_share: a cluster without a date of birth (a tip) joins its likeliest
            person only if that person holds this share of its match probability.
        training_clusters: strong clusters sampled to estimate m values.
        min_label_clusters: fewer strong clusters with several named records than this
            (data without shared identifiers) and m is estimated by EM instead, with a
            warning in the log and the linkage report.
        u_pairs: pairs that estimate u values: every pair of a sample of representatives
            just small enough to have at most this many, the same on every engine
            (``model._estimate_u``).
        seed: seed Splink is given for the u estimation (it samples nothing more: the
            sample is drawn before, by a portable hash of the representative's id).
        memory_limit: DuckDB memory limit for the linkage connection.
        database: DuckDB database of the working tables (in memory by default; a
            file keeps them for inspection after the run).
    """

    probabilistic: bool = True
    threshold: float = 0.9
    weak_share: float = 0.5
    training_clusters: int = 20_000
    min_label_clusters: int = 200
    u_pairs: float = 1.5e6
    seed: int = 7
    memory_limit: str = "5GB"
    database: str = ":memory:"

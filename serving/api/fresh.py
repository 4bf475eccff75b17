"""Fresh scores: a case's features scored now, ranked among the served batch run.

Plain functions and a small frozen class, tested without a server: :func:`load_scorer`
loads the champion once per worker; :class:`FreshModel` scores with the batch code path
(``serving.batch.scoring.Scorer``) and places each margin in the batch run's order.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from features import catalog
from serving.api.schemas import FEATURE_NAMES, FreshCase, FreshScore, Reason
from serving.batch.lookup import ScoresLookup
from triage.paths import Paths

if TYPE_CHECKING:  # imported where used: mlflow, LightGBM and numba take seconds to import
    from serving.batch.scoring import Scorer

__all__ = ["FreshModel", "feature_frame", "load_scorer", "warn_if_models_differ"]

log = logging.getLogger("triage.service")
_NO_DATE = np.iinfo(np.int32).max  # a missing lead date sorts last among equal margins
_feature_values = operator.attrgetter(*FEATURE_NAMES)


def feature_frame(cases: Sequence[FreshCase]) -> pd.DataFrame:
    """The cases' features as the scorer's input: one float64 row per case, catalog order."""
    X = np.array([_feature_values(c.features) for c in cases], dtype=np.float64)
    return pd.DataFrame(X.reshape(len(cases), -1), columns=FEATURE_NAMES)


def load_scorer(paths: Paths) -> Scorer:
    """The champion model's :class:`Scorer`, warmed up.

    Raises:
        triage.model.BundleError: no champion, or it needs features the API does not take.
    """
    from serving.batch.scoring import Scorer
    from triage.model import BundleError, load_champion

    bundle = load_champion(paths)
    unknown = sorted(set(bundle.feature_names) - set(FEATURE_NAMES))
    if unknown:
        raise BundleError(f"the model needs features the API does not take: {unknown}")
    # One scoring thread per worker: workers x threads must not oversubscribe the cores.
    # catalog.reason is the batch stage's reason renderer too (a test compares them).
    scorer = Scorer(bundle, text=catalog.reason, n_threads=1)
    zeros = pd.DataFrame(np.zeros((1, len(FEATURE_NAMES))), columns=FEATURE_NAMES)
    scorer.score(zeros)  # loads the compiled kernels now, not in the first request
    return scorer


def warn_if_models_differ(scorer: Scorer, scores: ScoresLookup) -> None:
    """Log a warning when the champion is not the model that scored the batch run."""
    batch_version = scores.table["model_version"][0].as_py()
    if batch_version != scorer.model_version:
        log.warning(
            "champion %s differs from the batch run's model %s: fresh ranks "
            "compare margins of two models until `triage score` runs again",
            scorer.model_version,
            batch_version,
        )


@dataclass(frozen=True)
class FreshModel:
    """The champion's :class:`Scorer` and the batch run a fresh margin is ranked in.

    ``triage score`` ranks by margin, equal margins by lead date (oldest first, none last),
    then case id; :meth:`ranks` does the same (a case the batch run holds keeps its batch lead
    date; an unknown one counts as the newest lead), so a case scored fresh with its batch
    features gets its batch rank exactly.
    """

    scorer: Scorer
    run_id: str
    neg_margin: np.ndarray  # -margin in rank order: non-decreasing, for searchsorted
    ids_by_rank: np.ndarray  # case ids (fixed-width bytes) in rank order
    lead_by_rank: np.ndarray  # lead date as days since 1970 in rank order (no date: max int)
    keys: np.ndarray  # the run's case ids, sorted (fixed-width bytes)
    lead_by_key: np.ndarray  # lead day of each of ``keys``

    @classmethod
    def build(cls, scorer: Scorer, scores: ScoresLookup) -> FreshModel:
        """Index ``scores`` (the served batch run) for ranking."""
        margin = scores.table["margin"].combine_chunks().to_numpy()
        ids = np.empty(len(scores.keys), dtype=scores.keys.dtype)
        ids[scores.key_rows] = scores.keys
        days = scores.table["lead_date"].combine_chunks().cast(pa.int32()).fill_null(_NO_DATE)
        lead = days.to_numpy(zero_copy_only=False).astype(np.int64)
        return cls(
            scorer,
            scores.run_id,
            -margin[scores.by_rank],
            ids[scores.by_rank],
            lead[scores.by_rank],
            scores.keys,
            lead[scores.key_rows],
        )

    def _lead_day(self, key: bytes) -> int:
        """The batch run's lead day of a case id; an id it does not hold counts as newest."""
        j = int(np.searchsorted(self.keys, key))
        if j < len(self.keys) and self.keys[j] == key:
            return int(self.lead_by_key[j])
        return _NO_DATE

    def ranks(self, margins: np.ndarray, case_ids: Sequence[str]) -> np.ndarray:
        """The rank each (margin, case id) would take in the batch run."""
        lo = np.searchsorted(self.neg_margin, -margins, side="left")
        hi = np.searchsorted(self.neg_margin, -margins, side="right")
        ranks = lo + 1
        for i in np.flatnonzero(hi > lo):  # equal margins: oldest lead first, then case id
            tied, key = self.ids_by_rank[lo[i] : hi[i]], case_ids[i].encode()
            tied_lead = self.lead_by_rank[lo[i] : hi[i]]
            lead = self._lead_day(key)
            before = (tied_lead < lead) | ((tied_lead == lead) & (tied < key))
            ranks[i] += int(before.sum())
        return ranks

    def score(self, cases: Sequence[FreshCase]) -> list[FreshScore]:
        """Score ``cases`` with the batch code path (:meth:`Scorer.score`, reasons included)."""
        ids = [c.case_id for c in cases]
        scored = self.scorer.score(feature_frame(cases))
        reasons = self.scorer.reasons_arrow(scored).to_pylist()
        ranks = self.ranks(scored.margin, ids)
        tiers = self.scorer.bundle.tiers.assign(ranks)
        version = self.scorer.model_version
        return [
            FreshScore(
                case_id=ids[i],
                probability=float(scored.probability[i]),
                probability_low=float(scored.probability_low[i]),
                probability_high=float(scored.probability_high[i]),
                margin=float(scored.margin[i]),
                rank=int(ranks[i]),
                tier=int(tiers[i]),
                reasons=[Reason(**r) for r in reasons[i]],
                model_version=version,
                run_id=self.run_id,
            )
            for i in range(len(ids))
        ]

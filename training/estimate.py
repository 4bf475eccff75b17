"""How many concern cases are left in the backlog: an unbiased estimate from the random share.

The greedy top of a worklist says nothing about the cases below it; the random share does,
because each of its cases was drawn with a known probability ``pi_i`` (Poisson sampling
proportional to a floor plus the score, ``serving/batch/worklist.py``, which stores every frame
case's probability in ``frame.parquet``). The Horvitz-Thompson estimator weighs each drawn case
by ``1 / pi_i``:

    T_hat = sum_{i drawn} y_i / pi_i          (unbiased for the concerns among the cases
                                                sampled from, whatever the pi_i are)
    v_hat = sum_{i drawn} y_i^2 (1 - pi_i) / pi_i^2  (unbiased for its variance: Poisson
                                                sampling draws each case on its own)

Concern is rare (about 0.15% of a full-world backlog) and the random share small (250 of
1.2 million cases a period), so one period's draw holds a handful of concerns at best: its
relative standard error is about 1 whatever the floor (on the full world's period-0 scores the
model-expected standard error ``sqrt(sum p (1 - pi) / pi)`` is 0.94 of the count at the default
floor, the mean score, 0.88 at the best allocation ``pi ~ sqrt(p)``, 1.26 uniform). Two things
make the figure usable:

- **pooling the periods.** Period ``t`` drew from its frame ``F_t``; the cases of ``F_t``
  worked since (its own draw, later greedy tops and draws, dispositions) have recorded labels,
  so ``L_t = T_hat_t - (concerns recorded among F_t's worked cases)`` estimates the concerns
  left in ``F_t`` now, with the error of ``T_hat_t`` alone. While no new case has joined the
  backlog since ``t`` (every case left now was in ``F_t``), every ``L_t`` estimates the same
  count, and their plain mean over those periods is unbiased: each period's error has mean
  zero given everything before its draw (the probabilities are set before it), so the errors
  are uncorrelated and the variance is ``sum v_hat_t / K^2``. The weights are equal on
  purpose: weights from estimated variances would be tied to the outcomes (a draw with no
  concern has variance 0) and biased. A period whose frame misses a case left now (new
  leads) ends the pooling there;
- **an interval built for rare events.** A normal interval ``T_hat +- 1.96 sqrt(v_hat)`` is
  ``[0, 0]`` when no concern is drawn. The interval is the gamma interval of Fay and Feuer
  (1997) for a weighted sum of rare events with the modification of Tiwari, Clegg and Zou
  (2006): the upper end adds one event of the *mean* weight of the drawn cases rather than the
  largest (which, at a floor probability of 1e-4, put the upper end at 35,000 whatever was
  seen). Its coverage is checked in ``tests/code/test_estimate.py`` over many seeded draws,
  one period and pooled. The lower end never goes below what the recorded labels prove.

The figure is the estimate of the Henderson et al. "optimize-and-estimate" design (AAAI 2023,
IRS audits): the same investigations earn the reward (greedy top) and keep the population
estimate unbiased (random share). It counts concerns an investigation would *confirm*: if
investigations miss some concerns, the true count is higher by that miss rate. Outcomes still
pending are left out (reported as ``outcomes_pending``): the estimate assumes they are missing
at random.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
from scipy.stats import chi2

from triage.atomic import atomic_file
from triage.contracts import check_worklist
from triage.outcomes import load_labels, read_worklists
from triage.paths import Paths

__all__ = [
    "BacklogEstimate",
    "PeriodDraw",
    "estimate_backlog",
    "gamma_interval",
    "horvitz_thompson",
    "pooled_left",
    "shown_count",
    "summarise",
]


def shown_count(estimate: float) -> str:
    """A count estimate as a person reads it: never below 0.

    The Horvitz-Thompson estimates here are unbiased, and an unbiased estimate of a small count
    can fall below 0 (the drawn concerns are subtracted from a noisy total). A count cannot, so
    0 is shown, with the unbiased figure beside it; reports and JSON keep the unbiased number.
    """
    if estimate < 0:
        return f"0 (unbiased {estimate:.0f})"
    return f"{estimate:.0f}"


def horvitz_thompson(y: np.ndarray, pi: np.ndarray) -> tuple[float, float]:
    """The HT total of the drawn cases and its unbiased variance estimate under Poisson sampling.

    Args:
        y: outcomes (0/1 or counts) of the drawn cases.
        pi: their inclusion probabilities, in (0, 1].
    """
    y, pi = np.asarray(y, dtype=np.float64), np.asarray(pi, dtype=np.float64)
    if ((pi <= 0) | (pi > 1)).any():
        raise ValueError("inclusion probabilities must be in (0, 1]")
    return float((y / pi).sum()), float((y**2 * (1 - pi) / pi**2).sum())


def _gamma(w: np.ndarray, y: np.ndarray, level: float) -> tuple[float, float]:
    """Gamma interval of the weighted total ``sum w_i y_i`` (``w``: every drawn case's weight)."""
    alpha = 1 - level
    x = float((w * y).sum())
    v = float((w**2 * y).sum())
    if len(w) == 0:
        return 0.0, float("inf")
    low = 0.0 if x <= 0 else v / (2 * x) * chi2.ppf(alpha / 2, 2 * x**2 / v)
    w_extra = float(w.mean())
    vu, xu = v + w_extra**2, x + w_extra
    high = vu / (2 * xu) * chi2.ppf(1 - alpha / 2, 2 * xu**2 / vu)
    return float(low), float(high)


def gamma_interval(y: np.ndarray, pi: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Gamma interval for the weighted total ``sum y_i / pi_i`` of rare events.

    The weighted count is treated as a gamma variable with the mean and variance of a weighted
    Poisson sum (variance ``sum w_i^2 y_i``, ``w_i = 1 / pi_i``, which ignores the ``1 - pi``
    finite-population factor and so errs wide); the upper end adds one more event of the mean
    weight of the drawn cases (Tiwari et al. 2006), so that seeing nothing still bounds the
    total. With no case drawn at all the upper end is infinite.
    """
    y, pi = np.asarray(y, dtype=np.float64), np.asarray(pi, dtype=np.float64)
    return _gamma(1.0 / pi, y, level)


@dataclass(frozen=True)
class PeriodDraw:
    """One period's random share as the pooled estimate needs it."""

    y: np.ndarray  # labels (0/1) of the drawn cases with an outcome
    pi: np.ndarray  # their inclusion probabilities
    worked_concerns: float  # concerns recorded since among the frame's cases that are not left


def pooled_left(draws: list[PeriodDraw], level: float = 0.95) -> tuple[float, float, float, float]:
    """Concerns left now, from the random shares of ``draws`` (periods whose frames all hold
    every case left now), pooled with equal weights (module docstring).

    Returns:
        ``(estimate, variance estimate, low, high)``; the interval never goes below 0.
    """
    k = len(draws)
    if k == 0:
        return float("nan"), float("nan"), 0.0, float("inf")
    y = np.concatenate([d.y for d in draws]).astype(np.float64)
    pi = np.concatenate([d.pi for d in draws]).astype(np.float64)
    total, var = horvitz_thompson(y, pi)
    worked = float(np.mean([d.worked_concerns for d in draws]))
    low, high = _gamma(1.0 / (k * pi), y, level)
    return (
        total / k - worked,
        var / k**2,
        max(low - worked, 0.0),
        max(high - worked, 0.0),
    )


@dataclass(frozen=True)
class BacklogEstimate:
    """Concern in the backlog a worklist sampled from, estimated from its random share, and the
    concern left now pooled over the periods since new cases last joined the backlog."""

    worklist_id: str
    eligible_cases: int  # backlog at selection (greedy top + the frame sampled from)
    frame_cases: int  # cases below the greedy top: the random share's sampling frame
    random_drawn: int
    random_with_outcome: int
    random_concerns: int
    greedy_cases: int
    greedy_concerns: int
    frame_estimate: float  # concerns among the frame (HT)
    frame_se: float  # sqrt of the Poisson-sampling variance estimate
    frame_low: float
    frame_high: float
    frame_wald_low: float
    frame_wald_high: float
    left_estimate: float  # concerns left unworked in the backlog after this worklist
    left_low: float
    left_high: float
    total_estimate: float  # concerns in the whole eligible backlog before the worklist
    total_low: float
    total_high: float
    level: float
    # Pooled over the latest ``pooled_periods`` worklists (this one included; 1: nothing pooled).
    pooled_periods: int = 1
    pooled_random_drawn: int = 0
    pooled_random_concerns: int = 0
    pooled_left_estimate: float = float("nan")
    pooled_left_se: float = float("nan")
    pooled_left_low: float = 0.0
    pooled_left_high: float = float("inf")

    def as_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return asdict(self)


def summarise(picks: pd.DataFrame, frame_cases: int, level: float = 0.95) -> BacklogEstimate:
    """The estimate from one worklist's picks joined to their labels (nothing pooled).

    Args:
        picks: the worklist (``selected_by``, ``selection_probability``) with a ``label``
            column (True/False, missing while the outcome is pending).
        frame_cases: cases below the greedy top when the list was drawn.
        level: interval level.
    """
    random = picks[picks["selected_by"] == "random"]
    greedy = picks[picks["selected_by"] == "greedy"]
    known = random[random["label"].notna()]
    y = known["label"].astype(bool).to_numpy(np.float64)
    pi = known["selection_probability"].to_numpy(np.float64)
    est, var = horvitz_thompson(y, pi)
    low, high = gamma_interval(y, pi, level) if len(known) else (0.0, float("inf"))
    z = float(np.sqrt(chi2.ppf(level, 1)))
    found_random = int(y.sum())
    found_greedy = int(greedy["label"].fillna(False).astype(bool).sum())
    low = max(low, float(found_random))  # the drawn concerns are in the frame for sure
    left = pooled_left([PeriodDraw(y, pi, found_random)], level)
    return BacklogEstimate(
        worklist_id=str(picks["worklist_id"].iloc[0]) if len(picks) else "",
        eligible_cases=int(frame_cases + len(greedy)),
        frame_cases=int(frame_cases),
        random_drawn=int(len(random)),
        random_with_outcome=int(len(known)),
        random_concerns=found_random,
        greedy_cases=int(len(greedy)),
        greedy_concerns=found_greedy,
        frame_estimate=est,
        frame_se=float(np.sqrt(var)),
        frame_low=low,
        frame_high=high,
        frame_wald_low=max(est - z * np.sqrt(var), float(found_random)),
        frame_wald_high=est + z * np.sqrt(var),
        # The drawn concerns are found: the HT error is the same for what is left.
        left_estimate=est - found_random,
        left_low=left[2],
        left_high=left[3],
        total_estimate=est + found_greedy,
        total_low=low + found_greedy,
        total_high=high + found_greedy,
        level=level,
        pooled_random_drawn=int(len(random)),
        pooled_random_concerns=found_random,
        pooled_left_estimate=left[0],
        pooled_left_se=float(np.sqrt(left[1])),
        pooled_left_low=left[2],
        pooled_left_high=left[3],
    )


def _frame(paths: Paths, worklist_id: str) -> pd.DataFrame | None:
    """A worklist's sampling frame (``frame.parquet``; None for lists written before it was),
    checked against the worklist's contract (``check_worklist``) before it is used."""
    files = paths.worklist(worklist_id)
    if not files.frame.exists():
        return None
    check_worklist(files.directory)
    return pd.read_parquet(files.frame)


def _pooled_draws(
    paths: Paths, lists: pd.DataFrame, target: str, labels: pd.Series
) -> list[PeriodDraw]:
    """The draws of ``target`` and of the worklists before it whose frames hold every case left
    now, newest first; stops at the first list without a frame or missing a case left now."""
    frame_t = _frame(paths, target)
    if frame_t is None:
        return []
    left_ids = pd.Index(frame_t.loc[~frame_t["drawn"], "case_id"])
    seqs = lists.drop_duplicates("worklist_id").set_index("worklist_id")["sequence"]
    draws = []
    for wid in seqs[seqs <= seqs[target]].sort_values(ascending=False).index:
        frame = frame_t if wid == target else _frame(paths, str(wid))
        if frame is None:
            break
        ids = pd.Index(frame["case_id"])
        if not left_ids.isin(ids).all():  # a case left now joined the backlog after this draw
            break
        drawn = frame[frame["drawn"]]
        y = drawn["case_id"].map(labels)
        known = y.notna().to_numpy()
        worked = ids[~ids.isin(left_ids)]
        concerns = labels.reindex(worked).fillna(False).astype(bool).sum()
        draws.append(
            PeriodDraw(
                y=y[known].astype(bool).to_numpy(np.float64),
                pi=drawn.loc[known, "selection_probability"].to_numpy(np.float64),
                worked_concerns=float(concerns),
            )
        )
    return draws


def estimate_backlog(
    paths: Paths, worklist_id: str | None = None, level: float = 0.95
) -> BacklogEstimate:
    """Estimate the concern left in the backlog from a worklist (default: the newest) and its
    recorded outcomes, and pooled over the periods before it (module docstring); writes
    ``reports/estimate.json``.

    Raises:
        FileNotFoundError: no worklist (or not the one asked for).
    """
    lists = read_worklists(paths)
    if lists.empty:
        raise FileNotFoundError(f"no worklist under {paths.worklists_dir}; run `triage worklist`")
    worklist_id = worklist_id or str(lists.loc[lists["sequence"].idxmax(), "worklist_id"])
    picks = lists[lists["worklist_id"] == worklist_id]
    if picks.empty:
        raise FileNotFoundError(f"no worklist {worklist_id!r} under {paths.worklists_dir}")
    manifest = json.loads(paths.worklist(worklist_id).manifest.read_text())
    labels = load_labels(paths).set_index("case_id")["label"]
    picks = picks.assign(label=picks["case_id"].map(labels))
    result = summarise(picks, int(manifest["random_frame_cases"]), level)
    draws = _pooled_draws(paths, lists, worklist_id, labels)
    if len(draws) > 1:
        est, var, low, high = pooled_left(draws, level)
        result = replace(
            result,
            pooled_periods=len(draws),
            pooled_random_drawn=int(sum(len(d.y) for d in draws)),
            pooled_random_concerns=int(sum(d.y.sum() for d in draws)),
            pooled_left_estimate=est,
            pooled_left_se=float(np.sqrt(var)),
            pooled_left_low=low,
            pooled_left_high=high,
        )
    report = {**result.as_dict(), "outcomes_pending": int(picks["label"].isna().sum())}
    with atomic_file(paths.report("estimate.json")) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    return result

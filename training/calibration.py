"""Calibration: fit margin -> probability maps on held-out data, and measure how well they hold.

The fitted maps are :class:`triage.model.bundle.Calibration` objects (pure data) so that they travel
inside the model bundle and serving applies them without importing this module.

The shipped map is Platt scaling with bootstrap refits (:func:`fit_platt_bootstrap`) on the
cross-fitted margins: the slope from every labelled case (IPW-weighted) shrunk toward the
random audit's (the one unbiased labelled sample; ``training.data.calibration_sample``), the
level set by the audit's concern rate (Jeffreys prior) over the open backlog's margins; each
case's interval the percentile interval of 200 refits of that whole fit on resampled cases.
Isotonic regression (:func:`fit_isotonic`, the earlier default) fitted its steps on a
dozen held-out concerns: on the small demo world the top two cases showed 100% and neither was
a concern, 76% of the backlog showed 0.00% and held a third of the concerns, and 61 plateaus
made ties (issue 14). A two-parameter map cannot make plateaus, never reaches 0 or 1, and its
covariance gives each case an interval (:meth:`triage.model.Calibration.interval`).

Beside ECE (blind at base rates of 0.1-0.5%), :func:`calibration_summary` reports where
reviewers look: calibration in the large (mean predicted / observed), the top 1,000 and
10,000 by the ranking (mean predicted / observed), log loss and Brier score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from triage.model import Calibration

__all__ = [
    "CalibrationReport",
    "anchor_rate",
    "ReliabilityCurve",
    "brier_score",
    "calibration_report",
    "calibration_summary",
    "log_loss",
    "expected_calibration_error",
    "fit_isotonic",
    "fit_platt",
    "fit_platt_anchored",
    "fit_platt_bootstrap",
    "reliability_curve",
]


def fit_isotonic(
    margin: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
) -> Calibration:
    """Fit an increasing isotonic map from raw margins to probabilities.

    Args:
        margin: raw model margins on held-out rows (never the rows the booster was fit on).
        y: 0/1 outcomes of those rows.
        sample_weight: optional row weights (e.g. inverse selection propensities).

    Returns:
        An ``"isotonic"`` :class:`Calibration` whose ``x``/``y`` are the fitted thresholds;
        ``np.interp`` over them reproduces ``IsotonicRegression(out_of_bounds="clip").predict``.
    """
    margin, y = _check(margin, y)
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    iso.fit(margin, y, sample_weight=sample_weight)
    return Calibration(method="isotonic", x=iso.X_thresholds_, y=iso.y_thresholds_)


def fit_platt(
    margin: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray | None = None,
    *,
    level: float = 0.9,
) -> Calibration:
    """Fit Platt scaling, ``p = sigmoid(slope * margin + intercept)``, with its covariance.

    Unregularised maximum likelihood; the covariance is the sandwich (robust) estimate
    ``H^-1 (sum_i w_i^2 g_i g_i^T) H^-1``, which stays honest under inverse-propensity weights
    (the plain inverse Fisher information would treat a weight of 5 as five observations).

    Args:
        margin: margins of cases the model did not train on (cross-fitted).
        y: their 0/1 outcomes.
        sample_weight: row weights (inverse propensities), or None.
        level: nominal coverage of the per-case intervals.
    """
    margin, y = _check(margin, y)
    w = np.ones_like(margin) if sample_weight is None else np.asarray(sample_weight, float)
    lr = LogisticRegression(C=np.inf, max_iter=1000)  # no regularisation
    lr.fit(margin.reshape(-1, 1), y, sample_weight=w)
    slope, intercept = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    p = 1.0 / (1.0 + np.exp(-(slope * margin + intercept)))
    design = np.column_stack([margin, np.ones_like(margin)])
    hessian = (design * (w * p * (1 - p))[:, None]).T @ design
    score = design * (w * (y - p))[:, None]
    bread = np.linalg.pinv(hessian)
    cov = bread @ (score.T @ score) @ bread
    return Calibration(
        method="platt",
        slope=slope,
        intercept=intercept,
        cov=(float(cov[0, 0]), float(cov[0, 1]), float(cov[1, 1])),
        level=level,
    )


SLOPE_PRIOR_SD = 0.25  # of the labelled fit's slope: the audit moves it by up to ~50% (2 sd)
BOOT_CHUNK = 25  # refits per block: 25 x 50,000 cases x 8 bytes = 10 MB per working array


def anchor_rate(y: np.ndarray, weight: np.ndarray, level: float = 0.9) -> dict[str, float]:
    """The anchor sample's concern rate with a Jeffreys prior: ``Beta(k + 1/2, n - k + 1/2)``.

    ``k`` and ``n`` are the Horvitz-Thompson weighted concerns and cases scaled to the Kish
    effective sample size, so a uniform audit gives its plain counts. The posterior mean is what
    the calibration matches in the large; the interval is how well any calibrator can know the
    rate from this sample (on a small world 6-9 audited concerns: about +-50%).

    Returns:
        ``cases``, ``concerns`` (raw counts), ``effective_cases``, ``rate`` (posterior mean),
        ``rate_low``, ``rate_high`` (equal-tailed interval at ``level``).
    """
    from scipy.stats import beta

    y, w = np.asarray(y, float), np.asarray(weight, float)
    on = w > 0
    n_eff = w[on].sum() ** 2 / (w[on] ** 2).sum() if on.any() else 0.0
    k_eff = n_eff * (w[on] @ y[on]) / w[on].sum() if on.any() else 0.0
    a, b = k_eff + 0.5, n_eff - k_eff + 0.5
    lo, hi = beta.ppf([(1 - level) / 2, (1 + level) / 2], a, b)
    return {
        "cases": float(on.sum()),
        "concerns": float(y[on].sum()),
        "effective_cases": float(n_eff),
        "rate": float(a / (a + b)),
        "rate_low": float(lo),
        "rate_high": float(hi),
    }


def fit_platt_bootstrap(
    margin: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray | None = None,
    *,
    anchor_weight: np.ndarray | None = None,
    population_margin: np.ndarray | None = None,
    slope_prior_sd: float = SLOPE_PRIOR_SD,
    n_boot: int = 200,
    level: float = 0.9,
    seed: int = 0,
    chunk: int = BOOT_CHUNK,
) -> Calibration:
    """Platt scaling with ``n_boot`` refits on cases drawn with replacement.

    Without ``anchor_weight``: the two-parameter weighted fit (:func:`fit_platt`) on all rows.
    With it (the random audit's Horvitz-Thompson weights, 0 off the audit): the map is fitted
    on the anchor rows with the slope shrunk toward the all-rows fit (a normal prior, sd
    ``slope_prior_sd`` x that slope) and the intercept solved so that the weighted mean
    probability over the anchor equals its concern rate under a Jeffreys prior
    (:func:`anchor_rate`). Why: the rule-selected labels carry 2-3x the concern of unselected
    cases with the same recorded signals, so a fit on them overstates concern (1.3-2.1x on the
    small worlds' truth); the audit is unbiased but on a small world holds 6-9 concerns, too
    few for a free slope, enough for the level. With 0-3 concerns the prior keeps the intercept
    finite; with hundreds (the full world) the audit decides both parameters.

    With ``population_margin`` too (the margins of the cases the probabilities are for: the open
    backlog, features only), the intercept is then moved so that the mean probability over
    those cases equals the anchor's rate. Why: the backlog is scored at the snapshot, often years
    after the lead, so its time-dependent features are extrapolated and its margins run higher
    than the history's (seed 11 small world: +0.8 on average; the map fitted on the history then
    gave the backlog 2.6x the audit's concern rate). The audit estimates the concern rate of
    leads; the backlog is leads, so its rate is the audit's; the slope (how concern rises with
    the margin) is kept.

    The refits' ``(slope, intercept)`` travel in the calibration (``draws``); a case's interval
    is the percentile interval of its refitted probabilities. Each refit repeats the whole fit
    (all-rows slope, then the anchored fit) on one resample of all rows, so the number of
    audited concerns is random, as it is. Resamples without a concern (or without a
    non-concern) are drawn again. The resamples are drawn and fitted ``chunk`` at a time
    (memory ``chunk x n``, not ``n_boot x n``); the result does not depend on ``chunk``.

    Args:
        margin: margins of cases the model did not train on (cross-fitted).
        y: their 0/1 outcomes.
        sample_weight: weights of the all-rows fit (inverse propensities), or None.
        anchor_weight: Horvitz-Thompson weights of the unbiased sample, 0 elsewhere, or None.
        population_margin: margins of the cases scored (needs ``anchor_weight``), or None.
        slope_prior_sd: prior sd of the anchored slope, relative to the all-rows slope.
        n_boot: number of refits.
        level: nominal coverage of the per-case intervals.
        seed: seed of the resampling.
        chunk: refits per block.
    """
    margin, y = _check(margin, y)
    w = np.ones_like(margin) if sample_weight is None else np.asarray(sample_weight, float)
    anchor = None if anchor_weight is None else np.asarray(anchor_weight, float)
    if anchor is not None and (anchor.shape != margin.shape or not (anchor > 0).any()):
        raise ValueError("anchor_weight must be aligned with margin and positive somewhere")
    point = fit_platt(margin, y, w, level=level)
    slope, intercept = point.slope, point.intercept
    if population_margin is not None and anchor is None:
        raise ValueError("population_margin needs an anchor_weight to take the rate from")
    grid = None if population_margin is None else _quantile_grid(population_margin)
    on = np.ones(len(y), dtype=bool) if anchor is None else anchor > 0
    if anchor is not None:
        a, b = _anchored_newton(
            margin[on],
            y[on],
            anchor[None, on],
            np.array([slope]),
            np.array([intercept]),
            slope_prior_sd,
        )
        if grid is not None:
            b = _level_on(grid, a, anchor[None, on], y[on])
        slope, intercept = float(a[0]), float(b[0])
    rng = np.random.default_rng(seed)
    pvals = np.full(len(y), 1.0 / len(y))
    slopes: list[np.ndarray] = []
    intercepts: list[np.ndarray] = []
    kept, drawn = 0, 0
    while kept < n_boot and drawn < 3 * n_boot:
        size = min(chunk, 3 * n_boot - drawn)
        counts = rng.multinomial(len(y), pvals, size=size).astype(np.float64)
        drawn += size
        # Bootstrap resamples as multinomial counts; without a concern (or a non-concern) redrawn.
        counts = counts[(counts @ y > 0) & (counts @ (1 - y) > 0)][: n_boot - kept]
        if not len(counts):
            continue
        a, b = _newton_platt(margin, y, counts * w, point.slope, point.intercept)
        if anchor is not None:
            a, b = _anchored_newton(
                margin[on], y[on], counts[:, on] * anchor[on], a, b, slope_prior_sd
            )
            if grid is not None:
                b = _level_on(grid, a, counts[:, on] * anchor[on], y[on])
        slopes.append(a)
        intercepts.append(b)
        kept += len(counts)
    if kept < n_boot:
        raise ValueError("too few concerns to bootstrap the calibration")
    draws = tuple(
        zip(np.concatenate(slopes).tolist(), np.concatenate(intercepts).tolist(), strict=True)
    )
    return Calibration(method="platt", slope=slope, intercept=intercept, draws=draws, level=level)


def fit_platt_anchored(
    margin: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray | None,
    anchor_weight: np.ndarray,
    *,
    slope_prior_sd: float = SLOPE_PRIOR_SD,
) -> Calibration:
    """The point map of :func:`fit_platt_bootstrap` with an anchor, without the refits (for
    cross-fitting, where only the map is needed)."""
    margin, y = _check(margin, y)
    w = np.ones_like(margin) if sample_weight is None else np.asarray(sample_weight, float)
    point = fit_platt(margin, y, w)
    anchor = np.asarray(anchor_weight, float)
    on = anchor > 0
    a, b = _anchored_newton(
        margin[on],
        y[on],
        anchor[None, on],
        np.array([point.slope]),
        np.array([point.intercept]),
        slope_prior_sd,
    )
    return Calibration(method="platt", slope=float(a[0]), intercept=float(b[0]))


def _quantile_grid(margin: np.ndarray, size: int = 16_384) -> np.ndarray:
    """``size`` equal-mass quantiles of ``margin``: the mean of a smooth map over them is the
    mean over all of them (1.2M backlog cases in 16,384 numbers; a smaller backlog is used whole)."""
    margin = np.asarray(margin, dtype=np.float64).ravel()
    if margin.size == 0 or not np.all(np.isfinite(margin)):
        raise ValueError("population margins must be finite and non-empty")
    if margin.size <= size:
        return np.sort(margin)
    return np.quantile(margin, (np.arange(size) + 0.5) / size)


def _jeffreys_rate(y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per row of ``weights``: the Jeffreys posterior mean of the weighted concern rate, counts
    scaled to the Kish effective size (as :func:`anchor_rate`)."""
    total = weights.sum(axis=1)
    n_eff = total**2 / np.maximum((weights * weights).sum(axis=1), 1e-300)
    k_eff = n_eff * (weights * y).sum(axis=1) / np.maximum(total, 1e-300)
    return (k_eff + 0.5) / (n_eff + 1.0)


def _level_on(
    grid: np.ndarray, slope: np.ndarray, anchor: np.ndarray, y: np.ndarray, steps: int = 60
) -> np.ndarray:
    """Per refit: the intercept whose map, with ``slope``, averages the anchor's Jeffreys rate
    over the population's margin ``grid`` (Newton's method on a monotone equation)."""
    rate = _jeffreys_rate(y, anchor)
    logit = np.log(rate / (1 - rate))
    # Start where a flat map would be right: the rate's logit less the slope times the middle.
    b = logit - slope * np.median(grid)
    done = np.zeros(len(b), dtype=bool)
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(slope[:, None] * grid + b[:, None], -35.0, 35.0)))
        g = p.mean(axis=1) - rate
        h = (p * (1 - p)).mean(axis=1) + 1e-300
        step = np.where(done, 0.0, np.clip(g / h, -5.0, 5.0))
        b = b - step
        done |= np.abs(step) < 1e-10
        if done.all():
            break
    return b


def _anchored_newton(
    margin: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray,
    prior_slope: np.ndarray,
    intercept: np.ndarray,
    prior_sd: float,
    steps: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """For every row of ``weights`` (anchor weights of one resample): the maximum of the anchor's
    log-likelihood with a normal prior on the slope (mean ``prior_slope``, sd ``prior_sd`` x
    its size) and a Jeffreys prior on the rate, i.e. the intercept equation
    ``sum v p = n_eff * (k_eff + 1/2) / (n_eff + 1)`` (weights ``v`` scaled to the Kish effective
    size ``n_eff``). The objective is strictly concave, so Newton's method from the prior slope
    converges; rows converge (and stop moving) independently of each other.
    """
    m, yy, wt = margin, y, weights
    total = wt.sum(axis=1)
    n_eff = total**2 / np.maximum((wt * wt).sum(axis=1), 1e-300)
    v = wt * (n_eff / np.maximum(total, 1e-300))[:, None]
    k_eff = (v * yy).sum(axis=1)
    target = n_eff * (k_eff + 0.5) / (n_eff + 1.0)
    prec = 1.0 / np.maximum(prior_sd * np.abs(prior_slope), 1e-6) ** 2
    a, b = prior_slope.astype(float).copy(), intercept.astype(float).copy()
    done = total <= 0  # an empty anchor keeps the all-rows fit
    for _ in range(steps):
        z = np.clip(a[:, None] * m + b[:, None], -35.0, 35.0)
        p = 1.0 / (1.0 + np.exp(-z))
        vp = v * p * (1 - p)
        g_a = (v * (yy - p) * m).sum(axis=1) - prec * (a - prior_slope)
        g_b = target - (v * p).sum(axis=1)
        h_aa = (vp * m * m).sum(axis=1) + prec
        h_ab, h_bb = (vp * m).sum(axis=1), vp.sum(axis=1) + 1e-12
        a, b = _newton_step(a, b, (g_a, g_b), (h_aa, h_ab, h_bb), done)
        if done.all():
            break
    return a, b


def _newton_step(
    a: np.ndarray,
    b: np.ndarray,
    grad: tuple[np.ndarray, np.ndarray],
    hess: tuple[np.ndarray, np.ndarray, np.ndarray],
    done: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """One damped Newton step of many two-parameter (slope ``a``, intercept ``b``) fits at once:
    the 2x2 system solved per row, each step capped at 5 in size; rows in ``done`` stay put,
    and ``done`` (updated in place) marks the rows whose step fell below 1e-10."""
    g_a, g_b = grad
    h_aa, h_ab, h_bb = hess
    det = h_aa * h_bb - h_ab * h_ab
    step_a = (h_bb * g_a - h_ab * g_b) / det
    step_b = (h_aa * g_b - h_ab * g_a) / det
    size = np.abs(step_a) + np.abs(step_b)
    scale = np.where(done, 0.0, np.minimum(1.0, 5.0 / np.maximum(size, 1e-12)))
    done |= size < 1e-10
    return a + scale * step_a, b + scale * step_b


def _newton_platt(
    margin: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray,
    slope: float,
    intercept: float,
    steps: int = 30,
    ridge: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted two-parameter logistic fits for every row of ``weights`` at once (Newton's method
    from the full-sample fit; 200 refits in well under a second, where 200 sklearn fits took 12 s
    on the shared box). ``ridge`` (per unit weight) keeps a perfectly separated resample finite.
    Sums run along each row and a row stops moving once it has converged, so a refit does not
    depend on which other refits share its block.
    """
    k = len(weights)
    a, b = np.full(k, slope), np.full(k, intercept)
    total = weights.sum(axis=1)
    done = np.zeros(k, dtype=bool)
    for _ in range(steps):
        z = np.clip(a[:, None] * margin + b[:, None], -35.0, 35.0)
        p = 1.0 / (1.0 + np.exp(-z))
        r = weights * (y - p)
        v = weights * p * (1 - p)
        g_a, g_b = (r * margin).sum(axis=1) - ridge * total * a, r.sum(axis=1)
        h_aa = (v * (margin * margin)).sum(axis=1) + ridge * total
        h_ab, h_bb = (v * margin).sum(axis=1), v.sum(axis=1) + 1e-12
        a, b = _newton_step(a, b, (g_a, g_b), (h_aa, h_ab, h_bb), done)
        if done.all():
            break
    return a, b


def log_loss(y: np.ndarray, p: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """Mean negative log-likelihood of 0/1 outcomes (lower is better); p clipped at 1e-15."""
    p, y = _check(p, y)
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(np.average(-(y * np.log(p) + (1 - y) * np.log(1 - p)), weights=sample_weight))


def calibration_summary(
    y: np.ndarray,
    p: np.ndarray,
    rank_score: np.ndarray | None = None,
    sample_weight: np.ndarray | None = None,
    top_k: tuple[int, ...] = (1_000, 10_000),
    *,
    k_by_weight: bool = False,
) -> dict[str, float | None]:
    """Calibration where it matters: in the large, at the top of the ranking, and overall.

    Args:
        y: 0/1 outcomes.
        p: calibrated probabilities.
        rank_score: the ranking (higher first) that defines "the top k"; default ``p``.
        sample_weight: row weights (the top k is then the top k rows, weighted within).
        top_k: the heads of the ranking to check.
        k_by_weight: count k in weight, not rows: on a sample weighted to stand for a
            population (the random audit, 1 row for ~20 cases) the top 1,000 are the highest
            rows whose weights add up to 1,000 cases, the population's top 1,000.

    Returns:
        ``mean_predicted``, ``observed``, ``ratio_overall`` (mean predicted / observed),
        ``top_<k>_predicted``, ``top_<k>_observed``, ``ratio_top_<k>`` (None where nothing was
        observed, or k exceeds the rows), ``log_loss``, ``brier``, ``ece`` (15 quantile bins),
        ``distinct_probabilities``, ``min_probability`` and ``max_probability``.
    """
    p, y = _check(p, y)
    w = np.ones_like(p) if sample_weight is None else np.asarray(sample_weight, float)
    order = np.argsort(-(p if rank_score is None else np.asarray(rank_score, float)), kind="stable")
    out: dict[str, float | None] = {
        "mean_predicted": float(np.average(p, weights=w)),
        "observed": float(np.average(y, weights=w)),
    }
    out["ratio_overall"] = _ratio(out["mean_predicted"], out["observed"])
    reach = np.cumsum(w[order]) if k_by_weight else np.arange(1, len(p) + 1)
    for k in top_k:
        if k > reach[-1]:
            continue
        head = order[: int(np.searchsorted(reach, k, side="left")) + 1]
        pred, obs = (
            float(np.average(p[head], weights=w[head])),
            float(np.average(y[head], weights=w[head])),
        )
        out[f"top_{k}_predicted"], out[f"top_{k}_observed"] = pred, obs
        out[f"ratio_top_{k}"] = _ratio(pred, obs)
    out["log_loss"] = log_loss(y, p, w)
    out["brier"] = brier_score(y, p, w)
    out["ece"] = expected_calibration_error(y, p, sample_weight=w)
    out["distinct_probabilities"] = float(len(np.unique(p)))
    out["min_probability"], out["max_probability"] = float(p.min()), float(p.max())
    return out


def _ratio(a: float, b: float) -> float | None:
    return None if b <= 0 else float(a / b)


def brier_score(y: np.ndarray, p: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """Mean squared difference between probability and 0/1 outcome (lower is better)."""
    p, y = _check(p, y)
    return float(np.average((p - y) ** 2, weights=sample_weight))


@dataclass(frozen=True)
class ReliabilityCurve:
    """Per-bin calibration data, ready for a reliability diagram (observed vs predicted)."""

    mean_predicted: np.ndarray
    observed_rate: np.ndarray
    weight: np.ndarray  # total sample weight per bin (row count when unweighted)
    bin_lower: np.ndarray
    bin_upper: np.ndarray
    strategy: str

    def to_dict(self) -> dict[str, list[float] | str]:
        """JSON-ready form for the evaluation report."""
        return {
            "mean_predicted": self.mean_predicted.tolist(),
            "observed_rate": self.observed_rate.tolist(),
            "weight": self.weight.tolist(),
            "bin_lower": self.bin_lower.tolist(),
            "bin_upper": self.bin_upper.tolist(),
            "strategy": self.strategy,
        }


def reliability_curve(
    y: np.ndarray,
    p: np.ndarray,
    n_bins: int = 15,
    strategy: str = "quantile",
    sample_weight: np.ndarray | None = None,
) -> ReliabilityCurve:
    """Bin predictions and compare each bin's mean prediction with its observed rate.

    Args:
        y: 0/1 outcomes.
        p: predicted probabilities.
        n_bins: number of bins.
        strategy: ``"quantile"`` (equal mass: each bin holds about the same weight of rows, cut
            at quantiles of the predictions; tied predictions share a bin, so a bin can be
            heavier and there can be fewer than ``n_bins``) or ``"uniform"`` (equal width on [0, 1]). Equal mass is
            the default because concern is rare: with equal widths nearly every row lands in the
            first bin and the high-risk tail, where review capacity goes, is judged on a handful.
        sample_weight: optional row weights.

    Returns:
        Non-empty bins only, ordered by predicted probability.
    """
    p, y = _check(p, y)
    w = np.ones_like(p) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if strategy == "quantile":
        # Cut at weighted quantiles of the predictions; a row goes to the first bin whose cut is
        # >= its prediction, so tied predictions (isotonic plateaus) never straddle two bins.
        order = np.argsort(p, kind="stable")
        cum = np.cumsum(w[order])
        at = np.searchsorted(cum, cum[-1] * np.arange(1, n_bins) / n_bins, side="left")
        cuts = np.unique(p[order][np.minimum(at, len(p) - 1)])
        bins = np.searchsorted(cuts, p, side="left")
    elif strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        bins = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    else:
        raise ValueError(f"strategy must be 'quantile' or 'uniform', not {strategy!r}")
    n = int(bins.max()) + 1
    weight = np.bincount(bins, weights=w, minlength=n)
    keep = weight > 0
    pred_sum = np.bincount(bins, weights=w * p, minlength=n)
    obs_sum = np.bincount(bins, weights=w * y, minlength=n)
    lower = np.full(n, np.inf)
    upper = np.full(n, -np.inf)
    np.minimum.at(lower, bins, p)
    np.maximum.at(upper, bins, p)
    return ReliabilityCurve(
        mean_predicted=pred_sum[keep] / weight[keep],
        observed_rate=obs_sum[keep] / weight[keep],
        weight=weight[keep],
        bin_lower=lower[keep],
        bin_upper=upper[keep],
        strategy=strategy,
    )


def expected_calibration_error(
    y: np.ndarray,
    p: np.ndarray,
    n_bins: int = 15,
    strategy: str = "quantile",
    sample_weight: np.ndarray | None = None,
) -> float:
    """Weighted mean over bins of ``|observed rate - mean prediction|`` (see :func:`reliability_curve`).

    Note that the value depends on the binning: report ``n_bins`` and ``strategy`` with it.
    """
    curve = reliability_curve(y, p, n_bins=n_bins, strategy=strategy, sample_weight=sample_weight)
    return _ece(curve)


@dataclass(frozen=True)
class CalibrationReport:
    """Headline calibration figures for one set of predictions."""

    ece: float
    brier: float
    n_bins: int
    strategy: str
    curve: ReliabilityCurve

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat metrics for MLflow (``{prefix}ece``, ``{prefix}brier``)."""
        return {f"{prefix}ece": self.ece, f"{prefix}brier": self.brier}


def calibration_report(
    y: np.ndarray,
    p: np.ndarray,
    n_bins: int = 15,
    strategy: str = "quantile",
    sample_weight: np.ndarray | None = None,
) -> CalibrationReport:
    """Expected calibration error, Brier score and the reliability curve in one pass."""
    curve = reliability_curve(y, p, n_bins=n_bins, strategy=strategy, sample_weight=sample_weight)
    return CalibrationReport(
        ece=_ece(curve),
        brier=brier_score(y, p, sample_weight=sample_weight),
        n_bins=n_bins,
        strategy=strategy,
        curve=curve,
    )


def _ece(curve: ReliabilityCurve) -> float:
    gap = np.abs(curve.observed_rate - curve.mean_predicted)
    return float(np.sum(curve.weight * gap) / np.sum(curve.weight))


def _check(score: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    score = np.asarray(score, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if score.shape != y.shape or score.size == 0:
        raise ValueError(
            f"scores and outcomes must be equally long and non-empty: {score.shape}, {y.shape}"
        )
    if not np.all(np.isfinite(score)):
        raise ValueError("scores contain NaN or infinity")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("outcomes must be 0 or 1")
    return score, y

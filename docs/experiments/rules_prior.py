"""Experiment, not part of the package: recipes that start from the rule triage (issue 14).

For one world: every recipe is judged by a held-out estimate on labelled cases only:
- ``cv_ap``: inverse-propensity-weighted average precision of out-of-fold margins pooled over
  five time-blocked folds of the labelled cases (every labelled concern is held out once;
  each fold's booster early-stops on the latest 20% of its own training cases);
- ``va_ap``: the same on the usual time-split validation window alone (the latest 20%);
- ``se``: bootstrap standard error of ``cv_ap``; ``d_rules``: paired bootstrap mean and 90%
  interval of ``cv_ap(recipe) - cv_ap(rules)``.
The backlog's truth (P@1k, P@10k, AP) is printed beside for the record, never for choosing.

    PYTHONPATH=. TRIAGE_MLRUNS_DIR=<dir>/mlruns .venv/bin/python docs/experiments/rules_prior.py <dir>
"""

import json
import sys
import time
from dataclasses import dataclass, replace

import lightgbm as lgb
import numpy as np
from scipy.optimize import minimize
from sklearn.metrics import average_precision_score

from training import baselines
from training.data import LABEL, Split, model_matrix
from training.evaluate import ranking_metrics, read_truth
from training.fit import TrainConfig, fit, lgb_params
from training.train import prepare
from triage.cliutil import paths_for

FOLDS = 5


def rule_offset(points, y, w):
    """a + b * points by weighted logistic regression (2 parameters)."""

    def nll(t):
        z = t[0] + t[1] * points
        return np.sum(w * (np.logaddexp(0, z) - y * z))

    t = minimize(nll, np.array([-5.0, 0.3]), method="L-BFGS-B").x
    return t


def offset_logit(X, y, w, off, lam):
    """L2-penalised logistic regression with an offset on standardised, imputed X."""
    med = np.nanmedian(X, axis=0)
    med = np.where(np.isnan(med), 0, med)
    Z = np.where(np.isnan(X), med, X)
    mu, sd = Z.mean(0), Z.std(0)
    sd[sd == 0] = 1
    Z = (Z - mu) / sd
    n = w.sum()

    def f(t):
        z = off + t[0] + Z @ t[1:]
        p = 1 / (1 + np.exp(-z))
        loss = np.sum(w * (np.logaddexp(0, z) - y * z)) / n + lam / 2 * np.sum(t[1:] ** 2)
        g = np.concatenate([[np.sum(w * (p - y))], Z.T @ (w * (p - y))]) / n
        g[1:] += lam * t[1:]
        return loss, g

    t = minimize(f, np.zeros(Z.shape[1] + 1), jac=True, method="L-BFGS-B").x

    def score(Xn, offn):
        Zn = (np.where(np.isnan(Xn), med, Xn) - mu) / sd
        return offn + t[0] + Zn @ t[1:]

    return score


@dataclass
class Ctx:
    frame: object
    X: np.ndarray
    Xdf: object
    y: np.ndarray
    ipw: np.ndarray
    points: np.ndarray
    features: list
    mono: list


def fit_recipe(name, ctx, tr, es, corr):
    """Return a scorer(mask) -> margin for recipe ``name`` trained on ``tr``, early-stopped on ``es``."""
    w = ctx.ipw if corr == "ipw" else np.ones(len(ctx.y))
    y, X, pts = ctx.y, ctx.X, ctx.points
    if name == "rules":
        age = baselines.fifo_scores(ctx.frame)
        return lambda m: pts[m] + age[m]
    if name == "blend":
        cfg = replace(TrainConfig(), correction=corr)
        f = fit(
            ctx.frame,
            ctx.features,
            cfg,
            Split(tr, es, ctx.frame["scoring_date"][es].min()),
            ctx.ipw,
        )
        return lambda m: f.bundle.predict_margin(ctx.Xdf.loc[m])
    if name == "logistic":
        pipe = baselines.fit_logistic(
            ctx.frame, ctx.features, Split(tr, es, ctx.frame["scoring_date"][es].min()), w
        )
        return lambda m: pipe.decision_function(ctx.Xdf.loc[m])
    a, b = rule_offset(pts[tr], y[tr], w[tr])
    off = a + b * pts
    if name == "rules_fit":
        return lambda m: off[m] + 1e-6 * baselines.fifo_scores(ctx.frame)[m]
    if name.startswith("offlogit"):
        lam = float(name.split("_")[1])
        sc = offset_logit(X[tr], y[tr], w[tr], off[tr], lam)
        return lambda m: sc(X[m], off[m])
    # boosters on the rule offset
    cfg = TrainConfig()
    extra = {}
    if "mono" in name:
        extra["monotone_constraints"] = ctx.mono
        extra["monotone_constraints_method"] = "advanced"
    if "slow" in name:
        extra.update(learning_rate=0.02)
    if "leaf" in name:  # regularisation scaled by the labelled positives
        extra.update(min_data_in_leaf=max(50, int(len(y[tr]) / max(y[tr].sum(), 1) * 4)))
    if "l2" in name:
        extra.update(lambda_l2=50.0)
    params = lgb_params(replace(cfg, extra=extra))
    d_tr = lgb.Dataset(X[tr], y[tr], weight=w[tr], init_score=off[tr], free_raw_data=False)
    d_es = lgb.Dataset(X[es], y[es], weight=w[es], init_score=off[es], reference=d_tr)
    bst = lgb.train(
        params,
        d_tr,
        3000,
        valid_sets=[d_es],
        callbacks=[lgb.early_stopping(150, first_metric_only=True, verbose=False)],
    )
    it = int(bst.best_iteration or 0)
    if it <= 0:
        return lambda m: off[m]
    return lambda m: off[m] + bst.predict(X[m], raw_score=True, num_iteration=it)


def wap(y, s, w):
    return float(average_precision_score(y, s, sample_weight=w))


def main(data_dir):
    paths = paths_for(data_dir)
    prep = prepare(paths, TrainConfig())
    frame = prep.frame
    feats = prep.features.model
    Xdf = model_matrix(frame, feats)
    X = Xdf.to_numpy(np.float64, na_value=np.nan)
    y = frame[LABEL].fillna(False).to_numpy(np.int8)
    pts = baselines.rule_points(frame)
    sign = {r.feature: np.sign(r.points) for r in baselines.RULES}
    mono = [int(sign.get(f, 0)) for f in feats]
    ctx = Ctx(frame, X, Xdf, y, prep.ipw, pts, feats, mono)
    lab = prep.split.train | prep.split.valid
    dates = frame["scoring_date"].to_numpy()
    idx = np.flatnonzero(lab)
    idx = idx[np.argsort(dates[idx], kind="stable")]
    fold = np.empty(len(y), int)
    fold[idx] = np.arange(len(idx)) * FOLDS // len(idx)
    op = frame["is_open"].to_numpy()
    truth = read_truth(paths)
    cases = frame.loc[op, ["case_id", "lead_date"]].merge(
        truth, on="case_id", validate="one_to_one"
    )
    yt = cases["concern"].to_numpy(np.int8)
    tie = baselines.fifo_scores(cases)
    recipes = (
        sys.argv[2].split(",")
        if len(sys.argv) > 2
        else [
            "rules",
            "rules_fit",
            "blend",
            "logistic",
            "offgbm",
            "offgbm_mono",
            "offgbm_mono_slow",
            "offgbm_mono_leaf",
            "offgbm_mono_l2",
            "offlogit_0.1",
            "offlogit_0.03",
            "offlogit_0.01",
        ]
    )
    rng = np.random.default_rng(0)
    boots = [rng.integers(0, lab.sum(), lab.sum()) for _ in range(300)]
    yl, wl = y[lab], prep.ipw[lab]
    results, oof_rules = [], None
    info = {
        "world": data_dir,
        "labelled": int(lab.sum()),
        "positives": int(yl.sum()),
        "valid_positives": int(y[prep.split.valid].sum()),
        "backlog_concerns": int(yt.sum()),
    }
    print(json.dumps(info), flush=True)
    for name in recipes:
        for corr in ("ipw",) if name.startswith("rules") else ("ipw", "none"):
            t0 = time.perf_counter()
            oof = np.full(len(y), np.nan)
            for k in range(FOLDS):
                rest = idx[fold[idx] != k]
                cut = np.quantile(dates[rest].astype("int64"), 0.8)
                tr = np.zeros(len(y), bool)
                es = np.zeros(len(y), bool)
                tr[rest[dates[rest].astype("int64") < cut]] = True
                es[rest[dates[rest].astype("int64") >= cut]] = True
                if y[tr].sum() == 0 or y[es].sum() == 0:
                    tr[es] = True  # degenerate: fall back
                held = lab & (fold == k)
                oof[held] = fit_recipe(name, ctx, tr, es, corr)(held)
            s = oof[lab]
            # fold-wise margins are on different scales for rank-only recipes? no: all are margins
            cv = wap(yl, s, wl)
            bs = [wap(yl[b], s[b], wl[b]) for b in boots]
            if name == "rules":
                oof_rules = s
                d = (0.0, 0.0, 0.0)
            else:
                dd = [wap(yl[b], s[b], wl[b]) - wap(yl[b], oof_rules[b], wl[b]) for b in boots]
                d = (float(np.mean(dd)), float(np.quantile(dd, 0.05)), float(np.quantile(dd, 0.95)))
            sc = fit_recipe(name, ctx, prep.split.train, prep.split.valid, corr)
            va = prep.split.valid
            va_ap = wap(y[va], sc(va), prep.ipw[va])
            m = ranking_metrics(yt, sc(op), tie)
            row = {
                "recipe": name,
                "corr": corr,
                "cv_ap": round(cv, 4),
                "se": round(float(np.std(bs)), 4),
                "d_rules": [round(v, 4) for v in d],
                "va_ap": round(va_ap, 4),
                "p1k": m["precision_at_k"]["1000"],
                "p10k": m["precision_at_k"]["10000"],
                "ap": round(m["average_precision"], 4),
                "s": round(time.perf_counter() - t0, 1),
            }
            results.append(row)
            print(json.dumps(row), flush=True)
    om = ranking_metrics(yt, cases["oracle_p"].to_numpy(), tie)
    print(json.dumps({"oracle": om["precision_at_k"], "ap": om["average_precision"]}))


if __name__ == "__main__":
    main(sys.argv[1])

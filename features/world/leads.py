"""Leads: the open backlog list, historical leads with their observable outcomes
(the ``prior_leads`` system) and the truth about every case.

Historical investigations were chosen by old rules (watchlist hits, arrests, prior
removals, lookouts) plus a small random audit, so the labels a model learns from
are biased the way real ones are.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.world.config import WorldConfig
from features.world.people import DAY, Chunk, fmt_ids, sigmoid

__all__ = ["case_ids", "make_leads"]


def case_ids(c: Chunk) -> np.ndarray:
    """Case ids of a chunk's people: ``C`` for open cases, ``H`` for historical ones."""
    return np.where(c["is_open"], fmt_ids("C", c["person_id"], 8), fmt_ids("H", c["person_id"], 8))


def _age_band(age: np.ndarray) -> np.ndarray:
    bands = np.array(["18-24", "25-34", "35-49", "50+"], dtype=object)
    return bands[np.digitize(age, [25, 35, 50])]


def make_leads(
    cfg: WorldConfig, c: Chunk, t: dict, rng: np.random.Generator
) -> dict[str, pd.DataFrame]:
    """Build ``backlog``, ``prior_leads`` rows (with ``_person``) and truth ``cases`` for a chunk."""
    n = len(c)
    ids = case_ids(c)
    is_open = c["is_open"]

    # --- historical primary cases: old-rule selection, outcome, closing dates.
    p_inv = sigmoid(
        -2.45
        + 1.8 * c["true_watch"]
        + 0.8 * np.minimum(c["arrests"], 3)
        + 1.1 * c["prior_removal"]
        + 0.9 * c["lookout"]
        + 0.35 * (c["refusals"] > 0)
    )
    by_rules = rng.random(n) < p_inv
    audited = rng.random(n) < cfg.p_random_audit  # the random audit programme, recorded
    investigated = ~is_open & (by_rules | audited)
    reason = np.where(audited, "random_audit", "rules")
    selection = np.where(investigated, reason, None).astype(object)
    status = c["status"]
    disposition = np.select(
        [
            investigated & (status == 1),
            investigated & (status == 2),
            investigated & c["concern"],
            investigated,
        ],
        [
            "investigated_departed",
            "investigated_lawful",
            "investigated_concern",
            "investigated_no_concern",
        ],
        default="closed_unworked",
    ).astype(object)
    found_departed = (
        ~investigated & (status == 1) & (c["dep_mode"] != "unrecorded") & (rng.random(n) < 0.5)
    )
    disposition[~is_open & found_departed] = "closed_departed"
    closed = np.where(
        investigated, c["investigation"] + rng.integers(0, 40, n) * DAY, c["investigation"]
    )

    # --- earlier leads of open-case persons: a previous trip that was never matched to
    # its departure; they left (they came back), so the truth is departed, no concern.
    pl = np.flatnonzero(c["prior_lead"])
    prev_mask = (t["k"] == 1) & np.isin(t["idx"], pl)
    prev_idx, prev_until = t["idx"][prev_mask], t["admit_until"][prev_mask]
    order = np.argsort(prev_idx)
    prev_idx, prev_until = prev_idx[order], prev_until[order]
    pl_lead = prev_until + rng.integers(30, 75, prev_idx.size) * DAY
    pl_closed = pl_lead + rng.integers(30, 300, prev_idx.size) * DAY
    pl_inv = rng.random(prev_idx.size) < 0.15
    pl_disp = np.where(
        pl_inv,
        "investigated_departed",
        np.where(rng.random(prev_idx.size) < 0.8, "closed_departed", "closed_unworked"),
    ).astype(object)
    pl_ids = fmt_ids("H", c["person_id"][prev_idx], 8, "P")
    prev_i94 = (c["i94"][prev_idx].astype(np.int64) + 1).astype(str).astype(object)

    hist = ~is_open
    prior_leads = pd.DataFrame(
        {
            "_person": np.concatenate([c["person_id"][hist], c["person_id"][prev_idx]]),
            "lead_id": np.concatenate([ids[hist], pl_ids]),
            "surname": np.concatenate([c["family"][hist], c["family"][prev_idx]]),
            "given_name": np.concatenate([c["given"][hist], c["given"][prev_idx]]),
            "dob": np.concatenate([c["birth"][hist], c["birth"][prev_idx]]),
            "i94_number": np.concatenate([c["i94"][hist], prev_i94]),
            "lead_date": np.concatenate([c["lead"][hist], pl_lead]),
            "closed_date": np.concatenate([closed[hist], pl_closed]),
            "disposition": np.concatenate([disposition[hist], pl_disp]),
            "investigation_date": np.concatenate(
                [
                    np.where(investigated[hist], c["investigation"][hist], np.datetime64("NaT")),
                    np.where(pl_inv, pl_closed - 10 * DAY, np.datetime64("NaT")),
                ]
            ),
            # why a lead was investigated: the random audit programme (a uniform sample of
            # historical leads, the only unbiased labels) or the old rules; null if never.
            "selection": np.concatenate(
                [selection[hist], np.where(pl_inv, "rules", None).astype(object)]
            ),
        }
    )

    backlog = pd.DataFrame(
        {
            "_person": c["person_id"][is_open],
            "case_id": ids[is_open],
            "lead_date": c["lead"][is_open],
            "i94_number": c["i94"][is_open],
            "passport_number": c["passport1"][is_open],
            "family_name": c["family"][is_open],
            "given_name": c["given"][is_open],
            "birth_date": c["birth"][is_open],
        }
    )

    age = c["age"]
    truth = pd.DataFrame(
        {
            "case_id": ids,
            "person_id": c["person_id"],
            "is_open": is_open,
            "true_status": c["status_name"],
            "concern": c["concern"],
            "oracle_p": c["oracle"],
            "risk_logit": cfg.concern_intercept + c["risk"],
            "lead_date": c["lead"],
            "admit_until": c["admit_until"],
            "scoring_date": c["scoring"],
            "investigated": investigated,
            "departure_mode": c["dep_mode"],
            "lawful_kind": c["lawful_kind"],
            "citizenship_region": np.array(cfg.regions, dtype=object)[c["region"]],
            "sex": np.where(c["male"], "M", "F").astype(object),
            "age_band": _age_band(age),
        }
    )
    extra = pd.DataFrame(
        {
            "case_id": pl_ids,
            "person_id": c["person_id"][prev_idx],
            "is_open": False,
            "true_status": "departed",
            "concern": False,
            "oracle_p": 0.0,
            "risk_logit": cfg.concern_intercept + c["risk"][prev_idx],
            "lead_date": pl_lead,
            "admit_until": prev_until,
            "scoring_date": np.where(pl_inv, pl_closed - 10 * DAY, pl_closed),
            "investigated": pl_inv,
            "departure_mode": "air_recorded",
            "lawful_kind": None,
            "citizenship_region": np.array(cfg.regions, dtype=object)[c["region"][prev_idx]],
            "sex": np.where(c["male"][prev_idx], "M", "F").astype(object),
            "age_band": _age_band(age[prev_idx]),
        }
    )
    return {
        "backlog": backlog,
        "prior_leads": prior_leads,
        "truth_cases": pd.concat([truth, extra], ignore_index=True),
    }

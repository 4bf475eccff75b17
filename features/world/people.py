"""Persons, their hidden behaviour, their cases and the truth about each case.

One call makes one chunk of persons. Behaviour is latent (true arrests, aliases,
document fraud, ...); the source systems in ``records.py`` then observe it with
gaps and faults. Concern depends only on behaviour plus a hidden factor, never
directly on citizenship, sex or age: those act only through correlated behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.world.config import WorldConfig
from features.world.names import NamePools

__all__ = ["Chunk", "DAY", "fmt_ids", "make_chunk", "sigmoid"]

DAY = np.timedelta64(1, "D")
STATUS = np.array(["in_country", "departed", "lawful"], dtype=object)
VISA_CLASSES = np.array(["B2", "B1", "F1", "H1B", "J1", "WT"], dtype=object)
CLASS_WEIGHTS = np.array([0.42, 0.12, 0.12, 0.10, 0.08, 0.16])
CLASS_STAY_DAYS = np.array([180, 90, 1095, 1095, 365, 90])


def fmt_ids(prefix: str, numbers: np.ndarray, width: int, suffix: str = "") -> np.ndarray:
    """Identifiers like ``A000123456``: prefix + zero-padded number (+ suffix), as objects."""
    numbers = np.asarray(numbers, dtype=np.int64)
    if numbers.size == 0:  # np.char.zfill cannot size an empty array
        return np.empty(0, dtype=object)
    out = np.char.add(prefix, np.char.zfill(numbers.astype(str), width))
    if suffix:
        out = np.char.add(out, suffix)
    return out.astype(object)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, element-wise."""
    return 1.0 / (1.0 + np.exp(-x))


def _dates(
    rng: np.random.Generator, lo: np.ndarray | np.datetime64, hi: np.ndarray | np.datetime64, n: int
) -> np.ndarray:
    lo = np.broadcast_to(np.asarray(lo, dtype="datetime64[D]"), (n,))
    hi = np.broadcast_to(np.asarray(hi, dtype="datetime64[D]"), (n,))
    span = np.maximum((hi - lo).astype(np.int64), 0)
    return lo + (rng.random(n) * (span + 1)).astype(np.int64) * DAY


@dataclass
class Chunk:
    """Column arrays for one chunk of persons (index i) and their primary case."""

    arrays: dict[str, np.ndarray]

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def __len__(self) -> int:
        return len(self.arrays["person_id"])


def make_chunk(
    cfg: WorldConfig, pools: NamePools, rng: np.random.Generator, first_person: int, n: int
) -> Chunk:
    """Draw ``n`` persons starting at global index ``first_person`` with their primary case."""
    snap = np.datetime64(cfg.snapshot_date, "D")
    n_open = cfg.scale.open_cases
    pid = np.arange(first_person, first_person + n, dtype=np.int64)
    is_open = pid < n_open

    region = rng.choice(
        len(cfg.regions), size=n, p=np.array(cfg.region_weights) / sum(cfg.region_weights)
    )
    male = rng.random(n) < 0.56
    age = 18 + rng.gamma(2.2, 7.5, size=n).clip(0, 57)
    birth = snap - (age * 365.25).astype(np.int64) * DAY - rng.integers(0, 365, n) * DAY
    young = age < 30

    # Latent traits. z: antisocial propensity; d: deception; h: hidden network tie that
    # no system records directly (tips hint at it): part of why the oracle beats any model.
    z = rng.normal(size=n)
    d = 0.45 * z + np.sqrt(1 - 0.45**2) * rng.normal(size=n)
    h = rng.normal(size=n)
    # Regions differ in travel and refusal behaviour, not in concern.
    refusal_region = np.array([0.5, 0.2, 0.3, -0.2, -0.6, 0.4, 0.0, 0.3])[region]

    arrests = rng.poisson(np.exp(-2.0 + 0.45 * male + 0.55 * young + 0.85 * z))
    convictions = rng.binomial(arrests, 0.45)
    aliases = np.minimum(rng.poisson(np.exp(-3.3 + 1.1 * d)), 3)
    doc_fraud = rng.random(n) < sigmoid(-5.0 + 1.3 * d)
    prior_removal = rng.random(n) < sigmoid(-4.3 + 0.8 * z)
    true_watch = rng.random(n) < sigmoid(-6.6 + 1.0 * d + 0.7 * z)
    lookout = rng.random(n) < sigmoid(-4.2 + 3.0 * true_watch + 0.6 * d)
    refusals = np.minimum(rng.poisson(np.exp(-1.9 + 0.45 * d + refusal_region)), 4)
    oneway = rng.random(n) < sigmoid(-1.8 + 0.6 * d)
    absconder = rng.random(n) < sigmoid(-4.0 + 0.7 * z)

    risk = (
        1.05 * np.minimum(convictions, 3)
        + 0.45 * np.minimum(arrests - convictions, 3)
        + 2.6 * true_watch
        + 0.85 * aliases
        + 1.4 * doc_fraud
        + 1.0 * prior_removal
        + 0.7 * lookout
        + 1.3 * (oneway & (refusals > 0))  # interaction: neither alone says much
        + 0.45 * absconder
        + 0.5 * h
    )

    # Status: high-risk people leave or regularise less often.
    tilt = 0.30 * (risk - 1.0)
    logits = np.stack(
        [
            np.full(n, np.log(1 - cfg.p_departed - cfg.p_lawful)) + tilt,
            np.full(n, np.log(cfg.p_departed)),
            np.full(n, np.log(cfg.p_lawful)),
        ],
        axis=1,
    )
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    status = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)

    oracle = sigmoid(cfg.concern_intercept + risk) * (status == 0)
    concern = rng.random(n) < oracle

    # Timeline of the primary case.
    vclass = rng.choice(len(VISA_CLASSES), size=n, p=CLASS_WEIGHTS)
    u = rng.beta(1.7, 1.0, size=n)  # the backlog grew over time: recent leads are commoner
    open_lo, open_hi = np.datetime64("2014-01-01"), snap - 45 * DAY
    hist_lo, hist_hi = np.datetime64("2010-01-01"), np.datetime64("2023-06-30")
    lead = np.where(
        is_open,
        open_lo + (u * (open_hi - open_lo).astype(np.int64)).astype(np.int64) * DAY,
        hist_lo + (rng.random(n) * (hist_hi - hist_lo).astype(np.int64)).astype(np.int64) * DAY,
    )
    admit_until = lead - rng.integers(30, 75, n) * DAY
    admit = admit_until - CLASS_STAY_DAYS[vclass] * DAY
    # Historical leads were worked (or closed) within about two years, before the snapshot.
    investigation = np.minimum(lead + rng.integers(60, 720, n) * DAY, snap - 30 * DAY)

    # Where the person's presence in the country ends (for dating their records).
    departure = np.where(
        status == 1,
        _dates(rng, admit_until - 20 * DAY, admit_until + 300 * DAY, n),
        np.datetime64("NaT"),
    )
    scoring = np.where(is_open, snap, investigation)
    # Departures must precede the scoring date to count as evidence at that time.
    departure = np.where(status == 1, np.minimum(departure, scoring - 5 * DAY), departure)
    presence_end = np.where(status == 1, departure, snap)

    mode_names = np.array([m for m, _ in cfg.departure_modes], dtype=object)
    mode_p = np.array([w for _, w in cfg.departure_modes])
    dep_mode = np.where(
        status == 1, mode_names[rng.choice(len(mode_p), size=n, p=mode_p / mode_p.sum())], None
    )
    lawful_kind = np.where(
        status == 2,
        np.array(["extension", "change_of_status", "student"], dtype=object)[
            rng.choice(3, size=n, p=[0.4, 0.35, 0.25])
        ],
        None,
    )
    # Students on F1 are lawful through their programme more often.
    renewed = rng.random(n) < cfg.faults.passport_renewal
    renewal_date = np.where(
        renewed, _dates(rng, admit + 10 * DAY, admit_until + 60 * DAY, n), np.datetime64("NaT")
    )

    given = pools.draw(rng, region, cfg.regions, "given")
    family = pools.draw(rng, region, cfg.regions, "family")
    alias_given = pools.draw(rng, region, cfg.regions, "given")
    alias_family = pools.draw(rng, region, cfg.regions, "family")
    alias_birth = birth + rng.integers(-900, 900, n) * DAY

    has_fin = rng.random(n) < 0.93
    n_prev = np.minimum(rng.poisson(0.7 + 0.4 * (refusals == 0)), 4)
    prior_lead = is_open & (rng.random(n) < cfg.p_prior_lead) & (n_prev > 0)

    works = (status != 1) & (rng.random(n) < np.where(status == 0, 0.55, 0.35))
    asylum = (status == 0) & (rng.random(n) < 0.05 + 0.03 * (region == 5))
    encounters = rng.poisson(np.where(status == 0, np.exp(-2.2 + 0.7 * z), 0.02))
    tips_true = rng.poisson(np.where(status == 0, np.exp(-3.4 + 1.0 * h + 0.5 * true_watch), 0.0))

    seq = pid  # global sequence used to build identifiers that are unique across chunks
    arrays = dict(
        person_id=pid,
        is_open=is_open,
        region=region,
        male=male,
        birth=birth,
        age=age,
        given=given,
        family=family,
        alias_given=alias_given,
        alias_family=alias_family,
        alias_birth=alias_birth,
        arrests=arrests,
        convictions=convictions,
        aliases=aliases,
        doc_fraud=doc_fraud,
        prior_removal=prior_removal,
        true_watch=true_watch,
        lookout=lookout,
        refusals=refusals,
        oneway=oneway,
        absconder=absconder,
        hidden=h,
        risk=risk,
        status=status,
        status_name=STATUS[status],
        oracle=oracle,
        concern=concern,
        vclass=vclass,
        lead=lead,
        admit=admit,
        admit_until=admit_until,
        investigation=investigation,
        scoring=scoring,
        departure=departure,
        presence_end=presence_end,
        dep_mode=dep_mode,
        lawful_kind=lawful_kind,
        renewed=renewed,
        renewal_date=renewal_date,
        has_fin=has_fin,
        n_prev=n_prev,
        prior_lead=prior_lead,
        works=works,
        asylum=asylum,
        encounters=encounters,
        tips_true=tips_true,
        z=z,
        d=d,
        passport1=fmt_ids("P", seq * 7919 % 90_000_000 + 10_000_000, 8),
        passport2=fmt_ids("R", seq * 104729 % 90_000_000 + 10_000_000, 8),
        fin=fmt_ids("FIN", seq * 31 + 1_000_003, 10),
        a_number=fmt_ids("A", seq * 13 + 200_000_000, 9),
        sevis=fmt_ids("N", seq * 17 + 3_000_000, 10),
        i94=fmt_ids("", seq * 10 + 10_000_000_000, 11),
    )
    return Chunk(arrays)

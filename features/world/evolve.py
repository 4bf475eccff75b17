"""The world moves on: one period's new source records, generated from the hidden persons.

Simulation code (it works from the world's own latent persons, i.e. the truth). A period of
``days`` days after the current snapshot brings, for the persons of the open backlog:

- **new encounters and arrests** of people still in the country (``enforcement_encounters``;
  an arrest also books a detention, ``detention_bookings``, and is shared with the criminal
  history system 88% of the time, as at generation), at the yearly rate of the generator's
  encounter model ``exp(-2.2 + 0.7 z)`` scaled to the period;
- **late departure records**: a share (``p_late_departure``) of the people who left by land
  with nothing recorded now appear in the neighbouring country's entry records
  (``partner_entries``), dated at their real departure: information that arrives late;
- **new tips** about people still in the country (``tip_reports``), at the generator's rate
  ``exp(-3.4 + h + 0.5 watch)`` per year scaled to the period, plus the same 2% noise rate.

The persons are rebuilt exactly as ``generate.py`` made them (same chunk plan, same spawned
seeds: ``make_chunk`` is the first draw of each chunk), and a period's draws come from
``SeedSequence([seed, 0x7219, 0xE701, period])``: the same world and period give the same
records byte for byte. New rows get the system's faults and formats (``apply_spec``), record
ids continue each system's numbering, the truth's ``record_person`` gains their owners, and the
manifest's ``snapshot_date`` moves to the end of the period (``config`` keeps the generation
snapshot); ``periods`` lists what each period added.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from features.world.config import FaultRates, Scale, WorldConfig
from features.world.formats import SYSTEM_CODES, apply_spec, to_arrow
from features.world.generate import _pools, sha256_file
from features.world.people import DAY, Chunk, _dates, fmt_ids, make_chunk
from features.world.records import _identity, _passport_at
from triage.atomic import atomic_file
from triage.paths import Paths

__all__ = ["EvolveConfig", "evolve_world", "world_config"]


@dataclasses.dataclass(frozen=True)
class EvolveConfig:
    """Rates of what a period brings."""

    days: int = 91
    p_late_departure: float = 0.15  # per period, of unrecorded land departures
    encounter_scale: float = 1.0  # multiplies the yearly encounter rate
    tip_scale: float = 1.0


def world_config(manifest: dict) -> WorldConfig:
    """The generation config stored in a world's manifest."""
    c = dict(manifest["config"])
    c["scale"] = Scale(**c["scale"])
    c["faults"] = FaultRates(**c["faults"])
    c["snapshot_date"] = dt.date.fromisoformat(c["snapshot_date"])
    c["departure_modes"] = tuple(tuple(m) for m in c["departure_modes"])
    c["regions"] = tuple(c["regions"])
    c["region_weights"] = tuple(c["region_weights"])
    return WorldConfig(**c)


def _open_chunks(cfg: WorldConfig) -> Iterator[Chunk]:
    """The chunks of generate.py that hold open-case persons, rebuilt from their seeds."""
    scale = cfg.scale
    n_prior = round(cfg.p_prior_lead * scale.open_cases * 0.55)
    total = scale.open_cases + max(scale.historical_cases - n_prior, 0)
    starts = list(range(0, total, scale.chunk_persons))
    seeds = np.random.SeedSequence([cfg.seed, 0x7219]).spawn(len(starts))
    for start, seed in zip(starts, seeds, strict=True):
        if start >= scale.open_cases:
            break
        n = min(scale.chunk_persons, total - start)
        yield make_chunk(cfg, _pools(), np.random.default_rng(seed), start, n)


def _period_rows(
    c: Chunk, rng: np.random.Generator, lo: np.datetime64, hi: np.datetime64, ev: EvolveConfig
) -> dict[str, dict[str, np.ndarray]]:
    """Raw rows (with ``_person``) of each system for one chunk and one period."""
    years = ev.days / 365.25
    here = c["is_open"] & (c["status"] == 0)
    n = len(c)
    out: dict[str, dict[str, np.ndarray]] = {}

    # Encounters and arrests.
    rate = np.where(here, np.exp(-2.2 + 0.7 * c["z"]) * years * ev.encounter_scale, 0.0)
    idx = np.repeat(np.arange(n), rng.poisson(rate))
    when = _dates(rng, lo + DAY, hi, idx.size)
    arrest = rng.random(idx.size) < 0.35 + 0.2 * (c["z"][idx] > 1)
    given, family, birth = _identity(c, idx, rng, 0.35)
    fin = np.where(c["has_fin"][idx], c["fin"][idx], None)
    out["enforcement_encounters"] = {
        "_person": c["person_id"][idx],
        "fin": fin,
        "a_number": c["a_number"][idx],
        "surname": family,
        "given_name": given,
        "dob": birth,
        "encounter_date": when,
        "encounter_type": np.array(
            ["traffic", "workplace", "targeted", "collateral"], dtype=object
        )[rng.integers(0, 4, idx.size)],
        "arrested": arrest,
    }
    ai, a_when = idx[arrest], when[arrest]
    out["detention_bookings"] = {
        "_person": c["person_id"][ai],
        "a_number": c["a_number"][ai],
        "fin": np.where(c["has_fin"][ai], c["fin"][ai], None),
        "book_in_date": a_when,
        "book_out_date": a_when + rng.integers(1, 90, ai.size) * DAY,
    }
    shared = rng.random(ai.size) < 0.88
    ci, c_when = ai[shared], a_when[shared]
    given, family, birth = _identity(c, ci, rng, 0.3)
    offence = np.array(["violent", "drug", "fraud", "property", "traffic", "other"], dtype=object)
    out["criminal_history"] = {
        "_person": c["person_id"][ci],
        "fin": np.where(c["has_fin"][ci] & (rng.random(ci.size) < 0.82), c["fin"][ci], None),
        "name_last": family,
        "name_first": given,
        "dob": birth,
        "event_date": c_when,
        "event_type": np.full(ci.size, "arrest", dtype=object),
        "offense_category": offence[rng.choice(6, ci.size, p=[0.15, 0.2, 0.12, 0.18, 0.25, 0.1])],
    }

    # Late departure records: the neighbouring country shares entries it had not sent.
    gone = c["is_open"] & (c["dep_mode"] == "unrecorded")
    di = np.flatnonzero(gone & (rng.random(n) < ev.p_late_departure))
    d_when = c["departure"][di] + rng.integers(0, 2, di.size) * DAY
    out["partner_entries"] = {
        "_person": c["person_id"][di],
        "passport_no": _passport_at(c, di, d_when),
        "surname": c["family"][di],
        "forenames": c["given"][di],
        "dob": c["birth"][di],
        "entry_date": d_when,
        "partner_country": np.array(["CAN", "MEX"], dtype=object)[rng.integers(0, 2, di.size)],
    }

    # New tips: about the hidden network tie, plus noise about ordinary people.
    t_rate = np.where(
        here, np.exp(-3.4 + 1.0 * c["hidden"] + 0.5 * c["true_watch"]) * years * ev.tip_scale, 0.0
    )
    noise = np.where(c["is_open"], rng.random(n) < 0.02 * years, False)
    ti = np.concatenate([np.repeat(np.arange(n), rng.poisson(t_rate)), np.flatnonzero(noise)])
    t_when = _dates(rng, lo + DAY, hi, ti.size)
    age = (
        ((t_when - c["birth"][ti]).astype(np.int64) / 365.25 + rng.normal(0, 2.5, ti.size))
        .round()
        .astype(np.int64)
    )
    out["tip_reports"] = {
        "_person": c["person_id"][ti],
        "subject_name": np.char.add(
            np.char.add(c["given"][ti].astype(str), " "), c["family"][ti].astype(str)
        ).astype(object),
        "approx_age": age,
        "reported_nationality": c["region"][ti],
        "tip_date": t_when,
        "tip_category": np.array(["overstay", "fraud", "threat", "employment"], dtype=object)[
            rng.integers(0, 4, ti.size)
        ],
        "credibility": np.array(["low", "medium", "high"], dtype=object)[
            rng.choice(3, ti.size, p=[0.6, 0.3, 0.1])
        ],
    }
    return out


def _append(path, table: pa.Table) -> None:
    old = pq.read_table(path)
    table = table.select(old.schema.names).cast(old.schema)
    with atomic_file(path, suffix=".parquet") as tmp:
        pq.write_table(pa.concat_tables([old, table]), tmp, compression="zstd")


def evolve_world(paths: Paths, period: int, ev: EvolveConfig = EvolveConfig()) -> dict:
    """Append period ``period``'s new records to the world and move its snapshot.

    Args:
        paths: the world to evolve (its manifest, extracts and truth).
        period: 1 for the first period after generation, and so on (part of the seed).
        ev: what a period brings.

    Returns:
        The period's entry in the manifest: dates and new rows per system.
    """
    manifest = json.loads(paths.world_manifest.read_text())
    cfg = world_config(manifest)
    lo = np.datetime64(manifest["snapshot_date"], "D")
    hi = lo + ev.days * DAY
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x7219, 0xE701, period]))
    rows: dict[str, list[dict[str, np.ndarray]]] = {}
    for chunk in _open_chunks(cfg):
        for system, raw in _period_rows(chunk, rng, lo, hi, ev).items():
            rows.setdefault(system, []).append(raw)
    added: dict[str, int] = {}
    owners = []
    for system in sorted(rows):
        raw = {k: np.concatenate([r[k] for r in rows[system]]) for k in rows[system][0]}
        cols, _ = apply_spec(system, raw, cfg.faults, rng)
        table = to_arrow(cols)
        start = manifest["systems"][system]
        n = table.num_rows
        record_id = pa.array(
            fmt_ids(f"{SYSTEM_CODES[system]}-", np.arange(start + 1, start + n + 1), 9),
            type=pa.string(),
        )
        person = table.column("_person").cast(pa.int64())
        table = table.drop_columns(["_person"]).add_column(0, "record_id", record_id)
        _append(paths.extract(system), table)
        owners.append(
            pa.table(
                {
                    "system": pa.array([system] * n, pa.string()),
                    "record_id": record_id,
                    "person_id": person,
                }
            )
        )
        manifest["systems"][system] = start + n
        added[system] = n
    _append(paths.truth_file("record_person"), pa.concat_tables(owners))
    entry = {"period": period, "from": str(lo), "to": str(hi), "new_rows": added}
    manifest["snapshot_date"] = str(hi)
    manifest.setdefault("periods", []).append(entry)
    for rel in [f"extracts/{s}.parquet" for s in added] + ["truth/record_person.parquet"]:
        manifest["checksums"][rel] = sha256_file(paths.world_dir / rel)
    with atomic_file(paths.world_manifest) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return entry

"""Every rate of the synthetic world, in one typed, frozen config.

The data tests read the same config to check the generated world against it, so
a rate changed here is a rate checked there. Numbers follow the public figures in
DESIGN.md: 40-55% of leads are not real overstays; confirmed concern among real
overstays is rare (0.2-1%); investigations were chosen by old rules.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field

__all__ = ["SCALES", "FaultRates", "Scale", "WorldConfig"]


@dataclass(frozen=True)
class Scale:
    """How many cases a world has, and how they are cut into generation chunks."""

    name: str
    open_cases: int
    historical_cases: int
    chunk_persons: int


SCALES: dict[str, Scale] = {
    "tiny": Scale("tiny", open_cases=2_000, historical_cases=2_400, chunk_persons=5_000),
    "small": Scale("small", open_cases=100_000, historical_cases=90_000, chunk_persons=50_000),
    "full": Scale("full", open_cases=1_200_000, historical_cases=1_050_000, chunk_persons=150_000),
    # Four times the full world (about 4.8M open cases, 120M records): the Spark engine's
    # scale test (issue 19, make bench-spark-x4); generated chunk by chunk like the full world.
    "x4": Scale("x4", open_cases=4_800_000, historical_cases=4_200_000, chunk_persons=150_000),
}


@dataclass(frozen=True)
class FaultRates:
    """Per-record probabilities of each kind of data-quality fault."""

    typo: float = 0.03  # one character substituted, dropped or transposed in a name
    transliteration: float = 0.06  # a spelling variant (ou/u, ph/f, y/i, kh/h, ...)
    swapped_day_month: float = 0.015  # date of birth with day and month exchanged (day <= 12)
    missing_dob: float = 0.01  # date of birth left blank
    missing_optional_id: float = 0.15  # an optional cross-reference id left blank
    duplicate: float = 0.02  # the same record entered twice under a new record id
    malformed: float = 0.002  # unparseable or impossible values: must be quarantined
    passport_renewal: float = 0.22  # person renews passport (new number) before the case trip ends


@dataclass(frozen=True)
class WorldConfig:
    """All rates of the world. Change a rate here and the data tests follow."""

    seed: int = 7
    scale: Scale = field(default_factory=lambda: SCALES["small"])
    snapshot_date: dt.date = dt.date(2025, 6, 30)
    faults: FaultRates = field(default_factory=FaultRates)

    # True status of a lead (before the risk tilt: high-risk people depart less often).
    p_departed: float = 0.33
    p_lawful: float = 0.15
    # How a departed person's exit shows up (the rest leave no record at all).
    departure_modes: tuple[tuple[str, float], ...] = (
        ("air_unmatched", 0.32),  # on a departure manifest, missed at lead time (renewal, typo)
        ("land_recorded", 0.14),  # sparse land-exit record
        ("partner_entry", 0.20),  # entry into the neighbouring country
        ("biometric_exit", 0.12),  # biometric exit pilot
        ("unrecorded", 0.22),  # left by land with nothing recorded
    )
    # Share of in-country overstays with a false departure record (booked, not flown).
    p_false_departure: float = 0.03
    # Concern: logit intercept chosen so that ~0.4% of in-country overstays are confirmed.
    concern_intercept: float = -6.9
    # Historical investigations: old-rule selection plus a small random audit sample.
    p_random_audit: float = 0.05
    # Share of open-case persons who also had an earlier (closed) lead.
    p_prior_lead: float = 0.08
    regions: tuple[str, ...] = (
        "africa",
        "caribbean",
        "central_america",
        "east_asia",
        "europe",
        "middle_east",
        "south_america",
        "south_asia",
    )
    region_weights: tuple[float, ...] = (0.10, 0.09, 0.14, 0.16, 0.15, 0.10, 0.12, 0.14)

    def to_dict(self) -> dict:
        """A JSON-ready view for the manifest."""
        d = asdict(self)
        d["snapshot_date"] = self.snapshot_date.isoformat()
        return d

"""The feature catalog: every column of ``features/cases.parquet`` that a model may use.

Each feature has its name, what it means, the source systems it is computed from, its
family (``status`` evidence, ``risk`` signal, or ``admission``: what the admission record and
the lead alone say, the baseline model's whole input), the SQL table that computes it, the
value it takes when no record exists (0 for counts, None where absence means "unknown") and a
plain-language reason template used in explanations (``reason("arrests", 3)`` ->
"3 arrests recorded in criminal history").

Protected attributes (citizenship region, sex, age band) are listed here too, flagged
``protected=True``: they are written beside the features for the fairness audit and are never
returned by :func:`model_features`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from features.registry import Registry

__all__ = [
    "FEATURES",
    "PROTECTED",
    "Domain",
    "Feature",
    "admission_features",
    "domain",
    "feature",
    "model_features",
    "query_sql",
    "reason",
    "sources",
    "systems_covered",
]


@dataclass(frozen=True)
class Domain:
    """The values a feature can take by its definition (not by what a world happened to hold).

    ``kind`` says why: a ``count`` of records, a 0/1 ``flag``, a number of ``days`` (signed
    where the two dates may come in either order), a ``month``, or a match ``score``.
    """

    kind: str
    low: float
    high: float
    whole: bool = True  # counts, flags, days and months are whole numbers

    def contains(self, value: float) -> bool:
        """True if ``value`` (not None) lies in the domain."""
        return self.low <= value <= self.high and (not self.whole or value == int(value))

    def describe(self) -> str:
        """The domain in words, e.g. ``"a count: a whole number from 0 to 10000"``."""
        number = "a whole number" if self.whole else "a number"
        return f"a {self.kind}: {number} from {self.low:g} to {self.high:g}"


# Generous bounds that still keep a value inside what the model was trained on: 10,000 records
# of one kind on one person, or a hundred years, are already far past any real case.
MAX_COUNT = 10_000
MAX_DAYS = 36_525
_SIGNED_DAYS = {"days_overstayed", "lead_lag_days"}  # the admit-until date may come later


def _domain_of(name: str, meaning: str) -> Domain:
    if meaning.startswith("1 if"):
        return Domain("flag", 0, 1)
    if name == "admit_month":
        return Domain("month", 1, 12)
    if name.endswith("_score"):
        return Domain("score", 0.0, 1.0, whole=False)
    if name in _SIGNED_DAYS:
        return Domain("days", -MAX_DAYS, MAX_DAYS)
    if "days" in name:
        return Domain("days", 0, MAX_DAYS)
    return Domain("count", 0, MAX_COUNT)


@dataclass(frozen=True)
class Feature:
    """One column of the case table, with what a reviewer needs to read it."""

    name: str
    meaning: str
    systems: tuple[str, ...]
    family: str  # "status", "risk", "admission" (or "protected")
    reason: str  # str.format template with {value}
    table: str  # the features_*.sql query that computes it
    fill: float | None = 0  # value when no record exists
    protected: bool = False
    dtype: str = "float"
    reason_zero: str | None = None  # text for a 0/1 flag that is 0


def _f(name, family, table, systems, meaning, reason, fill=0, zero=None) -> Feature:
    systems = tuple(systems.split()) if isinstance(systems, str) else tuple(systems)
    return Feature(name, meaning, systems, family, reason, table, fill, reason_zero=zero)


SQL_DIR = Path(__file__).with_name("sql")

_A, _S, _R = "admission", "status", "risk"
_ADM = "admissions"

FEATURES: tuple[Feature, ...] = (
    # --- admission: the admission record and the lead alone ---------------------------
    *(
        _f(
            f"admit_class_{c.lower()}",
            _A,
            "features_admission",
            _ADM,
            f"1 if admitted in class {c}",
            f"admitted in class {c}",
            zero=f"not admitted in class {c}",
        )
        for c in ("B1", "B2", "F1", "H1B", "J1", "WT")
    ),
    _f(
        "stay_days",
        _A,
        "features_admission",
        _ADM,
        "days between admission and admit-until date",
        "admitted for {value:.0f} days",
        None,
    ),
    _f(
        "days_overstayed",
        _A,
        "features_admission",
        _ADM,
        "days from the admit-until date to the scoring date",
        "{value:.0f} days past the admit-until date",
        None,
    ),
    _f(
        "lead_age_days",
        _A,
        "features_admission",
        (),
        "days from the lead to the scoring date",
        "the lead is {value:.0f} days old",
        None,
    ),
    _f(
        "lead_lag_days",
        _A,
        "features_admission",
        _ADM,
        "days from the admit-until date to the lead",
        "the lead came {value:.0f} days after admit-until",
        None,
    ),
    _f(
        "admit_month",
        _A,
        "features_admission",
        _ADM,
        "calendar month of the admission",
        "admitted in month {value:.0f}",
        None,
    ),
    _f(
        "admission_missing",
        _A,
        "features_admission",
        _ADM,
        "1 if the lead's I-94 number matches no valid admission record",
        "no valid admission record for the lead's I-94 number",
        zero="admission record found for the lead's I-94 number",
    ),
    # --- status evidence ---------------------------------------------------------------
    _f(
        "departure_records",
        _S,
        "features_status",
        "departure_manifests",
        "departure manifest records after the admission",
        "{value:.0f} departures recorded on carrier manifests after admission",
    ),
    _f(
        "partner_entries",
        _S,
        "features_status",
        "partner_entries",
        "entries into the neighbouring country after the admission",
        "{value:.0f} entries into the neighbouring country after admission",
    ),
    _f(
        "biometric_exits",
        _S,
        "features_status",
        "biometric_exits",
        "biometric exits after the admission",
        "{value:.0f} biometric exits recorded",
    ),
    _f(
        "land_exits",
        _S,
        "features_status",
        "land_exits",
        "land exits after the admission",
        "{value:.0f} land exits recorded",
    ),
    _f(
        "reentries",
        _S,
        "features_status",
        "arrival_manifests",
        "later arrivals (an implied departure)",
        "{value:.0f} later arrivals (so the person had left)",
        zero="no later arrival recorded",
    ),
    _f(
        "days_since_exit",
        _S,
        "features_status",
        "departure_manifests partner_entries biometric_exits land_exits arrival_manifests",
        "days since the latest recorded or implied exit",
        "last recorded exit {value:.0f} days ago",
        None,
    ),
    _f(
        "activity_after_exit",
        _S,
        "features_status",
        "employment_checks address_changes enforcement_encounters criminal_history "
        "detention_bookings benefit_applications asylum_filings court_orders",
        "in-country records dated after the latest exit (false departure records)",
        "{value:.0f} in-country records after the latest recorded exit",
    ),
    _f(
        "benefit_pending",
        _S,
        "features_status",
        "benefit_applications benefit_decisions",
        "extension or change-of-status filings made in time and not yet decided",
        "{value:.0f} pending extension or change-of-status applications",
    ),
    _f(
        "benefit_approved",
        _S,
        "features_status",
        "benefit_applications benefit_decisions",
        "approved benefit applications",
        "{value:.0f} approved benefit applications",
    ),
    _f(
        "benefit_denied",
        _S,
        "features_status",
        "benefit_applications benefit_decisions",
        "denied benefit applications",
        "{value:.0f} denied benefit applications",
    ),
    _f(
        "late_filings",
        _S,
        "features_status",
        "benefit_applications",
        "benefit applications filed after the admit-until date",
        "{value:.0f} applications filed after the admit-until date",
    ),
    _f(
        "student_active",
        _S,
        "features_status",
        "student_records",
        "active student records whose programme ends after the scoring date",
        "{value:.0f} active student records with a programme ending later",
    ),
    _f(
        "student_ended",
        _S,
        "features_status",
        "student_records",
        "student records completed or terminated",
        "{value:.0f} student programmes ended",
    ),
    _f(
        "work_permit_valid",
        _S,
        "features_status",
        "work_authorizations",
        "employment authorization cards valid on the scoring date",
        "{value:.0f} valid work permits",
    ),
    _f(
        "asylum_claims",
        _S,
        "features_status",
        "asylum_filings",
        "asylum claims filed",
        "{value:.0f} asylum claims filed",
    ),
    _f(
        "activity_after_until",
        _S,
        "features_status",
        "employment_checks address_changes enforcement_encounters criminal_history "
        "detention_bookings benefit_applications asylum_filings court_orders",
        "in-country records dated after the admit-until date",
        "{value:.0f} in-country records after the admit-until date",
    ),
    _f(
        "employment_after_until",
        _S,
        "features_status",
        "employment_checks",
        "employment checks after the admit-until date",
        "{value:.0f} employment checks after the admit-until date",
    ),
    _f(
        "address_after_until",
        _S,
        "features_status",
        "address_changes",
        "address changes after the admit-until date",
        "{value:.0f} address changes after the admit-until date",
    ),
    _f(
        "days_since_activity",
        _S,
        "features_status",
        "employment_checks address_changes enforcement_encounters criminal_history "
        "detention_bookings benefit_applications asylum_filings court_orders",
        "days since the latest in-country record",
        "last seen in the country {value:.0f} days ago",
        None,
    ),
    # --- risk: criminal history --------------------------------------------------------
    _f(
        "arrests",
        _R,
        "features_criminal",
        "criminal_history",
        "arrests recorded",
        "{value:.0f} arrests recorded in criminal history",
    ),
    _f(
        "convictions",
        _R,
        "features_criminal",
        "criminal_history",
        "convictions recorded",
        "{value:.0f} convictions recorded in criminal history",
    ),
    _f(
        "arrests_non_traffic",
        _R,
        "features_criminal",
        "criminal_history",
        "arrests for offences other than traffic",
        "{value:.0f} arrests for non-traffic offences",
    ),
    _f(
        "convictions_violent_drug",
        _R,
        "features_criminal",
        "criminal_history",
        "convictions for violent or drug offences",
        "{value:.0f} violent or drug convictions",
    ),
    *(
        _f(
            f"{cat}_offences",
            _R,
            "features_criminal",
            "criminal_history",
            f"criminal history events (arrest or conviction) for {cat} offences",
            "{value:.0f} " + cat + " offence records in criminal history",
        )
        for cat in ("violent", "drug", "fraud", "property", "traffic")
    ),
    _f(
        "days_since_arrest",
        _R,
        "features_criminal",
        "criminal_history",
        "days since the latest arrest",
        "last arrested {value:.0f} days ago",
        None,
    ),
    # --- risk: identity and documents --------------------------------------------------
    _f(
        "alias_enrollments",
        _R,
        "features_identity",
        "biometric_enrollments",
        "fingerprint enrolments of the same person under another identity",
        "{value:.0f} fingerprint enrolments under another identity",
    ),
    _f(
        "alias_records",
        _R,
        "features_identity",
        "biometric_enrollments enforcement_encounters criminal_history",
        "records of the same person under another date of birth",
        "{value:.0f} records under an alias",
    ),
    _f(
        "alias_identities",
        _R,
        "features_identity",
        "biometric_enrollments enforcement_encounters criminal_history",
        "distinct alias dates of birth",
        "{value:.0f} alias identities (other dates of birth)",
    ),
    _f(
        "doc_reports",
        _R,
        "features_identity",
        "lost_stolen_documents",
        "lost or stolen reports on the person's travel documents",
        "{value:.0f} reports of the person's passports lost or stolen",
    ),
    _f(
        "doc_used_after_report",
        _R,
        "features_identity",
        "lost_stolen_documents arrival_manifests admissions departure_manifests",
        "passports used to travel after being reported lost or stolen",
        "{value:.0f} passports used to travel after being reported lost or stolen",
    ),
    _f(
        "doc_reported_then_replaced",
        _R,
        "features_identity",
        "lost_stolen_documents arrival_manifests admissions departure_manifests",
        "passports reported lost and not used again (the benign renewal pattern)",
        "{value:.0f} passports reported lost before a renewal",
    ),
    _f(
        "passports_used",
        _R,
        "features_identity",
        "arrival_manifests admissions departure_manifests",
        "distinct passports used to travel",
        "travelled on {value:.0f} different passports",
    ),
    _f(
        "visas_issued",
        _R,
        "features_identity",
        "consular_visas",
        "visas issued",
        "{value:.0f} visas issued",
    ),
    _f(
        "prior_admissions",
        _R,
        "features_identity",
        "admissions",
        "admissions before this one",
        "{value:.0f} earlier admissions",
    ),
    # --- risk: enforcement -------------------------------------------------------------
    _f(
        "encounters",
        _R,
        "features_enforcement",
        "enforcement_encounters",
        "immigration enforcement encounters",
        "{value:.0f} enforcement encounters",
    ),
    _f(
        "encounter_arrests",
        _R,
        "features_enforcement",
        "enforcement_encounters",
        "encounters that ended in arrest",
        "{value:.0f} immigration arrests",
    ),
    _f(
        "detentions",
        _R,
        "features_enforcement",
        "detention_bookings",
        "detention bookings",
        "{value:.0f} detention bookings",
    ),
    _f(
        "detention_days",
        _R,
        "features_enforcement",
        "detention_bookings",
        "days spent in detention",
        "{value:.0f} days in detention",
    ),
    _f(
        "court_hearings",
        _R,
        "features_enforcement",
        "court_orders",
        "immigration court hearings",
        "{value:.0f} immigration court hearings",
    ),
    _f(
        "removal_orders_in_absentia",
        _R,
        "features_enforcement",
        "court_orders",
        "removal orders issued in absentia (did not appear)",
        "{value:.0f} removal orders issued in absentia",
    ),
    _f(
        "relief_granted",
        _R,
        "features_enforcement",
        "court_orders",
        "court orders granting relief",
        "{value:.0f} grants of relief by the court",
    ),
    _f(
        "prior_removals",
        _R,
        "features_enforcement",
        "prior_removals",
        "earlier removals",
        "{value:.0f} earlier removals",
    ),
    _f(
        "days_since_removal",
        _R,
        "features_enforcement",
        "prior_removals",
        "days since the latest removal",
        "last removed {value:.0f} days ago",
        None,
    ),
    # --- risk: screening and travel ----------------------------------------------------
    _f(
        "watchlist_hits",
        _R,
        "features_screening",
        "watchlist_hits",
        "name-screening hits (most are false)",
        "{value:.0f} watchlist name hits",
    ),
    _f(
        "watchlist_max_score",
        _R,
        "features_screening",
        "watchlist_hits",
        "highest watchlist match score",
        "watchlist match score up to {value:.2f}",
        None,
    ),
    _f(
        "watchlist_hits_above_90",
        _R,
        "features_screening",
        "watchlist_hits",
        "watchlist hits with match score above 0.9",
        "{value:.0f} strong watchlist matches (score above 0.9)",
    ),
    _f(
        "lookouts",
        _R,
        "features_screening",
        "border_lookouts",
        "border lookouts",
        "{value:.0f} border lookouts",
    ),
    _f(
        "secondary_inspections",
        _R,
        "features_screening",
        "border_lookouts",
        "lookouts that led to secondary inspection",
        "{value:.0f} secondary inspections at the border",
    ),
    _f(
        "intel_lookouts",
        _R,
        "features_screening",
        "border_lookouts",
        "intelligence lookouts",
        "{value:.0f} intelligence lookouts",
    ),
    _f(
        "visa_refusals",
        _R,
        "features_screening",
        "visa_refusals",
        "visa refusals",
        "{value:.0f} earlier visa refusals",
    ),
    _f(
        "refusals_misrepresentation",
        _R,
        "features_screening",
        "visa_refusals",
        "visa refusals for misrepresentation (212(a)(6)(C))",
        "{value:.0f} visa refusals for misrepresentation",
    ),
    _f(
        "bookings",
        _R,
        "features_screening",
        "travel_reservations",
        "travel bookings",
        "{value:.0f} travel bookings",
    ),
    _f(
        "one_way_bookings",
        _R,
        "features_screening",
        "travel_reservations",
        "one-way bookings",
        "{value:.0f} one-way bookings",
    ),
    _f(
        "booked_not_flown",
        _R,
        "features_screening",
        "travel_reservations",
        "bookings not flown",
        "{value:.0f} bookings never flown",
    ),
    _f(
        "one_way_after_refusal",
        _R,
        "features_screening",
        "visa_refusals travel_reservations",
        "1 if the person both had a visa refused and booked one-way travel",
        "one-way travel by a person once refused a visa",
        zero="no one-way travel after a visa refusal",
    ),
    # --- risk: earlier leads, tips, employment ------------------------------------------
    _f(
        "prior_leads",
        _R,
        "features_leads",
        "prior_leads",
        "other overstay leads on the person closed before the scoring date",
        "{value:.0f} earlier overstay leads",
    ),
    _f(
        "prior_leads_investigated",
        _R,
        "features_leads",
        "prior_leads",
        "earlier leads that were investigated",
        "{value:.0f} earlier leads investigated",
    ),
    _f(
        "prior_leads_concern",
        _R,
        "features_leads",
        "prior_leads",
        "earlier leads that confirmed a concern",
        "{value:.0f} earlier leads confirmed a concern",
    ),
    _f(
        "prior_leads_departed",
        _R,
        "features_leads",
        "prior_leads",
        "earlier leads closed because the person had left",
        "{value:.0f} earlier leads closed as departed",
    ),
    _f(
        "tips",
        _R,
        "features_leads",
        "tip_reports",
        "public tips (very noisy)",
        "{value:.0f} public tips",
    ),
    _f(
        "tips_high",
        _R,
        "features_leads",
        "tip_reports",
        "tips rated highly credible",
        "{value:.0f} highly credible tips",
    ),
    _f(
        "tips_medium",
        _R,
        "features_leads",
        "tip_reports",
        "tips rated of medium credibility",
        "{value:.0f} tips of medium credibility",
    ),
    _f(
        "tips_threat",
        _R,
        "features_leads",
        "tip_reports",
        "tips reporting a threat",
        "{value:.0f} tips reporting a threat",
    ),
    _f(
        "employment_checks",
        _R,
        "features_leads",
        "employment_checks",
        "employer eligibility checks",
        "{value:.0f} employment eligibility checks",
    ),
    _f(
        "employment_nonconfirmations",
        _R,
        "features_leads",
        "employment_checks",
        "checks with a tentative non-confirmation",
        "{value:.0f} employment checks returned a non-confirmation",
    ),
    _f(
        "address_changes",
        _R,
        "features_leads",
        "address_changes",
        "change-of-address filings",
        "{value:.0f} changes of address",
    ),
)

PROTECTED: tuple[Feature, ...] = tuple(
    Feature(name, meaning, systems, "protected", "", "features_protected", None, True, "str")
    for name, meaning, systems in (
        (
            "citizenship_region",
            "region of the nationality the systems record",
            ("consular_visas", "visa_refusals", "lost_stolen_documents"),
        ),
        ("sex", "sex recorded on visa records", ("consular_visas",)),
        ("age_band", "age band at the scoring date", ("admissions",)),
    )
)

_BY_NAME = {f.name: f for f in FEATURES + PROTECTED}


def feature(name: str) -> Feature:
    """The catalog entry of ``name`` (KeyError if unknown)."""
    return _BY_NAME[name]


def sources(name: str, registry: Registry | None = None) -> tuple[str, ...]:
    """The source systems feature ``name`` is computed from, under ``registry``.

    The catalog names the world's systems. The feature queries read an event kind's records
    through its ``ev_<kind>`` view, the union of every system that declares ``feeds: [kind]``,
    so a registry's own feeders of the kinds a listed system feeds are sources too (a 28th
    encounters system is behind ``encounters``). Protected attributes read their systems
    directly and keep the catalog's list. KeyError if ``name`` is unknown.
    """
    f = _BY_NAME[name]
    if registry is None or f.protected:
        return f.systems
    from features.registry import world_registry

    world = world_registry().systems
    kinds = [k for s in f.systems if s in world for k in world[s].feeds]
    extra = [s for k in kinds for s in registry.feeders(k)]
    return tuple(dict.fromkeys([*f.systems, *extra]))


def domain(name: str) -> Domain:
    """The declared domain of model feature ``name`` (KeyError if unknown or protected)."""
    f = _BY_NAME[name]
    if f.protected:
        raise KeyError(name)
    return _domain_of(f.name, f.meaning)


def model_features() -> list[str]:
    """Model input columns in a fixed order: every non-protected feature."""
    return [f.name for f in FEATURES if not f.protected]


def admission_features() -> list[str]:
    """The admission-only family: the baseline model's whole input."""
    return [f.name for f in FEATURES if f.family == "admission"]


def reason(name: str, value: float) -> str:
    """Plain-language text for a feature value, e.g. ``"3 arrests recorded in criminal history"``."""
    f = _BY_NAME[name]
    if value is None or value != value:  # None or NaN: no record
        return f"{f.meaning}: no record"
    if value == 0 and f.reason_zero:
        return f.reason_zero
    if value == 0 and f.reason.startswith("{value:.0f} "):  # "no arrests recorded ..."
        return "no " + f.reason.removeprefix("{value:.0f} ")
    return f.reason.format(value=value)


def query_sql(name: str) -> str:
    """The text of a named query in ``features/sql/`` (one SELECT, named for the table it makes)."""
    return (SQL_DIR / f"{name}.sql").read_text()


def systems_covered() -> set[str]:
    """Source systems that at least one model feature is computed from."""
    return {s for f in FEATURES for s in f.systems}

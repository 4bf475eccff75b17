"""Each system's own formats and its faults.

A system's raw rows (clean names, ``datetime64`` dates, region codes) become its
extract: names faulted (typos, transliteration), dates of birth swapped or blank,
optional ids blank, a few duplicate and malformed rows, dates rendered in the
system's own format, citizenship as a country code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.world.config import FaultRates
from features.world.faults import add_typos, blank, swap_day_month, transliterate
from triage.reference import COUNTRIES

__all__ = ["COUNTRIES", "SPECS", "SYSTEM_CODES", "SystemSpec", "apply_spec", "to_arrow"]

SYSTEM_CODES: dict[str, str] = {
    "consular_visas": "CV",
    "visa_refusals": "VR",
    "arrival_manifests": "AM",
    "admissions": "AD",
    "departure_manifests": "DM",
    "land_exits": "LE",
    "partner_entries": "PE",
    "biometric_enrollments": "BE",
    "biometric_exits": "BX",
    "student_records": "SR",
    "benefit_applications": "BA",
    "benefit_decisions": "BD",
    "asylum_filings": "AF",
    "work_authorizations": "WA",
    "employment_checks": "EC",
    "enforcement_encounters": "EE",
    "criminal_history": "CH",
    "detention_bookings": "DB",
    "court_orders": "CO",
    "prior_removals": "PR",
    "watchlist_hits": "WH",
    "lost_stolen_documents": "LS",
    "border_lookouts": "BL",
    "address_changes": "AC",
    "travel_reservations": "TR",
    "tip_reports": "TP",
    "prior_leads": "PL",
}


@dataclass(frozen=True)
class SystemSpec:
    """How a system writes its records and which faults it suffers."""

    names: tuple[str, ...] = ()
    dob: str | None = None
    dob_format: str | None = (
        None  # strftime format if the system stores DOB as text; "int" for YYYYMMDD
    )
    countries: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    malformed: tuple[str, ...] = ()  # columns that a malformed row corrupts
    duplicates: bool = True
    combine: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # new col: (a, sep, b)


SPECS: dict[str, SystemSpec] = {
    "consular_visas": SystemSpec(
        ("surname", "given_names"),
        "dob",
        "%Y-%m-%d",
        ("nationality",),
        malformed=("dob", "passport_no"),
    ),
    "visa_refusals": SystemSpec(
        ("family", "given"),
        "birth",
        "%d/%m/%Y",
        ("citizenship",),
        malformed=("birth",),
        combine={"applicant_name": ("family", ", ", "given")},
    ),
    "arrival_manifests": SystemSpec(
        ("last_name", "first_name"), "birth_dt", None, malformed=("birth_dt", "doc_number")
    ),
    "admissions": SystemSpec(
        ("family_name", "given_name"), "birth_date", None, malformed=("i94_number", "admit_until")
    ),
    "departure_manifests": SystemSpec(("lname", "fname"), "dob", "int", malformed=("dob",)),
    "land_exits": SystemSpec(("full_name",), "birth_date", "%m/%d/%Y", malformed=("birth_date",)),
    "partner_entries": SystemSpec(
        ("surname", "forenames"), "dob", "%d.%m.%Y", malformed=("dob", "passport_no")
    ),
    "biometric_enrollments": SystemSpec(
        ("surname", "given"), "dob", None, optional=("doc_number",), malformed=("fin",)
    ),
    "biometric_exits": SystemSpec(malformed=("fin",)),
    "student_records": SystemSpec(
        ("last_name", "first_name"),
        "birth_date",
        None,
        optional=("passport",),
        malformed=("sevis_id",),
    ),
    "benefit_applications": SystemSpec(
        ("family_name", "given_name"),
        "date_of_birth",
        None,
        optional=("i94_number",),
        malformed=("receipt_number",),
    ),
    "benefit_decisions": SystemSpec(malformed=("receipt",)),
    "asylum_filings": SystemSpec(
        ("applicant_surname", "applicant_given"), "applicant_dob", None, malformed=("a_number",)
    ),
    "work_authorizations": SystemSpec(malformed=("a_number",)),
    "employment_checks": SystemSpec(
        ("employee_last", "employee_first"), "employee_dob", None, malformed=("employee_dob",)
    ),
    "enforcement_encounters": SystemSpec(
        ("surname", "given_name"),
        "dob",
        None,
        optional=("a_number",),
        malformed=("encounter_date",),
    ),
    "criminal_history": SystemSpec(("name_last", "name_first"), "dob", None, malformed=("dob",)),
    "detention_bookings": SystemSpec(malformed=("a_number",)),
    "court_orders": SystemSpec(malformed=("a_number",)),
    "prior_removals": SystemSpec(malformed=("removal_date",)),
    "watchlist_hits": SystemSpec(
        ("screened_name",), "screened_dob", None, malformed=("match_score",)
    ),
    "lost_stolen_documents": SystemSpec(countries=("issuing_country",), malformed=("doc_number",)),
    "border_lookouts": SystemSpec(
        ("subject_name",), "subject_dob", None, malformed=("subject_dob",)
    ),
    "address_changes": SystemSpec(("full_name",), "dob", None, malformed=("dob",)),
    "travel_reservations": SystemSpec(
        ("pax_surname", "pax_given"), "pax_dob", None, malformed=("pax_dob",)
    ),
    "tip_reports": SystemSpec(
        ("subject_name",), None, None, ("reported_nationality",), malformed=("approx_age",)
    ),
    "prior_leads": SystemSpec(
        ("surname", "given_name"), "dob", None, malformed=("lead_date",), duplicates=False
    ),
}


def _corrupt(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A value no valid record could hold, of the column's own kind."""
    n = len(values)
    if values.dtype.kind == "M":  # impossible dates: centuries off
        return np.where(
            rng.random(n) < 0.5, np.datetime64("1800-01-01"), np.datetime64("2099-12-31")
        )
    if values.dtype.kind == "f":
        return np.full(n, 7.5)  # a match score out of [0, 1]
    if values.dtype.kind in "iu":
        return np.full(n, -1, dtype=values.dtype)
    return np.array(["#ERR", "", "0000", "N/A"], dtype=object)[rng.integers(0, 4, n)]


def _format_dates(values: np.ndarray, fmt: str) -> pa.Array:
    arr = pa.array(values.astype("datetime64[s]"), type=pa.timestamp("s"))
    if fmt == "int":
        return pc.cast(pc.strftime(arr, format="%Y%m%d"), pa.int64())
    return pc.strftime(arr, format=fmt)


def apply_spec(
    system: str, raw: dict[str, np.ndarray], faults: FaultRates, rng: np.random.Generator
) -> tuple[dict, dict[str, int]]:
    """Turn a system's clean rows into its extract rows; also count the faults applied."""
    spec = SPECS[system]
    cols = {k: np.asarray(v) for k, v in raw.items()}
    n = len(cols["_person"])
    counts = {"rows_clean": n, "name_fields": 0}
    if spec.duplicates and n:
        dup = np.flatnonzero(rng.random(n) < faults.duplicate)
        order = np.sort(
            np.concatenate([np.arange(n), dup])
        )  # a duplicate sits next to its original
        cols = {k: v[order] for k, v in cols.items()}
        counts["duplicate"] = int(dup.size)
        n = len(order)
    counts["name_fields"] = n * len(spec.names)
    for name_col in spec.names:
        cols[name_col], m1 = transliterate(cols[name_col], faults.transliteration, rng)
        cols[name_col], m2 = add_typos(cols[name_col], faults.typo, rng)
        counts["transliteration"] = counts.get("transliteration", 0) + int(m1.sum())
        counts["typo"] = counts.get("typo", 0) + int(m2.sum())
    if spec.dob:
        cols[spec.dob], m = swap_day_month(cols[spec.dob], faults.swapped_day_month, rng)
        counts["swapped_day_month"] = int(m.sum())
        cols[spec.dob], m = blank(cols[spec.dob], faults.missing_dob, rng)
        counts["missing_dob"] = int(m.sum())
    for col in spec.optional:
        cols[col], m = blank(cols[col], faults.missing_optional_id, rng)
        counts["missing_optional_id"] = counts.get("missing_optional_id", 0) + int(m.sum())
    for new, (a, sep, b) in spec.combine.items():
        left = cols.pop(a).astype(str)
        cols[new] = np.char.add(
            np.char.add(np.char.upper(left) if sep == ", " else left, sep), cols.pop(b).astype(str)
        ).astype(object)
    for col in spec.countries:
        codes = cols[col].astype(int)
        pick = rng.integers(0, 5, n)
        cols[col] = np.array(
            [COUNTRIES[r][p % len(COUNTRIES[r])] for r, p in zip(codes, pick, strict=True)],
            dtype=object,
        )
    malformed = np.zeros(n, bool)
    if spec.malformed and n:
        malformed = rng.random(n) < faults.malformed
        which = rng.integers(0, len(spec.malformed), n)
        for j, col in enumerate(spec.malformed):
            m = malformed & (which == j)
            if m.any():
                v = (
                    cols[col].copy()
                    if cols[col].dtype.kind != "O"
                    else cols[col].astype(object).copy()
                )
                v[m] = _corrupt(v[m], rng)
                cols[col] = v
    counts["malformed"] = int(malformed.sum())
    if spec.dob_format and spec.dob:
        cols[spec.dob] = _format_dates(cols[spec.dob], spec.dob_format)
    return cols, counts


def to_arrow(data: pd.DataFrame | dict) -> pa.Table:
    """Convert with explicit, chunk-independent types (an all-null column stays a string)."""
    items = (
        data.items() if isinstance(data, dict) else ((c, data[c].to_numpy()) for c in data.columns)
    )
    arrays, names = [], []
    for col, v in items:
        if isinstance(v, pa.Array | pa.ChunkedArray):
            arr = v
        else:
            v = np.asarray(v)
            kind = v.dtype.kind
            if kind == "M":
                arr = pa.array(v.astype("datetime64[D]"), type=pa.date32())
            elif kind == "b":
                arr = pa.array(v, type=pa.bool_())
            elif kind in "iu":
                arr = pa.array(v, type=pa.int64())
            elif kind == "f":
                arr = pa.array(v, type=pa.float64())
            else:
                arr = pa.array(v.astype(object), type=pa.string(), from_pandas=True)
        arrays.append(arr)
        names.append(col)
    return pa.Table.from_arrays(arrays, names=names)

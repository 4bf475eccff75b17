"""The declared schema of each of the 27 source-system extracts.

A schema says, per column, what a valid value looks like (identifier format, date
format and range, numeric range, allowed categories) and what role the column plays
downstream: which strong identifier it carries (``key``), which columns hold the
person's name and date of birth, and which date is the record's main event date.
``features/ingest.py`` turns these declarations into SQL; the linker reads the
``key`` roles, so a new system or column is a change here, not in code.

Date ranges depend on the world's snapshot date: birth dates 1900-01-01..snapshot,
event dates 1990-01-01..snapshot + 2 years (programme end dates and card expiries
reach into the future).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from triage.reference import COUNTRIES

__all__ = ["KEYS", "SCHEMAS", "Column", "SystemSchema", "country_regions"]

Kind = Literal["id", "name", "full_name", "date", "int", "float", "category", "bool", "text"]
DateRange = Literal["birth", "event"]

# Strong identifiers: two records holding the same value belong to the same person.
KEYS: tuple[str, ...] = ("fin", "a_number", "passport", "i94", "sevis", "receipt")

# Identifier formats (after upper-casing and stripping spaces and hyphens).
PASSPORT = r"^[A-Z][0-9]{8}$"
FIN = r"^FIN[0-9]{10}$"
A_NUMBER = r"^A[0-9]{9}$"
I94 = r"^[0-9]{11}$"
SEVIS = r"^N[0-9]{10}$"
RECEIPT = r"^[A-Z]{3}[0-9]{10}$"

_COUNTRY_CODES: tuple[str, ...] = tuple(sorted({c for region in COUNTRIES for c in region}))


@dataclass(frozen=True)
class Column:
    """One column of an extract and the rule a valid value obeys.

    Attributes:
        name: column name in the extract.
        kind: ``id`` (string matching ``pattern``), ``name`` / ``full_name`` (must hold a
            letter), ``date`` (a DATE, or text in ``fmt``, or an integer ``yyyymmdd``
            when ``fmt == "int"``), ``int`` / ``float`` (within ``lo``..``hi``),
            ``category`` (one of ``values``), ``bool`` or free ``text``.
        required: a null (or blank) value sends the row to quarantine.
        pattern: regular expression an ``id`` must match.
        fmt: strptime format of a text date, ``"int"`` for ``yyyymmdd`` numbers.
        range: ``birth`` or ``event``: the plausible span of a date.
        lo: smallest allowed number.
        hi: largest allowed number.
        values: allowed categories.
        key: the strong identifier this column carries (one of ``KEYS``), if any.
    """

    name: str
    kind: Kind
    required: bool = True
    pattern: str | None = None
    fmt: str | None = None
    range: DateRange = "event"
    lo: float | None = None
    hi: float | None = None
    values: tuple[str, ...] = ()
    key: str | None = None


@dataclass(frozen=True)
class SystemSchema:
    """A system's columns plus the roles the linker and the features rely on.

    Attributes:
        name: system name (``triage.paths.SYSTEMS``).
        code: record-id prefix, e.g. ``AD`` in ``AD-000000001``.
        columns: declared columns (``record_id`` is implicit and always checked).
        event_date: the record's main date (arrival, filing, hit, ...).
        event_label: how the summary names that date.
        family: column of the family name; ``given``: of the given names;
        full_name: a one-field name (``"FAMILY, Given"`` or ``"Given Family"``).
        birth_date: column of the date of birth.
        citizenship: column of a country code of citizenship (compared as its region).
        approx_age: column of an estimated age in years (when no date of birth is known).
        doc_last4: column of the last four characters of a travel document.
        summary: columns shown (as ``column value``) in a record's one-line summary.
    """

    name: str
    code: str
    columns: tuple[Column, ...]
    event_date: str
    event_label: str
    family: str | None = None
    given: str | None = None
    full_name: str | None = None
    birth_date: str | None = None
    citizenship: str | None = None
    approx_age: str | None = None
    doc_last4: str | None = None
    summary: tuple[str, ...] = field(default_factory=tuple)

    def column(self, name: str) -> Column:
        """The declared column called ``name``."""
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"{self.name} has no column {name!r}")

    @property
    def key_columns(self) -> dict[str, str]:
        """Column name -> strong key type, for the columns that carry one."""
        return {c.name: c.key for c in self.columns if c.key}

    @property
    def has_identity(self) -> bool:
        """Whether records carry a name (so the probabilistic linker can compare them)."""
        return bool(self.family or self.full_name)


def _id(name: str, pattern: str, key: str | None = None, required: bool = True) -> Column:
    return Column(name, "id", required, pattern=pattern, key=key)


def _dob(name: str, fmt: str | None = None) -> Column:
    # A blank date of birth is a known fault of every system: allowed, not quarantined.
    return Column(name, "date", required=False, fmt=fmt, range="birth")


def _date(name: str, required: bool = True) -> Column:
    return Column(name, "date", required, range="event")


def _cat(name: str, *values: str) -> Column:
    return Column(name, "category", values=values)


def _country(name: str) -> Column:
    return Column(name, "category", values=_COUNTRY_CODES)


def _names(family: str, given: str) -> tuple[Column, Column]:
    return Column(family, "name"), Column(given, "name")


_VISA_CLASSES = ("B2", "B1", "F1", "H1B", "J1", "WT")

# A declarative table, kept one system per paragraph for reading (ruff would explode it).
# fmt: off
_SCHEMA_LIST: tuple[SystemSchema, ...] = (
    SystemSchema(
        "consular_visas", "CV",
        (_id("visa_foil", r"^V[0-9]{9}$"), _id("passport_no", PASSPORT, "passport"),
         *_names("surname", "given_names"), _dob("dob", "%Y-%m-%d"), _country("nationality"),
         _cat("sex", "M", "F"), _date("issue_date"), _cat("visa_class", *_VISA_CLASSES)),
        "issue_date", "visa issued", family="surname", given="given_names", birth_date="dob",
        citizenship="nationality",
        summary=("visa_class", "nationality", "passport_no"),
    ),
    SystemSchema(
        "visa_refusals", "VR",
        (_dob("birth", "%d/%m/%Y"), _country("citizenship"), _date("refusal_date"),
         _cat("refusal_ground", "214(b)", "212(a)(6)(C)", "221(g)", "212(a)(9)(B)"),
         Column("applicant_name", "full_name")),
        "refusal_date", "visa refused", full_name="applicant_name", birth_date="birth",
        citizenship="citizenship",
        summary=("refusal_ground", "citizenship"),
    ),
    SystemSchema(
        "arrival_manifests", "AM",
        (_id("doc_number", PASSPORT, "passport"), *_names("last_name", "first_name"),
         _dob("birth_dt"), _date("arrival_date"), Column("carrier", "text")),
        "arrival_date", "arrived", family="last_name", given="first_name", birth_date="birth_dt",
        summary=("carrier", "doc_number"),
    ),
    SystemSchema(
        "admissions", "AD",
        (_id("i94_number", I94, "i94"), _id("passport_number", PASSPORT, "passport"),
         *_names("family_name", "given_name"), _dob("birth_date"), _date("admit_date"),
         _cat("admit_class", *_VISA_CLASSES), _date("admit_until")),
        "admit_date", "admitted", family="family_name", given="given_name", birth_date="birth_date",
        summary=("admit_class", "admit_until", "i94_number"),
    ),
    SystemSchema(
        "departure_manifests", "DM",
        (_id("passport", PASSPORT, "passport"), *_names("lname", "fname"), _dob("dob", "int"),
         _date("departure_date"), Column("flight", "text")),
        "departure_date", "departed", family="lname", given="fname", birth_date="dob",
        summary=("flight", "passport"),
    ),
    SystemSchema(
        "land_exits", "LE",
        (Column("full_name", "full_name"), _dob("birth_date", "%m/%d/%Y"),
         Column("doc_last4", "id", required=False, pattern=r"^[0-9A-Z]{4}$"), _date("exit_date"),
         Column("port", "text")),
        "exit_date", "land exit", full_name="full_name", birth_date="birth_date",
        doc_last4="doc_last4",
        summary=("port", "doc_last4"),
    ),
    SystemSchema(
        "partner_entries", "PE",
        (_id("passport_no", PASSPORT, "passport"), *_names("surname", "forenames"),
         _dob("dob", "%d.%m.%Y"), _date("entry_date"), _cat("partner_country", "CAN", "MEX")),
        "entry_date", "entered partner country", family="surname", given="forenames",
        birth_date="dob", summary=("partner_country", "passport_no"),
    ),
    SystemSchema(
        "biometric_enrollments", "BE",
        (_id("fin", FIN, "fin"), *_names("surname", "given"), _dob("dob"), _date("enroll_date"),
         _id("doc_number", PASSPORT, "passport", required=False)),
        "enroll_date", "fingerprinted", family="surname", given="given", birth_date="dob",
        summary=("fin", "doc_number"),
    ),
    SystemSchema(
        "biometric_exits", "BX",
        (_id("fin", FIN, "fin"), _date("exit_date"), Column("port", "text")),
        "exit_date", "biometric exit", summary=("port", "fin"),
    ),
    SystemSchema(
        "student_records", "SR",
        (_id("sevis_id", SEVIS, "sevis"), *_names("last_name", "first_name"), _dob("birth_date"),
         _date("event_date"), _cat("event_type", "initial", "active", "completed", "terminated"),
         _date("program_end_date"), _id("passport", PASSPORT, "passport", required=False)),
        "event_date", "student event", family="last_name", given="first_name",
        birth_date="birth_date", summary=("event_type", "program_end_date", "sevis_id"),
    ),
    SystemSchema(
        "benefit_applications", "BA",
        (_id("receipt_number", RECEIPT, "receipt"), _id("a_number", A_NUMBER, "a_number"),
         *_names("family_name", "given_name"), _dob("date_of_birth"),
         _cat("form_type", "I-539", "I-129", "I-765"), _date("filed_date"),
         _id("i94_number", I94, "i94", required=False)),
        "filed_date", "benefit filed", family="family_name", given="given_name",
        birth_date="date_of_birth", summary=("form_type", "receipt_number", "a_number"),
    ),
    SystemSchema(
        "benefit_decisions", "BD",
        (_id("receipt", RECEIPT, "receipt"), _id("a_number", A_NUMBER, "a_number"),
         _cat("decision", "approved", "denied"), _date("decision_date")),
        "decision_date", "benefit decided", summary=("decision", "receipt"),
    ),
    SystemSchema(
        "asylum_filings", "AF",
        (_id("a_number", A_NUMBER, "a_number"), *_names("applicant_surname", "applicant_given"),
         _dob("applicant_dob"), _date("filed_date"),
         _cat("case_status", "pending", "referred", "denied")),
        "filed_date", "asylum filed", family="applicant_surname", given="applicant_given",
        birth_date="applicant_dob", summary=("case_status", "a_number"),
    ),
    SystemSchema(
        "work_authorizations", "WA",
        (_id("a_number", A_NUMBER, "a_number"), _id("card_number", r"^EADA[0-9]{9}$"),
         _date("valid_from"), _date("valid_to"), _cat("category", "C08", "C09")),
        "valid_from", "work card from", summary=("category", "valid_to", "a_number"),
    ),
    SystemSchema(
        "employment_checks", "EC",
        (*_names("employee_last", "employee_first"), _dob("employee_dob"),
         _id("a_number", A_NUMBER, "a_number", required=False),
         _id("i94_number", I94, "i94", required=False), _date("query_date"),
         _cat("result", "authorized", "tentative_nonconfirmation")),
        "query_date", "employment check", family="employee_last", given="employee_first",
        birth_date="employee_dob", summary=("result",),
    ),
    SystemSchema(
        "enforcement_encounters", "EE",
        (_id("fin", FIN, "fin", required=False), _id("a_number", A_NUMBER, "a_number", required=False),
         *_names("surname", "given_name"), _dob("dob"), _date("encounter_date"),
         _cat("encounter_type", "traffic", "workplace", "targeted", "collateral"),
         Column("arrested", "bool")),
        "encounter_date", "encounter", family="surname", given="given_name", birth_date="dob",
        summary=("encounter_type", "arrested"),
    ),
    SystemSchema(
        "criminal_history", "CH",
        (_id("fin", FIN, "fin", required=False), *_names("name_last", "name_first"), _dob("dob"),
         _date("event_date"), _cat("event_type", "arrest", "conviction"),
         _cat("offense_category", "violent", "drug", "fraud", "property", "traffic", "other")),
        "event_date", "criminal record", family="name_last", given="name_first", birth_date="dob",
        summary=("event_type", "offense_category"),
    ),
    SystemSchema(
        "detention_bookings", "DB",
        (_id("a_number", A_NUMBER, "a_number"), _id("fin", FIN, "fin", required=False),
         _date("book_in_date"), _date("book_out_date")),
        "book_in_date", "booked in", summary=("book_out_date", "a_number"),
    ),
    SystemSchema(
        "court_orders", "CO",
        (_id("a_number", A_NUMBER, "a_number"), _date("hearing_date"),
         _cat("order_type", "pending", "relief_granted", "terminated", "voluntary_departure",
              "removal_in_absentia")),
        "hearing_date", "court hearing", summary=("order_type", "a_number"),
    ),
    SystemSchema(
        "prior_removals", "PR",
        (_id("a_number", A_NUMBER, "a_number"), _id("fin", FIN, "fin", required=False),
         _date("removal_date"), _cat("removal_type", "expedited", "ordered", "reinstated")),
        "removal_date", "removed", summary=("removal_type", "a_number"),
    ),
    SystemSchema(
        "watchlist_hits", "WH",
        (Column("screened_name", "full_name"), _dob("screened_dob"),
         Column("match_score", "float", lo=0.0, hi=1.0), _date("hit_date"),
         _cat("list_name", "TSDB", "NCIC", "INTERPOL")),
        "hit_date", "watchlist hit", full_name="screened_name", birth_date="screened_dob",
        summary=("list_name", "match_score"),
    ),
    SystemSchema(
        "lost_stolen_documents", "LS",
        (_id("doc_number", PASSPORT, "passport"), _country("issuing_country"),
         _date("report_date"), _cat("report_type", "lost", "stolen")),
        "report_date", "document reported", summary=("report_type", "doc_number"),
    ),
    SystemSchema(
        "border_lookouts", "BL",
        (Column("subject_name", "full_name"), _dob("subject_dob"),
         _id("passport", PASSPORT, "passport"), _date("lookout_date"),
         _cat("lookout_type", "secondary", "refer", "intel"), Column("secondary_inspection", "bool")),
        "lookout_date", "lookout", full_name="subject_name", birth_date="subject_dob",
        summary=("lookout_type", "passport"),
    ),
    SystemSchema(
        "address_changes", "AC",
        (_id("a_number", A_NUMBER, "a_number", required=False), Column("full_name", "full_name"),
         _dob("dob"), _date("change_date"), Column("state", "text")),
        "change_date", "address change", full_name="full_name", birth_date="dob",
        summary=("state",),
    ),
    SystemSchema(
        "travel_reservations", "TR",
        (_id("pnr", r"^PNR[0-9]{7}$"), *_names("pax_surname", "pax_given"), _dob("pax_dob"),
         _id("passport", PASSPORT, "passport"), _date("booking_date"), _date("travel_date"),
         Column("one_way", "bool"), Column("flown", "bool")),
        "booking_date", "booking", family="pax_surname", given="pax_given", birth_date="pax_dob",
        summary=("travel_date", "one_way", "flown"),
    ),
    SystemSchema(
        "tip_reports", "TP",
        (Column("subject_name", "full_name"), Column("approx_age", "int", lo=0, hi=120),
         _country("reported_nationality"), _date("tip_date"),
         _cat("tip_category", "overstay", "fraud", "threat", "employment"),
         _cat("credibility", "low", "medium", "high")),
        "tip_date", "tip", full_name="subject_name", citizenship="reported_nationality",
        approx_age="approx_age",
        summary=("tip_category", "credibility", "approx_age"),
    ),
    SystemSchema(
        "prior_leads", "PL",
        (_id("lead_id", r"^H[0-9]{8}P?$"), *_names("surname", "given_name"), _dob("dob"),
         _id("i94_number", I94, "i94"), _date("lead_date"), _date("closed_date"),
         _cat("disposition", "closed_unworked", "closed_departed", "investigated_departed",
              "investigated_lawful", "investigated_concern", "investigated_no_concern"),
         _date("investigation_date", required=False),
         Column("selection", "category", required=False, values=("random_audit", "rules"))),
        "lead_date", "earlier lead", family="surname", given="given_name", birth_date="dob",
        summary=("disposition", "lead_id"),
    ),
)

# fmt: on

SCHEMAS: dict[str, SystemSchema] = {s.name: s for s in _SCHEMA_LIST}


def country_regions(regions: tuple[str, ...]) -> dict[str, str]:
    """Country code -> citizenship region, for the region names of a world's config."""
    return {
        code: region for region, codes in zip(regions, COUNTRIES, strict=True) for code in codes
    }

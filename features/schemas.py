"""The declared schema of each source-system extract: the classes, built from data.

A schema says, per column, what a valid value looks like (identifier format, date
format and range, numeric range, allowed categories) and what role the column plays
downstream: which strong identifier it carries (``key``), which columns hold the
person's name and date of birth, and which date is the record's main event date.
``features/ingest.py`` turns these declarations into SQL; the linker reads the
``key`` roles. The declarations of the 27 systems are ``features/systems.yaml``
(``features/registry.py`` reads and validates it), so a new system or column is a
change there, not in code.

Date ranges depend on the world's snapshot date: birth dates 1900-01-01..snapshot,
event dates 1990-01-01..snapshot + 2 years (programme end dates and card expiries
reach into the future).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from triage.reference import COUNTRIES

__all__ = ["COUNTRY_CODES", "KEYS", "SCHEMAS", "Column", "SystemSchema", "country_regions"]

Kind = Literal["id", "name", "full_name", "date", "int", "float", "category", "bool", "text"]
DateRange = Literal["birth", "event"]

COUNTRY_CODES: tuple[str, ...] = tuple(sorted({c for region in COUNTRIES for c in region}))


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
        postcode: column of a postcode (compared exactly or within one edit).
        address: columns of an address (joined by spaces, compared as one text).
        summary: columns shown (as ``column value``) in a record's one-line summary.
        record_id: the extract's record-id column (``record_id`` in the clean table).
        record_id_pattern: the format a record id must match (None: ``<code>-`` and nine
            digits when ``code`` is set, else any non-blank value).
        file: the extract (None: ``<data-dir>/world/extracts/<name>.parquet``).
        file_format: ``parquet`` or ``csv`` (None: from the file's suffix).
        read_by: the feature and status queries that read the system (documentation,
            checked by a test against ``features/sql``).
        feeds: the kinds of event (``features.registry.EVENT_KINDS``) whose features count
            the system's records (read through ``ev_<kind>``).
        same_event: columns identifying a duplicate entry of one event (None: the world's
            own in ``features.build.RECORD_DATES``, else the record id alone).
        drop_invalid_optional: an optional column's invalid value is dropped (the row is
            kept, the reason noted) rather than quarantining the row; a row left with
            nothing to link on is still quarantined.
    """

    name: str
    code: str
    columns: tuple[Column, ...]
    event_date: str | None
    event_label: str
    family: str | None = None
    given: str | None = None
    full_name: str | None = None
    birth_date: str | None = None
    citizenship: str | None = None
    approx_age: str | None = None
    doc_last4: str | None = None
    postcode: str | None = None
    address: tuple[str, ...] = ()
    summary: tuple[str, ...] = field(default_factory=tuple)
    record_id: str = "record_id"
    record_id_pattern: str | None = None
    file: str | None = None
    file_format: str | None = None
    read_by: tuple[str, ...] = ()
    feeds: tuple[str, ...] = ()
    same_event: tuple[str, ...] | None = None
    drop_invalid_optional: bool = False

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


# The declarations themselves are data: features/systems.yaml, read by features/registry.py
# (imported here, after the classes it builds).
from features.registry import world_registry  # noqa: E402

KEYS: tuple[str, ...] = world_registry().key_names
SCHEMAS: dict[str, SystemSchema] = world_registry().systems


def country_regions(regions: tuple[str, ...]) -> dict[str, str]:
    """Country code -> citizenship region, for the region names of a world's config."""
    return {
        code: region for region, codes in zip(regions, COUNTRIES, strict=True) for code in codes
    }

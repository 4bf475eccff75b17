"""A case's linked source records, grouped by system, with what a reviewer needs to doubt a link.

Entity resolution put every source record of one person into a cluster
(``features/linked_records.parquet``). The case page lists them all, system by system in the
order of DESIGN.md's table, with how each was linked (a shared strong identifier such as a
passport or fingerprint, or a probabilistic match with its confidence) and whether its name or
date of birth differs from the lead's. A low-confidence link whose name and date of birth both
differ is the first place to look for a wrong link.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import duckdb

from serving.review.wording import record_details
from triage.paths import SYSTEMS

__all__ = ["LinkedRecords", "Record", "SystemGroup", "describe_link"]

CLUSTER_SQL = """
SELECT system, record_id, link_method, link_confidence, CAST(event_date AS VARCHAR),
       family_name, given_name, CAST(birth_date AS VARCHAR), summary, identity_id
FROM records WHERE cluster_id = $cluster
"""
# Below this, a probabilistic link is shown as uncertain.
WEAK_LINK = 0.99
# Names this similar (after upper-casing) are the same name with a typo or a transliteration.
SAME_NAME = 0.75
_ORDER = {name: i for i, name in enumerate(SYSTEMS)}
_STRONG_KEYS = {
    "passport": "passport",
    "fin": "fingerprint (FIN)",
    "a_number": "A-number",
    "i94": "I-94",
    "sevis": "student id (SEVIS)",
}


def describe_link(method: str | None) -> str:
    """How a record was linked, in a few words (``strong:passport`` -> ``same passport``)."""
    if not method:
        return "unknown"
    kind, _, key = method.partition(":")
    if kind == "strong":
        return f"same {_STRONG_KEYS.get(key, key.replace('_', ' '))}"
    if kind == "probabilistic":
        return "probabilistic"
    if kind == "singleton":
        return "only record of this person"
    return method.replace("_", " ")


@dataclass(frozen=True)
class Record:
    """One linked source record as the case page shows it."""

    system: str
    record_id: str
    link_method: str
    link: str  # describe_link(link_method)
    confidence: float | None
    event_date: str | None
    name: str
    birth_date: str | None
    summary: str
    details: str  # the summary without the name and birth date (they have their own columns)
    identity: int | None  # 1, 2, ... within the cluster; None when the cluster has one identity
    name_differs: bool
    dob_differs: bool

    @property
    def weak(self) -> bool:
        """A probabilistic link below :data:`WEAK_LINK`."""
        return self.confidence is not None and self.confidence < WEAK_LINK

    @property
    def doubtful(self) -> bool:
        """Worth a second look: an uncertain link, or a name and a birth date that both differ."""
        return self.weak or (self.name_differs and self.dob_differs)


@dataclass
class SystemGroup:
    """The records of one source system."""

    system: str
    records: list[Record] = field(default_factory=list)

    @property
    def title(self) -> str:
        return self.system.replace("_", " ")

    @property
    def doubtful(self) -> int:
        return sum(r.doubtful for r in self.records)


def _norm(name: str | None) -> str:
    return "".join(ch for ch in (name or "").upper() if ch.isalpha())


def _name_differs(lead: Mapping[str, Any], family: str | None, given: str | None) -> bool:
    lf, lg = _norm(lead.get("family_name")), _norm(lead.get("given_name"))
    rf, rg = _norm(family), _norm(given)
    if not (lf and rf):
        return False  # nothing to compare
    same = SequenceMatcher(None, lf + lg, rf + rg).ratio()
    swapped = SequenceMatcher(None, lf + lg, rg + rf).ratio()  # family and given exchanged
    return max(same, swapped) < SAME_NAME


def _dob_differs(lead: Mapping[str, Any], dob: str | None) -> bool:
    lead_dob = lead.get("birth_date")
    if not (lead_dob and dob) or lead_dob == dob:
        return False
    try:
        a, b = dt.date.fromisoformat(lead_dob), dt.date.fromisoformat(dob)
    except ValueError:
        return True
    return not (a.year == b.year and a.month == b.day and a.day == b.month)  # swapped day/month


def _details(system: str, summary: str, family: str | None, given: str | None) -> str:
    # Summaries read "visa issued 2020-07-21 · FAMILY, GIVEN b. 1990-04-01 · visa class F1";
    # the name part repeats the Name and Born columns; codes read as words.
    from features.schemas import SCHEMAS

    name = ", ".join(p for p in (family, given) if p)
    fields = SCHEMAS[system].summary if system in SCHEMAS else ()
    return record_details(summary, name, fields)


class LinkedRecords:
    """Point lookups of a cluster's records in the run's ``records.duckdb``."""

    def __init__(self, db_path: Path) -> None:
        """Open ``db_path`` read-only (several workers share it)."""
        self._con = duckdb.connect(str(db_path), read_only=True)
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._lock = threading.Lock()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor on the records database (table ``records``)."""
        # A DuckDB connection must not be used by two threads at once; a cursor per thread
        # shares the database instance.
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._local.cursor = self._con.cursor()
            with self._lock:
                self._cursors.append(cur)
        return cur

    def close(self) -> None:
        """Close every thread's cursor, then the database."""
        with self._lock:
            for cur in self._cursors:
                cur.close()
            self._cursors.clear()
        self._con.close()

    def for_cluster(self, cluster_id: int | None, lead: Mapping[str, Any]) -> list[SystemGroup]:
        """The cluster's records grouped by system (DESIGN.md order), newest first in each."""
        if cluster_id is None:
            return []
        rows = self.cursor().execute(CLUSTER_SQL, {"cluster": int(cluster_id)}).fetchall()
        identities = sorted({r[9] for r in rows if r[9] is not None})
        number = {ident: i + 1 for i, ident in enumerate(identities)} if len(identities) > 1 else {}
        groups: dict[str, SystemGroup] = {}
        for system, rid, method, conf, date, fam, giv, dob, summary, ident in rows:
            record = Record(
                system=system,
                record_id=rid,
                link_method=method or "",
                link=describe_link(method),
                confidence=None if conf is None else float(conf),
                event_date=date,
                name=", ".join(p for p in (fam, giv) if p),
                birth_date=dob,
                summary=summary or "",
                details=_details(system, summary or "", fam, giv),
                identity=number.get(ident),
                name_differs=_name_differs(lead, fam, giv),
                dob_differs=_dob_differs(lead, dob),
            )
            groups.setdefault(system, SystemGroup(system)).records.append(record)
        return sorted(groups.values(), key=lambda g: _ORDER.get(g.system, len(_ORDER)))

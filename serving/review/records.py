"""A case's linked source records, grouped by system, with what a reviewer needs to doubt a link.

Entity resolution put every source record of one person into a cluster
(``features/linked_records.parquet``). The case page lists them all, system by system in the
order of DESIGN.md's table, with how each was linked (a shared strong identifier such as a
passport or fingerprint, or a probabilistic match with its match weight and the fields that
agreed) and whether its name or date of birth differs from the lead's.

"To check" is a probabilistic link that may be wrong: a low match weight, a name or date of
birth that the deciding comparison found different, or a name and a date of birth that both
differ from the lead. A record linked by a shared fingerprint, passport or other identifier
is the same person whatever name it shows: with another date of birth it is an *alias*, and
the model counts it as one (``features/sql/features_identity.sql``: a record whose date of
birth is neither the case's nor its day/month swap), so it is labelled, not doubted.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import duckdb

from serving.review.wording import FieldAgreement, link_fields, link_odds, record_details
from triage.paths import SYSTEMS

__all__ = [
    "KEY_FIELDS",
    "WEAK_WEIGHT",
    "LinkedRecords",
    "Record",
    "SystemGroup",
    "alias_systems",
    "describe_link",
]

CLUSTER_SQL = """
SELECT system, record_id, link_method, link_confidence, CAST(event_date AS VARCHAR),
       family_name, given_name, CAST(birth_date AS VARCHAR), summary, identity_id,
       link_weight, link_agreement
FROM records WHERE cluster_id = $cluster
"""
# Below this match weight a probabilistic link is uncertain: more than about 1 chance in
# 1,000 that the two records are of different people. The decision threshold (probability
# 0.9) is weight 3.2; on the small world 2.1% of probabilistic links fall below 10 (the
# median is 19.8, and 97% of them would read 100.0% as a probability).
WEAK_WEIGHT = 10.0
# The fields whose disagreement puts a link in doubt whatever its weight.
KEY_FIELDS = ("family name", "given name", "date of birth")
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
    weight: float | None = None  # a probabilistic link's match weight (log2 odds)
    fields: tuple[FieldAgreement, ...] = ()  # its compared fields, in words
    # Another date of birth in a system the alias features read (alias_systems()): the
    # model counts the record as one under an alias.
    alias_counted: bool = False

    @property
    def probabilistic(self) -> bool:
        return self.link_method == "probabilistic"

    @property
    def strong(self) -> bool:
        """Linked by a shared identifier (fingerprint, passport, A-number...)."""
        return self.link_method.startswith("strong:")

    @property
    def weak(self) -> bool:
        """A probabilistic link below :data:`WEAK_WEIGHT` (its probability when the weight is
        missing: links written before the weight was kept)."""
        if not self.probabilistic:
            return False
        if self.weight is not None and math.isfinite(self.weight):
            return self.weight < WEAK_WEIGHT
        return self.confidence is not None and self.confidence < 1 - 2.0**-WEAK_WEIGHT

    @property
    def odds(self) -> str:
        """The match weight with its scale in words (``wording.link_odds``)."""
        return link_odds(self.weight)

    def _kind(self, kind: str) -> list[str]:
        return [f.text for f in self.fields if f.kind == kind]

    @property
    def agreed(self) -> list[str]:
        return self._kind("agrees")

    @property
    def partly(self) -> list[str]:
        return self._kind("partly")

    @property
    def differed(self) -> list[str]:
        return self._kind("disagrees")

    @property
    def missing(self) -> list[str]:
        """Fields the comparison could not weigh (not on both records)."""
        return self._kind("unknown")

    @property
    def key_disagrees(self) -> list[str]:
        """The names or date of birth the deciding comparison found different."""
        return [f.field for f in self.fields if f.kind == "disagrees" and f.field in KEY_FIELDS]

    @property
    def alias(self) -> bool:
        """Linked by a shared identifier under another date of birth: the same person under
        an alias, as the model's alias features count it (a date of birth that is neither
        the lead's nor its day/month swap)."""
        return self.strong and self.dob_differs

    @property
    def doubts(self) -> list[str]:
        """Why a probabilistic link may be wrong, in words; empty when it is not in doubt.

        A strong-key link is never in doubt here: a shared fingerprint or passport is the
        same person, and another name or date of birth is an alias (:attr:`alias`).
        """
        if not self.probabilistic:
            return []
        out = []
        if self.weak:
            out.append(f"low {self.odds}")
        if self.key_disagrees:
            field = " and ".join(self.key_disagrees)
            verb = "differs" if len(self.key_disagrees) == 1 else "differ"
            out.append(f"{field} {verb} from the record it was matched with")
        if self.name_differs and self.dob_differs:
            out.append("name and date of birth both differ from the lead")
        if out and self.alias_counted:
            out.append("the model counts it as a record under an alias")
        return out

    @property
    def doubtful(self) -> bool:
        """Worth a second look: a probabilistic link in doubt (:attr:`doubts`)."""
        return bool(self.doubts)


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

    @property
    def aliases(self) -> int:
        return sum(r.alias for r in self.records)

    @property
    def aliases_counted(self) -> int:
        """Aliases on a shared identifier that the model counts (:func:`alias_systems`)."""
        return sum(r.alias and r.alias_counted for r in self.records)


@functools.cache
def alias_systems() -> frozenset[str]:
    """The systems whose records the alias features count (``features_identity.sql``:
    fingerprint enrolments and every system feeding encounters or criminal events)."""
    from features import catalog
    from features.registry import world_registry

    return frozenset(catalog.sources("alias_records", world_registry()))


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
        for system, rid, method, conf, date, fam, giv, dob, summary, ident, w, agree in rows:
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
                weight=None if w is None else float(w),
                fields=link_fields(agree),
                alias_counted=system in alias_systems() and _dob_differs(lead, dob),
            )
            groups.setdefault(system, SystemGroup(system)).records.append(record)
        return sorted(groups.values(), key=lambda g: _ORDER.get(g.system, len(_ORDER)))

"""A case's evidence across systems: the facts that decide its status call, a timeline of every
linked record, and the systems searched that hold no record of the person.

The status call (``features/sql/status_calls.sql``) rests on three facts, not on whichever
records happen to be listed in its evidence: when the stay ended (the admission the lead's
I-94 names, and its admit-until date), whether the person left after the admission (a
departure manifest, a partner-country entry, a biometric or land exit, or a later arrival),
and whether they were seen in the country after the stay ended. The status card states those
facts first, each citing the record it rests on; the remaining evidence records follow. The
counts come from the case's features (the numbers the model and the status rules read), the
citations from the case's linked records.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.review import wording
from serving.review.records import Record, SystemGroup
from triage.checksum import sha256_file
from triage.paths import SYSTEMS

if TYPE_CHECKING:
    from features.registry import Registry

log = logging.getLogger(__name__)

__all__ = [
    "EXIT_SYSTEMS",
    "Fact",
    "StatusFacts",
    "TimelineEntry",
    "admission_record",
    "duplicates",
    "exits_after",
    "searched_systems",
    "served_registry",
    "status_facts",
    "systems_without_record",
    "timeline",
]

# The records that show a person left (status_events.sql: kind 'departure', or 'reentry' for
# a later arrival, which implies an exit), with the feature that counts each.
EXIT_SYSTEMS: dict[str, str] = {
    "departure_manifests": "departure_records",
    "partner_entries": "partner_entries",
    "biometric_exits": "biometric_exits",
    "land_exits": "land_exits",
    "arrival_manifests": "reentries",
}
_HEADLINE = {
    "likely_in_country": "Likely still in the country",
    "likely_departed": "Likely departed",
    "likely_lawful": "Likely in lawful status",
    "undetermined": "Status undetermined",
}


@dataclass(frozen=True)
class Fact:
    """One sentence of the status evidence, and the record it rests on (if any)."""

    text: str
    record_id: str | None = None
    system: str | None = None

    @property
    def anchor(self) -> str | None:
        """The record's row on the case page (``rec-<id>``)."""
        return f"rec-{self.record_id}" if self.record_id else None

    @property
    def cited(self) -> str:
        """The sentence with its record: ``"... (admissions AD-1)"``."""
        if not self.record_id:
            return self.text
        return f"{self.text} ({(self.system or '').replace('_', ' ')} {self.record_id})"


@dataclass(frozen=True)
class StatusFacts:
    """The status call in words: what decides it, then the other records behind it."""

    status: str
    headline: str
    decisive: list[Fact]
    support: list[Fact]

    def sentence(self) -> str:
        """``"Likely still in the country: admitted until ...; no departure ...; ..."``."""
        return f"{self.headline}: " + "; ".join(f.cited for f in self.decisive) + "."


@dataclass(frozen=True)
class TimelineEntry:
    """One dated event of the person: a linked record, or a date of the case itself."""

    date: str | None
    system: str | None  # None for the case's own dates
    text: str
    record_id: str | None = None
    decisive: bool = False  # cited by the status facts
    doubtful: bool = False  # an uncertain link (records.Record.doubtful)
    repeats: str | None = None  # the record this one is a duplicate entry of

    @property
    def title(self) -> str:
        return self.system.replace("_", " ") if self.system else "this case"


def _number(values: Mapping[str, float], name: str) -> float:
    v = values.get(name)
    return 0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _records(groups: Sequence[SystemGroup], *systems: str) -> list[Record]:
    return [r for g in groups if g.system in systems for r in g.records]


def admission_record(groups: Sequence[SystemGroup], lead: Mapping[str, Any]) -> Record | None:
    """The admission the case is about: as ``features_cases.sql`` picks it, the latest
    admission on or before the lead date carrying the lead's I-94 number; failing that, the
    admission dated on the case's admission date."""
    admissions = _records(groups, "admissions")
    i94 = str(lead.get("i94_number") or "").strip()
    lead_date = str(lead.get("lead_date") or "9999-12-31")
    by_i94 = [
        r
        for r in admissions
        if i94 and f"i94 number {i94}" in r.summary and (r.event_date or "") <= lead_date
    ]
    if by_i94:
        return max(by_i94, key=lambda r: (r.event_date or "", r.record_id))
    on_day = [
        r for r in admissions if lead.get("admit_date") and r.event_date == lead["admit_date"]
    ]
    return on_day[0] if on_day else None


def _event_key(r: Record) -> tuple[str | None, ...] | None:
    # The columns features/build.py collapses duplicate entries of one event on, read back
    # from the record's summary ("... · port ATL · ..."); None when one is not shown there.
    from features.build import RECORD_DATES

    date_col, key = RECORD_DATES.get(r.system, ("", ()))
    parts = r.summary.split(" · ")
    out: list[str | None] = [r.system]
    for col in key:
        if col == date_col:
            out.append(r.event_date)
            continue
        label = col.replace("_", " ") + " "
        value = next((p[len(label) :] for p in parts if p.startswith(label)), None)
        if value is None:
            return None
        out.append(value)
    return tuple(out) if key else None


def duplicates(groups: Sequence[SystemGroup]) -> dict[str, str]:
    """Record id -> the record it repeats: entries of one event that the features count once
    (``features/build.py`` keeps the smallest record id of each event)."""
    first: dict[tuple[str | None, ...], str] = {}
    for r in sorted((r for g in groups for r in g.records), key=lambda r: r.record_id):
        key = _event_key(r)
        if key is not None:
            first.setdefault(key, r.record_id)
    out = {}
    for g in groups:
        for r in g.records:
            key = _event_key(r)
            if key is not None and first[key] != r.record_id:
                out[r.record_id] = first[key]
    return out


def exits_after(groups: Sequence[SystemGroup], lead: Mapping[str, Any]) -> list[Record]:
    """The linked records showing an exit after the admission, up to the scoring date, oldest
    first (the records the status rules count as departures or re-entries, each event once)."""
    start, end = lead.get("admit_date"), lead.get("scoring_date")
    if not start:
        return []
    repeats = duplicates(groups)
    out = [
        r
        for r in _records(groups, *EXIT_SYSTEMS)
        if r.event_date
        and start < r.event_date <= (end or "9999-12-31")
        and r.record_id not in repeats
    ]
    return sorted(out, key=lambda r: (r.event_date or "", r.system, r.record_id))


def _system_words(systems: Sequence[str]) -> str:
    return wording.join_words([s.replace("_", " ") for s in systems])


def _shows(e: Mapping[str, Any]) -> str:
    return wording.plain_codes(str(e.get("shows") or "a record"))


def _admitted(admission: Record | None, lead: Mapping[str, Any]) -> Fact:
    until = lead.get("admit_until")
    if not until:
        return Fact("the admit-until date is unknown (no admission matches the lead's I-94)")
    since = admission.event_date if admission else lead.get("admit_date")
    text = f"admitted {'on ' + since + ' ' if since else ''}until {until}"
    if admission:
        return Fact(text, admission.record_id, "admissions")
    return Fact(text)


def _evidence_fact(e: Mapping[str, Any], prefix: str = "") -> Fact:
    date = f" on {e['date']}" if e.get("date") else ""
    record_id = str(e.get("record_id") or "") or None
    system = str(e.get("system") or "") or None
    if record_id is None and system:  # nothing to link to: name the system in the text
        return Fact(f"{prefix}{_shows(e)}{date} ({system.replace('_', ' ')})")
    return Fact(f"{prefix}{_shows(e)}{date}", record_id, system)


def status_facts(
    status: str,
    evidence: Sequence[Mapping[str, Any]],
    values: Mapping[str, float],
    groups: Sequence[SystemGroup],
    lead: Mapping[str, Any],
) -> StatusFacts:
    """The facts that decide a case's status call, each citing its record.

    Args:
        status: the call (``likely_in_country``, ``likely_departed``, ``likely_lawful``,
            ``undetermined``).
        evidence: the call's evidence list (``status_evidence``: ``system``, ``record_id``,
            ``date``, ``shows``), newest first.
        values: the case's feature values by name (exit and presence counts).
        groups: the case's linked records by system.
        lead: the case's lead (``admit_date``, ``admit_until``, ``lead_date``,
            ``scoring_date``, ``i94_number``).
    """
    admission = admission_record(groups, lead)
    admitted = _admitted(admission, lead)
    since = admission.event_date if admission else lead.get("admit_date")
    n_exits = sum(_number(values, f) for f in EXIT_SYSTEMS.values())
    exits = exits_after(groups, lead)
    until = lead.get("admit_until")
    no_exit = Fact(
        f"no departure, exit or later arrival recorded{' since ' + since if since else ''} "
        f"(searched {_system_words(list(EXIT_SYSTEMS))})"
    )
    used: set[str] = set()
    decisive = [admitted]
    if status == "likely_in_country":
        if n_exits == 0:
            decisive.append(no_exit)
        elif exits:
            last = exits[-1]
            decisive.append(
                Fact(
                    f"a recorded exit on {last.event_date} is contradicted by later activity",
                    last.record_id,
                    last.system,
                )
            )
        seen = [e for e in evidence if "contradicted" not in str(e.get("shows"))]
        n_seen = int(_number(values, "activity_after_until")) or len(seen)
        if seen:
            n = wording.plural(n_seen, "record")
            head = f"seen in the country after {until} ({n}), latest: "
            decisive.append(_evidence_fact(seen[0], head))
            used.add(str(seen[0].get("record_id")))
    elif status == "likely_departed":
        if evidence:
            decisive.append(_evidence_fact(evidence[0], "left: "))
            used.add(str(evidence[0].get("record_id")))
        decisive.append(Fact("no in-country record after that exit"))
    elif status == "likely_lawful":
        if evidence:
            decisive.append(_evidence_fact(evidence[0], "lawful status: "))
            used.add(str(evidence[0].get("record_id")))
    else:
        if n_exits == 0:
            decisive.append(no_exit)
        decisive.append(Fact("no lawful-status record"))
        presence = (
            "no record of presence in the country (employment check, address change, "
            "encounter, arrest, detention, filing or hearing)"
        )
        decisive.append(Fact(f"{presence} after {until}" if until else presence))
    support = [
        _evidence_fact(e)
        for e in evidence
        if str(e.get("record_id")) not in used and "contradicted" not in str(e.get("shows"))
    ]
    support += [_evidence_fact(e) for e in evidence if "contradicted" in str(e.get("shows"))]
    headline = _HEADLINE.get(status, status.replace("_", " ").capitalize())
    return StatusFacts(status, headline, decisive, support)


def timeline(
    groups: Sequence[SystemGroup], lead: Mapping[str, Any], decisive: Sequence[Fact] = ()
) -> list[TimelineEntry]:
    """Every linked record and the case's own dates (admit-until, lead, scoring), oldest first;
    undated records last."""
    cited = {f.record_id for f in decisive if f.record_id}
    repeats = duplicates(groups)
    entries = [
        TimelineEntry(
            date=r.event_date,
            system=g.system,
            text=r.details or r.summary,
            record_id=r.record_id,
            decisive=r.record_id in cited,
            doubtful=r.doubtful,
            repeats=repeats.get(r.record_id),
        )
        for g in groups
        for r in g.records
    ]
    own = (
        ("admit_until", "the stay ended (admit-until date)"),
        ("lead_date", "overstay lead opened"),
        ("scoring_date", "scored for this queue"),
    )
    entries += [TimelineEntry(lead[k], None, text) for k, text in own if lead.get(k)]
    order = {name: i for i, name in enumerate(SYSTEMS)}

    def key(e: TimelineEntry) -> tuple[Any, ...]:
        # Undated records last; on one day, the case's own dates after the records.
        return (e.date is None, e.date or "", e.system is None, order.get(e.system or "", 99))

    return sorted(entries, key=key)


def searched_systems(manifest: Path) -> tuple[str, ...]:
    """The systems this run's features read (``features/manifest.json``'s ``systems``), in
    DESIGN.md order, a declared 28th last; the world's 27 when the manifest is unreadable."""
    try:
        declared = json.loads(manifest.read_text())["systems"]
    except (OSError, ValueError, KeyError, TypeError):
        return SYSTEMS
    order = {name: i for i, name in enumerate(SYSTEMS)}
    return tuple(sorted(declared, key=lambda s: (order.get(s, len(order)), s)))


def served_registry(manifest: Path) -> Registry | None:
    """The registry this run's features were built with, when it is not the world's 27
    (``features/manifest.json``'s ``registry``): its own systems are then sources of the
    reasons they feed. None for the world's registry, an older manifest, or a config file
    that is gone or changed since the run (logged; the catalog's systems are used)."""
    from features.registry import WORLD_REGISTRY, RegistryError, load_registry

    try:
        declared = json.loads(manifest.read_text())["registry"]
        config, digest = Path(declared["config"]), declared["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        if config.resolve() == WORLD_REGISTRY.resolve():
            return None
        if sha256_file(config) != digest:
            log.warning("registry %s changed since the features run: catalog systems used", config)
            return None
        return load_registry(config)
    except (OSError, RegistryError) as exc:
        log.warning("registry of the features run unreadable (%s): catalog systems used", exc)
        return None


def systems_without_record(groups: Sequence[SystemGroup], searched: Sequence[str]) -> list[str]:
    """The systems searched for this run (``searched``, in DESIGN.md order) with no record of
    the person."""
    present = {g.system for g in groups if g.records}
    return [s for s in searched if s not in present]

"""Plain-language wording for the reviewer pages: counts, durations, codes and scores in words.

The feature catalog's reason templates are written for many ("3 arrests"), count in days
("last removed 2566 days ago") and the source systems speak in codes
("tentative_nonconfirmation"). A reviewer reads "1 arrest", "last removed 7 years ago
(2019-03-02)" and "tentative non-confirmation". Every helper here is pure text in, text out,
so the queue, the case page and the notebooks word a fact the same way.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import re
from collections.abc import Sequence
from typing import NamedTuple

__all__ = [
    "CODE_WORDS",
    "FieldAgreement",
    "ago",
    "human_duration",
    "join_words",
    "link_fields",
    "link_odds",
    "match_score",
    "plain_codes",
    "plural",
    "record_details",
    "singular_count",
    "span",
]

# Plural noun -> singular, for the nouns the catalog's count templates use.
_SINGULAR = {
    "admissions": "admission",
    "applications": "application",
    "arrests": "arrest",
    "arrivals": "arrival",
    "bookings": "booking",
    "changes": "change",
    "checks": "check",
    "claims": "claim",
    "convictions": "conviction",
    "days": "day",
    "departures": "departure",
    "encounters": "encounter",
    "enrolments": "enrolment",
    "entries": "entry",
    "exits": "exit",
    "grants": "grant",
    "hearings": "hearing",
    "hits": "hit",
    "identities": "identity",
    "inspections": "inspection",
    "leads": "lead",
    "lookouts": "lookout",
    "matches": "match",
    "orders": "order",
    "passports": "passport",
    "permits": "permit",
    "programmes": "programme",
    "records": "record",
    "refusals": "refusal",
    "removals": "removal",
    "reports": "report",
    "tips": "tip",
    "visas": "visa",
}
_ONE = re.compile(r"(?<![\w.,])1 (?:[\w'()-]+ ){0,4}[\w'()-]+")

# Source-system codes (features/schemas.py category values) as a reviewer reads them. Codes
# with an underscore that are not listed read with spaces ("closed_departed" -> "closed
# departed" is not good enough, so the lead dispositions are all listed).
CODE_WORDS: dict[str, str] = {
    "tentative_nonconfirmation": "tentative non-confirmation",
    "relief_granted": "relief granted",
    "voluntary_departure": "voluntary departure",
    "removal_in_absentia": "removal ordered in absentia",
    "closed_unworked": "closed without investigation",
    "closed_departed": "closed: person had departed",
    "investigated_departed": "investigated: person had departed",
    "investigated_lawful": "investigated: in lawful status",
    "investigated_concern": "investigated: concern confirmed",
    "investigated_no_concern": "investigated: no concern",
    "214(b)": "214(b) (immigrant intent)",
    "212(a)(6)(C)": "212(a)(6)(C) (misrepresentation)",
    "221(g)": "221(g) (administrative processing)",
    "212(a)(9)(B)": "212(a)(9)(B) (earlier unlawful presence)",
    "C08": "C08 (asylum applicant)",
    "C09": "C09 (adjustment applicant)",
    "I-539": "I-539 (extension or change of status)",
    "I-129": "I-129 (worker petition)",
    "I-765": "I-765 (work permit)",
    "TSDB": "TSDB (terrorist screening)",
    "NCIC": "NCIC (criminal records)",
    "INTERPOL": "INTERPOL notice",
}
_CODE = re.compile(
    "|".join(
        [r"(?<![\w(-])(?:" + "|".join(re.escape(c) for c in sorted(CODE_WORDS, key=len)[::-1])]
    )
    + r")(?![\w(-])|\b[a-z]+(?:_[a-z]+)+\b"
)
# Summary fields whose names read better as words (``a_number`` -> ``A-number``).
_FIELD_WORDS = {
    "a_number": "A-number",
    "fin": "fingerprint id (FIN)",
    "i94_number": "I-94",
    "sevis_id": "SEVIS id",
    "doc_last4": "document (last 4)",
    "doc_number": "document",
    "passport_no": "passport",
    "offense_category": "offence",
    "one_way": "one way",
}
MATCH_SCALE = "(scale 0–1, 1 = exact match)"


def join_words(items: Sequence[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b and c"``."""
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def plural(n: float, one: str, many: str | None = None) -> str:
    """``n`` and the noun in the right number: ``plural(1, "arrest")`` -> ``"1 arrest"``."""
    count = f"{n:,.0f}" if float(n).is_integer() else f"{n:,g}"
    noun = one if count == "1" else (many or one + "s")
    return f"{count} {noun}"


def singular_count(text: str) -> str:
    """A catalog text with a count of 1 made singular ("1 violent or drug conviction").

    The first plural noun after a standalone "1" (within five words) is made singular;
    other text is unchanged.
    """

    def first_noun(m: re.Match[str]) -> str:
        words = m.group(0)[2:].split(" ")
        for i, word in enumerate(words):
            if word in _SINGULAR:
                words[i] = _SINGULAR[word]
                return "1 " + " ".join(words)
        return m.group(0)

    return _ONE.sub(first_noun, text, count=1)


def human_duration(days: float) -> str:
    """A span of days as a reviewer says it: "3 days", "5 weeks", "8 months", "7 years"."""
    d = abs(round(float(days)))
    if d < 14:
        return plural(d, "day")
    if d < 60:
        return plural(round(d / 7), "week")
    if d < 730:
        return plural(round(d / 30.44), "month")
    return plural(math.floor(d / 365.25), "year")


def _date_before(as_of: str | None, days: float) -> str | None:
    if not as_of:
        return None
    try:
        return (dt.date.fromisoformat(as_of[:10]) - dt.timedelta(days=round(days))).isoformat()
    except ValueError:
        return None


def ago(days: float, as_of: str | None = None) -> str:
    """How long ago, with the date when ``as_of`` is known: "7 years ago (2019-03-02)"."""
    d = round(float(days))
    date = _date_before(as_of, d)
    if d == 0:
        text = "on the scoring date"
    elif d < 0:
        text = f"{human_duration(d)} after the scoring date"
    else:
        text = f"{human_duration(d)} ago"
    return f"{text} ({date})" if date else text


def span(days: float) -> str:
    """A span with the exact day count when the words round it: "7 years (2,566 days)"."""
    words = human_duration(days)
    d = abs(round(float(days)))
    return words if words.endswith(("day", "days")) else f"{words} ({d:,} days)"


def match_score(value: float | None) -> str:
    """A 0-1 name-match score with its scale: "0.93 (scale 0–1, 1 = exact match)"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "no score"
    return f"{float(value):.2f} {MATCH_SCALE}"


def plain_codes(text: str) -> str:
    """Raw source-system codes in ``text`` replaced by words."""
    if not text:
        return text

    def word(m: re.Match[str]) -> str:
        code = m.group(0)
        return CODE_WORDS.get(code, code.replace("_", " "))

    return _CODE.sub(word, text)


def _field(part: str, fields: tuple[str, ...]) -> str:
    for col in fields:
        key = col.replace("_", " ") + " "
        if part.startswith(key):
            value = part[len(key) :]
            name = _FIELD_WORDS.get(col, col.replace("_", " "))
            if value in ("true", "false"):
                value = "yes" if value == "true" else "no"
            elif col == "match_score":
                with contextlib.suppress(ValueError):
                    value = match_score(float(value))
            else:
                value = plain_codes(value)
            return f"{name}: {value}"
    return plain_codes(part)


def record_details(summary: str, name: str, fields: tuple[str, ...]) -> str:
    """A record's one-line summary in words, without the name part (it has its own column).

    Summaries read "visa issued 2020-07-21 · FAMILY, GIVEN b. 1990-04-01 · visa class F1";
    ``fields`` are the system's summary columns (``SystemSchema.summary``), shown as
    "visa class: F1", codes in words, true/false as yes/no.
    """
    parts = [p for p in summary.split(" · ") if p and not (name and p.startswith(name))]
    return " · ".join(_field(p, fields) for p in parts)


# The linkage model's comparisons (``features/sql/linkage_model.json`` and the extra ones of
# ``features/linkage/model.py``) and their levels (``label_for_charts``) as a reviewer reads
# them; a level not listed reads as its label.
_LINK_FIELDS = {
    "family_key": "family name",
    "given_key": "given name",
    "birth_date": "date of birth",
    "birth_year": "approximate age",
    "region": "citizenship region",
    "travel_document": "travel document",
    "address": "address",
    "postcode": "postcode",
    "id_fin": "fingerprint id (FIN)",
    "id_a_number": "A-number",
}
_LINK_LEVELS = {
    "exact": "same",
    "different": "different",
    "jaro-winkler >= 0.92": "spelt almost the same",
    "jaro-winkler >= 0.85": "spelt alike",
    "jaro-winkler >= 0.8": "spelt alike",
    "given and family exchanged (both names)": "given and family names exchanged",
    "given and family exchanged: weighed once, by family_key": "exchanged with the family name",
    "one digit off": "one digit off",
    "day and month swapped": "day and month swapped",
    "within 3 years": "within 3 years",
    "within 7 years": "within 7 years",
    "further apart": "more than 7 years apart",
    "same citizenship region": "same",
    "a document's last four agree": "same last four characters",
    "no document in common: not evidence": "none in common (not evidence: passports are renewed)",
    "within two edits": "within two typing errors",
    "one edit": "one character off",
}
# Comparisons of the person's cluster as a whole: that one side lacks them says nothing.
_QUIET_WHEN_UNKNOWN = {"birth_year", "region", "travel_document", "address", "postcode"}


class FieldAgreement(NamedTuple):
    """One compared field of a probabilistic link: ``kind`` is ``agrees``, ``partly``,
    ``disagrees``, ``neutral`` or ``unknown`` (``features.linkage.evidence.AGREEMENTS``)."""

    kind: str
    field: str  # "family name"
    level: str  # "spelt almost the same"

    @property
    def text(self) -> str:
        """ "family name spelt almost the same" """
        return f"{self.field} {self.level}"


def link_fields(agreement: str | None) -> tuple[FieldAgreement, ...]:
    """A probabilistic link's ``link_agreement`` (JSON: comparison -> [kind, level]) in words,
    in the model's order; unknown cluster-wide fields (no citizenship on one side) are left out.
    Unreadable or missing text gives nothing."""
    if not agreement:
        return ()
    try:
        parsed = json.loads(agreement)
    except ValueError:
        return ()
    out = []
    for name, value in parsed.items() if isinstance(parsed, dict) else ():
        if not (isinstance(value, list) and len(value) == 2):
            continue
        kind, level = str(value[0]), str(value[1])
        if kind == "unknown" and (name in _QUIET_WHEN_UNKNOWN or name.startswith("id_")):
            continue
        if kind == "unknown" and "exchanged" not in level:
            words = "not on both records"
        else:
            words = _LINK_LEVELS.get(level, level)
        field = _LINK_FIELDS.get(name) or _FIELD_WORDS.get(name.removeprefix("id_"))
        out.append(FieldAgreement(kind, field or name.replace("_", " "), words))
    return tuple(out)


def _about(n: float) -> str:
    """A large count rounded for reading: 18,820 -> "19,000", 2.3e6 -> "2.3 million"."""
    if n >= 1e12:
        return "a trillion"
    for size, word in ((1e9, "billion"), (1e6, "million")):
        if n >= size:
            return f"{n / size:.2g} {word}".replace(".0 ", " ")
    digits = max(int(math.log10(n)) - 1, 0)
    return f"{round(n, -digits):,.0f}"


def link_odds(weight: float | None) -> str:
    """A match weight with its scale, in words: "match weight 14.2 (about 1 in 19,000 that
    the records are of different people)". The weight is log2 of the odds that two records
    are one person, so the chance that they are not is 1 in 1 + 2**weight."""
    if weight is None or not math.isfinite(weight):
        return "no match weight"
    n = 1 + 2.0 ** min(weight, 60.0)
    chance = "less than 1 in a trillion" if n >= 1e12 else f"about 1 in {_about(n)}"
    return f"match weight {weight:.1f} ({chance} that the records are of different people)"

"""Find a case by the lead's name or document number, as a reviewer types them.

A reviewer often holds a name or a passport number, not a case id. The search runs one
parameterised DuckDB query over the run's leads (``leads.arrow`` of ``serving.review.cache``,
memory-mapped, in ``scores.parquet`` row order, joined here with each case's rank): a
document number matches the lead's passport or I-94 number exactly (case, spaces and dashes
ignored); a name matches when every word typed starts the lead's family or given name
("doe jan" finds DOE, JANE). Results come in rank order, the first :data:`LIMIT` of them.
The typed text only ever reaches DuckDB as a parameter.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

import duckdb
import pyarrow as pa

__all__ = ["LIMIT", "MAX_QUERY", "CaseSearch", "Hit", "SearchError", "parse_query"]

LIMIT = 50  # results shown; the count says how many more matched
MAX_QUERY = 80  # characters
MAX_WORDS = 4
_WORD = re.compile(r"^[A-Z][A-Z'-]*$")  # a name word after upper-casing (names are Latin here)
_DOCUMENT = re.compile(r"^[A-Z0-9]{5,20}$")  # after removing spaces and dashes; has a digit

_SQL = """
SELECT case_id, rank, family_name, given_name, birth_date, passport_number, i94_number,
       CASE WHEN $doc <> '' AND upper(replace(replace(coalesce(passport_number, ''), ' ', ''),
                                              '-', '')) = $doc THEN 'passport'
            WHEN $doc <> '' AND replace(replace(coalesce(i94_number, ''), ' ', ''), '-', '')
                                = $doc THEN 'I-94'
            ELSE 'name' END AS matched,
       count(*) OVER () AS total
FROM leads
WHERE ($doc <> '' AND (upper(replace(replace(coalesce(passport_number, ''), ' ', ''), '-', ''))
                         = $doc
                       OR replace(replace(coalesce(i94_number, ''), ' ', ''), '-', '') = $doc))
   OR ({names})
ORDER BY rank
LIMIT {limit}
"""
# One clause per typed word: it starts a word of the family or given name (hyphenated parts
# count as words). ' ' || name || ' ' searched for ' ' || word: a word start, no regex.
_NAME_CLAUSE = (
    "contains(' ' || replace(upper(coalesce(family_name, '') || ' ' || "
    "coalesce(given_name, '')), '-', ' '), ' ' || $w{i})"
)


class SearchError(ValueError):
    """The typed text cannot be searched (empty, too long, or no name or document in it)."""


@dataclass(frozen=True)
class Query:
    """What was typed, as the search reads it."""

    text: str
    document: str  # "" when the text cannot be a document number
    words: tuple[str, ...]  # name words; () when the text cannot be a name


@dataclass(frozen=True)
class Hit:
    """One matching case."""

    case_id: str
    rank: int
    name: str
    birth_date: str | None
    passport_number: str | None
    i94_number: str | None
    matched: str  # "passport", "I-94" or "name"


def parse_query(text: str) -> Query:
    """Read a typed search.

    Raises:
        SearchError: empty, longer than :data:`MAX_QUERY`, or neither a document number nor
            up to :data:`MAX_WORDS` name words.
    """
    text = " ".join(text.split())
    if not text:
        raise SearchError("Type a case id, a name or a document number.")
    if len(text) > MAX_QUERY:
        raise SearchError(f"That is longer than {MAX_QUERY} characters: type less.")
    upper = text.upper()
    compact = re.sub(r"[\s-]+", "", upper)
    document = compact if _DOCUMENT.match(compact) and any(c.isdigit() for c in compact) else ""
    words = tuple(w for w in re.split(r"[\s,]+", upper) if w)
    if len(words) > MAX_WORDS or not all(_WORD.match(w) for w in words):
        words = ()
    if not document and not words:
        raise SearchError(
            f"Nothing to search in {text!r}: type a case id, a passport or I-94 number, or up "
            f"to {MAX_WORDS} words of a name (letters, hyphens and apostrophes)."
        )
    return Query(text, document, words)


class CaseSearch:
    """The search over one run's leads (see the module docstring)."""

    def __init__(self, leads: pa.Table, rank: pa.ChunkedArray | pa.Array) -> None:
        """``leads`` and ``rank`` are in the same row order (``scores.parquet``'s)."""
        if len(leads) != len(rank):
            raise ValueError(f"{len(leads)} leads but {len(rank)} ranks")
        columns = ["case_id", "family_name", "given_name", "birth_date"]
        columns += ["passport_number", "i94_number"]
        self._table = leads.select(columns).append_column("rank", rank)
        self._con = duckdb.connect()
        self._con.register("leads", self._table)
        # One connection; searches are rare next to page views, so one at a time is enough.
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the in-memory database."""
        with self._lock:
            self._con.close()

    def find(self, query: Query, limit: int = LIMIT) -> tuple[int, list[Hit]]:
        """How many cases match, and the first ``limit`` in rank order."""
        params: dict[str, str] = {"doc": query.document}
        params.update({f"w{i}": w for i, w in enumerate(query.words)})
        names = " AND ".join(_NAME_CLAUSE.format(i=i) for i in range(len(query.words)))
        sql = _SQL.format(names=names or "false", limit=int(limit))
        with self._lock:
            rows = self._con.execute(sql, params).fetchall()
        total = int(rows[0][-1]) if rows else 0
        hits = [
            Hit(
                case_id=r[0],
                rank=int(r[1]),
                name=", ".join(p for p in (r[2], r[3]) if p),
                birth_date=r[4],
                passport_number=r[5],
                i94_number=r[6],
                matched=r[7],
            )
            for r in rows
        ]
        return total, hits

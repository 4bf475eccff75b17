"""Find a case by the lead's name or document number, as a reviewer types them.

A reviewer often holds a name or a passport number, not a case id. The search runs one
parameterised DuckDB query over search keys built once from the run's leads (``leads.arrow``
of ``serving.review.cache``, in ``scores.parquet`` row order, with each case's rank): a
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

# The search keys, built once per worker at the first search (a full backlog: 1.2M rows): the
# name as ' FAMILY GIVEN' with hyphens as spaces, the documents without spaces and dashes.
# Matching then reads three plain columns; computing the keys in each query cost 0.9-2.6 s
# per search on 1.2M rows, against tens of milliseconds on the keys (see the commit).
_KEYS_SQL = """
CREATE TABLE keys AS
SELECT CAST(row AS INTEGER) AS row, rank,
       ' ' || replace(upper(coalesce(family_name, '') || ' ' || coalesce(given_name, '')),
                      '-', ' ') AS name_key,
       upper(replace(replace(coalesce(passport_number, ''), ' ', ''), '-', '')) AS passport_key,
       upper(replace(replace(coalesce(i94_number, ''), ' ', ''), '-', '')) AS i94_key
FROM leads
"""
_SQL = """
SELECT row,
       CASE WHEN $doc <> '' AND passport_key = $doc THEN 'passport'
            WHEN $doc <> '' AND i94_key = $doc THEN 'I-94'
            ELSE 'name' END AS matched,
       count(*) OVER () AS total
FROM keys
WHERE ($doc <> '' AND (passport_key = $doc OR i94_key = $doc)) OR ({names})
ORDER BY rank, row
LIMIT {limit}
"""
# One clause per typed word: it starts a word of the family or given name (hyphenated parts
# count as words): ' ' || word inside ' FAMILY GIVEN', a word start, no regex.
_NAME_CLAUSE = "contains(name_key, ' ' || $w{i})"


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
        self._leads = leads
        self._rank = rank
        self._con: duckdb.DuckDBPyConnection | None = None
        # One connection; searches are rare next to page views, so one at a time is enough.
        self._lock = threading.Lock()

    def _connection(self) -> duckdb.DuckDBPyConnection:
        # The caller holds the lock. Built on first use: a worker that never searches never
        # pays for the keys (on 1.2M leads, about 60 MB).
        if self._con is None:
            con = duckdb.connect()
            columns = ["family_name", "given_name", "passport_number", "i94_number"]
            table = self._leads.select(columns).append_column("rank", self._rank)
            table = table.append_column("row", pa.array(range(len(table)), pa.int32()))
            con.register("leads", table)
            con.execute(_KEYS_SQL)
            con.unregister("leads")
            self._con = con
        return self._con

    def close(self) -> None:
        """Close the in-memory database."""
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def find(self, query: Query, limit: int = LIMIT) -> tuple[int, list[Hit]]:
        """How many cases match, and the first ``limit`` in rank order."""
        params: dict[str, str] = {"doc": query.document}
        params.update({f"w{i}": w for i, w in enumerate(query.words)})
        names = " AND ".join(_NAME_CLAUSE.format(i=i) for i in range(len(query.words)))
        sql = _SQL.format(names=names or "false", limit=int(limit))
        with self._lock:
            rows = self._connection().execute(sql, params).fetchall()
        total = int(rows[0][-1]) if rows else 0
        shown = self._leads.take(pa.array([r[0] for r in rows], pa.int64())).to_pylist()
        hits = [
            Hit(
                case_id=lead["case_id"],
                rank=int(self._rank[r[0]].as_py()),
                name=", ".join(p for p in (lead["family_name"], lead["given_name"]) if p),
                birth_date=lead["birth_date"],
                passport_number=lead["passport_number"],
                i94_number=lead["i94_number"],
                matched=r[1],
            )
            for r, lead in zip(rows, shown, strict=True)
        ]
        return total, hits

"""Searching cases by the lead's name or document number: what the box accepts, what it finds."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.review.search import CaseSearch, SearchError, parse_query

LEADS = pa.table(
    {
        "case_id": ["C1", "C2", "C3", "C4"],
        "cluster_id": [1, 2, 3, 4],
        "family_name": ["Doe", "Doe-Smith", "Dodd", None],
        "given_name": ["Jane", "John", "Jane", None],
        "birth_date": ["1990-01-01", "1980-02-02", "1970-03-03", None],
        "passport_number": ["P123456", "x99887766", None, "P555 111"],
        "i94_number": ["10000001", None, "10000003", None],
    }
)
RANK = pa.array([3, 1, 2, 4], pa.int64())


@pytest.fixture
def engine():
    e = CaseSearch(LEADS, RANK)
    yield e
    e.close()


def ids(engine: CaseSearch, text: str) -> list[str]:
    return [h.case_id for h in engine.find(parse_query(text))[1]]


def test_names_match_word_starts_in_rank_order(engine: CaseSearch) -> None:
    """Each typed word must start a word of the family or given name; results by rank."""
    assert ids(engine, "doe") == ["C2", "C1"]  # Doe-Smith (rank 1), Doe (rank 3)
    assert ids(engine, "DOE, jane") == ["C1"]
    assert ids(engine, "smith") == ["C2"]  # the second part of a hyphenated name
    assert ids(engine, "do ja") == ["C3", "C1"]
    assert ids(engine, "oe") == []  # inside a word: no match


def test_documents_match_exactly_ignoring_case_spaces_and_dashes(engine: CaseSearch) -> None:
    """A passport or I-94 number matches the lead's whole number, whatever its spacing."""
    assert ids(engine, "p123456") == ["C1"]
    assert ids(engine, "X9988-7766") == ["C2"]
    assert ids(engine, "P555111") == ["C4"]
    assert ids(engine, "10000003") == ["C3"]
    assert ids(engine, "P12345") == []  # a prefix of a number is not that number
    total, hits = engine.find(parse_query("10000001"))
    assert total == 1 and hits[0].matched == "I-94" and hits[0].name == "Doe, Jane"


def test_counts_every_match_but_returns_the_first(engine: CaseSearch) -> None:
    """The total counts all matches; only ``limit`` come back."""
    total, hits = engine.find(parse_query("d"), limit=2)
    assert total == 3 and [h.case_id for h in hits] == ["C2", "C3"]


def test_unsearchable_text_is_refused_with_a_reason() -> None:
    """Empty, too long, or neither name words nor a document number: a SearchError to show."""
    for text in ("", "   ", "x" * 81, "<script>", "a b c d e", "'; drop table leads; --"):
        with pytest.raises(SearchError):
            parse_query(text)


SHARED = CaseSearch(LEADS, RANK)  # read-only: one for every example


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.text(max_size=90))
def test_any_text_is_searched_or_refused_never_an_error(text: str) -> None:
    """Whatever is typed, the query either runs (as parameters) or is refused as SearchError."""
    try:
        query = parse_query(text)
    except SearchError:
        return
    total, hits = SHARED.find(query)
    assert total >= len(hits)

"""The reviewer pages' wording helpers: counts, durations, codes and scores in words."""

from __future__ import annotations

import math

import numpy as np
import pytest

from serving.review import explanation as explain
from serving.review import wording
from serving.review.plots import waterfall_steps
from serving.review.waterfall_svg import reading_order, wrap_label


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("convictions_violent_drug", 1, "1 violent or drug conviction"),
        ("convictions_violent_drug", 2, "2 violent or drug convictions"),
        ("arrests", 1, "1 arrest recorded in criminal history"),
        ("doc_reports", 1, "1 report of the person's passports lost or stolen"),
        ("reentries", 1, "1 later arrival (so the person had left)"),
        ("passports_used", 1, "travelled on 1 different passport"),
        ("alias_identities", 1, "1 alias identity (other dates of birth)"),
        ("arrests", 0, "no arrests recorded in criminal history"),
    ],
)
def test_counts_of_one_are_singular(name: str, value: float, expected: str) -> None:
    assert explain.plain_label(name, float(value)) == expected


def test_singular_count_leaves_other_numbers_alone() -> None:
    assert wording.singular_count("11 arrests") == "11 arrests"
    assert wording.singular_count("0.1 arrests") == "0.1 arrests"
    assert wording.singular_count("1 arrests, 2 convictions") == "1 arrest, 2 convictions"
    assert wording.plural(1, "arrest") == "1 arrest"
    assert wording.plural(1234, "day") == "1,234 days"
    assert wording.plural(1, "entry", "entries") == "1 entry"


def test_days_read_as_durations_with_the_date() -> None:
    label = explain.plain_label("days_since_removal", 2566.0, "2026-01-15")
    assert label == "last removed 7 years ago (2019-01-06)"
    assert explain.plain_label("days_since_removal", 2566.0) == "last removed 7 years ago"
    assert (
        explain.plain_label("days_overstayed", 2566.0)
        == "7 years (2,566 days) past the admit-until date"
    )
    assert explain.plain_label("days_overstayed", -20.0).endswith("before the admit-until date")
    assert explain.plain_label("stay_days", 180.0) == "admitted for 6 months (180 days)"
    assert explain.plain_label("detention_days", 1.0) == "1 day in detention"
    assert explain.plain_label("days_since_exit", float("nan")) == "no exit recorded or implied"
    assert explain.plain_label("prior_removals", float("nan")).endswith("no record")
    assert [wording.human_duration(d) for d in (0, 1, 13, 20, 90, 800)] == [
        "0 days",
        "1 day",
        "13 days",
        "3 weeks",
        "3 months",
        "2 years",
    ]
    assert wording.ago(0, "2026-01-15") == "on the scoring date (2026-01-15)"


def test_codes_and_scores_read_as_words() -> None:
    assert (
        wording.plain_codes("employment eligibility check (tentative_nonconfirmation)")
        == "employment eligibility check (tentative non-confirmation)"
    )
    assert wording.plain_codes("immigration court hearing (relief_granted)").endswith(
        "(relief granted)"
    )
    assert "misrepresentation" in wording.plain_codes("refusal ground 212(a)(6)(C)")
    assert wording.plain_codes("some_new_code") == "some new code"
    assert wording.plain_codes("plain text, no codes") == "plain text, no codes"
    assert wording.match_score(0.934) == "0.93 (scale 0–1, 1 = exact match)"
    assert wording.match_score(math.nan) == "no score"
    assert "scale 0–1" in explain.plain_label("watchlist_max_score", 0.934)
    details = wording.record_details(
        "hit 2019-03-02 · DOE, JOHN b. 1990-01-01 · list name TSDB · match score 0.9312"
        " · arrested true",
        "DOE, JOHN",
        ("list_name", "match_score", "arrested"),
    )
    assert "DOE" not in details
    assert "match score: 0.93 (scale 0–1, 1 = exact match)" in details
    assert "list name: TSDB (terrorist screening)" in details and "arrested: yes" in details


def test_top_raising_reason_skips_reasons_that_lower_the_score() -> None:
    names = ["arrests", "visas_issued", "tips"]
    shap = np.array([-2.0, 0.5, 0.8])
    top = explain.top_raising(names, shap, np.array([0.0, 3.0, 1.0]))
    assert [(c.feature, c.label) for c in top] == [("tips", "1 public tip")]
    assert explain.top_raising(names, -np.abs(shap), np.zeros(3)) == []


def test_top_raising_each_matches_top_raising_row_by_row() -> None:
    """The queue's vectorised top reason equals top_raising(n=1) on every row: ties go to the
    first feature, and a row where nothing raises the score gives None."""
    names = ["arrests", "visas_issued", "tips", "stay_days"]
    rng = np.random.default_rng(4)
    shap = rng.normal(size=(40, 4)).round(1)  # rounding makes ties
    shap[3] = -np.abs(shap[3])  # nothing raises it
    shap[5] = 0.0
    shap[7] = [0.5, 0.5, 0.2, -1.0]  # a tie for the top
    values = rng.integers(0, 4, size=(40, 4)).astype(np.float32)
    values[9, :] = np.nan
    as_of = ["2025-07-01"] * 40
    got = explain.top_raising_each(names, shap.astype(np.float32), values, as_of)
    for i in range(40):
        want = explain.top_raising(
            names, shap[i].astype(np.float32), np.asarray(values[i], np.float64), as_of[i]
        )
        assert got[i] == (want[0] if want else None), i
    assert got[3] is None and got[5] is None and got[7].feature == "arrests"
    assert explain.top_raising_each(names, np.zeros((0, 4)), np.zeros((0, 4)), []) == []


def test_labels_wrap_and_never_lose_text_silently() -> None:
    short = wrap_label("1 arrest")
    assert short == ["1 arrest"]
    long = "a " * 40 + "end"
    lines = wrap_label(long, width=20)
    assert len(lines) == 2 and all(len(line) <= 20 for line in lines)
    assert lines[-1].endswith("…")
    two = wrap_label("watchlist match score up to 0.93 (scale 0–1, 1 = exact match)", 50)
    assert len(two) == 2 and "…" not in "".join(two)


def test_grouped_rest_is_the_last_bar_in_reading_order() -> None:
    values = np.array([0.5, -0.25, 0.125, 0.0625])
    steps = reading_order(waterfall_steps(values, -1.0, list("abcd"), max_display=3), -1.0)
    assert [s.feature for s in steps] == ["a", "b", None]
    assert steps[0].start == -1.0 and steps[-1].end == pytest.approx(-1.0 + values.sum())
    assert all(a.end == b.start for a, b in zip(steps, steps[1:], strict=False))


def test_a_match_weight_reads_with_its_scale() -> None:
    """A probabilistic link's weight reads as the chance that the records are of two people."""
    assert wording.link_odds(14.2) == (
        "match weight 14.2 (about 1 in 19,000 that the records are of different people)"
    )
    assert "about 1 in 10 that" in wording.link_odds(3.2)
    assert "about 1 in 2 million" in wording.link_odds(20.9)
    assert "less than 1 in a trillion" in wording.link_odds(45.0)
    assert wording.link_odds(None) == "no match weight"


def test_link_agreement_reads_as_fields_in_words() -> None:
    """link_agreement's JSON reads as "family name same", unknown cluster-wide fields dropped."""
    fields = wording.link_fields(
        '{"family_key":["agrees","exact"],"given_key":["partly","jaro-winkler >= 0.92"],'
        '"birth_date":["disagrees","different"],"birth_year":["unknown","null"],'
        '"region":["unknown","null"],"travel_document":["neutral",'
        '"no document in common: not evidence"],"id_a_number":["agrees","within two edits"]}'
    )
    assert [(f.kind, f.text) for f in fields] == [
        ("agrees", "family name same"),
        ("partly", "given name spelt almost the same"),
        ("disagrees", "date of birth different"),
        ("neutral", "travel document none in common (not evidence: passports are renewed)"),
        ("agrees", "A-number within two typing errors"),
    ]
    tip = wording.link_fields('{"birth_date":["unknown","null"]}')
    assert tip[0].text == "date of birth not on both records"
    assert wording.link_fields(None) == wording.link_fields("not json") == ()

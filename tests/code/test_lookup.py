"""Batch-score lookups (serving/batch/lookup.py) on tiny runs written in the contract's format."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.batch.lookup import CaseNotFound, ScoresLookup, ScoresUnavailable, latest_run_id
from triage.contracts import check_scores
from triage.paths import ScoresDir

STATUSES = ("likely_in_country", "likely_departed", "likely_lawful", "undetermined")
REASON = pa.struct(
    [
        ("feature", pa.string()),
        ("value", pa.float64()),
        ("shap", pa.float64()),
        ("text", pa.string()),
    ]
)


def make_rows(n: int, run_id: str = "run-1") -> list[dict]:
    """Rows like serving/batch/runner.py writes: sorted by case id, ranks in another order."""
    order = sorted(range(n), key=lambda i: ((i * 7) % n, i))  # ranks in a shuffled order
    ranks = {case: position + 1 for position, case in enumerate(order)}
    rows = []
    for i in range(n):
        rank = ranks[i]
        rows.append(
            {
                "case_id": f"C{i:05d}",
                "probability": 1.0 - rank / (n + 1),
                "probability_low": 0.5 * (1.0 - rank / (n + 1)),
                "probability_high": 1.0 - 0.5 * rank / (n + 1),
                "margin": 3.0 - rank / 10,
                "rank": rank,
                "lead_date": dt.date(2024, 1, 1) + dt.timedelta(days=i),
                "tier": min(4, 1 + (rank - 1) * 4 // n),
                "status": STATUSES[i % len(STATUSES)],
                "status_evidence": json.dumps(
                    [
                        {
                            "system": "admissions",
                            "record_id": f"ADM-{i}",
                            "date": "2024-01-02",
                            "shows": "admitted until 2024-07-01",
                        }
                    ]
                ),
                "reasons": [
                    {
                        "feature": "alias_count",
                        "value": float(i % 3),
                        "shap": 0.5,
                        "text": f"{i % 3} aliases share one fingerprint",
                    },
                    {"feature": "prior_removals", "value": None, "shap": 0.1, "text": "no removal"},
                ],
                "model_version": "backlog-risk/7",
                "run_id": run_id,
            }
        )
    return rows


def write_run(
    scores_dir: Path,
    run_id: str,
    rows: list[dict],
    *,
    json_reasons: bool = False,
    check: bool = True,
) -> Path:
    """Write ``scores/<run_id>/scores.parquet`` and point ``scores/LATEST`` at it; the file
    goes through the contract check (``check=False`` for a run that is off contract on purpose)."""
    run = ScoresDir(scores_dir).run(run_id)
    run.directory.mkdir(parents=True, exist_ok=True)
    reasons = (
        [json.dumps(r["reasons"]) for r in rows] if json_reasons else [r["reasons"] for r in rows]
    )
    table = pa.table(
        {
            "case_id": [r["case_id"] for r in rows],
            "probability": [r["probability"] for r in rows],
            "probability_low": [r["probability_low"] for r in rows],
            "probability_high": [r["probability_high"] for r in rows],
            "margin": [r["margin"] for r in rows],
            "rank": pa.array([r["rank"] for r in rows], pa.int64()),
            "lead_date": pa.array([r["lead_date"] for r in rows], pa.date32()),
            "tier": pa.array([r["tier"] for r in rows], pa.int8()),
            "status": [r["status"] for r in rows],
            "status_evidence": [r["status_evidence"] for r in rows],
            "reasons": pa.array(reasons, pa.string() if json_reasons else pa.list_(REASON)),
            "model_version": [r["model_version"] for r in rows],
            "run_id": [r["run_id"] for r in rows],
        }
    )
    pq.write_table(table, run.scores_file, row_group_size=7)  # several row groups
    if check:
        check_scores(run.scores_file)
    ScoresDir(scores_dir).latest_pointer.write_text(run_id + "\n")
    return run.directory


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("scores")
    rows = make_rows(23)
    write_run(root / "scores", "run-1", rows)
    return root, rows


@pytest.fixture(scope="module", params=["memory", "cache"])
def lookup(request: pytest.FixtureRequest, run: tuple[Path, list[dict]]) -> ScoresLookup:
    root, _ = run
    cache = root / "service" / "cache" if request.param == "cache" else None
    return ScoresLookup.open(root / "scores", cache)


def test_latest_run_id_missing(tmp_path: Path) -> None:
    """No LATEST pointer means no batch run to serve, said clearly."""
    with pytest.raises(ScoresUnavailable, match="LATEST"):
        latest_run_id(tmp_path)


def test_latest_names_missing_run(tmp_path: Path) -> None:
    """A LATEST naming a run without scores.parquet is refused, not half-served."""
    (tmp_path / "LATEST").write_text("ghost\n")
    with pytest.raises(ScoresUnavailable, match="ghost"):
        ScoresLookup.open(tmp_path)


def test_latest_rejects_path_tricks(tmp_path: Path) -> None:
    """LATEST cannot point outside the scores directory."""
    (tmp_path / "LATEST").write_text("../elsewhere\n")
    with pytest.raises(ScoresUnavailable):
        latest_run_id(tmp_path)


def test_get_returns_the_case_row(lookup: ScoresLookup, run: tuple[Path, list[dict]]) -> None:
    """Every case is found and returns its own row, with reasons and evidence as lists of dicts."""
    _, rows = run
    for want in rows:
        got = lookup.get(want["case_id"])
        assert got["rank"] == want["rank"] and got["tier"] == want["tier"]
        assert got["probability"] == pytest.approx(want["probability"])
        assert got["reasons"][0]["text"] == want["reasons"][0]["text"]
        assert got["reasons"][1]["value"] is None
        assert got["status_evidence"] == json.loads(want["status_evidence"])
        assert got["run_id"] == "run-1" and got["model_version"] == "backlog-risk/7"


@pytest.mark.parametrize("case_id", ["C99999", "", "C0000", "C00001x", "C" * 200, "Ç00001"])
def test_unknown_case(lookup: ScoresLookup, case_id: str) -> None:
    """Unknown ids (absent, prefixes, longer than any key, non-ASCII) raise CaseNotFound."""
    with pytest.raises(CaseNotFound):
        lookup.get(case_id)


def _oracle(rows: list[dict], tier: int | None, status: str | None) -> list[str]:
    keep = [r for r in rows if (tier is None or r["tier"] == tier)]
    keep = [r for r in keep if (status is None or r["status"] == status)]
    return [r["case_id"] for r in sorted(keep, key=lambda r: r["rank"])]


@pytest.mark.parametrize("tier", [None, 1, 2, 4])
@pytest.mark.parametrize("status", [None, "likely_departed", "undetermined"])
def test_queue_matches_oracle(
    lookup: ScoresLookup, run: tuple[Path, list[dict]], tier: int | None, status: str | None
) -> None:
    """Queue pages, concatenated, equal a plain filter-and-sort of all rows."""
    _, rows = run
    want = _oracle(rows, tier, status)
    got, offset = [], 0
    while True:
        total, items = lookup.queue(tier=tier, status=status, offset=offset, limit=4)
        assert total == len(want)
        if not items:
            break
        got += [it["case_id"] for it in items]
        offset += 4
    assert got == want


@pytest.mark.parametrize("tier", [None, 2])
def test_queue_excludes_and_next_case_match_oracle(
    lookup: ScoresLookup, run: tuple[Path, list[dict]], tier: int | None
) -> None:
    """Excluded cases (e.g. reviewed ones) leave the queue; next_case walks the same
    filtered queue in rank order, skipping them, and ends with None."""
    _, rows = run
    want = _oracle(rows, tier, None)
    exclude = {want[0], want[2], "not-a-case"}
    kept = [c for c in want if c not in exclude]
    total, items = lookup.queue(tier=tier, limit=100, exclude=exclude)
    assert total == len(kept) and [it["case_id"] for it in items] == kept
    walk, current = [], want[0]
    while (current := lookup.next_case(current, tier=tier, exclude=exclude)) is not None:
        walk.append(current)
    assert walk == kept
    assert lookup.next_case(want[0], tier=tier) == want[1]
    with pytest.raises(CaseNotFound):
        lookup.next_case("nope")


@pytest.mark.parametrize(("page", "size"), [(1, 4), (2, 4), (3, 7), (99, 5), (1, 100)])
@pytest.mark.parametrize("tier", [None, 2])
def test_queue_page_is_the_count_and_the_clamped_page(
    lookup: ScoresLookup, run: tuple[Path, list[dict]], page: int, size: int, tier: int | None
) -> None:
    """queue_page gives what two queue calls gave (the count, then the page clamped to the
    last), and its rows are the table rows of its items."""
    _, rows = run
    exclude = set(_oracle(rows, tier, None)[1:3]) | {"not-a-case"}
    total, _ = lookup.queue(tier=tier, limit=0, exclude=exclude)
    last = max(-(-total // size), 1)
    _, items = lookup.queue(
        tier=tier, offset=(min(page, last) - 1) * size, limit=size, exclude=exclude
    )
    got = lookup.queue_page(page=page, size=size, tier=tier, exclude=exclude)
    assert (got.total, got.page, got.items) == (total, min(page, last), items)
    ids = lookup.table["case_id"].take(got.rows).to_pylist()
    assert ids == [it["case_id"] for it in items]
    assert [r or [] for r in lookup.reasons_of(got.rows)] == [
        lookup.get(c)["reasons"] or [] for c in ids
    ]
    with pytest.raises(ValueError, match="at least 1"):
        lookup.queue_page(page=0, size=size)


def test_queue_item_fields(lookup: ScoresLookup) -> None:
    """A queue row carries rank, tier, status, probability and the top reason's text."""
    _, items = lookup.queue(limit=1)
    assert items[0]["rank"] == 1
    assert set(items[0]) == {
        "case_id", "rank", "tier", "status", "probability", "probability_low",
        "probability_high", "lead_date", "top_reason",
    }  # fmt: skip
    assert items[0]["top_reason"].endswith("aliases share one fingerprint")


def _sorted_oracle(rows: list[dict], sort: str) -> list[str]:
    """``rows`` in ``sort``'s order by a plain Python sort: ties in rank order, missing keys last."""
    key, descending = sort.removeprefix("-"), sort.startswith("-")
    sign = -1 if descending else 1

    def value(r: dict) -> tuple:
        if key == "rank":
            return (0, sign * r["rank"], r["rank"])
        if key == "probability":
            return (0, sign * r["probability"], r["rank"])
        if key == "lead_age":  # age = snapshot - lead date: older lead, larger age
            if r["lead_date"] is None:
                return (1, 0, r["rank"])
            return (0, -sign * r["lead_date"].toordinal(), r["rank"])
        order = ["likely_in_country", "undetermined", "likely_lawful", "likely_departed"]
        return (0, sign * order.index(r["status"]), r["rank"])

    return [r["case_id"] for r in sorted(rows, key=value)]


@pytest.mark.parametrize(
    "sort", ["rank", "-rank", "probability", "-probability", "lead_age", "-lead_age", "status",
             "-status"],
)  # fmt: skip
def test_sorted_queue_and_next_case_match_a_plain_sort(tmp_path: Path, sort: str) -> None:
    """Every sort lists the queue as a plain Python sort of the rows does (ties in rank
    order, leads without a date last), with filters and ``only`` applied, page by page;
    next_case walks the same order."""
    rows = make_rows(31)
    for i, r in enumerate(rows):  # ties on probability and lead date, and a missing date
        r["probability"] = round(r["probability"], 1)
        r["lead_date"] = None if i == 5 else dt.date(2024, 1, 1) + dt.timedelta(days=i % 6)
    write_run(tmp_path / "scores", "run-1", rows, check=False)
    lookup = ScoresLookup.open(tmp_path / "scores")
    want = _sorted_oracle(rows, sort)
    got = [
        it["case_id"]
        for page in range(1, 5)
        for it in lookup.queue_page(page=page, size=8, sort=sort).items
    ]
    assert got == want
    only = set(want[::3]) | {"not-a-case"}
    mine = [c for c in want if c in only and lookup.get(c)["tier"] == 2]
    total, items = lookup.queue(tier=2, only=only, exclude={want[0]}, sort=sort, limit=100)
    kept = [c for c in mine if c != want[0]]
    assert kept and total == len(kept) and [it["case_id"] for it in items] == kept
    walk, current = [], want[0]
    while (current := lookup.next_case(current, sort=sort)) is not None:
        walk.append(current)
    assert walk == want[1:]
    with pytest.raises(ValueError, match="unknown sort"):
        lookup.queue(sort="name")


def test_queue_rejects_unknown_status(lookup: ScoresLookup) -> None:
    """A status the run does not use is an error that lists the ones it does."""
    with pytest.raises(ValueError, match="likely_departed"):
        lookup.queue(status="maybe")


def test_queue_past_the_end(lookup: ScoresLookup) -> None:
    """A page past the end is empty but still reports the total."""
    assert lookup.queue(offset=1000, limit=10) == (23, [])


def test_json_reasons_are_parsed(tmp_path: Path) -> None:
    """Reasons written as a JSON string (the contract's wording) read the same as structs."""
    rows = make_rows(5)
    write_run(tmp_path / "scores", "r", rows, json_reasons=True)
    got = ScoresLookup.open(tmp_path / "scores").get("C00003")
    assert got["reasons"] == rows[3]["reasons"]


def test_duplicate_case_ids_refused(tmp_path: Path) -> None:
    """A run with a case id twice is refused: a lookup would be ambiguous."""
    rows = make_rows(5)
    rows[4]["case_id"] = rows[1]["case_id"]
    write_run(tmp_path / "scores", "r", rows, check=False)
    with pytest.raises(ScoresUnavailable, match="twice"):
        ScoresLookup.open(tmp_path / "scores")


def test_missing_column_refused(tmp_path: Path) -> None:
    """A scores.parquet without a contract column is refused with a clear error."""
    run_dir = tmp_path / "scores" / "r"
    run_dir.mkdir(parents=True)
    pq.write_table(pa.table({"case_id": ["a"], "rank": [1]}), run_dir / "scores.parquet")
    (tmp_path / "scores" / "LATEST").write_text("r")
    with pytest.raises(ScoresUnavailable, match="cannot read"):
        ScoresLookup.open(tmp_path / "scores")


def test_cache_is_reused_then_rebuilt_when_stale(tmp_path: Path) -> None:
    """The memory-mapped cache serves a second open, and a rewritten run replaces it."""
    scores, cache = tmp_path / "scores", tmp_path / "cache"
    write_run(scores, "r", make_rows(5))
    ScoresLookup.open(scores, cache)
    rows_file = cache / "lookup" / "r" / "rows.arrow"
    first = rows_file.stat().st_mtime_ns
    assert ScoresLookup.open(scores, cache).get("C00002")["rank"] == make_rows(5)[2]["rank"]
    assert rows_file.stat().st_mtime_ns == first  # reused, not rebuilt
    changed = make_rows(5)
    changed[2]["rank"], changed[3]["rank"] = changed[3]["rank"], changed[2]["rank"]
    write_run(scores, "r", changed, check=False)  # ranks no longer follow the margins
    os.utime(scores / "r" / "scores.parquet", ns=(1, 1))  # a different fingerprint for sure
    assert ScoresLookup.open(scores, cache).get("C00002")["rank"] == changed[2]["rank"]


def test_new_run_drops_old_cache(tmp_path: Path) -> None:
    """Opening a newer run removes the cache files of earlier runs."""
    scores, cache = tmp_path / "scores", tmp_path / "cache"
    write_run(scores, "r1", make_rows(5, "r1"))
    ScoresLookup.open(scores, cache)
    write_run(scores, "r2", make_rows(6, "r2"))
    lk = ScoresLookup.open(scores, cache)
    assert lk.run_id == "r2" and len(lk) == 6
    kept = sorted(str(p.relative_to(cache)) for p in cache.rglob("*.arrow"))
    assert kept == ["lookup/r2/index.arrow", "lookup/r2/rows.arrow"]


@settings(max_examples=25, deadline=None)
@given(st.sets(st.text("ABCxyz019-_.", min_size=1, max_size=12), min_size=1, max_size=30))
def test_any_case_ids_round_trip(tmp_path_factory: pytest.TempPathFactory, ids: set[str]) -> None:
    """For any set of case ids, each is found at its own row and nothing else is."""
    rows = make_rows(len(ids))
    for row, case_id in zip(rows, sorted(ids, reverse=True), strict=True):
        row["case_id"] = case_id
    scores = tmp_path_factory.mktemp("prop") / "scores"
    write_run(scores, "r", rows, check=False)  # ids in any order, not ascending
    lk = ScoresLookup.open(scores)
    for row in rows:
        assert lk.get(row["case_id"])["rank"] == row["rank"]
    with pytest.raises(CaseNotFound):
        lk.get("not-" + max(ids))


def test_unwritable_cache_falls_back_to_memory(tmp_path: Path) -> None:
    """If the cache directory cannot be created, the run is served from memory instead."""
    write_run(tmp_path / "scores", "r", make_rows(5))
    (tmp_path / "blocker").write_text("a file where the cache directory should go")
    lk = ScoresLookup.open(tmp_path / "scores", tmp_path / "blocker" / "cache")
    assert lk.get("C00001")["case_id"] == "C00001"

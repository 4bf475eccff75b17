"""Stage contracts (triage/contracts): good outputs pass, each broken rule is named."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from triage.contracts import (
    ContractError,
    check_bundle,
    check_cases,
    check_linked_records,
    check_quarantine,
    check_scores,
    check_scores_run,
)
from triage.model import ModelBundle

FEATURES = ["alias_count", "prior_removals"]


def cases(n: int = 6) -> pd.DataFrame:
    """A feature table in the contract's shape: open cases first, then labelled history."""
    is_open = np.arange(n) < n // 2
    return pd.DataFrame(
        {
            "case_id": [f"C{i:05d}" for i in range(n)],
            "is_open": is_open,
            "scoring_date": pd.to_datetime(["2025-01-01"] * n).date,
            "lead_date": pd.to_datetime(["2024-06-01"] * n).date,
            "investigated": pd.array([None if o else i % 2 == 0 for i, o in enumerate(is_open)], "boolean"),
            "concern_confirmed": pd.array([None if o else i % 4 == 0 for i, o in enumerate(is_open)], "boolean"),
            "selection": [None if o or i % 2 else ("random_audit" if i == 4 else "rules") for i, o in enumerate(is_open)],
            "citizenship_region": ["r1"] * n,
            "sex": ["F"] * n,
            "age_band": ["25-34"] * n,
            "status": ["undetermined"] * n,
            "status_evidence": [json.dumps([{"system": "admissions"}])] * n,
            "alias_count": np.arange(n, dtype=float),
            "prior_removals": [np.nan] + [0.0] * (n - 1),
        }
    )  # fmt: skip


def breaks(frame: pd.DataFrame, column: str, value: object, row: int = 1) -> pd.DataFrame:
    """A copy of ``frame`` with one cell changed."""
    out = frame.copy()
    out[column] = out[column].astype(object)
    out.at[row, column] = value
    return out


def test_good_feature_outputs_pass() -> None:
    """A feature table, linked records and quarantine in the contract's shape pass."""
    assert check_cases(cases(), feature_names=FEATURES) == 6
    assert check_linked_records(linked()) == 3
    assert check_quarantine(quarantine()) == 1


@pytest.mark.parametrize(
    ("change", "column", "rule"),
    [
        (lambda f: f.drop(columns="status"), "status", "exists"),
        (lambda f: breaks(f, "case_id", "C00000"), "case_id", "unique"),
        (lambda f: breaks(f, "status", "gone"), "status", "one of"),
        (lambda f: breaks(f, "alias_count", np.inf), "alias_count", "finite"),
        (lambda f: breaks(f, "status_evidence", "{not json"), "status_evidence", "JSON"),
        (lambda f: breaks(f, "investigated", True, row=0), "investigated", "open cases"),
        (lambda f: breaks(f, "selection", "rules", row=0), "selection", "investigated case"),
        (lambda f: breaks(f, "selection", "guess", row=4), "selection", "random_audit or rules"),
        (
            lambda f: breaks(f, "concern_confirmed", True, row=5),
            "concern_confirmed",
            "investigated",
        ),
    ],
)
def test_broken_cases_name_the_column_and_rule(
    change: Callable[[pd.DataFrame], pd.DataFrame], column: str, rule: str
) -> None:
    """Each broken rule of the feature table raises ContractError naming its column and rule."""
    with pytest.raises(ContractError, match=rule) as err:
        check_cases(change(cases()), feature_names=FEATURES, label="features/cases.parquet")
    assert err.value.column == column and err.value.file == "features/cases.parquet"


def linked() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "system": ["admissions", "admissions", "tip_reports"],
            "record_id": ["AD-1", "AD-2", "TR-1"],
            "cluster_id": [1, 1, 3],
            "link_method": ["strong:i94", "probabilistic", "singleton"],
            "link_confidence": [1.0, 0.93, None],
            "event_date": pd.to_datetime(["2024-01-01"] * 3).date,
            "summary": ["a", "b", "c"],
            "link_weight": [None, 3.7, None],
            "link_agreement": [None, '{"family_key":["agrees","exact"]}', None],
        }
    )


def test_linked_records_of_declared_systems() -> None:
    """A registry's own systems and identifier types (``triage link --config``) replace the
    world's 27 and the generic ``strong:<key>`` pattern."""
    declared = dict(systems=("admissions", "tip_reports"), link_methods=("singleton", "probabilistic", "strong:i94"))  # fmt: skip
    assert check_linked_records(linked(), **declared) == 3
    with pytest.raises(ContractError, match="column 'system'.*declared systems"):
        check_linked_records(linked(), systems=("admissions",))
    with pytest.raises(ContractError, match="column 'link_method'.*strong:i94"):
        check_linked_records(breaks(linked(), "link_method", "strong:fin"), **declared)


def quarantine() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "system": ["admissions"],
            "record_id": ["AD-9"],
            "row": ['{"x": 1}'],
            "reason": ["dob bad"],
        }
    )


@pytest.mark.parametrize(
    ("check", "frame", "column"),
    [
        (check_linked_records, breaks(linked(), "system", "system_28"), "system"),
        (check_linked_records, breaks(linked(), "record_id", "AD-1"), "record_id"),
        (check_linked_records, breaks(linked(), "link_method", "guess"), "link_method"),
        (check_linked_records, breaks(linked(), "link_confidence", 1.5), "link_confidence"),
        (check_linked_records, breaks(linked(), "link_weight", 2.0, row=0), "link_weight"),
        (check_linked_records, breaks(linked(), "link_agreement", None, row=1), "link_agreement"),
        (check_linked_records, breaks(linked(), "link_agreement", "[1]", row=1), "link_agreement"),
        (check_quarantine, breaks(quarantine(), "row", "{x", row=0), "row"),
        (check_quarantine, breaks(quarantine(), "reason", " ", row=0), "reason"),
    ],
)
def test_broken_linked_records_and_quarantine_are_named(check, frame, column) -> None:
    """Linked records and quarantine rows that break a rule are named by column."""
    with pytest.raises(ContractError) as err:
        check(frame)
    assert err.value.column == column


def write_run(run: Path, n: int = 8, expected: float = -2.0) -> pa.Table:
    """A complete run directory as serving/batch/runner.py writes it (index file included)."""
    run.mkdir(parents=True)
    rng = np.random.default_rng(3)
    shap = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
    margin = expected + shap.astype(np.float64).sum(axis=1)
    rank = np.empty(n, np.int64)
    rank[np.argsort(-margin, kind="stable")] = np.arange(1, n + 1)
    scores = pa.table(
        {
            "case_id": [f"C{i:05d}" for i in range(n)],
            "probability": 1 / (1 + np.exp(-margin)),
            "margin": margin,
            "rank": rank,
            "tier": pa.array(np.minimum(4, 1 + (rank - 1) * 4 // n), pa.int8()),
            "status": ["likely_lawful"] * n,
            "status_evidence": ["[]"] * n,
            "reasons": [json.dumps([{"feature": "alias_count"}])] * n,
            "model_version": ["m/1"] * n,
            "run_id": [run.name] * n,
            "probability_low": 0.5 / (1 + np.exp(-margin)),
            "probability_high": 1 / (1 + 0.5 * np.exp(-margin)),
            "lead_date": pa.array(pd.to_datetime(["2024-06-01"] * n).date, pa.date32()),
        }
    )
    pq.write_table(scores, run / "scores.parquet")
    pq.write_table(pa.table({f: shap[:, j] for j, f in enumerate(FEATURES)}), run / "shap.parquet")
    manifest = {"run_id": run.name, "model_version": "m/1", "n_cases": n, "expected_value": expected,
                "feature_names": FEATURES, "tier_cutoffs": [2, 4, 6]}  # fmt: skip
    (run / "manifest.json").write_text(json.dumps(manifest))
    (run / "index.duckdb").write_bytes(b"")
    return scores


def test_good_run_passes(tmp_path: Path) -> None:
    """A consistent run passes, and the expected number of open cases is checked."""
    write_run(tmp_path / "r1")
    assert check_scores_run(tmp_path / "r1", n_open=8) == 8
    with pytest.raises(ContractError, match="one row per open case"):
        check_scores_run(tmp_path / "r1", n_open=9)


def _swap(table: pa.Table, column: str, i: int, j: int) -> pa.Table:
    values = table[column].to_pylist()
    values[i], values[j] = values[j], values[i]
    return table.set_column(
        table.schema.get_field_index(column), column, pa.array(values, table[column].type)
    )


@pytest.mark.parametrize(
    ("change", "column"),
    [
        (lambda t: _swap(t, "case_id", 0, 1), "case_id"),
        (lambda t: _swap(t, "rank", 0, 1), "margin"),
        (lambda t: t.set_column(3, "rank", pa.array(t["rank"].to_numpy() * 2)), "rank"),
        (lambda t: t.set_column(1, "probability", pa.array([1.5] * t.num_rows)), "probability"),
        (lambda t: t.set_column(1, "probability", pa.array([0.0] * t.num_rows)), "probability"),
        (
            lambda t: t.set_column(10, "probability_low", pa.array([0.999] * t.num_rows)),
            "probability_low",
        ),
        (
            lambda t: t.set_column(11, "probability_high", pa.array([1.0] * t.num_rows)),
            "probability_high",
        ),
        (lambda t: t.set_column(4, "tier", pa.array([5] * t.num_rows, pa.int8())), "tier"),
        (lambda t: t.set_column(5, "status", pa.array(["?"] * t.num_rows)), "status"),
    ],
)
def test_broken_scores_are_named(tmp_path: Path, change, column: str) -> None:
    """Unsorted ids, ranks against the margin, ranks that skip, bad probabilities, tiers and
    statuses are each caught and named."""
    scores = write_run(tmp_path / "r1")
    pq.write_table(change(scores), tmp_path / "r1" / "scores.parquet")
    with pytest.raises(ContractError) as err:
        check_scores_run(tmp_path / "r1")
    assert err.value.column == column and "scores.parquet" in err.value.file


def test_shap_rows_must_add_up_to_the_margin(tmp_path: Path) -> None:
    """SHAP rows in another order than the scores break local accuracy, named on shap.parquet."""
    write_run(tmp_path / "r1")
    shap = pq.read_table(tmp_path / "r1" / "shap.parquet")
    pq.write_table(shap.take(list(range(1, 8)) + [0]), tmp_path / "r1" / "shap.parquet")
    with pytest.raises(ContractError, match="expected value") as err:
        check_scores_run(tmp_path / "r1")
    assert err.value.file.endswith("shap.parquet")


def test_json_and_list_reasons_both_checked(tmp_path: Path) -> None:
    """Six reasons are one too many, as JSON text or as a list column."""
    scores = write_run(tmp_path / "r1")
    six = json.dumps([{"feature": "x"}] * 6)
    bad = scores.set_column(7, "reasons", pa.array([six] * scores.num_rows))
    with pytest.raises(ContractError, match="at most 5"):
        check_scores(bad)
    listed = pa.array([[{"feature": "x"}] * 6] * scores.num_rows)
    with pytest.raises(ContractError, match="at most 5"):
        check_scores(scores.set_column(7, "reasons", listed))


def test_bundle_check(tmp_path: Path) -> None:
    """A saved bundle passes; one whose names do not match the booster's inputs is refused."""
    X = np.random.default_rng(0).normal(size=(200, 2))
    booster = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(X, X[:, 0] > 0), 3)
    saved = ModelBundle(booster, FEATURES, model_version="m/1").save(tmp_path / "b")
    assert check_bundle(saved).feature_names == FEATURES
    data = json.loads((saved / "bundle.json").read_text())
    data["feature_names"] = ["a", "b", "c"]
    (saved / "bundle.json").write_text(json.dumps(data))
    with pytest.raises(ContractError, match="feature_names|readable"):
        check_bundle(saved)

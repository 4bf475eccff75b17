"""Data tests for the case table: shape, contract columns, catalog, labels, evidence, SQL."""

from __future__ import annotations

import json

import duckdb
import pandas as pd
import pytest
import sqlglot
from sqlglot.errors import ErrorLevel
from typer.testing import CliRunner

from features import catalog
from features.build import build_cases
from features.ingest import ingest
from features.linkage import LinkageConfig, run_linkage
from triage.paths import SYSTEMS, Paths
from features.status import STATUS_VALUES
from features.world import SCALES, WorldConfig, generate_world
from triage.cli import app

LEADING = [
    "case_id", "is_open", "scoring_date", "lead_date", "admit_until", "investigated",
    "concern_confirmed", "selection", "citizenship_region", "sex", "age_band", "status", "status_evidence",
    "cluster_id",
]  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Paths:
    """A tiny world (seed 5), ingested, linked on strong keys only (fast) and built."""
    paths = Paths.resolve(tmp_path_factory.mktemp("features-world"))
    generate_world(WorldConfig(seed=5, scale=SCALES["tiny"]), paths)
    ingest(paths)
    run_linkage(paths, LinkageConfig(probabilistic=False))
    build_cases(paths)
    return paths


@pytest.fixture(scope="module")
def cases(built) -> pd.DataFrame:
    return pd.read_parquet(built.cases_file)


def test_one_row_per_open_and_historical_case(built, cases):
    """Every backlog case and every valid prior lead is one row; case ids are unique."""
    con = duckdb.connect()
    n_backlog = con.execute(f"select count(*) from '{built.backlog_file}'").fetchall()[0][0]
    n_leads = con.execute(
        f"select count(*) from '{built.features_dir / 'clean' / 'prior_leads.parquet'}'"
    ).fetchall()[0][0]
    assert cases["case_id"].is_unique
    assert int(cases["is_open"].sum()) == n_backlog
    assert int((~cases["is_open"]).sum()) == n_leads
    assert cases["cluster_id"].notna().mean() > 0.99


def test_columns_follow_the_contract(cases):
    """Contract columns come first, then exactly the catalog's model features, all numeric."""
    assert list(cases.columns) == LEADING + catalog.model_features()
    for name in catalog.model_features():
        assert pd.api.types.is_float_dtype(cases[name]), name


def test_catalog_is_large_enough_and_excludes_protected_attributes():
    """At least 40 features from 15 systems; protected attributes never reach the model."""
    names = catalog.model_features()
    assert len(names) >= 40 and len(set(names)) == len(names)
    assert len(catalog.systems_covered() & set(SYSTEMS)) >= 15
    for p in ("citizenship_region", "sex", "age_band"):
        assert catalog.feature(p).protected and p not in names
    adm = catalog.admission_features()
    assert adm and set(adm) < set(names)
    assert all(catalog.feature(n).family == "admission" for n in adm)
    assert {catalog.feature(n).family for n in names} == {"admission", "status", "risk"}
    for name in names:
        f = catalog.feature(name)
        assert f.meaning and f.reason.format(value=2.0), name
        assert set(f.systems) <= set(SYSTEMS), name


def test_reason_text_reads_plainly():
    """Reason templates turn values into plain sentences."""
    assert catalog.reason("arrests", 3) == "3 arrests recorded in criminal history"
    assert catalog.reason("watchlist_max_score", 0.934) == "watchlist match score up to 0.93"
    assert "no record" in catalog.reason("days_since_arrest", float("nan"))
    assert catalog.reason("arrests", 0) == "no arrests recorded in criminal history"
    assert catalog.reason("admit_class_b2", 0) == "not admitted in class B2"
    assert catalog.reason("admit_class_b2", 1) == "admitted in class B2"


def test_observable_labels(built, cases):
    """Open cases carry no label; concern_confirmed is set exactly for investigated leads."""
    open_, hist = cases[cases["is_open"]], cases[~cases["is_open"]]
    assert open_["investigated"].isna().all() and open_["concern_confirmed"].isna().all()
    assert hist["investigated"].notna().all()
    assert (hist["concern_confirmed"].notna() == hist["investigated"]).all()
    leads = pd.read_parquet(built.features_dir / "clean" / "prior_leads.parquet")
    disp = hist.merge(leads, left_on="case_id", right_on="lead_id")
    assert len(disp) == len(hist)
    assert (disp["investigated"] == disp["disposition"].str.startswith("investigated_")).all()
    inv = disp[disp["investigated"]]
    assert (inv["concern_confirmed"] == (inv["disposition"] == "investigated_concern")).all()


def test_selection_says_which_labels_are_the_random_audit(built, cases):
    """``selection`` is carried from prior_leads for investigated leads only; the random-audit
    share of historical cases is the configured 5% (the audit is drawn whatever the rules say)."""
    open_, hist = cases[cases["is_open"]], cases[~cases["is_open"]]
    assert open_["selection"].isna().all()
    assert hist.loc[~hist["investigated"].astype(bool), "selection"].isna().all()
    inv = hist[hist["investigated"].astype(bool)]
    assert set(inv["selection"]) == {"random_audit", "rules"}
    leads = pd.read_parquet(built.features_dir / "clean" / "prior_leads.parquet")
    source = inv.merge(leads[["lead_id", "selection"]], left_on="case_id", right_on="lead_id")
    assert (source["selection_x"] == source["selection_y"]).all()
    audit = (hist["selection"] == "random_audit").mean()
    assert 0.03 < audit < 0.07, audit  # binomial sd on ~2,400 leads: 0.0045


def test_own_lead_never_feeds_its_own_features(built, cases):
    """prior_leads counts only the person's other leads closed by the scoring date."""
    con = duckdb.connect()
    expected = con.execute(
        f"""select c.case_id, count(p.lead_id) as n
            from '{built.cases_file}' c
            left join (select l.cluster_id, p.lead_id, p.closed_date
                       from '{built.features_dir / "clean" / "prior_leads.parquet"}' p
                       join '{built.linked_records_file}' l
                         on l.system = 'prior_leads' and l.record_id = p.record_id) p
              on p.cluster_id = c.cluster_id and p.lead_id <> c.case_id
             and p.closed_date <= c.scoring_date
            group by c.case_id"""
    ).fetchdf()
    merged = cases[["case_id", "prior_leads"]].merge(expected, on="case_id")
    assert (merged["prior_leads"] == merged["n"]).all()
    assert (cases.loc[~cases["is_open"], "prior_leads"] > 0).mean() < 0.5


def test_values_in_range(cases):
    """Counts are non-negative, scores within [0, 1], categories from their vocabularies."""
    for name in catalog.model_features():
        f = catalog.feature(name)
        if f.fill == 0:
            assert (cases[name] >= 0).all(), name
            assert cases[name].notna().all(), name
    assert cases["watchlist_max_score"].dropna().between(0, 1).all()
    assert set(cases["status"]) <= set(STATUS_VALUES)
    assert set(cases["sex"]) <= {"M", "F", "unknown"}
    assert set(cases["age_band"]) <= {"18-24", "25-34", "35-49", "50+", "unknown"}
    assert (cases["citizenship_region"] != "unknown").mean() > 0.7
    assert (cases["lead_age_days"] >= 0).all()
    assert (cases.loc[cases["is_open"], "days_overstayed"].dropna() > 0).all()


def test_status_evidence_points_to_linked_records(built, cases):
    """Every evidence item names a linked record of the case's person dated by the scoring date."""
    linked = pd.read_parquet(
        built.linked_records_file, columns=["system", "record_id", "cluster_id"]
    )
    linked = linked.set_index(["system", "record_id"])["cluster_id"]
    n_items = 0
    for row in cases.itertuples():
        items = json.loads(row.status_evidence)
        assert bool(items) == (row.status != "undetermined"), row.case_id
        for item in items:
            assert linked[(item["system"], item["record_id"])] == row.cluster_id
            assert pd.Timestamp(item["date"]) <= pd.Timestamp(row.scoring_date)
            assert item["shows"]
            n_items += 1
    assert n_items > len(cases) / 2


def test_risk_features_track_hidden_risk(built, cases):
    """Risk features rise with the world's hidden risk (read from the truth by this test only)."""
    truth = pd.read_parquet(built.truth_dir / "cases.parquet", columns=["case_id", "risk_logit"])
    df = cases.merge(truth, on="case_id")
    # Systems keyed on strong identifiers only: name-only systems (watchlist hits, tips, visa
    # refusals) need the probabilistic linkage that this fast fixture skips.
    for name in ("convictions", "alias_enrollments", "lookouts", "prior_removals"):
        assert df[name].corr(df["risk_logit"]) > 0.1, name


def test_manifest_records_the_case_build(built):
    """features/manifest.json gains a cases entry beside the ingestion counts."""
    manifest = json.loads(built.features_manifest.read_text())
    entry = manifest["cases"]
    assert entry["open_cases"] > 0 and entry["historical_cases"] > 0
    assert entry["model_features"] == len(catalog.model_features())
    assert "systems" in manifest


def test_sql_transpiles_to_spark():
    """Every status and feature query parses as DuckDB SQL and transpiles to Spark SQL."""
    files = sorted(catalog.SQL_DIR.glob("features_*.sql")) + sorted(
        catalog.SQL_DIR.glob("status_*.sql")
    )
    assert len(files) >= 10
    for path in files:
        out = sqlglot.transpile(
            path.read_text(),
            read="duckdb",
            write="spark",
            unsupported_level=ErrorLevel.RAISE,
            comments=False,
        )
        assert len(out) == 1 and out[0].lstrip().upper().startswith(("SELECT", "WITH")), path


def test_missing_world_is_a_clear_error(tmp_path):
    """`triage features` on an empty directory exits 2 with a one-line hint."""
    result = CliRunner().invoke(app, ["features", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "no world" in result.output


def test_every_feature_value_lies_in_its_declared_domain(cases):
    """The catalog's domains (what the service accepts) hold every value the stage computes."""
    for name in catalog.model_features():
        d = catalog.domain(name)
        values = cases[name].dropna()
        outside = values[~values.map(d.contains)]
        assert outside.empty, (name, d.describe(), outside.head().tolist())

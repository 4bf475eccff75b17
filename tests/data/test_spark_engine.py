"""The features stage on Spark: the same SQL translated (fast), and the same outputs (slow)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlglot

from features.build import FEATURE_QUERIES
from features.catalog import query_sql
from features.ingest import validation_sql
from features.linkage.backend import _to_spark
from features.linkage.model import _extra_comparison, load_model_settings
from features.linkage.sql import named_sql, sql
from features.normalize import SQL_MACROS
from features.schemas import SCHEMAS
from features.stage import run_features_stage
from features.status import STATUS_QUERIES
from triage.paths import Paths
from triage.spark import spark_available
from triage.sparkcon import translate

# What DuckDB has and Spark lacks: none of it may reach Spark.
DUCKDB_ONLY = (
    "TRY_STRPTIME",
    "REGEXP_FULL_MATCH",
    "UBIGINT",
    "MATERIALIZED",
    "[[:",
    "HASH(",
    "JAROWINKLER_SIMILARITY",
    "STRFTIME",
    "STRUCT_PACK",
    "POSITIONAL",
    "READ_PARQUET",
)


def _macros() -> dict:
    trees = sqlglot.parse(SQL_MACROS.read_text(), read="duckdb")
    return {
        t.this.this.name.lower(): ([a.name for a in t.this.expressions], t.expression)
        for t in trees
        if t is not None
    }


def _stage_statements() -> list[str]:
    """The stage's SQL that does not depend on the data: validation of every declared system,
    the name normalisers, the linkage queries, status and every feature family."""
    out = []
    for schema in SCHEMAS.values():
        raw = {c.name: "VARCHAR" for c in schema.columns} | {"record_id": "VARCHAR"}
        src = "read_parquet('/data/x.parquet', file_row_number=true)"
        out.append(validation_sql(schema, src, raw, dt.date(2025, 6, 30), True))
    out += named_sql("normalize_names").values()
    out += [sql("linkage_identities"), *named_sql("linkage_reps").values()]
    out += [query_sql(name) for name in ("features_cases", *STATUS_QUERIES, *FEATURE_QUERIES)]
    return out


def test_every_stage_statement_translates_to_spark():
    """Each statement the stage runs translates to Spark SQL that Spark's parser reads, with
    no DuckDB-only construct left (macros inlined, functions rewritten)."""
    macros = _macros()
    statements = _stage_statements()
    assert len(statements) > 40
    for text in statements:
        out = translate(text, macros=macros)
        sqlglot.parse_one(out, read="spark")
        upper = out.upper()
        assert not [w for w in DUCKDB_ONLY if w in upper], (w for w in DUCKDB_ONLY if w in upper)
        assert not any(m.upper() + "(" in upper for m in macros)


def test_comparison_model_translates_to_spark():
    """Every condition and blocking rule of the Splink model translates, with the similarity
    functions under the names the Spark connection registers."""
    settings = load_model_settings(("id_fin", "address", "postcode"))
    settings["comparisons"] += [_extra_comparison("postcode")]
    texts = list(settings["blocking_rules_to_generate_predictions"])
    texts += [
        level["sql_condition"]
        for comparison in settings["comparisons"]
        for level in comparison["comparison_levels"]
        if level["sql_condition"] != "ELSE"
    ]
    outs = [_to_spark(t) for t in texts]
    assert any("TRIAGE_JARO_WINKLER(" in o.upper() for o in outs)
    assert any("DATE_FORMAT(" in o.upper() for o in outs)
    for out in outs:
        assert not [w for w in DUCKDB_ONLY if w in out.upper()]


def test_rewrites_keep_duckdb_semantics():
    """The rewrites that change a call keep its meaning: full-match anchoring, strptime
    patterns, format placeholders, 64-bit hashes, bound parameters."""
    assert "RLIKE '^(?:[A-Z]{2}[\\\\p{Alpha}])$'" in translate(
        "select regexp_full_match(x, '[A-Z]{2}[[:alpha:]]')"
    )
    assert "TRY_TO_TIMESTAMP(x, 'd/M/yyyy')" in translate("select try_strptime(x, '%d/%m/%Y')")
    assert "'yyyyMMdd'" in translate("select try_strptime(x, '%Y%m%d')")
    assert "FORMAT_STRING('a %s is 100%%', CAST(d AS STRING))" in translate(
        "select format('a {} is 100%', d)"
    )
    assert "XXHASH64('k', x, ISNULL('k'), ISNULL(x))" in translate("select hash('k', x)")
    bound = translate("select ? as a", [dt.date(2025, 1, 2)])
    assert "CAST('2025-01-02' AS DATE)" in bound
    assert "0.9 AS b" in translate("select $t as b", {"t": 0.9})
    with pytest.raises(ValueError, match="parameter"):
        translate("select ? as a, ? as b", [1])
    with pytest.raises(ValueError, match="no Spark"):
        translate("select try_strptime(x, '%j')")


# --- parity on a tiny world (Spark local mode) -------------------------------------------

pytestmark_spark = pytest.mark.skipif(spark_available() is not None, reason=str(spark_available()))


@pytest.fixture(scope="module")
def engines(tiny_world, tmp_path_factory):
    """The features stage run by each engine on copies of the session's tiny world, timed."""
    saved = os.environ.get("TRIAGE_SPARK_SHUFFLE_PARTITIONS")
    os.environ["TRIAGE_SPARK_SHUFFLE_PARTITIONS"] = "4"  # a tiny world on two cores
    import triage.sparkcon
    from triage.spark import spark_session, stop_spark

    spark_session()
    runs, seconds = {}, {}
    # Every registered frame through scratch Parquet, as a large world's per-record arrays go.
    in_memory = triage.sparkcon.REGISTER_IN_MEMORY_BYTES
    triage.sparkcon.REGISTER_IN_MEMORY_BYTES = 0
    try:
        for engine in ("duckdb", "spark"):
            root = tmp_path_factory.mktemp(f"engine-{engine}")
            shutil.copytree(tiny_world.world_dir, root / "world")
            paths = Paths.resolve(root, tiny_world.mlruns_dir)
            t0 = time.perf_counter()
            run_features_stage(paths, engine=engine)
            seconds[engine] = time.perf_counter() - t0
            runs[engine] = paths
        print(f"\nfeatures stage on the tiny world: {seconds}")
        yield runs
    finally:
        triage.sparkcon.REGISTER_IN_MEMORY_BYTES = in_memory
        stop_spark()
        if saved is None:
            os.environ.pop("TRIAGE_SPARK_SHUFFLE_PARTITIONS", None)
        else:
            os.environ["TRIAGE_SPARK_SHUFFLE_PARTITIONS"] = saved


def _frames_equal(a: pd.DataFrame, b: pd.DataFrame, label: str) -> None:
    assert list(a.columns) == list(b.columns), label
    assert len(a) == len(b), label
    for col in a.columns:
        x, y = a[col], b[col]
        if pd.api.types.is_float_dtype(x):
            same = np.isclose(x.astype(float), y.astype(float), rtol=0, atol=1e-9, equal_nan=True)
        else:
            same = ((x == y) | (x.isna() & y.isna())).to_numpy()
        assert same.all(), f"{label}.{col}: {(~same).sum()} rows differ"


@pytest.mark.slow
@pytestmark_spark
def test_spark_ingest_writes_the_same_clean_tables_and_quarantine(engines):
    """Every clean table (types, rows in order) and the quarantine (rows and reasons) match."""
    duck, spark = engines["duckdb"], engines["spark"]
    for path in sorted(duck.clean_dir.glob("*.parquet")):
        a, b = pq.read_table(path), pq.read_table(spark.clean_dir / path.name)
        assert a.schema.types == b.schema.types, path.name
        _frames_equal(a.to_pandas(), b.to_pandas(), path.name)
    _frames_equal(
        pd.read_parquet(duck.quarantine_file), pd.read_parquet(spark.quarantine_file), "quarantine"
    )


def _partition(paths: Paths) -> set[frozenset]:
    links = pd.read_parquet(
        paths.linked_records_file, columns=["system", "record_id", "cluster_id"]
    )
    keys = links["system"] + "/" + links["record_id"]
    return set(keys.groupby(links["cluster_id"]).agg(frozenset))


@pytest.mark.slow
@pytestmark_spark
def test_spark_linkage_finds_the_same_persons(engines):
    """The model is DuckDB's (same text, m and u values equal: u from the same portable
    sample of representatives) and the clusters partition the records exactly as DuckDB's
    do, with the same cluster ids (no tie is broken by an engine's own hash)."""
    duck_model = json.loads((engines["duckdb"].features_dir / "linkage_model.json").read_text())
    spark_model = json.loads((engines["spark"].features_dir / "linkage_model.json").read_text())
    assert spark_model["sql_dialect"] == "duckdb"
    for a, b in zip(duck_model["comparisons"], spark_model["comparisons"], strict=True):
        for la, lb in zip(a["comparison_levels"], b["comparison_levels"], strict=True):
            assert la["sql_condition"] == lb["sql_condition"]
            for p in ("m_probability", "u_probability"):
                if la.get(p) is not None:
                    assert la[p] == pytest.approx(lb[p], abs=1e-9), (la, lb)
    duck, spark = _partition(engines["duckdb"]), _partition(engines["spark"])
    moved = sum(len(c) for c in duck ^ spark)
    assert moved == 0, f"{moved} of {sum(len(c) for c in duck)} records in differing clusters"
    # Beyond the partition: every column of every row (cluster and identity ids, methods,
    # confidences, weights and agreement levels), floats within 1e-9.
    key = ["system", "record_id"]
    a = pd.read_parquet(engines["duckdb"].linked_records_file)
    b = pd.read_parquet(engines["spark"].linked_records_file)
    a, b = a.sort_values(key, ignore_index=True), b.sort_values(key, ignore_index=True)
    _frames_equal(a, b, "linked_records")
    manifest = json.loads(engines["spark"].features_manifest.read_text())
    assert manifest["engine"] == "spark"


@pytest.mark.slow
@pytestmark_spark
def test_spark_build_writes_the_same_cases(engines, tmp_path):
    """From the same linked records, the case build on Spark writes DuckDB's cases.parquet:
    every column and row (floats within 1e-9), in the same order."""
    from features.build import build_cases

    duck = engines["duckdb"]
    shutil.copytree(duck.data_dir, tmp_path / "data")
    paths = Paths.resolve(tmp_path / "data", duck.mlruns_dir)
    paths.cases_file.unlink()
    build_cases(paths, engine="spark")
    a, b = pd.read_parquet(duck.cases_file), pd.read_parquet(paths.cases_file)
    assert pq.read_schema(duck.cases_file).types == pq.read_schema(paths.cases_file).types
    _frames_equal(a, b, "cases")


@pytest.mark.slow
@pytestmark_spark
def test_spark_stage_writes_the_same_cases(engines):
    """The whole stage on Spark (its own linkage, then the build) writes DuckDB's
    cases.parquet: every column and row, floats within 1e-9, in the same order."""
    a = pd.read_parquet(engines["duckdb"].cases_file)
    b = pd.read_parquet(engines["spark"].cases_file)
    _frames_equal(a, b, "cases")


def test_cli_refuses_an_engine_it_cannot_run(tiny_world, monkeypatch):
    """`triage features --engine` names an unknown engine, and a Spark that cannot start
    (here: no Java on the PATH), in one line with exit code 2, before any work."""
    from typer.testing import CliRunner

    from triage.cli import app

    data = str(tiny_world.data_dir)
    published = tiny_world.features_dir.exists()
    r = CliRunner().invoke(app, ["features", "--engine", "flink", "--data-dir", data])
    assert r.exit_code == 2 and "unknown engine 'flink'" in r.output
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    r = CliRunner().invoke(app, ["features", "--engine", "spark", "--data-dir", data])
    assert r.exit_code == 2 and "Spark cannot start here: no Java runtime" in r.output
    assert tiny_world.features_dir.exists() == published


@pytest.mark.slow
@pytestmark_spark
def test_a_spark_failure_half_way_leaves_the_previous_output(engines, tmp_path, monkeypatch):
    """A Spark query failing in linkage (after Spark's ingest wrote clean/ and its scratch
    tables) publishes nothing: the previous outputs stay byte for byte, no staging is left."""
    import hashlib

    from pyspark.errors import AnalysisException

    import features.linkage.run

    shutil.copytree(engines["spark"].data_dir, tmp_path / "data")
    paths = Paths.resolve(tmp_path / "data", engines["spark"].mlruns_dir)

    def digests() -> dict[str, str]:
        files = sorted(p for p in paths.features_dir.rglob("*") if p.is_file())
        return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    before = digests()
    monkeypatch.setattr(features.linkage.run, "keys_sql", lambda *_a, **_k: "SELECT no_such FROM x")
    with pytest.raises(AnalysisException):
        run_features_stage(paths, verify=False, engine="spark")
    assert digests() == before
    assert sorted(p.name for p in paths.data_dir.iterdir()) == ["features", "world"]


def test_statement_profile_names_the_slowest_statements(caplog):
    """The Spark connection's profile adds up repeated statements and logs the slowest first."""
    from triage.sparkcon import StatementProfile, _label

    profile = StatementProfile()
    for label, seconds in [("copy to a.parquet", 2.0), ("collect x", 0.5), ("collect x", 0.75)]:
        profile.add(label, seconds)
    assert profile.slowest(2) == [("copy to a.parquet", 2.0, 1), ("collect x", 1.25, 2)]
    with caplog.at_level("INFO", logger="triage.sparkcon"):
        profile.report("linkage", k=1)
    assert "Spark linkage: 3.2 s in statements" in caplog.text
    assert "copy to a.parquet" in caplog.text and "collect x" not in caplog.text
    copy = sqlglot.parse_one("COPY (SELECT 1) TO '/tmp/dir/out.parquet' (FORMAT parquet)")
    assert _label(copy) == "copy to out.parquet"
    assert _label(sqlglot.parse_one("CREATE TEMP TABLE t AS SELECT 1")) == "create table t"


@pytest.mark.slow
@pytestmark_spark
def test_register_reads_back_the_same_rows_in_memory_or_through_parquet(tmp_path, monkeypatch):
    """A registered frame is the same view whether it is sent from the driver or, past the
    size bound, written to scratch Parquet: hashes (uint64), NaN and NA, categoricals (with
    and without categories); and ``fetchnumpy`` gives back the columns DuckDB's would."""
    import duckdb

    import triage.sparkcon
    from triage.spark import spark_session

    n = 1000
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "h": rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2),
            "w": np.where(np.arange(n) % 7 == 0, np.nan, rng.random(n)).astype(np.float32),
            "ident": pd.array(np.where(np.arange(n) % 5 == 0, None, np.arange(n)), dtype="Int64"),
            "method": pd.Categorical.from_codes(np.arange(n) % 3 - 1, ["strong:fin", "singleton"]),
            "none": pd.Categorical.from_codes(np.full(n, -1, np.int16), []),
            "pos": np.arange(n),
        }
    )
    query = "SELECT * FROM f ORDER BY pos"
    duck = duckdb.connect()
    duck.register("f", frame)
    expected = duck.execute(query).df()
    con = triage.sparkcon.SparkConnection(spark_session(), tmp_path / "scratch")
    try:
        for bound in (2**40, 0):  # in the driver's memory; through Parquet
            monkeypatch.setattr(triage.sparkcon, "REGISTER_IN_MEMORY_BYTES", bound)
            con.register("f", frame)
            got = con.execute(query).df()
            # Spark has no unsigned type: a hash keeps its bits as a signed integer.
            got["h"] = got["h"].astype(np.int64).astype(np.uint64)
            for col in ("method", "none"):
                assert (got[col].isna() == expected[col].isna()).all(), (bound, col)
                got[col] = got[col].astype(object).where(got[col].notna(), None)
                expected[col] = expected[col].astype(object).where(expected[col].notna(), None)
            _frames_equal(got, expected, f"register bound {bound}")
            arrays = con.execute("SELECT pos, w FROM f ORDER BY pos").fetchnumpy()
            assert (arrays["pos"] == np.arange(n)).all()
            nan = np.isnan(arrays["w"].astype(float))
            assert (nan == frame["w"].isna().to_numpy()).all()
            con.unregister("f")
        parquet = [p for p in (tmp_path / "scratch").iterdir() if p.name.startswith("f-")]
        assert parquet, "the frame past the bound was not written to scratch Parquet"
    finally:
        con.close()

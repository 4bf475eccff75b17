"""Entity resolution on a tiny world: output contract, accuracy targets, and the fast
linker against a brute-force all-pairs oracle using the same model and decision rule."""

from __future__ import annotations

import io
import json

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from features.ingest import ingest
from features.linkage import (
    LINK_METHODS,
    LinkageConfig,
    decide_links,
    model_file,
    run_linkage,
    score_pairs,
)
from features.linkage.arrays import components
from features.linkage.keys import keys_sql, strong_clusters
from features.linkage.sql import record_count, record_offsets
from features.linkage.write import write_linked_records
from features.linkage_eval import TARGETS, evaluate_linkage
from features.world import SCALES, WorldConfig, generate_world
from triage.contracts import ContractError
from triage.paths import SYSTEMS, Paths


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Paths:
    paths = Paths.resolve(tmp_path_factory.mktemp("linkage") / "data")
    generate_world(WorldConfig(seed=13, scale=SCALES["tiny"]), paths)
    ingest(paths)
    return paths


@pytest.fixture(scope="module")
def strong_only(world):
    """Strong keys alone: seconds, so these tests run by default."""
    return world, run_linkage(world, LinkageConfig(probabilistic=False)), None


# The fast tests come first in this file: the slow fixture rewrites linked_records.


@pytest.fixture(scope="module")
def linked(world):
    """The whole linker (Splink training and scoring): the slow tests use it."""
    database = world.data_dir / "linkage.duckdb"  # keeps the working tables for the oracle
    return world, run_linkage(world, LinkageConfig(database=str(database))), database


@pytest.fixture(scope="module")
def report(linked):
    paths, _, _ = linked
    return evaluate_linkage(paths)


def test_every_clean_record_is_linked_once(strong_only):
    """linked_records has one row per valid record, with the contract's columns and types."""
    paths, result, _ = strong_only
    table = pq.read_table(paths.linked_records_file)
    assert (
        table.num_rows
        == result.records
        == sum(pq.ParquetFile(paths.clean_file(s)).metadata.num_rows for s in SYSTEMS)
    )
    schema = {f.name: str(f.type) for f in table.schema}
    assert schema["cluster_id"] == "int64"
    assert schema["link_confidence"] == "double"
    assert schema["event_date"] == schema["birth_date"] == "date32[day]"
    for col in ("system", "record_id", "link_method", "family_name", "given_name", "summary"):
        assert schema[col] == "string"
    con = duckdb.connect()
    con.register("t", table)
    (dupes,) = con.execute(
        "SELECT count(*) - count(DISTINCT (system, record_id)) FROM t"
    ).fetchall()[0]
    assert dupes == 0
    assert set(table["link_method"].to_pylist()) <= set(LINK_METHODS)
    assert table["summary"].null_count == table["event_date"].null_count == 0


def _links_of(paths: Paths) -> dict[str, np.ndarray]:
    """The per-record link arrays behind the written linked_records (file order = rec order)."""
    t = pd.read_parquet(paths.linked_records_file)
    agreement = pd.Categorical(t["link_agreement"])
    return {
        "cluster_id": t["cluster_id"].to_numpy(np.int64),
        "method": t["link_method"].map({m: i for i, m in enumerate(LINK_METHODS)}).to_numpy(),
        "confidence": t["link_confidence"].to_numpy(np.float64),
        "identity_id": t["identity_id"].fillna(-1).to_numpy(np.int64),
        "alias_count": t["alias_count"].to_numpy(np.int64),
        "weight": t["link_weight"].to_numpy(np.float32),
        "agreement": agreement.codes.astype(np.int16),
        "agreements": np.array(agreement.categories, object),
    }


def test_linked_records_writer_checks_the_contract_before_the_swap(strong_only):
    """write_linked_records refuses links that break the contract, naming the file and the
    column, and leaves the previous file in place; the same links unbroken pass."""
    paths, _, _ = strong_only
    before = paths.linked_records_file.read_bytes()
    offsets = record_offsets(paths, SYSTEMS)
    links = _links_of(paths)
    broken = {**links, "confidence": links["confidence"].copy()}
    broken["confidence"][3] = 1.5
    con = duckdb.connect()
    with pytest.raises(ContractError, match=r"linked_records\.parquet: column 'link_confidence'"):
        write_linked_records(con, paths, offsets, broken)
    assert paths.linked_records_file.read_bytes() == before
    assert not list(paths.features_dir.glob(".linked_records.parquet.*"))  # no temp file left
    assert write_linked_records(con, paths, offsets, links) == len(links["cluster_id"])
    assert pd.read_parquet(paths.linked_records_file).equals(pd.read_parquet(io.BytesIO(before)))


def test_one_fin_with_several_names_is_one_person_with_aliases(strong_only):
    """Records sharing a FIN stay in one cluster however many identities they show."""
    paths, _, _ = strong_only
    con = duckdb.connect()
    (split_fins,) = con.execute(
        f"""
        SELECT count(*) FROM (
            SELECT c.fin FROM '{paths.clean_file("biometric_enrollments")}' c
            JOIN '{paths.linked_records_file}' l
              ON l.system = 'biometric_enrollments' AND l.record_id = c.record_id
            GROUP BY c.fin HAVING count(DISTINCT l.cluster_id) > 1)
        """
    ).fetchall()[0]
    assert split_fins == 0
    (with_aliases,) = con.execute(
        f"SELECT count(DISTINCT cluster_id) FROM '{paths.linked_records_file}' WHERE alias_count > 0"
    ).fetchall()[0]
    assert with_aliases > 0


@pytest.mark.slow
def test_link_confidence_follows_the_method(linked):
    """Strong keys link with confidence 1, probabilistic links above the threshold, singletons none."""
    paths, _, _ = linked
    con = duckdb.connect()
    rows = con.execute(
        f"""
        SELECT link_method, min(link_confidence), max(link_confidence), count(link_confidence),
               count(*), count(DISTINCT cluster_id)
        FROM '{paths.linked_records_file}' GROUP BY 1
        """
    ).fetchall()
    for method, lo, hi, n_conf, n, n_clusters in rows:
        if method.startswith("strong:"):
            assert lo == hi == 1.0
        elif method == "probabilistic":
            assert LinkageConfig().threshold <= lo <= hi <= 1.0
        else:
            assert n_conf == 0 and n_clusters == n  # a singleton is alone in its cluster


def _damerau_one(a: str, b: str) -> bool:
    """Two strings of equal length one substitution or one adjacent swap apart."""
    diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    if len(diff) == 1:
        return True
    i, j = diff if len(diff) == 2 else (0, 0)
    return len(diff) == 2 and j == i + 1 and a[i] == b[j] and a[j] == b[i]


def _level_holds(field: str, agreement: str, level: str, left: dict, right: dict) -> bool:
    """Whether the record values of two records bear out a comparison level (our own reading
    of the levels, on the clean rows, not the linker's SQL)."""
    if field in ("family_key", "given_key"):
        other = "given_key" if field == "family_key" else "family_key"
        a, b = left[field], right[field]
        exchanged = a is not None and a == right[other] and left[other] == b
        if agreement == "agrees":
            return a is not None and a == b
        if agreement == "unknown":  # missing on a side, or exchanged (weighed by family_key)
            return a is None or b is None or (field == "given_key" and exchanged)
        if "exchanged" in level:
            return exchanged
        return a is not None and b is not None and a != b
    if field == "birth_date":
        a, b = left[field], right[field]
        if agreement == "unknown":
            return a is None or b is None
        if a is None or b is None:
            return False
        sa, sb = a.strftime("%Y%m%d"), b.strftime("%Y%m%d")
        swapped = b.day <= 12 and (a.year, a.month, a.day) == (b.year, b.day, b.month)
        if level == "exact":
            return a == b
        if level == "day and month swapped":
            return a != b and swapped
        if level == "one digit off":
            return a != b and not swapped and _damerau_one(sa, sb)
        return a != b and not swapped and not _damerau_one(sa, sb)
    return True  # cluster-level comparisons (region, documents, age): not per record


@pytest.mark.slow
def test_probabilistic_links_keep_the_evidence_of_their_deciding_pair(linked):
    """link_weight and link_agreement are set exactly on probabilistic links; the weight is
    the one behind link_confidence; the two records of each deciding pair bear out the
    fields the agreement names, read from their clean rows."""
    paths, _, database = linked
    con = duckdb.connect()
    con.execute(
        f"CREATE TABLE l AS SELECT row_number() OVER () - 1 AS rec_idx, * "
        f"FROM read_parquet('{paths.linked_records_file}')"
    )
    (n_prob, n_weight, n_agree, wrong_fill, n_bad_p) = con.execute(
        f"""
        SELECT count(*) FILTER (link_method = 'probabilistic'),
               count(link_weight), count(link_agreement),
               count(*) FILTER ((link_weight IS NULL) <> (link_method <> 'probabilistic')
                                OR (link_agreement IS NULL) <> (link_method <> 'probabilistic')),
               count(*) FILTER (abs(link_confidence
                   - least(1 / (1 + pow(2, -link_weight)), 1 - 1e-12)) > 1e-5)
        FROM l
        """
    ).fetchall()[0]
    assert n_prob > 1000 and n_weight == n_agree == n_prob and wrong_fill == 0
    assert n_bad_p == 0  # the weight is that of the probability shown
    (low,) = con.execute("SELECT min(link_weight) FROM l").fetchall()[0]
    threshold = LinkageConfig().threshold
    assert low >= np.log2(threshold / (1 - threshold)) - 1e-4

    clean = " UNION ALL ".join(
        f"SELECT '{s}' AS system, record_id, family_key, given_key, birth_date "
        f"FROM read_parquet('{paths.clean_file(s)}')"
        for s in SYSTEMS
    )
    con.execute(f"ATTACH '{database}' AS link (READ_ONLY)")
    pairs = con.execute(
        f"""
        WITH c AS ({clean})
        SELECT e.match_weight, a.link_weight, a.link_agreement,
               cl.family_key, cl.given_key, cl.birth_date,
               cr.family_key, cr.given_key, cr.birth_date
        FROM link.link_evidence e
        JOIN l a ON a.rec_idx = e.comp_id          -- a strong cluster's smallest record
        JOIN l rl ON rl.rec_idx = e.rec_l
        JOIN l rr ON rr.rec_idx = e.rec_r
        JOIN c cl ON cl.system = rl.system AND cl.record_id = rl.record_id
        JOIN c cr ON cr.system = rr.system AND cr.record_id = rr.record_id
        WHERE a.link_method = 'probabilistic'
        """
    ).fetchall()
    assert len(pairs) > 500
    seen: set[tuple[str, str]] = set()
    for weight_e, weight, agreement, *values in pairs:
        assert weight == pytest.approx(weight_e, abs=1e-3)
        left = dict(zip(("family_key", "given_key", "birth_date"), values[:3], strict=True))
        right = dict(zip(("family_key", "given_key", "birth_date"), values[3:], strict=True))
        for field, (kind, level) in json.loads(agreement).items():
            assert kind in ("agrees", "partly", "disagrees", "neutral", "unknown")
            assert _level_holds(field, kind, level, left, right), (field, kind, level, values)
            seen.add((field, level))
    # The check saw more than exact agreements.
    assert {("birth_date", "exact"), ("birth_date", "null")} <= seen
    assert any(f == "family_key" and lv != "exact" for f, lv in seen)


@pytest.mark.slow
def test_link_agreement_levels_are_splinks_own_gammas(linked):
    """The levels link_agreement names are the comparison vector Splink itself computes for
    the deciding pair (its gamma_ columns, kept here with retain_matching_columns). The
    weights are not compared: Splink's name-frequency adjustments depend on the table
    scored, and this one is a subset."""
    from splink import DuckDBAPI, Linker

    paths, _, database = linked
    model = json.loads(model_file(paths).read_text())
    con = duckdb.connect(str(database))
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE l AS SELECT row_number() OVER () - 1 AS rec_idx, "
        f"link_method, link_agreement FROM read_parquet('{paths.linked_records_file}')"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE some_pairs AS SELECT e.rep_id_l, e.rep_id_r, "
        "a.link_agreement FROM link_evidence e JOIN l a ON a.rec_idx = e.comp_id "
        "WHERE a.link_method = 'probabilistic' ORDER BY hash(e.comp_id) LIMIT 300"
    )
    con.execute(
        "CREATE OR REPLACE TABLE some_reps AS SELECT * FROM link_reps WHERE rep_id IN "
        "(SELECT rep_id_l FROM some_pairs UNION SELECT rep_id_r FROM some_pairs)"
    )
    settings = {
        **model,
        "retain_matching_columns": True,
        "blocking_rules_to_generate_predictions": ["l.comp_id <> r.comp_id"],
    }
    linker = Linker(DuckDBAPI(connection=con).register("some_reps"), settings, log_level=None)
    predicted = linker.inference.predict().physical_name
    names = [c["output_column_name"] for c in model["comparisons"]]
    gammas = ", ".join(f"p.gamma_{n}" for n in names)
    rows = con.execute(
        f"SELECT s.link_agreement, {gammas} FROM some_pairs s "
        f"JOIN {predicted} p ON p.rep_id_l = s.rep_id_l AND p.rep_id_r = s.rep_id_r"
    ).fetchall()
    con.close()
    assert len(rows) == 300
    for agreement, *gamma in rows:
        named = json.loads(agreement)
        for comparison, g in zip(model["comparisons"], gamma, strict=True):
            levels = comparison["comparison_levels"]
            labels = [lv["label_for_charts"] for lv in levels]
            i = labels.index(named[comparison["output_column_name"]][1])
            # Splink: null levels -1, the others counted from the last (ELSE: 0) upwards.
            counted = sum(not lv.get("is_null_level") for lv in levels[i + 1 :])
            assert g == (-1 if levels[i].get("is_null_level") else counted), (comparison, g)


@pytest.mark.slow
def test_linkage_meets_its_targets(report):
    """Pairwise F1 >= 0.99 overall; per-system recall >= 0.97 wherever records carry information."""
    assert report["pairwise_f1"] >= TARGETS["pairwise_f1"]
    assert report["pairwise_precision"] >= 0.995
    for system, m in report["per_system"].items():
        # Records with no name and no identifier shared with any other record (a court
        # order whose A-number appears nowhere else) cannot be linked by anyone: the
        # target applies to what is linkable.
        target = min(TARGETS["system_recall"], m["recall_ceiling"] - 0.01)
        assert m["pairwise_recall"] >= target, (system, m)
    assert 0 < report["comparisons"] < report["records_linked"]


@pytest.mark.slow
def test_report_is_written(linked, report):
    """reports/linkage.json holds the overall and per-system metrics and the comparisons."""
    paths, _, _ = linked
    written = json.loads(paths.report("linkage.json").read_text())
    for key in (
        "pairwise_precision",
        "pairwise_recall",
        "pairwise_f1",
        "per_system",
        "comparisons",
    ):
        assert key in written
    assert set(written["per_system"]) == set(SYSTEMS)


def _partition_pairs(n_items: int, merges: np.ndarray, items: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of items that end up in one group after the merges."""
    index = {c: i for i, c in enumerate(items)}
    a = np.array([index[c] for c in merges[:, 0].astype(np.int64)], dtype=np.int64)
    b = np.array([index[c] for c in merges[:, 1].astype(np.int64)], dtype=np.int64)
    labels = components(n_items, a, b)
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(labels):
        groups.setdefault(g, []).append(i)
    return {(x, y) for g in groups.values() for i, x in enumerate(g) for y in g[i + 1 :]}


@pytest.mark.slow
def test_blocked_linker_agrees_with_all_pairs_oracle(linked):
    """On a subset, blocking finds the same merges as scoring every pair with the same rule."""
    paths, _, database = linked
    model = json.loads(model_file(paths).read_text())
    con = duckdb.connect(str(database))
    offsets = record_offsets(paths)
    keys = con.execute(keys_sql(paths, offsets)).fetchnumpy()
    n = record_count(paths, offsets)
    strong_id, _ = strong_clusters(n, keys)
    # A subset that keeps true matches together: the first letter of a folded family
    # name survives typos (never on the first letter) and transliteration.
    con.execute(
        "CREATE OR REPLACE TABLE subset_reps AS SELECT * FROM link_reps "
        "WHERE left(family_key, 1) IN ('b', 'd', 'g', 'm', 't')"
    )
    n_reps = con.execute("SELECT count(*) FROM subset_reps").fetchall()[0][0]
    assert n_reps > 500
    threshold = LinkageConfig().threshold
    fast_pairs, n_fast = score_pairs(con, model, table="subset_reps", threshold=0.5)
    fast = decide_links(con, fast_pairs, threshold, strong_id, keys)
    oracle_pairs, n_all = score_pairs(
        con, model, table="subset_reps", blocking_rules=["l.comp_id <> r.comp_id"], threshold=0.5
    )
    oracle = decide_links(con, oracle_pairs, threshold, strong_id, keys)
    con.close()

    assert n_fast < 0.05 * n_all  # blocking compares a small share of all pairs
    comps = np.unique(np.concatenate([fast[:, :2].ravel(), oracle[:, :2].ravel()]).astype(np.int64))
    fast_set = _partition_pairs(comps.size, fast, comps)
    oracle_set = _partition_pairs(comps.size, oracle, comps)
    assert len(oracle_set) > 100
    agree = len(fast_set & oracle_set)
    assert agree >= 0.99 * len(oracle_set)  # blocking loses (almost) nothing the oracle finds
    assert agree >= 0.99 * len(fast_set)  # and finds nothing the oracle rejects


@pytest.mark.slow
def test_tip_identifiability_matches_a_plain_count(linked, report):
    """The report's tip identifiability equals a per-tip loop over every named, dated record."""
    from features.linkage_eval import TIP_AGE_YEARS

    paths, _, _ = linked
    records = pd.read_parquet(paths.linked_records_file)
    truth = pd.read_parquet(paths.truth_dir / "record_person.parquet")
    records = records.merge(truth, on=["system", "record_id"])
    ages = pd.read_parquet(paths.extract("tip_reports"), columns=["record_id", "approx_age"])
    people: dict[tuple[str, str], set[tuple[int, pd.Timestamp]]] = {}
    for row in records.dropna(subset=["family_name", "birth_date"]).itertuples():
        people.setdefault((row.family_name, row.given_name), set()).add(
            (row.person_id, pd.Timestamp(row.birth_date))
        )
    tips = records[(records["system"] == "tip_reports") & records["family_name"].notna()]
    tips = tips.merge(ages, on="record_id")
    kinds = {"only": 0, "several": 0, "missing": 0}
    for tip in tips.itertuples():
        fits = {
            person
            for person, born in people.get((tip.family_name, tip.given_name), ())
            if abs((pd.Timestamp(tip.event_date) - born).days / 365.25 - tip.approx_age)
            <= TIP_AGE_YEARS
        }
        if tip.person_id not in fits:
            kinds["missing"] += 1
        else:
            kinds["only" if len(fits) == 1 else "several"] += 1
    got = report["tip_identifiability"]
    assert got["tips"] == len(tips) > 0
    assert got["share_subject_only_fit"] == pytest.approx(kinds["only"] / len(tips), abs=1e-6)
    assert got["share_subject_among_several"] == pytest.approx(
        kinds["several"] / len(tips), abs=1e-6
    )
    assert got["share_subject_not_found"] == pytest.approx(kinds["missing"] / len(tips), abs=1e-6)


def _final_links_oracle(n, strong_id, strong_key, merges):
    """The final clusters as first written: one graph of every record and merge, and every
    per-record figure spelled out (a trusted, memory-hungry reference for ``final_links``)."""
    from features.linkage.arrays import smallest_member

    a, b, p = merges[:, 0].astype(np.int64), merges[:, 1].astype(np.int64), merges[:, 2]
    labels = components(n, np.concatenate([np.arange(n), a]), np.concatenate([strong_id, b]))
    cluster_id = smallest_member(labels)
    size = np.bincount(strong_id, minlength=n)[strong_id]
    score = size * (n + 1) + (n - strong_id)
    best = np.zeros(labels.max() + 1, np.int64)
    np.maximum.at(best, labels, score)
    anchor = score == best[labels]
    n_comps = np.bincount(labels, weights=strong_id == np.arange(n))[labels]
    comp_p = np.full(n, -np.inf)
    np.maximum.at(comp_p, a, p)
    np.maximum.at(comp_p, b, p)
    strong = (strong_key >= 0) & (anchor | (n_comps == 1))
    merged = ~strong & (n_comps > 1)
    method = np.where(strong, 2 + strong_key.astype(np.int64), np.where(merged, 1, 0))
    confidence = np.where(strong, 1.0, np.where(merged, comp_p[strong_id], np.nan))
    return {"cluster_id": cluster_id, "method": method.astype(np.int8),
            "confidence": confidence, "merged": n_comps > 1}  # fmt: skip


@pytest.mark.parametrize("seed", range(6))
def test_final_links_match_the_all_records_graph(seed):
    """``final_links`` (work on the strong clusters, narrow per-record arrays) gives every
    record the cluster, method, confidence and merged flag of the all-records oracle, on
    random strong clusters (ties of size included) and random merges between them."""
    from features.linkage.arrays import smallest_member
    from features.linkage.clusters import final_links

    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 3000))
    # Strong clusters: random groups (few and many), strong_id their smallest member.
    group = rng.integers(0, max(2, n // int(rng.integers(1, 6))), n)
    strong_id = smallest_member(group)
    roots = np.flatnonzero(strong_id == np.arange(n))
    keys = rng.integers(-1, 6, roots.size).astype(np.int8)  # -1: shares no identifier
    strong_key = np.full(n, -1, np.int8)
    strong_key[roots] = keys
    strong_key = np.where(rng.random(n) < 0.9, strong_key[strong_id], -1).astype(np.int8)
    m = int(rng.integers(0, roots.size))
    merges = np.column_stack(
        [rng.choice(roots, m), rng.choice(roots, m), rng.random(m).round(2)]
    ).astype(float)
    got = final_links(n, strong_id, strong_key, merges)
    want = _final_links_oracle(n, strong_id, strong_key, merges)
    assert got.keys() == want.keys()
    for name, values in want.items():
        assert got[name].dtype == values.dtype, name
        np.testing.assert_array_equal(got[name], values, err_msg=name)
    assert got["merged"].any() == (m > 0 and (merges[:, 0] != merges[:, 1]).any())

"""Measure entity resolution against the hidden truth: ``reports/linkage.json``.

This is evaluation code: the one module of the features package, with the world
generator, that reads ``world/truth/``. Linkage itself never does (a test checks).

Pairwise precision, recall and F1 overall and per system, from contingency counts of
(cluster, person) in SQL (``sql/linkage_eval_pairs.sql``). A pair counts for a
system when at least one of its two records comes from that system. Quarantined
records are not in the linked table and are left out of every count (reported).

Each system also gets a ``recall_ceiling``: the recall a perfect linker would reach, given
that a cluster without any name (a court order whose A-number appears nowhere else) cannot
be placed by anything in the data.

Tips carry a name and a guessed age, no date of birth or document, so many cannot be placed
without guessing. ``tip_identifiability`` says how many: for each tip, the people who have a
record with the tip's normalised name and a date of birth within ``TIP_AGE_YEARS`` of the
tip's age at its date; the share of tips whose subject is the only one, one of several, or
not found. A linker can do better than the first share only by picking among several people
(the likeliest), at a cost in precision.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from triage.atomic import atomic_file
from triage.duck import bounded_duckdb
from triage.paths import SYSTEMS, Paths

__all__ = ["TARGETS", "evaluate_linkage", "pairwise_metrics"]

TARGETS = {"pairwise_f1": 0.99, "system_recall": 0.97}
# A tip's age is a guess (the world draws it about 2.5 years either side): two standard
# deviations of tolerance keep 95% of true subjects among a tip's candidates.
TIP_AGE_YEARS = 5

# For each tip: how many people fit its name and age, and whether its subject is one of them.
_TIP_CANDIDATES = """
CREATE TABLE tip_candidates AS
WITH tips AS (
    SELECT l.record_id, l.family_name, l.given_name, l.event_date, x.approx_age, t.person_id
    FROM read_parquet({linked}) l
    JOIN read_parquet({extract}) x USING (record_id)
    JOIN read_parquet({truth}) t USING (system, record_id)
    WHERE l.system = 'tip_reports' AND l.family_name IS NOT NULL
),
people AS (
    SELECT DISTINCT t.person_id, l.family_name, l.given_name, l.birth_date
    FROM read_parquet({linked}) l JOIN read_parquet({truth}) t USING (system, record_id)
    WHERE l.birth_date IS NOT NULL AND l.family_name IS NOT NULL
),
candidates AS (
    SELECT tips.record_id, count(DISTINCT p.person_id) AS n,
           bool_or(p.person_id = tips.person_id) AS subject_among
    FROM tips JOIN people p USING (family_name, given_name)
    WHERE abs(datediff('day', p.birth_date, tips.event_date) / 365.25 - tips.approx_age)
          <= {years}
    GROUP BY tips.record_id
)
SELECT tips.record_id, coalesce(c.n, 0) AS n, coalesce(c.subject_among, false) AS subject_among
FROM tips LEFT JOIN candidates c USING (record_id)
"""

_SQL = Path(__file__).with_name("sql") / "linkage_eval_pairs.sql"


def _lit(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def pairwise_metrics(tp: int, predicted: int, true: int) -> dict[str, float | int]:
    """Precision, recall and F1 from pair counts (1.0 when there is nothing to find)."""
    precision = tp / predicted if predicted else 1.0
    recall = tp / true if true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "pairwise_precision": round(precision, 6),
        "pairwise_recall": round(recall, 6),
        "pairwise_f1": round(f1, 6),
        "true_positive_pairs": int(tp),
        "predicted_pairs": int(predicted),
        "true_pairs": int(true),
    }


def _pair_counts(con: duckdb.DuckDBPyConnection, scored_sql: str) -> dict[str, dict[str, int]]:
    """Pair counts (tp, predicted, true) per system and overall (``__all__``)."""
    con.execute(f"CREATE OR REPLACE TEMP VIEW scored AS {scored_sql}")
    counts: dict[str, dict[str, int]] = {}
    for system, kind, pairs in con.execute(_SQL.read_text()).fetchall():
        counts.setdefault(system, {})[kind] = int(pairs or 0)
    return counts


def _tip_identifiability(con: duckdb.DuckDBPyConnection) -> dict[str, float | int]:
    """How many tips name exactly one person who fits (their subject), several, or nobody."""
    n, unique, several, none_, mean = con.execute(
        "SELECT count(*), avg((n = 1 AND subject_among)::int), "
        "avg((n > 1 AND subject_among)::int), avg((NOT subject_among)::int), avg(n) "
        "FROM tip_candidates"
    ).fetchall()[0]
    return {
        "tips": int(n),
        "age_tolerance_years": TIP_AGE_YEARS,
        "share_subject_only_fit": round(float(unique or 0), 6),
        "share_subject_among_several": round(float(several or 0), 6),
        "share_subject_not_found": round(float(none_ or 0), 6),
        "mean_people_fitting": round(float(mean or 0), 3),
    }


def evaluate_linkage(paths: Paths, write: bool = True) -> dict:
    """Score ``features/linked_records.parquet`` against ``world/truth/record_person.parquet``.

    Args:
        paths: project layout.
        write: also write ``reports/linkage.json``.

    Returns:
        The report: overall metrics, ``per_system`` metrics (each with its
        ``recall_ceiling``: the recall a perfect linker would reach, given that
        clusters without any name cannot be placed), the comparisons made by the
        probabilistic step, the targets and whether they are met.
    """
    with bounded_duckdb(paths.data_dir) as con:
        con.execute(
            "CREATE TABLE linked_truth AS SELECT l.system, l.record_id, l.cluster_id, t.person_id, "
            "bool_or(l.family_name IS NOT NULL) OVER (PARTITION BY l.cluster_id) AS named "
            f"FROM read_parquet({_lit(paths.linked_records_file)}) l "
            f"JOIN read_parquet({_lit(paths.truth_file('record_person'))}) t "
            "USING (system, record_id)"
        )
        con.execute(
            _TIP_CANDIDATES.format(
                linked=_lit(paths.linked_records_file),
                extract=_lit(paths.extract("tip_reports")),
                truth=_lit(paths.truth_file("record_person")),
                years=TIP_AGE_YEARS,
            )
        )
        n_linked = con.execute(
            f"SELECT count(*) FROM read_parquet({_lit(paths.linked_records_file)})"
        ).fetchall()[0][0]
        n_scored, n_clusters, n_persons = con.execute(
            "SELECT count(*), count(DISTINCT cluster_id), count(DISTINCT person_id) "
            "FROM linked_truth"
        ).fetchall()[0]
        counts = _pair_counts(con, "SELECT system, cluster_id, person_id FROM linked_truth")
        # The best any linker could do: clusters holding a name merged perfectly by
        # person; clusters without any name (an A-number seen nowhere else, no name to
        # compare) left as they are, since nothing in the data can place them.
        ceiling = _pair_counts(
            con,
            "SELECT system, CASE WHEN named THEN person_id ELSE -1 - cluster_id END AS cluster_id, "
            "person_id FROM linked_truth",
        )
        tips = _tip_identifiability(con)

    def metrics(system: str) -> dict:
        c = counts.get(system, {})
        out = pairwise_metrics(c.get("tp", 0), c.get("predicted", 0), c.get("true", 0))
        best = ceiling.get(system, {})
        out["recall_ceiling"] = (
            round(best.get("tp", 0) / best["true"], 6) if best.get("true") else 1.0
        )
        return out

    manifest = (
        json.loads(paths.features_manifest.read_text()) if paths.features_manifest.exists() else {}
    )
    linkage = manifest.get("linkage", {})
    per_system = {s: metrics(s) for s in SYSTEMS if s in counts}
    report = {
        **metrics("__all__"),
        "per_system": per_system,
        "records_linked": int(n_linked),
        "records_scored": int(n_scored),
        "records_quarantined": sum(
            s.get("rows_quarantined", 0) for s in manifest.get("systems", {}).values()
        ),
        "clusters": int(n_clusters),
        "persons": int(n_persons),
        "comparisons": linkage.get("comparisons"),
        "link_methods": linkage.get("by_method"),
        "tip_identifiability": tips,
        "targets": TARGETS,
    }
    worst = min(per_system.items(), key=lambda kv: kv[1]["pairwise_recall"], default=None)
    report["min_system_recall"] = (
        {"system": worst[0], "pairwise_recall": worst[1]["pairwise_recall"]} if worst else None
    )
    report["meets_targets"] = bool(
        report["pairwise_f1"] >= TARGETS["pairwise_f1"]
        and all(m["pairwise_recall"] >= TARGETS["system_recall"] for m in per_system.values())
    )
    # The same, with each system's recall target capped at what any linker could reach.
    report["meets_targets_within_ceiling"] = bool(
        report["pairwise_f1"] >= TARGETS["pairwise_f1"]
        and all(
            m["pairwise_recall"] >= min(TARGETS["system_recall"], m["recall_ceiling"] - 0.01)
            for m in per_system.values()
        )
    )
    if write:
        with atomic_file(paths.report("linkage.json"), suffix=".json") as tmp:
            tmp.write_text(json.dumps(report, indent=2))
    return report

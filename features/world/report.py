"""``triage world report``: what a generated world holds, read back from its files.

Counts per system, base rates as generated, fault rates, and, from the truth, the
precision at k of two reference orderings of the open backlog: the oracle (the
world's own probability) and first-in-first-out (the status quo). This module
reads the truth folder: it is evaluation code, not feature code.
"""

from __future__ import annotations

import json

import duckdb

from triage.paths import Paths

__all__ = ["K_VALUES", "world_report"]

K_VALUES = (1_000, 10_000, 50_000)


def world_report(paths: Paths) -> dict:
    """Compute the report from ``world/`` (manifest, extracts, truth)."""
    manifest = json.loads(paths.world_manifest.read_text())
    truth = paths.truth_file("cases")
    con = duckdb.connect()
    con.execute(f"create view cases as select * from read_parquet('{truth}')")
    rates = (
        con.execute(
            """
        select
          count(*) filter (where is_open) as open_cases,
          count(*) filter (where not is_open) as historical_cases,
          count(*) filter (where not is_open and investigated) as investigated,
          avg((true_status <> 'in_country')::int) filter (where is_open) as share_not_overstay,
          avg((true_status = 'departed')::int) filter (where is_open) as share_departed,
          avg((true_status = 'lawful')::int) filter (where is_open) as share_lawful,
          avg(concern::int) filter (where is_open and true_status = 'in_country') as concern_rate_in_country,
          sum(concern::int) filter (where is_open) as open_concern_cases,
          avg(concern::int) filter (where investigated) as concern_rate_investigated
        from cases
        """
        )
        .fetchdf()
        .iloc[0]
        .to_dict()
    )
    rates = {k: (float(v) if v is not None else None) for k, v in rates.items()}
    precision: dict[str, dict[str, float]] = {"oracle": {}, "fifo": {}}
    for k in K_VALUES:
        for name, order in (("oracle", "oracle_p desc, case_id"), ("fifo", "lead_date, case_id")):
            v = con.execute(
                f"select avg(concern::int) from (select concern from cases where is_open order by {order} limit {k})"
            ).fetchone()[0]
            precision[name][str(k)] = float(v or 0.0)
    faults = {}
    for system, counts in manifest["faults"].items():
        rows = max(counts.get("rows_clean", 0), 1)
        # Name faults are counted per name field, the others per row.
        fields = max(counts.get("name_fields", 0), 1)
        faults[system] = {
            k: round(v / (fields if k in ("typo", "transliteration") else rows), 4)
            for k, v in counts.items()
            if k not in ("rows_clean", "name_fields")
        }
    return {
        "seed": manifest["seed"],
        "scale": manifest["scale"],
        "snapshot_date": manifest["snapshot_date"],
        "rows_per_system": manifest["systems"],
        "base_rates": rates,
        "fault_rates": faults,
        "precision_at_k": precision,
    }

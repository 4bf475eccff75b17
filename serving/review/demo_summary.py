"""The last step of ``make demo``: what the pipeline produced, in one screen.

Shows the evaluation table (model against first-in-first-out, rules, logistic,
admission-only and the oracle, on the hidden truth) and the top of the review
queue from the latest scoring run, each case with its first reason.
"""

from __future__ import annotations

import argparse
import json

import duckdb
from rich.console import Console
from rich.table import Table

from serving.batch.runner import latest_run_dir
from triage.paths import Paths, ScoresRun


def main() -> None:
    """Print the evaluation table and the top of the latest run's review queue."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    paths = Paths.resolve(args.data_dir)
    console = Console()

    ev_file = paths.report("evaluation.json")
    if ev_file.exists():
        ev = json.loads(ev_file.read_text())
        pak = ev["precision_at_k"]
        ks = list(next(iter(pak.values())).keys())
        t = Table(
            "method",
            *(f"P@{int(k):,}" for k in ks),
            title="Precision at k on the open backlog's hidden truth",
        )
        for method, row in pak.items():
            t.add_row(method, *(f"{row[k]:.4f}" for k in ks))
        console.print(t)

    run = latest_run_dir(paths)
    if run is None:
        console.print("no scoring run yet")
        return
    rows = (
        duckdb.connect(str(ScoresRun(run).index_file), read_only=True)
        .execute(
            "select case_id, rank, tier, probability, status, reasons[1].text from scores order by rank limit ?",
            [args.top],
        )
        .fetchall()
    )
    t = Table(
        "rank",
        "case",
        "tier",
        "p(concern)",
        "status",
        "top reason",
        title=f"Review queue, top {args.top} (run {run.name})",
    )
    for case_id, rank, tier, p, status, reason in rows:
        t.add_row(f"{rank:,}", case_id, str(tier), f"{p:.3f}", str(status), str(reason))
    console.print(t)
    console.print(
        "Next: `make serve` for the HTTP service and reviewer pages; `make mlflow-ui` for runs and the registry."
    )


if __name__ == "__main__":
    main()

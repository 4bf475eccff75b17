"""Linkage alone, on any extracts a registry file declares (``triage link``).

The same two steps as the features stage (``features.ingest`` then
``features.linkage.run_linkage``), on the systems of a registry file instead of our world's
27, into one output folder:

- ``linked_records.parquet``: every usable record with its ``cluster_id``, ``link_method``,
  ``link_confidence``, ``identity_id`` and ``alias_count`` (the clusters), and for a
  probabilistic link ``link_weight`` and ``link_agreement`` (its evidence);
- ``linkage_report.json``: rows read, used and quarantined per system and by column, the
  clusters and link methods, how the comparison model was estimated and any warnings;
- ``quarantine.parquet`` (the rows that could not be used, each with its reason),
  ``linkage_model.json`` (the m and u values), ``clean/`` (the validated rows) and
  ``manifest.json``.

The folder is written whole or not at all (built beside it, then swapped in); an existing
folder is replaced only when it holds an earlier run's report.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from features.ingest import ingest
from features.linkage import LinkageConfig, run_linkage
from features.registry import load_registry
from triage.atomic import atomic_dir, atomic_file
from triage.paths import Paths

__all__ = ["REPORT_NAME", "link_extracts"]

REPORT_NAME = "linkage_report.json"


def link_extracts(
    config: str | Path,
    out: str | Path,
    cfg: LinkageConfig = LinkageConfig(),
    data_dir: str | Path | None = None,
) -> dict:
    """Ingest and link the systems of a registry file; write the output folder ``out``.

    Args:
        config: the registry file (``features/systems.yaml`` layout).
        out: the output folder (created; replaced only if it holds an earlier run).
        cfg: linkage settings.
        data_dir: a world's data folder, for a registry that ``extends: world`` (its 27
            extracts are read from there, its snapshot date bounds plausible dates).

    Returns:
        The report written to ``out/linkage_report.json``.

    Raises:
        features.registry.RegistryError: the registry file is unusable.
        FileExistsError: ``out`` exists, is not empty and is not an earlier run's output.
    """
    registry = load_registry(config)
    target = Path(out).expanduser().resolve()
    if target.exists() and any(target.iterdir()) and not (target / REPORT_NAME).exists():
        raise FileExistsError(
            f"{target} exists and is not the output of an earlier `triage link`: "
            "choose an empty or new folder"
        )
    with atomic_dir(target) as tmp:
        base = Paths.resolve(data_dir or tmp, tmp / ".mlruns")
        paths = base.with_features_dir(tmp)
        ingested = ingest(paths, registry=registry)
        result = run_linkage(paths, cfg, registry=registry, splits=[])  # no cases here
        shutil.rmtree(tmp / ".spill", ignore_errors=True)
        report = {
            "config": str(registry.source),
            "systems": {
                name: {**counts, "file": str(registry.extract(paths, name))}
                for name, counts in ingested.systems.items()
            },
            "rows_in": sum(c["rows_in"] for c in ingested.systems.values()),
            "rows_quarantined": ingested.rows_quarantined,
            "quarantined_by_column": ingested.quarantined_by_column,
            "values_dropped_by_column": json.loads(paths.features_manifest.read_text())[
                "ingest"
            ].get("values_dropped_by_column", {}),
            "linkage": result.as_dict(),
            "estimation": result.estimation,
            "warnings": result.warnings,
        }
        with atomic_file(tmp / REPORT_NAME, suffix=".json") as f:
            f.write_text(json.dumps(report, indent=2, sort_keys=False))
    return report

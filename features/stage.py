"""The features stage as one unit: verify the world, ingest, link, build, publish together.

Every output of the stage (``clean/``, ``quarantine.parquet``, ``linked_records.parquet``,
``linkage_model.json``, ``cases.parquet``, ``manifest.json``) is built into a staging folder
beside ``features/`` and swapped in whole (``triage.atomic.atomic_dir``) only when every step
succeeded, so a reader never sees new quarantine beside old cases, and a failure half-way
(a full disk during linkage, a system that lost its rows) leaves the previous good output intact.

Two checks guard the input before anything is built:

- the world manifest's checksums of the extracts and the backlog (a delivery that changed after
  it was written, or a truncated copy, is refused with the file's name);
- after ingest, a system that quarantined more than ``max_quarantine_share`` of its rows (default
  5%: the generator's malformed-row rate is 0.2%, so anything near it means a changed schema, a
  column gone or a format change, not bad rows) fails the stage with the system, the share and its
  commonest reason, unless the user allows it (``allow_loss``).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from triage.atomic import atomic_dir
from triage.checksum import sha256_file
from triage.paths import Paths

if TYPE_CHECKING:
    from features.registry import Registry

__all__ = [
    "DEFAULT_MAX_QUARANTINE_SHARE",
    "DEFAULT_MEMORY_LIMIT",
    "StageInputError",
    "StageResult",
    "check_losses",
    "run_features_stage",
    "verify_world",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_QUARANTINE_SHARE = 0.05
# DuckDB memory limit of the case build: with 6 GB the full world's stage peaked at 7.72 GB
# (8.78 GB with 9 GB) in the same time (make bench-features).
DEFAULT_MEMORY_LIMIT = "6GB"


class StageInputError(ValueError):
    """The stage's input cannot be trusted; nothing was published."""


@dataclass(frozen=True)
class StageResult:
    """What the stage did (the ingest report, the linkage result and the cases summary)."""

    ingest: object
    linkage: object
    cases: dict


def verify_world(paths: Paths) -> int:
    """Check the extracts and the backlog against the world manifest's checksums.

    Truth files are listed in the manifest too but never opened here: the features stage does
    not read the truth, not even to hash it.

    Returns:
        The number of files verified.

    Raises:
        StageInputError: a listed file is missing or its content changed.
    """
    manifest = json.loads(paths.world_manifest.read_text())
    checksums: dict[str, str] = manifest.get("checksums", {})
    if not checksums:
        raise StageInputError(f"{paths.world_manifest} lists no checksums to verify")
    n = 0
    for rel, expected in sorted(checksums.items()):
        if rel.startswith("truth/"):
            continue
        path = paths.world_dir / rel
        if not path.is_file():
            raise StageInputError(f"{path} is listed in the world manifest but missing")
        if sha256_file(path) != expected:
            raise StageInputError(
                f"{path} does not match the world manifest's checksum: it changed after the "
                "world was written (a partial copy or an edited file); regenerate the world, or "
                "pass --no-verify to ingest it as it is"
            )
        n += 1
    return n


def check_losses(
    systems: dict[str, dict[str, int]],
    reasons: dict[str, dict[str, int]],
    max_share: float = DEFAULT_MAX_QUARANTINE_SHARE,
    allow: Iterable[str] = (),
) -> list[str]:
    """Refuse an ingest in which a system lost more than ``max_share`` of its rows.

    Args:
        systems: per system ``rows_in``/``rows_used``/``rows_quarantined`` (the ingest report).
        reasons: per system, quarantined rows per column named in the reasons.
        max_share: the largest quarantined share accepted without ``allow``.
        allow: systems whose loss is accepted whatever it is (``"all"`` accepts every system).

    Returns:
        Warnings for the allowed systems past the threshold (logged by the caller).

    Raises:
        StageInputError: naming every system past the threshold, its share and commonest reason.
    """
    allowed = set(allow)
    problems: list[str] = []
    warnings: list[str] = []
    for system, c in sorted(systems.items()):
        if not c["rows_in"]:
            continue
        share = c["rows_quarantined"] / c["rows_in"]
        if share <= max_share:
            continue
        top = max(reasons.get(system, {}).items(), key=lambda kv: kv[1], default=("?", 0))
        line = (
            f"{system}: {c['rows_quarantined']:,} of {c['rows_in']:,} rows quarantined "
            f"({share:.1%}), most for column {top[0]!r} ({top[1]:,} rows)"
        )
        (warnings if system in allowed or "all" in allowed else problems).append(line)
    if problems:
        raise StageInputError(
            f"a source system lost more than {max_share:.0%} of its rows, so its data would be "
            "missing from every case (see features/quarantine.parquet of a run with "
            "--allow-loss, or the extract's columns):\n  "
            + "\n  ".join(problems)
            + "\nnothing was published; pass --allow-loss SYSTEM to accept it"
        )
    return warnings


def run_features_stage(
    paths: Paths,
    *,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    verify: bool = True,
    max_quarantine_share: float = DEFAULT_MAX_QUARANTINE_SHARE,
    allow_loss: Iterable[str] = (),
    on_step: Callable[[str], None] | None = None,
    registry: Registry | None = None,
    engine: str = "duckdb",
) -> StageResult:
    """Build every output of the features stage in staging and publish them together.

    Args:
        paths: project layout (reads ``world/``, publishes ``features/``).
        memory_limit: DuckDB memory limit of the case-table build.
        verify: check the extracts against the world manifest's checksums first.
        max_quarantine_share: see :func:`check_losses`.
        allow_loss: systems allowed to lose more than that share.
        on_step: called with each step's name when it completes.
        registry: the declared systems (None: the world's 27, ``features/systems.yaml``);
            a registry with ``extends: world`` adds systems of its own beside them.
        engine: ``duckdb`` (embedded, the default) or ``spark``: the same SQL on Spark SQL and
            Splink's Spark backend (``features.engine``); recorded in the manifest. Spark's
            scratch tables live in the staging folder, so the publication is atomic either way.

    Raises:
        triage.spark.SparkUnavailable: ``engine="spark"`` without pyspark or Java.
        StageInputError: the input failed a check; the previous output is untouched.
    """
    from features.build import BuildConfig, build_cases
    from features.engine import SCRATCH, check_engine
    from features.ingest import ingest, update_manifest
    from features.linkage import run_linkage
    from features.linkage.splits import read_splits
    from features.registry import world_registry

    engine = check_engine(engine)
    if engine == "spark":  # fail before any work when Spark cannot start
        from triage.spark import spark_session

        spark_session()
    done = on_step or (lambda _step: None)
    if verify:
        log.info("verified %d world files against the manifest", verify_world(paths))
    with atomic_dir(paths.features_dir) as staging:
        stage = paths.with_features_dir(staging)
        report = ingest(stage, registry=registry, engine=engine)
        for line in check_losses(
            report.systems, report.quarantined_by_column, max_quarantine_share, allow_loss
        ):
            log.warning("allowed: %s", line)
        done("ingest")
        # Reviewers' wrong links, with the case's records in the published run they saw.
        linkage = run_linkage(stage, splits=read_splits(paths), registry=registry, engine=engine)
        done("linkage")
        cases = build_cases(
            stage,
            BuildConfig(memory_limit=memory_limit),
            on_step=done,
            registry=registry,
            engine=engine,
        )
        declared = registry or world_registry()
        update_manifest(
            stage,
            registry={
                "config": str(declared.source),
                "sha256": sha256_file(declared.source),
                "systems": list(declared.systems),
            },
            engine=engine,
        )
        # DuckDB's spill folder and Spark's scratch tables are not output.
        shutil.rmtree(staging / ".spill", ignore_errors=True)
        shutil.rmtree(staging / SCRATCH, ignore_errors=True)
    return StageResult(report, linkage, cases)

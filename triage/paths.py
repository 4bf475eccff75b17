"""Every root-anchored path of the project, in one place.

Stages never build paths by hand: they ask a :class:`Paths` for the file they
read or write, so the on-disk layout of stage outputs is documented here once.

Resolution order for the data directory: explicit argument (``--data-dir``),
then the ``TRIAGE_DATA_DIR`` environment variable, then ``data/`` under the
project root. ``mlruns/`` lives at the project root unless ``TRIAGE_MLRUNS_DIR``
says otherwise. Nothing here touches the file system or the environment at
import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = ["PROJECT_ROOT", "SYSTEMS", "Paths", "ScoresDir", "ScoresRun", "ServiceFiles"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# The 27 source systems of DESIGN.md, in the order the design lists them.
SYSTEMS: tuple[str, ...] = (
    "consular_visas",
    "visa_refusals",
    "arrival_manifests",
    "admissions",
    "departure_manifests",
    "land_exits",
    "partner_entries",
    "biometric_enrollments",
    "biometric_exits",
    "student_records",
    "benefit_applications",
    "benefit_decisions",
    "asylum_filings",
    "work_authorizations",
    "employment_checks",
    "enforcement_encounters",
    "criminal_history",
    "detention_bookings",
    "court_orders",
    "prior_removals",
    "watchlist_hits",
    "lost_stolen_documents",
    "border_lookouts",
    "address_changes",
    "travel_reservations",
    "tip_reports",
    "prior_leads",
)


@dataclass(frozen=True)
class ScoresRun:
    """The files of one scoring run, ``scores/<run_id>/`` (docs/contracts.md, section 4).

    A run in progress (``scores/.partial-<fingerprint>/``) has the same layout plus its
    chunk files; it is renamed to ``scores/<run_id>/`` when complete.
    """

    directory: Path

    @property
    def run_id(self) -> str:
        return self.directory.name

    @property
    def scores_file(self) -> Path:
        """One row per open case: probability, margin, rank, tier, status, reasons."""
        return self.directory / "scores.parquet"

    @property
    def shap_file(self) -> Path:
        """Float32 SHAP matrix, one row per row of ``scores_file``, in the same order."""
        return self.directory / "shap.parquet"

    @property
    def index_file(self) -> Path:
        """DuckDB case id -> row index of the run's scores."""
        return self.directory / "index.duckdb"

    @property
    def manifest(self) -> Path:
        """``run_id``, ``model_version``, ``expected_value``, ``feature_names``...; written last."""
        return self.directory / "manifest.json"

    # --- a run in progress -----------------------------------------------
    @property
    def progress_file(self) -> Path:
        """Chunks done so far (only in a partial run)."""
        return self.directory / "progress.json"

    def chunk_scores(self, i: int) -> Path:
        """The scores part file of chunk ``i`` (a partial run's work, merged at the end)."""
        return self.directory / f"part-{i:05d}.parquet"

    def chunk_shap(self, i: int) -> Path:
        """The SHAP part file of chunk ``i``."""
        return self.directory / f"shap-{i:05d}.parquet"

    @property
    def chunk_scores_pattern(self) -> Path:
        """Every chunk's scores, as a glob DuckDB's ``read_parquet`` expands."""
        return self.directory / "part-*.parquet"

    def chunk_shap_files(self) -> list[Path]:
        """The SHAP chunks written so far, in chunk order (= case id order)."""
        return sorted(self.directory.glob("shap-*.parquet"))


@dataclass(frozen=True)
class ScoresDir:
    """``scores/``: complete runs, runs in progress and the ``LATEST`` pointer."""

    directory: Path

    @property
    def latest_pointer(self) -> Path:
        """Holds the run id of the latest complete run; moved last, atomically."""
        return self.directory / "LATEST"

    def run(self, run_id: str) -> ScoresRun:
        """The layout of one scoring run's folder."""
        return ScoresRun(self.directory / run_id)

    def partial(self, fingerprint: str) -> ScoresRun:
        """The run in progress whose inputs have this fingerprint."""
        return ScoresRun(self.directory / f".partial-{fingerprint}")

    def partials(self) -> list[Path]:
        """Every run in progress (see :meth:`partial`)."""
        return sorted(self.directory.glob(".partial-*"))


@dataclass(frozen=True)
class ServiceFiles:
    """``service/``: the service's state (docs/contracts.md, section 5)."""

    directory: Path

    @property
    def tokens(self) -> Path:
        """API tokens (hashed secrets), SQLite."""
        return self.directory / "tokens.sqlite"

    @property
    def audit_log(self) -> Path:
        """Append-only audit log, SQLite."""
        return self.directory / "audit.sqlite"

    @property
    def sessions(self) -> Path:
        """Browser sessions of the reviewer pages (hashed ids, expiry, sign-out), SQLite."""
        return self.directory / "sessions.sqlite"

    @property
    def dispositions(self) -> Path:
        """Reviewer dispositions, SQLite."""
        return self.directory / "dispositions.sqlite"

    @property
    def cache_dir(self) -> Path:
        """Memory-mapped per-run caches shared by the workers (``triage.runcache``)."""
        return self.directory / "cache"

    def bentoml_home(self, port: int) -> Path:
        """BentoML's home for a server on ``port``."""
        return self.directory / f"bentoml-{port}"


@dataclass(frozen=True)
class Paths:
    """The layout of every stage's inputs and outputs under one data directory."""

    data_dir: Path
    mlruns_dir: Path
    # Where the features stage's outputs are read and written; None: <data-dir>/features. The
    # stage builds into a staging folder (``with_features_dir``) and swaps it in whole.
    features_root: Path | None = None

    @classmethod
    def resolve(
        cls, data_dir: str | Path | None = None, mlruns_dir: str | Path | None = None
    ) -> Paths:
        """Build the layout from explicit values, then the environment, then defaults."""
        data = data_dir or os.environ.get("TRIAGE_DATA_DIR") or PROJECT_ROOT / "data"
        runs = mlruns_dir or os.environ.get("TRIAGE_MLRUNS_DIR") or PROJECT_ROOT / "mlruns"
        return cls(Path(data).expanduser().resolve(), Path(runs).expanduser().resolve())

    # --- world (stage 1) -------------------------------------------------
    @property
    def world_dir(self) -> Path:
        return self.data_dir / "world"

    @property
    def extracts_dir(self) -> Path:
        return self.world_dir / "extracts"

    def extract(self, system: str) -> Path:
        """The extract of one source system."""
        return self.extracts_dir / f"{system}.parquet"

    @property
    def backlog_file(self) -> Path:
        """The open case list (case management export): one row per open lead."""
        return self.world_dir / "backlog.parquet"

    @property
    def truth_dir(self) -> Path:
        """Hidden truth. Only evaluation and report code may read it."""
        return self.world_dir / "truth"

    @property
    def world_manifest(self) -> Path:
        return self.world_dir / "manifest.json"

    # --- features (stage 2) ----------------------------------------------
    @property
    def features_dir(self) -> Path:
        return self.features_root or self.data_dir / "features"

    def with_features_dir(self, directory: Path) -> Paths:
        """The same layout with the features stage's outputs under ``directory`` (staging)."""
        return replace(self, features_root=Path(directory))

    @property
    def cases_file(self) -> Path:
        return self.features_dir / "cases.parquet"

    @property
    def linked_records_file(self) -> Path:
        return self.features_dir / "linked_records.parquet"

    @property
    def quarantine_file(self) -> Path:
        return self.features_dir / "quarantine.parquet"

    @property
    def features_manifest(self) -> Path:
        return self.features_dir / "manifest.json"

    # --- reports ---------------------------------------------------------
    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    def report(self, name: str) -> Path:
        """A report file under ``reports/``."""
        return self.reports_dir / name

    # --- scores (stage 4) ------------------------------------------------
    @property
    def scores_dir(self) -> Path:
        return self.data_dir / "scores"

    @property
    def scores(self) -> ScoresDir:
        """The layout of ``scores/`` (runs, runs in progress, ``LATEST``)."""
        return ScoresDir(self.scores_dir)

    @property
    def latest_pointer(self) -> Path:
        """``scores/LATEST``: the run id of the latest complete run."""
        return self.scores.latest_pointer

    def scores_run(self, run_id: str) -> ScoresRun:
        """The files of run ``run_id`` (``scores/<run_id>/``)."""
        return self.scores.run(run_id)

    # --- service state ---------------------------------------------------
    @property
    def service_dir(self) -> Path:
        """Tokens, audit log and reviewer dispositions."""
        return self.data_dir / "service"

    # --- the operating loop: outcomes, worklists, monitoring (issue 15) -----
    @property
    def outcomes_file(self) -> Path:
        """Investigation outcomes imported as labels (append-only SQLite, triage/outcomes.py)."""
        return self.data_dir / "outcomes" / "outcomes.sqlite"

    @property
    def worklists_dir(self) -> Path:
        """One folder per worklist: the cases chosen for investigation with their probability."""
        return self.data_dir / "worklists"

    @property
    def monitor_profiles_dir(self) -> Path:
        """Per scoring run, the distribution profile ``triage monitor`` compares with the next."""
        return self.reports_dir / "monitor"

    @property
    def simulate_dir(self) -> Path:
        """``triage simulate``'s working files (per-period outcomes, the comparison arms)."""
        return self.data_dir / "simulate"

    @property
    def service(self) -> ServiceFiles:
        """The service's files: tokens, audit log, dispositions, caches."""
        return ServiceFiles(self.service_dir)

    # --- MLflow ----------------------------------------------------------
    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.mlruns_dir / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.mlruns_dir / "artifacts"

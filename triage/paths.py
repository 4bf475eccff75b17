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

__all__ = [
    "PROJECT_ROOT",
    "SYSTEMS",
    "Paths",
    "ScoresDir",
    "ScoresRun",
    "ServiceFiles",
    "WorklistFiles",
]

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

    @property
    def lock_file(self) -> Path:
        """Held (``flock``) by the one ``triage score`` writing under ``scores/``."""
        return self.directory / ".lock"

    def latest_run_id(self) -> str | None:
        """The run id ``LATEST`` names, or None when there is no ``LATEST`` yet.

        Raises:
            ValueError: ``LATEST`` does not name a run folder of ``scores/`` (empty, a path
                or a run in progress).
        """
        try:
            run_id = self.latest_pointer.read_text().strip()
        except FileNotFoundError:
            return None
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise ValueError(f"{self.latest_pointer} does not name a run: {run_id!r}")
        return run_id

    def latest(self) -> ScoresRun | None:
        """The latest complete run (``LATEST`` names it and its manifest exists), or None."""
        try:
            run_id = self.latest_run_id()
        except ValueError:
            return None
        if run_id is None:
            return None
        run = self.run(run_id)
        return run if run.manifest.exists() else None

    def complete_runs(self) -> list[ScoresRun]:
        """Every complete run folder (one with a manifest), oldest first: by when the
        manifest (written last) was written, then by run id (run ids of one second tie)."""
        if not self.directory.exists():
            return []
        runs = [
            ScoresRun(d)
            for d in self.directory.iterdir()
            if d.is_dir() and not d.name.startswith(".") and (d / "manifest.json").exists()
        ]
        return sorted(runs, key=lambda r: (r.manifest.stat().st_mtime_ns, r.run_id))

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
    def assignments(self) -> Path:
        """Who holds which case (assign, release, takeover events), SQLite."""
        return self.directory / "assignments.sqlite"

    @property
    def cache_dir(self) -> Path:
        """Memory-mapped per-run caches shared by the workers (``triage.runcache``)."""
        return self.directory / "cache"

    def bentoml_home(self, port: int) -> Path:
        """BentoML's home for a server on ``port``."""
        return self.directory / f"bentoml-{port}"


@dataclass(frozen=True)
class WorklistFiles:
    """``worklists/<worklist_id>/``: one period's chosen investigations (``triage worklist``)."""

    directory: Path

    @property
    def worklist_id(self) -> str:
        return self.directory.name

    @property
    def picks(self) -> Path:
        """One row per chosen case (``triage.outcomes.WORKLIST_COLUMNS``)."""
        return self.directory / "worklist.parquet"

    @property
    def frame(self) -> Path:
        """The sampling frame: every case the random share could draw, with its probability."""
        return self.directory / "frame.parquet"

    @property
    def manifest(self) -> Path:
        """The design: capacity, explore share, floor, seed, the random frame's size."""
        return self.directory / "manifest.json"


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

    def truth_file(self, name: str) -> Path:
        """A hidden truth table (``cases``, ``record_person``...): evaluation and simulation
        only (tests/data/test_truth_isolation.py lists the readers)."""
        return self.truth_dir / f"{name}.parquet"

    # --- features (stage 2) ----------------------------------------------
    @property
    def features_dir(self) -> Path:
        return self.features_root or self.data_dir / "features"

    def with_features_dir(self, directory: Path) -> Paths:
        """The same layout with the features stage's outputs under ``directory`` (staging)."""
        return replace(self, features_root=Path(directory))

    @property
    def clean_dir(self) -> Path:
        """The validated, normalised tables of the ingest (one Parquet file per system)."""
        return self.features_dir / "clean"

    def clean_file(self, system: str) -> Path:
        """The validated, normalised rows of one system."""
        return self.clean_dir / f"{system}.parquet"

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

    def worklist(self, worklist_id: str) -> WorklistFiles:
        """The files of worklist ``worklist_id`` (``worklists/<worklist_id>/``)."""
        return WorklistFiles(self.worklists_dir / worklist_id)

    def worklists(self) -> list[WorklistFiles]:
        """Every written worklist, in folder-name order (= sequence order); a worklist still
        being written (a dot folder of ``triage.atomic.atomic_dir``) is left out."""
        root = self.worklists_dir
        if not root.exists():
            return []
        return [
            WorklistFiles(m.parent)
            for m in sorted(root.glob("*/manifest.json"))
            if not m.parent.name.startswith(".")
        ]

    @property
    def monitor_profiles_dir(self) -> Path:
        """Per scoring run, the distribution profile ``triage monitor`` compares with the next."""
        return self.reports_dir / "monitor"

    def monitor_profile(self, run_id: str) -> Path:
        """The distribution profile of scoring run ``run_id``."""
        return self.monitor_profiles_dir / f"{run_id}.json"

    @property
    def simulate_dir(self) -> Path:
        """``triage simulate``'s working files (per-period outcomes, the comparison arms)."""
        return self.data_dir / "simulate"

    def simulate_period_dir(self, period: int) -> Path:
        """``triage simulate``'s files of one period (the outcomes it revealed)."""
        return self.simulate_dir / f"period-{period}"

    def simulate_arm(self, name: str) -> Paths:
        """The layout of a comparison arm of ``triage simulate`` (its own data and mlruns)."""
        root = self.simulate_dir / name
        return Paths(root / "data", root / "mlruns")

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

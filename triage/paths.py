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

__all__ = ["PROJECT_ROOT", "Paths", "SYSTEMS"]

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

    # --- MLflow ----------------------------------------------------------
    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.mlruns_dir / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.mlruns_dir / "artifacts"

"""What the page handlers read: created once per worker when the pages app starts.

The batch scores, token store and audit log are the service's own (``TriageService``
builds them in ``__init__``); the pages add the run's SHAP rows (``serving.review.plots.RunShap``,
the same memory-mapped file the explanation endpoint uses), the per-run files of
``serving.review.cache``, the search over the run's leads, the dispositions and assignments
stores and the evaluation reports. The run files
load in a thread: on a full backlog the first start on a new run builds them (about a
minute), and the queue must not wait for that. Case pages answer 503 until they are ready.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from serving.api.audit import AuditLog
from serving.api.auth import TokenStore
from serving.api.heap import freeze_startup_heap
from serving.api.sessions import SessionStore
from serving.batch.lookup import ScoresLookup
from serving.review.assignments import AssignmentStore
from serving.review.cache import PagesUnavailable, RunFiles, open_run_files
from serving.review.dispositions import DispositionStore
from serving.review.evidence import searched_systems, served_registry
from serving.review.plots import RunShap
from serving.review.records import LinkedRecords
from serving.review.reports import ModelReports
from serving.review.search import CaseSearch
from triage.paths import Paths

if TYPE_CHECKING:
    from serving.batch.scoring import Scorer

__all__ = ["CaseData", "PagesState"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaseData:
    """Everything stored about one scored case, gathered for its page."""

    score: dict[str, Any]  # ScoresLookup.get: probability, rank, tier, status, reasons...
    row: int  # row in scores.parquet (and in the SHAP and values matrices)
    lead: dict[str, Any]  # case id, cluster id, lead fields (serving.review.cache.LEADS_SQL)
    shap: np.ndarray  # float64, model feature order
    values: np.ndarray  # float64, model feature order (NaN: no record)


class PagesState:
    """The pages' dependencies in one worker (see the module docstring)."""

    def __init__(
        self,
        paths: Paths,
        scores: ScoresLookup | None,
        tokens: TokenStore,
        audit: AuditLog,
        *,
        cache_dir: Path | None,
        unavailable: str = "",
        sessions: SessionStore | None = None,
        scorer: Callable[[], Scorer] | None = None,
        score_lock: threading.Lock | None = None,
    ) -> None:
        """Open the stores; call :meth:`start_loading` to load the run files.

        ``scorer`` returns the service's loaded :class:`Scorer` (or raises PagesUnavailable
        while it loads) for the what-if; ``score_lock`` is the service's one-scoring-call-
        at-a-time lock, which the what-if holds too.
        """
        self.paths, self.scores, self.tokens, self.audit = paths, scores, tokens, audit
        self.sessions = sessions
        self._scorer = scorer
        self.score_lock = score_lock or threading.Lock()
        self._sample: tuple[str, np.ndarray, np.ndarray] | None = None
        self.dispositions = DispositionStore.in_dir(paths.service_dir)
        self.assignments = AssignmentStore.in_dir(paths.service_dir)
        self.reports = ModelReports(paths.reports_dir)
        self.searched = searched_systems(paths.features_manifest)  # systems the run searched
        self.registry = served_registry(paths.features_manifest)  # None: the world's 27
        self.run: RunFiles | None = None
        self.shap: RunShap | None = None
        self.records: LinkedRecords | None = None
        self.search: CaseSearch | None = None
        self.error = (
            "the case pages are still loading" if scores else f"no batch run: {unavailable}"
        )
        self.loaded = threading.Event()
        self._cache_dir = cache_dir
        self._tmp: Path | None = None
        self._images: OrderedDict[tuple[str, ...], Any] = OrderedDict()
        self._images_lock = threading.Lock()

    def start_loading(self, wait: bool = False) -> None:
        """Load the run's SHAP rows and page files in a thread (or now, with ``wait``)."""
        if wait:
            self._load()
            return
        threading.Thread(target=self._load, name="pages-loader", daemon=True).start()

    def _load(self) -> None:
        try:
            if self.scores is None:
                return
            run_dir = self.paths.scores_run(self.scores.run_id).directory
            cache = self._cache_dir
            if cache is None:  # no shared cache: private files for this worker
                cache = self._tmp = Path(tempfile.mkdtemp(prefix="triage-pages-"))
            shap = RunShap.open(run_dir, cache)
            if len(shap.matrix) != len(self.scores):
                raise PagesUnavailable(f"{len(shap.matrix)} SHAP rows for {len(self.scores)} cases")
            run = open_run_files(self.paths, shap.run_id, shap.feature_names, shap.matrix, cache)
            self.records = LinkedRecords(run.records_db)
            self.search = CaseSearch(run.leads, self.scores.table["rank"])
            self.shap, self.run = shap, run
            self.error = ""
            self._warm_up()
            log.info("reviewer pages ready for run %s", run.run_id)
            freeze_startup_heap("loading the reviewer pages")
        except (PagesUnavailable, OSError, ValueError) as exc:
            self.error = f"case pages unavailable: {exc}"
            log.error("%s", self.error)
        finally:
            self.loaded.set()

    def _warm_up(self) -> None:
        # The first case page would otherwise pay for lazy imports, the catalog and DuckDB's
        # first query plan (about a third of a second of CPU).
        from serving.review import explanation as explain

        assert self.scores is not None and self.records is not None and self.shap is not None
        case = self.case(self.scores.queue(limit=1)[1][0]["case_id"])
        self.records.for_cluster(case.lead.get("cluster_id"), case.lead)
        explain.contributions(self.shap.feature_names, case.shap, case.values)

    def close(self) -> None:
        """Close the databases and remove private files."""
        self.loaded.wait(timeout=60)
        if self.records is not None:
            self.records.close()
        if self.search is not None:
            self.search.close()
        self.dispositions.close()
        self.assignments.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    # --- reads ------------------------------------------------------------------
    @property
    def model_version(self) -> str | None:
        """The model version of the served batch run."""
        if self.scores is None or not len(self.scores):
            return None
        return self.scores.table["model_version"][0].as_py()

    def require_sessions(self) -> SessionStore:
        """The service's session store (RuntimeError if the pages run without one)."""
        if self.sessions is None:
            raise RuntimeError("the reviewer pages need the service's session store")
        return self.sessions

    def require_scores(self) -> ScoresLookup:
        """The batch run, or PagesUnavailable."""
        if self.scores is None:
            raise PagesUnavailable(self.error)
        return self.scores

    def require_run(self) -> tuple[RunFiles, RunShap, LinkedRecords]:
        """The run files, SHAP rows and linked records, or PagesUnavailable while loading."""
        if self.run is None or self.shap is None or self.records is None:
            raise PagesUnavailable(self.error)
        return self.run, self.shap, self.records

    def require_scorer(self) -> Scorer:
        """The service's scorer for the what-if, or PagesUnavailable (none, or still loading)."""
        if self._scorer is None:
            raise PagesUnavailable("the what-if needs the service's model, which is not loaded")
        return self._scorer()

    def dependence_sample(self) -> tuple[np.ndarray, np.ndarray]:
        """The SHAP and feature values (float64) of the run's fixed sample of rows (the
        beeswarm's, ``RunFiles.sample_rows``), gathered once per run: 2,000 scattered rows of
        the memory-mapped matrices, then every dependence plot reads this copy."""
        run, shap, _ = self.require_run()
        held = self._sample
        if held is None or held[0] != run.run_id:
            rows = run.sample_rows
            held = (
                run.run_id,
                np.asarray(shap.matrix[rows], dtype=np.float64),
                np.asarray(run.values[rows], dtype=np.float64),
            )
            self._sample = held  # one assignment: a reader sees the old or the new tuple
        return held[1], held[2]

    def case(self, case_id: str) -> CaseData:
        """Everything about one case.

        Raises:
            CaseNotFound: the case is not in the served run.
            PagesUnavailable: the run files are not loaded.
        """
        scores = self.require_scores()
        run, shap, _ = self.require_run()
        score = scores.get(case_id)
        row = scores._row(case_id)  # noqa: SLF001 - the lookup's own index, as the service uses
        lead = run.leads.slice(row, 1).to_pylist()[0]
        if lead["case_id"] != case_id:  # files of another run: never show someone else's data
            raise PagesUnavailable(f"page files out of step with run {scores.run_id}")
        return CaseData(
            score=score,
            row=row,
            lead=lead,
            shap=shap.row(row),
            values=np.asarray(run.values[row], dtype=np.float64),
        )

    def top_raising_labels(self, case_ids: Sequence[str]) -> list[str | None]:
        """Each case's largest reason raising its score, in words (None: nothing raises it),
        as ``explanation.top_raising`` words it, for many cases at once: one gather of their
        SHAP rows instead of a case lookup each (an export of 2,000 rows: 1.2 s -> see the
        commit). Raises PagesUnavailable while the run files load."""
        from serving.review.explanation import top_raising_each

        scores = self.require_scores()
        run, shap, _ = self.require_run()
        if not case_ids:
            return []
        rows = np.array([scores._row(c) for c in case_ids], dtype=np.int64)  # noqa: SLF001
        as_of = run.leads["scoring_date"].take(pa.array(rows)).to_pylist()
        tops = top_raising_each(shap.feature_names, shap.matrix[rows], run.values[rows], as_of)
        return [t.label if t else None for t in tops]

    def image(self, key: tuple[str, ...], draw: Callable[[], bytes], keep: int = 256) -> bytes:
        """A PNG from the in-memory cache, drawn on a miss (least recently used go first)."""
        return self.memo(key, draw, keep)

    def memo(self, key: tuple[str, ...], compute: Callable[[], Any], keep: int = 256) -> Any:
        """A value (an image, a suggested interaction) from the in-memory cache, computed on
        a miss; keys name the run, so a new run never reads an old value."""
        with self._images_lock:
            if key in self._images:
                self._images.move_to_end(key)
                return self._images[key]
        data = compute()
        with self._images_lock:
            self._images[key] = data
            while len(self._images) > keep:
                self._images.popitem(last=False)
        return data

"""Stage contracts as code: one check per stage output (docs/contracts.md).

As scikit-learn's ``check_estimator`` is the one contract every estimator passes, each
stage output has one check that its writer calls before the output moves into place, and
that the test fixtures call on what they build:

- :func:`check_cases`, :func:`check_linked_records`, :func:`check_quarantine`:
  ``features/*.parquet`` (section 2);
- :func:`check_bundle`: the model bundle (section 3);
- :func:`check_scores` (``scores.parquet`` alone) and :func:`check_scores_run`
  (``scores/<run_id>/``: scores, SHAP rows, manifest, index; section 4);
- :func:`check_worklist` (``worklists/<id>/``: picks, sampling frame, manifest) and
  :func:`check_outcomes` (outcome rows imported into, or read from, the outcomes store and the
  dispositions; section 6).

A broken rule raises :class:`ContractError` naming the file, the column and the rule. The
checks are SQL aggregates run by DuckDB (one scan per file) or numpy over record batches,
cheap enough for the full world.
"""

from triage.contracts.bundle import check_bundle
from triage.contracts.engine import ContractError
from triage.contracts.features import (
    STATUSES,
    check_cases,
    check_linked_records,
    check_quarantine,
)
from triage.contracts.loop import check_outcomes, check_worklist
from triage.contracts.scores import check_scores, check_scores_run

__all__ = [
    "STATUSES",
    "ContractError",
    "check_bundle",
    "check_cases",
    "check_linked_records",
    "check_outcomes",
    "check_quarantine",
    "check_scores",
    "check_scores_run",
    "check_worklist",
]

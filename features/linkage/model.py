"""The comparison model: a Fellegi-Sunter model in Splink on DuckDB, and its estimation.

Its blocking rules and comparisons (names, date of birth with day and month possibly
swapped, partial documents, citizenship, approximate age) are data, in
``sql/linkage_model.json``. Training writes ``features/linkage_model.json``: the m and u
values of every comparison level, so any link's match weight can be explained.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import duckdb

from features.linkage.config import LinkageConfig
from features.linkage.sql import SQL_DIR
from triage.atomic import atomic_file
from triage.paths import Paths

__all__ = [
    "EM_BLOCKING_RULES",
    "M_FLOOR",
    "ModelNotLearned",
    "estimation_method",
    "load_model_settings",
    "model_file",
    "save_model",
    "train_model",
]

log = logging.getLogger("features.linkage")

M_FLOOR = 1e-4  # smallest m probability of a comparison level

# Without labels, EM estimates each comparison's m from pairs blocked on the others: names
# are learnt among pairs sharing a date of birth, dates and the rest among pairs sharing
# both names (a rule cannot teach the comparisons it blocks on).
EM_BLOCKING_RULES = (
    "l.birth_date = r.birth_date and l.comp_id <> r.comp_id",
    "l.family_key = r.family_key and l.given_key = r.given_key and l.comp_id <> r.comp_id",
)
_DETERMINISTIC = (
    "l.family_key = r.family_key and l.given_key = r.given_key "
    "and l.birth_date = r.birth_date and l.comp_id <> r.comp_id"
)


class ModelNotLearned(RuntimeError):
    """Neither labels nor EM could estimate the comparison model."""


def estimation_method(con: duckdb.DuckDBPyConnection, cfg: LinkageConfig) -> str:
    """``labels`` when enough strong clusters with several named records exist to learn m
    from (``cfg.min_label_clusters``), else ``em``. Needs ``link_training``."""
    clusters = con.execute("SELECT count(DISTINCT comp_id) FROM link_training").fetchall()[0][0]
    return "labels" if clusters >= cfg.min_label_clusters else "em"


def model_file(paths: Paths) -> Path:
    """Where the trained linkage model is saved (Splink settings with m and u values)."""
    return paths.features_dir / "linkage_model.json"


def load_model_settings() -> dict:
    """The untrained Splink settings (blocking rules and comparisons) as a dict."""
    settings = json.loads((SQL_DIR / "linkage_model.json").read_text())
    settings.pop("_comment", None)
    return settings


def save_model(paths: Paths, model: dict) -> None:
    """Write the trained settings to :func:`model_file`."""
    with atomic_file(model_file(paths), suffix=".json") as tmp:
        tmp.write_text(json.dumps(model, indent=2))


def _floor(model: dict) -> dict:
    for comparison in model["comparisons"]:
        for level in comparison["comparison_levels"]:
            # A level never or hardly seen among known matches (a one-digit date typo,
            # say) gets a small floor rather than zero: it weighs heavily against a
            # match without vetoing it outright.
            if not level.get("is_null_level"):
                level["m_probability"] = max(level.get("m_probability") or 0.0, M_FLOOR)
    return model


def _train_by_em(con: duckdb.DuckDBPyConnection, cfg: LinkageConfig) -> dict:
    """Splink's own unsupervised estimation: u by random sampling, m by EM over blocking rules.

    Raises:
        ModelNotLearned: EM found no pairs to learn from or did not converge to a model.
    """
    from splink import DuckDBAPI, Linker

    db_api = DuckDBAPI(connection=con)
    reps = db_api.register("link_reps", table_name="splink_reps_for_em")
    linker = Linker(reps, load_model_settings(), log_level=None)
    try:
        linker.training.estimate_probability_two_random_records_match([_DETERMINISTIC], recall=0.8)
        linker.training.estimate_u_using_random_sampling(
            max_pairs=cfg.u_pairs, seed=cfg.seed, min_count_per_level=None, num_chunks=1
        )
        for rule in EM_BLOCKING_RULES:
            linker.training.estimate_parameters_using_expectation_maximisation(
                rule, estimate_without_term_frequencies=True
            )
    except Exception as exc:  # Splink raises plain exceptions (no pairs, no convergence)
        raise ModelNotLearned(f"EM could not estimate the comparison model: {exc}") from exc
    model = linker.misc.save_model_to_json()
    missing = [
        f"{c['output_column_name']}: {lv.get('label_for_charts')}"
        for c in model["comparisons"]
        for lv in c["comparison_levels"]
        if not lv.get("is_null_level") and lv.get("m_probability") is None
    ]
    if len(missing) == sum(
        not lv.get("is_null_level") for c in model["comparisons"] for lv in c["comparison_levels"]
    ):
        raise ModelNotLearned("EM estimated no m probability at all")
    if missing:
        log.warning("EM left %d comparison levels unestimated (floored): %s", len(missing), missing)
    return _floor(model)


def train_model(con: duckdb.DuckDBPyConnection, cfg: LinkageConfig, method: str = "labels") -> dict:
    """Estimate the Splink model: m from strong-key clusters, u from random pairs of reps.

    Strong identifiers act as labels: two records holding the same passport or FIN
    are the same person, so how often their names and dates agree is exactly the m
    probability of each comparison level. ``link_reps`` and ``link_training`` must exist.
    With ``method="em"`` (too few strong clusters to learn from: data without shared
    identifiers) m is estimated by expectation maximisation instead (:func:`_train_by_em`).

    Returns:
        The trained settings (``Linker`` accepts them directly).

    Raises:
        ModelNotLearned: with ``em``, when no model could be estimated.
    """
    from splink import DuckDBAPI, Linker

    if method == "em":
        return _train_by_em(con, cfg)
    db_api = DuckDBAPI(connection=con)
    train = db_api.register("link_training", table_name="splink_training_input")
    m_linker = Linker(train, load_model_settings(), log_level=None)
    m_linker.training.estimate_m_from_label_column("ident_group")
    model = _floor(m_linker.misc.save_model_to_json())
    reps = db_api.register("link_reps", table_name="splink_reps_for_u")
    linker = Linker(reps, model, log_level=None)
    # One chunk: the probe-and-stop phase costs more than it saves at these sizes.
    linker.training.estimate_u_using_random_sampling(
        max_pairs=cfg.u_pairs, seed=cfg.seed, min_count_per_level=None, num_chunks=1
    )
    linker.training.estimate_probability_two_random_records_match([_DETERMINISTIC], recall=0.8)
    return linker.misc.save_model_to_json()

"""The comparison model: a Fellegi-Sunter model in Splink on DuckDB, and its estimation.

Its blocking rules and comparisons (names, date of birth with day and month possibly
swapped, partial documents, citizenship, approximate age) are data, in
``sql/linkage_model.json``. Training writes ``features/linkage_model.json``: the m and u
values of every comparison level, so any link's match weight can be explained.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from features.linkage.config import LinkageConfig
from features.linkage.sql import SQL_DIR
from triage.atomic import atomic_file
from triage.paths import Paths

__all__ = ["M_FLOOR", "load_model_settings", "model_file", "save_model", "train_model"]

M_FLOOR = 1e-4  # smallest m probability of a comparison level


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


def train_model(con: duckdb.DuckDBPyConnection, cfg: LinkageConfig) -> dict:
    """Estimate the Splink model: m from strong-key clusters, u from random pairs of reps.

    Strong identifiers act as labels: two records holding the same passport or FIN
    are the same person, so how often their names and dates agree is exactly the m
    probability of each comparison level. ``link_reps`` and ``link_training`` must exist.

    Returns:
        The trained settings (``Linker`` accepts them directly).
    """
    from splink import DuckDBAPI, Linker

    db_api = DuckDBAPI(connection=con)
    train = db_api.register("link_training", table_name="splink_training_input")
    m_linker = Linker(train, load_model_settings(), log_level=None)
    m_linker.training.estimate_m_from_label_column("ident_group")
    model = m_linker.misc.save_model_to_json()
    for comparison in model["comparisons"]:
        for level in comparison["comparison_levels"]:
            # A level never or hardly seen among known matches (a one-digit date typo,
            # say) gets a small floor rather than zero: it weighs heavily against a
            # match without vetoing it outright.
            if not level.get("is_null_level"):
                level["m_probability"] = max(level.get("m_probability") or 0.0, M_FLOOR)
    reps = db_api.register("link_reps", table_name="splink_reps_for_u")
    linker = Linker(reps, model, log_level=None)
    # One chunk: the probe-and-stop phase costs more than it saves at these sizes.
    linker.training.estimate_u_using_random_sampling(
        max_pairs=cfg.u_pairs, seed=cfg.seed, min_count_per_level=None, num_chunks=1
    )
    linker.training.estimate_probability_two_random_records_match(
        [
            "l.family_key = r.family_key and l.given_key = r.given_key "
            "and l.birth_date = r.birth_date and l.comp_id <> r.comp_id"
        ],
        recall=0.8,
    )
    return linker.misc.save_model_to_json()

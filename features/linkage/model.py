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
from typing import cast

import duckdb
import pyarrow as pa

from features.linkage.backend import for_duckdb, for_engine, splink_api, splink_input
from features.linkage.config import LinkageConfig
from features.linkage.reps import ID_PREFIX
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
    "u_sample_size",
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


def _extra_comparison(column: str) -> dict:
    """The comparison of an extra column of the representatives (``reps.record_extras``)."""
    null = {
        "sql_condition": f"{column}_l IS NULL OR {column}_r IS NULL",
        "is_null_level": True,
        "label_for_charts": "null",
    }
    if column.startswith(ID_PREFIX):
        # Two strong clusters never share a value (they would be one cluster): a value
        # within two edits is a typo of the same identifier, strong evidence for; a
        # different one is evidence against, weighed by m and u like any other, not a veto
        # (the guard in predict.py refuses only values each held by several records).
        levels = [
            {
                "sql_condition": f"damerau_levenshtein({column}_l, {column}_r) <= 2",
                "label_for_charts": "within two edits",
            }
        ]
    elif column == "address":
        levels = [
            {"sql_condition": "address_l = address_r", "label_for_charts": "exact"},
            *(
                {
                    "sql_condition": f"jaro_winkler_similarity(address_l, address_r) >= {t}",
                    "label_for_charts": f"jaro-winkler >= {t}",
                }
                for t in (0.92, 0.8)
            ),
        ]
    else:  # postcode
        levels = [
            {"sql_condition": "postcode_l = postcode_r", "label_for_charts": "exact"},
            {
                "sql_condition": "damerau_levenshtein(postcode_l, postcode_r) <= 1",
                "label_for_charts": "one edit",
            },
        ]
    return {
        "output_column_name": column,
        "comparison_levels": [
            null,
            *levels,
            {"sql_condition": "ELSE", "label_for_charts": "different"},
        ],
    }


def extra_columns(con: duckdb.DuckDBPyConnection, table: str = "link_reps") -> tuple[str, ...]:
    """The extra comparison columns ``table`` carries (``reps.record_extras``)."""
    cols = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
    return tuple(c for c in cols if c.startswith(ID_PREFIX) or c in ("address", "postcode"))


# Comparisons of inputs a registry may not declare (citizenship, travel documents): left
# out when no representative holds one, so no level is reported as unestimated.
_OPTIONAL = {"region": "region", "travel_document": "doc_a"}


def absent_inputs(con: duckdb.DuckDBPyConnection, table: str = "link_reps") -> tuple[str, ...]:
    """The optional comparisons whose input no row of ``table`` holds."""
    counts = ", ".join(f"count({col})" for col in _OPTIONAL.values())
    held = con.execute(f"SELECT {counts} FROM {table}").fetchall()[0]
    return tuple(name for name, n in zip(_OPTIONAL, held, strict=True) if n == 0)


def load_model_settings(extras: tuple[str, ...] = (), absent: tuple[str, ...] = ()) -> dict:
    """The untrained Splink settings (blocking rules and comparisons) as a dict, with a
    comparison for each of ``extras`` (identifiers, address, postcode) that is declared and
    without the comparisons ``absent`` names (:func:`absent_inputs`)."""
    settings = json.loads((SQL_DIR / "linkage_model.json").read_text())
    settings.pop("_comment", None)
    settings["comparisons"] = [
        c for c in settings["comparisons"] if c["output_column_name"] not in absent
    ]
    settings["comparisons"].extend(_extra_comparison(c) for c in extras)
    # A declared address or postcode also finds candidates the name and date rules miss:
    # an agreeing date of birth with both names mistyped, agreeing names with the date
    # mistyped (FEBRL4 without its identifier: 0.940 F1 without these rules).
    for col in ("postcode", "address"):
        if col in extras:
            settings["blocking_rules_to_generate_predictions"].extend(
                f"l.{col} = r.{col} and {rule} and l.comp_id <> r.comp_id"
                for rule in (
                    "l.birth_date = r.birth_date",
                    "l.family_key = r.family_key and l.given_key = r.given_key",
                )
            )
    return settings


def save_model(paths: Paths, model: dict) -> None:
    """Write the trained settings to :func:`model_file`."""
    with atomic_file(model_file(paths), suffix=".json") as tmp:
        tmp.write_text(json.dumps(model, indent=2))


# A portable ranking of the representatives for the u sample: a multiplicative hash of the
# integer ``rep_id`` (Knuth's, modulo 2**32; ids below 2**31 keep the product in BIGINT),
# plain arithmetic both engines evaluate alike.
_U_SAMPLE = "SELECT * FROM {table} ORDER BY (rep_id * 2654435761) % 4294967296, rep_id LIMIT {n}"


def u_sample_size(pairs: float) -> int:
    """Representatives whose pairs number at most ``pairs`` (n (n - 1) / 2 <= pairs)."""
    return int(0.5 * ((8 * pairs + 1) ** 0.5 + 1))


def _estimate_u(con: duckdb.DuckDBPyConnection, settings: dict, cfg: LinkageConfig) -> dict:
    """``settings`` (DuckDB text) with u estimated from every pair of a bounded sample of
    ``link_reps``: the :func:`u_sample_size` representatives first by a portable hash of
    their id (``_U_SAMPLE``), collected to the driver and compared by Splink on an
    in-memory DuckDB.

    The same code on both engines, so u is the same: Splink's own random sampling picks its
    records by each backend's hash of the id, and Spark's differs from DuckDB's. The sample
    is bounded by ``cfg.u_pairs`` (about 1,700 rows for 1.5M pairs), whatever the data's size,
    so the driver holds it easily; Splink then takes every pair of it (no sampling of its own).
    """
    from splink import DuckDBAPI, Linker

    n = u_sample_size(cfg.u_pairs)
    query = _U_SAMPLE.format(table="link_reps", n=n)
    # DuckDB's relation reads Arrow without the DB-API result's extra copy.
    result = con.sql(query) if isinstance(con, duckdb.DuckDBPyConnection) else con.execute(query)
    sample = cast("pa.Table", result.to_arrow_table())
    # Spark has no unsigned integers: the same bits as signed on both engines.
    fields = [
        f.with_type(pa.int64()) if pa.types.is_unsigned_integer(f.type) else f
        for f in sample.schema
    ]
    sample = sample.cast(pa.schema(fields), safe=False)
    local = duckdb.connect()
    try:
        local.register("u_sample", sample)
        db_api = DuckDBAPI(connection=local)
        reps = db_api.register("u_sample", table_name="splink_reps_for_u")
        linker = Linker(reps, settings, log_level=None)
        # One chunk: the probe-and-stop phase costs more than it saves at these sizes.
        linker.training.estimate_u_using_random_sampling(
            max_pairs=cfg.u_pairs, seed=cfg.seed, min_count_per_level=None, num_chunks=1
        )
        return linker.misc.save_model_to_json()
    finally:
        local.close()


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
    from splink import Linker

    db_api = splink_api(con)
    reps = db_api.register(splink_input(con, "link_reps"), table_name="splink_reps_for_em")
    settings = load_model_settings(extra_columns(con), absent_inputs(con))
    try:
        settings = _estimate_u(con, settings, cfg)
        linker = Linker(reps, for_engine(con, settings), log_level=None)
        linker.training.estimate_probability_two_random_records_match([_DETERMINISTIC], recall=0.8)
        for rule in EM_BLOCKING_RULES:
            linker.training.estimate_parameters_using_expectation_maximisation(
                rule, estimate_without_term_frequencies=True
            )
    except Exception as exc:  # Splink raises plain exceptions (no pairs, no convergence)
        raise ModelNotLearned(f"EM could not estimate the comparison model: {exc}") from exc
    model = for_duckdb(con, linker.misc.save_model_to_json())
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
    """Estimate the Splink model: m from strong-key clusters, u from pairs of a sample of reps
    (:func:`_estimate_u`: the same on every engine).

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
    from splink import Linker

    if method == "em":
        return _train_by_em(con, cfg)
    extras = extra_columns(con)
    db_api = splink_api(con)
    train = db_api.register(splink_input(con, "link_training"), table_name="splink_training_input")
    settings = load_model_settings(extras, absent_inputs(con))
    m_linker = Linker(train, for_engine(con, settings), log_level=None)
    m_linker.training.estimate_m_from_label_column("ident_group")
    model = _estimate_u(con, _floor(for_duckdb(con, m_linker.misc.save_model_to_json())), cfg)
    reps = db_api.register(splink_input(con, "link_reps"), table_name="splink_reps_for_u")
    linker = Linker(reps, for_engine(con, model), log_level=None)
    linker.training.estimate_probability_two_random_records_match([_DETERMINISTIC], recall=0.8)
    model = for_duckdb(con, linker.misc.save_model_to_json())
    ids = [c for c in extras if c.startswith(ID_PREFIX)]
    return _identifier_m_by_em(con, model, ids) if ids else model


# Identifier near-matches are learnt among pairs of strong clusters whose names and birth
# year agree (the first prediction rule): the clusters that train m from labels are made by
# sharing an identifier, so among them it always agrees and m of a typo cannot be learnt.
_ID_EM_RULE = (
    "l.family_key = r.family_key and l.given_key = r.given_key "
    "and l.birth_year = r.birth_year and l.comp_id <> r.comp_id"
)
_ID_M_DEFAULT = {"within two edits": 0.5, "different": 0.5}


def _identifier_m_by_em(con: duckdb.DuckDBPyConnection, model: dict, ids: list[str]) -> dict:
    """Re-estimate the m values of the identifier comparisons ``ids`` by EM (Splink's, u
    fixed) among pairs of strong clusters; the other comparisons keep their m from labels.

    A level EM cannot estimate (never seen among those pairs) takes a neutral m (0.5).
    """
    from splink import Linker

    db_api = splink_api(con)
    reps = db_api.register(splink_input(con, "link_reps"), table_name="splink_reps_for_id_em")
    linker = Linker(reps, for_engine(con, model), log_level=None)
    learnt: dict[str, dict[str, float | None]] = {}
    try:
        linker.training.estimate_parameters_using_expectation_maximisation(
            _ID_EM_RULE, estimate_without_term_frequencies=True
        )
        em = for_duckdb(con, linker.misc.save_model_to_json())
        learnt = {
            c["output_column_name"]: {
                lv["label_for_charts"]: lv.get("m_probability") for lv in c["comparison_levels"]
            }
            for c in em["comparisons"]
            if c["output_column_name"] in ids
        }
    except Exception as exc:  # Splink raises plain exceptions (no pairs, no convergence)
        log.warning("identifier m values not learnt by EM (%s): neutral m used", exc)
    for comparison in model["comparisons"]:
        if comparison["output_column_name"] not in ids:
            continue
        for level in comparison["comparison_levels"]:
            label = level["label_for_charts"]
            if level.get("is_null_level"):
                continue
            m = learnt.get(comparison["output_column_name"], {}).get(label)
            level["m_probability"] = max(m if m is not None else _ID_M_DEFAULT[label], M_FLOOR)
    return model

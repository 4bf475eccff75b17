"""Keep the MLflow store relocatable: a copied or moved ``mlruns/`` reads its own artifacts.

MLflow's SQLite store records every artifact location as an absolute URI
(``file:///old/place/mlruns/artifacts/...``) in four columns; a store moved to a new folder would
still read (and write) the old place. Every project entry to the store calls
:func:`relocate_store` first: when the recorded artifact root is not this store's own
``artifacts/`` folder, the old prefix is rewritten to the new one in one transaction. On a store
that never moved the cost is one small query.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

__all__ = ["relocate_store"]

log = logging.getLogger(__name__)

# Columns of MLflow 3.17's SQLite schema that hold artifact URIs.
_URI_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
    ("model_versions", "source"),
)
_ROOT_NAME = "/artifacts"


def relocate_store(paths: Any) -> int:
    """Rewrite artifact URIs recorded under another ``mlruns/`` to this one's.

    Args:
        paths: a ``triage.paths.Paths`` (its ``mlruns_dir`` holds ``mlflow.db`` and ``artifacts/``).

    Returns:
        The number of rows rewritten (0 when the store is where it was made, or does not exist).
    """
    db = Path(paths.mlruns_dir) / "mlflow.db"
    if not db.is_file():
        return 0
    new_root = Path(paths.artifact_root).as_uri()
    with sqlite3.connect(db, timeout=30) as con:
        tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
        if "experiments" not in tables:
            return 0
        old_roots = {
            loc
            for (loc,) in con.execute("select artifact_location from experiments")
            if loc and loc.endswith(_ROOT_NAME) and loc != new_root
        }
        changed = 0
        for old in sorted(old_roots):
            for table, column in _URI_COLUMNS:
                if table not in tables:
                    continue
                cur = con.execute(
                    f"update {table} set {column} = ? || substr({column}, ?) "
                    f"where {column} = ? or {column} like ? escape '\\'",
                    (new_root, len(old) + 1, old, _like_prefix(old + "/")),
                )
                changed += cur.rowcount
    if changed:
        log.warning(
            "MLflow store moved: %d artifact locations now point into %s", changed, new_root
        )
    return changed


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"

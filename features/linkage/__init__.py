"""Entity resolution across the 27 systems: which records belong to one person.

Two steps, as an analyst would do it by hand:

1. **Strong keys** (``keys``). Records that share a passport number, biometric id (FIN),
   A-number, I-94 number, SEVIS id or benefit receipt number are the same person.
   Connected components of the graph record - identifier value - record give the strong
   clusters. One FIN shown with several names stays one person: that is how aliases
   surface.
2. **Probabilistic** (``reps``, ``model``, ``predict``). Records without a shared key
   (visa refusals, land exits, watchlist hits, tips, ...) and strong clusters that a
   passport renewal split are linked on names, date of birth (day and month may be
   swapped), partial documents, citizenship and approximate age by a Fellegi-Sunter
   model: Splink on DuckDB, its blocking rules and comparisons in
   ``sql/linkage_model.json``. The rows compared are one representative per biographic
   identity (``identities``) of each strong cluster, so comparisons stay far below all
   pairs; the decision rule is ``sql/linkage_decide.sql`` plus a FIN / A-number guard.

Every record gets a ``cluster_id`` (the smallest record number of its cluster), a
``link_method`` (``strong:<key>``, ``probabilistic`` or ``singleton``), a
``link_confidence`` (1.0 for strong keys, the match probability for probabilistic
links), an ``identity_id`` (its biographic identity within the cluster) and the
cluster's ``alias_count`` (identities beyond the first) (``clusters``, ``write``). A
probabilistic link also keeps the evidence of the pair that decided it: its match weight
(``link_weight``) and which fields agreed (``link_agreement``) (``evidence``).

How it stays fast on 30 million records: records are numbered ``rec_idx`` system by
system in clean-file order (``sql``), per-record state lives in numpy arrays indexed by
that number (``arrays``), identifiers and identities travel as 64-bit hashes (names and
dates are looked up once per distinct identity), and SQL only sees the few million
distinct identities. ``run`` orchestrates the steps. Nothing here reads the truth folder;
``features/linkage_eval.py`` measures the result.

The names below are the public surface; the modules are its components, reached by name
(``features.linkage.keys.strong_clusters``) by tests and tools that need the internals.
"""

from features.linkage.config import LINK_METHODS, LinkageConfig
from features.linkage.model import model_file, train_model
from features.linkage.predict import decide_links, score_pairs
from features.linkage.report import LinkageResult
from features.linkage.run import run_linkage

__all__ = [
    "LINK_METHODS",
    "LinkageConfig",
    "LinkageResult",
    "decide_links",
    "model_file",
    "run_linkage",
    "score_pairs",
    "train_model",
]

"""Batch-score lookups for the service: one case by id, and the ranked review queue.

Reads the latest complete batch run (``scores/LATEST`` -> ``scores/<run_id>/
scores.parquet``, docs/contracts.md section 4) once at start-up. DuckDB reads the
Parquet file; the rows are kept as an Arrow table and two small indexes:

- case id -> row: the case ids sorted as fixed-width bytes plus their row numbers,
  so a lookup is one ``np.searchsorted`` (microseconds, no query planning);
- rank order: row numbers sorted by rank, with tier and status codes in that
  order, so a queue page is a boolean mask and a slice;
- other orders of the queue (:data:`SORT_KEYS`: by probability, lead age or status), each a
  permutation of the rank positions built on first use, so a sorted page is the same mask
  read in that order.

With a ``cache_dir`` the table and indexes are written once per run as Arrow IPC
files (``<cache_dir>/lookup/<run_id>/``, :class:`triage.runcache.RunCache`) and
memory-mapped: several server workers then share one copy through the page cache,
and a restart is instant. Without one, everything stays in memory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from triage.paths import ScoresDir, ScoresRun
from triage.runcache import RunCache, file_stamp, map_arrow, write_arrow

__all__ = [
    "CACHE_KIND",
    "SORT_KEYS",
    "STATUS_ORDER",
    "CaseNotFound",
    "QueueSlice",
    "ScoresLookup",
    "ScoresUnavailable",
    "latest_run_id",
]

# The columns of scores.parquet the service answers with (contracts.md, section 4).
# ``reasons`` stays as written: list<struct<feature, value, shap, text>> (serving/batch/runner.py)
# or a JSON string; both reach the caller as a list of dicts.
SELECT_SCORES_SQL = """
SELECT CAST(case_id AS VARCHAR)         AS case_id,
       CAST(probability AS DOUBLE)      AS probability,
       CAST(probability_low AS DOUBLE)  AS probability_low,
       CAST(probability_high AS DOUBLE) AS probability_high,
       CAST(margin AS DOUBLE)           AS margin,
       CAST(rank AS BIGINT)             AS rank,
       CAST(lead_date AS DATE)          AS lead_date,
       CAST(tier AS TINYINT)            AS tier,
       CAST(status AS VARCHAR)          AS status,
       CAST(status_evidence AS VARCHAR) AS status_evidence,
       reasons,
       CAST(model_version AS VARCHAR)   AS model_version,
       CAST(run_id AS VARCHAR)          AS run_id
FROM read_parquet($path)
"""
_QUEUE_COLUMNS = [
    "case_id", "rank", "tier", "status", "probability", "probability_low", "probability_high",
    "lead_date", "reasons",
]  # fmt: skip
# The queue's orders: ``key`` ascending, ``-key`` descending (as JSON:API spells a sort).
# ``lead_age`` is the lead's age at the run's scoring date (one snapshot date for every open
# case), so oldest first is ``-lead_age``; leads without a date come last either way. Equal
# keys keep rank order in both directions.
SORT_KEYS = ("rank", "probability", "lead_age", "status")
# ``status`` ascending: the calls a reviewer acts on first (features/status.py's vocabulary),
# then any other call alphabetically.
STATUS_ORDER = ("likely_in_country", "undetermined", "likely_lawful", "likely_departed")
_CACHE_VERSION = "3"  # 3: the probability interval
CACHE_KIND = "lookup"  # <cache_dir>/lookup/<run_id>/ (triage.runcache)
_ROWS_FILE, _INDEX_FILE = "rows.arrow", "index.arrow"

log = logging.getLogger(__name__)


class ScoresUnavailable(RuntimeError):
    """No complete batch run to serve (missing LATEST, run directory or columns)."""


class CaseNotFound(KeyError):
    """The case id is not in the served batch run."""


def latest_run_id(scores_dir: Path) -> str:
    """The run id named by ``scores/LATEST`` (written last by ``triage score``)."""
    scores = ScoresDir(Path(scores_dir))
    try:
        run_id = scores.latest_run_id()
    except ValueError as exc:
        raise ScoresUnavailable(str(exc)) from None
    if run_id is None:
        raise ScoresUnavailable(f"no batch run yet: {scores.latest_pointer} is missing")
    return run_id


def _read_run(parquet: Path) -> pa.Table:
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        table = con.sql(SELECT_SCORES_SQL, params={"path": str(parquet)}).to_arrow_table()
    except duckdb.Error as exc:
        raise ScoresUnavailable(f"cannot read {parquet}: {exc}") from None
    finally:
        con.close()
    # One chunk, 64-bit string offsets: ``take`` on a multi-chunk column concatenates
    # the whole column first (seconds for the reasons column), and the reasons of the
    # full backlog can pass the 2 GiB that 32-bit offsets allow.
    schema = pa.schema(
        [f.with_type(pa.large_string()) if f.type == pa.string() else f for f in table.schema]
    )
    return table.cast(schema).combine_chunks()


def _build_index(table: pa.Table) -> pa.Table:
    """Sorted case-id keys with their rows, and rows in rank order."""
    by_id = pc.sort_indices(table["case_id"])
    ids = pc.take(table["case_id"], by_id).to_pylist()
    keys = np.array([s.encode() for s in ids], dtype=bytes)
    if len(keys) > 1 and (keys[1:] == keys[:-1]).any():
        dup = keys[1:][keys[1:] == keys[:-1]][0].decode()
        raise ScoresUnavailable(f"case id {dup!r} appears twice in the batch run")
    width = max(keys.dtype.itemsize, 1)
    key_col = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(keys), [None, pa.py_buffer(keys.astype(f"S{width}").tobytes())]
    )
    by_rank = pc.sort_indices(table["rank"]).cast(pa.int32())
    return pa.table({"key": key_col, "key_row": by_id.cast(pa.int32()), "by_rank": by_rank})


def _fingerprint(run: ScoresRun) -> dict[str, str]:
    return {"version": _CACHE_VERSION, "scores": file_stamp(run.scores_file)}


def _cached(run: ScoresRun, cache_dir: Path) -> tuple[pa.Table, pa.Table]:
    """The run's rows and indexes from the shared run cache (built once), memory-mapped."""

    def build(directory: Path) -> None:
        table = _read_run(run.scores_file)
        write_arrow(_build_index(table), directory / _INDEX_FILE)
        write_arrow(table, directory / _ROWS_FILE)

    entry = RunCache(cache_dir / CACHE_KIND).get(run.run_id, _fingerprint(run), build)
    return map_arrow(entry / _ROWS_FILE), map_arrow(entry / _INDEX_FILE)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class QueueSlice:
    """One numbered page of the queue (:meth:`ScoresLookup.queue_page`)."""

    total: int  # cases that pass the filters
    page: int  # the page shown (clamped to the last)
    rows: np.ndarray  # the page's rows of scores.parquet (and of the SHAP matrix), rank order
    items: list[dict[str, Any]]  # as ScoresLookup.queue returns them


@dataclass(frozen=True)
class ScoresLookup:
    """The rows of one batch run and the indexes that answer the service's reads."""

    run_id: str
    table: pa.Table
    keys: np.ndarray  # sorted case ids, fixed-width bytes
    key_rows: np.ndarray  # table row of each key
    by_rank: np.ndarray  # table rows in rank order
    tier_by_rank: np.ndarray
    status_by_rank: np.ndarray  # codes into ``statuses``
    statuses: tuple[str, ...]

    @classmethod
    def open(cls, scores_dir: Path, cache_dir: Path | None = None) -> ScoresLookup:
        """Load the latest complete run under ``scores_dir``.

        Args:
            scores_dir: ``Paths.scores_dir``.
            cache_dir: where to keep memory-mapped copies (e.g. ``service_dir/"cache"``);
                None keeps everything in this process's memory.

        Raises:
            ScoresUnavailable: no LATEST, no scores.parquet, missing columns or
                duplicate case ids.
        """
        run_id = latest_run_id(scores_dir)
        run = ScoresDir(Path(scores_dir)).run(run_id)
        if not run.scores_file.is_file():
            raise ScoresUnavailable(f"LATEST names run {run_id!r} but {run.scores_file} is missing")
        if cache_dir is not None:
            try:
                return cls._from_tables(run_id, *_cached(run, Path(cache_dir)))
            except OSError as exc:  # read-only or full disk: serve from memory instead
                log.warning("no scores cache in %s (%s); loading into memory", cache_dir, exc)
        table = _read_run(run.scores_file)
        return cls._from_tables(run_id, table, _build_index(table))

    @classmethod
    def _from_tables(cls, run_id: str, table: pa.Table, index: pa.Table) -> ScoresLookup:
        key_col = index["key"].combine_chunks()
        width = key_col.type.byte_width
        # Zero-copy view of the fixed-width keys (memory-mapped when cached).
        keys = np.frombuffer(
            key_col.buffers()[1],
            dtype=f"S{width}",
            count=len(key_col),
            offset=key_col.offset * width,
        )
        # Array.to_numpy, not ChunkedArray.to_numpy: the latter goes through pandas.
        by_rank = index["by_rank"].combine_chunks().to_numpy()
        status = pc.dictionary_encode(table["status"].combine_chunks())
        statuses = tuple(str(s) for s in status.dictionary.to_pylist())
        codes = status.indices.to_numpy(zero_copy_only=False)
        return cls(
            run_id=run_id,
            table=table,
            keys=keys,
            key_rows=index["key_row"].combine_chunks().to_numpy(),
            by_rank=by_rank,
            tier_by_rank=table["tier"].combine_chunks().to_numpy()[by_rank],
            status_by_rank=codes[by_rank],
            statuses=statuses,
        )

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def tiers(self) -> tuple[int, ...]:
        """The tiers present in this run, ascending."""
        return tuple(int(t) for t in np.unique(self.tier_by_rank))

    def _row(self, case_id: str) -> int:
        key = case_id.encode()
        if len(key) > self.keys.dtype.itemsize:
            raise CaseNotFound(case_id)
        i = int(np.searchsorted(self.keys, key))
        if i >= len(self.keys) or self.keys[i] != key:
            raise CaseNotFound(case_id)
        return int(self.key_rows[i])

    def get(self, case_id: str) -> dict[str, Any]:
        """The batch score of one case, with ``status_evidence`` and ``reasons`` parsed.

        Raises:
            CaseNotFound: the case is not in this run.
        """
        row = self.table.slice(self._row(case_id), 1).to_pylist()[0]
        evidence = _json(row["status_evidence"]) or []
        row["status_evidence"] = [evidence] if isinstance(evidence, dict) else evidence
        row["reasons"] = _json(row["reasons"])
        return row

    def _rows_of(self, case_ids: Collection[str]) -> np.ndarray:
        """Table rows of those of ``case_ids`` that are in this run (one vectorised search)."""
        width = self.keys.dtype.itemsize
        wanted = [key for key in (c.encode() for c in case_ids) if len(key) <= width]
        if not wanted or not len(self.keys):
            return np.empty(0, dtype=np.int64)
        keys = np.array(wanted, dtype=f"S{width}")
        at = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        found = self.keys[at] == keys
        return self.key_rows[at[found]].astype(np.int64)

    def _rank_positions(self, case_ids: Collection[str]) -> np.ndarray:
        """Positions in rank order of those of ``case_ids`` that are in this run."""
        if "_position" not in self.__dict__:  # inverse of by_rank, built on first use
            position = np.empty(len(self.by_rank), dtype=np.int64)
            position[self.by_rank] = np.arange(len(self.by_rank))
            self.__dict__["_position"] = position
        return self.__dict__["_position"][self._rows_of(case_ids)]

    def _mask(
        self,
        tier: int | None,
        status: str | None,
        exclude: Collection[str],
        only: Collection[str] | None = None,
    ) -> np.ndarray | None:
        """Rank positions that pass the filters (None: all of them)."""
        if tier is None and status is None and not exclude and only is None:
            return None
        if only is not None:
            mask = np.zeros(len(self.by_rank), dtype=bool)
            mask[self._rank_positions(only)] = True
        else:
            mask = np.ones(len(self.by_rank), dtype=bool)
        if tier is not None:
            mask &= self.tier_by_rank == tier
        if status is not None:
            if status not in self.statuses:
                raise ValueError(
                    f"unknown status {status!r}; this run uses {', '.join(self.statuses)}"
                )
            mask &= self.status_by_rank == self.statuses.index(status)
        if exclude:
            mask[self._rank_positions(exclude)] = False
        return mask

    def next_case(
        self,
        case_id: str,
        *,
        tier: int | None = None,
        status: str | None = None,
        exclude: Collection[str] = (),
        only: Collection[str] | None = None,
        sort: str = "rank",
    ) -> str | None:
        """The next case after ``case_id`` in the queue's order (``sort``, as
        :meth:`queue`) that passes the filters (None: none).

        Raises:
            CaseNotFound: ``case_id`` is not in this run.
            ValueError: a status this run does not use, or an unknown sort.
        """
        self._row(case_id)  # CaseNotFound for a case not in this run
        position = int(self._rank_positions([case_id])[0])
        order = self.order(sort)
        start = position if order is None else int(np.flatnonzero(order == position)[0])
        mask = self._mask(tier, status, exclude, only)
        following = np.arange(start + 1, len(self.by_rank)) if order is None else order[start + 1 :]
        if mask is not None:
            following = following[mask[following]]
        if not len(following):
            return None
        return str(self.table["case_id"][int(self.by_rank[following[0]])])

    def order(self, sort: str = "rank") -> np.ndarray | None:
        """Rank positions in the order ``sort`` lists the queue (None: rank order itself).

        Built on first use and kept (an int32 permutation: 4.8 MB on 1.2M cases); equal keys
        keep rank order. See :data:`SORT_KEYS`.

        Raises:
            ValueError: an unknown sort.
        """
        key = sort.removeprefix("-")
        if key not in SORT_KEYS:
            raise ValueError(f"unknown sort {sort!r}; sort by {', '.join(SORT_KEYS)}")
        if sort == "rank":
            return None
        cache = self.__dict__.setdefault("_orders", {})
        if sort not in cache:
            cache[sort] = self._build_order(key, descending=sort.startswith("-"))
        return cache[sort]

    def _build_order(self, key: str, descending: bool) -> np.ndarray:
        """The rank positions sorted by ``key``: a stable sort of keys laid out in rank order,
        so equal keys keep rank order in both directions; missing keys sort as +inf (last)."""
        if key == "rank":
            values = np.arange(len(self.by_rank), dtype=np.float64)
            missing = np.zeros(len(values), dtype=bool)
        elif key == "probability":
            values = self.table["probability"].combine_chunks().to_numpy(zero_copy_only=False)
            values = values.astype(np.float64)[self.by_rank]
            missing = np.isnan(values)
        elif key == "lead_age":
            dates = self.table["lead_date"].combine_chunks()
            missing = dates.is_null().to_numpy(zero_copy_only=False)[self.by_rank]
            days = dates.cast(pa.int32()).fill_null(0).to_numpy().astype(np.float64)
            values = -days[self.by_rank]  # older lead, larger age
        else:
            known = {s: i for i, s in enumerate(STATUS_ORDER)}
            others = sorted(s for s in self.statuses if s not in known)
            known.update({s: len(STATUS_ORDER) + i for i, s in enumerate(others)})
            place = np.array([known[s] for s in self.statuses] or [0], dtype=np.float64)
            values = place[self.status_by_rank]
            missing = np.zeros(len(values), dtype=bool)
        keyed = np.where(missing, np.inf, -values if descending else values)
        # Built once per worker and sort: on 1.2M random keys about 0.1-1 s (a shared,
        # busy machine); a key already near rank order (probability) sorts much faster.
        return np.argsort(keyed, kind="stable").astype(np.int32)

    def queue(
        self,
        *,
        tier: int | None = None,
        status: str | None = None,
        offset: int = 0,
        limit: int = 50,
        exclude: Collection[str] = (),
        only: Collection[str] | None = None,
        sort: str = "rank",
    ) -> tuple[int, list[dict[str, Any]]]:
        """One page of open cases in rank order (or ``sort``'s), optionally of one tier and
        status.

        Args:
            tier: only this tier.
            status: only this status call.
            offset: matching cases to skip.
            limit: rows at most.
            exclude: case ids left out (e.g. those already reviewed).
            only: if given, only these case ids (e.g. those assigned to a reviewer).
            sort: the order, one of :data:`SORT_KEYS`, ``-`` in front for descending.

        Returns:
            The number of matching cases and the page's rows (``case_id``, ``rank``,
            ``tier``, ``status``, ``probability`` with ``probability_low`` and
            ``probability_high``, ``lead_date``, ``top_reason``).

        Raises:
            ValueError: a status this run does not use, an unknown sort, or a negative
                offset/limit.
        """
        if offset < 0 or limit < 0:
            raise ValueError("offset and limit must not be negative")
        ranks = self._matching(tier, status, exclude, only, sort)
        rows = self._page_rows(ranks, offset, limit)
        return self._count(ranks), self._items(rows)

    def queue_page(
        self,
        *,
        page: int,
        size: int,
        tier: int | None = None,
        status: str | None = None,
        exclude: Collection[str] = (),
        only: Collection[str] | None = None,
        sort: str = "rank",
    ) -> QueueSlice:
        """One numbered page of the queue, clamped to the last page (a queue that shrank since
        the link was made shows its end, not nothing), with the filters, ``exclude`` and
        ``only`` applied once for both the count and the page, in ``sort``'s order.

        Raises:
            ValueError: a status this run does not use, an unknown sort, or a page or size
                below 1.
        """
        if page < 1 or size < 1:
            raise ValueError("page and size must be at least 1")
        ranks = self._matching(tier, status, exclude, only, sort)
        total = self._count(ranks)
        page = min(page, max((total + size - 1) // size, 1))
        rows = self._page_rows(ranks, (page - 1) * size, size)
        return QueueSlice(total=total, page=page, rows=rows, items=self._items(rows))

    def reasons_of(self, rows: np.ndarray) -> list[list[dict[str, Any]]]:
        """The stored reasons of ``rows`` (table rows), parsed; only that column is read."""
        taken = self.table["reasons"].take(pa.array(rows, type=pa.int64())).to_pylist()
        return [_json(r) or [] for r in taken]

    def _matching(
        self,
        tier: int | None,
        status: str | None,
        exclude: Collection[str],
        only: Collection[str] | None = None,
        sort: str = "rank",
    ) -> np.ndarray | None:
        """Rank positions of the cases that pass the filters, in ``sort``'s order (None:
        every case in rank order)."""
        order = self.order(sort)
        mask = self._mask(tier, status, exclude, only)
        if order is None:
            # flatnonzero + take: ten times faster than boolean indexing on a 1.2M mask.
            return np.flatnonzero(mask) if mask is not None else None
        return order if mask is None else order[np.flatnonzero(mask[order])]

    def _count(self, ranks: np.ndarray | None) -> int:
        return int(len(self.by_rank) if ranks is None else len(ranks))

    def _page_rows(self, ranks: np.ndarray | None, offset: int, limit: int) -> np.ndarray:
        """Table rows of the matching cases ``offset`` to ``offset + limit``, in rank order."""
        chosen = slice(offset, offset + limit) if ranks is None else ranks[offset : offset + limit]
        return np.asarray(self.by_rank[chosen], dtype=np.int64)

    def _items(self, rows: np.ndarray) -> list[dict[str, Any]]:
        items = self.table.select(_QUEUE_COLUMNS).take(pa.array(rows, type=pa.int32())).to_pylist()
        for item in items:
            reasons = _json(item.pop("reasons")) or []
            item["top_reason"] = reasons[0].get("text") if reasons else None
        return items

"""A reviewer's "wrong link" naming a record is honoured by the next linkage run: the record
leaves the case's person, and the linkage report counts the decision (or that it could not be
applied because the record is gone)."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest

from features.build import BuildConfig, build_cases
from features.ingest import ingest
from features.linkage import run_linkage
from features.linkage.splits import read_splits
from features.world import SCALES, WorldConfig, generate_world
from serving.review.dispositions import DispositionStore
from triage.paths import Paths


def _linked_world(tmp_path_factory) -> Paths:
    """A tiny world, ingested, linked and its cases built (the run a reviewer sees)."""
    paths = Paths.resolve(tmp_path_factory.mktemp("splits") / "data")
    generate_world(WorldConfig(seed=13, scale=SCALES["tiny"]), paths)
    ingest(paths)
    run_linkage(paths)
    build_cases(paths, BuildConfig(memory_limit="2GB"))
    return paths


@pytest.fixture(scope="module")
def linked(tmp_path_factory) -> Paths:
    """A linked world for the probabilistic-link test."""
    return _linked_world(tmp_path_factory)


@pytest.fixture(scope="module")
def linked_strong(tmp_path_factory) -> Paths:
    """Another, so that its store starts empty whatever order the tests run in."""
    return _linked_world(tmp_path_factory)


def _records(paths: Paths) -> pd.DataFrame:
    return pd.read_parquet(
        paths.linked_records_file, columns=["system", "record_id", "cluster_id", "link_method"]
    )


def _pick(paths: Paths, method: Callable[[pd.Series], pd.Series]) -> tuple[pd.Series, pd.DataFrame]:
    """The first record (by case, then record id) of a case with at least three linked
    records whose link method passes ``method``; with the other records of its person."""
    cases = pd.read_parquet(paths.cases_file, columns=["case_id", "cluster_id"])
    before = _records(paths)
    joined = cases.merge(before, on="cluster_id")
    size = joined.groupby("case_id")["record_id"].transform("size")
    choice = (
        joined[method(joined["link_method"]) & (size >= 3)]
        .sort_values(["case_id", "record_id"])
        .iloc[0]
    )
    mine = before["cluster_id"] == choice["cluster_id"]
    return choice, before[mine & (before["record_id"] != choice["record_id"])]


def _record(store: DispositionStore, case_id: str, record_id: str) -> None:
    store.record(
        case_id=case_id, disposition="wrong_link", owner="r", token_id="t", record_id=record_id
    )


@pytest.mark.slow
def test_a_wrong_link_keeps_the_record_out_of_the_cases_cluster(linked: Paths) -> None:
    """Record a wrong link on one of a case's probabilistically linked records, link again:
    the record is in no cluster with the case's other records, the case keeps the rest, and
    the report counts one honoured decision; a decision whose record is gone is counted as
    such on the next run."""
    choice, others = _pick(linked, lambda method: method == "probabilistic")
    case_id, record_id = choice["case_id"], choice["record_id"]
    store = DispositionStore.in_dir(linked.service_dir)
    _record(store, case_id, record_id)
    (split,) = read_splits(linked)
    assert split.record_id == record_id and len(split.kept) == len(others)

    result = run_linkage(linked)
    after = _records(linked).set_index(["system", "record_id"])
    moved = after.loc[(choice["system"], record_id), "cluster_id"]
    kept = after.loc[list(zip(others["system"], others["record_id"], strict=True)), "cluster_id"]
    assert moved not in set(kept)  # kept apart from every record of the case's person
    assert kept.nunique() == 1  # the rest of the person holds together
    assert result.reviewer_splits == {"honoured": 1, "record_gone": 0}

    build_cases(linked, BuildConfig(memory_limit="2GB"))  # the run the reviewer now sees
    _record(store, case_id, "XX-000000000")  # a record that is not in the run
    store.close()
    again = run_linkage(linked)
    assert again.reviewer_splits == {"honoured": 1, "record_gone": 1}
    relinked = _records(linked).set_index(["system", "record_id"])
    assert relinked.loc[(choice["system"], record_id), "cluster_id"] not in set(
        relinked.loc[kept.index, "cluster_id"]
    )


@pytest.mark.slow
def test_a_wrong_link_splits_off_a_record_that_shares_an_identifier(linked_strong: Paths) -> None:
    """A record linked to the case's person by a shared identifier (FIN, A-number, passport)
    is split off too: the next run puts it in a cluster of its own, apart from every record
    the case keeps, and the other records of the person that share no identifier with it
    stay with the case."""
    paths = linked_strong
    choice, others = _pick(paths, lambda method: method.str.startswith("strong:"))
    case_id, record_id = choice["case_id"], choice["record_id"]
    store = DispositionStore.in_dir(paths.service_dir)
    _record(store, case_id, record_id)
    store.close()

    result = run_linkage(paths)
    assert result.reviewer_splits == {"honoured": 1, "record_gone": 0}
    after = _records(paths).set_index(["system", "record_id"])
    moved = after.loc[(choice["system"], record_id), "cluster_id"]
    kept = after.loc[list(zip(others["system"], others["record_id"], strict=True)), "cluster_id"]
    assert moved not in set(kept)
    # The case's person is still there: most of its other records hold together.
    assert kept.value_counts().iloc[0] >= len(kept) / 2

"""Fresh scoring's plain functions, without a server: feature order and ranking in a run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from serving.api.fresh import FreshModel, feature_frame
from serving.api.schemas import FEATURE_NAMES, FreshCase


def _case(case_id: str, **values: float) -> FreshCase:
    features = {name: None for name in FEATURE_NAMES} | values
    return FreshCase.model_validate({"case_id": case_id, "features": features})


def _model(margins: list[float], ids: list[str], leads: list[int] | None = None) -> FreshModel:
    """A FreshModel over a run whose cases have these margins (any order), ids and lead days
    (days since 1970; None: no lead date on any case)."""
    no_date = int(np.iinfo(np.int32).max)
    days = leads if leads is not None else [no_date] * len(ids)
    order = sorted(range(len(ids)), key=lambda i: (-margins[i], days[i], ids[i]))
    keys = sorted(range(len(ids)), key=lambda i: ids[i])
    return FreshModel(
        scorer=None,  # type: ignore[arg-type]  # ranking needs no model
        run_id="run",
        neg_margin=-np.array([margins[i] for i in order]),
        ids_by_rank=np.array([ids[i].encode() for i in order]),
        lead_by_rank=np.array([days[i] for i in order], dtype=np.int64),
        keys=np.array([ids[i].encode() for i in keys]),
        lead_by_key=np.array([days[i] for i in keys], dtype=np.int64),
    )


def test_feature_frame_is_in_catalog_order_with_nulls_as_nan() -> None:
    """Each case is one float64 row in FEATURE_NAMES order; a null feature is NaN."""
    first, last = FEATURE_NAMES[0], FEATURE_NAMES[-1]
    frame = feature_frame([_case("A", **{first: 2.5}), _case("B", **{last: -1.0})])
    assert list(frame.columns) == list(FEATURE_NAMES)
    assert frame.shape == (2, len(FEATURE_NAMES))
    assert (frame.dtypes == np.float64).all()
    assert frame[first].iloc[0] == 2.5 and math.isnan(frame[first].iloc[1])
    assert frame[last].iloc[1] == -1.0
    assert int(frame.isna().sum().sum()) == 2 * len(FEATURE_NAMES) - 2


def test_ranks_place_a_margin_among_the_run_ties_by_case_id() -> None:
    """A margin takes the rank triage score would give it: higher first, ties by case id."""
    model = _model([3.0, 1.0, 1.0, 0.5], ["C1", "B", "D", "A"])
    # Every case of the run gets its own rank back.
    assert model.ranks(np.array([3.0, 1.0, 1.0, 0.5]), ["C1", "B", "D", "A"]).tolist() == [
        1,
        2,
        3,
        4,
    ]
    # New cases: above all, tied between B and D, tied with a longer id, below all.
    got = model.ranks(np.array([9.0, 1.0, 1.0, -9.0]), ["Z", "C", "DD", "Z"])
    assert got.tolist() == [1, 3, 4, 5]


@pytest.mark.parametrize("extra", ["", "x" * 80])
def test_ranks_accept_case_ids_longer_than_the_runs(extra: str) -> None:
    """A tied case id longer than every stored id is compared, not truncated."""
    model = _model([1.0, 1.0], ["A", "B"])
    assert model.ranks(np.array([1.0]), ["A" + extra])[0] == (1 if not extra else 2)


def test_equal_margins_rank_the_oldest_lead_first() -> None:
    """Between equal margins the older lead ranks first, whatever the case ids; a case the run
    holds keeps its batch lead date, a new case counts as newest."""
    model = _model([1.0, 1.0, 1.0], ["A", "B", "C"], leads=[300, 100, 200])
    assert model.ranks(np.array([1.0, 1.0, 1.0]), ["B", "C", "A"]).tolist() == [1, 2, 3]
    assert model.ranks(np.array([1.0]), ["AA"])[0] == 4  # unknown id: no lead date, after all

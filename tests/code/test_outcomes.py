"""The outcomes contract: imports and reviewer dispositions become labels with their selection
probability, the store is append-only, bad files are refused whole, and training takes the
labels with ``1 / probability`` as their weight."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from serving.review.dispositions import DispositionStore
from training.data import labelled_mask, propensity_weights, time_split, with_outcome_labels
from triage.contracts import check_worklist
from triage.outcomes import OutcomeStore, import_outcomes, load_labels, read_worklists
from triage.paths import Paths


def _paths(tmp_path) -> Paths:
    return Paths.resolve(tmp_path / "data", tmp_path / "mlruns")


def _worklist(paths: Paths, rows: list[tuple[str, str, float]], wid: str = "0001-run") -> None:
    """A worklist folder as serving/batch/worklist.py writes it (checked by its contract)."""
    d = paths.worklists_dir / wid
    d.mkdir(parents=True)
    picks = pd.DataFrame(
        {
            "case_id": [r[0] for r in rows],
            "selected_by": [r[1] for r in rows],
            "selection_probability": [r[2] for r in rows],
            "rank": range(1, len(rows) + 1),
            "probability": 0.1,
            "worklist_id": wid,
            "run_id": "run",
        }
    )
    picks.to_parquet(d / "worklist.parquet")
    random = picks[picks["selected_by"] == "random"]
    frame = pd.DataFrame(  # the random picks and one case the draw left
        {
            "case_id": [*random["case_id"], "C-left"],
            "selection_probability": [*random["selection_probability"], 0.01],
            "drawn": [True] * len(random) + [False],
        }
    )
    frame.to_parquet(d / "frame.parquet")
    manifest = {
        "worklist_id": wid,
        "sequence": int(wid[:4]),
        "created_at": "2025-07-01T00:00:00+00:00",
        "run_id": "run",
        "config": {"capacity": len(rows)},
        "greedy_cases": len(picks) - len(random),
        "random_drawn": len(random),
        "random_frame_cases": len(frame),
    }
    (d / "manifest.json").write_text(json.dumps(manifest))
    check_worklist(d)


def _csv(tmp_path, rows: list[dict], name: str = "out.csv"):
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_import_takes_the_probability_from_the_worklist(tmp_path):
    """An import without probabilities gets each case's probability from the worklist that
    picked it; a case on no worklist keeps none; a given probability wins."""
    paths = _paths(tmp_path)
    _worklist(paths, [("C1", "greedy", 1.0), ("C2", "random", 0.02), ("C4", "random", 0.5)])
    file = _csv(
        tmp_path,
        [
            {
                "case_id": "C1",
                "outcome": "confirm_concern",
                "recorded_at": "2025-08-01",
                "recorded_by": "inv-a",
            },
            {
                "case_id": "C2",
                "outcome": "no_concern",
                "recorded_at": "2025-08-02",
                "recorded_by": "inv-b",
            },
            {
                "case_id": "C3",
                "outcome": "departed",
                "recorded_at": "2025-08-03",
                "recorded_by": "inv-b",
            },
        ],
    )
    assert import_outcomes(paths, file) == 3
    given = _csv(
        tmp_path,
        [
            {
                "case_id": "C4",
                "outcome": "lawful",
                "recorded_at": "2025-08-04",
                "recorded_by": "inv-c",
                "selection_probability": 0.25,
            }
        ],
        "given.csv",
    )
    import_outcomes(paths, given)
    labels = load_labels(paths).set_index("case_id")
    assert labels.loc["C1", "label"] and not labels.loc["C2", "label"]
    assert labels.loc["C1", "selection_probability"] == 1.0
    assert labels.loc["C2", "selection_probability"] == pytest.approx(0.02)
    assert np.isnan(labels.loc["C3", "selection_probability"])
    assert labels.loc["C4", "selection_probability"] == pytest.approx(0.25)
    assert set(labels["source"]) == {"investigation"}
    assert labels.loc["C2", "worklist_id"] == "0001-run"


def test_dispositions_become_labels_and_the_newest_record_wins(tmp_path):
    """A reviewer's disposition is a label; a later one overrides an investigation's outcome;
    a newest ``wrong_link`` leaves its case unlabelled."""
    paths = _paths(tmp_path)
    _worklist(paths, [("C7", "random", 0.1)])
    import_outcomes(
        paths,
        _csv(
            tmp_path,
            [
                {
                    "case_id": "C7",
                    "outcome": "no_concern",
                    "recorded_at": "2025-08-01",
                    "recorded_by": "inv",
                },
                {
                    "case_id": "C8",
                    "outcome": "confirm_concern",
                    "recorded_at": "2025-08-01",
                    "recorded_by": "inv",
                },
            ],
        ),
    )
    store = DispositionStore.in_dir(paths.service_dir)
    later = datetime(2025, 9, 1, tzinfo=UTC)
    store.record(case_id="C7", disposition="confirm_concern", owner="rev", token_id="t", at=later)
    store.record(case_id="C8", disposition="wrong_link", owner="rev", token_id="t", at=later)
    store.record(case_id="C9", disposition="no_concern", owner="rev", token_id="t", at=later)
    store.close()
    labels = load_labels(paths).set_index("case_id")
    assert labels.loc["C7", "label"] and labels.loc["C7", "source"] == "disposition"
    assert labels.loc["C7", "selection_probability"] == pytest.approx(0.1)  # from the worklist
    assert labels.loc["C7", "recorded_by"] == "rev"
    assert "C8" not in labels.index  # wrong link: no label
    assert not labels.loc["C9", "label"] and np.isnan(labels.loc["C9", "selection_probability"])


def test_work_steps_are_not_labels_and_keep_the_conclusion(tmp_path):
    """'Needs information' and 'escalate' are steps, not conclusions: a case's earlier
    conclusion stays its label, and a case with only steps has none."""
    paths = _paths(tmp_path)
    store = DispositionStore.in_dir(paths.service_dir)
    first, later = datetime(2025, 9, 1, tzinfo=UTC), datetime(2025, 9, 2, tzinfo=UTC)
    store.record(case_id="C1", disposition="no_concern", owner="rev", token_id="t", at=first)
    store.record(case_id="C1", disposition="escalate", owner="rev", token_id="t", at=later)
    store.record(case_id="C2", disposition="needs_information", owner="rev", token_id="t")
    store.close()
    labels = load_labels(paths).set_index("case_id")
    assert not labels.loc["C1", "label"] and "C2" not in labels.index


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"outcome": "maybe"}, "unknown outcomes"),
        ({"recorded_by": ""}, "recorded_by"),
        ({"recorded_at": "not a date"}, "recorded_at"),
        ({"selection_probability": 0.0}, "selection_probability"),
    ],
)
def test_a_bad_file_is_refused_whole(tmp_path, row, message):
    """One bad row refuses the whole file: nothing is stored."""
    paths = _paths(tmp_path)
    good = {
        "case_id": "C1",
        "outcome": "no_concern",
        "recorded_at": "2025-08-01",
        "recorded_by": "inv",
        "selection_probability": 0.5,
    }
    file = _csv(tmp_path, [good, {**good, "case_id": "C2", **row}])
    with pytest.raises(ValueError, match=message):
        import_outcomes(paths, file)
    assert OutcomeStore.of(paths).frame().empty


def test_the_store_is_append_only(tmp_path):
    """UPDATE and DELETE on the outcomes table are refused."""
    paths = _paths(tmp_path)
    import_outcomes(
        paths,
        _csv(
            tmp_path,
            [
                {
                    "case_id": "C1",
                    "outcome": "no_concern",
                    "recorded_at": "2025-08-01",
                    "recorded_by": "x",
                }
            ],
        ),
    )
    db = sqlite3.connect(paths.outcomes_file)
    for sql in ("UPDATE outcomes SET outcome = 'lawful'", "DELETE FROM outcomes"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute(sql)
    db.close()
    assert len(OutcomeStore.of(paths).frame()) == 1


def test_training_weights_the_loop_labels_by_their_known_probability(tmp_path):
    """Open cases with imported outcomes join the labelled set, weighted ``1 / pi`` (clipped at
    the floor like the estimated propensities) and dated by when they were recorded; the split
    holds out a fixed tenth of them by case id (the same cases in every run) while history is
    still split by time; history keeps its estimated propensity."""
    from features import catalog

    paths = _paths(tmp_path)
    rng = np.random.default_rng(3)
    names = catalog.model_features()
    n_hist, n_open = 3000, 400
    frame = pd.DataFrame(
        rng.poisson(0.3, (n_hist + n_open, len(names))).astype(float), columns=names
    )
    frame["case_id"] = [f"H{i:05d}" for i in range(n_hist)] + [f"C{i:05d}" for i in range(n_open)]
    frame["is_open"] = np.arange(len(frame)) >= n_hist
    frame["scoring_date"] = np.where(
        frame["is_open"],
        pd.Timestamp("2025-06-30"),
        pd.Timestamp("2015-01-01") + pd.to_timedelta(rng.integers(0, 3000, len(frame)), "D"),
    )
    frame["lead_date"] = frame["scoring_date"] - pd.Timedelta(days=100)
    inv = ~frame["is_open"] & (rng.random(len(frame)) < 0.3)
    frame["investigated"] = pd.array(np.where(frame["is_open"], None, inv), dtype="boolean")
    frame["concern_confirmed"] = pd.array(
        np.where(inv, rng.random(len(frame)) < 0.1, None), dtype="boolean"
    )
    # The loop investigated 300 open cases: 200 greedy (pi = 1), 100 random (pi = 0.01 / 0.5).
    picked = frame.loc[frame["is_open"], "case_id"].iloc[:300].tolist()
    probs = [1.0] * 200 + [0.01] * 50 + [0.5] * 50
    _worklist(
        paths,
        [(c, "greedy" if p == 1 else "random", p) for c, p in zip(picked, probs, strict=True)],
    )
    outcomes = pd.DataFrame(
        {
            "case_id": picked,
            "outcome": np.where(np.arange(300) % 5 == 0, "confirm_concern", "no_concern"),
            "recorded_at": ["2025-07-15"] * 150 + ["2025-09-15"] * 150,
            "recorded_by": "inv",
        }
    )
    file = tmp_path / "o.parquet"
    outcomes.to_parquet(file)
    import_outcomes(paths, file)

    merged = with_outcome_labels(frame, paths)
    mask = labelled_mask(merged)
    assert mask.sum() == inv.sum() + 300
    assert merged.loc[merged["case_id"].isin(picked), "label_source"].eq("investigation").all()
    p, w = propensity_weights(merged, names, floor=0.05, seed=1)
    loop = merged["case_id"].isin(picked).to_numpy()
    pi = merged.loc[loop, "selection_probability"].to_numpy()
    assert np.allclose(p[loop], pi)
    ratio = w[loop] / w[loop][0]  # the first picked case is greedy: weight 1 before scaling
    assert np.allclose(ratio, 1 / np.clip(pi, 0.05, 1))
    assert np.nanmean(w[mask]) == pytest.approx(1.0)
    split = time_split(merged, valid_fraction=0.1)
    assert 0.04 < split.valid[loop].mean() < 0.2
    assert (split.train | split.valid)[mask].all() and not (split.train & split.valid).any()
    again = time_split(with_outcome_labels(frame.iloc[::-1].reset_index(drop=True), paths), 0.1)
    held = set(merged.loc[split.valid & loop, "case_id"])
    assert held == set(frame.iloc[::-1].reset_index(drop=True).loc[again.valid, "case_id"]) & set(
        picked
    )  # the same cases whatever the row order
    hist = mask & ~loop
    cutoff = merged.loc[hist & split.valid, "scoring_date"].min()
    assert merged.loc[hist & split.train, "scoring_date"].max() < cutoff  # history by time
    assert merged.loc[merged["case_id"].isin(picked), "label_date"].max() == pd.Timestamp(
        "2025-09-15"
    )
    # Without any outcome the table is labelled exactly as before.
    plain = with_outcome_labels(frame, _paths(tmp_path / "empty"))
    assert labelled_mask(plain).sum() == inv.sum()
    assert read_worklists(_paths(tmp_path / "empty")).empty

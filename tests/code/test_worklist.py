"""The worklist: the greedy top is taken for sure, the random share is drawn with the
probabilities it records (they sum to the share, are capped at 1 and follow floor + score), and
cases already worked are never picked again."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from serving.batch.worklist import WorklistConfig, poisson_probabilities, select


def _ranked(n: int = 5000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    p = np.sort(rng.beta(0.5, 50, n))[::-1]
    return pd.DataFrame(
        {"case_id": [f"C{i:05d}" for i in range(n)], "rank": np.arange(1, n + 1), "probability": p}
    )


def test_probabilities_sum_to_the_share_and_are_capped():
    """Probabilities proportional to size, summing to n, none above 1 (big sizes are taken for
    sure and the rest rescaled)."""
    size = np.array([100.0, 1, 1, 1, 2, 2, 3, 0.5])
    pi = poisson_probabilities(size, 4)
    assert pi.sum() == pytest.approx(4)
    assert pi.max() <= 1 and pi[0] == 1
    rest = pi[1:]
    assert np.allclose(rest / rest.sum(), size[1:] / size[1:].sum())
    assert poisson_probabilities(size, 0).sum() == 0
    assert (poisson_probabilities(size, 20) == 1).all()


def test_select_records_the_probability_of_every_pick():
    """90% of the capacity is the top of the ranking at probability 1; the random picks come
    from below it with their recorded probability, a floor keeping every case reachable."""
    ranked = _ranked()
    picks, facts = select(
        ranked, WorklistConfig(capacity=500, explore=0.1), np.random.default_rng(1)
    )
    greedy = picks[picks["selected_by"] == "greedy"]
    random = picks[picks["selected_by"] == "random"]
    assert list(greedy["rank"]) == list(range(1, 451))
    assert (greedy["selection_probability"] == 1).all()
    assert (random["rank"] > 450).all()
    assert facts["random_expected"] == pytest.approx(50)
    assert (random["selection_probability"] > 0).all() and (
        random["selection_probability"] < 1
    ).all()
    assert facts["min_probability"] > 0  # the floor
    assert picks["case_id"].is_unique


def test_the_draw_follows_the_recorded_probabilities():
    """Over 400 seeded draws each case below the top is picked at the rate its recorded
    probability says (binomial tolerance), so 1 / probability is the right weight."""
    ranked = _ranked(800, seed=2)
    cfg = WorklistConfig(capacity=100, explore=0.5)
    counts = pd.Series(0, index=ranked["case_id"])
    probs = {}
    for seed in range(400):
        picks, _ = select(ranked, cfg, np.random.default_rng(seed))
        r = picks[picks["selected_by"] == "random"]
        counts[r["case_id"]] += 1
        probs.update(zip(r["case_id"], r["selection_probability"], strict=True))
    ids = [c for c in ranked["case_id"].iloc[50:] if c in probs]
    pi = np.array([probs[c] for c in ids])
    rate = counts[ids].to_numpy() / 400
    se = np.sqrt(pi * (1 - pi) / 400)
    assert (np.abs(rate - pi) < 5 * se + 1e-9).mean() > 0.99
    assert np.corrcoef(rate, pi)[0, 1] > 0.9


def test_worklist_excludes_worked_cases(tmp_path):
    """`build_worklist` on a scoring run skips cases with an outcome and cases on an earlier
    worklist, and numbers its lists in sequence."""
    from serving.batch.worklist import build_worklist
    from triage.outcomes import import_outcomes, read_worklists
    from triage.paths import Paths

    paths = Paths.resolve(tmp_path / "data", tmp_path / "mlruns")
    run = paths.scores_run("run-1")
    run.directory.mkdir(parents=True)
    ranked = _ranked(1000).assign(run_id="run-1")
    ranked.to_parquet(run.scores_file)
    run.manifest.write_text("{}")
    paths.latest_pointer.write_text("run-1\n")
    first = build_worklist(paths, WorklistConfig(capacity=100, explore=0.2, seed=3))
    done = first.picks["case_id"].iloc[:10]
    pd.DataFrame(
        {
            "case_id": done,
            "outcome": "no_concern",
            "recorded_at": "2025-08-01",
            "recorded_by": "inv",
        }
    ).to_csv(tmp_path / "o.csv", index=False)
    import_outcomes(paths, tmp_path / "o.csv")
    extra = pd.DataFrame(
        {
            "case_id": ["C00999"],
            "outcome": "no_concern",
            "recorded_at": "2025-08-01",
            "recorded_by": "reviewer",
        }
    )
    extra.to_csv(tmp_path / "e.csv", index=False)
    import_outcomes(paths, tmp_path / "e.csv")
    second = build_worklist(paths, WorklistConfig(capacity=100, explore=0.2, seed=3))
    assert not set(second.picks["case_id"]) & set(first.picks["case_id"])
    assert "C00999" not in set(second.picks["case_id"])
    assert second.manifest["sequence"] == 2
    assert second.manifest["excluded_already_worked"] == len(first.picks) + 1
    assert second.picks["rank"].min() > 80  # the first list took the top 80
    assert len(read_worklists(paths)) == len(first.picks) + len(second.picks)
    with pytest.raises(ValueError, match=r"explore must be in \[0, 1\]"):
        WorklistConfig(capacity=10, explore=1.5)


def test_the_control_slice_is_fixed_by_the_salted_id_hash():
    """The held-out slice has about its share of the cases, is the same whatever the order or
    the other cases, and another salt gives another slice."""
    from triage.sampling import held_out

    ids = pd.Series([f"C{i:06d}" for i in range(20_000)])
    mask = held_out(ids, 0.1, "s")
    assert abs(mask.mean() - 0.1) < 0.01
    shuffled = ids.sample(frac=1, random_state=3)
    assert (held_out(shuffled, 0.1, "s") == mask[shuffled.index]).all()
    assert (held_out(ids.iloc[:500], 0.1, "s") == mask[:500]).all()
    other = held_out(ids, 0.1, "t")
    assert abs((mask & other).mean() - 0.01) < 0.005
    assert not held_out(ids, 0.0, "s").any()

"""``triage worklist``: the period's investigations, chosen from the latest scoring run.

A worklist spends a capacity of investigations in two parts:

- the **greedy** part, ``(1 - explore) x capacity`` cases: the top of the ranking among the
  cases that are still open to investigation (no recorded outcome, on no earlier worklist).
  These cases are chosen for sure: selection probability 1;
- the **random** part: Poisson sampling of the rest of the backlog, each case drawn on its own
  with probability ``pi_i = min(1, c x (floor + p_i))``, ``p_i`` the case's calibrated
  probability and ``c`` set so that the expected number drawn is ``explore x capacity``. The
  floor keeps every case's probability above zero (a model's blind spots stay reachable); by
  default it is the mean probability of the cases sampled from, so half the random share is
  spread evenly and half follows the score.

Every pick is stored with its probability. Training weights the outcomes by ``1 / pi`` (the greedy
top stands for itself, a random pick for ``1 / pi`` cases like it), and the random part alone
gives an unbiased estimate of the concern left in the backlog (``training/estimate.py``):
the optimise-and-estimate design of the IRS audit-selection work (Henderson et al., AAAI 2023).

Output: ``<data-dir>/worklists/<id>/worklist.parquet`` (columns
``triage.outcomes.WORKLIST_COLUMNS``), ``frame.parquet`` (the sampling frame: every case below the
greedy top with its inclusion probability and whether it was drawn, so the design can be
checked and later periods' estimates can pool this draw) and ``manifest.json`` (design:
capacity, explore, floor, seed, the size of the backlog sampled from, the sum of the
probabilities).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from serving.batch.runner import latest_run_dir
from triage.atomic import atomic_dir
from triage.contracts import check_worklist
from triage.outcomes import WORKLIST_COLUMNS, load_labels, read_worklists
from triage.paths import Paths, ScoresRun, WorklistFiles
from triage.sampling import held_out

__all__ = [
    "Draw",
    "Worklist",
    "WorklistConfig",
    "build_worklist",
    "draw",
    "held_out",
    "poisson_probabilities",
    "select",
]


@dataclass(frozen=True)
class WorklistConfig:
    """How a period's capacity is spent."""

    capacity: int = 2500
    explore: float = 0.1  # share of the capacity drawn at random with known probabilities
    floor: float | None = None  # added to every probability; None: their mean
    seed: int | None = None  # None: a fresh random seed (recorded in the manifest)
    # A control slice never investigated, fixed by a salted hash of the case id (the same cases
    # every period): an evaluation of the ranking that no investigation has touched.
    hold_out: float = 0.0
    hold_out_salt: str = ""

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {self.capacity}")
        if not 0 <= self.explore <= 1:
            raise ValueError(f"explore must be in [0, 1], got {self.explore}")
        if self.floor is not None and self.floor < 0:
            raise ValueError(f"floor must be non-negative, got {self.floor}")
        if not 0 <= self.hold_out < 1:
            raise ValueError(f"hold_out must be in [0, 1), got {self.hold_out}")


def poisson_probabilities(size: np.ndarray, n: float) -> np.ndarray:
    """Inclusion probabilities proportional to ``size``, capped at 1, summing to ``n``.

    Cases whose share would exceed 1 are taken for sure and the rest rescaled, until no
    probability exceeds 1 (the usual fix for probability-proportional-to-size sampling).
    """
    size = np.asarray(size, dtype=np.float64)
    if (size < 0).any():
        raise ValueError("sizes must be non-negative")
    pi = np.zeros(len(size))
    if n <= 0 or len(size) == 0:
        return pi
    if n >= len(size):
        return np.ones(len(size))
    sure = np.zeros(len(size), dtype=bool)
    for _ in range(len(size)):
        rest = ~sure
        scale = (n - sure.sum()) / size[rest].sum()
        pi[rest] = size[rest] * scale
        over = rest & (pi >= 1.0)
        if not over.any():
            break
        sure |= over
    pi[sure] = 1.0
    return pi


@dataclass(frozen=True)
class Draw:
    """One worklist's draw: the picks, the design facts and the sampling frame."""

    picks: pd.DataFrame  # case_id, selected_by, selection_probability, rank, probability
    facts: dict[str, float]
    frame: pd.DataFrame  # case_id, selection_probability, drawn: every case below the top


def draw(ranked: pd.DataFrame, config: WorklistConfig, rng: np.random.Generator) -> Draw:
    """Choose the greedy top and the Poisson-sampled random share from ``ranked``.

    Args:
        ranked: the eligible cases with ``case_id``, ``rank`` (1 = first) and ``probability``.
        config: capacity, explore share, floor.
        rng: the sampling draw.

    Returns:
        The picks, greedy first then by rank, the design facts, and the frame sampled from
        (each case's inclusion probability, drawn or not).
    """
    ranked = ranked.sort_values("rank", kind="stable").reset_index(drop=True)
    n_greedy = min(int(round(config.capacity * (1 - config.explore))), len(ranked))
    greedy = ranked.iloc[:n_greedy].assign(selected_by="greedy", selection_probability=1.0)
    rest = ranked.iloc[n_greedy:]
    n_random = min(config.capacity - n_greedy, len(rest))
    p = rest["probability"].to_numpy(np.float64)
    floor = float(np.mean(p)) if config.floor is None and len(p) else float(config.floor or 0.0)
    if floor == 0 and not (p > 0).any():
        floor = 1.0  # nothing to tilt by: uniform sampling
    pi = poisson_probabilities(p + floor, n_random)
    drawn = rng.random(len(rest)) < pi
    random = rest.loc[drawn].assign(selected_by="random", selection_probability=pi[drawn])
    picks = pd.concat([greedy, random], ignore_index=True)
    facts = {
        "eligible_cases": int(len(ranked)),
        "greedy_cases": int(n_greedy),
        "random_expected": float(pi.sum()),
        "random_drawn": int(drawn.sum()),
        "random_frame_cases": int(len(rest)),
        "floor": floor,
        "min_probability": float(pi.min()) if len(pi) else None,
        "max_probability": float(pi.max()) if len(pi) else None,
    }
    frame = pd.DataFrame(
        {
            "case_id": rest["case_id"].to_numpy(),
            "selection_probability": pi,
            "drawn": drawn,
        }
    )
    return Draw(picks, facts, frame)


def select(
    ranked: pd.DataFrame, config: WorklistConfig, rng: np.random.Generator
) -> tuple[pd.DataFrame, dict[str, float]]:
    """The picks and design facts of :func:`draw` (without the frame).

    Returns:
        The picks (``case_id``, ``selected_by``, ``selection_probability``, ``rank``,
        ``probability``), greedy first then by rank, and the design facts.
    """
    d = draw(ranked, config, rng)
    return d.picks, d.facts


@dataclass(frozen=True)
class Worklist:
    """A written worklist."""

    worklist_id: str
    directory: Path
    picks: pd.DataFrame
    manifest: dict


def build_worklist(paths: Paths, config: WorklistConfig) -> Worklist:
    """Choose the period's investigations from the latest complete scoring run and write them.

    Cases with a recorded outcome or disposition, and cases already on an earlier worklist,
    are not eligible: they have been (or are being) worked.

    The folder is checked against its contract (``triage.contracts.check_worklist``: picks,
    sampling frame and manifest agree) before it moves into place.

    Raises:
        FileNotFoundError: there is no complete scoring run.
        ContractError: the list would break its contract (nothing is written).
    """
    run = latest_run_dir(paths)
    if run is None:
        raise FileNotFoundError(f"no complete scoring run under {paths.scores_dir}")
    scores = pd.read_parquet(
        ScoresRun(run).scores_file, columns=["case_id", "rank", "probability", "run_id"]
    )
    earlier = read_worklists(paths)
    done = set(load_labels(paths)["case_id"]) | set(earlier["case_id"])
    control = held_out(scores["case_id"], config.hold_out, config.hold_out_salt)
    eligible = scores[~scores["case_id"].isin(done) & ~control]
    seed = config.seed if config.seed is not None else secrets.randbits(63)
    chosen = draw(eligible, config, np.random.default_rng(seed))
    picks, facts = chosen.picks, chosen.facts
    sequence = int(earlier["sequence"].max()) + 1 if len(earlier) else 1
    run_id = str(scores["run_id"].iloc[0]) if len(scores) else run.name
    worklist_id = f"{sequence:04d}-{run_id}"
    picks = picks.assign(worklist_id=worklist_id, run_id=run_id)[list(WORKLIST_COLUMNS)]
    manifest = {
        "worklist_id": worklist_id,
        "sequence": sequence,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_id": run_id,
        "config": {**asdict(config), "seed": seed},
        "excluded_already_worked": int((~control & scores["case_id"].isin(done)).sum()),
        "excluded_held_out": int(control.sum()),
        **facts,
    }
    target = paths.worklist(worklist_id)
    with atomic_dir(target.directory) as tmp:
        staged = WorklistFiles(tmp)
        picks.to_parquet(staged.picks, index=False)
        chosen.frame.to_parquet(staged.frame, index=False)
        staged.manifest.write_text(json.dumps(manifest, indent=2))
        # Before the swap: a list that breaks its contract never becomes a worklist.
        check_worklist(tmp, worklist_id=worklist_id, label=target.directory)
    return Worklist(worklist_id, target.directory, picks, manifest)

"""The operating loop's contracts (triage/contracts/loop.py): the writers' worklists and
outcomes pass, and a broken file is refused by its writer and its readers, naming the file
and the column."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serving.batch import worklist as worklist_module
from serving.batch.worklist import WorklistConfig, build_worklist
from training.estimate import estimate_backlog
from triage.contracts import ContractError, check_outcomes, check_worklist
from triage.outcomes import OutcomeStore, import_outcomes, load_labels, read_worklists
from triage.paths import Paths, WorklistFiles


def _scored(tmp_path: Path, n: int = 400) -> Paths:
    """A data directory with one complete scoring run (the columns a worklist reads)."""
    paths = Paths.resolve(tmp_path / "data", tmp_path / "mlruns")
    run = paths.scores_run("run-1")
    run.directory.mkdir(parents=True)
    p = np.sort(np.random.default_rng(0).beta(0.5, 50, n))[::-1]
    pd.DataFrame(
        {
            "case_id": [f"C{i:05d}" for i in range(n)],
            "rank": np.arange(1, n + 1),
            "probability": p,
            "run_id": "run-1",
        }
    ).to_parquet(run.scores_file)
    run.manifest.write_text("{}")
    paths.latest_pointer.write_text("run-1\n")
    return paths


@pytest.fixture
def written(tmp_path: Path) -> tuple[Paths, WorklistFiles]:
    """A worklist as `triage worklist` writes it: 40 greedy picks and ~10 random ones."""
    paths = _scored(tmp_path)
    wl = build_worklist(paths, WorklistConfig(capacity=50, explore=0.2, seed=5))
    return paths, paths.worklist(wl.worklist_id)


def test_the_writers_worklist_passes(written) -> None:
    """build_worklist's folder passes, frame included, and the readers load it."""
    paths, files = written
    picks = pd.read_parquet(files.picks)
    assert check_worklist(files.directory) == len(picks)
    assert set(picks["selected_by"]) == {"greedy", "random"}
    assert len(read_worklists(paths)) == len(picks)


def _edit_parquet(file: Path, change: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    change(pd.read_parquet(file)).to_parquet(file, index=False)


def _edit_manifest(file: Path, change: Callable[[dict], None]) -> None:
    manifest = json.loads(file.read_text())
    change(manifest)
    file.write_text(json.dumps(manifest))


def _set(column: str, value: object, where: str | None = None) -> Callable:
    """Set ``column`` to ``value`` in the first row (of ``selected_by == where``)."""

    def change(f: pd.DataFrame) -> pd.DataFrame:
        f = f.copy()
        i = f.index[0] if where is None else f.index[f["selected_by"] == where][0]
        f[column] = f[column].astype(object) if isinstance(value, str) else f[column]
        f.loc[i, column] = value
        return f

    return change


def _frame_with_a_greedy_pick(files: WorklistFiles) -> None:
    greedy = pd.read_parquet(files.picks).iloc[0]["case_id"]
    row = pd.DataFrame({"case_id": [greedy], "selection_probability": [0.1], "drawn": [False]})
    _edit_parquet(files.frame, lambda f: pd.concat([f, row], ignore_index=True))


def _random_prob(factor: float) -> Callable:
    def change(f: pd.DataFrame) -> pd.DataFrame:
        f = f.copy()
        i = f.index[f["drawn"]][0]
        f.loc[i, "selection_probability"] *= factor
        return f

    return change


BROKEN = [
    ("worklist.parquet", "selection_probability", "is 1 for a greedy pick",
     lambda w: _edit_parquet(w.picks, _set("selection_probability", 0.5, "greedy"))),
    ("worklist.parquet", "selection_probability", "lies in (0, 1]",
     lambda w: _edit_parquet(w.picks, _set("selection_probability", 0.0, "random"))),
    ("worklist.parquet", "selected_by", "one of greedy, random",
     lambda w: _edit_parquet(w.picks, _set("selected_by", "hunch"))),
    ("worklist.parquet", "case_id", "is unique",
     lambda w: _edit_parquet(w.picks, lambda f: pd.concat([f, f.iloc[[-1]]], ignore_index=True))),
    ("worklist.parquet", "rank", "greedy pick above every random pick",
     lambda w: _edit_parquet(w.picks, _set("rank", 1, "random"))),
    ("worklist.parquet", "worklist_id", "is the manifest's worklist_id",
     lambda w: _edit_parquet(w.picks, _set("worklist_id", "0002-other"))),
    ("worklist.parquet", "selection_probability", "the column exists",
     lambda w: _edit_parquet(w.picks, lambda f: f.drop(columns="selection_probability"))),
    ("frame.parquet", "case_id", "holds no greedy pick", _frame_with_a_greedy_pick),
    ("frame.parquet", "drawn", "exactly the worklist's random picks",
     lambda w: _edit_parquet(w.frame, _random_prob(0.5))),
    ("frame.parquet", "drawn", "exactly the worklist's random picks",
     lambda w: _edit_parquet(w.frame, lambda f: f.drop(index=f.index[f["drawn"]][0]))),
    ("frame.parquet", "*", "the file exists", lambda w: w.frame.unlink()),
    ("manifest.json", "config", "the key exists",
     lambda w: _edit_manifest(w.manifest, lambda m: m.pop("config"))),
    ("manifest.json", "sequence", "positive integer",
     lambda w: _edit_manifest(w.manifest, lambda m: m.update(sequence=0))),
    ("manifest.json", "random_frame_cases", "agrees with",
     lambda w: _edit_manifest(w.manifest, lambda m: m.update(random_frame_cases=3))),
]  # fmt: skip


@pytest.mark.parametrize(("file", "column", "rule", "brk"), BROKEN)
def test_a_broken_worklist_is_named_by_file_and_column(written, file, column, rule, brk) -> None:
    """Each broken rule of a worklist folder raises ContractError naming its file and column."""
    _, files = written
    brk(files)
    with pytest.raises(ContractError) as err:
        check_worklist(files.directory)
    assert err.value.file == str(files.directory / file)
    assert err.value.column == column
    assert rule in str(err.value)


def test_the_readers_refuse_a_broken_worklist(written) -> None:
    """read_worklists (the picks) and the backlog estimate (the frame) check on load."""
    paths, files = written
    saved = paths.data_dir.parent / "saved"  # outside worklists/: not read as a list
    shutil.copytree(files.directory, saved)
    _edit_parquet(files.frame, _random_prob(2.0))
    assert len(read_worklists(paths))  # the picks alone are fine
    with pytest.raises(ContractError, match=r"frame\.parquet: column 'drawn'"):
        estimate_backlog(paths, files.worklist_id)
    _edit_parquet(files.picks, _set("selection_probability", 0.5, "greedy"))
    with pytest.raises(ContractError, match=r"worklist\.parquet: column 'selection_probability'"):
        read_worklists(paths)
    shutil.rmtree(files.directory)
    saved.rename(files.directory)
    estimate_backlog(paths, files.worklist_id)  # the intact list is read again


def test_the_writer_refuses_a_broken_draw_before_the_swap(tmp_path: Path, monkeypatch) -> None:
    """A draw whose frame disagrees with its picks never becomes a worklist folder."""
    paths = _scored(tmp_path)
    real = worklist_module.draw

    def lossy(*args, **kwargs):
        d = real(*args, **kwargs)
        return worklist_module.Draw(d.picks, d.facts, d.frame[~d.frame["drawn"]])

    monkeypatch.setattr(worklist_module, "draw", lossy)
    with pytest.raises(ContractError, match=r"0001-run-1/frame\.parquet: column 'drawn'"):
        build_worklist(paths, WorklistConfig(capacity=50, explore=0.2, seed=5))
    assert not paths.worklists_dir.exists() or not any(paths.worklists_dir.iterdir())


# --- outcomes ---------------------------------------------------------------------------
def _outcomes(n: int = 3) -> pd.DataFrame:
    """Outcome rows as OutcomeStore.append receives them."""
    return pd.DataFrame(
        {
            "case_id": [f"C{i}" for i in range(n)],
            "outcome": ["confirm_concern", "no_concern", "wrong_link"][:n],
            "recorded_at": ["2025-08-01T00:00:00Z"] * n,
            "recorded_by": ["inv"] * n,
            "source": ["investigation"] * n,
            "selection_probability": [1.0, np.nan, 0.25][:n],
            "worklist_id": ["0001-r", None, "0001-r"][:n],
        }
    )


@pytest.mark.parametrize(
    ("column", "value", "rule"),
    [
        ("case_id", " ", "non-empty text"),
        ("outcome", "guilty", "is one of confirm_concern"),
        ("recorded_at", "last tuesday", "ISO-8601"),
        ("recorded_by", "", "non-empty text"),
        ("source", "rumour", "investigation, disposition"),
        ("selection_probability", 1.5, "lies in (0, 1]"),
        ("worklist_id", " ", "non-empty text"),
    ],
)
def test_broken_outcome_rows_are_named(column, value, rule) -> None:
    """Outcome rows that break a rule are named by column; good rows (nulls too) pass."""
    assert check_outcomes(_outcomes()) == 3
    rows = _outcomes()
    rows[column] = rows[column].astype(object)
    rows.at[1, column] = value
    with pytest.raises(ContractError) as err:
        check_outcomes(rows, label="out.csv")
    assert err.value.file == "out.csv" and err.value.column == column
    assert rule in str(err.value)


def test_the_store_writes_and_reads_through_the_contract(tmp_path: Path) -> None:
    """An import's rows pass into the store and back; the store refuses a broken row whole
    (naming the import file), and a row that broke the contract in the file itself is refused
    when the labels are read."""
    paths = Paths.resolve(tmp_path / "data", tmp_path / "mlruns")
    file = tmp_path / "o.csv"
    _outcomes()[["case_id", "outcome", "recorded_at", "recorded_by"]].to_csv(file, index=False)
    assert import_outcomes(paths, file) == 3
    store = OutcomeStore.of(paths)
    assert check_outcomes(store.frame()) == 3
    bad = _outcomes().assign(recorded_at=["2025-08-01", "soon", "2025-08-02"])
    with pytest.raises(ContractError, match=r"bad\.csv: column 'recorded_at'"):
        store.append(bad, "bad.csv")
    assert len(store.frame()) == 3  # nothing of it was written
    db = sqlite3.connect(paths.outcomes_file)
    db.execute(
        "INSERT INTO outcomes (imported_at, case_id, outcome, recorded_at, recorded_by, source)"
        " VALUES ('2025-08-03', 'C9', 'no_concern', '2025-08-03', '  ', 'investigation')"
    )
    db.commit()
    db.close()
    with pytest.raises(ContractError, match=r"outcomes\.sqlite: column 'recorded_by'"):
        load_labels(paths)


def test_the_commands_name_a_broken_file_in_one_line(written) -> None:
    """`triage estimate` and `triage outcomes summary` answer a broken worklist or store with
    a one-line error (exit 2) naming the file and column, not a traceback."""
    from typer.testing import CliRunner

    from triage.cli import app

    paths, files = written
    _edit_parquet(files.frame, _random_prob(2.0))
    runner = CliRunner()
    r = runner.invoke(app, ["estimate", "--data-dir", str(paths.data_dir)])
    assert r.exit_code == 2
    assert "frame.parquet: column 'drawn'" in " ".join(r.output.split())
    OutcomeStore.of(paths).append(_outcomes(1))
    db = sqlite3.connect(paths.outcomes_file)
    db.execute(
        "INSERT INTO outcomes (imported_at, case_id, outcome, recorded_at, recorded_by, source)"
        " VALUES ('2025-08-03', 'C9', 'no_concern', 'soon', 'inv', 'investigation')"
    )
    db.commit()
    db.close()
    r = runner.invoke(app, ["outcomes", "summary", "--data-dir", str(paths.data_dir)])
    assert r.exit_code == 2
    assert "outcomes.sqlite: column 'recorded_at'" in " ".join(r.output.split())

"""The reviewer notebooks run top to bottom on a tiny scored world (nbclient), and are committed
thin and without outputs."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from worlds import scored_tiny_world

from triage.paths import PROJECT_ROOT, Paths

NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
NAMES = [
    "01-backlog-overview",
    "02-global-explanations",
    "03-explain-a-case",
    "04-evaluation-and-fairness",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Paths:
    return scored_tiny_world(tmp_path_factory.mktemp("notebooks"))


def test_the_four_notebooks_exist() -> None:
    """Notebooks 01-04 are the ones DESIGN.md and issue 8 name."""
    assert [p.stem for p in NOTEBOOKS] == NAMES


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_without_outputs(path: Path) -> None:
    """Every code cell is committed with no outputs and no execution count."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebooks_are_thin(path: Path) -> None:
    """No notebook defines functions or classes: the logic lives in serving.review.notebooks."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join(
            line for line in cell.source.splitlines() if not line.lstrip().startswith("%")
        )
        for node in ast.walk(ast.parse(source)):
            assert not isinstance(node, ast.FunctionDef | ast.ClassDef | ast.Lambda), path.name


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(
    path: Path, world: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The notebook executes without error on the tiny world and draws its figures."""
    monkeypatch.setenv("TRIAGE_DATA_DIR", str(world.data_dir))  # the kernel inherits it
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(PROJECT_ROOT)}}
    )
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    if path.stem.startswith("04"):  # the tiny world is scored here, never evaluated
        text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
        assert "No evaluation report yet" in text
    else:
        assert images, f"{path.name} drew no figure"

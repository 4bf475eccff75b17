"""The import rules of docs/layout.md, checked on every module's imports (top level and inside
functions): the shared core imports no stage, training and serving never import each other,
features never reads the world generator, the SHAP engine imports nothing else of the project."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("triage", "features", "training", "serving")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def _modules(prefix: str) -> list[Path]:
    return sorted((ROOT / prefix).rglob("*.py"))


def _breaks(prefix: str, forbidden, exempt: tuple[str, ...] = ()) -> list[str]:
    out = []
    for path in _modules(prefix):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(exempt):
            continue
        out += [f"{rel} imports {m}" for m in sorted(_imports(path)) if forbidden(m)]
    return out


def _under(*roots: str):
    return lambda m: any(m == r or m.startswith(r + ".") for r in roots)


def test_the_scan_sees_imports() -> None:
    """The checks below would pass on a scan that finds nothing: it finds top-level and
    function-level imports, and reports an edge that exists (serving reads features' catalog)."""
    assert "triage.paths" in _imports(ROOT / "serving" / "batch" / "runner.py")
    assert "serving.batch.runner" in _imports(
        ROOT / "serving" / "batch" / "cli.py"
    )  # in a function
    assert _breaks("serving", _under("features"))


@pytest.mark.parametrize(
    ("prefix", "forbidden", "exempt"),
    [
        ("triage", _under("features", "training", "serving"), ()),
        ("training", _under("serving"), ()),
        ("serving", _under("training"), ()),
        ("features", _under("training", "serving", "features.world"), ("features/world/",)),
        ("serving/explain", lambda m: not _under("serving.explain")(m), ()),
    ],
    ids=["core-imports-no-stage", "training-not-serving", "serving-not-training",
         "features-not-generator", "explain-self-contained"],
)  # fmt: skip
def test_import_rules(prefix, forbidden, exempt) -> None:
    """No module breaks its package's import rule (docs/layout.md)."""
    assert _breaks(prefix, forbidden, exempt) == []

"""Declared dependencies match the imports: pyproject.toml, the two lock files and the code agree.

Imports are read with ``ast`` from every .py file of the packages and of tests/ (imports inside
functions included); a module maps to its distribution through the installed metadata
(``importlib.metadata.packages_distributions``), so ``sklearn`` is ``scikit-learn``.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("triage", "features", "training", "serving")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# Runtime dependencies used without an import statement of their own.
NEEDED_WITHOUT_IMPORT = {
    "python-multipart": "Starlette parses the reviewer pages' form posts with it",
    "ipykernel": "the notebooks' python3 kernel (Jupyter and nbclient start it)",
    "jinja2": "Starlette's Jinja2Templates renders the reviewer pages with it",
}
# Package modules that are development tools, run from a checkout and left out of the Bento
# (bentofile.yaml): their imports may be dev dependencies (Playwright for the screenshots).
DEV_TOOL_PATHS = ("serving/bench/", "serving/review/screenshots.py", "features/bench_link.py")


def _norm(name: str) -> str:
    """A distribution name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(requirements: list[str]) -> set[str]:
    """Normalised distribution names of PEP 508 requirement strings."""
    return {_norm(re.match(r"[A-Za-z0-9._-]+", r).group(0)) for r in requirements}


RUNTIME = _requirement_names(PYPROJECT["project"]["dependencies"])
DEV = _requirement_names(PYPROJECT["project"]["optional-dependencies"]["dev"])
# The Spark engine's extra (`--engine spark`): runtime code may use it, imported inside the
# functions that need it, so the packages import and run on DuckDB without it.
OPTIONAL = _requirement_names(PYPROJECT["project"]["optional-dependencies"]["spark"])


def _imports(files: list[Path]) -> dict[str, set[str]]:
    """Top-level absolute imports of ``files``: module name -> files importing it."""
    found: dict[str, set[str]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


@cache
def _scan() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Third-party imports of the packages' runtime code, and of the tests and dev tools."""
    tests = sorted((ROOT / "tests").rglob("*.py"))
    local = set(PACKAGES) | {p.stem for p in tests} | {"__future__"}

    def third_party(found: dict[str, set[str]]) -> dict[str, set[str]]:
        return {
            m: f for m, f in found.items() if m not in local and m not in sys.stdlib_module_names
        }

    package_files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    tools = [p for p in package_files if str(p.relative_to(ROOT)).startswith(DEV_TOOL_PATHS)]
    runtime = [p for p in package_files if p not in tools]
    return third_party(_imports(runtime)), third_party(_imports(tests + tools))


@cache
def _module_distributions() -> dict[str, list[str]]:
    """Installed module -> distributions (reads every package's metadata: once per session)."""
    return packages_distributions()


def _distributions(module: str) -> set[str]:
    """Normalised names of the installed distributions providing ``module``."""
    return {_norm(d) for d in _module_distributions().get(module, [])}


def _undeclared(imports: dict[str, set[str]], declared: set[str]) -> list[str]:
    return [
        f"{module} (dist {sorted(_distributions(module)) or 'not installed'}) in {sorted(files)[0]}"
        for module, files in sorted(imports.items())
        if not _distributions(module) & declared
    ]


def test_the_scan_sees_the_known_imports() -> None:
    """The scan finds imports of both kinds (module level and in functions): it can fail."""
    package, tests = _scan()
    assert {"numpy", "lightgbm", "duckdb", "numba", "bentoml", "IPython"} <= set(package)
    assert "playwright" not in package  # only the screenshots tool uses it
    assert {"pytest", "hypothesis", "sqlglot", "playwright"} <= set(tests)
    assert not {"json", "triage", "features", "worlds", "inprocess"} & (set(package) | set(tests))


def test_package_code_imports_only_runtime_dependencies() -> None:
    """Every third-party import of the packages is a declared runtime dependency (or of the
    optional Spark extra)."""
    assert _undeclared(_scan()[0], RUNTIME | OPTIONAL) == []


def test_optional_dependencies_are_imported_only_where_used() -> None:
    """The Spark extra is never imported at a module's top level (outside ``TYPE_CHECKING``):
    without it, every package still imports, and the DuckDB engine runs."""
    optional_modules = {m for m in _scan()[0] if _distributions(m) & OPTIONAL}
    assert optional_modules, "the scan finds the Spark engine's imports"
    top_level = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.parse(path.read_text(), str(path)).body:
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                top_level += [
                    f"{path.relative_to(ROOT)}: {n}"
                    for n in names
                    if n.split(".")[0] in optional_modules
                ]
    assert top_level == []


def test_tests_and_tools_import_only_declared_dependencies() -> None:
    """Every third-party import of the tests and dev tools is a declared runtime or dev dependency."""
    assert _undeclared(_scan()[1], RUNTIME | DEV | OPTIONAL) == []


def test_every_runtime_dependency_is_imported() -> None:
    """No runtime dependency is declared that the packages never import (bar the allow-list)."""
    imported = {d for module in _scan()[0] for d in _distributions(module)}
    unused = RUNTIME - imported - set(NEEDED_WITHOUT_IMPORT)
    assert sorted(unused) == []
    assert set(NEEDED_WITHOUT_IMPORT) <= RUNTIME  # the allow-list names declared packages only


def _pins(lock: str) -> dict[str, str]:
    lines = (ROOT / lock).read_text().splitlines()
    return dict(
        (_norm(m.group(1)), m.group(2))
        for m in (re.match(r"([A-Za-z0-9._-]+)==(\S+)", line) for line in lines)
        if m
    )


@pytest.mark.parametrize(
    ("lock", "declared"),
    [("requirements.lock", RUNTIME | DEV), ("requirements-runtime.lock", RUNTIME)],
)
def test_locks_pin_every_declared_dependency(lock: str, declared: set[str]) -> None:
    """Each lock file pins every dependency pyproject.toml declares for it."""
    assert sorted(declared - set(_pins(lock))) == []


def test_runtime_lock_is_the_dev_lock_without_the_dev_tools() -> None:
    """The Bento's lock has the test environment's pins, and none of the dev-only tools."""
    dev, runtime = _pins("requirements.lock"), _pins("requirements-runtime.lock")
    assert {name: (dev.get(name), v) for name, v in runtime.items() if dev.get(name) != v} == {}
    assert not {"pytest", "hypothesis", "ruff", "mypy", "playwright", "schemathesis"} & set(runtime)

"""`triage score --engine`: a bad engine, a Spark that cannot start and a misplaced option each
stop in one line with exit 2, before any data is read."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from triage.cli import app


def _errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--engine", "flink"], "unknown engine 'flink'"),
        (["--partitions", "4"], "with --engine spark only"),
        (["--engine", "spark", "--partitions", "0"], "positive integer"),
    ],
)
def test_bad_engine_options_fail_in_one_line(tmp_path, args, says):
    """Each wrong combination names what is wrong (exit 2, no traceback)."""
    r = CliRunner().invoke(app, ["score", "--data-dir", str(tmp_path), *args])
    assert r.exit_code == 2, r.output
    errors = _errors(r)
    assert len(errors) == 1 and says in errors[0], r.stderr


def test_engine_spark_without_java_fails_in_one_line(tmp_path, monkeypatch):
    """With no Java runtime to be found, --engine spark says so (exit 2) and reads nothing."""
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no java on it
    r = CliRunner().invoke(app, ["score", "--engine", "spark", "--data-dir", str(tmp_path)])
    assert r.exit_code == 2, r.output
    errors = _errors(r)
    assert len(errors) == 1 and "--engine spark cannot start" in errors[0], r.stderr
    assert "Java" in errors[0]

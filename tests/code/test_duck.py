"""Bounded DuckDB connections for the reports: a memory limit, a spill folder that goes."""

from __future__ import annotations

from triage.duck import bounded_duckdb


def test_bounded_duckdb_sets_its_limit_and_removes_its_spill_folder(tmp_path):
    with bounded_duckdb(tmp_path / "data", "300MB") as con:
        limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
        spill = con.execute("SELECT current_setting('temp_directory')").fetchone()[0]
        # A sort over more rows than the limit holds pages to the spill folder, not fails.
        rows = con.execute(
            "SELECT count(*) FROM (SELECT x, md5(x::VARCHAR) AS h FROM range(4000000) t(x) "
            "ORDER BY h)"
        ).fetchone()[0]
    assert limit.endswith("MiB") and 250 < float(limit.split()[0]) <= 300
    assert spill.startswith(str(tmp_path / "data" / ".spill-"))
    assert rows == 4_000_000
    assert not list((tmp_path / "data").iterdir()), "the spill folder was left behind"

"""The append-only audit log (serving/api/audit.py): writes, queries, failure and concurrency."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from serving.api.audit import AuditBusy, AuditError, AuditLog, parse_since


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    a = AuditLog.in_dir(tmp_path / "service")
    yield a
    a.close()


def _entry(log: AuditLog, **kw) -> int:
    base = {"request_id": "r", "endpoint": "/score_case", "status": 200}
    return log.record(**{**base, **kw})


def test_record_and_read_back(log: AuditLog) -> None:
    """An entry keeps when, who, endpoint, outcome, request id and the case ids in order."""
    before = datetime.now(UTC)
    _entry(log, request_id="req-1", case_ids=["C2", "C1"], token_id="t1", owner="alice")
    after = datetime.now(UTC)
    (e,) = log.query()
    assert (e.request_id, e.endpoint, e.status, e.token_id, e.owner) == (
        "req-1",
        "/score_case",
        200,
        "t1",
        "alice",
    )
    assert e.case_ids == ("C2", "C1")
    at = datetime.fromisoformat(e.at)
    assert at.tzinfo is not None and before <= at <= after  # stamped when written
    assert e.as_dict()["case_ids"] == ["C2", "C1"]


def test_filters(log: AuditLog) -> None:
    """Case, owner, endpoint, since and limit filters combine; newest entries come first."""
    old = datetime(2020, 1, 1, tzinfo=UTC)
    _entry(log, case_ids=["C1"], owner="alice", at=old)
    _entry(log, case_ids=["C1", "C2"], owner="bob", endpoint="/queue")
    _entry(log, case_ids=["C3"], owner="alice")
    _entry(log, status=401)  # no token, no owner, no cases
    assert [e.owner for e in log.query(case_id="C1")] == ["bob", "alice"]
    assert [e.case_ids for e in log.query(owner="alice")] == [("C3",), ("C1",)]
    assert [e.endpoint for e in log.query(endpoint="/queue")] == ["/queue"]
    assert len(log.query(since="2021-01-01")) == 3
    assert len(log.query(since="2019-12-31T18:00:00-05:00")) == 4  # 23:00 UTC the day before
    assert len(log.query(since="2019-12-31T20:00:00-05:00")) == 3  # 01:00 UTC, after it
    assert len(log.query(limit=2)) == 2
    assert log.query(case_id="C1", owner="alice")[0].at.startswith("2020-01-01")


def test_append_only(log: AuditLog) -> None:
    """UPDATE and DELETE are refused by the database itself, on both tables."""
    _entry(log, case_ids=["C1"])
    con = sqlite3.connect(log.path)
    for sql in [
        "UPDATE audit SET owner = 'mallory'",
        "DELETE FROM audit",
        "UPDATE audit_case SET case_id = 'X'",
        "DELETE FROM audit_case",
    ]:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            con.execute(sql)


def test_write_failure_raises(tmp_path: Path) -> None:
    """A write that cannot be committed raises AuditError so the request fails closed."""
    log = AuditLog(tmp_path / "audit.sqlite", busy_timeout_ms=50)
    blocker = sqlite3.connect(tmp_path / "audit.sqlite", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another worker holding the write lock too long
    with pytest.raises(AuditError, match="audit log write failed"):
        _entry(log)
    blocker.execute("ROLLBACK")
    _entry(log)  # and recovers once the lock is gone
    log.close()
    with pytest.raises(AuditError):  # a closed log is also a failure, never a silent skip
        _entry(log)


# A hang guard, not a measurement: a write that waited would block for the 10-minute busy
# timeout below, so the test would fail here instead of hanging.
@pytest.mark.timeout(120)
def test_non_waiting_write_refuses_a_held_log_and_writes_nothing(tmp_path: Path) -> None:
    """``wait=False`` never blocks: with another worker's write transaction open it raises
    AuditBusy while the lock is still held, writes nothing, and leaves the waiting write (and
    its busy timeout) intact."""
    log = AuditLog.in_dir(tmp_path / "service", busy_timeout_ms=600_000)
    other = sqlite3.connect(log.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another worker mid-write, never released in time
        with pytest.raises(AuditBusy, match="locked by another worker"):
            _entry(log, request_id="fast", wait=False)
        assert other.in_transaction  # refused while the lock was held: it did not wait for it
        other.execute("COMMIT")
        assert log.query() == []
        _entry(log, request_id="fast", wait=False)  # free again: written without waiting
        assert [e.request_id for e in log.query()] == ["fast"]
        assert log._db.execute("PRAGMA busy_timeout").fetchone()[0] == 600_000
    finally:
        other.close()
        log.close()


class _CountingWrite:
    """``log.record`` as the guard calls it, counting attempts and checking none waits."""

    def __init__(self, log: AuditLog) -> None:
        self.log, self.attempts = log, 0

    def __call__(self, *, wait: bool) -> int:
        assert wait is False  # the event loop never waits in SQLite's busy handler
        self.attempts += 1
        return self.log.record(request_id="r", endpoint="/score_case", status=200, wait=wait)


@pytest.mark.timeout(120)  # hang guard: a blocked loop would wait the 10-minute busy timeout
def test_service_write_waits_for_another_worker_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    """The guard's write retries a busy log on the event loop and lands once the other worker
    commits; the commit is made by another task of the same loop, so the write can only land
    if the loop kept running between its attempts."""
    # How soon the write lands after a release is a latency, for a benchmark: `make bench-serve`
    # measures the service's p99 with the audit log on.
    import asyncio

    from serving.api.guard import _retry_until

    log = AuditLog.in_dir(tmp_path / "service", busy_timeout_ms=600_000)
    other = sqlite3.connect(log.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another worker mid-write
    write = _CountingWrite(log)
    busy_while_held: list[int] = []

    async def release_after_two_refusals() -> None:
        while write.attempts < 2:
            await asyncio.sleep(0)  # runs only while the writer task yields the loop
        busy_while_held.append(len(log.query()))
        other.execute("COMMIT")

    async def run() -> None:
        releaser = asyncio.create_task(release_after_two_refusals())
        await _retry_until(write, log.busy_timeout_ms / 1000)
        await releaser

    try:
        asyncio.run(run())
        assert busy_while_held == [0]  # nothing written while the other worker held the log
        assert [e.request_id for e in log.query()] == ["r"]
        assert write.attempts >= 3  # refused at least twice, then written
    finally:
        other.close()
        log.close()


def test_service_write_fails_closed_after_the_busy_timeout(tmp_path: Path) -> None:
    """A log held longer than its busy timeout makes the guard's write raise AuditError
    (the request is then refused with 503) and nothing is written."""
    import asyncio

    from serving.api.guard import _retry_until

    log = AuditLog.in_dir(tmp_path / "service", busy_timeout_ms=100)
    other = sqlite3.connect(log.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        write = _CountingWrite(log)
        with pytest.raises(AuditError, match=r"busy for 0\.1 s") as err:
            asyncio.run(_retry_until(write, log.busy_timeout_ms / 1000))
        assert isinstance(err.value.__cause__, AuditBusy)  # the last refusal, kept as cause
        assert write.attempts >= 2  # it retried before giving up
        other.execute("ROLLBACK")
        assert log.query() == []
    finally:
        other.close()
        log.close()


def test_non_waiting_write_refuses_while_this_process_writes(log: AuditLog) -> None:
    """A write already running in another thread of this worker makes ``wait=False`` refuse."""
    with log._lock, pytest.raises(AuditBusy):
        _entry(log, wait=False)
    assert log.query() == []


def test_query_validates_input(log: AuditLog) -> None:
    """A bad --since or --limit is a ValueError with a readable message."""
    with pytest.raises(ValueError, match="ISO-8601"):
        log.query(since="yesterday")
    with pytest.raises(ValueError, match="limit"):
        log.query(limit=0)


def test_parse_since_normalises_to_utc() -> None:
    """Dates, naive and offset datetimes and a trailing Z all become UTC text."""
    assert parse_since("2024-05-01") == "2024-05-01T00:00:00.000000+00:00"
    assert parse_since("2024-05-01T02:00:00+02:00") == "2024-05-01T00:00:00.000000+00:00"
    assert parse_since("2024-05-01T00:00:00Z") == "2024-05-01T00:00:00.000000+00:00"


def _writer(path: str, worker: int, n: int) -> None:
    log = AuditLog(Path(path), busy_timeout_ms=10_000)
    for i in range(n):
        log.record(
            request_id=f"{worker}-{i}",
            endpoint="/queue",
            status=200,
            case_ids=[f"C{worker}-{i}-{j}" for j in range(20)],
        )
    log.close()


def test_concurrent_writers(tmp_path: Path) -> None:
    """Several processes (server workers) append at once: no entry or case id is lost."""
    path = tmp_path / "audit.sqlite"
    AuditLog(path).close()
    ctx = multiprocessing.get_context("fork")  # cheap; each child opens its own connection
    procs = [ctx.Process(target=_writer, args=(str(path), w, 40)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    log = AuditLog(path)
    entries = log.query(limit=1000)
    assert len(entries) == 120 and len({e.request_id for e in entries}) == 120
    assert all(len(e.case_ids) == 20 for e in entries)
    assert len(log.query(case_id="C2-39-19")) == 1


def test_cli_audit_query(tmp_path: Path) -> None:
    """`triage audit` filters by case and prints JSON lines; a bad --since exits 2."""
    import typer
    from typer.testing import CliRunner

    from serving.api.access_cli import register

    log = AuditLog.in_dir(tmp_path / "service")
    log.record(request_id="a", endpoint="/score_case", status=200, case_ids=["C1"], owner="al")
    log.record(request_id="b", endpoint="/queue", status=200, case_ids=["C2"], owner="bo")
    log.close()
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    out = runner.invoke(app, ["audit", "--case", "C2", "--json", "--data-dir", str(tmp_path)])
    assert out.exit_code == 0
    assert [json.loads(line)["request_id"] for line in out.stdout.splitlines()] == ["b"]
    table = runner.invoke(app, ["audit", "--owner", "al", "--data-dir", str(tmp_path)])
    assert table.exit_code == 0 and "/score_case" in table.stdout
    bad = runner.invoke(app, ["audit", "--since", "last week", "--data-dir", str(tmp_path)])
    assert bad.exit_code == 2 and "ISO-8601" in bad.stderr
    none = runner.invoke(app, ["audit", "--data-dir", str(tmp_path / "elsewhere")])
    assert none.exit_code == 2 and "no audit log" in none.stderr


def test_background_checkpoints_fold_the_wal(tmp_path: Path) -> None:
    """With checkpoints moved off the request path, a background thread still folds the WAL."""
    path = tmp_path / "audit.sqlite"
    log = AuditLog(path, checkpoint_every_s=0.05)
    empty = path.stat().st_size
    for i in range(300):
        _entry(log, request_id=str(i), case_ids=[f"C{i}-{j}" for j in range(10)])
    # Writes land in the WAL; only a checkpoint copies them into the database file.
    deadline = time.monotonic() + 10
    while path.stat().st_size <= empty and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.stat().st_size > empty
    log.close()
    assert len(AuditLog(path).query(limit=1000)) == 300


def test_no_checkpoint_on_the_request_path(tmp_path: Path) -> None:
    """With a checkpoint interval set, a request's write never folds the WAL itself."""
    path = tmp_path / "audit.sqlite"
    log = AuditLog(path, checkpoint_every_s=3600)
    empty = path.stat().st_size
    for i in range(300):  # well past SQLite's automatic threshold of 1000 pages
        _entry(log, request_id=str(i), case_ids=[f"C{i}-{j}" for j in range(50)])
    assert path.stat().st_size == empty
    log.close()


def _verify_cli(tmp_path: Path):
    import typer
    from typer.testing import CliRunner

    from serving.api.access_cli import register

    app = typer.Typer()
    register(app)
    return CliRunner().invoke(app, ["audit", "verify", "--data-dir", str(tmp_path)])


def _five_rows(tmp_path: Path) -> Path:
    log = AuditLog.in_dir(tmp_path / "service")
    for i in range(5):
        log.record(request_id=f"r{i}", endpoint="/score_case", status=200, case_ids=[f"C{i}"])
    log.close()
    return log.path


def _tamper(path: Path, *sql: str) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    for statement in sql:
        con.execute(statement)
    con.close()


_DROP = [f"DROP TRIGGER {t}" for t in ("audit_no_update", "audit_no_delete")] + [
    f"DROP TRIGGER {t}" for t in ("audit_case_no_update", "audit_case_no_delete")
]


def test_verify_passes_an_untouched_log_and_the_file_is_private(tmp_path: Path) -> None:
    """An untouched log verifies OK from the CLI (exit 0); the file is mode 0600."""
    path = _five_rows(tmp_path)
    out = _verify_cli(tmp_path)
    assert out.exit_code == 0 and "OK: 5 rows" in out.stdout, out.output
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("sql", "bad_row"),
    [
        (["UPDATE audit SET owner = 'someone-else' WHERE id = 3"], 3),  # issue 17's edit
        (["UPDATE audit_case SET case_id = 'C9' WHERE entry_id = 2"], 2),
        (["DELETE FROM audit_case WHERE entry_id = 4", "DELETE FROM audit WHERE id = 4"], 5),
        (["DELETE FROM audit WHERE id = 5", "DELETE FROM audit_case WHERE entry_id = 5"], 5),
        (["DELETE FROM audit WHERE id = 1", "DELETE FROM audit_case WHERE entry_id = 1"], 2),
        (["UPDATE audit SET status = 200, hash = NULL WHERE id = 2"], 2),
    ],
)
def test_verify_finds_the_first_changed_or_removed_row(
    tmp_path: Path, sql: list[str], bad_row: int
) -> None:
    """With the triggers dropped, an edit, a deleted row (middle, end, start) or a blanked hash
    is found at the right row, even after the service re-opened the log (and the triggers)."""
    path = _five_rows(tmp_path)
    _tamper(path, *_DROP, *sql)
    AuditLog.in_dir(tmp_path / "service").close()  # re-creates the triggers: no help to hide
    out = _verify_cli(tmp_path)
    assert out.exit_code == 1, out.output
    assert f"BROKEN at row {bad_row}" in out.stderr


def test_verify_reports_dropped_triggers_and_writes_continue_the_chain(tmp_path: Path) -> None:
    """Dropped triggers alone are reported; rows written after a reopen still chain."""
    path = _five_rows(tmp_path)
    _tamper(path, *_DROP)
    assert _verify_cli(tmp_path).exit_code == 1
    log = AuditLog.in_dir(tmp_path / "service")  # re-creates them
    log.record(request_id="r5", endpoint="/queue", status=200)
    log.close()
    out = _verify_cli(tmp_path)
    assert out.exit_code == 0 and "OK: 6 rows" in out.stdout


def test_an_older_log_gains_the_chain_columns(tmp_path: Path) -> None:
    """A log written before the chain opens, keeps its rows and chains the new ones after them."""
    path = tmp_path / "service" / "audit.sqlite"
    path.parent.mkdir()
    old = sqlite3.connect(path, isolation_level=None)
    old.executescript(
        "CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL,"
        " request_id TEXT NOT NULL, token_id TEXT, owner TEXT, endpoint TEXT NOT NULL,"
        " status INTEGER NOT NULL, n_cases INTEGER NOT NULL);"
        "INSERT INTO audit (at, request_id, endpoint, status, n_cases)"
        " VALUES ('2024-01-01', 'old', '/queue', 200, 0);"
    )
    old.close()
    log = AuditLog.in_dir(tmp_path / "service")
    log.record(request_id="new", endpoint="/queue", status=200)
    assert [e.request_id for e in log.query()] == ["new", "old"]
    log.close()
    out = _verify_cli(tmp_path)
    assert out.exit_code == 0 and "1 older rows" in out.stdout, out.output


def test_a_failed_log_is_reopened_when_the_fault_clears(tmp_path: Path) -> None:
    """A log that cannot be opened starts faulty (no exception), is not writable, and writes
    again once the fault is gone, without a new AuditLog."""
    service = tmp_path / "service"
    service.mkdir()
    (service / "audit.sqlite").mkdir()  # a directory where the file should be: cannot open
    log = AuditLog.in_dir(service)
    assert not log.writable() and "cannot open" in log.fault
    with pytest.raises(AuditError):
        _entry(log)
    (service / "audit.sqlite").rmdir()
    assert log.writable() and log.fault == ""
    _entry(log, request_id="after")
    assert [e.request_id for e in log.query()] == ["after"]
    log.close()

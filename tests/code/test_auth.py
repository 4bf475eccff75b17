"""API tokens (serving/api/auth.py): creation, storage, verification, revocation."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from serving.api.auth import (
    SCOPES,
    Forbidden,
    TokenStore,
    Unauthenticated,
    bearer_token,
)


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    s = TokenStore.in_dir(tmp_path / "service")
    yield s
    s.close()


def test_token_format_and_owner(store: TokenStore) -> None:
    """A new token reads tri_<id>_<secret> and verifies to its owner and scopes."""
    new = store.create("alice", ["score:read", "queue:read"])
    prefix, token_id, secret = new.value.split("_", 2)
    assert prefix == "tri" and token_id == new.info.token_id and len(secret) == 43
    who = store.verify(new.value, "score:read")
    assert (who.owner, who.token_id, who.scopes) == (
        "alice",
        token_id,
        ("score:read", "queue:read"),
    )


def test_secret_never_stored(store: TokenStore) -> None:
    """Only the SHA-256 of the secret is on disk: the token value appears nowhere in the file."""
    new = store.create("alice", ["score:read"])
    secret = new.value.split("_", 2)[2]
    raw = store.path.read_bytes() + b"".join(
        p.read_bytes() for p in store.path.parent.glob("tokens.sqlite-*")
    )
    assert secret.encode() not in raw and new.value.encode() not in raw
    assert secret not in repr(new)


def test_missing_and_malformed_are_401(store: TokenStore) -> None:
    """No token, a malformed one, or an unknown id: Unauthenticated (401)."""
    good = store.create("alice", ["score:read"]).value
    token_id = good.split("_")[1]
    for bad in [None, "", "Bearer x", "tri_123_abc", good + "x", f"tri_{'0' * 12}_{'A' * 43}"]:
        with pytest.raises(Unauthenticated) as err:
            store.verify(bad, "score:read")
        assert err.value.status_code == 401
    with pytest.raises(Unauthenticated, match="invalid"):
        store.verify(f"tri_{token_id}_{'A' * 43}", "score:read")  # right id, wrong secret


def test_missing_scope_is_403(store: TokenStore) -> None:
    """A valid token without the required scope: Forbidden (403)."""
    token = store.create("bob", ["queue:read"]).value
    with pytest.raises(Forbidden) as err:
        store.verify(token, "score:read")
    assert err.value.status_code == 403


def test_admin_satisfies_every_scope(store: TokenStore) -> None:
    """The admin scope grants every other scope."""
    token = store.create("ops", ["admin"]).value
    for scope in SCOPES:
        assert store.verify(token, scope).owner == "ops"


def test_revoke_takes_effect_across_connections(tmp_path: Path) -> None:
    """A token revoked by one store (the CLI) fails at once in another (a server worker)."""
    server, cli = TokenStore.in_dir(tmp_path), TokenStore.in_dir(tmp_path)
    new = cli.create("carol", ["score:read"])
    assert server.verify(new.value, "score:read").owner == "carol"
    info = cli.revoke(new.info.token_id)
    assert info.revoked_at is not None and not info.active
    with pytest.raises(Unauthenticated, match="revoked"):
        server.verify(new.value, "score:read")
    assert cli.revoke(new.info.token_id).revoked_at == info.revoked_at  # idempotent


def test_revoke_unknown_raises(store: TokenStore) -> None:
    """Revoking an id that does not exist is a KeyError, not a silent no-op."""
    with pytest.raises(KeyError):
        store.revoke("nope")


def test_list_tokens(store: TokenStore) -> None:
    """Listing shows every token with owner, scopes and revocation, never a secret."""
    a = store.create("alice", ["score:read"])
    b = store.create("bob", ["queue:read", "queue:read"])
    store.revoke(a.info.token_id)
    listed = {t.token_id: t for t in store.list_tokens()}
    assert listed[a.info.token_id].revoked_at is not None
    assert listed[b.info.token_id].scopes == ("queue:read",)  # de-duplicated
    assert not hasattr(listed[b.info.token_id], "value")


@pytest.mark.parametrize(
    ("owner", "scopes", "message"),
    [
        ("", ["score:read"], "owner"),
        ("x" * 65, ["score:read"], "owner"),
        ("eve\nmallory", ["score:read"], "owner"),
        ("alice", [], "at least one scope"),
        ("alice", ["score:write"], "unknown scope 'score:write'"),
    ],
)
def test_create_rejects_bad_input(
    store: TokenStore, owner: str, scopes: list, message: str
) -> None:
    """Empty or odd owners and unknown or missing scopes are refused with a clear message."""
    with pytest.raises(ValueError, match=message):
        store.create(owner, scopes)


def test_store_is_plain_sqlite_in_wal_mode(store: TokenStore) -> None:
    """The store is an SQLite file in WAL mode so workers read while the CLI writes."""
    store.create("alice", ["score:read"])
    con = sqlite3.connect(store.path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT count(*) FROM tokens").fetchone()[0] == 1


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer tri_a_b", "tri_a_b"),
        ("bearer   tri_a_b  ", "tri_a_b"),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    """Only an Authorization header with the Bearer scheme yields a token."""
    assert bearer_token(header) == token


def test_verify_is_one_primary_key_lookup(store: TokenStore) -> None:
    """Verifying a token costs one SQL statement, a search on the primary key, whatever the
    number of tokens (its latency is measured end to end by `make bench-serve`'s p99)."""
    for i in range(50):
        store.create(f"user{i}", ["queue:read"])
    token = store.create("alice", ["score:read"]).value
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    try:
        assert store.verify(token, "score:read").owner == "alice"
    finally:
        store._db.set_trace_callback(None)
    (sql,) = statements
    assert sql.startswith("SELECT") and "WHERE token_id = " in sql
    plan = " ".join(
        row[-1]
        for row in store._db.execute(
            "EXPLAIN QUERY PLAN SELECT owner, scopes, secret_sha256, revoked_at FROM tokens"
            " WHERE token_id = ?",
            ("x",),
        )
    )
    assert plan.startswith("SEARCH tokens USING") and "(token_id=?)" in plan


def _cli():
    import typer

    from serving.api.access_cli import register

    app = typer.Typer()
    register(app)
    return app


def test_cli_create_list_revoke(tmp_path: Path) -> None:
    """`triage tokens` creates a working token (printed once), lists it and revokes it."""
    from typer.testing import CliRunner

    runner, app, d = CliRunner(), _cli(), str(tmp_path)
    made = runner.invoke(
        app,
        [
            "tokens",
            "create",
            "--owner",
            "dana",
            "--scope",
            "score:read",
            "--scope",
            "queue:read",
            "--data-dir",
            d,
            "--json",
        ],
    )
    assert made.exit_code == 0, made.output
    new = json.loads(made.stdout)
    store = TokenStore.in_dir(tmp_path / "service")
    assert store.verify(new["token"], "queue:read").owner == "dana"
    listed = runner.invoke(app, ["tokens", "list", "--data-dir", d, "--json"])
    assert json.loads(listed.stdout)[0]["token_id"] == new["token_id"]
    assert new["token"] not in listed.stdout
    assert runner.invoke(app, ["tokens", "revoke", new["token_id"], "--data-dir", d]).exit_code == 0
    with pytest.raises(Unauthenticated):
        store.verify(new["token"], "queue:read")


@pytest.mark.parametrize(
    "args",
    [
        ["tokens", "create", "--owner", "dana", "--scope", "score:write"],
        ["tokens", "create", "--owner", "", "--scope", "admin"],
        ["tokens", "revoke", "nope"],
    ],
)
def test_cli_bad_input_exits_2(tmp_path: Path, args: list[str]) -> None:
    """An unknown scope, an empty owner or an unknown token id: one-line error, exit code 2."""
    from typer.testing import CliRunner

    result = CliRunner().invoke(_cli(), [*args, "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "error:" in result.stderr and len(result.stderr.strip().splitlines()) <= 2

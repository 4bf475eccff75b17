"""Commands for service access: ``triage tokens create|list|revoke``, ``triage audit [verify]``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from triage.cliutil import DataDirOption, console, err_console, fail, paths_for

__all__ = ["register"]

tokens_app = typer.Typer(
    help="API tokens for the service: one per caller, with scopes, stored hashed.",
    no_args_is_help=True,
)


@tokens_app.command("create")
def create_cmd(
    owner: Annotated[str, typer.Option(help="Who the token is for (person or case tool).")],
    scope: Annotated[
        list[str],
        typer.Option(
            help="A scope to grant; repeat for several. One of: score:read, score:compute, "
            "queue:read, explain:read, review:write, admin (admin grants all).",
        ),
    ],
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the new token as JSON.")] = False,
) -> None:
    """Create a token and print it once: only its hash is kept, it cannot be shown again."""
    from serving.api.auth import TokenStore

    store = TokenStore.in_dir(paths_for(data_dir).service_dir)
    try:
        new = store.create(owner, scope)
    except ValueError as exc:
        raise fail(str(exc)) from None
    finally:
        store.close()
    info = new.info
    if as_json:
        print(
            json.dumps(
                {
                    "token_id": info.token_id,
                    "owner": info.owner,
                    "scopes": list(info.scopes),
                    "token": new.value,
                }
            )
        )
        return
    err_console.print(
        f"created token [bold]{info.token_id}[/] for {info.owner} "
        f"({', '.join(info.scopes)}). Copy it now: it is not stored and cannot be shown again."
    )
    print(new.value)  # alone on stdout, so `$(triage tokens create ...)` captures just it


@tokens_app.command("list")
def list_cmd(
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the tokens as JSON.")] = False,
) -> None:
    """List every token: id, owner, scopes, created, revoked (never a secret)."""
    from serving.api.auth import TokenStore

    store = TokenStore.in_dir(paths_for(data_dir).service_dir)
    try:
        tokens = store.list_tokens()
    finally:
        store.close()
    if as_json:
        print(json.dumps([t.__dict__ | {"scopes": list(t.scopes)} for t in tokens], indent=2))
        return
    table = Table("token id", "owner", "scopes", "created (UTC)", "revoked (UTC)")
    for t in tokens:
        table.add_row(t.token_id, t.owner, " ".join(t.scopes), t.created_at, t.revoked_at or "")
    console.print(table)


@tokens_app.command("revoke")
def revoke_cmd(
    token_id: Annotated[str, typer.Argument(help="The token id (from `triage tokens list`).")],
    data_dir: DataDirOption = None,
) -> None:
    """Revoke a token: every server worker refuses it from the next request on."""
    from serving.api.auth import TokenStore

    store = TokenStore.in_dir(paths_for(data_dir).service_dir)
    try:
        info = store.revoke(token_id)
    except KeyError:
        raise fail(f"no token with id {token_id!r}; see `triage tokens list`") from None
    finally:
        store.close()
    console.print(f"token {info.token_id} of {info.owner} revoked at {info.revoked_at}")


audit_app = typer.Typer(
    help="Who accessed which cases (filters below), or `triage audit verify` for tampering.",
    invoke_without_command=True,
)


@audit_app.callback()
def audit_cmd(
    ctx: typer.Context,
    case: Annotated[
        str | None, typer.Option("--case", help="Only requests touching this case id.")
    ] = None,
    owner: Annotated[str | None, typer.Option(help="Only requests by this token owner.")] = None,
    endpoint: Annotated[
        str | None, typer.Option(help="Only this endpoint, e.g. /score_case.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only entries at or after this ISO date/time (UTC if no offset)."),
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many entries, newest first.")] = 100,
    data_dir: DataDirOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the entries as JSON lines.")
    ] = False,
) -> None:
    """Who accessed which cases through the service, when, and with what outcome."""
    from serving.api.audit import AuditLog

    if ctx.invoked_subcommand is not None:
        return

    paths = paths_for(data_dir)
    if not paths.service.audit_log.exists():
        raise fail(f"no audit log at {paths.service.audit_log}; has the service run?")
    log = AuditLog.in_dir(paths.service_dir)
    try:
        entries = log.query(case_id=case, owner=owner, endpoint=endpoint, since=since, limit=limit)
    except ValueError as exc:
        raise fail(str(exc)) from None
    finally:
        log.close()
    if as_json:
        for e in entries:
            print(json.dumps(e.as_dict()))
        return
    table = Table("when (UTC)", "owner", "token", "endpoint", "status", "cases", "request id")
    for e in entries:
        cases = ", ".join(e.case_ids[:3]) + (
            f" (+{len(e.case_ids) - 3})" if len(e.case_ids) > 3 else ""
        )
        table.add_row(
            e.at[:23],
            e.owner or "-",
            e.token_id or "-",
            e.endpoint,
            str(e.status),
            cases,
            e.request_id,
        )
    console.print(table)
    if not entries:
        err_console.print("no matching audit entries")


@audit_app.command("verify")
def verify_cmd(data_dir: DataDirOption = None) -> None:
    """Check the audit log's hash chain: OK, or the first row that was changed or removed.

    Exits 1 if the log was tampered with, 2 if there is no log to check.
    """
    import sqlite3

    from serving.api.audit import verify_file

    paths = paths_for(data_dir)
    path = paths.service.audit_log
    if not path.exists():
        raise fail(f"no audit log at {path}; has the service run?")
    try:
        report = verify_file(path)
    except sqlite3.Error as exc:
        raise fail(f"cannot read the audit log {path}: {exc}") from None
    if report.ok:
        older = f" ({report.unchained} older rows before the chain)" if report.unchained else ""
        console.print(f"OK: {report.rows} rows, chain intact{older}; last hash {report.last_hash}")
        return
    where = f" at row {report.first_bad_id}" if report.first_bad_id is not None else ""
    err_console.print(f"BROKEN{where}: {report.problem} ({report.rows} rows checked before it)")
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Mount ``tokens`` and ``audit`` on the root ``triage`` app."""
    app.add_typer(tokens_app, name="tokens")
    app.add_typer(audit_app, name="audit")

"""Commands of the service (CONTRACT §7): ``serve``, ``users``, ``tokens`` and ``backup``.

Each parses its options, makes one library call and renders the result. A password is read
from stdin (``--password-stdin``, one line) or a hidden prompt with confirmation, never from
the command line (where ``ps`` and shell history would show it).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from workflow.cli.context import Context, json_option
from workflow.cli.render import emit_json, say, table

pass_ctx = click.make_pass_decorator(Context)


def _accounts(c: Context) -> Any:
    from workflow.service.calls import accounts_of

    return accounts_of(c.engine())


def _by() -> str:
    from workflow.storage.store import os_user

    return os_user()


def _password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    value: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return value


# --------------------------------------------------------------------------- serve


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes (each with its own connections to the one database).")
@click.option("--forwarded-allow-ips", metavar="IPS",
              help="Trust X-Forwarded-Proto/-For from these proxy addresses (comma-separated, "
              "e.g. 127.0.0.1); without it those headers are ignored.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@pass_ctx
def serve(c: Context, host: str, port: int, workers: int, forwarded_allow_ips: str | None,
          log_level: str) -> None:
    """Serve the JSON API (/api/v1) and the web pages (/) on the database of --db."""
    from workflow.service import app

    c.engine().store.check_schema()  # exit 6 now, not a failing worker later
    app.serve(db=c.db, definitions=c.definitions, allow_override=c.allow_override,
              lock_timeout=c.lock_timeout, statement_timeout=c.statement_timeout,
              host=host, port=port, workers=workers,
              forwarded_allow_ips=forwarded_allow_ips, log_level=log_level)


# --------------------------------------------------------------------------- users


@click.group()
def users() -> None:
    """Accounts of people and services that use `workflow serve`."""


@users.command("add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="May manage accounts and grants, and read all.")
@click.option("--display-name", help="The name shown to people.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin (one line).")
@pass_ctx
def users_add(c: Context, name: str, admin: bool, display_name: str | None,
              password_stdin: bool) -> None:
    """Create the account NAME (NAME is the actor its grants apply to)."""
    account = _accounts(c).add(name, _password(password_stdin), by=_by(), admin=admin,
                               display_name=display_name)
    say(f"account {account.name} created{' (admin)' if account.admin else ''}")


@users.command("list")
@json_option
@pass_ctx
def users_list(c: Context, as_json: bool) -> None:
    """The accounts."""
    found = _accounts(c).list()
    if as_json:
        emit_json([a.to_dict() for a in found])
        return
    table(None, ["name", "display name", "admin", "disabled", "created"],
          [(a.name, a.display_name, "yes" if a.admin else "", "yes" if a.disabled else "",
            a.created_at) for a in found])


@users.command("disable")
@click.argument("name")
@pass_ctx
def users_disable(c: Context, name: str) -> None:
    """NAME can no longer log in; its sessions and tokens stop working at once."""
    account = _accounts(c).disable(name, by=_by())
    say(f"account {account.name} disabled")


@users.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin (one line).")
@pass_ctx
def users_passwd(c: Context, name: str, password_stdin: bool) -> None:
    """Set a new password for NAME (its sessions end)."""
    _accounts(c).set_password(name, _password(password_stdin), by=_by())
    say(f"password of {name} changed")


# --------------------------------------------------------------------------- tokens


@click.group()
def tokens() -> None:
    """API tokens (`Authorization: Bearer TOKEN`)."""


@tokens.command("create")
@click.argument("name")
@click.option("--label", help="What the token is for.")
@click.option("--expires", metavar="DATE", help="Last day the token works (YYYY-MM-DD, UTC).")
@json_option
@pass_ctx
def tokens_create(c: Context, name: str, label: str | None, expires: str | None,
                  as_json: bool) -> None:
    """Print a new API token for NAME. It is shown once: store it now."""
    new = _accounts(c).create_token(name, by=_by(), label=label, expires=expires)
    if as_json:
        emit_json(new.to_dict())
        return
    click.echo(new.secret)
    click.echo(f"token {new.token.id} for {name}"
               + (f", expires {new.token.expires_at}" if new.token.expires_at else "")
               + "; it is shown only this once", err=True)


@tokens.command("list")
@click.argument("name", required=False)
@json_option
@pass_ctx
def tokens_list(c: Context, name: str | None, as_json: bool) -> None:
    """API tokens (of NAME, or all); never the token itself."""
    found = _accounts(c).tokens(name)
    if as_json:
        emit_json([t.to_dict() for t in found])
        return
    table(None, ["id", "account", "label", "created", "expires", "last used", "revoked"],
          [(t.id, t.account, t.label, t.created_at, t.expires_at, t.last_used_at, t.revoked_at)
           for t in found])


@tokens.command("revoke")
@click.argument("token_id", metavar="ID", type=int)
@pass_ctx
def tokens_revoke(c: Context, token_id: int) -> None:
    """Withdraw the token ID; it stops working at once."""
    token = _accounts(c).revoke_token(token_id, by=_by())
    say(f"token {token.id} of {token.account} revoked")


# --------------------------------------------------------------------------- backup


@click.command()
@click.argument("path", type=click.Path(dir_okay=False))
@json_option
@pass_ctx
def backup(c: Context, path: str, as_json: bool) -> None:
    """Copy the SQLite database to PATH (a new file) while it is in use, then check the copy
    (integrity and the whole audit trail). For PostgreSQL use pg_dump."""
    from workflow.engine.facade import Engine
    from workflow.storage.backup import backup as copy

    def verify(url: str) -> Any:
        with Engine(url, c.definitions, allow_override=c.allow_override) as copy_engine:
            return copy_engine.verify()

    result = copy(c.db, path, check=verify)
    if as_json:
        emit_json(result.to_dict())
    else:
        v = result.verify
        say(f"backup {result.path}: {result.bytes} bytes, integrity {result.integrity}, "
            f"audit trail {'intact' if v is None or v.ok else 'BROKEN'}"
            + (f" ({v.events_checked} events checked)" if v is not None else ""))
    if not result.ok:
        sys.exit(1)


COMMANDS = (serve, users, tokens, backup)

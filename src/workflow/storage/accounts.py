"""Accounts, API tokens, browser sessions, login failures and the account event chain: the
tables and their queries (revision 0006).

Every query takes the :class:`~sqlalchemy.engine.Connection` of a transaction handed out by
``Store.run`` (or ``Store.connect``); :mod:`workflow.accounts` composes them and decides what
they mean. No secret is stored in clear: passwords as Argon2id hashes, token and session
secrets as SHA-256 hex digests; the login failure table keys names by their SHA-256 too (a
password typed into the name field must not be kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

from workflow.storage.store import WAIT_KEY, Base

#: The advisory lock serialising writers of the account event chain on PostgreSQL (SQLite's
#: write transaction holds the database lock already).
ACCOUNT_CHAIN_LOCK = 7201952704


class AccountTable(Base):
    """One account per name; the name is the actor that grants apply to."""

    __tablename__ = "workflow_accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.Text, unique=True)
    display_name: Mapped[str | None] = mapped_column(sa.Text)
    password_hash: Mapped[str] = mapped_column(sa.Text)
    admin: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    language: Mapped[str] = mapped_column(sa.String(8), server_default="th")
    created_at: Mapped[str] = mapped_column(sa.String(32))
    updated_at: Mapped[str] = mapped_column(sa.String(32))


class TokenTable(Base):
    """API tokens: the SHA-256 of the secret, never the secret."""

    __tablename__ = "workflow_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    account: Mapped[str] = mapped_column(sa.Text)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    label: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[str] = mapped_column(sa.String(32))
    expires_at: Mapped[str | None] = mapped_column(sa.String(32))
    last_used_at: Mapped[str | None] = mapped_column(sa.String(32))
    revoked_at: Mapped[str | None] = mapped_column(sa.String(32))
    __table_args__ = (sa.Index("ix_tokens_account", "account"),)


class SessionTable(Base):
    """Browser sessions: the SHA-256 of the cookie value, the CSRF token, the expiry times."""

    __tablename__ = "workflow_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    session_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    account: Mapped[str] = mapped_column(sa.Text)
    csrf: Mapped[str] = mapped_column(sa.String(64))
    address: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[str] = mapped_column(sa.String(32))
    last_seen_at: Mapped[str] = mapped_column(sa.String(32))
    expires_at: Mapped[str] = mapped_column(sa.String(32))
    __table_args__ = (sa.Index("ix_sessions_account", "account"),)


class LoginFailureTable(Base):
    """Failed logins, one row per (scope, key) counted: shared by every server process."""

    __tablename__ = "workflow_login_failures"
    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(sa.String(10))  # "account" or "address"
    key: Mapped[str] = mapped_column(sa.String(64))  # SHA-256 of the name or address
    at: Mapped[str] = mapped_column(sa.String(32))
    __table_args__ = (
        sa.Index("ix_login_failures_key", "scope", "key", "at"),
        sa.Index("ix_login_failures_at", "at"),
    )


class AccountEventTable(Base):
    """Every account, token and login event, hash-chained (``wa1``); append-only."""

    __tablename__ = "workflow_account_events"
    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    action: Mapped[str] = mapped_column(sa.String(20))
    subject: Mapped[str] = mapped_column(sa.Text)
    detail: Mapped[str] = mapped_column(sa.Text)
    by: Mapped[str] = mapped_column(sa.Text)
    os_user: Mapped[str] = mapped_column(sa.Text)
    at: Mapped[str] = mapped_column(sa.String(32))
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    hash: Mapped[str] = mapped_column(sa.String(64))
    __table_args__ = (sa.Index("ix_account_events_subject", "subject"),)


accounts_t = cast(sa.Table, AccountTable.__table__)
tokens_t = cast(sa.Table, TokenTable.__table__)
sessions_t = cast(sa.Table, SessionTable.__table__)
failures_t = cast(sa.Table, LoginFailureTable.__table__)
account_events_t = cast(sa.Table, AccountEventTable.__table__)


class AccountRow(NamedTuple):
    id: int
    name: str
    display_name: str | None
    password_hash: str
    admin: bool
    disabled: bool
    language: str
    created_at: str
    updated_at: str


class TokenRow(NamedTuple):
    id: int
    account: str
    token_hash: str
    label: str | None
    created_at: str
    expires_at: str | None
    last_used_at: str | None
    revoked_at: str | None


class SessionRow(NamedTuple):
    id: int
    session_hash: str
    account: str
    csrf: str
    address: str
    created_at: str
    last_seen_at: str
    expires_at: str


class AccountEventRow(NamedTuple):
    seq: int
    action: str
    subject: str
    detail: str
    by: str
    os_user: str
    at: str
    prev_hash: str
    hash: str


ACCOUNT_COLUMNS = [accounts_t.c[n] for n in AccountRow._fields]
TOKEN_COLUMNS = [tokens_t.c[n] for n in TokenRow._fields]
SESSION_COLUMNS = [sessions_t.c[n] for n in SessionRow._fields]
ACCOUNT_EVENT_COLUMNS = [account_events_t.c[n] for n in AccountEventRow._fields]


def _account(row: Any) -> AccountRow:
    r = tuple(row)
    # SQLite hands booleans back as 0/1 through some paths; one type for callers.
    return AccountRow(r[0], r[1], r[2], r[3], bool(r[4]), bool(r[5]), r[6], r[7], r[8])


# --------------------------------------------------------------------------- accounts


def find_account(conn: Connection, name: str) -> AccountRow | None:
    row = conn.execute(sa.select(*ACCOUNT_COLUMNS).where(accounts_t.c.name == name)).first()
    return _account(row) if row else None


def all_accounts(conn: Connection) -> list[AccountRow]:
    stmt = sa.select(*ACCOUNT_COLUMNS).order_by(accounts_t.c.name)
    return [_account(r) for r in conn.execute(stmt)]


def insert_account(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(accounts_t.insert().values(**values))


def update_account(conn: Connection, name: str, values: dict[str, Any]) -> None:
    conn.execute(accounts_t.update().where(accounts_t.c.name == name).values(**values))


# --------------------------------------------------------------------------- tokens


def insert_token(conn: Connection, values: dict[str, Any]) -> int:
    result = conn.execute(tokens_t.insert().values(**values))
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def find_token(conn: Connection, token_id: int) -> TokenRow | None:
    row = conn.execute(sa.select(*TOKEN_COLUMNS).where(tokens_t.c.id == token_id)).first()
    return TokenRow(*row) if row else None


def token_by_hash(conn: Connection, token_hash: str) -> tuple[TokenRow, AccountRow] | None:
    """The token with this digest and its account (one query: it runs on every request)."""
    stmt = sa.select(*TOKEN_COLUMNS, *ACCOUNT_COLUMNS).join(
        accounts_t, accounts_t.c.name == tokens_t.c.account
    ).where(tokens_t.c.token_hash == token_hash)
    row = conn.execute(stmt).first()
    if row is None:
        return None
    n = len(TokenRow._fields)
    return TokenRow(*row[:n]), _account(row[n:])


def list_tokens(conn: Connection, account: str | None = None) -> list[TokenRow]:
    stmt = sa.select(*TOKEN_COLUMNS).order_by(tokens_t.c.id)
    if account is not None:
        stmt = stmt.where(tokens_t.c.account == account)
    return [TokenRow(*r) for r in conn.execute(stmt)]


def update_token(conn: Connection, token_id: int, values: dict[str, Any]) -> None:
    conn.execute(tokens_t.update().where(tokens_t.c.id == token_id).values(**values))


# --------------------------------------------------------------------------- sessions


def insert_session(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(sessions_t.insert().values(**values))


def session_by_hash(conn: Connection, session_hash: str) -> tuple[SessionRow, AccountRow] | None:
    stmt = sa.select(*SESSION_COLUMNS, *ACCOUNT_COLUMNS).join(
        accounts_t, accounts_t.c.name == sessions_t.c.account
    ).where(sessions_t.c.session_hash == session_hash)
    row = conn.execute(stmt).first()
    if row is None:
        return None
    n = len(SessionRow._fields)
    return SessionRow(*row[:n]), _account(row[n:])


def touch_session(conn: Connection, session_id: int, now: str) -> None:
    conn.execute(sessions_t.update().where(sessions_t.c.id == session_id).values(last_seen_at=now))


def delete_session(conn: Connection, session_id: int) -> None:
    conn.execute(sessions_t.delete().where(sessions_t.c.id == session_id))


def delete_sessions_of(conn: Connection, account: str) -> int:
    return int(conn.execute(sessions_t.delete().where(sessions_t.c.account == account)).rowcount)


def delete_stale_sessions(conn: Connection, now: str, idle_since: str) -> None:
    """Forget sessions past their absolute expiry or idle since before ``idle_since``."""
    conn.execute(
        sessions_t.delete().where(
            sa.or_(sessions_t.c.expires_at <= now, sessions_t.c.last_seen_at < idle_since)
        )
    )


# --------------------------------------------------------------------------- login failures


def failures_since(conn: Connection, scope: str, key: str, since: str) -> list[str]:
    """Times of the failures counted against (scope, key) since ``since``, oldest first."""
    c = failures_t.c
    stmt = (
        sa.select(c.at)
        .where(c.scope == scope, c.key == key, c.at > since)
        .order_by(c.at)
    )
    return [str(r[0]) for r in conn.execute(stmt)]


def insert_failures(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        conn.execute(failures_t.insert(), list(rows))


def clear_failures(conn: Connection, scope: str, key: str) -> None:
    conn.execute(failures_t.delete().where(failures_t.c.scope == scope, failures_t.c.key == key))


def forget_failures_before(conn: Connection, before: str) -> None:
    conn.execute(failures_t.delete().where(failures_t.c.at <= before))


# --------------------------------------------------------------------------- the chain


def lock_account_chain(conn: Connection) -> AccountEventRow | None:
    """Serialise writers of the account event chain and return its head."""
    conn.info[WAIT_KEY] = "the account trail (another account change or login in progress)"
    if conn.dialect.name != "sqlite":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({ACCOUNT_CHAIN_LOCK})")
    return account_head(conn)


def account_head(conn: Connection) -> AccountEventRow | None:
    row = conn.execute(
        sa.select(*ACCOUNT_EVENT_COLUMNS).order_by(account_events_t.c.seq.desc()).limit(1)
    ).first()
    return AccountEventRow(*row) if row else None


def insert_account_event(conn: Connection, row: AccountEventRow) -> None:
    conn.execute(account_events_t.insert().values(**row._asdict()))


def account_events(conn: Connection) -> list[AccountEventRow]:
    stmt = sa.select(*ACCOUNT_EVENT_COLUMNS).order_by(account_events_t.c.seq)
    return [AccountEventRow(*r) for r in conn.execute(stmt)]

"""Persistence: the schema, connections, transactions and every query, on SQLite and PostgreSQL.

This is the only module (with its Alembic migrations) that imports SQLAlchemy. It speaks in
plain rows (named tuples) and leaves meaning to the engine. Three things it takes care of:

* **Transactions that serialise writers per instance.** On SQLite a write transaction starts
  with ``BEGIN IMMEDIATE`` (the write lock is taken up front, so two writers never deadlock
  upgrading a read lock); on PostgreSQL the instance row is locked with ``SELECT ... FOR
  UPDATE`` so writers on different instances never wait for each other.
* **Faults become WorkflowErrors**, once, here, from one table (``_FAULTS``): a database that
  is down, locked, read-only or full is a :class:`DatabaseUnavailable`; a missing or foreign
  schema is :class:`SchemaOutOfDate`; a unique-key collision with a concurrent writer is run
  again once and then a :class:`Conflict`. What is safe to retry (a transaction that never
  committed: "database is locked", a serialization failure, a deadlock) is retried here.
* **Bounded waits.** No call waits for another session's lock longer than ``lock_timeout``
  (PostgreSQL's ``lock_timeout`` per session, SQLite's busy handler and the retry deadline);
  then it fails with one line naming what it waited for. ``statement_timeout`` optionally
  bounds every statement on PostgreSQL.
* **Streaming reads** for verify and digest, so memory stays flat in the number of events.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from workflow.errors import (
    Conflict,
    DatabaseUnavailable,
    DefinitionChanged,
    SchemaOutOfDate,
    UsageError,
    WorkflowError,
)
from workflow.runtime.text import ID_MAX, KEY_MAX

#: The Alembic revision this code expects (tests check it is the migrations' head).
SCHEMA_REVISION = "0006"
#: Alembic's bookkeeping table, named so workflow can share a database with other apps.
VERSION_TABLE = "workflow_alembic_version"

T = TypeVar("T")


# --------------------------------------------------------------------------- schema


class Base(DeclarativeBase):
    pass


class DefinitionTable(Base):
    """Each program version as it was when first used, so instances keep their exact rules."""

    __tablename__ = "workflow_definitions"
    id: Mapped[int] = mapped_column(primary_key=True)
    program: Mapped[str] = mapped_column(sa.String(ID_MAX))
    version: Mapped[int]
    content_hash: Mapped[str] = mapped_column(sa.String(64))
    source_file: Mapped[str] = mapped_column(sa.Text)
    source_text: Mapped[str] = mapped_column(sa.Text)
    stored_at: Mapped[str] = mapped_column(sa.String(32))
    #: ``bundled``, or the extra file it was read from (revision 0004).
    source: Mapped[str] = mapped_column(sa.Text, server_default="bundled")
    __table_args__ = (sa.UniqueConstraint("program", "version", name="uq_definition_version"),)


class InstanceTable(Base):
    """The current state of each instance: a cache of its last event, checked by verify."""

    __tablename__ = "workflow_instances"
    id: Mapped[int] = mapped_column(primary_key=True)
    program: Mapped[str] = mapped_column(sa.String(ID_MAX))
    program_version: Mapped[int]
    definition_id: Mapped[int] = mapped_column(sa.ForeignKey("workflow_definitions.id"))
    area_code: Mapped[str] = mapped_column(sa.String(6))
    province_code: Mapped[str] = mapped_column(sa.String(2))
    fiscal_year: Mapped[int]
    # 0 for the first instance of (program, area, fiscal year); allowed duplicates count up.
    # The unique constraint below is what refuses a concurrent duplicate start.
    duplicate_no: Mapped[int] = mapped_column(default=0)
    title: Mapped[str | None] = mapped_column(sa.Text)
    state: Mapped[str] = mapped_column(sa.String(ID_MAX))
    active: Mapped[str] = mapped_column(sa.Text)
    version: Mapped[int]
    head_hash: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[str] = mapped_column(sa.String(32))
    updated_at: Mapped[str] = mapped_column(sa.String(32))
    __table_args__ = (
        sa.UniqueConstraint(
            "program", "area_code", "fiscal_year", "duplicate_no", name="uq_instance_area_year"
        ),
        sa.Index(
            "ix_instances_report", "program", "province_code", "state", "active", "fiscal_year"
        ),
        sa.Index("ix_instances_area", "area_code"),
    )


class EventTable(Base):
    """The audit trail: append-only (database triggers refuse UPDATE and DELETE)."""

    __tablename__ = "workflow_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[int] = mapped_column(sa.ForeignKey("workflow_instances.id"))
    seq: Mapped[int]
    trigger: Mapped[str] = mapped_column(sa.String(ID_MAX))
    from_state: Mapped[str | None] = mapped_column(sa.Text)
    to_state: Mapped[str] = mapped_column(sa.Text)
    actor: Mapped[str] = mapped_column(sa.Text)
    role: Mapped[str] = mapped_column(sa.String(ID_MAX))
    os_user: Mapped[str] = mapped_column(sa.Text)
    at: Mapped[str] = mapped_column(sa.String(32))
    evidence: Mapped[str] = mapped_column(sa.Text)
    note: Mapped[str | None] = mapped_column(sa.Text)
    definition_hash: Mapped[str] = mapped_column(sa.String(64))
    policy: Mapped[str] = mapped_column(sa.String(ID_MAX))
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    hash: Mapped[str] = mapped_column(sa.String(64))
    __table_args__ = (
        sa.UniqueConstraint("instance_id", "seq", name="uq_event_seq"),
        sa.Index("ix_events_at", "at"),
        sa.Index("ix_events_actor", "actor"),
    )


class IdempotencyTable(Base):
    """Keys of idempotent requests and the event (or instance) they produced, with that
    event's hash so a key row pointed at another event is detected."""

    __tablename__ = "workflow_idempotency"
    key: Mapped[str] = mapped_column(sa.String(KEY_MAX), primary_key=True)
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    instance_id: Mapped[int]
    seq: Mapped[int]
    created_at: Mapped[str] = mapped_column(sa.String(32))
    event_hash: Mapped[str] = mapped_column(sa.String(64), server_default="")


class GrantTable(Base):
    """The grants in force: one actor, one role, optionally one area ('' = all) and program."""

    __tablename__ = "workflow_grants"
    id: Mapped[int] = mapped_column(primary_key=True)
    actor: Mapped[str] = mapped_column(sa.Text)
    role: Mapped[str] = mapped_column(sa.String(ID_MAX))
    area_code: Mapped[str] = mapped_column(sa.String(6))
    program: Mapped[str] = mapped_column(sa.String(ID_MAX))
    granted_by: Mapped[str] = mapped_column(sa.Text)
    granted_at: Mapped[str] = mapped_column(sa.String(32))
    __table_args__ = (
        sa.UniqueConstraint("actor", "role", "area_code", "program", name="uq_grant"),
        sa.Index("ix_grants_actor", "actor", "role"),
    )


class GrantEventTable(Base):
    """Every grant and revocation, hash-chained (one chain: they are rare and global)."""

    __tablename__ = "workflow_grant_events"
    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    action: Mapped[str] = mapped_column(sa.String(10))
    scope: Mapped[str] = mapped_column(sa.Text)
    by: Mapped[str] = mapped_column(sa.Text)
    os_user: Mapped[str] = mapped_column(sa.Text)
    at: Mapped[str] = mapped_column(sa.String(32))
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    hash: Mapped[str] = mapped_column(sa.String(64))


class DenialTable(Base):
    """Attempts refused for want of a permission; written after the refused change rolled
    back, hash-chained in ``seq`` order (one chain, like grant events)."""

    __tablename__ = "workflow_denials"
    id: Mapped[int] = mapped_column(primary_key=True)
    actor: Mapped[str] = mapped_column(sa.Text)
    role: Mapped[str] = mapped_column(sa.String(ID_MAX))
    action: Mapped[str] = mapped_column(sa.String(ID_MAX))
    program: Mapped[str | None] = mapped_column(sa.String(ID_MAX))
    instance_id: Mapped[int | None]
    area_code: Mapped[str | None] = mapped_column(sa.String(6))
    reason: Mapped[str] = mapped_column(sa.Text)
    os_user: Mapped[str] = mapped_column(sa.Text)
    at: Mapped[str] = mapped_column(sa.String(32))
    seq: Mapped[int | None]
    prev_hash: Mapped[str] = mapped_column(sa.String(64), server_default="")
    hash: Mapped[str] = mapped_column(sa.String(64), server_default="")
    __table_args__ = (sa.Index("ix_denials_seq", "seq", unique=True),)


definitions_t = cast(sa.Table, DefinitionTable.__table__)
instances_t = cast(sa.Table, InstanceTable.__table__)
events_t = cast(sa.Table, EventTable.__table__)
keys_t = cast(sa.Table, IdempotencyTable.__table__)
grants_t = cast(sa.Table, GrantTable.__table__)
grant_events_t = cast(sa.Table, GrantEventTable.__table__)
denials_t = cast(sa.Table, DenialTable.__table__)


# --------------------------------------------------------------------------- rows


class InstanceRow(NamedTuple):
    id: int
    program: str
    program_version: int
    definition_id: int
    area_code: str
    province_code: str
    fiscal_year: int
    duplicate_no: int
    title: str | None
    state: str
    active: str
    version: int
    head_hash: str
    created_at: str
    updated_at: str


class EventRow(NamedTuple):
    id: int
    instance_id: int
    seq: int
    trigger: str
    from_state: str | None
    to_state: str
    actor: str
    role: str
    os_user: str
    at: str
    evidence: str
    note: str | None
    definition_hash: str
    policy: str
    prev_hash: str
    hash: str


class DefinitionRow(NamedTuple):
    id: int
    program: str
    version: int
    content_hash: str
    source_file: str
    source_text: str
    stored_at: str
    source: str


class GrantRow(NamedTuple):
    id: int
    actor: str
    role: str
    area_code: str
    program: str
    granted_by: str
    granted_at: str


class GrantEventRow(NamedTuple):
    seq: int
    action: str
    scope: str
    by: str
    os_user: str
    at: str
    prev_hash: str
    hash: str


class DenialRow(NamedTuple):
    id: int
    actor: str
    role: str
    action: str
    program: str | None
    instance_id: int | None
    area_code: str | None
    reason: str
    os_user: str
    at: str
    seq: int | None = None
    prev_hash: str = ""
    hash: str = ""


class KeyRow(NamedTuple):
    key: str
    request_hash: str
    instance_id: int
    seq: int
    created_at: str
    event_hash: str


GRANT_COLUMNS = [grants_t.c[name] for name in GrantRow._fields]
GRANT_EVENT_COLUMNS = [grant_events_t.c[name] for name in GrantEventRow._fields]
DENIAL_COLUMNS = [denials_t.c[name] for name in DenialRow._fields]
INSTANCE_COLUMNS = [instances_t.c[name] for name in InstanceRow._fields]
EVENT_COLUMNS = [events_t.c[name] for name in EventRow._fields]
DEFINITION_COLUMNS = [definitions_t.c[name] for name in DefinitionRow._fields]
KEY_COLUMNS = [keys_t.c[name] for name in KeyRow._fields]


# --------------------------------------------------------------------------- errors


#: How long a call may wait for another session's lock, unless configured (seconds).
DEFAULT_LOCK_TIMEOUT = 30.0
LOCK_TIMEOUT_ENV = "WORKFLOW_LOCK_TIMEOUT"
STATEMENT_TIMEOUT_ENV = "WORKFLOW_STATEMENT_TIMEOUT"
_MAX_TIMEOUT = 86_400.0


@dataclass(frozen=True)
class Timeouts:
    """How long the engine waits: ``lock`` for other sessions' locks (the whole call gives up
    after that long, retries included), ``statement`` for any one PostgreSQL statement
    (``None``: the server's own setting stays in force)."""

    lock: float = DEFAULT_LOCK_TIMEOUT
    statement: float | None = None

    @classmethod
    def make(
        cls, lock: float | str | None = None, statement: float | str | None = None
    ) -> Timeouts:
        """From explicit values, else the environment, else the defaults; checked here once."""
        if lock is None:
            lock = os.environ.get(LOCK_TIMEOUT_ENV) or None
        if statement is None:
            statement = os.environ.get(STATEMENT_TIMEOUT_ENV) or None
        return cls(
            lock=DEFAULT_LOCK_TIMEOUT if lock is None else _seconds(lock, "lock timeout"),
            statement=None if statement is None else _seconds(statement, "statement timeout"),
        )


def _seconds(value: float | str, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{what} is a number of seconds, not {value!r}") from None
    if not 0 < number <= _MAX_TIMEOUT:  # also refuses NaN
        raise UsageError(f"{what} must be more than 0 and at most {_MAX_TIMEOUT:g} seconds")
    return number


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class _Fault(NamedTuple):
    """What a driver error means: ``kind`` decides what ``run`` does with it."""

    kind: str  # "retry" (never committed, run again), "lock", "statement", "collision", "down"
    reason: str


#: Driver errors by PostgreSQL SQLSTATE or SQLite result-code name: the one table from which
#: every foreign error is translated (anything else keeps the driver's first line).
_FAULTS: dict[str, _Fault] = {
    "40001": _Fault("retry", "a concurrent transaction conflicted with this one"),
    "40P01": _Fault("retry", "deadlock with another session"),
    "55P03": _Fault("lock", "gave up after waiting {timeout:g} s for {what}"),
    "57014": _Fault(
        "statement",
        "a statement was cancelled after {statement} (statement timeout, "
        f"--statement-timeout / {STATEMENT_TIMEOUT_ENV}) or by an administrator",
    ),
    "23505": _Fault("collision", "a concurrent change collided with this one; try again"),
    "25006": _Fault(
        "down", "the database is read-only (a standby, or default_transaction_read_only)"
    ),
    "42501": _Fault(
        "down", "the database role lacks a privilege on workflow's tables (grant it, or "
        "connect as their owner)"
    ),
    "53100": _Fault("down", "the database server's disk is full"),
    "53300": _Fault("down", "the database server has no connection slots left"),
    "57P01": _Fault("down", "the database server is shutting down (administrator command)"),
    "57P02": _Fault("down", "the database server is in crash recovery"),
    "57P03": _Fault("down", "the database server is starting up or shutting down"),
    "SQLITE_BUSY": _Fault("retry", "database is locked by another writer"),
    "SQLITE_LOCKED": _Fault("retry", "database is locked by another writer"),
    "SQLITE_CONSTRAINT_UNIQUE": _Fault(
        "collision", "a concurrent change collided with this one; try again"
    ),
    "SQLITE_CONSTRAINT_PRIMARYKEY": _Fault(
        "collision", "a concurrent change collided with this one; try again"
    ),
}
_LOCKED = ("database is locked", "database table is locked", "database schema is locked")
#: What a call waits for when no statement said more precisely (``conn.info`` key).
WAIT_KEY = "workflow_waiting_for"
#: Whether a PostgreSQL session's timeouts are set (``conn.info`` key, see _configure_postgres).
SESSION_KEY = "workflow_session_set"


def _fault(e: BaseException | None) -> _Fault | None:
    """The table's entry for a driver error (SQLAlchemy's wrapper or the driver's own)."""
    if e is None:
        return None
    orig = getattr(e, "orig", None) or e
    code = getattr(orig, "sqlstate", None) or getattr(orig, "sqlite_errorname", None)
    found = _FAULTS.get(code) if isinstance(code, str) else None
    if found is None and any(s in str(orig) for s in _LOCKED):
        found = _FAULTS["SQLITE_BUSY"]
    return found


def _is_locked(e: BaseException) -> bool:
    fault = _fault(e)
    return fault is not None and fault.reason.startswith("database is locked")


def _first_line(e: BaseException) -> str:
    orig = getattr(e, "orig", None) or e
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


# Query parameters that carry a secret (libpq's `password`, `sslpassword`, ...).
_SECRET_PARAM = re.compile(r"pass|pwd|secret|token", re.I)
_USERINFO = re.compile(r"(://[^/?#@:]*:)[^/?#@]*@")
_QUERY_SECRET = re.compile(r"([?&;][^=&;#]*(?:pass|pwd|secret|token)[^=&;#]*=)[^&;#]*", re.I)
HIDDEN = "***"


def safe_url(url: str) -> str:
    """``url`` as it may be shown: the password of ``user:pw@`` and of any ``?password=``
    (or other secret) query parameter replaced by ``***``. The one function every message,
    hint and log uses to show a database URL; a URL SQLAlchemy cannot parse is masked by
    pattern instead."""
    try:
        parsed = make_url(url)
    except Exception:
        return _QUERY_SECRET.sub(rf"\g<1>{HIDDEN}", _USERINFO.sub(rf"\g<1>{HIDDEN}@", url))
    query = {k: (HIDDEN if _SECRET_PARAM.search(k) else v) for k, v in parsed.query.items()}
    shown = parsed.set(query=query).render_as_string(hide_password=True)
    return _QUERY_SECRET.sub(rf"\g<1>{HIDDEN}", _USERINFO.sub(rf"\g<1>{HIDDEN}@", shown))


def url_secrets(url: str) -> tuple[str, ...]:
    """The secrets written in ``url`` (its password, secret query values), so that text which
    may quote them (a driver's message, a traceback) can be scrubbed with :func:`scrub`."""
    found = [m.group(0).rsplit("=", 1)[1] for m in _QUERY_SECRET.finditer(url)]
    m = _USERINFO.search(url)
    if m is not None:
        found.append(url[m.end(1) : m.end() - 1])
    try:
        parsed = make_url(url)
    except Exception:
        pass
    else:
        if parsed.password:
            found.append(str(parsed.password))
        for k, v in parsed.query.items():
            if _SECRET_PARAM.search(k):
                found.extend([v] if isinstance(v, str) else v)
    # Longest first, so a secret containing another is replaced whole.
    return tuple(sorted({s for s in found if s and s != HIDDEN}, key=len, reverse=True))


def scrub(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret in ``secrets`` (and its URL-quoted form) replaced by ``***``."""
    from urllib.parse import quote, unquote

    for secret in secrets:
        for form in {secret, unquote(secret), quote(secret, safe="")}:
            if form:
                text = text.replace(form, HIDDEN)
    return text


# --------------------------------------------------------------------------- the store


class _AccessQueries:
    """Grants, their chain and denials (mixed into Store)."""

    is_sqlite: bool
    _q: dict[str, str]

    def grants_for(self, conn: Connection, actor: str, *, lock: bool = False) -> list[GrantRow]:
        """The actor's grants; with ``lock``, held for the rest of the transaction so that a
        revoke cannot commit between this check and the change it allows (``FOR SHARE`` on
        PostgreSQL: a revoke's DELETE waits for this transaction, or this read waits for
        the revoke and then no longer sees the grant; SQLite's write lock is held already)."""
        # On the path of every change, hence driver SQL (see the hot-path note below).
        cur = conn.connection.cursor()
        if lock:
            conn.info[WAIT_KEY] = f"the grants of {actor!r} (a grant or revoke in progress)"
        cur.execute(self._q["grants_locked" if lock else "grants"], {"actor": actor})
        return [GrantRow(*r) for r in cur.fetchall()]

    def all_grants(self, conn: Connection) -> list[GrantRow]:
        stmt = sa.select(*GRANT_COLUMNS).order_by(
            grants_t.c.actor, grants_t.c.role, grants_t.c.area_code, grants_t.c.program
        )
        return [GrantRow(*r) for r in conn.execute(stmt)]

    def find_grant(
        self, conn: Connection, actor: str, role: str, area: str, program: str
    ) -> GrantRow | None:
        row = conn.execute(
            sa.select(*GRANT_COLUMNS).where(
                grants_t.c.actor == actor,
                grants_t.c.role == role,
                grants_t.c.area_code == area,
                grants_t.c.program == program,
            )
        ).first()
        return GrantRow(*row) if row else None

    def insert_grant(self, conn: Connection, values: dict[str, Any]) -> None:
        conn.execute(grants_t.insert().values(**values))

    def delete_grant(self, conn: Connection, grant_id: int) -> None:
        conn.execute(grants_t.delete().where(grants_t.c.id == grant_id))

    def lock_grant_chain(self, conn: Connection) -> GrantEventRow | None:
        """Serialise grant changes (rare) and return the chain's head. Take it before reading
        the grant a change is about, so that two grants or revokes of the same grant see
        each other's outcome instead of both acting on what they read before."""
        conn.info[WAIT_KEY] = "the grant trail (another grant or revoke in progress)"
        if not self.is_sqlite:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7201952702)")
        return self.grant_head(conn)

    def grant_head(self, conn: Connection) -> GrantEventRow | None:
        row = conn.execute(
            sa.select(*GRANT_EVENT_COLUMNS).order_by(grant_events_t.c.seq.desc()).limit(1)
        ).first()
        return GrantEventRow(*row) if row else None

    def insert_grant_event(self, conn: Connection, row: GrantEventRow) -> None:
        conn.execute(grant_events_t.insert().values(**row._asdict()))

    def grant_events(self, conn: Connection) -> list[GrantEventRow]:
        return [
            GrantEventRow(*r)
            for r in conn.execute(sa.select(*GRANT_EVENT_COLUMNS).order_by(grant_events_t.c.seq))
        ]

    def lock_denial_chain(self, conn: Connection) -> DenialRow | None:
        """Serialise denial records (one chain) and return the chain's head."""
        if not self.is_sqlite:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7201952703)")
        return self.denial_head(conn)

    def denial_head(self, conn: Connection) -> DenialRow | None:
        row = conn.execute(
            sa.select(*DENIAL_COLUMNS)
            .where(denials_t.c.seq.is_not(None))
            .order_by(denials_t.c.seq.desc())
            .limit(1)
        ).first()
        return DenialRow(*row) if row else None

    def insert_denial(self, conn: Connection, values: dict[str, Any]) -> None:
        conn.execute(denials_t.insert().values(**values))

    def denials(self, conn: Connection, limit: int | None = None) -> list[DenialRow]:
        stmt = sa.select(*DENIAL_COLUMNS).order_by(denials_t.c.seq, denials_t.c.id)
        if limit:
            stmt = stmt.limit(limit)
        return [DenialRow(*r) for r in conn.execute(stmt)]


class Store(_AccessQueries):
    """A database holding workflow's tables."""

    def __init__(self, url: str, timeouts: Timeouts | None = None) -> None:
        self.url = url
        self.timeouts = timeouts if timeouts is not None else Timeouts.make()
        self.safe_url = safe_url(url)
        self._secrets = url_secrets(url)
        try:
            parsed = make_url(url)
        except (sa_exc.ArgumentError, ValueError) as e:  # ValueError: a port that is no number
            raise DatabaseUnavailable(
                self.safe_url, scrub(f"not a database URL ({e})", self._secrets)
            ) from None
        self.dialect = parsed.get_backend_name()
        self.is_sqlite = self.dialect == "sqlite"
        self.sqlite_path: Path | None = None
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            db = parsed.database or ""
            if db and db != ":memory:" and not db.startswith("file:"):
                self.sqlite_path = Path(db)
            kwargs["connect_args"] = {"timeout": min(0.2, self.timeouts.lock)}
        elif self.dialect == "postgresql":
            kwargs["connect_args"] = {"connect_timeout": 5}
            kwargs["pool_pre_ping"] = False
        try:
            self.engine = sa.create_engine(url, **kwargs)
        except (sa_exc.ArgumentError, ImportError, sa_exc.NoSuchModuleError) as e:
            raise DatabaseUnavailable(self.safe_url, scrub(_first_line(e), self._secrets)) from e
        if self.is_sqlite:
            self._configure_sqlite()
        elif self.dialect == "postgresql":
            self._configure_postgres()
        self._schema_checked = False
        self._file_seen = False
        self._local = threading.local()
        self._dbapi: Any = cast(Any, self.engine.dialect).dbapi
        # Driver errors raised on the hot path (raw cursors) are handled like SQLAlchemy's.
        self._driver_errors: tuple[type[BaseException], ...] = (
            sa_exc.DBAPIError,
            sa_exc.SQLAlchemyError,
            OSError,
            self._dbapi.Error,
        )
        self._prepare()

    def _configure_sqlite(self) -> None:
        @sa_event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event (below) decide how a transaction begins.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            try:
                # WAL lets readers run beside the writer; synchronous=FULL makes every commit
                # durable (an audit trail that forgets a committed fire is worse than slow).
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=FULL")
                cur.execute("PRAGMA foreign_keys=ON")
                # Short: "database is locked" is retried by `run` up to the lock timeout.
                cur.execute(f"PRAGMA busy_timeout={min(200, _ms(self.timeouts.lock))}")
            except Exception:
                # A read-only file cannot switch journal mode; reads still work, writes will
                # report the read-only database clearly.
                pass
            finally:
                cur.close()

        @sa_event.listens_for(self.engine, "begin")
        def _on_begin(conn: Connection) -> None:
            write = conn.get_execution_options().get("workflow_write", False)
            # Straight to the driver: this runs on every transaction.
            conn.connection.dbapi_connection.execute(  # type: ignore[union-attr]
                "BEGIN IMMEDIATE" if write else "BEGIN"
            )

    def _configure_postgres(self) -> None:
        lock_ms = _ms(self.timeouts.lock)
        statement = self.timeouts.statement

        settings = [f"SET lock_timeout = {lock_ms}"]
        if statement is not None:
            settings.append(f"SET statement_timeout = {_ms(statement)}")

        # Per session, once per connection: the server default (0) would let a fire wait
        # forever behind a row or table lock. The settings ride in the session's first
        # transaction (a transaction of their own would be one more commit per command) and
        # count as made once it commits; a rollback undoes them, so the next one says them again.
        @sa_event.listens_for(self.engine, "begin")
        def _on_begin(conn: Connection) -> None:
            if not conn.info.get(SESSION_KEY):
                dbapi_conn: Any = conn.connection.dbapi_connection
                for sql in settings:
                    dbapi_conn.execute(sql)

        @sa_event.listens_for(self.engine, "commit")
        def _on_commit(conn: Connection) -> None:
            conn.info[SESSION_KEY] = True

    def dispose(self) -> None:
        self._discard()
        self.engine.dispose()

    # -- connections and faults

    def _translate(self, e: BaseException, waiting_for: str | None = None) -> WorkflowError:
        """The WorkflowError for a driver error, from ``_FAULTS`` (``waiting_for``: what the
        failed statement was waiting for, when it said)."""
        if isinstance(e, WorkflowError):
            return e
        # A driver's message may quote the connection string; never its password.
        reason = scrub(_first_line(e), self._secrets)
        fault = _fault(e)
        timeout = self.timeouts.lock
        if fault is not None and fault.kind == "collision":
            return Conflict(fault.reason)
        if fault is not None and fault.reason.startswith("database is locked"):
            reason = (
                f"{fault.reason}; gave up after waiting {timeout:g} s "
                f"(lock timeout, --lock-timeout / {LOCK_TIMEOUT_ENV})"
            )
        elif fault is not None and fault.kind == "lock":
            what = waiting_for or "a lock held by another session"
            reason = (
                fault.reason.format(timeout=timeout, what=what)
                + f" (lock timeout, --lock-timeout / {LOCK_TIMEOUT_ENV})"
            )
        elif fault is not None and fault.kind == "statement":
            limit = self.timeouts.statement
            reason = fault.reason.format(
                statement=f"{limit:g} s" if limit is not None else "the server's limit"
            )
        elif fault is not None:
            reason = fault.reason
        elif "no such table" in reason or ("does not exist" in reason and "relation" in reason):
            if not self._schema_checked:
                return SchemaOutOfDate(self.safe_url, None, SCHEMA_REVISION)
            # The schema is at the current revision, yet a table is gone: `workflow init`
            # would not help (it sees a current schema); say what happened instead.
            return DatabaseUnavailable(
                self.safe_url,
                f"{reason} although the schema is at revision {SCHEMA_REVISION}: the "
                "database was damaged; restore it from a backup",
            )
        return DatabaseUnavailable(self.safe_url, reason)

    @contextmanager
    def connect(self, write: bool = False, lock_wait: float | None = None) -> Iterator[Connection]:
        """A connection in a transaction that commits on success and rolls back on error;
        ``lock_wait``: what is left of the call's lock timeout, for a retry (PostgreSQL)."""
        conn, kept = self._checkout(write)
        conn.info.pop(WAIT_KEY, None)
        committing = False
        try:
            trans = conn.begin()
            try:
                if lock_wait is not None and not self.is_sqlite:
                    conn.exec_driver_sql(f"SET LOCAL lock_timeout = {_ms(lock_wait)}")
                yield conn
            except BaseException:
                if trans.is_active:
                    trans.rollback()
                raise
            committing = True
            trans.commit()
        except WorkflowError:
            raise  # a refusal: the transaction rolled back cleanly, the connection is fine
        except BaseException as e:
            # A kept connection the server dropped while idle fails on its first use; the
            # transaction never reached COMMIT, so running it again cannot apply it twice.
            stale = kept and not committing and self._is_disconnect(e, conn)
            waiting_for = None
            with suppress(Exception):
                waiting_for = conn.info.get(WAIT_KEY)
            # A connection that saw a driver error (or an interrupt) is not trusted again:
            # it is closed and the next transaction takes a fresh one.
            self._discard()
            if not isinstance(e, self._driver_errors):
                raise
            error = self._translate(e, waiting_for)
            error.stale_connection = stale  # type: ignore[attr-defined]
            raise error from e
        finally:
            if not kept:
                with suppress(Exception):
                    conn.close()

    def _is_disconnect(self, e: BaseException, conn: Connection) -> bool:
        if isinstance(e, sa_exc.DBAPIError):
            return bool(e.connection_invalidated)
        if self.is_sqlite or not isinstance(e, self._dbapi.Error):
            return False
        try:
            dbapi_conn = conn.connection.dbapi_connection
            return bool(self.engine.dialect.is_disconnect(e, dbapi_conn, None))
        except Exception:
            return False

    def _fresh(self, write: bool) -> Connection:
        try:
            conn = self.engine.connect()
        except self._driver_errors as e:
            raise self._translate(e) from e
        if write:
            conn.execution_options(workflow_write=True)
        return conn

    def _checkout(self, write: bool) -> tuple[Connection, bool]:
        """A connection for one transaction, and whether it is kept for the next one.

        Each thread keeps its connections between transactions: checking one out of the pool
        and back costs several times what a short transaction does. Two, in fact: the write
        one carries the option that begins IMMEDIATE on SQLite. They are dropped when the
        process forks, when the SQLite file is replaced, and after a driver error; a kept
        PostgreSQL connection the server dropped while idle is replaced and the transaction
        run again (see ``run``).
        """
        file_id = self._file_identity()
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            if getattr(local, "pid", None) is not None:
                # A forked child must not share its parent's connections: forget them
                # unclosed (closing would disturb the parent), as SQLAlchemy advises.
                self.engine.dispose(close=False)
            local.pid = os.getpid()
            local.file = file_id
            local.conns = {}
        elif local.file != file_id:
            # The file was replaced: this thread's connections and the pool's idle ones are
            # open on the old (unlinked) file and must not be used again.
            self._discard()
            self.engine.dispose()
            local.file = file_id
            local.conns = {}
        conn: Connection | None = local.conns.get(write)
        if conn is not None and conn.in_transaction():
            # A transaction opened inside another on this thread gets a connection of its own.
            return self._fresh(write), False
        if conn is None or conn.closed or conn.invalidated:
            conn = self._fresh(write)
            local.conns[write] = conn
        return conn, True

    def _file_identity(self) -> tuple[int, int] | None:
        """(device, inode) of the SQLite file: a kept connection must not go on writing to a
        file that was deleted or replaced under it (its writes would silently vanish)."""
        if self.sqlite_path is None:
            return None
        try:
            st = os.stat(self.sqlite_path)
        except FileNotFoundError:
            self._discard()
            if self._file_seen:
                raise DatabaseUnavailable(
                    self.safe_url, "the database file was removed while in use"
                ) from None
            # Never let a read create an empty database file by accident.
            raise SchemaOutOfDate(self.safe_url, None, SCHEMA_REVISION) from None
        self._file_seen = True
        return (st.st_dev, st.st_ino)

    def _discard(self) -> None:
        conns = getattr(self._local, "conns", None) or {}
        for conn in list(conns.values()):
            with suppress(Exception):
                conn.close()
        conns.clear()

    def run(
        self, fn: Callable[[Connection], T], *, write: bool = False, timeout: float | None = None
    ) -> T:
        """Run ``fn`` in one transaction; run it again while that is safe and time remains.

        Only whole transactions that never committed are run again, so a retry re-reads
        everything it decides on: "database is locked", serialization failures, deadlocks and
        a kept connection the server dropped, until ``timeout`` (default: the lock timeout)
        has passed since the call began; a unique-key collision (another writer committed the
        same key first) once, when the re-read answers for it (a duplicate, the first result
        of an idempotency key, a grant already held), else it is a :class:`Conflict`.
        """
        deadline = time.monotonic() + (self.timeouts.lock if timeout is None else timeout)
        delay = 0.002
        collided = False
        lock_wait: float | None = None  # the first attempt has the whole lock timeout
        while True:
            try:
                with self.connect(write=write, lock_wait=lock_wait) as conn:
                    self.check_schema(conn)
                    return fn(conn)
            except Conflict as e:
                fault = _fault(e.__cause__)
                if collided or fault is None or fault.kind != "collision":
                    raise  # a refusal of fn's own, or a second collision
                collided = True
                continue
            except DatabaseUnavailable as e:
                fault = _fault(e.__cause__)
                retryable = (fault is not None and fault.kind == "retry") or getattr(
                    e, "stale_connection", False
                )
                if not retryable or time.monotonic() > deadline:
                    # The driver's error stays the cause, for callers and --traceback.
                    raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.1)
            # A retry waits no longer than what is left, so the call stays within the bound.
            lock_wait = max(0.001, deadline - time.monotonic())

    # -- schema

    def current_revision(self, conn: Connection | None = None) -> str | None:
        """The schema revision recorded in the database (None: no schema), read on ``conn``
        or, without one, in a transaction of its own."""
        if conn is None:
            try:
                with self.connect() as own:
                    return self.current_revision(own)
            except SchemaOutOfDate:
                return None
        if not sa.inspect(conn).has_table(VERSION_TABLE):
            return None
        return conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()

    def check_schema(self, conn: Connection | None = None) -> None:
        """Refuse a schema of another revision, once per Store; on ``conn`` when given, so
        the first transaction of a command checks it without a transaction of its own."""
        if self._schema_checked:
            return
        current = self.current_revision(conn)
        if current != SCHEMA_REVISION:
            if current is not None and current > SCHEMA_REVISION:
                raise SchemaOutOfDate(self.safe_url, current, SCHEMA_REVISION, newer=True)
            raise SchemaOutOfDate(self.safe_url, current, SCHEMA_REVISION)
        self._schema_checked = True

    def init(self) -> tuple[str | None, str]:
        """Create or upgrade the schema with Alembic; return (revision before, after)."""
        from workflow.storage import migrations

        if self.sqlite_path is not None and not self.sqlite_path.exists():
            try:
                self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
                self.sqlite_path.touch()
            except OSError as e:
                raise DatabaseUnavailable(self.safe_url, e.strerror or str(e)) from e
        before = self.current_revision()
        if before is not None and before > SCHEMA_REVISION:
            raise SchemaOutOfDate(self.safe_url, before, SCHEMA_REVISION, newer=True)
        try:
            with self.engine.connect() as raw:
                conn = raw.execution_options(workflow_write=True)
                migrations.upgrade(conn)
        except WorkflowError:
            raise
        except (sa_exc.DBAPIError, sa_exc.SQLAlchemyError, OSError) as e:
            raise self._translate(e) from e
        self._schema_checked = False
        self.check_schema()
        return before, SCHEMA_REVISION

    # -- definitions

    def ensure_definition(
        self,
        conn: Connection,
        program: str,
        version: int,
        content_hash: str,
        source_file: str,
        source_text: str,
        now: str,
        source: str = "bundled",
    ) -> int:
        """The id of this (program, version), storing it on first use (in ``conn``'s
        transaction; a concurrent first use collides on the unique key and is retried)."""
        row = conn.execute(
            sa.select(*DEFINITION_COLUMNS).where(
                definitions_t.c.program == program, definitions_t.c.version == version
            )
        ).first()
        if row is None:
            result = conn.execute(
                definitions_t.insert().values(
                    program=program,
                    version=version,
                    content_hash=content_hash,
                    source_file=source_file,
                    source_text=source_text,
                    stored_at=now,
                    source=source,
                )
            )
            return int(result.inserted_primary_key[0])  # type: ignore[index]
        found = DefinitionRow(*row)
        if found.content_hash != content_hash:
            raise DefinitionChanged(program, version, found.content_hash, content_hash)
        return found.id

    def definition(self, conn: Connection, definition_id: int) -> DefinitionRow:
        """A stored program version, read on the caller's connection (inside a fire, the
        fire's own transaction: no second connection, no nested transaction)."""
        row = conn.execute(
            sa.select(*DEFINITION_COLUMNS).where(definitions_t.c.id == definition_id)
        ).one()
        return DefinitionRow(*row)

    # -- statements used inside a transaction (the engine composes them)

    # The statements below run on every start and fire. They go straight to the driver's
    # cursor as SQL prepared once per dialect: building and caching SQLAlchemy constructs
    # cost more than the statements themselves (see docs/performance.md).

    def _sql(self, sql: str) -> str:
        """Driver SQL from ``:name`` placeholders (pyformat for psycopg)."""
        if self.engine.dialect.paramstyle == "pyformat":
            return re.sub(r":(\w+)", r"%(\1)s", sql)
        return sql

    def _prepare(self) -> None:
        cols = ", ".join(InstanceRow._fields)
        ecols = [c for c in EventRow._fields if c != "id"]
        lock = "" if self.is_sqlite else " FOR UPDATE"
        self._q = {
            "lock": self._sql(f"SELECT {cols} FROM workflow_instances WHERE id = :id{lock}"),
            "get": self._sql(f"SELECT {cols} FROM workflow_instances WHERE id = :id"),
            "triggers": self._sql(
                "SELECT DISTINCT trigger FROM workflow_events WHERE instance_id = :id"
            ),
            "event": self._sql(
                f"INSERT INTO workflow_events ({', '.join(ecols)}) "
                f"VALUES ({', '.join(':' + c for c in ecols)}) RETURNING id"
            ),
            "advance": self._sql(
                "UPDATE workflow_instances SET state = :state, active = :active, "
                "version = :version + 1, head_hash = :head_hash, updated_at = :now "
                "WHERE id = :id AND version = :version"
            ),
            "grants": self._sql(
                f"SELECT {', '.join(GrantRow._fields)} FROM workflow_grants WHERE actor = :actor"
            ),
            "grants_locked": self._sql(
                f"SELECT {', '.join(GrantRow._fields)} FROM workflow_grants WHERE actor = :actor"
                + ("" if self.is_sqlite else " FOR SHARE")
            ),
            "event_many": self._sql(
                f"INSERT INTO workflow_events ({', '.join(ecols)}) "
                f"VALUES ({', '.join(':' + c for c in ecols)})"
            ),
            "advance_to": self._sql(
                "UPDATE workflow_instances SET state = :state, active = :active, "
                "version = :version, head_hash = :head_hash, updated_at = :now "
                "WHERE id = :id AND version = :expected"
            ),
            "head": self._sql("UPDATE workflow_instances SET head_hash = :head WHERE id = :id"),
            "events_of": self._sql(
                f"SELECT {', '.join(EventRow._fields)} FROM workflow_events "
                "WHERE instance_id = :id ORDER BY seq"
            ),
            "duplicate": self._sql(
                "SELECT id, duplicate_no FROM workflow_instances WHERE program = :program "
                "AND area_code = :area AND fiscal_year = :year ORDER BY duplicate_no"
            ),
        }

    @staticmethod
    def _cursor(conn: Connection) -> Any:
        return conn.connection.cursor()

    def lock_instance(self, conn: Connection, instance_id: int) -> InstanceRow | None:
        """The instance row, locked for this transaction (FOR UPDATE; SQLite holds the
        database write lock already)."""
        cur = self._cursor(conn)
        conn.info[WAIT_KEY] = f"instance {instance_id} (locked by another session)"
        cur.execute(self._q["lock"], {"id": instance_id})
        row = cur.fetchone()
        return InstanceRow(*row) if row else None

    def get_instance(self, conn: Connection, instance_id: int) -> InstanceRow | None:
        cur = self._cursor(conn)
        cur.execute(self._q["get"], {"id": instance_id})
        row = cur.fetchone()
        return InstanceRow(*row) if row else None

    def triggers_of(self, conn: Connection, instance_id: int) -> set[str]:
        cur = self._cursor(conn)
        cur.execute(self._q["triggers"], {"id": instance_id})
        return {r[0] for r in cur.fetchall()}

    def find_duplicate(
        self, conn: Connection, program: str, area: str, fiscal_year: int
    ) -> tuple[int | None, int]:
        """(first existing instance id, next duplicate number) for this program, area, year."""
        cur = self._cursor(conn)
        cur.execute(self._q["duplicate"], {"program": program, "area": area, "year": fiscal_year})
        rows = cur.fetchall()
        if not rows:
            return None, 0
        return int(rows[0][0]), int(rows[-1][1]) + 1

    def insert_instance(self, conn: Connection, values: dict[str, Any]) -> int:
        result = conn.execute(instances_t.insert(), values)
        return int(result.inserted_primary_key[0])  # type: ignore[index]

    def set_head(self, conn: Connection, instance_id: int, head_hash: str) -> None:
        self._cursor(conn).execute(self._q["head"], {"id": instance_id, "head": head_hash})

    def advance_instance(
        self,
        conn: Connection,
        instance_id: int,
        expected_version: int,
        state: str,
        active: str,
        head_hash: str,
        now: str,
    ) -> bool:
        """Compare-and-swap: move the instance only if it is still at ``expected_version``."""
        cur = self._cursor(conn)
        cur.execute(
            self._q["advance"],
            {
                "id": instance_id,
                "version": expected_version,
                "state": state,
                "active": active,
                "head_hash": head_hash,
                "now": now,
            },
        )
        return bool(cur.rowcount == 1)

    def lock_instances(self, conn: Connection, ids: Sequence[int]) -> dict[int, InstanceRow]:
        """Several instance rows, locked (in id order, so two batches cannot deadlock)."""
        out: dict[int, InstanceRow] = {}
        cur = self._cursor(conn)
        conn.info[WAIT_KEY] = f"{len(ids)} instances of a batch (locked by another session)"
        cols = ", ".join(InstanceRow._fields)
        lock = "" if self.is_sqlite else " ORDER BY id FOR UPDATE"
        for chunk in chunks(list(ids), 500):
            marks = ", ".join(f":i{n}" for n in range(len(chunk)))
            cur.execute(
                self._sql(f"SELECT {cols} FROM workflow_instances WHERE id IN ({marks}){lock}"),
                {f"i{n}": v for n, v in enumerate(chunk)},
            )
            for row in cur.fetchall():
                out[row[0]] = InstanceRow(*row)
        return out

    def insert_events(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> list[int]:
        """Insert many events at once; return their ids in order."""
        if not rows:
            return []
        cur = self._cursor(conn)
        if self.is_sqlite:
            # The write lock is held, so the rowids given are consecutive: the last minus n.
            cur.executemany(self._q["event_many"], rows)
            cur.execute("SELECT last_insert_rowid()")
            last = int(cur.fetchone()[0])
            return list(range(last - len(rows) + 1, last + 1))
        cur.executemany(self._q["event"], rows, returning=True)
        ids = []
        while True:
            ids.append(int(cur.fetchone()[0]))
            if not cur.nextset():
                break
        return ids

    def advance_instances(self, conn: Connection, moves: Sequence[tuple[InstanceRow, int]]) -> int:
        """Compare-and-swap many instances to their new rows; return how many moved."""
        if not moves:
            return 0
        cur = self._cursor(conn)
        cur.executemany(
            self._q["advance_to"],
            [
                {
                    "id": row.id,
                    "expected": expected,
                    "version": row.version,
                    "state": row.state,
                    "active": row.active,
                    "head_hash": row.head_hash,
                    "now": row.updated_at,
                }
                for row, expected in moves
            ],
        )
        return int(cur.rowcount)

    def insert_event(self, conn: Connection, values: dict[str, Any]) -> int:
        cur = self._cursor(conn)
        cur.execute(self._q["event"], values)
        return int(cur.fetchone()[0])

    def find_key(self, conn: Connection, key: str) -> KeyRow | None:
        row = conn.execute(sa.select(*KEY_COLUMNS).where(keys_t.c.key == key)).first()
        return KeyRow(*row) if row else None

    def insert_key(
        self,
        conn: Connection,
        key: str,
        request_hash: str,
        instance_id: int,
        seq: int,
        now: str,
        event_hash: str,
    ) -> None:
        conn.execute(
            keys_t.insert().values(
                key=key,
                request_hash=request_hash,
                instance_id=instance_id,
                seq=seq,
                created_at=now,
                event_hash=event_hash,
            )
        )

    def event_at(self, conn: Connection, instance_id: int, seq: int) -> EventRow | None:
        row = conn.execute(
            sa.select(*EVENT_COLUMNS).where(
                events_t.c.instance_id == instance_id, events_t.c.seq == seq
            )
        ).first()
        return EventRow(*row) if row else None

    def events_of(self, conn: Connection, instance_id: int) -> list[EventRow]:
        cur = self._cursor(conn)
        cur.execute(self._q["events_of"], {"id": instance_id})
        return [EventRow(*r) for r in cur.fetchall()]

    # -- reads across instances

    def list_instances(
        self,
        conn: Connection,
        *,
        program: str | None = None,
        state: str | None = None,
        area: str | None = None,
        fiscal_year: int | None = None,
        limit: int | None = None,
    ) -> list[InstanceRow]:
        stmt = sa.select(*INSTANCE_COLUMNS).order_by(instances_t.c.id)
        if program:
            stmt = stmt.where(instances_t.c.program == program)
        if state:
            stmt = stmt.where(instances_t.c.state == state)
        if area:
            stmt = stmt.where(self._within(instances_t.c.area_code, area))
        if fiscal_year:
            stmt = stmt.where(instances_t.c.fiscal_year == fiscal_year)
        if limit:
            stmt = stmt.limit(limit)
        return [InstanceRow(*r) for r in conn.execute(stmt)]

    @staticmethod
    def _within(column: Any, area: str) -> Any:
        """The area and everything inside it: a DOPA code prefix, as a range the area index
        can serve (LIKE 'x%' would scan)."""
        if len(area) == 2:
            return instances_t.c.province_code == area
        if len(area) == 6:
            return column == area
        upper = area[:-1] + chr(ord(area[-1]) + 1)
        return sa.and_(column >= area, column < upper)

    def audit_log(
        self,
        conn: Connection,
        *,
        actor: str | None = None,
        program: str | None = None,
        area: str | None = None,
        since: str | None = None,
        until: str | None = None,
        instance: int | None = None,
        limit: int | None = None,
    ) -> Iterator[tuple[EventRow, str, str]]:
        stmt = (
            sa.select(*EVENT_COLUMNS, instances_t.c.program, instances_t.c.area_code)
            .join(instances_t, instances_t.c.id == events_t.c.instance_id)
            .order_by(events_t.c.at, events_t.c.id)
        )
        if actor:
            stmt = stmt.where(events_t.c.actor == actor)
        if program:
            stmt = stmt.where(instances_t.c.program == program)
        if area:
            stmt = stmt.where(self._within(instances_t.c.area_code, area))
        if since:
            stmt = stmt.where(events_t.c.at >= since)
        if until:
            stmt = stmt.where(events_t.c.at < until)
        if instance is not None:
            stmt = stmt.where(events_t.c.instance_id == instance)
        if limit:
            stmt = stmt.limit(limit)
        n = len(EventRow._fields)
        for r in conn.execution_options(stream_results=True, yield_per=2000).execute(stmt):
            yield EventRow(*r[:n]), r[n], r[n + 1]

    def report(
        self, conn: Connection, *, program: str | None = None, fiscal_year: int | None = None
    ) -> list[tuple[str, str, str, str, int, int]]:
        """(program, province, state, active, definition id, count) groups: the definition
        says which regions of ``active`` are finished, in the version each instance runs."""
        c = instances_t.c
        stmt = (
            sa.select(
                c.program, c.province_code, c.state, c.active, c.definition_id, sa.func.count()
            )
            .group_by(c.program, c.province_code, c.state, c.active, c.definition_id)
            .order_by(c.program, c.province_code, c.state)
        )
        if program:
            stmt = stmt.where(c.program == program)
        if fiscal_year:
            stmt = stmt.where(c.fiscal_year == fiscal_year)
        return [(r[0], r[1], r[2], r[3], int(r[4]), int(r[5])) for r in conn.execute(stmt)]

    # -- streaming for verify and digest

    def stream_instances(self, conn: Connection) -> Iterator[InstanceRow]:
        sql = f"SELECT {', '.join(InstanceRow._fields)} FROM workflow_instances ORDER BY id"
        for r in self._stream(conn, sql, "wf_instances"):
            yield InstanceRow(*r)

    def stream_events(self, conn: Connection) -> Iterator[EventRow]:
        sql = f"SELECT {', '.join(EventRow._fields)} FROM workflow_events ORDER BY instance_id, seq"
        for r in self._stream(conn, sql, "wf_events"):
            yield EventRow(*r)

    def stream_keys(self, conn: Connection) -> Iterator[KeyRow]:
        sql = f"SELECT {', '.join(KeyRow._fields)} FROM workflow_idempotency ORDER BY key"
        for r in self._stream(conn, sql, "wf_keys"):
            yield KeyRow(*r)

    def stream_denials(self, conn: Connection) -> Iterator[DenialRow]:
        sql = (
            f"SELECT {', '.join(DenialRow._fields)} FROM workflow_denials "
            "ORDER BY seq IS NULL, seq, id"
        )
        for r in self._stream(conn, sql, "wf_denials"):
            yield DenialRow(*r)

    def _stream(self, conn: Connection, sql: str, name: str) -> Iterator[tuple[Any, ...]]:
        """Rows of a big query in chunks, straight from the driver (a server-side cursor on
        PostgreSQL), so memory stays flat and no per-row SQLAlchemy work is paid."""
        dbapi_conn: Any = conn.connection.dbapi_connection
        cur = dbapi_conn.cursor() if self.is_sqlite else dbapi_conn.cursor(name=name)
        try:
            cur.execute(sql)
            while True:
                rows = cur.fetchmany(5000)
                if not rows:
                    break
                yield from rows
        finally:
            cur.close()

    def non_bundled_instances(self, conn: Connection) -> list[tuple[int, str, int, str]]:
        """(instance, program, version, source) of instances whose stored definition did not
        ship with workflow, by instance id."""
        i, d = instances_t.c, definitions_t.c
        query = (
            sa.select(i.id, i.program, i.program_version, d.source)
            .join(definitions_t, d.id == i.definition_id)
            .where(d.source != "bundled")
            .order_by(i.id)
        )
        return [(r[0], r[1], r[2], r[3]) for r in conn.execute(query)]

    def all_definitions(self, conn: Connection) -> list[DefinitionRow]:
        return [
            DefinitionRow(*r)
            for r in conn.execute(sa.select(*DEFINITION_COLUMNS).order_by(definitions_t.c.id))
        ]

    @contextmanager
    def snapshot(self, lenient: bool = False) -> Iterator[Connection]:
        """A read transaction with one consistent view (REPEATABLE READ on PostgreSQL).

        ``lenient`` (SQLite): TEXT that is not UTF-8 is read with surrogate escapes instead of
        failing the read (SQLite stores whatever bytes it is given). It costs a Python call
        per value, so verify asks for it only after a strict read met such bytes."""
        self.check_schema()
        if self.sqlite_path is not None and not self.sqlite_path.exists():
            raise SchemaOutOfDate(self.safe_url, None, SCHEMA_REVISION)
        try:
            with self.engine.connect() as raw:
                conn = (
                    raw
                    if self.is_sqlite
                    else raw.execution_options(isolation_level="REPEATABLE READ")
                )
                dbapi_conn: Any = raw.connection.dbapi_connection
                lenient = lenient and self.is_sqlite
                if lenient:
                    # Surrogate escapes, which no hash or JSON check accepts: one problem of
                    # verify for the value, not a failed scan.
                    dbapi_conn.text_factory = _lenient_text
                conn.info[WAIT_KEY] = "the workflow tables (locked by another session)"
                try:
                    with conn.begin():
                        if self.is_sqlite:
                            self._settle(conn)
                        yield conn
                finally:
                    if lenient:
                        dbapi_conn.text_factory = str
        except WorkflowError:
            raise
        except self._driver_errors as e:  # the streams read from the driver's own cursors
            raise self._translate(e, "the workflow tables (locked by another session)") from e

    def _settle(self, conn: Connection) -> None:
        """Take SQLite's read snapshot now, waiting (up to the lock timeout) while another
        process holds the file exclusively; later reads of this transaction then see it."""
        deadline = time.monotonic() + self.timeouts.lock
        while True:
            try:
                conn.exec_driver_sql("SELECT count(*) FROM workflow_definitions").close()
                return
            except sa_exc.OperationalError as e:
                if not _is_locked(e) or time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    @staticmethod
    def is_undecodable(e: BaseException) -> bool:
        """Whether a read failed on SQLite TEXT that is not UTF-8 (see ``snapshot``)."""
        cause = e.__cause__ or e
        return "Could not decode to UTF-8" in str(getattr(cause, "orig", None) or cause)


def _lenient_text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in slices of at most ``size``: a batch per transaction, or a bounded IN list."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _is_serialization(e: BaseException) -> bool:
    code = getattr(getattr(e, "orig", None) or e, "sqlstate", None)
    return code in ("40001", "40P01")  # serialization failure, deadlock detected


def os_user() -> str:
    """The operating-system user running this process, recorded beside the actor.

    Taken from the process's real uid, never from ``LOGNAME``/``USER`` (anyone can set those);
    ``uid:N`` when the uid has no passwd entry (a container's arbitrary uid)."""
    try:
        import pwd
    except ImportError:  # pragma: no cover - not POSIX: no uid to look up
        import getpass

        return getpass.getuser()
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid:{uid}"

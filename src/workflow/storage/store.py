"""The Store: transactions, the one retry loop, and every query, on SQLite and PostgreSQL.

The database room is split in modules, each owning one thing; this one holds what is the same
on every backend and asks the others for the rest:

* ``rows.py``: the typed rows the Store hands out (``InstanceRow``, ``EventRow``...) and
  their codecs (select lists in field order);
* ``schema.py``: the declared tables, ``SCHEMA_REVISION`` and Alembic's version table;
* ``faults.py``: the one table from driver error to :class:`~workflow.errors.WorkflowError`
  (``_FAULTS``), what may be retried, and the URL scrubbing every message goes through;
* ``sqlite.py``, ``postgres.py``: the dialect branches (connection setup, BEGIN IMMEDIATE vs
  row locks, session timeouts, file identity, snapshots);
* ``timeouts.py``: how long a call may wait;
* ``migrations/``: the Alembic revisions ``workflow init`` runs.

What this module takes care of:

* **Transactions that serialise writers per instance**: :meth:`Store.run` runs a function in
  one transaction (on SQLite a write begins ``IMMEDIATE``; on PostgreSQL the instance row is
  locked ``FOR UPDATE``, so writers on different instances never wait for each other).
* **One retry loop** (:meth:`Store.run`): only whole transactions that never committed run
  again ("database is locked", serialization failures, deadlocks, a kept connection the
  server dropped), within the lock timeout; a unique-key collision once, then a ``Conflict``.
* **Bounded waits**: no call waits for another session's lock longer than the lock timeout;
  then it fails with one line naming what it waited for (``WAIT_KEY``).
* **Streaming reads** for verify and digest, so memory stays flat in the number of events.

The public surface of a Store (what the engine, access and audit code may call):

* lifecycle: ``Store(url, timeouts)``, ``init()``, ``check_schema()``, ``current_revision()``,
  ``dispose()``; attributes ``url``, ``safe_url``, ``timeouts``, ``dialect``, ``engine``;
* transactions: ``run(fn, write=..., timeout=...)``, ``connect(write=...)``,
  ``snapshot(lenient=...)``, ``is_undecodable(error)``;
* statements inside a transaction (each takes the transaction's connection first):
  definitions (``ensure_definition``, ``definition``, ``all_definitions``,
  ``non_bundled_instances``), instances (``insert_instance``, ``lock_instance``,
  ``lock_instances``, ``get_instance``, ``find_duplicate``, ``advance_instance``,
  ``advance_instances``, ``set_head``, ``list_instances``, ``report``), events
  (``insert_event``, ``insert_events``, ``event_at``, ``events_of``, ``triggers_of``,
  ``audit_log``), idempotency keys (``insert_key``, ``find_key``), grants and their chain
  (``grants_for``, ``all_grants``, ``find_grant``, ``insert_grant``, ``delete_grant``,
  ``lock_grant_chain``, ``grant_head``, ``insert_grant_event``, ``grant_events``), denials
  (``lock_denial_chain``, ``denial_head``, ``insert_denial``, ``denials``), and the streams
  of a snapshot (``stream_instances``, ``stream_events`` / ``stream_event_tuples``,
  ``stream_keys``, ``stream_denials``).

tests/persistence.py checks this surface on every backend (``StoreContract``).

Every name the rest of the package imported from here before the split (rows, tables,
``Timeouts``, ``safe_url``...) is still importable from here.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, make_url

from workflow.errors import (
    Conflict,
    DatabaseUnavailable,
    DefinitionChanged,
    SchemaOutOfDate,
    WorkflowError,
)
from workflow.storage import scan as _scan
from workflow.storage.faults import (
    HIDDEN,
    driver_errors,
    is_collision,
    is_retryable,
    safe_url,
    scrub,
    translate,
    url_secrets,
)
from workflow.storage.postgres import SESSION_KEY, PostgreSQL
from workflow.storage.rows import (
    DEFINITION_COLUMNS,
    DENIAL_COLUMNS,
    EVENT_COLUMNS,
    GRANT_COLUMNS,
    GRANT_EVENT_COLUMNS,
    INSTANCE_COLUMNS,
    KEY_COLUMNS,
    DefinitionRow,
    DenialRow,
    EventRow,
    GrantEventRow,
    GrantRow,
    InstanceRow,
    KeyRow,
    select_list,
)
from workflow.storage.schema import (
    SCHEMA_REVISION,
    VERSION_TABLE,
    Base,
    DefinitionTable,
    DenialTable,
    EventTable,
    GrantEventTable,
    GrantTable,
    IdempotencyTable,
    InstanceTable,
    definitions_t,
    denials_t,
    events_t,
    grant_events_t,
    grants_t,
    instances_t,
    keys_t,
)
from workflow.storage.sqlite import WRITE_OPTION, SQLite
from workflow.storage.timeouts import (
    DEFAULT_LOCK_TIMEOUT,
    LOCK_TIMEOUT_ENV,
    STATEMENT_TIMEOUT_ENV,
    Timeouts,
    ms,
)

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "DEFINITION_COLUMNS",
    "DENIAL_COLUMNS",
    "EVENT_COLUMNS",
    "GRANT_COLUMNS",
    "GRANT_EVENT_COLUMNS",
    "HIDDEN",
    "INSTANCE_COLUMNS",
    "KEY_COLUMNS",
    "LOCK_TIMEOUT_ENV",
    "SCHEMA_REVISION",
    "SESSION_KEY",
    "STATEMENT_TIMEOUT_ENV",
    "VERSION_TABLE",
    "WAIT_KEY",
    "Base",
    "DefinitionRow",
    "DefinitionTable",
    "DenialRow",
    "DenialTable",
    "Dialect",
    "EventRow",
    "EventTable",
    "GrantEventRow",
    "GrantEventTable",
    "GrantRow",
    "GrantTable",
    "IdempotencyTable",
    "InstanceRow",
    "InstanceTable",
    "KeyRow",
    "Scope",
    "Store",
    "Timeouts",
    "chunks",
    "definitions_t",
    "denials_t",
    "events_t",
    "grant_events_t",
    "grants_t",
    "instances_t",
    "keys_t",
    "os_user",
    "safe_url",
    "scrub",
    "url_secrets",
]

T = TypeVar("T")

#: What a reader's grant covers: (area code prefix, program); '' is every area / program.
Scope = tuple[str, str]

#: What a call waits for when no statement said more precisely (``conn.info`` key).
WAIT_KEY = "workflow_waiting_for"
#: Advisory lock ids (PostgreSQL) serialising the two global chains; 7201952701 is `init`'s.
GRANT_CHAIN_LOCK = 7201952702
DENIAL_CHAIN_LOCK = 7201952703


class Dialect(Protocol):
    """What the Store asks of a backend: ``sqlite.SQLite`` and ``postgres.PostgreSQL``."""

    name: str
    is_sqlite: bool
    #: The database file, when there is one.
    path: Path | None
    #: SQL appended to the SELECT of one instance row, of a batch, of grants held shared.
    lock_one: str
    lock_many: str
    lock_shared: str

    def engine_options(self) -> dict[str, Any]: ...
    def configure(self, engine: sa.Engine) -> None: ...
    def limit_wait(self, conn: Connection, seconds: float) -> None: ...
    def serialize(self, conn: Connection, lock_id: int) -> None: ...
    def insert_events(
        self, cur: Any, queries: dict[str, str], rows: Sequence[dict[str, Any]]
    ) -> list[int]: ...
    def stream_cursor(self, dbapi_conn: Any, name: str) -> Any: ...
    def is_disconnect(self, e: BaseException, conn: Connection, dbapi_error: type) -> bool: ...
    def file_identity(self, discard: Callable[[], None]) -> tuple[int, int] | None: ...
    def reading(self, raw: Connection, lenient: bool) -> AbstractContextManager[Connection]: ...
    def settle(self, conn: Connection) -> None: ...


# --------------------------------------------------------------------------- the store


class _AccessQueries:
    """Grants, their chain and denials (mixed into Store)."""

    _dialect: Dialect
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
        self._dialect.serialize(conn, GRANT_CHAIN_LOCK)
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
        self._dialect.serialize(conn, DENIAL_CHAIN_LOCK)
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
        #: Where attachment bytes are kept (None: in the database); the Engine sets it
        #: (workflow.storage.attachments).
        self.attachments_dir: Path | None = None
        self.safe_url = safe_url(url)
        self._secrets = url_secrets(url)
        try:
            parsed = make_url(url)
        except (sa_exc.ArgumentError, ValueError) as e:  # ValueError: a port that is no number
            raise DatabaseUnavailable(
                self.safe_url, scrub(f"not a database URL ({e})", self._secrets)
            ) from None
        #: The backend's name (``sqlite``, ``postgresql``...) and its branches of the Store.
        self.dialect = parsed.get_backend_name()
        self._dialect: Dialect = (
            SQLite(parsed.database, self.timeouts, self.safe_url)
            if self.dialect == "sqlite"
            else PostgreSQL(self.timeouts, sessions=self.dialect == "postgresql")
        )
        self.is_sqlite = self._dialect.is_sqlite
        #: The SQLite database file (None: a server, or SQLite in memory).
        self.sqlite_path: Path | None = self._dialect.path
        self._schema_checked = False
        try:
            self.engine = sa.create_engine(url, **self._dialect.engine_options())
        except (sa_exc.ArgumentError, ImportError, sa_exc.NoSuchModuleError) as e:
            raise self._translate(e) from e
        self._dialect.configure(self.engine)
        self._local = threading.local()
        self._dbapi: Any = cast(Any, self.engine.dialect).dbapi
        # Driver errors raised on the hot path (raw cursors) are handled like SQLAlchemy's.
        self._driver_errors = driver_errors(self._dbapi)
        self._prepare()

    def dispose(self) -> None:
        self._discard()
        self.engine.dispose()

    def thread_capacity(self) -> int | None:
        """How many threads may use this Store at once without waiting for a connection.

        Each thread keeps two connections between transactions (see ``_checkout``), so a
        thread beyond the pool's size plus overflow, halved, would wait for a connection no
        other thread returns and fail after the pool's timeout. One connection stays spare for
        a transaction opened inside another. None: the pool has no fixed bound."""
        pool: Any = self.engine.pool
        if not isinstance(pool, sa.pool.QueuePool):
            return None
        capacity = pool.size() + max(0, pool._max_overflow)  # no public reader of overflow
        return max(1, (capacity - 1) // 2)

    # -- connections and faults

    def _translate(self, e: BaseException, waiting_for: str | None = None) -> WorkflowError:
        """The WorkflowError for a driver error (``faults.translate``, the one table)."""
        return translate(
            e,
            url=self.safe_url,
            secrets=self._secrets,
            timeouts=self.timeouts,
            schema_checked=self._schema_checked,
            waiting_for=waiting_for,
        )

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
                if lock_wait is not None:
                    self._dialect.limit_wait(conn, lock_wait)
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
        return self._dialect.is_disconnect(e, conn, self._dbapi.Error)

    def _fresh(self, write: bool) -> Connection:
        try:
            conn = self.engine.connect()
        except self._driver_errors as e:
            raise self._translate(e) from e
        if write:
            conn.execution_options(**{WRITE_OPTION: True})
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
        """The SQLite file's (device, inode), None on a server (see ``SQLite.file_identity``)."""
        return self._dialect.file_identity(self._discard)

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
                if collided or not is_collision(e.__cause__):
                    raise  # a refusal of fn's own, or a second collision
                collided = True
                continue
            except DatabaseUnavailable as e:
                retryable = is_retryable(e.__cause__) or getattr(e, "stale_connection", False)
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
                conn = raw.execution_options(**{WRITE_OPTION: True})
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
        cols = select_list(InstanceRow)
        ecols = [c for c in EventRow._fields if c != "id"]
        lock = self._dialect.lock_one
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
                f"SELECT {select_list(GrantRow)} FROM workflow_grants WHERE actor = :actor"
            ),
            "grants_locked": self._sql(
                f"SELECT {select_list(GrantRow)} FROM workflow_grants WHERE actor = :actor"
                + self._dialect.lock_shared
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
                f"SELECT {select_list(EventRow)} FROM workflow_events "
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

    def get_instances(self, conn: Connection, ids: Sequence[int]) -> dict[int, InstanceRow]:
        """Several instance rows by id (unlocked; ids not found are left out)."""
        out: dict[int, InstanceRow] = {}
        cur = self._cursor(conn)
        cols = select_list(InstanceRow)
        for chunk in chunks(sorted(set(ids)), 500):
            marks = ", ".join(f":i{n}" for n in range(len(chunk)))
            cur.execute(
                self._sql(f"SELECT {cols} FROM workflow_instances WHERE id IN ({marks})"),
                {f"i{n}": v for n, v in enumerate(chunk)},
            )
            for row in cur.fetchall():
                out[row[0]] = InstanceRow(*row)
        return out

    def triggers_of(self, conn: Connection, instance_id: int) -> set[str]:
        """The triggers that happened on an instance (what ``happened`` guards ask); a step a
        ``revert`` event took back (its ``of_seq``) did not happen."""
        cur = self._cursor(conn)
        cur.execute(self._q["triggers"], {"id": instance_id})
        found = {r[0] for r in cur.fetchall()}
        if "revert" not in found:
            return found
        rows = conn.execute(
            sa.select(events_t.c.seq, events_t.c.trigger, events_t.c.evidence).where(
                events_t.c.instance_id == instance_id
            )
        ).all()
        taken_back = set()
        for _, trigger, evidence in rows:
            if trigger == "revert":
                try:
                    taken_back.add(json.loads(evidence).get("of_seq"))
                except (TypeError, ValueError, AttributeError):
                    continue
        return {trigger for seq, trigger, _ in rows if seq not in taken_back}

    def corrections_of(self, conn: Connection, instance_id: int) -> list[tuple[int, int]]:
        """``(seq, of_seq)`` of each ``correct`` event of an instance, oldest first (what an
        instance's record marks as corrected); a malformed ``of_seq`` is skipped (verify names
        it)."""
        rows = conn.execute(
            sa.select(events_t.c.seq, events_t.c.evidence)
            .where(events_t.c.instance_id == instance_id, events_t.c.trigger == "correct")
            .order_by(events_t.c.seq)
        ).all()
        out = []
        for seq, evidence in rows:
            try:
                of_seq = json.loads(evidence).get("of_seq")
            except (TypeError, ValueError, AttributeError):
                continue
            if isinstance(of_seq, int) and not isinstance(of_seq, bool):
                out.append((int(seq), of_seq))
        return out

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

    def set_definition(
        self, conn: Connection, instance_id: int, program_version: int, definition_id: int
    ) -> None:
        """Move a (locked) instance to another stored version of its program (a migration;
        its migrate event moves its state and version in the same transaction)."""
        conn.execute(
            instances_t.update()
            .where(instances_t.c.id == instance_id)
            .values(program_version=program_version, definition_id=definition_id)
        )

    def lock_instances(self, conn: Connection, ids: Sequence[int]) -> dict[int, InstanceRow]:
        """Several instance rows, locked (in id order, so two batches cannot deadlock)."""
        out: dict[int, InstanceRow] = {}
        cur = self._cursor(conn)
        conn.info[WAIT_KEY] = f"{len(ids)} instances of a batch (locked by another session)"
        cols = select_list(InstanceRow)
        lock = self._dialect.lock_many
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
        return self._dialect.insert_events(self._cursor(conn), self._q, rows)

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
        scopes: Sequence[Scope] | None = None,
        after: int | None = None,
    ) -> list[InstanceRow]:
        """Instances in id order; ``scopes`` (when given) keeps those some scope covers,
        ``after`` those with a greater id (a page's cursor)."""
        stmt = sa.select(*INSTANCE_COLUMNS).order_by(instances_t.c.id)
        if scopes is not None:
            stmt = stmt.where(self._covered(scopes))
        if after is not None:
            stmt = stmt.where(instances_t.c.id > after)
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

    @classmethod
    def _covered(cls, scopes: Sequence[Scope]) -> Any:
        """Instances some (area, program) scope covers ('' = every area / every program)."""
        c = instances_t.c
        terms = []
        for area, program in dict.fromkeys(scopes):
            parts = []
            if area:
                parts.append(cls._within(c.area_code, area))
            if program:
                parts.append(c.program == program)
            if not parts:
                return sa.true()
            terms.append(sa.and_(*parts))
        return sa.or_(*terms) if terms else sa.false()

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
        scopes: Sequence[Scope] | None = None,
    ) -> Iterator[tuple[EventRow, str, str]]:
        stmt = (
            sa.select(*EVENT_COLUMNS, instances_t.c.program, instances_t.c.area_code)
            .join(instances_t, instances_t.c.id == events_t.c.instance_id)
            .order_by(events_t.c.at, events_t.c.id)
        )
        if scopes is not None:
            stmt = stmt.where(self._covered(scopes))
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
        self,
        conn: Connection,
        *,
        program: str | None = None,
        fiscal_year: int | None = None,
        scopes: Sequence[Scope] | None = None,
    ) -> list[tuple[str, str, str, str, int, int]]:
        """(program, province, state, active, definition id, count) groups: the definition
        says which regions of ``active`` are finished, in the version each instance runs;
        with ``scopes``, of the instances they cover only."""
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
        if scopes is not None:
            stmt = stmt.where(self._covered(scopes))
        return [(r[0], r[1], r[2], r[3], int(r[4]), int(r[5])) for r in conn.execute(stmt)]

    # -- streaming for verify and digest

    def stream_instances(
        self, conn: Connection, lo: int | None = None, hi: int | None = None
    ) -> Iterator[InstanceRow]:
        """Instance rows by id; with ``lo``/``hi``, those with ``lo <= id < hi`` only."""
        for r in self._stream(conn, _scan.instances_sql(lo, hi), "wf_instances"):
            yield InstanceRow(*r)

    def stream_events(
        self, conn: Connection, lo: int | None = None, hi: int | None = None
    ) -> Iterator[EventRow]:
        """Event rows by (instance, seq); with ``lo``/``hi``, of instance ids in
        ``[lo, hi)`` only. In SQLite's order of values, where every number sorts before
        any text or blob, so an instance id an intruder made text falls in the range
        without ``hi``: the ranges of :meth:`instance_bounds` cover every row once."""
        for r in self.stream_event_tuples(conn, lo, hi):
            yield EventRow(*r)

    def stream_event_tuples(
        self, conn: Connection, lo: int | None = None, hi: int | None = None
    ) -> Iterator[tuple[Any, ...]]:
        """:meth:`stream_events` as the driver's plain tuples, in ``EventRow`` order: what
        verify reads (once per stored event: it indexes them, building no objects)."""
        return self._stream(conn, _scan.events_sql(lo, hi), "wf_events", _scan.EVENT_CHUNK)

    def stream_heads(
        self, conn: Connection, lo: int | None = None, hi: int | None = None
    ) -> Iterator[tuple[Any, Any, Any]]:
        """(id, version, head hash) of the instances in ``[lo, hi)``, by id."""
        sql = (
            "SELECT id, version, head_hash FROM workflow_instances"
            f"{_id_range('id', lo, hi)} ORDER BY id"
        )
        for r in self._stream(conn, sql, "wf_heads"):
            yield (r[0], r[1], r[2])

    def instance_bounds(self, conn: Connection, cuts: Sequence[float]) -> list[int]:
        """Instance ids splitting the instances into ranges (``[None, b1)``, ``[b1, b2)``...
        ``[bn, None)``) ending at the fractions ``cuts`` (each in (0, 1), ascending) of the
        instances, by id; fewer where ranges would be empty."""
        total = int(
            conn.exec_driver_sql("SELECT count(*) FROM workflow_instances").scalar() or 0
        )
        # One pass over the ids (an OFFSET query per bound would walk the index each time).
        wanted = sorted({p for p in (int(total * c) for c in cuts) if 0 < p < total})
        bounds: list[int] = []
        k = 0
        ids = self._stream(conn, "SELECT id FROM workflow_instances ORDER BY id", "wf_ids")
        for position, (at,) in enumerate(ids):
            if k == len(wanted):
                break
            if position == wanted[k]:
                if type(at) is int and (not bounds or at > bounds[-1]):
                    bounds.append(at)
                k += 1
        cast(Generator[Any, None, None], ids).close()  # the cursor, if we stopped early
        return bounds

    def scan_source(self) -> _scan.Source:
        """What a verify worker needs to read this database without SQLAlchemy
        (:class:`workflow.storage.scan.Reader`): SQLite's file, or the ``psycopg`` connect
        keywords and session settings this Store's URL and timeouts make."""
        if self.is_sqlite:
            if self.sqlite_path is None:
                raise DatabaseUnavailable(self.safe_url, "an in-memory database has no file")
            return ("sqlite", str(self.sqlite_path), self.timeouts.lock, self.safe_url)
        args, params = cast(Any, self.engine.dialect).create_connect_args(self.engine.url)
        params = {**dict(params), **self._dialect.engine_options().get("connect_args", {})}
        # Only the connection's own keywords: SQLAlchemy adds its adapters (``context``).
        params = {k: v for k, v in params.items() if isinstance(v, str | int | float)}
        if args:
            params["conninfo"] = args[0]
        settings = [f"SET lock_timeout = {ms(self.timeouts.lock)}"]
        if self.timeouts.statement is not None:
            settings.append(f"SET statement_timeout = {ms(self.timeouts.statement)}")
        return ("postgresql", params, settings, self.safe_url)

    def export_snapshot(self, conn: Connection) -> str | None:
        """An id other sessions can read this snapshot under (``snapshot(shared=...)``):
        PostgreSQL's ``pg_export_snapshot()``; None on SQLite, which has no such thing."""
        if self.is_sqlite:
            return None
        return str(conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar())

    def stream_keys(self, conn: Connection) -> Iterator[KeyRow]:
        sql = f"SELECT {select_list(KeyRow)} FROM workflow_idempotency ORDER BY key"
        for r in self._stream(conn, sql, "wf_keys"):
            yield KeyRow(*r)

    def stream_denials(self, conn: Connection) -> Iterator[DenialRow]:
        sql = (
            f"SELECT {select_list(DenialRow)} FROM workflow_denials "
            "ORDER BY seq IS NULL, seq, id"
        )
        for r in self._stream(conn, sql, "wf_denials"):
            yield DenialRow(*r)

    def _stream(
        self, conn: Connection, sql: str, name: str, chunk: int = _scan.ROW_CHUNK
    ) -> Iterator[tuple[Any, ...]]:
        """Rows of a big query in chunks, straight from the driver (a server-side cursor on
        PostgreSQL), so memory stays flat and no per-row SQLAlchemy work is paid."""
        dbapi_conn: Any = conn.connection.dbapi_connection
        return _scan.in_chunks(self._dialect.stream_cursor(dbapi_conn, name), sql, chunk)

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
    def snapshot(self, lenient: bool = False, shared: str | None = None) -> Iterator[Connection]:
        """A read transaction with one consistent view (REPEATABLE READ on PostgreSQL).

        ``lenient`` (SQLite): TEXT that is not UTF-8 is read with surrogate escapes instead of
        failing the read (SQLite stores whatever bytes it is given). It costs a Python call
        per value, so verify asks for it only after a strict read met such bytes.

        ``shared`` (PostgreSQL): an id from :meth:`export_snapshot` of a transaction still
        open: this one then sees exactly what that one sees (``SET TRANSACTION SNAPSHOT``)."""
        self.check_schema()
        if self.sqlite_path is not None and not self.sqlite_path.exists():
            raise SchemaOutOfDate(self.safe_url, None, SCHEMA_REVISION)
        try:
            with self.engine.connect() as raw, self._dialect.reading(raw, lenient) as conn:
                conn.info[WAIT_KEY] = "the workflow tables (locked by another session)"
                with conn.begin():
                    if shared is not None and not self.is_sqlite:
                        conn.exec_driver_sql(
                            "SET TRANSACTION SNAPSHOT '" + shared.replace("'", "''") + "'"
                        )
                    self._dialect.settle(conn)
                    yield conn
        except WorkflowError:
            raise
        except self._driver_errors as e:  # the streams read from the driver's own cursors
            raise self._translate(e, "the workflow tables (locked by another session)") from e

    @staticmethod
    def is_undecodable(e: BaseException) -> bool:
        """Whether a read failed on SQLite TEXT that is not UTF-8 (see ``snapshot``)."""
        cause = e.__cause__ or e
        return "Could not decode to UTF-8" in str(getattr(cause, "orig", None) or cause)


def _id_range(column: str, lo: int | None, hi: int | None) -> str:
    """`` WHERE lo <= column < hi`` (either side open when None); the bounds are ints."""
    return _scan.id_range(column, lo, hi)


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in slices of at most ``size``: a batch per transaction, or a bounded IN list."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


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

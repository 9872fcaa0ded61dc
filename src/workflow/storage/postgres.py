"""PostgreSQL: how the Store drives a server.

Everything the Store does differently on PostgreSQL is here, so ``store.py`` reads the same for
both backends:

* **Connections**: a connect timeout; per session, ``lock_timeout`` (and optionally
  ``statement_timeout``) so that no call waits forever behind another session's lock. The
  settings ride in the session's first transaction: a transaction of their own would be one
  more commit per command.
* **Row locks instead of one write lock**: writers lock the instance row (``FOR UPDATE``), a
  change's grant check holds the actor's grants (``FOR SHARE``), grant and denial chains are
  serialised by transaction-scoped advisory locks; writers on different instances never wait
  for each other.
* **A retry waits only for what is left** of the call's lock timeout (``SET LOCAL``).
* **Snapshots** are REPEATABLE READ; big reads stream through server-side cursors.

Any other backend SQLAlchemy can reach is driven with these statements but without the session
settings (``sessions=False``), as it always was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection

from workflow.storage.timeouts import Timeouts, ms

#: Whether a session's timeouts are set (``conn.info`` key, see :meth:`PostgreSQL.configure`).
SESSION_KEY = "workflow_session_set"


class PostgreSQL:
    """The PostgreSQL branches of the Store (see the module docstring)."""

    name = "postgresql"
    is_sqlite = False
    #: Appended to the SELECT of one instance row, of a batch of them (in id order, so two
    #: batches cannot deadlock), of an actor's grants that a revoke must wait for.
    lock_one = " FOR UPDATE"
    lock_many = " ORDER BY id FOR UPDATE"
    lock_shared = " FOR SHARE"
    #: No database file.
    path: Path | None = None

    def __init__(self, timeouts: Timeouts, *, sessions: bool = True) -> None:
        self.timeouts = timeouts
        self.sessions = sessions

    def engine_options(self) -> dict[str, Any]:
        if not self.sessions:
            return {}
        return {"connect_args": {"connect_timeout": 5}, "pool_pre_ping": False}

    def configure(self, engine: sa.Engine) -> None:
        """Set each session's timeouts in its first transaction."""
        if not self.sessions:
            return
        settings = [f"SET lock_timeout = {ms(self.timeouts.lock)}"]
        if self.timeouts.statement is not None:
            settings.append(f"SET statement_timeout = {ms(self.timeouts.statement)}")

        # Per session, once per connection: the server default (0) would let a fire wait
        # forever behind a row or table lock. The settings ride in the session's first
        # transaction (a transaction of their own would be one more commit per command) and
        # count as made once it commits; a rollback undoes them, so the next one says them again.
        @sa_event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            if not conn.info.get(SESSION_KEY):
                dbapi_conn: Any = conn.connection.dbapi_connection
                for sql in settings:
                    dbapi_conn.execute(sql)

        @sa_event.listens_for(engine, "commit")
        def _on_commit(conn: Connection) -> None:
            conn.info[SESSION_KEY] = True

    def limit_wait(self, conn: Connection, seconds: float) -> None:
        """Wait no longer than ``seconds`` for a lock in this transaction (a retry's rest)."""
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {ms(seconds)}")

    def serialize(self, conn: Connection, lock_id: int) -> None:
        """Hold the advisory lock ``lock_id`` until this transaction ends."""
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({lock_id})")

    def insert_events(
        self, cur: Any, queries: dict[str, str], rows: Sequence[dict[str, Any]]
    ) -> list[int]:
        cur.executemany(queries["event"], rows, returning=True)
        ids = []
        while True:
            ids.append(int(cur.fetchone()[0]))
            if not cur.nextset():
                break
        return ids

    def stream_cursor(self, dbapi_conn: Any, name: str) -> Any:
        """A server-side cursor: rows come in chunks, not all at once."""
        return dbapi_conn.cursor(name=name)

    def is_disconnect(self, e: BaseException, conn: Connection, dbapi_error: type) -> bool:
        """Whether a driver error (raised on a raw cursor) means the server dropped us."""
        if not isinstance(e, dbapi_error):
            return False
        try:
            dbapi_conn = conn.connection.dbapi_connection
            return bool(conn.engine.dialect.is_disconnect(cast(Any, e), dbapi_conn, None))
        except Exception:
            return False

    def file_identity(self, discard: Callable[[], None]) -> tuple[int, int] | None:
        """None: a server has no file to be replaced under a kept connection."""
        return None

    @contextmanager
    def reading(self, raw: Connection, lenient: bool) -> Iterator[Connection]:
        """``raw`` set up for a snapshot: REPEATABLE READ, one consistent view. (``lenient``
        is SQLite's: PostgreSQL refuses text that is not valid in its encoding.)"""
        yield raw.execution_options(isolation_level="REPEATABLE READ")

    def settle(self, conn: Connection) -> None:
        """Nothing: REPEATABLE READ takes its snapshot at the first statement."""

"""SQLite: how the Store drives a database file.

Everything the Store does differently on SQLite is here, so ``store.py`` reads the same for
both backends:

* **Connections**: WAL (readers run beside the writer), ``synchronous=FULL`` (a committed
  fire is on disk), foreign keys on, a short busy timeout (``Store.run`` retries "database
  is locked" up to the lock timeout instead).
* **Write transactions begin IMMEDIATE**: the write lock is taken up front, so two writers
  never deadlock upgrading a read lock, and the row locks PostgreSQL needs (``FOR UPDATE``,
  ``FOR SHARE``, advisory locks) are all empty here: the write lock covers them.
* **File identity**: a kept connection must not go on writing to a file that was deleted or
  replaced under it, and a read never creates an empty database file.
* **Snapshots**: the read snapshot is taken at once, waiting while another process holds the
  file exclusively; TEXT that is not UTF-8 (SQLite stores whatever bytes it is given) can be
  read leniently, for verify to report instead of failing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from workflow.errors import DatabaseUnavailable, SchemaOutOfDate
from workflow.storage import scan as _scan
from workflow.storage.faults import is_locked
from workflow.storage.schema import SCHEMA_REVISION
from workflow.storage.timeouts import Timeouts, ms

#: The execution option of a Store's write connections: their transactions begin IMMEDIATE.
WRITE_OPTION = "workflow_write"


class SQLite:
    """The SQLite branches of the Store (see the module docstring)."""

    name = "sqlite"
    is_sqlite = True
    #: Appended to the SELECT of one instance row, of a batch of them, of an actor's grants
    #: that a revoke must wait for: nothing, the write lock is held already.
    lock_one = ""
    lock_many = ""
    lock_shared = ""

    def __init__(self, database: str | None, timeouts: Timeouts, safe_url: str) -> None:
        self.timeouts = timeouts
        self.safe_url = safe_url
        db = database or ""
        #: The database file (None: in memory, or a ``file:`` URI).
        self.path: Path | None = None
        if db and db != ":memory:" and not db.startswith("file:"):
            self.path = Path(db)
        self._file_seen = False

    def engine_options(self) -> dict[str, Any]:
        # The driver's own wait is short: `Store.run` retries up to the lock timeout.
        return {"connect_args": {"timeout": min(0.2, self.timeouts.lock)}}

    def configure(self, engine: sa.Engine) -> None:
        """Set up every new connection, and begin write transactions IMMEDIATE."""
        busy_ms = min(200, ms(self.timeouts.lock))
        path = self.path

        @sa_event.listens_for(engine, "do_connect")
        def _on_do_connect(_dialect: Any, _record: Any, cargs: list[Any], cparams: Any) -> None:
            # A database on read-only media is opened immutable, or refused: SQLite cannot
            # make the -shm file WAL needs there (workflow.storage.scan.read_only_uri).
            uri = None if path is None else _scan.read_only_uri(path, self.safe_url)
            if uri is not None:
                cargs[:] = [uri]
                cparams["uri"] = True

        @sa_event.listens_for(engine, "connect")
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
                cur.execute(f"PRAGMA busy_timeout={busy_ms}")
            except Exception:
                # A read-only file cannot switch journal mode; reads still work, writes will
                # report the read-only database clearly.
                pass
            finally:
                cur.close()

        @sa_event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            write = conn.get_execution_options().get(WRITE_OPTION, False)
            # Straight to the driver: this runs on every transaction.
            conn.connection.dbapi_connection.execute(  # type: ignore[union-attr]
                "BEGIN IMMEDIATE" if write else "BEGIN"
            )

    def limit_wait(self, conn: Connection, seconds: float) -> None:
        """Nothing: a retry's shorter wait is the deadline of ``Store.run`` itself."""

    def serialize(self, conn: Connection, lock_id: int) -> None:
        """Nothing: the write transaction holds the database's one write lock already."""

    def insert_events(
        self, cur: Any, queries: dict[str, str], rows: Sequence[dict[str, Any]]
    ) -> list[int]:
        # The write lock is held, so the rowids given are consecutive: the last minus n.
        cur.executemany(queries["event_many"], rows)
        cur.execute("SELECT last_insert_rowid()")
        last = int(cur.fetchone()[0])
        return list(range(last - len(rows) + 1, last + 1))

    def stream_cursor(self, dbapi_conn: Any, name: str) -> Any:
        """A plain cursor: SQLite reads rows lazily already."""
        return dbapi_conn.cursor()

    def is_disconnect(self, e: BaseException, conn: Connection, dbapi_error: type) -> bool:
        """Whether a driver error means the connection was lost: a file has no server."""
        return False

    def file_identity(self, discard: Callable[[], None]) -> tuple[int, int] | None:
        """(device, inode) of the database file: a kept connection must not go on writing
        to a file that was deleted or replaced under it (its writes would silently vanish).

        A missing file calls ``discard`` (the thread's kept connections) and is an error:
        removed while in use, or never made (then the schema is missing: a read never
        creates an empty database file by accident)."""
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            discard()
            if self._file_seen:
                raise DatabaseUnavailable(
                    self.safe_url, "the database file was removed while in use"
                ) from None
            raise SchemaOutOfDate(self.safe_url, None, SCHEMA_REVISION) from None
        self._file_seen = True
        return (st.st_dev, st.st_ino)

    @contextmanager
    def reading(self, raw: Connection, lenient: bool) -> Iterator[Connection]:
        """``raw`` set up for a snapshot: with ``lenient``, TEXT that is not UTF-8 is read
        with surrogate escapes instead of failing the read (see ``Store.snapshot``)."""
        dbapi_conn: Any = raw.connection.dbapi_connection
        if lenient:
            # Surrogate escapes, which no hash or JSON check accepts: one problem of
            # verify for the value, not a failed scan.
            dbapi_conn.text_factory = _lenient_text
        try:
            yield raw
        finally:
            if lenient:
                dbapi_conn.text_factory = str

    def settle(self, conn: Connection) -> None:
        """Take the read snapshot now, waiting (up to the lock timeout) while another
        process holds the file exclusively; later reads of this transaction then see it."""
        deadline = time.monotonic() + self.timeouts.lock
        while True:
            try:
                conn.exec_driver_sql("SELECT count(*) FROM workflow_definitions").close()
                return
            except sa_exc.OperationalError as e:
                if not is_locked(e) or time.monotonic() > deadline:
                    raise
            time.sleep(0.05)


def _lenient_text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")

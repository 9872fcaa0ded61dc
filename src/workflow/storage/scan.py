"""Driver-level snapshot reads for verify's worker processes: no SQLAlchemy, no engine.

A verify worker (``workflow.audit.scan``) only streams the instance and event rows of one
instance-id range under a snapshot its coordinator chose. Importing SQLAlchemy and the Store
for that cost ~0.35 s and ~45 MB per process, so the worker reads through the bare driver:

* **SQLite**: the file opened read-only (``mode=ro``) with the standard ``sqlite3`` module,
  one deferred read transaction, its snapshot taken by a first read (waiting up to the lock
  timeout while another process holds the file exclusively), exactly as ``Store.snapshot``.
* **PostgreSQL**: ``psycopg`` with the connection parameters the coordinator's Store derived
  from its URL (:meth:`Store.scan_source`), a ``REPEATABLE READ READ ONLY`` transaction
  under the coordinator's exported snapshot (``SET TRANSACTION SNAPSHOT``), rows from a
  server-side cursor.

The queries are ``Store.stream_instances`` / ``Store.stream_event_tuples``'s, to the letter
(:func:`instances_sql`, :func:`events_sql`), so a worker reads the rows the serial scan reads.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from workflow.errors import DatabaseUnavailable
from workflow.storage.rowtypes import EventRow, InstanceRow, select_list

#: Events per ``fetchmany`` (PostgreSQL: per ``FETCH`` of a server-side cursor, a round trip
#: each): verify holds a chunk or two at a time. 2,000 held ~6 MB more per process on SQLite
#: and ~9 MB on PostgreSQL, and read no faster.
EVENT_CHUNK = 256
#: Other rows per ``fetchmany``.
ROW_CHUNK = 1000

#: What a worker needs to open the database: ``("sqlite", path, lock timeout, safe url)`` or
#: ``("postgresql", psycopg connect keywords, session settings, safe url)``; picklable.
Source = tuple[str, Any, Any, str]


def in_chunks(cur: Any, sql: str, chunk: int) -> Iterator[Any]:
    """The rows of ``sql`` on a DBAPI cursor, fetched ``chunk`` at a time (a server-side
    cursor on PostgreSQL keeps memory flat); the cursor is closed at the end, or when the
    reader stops early."""
    try:
        cur.execute(sql)
        while True:
            rows = cur.fetchmany(chunk)
            if not rows:
                break
            yield from rows
    finally:
        with contextlib.suppress(Exception):  # the connection may be closed already
            cur.close()


def id_range(column: str, lo: int | None, hi: int | None) -> str:
    """`` WHERE lo <= column < hi`` (either side open when None); the bounds are ints."""
    parts = []
    if lo is not None:
        parts.append(f"{column} >= {int(lo)}")
    if hi is not None:
        parts.append(f"{column} < {int(hi)}")
    return (" WHERE " + " AND ".join(parts)) if parts else ""


def instances_sql(lo: int | None, hi: int | None) -> str:
    """The instance rows of ``[lo, hi)`` by id, in ``InstanceRow`` order."""
    return (
        f"SELECT {select_list(InstanceRow)} FROM workflow_instances"
        f"{id_range('id', lo, hi)} ORDER BY id"
    )


def events_sql(lo: int | None, hi: int | None) -> str:
    """The event rows of instances in ``[lo, hi)`` by (instance, seq), in ``EventRow`` order."""
    return (
        f"SELECT {select_list(EventRow)} FROM workflow_events"
        f"{id_range('instance_id', lo, hi)} ORDER BY instance_id, seq"
    )


class Reader:
    """One worker's connection; :meth:`snapshot` opens a read transaction on it."""

    def __init__(self, source: Source) -> None:
        self.kind, self._where, self._settings, self.safe_url = source
        self._conn: Any = None

    @property
    def is_sqlite(self) -> bool:
        return self.kind == "sqlite"

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # closing is best effort
                self._conn.close()
            self._conn = None

    @contextmanager
    def snapshot(self, lenient: bool, shared: str | None) -> Iterator[Any]:
        """A read transaction: SQLite's own snapshot (``lenient``: TEXT that is not UTF-8
        read with surrogate escapes), PostgreSQL's exported one ``shared``."""
        if self.is_sqlite:
            conn = self._sqlite()
            conn.text_factory = _lenient_text if lenient else str
            conn.execute("BEGIN")
            try:
                self._settle(conn)
                yield conn
            finally:
                with contextlib.suppress(Exception):  # a broken connection is closed later
                    conn.rollback()
        else:
            conn = self._postgres()
            try:
                with conn.cursor() as cur:
                    cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    if shared is not None:
                        cur.execute(
                            "SET TRANSACTION SNAPSHOT '" + shared.replace("'", "''") + "'"
                        )
                yield conn
            finally:
                with contextlib.suppress(Exception):
                    conn.rollback()

    def instances(self, conn: Any, lo: int | None, hi: int | None) -> Iterator[InstanceRow]:
        """``Store.stream_instances``'s rows."""
        make = InstanceRow._make
        for r in self._stream(conn, instances_sql(lo, hi), "wf_instances", ROW_CHUNK):
            yield make(r)

    def event_tuples(self, conn: Any, lo: int | None, hi: int | None) -> Iterator[Any]:
        """``Store.stream_event_tuples``'s rows: the driver's plain tuples."""
        return self._stream(conn, events_sql(lo, hi), "wf_events", EVENT_CHUNK)

    def _stream(self, conn: Any, sql: str, name: str, chunk: int) -> Iterator[Any]:
        cur = conn.cursor() if self.is_sqlite else conn.cursor(name=name)
        return in_chunks(cur, sql, chunk)

    def _sqlite(self) -> Any:
        import sqlite3

        if self._conn is None:
            path = Path(self._where)
            if not path.exists():
                raise DatabaseUnavailable(self.safe_url, "the database file is gone")
            uri = read_only_uri(path, self.safe_url, "ro") or (
                "file:" + quote(str(path.resolve())) + "?mode=ro"
            )
            self._conn = sqlite3.connect(
                uri, uri=True, timeout=min(0.2, self._settings), isolation_level=None
            )
        return self._conn

    def _settle(self, conn: Any) -> None:
        """Take the snapshot now (``SQLite.settle``): a first read, retried while the file
        is locked, up to the lock timeout."""
        import sqlite3

        deadline = time.monotonic() + self._settings
        while True:
            try:
                conn.execute("SELECT count(*) FROM workflow_definitions").fetchall()
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    def _postgres(self) -> Any:
        if self._conn is None:
            import psycopg

            self._conn = psycopg.connect(**self._where)
            with self._conn.cursor() as cur:
                for statement in self._settings:
                    cur.execute(statement)
            self._conn.commit()
        return self._conn


def read_only_uri(path: Path, safe_url: str, mode: str | None = None) -> str | None:
    """How to open the SQLite database ``path`` when it lies on a read-only filesystem (a
    snapshot, a backup on read-only media), where SQLite cannot make the ``-shm`` file a
    WAL database needs even to be read: a ``file:`` URI (``mode`` as given, ``ro``) with
    ``immutable=1`` when no ``-wal`` file beside it holds changes the database file lacks;
    ``DatabaseUnavailable`` when one does and there is no ``-shm`` (a copy taken while a
    writer had it open: ``immutable`` would read an older trail, SQLite nothing at all).
    None elsewhere (a writable filesystem, or both files there: SQLite reads them itself).

    Nothing can change the file through a read-only mount, which is what ``immutable``
    asks SQLite to assume; a read-only mount of a database that another, writable mount
    still writes to breaks that promise (docs/audit.md says not to verify it that way)."""
    try:
        if not os.statvfs(path).f_flag & os.ST_RDONLY:
            return None
        wal = path.with_name(path.name + "-wal")
        pending = wal.exists() and wal.stat().st_size > 0
        shm = path.with_name(path.name + "-shm").exists()
    except OSError:
        return None
    if not pending:
        params = [f"mode={mode}"] if mode is not None else []
        return "file:" + quote(str(path.resolve())) + "?" + "&".join([*params, "immutable=1"])
    if not shm:
        raise DatabaseUnavailable(
            safe_url,
            "the database is on a read-only filesystem and its -wal file holds changes the "
            "database file lacks, which SQLite cannot read there: copy the database and its "
            "-wal file to writable storage and open the copy",
        )
    return None


def is_undecodable(e: BaseException) -> bool:
    """Whether a driver error is SQLite TEXT that is not UTF-8 (``Store.is_undecodable``)."""
    return "Could not decode to UTF-8" in str(e)


def _lenient_text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")

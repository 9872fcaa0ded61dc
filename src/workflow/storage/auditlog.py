"""The log of every audit entry: its queue, its leaves and its tree's nodes (revision 0008).

Three tables:

* ``workflow_audit_queue``: one row per audit entry committed but not yet in the log. A
  database trigger on each audit table (events, grant events, denials, account events)
  inserts it *inside the entry's own transaction*, so an entry and its queue row commit
  together or not at all, and no writer code path can forget it. Inserting a row takes no
  lock another writer waits for (a sequence value on PostgreSQL; SQLite has one writer).
* ``workflow_audit_log``: the leaves, ``leaf_index`` 0, 1, 2...; each names its entry
  (``source``, ``source_id``) and holds the entry's hash as it was integrated. Append-only.
* ``workflow_audit_nodes``: the hash of every perfect subtree of the RFC 6962 tree (``id`` =
  ``level << 40 | index``, ``hash`` 32 bytes), so a root or a proof reads O(log n) rows.
  Append-only.

Integration (``workflow.audit.log.integrate``) moves queue rows into the log in queue order,
under one lock (an advisory lock on PostgreSQL, the write lock on SQLite), and deletes them
from the queue in the same transaction. Every query here takes the connection of a
transaction handed out by ``Store.run`` or ``Store.snapshot``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

from workflow.storage.rows import select_list
from workflow.storage.schema import Base
from workflow.storage.store import WAIT_KEY, EventRow, chunks

#: The advisory lock serialising integration on PostgreSQL (SQLite's write lock does it).
AUDIT_LOG_LOCK = 7201952705
#: A node's id: ``level << NODE_SHIFT | index`` (indexes below 2**40 leaves).
NODE_SHIFT = 40

#: Which audit table a leaf comes from, and the column its ``source_id`` names.
SOURCES: dict[str, tuple[str, str]] = {
    "event": ("workflow_events", "id"),
    "grant": ("workflow_grant_events", "seq"),
    "denial": ("workflow_denials", "id"),
    "account": ("workflow_account_events", "seq"),
}


class AuditQueueTable(Base):
    """Audit entries committed but not yet integrated into the log (filled by triggers)."""

    __tablename__ = "workflow_audit_queue"
    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True
    )
    source: Mapped[str] = mapped_column(sa.String(8))
    source_id: Mapped[int] = mapped_column(sa.BigInteger)
    entry_hash: Mapped[str] = mapped_column(sa.Text)


class AuditLogTable(Base):
    """The log's leaves in order (append-only)."""

    __tablename__ = "workflow_audit_log"
    leaf_index: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    source: Mapped[str] = mapped_column(sa.String(8))
    source_id: Mapped[int] = mapped_column(sa.BigInteger)
    entry_hash: Mapped[str] = mapped_column(sa.Text)
    integrated_at: Mapped[str] = mapped_column(sa.String(32))
    __table_args__ = (sa.Index("ix_audit_log_source", "source", "source_id", unique=True),)


class AuditNodeTable(Base):
    """Every perfect subtree's hash (append-only)."""

    __tablename__ = "workflow_audit_nodes"
    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(sa.LargeBinary(32))


queue_t = cast(sa.Table, AuditQueueTable.__table__)
log_t = cast(sa.Table, AuditLogTable.__table__)
nodes_t = cast(sa.Table, AuditNodeTable.__table__)


class QueuedRow(NamedTuple):
    id: int
    source: str
    source_id: int
    entry_hash: str


class LeafRow(NamedTuple):
    leaf_index: int
    source: str
    source_id: int
    entry_hash: str
    integrated_at: str


def node_id(level: int, index: int) -> int:
    return (level << NODE_SHIFT) | index


def lock_log(conn: Connection) -> None:
    """Serialise integrators (PostgreSQL: an advisory lock; SQLite: the write lock held)."""
    conn.info[WAIT_KEY] = "the audit log (another integration in progress)"
    if conn.dialect.name != "sqlite":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({AUDIT_LOG_LOCK})")


def tree_size(conn: Connection) -> int:
    """How many leaves the log holds (the highest leaf index + 1)."""
    value = conn.execute(sa.select(sa.func.max(log_t.c.leaf_index))).scalar()
    return 0 if value is None else int(value) + 1


def queued(conn: Connection, limit: int) -> list[QueuedRow]:
    """The oldest queue rows visible to this transaction, in queue order."""
    stmt = sa.select(queue_t.c.id, queue_t.c.source, queue_t.c.source_id, queue_t.c.entry_hash)
    return [QueuedRow(*r) for r in conn.execute(stmt.order_by(queue_t.c.id).limit(limit))]


def queue_length(conn: Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(queue_t)).scalar() or 0)


def append(
    conn: Connection,
    leaves: Sequence[LeafRow],
    nodes: Sequence[tuple[int, bytes]],
    done: Sequence[int],
) -> None:
    """Store integrated leaves and the perfect nodes they completed; drop their queue rows."""
    cur = conn.connection.cursor()
    mark = "?" if conn.dialect.name == "sqlite" else "%s"
    if leaves:
        cur.executemany(
            "INSERT INTO workflow_audit_log (leaf_index, source, source_id, entry_hash, "
            f"integrated_at) VALUES ({mark}, {mark}, {mark}, {mark}, {mark})",
            [tuple(leaf) for leaf in leaves],
        )
    if nodes:
        cur.executemany(
            f"INSERT INTO workflow_audit_nodes (id, hash) VALUES ({mark}, {mark})", list(nodes)
        )
    for part in chunks(list(done), 500):
        conn.execute(queue_t.delete().where(queue_t.c.id.in_(part)))


def nodes(conn: Connection, wanted: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """The stored hashes of perfect subtrees (level, index); missing ones are left out."""
    ids = {node_id(level, index): (level, index) for level, index in wanted}
    out: dict[tuple[int, int], bytes] = {}
    for part in chunks(sorted(ids), 500):
        for nid, digest in conn.execute(
            sa.select(nodes_t.c.id, nodes_t.c.hash).where(nodes_t.c.id.in_(part))
        ):
            out[ids[int(nid)]] = bytes(digest)
    return out


def leaves(conn: Connection, start: int = 0, stop: int | None = None) -> Iterator[LeafRow]:
    """The log's leaves in order, streamed."""
    stmt = sa.select(*log_t.c).where(log_t.c.leaf_index >= start).order_by(log_t.c.leaf_index)
    if stop is not None:
        stmt = stmt.where(log_t.c.leaf_index < stop)
    for r in conn.execution_options(stream_results=True, yield_per=5000).execute(stmt):
        yield LeafRow(*r)


def leaf_of(conn: Connection, source: str, source_id: int) -> LeafRow | None:
    row = conn.execute(
        sa.select(*log_t.c).where(log_t.c.source == source, log_t.c.source_id == source_id)
    ).first()
    return LeafRow(*row) if row else None


def instance_entries(conn: Connection, instance_id: int) -> list[tuple[EventRow, int | None]]:
    """An instance's events in seq order, each with its leaf index (None: not in the log)."""
    cols = ", ".join(f"e.{c}" for c in select_list(EventRow).split(", "))
    sql = (
        f"SELECT {cols}, l.leaf_index FROM workflow_events e LEFT JOIN workflow_audit_log l "
        "ON l.source = 'event' AND l.source_id = e.id WHERE e.instance_id = :id ORDER BY e.seq"
    )
    n = len(EventRow._fields)
    return [
        (EventRow(*r[:n]), None if r[n] is None else int(r[n]))
        for r in conn.execute(sa.text(sql), {"id": instance_id})
    ]


def mismatches(conn: Connection) -> Iterator[tuple[int, str, int, str, Any]]:
    """Leaves whose entry is gone or holds another hash now: (leaf index, source, source id,
    hash in the log, hash in the table or None), in leaf order."""
    for source, (table, column) in SOURCES.items():
        sql = (
            f"SELECT l.leaf_index, l.source_id, l.entry_hash, s.hash FROM workflow_audit_log l "
            f"LEFT JOIN {table} s ON s.{column} = l.source_id WHERE l.source = :source "
            "AND (s.hash IS NULL OR s.hash <> l.entry_hash) ORDER BY l.leaf_index"
        )
        for r in conn.execute(sa.text(sql), {"source": source}):
            yield int(r[0]), source, r[1], r[2], r[3]


def unlogged(conn: Connection) -> Iterator[tuple[str, Any]]:
    """Audit entries neither in the log nor in its queue: (source, source id)."""
    for source, (table, column) in SOURCES.items():
        sql = (
            f"SELECT s.{column} FROM {table} s WHERE NOT EXISTS (SELECT 1 FROM "
            f"workflow_audit_log l WHERE l.source = :source AND l.source_id = s.{column}) "
            "AND NOT EXISTS (SELECT 1 FROM workflow_audit_queue q WHERE q.source = :source "
            f"AND q.source_id = s.{column}) ORDER BY s.{column}"
        )
        for r in conn.execute(sa.text(sql), {"source": source}):
            yield source, r[0]


def describe(conn: Connection, source: str, source_id: Any) -> str:
    """How an auditor names an entry: ``instance 7 seq 3``, ``grant event 2``..."""
    if source == "event":
        row = conn.execute(
            sa.text("SELECT instance_id, seq FROM workflow_events WHERE id = :id"),
            {"id": source_id},
        ).first()
        if row is not None:
            return f"instance {row[0]} seq {row[1]}"
        return f"event id {source_id} (no longer stored)"
    what = {"grant": "grant event", "denial": "denial id", "account": "account event"}
    return f"{what.get(source, source)} {source_id}"


def leaf_pairs(
    conn: Connection, stop: int | None = None
) -> Iterator[tuple[int, str, Any, str, Any]]:
    """(leaf index, source, source id, entry hash, stored leaf hash or None) in leaf order,
    streamed: the log's leaves beside the tree's level 0 (node id = leaf index)."""
    sql = (
        "SELECT l.leaf_index, l.source, l.source_id, l.entry_hash, n.hash FROM "
        "workflow_audit_log l LEFT JOIN workflow_audit_nodes n ON n.id = l.leaf_index"
        + (" WHERE l.leaf_index < :stop" if stop is not None else "")
        + " ORDER BY l.leaf_index"
    )
    result = conn.execution_options(stream_results=True, yield_per=5000).execute(
        sa.text(sql), {"stop": stop}
    )
    for r in result:
        yield int(r[0]), r[1], r[2], r[3], r[4]

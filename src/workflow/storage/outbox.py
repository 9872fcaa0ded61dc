"""Deadlines and notifications in the database (revision 0010, CONTRACT §10).

* ``workflow_overdue``: the entries into a state for which an ``overdue`` event exists; its
  UNIQUE (instance, state, entered_seq) key makes ``tick`` idempotent across hosts.
* ``workflow_hooks``: the receivers.
* ``workflow_outbox``: one row per (hook, event) to deliver, written by an ``AFTER INSERT``
  trigger on ``workflow_events`` in the event's own transaction (see the revision).

Deliveries are claimed in a short transaction with a lease (``claimed_by``,
``claimed_until``): on PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets several workers claim
disjoint rows at once; SQLite's write lock serialises the claims. A delivery is sent outside
any transaction and marked done only by the worker holding its lease. Every function takes
the connection of a transaction handed out by ``Store.run``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

from workflow.storage.rows import EVENT_COLUMNS, INSTANCE_COLUMNS
from workflow.storage.schema import Base, events_t, instances_t
from workflow.storage.store import EventRow, InstanceRow

_BIG = sa.BigInteger().with_variant(sa.Integer, "sqlite")


class OverdueTable(Base):
    """One row per entry into a state that an ``overdue`` event was recorded for."""

    __tablename__ = "workflow_overdue"
    id: Mapped[int] = mapped_column(_BIG, primary_key=True)
    instance_id: Mapped[int] = mapped_column(sa.BigInteger)
    state: Mapped[str] = mapped_column(sa.Text)
    entered_seq: Mapped[int]
    event_seq: Mapped[int]
    due_at: Mapped[str] = mapped_column(sa.String(32))
    recorded_at: Mapped[str] = mapped_column(sa.String(32))
    __table_args__ = (
        sa.UniqueConstraint("instance_id", "state", "entered_seq", name="uq_overdue_entry"),
    )


class HookTable(Base):
    """A receiver: webhook URL or ``mailto:``, optionally for one program and trigger."""

    __tablename__ = "workflow_hooks"
    id: Mapped[int] = mapped_column(_BIG, primary_key=True)
    url: Mapped[str] = mapped_column(sa.Text)
    program: Mapped[str | None] = mapped_column(sa.String(64))
    trigger_name: Mapped[str | None] = mapped_column(sa.String(64))
    secret: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[str] = mapped_column(sa.String(32))
    removed_at: Mapped[str | None] = mapped_column(sa.String(32))


class OutboxTable(Base):
    """One delivery of one event to one hook."""

    __tablename__ = "workflow_outbox"
    id: Mapped[int] = mapped_column(_BIG, primary_key=True)
    hook_id: Mapped[int] = mapped_column(sa.BigInteger)
    event_id: Mapped[int] = mapped_column(sa.BigInteger)
    status: Mapped[str] = mapped_column(sa.String(9))
    attempts: Mapped[int]
    next_at: Mapped[str] = mapped_column(sa.String(32))
    claimed_by: Mapped[str | None] = mapped_column(sa.Text)
    claimed_until: Mapped[str | None] = mapped_column(sa.String(32))
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[str] = mapped_column(sa.String(32))
    delivered_at: Mapped[str | None] = mapped_column(sa.String(32))
    __table_args__ = (
        sa.UniqueConstraint("hook_id", "event_id", name="uq_outbox_hook_event"),
        sa.Index("ix_outbox_due", "status", "next_at"),
    )


overdue_t = cast(sa.Table, OverdueTable.__table__)
hooks_t = cast(sa.Table, HookTable.__table__)
outbox_t = cast(sa.Table, OutboxTable.__table__)


class HookRow(NamedTuple):
    id: int
    url: str
    program: str | None
    trigger_name: str | None
    secret: str | None
    created_at: str
    removed_at: str | None


class OutboxRow(NamedTuple):
    id: int
    hook_id: int
    event_id: int
    status: str
    attempts: int
    next_at: str
    claimed_by: str | None
    claimed_until: str | None
    last_error: str | None
    created_at: str
    delivered_at: str | None


HOOK_COLUMNS = [hooks_t.c[n] for n in HookRow._fields]
OUTBOX_COLUMNS = [outbox_t.c[n] for n in OutboxRow._fields]


# --------------------------------------------------------------------------- deadlines


def transitions_of(conn: Connection, instance_id: int) -> Iterator[tuple[int, str, Any, str]]:
    """(seq, at, from_state, to_state) of an instance's events, newest first."""
    result = conn.execute(
        sa.select(events_t.c.seq, events_t.c.at, events_t.c.from_state, events_t.c.to_state)
        .where(events_t.c.instance_id == instance_id)
        .order_by(events_t.c.seq.desc())
    )
    for row in result:
        yield row[0], row[1], row[2], row[3]


def overdue_marks(conn: Connection, instance_id: int) -> set[tuple[str, int]]:
    """(state, entered_seq) of every entry of the instance already marked overdue."""
    rows = conn.execute(
        sa.select(overdue_t.c.state, overdue_t.c.entered_seq).where(
            overdue_t.c.instance_id == instance_id
        )
    )
    return {(r[0], r[1]) for r in rows}


def mark_overdue(
    conn: Connection,
    instance_id: int,
    state: str,
    entered_seq: int,
    event_seq: int,
    due_at: str,
    now: str,
) -> None:
    """Record that an entry is overdue (a concurrent tick collides on the unique key)."""
    conn.execute(
        overdue_t.insert().values(
            instance_id=instance_id,
            state=state,
            entered_seq=entered_seq,
            event_seq=event_seq,
            due_at=due_at,
            recorded_at=now,
        )
    )


def instances_of(conn: Connection, programs: Sequence[str]) -> list[InstanceRow]:
    """The instances of these programs (the ones whose definitions have a due state)."""
    if not programs:
        return []
    rows = conn.execute(
        sa.select(*INSTANCE_COLUMNS)
        .where(instances_t.c.program.in_(list(programs)))
        .order_by(instances_t.c.id)
    )
    return [InstanceRow(*r) for r in rows]


# --------------------------------------------------------------------------- hooks


def add_hook(
    conn: Connection,
    url: str,
    program: str | None,
    trigger: str | None,
    secret: str | None,
    now: str,
) -> int:
    result = conn.execute(
        hooks_t.insert().values(
            url=url, program=program, trigger_name=trigger, secret=secret, created_at=now
        )
    )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def hooks(conn: Connection, include_removed: bool = False) -> list[HookRow]:
    query = sa.select(*HOOK_COLUMNS).order_by(hooks_t.c.id)
    if not include_removed:
        query = query.where(hooks_t.c.removed_at.is_(None))
    return [HookRow(*r) for r in conn.execute(query)]


def remove_hook(conn: Connection, hook_id: int, now: str) -> HookRow | None:
    """Mark a hook in force removed; the row as it is now, or None if there was none."""
    result = conn.execute(
        hooks_t.update()
        .where(hooks_t.c.id == hook_id, hooks_t.c.removed_at.is_(None))
        .values(removed_at=now)
    )
    if not result.rowcount:
        return None
    row = conn.execute(sa.select(*HOOK_COLUMNS).where(hooks_t.c.id == hook_id)).one()
    return HookRow(*row)


# --------------------------------------------------------------------------- the outbox


def claim(
    conn: Connection, worker: str, now: str, until: str, limit: int
) -> list[tuple[OutboxRow, HookRow, EventRow]]:
    """Lease up to ``limit`` deliveries that are due (pending and not leased by a live
    worker), oldest first; PostgreSQL skips rows another worker is claiming right now."""
    query = (
        sa.select(outbox_t.c.id)
        .where(
            outbox_t.c.status == "pending",
            outbox_t.c.hook_id.in_(sa.select(hooks_t.c.id).where(hooks_t.c.removed_at.is_(None))),
            outbox_t.c.next_at <= now,
            sa.or_(outbox_t.c.claimed_until.is_(None), outbox_t.c.claimed_until < now),
        )
        .order_by(outbox_t.c.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = [r[0] for r in conn.execute(query)]
    if not ids:
        return []
    conn.execute(
        outbox_t.update()
        .where(outbox_t.c.id.in_(ids))
        .values(claimed_by=worker, claimed_until=until)
    )
    rows = conn.execute(
        sa.select(*OUTBOX_COLUMNS, *HOOK_COLUMNS, *EVENT_COLUMNS)
        .join(hooks_t, hooks_t.c.id == outbox_t.c.hook_id)
        .join(events_t, events_t.c.id == outbox_t.c.event_id)
        .where(outbox_t.c.id.in_(ids))
        .order_by(outbox_t.c.id)
    ).all()
    n, m = len(OutboxRow._fields), len(HookRow._fields)
    return [
        (OutboxRow(*r[:n]), HookRow(*r[n : n + m]), EventRow(*r[n + m :])) for r in rows
    ]


def delivered(conn: Connection, outbox_ids: Sequence[int], worker: str, now: str) -> int:
    """Mark deliveries done, those whose lease ``worker`` still holds; how many it marked."""
    if not outbox_ids:
        return 0
    result = conn.execute(
        outbox_t.update()
        .where(outbox_t.c.id.in_(list(outbox_ids)), outbox_t.c.claimed_by == worker)
        .values(
            status="delivered",
            attempts=outbox_t.c.attempts + 1,
            delivered_at=now,
            claimed_by=None,
            claimed_until=None,
            last_error=None,
        )
    )
    return int(result.rowcount)


def failed(
    conn: Connection, outbox_id: int, worker: str, next_at: str, error: str, dead: bool
) -> bool:
    """Count a failed attempt: try again at ``next_at``, or mark it dead."""
    result = conn.execute(
        outbox_t.update()
        .where(outbox_t.c.id == outbox_id, outbox_t.c.claimed_by == worker)
        .values(
            status="dead" if dead else "pending",
            attempts=outbox_t.c.attempts + 1,
            next_at=next_at,
            claimed_by=None,
            claimed_until=None,
            last_error=error[:2000],
        )
    )
    return bool(result.rowcount)


def outbox(
    conn: Connection, dead: bool = False, limit: int = 1000, after: int | None = None
) -> list[OutboxRow]:
    """Undelivered (or only dead) deliveries with ids above ``after``, oldest first."""
    query = sa.select(*OUTBOX_COLUMNS).order_by(outbox_t.c.id).limit(limit)
    query = query.where(
        outbox_t.c.status == "dead" if dead else outbox_t.c.status != "delivered"
    )
    if after is not None:
        query = query.where(outbox_t.c.id > after)
    return [OutboxRow(*r) for r in conn.execute(query)]


def outbox_counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute(
        sa.select(outbox_t.c.status, sa.func.count()).group_by(outbox_t.c.status)
    )
    return {r[0]: int(r[1]) for r in rows}


def retry(conn: Connection, outbox_id: int, now: str) -> OutboxRow | None:
    """Put a (dead or pending) delivery back in line now, its attempts counted afresh; the
    row as it is now, or None if there is no undelivered one. A lease a live worker holds
    stays (that worker is sending it now: clearing the lease would let a second worker send
    it too); a lease that has run out is cleared."""
    live = sa.and_(outbox_t.c.claimed_until.is_not(None), outbox_t.c.claimed_until > now)
    result = conn.execute(
        outbox_t.update()
        .where(outbox_t.c.id == outbox_id, outbox_t.c.status != "delivered")
        .values(
            status="pending", attempts=0, next_at=now,
            claimed_by=sa.case((live, outbox_t.c.claimed_by), else_=None),
            claimed_until=sa.case((live, outbox_t.c.claimed_until), else_=None),
        )
    )
    if not result.rowcount:
        return None
    row = conn.execute(sa.select(*OUTBOX_COLUMNS).where(outbox_t.c.id == outbox_id)).one()
    return OutboxRow(*row)

"""The schema as SQLAlchemy declares it: workflow's tables, their keys and indexes.

The tables are declared here once, for the queries of the Store and as the migrations' target
metadata (``migrations/env.py``). The database itself is created and changed only by the
Alembic revisions in ``migrations/versions/``, which spell their DDL out on purpose: a
revision must keep doing what it did when this module changes. ``SCHEMA_REVISION`` names the
revision these declarations match (tests check it is the migrations' head). The triggers that
keep the audit tables append-only exist only in the revisions (0001, 0002, 0004).
"""

from __future__ import annotations

from typing import cast

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from workflow.runtime.text import AUTH_MAX, ID_MAX, KEY_MAX

#: The Alembic revision this code expects (tests check it is the migrations' head).
SCHEMA_REVISION = "0011"
#: Alembic's bookkeeping table, named so workflow can share a database with other apps.
VERSION_TABLE = "workflow_alembic_version"


class Base(DeclarativeBase):
    """The declarative base: ``Base.metadata`` holds every workflow table."""


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
    #: ``bundled``, or the extra file it was read from (revision 0005).
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
    auth: Mapped[str | None] = mapped_column(sa.String(AUTH_MAX), nullable=True)
    #: The hash's encoding (``wf3``); NULL for events written before revision 0011.
    hash_format: Mapped[str | None] = mapped_column(sa.String(8), nullable=True)
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
    #: The end of a grant given ``--until DATE`` (ISO UTC, as every stored time); NULL: none.
    expires_at: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    __table_args__ = (
        sa.UniqueConstraint("actor", "role", "area_code", "program", name="uq_grant"),
        sa.Index("ix_grants_actor", "actor", "role"),
    )


class AttachmentTable(Base):
    """Files given as evidence of type ``file``, by the SHA-256 of their content (``content``
    NULL when the bytes live in an attachments directory)."""

    __tablename__ = "workflow_attachments"
    sha256: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    media_type: Mapped[str] = mapped_column(sa.String(100))
    size: Mapped[int] = mapped_column(sa.BigInteger)
    content: Mapped[bytes | None] = mapped_column(sa.LargeBinary, nullable=True)
    stored_at: Mapped[str] = mapped_column(sa.String(32))


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

"""The typed rows themselves, one named tuple per table, and their driver-SQL select lists.

No SQLAlchemy here: a verify worker process (``workflow.audit.scan``) reads rows through the
bare driver (``workflow.storage.scan``) and needs these shapes without paying for SQLAlchemy's
import. :mod:`workflow.storage.rows` re-exports them with their SQLAlchemy columns.
"""

from __future__ import annotations

from typing import Any, NamedTuple


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
    #: How the caller was authenticated when the event came through the service
    #: (``token:ID`` or ``session:...``); None for the command line and embedding code.
    auth: str | None = None
    #: The encoding the event's hash was taken over: ``wf3`` for the events written since
    #: schema revision 0011; None for earlier ones (``wf1``, or ``wf2`` when ``auth`` is set).
    hash_format: str | None = None


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
    expires_at: str | None = None


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


def select_list(row: type[Any]) -> str:
    """The driver-SQL select list that decodes into ``row``: its fields, in order."""
    return ", ".join(row._fields)

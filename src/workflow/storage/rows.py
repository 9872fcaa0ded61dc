"""Typed rows: what the Store hands out, one named tuple per table.

The rest of the package speaks in these rows and never sees SQLAlchemy: the engine, the policy
and the audit code read fields by name. The codec between a table and its row is the column
order: each row is decoded positionally (``InstanceRow(*result_row)``) from a select list in
its field order, given below as SQLAlchemy columns (``*_COLUMNS``) and as the text of a driver
statement (:func:`select_list`). Values stay as stored (text timestamps, the JSON text of
``active`` and ``evidence``): what they mean is the engine's business.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from workflow.storage.schema import (
    definitions_t,
    denials_t,
    events_t,
    grant_events_t,
    grants_t,
    instances_t,
    keys_t,
)


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


# The SQLAlchemy select lists, one per row type (same order as the row's fields).
GRANT_COLUMNS = [grants_t.c[name] for name in GrantRow._fields]
GRANT_EVENT_COLUMNS = [grant_events_t.c[name] for name in GrantEventRow._fields]
DENIAL_COLUMNS = [denials_t.c[name] for name in DenialRow._fields]
INSTANCE_COLUMNS = [instances_t.c[name] for name in InstanceRow._fields]
EVENT_COLUMNS = [events_t.c[name] for name in EventRow._fields]
DEFINITION_COLUMNS = [definitions_t.c[name] for name in DefinitionRow._fields]
KEY_COLUMNS = [keys_t.c[name] for name in KeyRow._fields]

"""Typed rows: what the Store hands out, one named tuple per table.

The rest of the package speaks in these rows and never sees SQLAlchemy: the engine, the policy
and the audit code read fields by name. The codec between a table and its row is the column
order: each row is decoded positionally (``InstanceRow(*result_row)``) from a select list in
its field order, given below as SQLAlchemy columns (``*_COLUMNS``) and as the text of a driver
statement (:func:`select_list`). Values stay as stored (text timestamps, the JSON text of
``active`` and ``evidence``): what they mean is the engine's business.
"""

from __future__ import annotations

from workflow.storage.rowtypes import (
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
    definitions_t,
    denials_t,
    events_t,
    grant_events_t,
    grants_t,
    instances_t,
    keys_t,
)

# The SQLAlchemy select lists, one per row type (same order as the row's fields).
GRANT_COLUMNS = [grants_t.c[name] for name in GrantRow._fields]
GRANT_EVENT_COLUMNS = [grant_events_t.c[name] for name in GrantEventRow._fields]
DENIAL_COLUMNS = [denials_t.c[name] for name in DenialRow._fields]
INSTANCE_COLUMNS = [instances_t.c[name] for name in InstanceRow._fields]
EVENT_COLUMNS = [events_t.c[name] for name in EventRow._fields]
DEFINITION_COLUMNS = [definitions_t.c[name] for name in DefinitionRow._fields]
KEY_COLUMNS = [keys_t.c[name] for name in KeyRow._fields]

__all__ = [
    "DEFINITION_COLUMNS",
    "DENIAL_COLUMNS",
    "EVENT_COLUMNS",
    "GRANT_COLUMNS",
    "GRANT_EVENT_COLUMNS",
    "INSTANCE_COLUMNS",
    "KEY_COLUMNS",
    "DefinitionRow",
    "DenialRow",
    "EventRow",
    "GrantEventRow",
    "GrantRow",
    "InstanceRow",
    "KeyRow",
    "select_list",
]

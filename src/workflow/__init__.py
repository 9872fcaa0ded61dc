"""workflow: the programs of Thailand's Community Development Department as persisted,
audited state machines.

The public API is what ``__all__`` lists; everything else is an implementation detail.
Names are imported on first use, so that ``import workflow`` (and ``workflow --help``) does
not pay for SQLAlchemy, transitions and the area data until they are needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workflow.access.policy import AccessRequest, AllowAll, Denial, Grant, Policy, StoredGrants
    from workflow.accounts import Account, Accounts, Principal, Token
    from workflow.areas import Area
    from workflow.audit.chain import Digest
    from workflow.engine.evolution import MigrationItem, MigrationResult
    from workflow.engine.facade import Engine
    from workflow.engine.requests import FireRequest, StartRequest
    from workflow.errors import (
        AccountExists,
        AccountNotFound,
        AmendRefused,
        AreaNotFound,
        ClockWentBack,
        Conflict,
        DatabaseUnavailable,
        DefinitionChanged,
        DefinitionError,
        DuplicateInstance,
        EventNotFound,
        EvidenceInvalid,
        GrantNotFound,
        GuardFailed,
        IdempotencyConflict,
        InstanceNotFound,
        KeyRecordMismatch,
        NotAuthenticated,
        NotFound,
        PermissionDenied,
        Problem,
        ProgramNotFound,
        Refused,
        RoleNotAllowed,
        SchemaOutOfDate,
        StateNotFound,
        StorageError,
        Throttled,
        TokenNotFound,
        TriggerNotAllowed,
        UnknownRole,
        UsageError,
        VersionConflict,
        WorkflowError,
    )
    from workflow.programs.model import Program
    from workflow.records import (
        Event,
        FireResult,
        Instance,
        NonBundled,
        Report,
        ReportRow,
        VerifyProblem,
        VerifyResult,
    )
    from workflow.runtime.machine import GuardContext

_LAZY: dict[str, str] = {
    "AccessRequest": "workflow.access.policy",
    "Account": "workflow.accounts",
    "AccountExists": "workflow.errors",
    "AccountNotFound": "workflow.errors",
    "Accounts": "workflow.accounts",
    "AllowAll": "workflow.access.policy",
    "AmendRefused": "workflow.errors",
    "Area": "workflow.areas",
    "AreaNotFound": "workflow.errors",
    "ClockWentBack": "workflow.errors",
    "Conflict": "workflow.errors",
    "DatabaseUnavailable": "workflow.errors",
    "DefinitionChanged": "workflow.errors",
    "DefinitionError": "workflow.errors",
    "Denial": "workflow.access.policy",
    "Digest": "workflow.audit.chain",
    "DuplicateInstance": "workflow.errors",
    "Engine": "workflow.engine.facade",
    "Event": "workflow.records",
    "EventNotFound": "workflow.errors",
    "EvidenceInvalid": "workflow.errors",
    "FireRequest": "workflow.engine.requests",
    "FireResult": "workflow.records",
    "Grant": "workflow.access.policy",
    "GrantNotFound": "workflow.errors",
    "GuardContext": "workflow.runtime.machine",
    "GuardFailed": "workflow.errors",
    "IdempotencyConflict": "workflow.errors",
    "Instance": "workflow.records",
    "InstanceNotFound": "workflow.errors",
    "KeyRecordMismatch": "workflow.errors",
    "MigrationItem": "workflow.engine.evolution",
    "MigrationResult": "workflow.engine.evolution",
    "NonBundled": "workflow.records",
    "NotAuthenticated": "workflow.errors",
    "NotFound": "workflow.errors",
    "PermissionDenied": "workflow.errors",
    "Policy": "workflow.access.policy",
    "Principal": "workflow.accounts",
    "Problem": "workflow.errors",
    "Program": "workflow.programs.model",
    "ProgramNotFound": "workflow.errors",
    "Refused": "workflow.errors",
    "Report": "workflow.records",
    "ReportRow": "workflow.records",
    "RoleNotAllowed": "workflow.errors",
    "SchemaOutOfDate": "workflow.errors",
    "StartRequest": "workflow.engine.requests",
    "StateNotFound": "workflow.errors",
    "StorageError": "workflow.errors",
    "StoredGrants": "workflow.access.policy",
    "Throttled": "workflow.errors",
    "Token": "workflow.accounts",
    "TokenNotFound": "workflow.errors",
    "TriggerNotAllowed": "workflow.errors",
    "UnknownRole": "workflow.errors",
    "UsageError": "workflow.errors",
    "VerifyProblem": "workflow.records",
    "VerifyResult": "workflow.records",
    "VersionConflict": "workflow.errors",
    "WorkflowError": "workflow.errors",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'workflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__version__ = "0.1.0"

__all__ = [
    "AccessRequest",
    "Account",
    "AccountExists",
    "AccountNotFound",
    "Accounts",
    "AllowAll",
    "AmendRefused",
    "Area",
    "AreaNotFound",
    "ClockWentBack",
    "Conflict",
    "DatabaseUnavailable",
    "DefinitionChanged",
    "DefinitionError",
    "Denial",
    "Digest",
    "DuplicateInstance",
    "Engine",
    "Event",
    "EventNotFound",
    "EvidenceInvalid",
    "FireRequest",
    "FireResult",
    "Grant",
    "GrantNotFound",
    "GuardContext",
    "GuardFailed",
    "IdempotencyConflict",
    "Instance",
    "InstanceNotFound",
    "KeyRecordMismatch",
    "MigrationItem",
    "MigrationResult",
    "NonBundled",
    "NotAuthenticated",
    "NotFound",
    "PermissionDenied",
    "Policy",
    "Principal",
    "Problem",
    "Program",
    "ProgramNotFound",
    "Refused",
    "Report",
    "ReportRow",
    "RoleNotAllowed",
    "SchemaOutOfDate",
    "StartRequest",
    "StateNotFound",
    "StorageError",
    "StoredGrants",
    "Throttled",
    "Token",
    "TokenNotFound",
    "TriggerNotAllowed",
    "UnknownRole",
    "UsageError",
    "VerifyProblem",
    "VerifyResult",
    "VersionConflict",
    "WorkflowError",
    "__version__",
]

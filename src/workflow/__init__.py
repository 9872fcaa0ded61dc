"""workflow: the programs of Thailand's Community Development Department as persisted,
audited state machines.

The public API is what ``__all__`` lists; everything else is an implementation detail.
"""

from workflow.access import AccessRequest, AllowAll, Denial, Grant, Policy, StoredGrants
from workflow.areas import Area
from workflow.audit import Digest
from workflow.engine import Engine
from workflow.errors import (
    AreaNotFound,
    Conflict,
    DatabaseUnavailable,
    DefinitionChanged,
    DefinitionError,
    DuplicateInstance,
    EvidenceInvalid,
    GrantNotFound,
    GuardFailed,
    IdempotencyConflict,
    InstanceNotFound,
    NotFound,
    PermissionDenied,
    Problem,
    ProgramNotFound,
    Refused,
    RoleNotAllowed,
    SchemaOutOfDate,
    StorageError,
    TriggerNotAllowed,
    UsageError,
    VersionConflict,
    WorkflowError,
)
from workflow.machine import GuardContext
from workflow.model import Program
from workflow.records import (
    Event,
    FireResult,
    Instance,
    Report,
    ReportRow,
    VerifyProblem,
    VerifyResult,
)

__version__ = "0.1.0"

__all__ = [
    "AccessRequest",
    "AllowAll",
    "Area",
    "AreaNotFound",
    "Conflict",
    "DatabaseUnavailable",
    "DefinitionChanged",
    "DefinitionError",
    "Denial",
    "Digest",
    "DuplicateInstance",
    "Engine",
    "Event",
    "EvidenceInvalid",
    "FireResult",
    "Grant",
    "GrantNotFound",
    "GuardContext",
    "GuardFailed",
    "IdempotencyConflict",
    "Instance",
    "InstanceNotFound",
    "NotFound",
    "PermissionDenied",
    "Policy",
    "Problem",
    "Program",
    "ProgramNotFound",
    "Refused",
    "Report",
    "ReportRow",
    "RoleNotAllowed",
    "SchemaOutOfDate",
    "StorageError",
    "StoredGrants",
    "TriggerNotAllowed",
    "UsageError",
    "VerifyProblem",
    "VerifyResult",
    "VersionConflict",
    "WorkflowError",
    "__version__",
]

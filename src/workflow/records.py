"""The frozen, typed objects the engine returns: instances, events, and audit results.

Each has ``to_dict()`` producing exactly the JSON of the contract (CONTRACT §4), so the CLI and
embedding services print the same keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: a verify worker imports these records, not the areas
    from workflow.areas import Area
    from workflow.runtime.evidence import EvidenceValue

Configuration = tuple[str, ...]


def config_json(config: Configuration | None) -> str | list[str] | None:
    """A configuration as JSON: one leaf as a string, a parallel configuration as a list."""
    if config is None:
        return None
    return config[0] if len(config) == 1 else list(config)


def area_json(area: Area) -> dict[str, str]:
    return {"code": area.code, "name_th": area.name_th, "name_en": area.name_en}


@dataclass(frozen=True)
class Instance:
    """One run of one program version for one area and fiscal year."""

    id: int
    program: str
    program_version: int
    area: Area
    fiscal_year: int
    title: str | None
    state: str
    active: Configuration
    version: int
    created_at: str
    updated_at: str
    available_triggers: tuple[str, ...]
    final: bool
    #: When the earliest active due state is due (CONTRACT §10), and whether one has passed.
    due_at: str | None = None
    overdue: bool = False
    #: The roles an overdue instance is escalated to (its overdue states' ``escalate``).
    escalate: tuple[str, ...] = ()
    #: Events amended by later ``correct`` events: (seq, the corrections' seqs), oldest
    #: first. Read for one instance (``get``: ``show``, ``GET /instances/{id}``), not for
    #: lists, so ``None`` means "not read" and the JSON leaves the key out.
    corrected: tuple[tuple[int, tuple[int, ...]], ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "program": self.program,
            "program_version": self.program_version,
            "area": area_json(self.area),
            "fiscal_year": self.fiscal_year,
            "title": self.title,
            "state": self.state,
            "active": list(self.active),
            "final": self.final,
            "version": self.version,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "available_triggers": list(self.available_triggers),
            "due_at": self.due_at,
            "overdue": self.overdue,
            **(
                {"corrected": [{"seq": s, "by": list(by)} for s, by in self.corrected]}
                if self.corrected is not None
                else {}
            ),
        }


@dataclass(frozen=True)
class Event:
    """One entry of an instance's audit trail (its first is the ``start`` event)."""

    id: int
    instance: int | None  # None for grant and revoke events
    seq: int
    trigger: str
    from_: Configuration | None
    to: Configuration
    actor: str
    role: str
    os_user: str
    at: str
    evidence: Mapping[str, EvidenceValue]
    note: str | None
    definition_hash: str
    policy: str
    prev_hash: str
    hash: str
    program: str | None = None
    area: str | None = None
    #: How the caller was authenticated when the event came through the service
    #: (``token:ID`` or ``session:...``; covered by the hash, ``wf3``/``wf2``); None otherwise.
    auth: str | None = None
    #: When later ``correct`` events amended this one (history only): their seqs, and the
    #: evidence and note as corrected (``evidence`` and ``note`` stay as first recorded).
    corrected_by: tuple[int, ...] = ()
    corrected_evidence: Mapping[str, EvidenceValue] | None = None
    corrected_note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "instance": self.instance,
            "seq": self.seq,
            "trigger": self.trigger,
            "from": config_json(self.from_),
            "to": config_json(self.to),
            "actor": self.actor,
            "role": self.role,
            "os_user": self.os_user,
            "at": self.at,
            "evidence": dict(self.evidence),
            "note": self.note,
            "policy": self.policy,
            "definition_hash": self.definition_hash,
            "hash": self.hash,
            "prev_hash": self.prev_hash,
            "auth": self.auth,
        }
        if self.program is not None:
            out["program"] = self.program
        if self.area is not None:
            out["area"] = self.area
        if self.corrected_by:
            out["corrected"] = {
                "by": list(self.corrected_by),
                "evidence": dict(self.corrected_evidence or {}),
                "note": self.corrected_note,
            }
        return out


@dataclass(frozen=True)
class FireResult:
    """What ``fire`` did: the event appended and the instance after it."""

    event: Event
    instance: Instance
    replayed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": self.event.to_dict(),
            "instance": self.instance.to_dict(),
            "replayed": self.replayed,
        }


@dataclass(frozen=True)
class VerifyProblem:
    """The first broken event of one instance (``seq`` 0 when the instance row itself is)."""

    instance: int | None
    seq: int | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"instance": self.instance, "seq": self.seq, "reason": self.reason}


@dataclass(frozen=True)
class NonBundled:
    """An instance running under a definition that did not ship with workflow (an override
    the operator allowed, or a program of an extra directory): not a problem, but a reader
    of the trail must know whose rules it followed."""

    instance: int
    program: str
    program_version: int
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "program": self.program,
            "program_version": self.program_version,
            "source": self.source,
        }


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of re-computing every chain (and, if given, checking a digest)."""

    ok: bool
    events_checked: int
    instances_checked: int
    problems: tuple[VerifyProblem, ...] = ()
    digest_checked: bool = False
    non_bundled: tuple[NonBundled, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events_checked": self.events_checked,
            "instances_checked": self.instances_checked,
            "digest_checked": self.digest_checked,
            "problems": [p.to_dict() for p in self.problems],
            "non_bundled": [n.to_dict() for n in self.non_bundled],
        }


@dataclass(frozen=True)
class ReportRow:
    """Instances of one program in one province and top-level state."""

    program: str
    province: Area
    state: str
    count: int
    regions_done: Mapping[str, int] = field(default_factory=dict)
    #: How many of them are past a due time (CONTRACT §10).
    overdue: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "program": self.program,
            "province": area_json(self.province),
            "state": self.state,
            "count": self.count,
            "overdue": self.overdue,
        }
        if self.regions_done:
            out["regions_done"] = dict(self.regions_done)
        return out


@dataclass(frozen=True)
class Report:
    """Instances per program, province and state, optionally for one fiscal year."""

    fiscal_year: int | None
    rows: tuple[ReportRow, ...]

    @property
    def total(self) -> int:
        return sum(r.count for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "fiscal_year": self.fiscal_year,
            "total": self.total,
            "rows": [r.to_dict() for r in self.rows],
        }

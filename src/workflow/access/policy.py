"""Who may do what: grants scoped by role, area and program, and the policy protocol.

A grant gives one actor one role, optionally limited to an area (that area and everything
inside it, by DOPA code prefix) and to one program. ``auditor`` is a read-only role: it may be
granted (it documents who audits) but never fires anything. The engine asks its policy inside
the transaction of each change; by default the policy is the stored grants. An embedding
application may pass its own object with the same small protocol instead, and its ``name`` is
recorded in every event it allowed, so the audit shows which rules were in force.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

AUDITOR = "auditor"
EVERYWHERE = ""


@dataclass(frozen=True)
class AccessRequest:
    """One attempted change: may ``actor``, acting as ``role``, do ``action`` here?"""

    actor: str
    role: str
    action: str  # "start" or the trigger fired
    program: str
    area: str
    instance: int | None = None


@dataclass(frozen=True)
class Grant:
    """``actor`` may act as ``role`` in ``area`` (None: everywhere) on ``program`` (None: all)."""

    actor: str
    role: str
    area: str | None
    program: str | None
    granted_by: str
    granted_at: str
    #: When the grant stops covering anything (``--until DATE``: the end of that day, Thai
    #: time; ISO UTC); None for a grant without an end.
    expires_at: str | None = None

    def expired(self, now: str | None = None) -> bool:
        """Whether the grant has ended (an expired grant refuses like a revoked one)."""
        return self.expires_at is not None and (now or _now()) >= self.expires_at

    def covers(self, request: AccessRequest) -> bool:
        return (
            not self.expired()
            and self.role == request.role
            and (self.area is None or request.area.startswith(self.area))
            and (self.program is None or self.program == request.program)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "actor": self.actor,
            "role": self.role,
            "area": self.area,
            "program": self.program,
            "granted_by": self.granted_by,
            "granted_at": self.granted_at,
            "expires_at": self.expires_at,
        }


def _now() -> str:
    """Now, as every stored time is written (``workflow.audit.chain.now_utc``)."""
    from workflow.audit.chain import now_utc

    return now_utc()


@dataclass(frozen=True)
class Denial:
    """A refused attempt, kept although the change itself was rolled back; ``seq`` is its
    place in the denials' hash chain (``prev_hash``, ``hash``)."""

    id: int
    actor: str
    role: str
    action: str
    program: str | None
    instance: int | None
    area: str | None
    reason: str
    os_user: str
    at: str
    seq: int | None = None
    prev_hash: str = ""
    hash: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "actor": self.actor,
            "role": self.role,
            "action": self.action,
            "program": self.program,
            "instance": self.instance,
            "area": self.area,
            "reason": self.reason,
            "os_user": self.os_user,
            "at": self.at,
            "seq": self.seq,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@runtime_checkable
class Policy(Protocol):
    """Decides whether an attempted change is permitted.

    ``check`` returns None to allow, or a short reason to refuse. ``grants`` are the actor's
    stored grants (already read in the change's transaction), for policies that want them;
    a policy with ``reads_grants = False`` is given none and saves that query.
    """

    name: str

    def check(self, request: AccessRequest, grants: Sequence[Grant]) -> str | None: ...


class StoredGrants:
    """The default policy: the actor needs a stored grant covering role, area and program."""

    name = "grants"

    def check(self, request: AccessRequest, grants: Sequence[Grant]) -> str | None:
        if any(g.covers(request) for g in grants):
            return None
        held = [g for g in grants if g.role == request.role]
        if not held:
            return f"holds no grant for role {request.role!r}"
        live = [g for g in held if not g.expired()]
        if not live:
            ended = max(g.expires_at or "" for g in held)
            return f"grant for role {request.role!r} expired at {ended}"
        held = live
        scopes = ", ".join(_scope(g) for g in held)
        return (
            f"grants for {request.role!r} ({scopes}) do not cover area {request.area} "
            f"program {request.program}"
        )


class AllowAll:
    """A policy for embedding applications that authorise callers themselves (and tests).

    It still refuses the read-only ``auditor`` role: that rule is not a matter of policy.
    """

    name = "allow-all"
    reads_grants = False

    def check(self, request: AccessRequest, grants: Sequence[Grant]) -> str | None:
        del request, grants
        return None


def _scope(g: Grant) -> str:
    area = f"area {g.area}" if g.area else "everywhere"
    return area + (f", program {g.program}" if g.program else "")

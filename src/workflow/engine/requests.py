"""What a caller asks the engine to change, typed, and the input rules applied before any
transaction begins.

``StartRequest`` and ``FireRequest`` are public: an application (or the coming HTTP service)
builds them and hands a sequence to ``Engine.fire_many``; ``Engine.start``/``fire`` build one
from their keyword arguments. ``checked()`` returns the same request in canonical form
(``workflow.runtime.text``), so that no database ever sees what it cannot store and a
lookalike name is never a second name. Checking here, outside the transaction, also keeps
the transaction short.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from workflow.errors import InstanceNotFound, UsageError
from workflow.runtime import text as _rules
from workflow.runtime.evidence import parse_date

# Database integer columns are 32-bit: an id beyond that cannot exist (and must not reach the
# driver, which would fail with an overflow rather than "not found").
MAX_ID = 2**31 - 1


@dataclass(frozen=True)
class StartRequest:
    """Start ``program`` for ``area`` (a DOPA code or name) and a Buddhist-Era fiscal year."""

    program: str
    area: str
    fiscal_year: int | str
    actor: str
    role: str
    title: str | None = None
    note: str | None = None
    allow_duplicate: bool = False
    key: str | None = None
    #: How the caller was authenticated (the service's ``Principal.via``), recorded in the
    #: start event and covered by its hash; None from the command line or embedding code.
    auth: str | None = None


@dataclass(frozen=True)
class FireRequest:
    """Fire ``trigger`` on ``instance`` as ``actor`` in ``role``, recording ``evidence``.

    ``expect_version`` refuses the fire if the instance moved on meanwhile; ``key`` makes it
    idempotent (a retry answers with the first result)."""

    instance: int
    trigger: str
    actor: str
    role: str
    evidence: Mapping[str, object] | None = None
    note: str | None = None
    expect_version: int | None = None
    key: str | None = None
    #: How the caller was authenticated (see StartRequest.auth).
    auth: str | None = None

    @classmethod
    def of(cls, value: FireRequest | Mapping[str, Any]) -> FireRequest:
        """A request as given to ``fire_many``: a FireRequest, or a mapping with the keyword
        arguments of ``Engine.fire`` plus ``instance`` and ``trigger``."""
        if isinstance(value, FireRequest):
            return value
        return cls(
            value["instance"],
            value["trigger"],
            value["actor"],
            value["role"],
            value.get("evidence"),
            value.get("note"),
            value.get("expect_version"),
            value.get("key"),
            value.get("auth"),
        )

    def checked(self) -> FireRequest:
        """The request with every typed value in canonical form (evidence values are the
        evidence rules', checked inside the transaction against the instance's program)."""
        instance = instance_id(self.instance)
        actor = _rules.name(self.actor, "actor")
        role = _rules.identifier(self.role, "role")
        trigger = _rules.identifier(self.trigger, "trigger")
        note = _rules.note(self.note)
        idempotency_key = key(self.key)
        evidence = evidence_names(self.evidence)
        return FireRequest(
            instance,
            trigger,
            actor,
            role,
            evidence,
            note,
            self.expect_version,
            idempotency_key,
            auth(self.auth),
        )

    def fingerprint(self) -> str:
        """What an idempotency key is bound to (of the checked request)."""
        return fingerprint(
            "fire",
            self.instance,
            self.trigger,
            self.actor,
            self.role,
            dict(self.evidence or {}),
            self.note,
        )


def fingerprint(*parts: Any) -> str:
    """The fingerprint of an idempotent request: whatever the caller sent, unchecked yet
    (ASCII JSON, so even undecodable command-line bytes fingerprint without error)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def instance_id(value: object) -> int:
    """An instance id as typed: a whole number; one that cannot exist is InstanceNotFound."""
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise UsageError(f"an instance id is a whole number, not {value!r}") from None
    if isinstance(value, bool) or not 1 <= number <= MAX_ID:
        raise InstanceNotFound(value)
    return number


def evidence_names(evidence: Mapping[str, object] | None) -> Mapping[str, object] | None:
    """Evidence with its field names in canonical form (values are the evidence rules')."""
    if not evidence:
        return evidence
    out: dict[str, object] = {}
    for field_name, value in evidence.items():
        clean = _rules.identifier(field_name, "evidence field name", _rules.ID_MAX)
        if clean in out:
            raise UsageError(f"evidence field {clean} given twice")
        out[clean] = value
    return out


def key(value: str | None) -> str | None:
    """An idempotency key in canonical form, or None."""
    if value is None:
        return None
    return _rules.identifier(value, "idempotency key", _rules.KEY_MAX)


def auth(value: str | None) -> str | None:
    """How a caller was authenticated, as recorded (``token:ID``, ``session:HEX``), or None."""
    if value is None:
        return None
    return _rules.identifier(value, "auth", _rules.AUTH_MAX)


def cursor(value: object) -> int:
    """A page cursor: the id of the last item of the previous page, a whole number >= 0."""
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise UsageError(f"a cursor is a whole number, not {value!r}") from None
    if isinstance(value, bool) or not 0 <= number <= MAX_ID:
        raise UsageError(f"a cursor is a whole number from 0 to {MAX_ID}, not {value!r}")
    return number


def limit(value: int | None) -> int | None:
    """A result limit: at least 1, at most what an id column can count."""
    if value is None:
        return None
    if value < 1:
        raise UsageError("a limit is at least 1")
    return min(value, MAX_ID)


def time_bound(value: str | dt.date | None, *, end: bool) -> str | None:
    """A date or timestamp bound as stored text; a date ``until`` includes that whole day."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and "T" in value:
        return _rules.free_text(value, "time bound", 40)
    try:
        day = parse_date(value)
        if end:
            day = day + dt.timedelta(days=1)
    except (ValueError, OverflowError) as e:
        raise UsageError(str(e)) from None
    return day.isoformat() + "T00:00:00.000000Z"


def day_bound(value: str | dt.date | None, what: str) -> str | None:
    """An evidence-date bound (CE or BE) as stored: ISO ``YYYY-MM-DD`` in CE."""
    if value is None or value == "":
        return None
    try:
        return parse_date(value).isoformat()
    except (ValueError, OverflowError) as e:
        raise UsageError(f"{what}: {e}") from None

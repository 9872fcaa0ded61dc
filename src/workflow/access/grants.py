"""Grants as stored, the grant chain, authorization and denials: the writes and checks of
``workflow.access``, done inside a transaction the engine's unit of work holds.

``policy.py`` says what a grant means and who decides; this module is where a grant is
granted, revoked (each a hash-chained grant event, appended under the chain lock), checked
for one change (``authorize``, reading the actor's grants ``FOR SHARE`` so a revoke waits for
the change) and where a refusal becomes a denial in the denials' chain. One place, so the
engine and a coming HTTP service cannot grant or deny two different ways.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from workflow import areas as _areas
from workflow.access.policy import AUDITOR, EVERYWHERE, AccessRequest, Denial, Grant, Policy
from workflow.audit import chain as _audit
from workflow.errors import ClockWentBack, GrantNotFound, PermissionDenied, UsageError
from workflow.programs.registry import Registry
from workflow.records import Event
from workflow.runtime import text as _rules
from workflow.runtime.evidence import parse_date
from workflow.storage.store import DenialRow, GrantEventRow, GrantRow, Store


def grant_of(row: GrantRow) -> Grant:
    """A stored grant as the API hands it out ('' in a column is None: everywhere, all)."""
    return Grant(
        actor=row.actor,
        role=row.role,
        area=row.area_code or None,
        program=row.program or None,
        granted_by=row.granted_by,
        granted_at=row.granted_at,
        expires_at=row.expires_at,
    )


#: Thai time (UTC+7, no daylight saving): a grant ``--until DATE`` ends at midnight after it.
_BANGKOK = dt.timedelta(hours=7)


def expiry(until: str | dt.date | None) -> str | None:
    """When a grant given ``--until DATE`` (CE or BE) ends: the end of that day in Thailand,
    as a stored time (ISO UTC)."""
    if until is None or until == "":
        return None
    try:
        day = parse_date(until)
    except ValueError as e:
        raise UsageError(f"--until: {e}") from None
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time()) - _BANGKOK
    return end.strftime("%Y-%m-%dT%H:%M:%S.000000Z")


def denial_of(r: DenialRow) -> Denial:
    """A stored denial as the API hands it out."""
    return Denial(
        id=r.id,
        actor=r.actor,
        role=r.role,
        action=r.action,
        program=r.program,
        instance=r.instance_id,
        area=r.area_code,
        reason=r.reason,
        os_user=r.os_user,
        at=r.at,
        seq=r.seq,
        prev_hash=r.prev_hash,
        hash=r.hash,
    )


def grant_event_of(row: GrantEventRow) -> Event:
    """A grant event as an entry of the audit log (instance None; its scope as evidence)."""
    scope = json.loads(row.scope)
    return Event(
        id=row.seq,
        instance=None,
        seq=row.seq,
        trigger=row.action,
        from_=None,
        to=(),
        actor=row.by,
        role="",
        os_user=row.os_user,
        at=row.at,
        evidence=scope,
        note=None,
        definition_hash="",
        policy="",
        prev_hash=row.prev_hash,
        hash=row.hash,
        program=scope.get("program"),
        area=scope.get("area"),
    )


def overlaps(area: str | None, scope: str | None) -> bool:
    """Whether a grant's scope (None: everywhere) touches the area filtered on."""
    return area is None or scope is None or scope.startswith(area) or area.startswith(scope)


def scope(
    registry: Registry, actor: str, role: str, area: str | None, program: str | None
) -> tuple[str, str, str, str]:
    """(actor, role, area code, program) of a grant as stored: canonical names, a role some
    program knows (or auditor), a known program, a resolved area ('' for everywhere / all)."""
    actor = _rules.name(actor, "actor")
    role = _rules.identifier(role, "role")
    known_roles = {
        r for p in registry.programs() for v in registry.versions(p.id) for r in v.roles
    } | {AUDITOR}
    if role not in known_roles:
        raise UsageError(f"unknown role {role!r} (known: {', '.join(sorted(known_roles))})")
    program = _rules.optional_identifier(program, "program")
    if program:
        registry.get(program)
    code = _areas.resolve(area).code if area else EVERYWHERE
    return actor, role, code, program or ""


def authorize(
    store: Store,
    conn: Any,
    policy: Policy,
    request: AccessRequest,
    cache: dict[str, list[Grant]] | None = None,
) -> None:
    """Ask the policy, inside the change's transaction; raise PermissionDenied.
    ``cache`` keeps each actor's grants for the rest of a batch's transaction."""
    if request.role == AUDITOR:
        raise PermissionDenied(
            request.actor, request.role, request.action, "auditor is a read-only role"
        )
    grants: list[Grant] = []
    # A policy may say it ignores stored grants; then they are not read on each change.
    if getattr(policy, "reads_grants", True):
        found = cache.get(request.actor) if cache is not None else None
        if found is None:
            # Locked until the change commits: a revoke cannot slip in between.
            found = [grant_of(g) for g in store.grants_for(conn, request.actor, lock=True)]
            if cache is not None:
                cache[request.actor] = found
        grants = found
    reason = policy.check(request, grants)
    if reason is not None:
        raise PermissionDenied(request.actor, request.role, request.action, reason)


def grant_in(
    store: Store,
    conn: Any,
    item: tuple[str, str, str, str],
    by: str,
    os_user: str,
    expires_at: str | None = None,
) -> GrantRow:
    """Grant ``item`` (actor, role, area, program) in the caller's transaction, until
    ``expires_at`` (None: no end); what is already held with the same end is returned
    unchanged (no second event). Granting it again with another end (or after it expired)
    replaces the grant: a new grant event, whose scope carries the new end."""
    actor, role, code, prog = item
    # The chain lock first: a concurrent grant or revoke of the same grant has then
    # committed, and what is read below is what this change acts on.
    head = store.lock_grant_chain(conn)
    existing = store.find_grant(conn, actor, role, code, prog)
    if existing is not None:
        if existing.expires_at == expires_at and not grant_of(existing).expired():
            return existing
        store.delete_grant(conn, existing.id)
    at = _append_event(store, conn, head, "grant", item, by, os_user, expires_at)
    if expires_at is not None and expires_at <= at:
        raise UsageError(f"--until: the grant would have ended already ({expires_at})")
    values: dict[str, Any] = dict(
        actor=actor, role=role, area_code=code, program=prog, granted_by=by, granted_at=at,
        expires_at=expires_at,
    )
    store.insert_grant(conn, values)
    return GrantRow(0, **values)


def revoke_in(
    store: Store, conn: Any, item: tuple[str, str, str, str], by: str, os_user: str
) -> GrantRow:
    """Revoke ``item`` in the caller's transaction (GrantNotFound if it is not held)."""
    actor, role, code, prog = item
    head = store.lock_grant_chain(conn)  # as in grant_in
    existing = store.find_grant(conn, actor, role, code, prog)
    if existing is None:
        raise GrantNotFound(actor, role, code or None, prog or None)
    # Delete first: it waits for every change still relying on the grant (they hold it FOR
    # SHARE), so the revocation's time (read in _append_event) follows every fire the grant
    # allowed, as its effect does and as verify's replay expects.
    store.delete_grant(conn, existing.id)
    _append_event(store, conn, head, "revoke", item, by, os_user)
    return existing


def _append_event(
    store: Store,
    conn: Any,
    head: GrantEventRow | None,
    action: str,
    item: tuple[str, str, str, str],
    by: str,
    os_user: str,
    expires_at: str | None = None,
) -> str:
    """Append the next grant event after ``head`` (the caller holds the chain lock); return
    its time, read now that the chain is locked (so concurrent grant changes get times in
    chain order)."""
    actor, role, area, program = item
    at = _audit.now_utc()
    if head is not None and at < head.at:
        raise ClockWentBack("last grant event", head.at, at)
    scope: dict[str, Any] = {
        "actor": actor, "role": role, "area": area or None, "program": program or None
    }
    if expires_at is not None:
        scope["until"] = expires_at  # only then: older grant events keep their hashes
    scope_json = _audit.canonical_json(scope)
    row = GrantEventRow(
        seq=head.seq + 1 if head else 1,
        action=action,
        scope=scope_json,
        by=by,
        os_user=os_user,
        at=at,
        prev_hash=head.hash if head else _audit.GENESIS,
        hash="",
    )
    store.insert_grant_event(conn, row._replace(hash=_audit.grant_hash(row)))
    return at


def record_denial(
    store: Store,
    conn: Any,
    *,
    actor: str,
    role: str,
    action: str,
    program: str | None,
    instance: int | None,
    area: str | None,
    reason: str,
    os_user: str,
) -> None:
    """Append a refusal to the denials' chain, in a transaction of its own (the caller's,
    run after the refused change rolled back)."""
    if instance is not None and (program is None or area is None):
        row = store.get_instance(conn, instance)
        if row is not None:
            program, area = row.program, row.area_code
    head = store.lock_denial_chain(conn)
    at = _audit.now_utc()
    if head is not None and at < head.at:
        raise ClockWentBack("last denial", head.at, at)
    denial = DenialRow(
        id=0,
        actor=actor,
        role=role,
        action=action,
        program=program,
        instance_id=instance,
        area_code=area,
        reason=reason,
        os_user=os_user,
        at=at,
        seq=(head.seq or 0) + 1 if head is not None else 1,
        prev_hash=head.hash if head is not None else _audit.GENESIS,
    )
    values = denial._replace(hash=_audit.denial_hash(denial))._asdict()
    del values["id"]
    store.insert_denial(conn, values)

"""The service's one adapter to the library: every engine and accounts call goes through here.

The routes never call the engine directly, so the differences between the engine as it is and
the engine the service is written for (issue 11's additions: ``auth=`` on start/fire, ``viewer=``
on reads, ``limit``/``after`` on ``list``, ``Engine.accounts``) live in this file only.

Every block marked ``FALLBACK(lead)`` stands in for an engine addition that is not there yet:
it is used only when the engine's signature lacks the new parameter, and can be deleted (keeping
the first branch) once the engine has it.
"""

from __future__ import annotations

import builtins
import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from workflow.access.policy import AUDITOR, Denial, Grant
from workflow.engine.facade import Engine
from workflow.errors import InstanceNotFound, PermissionDenied, UsageError
from workflow.programs import diagram as _diagram
from workflow.programs.model import Program
from workflow.records import Event, FireResult, Instance, Report, VerifyResult

#: The role recorded in a denial of a read (reads are allowed by a grant of any role).
READ_ROLE = "*"
ADMIN_ROLE = "admin"


class Caller(Protocol):
    """What the service needs of ``workflow.accounts.Principal``."""

    @property
    def via(self) -> str: ...

    @property
    def account(self) -> Any: ...


def name_of(caller: Caller) -> str:
    return str(caller.account.name)


def is_admin(caller: Caller) -> bool:
    return bool(caller.account.admin)


def _accepts(fn: Callable[..., Any], parameter: str) -> bool:
    try:
        return parameter in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


# --------------------------------------------------------------------------- accounts


def accounts_of(engine: Engine, **options: Any) -> Any:
    """The ``workflow.accounts.Accounts`` on the engine's store."""
    found = getattr(engine, "accounts", None)
    if found is not None and not options:
        return found
    # FALLBACK(lead): until Engine.accounts exists (or when the service sets its own
    # timeouts/throttle), the service builds the Accounts on the engine's store itself.
    from workflow.accounts import Accounts  # type: ignore[import-not-found, unused-ignore]

    return Accounts(engine.store, **options)


# --------------------------------------------------------------------------- scope


def grants_of(engine: Engine, caller: Caller) -> builtins.list[Grant]:
    return engine.grants(name_of(caller))


def _covers(grants: Sequence[Grant], program: str | None, area: str | None) -> bool:
    return any(
        (g.area is None or (area is not None and area.startswith(g.area)))
        and (g.program is None or g.program == program)
        for g in grants
    )


def _denied(
    engine: Engine,
    caller: Caller,
    role: str,
    action: str,
    reason: str,
    *,
    program: str | None = None,
    instance: int | None = None,
    area: str | None = None,
) -> PermissionDenied:
    """Record a denial (its own transaction, chained) and return the error to raise."""
    error = PermissionDenied(name_of(caller), role, action, reason)
    try:
        # FALLBACK(lead): the engine's own denial recorder; once the scoped reads raise and
        # record their own PermissionDenied, only require_admin/require_auditor need this (a
        # public Engine.deny(...) would replace the private call).
        engine._deny(name_of(caller), role, action, program, instance, area, error)
    except PermissionDenied as raised:
        return raised


def require_admin(engine: Engine, caller: Caller, action: str) -> None:
    if not is_admin(caller):
        raise _denied(engine, caller, ADMIN_ROLE, action, "only an admin account may do this")


def require_auditor(engine: Engine, caller: Caller, action: str) -> builtins.list[Grant] | None:
    """Audit endpoints: an auditor grant or the admin flag. Returns the caller's grants (the
    scope of what it reads) or None for an admin (everything)."""
    if is_admin(caller):
        return None
    grants = grants_of(engine, caller)
    if not any(g.role == AUDITOR for g in grants):
        raise _denied(engine, caller, AUDITOR, action, "holds no auditor grant")
    return grants


def _viewer(caller: Caller) -> str | None:
    return None if is_admin(caller) else name_of(caller)


def _check_instance(engine: Engine, caller: Caller, inst: Instance, action: str) -> None:
    """FALLBACK(lead): the scope check Engine.get(viewer=) will make."""
    if is_admin(caller):
        return
    if not _covers(grants_of(engine, caller), inst.program, inst.area.code):
        raise _denied(
            engine, caller, READ_ROLE, action,
            f"no grant covers area {inst.area.code} program {inst.program}",
            program=inst.program, instance=inst.id, area=inst.area.code,
        )


# --------------------------------------------------------------------------- programs


def programs(engine: Engine) -> builtins.list[Program]:
    return engine.programs()


def program(engine: Engine, program_id: str, version: int | None) -> Program:
    return engine.program(program_id, version)


def diagram(
    engine: Engine, caller: Caller, program_id: str, fmt: str, lang: str, instance: int | None
) -> str:
    render = _diagram.mermaid if fmt == "mermaid" else _diagram.dot
    if instance is None:
        return render(engine.program(program_id), lang=lang)
    inst = get(engine, caller, instance)
    p = engine.definition_of(instance)
    if p.id != program_id:
        raise UsageError(f"instance {instance} runs {p.id}, not {program_id}")
    visited: builtins.list[str] = []
    fired: builtins.list[tuple[str, str, str]] = []
    for e in history(engine, caller, instance):
        visited.extend(e.to)
        fired.extend(_fired_edges(p, e))
    return render(p, lang=lang, active=inst.active, visited_states=visited, fired=fired)


def _fired_edges(p: Program, e: Event) -> builtins.list[tuple[str, str, str]]:
    # The same as the command line's (cli/main.py): the lead may move both into diagram.py.
    if e.from_ is None:
        return []
    active: set[str] = set()
    for leaf in e.from_:
        parts = leaf.split(".")
        active.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return [
        (src, e.trigger, t.dest)
        for t in p.transitions_for(e.trigger)
        for src in t.sources
        if src in active
    ][:1]


# --------------------------------------------------------------------------- changes


def start(
    engine: Engine,
    caller: Caller,
    *,
    program: str,
    area: str,
    fiscal_year: int | str,
    role: str,
    title: str | None,
    allow_duplicate: bool,
    key: str | None,
) -> Instance:
    extra: dict[str, Any] = {}
    if _accepts(engine.start, "auth"):
        extra["auth"] = caller.via
    # FALLBACK(lead): without auth= the event does not record how the caller authenticated.
    return engine.start(
        program, area=area, fiscal_year=fiscal_year, actor=name_of(caller), role=role,
        title=title, allow_duplicate=allow_duplicate, key=key, **extra,
    )


def fire(
    engine: Engine,
    caller: Caller,
    instance: int,
    trigger: str,
    *,
    role: str,
    evidence: Mapping[str, object] | None,
    note: str | None,
    expect_version: int | None,
    key: str | None,
) -> FireResult:
    extra: dict[str, Any] = {}
    if _accepts(engine.fire, "auth"):
        extra["auth"] = caller.via
    # FALLBACK(lead): as in start().
    return engine.fire(
        instance, trigger, actor=name_of(caller), role=role, evidence=evidence, note=note,
        expect_version=expect_version, key=key, **extra,
    )


# --------------------------------------------------------------------------- reads


def get(engine: Engine, caller: Caller, instance: int) -> Instance:
    """The instance, with the triggers the caller may fire now (by its grants)."""
    if _accepts(engine.get, "viewer"):
        inst = engine.get(instance, viewer=_viewer(caller))  # type: ignore[call-arg]
    else:
        inst = engine.get(instance)
        _check_instance(engine, caller, inst, "read")  # FALLBACK(lead)
    mine = engine.available_triggers(instance, actor=name_of(caller))
    return dataclasses.replace(inst, available_triggers=mine)


def list_instances(
    engine: Engine,
    caller: Caller,
    *,
    program: str | None,
    state: str | None,
    area: str | None,
    fiscal_year: str | None,
    limit: int,
    after: int | None,
) -> tuple[builtins.list[Instance], bool]:
    """One page of instances (oldest first, ids above ``after``); True if more follow."""
    filters: dict[str, Any] = dict(program=program, state=state, area=area,
                                   fiscal_year=fiscal_year)
    if _accepts(engine.list, "viewer") and _accepts(engine.list, "after"):
        items = engine.list(  # type: ignore[call-arg]
            **filters, viewer=_viewer(caller), limit=limit + 1, after=after)
    else:
        # FALLBACK(lead): everything matching, then scoped and paged here (reads every row).
        items = engine.list(**filters)
        if not is_admin(caller):
            grants = grants_of(engine, caller)
            items = [i for i in items if _covers(grants, i.program, i.area.code)]
        if after is not None:
            items = [i for i in items if i.id > after]
        items = items[: limit + 1]
    return items[:limit], len(items) > limit


def history(engine: Engine, caller: Caller, instance: int) -> builtins.list[Event]:
    if _accepts(engine.history, "viewer"):
        return engine.history(instance, viewer=_viewer(caller))  # type: ignore[call-arg]
    # FALLBACK(lead): the scope check before reading.
    _check_instance(engine, caller, engine.get(instance), "history")
    return engine.history(instance)


def event(engine: Engine, caller: Caller, instance: int, seq: int) -> Event:
    for e in history(engine, caller, instance):
        if e.seq == seq:
            return e
    raise InstanceNotFound(f"{instance} event {seq}")


AuditCursor = tuple[str, int, int]  # (at, instance or 0 for a grant event, seq or id)


def _audit_key(e: Event) -> AuditCursor:
    return (e.at, e.instance or 0, e.seq if e.instance is not None else e.id)


def audit_log(
    engine: Engine,
    caller: Caller,
    *,
    actor: str | None,
    program: str | None,
    area: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    after: AuditCursor | None,
) -> tuple[builtins.list[Event], bool]:
    grants = require_auditor(engine, caller, "audit log")
    filters: dict[str, Any] = dict(actor=actor, program=program, area=area, since=since,
                                   until=until)
    if _accepts(engine.audit_log, "viewer"):
        events = engine.audit_log(**filters, viewer=_viewer(caller))  # type: ignore[call-arg]
    else:
        events = engine.audit_log(**filters)
        if grants is not None:  # FALLBACK(lead): the viewer's scope, filtered here
            events = [e for e in events
                      if e.instance is not None and _covers(grants, e.program, e.area)]
    if after is not None:
        for i, e in enumerate(events):
            if _audit_key(e) == after:
                events = events[i + 1:]
                break
        else:
            events = [e for e in events if e.at > after[0]]
    page = events[: limit + 1]
    return page[:limit], len(page) > limit


def audit_cursor(e: Event) -> AuditCursor:
    return _audit_key(e)


def report(
    engine: Engine, caller: Caller, *, program: str | None, fiscal_year: str | None
) -> Report:
    if _accepts(engine.report, "viewer"):
        return engine.report(program=program, fiscal_year=fiscal_year,  # type: ignore[call-arg]
                             viewer=_viewer(caller))
    result = engine.report(program=program, fiscal_year=fiscal_year)
    if is_admin(caller):
        return result
    # FALLBACK(lead): rows are per province, so only grants covering a whole province (or
    # everywhere) can be honoured here; a narrower grant shows nothing until report(viewer=).
    grants = [g for g in grants_of(engine, caller) if g.area is None or len(g.area) <= 2]
    rows = tuple(r for r in result.rows if _covers(grants, r.program, r.province.code))
    return dataclasses.replace(result, rows=rows)


def denials(engine: Engine, caller: Caller) -> builtins.list[Denial]:
    grants = require_auditor(engine, caller, "audit denials")
    found = engine.denials()
    if grants is None:
        return found
    return [d for d in found if d.area is not None and _covers(grants, d.program, d.area)]


def verify(engine: Engine, caller: Caller) -> VerifyResult:
    require_auditor(engine, caller, "audit verify")
    return engine.verify()


def digest(engine: Engine, caller: Caller) -> dict[str, Any]:
    require_auditor(engine, caller, "audit digest")
    return engine.digest().to_dict()


# --------------------------------------------------------------------------- grants


def grants(engine: Engine, caller: Caller, actor: str | None) -> builtins.list[Grant]:
    require_admin(engine, caller, "list grants")
    return engine.grants(actor)


def grant(engine: Engine, caller: Caller, actor: str, role: str, area: str | None,
          program: str | None) -> Grant:
    require_admin(engine, caller, "grant")
    return engine.grant(actor, role, area=area, program=program, by=name_of(caller))


def revoke(engine: Engine, caller: Caller, actor: str, role: str, area: str | None,
           program: str | None) -> Grant:
    require_admin(engine, caller, "revoke")
    return engine.revoke(actor, role, area=area, program=program, by=name_of(caller))


def me(engine: Engine, caller: Caller) -> dict[str, Any]:
    account = caller.account
    return {
        "name": account.name,
        "display_name": account.display_name,
        "admin": bool(account.admin),
        "language": getattr(account, "language", None),
        "grants": [g.to_dict() for g in grants_of(engine, caller)],
    }

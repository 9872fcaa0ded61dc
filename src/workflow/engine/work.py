""""My work": the instances where an actor can fire something now, and what.

The web's home page asks this of the library, as ``workflow show --actor`` asks
``Engine.available_triggers(id, actor=...)`` of one instance; both give the same triggers.
``my_work`` does it for every instance the actor's grants cover with one list read (the
instances come back with the triggers their state and history allow) plus one read of the
actor's grants, then keeps, per instance, the triggers some role of a grant covering that
instance may fire (by the engine's policy, as a change would be checked). Nothing is read per
instance unless a stored program version is no longer among the definitions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from workflow import areas as _areas
from workflow.access.policy import AUDITOR, AccessRequest, Grant, StoredGrants
from workflow.engine import deadlines as _deadlines
from workflow.engine.compiled import config_tuple
from workflow.engine.facade import Engine
from workflow.engine.requests import MAX_ID as _MAX_ID
from workflow.errors import ProgramNotFound
from workflow.programs.model import Program, Transition
from workflow.records import Instance
from workflow.runtime.evidence import check_fiscal_year

__all__ = ["MENDING", "WorkItem", "escalated_roles", "mending_roles", "my_work"]


@dataclass(frozen=True)
class WorkItem:
    """An instance and the triggers ``actor`` may fire on it now, with the roles that may."""

    instance: Instance
    triggers: tuple[str, ...]
    roles: dict[str, tuple[str, ...]]  # trigger -> the actor's roles that may fire it
    #: The actor's roles an overdue instance is escalated to (CONTRACT §10), if any.
    escalated: tuple[str, ...] = ()


def escalated_roles(
    engine: Engine, inst: Instance, actor: str, grants: Sequence[Grant] | None = None
) -> tuple[str, ...]:
    """The roles of ``actor`` (by its grants, as the policy decides) that an overdue
    instance's escalation names: those see it in their work."""
    if not inst.overdue or not inst.escalate:
        return ()
    if grants is None:
        grants = engine.grants(actor)
    return tuple(_permitted(engine, inst, actor, list(inst.escalate), grants))


def _applies(t: Transition, config: Sequence[str]) -> bool:
    """Whether a transition leaves from the configuration (a leaf or one of its ancestors)."""
    for source in t.sources:
        if source == "*":
            return True
        if any(leaf == source or leaf.startswith(source + ".") for leaf in config):
            return True
    return False


def _trigger_roles(program: Program, inst: Instance) -> dict[str, set[str]]:
    """Per available trigger, the roles some transition it takes from here allows."""
    out: dict[str, set[str]] = {}
    for trigger in inst.available_triggers:
        allowed: set[str] = set()
        for t in program.transitions_for(trigger):
            if _applies(t, inst.active):
                allowed.update(t.roles)
        out[trigger] = allowed
    return out


def _permitted(engine: Engine, inst: Instance, actor: str, roles: Sequence[str],
               grants: Sequence[Grant]) -> list[str]:
    return [
        r for r in roles
        if engine.policy.check(
            AccessRequest(actor, r, "*", inst.program, inst.area.code, inst.id), grants
        ) is None
    ]


def roles_for(
    engine: Engine, program: Program, inst: Instance, actor: str, grants: Sequence[Grant]
) -> dict[str, tuple[str, ...]]:
    """Per available trigger of ``inst``, the roles of ``actor`` (by ``grants``) that may fire
    it; triggers no role of theirs may fire are left out."""
    roles = list(dict.fromkeys(g.role for g in grants if g.role != AUDITOR))
    permitted = _permitted(engine, inst, actor, roles, grants)
    if not permitted:
        return {}
    return _mine(_trigger_roles(program, inst), permitted)


def _mine(by_trigger: dict[str, set[str]], permitted: Sequence[str]) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for trigger, allowed in by_trigger.items():
        mine = tuple(r for r in permitted if r in allowed)
        if mine:
            out[trigger] = mine
    return out


def _instances(
    engine: Engine,
    *,
    program: str | None,
    state: str | None,
    area: str | None,
    fiscal_year: int | str | None,
    viewer: str,
) -> list[Instance]:
    """``Engine.list(..., viewer=)``, the same records, built with less work per row: the
    arguments are checked by the engine's own list (asked for no row), the rows read by the
    same store query, and what depends only on a row's definition and configuration (the
    triggers available, whether it is final: unless a guard looks at the history) and its
    area is worked out once per distinct value instead of once per row."""
    engine.list(program=program, state=state, area=area, fiscal_year=fiscal_year, limit=1,
                viewer=viewer, after=_MAX_ID)  # validation and errors, exactly as list's
    queries = engine._queries  # the engine's own read side
    store = engine.store
    code = _areas.resolve(area).code if area else None
    year = check_fiscal_year(fiscal_year) if fiscal_year is not None else None
    moves: dict[tuple[int, str], tuple[tuple[str, ...], bool]] = {}
    places: dict[str, _areas.Area] = {}

    def work(conn: Any) -> list[Instance]:
        rows = store.list_instances(conn, program=program, state=state, area=code,
                                    fiscal_year=year, limit=None,
                                    scopes=queries.scopes(conn, viewer), after=None)
        out = []
        for r in rows:
            loaded = queries.programs.loaded(conn, r.definition_id)
            config = config_tuple(r.active)
            known = moves.get((r.definition_id, r.active))
            if known is None:
                asked: list[bool] = []

                def happened(row_id: int = r.id, asked: list[bool] = asked) -> set[str]:
                    asked.append(True)
                    return store.triggers_of(conn, row_id)

                available = loaded.machine.available(config, happened=happened)
                known = (available, loaded.machine.is_final(config))
                if not asked:
                    moves[(r.definition_id, r.active)] = known
            place = places.get(r.area_code)
            if place is None:
                place = places[r.area_code] = _areas.get(r.area_code)
            due_at, overdue, escalate = _deadlines.status(conn, loaded.program, r)
            out.append(Instance(
                id=r.id, program=r.program, program_version=r.program_version, area=place,
                fiscal_year=r.fiscal_year, title=r.title, state=r.state, active=config,
                version=r.version, created_at=r.created_at, updated_at=r.updated_at,
                available_triggers=known[0], final=known[1], due_at=due_at, overdue=overdue,
                escalate=escalate,
            ))
        return out

    result: list[Instance] = store.run(work)
    return result


def my_work(
    engine: Engine,
    actor: str,
    *,
    program: str | None = None,
    state: str | None = None,
    area: str | None = None,
    fiscal_year: int | str | None = None,
) -> list[WorkItem]:
    """The instances ``actor``'s grants cover (filtered as :meth:`Engine.list` filters) on
    which ``actor`` may fire at least one trigger now, or that are overdue and escalated to
    one of ``actor``'s roles (CONTRACT §10), oldest first. ``triggers`` is always what
    ``actor`` may fire (``Engine.available_triggers(id, actor=)``)."""
    grants = engine.grants(actor)
    if not any(g.role != AUDITOR for g in grants):
        return []
    instances = _instances(engine, program=program, state=state, area=area,
                           fiscal_year=fiscal_year, viewer=actor)
    roles = list(dict.fromkeys(g.role for g in grants if g.role != AUDITOR))
    # The stored-grants policy decides by area and program alone: one check per pair. Any
    # other policy may look at the instance, and is asked for each one.
    by_scope = isinstance(engine.policy, StoredGrants)
    permitted_at: dict[tuple[str, str], list[str]] = {}
    moves: dict[tuple[str, int, tuple[str, ...], tuple[str, ...]], dict[str, set[str]]] = {}
    decided: dict[Any, dict[str, tuple[str, ...]]] = {}
    definitions: dict[tuple[str, int], Program] = {}
    out: list[WorkItem] = []
    for inst in instances:
        # An overdue instance escalated to one of the actor's roles is theirs to see, with
        # what they may fire on it (perhaps nothing).
        escalated = escalated_roles(engine, inst, actor, grants)
        if not inst.available_triggers:
            if escalated:
                out.append(WorkItem(inst, (), {}, escalated))
            continue
        key = (inst.program, inst.program_version)
        definition = definitions.get(key)
        if definition is None:
            try:
                definition = engine.program(*key)
            except ProgramNotFound:  # a stored version no longer among the files
                definition = engine.definition_of(inst.id)
            definitions[key] = definition
        scope = (inst.program, inst.area.code)
        permitted = permitted_at.get(scope) if by_scope else None
        if permitted is None:
            permitted = _permitted(engine, inst, actor, roles, grants)
            if by_scope:
                permitted_at[scope] = permitted
        if not permitted:
            if escalated:
                out.append(WorkItem(inst, (), {}, escalated))
            continue
        moves_key = (*key, inst.active, inst.available_triggers)
        by_trigger = moves.get(moves_key)
        if by_trigger is None:
            by_trigger = moves[moves_key] = _trigger_roles(definition, inst)
        mine_key = (moves_key, tuple(permitted))
        mine = decided.get(mine_key)
        if mine is None:
            mine = decided[mine_key] = _mine(by_trigger, permitted)
        if mine or escalated:
            out.append(WorkItem(inst, tuple(mine), mine, escalated))
    return out


#: The mending operations of CONTRACT §8 a page may offer, as the engine authorizes them.
MENDING = ("comment", "correct", "revert")


def mending_roles(
    engine: Engine, program: Program, inst: Instance, actor: str, grants: Sequence[Grant]
) -> dict[str, tuple[str, ...]]:
    """Per mending operation (``comment``, ``correct``, ``revert``), the roles of ``actor``
    (by ``grants``, as the policy decides for that action) the engine would accept: any of
    the program's roles may comment; correct and revert need one of its ``corrections``
    roles. Whether a revert has a step to take back is the caller's to check."""
    held = list(dict.fromkeys(g.role for g in grants))
    out: dict[str, tuple[str, ...]] = {}
    for action in MENDING:
        allowed = program.roles if action == "comment" else program.corrections.roles
        roles = tuple(
            r for r in held
            if r in allowed and engine.policy.check(
                AccessRequest(actor, r, action, inst.program, inst.area.code, inst.id), grants
            ) is None
        )
        if roles:
            out[action] = roles
    return out

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

from workflow.access.policy import AUDITOR, AccessRequest, Grant, StoredGrants
from workflow.engine.facade import Engine
from workflow.errors import ProgramNotFound
from workflow.programs.model import Program, Transition
from workflow.records import Instance

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
    instances = engine.list(
        program=program, state=state, area=area, fiscal_year=fiscal_year, viewer=actor
    )
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

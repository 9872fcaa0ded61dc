"""Migrating running instances from one version of a program to another (``workflow migrate``).

A program is revised from one fiscal year to the next; an instance stays on the version it
started with until it is migrated. A migration is planned first, for every selected instance
and before anything changes: each active leaf state of version M is mapped to a state of
version N (the same path by default; ``--map OLD=NEW`` renames or merges states, and a mapping
of a prefix maps everything under it, so parallel regions are mapped leaf by leaf), the mapped
leaves must form a valid configuration of N (a region N adds is entered at its initial state),
and a transition ahead of the instance whose ``happened`` guard names a trigger the instance
has not had and can no longer have is reported. A plan with a problem changes nothing.

Applying appends one ``migrate`` event per instance (old and new definition hashes and
versions, old and new configuration), through the one write path, one transaction per batch;
an instance already on version N is left alone, so a rerun is harmless. After it the instance
fires under N, and verify follows the definition hashes from event to event
(``workflow.audit.evolution``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from workflow import areas as _areas
from workflow.access import grants as _grants
from workflow.access.policy import AccessRequest, Policy
from workflow.audit import chain as _audit
from workflow.audit import evolution as _evo
from workflow.engine.compiled import Programs, config_text, config_tuple
from workflow.engine.unit_of_work import UnitOfWork, Writer
from workflow.errors import AmendRefused, ClockWentBack, RoleNotAllowed, UnknownRole, UsageError
from workflow.programs.model import HappenedGuard, Program
from workflow.programs.registry import Registry
from workflow.runtime import text as _rules
from workflow.runtime.evidence import check_fiscal_year
from workflow.runtime.machine import CompiledMachine, Configuration, compile_program
from workflow.storage.store import InstanceRow, chunks


@dataclass(frozen=True)
class MigrationItem:
    """The plan (and, once applied, the outcome) for one instance."""

    id: int
    from_version: int
    to_version: int
    from_: Configuration
    to: Configuration | None
    ok: bool
    problem: str | None = None
    migrated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "from": list(self.from_),
            "to": list(self.to) if self.to is not None else None,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "ok": self.ok,
            "problem": self.problem,
            "migrated": self.migrated,
        }


@dataclass(frozen=True)
class MigrationResult:
    """What ``migrate`` planned (``dry_run``) or did, per instance."""

    program: str
    to_version: int
    dry_run: bool
    items: tuple[MigrationItem, ...]

    @property
    def migrated(self) -> int:
        return sum(1 for i in self.items if i.migrated)

    @property
    def ok(self) -> bool:
        return all(i.ok for i in self.items)

    def to_dict(self) -> dict[str, Any]:
        return {
            "program": self.program,
            "to_version": self.to_version,
            "dry_run": self.dry_run,
            "ok": self.ok,
            "migrated": self.migrated,
            "items": [i.to_dict() for i in self.items],
        }


def parse_map(items: Any) -> dict[str, str]:
    """``OLD=NEW`` pairs (or a mapping) as a dict of dotted state paths."""
    if isinstance(items, Mapping):
        pairs = list(items.items())
    else:
        pairs = []
        for item in items or ():
            old, sep, new = str(item).partition("=")
            if not sep:
                raise UsageError(f"--map expects OLD=NEW, got {item!r}")
            pairs.append((old, new))
    out: dict[str, str] = {}
    for old, new in pairs:
        old_path, new_path = _path(old), _path(new)
        if old_path in out:
            raise UsageError(f"--map {old_path} given twice")
        out[old_path] = new_path
    return out


def _path(value: object) -> str:
    parts = str(value).strip().split(".")
    return ".".join(_rules.identifier(p, "state") for p in parts)


def map_leaf(leaf: str, mapping: Mapping[str, str]) -> str:
    """A leaf path under ``mapping``: an exact entry, else the longest entry that is a
    prefix of it (``activities.digital=activities.online`` maps every state of the region)."""
    if leaf in mapping:
        return mapping[leaf]
    parts = leaf.split(".")
    for n in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in mapping:
            return mapping[prefix] + "." + ".".join(parts[n:])
    return leaf


def plan_configuration(
    machine: CompiledMachine,
    config: Configuration,
    mapping: Mapping[str, str],
    happened: set[str],
) -> tuple[Configuration | None, str | None]:
    """The configuration of ``machine``'s program that ``config`` maps to, or why there is
    none (an unmapped state, an invalid configuration, a guard the instance cannot meet)."""
    program = machine.program
    leaves = [map_leaf(leaf, mapping) for leaf in config]
    for old, new in zip(config, leaves, strict=True):
        if program.state(new) is None:
            via = f" (mapped from {old})" if old != new else ""
            return None, (
                f"active state {new}{via} is not a state of {program.id} v{program.version}; "
                f"map it with --map {old}=NEW"
            )
    target, problem = machine.configuration(leaves)
    if target is None:
        return None, problem
    return target, _unmeetable_guard(machine, target, happened)


def _unmeetable_guard(
    machine: CompiledMachine, config: Configuration, happened: set[str]
) -> str | None:
    """A transition the instance can still reach whose ``happened`` guard names a trigger it
    has not had and can no longer fire: the history the new version expects is missing."""
    program = machine.program
    reach: set[str] = set()

    def add(path: str) -> None:
        for leaf in machine.enter(path) if program.state(path) else (path,):
            parts = leaf.split(".")
            reach.update(".".join(parts[:n]) for n in range(1, len(parts) + 1))

    for leaf in config:
        add(leaf)
    grew = True
    while grew:
        grew = False
        for t in program.transitions:
            if t.dest not in reach and any(s in reach for s in t.sources):
                add(t.dest)
                grew = True
    reachable = {t.trigger for t in program.transitions if any(s in reach for s in t.sources)}
    for t in program.transitions:
        if not any(s in reach for s in t.sources):
            continue
        for g in t.guards:
            if (
                isinstance(g, HappenedGuard)
                and g.trigger not in happened
                and g.trigger not in reachable
            ):
                return (
                    f"{t.trigger} in {program.id} v{program.version} needs an earlier "
                    f"{g.trigger}, which this instance has not had and can no longer have"
                )
    return None


class Migrations:
    """Plans and applies migrations, over one writer, set of stored programs and policy."""

    def __init__(
        self, writer: Writer, programs: Programs, registry: Registry, policy: Policy
    ) -> None:
        self.writer = writer
        self.store = writer.store
        self.programs = programs
        self.registry = registry
        self.policy = policy

    def migrate(
        self,
        program: str,
        to_version: int,
        *,
        actor: str,
        role: str,
        from_version: int | None = None,
        mapping: Any = None,
        area: str | None = None,
        fiscal_year: int | str | None = None,
        state: str | None = None,
        dry_run: bool = False,
        batch_size: int = 200,
        progress: Callable[[int], None] | None = None,
        auth: str | None = None,
    ) -> MigrationResult:
        """Plan, and unless ``dry_run`` apply, the migration of ``program``'s running
        instances (the selection: ``from_version``, ``area`` and inside it, ``fiscal_year``,
        top-level ``state``) to version ``to_version``. A plan with a problem is refused
        (AmendRefused, exit 4) and changes nothing."""
        target = self.registry.get(program, to_version)
        who_actor = _rules.name(actor, "actor")
        who_role = _rules.identifier(role, "role")
        paths = parse_map(mapping)
        code = _areas.resolve(area).code if area else None
        year = check_fiscal_year(fiscal_year) if fiscal_year not in (None, "") else None
        machine = compile_program(target)
        if not dry_run:
            if who_role not in target.roles:
                self.writer.deny(
                    who_actor, who_role, _evo.MIGRATE, target.id, None, code,
                    UnknownRole(target.id, who_role, target.roles),
                )
            if who_role not in target.corrections.roles:
                self.writer.deny(
                    who_actor, who_role, _evo.MIGRATE, target.id, None, code,
                    RoleNotAllowed(_evo.MIGRATE, who_role, target.corrections.roles),
                )

        def plan(conn: Any) -> list[tuple[MigrationItem, InstanceRow]]:
            rows = self.store.list_instances(
                conn, program=target.id, state=state, area=code, fiscal_year=year
            )
            out = []
            for row in rows:
                if row.program_version == to_version:
                    continue  # already there: a rerun leaves it alone
                if from_version is not None and row.program_version != from_version:
                    continue
                loaded = self.programs.loaded(conn, row.definition_id)
                config = config_tuple(row.active)
                if loaded.machine.is_final(config):
                    continue  # finished: nothing runs on it any more
                out.append((self._plan(conn, row, config, machine, paths, to_version), row))
            return out

        planned = self.store.run(plan)
        items = tuple(item for item, _ in planned)
        if dry_run or not items:
            return MigrationResult(target.id, to_version, dry_run, items)
        bad = [i for i in items if not i.ok]
        if bad:
            shown = "; ".join(f"instance {i.id}: {i.problem}" for i in bad[:3])
            more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
            raise AmendRefused(
                f"the migration plan has {len(bad)} problem(s), nothing was migrated: "
                f"{shown}{more}"
            )
        done: dict[int, MigrationItem] = {}
        for chunk in chunks([row.id for _, row in planned], max(1, batch_size)):

            def work(unit: UnitOfWork, chunk: Any = chunk) -> tuple[int, list[MigrationItem]]:
                definition_id = self.programs.definition_id_in(unit.conn, target)
                out = []
                for instance_id in chunk:
                    item = self._apply(
                        unit, instance_id, target, machine, paths, definition_id,
                        who_actor, who_role, auth,
                    )
                    if item is not None:
                        out.append(item)
                return definition_id, out

            definition_id, applied = self.writer.run(
                work, lambda e: (who_actor, who_role, _evo.MIGRATE, target.id, None, code)
            )
            self.programs.remember(target, definition_id)
            for item in applied:
                done[item.id] = item
            if progress is not None:
                progress(len(chunk))
        return MigrationResult(
            target.id, to_version, False, tuple(done.get(i.id, i) for i in items)
        )

    def _plan(
        self,
        conn: Any,
        row: InstanceRow,
        config: Configuration,
        machine: CompiledMachine,
        paths: Mapping[str, str],
        to_version: int,
    ) -> MigrationItem:
        happened = self.store.triggers_of(conn, row.id)
        target, problem = plan_configuration(machine, config, paths, happened)
        return MigrationItem(
            row.id, row.program_version, to_version, config, target, problem is None, problem
        )

    def _apply(
        self,
        unit: UnitOfWork,
        instance_id: int,
        target: Program,
        machine: CompiledMachine,
        paths: Mapping[str, str],
        definition_id: int,
        actor: str,
        role: str,
        auth: str | None,
    ) -> MigrationItem | None:
        """Migrate one instance inside the batch's transaction (re-planned under its lock:
        it may have moved since the plan); None if it is already on the target version."""
        conn = unit.conn
        row = self.store.lock_instance(conn, instance_id)
        if row is None or row.program_version == target.version:
            return None
        config = config_tuple(row.active)
        item = self._plan(conn, row, config, machine, paths, target.version)
        if not item.ok or item.to is None:
            raise AmendRefused(f"instance {row.id} cannot be migrated: {item.problem}")
        _grants.authorize(
            self.store,
            conn,
            self.policy,
            AccessRequest(actor, role, _evo.MIGRATE, row.program, row.area_code, row.id),
        )
        old = self.programs.loaded(conn, row.definition_id).program
        at = _audit.now_utc()
        if at < row.updated_at:
            raise ClockWentBack(f"last event of instance {row.id}", row.updated_at, at)
        moved = {a: b for a, b in zip(config, (map_leaf(p, paths) for p in config), strict=True)}
        evidence = {
            "from_version": old.version,
            "to_version": target.version,
            "from_definition": old.content_hash,
            "to_definition": target.content_hash,
            "map": {a: b for a, b in moved.items() if a != b},
        }
        event = unit.event(
            instance=row.id,
            seq=row.version + 1,
            trigger=_evo.MIGRATE,
            before=config,
            after=item.to,
            actor=actor,
            role=role,
            at=at,
            evidence=evidence,
            note=None,
            definition_hash=target.content_hash,
            prev_hash=row.head_hash,
            auth=auth,
        )
        self.store.set_definition(conn, row.id, target.version, definition_id)
        new_row = row._replace(
            program_version=target.version,
            definition_id=definition_id,
            state=machine.top_state(item.to),
            active=config_text(item.to),
            version=row.version + 1,
            head_hash=event.hash,
            updated_at=at,
        )
        unit.move(row, new_row, event)
        return MigrationItem(
            row.id, old.version, target.version, config, item.to, True, None, migrated=True
        )

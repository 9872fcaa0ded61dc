"""The reads: instances, histories, the audit log, reports, grants and denials.

Each read is one ``Store.run`` (one read transaction on one connection), the records built
inside it, so what comes back is one consistent moment and a trigger list or a stored program
version needed on the way is read on that same connection. Instances are always read by their
own program version (``compiled.Programs``), never the newest one.
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
from collections.abc import Mapping
from functools import lru_cache, partial
from typing import Any

from workflow import areas as _areas
from workflow.access import grants as _grants
from workflow.access.policy import AUDITOR, AccessRequest, Denial, Grant, Policy
from workflow.engine import requests as _req
from workflow.engine.compiled import Programs, config_tuple, event_of
from workflow.errors import InstanceNotFound, StateNotFound, UnknownRole
from workflow.programs.model import Program
from workflow.programs.registry import Registry
from workflow.records import Event, Instance, Report, ReportRow
from workflow.runtime import text as _rules
from workflow.runtime.evidence import check_fiscal_year
from workflow.storage.store import Store


class Queries:
    """The engine's reads over one store, registry and policy."""

    def __init__(
        self, store: Store, programs: Programs, registry: Registry, policy: Policy
    ) -> None:
        self.store = store
        self.programs = programs
        self.registry = registry
        self.policy = policy

    def definition_of(self, instance_id: int) -> Program:
        """The exact program version an instance runs on (as stored when it started)."""

        def work(conn: Any) -> Program:
            row = self.store.get_instance(conn, _req.instance_id(instance_id))
            if row is None:
                raise InstanceNotFound(instance_id)
            return self.programs.loaded(conn, row.definition_id).program

        return self.store.run(work)

    def get(self, instance_id: int) -> Instance:
        """The instance as it is now, with the triggers available from its state."""

        def work(conn: Any) -> Instance:
            row = self.store.get_instance(conn, _req.instance_id(instance_id))
            if row is None:
                raise InstanceNotFound(instance_id)
            return self.programs.instance(conn, row, lambda: self.store.triggers_of(conn, row.id))

        return self.store.run(work)

    def available_triggers(
        self, instance_id: int, role: str | None = None, actor: str | None = None
    ) -> tuple[str, ...]:
        """Triggers that may fire now: the state, every guard that does not depend on the
        evidence, and — given ``role`` and/or ``actor`` — what that role may fire and what
        that actor's grants (or the engine's policy) permit on this instance."""

        actor = _rules.name(actor, "actor") if actor is not None else None
        role = _rules.identifier(role, "role") if role is not None else None

        def work(conn: Any) -> tuple[str, ...]:
            row = self.store.get_instance(conn, _req.instance_id(instance_id))
            if row is None:
                raise InstanceNotFound(instance_id)
            loaded = self.programs.loaded(conn, row.definition_id)
            if role is not None and role not in loaded.program.roles and role != AUDITOR:
                raise UnknownRole(row.program, role, loaded.program.roles)
            machine = loaded.machine
            config = config_tuple(row.active)

            def happened() -> set[str]:
                return self.store.triggers_of(conn, row.id)

            if actor is None:
                return machine.available(config, role, happened=happened)
            grants = [_grants.grant_of(g) for g in self.store.grants_for(conn, actor)]
            roles = [role] if role else list(dict.fromkeys(g.role for g in grants))
            allowed: set[str] = set()
            for r in roles:
                request = AccessRequest(actor, r, "*", row.program, row.area_code, row.id)
                if r != AUDITOR and self.policy.check(request, grants) is None:
                    allowed.update(machine.available(config, r, happened=happened))
            return tuple(t for t in machine.triggers_from(config) if t in allowed)

        return self.store.run(work)

    def list_instances(
        self,
        *,
        program: str | None = None,
        state: str | None = None,
        area: str | None = None,
        fiscal_year: int | str | None = None,
        limit: int | None = None,
    ) -> list[Instance]:
        """Instances, oldest first; ``area`` matches the area and everything inside it."""
        code = _areas.resolve(area).code if area else None
        year = check_fiscal_year(fiscal_year) if fiscal_year is not None else None
        program = _rules.optional_identifier(program, "program")
        if program is not None:
            self.registry.get(program)
        state = _rules.optional_identifier(state, "state")
        if state is not None:
            ids = [program] if program is not None else [p.id for p in self.registry.programs()]
            known = sorted(
                {s.path for pid in ids for v in self.registry.versions(pid) for s in v.states}
            )
            if state not in known:
                raise StateNotFound(state, program, known)
        limit = _req.limit(limit)

        def work(conn: Any) -> list[Instance]:
            rows = self.store.list_instances(
                conn, program=program, state=state, area=code, fiscal_year=year, limit=limit
            )
            return [
                self.programs.instance(conn, r, partial(self.store.triggers_of, conn, r.id))
                for r in rows
            ]

        return self.store.run(work)

    def history(self, instance_id: int) -> list[Event]:
        """The instance's events, oldest first (the first is ``start``)."""

        def work(conn: Any) -> list[Event]:
            rows = self.store.events_of(conn, _req.instance_id(instance_id))
            if not rows and self.store.get_instance(conn, _req.instance_id(instance_id)) is None:
                raise InstanceNotFound(instance_id)
            return [event_of(r) for r in rows]

        return self.store.run(work)

    def audit_log(
        self,
        *,
        actor: str | None = None,
        program: str | None = None,
        area: str | None = None,
        since: str | dt.date | None = None,
        until: str | dt.date | None = None,
        instance: int | None = None,
        limit: int | None = None,
        date_from: str | dt.date | None = None,
        date_to: str | dt.date | None = None,
    ) -> list[Event]:
        """Events across instances, ordered by recording time.

        ``since``/``until`` filter on when an event was *recorded* (``at``): dates (CE or BE,
        ``until`` inclusive) or ISO timestamps. ``date_from``/``date_to`` filter on the
        evidence ``date``, the day the activity *happened* (CE or BE, both inclusive); events
        without an evidence date (starts, grants) are then left out. The two differ whenever
        a stage is recorded after the fact, which is the rule rather than the exception."""
        code = _areas.resolve(area).code if area else None
        lo = _req.time_bound(since, end=False)
        hi = _req.time_bound(until, end=True)
        day_lo = _req.day_bound(date_from, "date_from")
        day_hi = _req.day_bound(date_to, "date_to")
        by_day = day_lo is not None or day_hi is not None
        actor = _rules.optional_identifier(actor, "actor", _rules.NAME_MAX)
        program = _rules.optional_identifier(program, "program")
        instance = _req.instance_id(instance) if instance is not None else None
        limit = _req.limit(limit)

        def on_day(e: Event) -> bool:
            day = e.evidence.get("date") if isinstance(e.evidence, Mapping) else None
            return (
                isinstance(day, str)
                and (day_lo is None or day >= day_lo)
                and (day_hi is None or day <= day_hi)
            )

        def work(conn: Any) -> list[Event]:
            events = [
                event_of(row, program=p, area=a)
                for row, p, a in self.store.audit_log(
                    conn,
                    actor=actor,
                    program=program,
                    area=code,
                    since=lo,
                    until=hi,
                    instance=instance,
                    limit=None if by_day else limit,
                )
            ]
            if by_day:
                # Evidence is JSON text in the database; filtered here, exactly as parsed.
                return [e for e in events if on_day(e)][:limit]
            if instance is None:
                # Grants and revocations belong to the trail too (instance None).
                rules = [
                    e
                    for e in (_grants.grant_event_of(g) for g in self.store.grant_events(conn))
                    if (lo is None or e.at >= lo)
                    and (hi is None or e.at < hi)
                    and (actor is None or actor in (e.actor, e.evidence.get("actor")))
                    and (program is None or e.evidence.get("program") in (None, program))
                    and _grants.overlaps(code, e.area)
                ]
                events = list(heapq.merge(events, rules, key=lambda e: e.at))
                if limit:
                    events = events[:limit]
            return events

        return self.store.run(work)

    def report(self, *, program: str | None = None, fiscal_year: int | str | None = None) -> Report:
        """Instances per program, province and top-level state; for programs with parallel
        states, how many instances have finished each region."""
        year = check_fiscal_year(fiscal_year) if fiscal_year is not None else None

        def work(conn: Any) -> list[tuple[str, str, str, str, Program, int]]:
            return [
                (
                    prog,
                    province,
                    state,
                    active,
                    self.programs.loaded(conn, definition_id).program,
                    n,
                )
                for prog, province, state, active, definition_id, n in self.store.report(
                    conn, program=program, fiscal_year=year
                )
            ]

        merged: dict[tuple[str, str, str], tuple[int, dict[str, int]]] = {}
        for prog, province, state, active, definition, count in self.store.run(work):
            count_before, regions = merged.get((prog, province, state), (0, {}))
            done = _regions_done(definition, state, active)
            for region, finished in done.items():
                regions[region] = regions.get(region, 0) + (count if finished else 0)
            merged[(prog, province, state)] = (count_before + count, regions)
        rows = tuple(
            ReportRow(
                program=prog,
                province=_areas.get(province),
                state=state,
                count=count,
                regions_done=regions,
            )
            for (prog, province, state), (count, regions) in sorted(merged.items())
        )
        return Report(fiscal_year=year, rows=rows)

    def grants(self, actor: str | None = None) -> list[Grant]:
        """The grants in force (of one actor, or everyone's)."""
        actor = _rules.name(actor, "actor") if actor is not None else None
        rows = self.store.run(
            lambda conn: (
                self.store.grants_for(conn, actor) if actor else self.store.all_grants(conn)
            )
        )
        return [_grants.grant_of(r) for r in rows]

    def denials(self, limit: int | None = None) -> list[Denial]:
        """Refused attempts for want of a permission, oldest first."""
        rows = self.store.run(lambda conn: self.store.denials(conn, limit))
        return [_grants.denial_of(r) for r in rows]


@lru_cache(maxsize=1024)
def _regions_done(definition: Program, state: str, active: str) -> dict[str, bool]:
    """Which regions of a parallel ``state`` have reached a final state, by the version of
    the program the instances run on (a newer version may have other regions)."""
    top = definition.state(state)
    if top is None or not top.regions:
        return {}
    config = json.loads(active)
    finals = {s.path for s in definition.all_states() if s.final}
    out = {}
    for region in top.regions:
        prefix = f"{state}.{region.name}."
        leaves = [p for p in config if p.startswith(prefix)]
        out[region.name] = bool(leaves) and all(p in finals for p in leaves)
    return out

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from functools import lru_cache, partial
from typing import Any, NoReturn, TypeVar

from workflow import areas as _areas
from workflow.access import grants as _grants
from workflow.access.policy import AUDITOR, AccessRequest, Denial, Grant, Policy
from workflow.audit import chain as _audit
from workflow.engine import requests as _req
from workflow.engine.amend import corrected
from workflow.engine.compiled import Programs, config_tuple, event_of
from workflow.errors import (
    InstanceNotFound,
    PermissionDenied,
    StateNotFound,
    UnknownRole,
    UsageError,
)
from workflow.programs import diagram as _diagram
from workflow.programs.model import Program
from workflow.programs.registry import Registry
from workflow.records import Event, Instance, Report, ReportRow
from workflow.runtime import text as _rules
from workflow.runtime.evidence import check_fiscal_year
from workflow.storage.store import InstanceRow, Scope, Store

T = TypeVar("T")


#: The role a refused read is recorded under: reads are allowed by a grant of any role.
READ_ROLE = "any"


class Queries:
    """The engine's reads over one store, registry and policy.

    A read given a ``viewer`` (an actor name: the service's authenticated account) is limited
    to what that actor's grants cover, whatever their role (auditor included): an area and
    everything inside it, and a program or all of them. Lists and reports leave the rest out;
    asking for one instance outside it is refused (``PermissionDenied``) and recorded as a
    denial, like a refused change. Without a viewer (the command line, embedding code that
    is its own authority) everything is read.
    """

    def __init__(
        self,
        store: Store,
        programs: Programs,
        registry: Registry,
        policy: Policy,
        deny: Callable[..., NoReturn],
    ) -> None:
        self.store = store
        self.programs = programs
        self.registry = registry
        self.policy = policy
        self.deny = deny

    def scopes(self, conn: Any, viewer: str | None) -> list[Scope] | None:
        """What ``viewer`` may read, as (area prefix, program) pairs; None: everything."""
        if viewer is None:
            return None
        now = _audit.now_utc()
        return [
            (g.area_code, g.program)
            for g in self.store.grants_for(conn, viewer)
            if g.expires_at is None or now < g.expires_at  # an expired grant reads nothing
        ]

    def _row_for(self, conn: Any, instance_id: int, viewer: str | None) -> InstanceRow:
        """The instance row, or InstanceNotFound; a row outside the viewer's scopes is
        handed to :meth:`_refuse_read` (outside this transaction) through ``_Unreadable``."""
        row = self.store.get_instance(conn, instance_id)
        if row is None:
            raise InstanceNotFound(instance_id)
        scopes = self.scopes(conn, viewer)
        if scopes is not None and not covers(scopes, row.area_code, row.program):
            raise _Unreadable(row)
        return row

    def _read(self, work: Callable[[Any], T], viewer: str | None, action: str) -> T:
        """Run a read of one instance; refuse (and record) it when the viewer may not."""
        try:
            return self.store.run(work)
        except _Unreadable as e:
            row = e.row
            self.deny(
                viewer,
                READ_ROLE,
                action,
                row.program,
                row.id,
                row.area_code,
                PermissionDenied(
                    str(viewer),
                    READ_ROLE,
                    action,
                    f"holds no grant covering area {row.area_code}, program {row.program}",
                ),
            )

    def definition_of(self, instance_id: int) -> Program:
        """The exact program version an instance runs on (as stored when it started)."""

        def work(conn: Any) -> Program:
            row = self.store.get_instance(conn, _req.instance_id(instance_id))
            if row is None:
                raise InstanceNotFound(instance_id)
            return self.programs.loaded(conn, row.definition_id).program

        return self.store.run(work)

    def diagram(
        self, program: str, fmt: str, lang: str, instance: int | None, viewer: str | None
    ) -> str:
        """A program drawn, optionally with one instance's marks (read in one transaction)."""
        if fmt not in _diagram.FORMATS:
            raise UsageError(
                f"unknown diagram format {fmt!r}; expected one of {', '.join(_diagram.FORMATS)}"
            )
        if instance is None:
            return _diagram.draw(self.registry.get(program), fmt, lang)
        number = _req.instance_id(instance)
        viewer = _rules.name(viewer, "viewer") if viewer is not None else None

        def work(conn: Any) -> str:
            row = self._row_for(conn, number, viewer)
            definition = self.programs.loaded(conn, row.definition_id).program
            if definition.id != program:
                raise UsageError(f"instance {number} runs {definition.id}, not {program}")
            events = [event_of(r) for r in self.store.events_of(conn, number)]
            marks = _diagram.marks(definition, config_tuple(row.active), events)
            return _diagram.draw(definition, fmt, lang, marks)

        return self._read(work, viewer, "diagram")

    def get(self, instance_id: int, viewer: str | None = None) -> Instance:
        """The instance as it is now, with the triggers available from its state and the
        events later corrections amended (``corrected``)."""
        number = _req.instance_id(instance_id)
        viewer = _rules.name(viewer, "viewer") if viewer is not None else None

        def work(conn: Any) -> Instance:
            row = self._row_for(conn, number, viewer)
            inst = self.programs.instance(conn, row, lambda: self.store.triggers_of(conn, row.id))
            by: dict[int, list[int]] = {}
            for seq, of_seq in self.store.corrections_of(conn, row.id):
                by.setdefault(of_seq, []).append(seq)
            marks = tuple((s, tuple(c)) for s, c in sorted(by.items()))
            return replace(inst, corrected=marks)

        return self._read(work, viewer, "read")

    def get_many(self, ids: Iterable[int]) -> dict[int, Instance]:
        """Several instances as they are now, by id, read in one transaction (no viewer:
        for the engine's own workers, such as delivery); ids not found are left out."""
        numbers = [_req.instance_id(i) for i in ids]

        def work(conn: Any) -> dict[int, Instance]:
            rows = self.store.get_instances(conn, numbers)
            return {
                number: self.programs.instance(
                    conn, row, partial(self.store.triggers_of, conn, number))
                for number, row in rows.items()
            }

        return self.store.run(work) if numbers else {}

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
        viewer: str | None = None,
        after: int | None = None,
    ) -> list[Instance]:
        """Instances, oldest first; ``area`` matches the area and everything inside it;
        ``after`` an instance id (the last of the previous page)."""
        viewer = _rules.name(viewer, "viewer") if viewer is not None else None
        if after is not None:
            after = _req.cursor(after)
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
                conn,
                program=program,
                state=state,
                area=code,
                fiscal_year=year,
                limit=limit,
                scopes=self.scopes(conn, viewer),
                after=after,
            )
            return [
                self.programs.instance(conn, r, partial(self.store.triggers_of, conn, r.id))
                for r in rows
            ]

        return self.store.run(work)

    def history(self, instance_id: int, viewer: str | None = None) -> list[Event]:
        """The instance's events, oldest first (the first is ``start``)."""
        number = _req.instance_id(instance_id)
        viewer = _rules.name(viewer, "viewer") if viewer is not None else None

        def work(conn: Any) -> list[Event]:
            if viewer is not None:
                self._row_for(conn, number, viewer)
            rows = self.store.events_of(conn, number)
            if not rows and self.store.get_instance(conn, number) is None:
                raise InstanceNotFound(instance_id)
            return corrected([event_of(r) for r in rows])

        return self._read(work, viewer, "history")

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
        viewer: str | None = None,
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
        viewer = _rules.name(viewer, "viewer") if viewer is not None else None

        def on_day(e: Event) -> bool:
            day = e.evidence.get("date") if isinstance(e.evidence, Mapping) else None
            return (
                isinstance(day, str)
                and (day_lo is None or day >= day_lo)
                and (day_hi is None or day <= day_hi)
            )

        def work(conn: Any) -> list[Event]:
            scopes = self.scopes(conn, viewer)
            events = [
                event_of(row, program=p, area=a)
                for row, p, a in self.store.audit_log(
                    conn,
                    scopes=scopes,
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
                    and (scopes is None or _grant_event_seen(scopes, e))
                ]
                events = list(heapq.merge(events, rules, key=lambda e: e.at))
                if limit:
                    events = events[:limit]
            return events

        return self.store.run(work)

    def report(
        self,
        *,
        program: str | None = None,
        fiscal_year: int | str | None = None,
        viewer: str | None = None,
    ) -> Report:
        """Instances per program, province and top-level state; for programs with parallel
        states, how many instances have finished each region."""
        year = check_fiscal_year(fiscal_year) if fiscal_year is not None else None
        viewer = _rules.name(viewer, "viewer") if viewer is not None else None

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
                    conn, program=program, fiscal_year=year, scopes=self.scopes(conn, viewer)
                )
            ]

        merged: dict[tuple[str, str, str], tuple[int, dict[str, int]]] = {}
        for prog, province, state, active, definition, count in self.store.run(work):
            count_before, regions = merged.get((prog, province, state), (0, {}))
            done = _regions_done(definition, state, active)
            for region, finished in done.items():
                regions[region] = regions.get(region, 0) + (count if finished else 0)
            merged[(prog, province, state)] = (count_before + count, regions)
        late = self._overdue_counts(program, year, viewer)
        rows = tuple(
            ReportRow(
                program=prog,
                province=_areas.get(province),
                state=state,
                count=count,
                regions_done=regions,
                overdue=late.get((prog, province, state), 0),
            )
            for (prog, province, state), (count, regions) in sorted(merged.items())
        )
        return Report(fiscal_year=year, rows=rows)

    def _overdue_counts(
        self, program: str | None, year: int | None, viewer: str | None
    ) -> dict[tuple[str, str, str], int]:
        """Overdue instances per (program, province, state), of the programs with a due."""
        from workflow.engine.deadlines import due_states

        out: dict[tuple[str, str, str], int] = {}
        for p in self.registry.programs():
            if program is not None and p.id != program:
                continue
            if not any(due_states(v) for v in self.registry.versions(p.id)):
                continue
            for inst in self.list_instances(program=p.id, fiscal_year=year, viewer=viewer):
                if inst.overdue:
                    key = (inst.program, inst.area.code[:2], inst.state)
                    out[key] = out.get(key, 0) + 1
        return out

    def grants(self, actor: str | None = None) -> list[Grant]:
        """The grants held, not revoked (of one actor, or everyone's), the expired ones among
        them (``Grant.expired()``: they refuse like revoked ones until granted again)."""
        actor = _rules.name(actor, "actor") if actor is not None else None
        rows = self.store.run(
            lambda conn: (
                self.store.grants_for(conn, actor) if actor else self.store.all_grants(conn)
            )
        )
        return [_grants.grant_of(r) for r in rows]

    def denials(self, limit: int | None = None, viewer: str | None = None) -> list[Denial]:
        """Refused attempts for want of a permission, oldest first; with a ``viewer``, those
        about an area and program its grants cover."""
        viewer = _rules.name(viewer, "viewer") if viewer is not None else None

        def work(conn: Any) -> list[Any]:
            rows = self.store.denials(conn, None if viewer else limit)
            scopes = self.scopes(conn, viewer)
            if scopes is not None:
                rows = [
                    r for r in rows
                    if r.area_code and covers(scopes, r.area_code, r.program or "")
                ][:limit]
            return rows

        return [_grants.denial_of(r) for r in self.store.run(work)]


class _Unreadable(Exception):
    """Raised inside a read transaction for an instance its viewer may not read (the denial
    is recorded after that transaction, in one of its own)."""

    def __init__(self, row: InstanceRow) -> None:
        super().__init__(row.id)
        self.row = row


def covers(scopes: Sequence[Scope], area_code: str, program: str) -> bool:
    """Whether some (area prefix, program) scope covers an instance ('' = all)."""
    return any(
        (not area or area_code.startswith(area)) and (not prog or prog == program)
        for area, prog in scopes
    )


def _grant_event_seen(scopes: Sequence[Scope], event: Event) -> bool:
    """A grant or revocation is in a viewer's audit log when its area overlaps a scope of
    the viewer's and its program is one the scope covers (or it names none)."""
    program = event.evidence.get("program")
    return any(
        _grants.overlaps(area or None, event.area) and (not prog or program in (None, prog))
        for area, prog in scopes
    )


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

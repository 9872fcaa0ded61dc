"""The changes: start, start_many, fire, fire_many, grant and revoke, each one unit of work.

Every change re-reads the instance under a lock inside its transaction, re-checks trigger,
role, permission, evidence and guards against what it read, appends the hash-chained event and
moves the instance — or changes nothing at all. The checks live here; how the writes are made
(one transaction, compare-and-swap, keys, the denial after a rollback) is ``unit_of_work``'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from workflow import areas as _areas
from workflow.access import grants as _grants
from workflow.access.policy import AUDITOR, AccessRequest, Grant, Policy
from workflow.audit import chain as _audit
from workflow.engine import attachments as _files
from workflow.engine.compiled import Programs, config_text, config_tuple, event_of
from workflow.engine.requests import FireRequest, StartRequest, fingerprint
from workflow.engine.requests import auth as _auth
from workflow.engine.requests import key as _key
from workflow.engine.unit_of_work import Refused, UnitOfWork, Writer
from workflow.errors import (
    ClockWentBack,
    DuplicateInstance,
    IdempotencyConflict,
    InstanceNotFound,
    KeyRecordMismatch,
    RoleNotAllowed,
    UnknownRole,
    UsageError,
    VersionConflict,
    WorkflowError,
)
from workflow.programs.model import Program
from workflow.programs.registry import Registry
from workflow.records import FireResult
from workflow.runtime import text as _rules
from workflow.runtime.evidence import check_fiscal_year, check_within
from workflow.runtime.evidence import validate as _evidence_validate
from workflow.runtime.machine import Configuration, GuardFunction, compile_program
from workflow.storage.store import EventRow, InstanceRow, KeyRow, chunks


@dataclass(frozen=True)
class _Start:
    """A start, checked and resolved before its transaction begins."""

    program: Program
    area: _areas.Area
    year: int
    actor: str
    role: str
    title: str | None
    note: str | None
    allow_duplicate: bool
    key: str | None
    request: str
    auth: str | None = None


@dataclass
class _Locked:
    """What fire_many carries through its transaction: the locked rows as they evolve, and
    each actor's grants read once."""

    rows: dict[int, InstanceRow]
    grants: dict[str, list[Grant]] = field(default_factory=dict)


class Commands:
    """The engine's changes, over one store, registry, policy and set of guard functions."""

    def __init__(
        self,
        writer: Writer,
        programs: Programs,
        registry: Registry,
        policy: Policy,
        guards: Mapping[str, GuardFunction],
    ) -> None:
        self.writer = writer
        self.store = writer.store
        self.programs = programs
        self.registry = registry
        self.policy = policy
        self.guards = guards

    # ------------------------------------------------------------------ start

    def start(self, request: StartRequest) -> int:
        """Start one instance; return its id."""
        definition = self.registry.get(request.program)
        area = _areas.resolve(str(request.area))
        req = self._start_plan(definition, area, request)
        instance_id, definition_id = self.writer.run(
            lambda unit: self._start_in(unit, req),
            lambda e: (req.actor, req.role, "start", definition.id, None, area.code),
        )
        self.programs.remember(definition, definition_id)
        return instance_id

    def start_many(
        self,
        request: StartRequest,
        areas: Sequence[str],
        skip_existing: bool,
        batch_size: int,
        progress: Callable[[int], None] | None,
    ) -> list[int]:
        """Start ``request`` for each of ``areas``, ``batch_size`` per transaction."""
        definition = self.registry.get(request.program)
        resolved = [_areas.resolve(str(a)) for a in areas]
        plans = [self._start_plan(definition, a, request) for a in resolved]
        created: list[int] = []
        for chunk in chunks(plans, max(1, batch_size)):

            def work(unit: UnitOfWork, chunk: Sequence[_Start] = chunk) -> list[tuple[int, int]]:
                done = []
                for req in chunk:
                    try:
                        done.append(self._start_in(unit, req))
                    except DuplicateInstance:
                        if not skip_existing:
                            raise
                return done

            def refused(e: Exception) -> Refused:
                return (plans[0].actor, plans[0].role, "start", definition.id, None, None)

            for instance_id, definition_id in self.writer.run(work, refused):
                self.programs.remember(definition, definition_id)
                created.append(instance_id)
            if progress is not None:
                progress(len(chunk))
        return created

    def _start_plan(self, definition: Program, area: _areas.Area, r: StartRequest) -> _Start:
        year = check_fiscal_year(r.fiscal_year)
        actor = _rules.name(r.actor, "actor")
        role = _rules.identifier(r.role, "role")
        key = _key(r.key)
        if role not in definition.roles and role != AUDITOR:
            self.writer.deny(
                actor,
                role,
                "start",
                definition.id,
                None,
                area.code,
                UnknownRole(definition.id, role, definition.roles),
            )
        if role not in definition.start_roles:
            self.writer.deny(
                actor,
                role,
                "start",
                definition.id,
                None,
                area.code,
                RoleNotAllowed("start", role, definition.start_roles),
            )
        title = _rules.free_text(r.title, "title", _rules.TITLE_MAX)
        note = _rules.note(r.note)
        request = fingerprint(
            "start", definition.id, area.code, year, actor, role, title, r.allow_duplicate, note
        )
        return _Start(
            definition,
            area,
            year,
            actor,
            role,
            title,
            note,
            r.allow_duplicate,
            key,
            request,
            _auth(r.auth),
        )

    def _start_in(self, unit: UnitOfWork, req: _Start) -> tuple[int, int]:
        """One instance and its start event inside the unit's transaction;
        return (instance id, definition id)."""
        conn = unit.conn
        definition = req.program
        machine = compile_program(definition)
        if req.key is not None:
            replay = self._replay(conn, req.key, req.request)
            if replay is not None:
                self._check_start_replay(conn, replay, req)
                return replay.instance_id, self.programs.definition_id_in(conn, definition)
        _grants.authorize(
            self.store,
            conn,
            self.policy,
            AccessRequest(req.actor, req.role, "start", definition.id, req.area.code),
        )
        existing, duplicate_no = self.store.find_duplicate(
            conn, definition.id, req.area.code, req.year
        )
        if existing is not None and not req.allow_duplicate:
            raise DuplicateInstance(definition.id, req.area.code, req.year, existing)
        definition_id = self.programs.definition_id_in(conn, definition)
        at = _audit.now_utc()
        config = machine.initial()
        # The start event carries the instance's identity, so verify can prove the
        # instance row (program, area, year, title) was not changed afterwards.
        identity = {
            "program": definition.id,
            "program_version": definition.version,
            "area": req.area.code,
            "fiscal_year": req.year,
            "title": req.title,
            "duplicate_no": duplicate_no,
        }
        event = unit.create(
            dict(
                program=definition.id,
                program_version=definition.version,
                definition_id=definition_id,
                area_code=req.area.code,
                province_code=req.area.province_code,
                fiscal_year=req.year,
                duplicate_no=duplicate_no,
                title=req.title,
                state=machine.top_state(config),
                active=config_text(config),
                version=1,
                head_hash=_audit.GENESIS,
                created_at=at,
                updated_at=at,
            ),
            lambda instance_id: unit.event(
                instance=instance_id,
                seq=1,
                trigger="start",
                before=None,
                after=config,
                actor=req.actor,
                role=req.role,
                at=at,
                evidence=identity,
                note=req.note,
                definition_hash=definition.content_hash,
                prev_hash=_audit.GENESIS,
                auth=req.auth,
            ),
        )
        if req.key is not None:
            unit.key(req.key, req.request, event.instance_id, 1, at, event.hash)
        return event.instance_id, definition_id

    def _check_start_replay(self, conn: Any, key: KeyRow, req: _Start) -> None:
        """A replayed start answers with the instance its key names only if that instance's
        start event is this request's: same actor, role, program, area, year and title (a
        key row rewritten to name another instance must not hand that one out)."""
        event = self.store.event_at(conn, key.instance_id, key.seq)
        try:
            identity = json.loads(event.evidence) if event is not None else None
            same = (
                event is not None
                and isinstance(identity, dict)
                and event.hash == key.event_hash
                and (event.seq, event.trigger, event.actor, event.role, event.note)
                == (1, "start", req.actor, req.role, req.note)
                and (
                    identity.get("program"),
                    identity.get("area"),
                    identity.get("fiscal_year"),
                    identity.get("title"),
                )
                == (req.program.id, req.area.code, req.year, req.title)
            )
        except ValueError:
            same = False
        if not same:
            assert req.key is not None
            raise KeyRecordMismatch(req.key, key.instance_id, key.seq)

    # ------------------------------------------------------------------ fire

    def fire(self, request: FireRequest) -> FireResult:
        """Fire one trigger; one transaction."""
        req = request.checked()

        def work(unit: UnitOfWork) -> FireResult:
            event, row, replayed = self._fire_in(unit, req)
            if not replayed:
                event = event._replace(id=unit.flush()[0])
            return self._fire_result(unit.conn, event, row, replayed)

        result: FireResult = self.writer.run(
            work, lambda e: (req.actor, req.role, req.trigger, None, req.instance, None)
        )
        return result

    def fire_many(self, requests: Sequence[FireRequest | Mapping[str, Any]]) -> list[FireResult]:
        """Fire many requests in one transaction: all of them happen, or none does."""
        reqs = [FireRequest.of(r).checked() for r in requests]
        keys = [r.key for r in reqs if r.key is not None]
        if len(keys) != len(set(keys)):
            raise UsageError("an idempotency key is used twice in one batch")

        def work(unit: UnitOfWork) -> list[FireResult]:
            locked = _Locked(
                self.store.lock_instances(unit.conn, sorted({r.instance for r in reqs}))
            )
            out = []
            for i, req in enumerate(reqs):
                try:
                    out.append(self._fire_in(unit, req, locked))
                except WorkflowError as e:
                    e.request_index = i  # type: ignore[attr-defined]
                    e.add_note(f"(request #{i} of the batch; nothing in the batch was applied)")
                    raise
            ids = iter(unit.flush())
            return [
                self._fire_result(
                    unit.conn, e if replayed else e._replace(id=next(ids)), row, replayed
                )
                for e, row, replayed in out
            ]

        def refused(e: Exception) -> Refused:
            req = reqs[getattr(e, "request_index", 0)]
            return (req.actor, req.role, req.trigger, None, req.instance, None)

        return self.writer.run(work, refused, batch=True)

    def _fire_in(
        self, unit: UnitOfWork, req: FireRequest, locked: _Locked | None = None
    ) -> tuple[EventRow, InstanceRow, bool]:
        """One fire inside the unit's transaction: lock, re-check, append, advance.

        In a batch the instance rows were locked up front and each row evolves in ``locked``
        as the batch fires on it; the checks are the same.
        """
        conn = unit.conn
        if locked is None:
            row = self.store.lock_instance(conn, req.instance)
        else:
            row = locked.rows.get(req.instance)
        # The key is looked up under the instance lock (a batch locked its instances up
        # front): a concurrent request with the same key that got the lock first has
        # committed by now, and this one answers with its result instead of firing again.
        # Before --expect-version is checked: a retry returns the first result, whatever
        # version the instance has moved on to since.
        request = req.fingerprint() if req.key is not None else ""
        if req.key is not None:
            replay = self._replay(conn, req.key, request)
            if replay is not None:
                return self._replayed(conn, req, replay)
        if row is None:
            raise InstanceNotFound(req.instance)
        if req.expect_version is not None and row.version != req.expect_version:
            raise VersionConflict(req.instance, req.expect_version, row.version)
        loaded = self.programs.loaded(conn, row.definition_id)
        if req.role not in loaded.program.roles and req.role != AUDITOR:
            raise UnknownRole(row.program, req.role, loaded.program.roles)
        _grants.authorize(
            self.store,
            conn,
            self.policy,
            AccessRequest(req.actor, req.role, req.trigger, row.program, row.area_code, row.id),
            None if locked is None else locked.grants,
        )
        config: Configuration = config_tuple(row.active)
        happened: Callable[[], set[str]] = partial(self.store.triggers_of, conn, row.id)
        if row.id in unit.moves:
            # Events of this batch are not in the table yet.
            happened = partial(_union, happened, partial(unit.happened, row.id))
        step = loaded.machine.apply(
            config,
            req.trigger,
            req.role,
            req.evidence,
            happened=happened,
            functions=self.guards,
            context={
                "actor": req.actor,
                "instance": row.id,
                "area": row.area_code,
                "fiscal_year": row.fiscal_year,
            },
        )
        check_within(step.transition, step.evidence, row.fiscal_year)
        at = _audit.now_utc()
        if at < row.updated_at:
            # updated_at is the time of the instance's last event (verify checks it is).
            raise ClockWentBack(f"last event of instance {row.id}", row.updated_at, at)
        if step.transition.has_files:
            _files.keep(self.store, conn, step.transition, step.evidence, req.evidence, at)
        event = unit.event(
            instance=row.id,
            seq=row.version + 1,
            trigger=req.trigger,
            before=config,
            after=step.after,
            actor=req.actor,
            role=req.role,
            at=at,
            evidence=step.evidence,
            note=req.note,
            definition_hash=loaded.program.content_hash,
            prev_hash=row.head_hash,
            auth=req.auth,
        )
        # Positional, not _replace: this line runs for every fire of a batch.
        new_row = InstanceRow(
            row.id,
            row.program,
            row.program_version,
            row.definition_id,
            row.area_code,
            row.province_code,
            row.fiscal_year,
            row.duplicate_no,
            row.title,
            loaded.machine.top_state(step.after),
            event.to_state,
            row.version + 1,
            event.hash,
            row.created_at,
            at,
        )
        unit.move(row, new_row, event)
        if locked is not None:
            locked.rows[row.id] = new_row
        if req.key is not None:
            unit.key(req.key, request, row.id, event.seq, at, event.hash)
        return event, new_row, False

    def _replayed(
        self, conn: Any, req: FireRequest, key: KeyRow
    ) -> tuple[EventRow, InstanceRow, bool]:
        """The first result of a key: its event, and the instance as that event left it.

        Only if the event the key row names is this request's (same instance, trigger, actor,
        role and note, and the hash the row recorded): a rewritten key row must not make a
        replay answer with another instance's event.
        """
        row = self.store.get_instance(conn, key.instance_id)
        event = self.store.event_at(conn, key.instance_id, key.seq)
        if (
            row is None
            or event is None
            or event.hash != key.event_hash
            or (event.instance_id, event.trigger, event.actor, event.role, event.note)
            != (req.instance, req.trigger, req.actor, req.role, req.note)
            or not self._same_evidence(conn, row, event, req)
        ):
            assert req.key is not None
            raise KeyRecordMismatch(req.key, key.instance_id, key.seq)
        first = config_tuple(event.to_state)
        then = row._replace(
            state=first[0].split(".", 1)[0],
            active=event.to_state,
            version=event.seq,
            head_hash=event.hash,
            updated_at=event.at,
        )
        return event, then, True

    def _same_evidence(
        self, conn: Any, row: InstanceRow, event: EventRow, req: FireRequest
    ) -> bool:
        """Whether ``event`` recorded the evidence ``req`` brings, as the evidence rules of the
        instance's own definition turn it into stored evidence (a key row pointed at a twin
        event that differs only in its evidence must not be answered with)."""
        program = self.programs.loaded(conn, row.definition_id).program
        for t in program.transitions:
            if t.trigger != req.trigger:
                continue
            try:
                typed = _evidence_validate(t, req.evidence)
            except WorkflowError:
                continue
            if _audit.canonical_json(dict(typed)) == event.evidence:
                return True
        return False

    def _fire_result(
        self, conn: Any, event_row: EventRow, inst_row: InstanceRow, replayed: bool
    ) -> FireResult:
        """The result of a fire, built inside its transaction: the triggers available next
        are read on the same connection (only when a guard from here needs past triggers)."""
        happened = partial(self.store.triggers_of, conn, inst_row.id)
        return FireResult(
            event=event_of(event_row),
            instance=self.programs.instance(conn, inst_row, happened),
            replayed=replayed,
        )

    def _replay(self, conn: Any, key: str, request: str) -> KeyRow | None:
        if not key.strip() or len(key) > 200:
            raise UsageError("an idempotency key is 1 to 200 characters")
        found = self.store.find_key(conn, key)
        if found is None:
            return None
        if found.request_hash != request:
            raise IdempotencyConflict(key)
        return found

    def evidence_check(
        self, transition: Any, typed: Mapping[str, Any], row: InstanceRow
    ) -> None:
        """The evidence rules beyond a field's type that need the instance (a correction
        runs them on the evidence as corrected): dates ``within: fiscal_year``."""
        check_within(transition, typed, row.fiscal_year)

    # ------------------------------------------------------------------ grants

    def grant(
        self,
        actor: str,
        role: str,
        area: str | None,
        program: str | None,
        by: str | None,
        until: Any = None,
    ) -> Grant:
        """Grant (see ``Engine.grant``): one grant event, or none if already held."""
        item = _grants.scope(self.registry, actor, role, area, program)
        granted_by = _rules.name(by, "by") if by else self.writer.os_user
        ends = _grants.expiry(until)
        row = self.writer.run(
            lambda unit: _grants.grant_in(
                self.store, unit.conn, item, granted_by, unit.os_user, ends
            )
        )
        return _grants.grant_of(row)

    def revoke(
        self, actor: str, role: str, area: str | None, program: str | None, by: str | None
    ) -> Grant:
        """Revoke (see ``Engine.revoke``): one revoke event, or GrantNotFound."""
        item = _grants.scope(self.registry, actor, role, area, program)
        revoked_by = _rules.name(by, "by") if by else self.writer.os_user
        row = self.writer.run(
            lambda unit: _grants.revoke_in(self.store, unit.conn, item, revoked_by, unit.os_user)
        )
        return _grants.grant_of(row)


def _union(a: Callable[[], set[str]], b: Callable[[], set[str]]) -> set[str]:
    return a() | b()

"""The engine façade: what coordinators, auditors and embedding services call.

``Engine`` ties the pieces together: programs from the registry, compiled machines, areas,
the store, and the audit chain. Every change (``start``, ``fire``) is one database
transaction that re-reads the instance under a lock, re-checks trigger, role, evidence and
guards against what it read, appends the hash-chained event and moves the instance — or
changes nothing at all. Everything it returns is frozen and typed (see ``records``).
"""

from __future__ import annotations

import builtins
import datetime as dt
import hashlib
import heapq
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, NoReturn

from workflow import areas as _areas
from workflow.access.policy import (
    AUDITOR,
    EVERYWHERE,
    AccessRequest,
    Denial,
    Grant,
    Policy,
    StoredGrants,
)
from workflow.audit import chain as _audit
from workflow.audit.chain import Chain, Digest
from workflow.errors import (
    ClockWentBack,
    Conflict,
    DuplicateInstance,
    GrantNotFound,
    IdempotencyConflict,
    InstanceNotFound,
    KeyRecordMismatch,
    PermissionDenied,
    RoleNotAllowed,
    StateNotFound,
    UnknownRole,
    UsageError,
    VersionConflict,
    WorkflowError,
)
from workflow.programs.model import Program
from workflow.programs.registry import Registry
from workflow.records import (
    Event,
    FireResult,
    Instance,
    NonBundled,
    Report,
    ReportRow,
    VerifyProblem,
    VerifyResult,
)
from workflow.runtime import text as _rules
from workflow.runtime.evidence import check_fiscal_year, parse_date
from workflow.runtime.evidence import validate as _evidence_validate
from workflow.runtime.machine import CompiledMachine, Configuration, GuardFunction, compile_program
from workflow.storage.store import (
    DenialRow,
    EventRow,
    GrantEventRow,
    GrantRow,
    InstanceRow,
    KeyRow,
    Store,
    Timeouts,
    chunks,
    os_user,
)

DEFAULT_URL = "sqlite:///workflow.db"


def now_utc() -> str:
    """The current time as stored: ISO 8601 UTC with microseconds (sorts as text)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")[:-6] + "Z"


# Configurations repeat endlessly (a program has few), so their JSON both ways is cached.
@lru_cache(maxsize=65536)
def _config_text(config: Configuration) -> str:
    return json.dumps(list(config), separators=(",", ":"), ensure_ascii=False)


@lru_cache(maxsize=65536)
def _config_tuple(text: str) -> Configuration:
    return tuple(json.loads(text))


def _config_of(text: str | None) -> Configuration | None:
    return None if text is None else _config_tuple(text)


def _request_hash(*parts: Any) -> str:
    """The fingerprint of an idempotent request: whatever the caller sent, unchecked yet
    (ASCII JSON, so even undecodable command-line bytes fingerprint without error)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class _StartRequest:
    """A start, checked and normalised before its transaction begins."""

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


@dataclass(frozen=True)
class _FireRequest:
    """A fire, normalised before its transaction begins."""

    instance: int
    trigger: str
    actor: str
    role: str
    evidence: Mapping[str, object] | None
    note: str | None
    expect_version: int | None
    key: str | None
    request: str

    @classmethod
    def make(
        cls,
        instance: int,
        trigger: str,
        actor: str,
        role: str,
        evidence: Mapping[str, object] | None,
        note: str | None,
        expect_version: int | None,
        key: str | None,
    ) -> _FireRequest:
        instance = _instance_id(instance)
        actor = _clean_name(actor, "actor")
        role = _ident(role, "role")
        trigger = _ident(trigger, "trigger")
        note = _note(note)
        key = _key(key)
        evidence = _evidence_names(evidence)
        # Only an idempotent request needs its fingerprint.
        request = (
            _request_hash("fire", instance, trigger, actor, role, dict(evidence or {}), note)
            if key is not None
            else ""
        )
        return cls(instance, trigger, actor, role, evidence, note, expect_version, key, request)


@dataclass
class _Batch:
    """What fire_many carries through its transaction: the locked rows as they evolve, and
    the writes it will make in bulk at the end."""

    rows: dict[int, InstanceRow]
    first_versions: dict[int, int] = field(default_factory=dict)
    fired: dict[int, set[str]] = field(default_factory=dict)
    grants: dict[str, list[Grant]] = field(default_factory=dict)
    events: list[EventRow] = field(default_factory=list)

    def add(self, before: InstanceRow, after: InstanceRow, event: EventRow) -> None:
        self.first_versions.setdefault(before.id, before.version)
        self.fired.setdefault(before.id, set()).add(event.trigger)
        self.rows[before.id] = after
        self.events.append(event)

    def happened(self, store: Store, conn: Any, instance: int) -> set[str]:
        return store.triggers_of(conn, instance) | self.fired.get(instance, set())

    def flush(
        self, store: Store, conn: Any, out: list[tuple[EventRow, InstanceRow, bool]]
    ) -> list[tuple[EventRow, InstanceRow, bool]]:
        """Write every event and each instance's final state; give the events their ids."""
        ids = iter(store.insert_events(conn, [_event_values(e) for e in self.events]))
        advanced = store.advance_instances(
            conn, [(self.rows[i], version) for i, version in self.first_versions.items()]
        )
        if advanced != len(self.first_versions):
            raise Conflict("an instance of the batch changed meanwhile; nothing was applied")
        return [
            (EventRow(next(ids), *e[1:]), r, replayed) if not replayed else (e, r, replayed)
            for e, r, replayed in out
        ]


def _event_values(event: EventRow) -> dict[str, Any]:
    values = event._asdict()
    del values["id"]
    return values


@dataclass(frozen=True)
class _Loaded:
    program: Program
    machine: CompiledMachine
    definition_id: int


class Engine:
    """A workflow engine over one database.

    ``url`` is a SQLAlchemy URL (``sqlite:///workflow.db``, ``postgresql+psycopg://...``);
    ``definitions`` adds directories or files of programs to the bundled ones; a bundled
    program id in them is refused (``DefinitionError``, code ``E070``) unless it is named in
    ``allow_override``. ``guards`` registers named guard functions that definitions refer to
    with ``function: NAME``.
    ``lock_timeout`` (seconds; default ``WORKFLOW_LOCK_TIMEOUT`` or 30) bounds how long a
    call waits for another session's lock before it fails with ``DatabaseUnavailable``;
    ``statement_timeout`` (default ``WORKFLOW_STATEMENT_TIMEOUT`` or the server's own)
    bounds each statement on PostgreSQL.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        definitions: Sequence[str | Path] = (),
        *,
        guards: Mapping[str, GuardFunction] | None = None,
        policy: Policy | None = None,
        allow_override: Sequence[str] = (),
        lock_timeout: float | None = None,
        statement_timeout: float | None = None,
    ) -> None:
        self.url = url
        self.policy: Policy = policy if policy is not None else StoredGrants()
        if not isinstance(self.policy, Policy):
            raise UsageError("policy must have a `name` and a `check(request, grants)` method")
        # A policy may say it ignores stored grants; then they are not read on each change.
        self._policy_reads_grants = bool(getattr(self.policy, "reads_grants", True))
        self.registry = Registry(definitions, allow_override=allow_override)
        self.guards: dict[str, GuardFunction] = dict(guards or {})
        self.store = Store(url, Timeouts.make(lock_timeout, statement_timeout))
        self._by_definition: dict[int, _Loaded] = {}
        self._stored: dict[tuple[str, int, str], int] = {}
        self._os_user = os_user()

    def close(self) -> None:
        self.store.dispose()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------------ schema and programs

    def init(self) -> tuple[str | None, str]:
        """Create or upgrade the schema; safe to repeat. Returns (revision before, after)."""
        return self.store.init()

    def programs(self) -> builtins.list[Program]:
        return self.registry.programs()

    def program(self, program_id: str, version: int | None = None) -> Program:
        return self.registry.get(program_id, version)

    def definition_of(self, instance_id: int) -> Program:
        """The exact program version an instance runs on (as stored when it started)."""

        def work(conn: Any) -> Program:
            row = self.store.get_instance(conn, _instance_id(instance_id))
            if row is None:
                raise InstanceNotFound(instance_id)
            return self._loaded(conn, row.definition_id).program

        return self.store.run(work)

    def _loaded(self, conn: Any, definition_id: int) -> _Loaded:
        """The program an instance runs on, compiled once per Engine; a version not seen yet
        is read on the caller's connection."""
        loaded = self._by_definition.get(definition_id)
        if loaded is None:
            row = self.store.definition(conn, definition_id)
            program = self.registry.find(row.program, row.version)
            if program is None or program.content_hash != row.content_hash:
                # The file changed or is gone: the instance keeps the exact text it started on.
                program = Registry((), bundled=False).add_text(
                    row.source_text, f"<stored {row.program} v{row.version}>", row.source
                )
            loaded = _Loaded(program, compile_program(program), definition_id)
            self._by_definition[definition_id] = loaded
        return loaded

    def _definition_id_in(self, conn: Any, program: Program) -> int:
        """The stored id of this program version, storing it inside the caller's transaction
        (so a refused start stores nothing). Cached only once committed: see _remember."""
        key = (program.id, program.version, program.content_hash)
        cached = self._stored.get(key)
        if cached is not None:
            return cached
        return self.store.ensure_definition(
            conn,
            program.id,
            program.version,
            program.content_hash,
            program.source_file,
            program.source_text,
            now_utc(),
            program.source or "unknown",
        )

    def _remember(self, program: Program, definition_id: int) -> None:
        self._stored[(program.id, program.version, program.content_hash)] = definition_id
        if definition_id not in self._by_definition:
            self._by_definition[definition_id] = _Loaded(
                program, compile_program(program), definition_id
            )

    # ------------------------------------------------------------------ records

    def _instance(
        self, conn: Any, row: InstanceRow, happened: Callable[[], set[str]] | None = None
    ) -> Instance:
        loaded = self._loaded(conn, row.definition_id)
        config = _config_tuple(row.active)
        available = loaded.machine.available(config, happened=happened or (lambda: set()))
        return Instance(
            id=row.id,
            program=row.program,
            program_version=row.program_version,
            area=_areas.get(row.area_code),
            fiscal_year=row.fiscal_year,
            title=row.title,
            state=row.state,
            active=config,
            version=row.version,
            created_at=row.created_at,
            updated_at=row.updated_at,
            available_triggers=available,
            final=loaded.machine.is_final(config),
        )

    @staticmethod
    def _event(row: EventRow, program: str | None = None, area: str | None = None) -> Event:
        return Event(
            id=row.id,
            instance=row.instance_id,
            seq=row.seq,
            trigger=row.trigger,
            from_=_config_of(row.from_state),
            to=_config_of(row.to_state) or (),
            actor=row.actor,
            role=row.role,
            os_user=row.os_user,
            at=row.at,
            evidence=json.loads(row.evidence),
            note=row.note,
            definition_hash=row.definition_hash,
            policy=row.policy,
            prev_hash=row.prev_hash,
            hash=row.hash,
            program=program,
            area=area,
        )

    def _event_row(
        self,
        *,
        instance: int,
        seq: int,
        trigger: str,
        before: Configuration | None,
        after: Configuration,
        actor: str,
        role: str,
        at: str,
        evidence: Mapping[str, Any],
        note: str | None,
        definition_hash: str,
        prev_hash: str,
    ) -> EventRow:
        row = EventRow(
            id=0,
            instance_id=instance,
            seq=seq,
            trigger=trigger,
            from_state=None if before is None else _config_text(before),
            to_state=_config_text(after),
            actor=actor,
            role=role,
            os_user=self._os_user,
            at=at,
            evidence=_audit.canonical_json(dict(evidence)),
            note=note,
            definition_hash=definition_hash,
            policy=self.policy.name,
            prev_hash=prev_hash,
            hash="",
        )
        # The very function verify uses, so writing and checking cannot drift apart.
        return EventRow(*row[:15], _audit.row_hash(row))

    # ------------------------------------------------------------------ changes

    def start(
        self,
        program: str,
        *,
        area: str,
        fiscal_year: int | str,
        actor: str,
        role: str,
        title: str | None = None,
        key: str | None = None,
        allow_duplicate: bool = False,
        note: str | None = None,
    ) -> Instance:
        """Start ``program`` for an area and (Buddhist-Era) fiscal year; its first event is
        ``start``. Refused as a duplicate unless ``allow_duplicate``."""
        definition = self.registry.get(program)
        the_area = _areas.resolve(str(area))
        req = self._start_request(
            definition, the_area, fiscal_year, actor, role, title, note, allow_duplicate, key
        )
        try:
            instance_id, definition_id = self._write(lambda conn: self._start_in(conn, req))
        except (PermissionDenied, RoleNotAllowed) as e:
            self._deny(req.actor, req.role, "start", definition.id, None, the_area.code, e)
        self._remember(definition, definition_id)
        return self.get(instance_id)

    def start_many(
        self,
        program: str,
        *,
        areas: Sequence[str],
        fiscal_year: int | str,
        actor: str,
        role: str,
        title: str | None = None,
        skip_existing: bool = True,
        batch_size: int = 500,
        progress: Callable[[int], None] | None = None,
    ) -> builtins.list[int]:
        """Start ``program`` for many areas (e.g. every tambon of a province), in
        transactions of ``batch_size``; each instance gets its own start event exactly as
        :meth:`start` writes it. Areas that already run the program this fiscal year are
        skipped (or refused, with ``skip_existing=False``). Returns the new instance ids."""
        definition = self.registry.get(program)
        resolved = [_areas.resolve(str(a)) for a in areas]
        requests = [
            self._start_request(definition, a, fiscal_year, actor, role, title, None, False, None)
            for a in resolved
        ]
        created: builtins.list[int] = []
        for chunk in chunks(requests, max(1, batch_size)):

            def work(
                conn: Any, chunk: Sequence[_StartRequest] = chunk
            ) -> builtins.list[tuple[int, int]]:
                done = []
                for req in chunk:
                    try:
                        done.append(self._start_in(conn, req))
                    except DuplicateInstance:
                        if not skip_existing:
                            raise
                return done

            try:
                done = self._write(work)
            except (PermissionDenied, RoleNotAllowed) as e:
                self._deny(
                    requests[0].actor, requests[0].role, "start", definition.id, None, None, e
                )
            for instance_id, definition_id in done:
                self._remember(definition, definition_id)
                created.append(instance_id)
            if progress is not None:
                progress(len(chunk))
        return created

    def _start_request(
        self,
        definition: Program,
        area: _areas.Area,
        fiscal_year: int | str,
        actor: str,
        role: str,
        title: str | None,
        note: str | None,
        allow_duplicate: bool,
        key: str | None,
    ) -> _StartRequest:
        year = check_fiscal_year(fiscal_year)
        actor = _clean_name(actor, "actor")
        role = _ident(role, "role")
        key = _key(key)
        if role not in definition.roles and role != AUDITOR:
            self._deny(
                actor,
                role,
                "start",
                definition.id,
                None,
                area.code,
                UnknownRole(definition.id, role, definition.roles),
            )
        if role not in definition.start_roles:
            self._deny(
                actor,
                role,
                "start",
                definition.id,
                None,
                area.code,
                RoleNotAllowed("start", role, definition.start_roles),
            )
        title = _text(title, "title", _rules.TITLE_MAX)
        note = _note(note)
        request = _request_hash(
            "start", definition.id, area.code, year, actor, role, title, allow_duplicate, note
        )
        return _StartRequest(
            definition,
            area,
            year,
            actor,
            role,
            title,
            note,
            allow_duplicate,
            key,
            request,
        )

    def _start_in(self, conn: Any, req: _StartRequest) -> tuple[int, int]:
        """Insert one instance and its start event inside the caller's transaction;
        return (instance id, definition id)."""
        definition = req.program
        machine = compile_program(definition)
        if req.key is not None:
            replay = self._replay(conn, req.key, req.request)
            if replay is not None:
                self._check_start_replay(conn, replay, req)
                return replay.instance_id, self._definition_id_in(conn, definition)
        self._authorize(
            conn, AccessRequest(req.actor, req.role, "start", definition.id, req.area.code)
        )
        existing, duplicate_no = self.store.find_duplicate(
            conn, definition.id, req.area.code, req.year
        )
        if existing is not None and not req.allow_duplicate:
            raise DuplicateInstance(definition.id, req.area.code, req.year, existing)
        definition_id = self._definition_id_in(conn, definition)
        at = now_utc()
        config = machine.initial()
        instance_id = self.store.insert_instance(
            conn,
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
                active=_config_text(config),
                version=1,
                head_hash=_audit.GENESIS,
                created_at=at,
                updated_at=at,
            ),
        )
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
        event = self._event_row(
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
        )
        self.store.insert_event(conn, _event_values(event))
        self.store.set_head(conn, instance_id, event.hash)
        if req.key is not None:
            self.store.insert_key(conn, req.key, req.request, instance_id, 1, at, event.hash)
        return instance_id, definition_id

    def fire(
        self,
        instance_id: int,
        trigger: str,
        *,
        actor: str,
        role: str,
        evidence: Mapping[str, object] | None = None,
        note: str | None = None,
        expect_version: int | None = None,
        key: str | None = None,
    ) -> FireResult:
        """Fire ``trigger`` on an instance, recording ``evidence``; one transaction."""
        req = _FireRequest.make(
            instance_id, trigger, actor, role, evidence, note, expect_version, key
        )
        try:
            result: FireResult = self._write(
                lambda conn: self._fire_result(conn, *self._fire_in(conn, req))
            )
        except (PermissionDenied, RoleNotAllowed) as e:
            self._deny(req.actor, req.role, req.trigger, None, req.instance, None, e)
        return result

    def fire_many(self, requests: Sequence[Mapping[str, Any]]) -> builtins.list[FireResult]:
        """Fire many transitions (on one or many instances) in ONE transaction, with the same
        checks and audit records as :meth:`fire`: all of them happen, or none does.

        Each request is a mapping with the keyword arguments of :meth:`fire` plus
        ``instance`` and ``trigger``. A refusal names the request (``error.request_index``).
        The instances are read and locked together and the events written together, which
        is what makes a batch several times faster than the same fires one by one.
        """
        reqs = [
            _FireRequest.make(
                r["instance"],
                r["trigger"],
                r["actor"],
                r["role"],
                r.get("evidence"),
                r.get("note"),
                r.get("expect_version"),
                r.get("key"),
            )
            for r in requests
        ]
        keys = [r.key for r in reqs if r.key is not None]
        if len(keys) != len(set(keys)):
            raise UsageError("an idempotency key is used twice in one batch")

        def work(conn: Any) -> builtins.list[FireResult]:
            batch = _Batch(rows=self.store.lock_instances(conn, sorted({r.instance for r in reqs})))
            out = []
            for i, req in enumerate(reqs):
                try:
                    out.append(self._fire_in(conn, req, batch))
                except WorkflowError as e:
                    e.request_index = i  # type: ignore[attr-defined]
                    e.add_note(f"(request #{i} of the batch; nothing in the batch was applied)")
                    raise
            return [self._fire_result(conn, *r) for r in batch.flush(self.store, conn, out)]

        try:
            results: builtins.list[FireResult] = self._write(work)
        except (PermissionDenied, RoleNotAllowed) as e:
            req = reqs[getattr(e, "request_index", 0)]
            self._deny(req.actor, req.role, req.trigger, None, req.instance, None, e)
        return results

    def _fire_in(
        self, conn: Any, req: _FireRequest, batch: _Batch | None = None
    ) -> tuple[EventRow, InstanceRow, bool]:
        """One fire inside the caller's transaction: lock, re-check, append, advance.

        In a batch the instance rows were locked up front and the writes are collected for
        one bulk write at the end (``_Batch.flush``); the checks are the same.
        """
        if batch is None:
            row = self.store.lock_instance(conn, req.instance)
        else:
            row = batch.rows.get(req.instance)
        # The key is looked up under the instance lock (a batch locked its instances up
        # front): a concurrent request with the same key that got the lock first has
        # committed by now, and this one answers with its result instead of firing again.
        # Before --expect-version is checked: a retry returns the first result, whatever
        # version the instance has moved on to since.
        if req.key is not None:
            replay = self._replay(conn, req.key, req.request)
            if replay is not None:
                return self._replayed(conn, req, replay)
        if row is None:
            raise InstanceNotFound(req.instance)
        if req.expect_version is not None and row.version != req.expect_version:
            raise VersionConflict(req.instance, req.expect_version, row.version)
        loaded = self._loaded(conn, row.definition_id)
        if req.role not in loaded.program.roles and req.role != AUDITOR:
            raise UnknownRole(row.program, req.role, loaded.program.roles)
        self._authorize(
            conn,
            AccessRequest(req.actor, req.role, req.trigger, row.program, row.area_code, row.id),
            None if batch is None else batch.grants,
        )
        config: Configuration = _config_tuple(row.active)
        happened: Callable[[], set[str]] = partial(self.store.triggers_of, conn, row.id)
        if batch is not None and row.id in batch.fired:
            # Events of this batch are not in the table yet.
            happened = partial(batch.happened, self.store, conn, row.id)
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
        at = now_utc()
        if at < row.updated_at:
            # updated_at is the time of the instance's last event (verify checks it is).
            raise ClockWentBack(f"last event of instance {row.id}", row.updated_at, at)
        event = self._event_row(
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
        )
        state = loaded.machine.top_state(step.after)
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
            state,
            event.to_state,
            row.version + 1,
            event.hash,
            row.created_at,
            at,
        )
        if batch is not None:
            batch.add(row, new_row, event)
        else:
            event = event._replace(id=self.store.insert_event(conn, _event_values(event)))
            if not self.store.advance_instance(
                conn, row.id, row.version, state, new_row.active, event.hash, at
            ):
                raise VersionConflict(row.id, row.version, row.version + 1)
        if req.key is not None:
            self.store.insert_key(conn, req.key, req.request, row.id, event.seq, at, event.hash)
        return event, new_row, False

    def _replayed(
        self, conn: Any, req: _FireRequest, key: KeyRow
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
        first = _config_tuple(event.to_state)
        then = row._replace(
            state=first[0].split(".", 1)[0],
            active=event.to_state,
            version=event.seq,
            head_hash=event.hash,
            updated_at=event.at,
        )
        return event, then, True

    def _same_evidence(
        self, conn: Any, row: InstanceRow, event: EventRow, req: _FireRequest
    ) -> bool:
        """Whether ``event`` recorded the evidence ``req`` brings, as the evidence rules of the
        instance's own definition turn it into stored evidence (a key row pointed at a twin
        event that differs only in its evidence must not be answered with)."""
        program = self._loaded(conn, row.definition_id).program
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
            event=self._event(event_row),
            instance=self._instance(conn, inst_row, happened),
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

    def _check_start_replay(self, conn: Any, key: KeyRow, req: _StartRequest) -> None:
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

    def _write(self, work: Callable[[Any], Any]) -> Any:
        """Run a change in one write transaction (a collision with a concurrent writer is run
        again once by the store: the re-read then sees their change and answers for it)."""
        return self.store.run(work, write=True)

    def _verify_grants(
        self, conn: Any, digest: Digest | None
    ) -> tuple[builtins.list[VerifyProblem], _Timeline | None]:
        """Re-compute the grant chain, replay it in order against the grants in force, and
        return what it says each actor held when (None if the chain itself is broken)."""
        held: dict[tuple[str, str, str, str], tuple[str, str]] = {}
        timeline: _Timeline = {}
        open_grants: dict[tuple[str, str, str, str], builtins.list[Any]] = {}
        prev, expected, last_at = _audit.GENESIS, 1, ""
        hashes: dict[int, str] = {}
        for row in self.store.grant_events(conn):
            reason = _chain_link_problem(row, expected, prev, last_at, _audit.grant_hash)
            item: tuple[str, str, str, str] | None = None
            if reason is None:
                item = _grant_item(row.scope)
                if item is None:
                    reason = "grant event scope is unreadable"
                elif row.action not in ("grant", "revoke"):
                    reason = f"grant event action {row.action!r} is neither grant nor revoke"
            if reason is not None or item is None:
                seq = row.seq if type(row.seq) is int else None
                return [VerifyProblem(None, seq, f"grants: {reason}")], None
            hashes[row.seq] = row.hash
            if row.action == "grant":
                held[item] = (row.by, row.at)
                interval: builtins.list[Any] = [item[2], item[3], row.at, None]
                open_grants[item] = interval
                timeline.setdefault((item[0], item[1]), []).append(interval)
            else:
                held.pop(item, None)
                if item in open_grants:
                    open_grants.pop(item)[3] = row.at
            prev, expected, last_at = row.hash, row.seq + 1, row.at
        stored = {
            (g.actor, g.role, g.area_code, g.program): (g.granted_by, g.granted_at)
            for g in self.store.all_grants(conn)
        }
        problems: builtins.list[VerifyProblem] = []
        if stored != held:
            problems.append(
                VerifyProblem(
                    None,
                    None,
                    "grants: the grants in force differ from the grant events "
                    f"({len(stored.keys() - held.keys())} unrecorded, "
                    f"{len(held.keys() - stored.keys())} missing, "
                    f"{sum(1 for k in stored.keys() & held.keys() if stored[k] != held[k])} "
                    "altered)",
                )
            )
        seq, head = digest.grants if digest is not None else (0, "")
        if seq and hashes.get(seq) != head:
            problems.append(
                VerifyProblem(
                    None,
                    seq,
                    "grants: the grant event covered by the digest is missing or changed "
                    "(the grant trail was shrunk or rewritten)",
                )
            )
        return problems, timeline

    def _verify_denials(self, conn: Any, digest: Digest | None) -> builtins.list[VerifyProblem]:
        """Re-compute the denials' chain; with a digest, check its head is still there."""
        prev, expected, last_at = _audit.GENESIS, 1, ""
        wanted = digest.denials[0] if digest is not None and digest.denials else 0
        seen = None
        for row in self.store.stream_denials(conn):
            if row.seq is None:
                reason: str | None = f"denial {row.id} is not in the chain (inserted directly?)"
            else:
                reason = _chain_link_problem(row, expected, prev, last_at, _audit.denial_hash)
            if reason is not None:
                seq = row.seq if type(row.seq) is int else None
                return [VerifyProblem(None, seq, f"denials: {reason}")]
            if row.seq == wanted:
                seen = row.hash
            prev, expected, last_at = row.hash, expected + 1, row.at
        if digest is not None and digest.denials and wanted and seen != digest.denials[1]:
            return [
                VerifyProblem(
                    None,
                    wanted,
                    "denials: the denial covered by the digest is missing or changed "
                    "(denials were removed or rewritten)",
                )
            ]
        return []

    # ------------------------------------------------------------------ access

    def _authorize(
        self,
        conn: Any,
        request: AccessRequest,
        cache: dict[str, builtins.list[Grant]] | None = None,
    ) -> None:
        """Ask the policy, inside the change's transaction; raise PermissionDenied.
        ``cache`` keeps each actor's grants for the rest of a batch's transaction."""
        if request.role == AUDITOR:
            raise PermissionDenied(
                request.actor, request.role, request.action, "auditor is a read-only role"
            )
        grants: builtins.list[Grant] = []
        if self._policy_reads_grants:
            found = cache.get(request.actor) if cache is not None else None
            if found is None:
                # Locked until the change commits: a revoke cannot slip in between.
                found = [
                    _grant(g) for g in self.store.grants_for(conn, request.actor, lock=True)
                ]
                if cache is not None:
                    cache[request.actor] = found
            grants = found
        reason = self.policy.check(request, grants)
        if reason is not None:
            raise PermissionDenied(request.actor, request.role, request.action, reason)

    def _deny(
        self,
        actor: str,
        role: str,
        action: str,
        program: str | None,
        instance: int | None,
        area: str | None,
        error: Exception,
    ) -> NoReturn:
        """Record a refusal for want of a permission (in its own transaction, as the next
        link of the denials' chain), then raise it.

        The refusal matters more than its record: if the record cannot be written (a
        read-only or full database, a clock behind the chain's head) the refusal is still
        raised, carrying ``denial_unrecorded`` (one line saying why) for the caller to show.
        """
        reason = getattr(error, "reason", None) or str(error)

        def work(conn: Any) -> None:
            prog, where = program, area
            if instance is not None and (prog is None or where is None):
                row = self.store.get_instance(conn, instance)
                if row is not None:
                    prog, where = row.program, row.area_code
            head = self.store.lock_denial_chain(conn)
            at = now_utc()
            if head is not None and at < head.at:
                raise ClockWentBack("last denial", head.at, at)
            denial = DenialRow(
                id=0,
                actor=actor,
                role=role,
                action=action,
                program=prog,
                instance_id=instance,
                area_code=where,
                reason=reason,
                os_user=self._os_user,
                at=at,
                seq=(head.seq or 0) + 1 if head is not None else 1,
                prev_hash=head.hash if head is not None else _audit.GENESIS,
            )
            values = denial._replace(hash=_audit.denial_hash(denial))._asdict()
            del values["id"]
            self.store.insert_denial(conn, values)

        try:
            self.store.run(work, write=True)
        except Exception as e:  # the refusal matters more than its record
            why = " ".join(str(e).split()) or type(e).__name__
            error.denial_unrecorded = why  # type: ignore[attr-defined]
            error.add_note(f"(the denial could not be recorded: {why})")
        raise error

    def grant(
        self,
        actor: str,
        role: str,
        *,
        area: str | None = None,
        program: str | None = None,
        by: str | None = None,
    ) -> Grant:
        """Let ``actor`` act as ``role`` in ``area`` (and inside it) on ``program``;
        recorded as a hash-chained grant event. Granting what is already held changes nothing,
        also when two identical grants run at once (one event, both return the grant)."""
        actor, role, code, prog = self._grant_scope(actor, role, area, program)
        granted_by = _clean_name(by, "by") if by else self._os_user

        def work(conn: Any) -> GrantRow:
            # The chain lock first: a concurrent grant or revoke of the same grant has then
            # committed, and what is read below is what this change acts on.
            head = self.store.lock_grant_chain(conn)
            existing = self.store.find_grant(conn, actor, role, code, prog)
            if existing is not None:
                return existing
            at = self._grant_event(conn, head, "grant", actor, role, code, prog, granted_by)
            values = dict(
                actor=actor,
                role=role,
                area_code=code,
                program=prog,
                granted_by=granted_by,
                granted_at=at,
            )
            self.store.insert_grant(conn, values)
            return GrantRow(0, **values)

        return _grant(self.store.run(work, write=True))

    def revoke(
        self,
        actor: str,
        role: str,
        *,
        area: str | None = None,
        program: str | None = None,
        by: str | None = None,
    ) -> Grant:
        """Withdraw exactly that grant (GrantNotFound if it is not held); takes effect at once:
        a change that checked the grant before commits before the revoke does, and none after.
        Of two concurrent revokes of one grant, one records the revocation and the other is
        GrantNotFound, as if they had run one after the other."""
        actor, role, code, prog = self._grant_scope(actor, role, area, program)
        revoked_by = _clean_name(by, "by") if by else self._os_user

        def work(conn: Any) -> GrantRow:
            head = self.store.lock_grant_chain(conn)  # as in grant()
            existing = self.store.find_grant(conn, actor, role, code, prog)
            if existing is None:
                raise GrantNotFound(actor, role, code or None, prog or None)
            # Delete first: it waits for every change still relying on the grant (they hold
            # it FOR SHARE), so the revocation's time (read in _grant_event) follows every
            # fire the grant allowed, as its effect does and as verify's replay expects.
            self.store.delete_grant(conn, existing.id)
            self._grant_event(conn, head, "revoke", actor, role, code, prog, revoked_by)
            return existing

        return _grant(self.store.run(work, write=True))

    def grants(self, actor: str | None = None) -> builtins.list[Grant]:
        """The grants in force (of one actor, or everyone's)."""
        actor = _clean_name(actor, "actor") if actor is not None else None
        rows = self.store.run(
            lambda conn: (
                self.store.grants_for(conn, actor) if actor else self.store.all_grants(conn)
            )
        )
        return [_grant(r) for r in rows]

    def denials(self, limit: int | None = None) -> builtins.list[Denial]:
        """Refused attempts for want of a permission, oldest first."""
        rows = self.store.run(lambda conn: self.store.denials(conn, limit))
        return [
            Denial(
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
            for r in rows
        ]

    def _grant_scope(
        self, actor: str, role: str, area: str | None, program: str | None
    ) -> tuple[str, str, str, str]:
        actor = _clean_name(actor, "actor")
        role = _ident(role, "role")
        known_roles = {
            r
            for p in self.registry.programs()
            for v in self.registry.versions(p.id)
            for r in v.roles
        } | {AUDITOR}
        if role not in known_roles:
            raise UsageError(f"unknown role {role!r} (known: {', '.join(sorted(known_roles))})")
        program = _filter(program, "program")
        if program:
            self.registry.get(program)
        code = _areas.resolve(area).code if area else EVERYWHERE
        return actor, role, code, program or ""

    def _grant_event(
        self,
        conn: Any,
        head: GrantEventRow | None,
        action: str,
        actor: str,
        role: str,
        area: str,
        program: str,
        by: str,
    ) -> str:
        """Append the next grant event after ``head`` (the caller holds the chain lock);
        return its time, read now that the chain is locked (so concurrent grant changes get
        times in chain order)."""
        at = now_utc()
        if head is not None and at < head.at:
            raise ClockWentBack("last grant event", head.at, at)
        seq = head.seq + 1 if head else 1
        prev = head.hash if head else _audit.GENESIS
        scope = _audit.canonical_json(
            {"actor": actor, "role": role, "area": area or None, "program": program or None}
        )
        row = GrantEventRow(
            seq=seq,
            action=action,
            scope=scope,
            by=by,
            os_user=self._os_user,
            at=at,
            prev_hash=prev,
            hash="",
        )
        self.store.insert_grant_event(conn, row._replace(hash=_audit.grant_hash(row)))
        return at

    # ------------------------------------------------------------------ reads

    def get(self, instance_id: int) -> Instance:
        """The instance as it is now, with the triggers available from its state."""

        def work(conn: Any) -> Instance:
            row = self.store.get_instance(conn, _instance_id(instance_id))
            if row is None:
                raise InstanceNotFound(instance_id)
            return self._instance(conn, row, lambda: self.store.triggers_of(conn, row.id))

        return self.store.run(work)

    def available_triggers(
        self, instance_id: int, role: str | None = None, actor: str | None = None
    ) -> tuple[str, ...]:
        """Triggers that may fire now: the state, every guard that does not depend on the
        evidence, and — given ``role`` and/or ``actor`` — what that role may fire and what
        that actor's grants (or the engine's policy) permit on this instance."""

        actor = _clean_name(actor, "actor") if actor is not None else None
        role = _ident(role, "role") if role is not None else None

        def work(conn: Any) -> tuple[str, ...]:
            row = self.store.get_instance(conn, _instance_id(instance_id))
            if row is None:
                raise InstanceNotFound(instance_id)
            loaded = self._loaded(conn, row.definition_id)
            if role is not None and role not in loaded.program.roles and role != AUDITOR:
                raise UnknownRole(row.program, role, loaded.program.roles)
            machine = loaded.machine
            config = _config_tuple(row.active)

            def happened() -> set[str]:
                return self.store.triggers_of(conn, row.id)

            if actor is None:
                return machine.available(config, role, happened=happened)
            grants = [_grant(g) for g in self.store.grants_for(conn, actor)]
            roles = [role] if role else list(dict.fromkeys(g.role for g in grants))
            allowed: set[str] = set()
            for r in roles:
                request = AccessRequest(actor, r, "*", row.program, row.area_code, row.id)
                if r != AUDITOR and self.policy.check(request, grants) is None:
                    allowed.update(machine.available(config, r, happened=happened))
            return tuple(t for t in machine.triggers_from(config) if t in allowed)

        return self.store.run(work)

    def list(
        self,
        *,
        program: str | None = None,
        state: str | None = None,
        area: str | None = None,
        fiscal_year: int | str | None = None,
        limit: int | None = None,
    ) -> builtins.list[Instance]:
        """Instances, oldest first; ``area`` matches the area and everything inside it."""
        code = _areas.resolve(area).code if area else None
        year = check_fiscal_year(fiscal_year) if fiscal_year is not None else None
        program = _filter(program, "program")
        if program is not None:
            self.registry.get(program)
        state = _filter(state, "state")
        if state is not None:
            ids = [program] if program is not None else [p.id for p in self.registry.programs()]
            known = sorted(
                {s.path for pid in ids for v in self.registry.versions(pid) for s in v.states}
            )
            if state not in known:
                raise StateNotFound(state, program, known)
        limit = _limit(limit)

        def work(conn: Any) -> builtins.list[Instance]:
            rows = self.store.list_instances(
                conn, program=program, state=state, area=code, fiscal_year=year, limit=limit
            )
            return [
                self._instance(conn, r, partial(self.store.triggers_of, conn, r.id)) for r in rows
            ]

        return self.store.run(work)

    def history(self, instance_id: int) -> builtins.list[Event]:
        """The instance's events, oldest first (the first is ``start``)."""

        def work(conn: Any) -> builtins.list[Event]:
            rows = self.store.events_of(conn, _instance_id(instance_id))
            if not rows and self.store.get_instance(conn, _instance_id(instance_id)) is None:
                raise InstanceNotFound(instance_id)
            return [self._event(r) for r in rows]

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
    ) -> builtins.list[Event]:
        """Events across instances, ordered by recording time.

        ``since``/``until`` filter on when an event was *recorded* (``at``): dates (CE or BE,
        ``until`` inclusive) or ISO timestamps. ``date_from``/``date_to`` filter on the
        evidence ``date``, the day the activity *happened* (CE or BE, both inclusive); events
        without an evidence date (starts, grants) are then left out. The two differ whenever
        a stage is recorded after the fact, which is the rule rather than the exception."""
        code = _areas.resolve(area).code if area else None
        lo = _bound(since, end=False)
        hi = _bound(until, end=True)
        day_lo = _day(date_from, "date_from")
        day_hi = _day(date_to, "date_to")
        by_day = day_lo is not None or day_hi is not None
        actor = _filter(actor, "actor", _rules.NAME_MAX)
        program = _filter(program, "program")
        instance = _instance_id(instance) if instance is not None else None
        limit = _limit(limit)

        def on_day(e: Event) -> bool:
            day = e.evidence.get("date") if isinstance(e.evidence, Mapping) else None
            return (
                isinstance(day, str)
                and (day_lo is None or day >= day_lo)
                and (day_hi is None or day <= day_hi)
            )

        def work(conn: Any) -> builtins.list[Event]:
            events = [
                self._event(row, program=p, area=a)
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
                    for e in (_grant_event(g) for g in self.store.grant_events(conn))
                    if (lo is None or e.at >= lo)
                    and (hi is None or e.at < hi)
                    and (actor is None or actor in (e.actor, e.evidence.get("actor")))
                    and (program is None or e.evidence.get("program") in (None, program))
                    and _overlaps(code, e.area)
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

        def work(conn: Any) -> builtins.list[tuple[str, str, str, str, Program, int]]:
            return [
                (prog, province, state, active, self._loaded(conn, definition_id).program, n)
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

    # ------------------------------------------------------------------ audit

    def digest(self) -> Digest:
        """A commitment to the head of every instance's chain, as of now."""
        heads: dict[str, tuple[int, str]] = {}
        with self.store.snapshot() as conn:
            taken = now_utc()
            head = self.store.grant_head(conn)
            grants = (head.seq, head.hash) if head else (0, _audit.GENESIS)
            denial = self.store.denial_head(conn)
            denials = (denial.seq or 0, denial.hash) if denial else (0, _audit.GENESIS)
            keys = _audit.keys_hash(self.store.stream_keys(conn))
            for row in self.store.stream_instances(conn):
                heads[str(row.id)] = (row.version, row.head_hash)
        return Digest(
            instances=len(heads),
            events=sum(s for s, _ in heads.values()),
            root=Digest.root_of(heads, grants, denials, keys),
            heads=heads,
            taken_at=taken,
            grants=grants,
            denials=denials,
            keys=keys,
        )

    def verify(self, digest: Digest | Mapping[str, Any] | None = None) -> VerifyResult:
        """Re-compute every chain (events, grant events, denials) and check each instance
        against its last event, each event against the grants its actor held at that moment
        (for events the stored-grants policy allowed) and each idempotency record against the
        event it names; with a ``digest``, also check that everything it covered is still
        there, unchanged.

        Nothing stored is trusted to be well-formed: a malformed value is a problem of its
        instance and seq, and the scan goes on."""
        if digest is not None and not isinstance(digest, Digest):
            try:
                digest = Digest.from_dict(digest)
            except ValueError as e:
                raise UsageError(str(e)) from None
        from workflow.errors import DatabaseUnavailable

        try:
            return self._verify(digest, lenient=False)
        except DatabaseUnavailable as e:
            if not self.store.is_undecodable(e):
                raise
            # SQLite TEXT that is not UTF-8: read again, such values becoming problems.
            return self._verify(digest, lenient=True)

    def _verify(self, digest: Digest | None, lenient: bool) -> VerifyResult:
        problems: builtins.list[VerifyProblem] = []
        events = instances = 0
        wanted = {int(k): s for k, (s, _) in digest.heads.items()} if digest else {}
        found: dict[int, tuple[int, str]] = {}
        with self.store.snapshot(lenient) as conn:
            definitions = {d.id: d for d in self.store.all_definitions(conn)}
            for d in definitions.values():
                try:
                    intact = (
                        hashlib.sha256(d.source_text.encode("utf-8")).hexdigest() == d.content_hash
                    )
                except (AttributeError, UnicodeError):
                    intact = False
                if not intact:
                    problems.append(
                        VerifyProblem(
                            None,
                            None,
                            f"stored definition {d.program} v{d.version} "
                            "was altered (its text no longer matches its hash)",
                        )
                    )
            grant_problems, timeline = self._verify_grants(conn, digest)
            problems.extend(grant_problems)
            keys = list(self.store.stream_keys(conn))
            checks = _EventChecks(timeline, keys)
            pairs = _audit.merge_by_instance(
                self.store.stream_instances(conn),
                _audit.chains(self.store.stream_events(conn), wanted, found, checks),
            )
            for inst, chain in pairs:
                if chain is not None:
                    events += chain.events
                if inst is not None:
                    instances += 1
                try:
                    problem = _check_instance(inst, chain, definitions)
                except (TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
                    ident = inst.id if inst is not None else chain.instance if chain else None
                    problem = VerifyProblem(
                        ident if type(ident) is int else None,
                        chain.last_seq if chain is not None else 0,
                        f"a stored value is malformed ({type(e).__name__}: {e})",
                    )
                if problem is not None:
                    problems.append(problem)
            problems.extend(checks.key_problems())
            problems.extend(self._verify_denials(conn, digest))
            if digest is not None and digest.keys is not None:
                covered = [
                    k for k in keys if type(k.seq) is int and k.seq <= wanted.get(k.instance_id, 0)
                ]
                if _audit.keys_hash(covered) != digest.keys:
                    problems.append(
                        VerifyProblem(
                            None,
                            None,
                            "keys: the idempotency records covered by the digest were "
                            "removed, added to or rewritten",
                        )
                    )
            non_bundled = tuple(
                NonBundled(*row) for row in self.store.non_bundled_instances(conn)
            )
        if digest is not None:
            before = len(problems)
            for key, (seq, head) in sorted(digest.heads.items(), key=lambda kv: int(kv[0])):
                now = found.get(int(key))
                if now is None:
                    problems.append(
                        VerifyProblem(
                            int(key),
                            seq,
                            "event covered by the digest is missing (instance or events removed)",
                        )
                    )
                elif now[1] != head:
                    problems.append(
                        VerifyProblem(
                            int(key), seq, "event differs from the one the digest covered"
                        )
                    )
            if events < digest.events and len(problems) == before:
                problems.append(
                    VerifyProblem(
                        None,
                        None,
                        f"the trail holds {events} events, fewer than the {digest.events} "
                        "the digest covered (events were removed)",
                    )
                )
        # What an intruder stored decides nothing about the shape of the answer: ids that are
        # not integers are reported in the reason, and None in their place.
        problems = [
            p
            if _int_or_none(p.instance) == p.instance and _int_or_none(p.seq) == p.seq
            else VerifyProblem(
                _int_or_none(p.instance),
                _int_or_none(p.seq),
                f"{p.reason} (instance {p.instance!r}, seq {p.seq!r})",
            )
            for p in problems
        ]
        problems.sort(key=lambda p: (p.instance is not None, p.instance or 0, p.seq or 0))
        return VerifyResult(
            ok=not problems,
            events_checked=events,
            instances_checked=instances,
            problems=tuple(problems),
            digest_checked=digest is not None,
            non_bundled=non_bundled,
        )


#: (actor, role) -> [area, program, granted at, revoked at or None] for every grant ever made.
_Timeline = dict[tuple[str, str], builtins.list[builtins.list[Any]]]


class _EventChecks:
    """verify's per-event checks beyond the chain: the actor's grant at that moment, and the
    idempotency records naming the event (see ``Engine.verify``)."""

    def __init__(self, timeline: _Timeline | None, keys: Sequence[KeyRow]) -> None:
        self.timeline = timeline
        self.keys: dict[tuple[Any, Any], builtins.list[KeyRow]] = {}
        for k in keys:
            self.keys.setdefault((k.instance_id, k.seq), []).append(k)
        self.seen: set[tuple[Any, Any]] = set()
        self.bad_keys: builtins.list[VerifyProblem] = []
        self._scope: tuple[Any, str | None, str | None] = (None, None, None)

    def __call__(self, chain: Chain, row: tuple[Any, ...]) -> str | None:
        instance, seq, at = row[1], row[2], row[9]
        if not isinstance(at, str):
            return None  # malformed: the chain check reports it
        named = self.keys.get((instance, seq))
        if named is not None:
            self.seen.add((instance, seq))
            for k in named:
                if k.event_hash != row[15] or k.created_at != at:
                    self.bad_keys.append(
                        VerifyProblem(
                            instance,
                            seq,
                            f"idempotency key {k.key!r} does not match the event it names "
                            "(the key record was altered)",
                        )
                    )
        actor, role, policy = row[6], row[7], row[13]
        if role == AUDITOR:
            return "an event recorded in the read-only auditor role"
        if policy != StoredGrants.name or self.timeline is None:
            # Another policy decided (its name is hashed into the event); a broken grant
            # chain is reported once, not as every event it would leave uncovered.
            return None
        area, program = self._instance_scope(chain)
        if area is None or program is None:
            return None  # the start event is unreadable: _check_instance says so
        for g_area, g_program, since, until in self.timeline.get((actor, role), ()):
            if (
                area.startswith(g_area)
                and (not g_program or g_program == program)
                and since <= at
                and (until is None or at < until)
            ):
                return None
        return (
            f"no grant covered it: {actor!r} held no {role!r} grant for area {area}, "
            f"program {program} at {at}"
        )

    def _instance_scope(self, chain: Chain) -> tuple[str | None, str | None]:
        """The instance's area and program as its (hashed) start event recorded them."""
        if self._scope[0] != chain.instance:
            area = program = None
            try:
                identity = json.loads(chain.first.evidence)
                if isinstance(identity, dict):
                    a, p = identity.get("area"), identity.get("program")
                    if isinstance(a, str) and isinstance(p, str):
                        area, program = a, p
            except (TypeError, ValueError):
                pass
            self._scope = (chain.instance, area, program)
        return self._scope[1], self._scope[2]

    def key_problems(self) -> builtins.list[VerifyProblem]:
        out = list(self.bad_keys)
        for (instance, seq), named in self.keys.items():
            if (instance, seq) not in self.seen:
                for k in named:
                    out.append(
                        VerifyProblem(
                            instance if type(instance) is int else None,
                            seq if type(seq) is int else None,
                            f"idempotency key {k.key!r} names an event that does not exist",
                        )
                    )
        return out


def _chain_link_problem(
    row: Any, expected: int, prev: str, last_at: str, hash_of: Callable[[Any], str]
) -> str | None:
    """Why a grant event or denial does not follow its predecessor in its chain, or None."""
    try:
        if type(row.seq) is not int:
            return f"seq {row.seq!r} is not an integer"
        if row.seq != expected:
            return f"the chain jumps from {expected - 1} to {row.seq} (a record was removed)"
        if row.prev_hash != prev or hash_of(row) != row.hash:
            return f"record {row.seq} was altered"
        if not (isinstance(row.at, str) and _audit.TIME_FORMAT.fullmatch(row.at)):
            return f"record {row.seq} time {row.at!r} is not an ISO 8601 UTC time"
        if row.at < last_at:
            return f"time runs backwards: record {row.seq} at {row.at} is before {last_at}"
    except (TypeError, ValueError, UnicodeError) as e:
        return f"record {row.seq!r} holds a malformed value ({type(e).__name__})"
    return None


def _grant_item(scope: object) -> tuple[str, str, str, str] | None:
    """(actor, role, area, program) of a grant event's scope ('' for everywhere / all)."""
    try:
        data = json.loads(scope)  # type: ignore[arg-type]
        item = (data["actor"], data["role"], data["area"] or "", data["program"] or "")
    except (ValueError, KeyError, TypeError):
        return None
    return item if all(isinstance(v, str) for v in item) else None


def _overlaps(area: str | None, scope: str | None) -> bool:
    """Whether a grant's scope (None: everywhere) touches the area filtered on."""
    return area is None or scope is None or scope.startswith(area) or area.startswith(scope)


def _grant_event(row: GrantEventRow) -> Event:
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


def _grant(row: GrantRow) -> Grant:
    return Grant(
        actor=row.actor,
        role=row.role,
        area=row.area_code or None,
        program=row.program or None,
        granted_by=row.granted_by,
        granted_at=row.granted_at,
    )


def _check_instance(
    inst: InstanceRow | None, chain: _audit.Chain | None, definitions: Mapping[int, Any]
) -> VerifyProblem | None:
    if inst is None:
        assert chain is not None
        return VerifyProblem(chain.instance, chain.first.seq, "events belong to no instance")
    if chain is None:
        return VerifyProblem(inst.id, 0, "instance has no events (its trail was removed)")
    if chain.problem is not None:
        return chain.problem
    first = chain.first
    if first.trigger != "start" or first.from_state is not None:
        return VerifyProblem(inst.id, first.seq, "the first event is not the instance's start")
    try:
        identity = json.loads(first.evidence)
    except ValueError:
        return VerifyProblem(inst.id, first.seq, "start event evidence is not JSON")
    if not isinstance(identity, dict):
        return VerifyProblem(inst.id, first.seq, "start event evidence is not a JSON object")
    last = _configuration(chain.last_to)
    if last is None:
        return VerifyProblem(
            inst.id, chain.last_seq, "the last event's configuration is not a list of states"
        )
    expected = {
        "program": inst.program,
        "program_version": inst.program_version,
        "area": inst.area_code,
        "fiscal_year": inst.fiscal_year,
        "title": inst.title,
        "duplicate_no": inst.duplicate_no,
    }
    for name, value in expected.items():
        if identity.get(name) != value:
            return VerifyProblem(inst.id, 0, f"instance {name} differs from its start event")
    if inst.province_code != inst.area_code[:2]:
        return VerifyProblem(inst.id, 0, "instance province differs from its area")
    if inst.created_at != first.at:
        return VerifyProblem(inst.id, 0, "instance created_at differs from its start event")
    checks = (
        (inst.version == chain.last_seq, "version"),
        (inst.head_hash == chain.head, "head hash"),
        (inst.active == chain.last_to, "active states"),
        (inst.updated_at == chain.last_at, "updated_at"),
        (inst.state == last[0].split(".")[0], "state"),
    )
    for ok, what in checks:
        if not ok:
            return VerifyProblem(
                inst.id, chain.last_seq, f"instance {what} differs from its last event"
            )
    definition = definitions.get(inst.definition_id)
    if definition is None or (definition.program, definition.version) != (
        inst.program,
        inst.program_version,
    ):
        return VerifyProblem(inst.id, 0, "instance refers to a missing or different definition")
    if chain.definition_hashes != {definition.content_hash}:
        return VerifyProblem(
            inst.id,
            0,
            "events were recorded under a different definition "
            "than the one stored for this instance",
        )
    return None


def _configuration(text: object) -> builtins.list[str] | None:
    """A stored configuration (JSON list of dotted state paths), or None if it is not one."""
    try:
        value = json.loads(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    return None


def _int_or_none(value: object) -> int | None:
    return value if type(value) is int else None


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


def _bound(value: str | dt.date | None, *, end: bool) -> str | None:
    """A date or timestamp bound as stored text; a date ``until`` includes that whole day."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and "T" in value:
        return _text(value, "time bound", 40)
    try:
        day = parse_date(value)
        if end:
            day = day + dt.timedelta(days=1)
    except (ValueError, OverflowError) as e:
        raise UsageError(str(e)) from None
    return day.isoformat() + "T00:00:00.000000Z"


def _day(value: str | dt.date | None, what: str) -> str | None:
    """An evidence-date bound (CE or BE) as stored: ISO ``YYYY-MM-DD`` in CE."""
    if value is None or value == "":
        return None
    try:
        return parse_date(value).isoformat()
    except (ValueError, OverflowError) as e:
        raise UsageError(f"{what}: {e}") from None


# Database integer columns are 32-bit: an id beyond that cannot exist (and must not reach the
# driver, which would fail with an overflow rather than "not found").
MAX_ID = 2**31 - 1


def _instance_id(value: object) -> int:
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise UsageError(f"an instance id is a whole number, not {value!r}") from None
    if isinstance(value, bool) or not 1 <= number <= MAX_ID:
        raise InstanceNotFound(value)
    return number


def _text(value: str | None, what: str, limit: int) -> str | None:
    """Free text from a caller (a title): the rule of ``workflow.runtime.text``; empty is None.

    Checked here so that no database (PostgreSQL refuses NUL, drivers refuse lone
    surrogates from undecodable command-line bytes) ever sees what it cannot store."""
    return _rules.free_text(value, what, limit)


def _note(value: str | None) -> str | None:
    """A note: free text that may span lines."""
    return _rules.free_text(value, "note", _rules.NOTE_MAX, multiline=True)


def _evidence_names(evidence: Mapping[str, object] | None) -> Mapping[str, object] | None:
    """Evidence with its field names in canonical form (values are the evidence rules')."""
    if not evidence:
        return evidence
    out: dict[str, object] = {}
    for name, value in evidence.items():
        clean = _rules.identifier(name, "evidence field name", _rules.ID_MAX)
        if clean in out:
            raise UsageError(f"evidence field {clean} given twice")
        out[clean] = value
    return out


def _key(key: str | None) -> str | None:
    if key is None:
        return None
    return _rules.identifier(key, "idempotency key", _rules.KEY_MAX)


def _limit(limit: int | None) -> int | None:
    if limit is None:
        return None
    if limit < 1:
        raise UsageError("a limit is at least 1")
    return min(limit, MAX_ID)


def _clean_name(name: str, what: str) -> str:
    """An actor's name in its one canonical form (``workflow.runtime.text``), so that a lookalike
    cannot be granted beside the real name."""
    return _rules.identifier(name, what, _rules.NAME_MAX)


def _ident(value: str, what: str) -> str:
    """A role, trigger, program or state id as given, canonical and no longer than its
    column (the definitions decide whether it is a known one)."""
    return _rules.identifier(value, what, _rules.ID_MAX)


def _filter(value: str | None, what: str, limit: int = _rules.ID_MAX) -> str | None:
    """An optional filter value (``--actor``, ``--program``, ``--state``): canonical or None."""
    return _rules.optional_identifier(value, what, limit)



"""The program versions instances run on, compiled once per Engine, and stored rows turned
into the records the API hands out.

Both the write path (``commands``) and the reads (``queries``) need an instance's own program
version — never the newest one: an instance keeps the exact definition it started on — and
both hand back ``Instance`` and ``Event`` records built the same way, so they share this
module. A version not seen yet is read on the caller's connection, inside the caller's
transaction (no second connection, no nested transaction).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from workflow import areas as _areas
from workflow.audit import chain as _audit
from workflow.engine import deadlines as _deadlines
from workflow.programs.model import Program
from workflow.programs.registry import Registry
from workflow.records import Event, Instance
from workflow.runtime.machine import CompiledMachine, Configuration, compile_program
from workflow.storage.store import EventRow, InstanceRow, Store


# Configurations repeat endlessly (a program has few), so their JSON both ways is cached.
@lru_cache(maxsize=65536)
def config_text(config: Configuration) -> str:
    """A configuration as stored: a JSON list of dotted state paths."""
    return json.dumps(list(config), separators=(",", ":"), ensure_ascii=False)


@lru_cache(maxsize=65536)
def config_tuple(text: str) -> Configuration:
    """A stored configuration back as a tuple of dotted state paths."""
    return tuple(json.loads(text))


def config_of(text: str | None) -> Configuration | None:
    return None if text is None else config_tuple(text)


@dataclass(frozen=True)
class Loaded:
    """One stored program version, with its compiled machine."""

    program: Program
    machine: CompiledMachine
    definition_id: int


class Programs:
    """The stored program versions this Engine has seen, by definition id, compiled once."""

    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry
        self._by_definition: dict[int, Loaded] = {}
        self._stored: dict[tuple[str, int, str], int] = {}

    def loaded(self, conn: Any, definition_id: int) -> Loaded:
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
            loaded = Loaded(program, compile_program(program), definition_id)
            self._by_definition[definition_id] = loaded
        return loaded

    def definition_id_in(self, conn: Any, program: Program) -> int:
        """The stored id of this program version, storing it inside the caller's transaction
        (so a refused start stores nothing). Cached only once committed: see remember."""
        cached = self._stored.get((program.id, program.version, program.content_hash))
        if cached is not None:
            return cached
        return self.store.ensure_definition(
            conn,
            program.id,
            program.version,
            program.content_hash,
            program.source_file,
            program.source_text,
            _audit.now_utc(),
            program.source or "unknown",
        )

    def remember(self, program: Program, definition_id: int) -> None:
        """Cache a stored program version once the transaction that stored it committed."""
        self._stored[(program.id, program.version, program.content_hash)] = definition_id
        if definition_id not in self._by_definition:
            self._by_definition[definition_id] = Loaded(
                program, compile_program(program), definition_id
            )

    def instance(
        self, conn: Any, row: InstanceRow, happened: Callable[[], set[str]] | None = None
    ) -> Instance:
        """The record of an instance row, with the triggers available from its state by its
        own program version (``happened`` reads past triggers, only if a guard needs them)."""
        loaded = self.loaded(conn, row.definition_id)
        config = config_tuple(row.active)
        available = loaded.machine.available(config, happened=happened or (lambda: set()))
        due_at, overdue, escalate = _deadlines.status(conn, loaded.program, row)
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
            due_at=due_at,
            overdue=overdue,
            escalate=escalate,
        )


def event_of(row: EventRow, program: str | None = None, area: str | None = None) -> Event:
    """The record of an event row (``program``/``area`` given by the audit log's join)."""
    evidence: Mapping[str, Any] = json.loads(row.evidence)
    return Event(
        id=row.id,
        instance=row.instance_id,
        seq=row.seq,
        trigger=row.trigger,
        from_=config_of(row.from_state),
        to=config_of(row.to_state) or (),
        actor=row.actor,
        role=row.role,
        os_user=row.os_user,
        at=row.at,
        evidence=evidence,
        note=row.note,
        definition_hash=row.definition_hash,
        policy=row.policy,
        prev_hash=row.prev_hash,
        hash=row.hash,
        program=program,
        area=area,
        auth=row.auth,
    )

"""Mending the record without rewriting it: ``comment``, ``correct`` and ``revert``.

Each is a new event at the end of the instance's hash chain, written through the one write
path (``unit_of_work``): the instance is locked and re-read, the actor's role and grant are
checked as for a fire (a refusal for want of a permission is recorded as a denial), the event
is hashed with the same encoding as every other, and the instance's version moves on by
compare-and-swap. Nothing earlier is touched: a correction names the event it corrects by seq
and hash and carries the old and new values; a revert names the step it takes back and
returns the instance to the configuration before it. What those references must satisfy is
``workflow.audit.evolution``'s, which verify replays.

Who may correct and revert is the program's ``corrections: {roles: [...]}`` (default
provincial_officer); any of the program's roles may comment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from workflow.access import grants as _grants
from workflow.access.policy import AUDITOR, AccessRequest, Policy
from workflow.audit import chain as _audit
from workflow.audit import evolution as _evo
from workflow.engine import attachments as _files
from workflow.engine.compiled import Loaded, Programs, config_tuple, event_of
from workflow.engine.requests import auth as _auth
from workflow.engine.requests import instance_id as _instance_id
from workflow.engine.unit_of_work import UnitOfWork, Writer
from workflow.errors import (
    AmendRefused,
    ClockWentBack,
    EventNotFound,
    InstanceNotFound,
    RoleNotAllowed,
    UnknownRole,
    UsageError,
    VersionConflict,
    WorkflowError,
)
from workflow.records import Event, FireResult
from workflow.runtime import text as _rules
from workflow.runtime.evidence import EvidenceValue
from workflow.runtime.evidence import validate as _evidence_validate
from workflow.runtime.machine import Configuration
from workflow.storage.store import EventRow, InstanceRow

#: ``--note`` not given to a correction (None would mean "remove the note").
KEEP = object()
REASON_MAX = 2000


@dataclass(frozen=True)
class _Who:
    actor: str
    role: str
    auth: str | None


class Amendments:
    """comment, correct and revert, over one writer, set of stored programs and policy."""

    def __init__(self, writer: Writer, programs: Programs, policy: Policy) -> None:
        self.writer = writer
        self.store = writer.store
        self.programs = programs
        self.policy = policy

    # ------------------------------------------------------------------ the three changes

    def comment(
        self, instance: int, *, actor: str, role: str, text: str, auth: str | None = None
    ) -> FireResult:
        """A note on the instance that changes no state: a ``comment`` event whose note is
        ``text``."""
        number = _instance_id(instance)
        who = self._who(actor, role, auth)
        body = _rules.note(text)
        if body is None or not body.strip():
            raise UsageError("a comment needs its text")

        def work(unit: UnitOfWork) -> tuple[EventRow, InstanceRow]:
            row, loaded = self._locked(unit, number, None)
            if who.role not in loaded.program.roles:
                raise UnknownRole(row.program, who.role, loaded.program.roles)
            self._authorize(unit, who, _evo.COMMENT, row)
            config = config_tuple(row.active)
            return self._append(unit, row, loaded, who, _evo.COMMENT, config, {}, body)

        return self._run(work, who, _evo.COMMENT, number)

    def correct(
        self,
        instance: int,
        seq: int,
        *,
        actor: str,
        role: str,
        reason: str,
        evidence: Mapping[str, object] | None = None,
        note: object = KEEP,
        auth: str | None = None,
        check: Callable[[Any, Mapping[str, EvidenceValue], InstanceRow], None] | None = None,
    ) -> FireResult:
        """Amend the evidence (``evidence``: field -> new value, "" or None to remove an
        optional one) or the note of event ``seq``: a ``correct`` event naming it by seq and
        hash, with each field's old and new value and the required ``reason``; the state is
        unchanged. ``check(transition, typed, row)`` runs the engine's extra evidence rules
        (the fiscal year) on the evidence as corrected."""
        number = _instance_id(instance)
        who = self._who(actor, role, auth)
        why = _reason(reason)
        if isinstance(seq, bool) or not isinstance(seq, int):
            raise UsageError(f"an event seq is a whole number, not {seq!r}")
        given = dict(evidence or {})
        new_note = KEEP if note is KEEP else _rules.note(note)
        if not given and new_note is KEEP:
            raise UsageError("a correction needs --set FIELD=VALUE or --note")

        def work(unit: UnitOfWork) -> tuple[EventRow, InstanceRow]:
            row, loaded = self._locked(unit, number, None)
            self._may_correct(loaded, who, _evo.CORRECT, row)
            self._authorize(unit, who, _evo.CORRECT, row)
            events = self.store.events_of(unit.conn, row.id)
            if not 1 <= seq <= len(events):
                raise EventNotFound(row.id, seq)
            target = corrected([event_of(e) for e in events])[seq - 1]
            if target.trigger in _evo.UNCORRECTABLE:
                raise AmendRefused(
                    f"event {seq} of instance {row.id} is a {target.trigger} event; "
                    "only the program's steps and comments can be corrected"
                )
            current = dict(target.corrected_evidence or target.evidence)
            merged: dict[str, object] = dict(current)
            for name, value in given.items():
                if value is None or (isinstance(value, str) and not value.strip()):
                    merged.pop(name, None)
                else:
                    merged[name] = value
            typed: dict[str, EvidenceValue] = {}
            if given:
                typed = self._typed(loaded, target, merged, row, check)
                _files.keep_uploads(self.store, unit.conn, typed, given, _audit.now_utc())
            changes = {
                name: {"old": current.get(name), "new": typed.get(name)}
                for name in given
                if current.get(name) != typed.get(name)
            }
            body: dict[str, Any] = {
                "of_seq": seq,
                "of_hash": target.hash,
                "changes": changes,
                "reason": why,
            }
            old_note = target.corrected_note if target.corrected_by else target.note
            if new_note is not KEEP and new_note != old_note:
                body["note"] = {"old": old_note, "new": new_note}
            if not changes and "note" not in body:
                raise AmendRefused(
                    f"event {seq} of instance {row.id} already records exactly that"
                )
            config = config_tuple(row.active)
            return self._append(unit, row, loaded, who, _evo.CORRECT, config, body, None)

        return self._run(work, who, _evo.CORRECT, number)

    def revert(
        self,
        instance: int,
        *,
        actor: str,
        role: str,
        reason: str,
        expect_version: int | None = None,
        auth: str | None = None,
    ) -> FireResult:
        """Take back the instance's last state change not yet taken back: a ``revert`` event
        returning it to the configuration before that step. Refused from a final state
        unless the program's ``corrections`` allow it (``revert_final: true``), and for a
        step made before a migration."""
        number = _instance_id(instance)
        who = self._who(actor, role, auth)
        why = _reason(reason)

        def work(unit: UnitOfWork) -> tuple[EventRow, InstanceRow]:
            row, loaded = self._locked(unit, number, expect_version)
            self._may_correct(loaded, who, _evo.REVERT, row)
            self._authorize(unit, who, _evo.REVERT, row)
            config = config_tuple(row.active)
            if loaded.machine.is_final(config) and not loaded.program.corrections.revert_final:
                raise AmendRefused(
                    f"instance {row.id} is in a final state ({', '.join(config)}); "
                    f"{row.program} does not allow taking back a step from it"
                )
            steps = _evo.steps_left(self.store.events_of(unit.conn, row.id))
            if not steps:
                raise AmendRefused(
                    f"instance {row.id} has no step to take back (none since it started "
                    "or was last migrated)"
                )
            step = steps[-1]
            body = {"of_seq": step.seq, "of_hash": step.hash, "reason": why}
            after = config_tuple(step.before)
            return self._append(unit, row, loaded, who, _evo.REVERT, after, body, None)

        return self._run(work, who, _evo.REVERT, number)

    # ------------------------------------------------------------------ the shared steps

    def _who(self, actor: str, role: str, auth: str | None) -> _Who:
        return _Who(_rules.name(actor, "actor"), _rules.identifier(role, "role"), _auth(auth))

    def _run(
        self, work: Callable[[UnitOfWork], tuple[EventRow, InstanceRow]], who: _Who,
        action: str, number: int,
    ) -> FireResult:
        def transaction(unit: UnitOfWork) -> FireResult:
            event, row = work(unit)
            event = event._replace(id=unit.flush()[0])
            happened = partial(self.store.triggers_of, unit.conn, row.id)
            return FireResult(event_of(event), self.programs.instance(unit.conn, row, happened))

        result: FireResult = self.writer.run(
            transaction, lambda e: (who.actor, who.role, action, None, number, None)
        )
        return result

    def _locked(
        self, unit: UnitOfWork, number: int, expect_version: int | None
    ) -> tuple[InstanceRow, Loaded]:
        row = self.store.lock_instance(unit.conn, number)
        if row is None:
            raise InstanceNotFound(number)
        if expect_version is not None and row.version != expect_version:
            raise VersionConflict(number, expect_version, row.version)
        return row, self.programs.loaded(unit.conn, row.definition_id)

    def _may_correct(self, loaded: Loaded, who: _Who, action: str, row: InstanceRow) -> None:
        program = loaded.program
        if who.role not in program.roles and who.role != AUDITOR:
            raise UnknownRole(row.program, who.role, program.roles)
        if who.role not in program.corrections.roles:
            raise RoleNotAllowed(action, who.role, program.corrections.roles)

    def _authorize(self, unit: UnitOfWork, who: _Who, action: str, row: InstanceRow) -> None:
        _grants.authorize(
            self.store,
            unit.conn,
            self.policy,
            AccessRequest(who.actor, who.role, action, row.program, row.area_code, row.id),
        )

    def _typed(
        self,
        loaded: Loaded,
        target: Event,
        merged: Mapping[str, object],
        row: InstanceRow,
        check: Callable[[Any, Mapping[str, EvidenceValue], InstanceRow], None] | None,
    ) -> dict[str, EvidenceValue]:
        """The evidence as corrected, checked by the rules of the transition that recorded
        it (in the definition the instance runs on now)."""
        transitions = loaded.program.transitions_for(target.trigger)
        if not transitions:
            raise AmendRefused(
                f"{row.program} v{row.program_version} has no transition {target.trigger!r} "
                "whose evidence rules could check the correction"
            )
        error: WorkflowError | None = None
        for t in transitions:
            try:
                typed = _evidence_validate(t, merged)
                if check is not None:
                    check(t, typed, row)
                return typed
            except WorkflowError as e:
                error = error or e
        assert error is not None
        raise error

    def _append(
        self,
        unit: UnitOfWork,
        row: InstanceRow,
        loaded: Loaded,
        who: _Who,
        trigger: str,
        after: Configuration,
        evidence: Mapping[str, Any],
        note: str | None,
    ) -> tuple[EventRow, InstanceRow]:
        at = _audit.now_utc()
        if at < row.updated_at:
            raise ClockWentBack(f"last event of instance {row.id}", row.updated_at, at)
        event = unit.event(
            instance=row.id,
            seq=row.version + 1,
            trigger=trigger,
            before=config_tuple(row.active),
            after=after,
            actor=who.actor,
            role=who.role,
            at=at,
            evidence=evidence,
            note=note,
            definition_hash=loaded.program.content_hash,
            prev_hash=row.head_hash,
            auth=who.auth,
        )
        new_row = row._replace(
            state=loaded.machine.top_state(after),
            active=event.to_state,
            version=row.version + 1,
            head_hash=event.hash,
            updated_at=at,
        )
        unit.move(row, new_row, event)
        return event, new_row


def _reason(value: object) -> str:
    text = _rules.free_text(value, "reason", REASON_MAX, multiline=True)
    if text is None or not text.strip():
        raise UsageError("a reason is required (--reason TEXT)")
    return text


def corrected(events: Sequence[Event]) -> list[Event]:
    """An instance's events (oldest first, all of them) with each corrected one showing its
    evidence and note as corrected beside the original (``corrected_by``,
    ``corrected_evidence``, ``corrected_note``)."""
    out = list(events)
    by_seq = {e.seq: i for i, e in enumerate(out)}
    for e in events:
        if e.trigger != _evo.CORRECT:
            continue
        ev: Mapping[str, Any] = e.evidence
        i = by_seq.get(ev.get("of_seq"))  # type: ignore[arg-type]
        if i is None or out[i].hash != ev.get("of_hash"):
            continue  # verify reports it
        target = out[i]
        evidence = dict(target.corrected_evidence or target.evidence)
        changes = ev.get("changes")
        if isinstance(changes, Mapping):
            for name, change in changes.items():
                new = change.get("new") if isinstance(change, Mapping) else None
                if new is None:
                    evidence.pop(name, None)
                else:
                    evidence[name] = new
        note = target.corrected_note if target.corrected_by else target.note
        change = ev.get("note")
        if isinstance(change, Mapping):
            new_note = change.get("new")
            note = new_note if isinstance(new_note, str) else None
        out[i] = replace(
            target,
            corrected_by=(*target.corrected_by, e.seq),
            corrected_evidence=evidence,
            corrected_note=note,
        )
    return out

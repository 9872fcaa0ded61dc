"""Deadlines (CONTRACT §10): when a state is due, whether an instance is overdue, and
``tick``, which records one ``overdue`` event per entry into a state that passed its due time.

A state's ``due`` is ``{days: N}`` after the event that entered it, or ``{fiscal_date:
"MM-DD"}``: the end of that day (midnight, Bangkok time, UTC+7) in the instance's fiscal
year (Buddhist Era; it begins on 1 October of the year before). "The entry into the state"
is the newest event that made the state active when it was not: an ``overdue`` event (from
and to the same states) does not enter anything, so each entry is reported once.

``tick`` writes through the one write path (``Writer.run``): the ``overdue`` event is
hash-chained like every other, recorded by actor ``system`` in role ``system`` under the
policy name ``system-clock`` (verify checks grants only for the stored-grants policy; see
docs/audit.md), together with a row of ``workflow_overdue`` whose UNIQUE key (instance,
state, entered_seq) makes two ticks at once record it once: the second collides, is run again
by the store, re-reads and finds it done. No lock is held beyond one instance's transaction.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workflow.audit import chain as _audit
from workflow.errors import ClockWentBack, UsageError
from workflow.programs.model import Program, State
from workflow.storage import outbox as _db
from workflow.storage.store import InstanceRow, Store

if TYPE_CHECKING:
    from workflow.engine.compiled import Programs
    from workflow.engine.unit_of_work import UnitOfWork, Writer
    from workflow.programs.registry import Registry

__all__ = [
    "OVERDUE",
    "SYSTEM",
    "SYSTEM_POLICY",
    "Pending",
    "TickResult",
    "due_states",
    "parse_time",
    "pending",
    "status",
    "tick",
]

#: The trigger, actor and role of the events ``tick`` records, and the policy name they carry.
OVERDUE = "overdue"
SYSTEM = "system"
SYSTEM_POLICY = "system-clock"
#: Thailand's time (no daylight saving): a fiscal date ends at midnight here.
BANGKOK = dt.timezone(dt.timedelta(hours=7))
BE_OFFSET = 543


def parse_time(text: str) -> dt.datetime:
    """An ISO 8601 time (``Z`` or an offset; a bare date or time without offset is UTC)."""
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value


def stamp(value: dt.datetime) -> str:
    """A time as stored (``now_utc``'s format)."""
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def fiscal_due(fiscal_year: int, month_day: str) -> dt.datetime:
    """The end of day ``MM-DD`` of a Buddhist-Era fiscal year (October opens the year)."""
    month, day = int(month_day[:2]), int(month_day[3:])
    year = fiscal_year - BE_OFFSET - (1 if month >= 10 else 0)
    return dt.datetime(year, month, day, tzinfo=BANGKOK) + dt.timedelta(days=1)


_DUE_STATES: dict[tuple[str, int, str], tuple[State, ...]] = {}


def due_states(program: Program) -> tuple[State, ...]:
    """The states of ``program`` that declare a ``due`` (cached per program version)."""
    key = (program.id, program.version, program.content_hash)
    found = _DUE_STATES.get(key)
    if found is None:
        found = _DUE_STATES[key] = tuple(s for s in program.all_states() if s.due is not None)
    return found


def _active(path: str, config: Sequence[str]) -> bool:
    prefix = path + "."
    return any(leaf == path or leaf.startswith(prefix) for leaf in config)


@dataclass(frozen=True)
class Pending:
    """One active due state of an instance: when it was entered and when it is due."""

    state: str
    entered_seq: int
    entered_at: str
    due_at: str
    escalate: tuple[str, ...]


def pending(conn: Any, program: Program, row: InstanceRow) -> list[Pending]:
    """The due states active in ``row`` (by its own program version), with their entries."""
    config: list[str] = json.loads(row.active)
    states = [s for s in due_states(program) if _active(s.path, config)]
    if not states:
        return []
    entries: dict[str, tuple[int, str]] = {}
    for seq, at, before, after in _db.transitions_of(conn, row.id):
        to: list[str] = json.loads(after)
        was: list[str] | None = None if before is None else json.loads(before)
        for s in states:
            if s.path not in entries and _active(s.path, to) and (
                was is None or not _active(s.path, was)
            ):
                entries[s.path] = (seq, at)
        if len(entries) == len(states):
            break
    out: list[Pending] = []
    for s in states:
        if s.path not in entries or s.due is None:
            continue
        seq, at = entries[s.path]
        if s.due.days is not None:
            due = parse_time(at) + dt.timedelta(days=s.due.days)
        else:
            assert s.due.fiscal_date is not None
            due = fiscal_due(row.fiscal_year, s.due.fiscal_date)
        out.append(Pending(s.path, seq, at, stamp(due), s.escalate))
    return out


def status(
    conn: Any, program: Program, row: InstanceRow, now: str | None = None
) -> tuple[str | None, bool, tuple[str, ...]]:
    """(due_at, overdue, escalation roles) of an instance: the earliest due time of its
    active due states; overdue when one has passed (or was recorded overdue)."""
    if not due_states(program):
        return None, False, ()
    found = pending(conn, program, row)
    if not found:
        return None, False, ()
    now = now or _audit.now_utc()
    late = [p for p in found if p.due_at <= now]
    if len(late) < len(found):
        marks = _db.overdue_marks(conn, row.id)
        late += [p for p in found if p not in late and (p.state, p.entered_seq) in marks]
    escalate = tuple(dict.fromkeys(r for p in late for r in p.escalate))
    return min(p.due_at for p in found), bool(late), escalate


@dataclass(frozen=True)
class TickResult:
    """What one ``tick`` did: the ``overdue`` events it recorded, as (instance, state)."""

    now: str
    checked: int
    recorded: tuple[tuple[int, str], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "now": self.now,
            "checked": self.checked,
            "recorded": len(self.recorded),
            "overdue": [{"instance": i, "state": s} for i, s in self.recorded],
        }


def _due_programs(registry: Registry) -> list[str]:
    return [
        p.id
        for p in registry.programs()
        if any(due_states(v) for v in registry.versions(p.id))
    ]


def tick(
    store: Store,
    writer: Writer,
    programs: Programs,
    registry: Registry,
    now: str | None = None,
) -> TickResult:
    """Record one ``overdue`` event per instance entry into a state past its due time that
    has none yet; safe to run at once on several hosts. ``now`` (ISO 8601) is for tests."""
    try:
        when = stamp(parse_time(now)) if now is not None else _audit.now_utc()
    except OverflowError:  # a time at the very ends of the calendar, in another zone
        raise UsageError(f"not a usable time: {now!r}") from None
    ids = _due_programs(registry)

    def scan(conn: Any) -> list[int]:
        out = []
        for row in _db.instances_of(conn, ids):
            program = programs.loaded(conn, row.definition_id).program
            if not due_states(program):
                continue
            marks: set[tuple[str, int]] | None = None
            for p in pending(conn, program, row):
                if p.due_at > when:
                    continue
                if marks is None:
                    marks = _db.overdue_marks(conn, row.id)
                if (p.state, p.entered_seq) not in marks:
                    out.append(row.id)
                    break
        return out

    candidates = store.run(scan)
    recorded: list[tuple[int, str]] = []
    for instance_id in candidates:
        recorded.extend(writer.run(_record(store, programs, instance_id, when)))
    return TickResult(when, len(candidates), tuple(recorded))


def _record(
    store: Store, programs: Programs, instance_id: int, when: str
) -> Callable[[UnitOfWork], list[tuple[int, str]]]:
    def work(unit: UnitOfWork) -> list[tuple[int, str]]:
        from workflow.engine.compiled import config_tuple

        conn = unit.conn
        row = store.lock_instance(conn, instance_id)
        if row is None:
            return []
        loaded = programs.loaded(conn, row.definition_id)
        marks = _db.overdue_marks(conn, row.id)
        late = [
            p
            for p in pending(conn, loaded.program, row)
            if p.due_at <= when and (p.state, p.entered_seq) not in marks
        ]
        unit.policy = SYSTEM_POLICY
        done: list[tuple[int, str]] = []
        config = config_tuple(row.active)
        for p in late:
            at = _audit.now_utc()
            if at < row.updated_at:
                raise ClockWentBack(f"last event of instance {row.id}", row.updated_at, at)
            event = unit.event(
                instance=row.id,
                seq=row.version + 1,
                trigger=OVERDUE,
                before=config,
                after=config,
                actor=SYSTEM,
                role=SYSTEM,
                at=at,
                evidence={"state": p.state, "due_at": p.due_at, "entered_seq": p.entered_seq},
                note=None,
                definition_hash=loaded.program.content_hash,
                prev_hash=row.head_hash,
            )
            new_row = row._replace(version=row.version + 1, head_hash=event.hash, updated_at=at)
            unit.move(row, new_row, event)
            _db.mark_overdue(conn, row.id, p.state, p.entered_seq, event.seq, p.due_at, at)
            row = new_row
            done.append((row.id, p.state))
        return done

    return work

"""The one write path: every change the engine makes is one ``UnitOfWork`` in one transaction.

start, fire, fire_many, start_many, grant and revoke all run through :meth:`Writer.run`: one
``Store.run(write=True)`` transaction (retried whole by the store on a lock or serialization
failure), in which the command appends hashed event rows, moves instances by compare-and-swap
and records idempotency keys; the unit collects them and writes them when the command is done
(one statement per kind for a batch). A refusal for want of a permission rolls all of it back
and is then recorded as a denial in a transaction of its own (:meth:`Writer.deny`), since
the refusal's record must survive the rollback. There is no other way to write, so a new
command (a correction, a deadline, an outbox row) gets these guarantees by using it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NoReturn, TypeVar

from workflow.access import grants as _grants
from workflow.access.policy import Policy
from workflow.audit import chain as _audit
from workflow.engine.compiled import config_text
from workflow.errors import Conflict, PermissionDenied, RoleNotAllowed, VersionConflict
from workflow.runtime.machine import Configuration
from workflow.storage.store import EventRow, InstanceRow, Store

T = TypeVar("T")

#: What a refusal is recorded against: (actor, role, action, program, instance, area).
Refused = tuple[str, str, str, str | None, int | None, str | None]


class UnitOfWork:
    """The writes of one transaction: built here, collected, written by :meth:`flush`."""

    __slots__ = (
        "batch", "conn", "events", "keys", "moves", "os_user", "policy", "store", "written"
    )

    def __init__(self, store: Store, conn: Any, os_user: str, policy: str, batch: bool) -> None:
        self.store = store
        self.conn = conn
        self.os_user = os_user
        self.policy = policy
        self.batch = batch
        self.events: list[EventRow] = []
        #: instance id -> [the version read under the lock, the row as it is now]
        self.moves: dict[int, list[Any]] = {}
        self.keys: list[tuple[str, str, int, int, str, str]] = []
        #: The events written so far, with their ids (for the after-commit listeners).
        self.written: list[EventRow] = []

    def event(
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
        auth: str | None = None,
    ) -> EventRow:
        """The next event row of an instance's chain, hashed (not written yet)."""
        row = EventRow(
            id=0,
            instance_id=instance,
            seq=seq,
            trigger=trigger,
            from_state=None if before is None else config_text(before),
            to_state=config_text(after),
            actor=actor,
            role=role,
            os_user=self.os_user,
            at=at,
            evidence=_audit.canonical_json(dict(evidence)),
            note=note,
            definition_hash=definition_hash,
            policy=self.policy,
            prev_hash=prev_hash,
            hash="",
            auth=auth,
            hash_format=_audit.EVENT_FORMAT,
        )
        # The very function verify uses, so writing and checking cannot drift apart.
        return row._replace(hash=_audit.row_hash(row))

    def create(self, values: dict[str, Any], start: Callable[[int], EventRow]) -> EventRow:
        """Insert a new instance now (its start event needs its id), then its start event
        (``start(instance_id)``) and chain head; return the start event."""
        instance_id = self.store.insert_instance(self.conn, values)
        event = start(instance_id)
        event = event._replace(id=self.store.insert_event(self.conn, _values(event)))
        self.store.set_head(self.conn, instance_id, event.hash)
        self.written.append(event)
        return event

    def move(self, before: InstanceRow, after: InstanceRow, event: EventRow) -> None:
        """Append ``event`` and move the instance from ``before`` to ``after`` (checked by
        compare-and-swap against the version first read, when flushed)."""
        moved = self.moves.get(before.id)
        if moved is None:
            self.moves[before.id] = [before.version, after]
        else:
            moved[1] = after
        self.events.append(event)

    def happened(self, instance: int) -> set[str]:
        """Triggers fired on ``instance`` in this unit, not written yet."""
        return {e.trigger for e in self.events if e.instance_id == instance}

    def key(self, key: str, request: str, instance: int, seq: int, at: str, hash_: str) -> None:
        """Record an idempotency key for the event it names."""
        self.keys.append((key, request, instance, seq, at, hash_))

    def flush(self) -> list[int]:
        """Write the collected events, moves and keys; return the events' ids in order."""
        store, conn = self.store, self.conn
        ids: list[int] = []
        if self.events:
            if not self.batch and len(self.events) == 1 and len(self.moves) == 1:
                # The hot path of a single fire: one INSERT, one UPDATE ... WHERE version.
                event = self.events[0]
                ((version, row),) = self.moves.values()
                ids = [store.insert_event(conn, _values(event))]
                if not store.advance_instance(
                    conn, row.id, version, row.state, row.active, row.head_hash, row.updated_at
                ):
                    raise VersionConflict(row.id, version, version + 1)
            else:
                ids = store.insert_events(conn, [_values(e) for e in self.events])
                moves = [(row, version) for version, row in self.moves.values()]
                if store.advance_instances(conn, moves) != len(moves):
                    raise Conflict(
                        "an instance of the batch changed meanwhile; nothing was applied"
                    )
        for k in self.keys:
            store.insert_key(conn, *k)
        self.written.extend(e._replace(id=i) for e, i in zip(self.events, ids, strict=True))
        self.events, self.moves, self.keys = [], {}, []
        return ids


def _values(event: EventRow) -> dict[str, Any]:
    values = event._asdict()
    del values["id"]
    return values


class Writer:
    """Runs commands as units of work, and records their refusals."""

    def __init__(self, store: Store, policy: Policy, os_user: str) -> None:
        self.store = store
        self.policy = policy
        self.os_user = os_user
        #: Called after each commit with the events it wrote (Engine.on_commit).
        self.listeners: list[Callable[[list[EventRow]], None]] = []

    def run(
        self,
        work: Callable[[UnitOfWork], T],
        refused: Callable[[Exception], Refused] | None = None,
        *,
        batch: bool = False,
    ) -> T:
        """Run ``work`` in one write transaction and write what it collected before the
        commit (a collision with a concurrent writer is run again once by the store: the
        re-read then sees their change and answers for it). A refusal for want of a
        permission is recorded against what ``refused`` says, then raised."""

        units: list[UnitOfWork] = []

        def transaction(conn: Any) -> T:
            unit = UnitOfWork(self.store, conn, self.os_user, self.policy.name, batch)
            units[:] = [unit]  # a retried transaction starts a new unit
            result = work(unit)
            unit.flush()
            return result

        try:
            result = self.store.run(transaction, write=True)
        except (PermissionDenied, RoleNotAllowed) as e:
            if refused is None:
                raise
            self.deny(*refused(e), e)
        if self.listeners and units and units[0].written:
            for listener in list(self.listeners):
                listener(units[0].written)  # after the commit, never before
        return result

    def deny(
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
        try:
            self.store.run(
                lambda conn: _grants.record_denial(
                    self.store,
                    conn,
                    actor=actor,
                    role=role,
                    action=action,
                    program=program,
                    instance=instance,
                    area=area,
                    reason=reason,
                    os_user=self.os_user,
                ),
                write=True,
            )
        except Exception as e:  # the refusal matters more than its record
            why = " ".join(str(e).split()) or type(e).__name__
            error.denial_unrecorded = why  # type: ignore[attr-defined]
            error.add_note(f"(the denial could not be recorded: {why})")
        raise error

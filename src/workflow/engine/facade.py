"""The engine façade: what coordinators, auditors and embedding services call.

``Engine`` is wiring and delegation only, so that a newcomer finds each behaviour in one
obvious room: the changes in ``commands`` (through the one write path, ``unit_of_work``), the
reads in ``queries``, the requests and input rules in ``requests``, grants and denials in
``workflow.access.grants``, verify and digest in ``workflow.audit.verify`` (which need no
Engine at all). Every change is one database transaction; everything returned is frozen and
typed (see ``records``).
"""

from __future__ import annotations

import builtins
import datetime as dt
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from workflow.access.policy import Denial, Grant, Policy, StoredGrants
from workflow.audit import verify as _verify
from workflow.audit.chain import Digest
from workflow.engine import attachments as _files
from workflow.engine.amend import KEEP, Amendments
from workflow.engine.commands import Commands
from workflow.engine.compiled import Programs
from workflow.engine.evolution import MigrationResult, Migrations
from workflow.engine.queries import Queries
from workflow.engine.requests import FireRequest, StartRequest
from workflow.engine.unit_of_work import Writer
from workflow.errors import PermissionDenied, UsageError
from workflow.programs.model import Program
from workflow.programs.registry import Registry
from workflow.records import Event, FireResult, Instance, Report, VerifyResult
from workflow.runtime.machine import GuardFunction
from workflow.storage import attachments as _attachments
from workflow.storage.store import Store, Timeouts, os_user

if TYPE_CHECKING:
    from workflow.accounts import Accounts
    from workflow.audit.log import ConsistencyResult
    from workflow.audit.note import Signer, Verifier
    from workflow.engine.deadlines import TickResult
    from workflow.notify import Notifications

DEFAULT_URL = "sqlite:///workflow.db"


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
        attachments: str | Path | None = None,
    ) -> None:
        self.url = url
        self.policy: Policy = policy if policy is not None else StoredGrants()
        if not isinstance(self.policy, Policy):
            raise UsageError("policy must have a `name` and a `check(request, grants)` method")
        self.registry = Registry(definitions, allow_override=allow_override)
        self.guards: dict[str, GuardFunction] = dict(guards or {})
        self.store = Store(url, Timeouts.make(lock_timeout, statement_timeout))
        # Files given as evidence: ``attachments`` (or WORKFLOW_ATTACHMENTS) is a directory;
        # by default beside a SQLite file, in the database otherwise (storage/attachments.py).
        where = attachments or os.environ.get("WORKFLOW_ATTACHMENTS") or None
        self.store.attachments_dir = (
            Path(where) if where else _attachments.default_directory(url)
        )
        compiled = Programs(self.store, self.registry)
        writer = Writer(self.store, self.policy, os_user())
        self._commands = Commands(writer, compiled, self.registry, self.policy, self.guards)
        self._writer = writer
        self._queries = Queries(self.store, compiled, self.registry, self.policy, writer.deny)
        self._accounts: Accounts | None = None
        self._amend = Amendments(writer, compiled, self.policy)
        self._migrations = Migrations(writer, compiled, self.registry, self.policy)
        self._compiled = compiled
        self._notifications: Notifications | None = None

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
        return self._queries.definition_of(instance_id)

    def diagram(
        self,
        program: str,
        *,
        fmt: str = "mermaid",
        lang: str = "en",
        instance: int | None = None,
        viewer: str | None = None,
    ) -> str:
        """``program`` drawn as Mermaid or DOT text; with ``instance``, the version it runs
        on, its current states and the path it took marked (``viewer`` as for :meth:`get`)."""
        return self._queries.diagram(program, fmt, lang, instance, viewer)

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
        auth: str | None = None,
    ) -> Instance:
        """Start ``program`` for an area and (Buddhist-Era) fiscal year; its first event is
        ``start``. Refused as a duplicate unless ``allow_duplicate``. ``auth`` says how the
        caller was authenticated (the service passes its session or token), recorded in the
        event and covered by its hash."""
        request = StartRequest(
            program, area, fiscal_year, actor, role, title, note, allow_duplicate, key, auth
        )
        return self.get(self._commands.start(request))

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
        request = StartRequest(program, "", fiscal_year, actor, role, title)
        return self._commands.start_many(request, areas, skip_existing, batch_size, progress)

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
        auth: str | None = None,
    ) -> FireResult:
        """Fire ``trigger`` on an instance, recording ``evidence``; one transaction. ``auth``
        as for :meth:`start`."""
        return self._commands.fire(
            FireRequest(
                instance_id, trigger, actor, role, evidence, note, expect_version, key, auth
            )
        )

    def fire_many(
        self, requests: Sequence[FireRequest | Mapping[str, Any]]
    ) -> builtins.list[FireResult]:
        """Fire many transitions (on one or many instances) in ONE transaction, with the same
        checks and audit records as :meth:`fire`: all of them happen, or none does.

        Each request is a :class:`FireRequest`, or a mapping with the keyword arguments of
        :meth:`fire` plus ``instance`` and ``trigger``. A refusal names the request
        (``error.request_index``). The instances are read and locked together and the events
        written together, which is what makes a batch several times faster than the same
        fires one by one.
        """
        return self._commands.fire_many(requests)

    # ------------------------------------------------------------------ mending (engine/amend.py)

    def comment(
        self, instance_id: int, *, actor: str, role: str, text: str, auth: str | None = None
    ) -> FireResult:
        """Append a ``comment`` event (the text is its note); the state is unchanged."""
        return self._amend.comment(instance_id, actor=actor, role=role, text=text, auth=auth)

    def correct(
        self,
        instance_id: int,
        seq: int,
        *,
        actor: str,
        role: str,
        reason: str,
        evidence: Mapping[str, object] | None = None,
        note: object = KEEP,
        auth: str | None = None,
    ) -> FireResult:
        """Append a ``correct`` event amending event ``seq``'s evidence (field -> new value;
        "" removes an optional field) and/or note; the original stays in the trail and
        :meth:`history` shows both. Roles: the program's ``corrections``."""
        return self._amend.correct(
            instance_id, seq, actor=actor, role=role, reason=reason, evidence=evidence,
            note=note, auth=auth, check=self._commands.evidence_check,
        )

    def revert(
        self,
        instance_id: int,
        *,
        actor: str,
        role: str,
        reason: str,
        expect_version: int | None = None,
        auth: str | None = None,
    ) -> FireResult:
        """Append a ``revert`` event returning the instance to its configuration before its
        last state change (refused from a final state unless the program allows it)."""
        return self._amend.revert(
            instance_id, actor=actor, role=role, reason=reason,
            expect_version=expect_version, auth=auth,
        )

    def migrate(
        self,
        program: str,
        to_version: int,
        *,
        actor: str,
        role: str,
        from_version: int | None = None,
        mapping: Mapping[str, str] | Sequence[str] | None = None,
        area: str | None = None,
        fiscal_year: int | str | None = None,
        state: str | None = None,
        dry_run: bool = False,
        batch_size: int = 200,
        progress: Callable[[int], None] | None = None,
        auth: str | None = None,
    ) -> MigrationResult:
        """Move ``program``'s running instances (selected by ``from_version``, ``area``,
        ``fiscal_year``, ``state``) to version ``to_version``: planned for every instance
        first (``mapping`` OLD -> NEW state paths; a prefix maps all under it), refused with
        nothing changed if any plan has a problem, then one ``migrate`` event per instance,
        ``batch_size`` instances per transaction. ``dry_run`` only plans. Instances already
        on ``to_version`` are left alone (a rerun is harmless). See engine/evolution.py."""
        return self._migrations.migrate(
            program, to_version, actor=actor, role=role, from_version=from_version,
            mapping=mapping, area=area, fiscal_year=fiscal_year, state=state,
            dry_run=dry_run, batch_size=batch_size, progress=progress, auth=auth,
        )

    def attachment(
        self, instance_id: int, seq: int, field: str, *, viewer: str | None = None
    ) -> tuple[Mapping[str, Any], bytes]:
        """The file event ``seq`` recorded as evidence ``field`` (as corrected, if it was):
        its value (``sha256``, ``name``, ``media_type``, ``bytes``) and content, re-hashed;
        ``viewer`` as for :meth:`get`."""
        events = self.history(instance_id, viewer=viewer)
        return _files.attachment(self.store, events, instance_id, seq, field)

    # ------------------------------------------------------------------ access

    def grant(
        self,
        actor: str,
        role: str,
        *,
        area: str | None = None,
        program: str | None = None,
        by: str | None = None,
        until: str | dt.date | None = None,
    ) -> Grant:
        """Let ``actor`` act as ``role`` in ``area`` (and inside it) on ``program``;
        recorded as a hash-chained grant event. Granting what is already held changes nothing,
        also when two identical grants run at once (one event, both return the grant).
        ``until`` (a date, CE or BE) ends the grant at the end of that day, Thai time; an
        expired grant refuses like a revoked one (grant it again to renew it)."""
        return self._commands.grant(actor, role, area, program, by, until)

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
        return self._commands.revoke(actor, role, area, program, by)

    def deny(
        self,
        actor: str,
        role: str,
        action: str,
        reason: str,
        *,
        program: str | None = None,
        instance: int | None = None,
        area: str | None = None,
    ) -> NoReturn:
        """Refuse ``action`` to ``actor`` for want of a permission the caller decides on
        (the service: an admin-only or auditor-only request): record it as a denial, chained
        like every other, and raise ``PermissionDenied``."""
        self._writer.deny(
            actor, role, action, program, instance, area,
            PermissionDenied(actor, role, action, reason),
        )

    def grants(self, actor: str | None = None) -> builtins.list[Grant]:
        """The grants held, not revoked (of one actor, or everyone's), the expired ones among
        them (``Grant.expired()``: they refuse like revoked ones until granted again)."""
        return self._queries.grants(actor)

    def denials(
        self, limit: int | None = None, *, viewer: str | None = None
    ) -> builtins.list[Denial]:
        """Refused attempts for want of a permission, oldest first; with a ``viewer``, those
        about areas and programs the viewer's grants cover."""
        return self._queries.denials(limit, viewer)

    # ------------------------------------------------------------------ reads

    def get(self, instance_id: int, *, viewer: str | None = None) -> Instance:
        """The instance as it is now, with the triggers available from its state. With a
        ``viewer`` (an actor), refused and recorded as a denial unless one of the viewer's
        grants, of any role, covers the instance's area and program."""
        return self._queries.get(instance_id, viewer)

    def available_triggers(
        self, instance_id: int, role: str | None = None, actor: str | None = None
    ) -> tuple[str, ...]:
        """Triggers that may fire now: the state, every guard that does not depend on the
        evidence, and — given ``role`` and/or ``actor`` — what that role may fire and what
        that actor's grants (or the engine's policy) permit on this instance."""
        return self._queries.available_triggers(instance_id, role, actor)

    def list(
        self,
        *,
        program: str | None = None,
        state: str | None = None,
        area: str | None = None,
        fiscal_year: int | str | None = None,
        limit: int | None = None,
        viewer: str | None = None,
        after: int | None = None,
    ) -> builtins.list[Instance]:
        """Instances, oldest first; ``area`` matches the area and everything inside it. With
        a ``viewer``, only the instances its grants cover; ``after`` (an instance id, the last
        of the previous page) and ``limit`` page through them."""
        return self._queries.list_instances(
            program=program,
            state=state,
            area=area,
            fiscal_year=fiscal_year,
            limit=limit,
            viewer=viewer,
            after=after,
        )

    def history(self, instance_id: int, *, viewer: str | None = None) -> builtins.list[Event]:
        """The instance's events, oldest first (the first is ``start``); ``viewer`` as for
        :meth:`get`."""
        return self._queries.history(instance_id, viewer)

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
    ) -> builtins.list[Event]:
        """Events across instances, ordered by recording time.

        ``since``/``until`` filter on when an event was *recorded* (``at``): dates (CE or BE,
        ``until`` inclusive) or ISO timestamps. ``date_from``/``date_to`` filter on the
        evidence ``date``, the day the activity *happened* (CE or BE, both inclusive); events
        without an evidence date (starts, grants) are then left out. The two differ whenever
        a stage is recorded after the fact, which is the rule rather than the exception.
        With a ``viewer``, only events of instances (and grants of areas) its grants cover."""
        return self._queries.audit_log(
            actor=actor,
            program=program,
            area=area,
            since=since,
            until=until,
            instance=instance,
            limit=limit,
            date_from=date_from,
            date_to=date_to,
            viewer=viewer,
        )

    def report(
        self,
        *,
        program: str | None = None,
        fiscal_year: int | str | None = None,
        viewer: str | None = None,
    ) -> Report:
        """Instances per program, province and top-level state; for programs with parallel
        states, how many instances have finished each region (by each instance's own
        program version). With a ``viewer``, of the instances its grants cover."""
        return self._queries.report(program=program, fiscal_year=fiscal_year, viewer=viewer)

    # ------------------------------------------------------------------ accounts

    @property
    def accounts(self) -> Accounts:
        """The accounts of the service on this database (people and services that log in;
        an account's name is the actor its grants apply to): ``workflow.accounts.Accounts``,
        its login throttle from the environment (``WORKFLOW_LOGIN_WINDOW``)."""
        if self._accounts is None:
            from workflow.accounts import Accounts, Throttle

            self._accounts = Accounts(self.store, throttle=Throttle.from_env())
        return self._accounts

    # ------------------------------------------------------------------ deadlines, notifications

    def tick(self, now: str | None = None) -> TickResult:
        """Record one ``overdue`` event (actor and role ``system``) per instance entry into a
        state past its due time that has none yet (``workflow.engine.deadlines``); ``now``
        (ISO 8601) for tests. Safe to run at once on several hosts."""
        from workflow.engine import deadlines

        return deadlines.tick(self.store, self._writer, self._compiled, self.registry, now)

    def on_commit(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback`` with each event a change of this Engine wrote, after its
        transaction committed (never before, never for a rolled-back change). An exception
        of the callback is logged, not raised: the change is done. Returns a function that
        removes the callback."""
        import logging

        from workflow.engine.compiled import event_of

        def listener(rows: builtins.list[Any]) -> None:
            for row in rows:
                try:
                    callback(event_of(row))
                except Exception:
                    logging.getLogger("workflow").exception("on_commit callback failed")

        self._writer.listeners.append(listener)
        return lambda: self._writer.listeners.remove(listener)

    @property
    def notifications(self) -> Notifications:
        """Hooks, the outbox and delivery (``workflow.notify``)."""
        if self._notifications is None:
            from workflow.notify import Notifications

            self._notifications = Notifications(self)
        return self._notifications

    # ------------------------------------------------------------------ audit

    def digest(self) -> Digest:
        """A commitment to the head of every instance's chain, as of now
        (``workflow.audit.verify.digest``)."""
        return _verify.digest(self.store)

    def verify(
        self, digest: Digest | Mapping[str, Any] | None = None, jobs: int | None = None
    ) -> VerifyResult:
        """Re-compute every chain and check every record against it, and against ``digest``
        if given (``workflow.audit.verify.verify``, which says what is checked; ``jobs``:
        how many processes re-hash the chains, None for one per CPU on a big database)."""
        return _verify.verify(self.store, digest, jobs)

    # ------------------------------------------------------------------ audit proofs
    # The log of every audit entry, checkpoints and proofs: workflow.audit.log and
    # workflow.audit.bundle (imported on first use: they load `cryptography`).

    def integrate_log(self) -> int:
        """Move committed audit entries into the log; return how many
        (``workflow.audit.log.integrate``)."""
        from workflow.audit import log

        return log.integrate(self.store)

    def checkpoint(self, signer: Signer, origin: str | None = None) -> str:
        """A signed checkpoint (C2SP note) of the whole log (``workflow.audit.log``)."""
        from workflow.audit import log

        return log.checkpoint(self.store, signer, origin)

    def prove(self, instance_id: int, checkpoint: str) -> dict[str, Any]:
        """A proof bundle of the instance's events to ``checkpoint``
        (``workflow.audit.bundle.prove``)."""
        from workflow.audit import bundle

        return bundle.prove(self.store, instance_id, checkpoint)

    def verify_checkpoint(
        self, checkpoint: str | bytes, public_key: Verifier | None = None
    ) -> ConsistencyResult:
        """Whether the current log extends the checkpoint's tree
        (``workflow.audit.log.verify_checkpoint``)."""
        from workflow.audit import log

        return log.verify_checkpoint(self.store, checkpoint, public_key)

    def cosign(
        self,
        checkpoint: str,
        witness: Signer,
        last: str | None = None,
        log_key: Verifier | None = None,
    ) -> str:
        """A witness's cosignature added to ``checkpoint`` (``workflow.audit.log.cosign``)."""
        from workflow.audit import log

        return log.cosign(self.store, checkpoint, witness, last, log_key)

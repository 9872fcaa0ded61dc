"""The service's one adapter to the library: every engine and accounts call goes through here.

The routes parse and render; what they ask of the engine, and as whom, is here, one library
call each: the actor is always the authenticated account (``Principal``), every change carries
how it authenticated (``auth=``, recorded under the event's hash), and every read is limited
to what the account's grants cover (``viewer=``; an admin reads everything). What only the
service decides (admin-only and auditor-only endpoints) is refused through ``Engine.deny``, so
the refusal is a chained denial like any other.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from workflow import areas as _areas
from workflow.access.policy import AUDITOR, Denial, Grant
from workflow.engine import work as _work
from workflow.engine.facade import Engine
from workflow.engine.work import WorkItem
from workflow.errors import InstanceNotFound, ProgramNotFound
from workflow.programs.model import Program
from workflow.records import Event, FireResult, Instance, Report, VerifyResult

if TYPE_CHECKING:
    from workflow.accounts import Accounts
    from workflow.engine.deadlines import TickResult
    from workflow.notify.deliver import Delivery, Hook

#: The role recorded in the denial of an admin-only request.
ADMIN_ROLE = "admin"


class Caller(Protocol):
    """What the service needs of ``workflow.accounts.Principal``."""

    @property
    def via(self) -> str: ...

    @property
    def account(self) -> Any: ...


def name_of(caller: Caller) -> str:
    return str(caller.account.name)


def is_admin(caller: Caller) -> bool:
    return bool(caller.account.admin)


# --------------------------------------------------------------------------- accounts


def accounts_of(engine: Engine) -> Accounts:
    """The accounts on the engine's database."""
    return engine.accounts


# --------------------------------------------------------------------------- scope


def grants_of(engine: Engine, caller: Caller) -> builtins.list[Grant]:
    return engine.grants(name_of(caller))


def require_admin(engine: Engine, caller: Caller, action: str) -> None:
    """Account and grant administration: the admin flag, or a recorded denial."""
    if not is_admin(caller):
        engine.deny(name_of(caller), ADMIN_ROLE, action, "only an admin account may do this")


def require_auditor(engine: Engine, caller: Caller, action: str) -> None:
    """Audit endpoints: an auditor grant or the admin flag, or a recorded denial."""
    if is_admin(caller):
        return
    if not any(g.role == AUDITOR for g in grants_of(engine, caller)):
        engine.deny(name_of(caller), AUDITOR, action, "holds no auditor grant")


def _viewer(caller: Caller) -> str | None:
    """Whose grants limit a read: the caller's, or nobody's for an admin."""
    return None if is_admin(caller) else name_of(caller)


# --------------------------------------------------------------------------- programs


def programs(engine: Engine) -> builtins.list[Program]:
    return engine.programs()


def program(engine: Engine, program_id: str, version: int | None) -> Program:
    return engine.program(program_id, version)


def diagram(
    engine: Engine, caller: Caller, program_id: str, fmt: str, lang: str, instance: int | None
) -> str:
    return engine.diagram(
        program_id, fmt=fmt, lang=lang, instance=instance, viewer=_viewer(caller)
    )


# --------------------------------------------------------------------------- changes


def start(
    engine: Engine,
    caller: Caller,
    *,
    program: str,
    area: str,
    fiscal_year: int | str,
    role: str,
    title: str | None,
    allow_duplicate: bool,
    key: str | None,
) -> Instance:
    return engine.start(
        program, area=area, fiscal_year=fiscal_year, actor=name_of(caller), role=role,
        title=title, allow_duplicate=allow_duplicate, key=key, auth=caller.via,
    )


def fire(
    engine: Engine,
    caller: Caller,
    instance: int,
    trigger: str,
    *,
    role: str,
    evidence: Mapping[str, object] | None,
    note: str | None,
    expect_version: int | None,
    key: str | None,
) -> FireResult:
    return engine.fire(
        instance, trigger, actor=name_of(caller), role=role, evidence=evidence, note=note,
        expect_version=expect_version, key=key, auth=caller.via,
    )


# --------------------------------------------------------------------------- reads


def get(engine: Engine, caller: Caller, instance: int) -> Instance:
    """The instance, with the triggers the caller may fire now (by its grants)."""
    inst = engine.get(instance, viewer=_viewer(caller))
    mine = engine.available_triggers(instance, actor=name_of(caller))
    return dataclasses.replace(inst, available_triggers=mine)


def list_instances(
    engine: Engine,
    caller: Caller,
    *,
    program: str | None,
    state: str | None,
    area: str | None,
    fiscal_year: str | None,
    limit: int,
    after: int | None,
) -> tuple[builtins.list[Instance], bool]:
    """One page of instances (oldest first, ids above ``after``); True if more follow."""
    filters: dict[str, Any] = dict(program=program, state=state, area=area,
                                   fiscal_year=fiscal_year)
    items = engine.list(**filters, viewer=_viewer(caller), limit=limit + 1, after=after)
    return items[:limit], len(items) > limit


#: The file of the log's private key the service signs checkpoints with (never in the
#: database): ``workflow audit keygen --out PREFIX`` writes PREFIX.key.
AUDIT_KEY_ENV = "WORKFLOW_AUDIT_KEY"


def _audit_signer() -> Any:
    import os

    from workflow.audit.note import NoteError, Signer
    from workflow.errors import NotFound, StorageError

    path = os.environ.get(AUDIT_KEY_ENV, "").strip()
    if not path:
        # Nothing is published (a 404), rather than a fault: signing is the operator's choice.
        raise NotFound(
            f"this server publishes no checkpoints (its operator sets {AUDIT_KEY_ENV} to the "
            "log's PREFIX.key to sign them)"
        )
    try:
        with open(path, encoding="utf-8") as f:
            return Signer.parse(f.read(64 * 1024))
    except (OSError, UnicodeError, NoteError) as e:
        raise StorageError(f"the checkpoint key {AUDIT_KEY_ENV} cannot be read ({e})") from None


def checkpoint(engine: Engine, caller: Caller) -> str:
    """The latest signed checkpoint of the log (auditors and admins, as every audit read)."""
    require_auditor(engine, caller, "audit checkpoint")
    return engine.checkpoint(_audit_signer())


def proof(engine: Engine, caller: Caller, instance: int) -> dict[str, Any]:
    """A proof bundle of an instance the caller may read, to a checkpoint signed now."""
    history(engine, caller, instance)  # refused unless the caller's grants cover it
    return engine.prove(instance, engine.checkpoint(_audit_signer()))


def history(engine: Engine, caller: Caller, instance: int) -> builtins.list[Event]:
    return engine.history(instance, viewer=_viewer(caller))


def attachment(engine: Engine, caller: Caller, instance: int, seq: int, field: str
               ) -> tuple[Mapping[str, Any], bytes]:
    """The file event ``seq`` recorded as evidence ``field`` (as corrected), re-hashed; read
    only if the caller's grants cover the instance (``workflow attachments get``)."""
    return engine.attachment(instance, seq, field, viewer=_viewer(caller))


def event(engine: Engine, caller: Caller, instance: int, seq: int) -> Event:
    for e in history(engine, caller, instance):
        if e.seq == seq:
            return e
    raise InstanceNotFound(f"{instance} event {seq}")


AuditCursor = tuple[str, int, int]  # (at, instance or 0 for a grant event, seq or id)


def _audit_key(e: Event) -> AuditCursor:
    return (e.at, e.instance or 0, e.seq if e.instance is not None else e.id)


def audit_log(
    engine: Engine,
    caller: Caller,
    *,
    actor: str | None,
    program: str | None,
    area: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    after: AuditCursor | None,
) -> tuple[builtins.list[Event], bool]:
    require_auditor(engine, caller, "audit log")
    events = engine.audit_log(actor=actor, program=program, area=area, since=since,
                              until=until, viewer=_viewer(caller))
    if after is not None:
        for i, e in enumerate(events):
            if _audit_key(e) == after:
                events = events[i + 1:]
                break
        else:
            events = [e for e in events if e.at > after[0]]
    page = events[: limit + 1]
    return page[:limit], len(page) > limit


def audit_cursor(e: Event) -> AuditCursor:
    return _audit_key(e)


def report(
    engine: Engine, caller: Caller, *, program: str | None, fiscal_year: str | None
) -> Report:
    return engine.report(program=program, fiscal_year=fiscal_year, viewer=_viewer(caller))


def denials(engine: Engine, caller: Caller) -> builtins.list[Denial]:
    require_auditor(engine, caller, "audit denials")
    return engine.denials(viewer=_viewer(caller))


def verify(engine: Engine, caller: Caller) -> VerifyResult:
    require_auditor(engine, caller, "audit verify")
    return engine.verify()


def digest(engine: Engine, caller: Caller) -> dict[str, Any]:
    require_auditor(engine, caller, "audit digest")
    return engine.digest().to_dict()


# --------------------------------------------------------------------------- grants


def grants(engine: Engine, caller: Caller, actor: str | None) -> builtins.list[Grant]:
    require_admin(engine, caller, "list grants")
    return engine.grants(actor)


def grant(engine: Engine, caller: Caller, actor: str, role: str, area: str | None,
          program: str | None, until: str | None = None) -> Grant:
    """``actors grant``; ``until`` (a date, CE or BE) ends the grant at the end of that day."""
    require_admin(engine, caller, "grant")
    return engine.grant(actor, role, area=area, program=program, by=name_of(caller),
                        until=until)


def revoke(engine: Engine, caller: Caller, actor: str, role: str, area: str | None,
           program: str | None) -> Grant:
    require_admin(engine, caller, "revoke")
    return engine.revoke(actor, role, area=area, program=program, by=name_of(caller))


def me(engine: Engine, caller: Caller) -> dict[str, Any]:
    account = caller.account
    return {
        "name": account.name,
        "display_name": account.display_name,
        "admin": bool(account.admin),
        "language": getattr(account, "language", None),
        "grants": [g.to_dict() for g in grants_of(engine, caller)],
    }


# --------------------------------------------------------------------------- web pages


def definition(engine: Engine, caller: Caller, instance: Instance) -> Program:
    """The program version ``instance`` runs on (the caller has read it already)."""
    del caller
    try:
        return engine.program(instance.program, instance.program_version)
    except ProgramNotFound:
        return engine.definition_of(instance.id)


def my_work(
    engine: Engine,
    caller: Caller,
    *,
    program: str | None,
    state: str | None,
    area: str | None,
    fiscal_year: str | int | None,
) -> builtins.list[WorkItem]:
    """The instances where the caller can fire something now (``workflow.engine.work``)."""
    return _work.my_work(engine, name_of(caller), program=program, state=state, area=area,
                         fiscal_year=fiscal_year)


def actions(
    engine: Engine, caller: Caller, instance: Instance, program: Program
) -> dict[str, tuple[str, ...]]:
    """Per trigger the caller may fire on ``instance`` now, the roles they may fire it as
    (``instance`` as :func:`get` returns it)."""
    return _work.roles_for(engine, program, instance, name_of(caller),
                           grants_of(engine, caller))


def start_many(
    engine: Engine,
    caller: Caller,
    *,
    program: str,
    district: str,
    fiscal_year: int | str,
    role: str,
) -> tuple[builtins.list[int], int]:
    """Start ``program`` for every tambon of a district (skipping those already running it);
    returns the new ids and how many tambons the district has."""
    areas = _areas.tambons_within(district)
    ids = engine.start_many(program, areas=areas, fiscal_year=fiscal_year,
                            actor=name_of(caller), role=role)
    return ids, len(areas)


def audit_events(
    engine: Engine,
    caller: Caller,
    *,
    actor: str | None,
    program: str | None,
    area: str | None,
    since: str | None,
    until: str | None,
    date_from: str | None,
    date_to: str | None,
    limit: int | None,
) -> builtins.list[Event]:
    """The audit log with the web's filters (recorded time and activity date)."""
    require_auditor(engine, caller, "audit log")
    return engine.audit_log(actor=actor, program=program, area=area, since=since, until=until,
                            date_from=date_from, date_to=date_to, limit=limit,
                            viewer=_viewer(caller))


# --------------------------------------------------------------------------- accounts (admin)
# ``accounts`` is the service's (``app.state.accounts``): the engine's, unless the app was
# built with another (the tests' cheap password hashing).


def accounts_list(engine: Engine, accounts: Accounts, caller: Caller) -> builtins.list[Any]:
    require_admin(engine, caller, "list accounts")
    return accounts.list()


def account_add(engine: Engine, accounts: Accounts, caller: Caller, name: str, password: str,
                *, admin: bool, display_name: str | None) -> Any:
    require_admin(engine, caller, "add account")
    return accounts.add(name, password, by=name_of(caller), admin=admin,
                        display_name=display_name)


def account_disable(engine: Engine, accounts: Accounts, caller: Caller, name: str,
                    disabled: bool) -> Any:
    require_admin(engine, caller, "disable account" if disabled else "enable account")
    if disabled:
        return accounts.disable(name, by=name_of(caller))
    return accounts.enable(name, by=name_of(caller))


def account_password(engine: Engine, accounts: Accounts, caller: Caller, name: str,
                     password: str) -> None:
    require_admin(engine, caller, "reset password")
    accounts.set_password(name, password, by=name_of(caller))


def tokens_list(engine: Engine, accounts: Accounts, caller: Caller) -> builtins.list[Any]:
    require_admin(engine, caller, "list tokens")
    return accounts.tokens()


def token_create(engine: Engine, accounts: Accounts, caller: Caller, name: str,
                 label: str | None, expires: str | None) -> Any:
    require_admin(engine, caller, "create token")
    return accounts.create_token(name, by=name_of(caller), label=label, expires=expires)


def token_revoke(engine: Engine, accounts: Accounts, caller: Caller, token_id: int) -> Any:
    require_admin(engine, caller, "revoke token")
    return accounts.revoke_token(token_id, by=name_of(caller))


# --------------------------------------------------------------------------- evolution (issue 13)


def comment(engine: Engine, caller: Caller, instance: int, *, role: str, text: str
            ) -> FireResult:
    return engine.comment(instance, actor=name_of(caller), role=role, text=text,
                          auth=caller.via)


def correct(engine: Engine, caller: Caller, instance: int, seq: int, *, role: str,
            reason: str, evidence: Mapping[str, object] | None, note: object) -> FireResult:
    return engine.correct(instance, seq, actor=name_of(caller), role=role, reason=reason,
                          evidence=evidence, note=note, auth=caller.via)


def revert(engine: Engine, caller: Caller, instance: int, *, role: str, reason: str,
           expect_version: int | None) -> FireResult:
    return engine.revert(instance, actor=name_of(caller), role=role, reason=reason,
                         expect_version=expect_version, auth=caller.via)


def migrate(engine: Engine, caller: Caller, program: str, to_version: int, *, role: str,
            from_version: int | None, mapping: Mapping[str, str], area: str | None,
            fiscal_year: int | str | None, state: str | None, dry_run: bool) -> Any:
    """A migration as the caller; a dry run shows only the instances the caller may read."""
    result = engine.migrate(
        program, to_version, actor=name_of(caller), role=role, from_version=from_version,
        mapping=mapping, area=area, fiscal_year=fiscal_year, state=state, dry_run=dry_run,
        auth=caller.via,
    )
    viewer = _viewer(caller)
    if dry_run and viewer is not None:
        seen = {i.id for i in engine.list(program=program, viewer=viewer)}
        result = dataclasses.replace(result, items=tuple(i for i in result.items if i.id in seen))
    return result


def mending(
    engine: Engine, caller: Caller, instance: Instance, program: Program
) -> dict[str, tuple[str, ...]]:
    """Per mending operation (comment, correct, revert), the roles the caller may use on
    ``instance`` (``workflow.engine.work.mending_roles``)."""
    return _work.mending_roles(engine, program, instance, name_of(caller),
                               grants_of(engine, caller))


#: The largest digest file the pages take (a digest is ~100 bytes per instance).
DIGEST_UPLOAD_LIMIT = 32 * 1024 * 1024


def verify_digest(engine: Engine, caller: Caller, content: bytes, name: str = "digest.json"
                  ) -> VerifyResult:
    """``workflow audit verify --digest FILE`` for an uploaded file's ``content``: read and
    checked exactly as the CLI reads its file (``workflow.audit.chain.read_digest``; a bad file
    is a UsageError naming ``name``), then verify against it."""
    import tempfile
    from pathlib import Path

    from workflow.audit.chain import read_digest
    from workflow.errors import UsageError

    require_auditor(engine, caller, "audit verify")
    with tempfile.TemporaryDirectory(prefix="workflow-digest-") as folder:
        path = Path(folder) / "digest.json"
        path.write_bytes(content)
        try:
            digest = read_digest(path, DIGEST_UPLOAD_LIMIT)
        except UsageError as e:
            raise UsageError(str(e).replace(str(path), name)) from None
    return engine.verify(digest)


# ----------------------------------------------------------------- deadlines, notifications
# (issue 15; CONTRACT §10): admins only, as `workflow tick`, `hooks` and `outbox` are the
# operator's. A secret goes to the library and nowhere else: never into a result or a log.


def tick(engine: Engine, caller: Caller, now: str | None) -> TickResult:
    require_admin(engine, caller, "tick")
    return engine.tick(now)


def hooks(engine: Engine, caller: Caller) -> builtins.list[Hook]:
    require_admin(engine, caller, "list hooks")
    return engine.notifications.hooks()


def hook_add(engine: Engine, caller: Caller, url: str, *, program: str | None,
             trigger: str | None, secret: str | None) -> Hook:
    require_admin(engine, caller, "add hook")
    return engine.notifications.add_hook(url, program=program, trigger=trigger, secret=secret)


def hook_remove(engine: Engine, caller: Caller, hook_id: int) -> Hook:
    require_admin(engine, caller, "remove hook")
    return engine.notifications.remove_hook(hook_id)


def outbox(engine: Engine, caller: Caller, *, dead: bool, limit: int, after: int | None
           ) -> tuple[builtins.list[Delivery], bool]:
    """One page of undelivered (or only dead) deliveries, oldest first; True if more follow."""
    require_admin(engine, caller, "list outbox")
    items = engine.notifications.outbox(dead=dead, limit=limit + 1, after=after)
    return items[:limit], len(items) > limit


def outbox_retry(engine: Engine, caller: Caller, delivery_id: int) -> Delivery:
    require_admin(engine, caller, "retry delivery")
    return engine.notifications.retry(delivery_id)

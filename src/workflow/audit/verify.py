"""Verify and digest: re-compute the whole audit trail from a bare ``Store``.

An auditor needs no ``Engine``, no registry and no program files to check a database: every
fact verify relies on is stored (the events and their chains, the instance rows, the stored
definition texts and their hashes, the grant events, the denials, the idempotency records).
So :func:`verify` and :func:`digest` take a ``Store`` and nothing else; ``Engine.verify`` and
``Engine.digest`` only delegate, and a service or a standalone audit tool calls them the same
way. The hashing itself is ``chain.py``'s; what is checked beyond the chains (the instance rows
against their last events, each event against the grant its actor held at that moment, the
idempotency records against the events they name) lives here.

Nothing stored is trusted to be well-formed: a malformed value is a problem of its instance
and seq, and the scan goes on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from workflow.access.policy import AUDITOR, StoredGrants
from workflow.audit import accounts as _accounts_audit
from workflow.audit import chain as _audit
from workflow.audit import evolution as _evolution
from workflow.audit.chain import Chain, Digest
from workflow.errors import DatabaseUnavailable, UsageError
from workflow.records import NonBundled, VerifyProblem, VerifyResult
from workflow.runtime import attachments as _files
from workflow.storage import accounts as _accounts_store
from workflow.storage import attachments as _stored_files
from workflow.storage.store import InstanceRow, KeyRow, Store


def _verify_grants(
    store: Store, conn: Any, digest: Digest | None
) -> tuple[list[VerifyProblem], _Timeline | None]:
    """Re-compute the grant chain, replay it in order against the grants in force, and
    return what it says each actor held when (None if the chain itself is broken)."""
    held: dict[tuple[str, str, str, str], tuple[str, str, str | None]] = {}
    timeline: _Timeline = {}
    open_grants: dict[tuple[str, str, str, str], list[Any]] = {}
    prev, expected, last_at = _audit.GENESIS, 1, ""
    hashes: dict[int, str] = {}
    for row in store.grant_events(conn):
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
            until = _grant_until(row.scope)
            held[item] = (row.by, row.at, until)
            if item in open_grants:  # granted again (renewed): the earlier one ends now
                earlier = open_grants.pop(item)
                earlier[3] = row.at if earlier[3] is None else min(earlier[3], row.at)
            # An expiring grant covers nothing from its end on.
            interval: list[Any] = [item[2], item[3], row.at, until]
            open_grants[item] = interval
            timeline.setdefault((item[0], item[1]), []).append(interval)
        else:
            held.pop(item, None)
            if item in open_grants:
                ended = open_grants.pop(item)
                ended[3] = row.at if ended[3] is None else min(ended[3], row.at)
        prev, expected, last_at = row.hash, row.seq + 1, row.at
    stored = {
        (g.actor, g.role, g.area_code, g.program): (g.granted_by, g.granted_at, g.expires_at)
        for g in store.all_grants(conn)
    }
    problems: list[VerifyProblem] = []
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


def _verify_denials(store: Store, conn: Any, digest: Digest | None) -> list[VerifyProblem]:
    """Re-compute the denials' chain; with a digest, check its head is still there."""
    prev, expected, last_at = _audit.GENESIS, 1, ""
    wanted = digest.denials[0] if digest is not None and digest.denials else 0
    seen = None
    for row in store.stream_denials(conn):
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


def _verify_accounts(conn: Any, digest: Digest | None) -> list[VerifyProblem]:
    """Re-compute the account chain (with a digest, check its head is still there), then
    hold the accounts and tokens in force to what the chain recorded."""
    rows = _accounts_store.account_events(conn)
    head = digest.accounts if digest is not None else None
    problems = _accounts_audit.chain_problems(rows, head)
    if problems:
        return problems
    return _accounts_audit.state_problems(
        rows, _accounts_store.all_accounts(conn), _accounts_store.list_tokens(conn)
    )


def digest(store: Store) -> Digest:
    """A commitment to the head of every instance's chain, as of now."""
    heads: dict[str, tuple[int, str]] = {}
    with store.snapshot() as conn:
        taken = _audit.now_utc()
        head = store.grant_head(conn)
        grants = (head.seq, head.hash) if head else (0, _audit.GENESIS)
        denial = store.denial_head(conn)
        denials = (denial.seq or 0, denial.hash) if denial else (0, _audit.GENESIS)
        keys = _audit.keys_hash(store.stream_keys(conn))
        account = _accounts_store.account_head(conn)
        accounts = (account.seq, account.hash) if account else (0, _audit.GENESIS)
        for row in store.stream_instances(conn):
            heads[str(row.id)] = (row.version, row.head_hash)
    return Digest(
        instances=len(heads),
        events=sum(s for s, _ in heads.values()),
        root=Digest.root_of(heads, grants, denials, keys, accounts),
        heads=heads,
        taken_at=taken,
        grants=grants,
        denials=denials,
        keys=keys,
        accounts=accounts,
    )


def verify(store: Store, digest: Digest | Mapping[str, Any] | None = None) -> VerifyResult:
    """Re-compute every chain (events, grant events, denials, account events) and check
    the accounts and tokens against theirs, each instance
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

    try:
        return _verify(store, digest, lenient=False)
    except DatabaseUnavailable as e:
        if not store.is_undecodable(e):
            raise
        # SQLite TEXT that is not UTF-8: read again, such values becoming problems.
        return _verify(store, digest, lenient=True)


def _verify(store: Store, digest: Digest | None, lenient: bool) -> VerifyResult:
    problems: list[VerifyProblem] = []
    events = instances = 0
    wanted = {int(k): s for k, (s, _) in digest.heads.items()} if digest else {}
    found: dict[int, tuple[int, str]] = {}
    with store.snapshot(lenient) as conn:
        definitions = {d.id: d for d in store.all_definitions(conn)}
        for d in definitions.values():
            try:
                intact = hashlib.sha256(d.source_text.encode("utf-8")).hexdigest() == d.content_hash
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
        grant_problems, timeline = _verify_grants(store, conn, digest)
        problems.extend(grant_problems)
        keys = list(store.stream_keys(conn))
        checks = _EventChecks(timeline, keys)
        checks.stored_hashes = frozenset(d.content_hash for d in definitions.values())
        pairs = _audit.merge_by_instance(
            store.stream_instances(conn),
            _audit.chains(store.stream_events(conn), wanted, found, checks),
        )
        for inst, chain in pairs:
            if chain is not None:
                events += chain.events
            if inst is not None:
                instances += 1
            try:
                evolved = checks.evolved.pop(chain.instance, None) if chain else None
                problem = _check_instance(inst, chain, definitions, evolved)
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
        problems.extend(checks.file_problems(store, conn))
        problems.extend(_verify_denials(store, conn, digest))
        problems.extend(_verify_accounts(conn, digest))
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
        non_bundled = tuple(NonBundled(*row) for row in store.non_bundled_instances(conn))
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
                    VerifyProblem(int(key), seq, "event differs from the one the digest covered")
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
_Timeline = dict[tuple[str, str], list[list[Any]]]


class _EventChecks:
    """verify's per-event checks beyond the chain: the actor's grant at that moment, and the
    idempotency records naming the event (see :func:`verify`)."""

    def __init__(self, timeline: _Timeline | None, keys: Sequence[KeyRow]) -> None:
        self.timeline = timeline
        self.keys: dict[tuple[Any, Any], list[KeyRow]] = {}
        for k in keys:
            self.keys.setdefault((k.instance_id, k.seq), []).append(k)
        self.seen: set[tuple[Any, Any]] = set()
        self.bad_keys: list[VerifyProblem] = []
        self._scope: tuple[Any, str | None, str | None] = (None, None, None)
        #: (instance, seq, field, sha256, bytes) of every file evidence names.
        self.files: list[tuple[Any, Any, str, str, int]] = []
        #: The definition hashes stored (a migration must name one of them).
        self.stored_hashes: frozenset[str] | None = None
        #: instance -> (program version, definition hash) after its last start or migration.
        self.evolved: dict[Any, tuple[int | None, str | None]] = {}
        self._amendments: tuple[Any, _evolution.Amendments] = (None, _evolution.Amendments())

    def __call__(self, chain: Chain, row: tuple[Any, ...]) -> str | None:
        amended = self._amended(chain, row)
        granted = self._granted(chain, row)
        evidence = row[10]
        if isinstance(evidence, str) and '"sha256"' in evidence:
            self._files(row[1], row[2], evidence)
        return amended or granted

    def _files(self, instance: Any, seq: Any, evidence: str) -> None:
        """Note the files an event's evidence names (re-hashed after the scan)."""
        try:
            value = json.loads(evidence)
        except ValueError:
            return
        if not isinstance(value, dict):
            return
        if isinstance(value.get("changes"), dict):  # a correction: its new values
            value = {k: c.get("new") for k, c in value["changes"].items() if isinstance(c, dict)}
        for name, described in _files.references(value):
            self.files.append((instance, seq, name, described["sha256"], described["bytes"]))

    def file_problems(self, store: Store, conn: Any) -> list[VerifyProblem]:
        """Each named file re-hashed: missing or changed ones, by the event naming them."""
        out, seen = [], {}
        for instance, seq, name, sha256, size in self.files:
            if sha256 not in seen:
                seen[sha256] = _stored_files.problem(store, conn, sha256, size)
            if seen[sha256] is not None:
                out.append(
                    VerifyProblem(
                        instance if type(instance) is int else None,
                        seq if type(seq) is int else None,
                        f"evidence {name}: {seen[sha256]}",
                    )
                )
        return out

    def _amended(self, chain: Chain, row: tuple[Any, ...]) -> str | None:
        """What the workflow.audit.evolution replay says of the row (corrections, reverts,
        migrations), and the definition the instance runs on after it."""
        if self._amendments[0] != chain.instance:
            self._amendments = (
                chain.instance,
                _evolution.Amendments(stored_hashes=self.stored_hashes),
            )
        replay = self._amendments[1]
        try:
            reason = replay.add(row)
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            reason = f"a stored value is malformed ({type(e).__name__})"
        self.evolved[chain.instance] = (replay.program_version, replay.definition_hash)
        return reason

    def _granted(self, chain: Chain, row: tuple[Any, ...]) -> str | None:
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

    def key_problems(self) -> list[VerifyProblem]:
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


def _grant_until(scope: object) -> str | None:
    """The end a grant event's scope records (``until``), or None."""
    try:
        until = json.loads(scope).get("until")  # type: ignore[arg-type]
    except (ValueError, TypeError, AttributeError):
        return None
    return until if isinstance(until, str) else None


def _grant_item(scope: object) -> tuple[str, str, str, str] | None:
    """(actor, role, area, program) of a grant event's scope ('' for everywhere / all)."""
    try:
        data = json.loads(scope)  # type: ignore[arg-type]
        item = (data["actor"], data["role"], data["area"] or "", data["program"] or "")
    except (ValueError, KeyError, TypeError):
        return None
    return item if all(isinstance(v, str) for v in item) else None


def _check_instance(
    inst: InstanceRow | None,
    chain: _audit.Chain | None,
    definitions: Mapping[int, Any],
    evolved: tuple[int | None, str | None] | None = None,
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
    # A migrated instance runs on the version its last migrate event moved it to.
    version, definition_hash = evolved or (identity.get("program_version"), None)
    if version != inst.program_version:
        return VerifyProblem(
            inst.id, 0, "instance program_version differs from its start and migrate events"
        )
    expected = {
        "program": inst.program,
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
    if definition_hash is not None and definition_hash != definition.content_hash:
        return VerifyProblem(
            inst.id,
            0,
            "the instance's definition is not the one its last start or migrate event names",
        )
    if evolved is None and chain.definition_hashes != {definition.content_hash}:
        return VerifyProblem(
            inst.id,
            0,
            "events were recorded under a different definition "
            "than the one stored for this instance",
        )
    return None


def _configuration(text: object) -> list[str] | None:
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

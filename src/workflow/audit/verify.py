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

import bisect
import collections
import contextlib
import hashlib
import itertools
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from workflow.audit import accounts as _accounts_audit
from workflow.audit import chain as _audit
from workflow.audit.chain import Digest
from workflow.audit.scan import EventChecks as _EventChecks
from workflow.audit.scan import Scanned as _Scanned
from workflow.audit.scan import Timeline as _Timeline
from workflow.audit.scan import head_line as _head_line
from workflow.audit.scan import scan as _scan
from workflow.errors import DatabaseUnavailable, UsageError, WorkflowError
from workflow.records import NonBundled, VerifyProblem, VerifyResult
from workflow.storage import accounts as _accounts_store
from workflow.storage import attachments as _stored_files
from workflow.storage.store import KeyRow, Store


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


def verify(
    store: Store,
    digest: Digest | Mapping[str, Any] | None = None,
    jobs: int | None = None,
) -> VerifyResult:
    """Re-compute every chain (events, grant events, denials, account events) and check
    the accounts and tokens against theirs, each instance
    against its last event, each event against the grants its actor held at that moment
    (for events the stored-grants policy allowed) and each idempotency record against the
    event it names; with a ``digest``, also check that everything it covered is still
    there, unchanged.

    Nothing stored is trusted to be well-formed: a malformed value is a problem of its
    instance and seq, and the scan goes on.

    ``jobs``: how many processes (this one included) re-hash the instances' chains, each
    over a range of instance ids (1: all in this process; None, ``--jobs auto``: one per
    CPU when the database is big enough to be worth starting them, see
    :data:`PARALLEL_FROM`). The answer is the same
    whatever ``jobs`` is (see :class:`_Workers` for how the processes read one moment)."""
    if digest is not None and not isinstance(digest, Digest):
        try:
            digest = Digest.from_dict(digest)
        except ValueError as e:
            raise UsageError(str(e)) from None
    if jobs is not None and jobs < 1:
        raise UsageError(f"jobs must be at least 1, not {jobs}")
    workers = _Workers.start(store, jobs)
    try:
        lenient = False
        while True:
            try:
                for _attempt in range(_ATTEMPTS):
                    result = _verify(store, digest, lenient, workers)
                    if result is not None:
                        return result
                # Commits kept landing between the snapshots: one process, one snapshot.
                result = _verify(store, digest, lenient, None)
                assert result is not None
                return result
            except _Undecodable:
                if lenient:
                    raise DatabaseUnavailable(store.safe_url, "undecodable text") from None
                lenient = True
            except DatabaseUnavailable as e:
                if lenient or not store.is_undecodable(e):
                    raise
                # SQLite TEXT that is not UTF-8: read again, such values becoming problems.
                lenient = True
    finally:
        if workers is not None:
            workers.stop()


def _verify(
    store: Store, digest: Digest | None, lenient: bool, parallel: _Workers | None
) -> VerifyResult | None:
    """One verify over one snapshot; None if the parallel workers could not be shown to
    have read the same moment as this process (then the caller runs it again)."""
    problems: list[VerifyProblem] = []
    wanted = {int(k): s for k, (s, _) in digest.heads.items()} if digest else {}
    with store.snapshot(lenient) as conn:
        if parallel is not None:
            parallel.begin(conn, lenient)
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
        stored_hashes = frozenset(d.content_hash for d in definitions.values())
        if parallel is not None:
            got = parallel.scan(conn, definitions, timeline, keys, stored_hashes, wanted)
            if got is None:
                return None  # something committed between the snapshots: run again
            scanned = got
        else:
            scanned = _scan(
                store.stream_instances(conn),
                store.stream_event_tuples(conn),
                definitions,
                _EventChecks(timeline, keys, stored_hashes),
                wanted,
            )
        events, instances, found = scanned.events, scanned.instances, scanned.found
        problems.extend(scanned.problems)
        problems.extend(scanned.bad_keys)
        problems.extend(_missing_keys(keys, scanned.seen))
        problems.extend(_file_problems(store, conn, scanned.files))
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


def _int_or_none(value: object) -> int | None:
    return value if type(value) is int else None


def _missing_keys(keys: Sequence[KeyRow], seen: set[tuple[Any, Any]]) -> list[VerifyProblem]:
    """Idempotency records naming an event the scan never met, in the records' order."""
    return [
        VerifyProblem(
            k.instance_id if type(k.instance_id) is int else None,
            k.seq if type(k.seq) is int else None,
            f"idempotency key {k.key!r} names an event that does not exist",
        )
        for k in keys
        if (k.instance_id, k.seq) not in seen
    ]


def _file_problems(
    store: Store, conn: Any, files: Sequence[tuple[Any, Any, str, str, int]]
) -> list[VerifyProblem]:
    """Each named file re-hashed: missing or changed ones, by the event naming them."""
    out, seen = [], {}
    for instance, seq, name, sha256, size in files:
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


# ----------------------------------------------------------------------------- in parallel

#: ``verify(jobs=None)`` starts worker processes only from this many instances on (below,
#: starting them costs more than they save).
PARALLEL_FROM = 10_000
#: Instance ranges per process: handed out as processes free up, so one that gets less CPU
#: (a shared machine) holds the others up by one range at most. The last ranges are cut
#: smaller and smaller (:func:`_cuts`), so that the processes also finish close together.
RANGES_PER_JOB = 32
#: Ranges a worker holds at once (the next one queued while it scans one).
_AHEAD = 2
#: How many times a parallel verify is tried before falling back to one process (SQLite:
#: a commit landed between the coordinator's snapshot and a worker's).
_ATTEMPTS = 3


class _Undecodable(Exception):
    """A worker met SQLite TEXT that is not UTF-8: verify again, leniently."""


class _Workers:
    """Worker processes re-hashing the chains of instance-id ranges for one verify.

    ``jobs`` processes (the coordinator, i.e. the calling process, and ``jobs - 1`` workers:
    one per CPU by default) scan :data:`RANGES_PER_JOB` ranges of instance ids each, handed
    out as they free up (see :meth:`scan`). The coordinator also keeps
    everything global: the definitions, the grant chain (the timeline each event's grant is
    checked against), the idempotency records, denials, accounts, attachments and the
    digest. Each worker streams the instances and events of its range, runs the same
    per-instance checks (:func:`_scan`; a worker is ``workflow.audit.scan``, reading through
    the bare driver, ``workflow.storage.scan``) and sends back its problems, counts and what the
    coordinator needs to finish (the events idempotency records name, the files evidence
    names, the digest's heads); the coordinator puts them together in range order, which is
    the serial order, so the answer does not depend on the number of processes.

    One moment: on PostgreSQL the coordinator exports its snapshot (``pg_export_snapshot``)
    and every worker reads under it (``SET TRANSACTION SNAPSHOT``): exactly the same view.
    SQLite cannot share a snapshot, so each worker opens its read transaction right after
    the coordinator's (the workers are started and connected beforehand; the window is the
    time to send them a message), and the coordinator then checks that each worker read
    the same instance rows (id, version, head hash) it reads itself in its own snapshot.
    Every commit that adds events moves its instance's version and head, so equal heads
    mean the worker's view of its range is the coordinator's; if they differ the result is
    thrown away and verify runs again (:data:`_ATTEMPTS`, then in one process).
    """

    def __init__(self, store: Store, processes: list[Any], pipes: list[Any]) -> None:
        self.store = store
        self.processes = processes
        self.pipes = pipes
        self.ranges: list[tuple[int | None, int | None]] = []
        #: Whether the workers' answers to the last ``begin`` are still to be read.
        self._unready = False

    @classmethod
    def start(cls, store: Store, jobs: int | None) -> _Workers | None:
        """Workers for ``store``, or None when verify should run in this process."""
        if jobs == 1:
            return None
        if not (
            (store.is_sqlite and store.sqlite_path is not None) or store.dialect == "postgresql"
        ):
            return None  # an in-memory database has nothing another process could read
        if jobs is None:
            jobs = _cpus()
            if jobs < 2:
                return None
            try:
                with store.snapshot() as conn:
                    count = conn.exec_driver_sql("SELECT count(*) FROM workflow_instances")
                    if (count.scalar() or 0) < PARALLEL_FROM:
                        return None
            except DatabaseUnavailable:
                return None  # let the serial path report it
        # Fresh interpreters (not fork: the caller may be a threaded server), started with
        # `python -c` rather than multiprocessing's spawn, which would re-run the caller's
        # main module; they talk over a socket pair (the URL, which may hold a password,
        # goes through it rather than the command line). This process is the first job.
        try:
            source = store.scan_source()
        except DatabaseUnavailable:
            return None
        processes, pipes = [], []
        code = "from workflow.audit.scan import worker_main; worker_main()"
        for _ in range(jobs - 1):
            mine, theirs = socket.socketpair()
            p = subprocess.Popen(
                [sys.executable, "-c", code, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
            theirs.close()
            pipe = Connection(mine.detach())
            pipe.send(source)
            processes.append(p)
            pipes.append(pipe)
        return cls(store, processes, pipes)

    def begin(self, conn: Any, lenient: bool) -> None:
        """Have the workers open their snapshots now, as close as can be to ``conn``'s, and
        cut the instances into ranges (:func:`_cuts`).

        The workers' answers (``ready``) are read by :meth:`scan`: a worker that is still
        starting (its imports, its connection) does so while this process cuts the ranges
        and reads the definitions, the grants and the idempotency records."""
        if self._unready:  # the last begin's answers, never read (its verify failed before)
            self._unready = False
            for pipe in self.pipes:
                with contextlib.suppress(EOFError):
                    pipe.recv()
        shared = self.store.export_snapshot(conn)
        for pipe in self.pipes:
            pipe.send(("begin", lenient, shared))
        self._unready = True
        bounds = self.store.instance_bounds(conn, _cuts(len(self.pipes) + 1))
        edges: list[int | None] = [None, *bounds, None]
        self.ranges = list(itertools.pairwise(edges))

    def scan(
        self,
        conn: Any,
        definitions: Mapping[int, Any],
        timeline: _Timeline | None,
        keys: Sequence[KeyRow],
        stored_hashes: frozenset[str],
        wanted: Mapping[int, int],
    ) -> _Scanned | None:
        """Every range scanned, by this process or a worker, and put together in range
        order; None if a worker's view differs from ``conn``'s (SQLite: a commit fell
        between the snapshots).

        Ranges are handed out as processes free up (each worker holds :data:`_AHEAD` at a
        time, this process takes the next one itself): on a machine whose cores are shared,
        a process that gets less CPU scans fewer ranges instead of holding everyone up."""
        if self._unready:
            self._unready = False
            self._receive_all("ready")
        lows = [_audit.sort_key(lo) for lo, _ in self.ranges[1:]]
        key_parts: list[list[KeyRow]] = [[] for _ in self.ranges]
        for k in keys:
            key_parts[bisect.bisect_right(lows, _audit.sort_key(k.instance_id))].append(k)
        wanted_parts: list[dict[int, int]] = [{} for _ in self.ranges]
        for ident, seq in wanted.items():
            wanted_parts[bisect.bisect_right(lows, _audit.sort_key(ident))][ident] = seq
        parts: list[_Scanned | None] = [None] * len(self.ranges)
        todo = collections.deque(range(len(self.ranges)))
        owed: list[collections.deque[int]] = [collections.deque() for _ in self.pipes]
        failures: list[Any] = []
        by_worker: set[int] = set()
        #: Ranges a worker scanned whose heads this process has compared with its own.
        checked: set[int] = set()
        stale = False  # a worker read a range otherwise than this process does

        def give(w: int) -> None:
            i = todo.popleft()
            lo, hi = self.ranges[i]
            self.pipes[w].send(("scan", lo, hi, key_parts[i], wanted_parts[i]))
            owed[w].append(i)
            by_worker.add(i)

        def take(w: int) -> None:
            try:
                message = self.pipes[w].recv()
            except (EOFError, OSError):
                message = ("ended", None)
            i = owed[w].popleft()
            if message[0] == "done":
                parts[i] = message[1]
            elif message[0] != "skipped":  # skipped: the worker failed a range before
                failures.append(message)
                todo.clear()
            if message[0] == "ended":
                owed[w].clear()

        try:
            defs = dict(definitions)
            for pipe in self.pipes:
                pipe.send(("context", defs, timeline, stored_hashes))
            for _ in range(_AHEAD):
                for w in range(len(self.pipes)):
                    if todo:
                        give(w)
            while todo:
                i = todo.popleft()
                lo, hi = self.ranges[i]
                parts[i] = _scan(
                    self.store.stream_instances(conn, lo, hi),
                    self.store.stream_event_tuples(conn, lo, hi),
                    definitions,
                    _EventChecks(timeline, key_parts[i], stored_hashes),
                    wanted_parts[i],
                )
                for w in range(len(self.pipes)):
                    while owed[w] and self.pipes[w].poll():
                        take(w)
                        if todo:
                            give(w)
            # This process's ranges are done: while the workers finish theirs, check those
            # they answered (SQLite), rather than wait and check them all afterwards.
            while any(owed):
                for w in range(len(self.pipes)):
                    while owed[w] and self.pipes[w].poll():
                        take(w)
                answered = [j for j in sorted(by_worker - checked) if parts[j] is not None]
                if answered and self.store.is_sqlite:
                    j = answered[0]
                    part = parts[j]
                    assert part is not None
                    stale = stale or not self._same_heads(conn, j, part)
                    checked.add(j)
                elif any(owed):
                    wait([p for w, p in enumerate(self.pipes) if owed[w]])
        finally:
            # Whatever happened here, every answer owed is read and each worker leaves its
            # snapshot, so the next verify (or attempt) starts in step.
            with contextlib.suppress(OSError, EOFError):
                for w in range(len(self.pipes)):
                    while owed[w]:
                        take(w)
                for pipe in self.pipes:
                    pipe.send(("end",))
        if failures:
            self._answer(failures[0], "done")  # raises
        assert all(part is not None for part in parts)
        done = [part for part in parts if part is not None]
        if self.store.is_sqlite:
            for i in sorted(by_worker - checked):
                stale = stale or not self._same_heads(conn, i, done[i])
        if stale:
            return None
        out = _Scanned()
        for part in done:
            out.events += part.events
            out.instances += part.instances
            out.problems.extend(part.problems)
            out.bad_keys.extend(part.bad_keys)
            out.seen |= part.seen
            out.files.extend(part.files)
            out.found.update(part.found)
        return out

    def _same_heads(self, conn: Any, i: int, part: _Scanned) -> bool:
        """Whether the instance rows (id, version, head hash) of range ``i`` are, in
        ``conn``'s snapshot, the ones the worker that scanned it read in its own."""
        lo, hi = self.ranges[i]
        heads = hashlib.sha256()
        for ident, version, head in self.store.stream_heads(conn, lo, hi):
            heads.update(_head_line(ident, version, head))
        return heads.hexdigest() == part.heads

    def _receive_all(self, expected: str) -> list[Any]:
        """Every worker's answer (all of them read first: a worker whose answer is left
        unread would hand it to the next verify), or what the first failure says."""
        messages = []
        for pipe in self.pipes:
            try:
                messages.append(pipe.recv())
            except EOFError:
                messages.append(("ended", None))
        return [self._answer(message, expected) for message in messages]

    def _answer(self, message: Any, expected: str) -> Any:
        if message[0] == "ended":
            raise DatabaseUnavailable(
                self.store.safe_url, "a verify worker process ended unexpectedly"
            )
        if message[0] == expected:
            return message[1]
        if message[0] == "undecodable":
            raise _Undecodable()
        error = message[1]
        if isinstance(error, WorkflowError):
            raise error
        if isinstance(error, BaseException):  # a driver's error: the worker has no Store
            error = f"{type(error).__name__}: {error}"
        raise DatabaseUnavailable(self.store.safe_url, f"a verify worker failed: {error}")

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop",))
        for p in self.processes:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for pipe in self.pipes:
            pipe.close()


def _cuts(processes: int) -> list[float]:
    """Where the instance ranges of a parallel verify end, as fractions of the instances:
    :data:`RANGES_PER_JOB` equal ranges per process, except that the last few are cut
    smaller and smaller (each a share of what is left: guided self-scheduling). A process
    that takes the last range then finishes soon after the others, where an equal range
    would keep them waiting for most of its length."""
    size = 1 / (processes * RANGES_PER_JOB)
    cuts: list[float] = []
    at = 0.0
    while True:
        remaining = 1 - at
        step = max(min(size, remaining / (2 * processes)), size / 8)
        if remaining - step < size / 16:  # too little would be left for a range of its own
            return cuts
        at += step
        cuts.append(at)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


"""The scan of instance ranges: each instance's chain re-computed and held to its row.

What :func:`workflow.audit.verify.verify` runs over the instances, in one process or in
several (one range each, see ``verify._Workers``). This module is also a verify worker's whole
program (:func:`worker_main`): it imports neither SQLAlchemy nor the Store nor the engine (the
worker reads through :mod:`workflow.storage.scan`, the bare driver), so a worker starts in
~0.1 s and stays small (see docs/performance.md, "verify").

Nothing stored is trusted to be well-formed: a malformed value is a problem of its instance
and seq, and the scan goes on.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import pickle
import queue
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from workflow.access.policy import AUDITOR, StoredGrants
from workflow.audit import chain as _audit
from workflow.audit import evolution as _evolution
from workflow.audit.chain import Chain
from workflow.records import VerifyProblem
from workflow.runtime import attachments as _files
from workflow.storage.rowtypes import InstanceRow, KeyRow
from workflow.storage.scan import Reader, Source, is_undecodable

_STORED_GRANTS = StoredGrants.name
_SPECIAL, _NOT_STEPS = _evolution.SPECIAL, _evolution.NOT_STEPS
_OTHER_DEFINITION = _evolution.OTHER_DEFINITION

#: (actor, role) -> [area, program, granted at, revoked at or None] for every grant ever made.
Timeline = dict[tuple[str, str], list[list[Any]]]


class EventChecks:
    """verify's per-event checks beyond the chain: the actor's grant at that moment, and the
    idempotency records naming the event (see :func:`verify`)."""

    def __init__(
        self,
        timeline: Timeline | None,
        keys: Sequence[KeyRow],
        stored_hashes: frozenset[str] | None = None,
    ) -> None:
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
        self.stored_hashes: frozenset[str] | None = stored_hashes
        #: instance -> its replay: the program version and definition hash after its last
        #: start or migration (taken by ``_scan`` when the instance's chain is done).
        self.evolved: dict[Any, _evolution.Amendments] = {}
        self._replay: _evolution.Amendments | None = None
        self._replaying: Chain | None = None

    def __call__(self, chain: Chain, row: tuple[Any, ...]) -> str | None:
        # Once per stored event: the replay's and the grant's checks, the usual case inline.
        replay = self._replay
        if replay is None or self._replaying is not chain:
            replay = self._replay_of(chain)
        seq, trigger = row[2], row[3]
        if trigger not in _SPECIAL:
            # evolution.Amendments.add's ordinary step (most events), inline.
            amended = None if row[12] == replay.definition_hash else _OTHER_DEFINITION
            if type(seq) is int:
                replay.hashes[seq] = row[15]
                replay.triggers[seq] = trigger
                before = row[4]
                if trigger not in _NOT_STEPS and before is not None and before != row[5]:
                    replay.step_seqs.append(seq)
                    replay.befores[seq] = before
        else:
            try:
                amended = replay.add(row)
            except (TypeError, ValueError, KeyError, AttributeError) as e:
                amended = f"a stored value is malformed ({type(e).__name__})"
        # The grant check has nothing to say of an event another policy allowed, outside the
        # auditor role, that no idempotency record names.
        if self.keys or row[13] == _STORED_GRANTS or row[7] == AUDITOR:
            granted = self._granted(chain, row)
        else:
            granted = None
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

    def _replay_of(self, chain: Chain) -> _evolution.Amendments:
        """A new workflow.audit.evolution replay for the instance starting (corrections,
        reverts, migrations), kept in ``evolved``: which definition the instance runs on
        after its last event."""
        replay = _evolution.Amendments(stored_hashes=self.stored_hashes)
        self._replay, self._replaying = replay, chain
        self.evolved[chain.instance] = replay
        return replay

    def _granted(self, chain: Chain, row: tuple[Any, ...]) -> str | None:
        instance, seq, at = row[1], row[2], row[9]
        if not isinstance(at, str):
            return None  # malformed: the chain check reports it
        named = self.keys.get((instance, seq)) if self.keys else None
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
        if policy != _STORED_GRANTS or self.timeline is None:
            # Another policy decided (its name is hashed into the event); a broken grant
            # chain is reported once, not as every event it would leave uncovered.
            return None
        area, program = self._instance_scope(chain)
        if area is None or program is None:
            return None  # the start event is unreadable: check_instance says so
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



def check_instance(
    inst: InstanceRow | None,
    chain: _audit.Chain | None,
    definitions: Mapping[int, Any],
    evolved: tuple[int | None, str | None] | None = None,
    start: tuple[Any, Any] = (None, None),
) -> VerifyProblem | None:
    """Whether the instance row and its chain agree (None), or the first way they do not.

    ``evolved`` is the (program version, definition hash) the replay ended on after a
    migration; ``start`` the replay's (text, JSON) of a start event, used when its text is
    the first event's evidence (one JSON parse per instance fewer)."""
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
    text, identity = start
    if text is None or text != first.evidence:
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


def _configuration(text: object) -> tuple[str, ...] | None:
    """A stored configuration (JSON list of dotted state paths), or None if it is not one."""
    if type(text) is str:
        return _configuration_of(text)
    return None  # bytes, numbers, null: not what workflow writes


@functools.lru_cache(maxsize=4096)
def _configuration_of(text: str) -> tuple[str, ...] | None:
    # Cached: instances end in few distinct configurations, and this is a JSON parse per
    # instance; the bound keeps a trail full of forged ones from growing it.
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def _int_or_none(value: object) -> int | None:
    return value if type(value) is int else None


# ----------------------------------------------------------------------------- the scan


@dataclass
class Scanned:
    """What re-hashing the chains of a range of instances found (all of them, serially)."""

    events: int = 0
    instances: int = 0
    #: One problem at most per instance, in instance order.
    problems: list[VerifyProblem] = field(default_factory=list)
    #: Idempotency records that do not match the event they name, in scan order.
    bad_keys: list[VerifyProblem] = field(default_factory=list)
    #: (instance, seq) of every event some idempotency record names.
    seen: set[tuple[Any, Any]] = field(default_factory=set)
    #: (instance, seq, field, sha256, bytes) of every file evidence names, in scan order.
    files: list[tuple[Any, Any, str, str, int]] = field(default_factory=list)
    #: instance -> (seq, hash) of the events a digest asks about.
    found: dict[int, tuple[int, str]] = field(default_factory=dict)
    #: SHA-256 over (id, version, head hash) of the instance rows read.
    heads: str = ""


def scan(
    instances: Iterator[InstanceRow],
    events: Iterator[Any],
    definitions: Mapping[int, Any],
    checks: EventChecks,
    wanted: Mapping[int, int],
) -> Scanned:
    """Re-compute the chains of ``events`` and hold each of ``instances`` to its own."""
    out = Scanned()
    heads = hashlib.sha256()
    pairs = _audit.merge_by_instance(instances, _audit.chains(events, wanted, out.found, checks))
    for inst, chain in pairs:
        if chain is not None:
            out.events += chain.events
        if inst is not None:
            out.instances += 1
            heads.update(head_line(inst.id, inst.version, inst.head_hash))
        try:
            replay = checks.evolved.pop(chain.instance, None) if chain else None
            if replay is None:
                problem = check_instance(inst, chain, definitions)
            else:
                evolved = (replay.program_version, replay.definition_hash)
                problem = check_instance(inst, chain, definitions, evolved, replay.start)
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
            ident = inst.id if inst is not None else chain.instance if chain else None
            problem = VerifyProblem(
                ident if type(ident) is int else None,
                chain.last_seq if chain is not None else 0,
                f"a stored value is malformed ({type(e).__name__}: {e})",
            )
        if problem is not None:
            out.problems.append(problem)
    out.bad_keys, out.seen, out.files = checks.bad_keys, checks.seen, checks.files
    out.heads = heads.hexdigest()
    return out


def head_line(ident: Any, version: Any, head: Any) -> bytes:
    return f"{ident!r}:{version!r}:{head!r}\n".encode("utf-8", "surrogatepass")


# ----------------------------------------------------------------------------- a worker


def worker_main() -> None:
    """A verify worker process's entry point (see ``verify._Workers.start``): the socket
    to its coordinator is the file descriptor in ``argv[1]``."""
    pipe = Connection(int(sys.argv[1]))
    try:
        source = pipe.recv()
    except EOFError:
        return
    worker(_Inbox(pipe), source)


class _Inbox:
    """A worker's end of the socket, read by a thread of its own into a queue.

    The coordinator hands out the next range while the worker may be sending the answer of
    the last one; were both messages larger than the socket's buffers (a digest's heads, a
    range's many problems), each side would wait for the other to read. The thread always
    reads, so the coordinator's sends never wait on a worker busy sending or scanning."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        try:
            while True:
                message = self.pipe.recv()
                self.queue.put(message)
                if message[0] not in ("begin", "context", "scan", "end"):
                    return  # stop
        except (EOFError, OSError):
            self.queue.put(None)

    def recv(self) -> Any:
        message = self.queue.get()
        if message is None:
            self.queue.put(None)
            raise EOFError
        return message

    def send(self, message: Any) -> None:
        self.pipe.send(message)


def worker(pipe: Any, source: Source) -> None:
    """A verify worker: for each ``begin``, a snapshot in which it scans the instance ranges
    the coordinator hands it, one answer per range, until ``end`` (see ``verify._Workers``)."""
    reader = Reader(source)
    try:
        message = pipe.recv()
        while message[0] == "begin":
            _, lenient, shared = message
            try:
                with reader.snapshot(lenient, shared) as conn:
                    pipe.send(("ready", None))
                    message, failed = _session(pipe, reader, conn)
            except (EOFError, KeyboardInterrupt):
                raise
            except Exception as e:  # the snapshot could not be opened
                _send_failure(pipe, e)
                message, failed = None, True
            if failed:
                reader.close()  # a connection that saw an error is not reused
            if message is None:
                message = pipe.recv()
    except (EOFError, KeyboardInterrupt):
        return
    except Exception as e:
        send_error(pipe, e)
    finally:
        reader.close()


def _session(pipe: Any, reader: Reader, conn: Any) -> tuple[Any, bool]:
    """The ranges of one snapshot, scanned as they come: returns the first message that is
    not this snapshot's (None after ``end``), and whether a range failed. After a failure
    every further range is answered ``skipped``: the coordinator reports the failure."""
    definitions: Mapping[int, Any] = {}
    timeline: Timeline | None = None
    stored_hashes: frozenset[str] | None = None
    failed = False
    while True:
        task = pipe.recv()
        if task[0] == "context":
            _, definitions, timeline, stored_hashes = task
            continue
        if task[0] == "end":
            return None, failed
        if task[0] != "scan":
            return task, failed
        if failed:
            pipe.send(("skipped", None))
            continue
        _, lo, hi, keys, wanted = task
        try:
            result = scan(
                reader.instances(conn, lo, hi),
                reader.event_tuples(conn, lo, hi),
                definitions,
                EventChecks(timeline, keys, stored_hashes),
                wanted,
            )
        except Exception as e:
            failed = True
            _send_failure(pipe, e)
            continue
        pipe.send(("done", result))


def _send_failure(pipe: Any, error: BaseException) -> None:
    if is_undecodable(error):
        pipe.send(("undecodable", None))  # the coordinator verifies again, leniently
    else:
        send_error(pipe, error)


def send_error(pipe: Any, error: BaseException) -> None:
    """Send ``error`` to the coordinator: the exception itself if it pickles, else its text."""
    try:
        pickle.loads(pickle.dumps(error))
        pipe.send(("error", error))
    except Exception:
        with contextlib.suppress(OSError):
            pipe.send(("error", f"{type(error).__name__}: {error}"))

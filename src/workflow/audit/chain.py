"""The audit trail's cryptography: canonical encoding, per-instance hash chains, verify, digest.

Each event's ``hash`` is SHA-256 over a canonical encoding of every stored field of the event,
including the previous event's hash, so changing, removing, reordering or inserting an event
breaks the chain from that point. Chains are per instance: writers on different instances
never contend for a global head. Grant events and denials form one chain each. A *digest*
commits to the head of every chain (and their count) and to the idempotency records at one
moment; verifying against it later proves nothing it covered was removed or changed since,
including the newest events and whole instances, which a chain alone cannot.

Storage hands this module rows, it hands back hashes and problems; the one thing it reads
itself is a digest file (:func:`read_digest`, with a size limit, regular files only).
Nothing stored is trusted to be well-formed: a malformed value is a problem, never a crash.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workflow.errors import UsageError
from workflow.records import VerifyProblem

HASH_FORMAT = "wf1"
#: The encoding of an event that records how its caller was authenticated (the service):
#: ``wf1``'s fields, then ``auth``. Events without it keep ``wf1``, so old trails still verify.
AUTH_FORMAT = "wf2"
#: The encoding tag of denial hashes (a chain of its own, never mistaken for an event's).
DENIAL_FORMAT = "wd1"
GENESIS = "0" * 64
#: A digest file larger than this is refused (a digest of a million instances is ~100 MB).
DIGEST_LIMIT = 256 * 1024 * 1024
#: How every stored time looks (``now_utc``); as text it sorts in time order.
TIME_FORMAT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def now_utc() -> str:
    """The current time as stored: ISO 8601 UTC with microseconds (``TIME_FORMAT``; sorts as
    text). The one clock of every record, so the chains' "time never runs back" checks and
    the tests that set the clock back speak of one function."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")[:-6] + "Z"


# One encoder for every hash: json.dumps with options builds a new encoder per call, which
# costs as much as the hashing itself (verify runs this once per event).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
# For what is only compared, never re-implemented elsewhere: any stored value encodes.
_LENIENT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=repr)


def canonical_json(value: Any) -> str:
    """The one JSON text of a value: sorted keys, no spaces, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_hash(
    *,
    instance: int,
    seq: int,
    trigger: str,
    from_state: str | None,
    to_state: str,
    actor: str,
    role: str,
    os_user: str,
    at: str,
    evidence: str,
    note: str | None,
    definition_hash: str,
    policy: str,
    prev_hash: str,
) -> str:
    """SHA-256 of an event's fields; JSON-valued fields enter as their stored canonical text."""
    payload = _ENCODER.encode(
        [
            HASH_FORMAT,
            instance,
            seq,
            trigger,
            from_state,
            to_state,
            actor,
            role,
            os_user,
            at,
            evidence,
            note,
            definition_hash,
            policy,
            prev_hash,
        ]
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def grant_hash(row: Any) -> str:
    """The hash of a grant event (``row`` is a storage.GrantEventRow); same encoding."""
    return event_hash(
        instance=0,
        seq=row.seq,
        trigger=row.action,
        from_state=None,
        to_state=row.scope,
        actor=row.by,
        role="",
        os_user=row.os_user,
        at=row.at,
        evidence="{}",
        note=None,
        definition_hash="",
        policy="",
        prev_hash=row.prev_hash,
    )


DENIAL_FIELDS = (
    "seq",
    "actor",
    "role",
    "action",
    "program",
    "instance_id",
    "area_code",
    "reason",
    "os_user",
    "at",
    "prev_hash",
)


def denial_hash(row: Any) -> str:
    """The hash of a denial (``row`` is a storage.DenialRow): ``wd1`` and its fields, with
    the previous denial's hash, in the same JSON encoding as events."""
    payload = _ENCODER.encode([DENIAL_FORMAT, *(getattr(row, n) for n in DENIAL_FIELDS)])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def keys_hash(rows: Iterable[Any]) -> tuple[int, str]:
    """(count, SHA-256) of idempotency rows (storage.KeyRow), in code-point order of key, so
    both backends (whatever their collation) give the same answer."""
    h = hashlib.sha256()
    n = 0
    for row in sorted(rows, key=lambda r: str(r.key)):
        line = _LENIENT.encode(
            [row.key, row.request_hash, row.instance_id, row.seq, row.created_at, row.event_hash]
        )
        h.update(line.encode("utf-8", "surrogateescape") + b"\n")
        n += 1
    return n, h.hexdigest()


def row_hash(row: Any) -> str:
    """The hash an event row should carry (``row`` is a storage.EventRow): the same
    encoding as :func:`event_hash`, taken straight from the row's fields (1..14), plus
    ``auth`` (field 16) under ``wf2`` when the event records one."""
    if not isinstance(row, tuple):
        row = (None, *(getattr(row, n) for n in _EVENT_FIELDS), None, getattr(row, "auth", None))
    return hashlib.sha256(_payload(row).encode("utf-8")).hexdigest()


def _payload(row: tuple[Any, ...]) -> str:
    """The canonical text an event row's hash is taken over (storage.EventRow order)."""
    auth = row[16] if len(row) > 16 else None
    if auth is None:
        return _ENCODER.encode([HASH_FORMAT, *row[1:15]])
    return _ENCODER.encode([AUTH_FORMAT, *row[1:15], auth])


_EVENT_FIELDS = (
    "instance_id",
    "seq",
    "trigger",
    "from_state",
    "to_state",
    "actor",
    "role",
    "os_user",
    "at",
    "evidence",
    "note",
    "definition_hash",
    "policy",
    "prev_hash",
)


@dataclass(frozen=True)
class Digest:
    """A commitment to every event of every instance, the grant and denial chains' heads and
    the idempotency records, at one moment.

    ``denials`` and ``keys`` are None in digests written before they were covered; such a
    digest still verifies (its root is computed as it was then)."""

    instances: int
    events: int
    root: str
    heads: Mapping[str, tuple[int, str]]
    taken_at: str = ""
    grants: tuple[int, str] = (0, GENESIS)
    denials: tuple[int, str] | None = None
    keys: tuple[int, str] | None = None
    #: The account chain's head (seq, hash); None in digests written before it existed.
    accounts: tuple[int, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": HASH_FORMAT,
            "taken_at": self.taken_at,
            "instances": self.instances,
            "events": self.events,
            "root": self.root,
            "grants": {"seq": self.grants[0], "hash": self.grants[1]},
        }
        if self.denials is not None:
            out["denials"] = {"seq": self.denials[0], "hash": self.denials[1]}
        if self.keys is not None:
            out["keys"] = {"count": self.keys[0], "hash": self.keys[1]}
        if self.accounts is not None:
            out["accounts"] = {"seq": self.accounts[0], "hash": self.accounts[1]}
        out["heads"] = {k: {"seq": s, "hash": h} for k, (s, h) in self.heads.items()}
        return out

    @staticmethod
    def root_of(
        heads: Mapping[str, tuple[int, str]],
        grants: tuple[int, str],
        denials: tuple[int, str] | None = None,
        keys: tuple[int, str] | None = None,
        accounts: tuple[int, str] | None = None,
    ) -> str:
        """SHA-256 over every instance head (by id), the grant chain's head and (when the
        digest covers them) the denial chain's head, the idempotency records and the account
        chain's head."""
        h = hashlib.sha256()
        h.update(f"grants:{grants[0]}:{grants[1]}\n".encode())
        if denials is not None:
            h.update(f"denials:{denials[0]}:{denials[1]}\n".encode())
        if keys is not None:
            h.update(f"keys:{keys[0]}:{keys[1]}\n".encode())
        if accounts is not None:
            h.update(f"accounts:{accounts[0]}:{accounts[1]}\n".encode())
        for key in sorted(heads, key=int):
            seq, head = heads[key]
            h.update(f"{key}:{seq}:{head}\n".encode())
        return h.hexdigest()

    @classmethod
    def from_dict(cls, data: object) -> Digest:
        """Read a digest back; ``ValueError`` (one line) if it is not one or does not add up.

        Every value is checked for its exact type: ``true`` is not a count, ``"7"`` is not a
        sequence number, and a hash is 64 lowercase hex digits."""
        if not isinstance(data, Mapping):
            raise ValueError("not a workflow digest (not a JSON object)")
        try:
            raw_heads = data["heads"]
            if not isinstance(raw_heads, Mapping):
                raise ValueError("heads is not an object")
            heads: dict[str, tuple[int, str]] = {}
            for k, v in raw_heads.items():
                if not (isinstance(k, str) and k.isdigit() and k.isascii()) or int(k) < 1:
                    raise ValueError(f"instance id {k!r} is not a positive integer")
                heads[str(int(k))] = _pair(v, "seq", f"head of instance {k}")
            grants = _pair(data.get("grants", {"seq": 0, "hash": GENESIS}), "seq", "grants")
            denials = _pair(data["denials"], "seq", "denials") if "denials" in data else None
            keys = _pair(data["keys"], "count", "keys") if "keys" in data else None
            accounts = (
                _pair(data["accounts"], "seq", "accounts") if "accounts" in data else None
            )
            taken_at = data.get("taken_at", "")
            if not isinstance(taken_at, str):
                raise ValueError("taken_at is not text")
            root = data["root"]
            if not isinstance(root, str):
                raise ValueError("root is not text")
            digest = cls(
                instances=_count(data["instances"], "instances"),
                events=_count(data["events"], "events"),
                root=root,
                heads=heads,
                taken_at=taken_at,
                grants=grants,
                denials=denials,
                keys=keys,
                accounts=accounts,
            )
        except KeyError as e:
            raise ValueError(f"not a workflow digest (no {e} in it)") from None
        except ValueError as e:
            raise ValueError(f"not a workflow digest ({e})") from None
        if (
            cls.root_of(heads, grants, denials, keys, accounts) != digest.root
            or len(heads) != digest.instances
            or (sum(s for s, _ in heads.values()) != digest.events)
        ):
            raise ValueError("the digest does not add up (its root, counts and heads disagree)")
        return digest


def _count(value: object, what: str) -> int:
    if type(value) is not int or value < 0 or value > 2**63:
        raise ValueError(f"{what} is not a count")
    return value


def _pair(value: object, number: str, what: str) -> tuple[int, str]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} is not an object")
    n, h = value.get(number), value.get("hash")
    if not (isinstance(h, str) and _HEX64.fullmatch(h)):
        raise ValueError(f"{what} hash is not 64 hex digits")
    return _count(n, f"{what} {number}"), h


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a digest can hold")


def read_digest(path: str | Path, limit: int | None = None) -> Digest:
    """Read and check a digest file; :class:`UsageError` (exit 2, one line) if it cannot be
    one: not a regular file (a directory, a FIFO, ``/dev/zero``), larger than ``limit``
    bytes, not UTF-8, not JSON (``NaN``, ``Infinity``, nesting too deep) or not a digest.

    The file is opened without blocking (a FIFO with no writer must not hang verify) and
    read up to ``limit`` (default :data:`DIGEST_LIMIT`) + 1 bytes, whatever it claims to be."""
    limit = DIGEST_LIMIT if limit is None else limit
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise UsageError(f"cannot read digest {path}: {e.strerror or e}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"cannot read digest {path}: not a regular file")
        if info.st_size > limit:
            raise UsageError(f"cannot read digest {path}: larger than {limit} bytes")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise UsageError(f"cannot read digest {path}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise UsageError(f"cannot read digest {path}: larger than {limit} bytes")
    try:
        data = json.loads(b"".join(chunks).decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise UsageError(f"cannot read digest {path}: not UTF-8 text") from None
    except RecursionError:
        raise UsageError(f"cannot read digest {path}: JSON nested too deeply") from None
    except ValueError as e:
        reason = str(e).splitlines()[0] if str(e) else "not JSON"
        raise UsageError(f"cannot read digest {path}: {reason}") from None
    try:
        return Digest.from_dict(data)
    except ValueError as e:
        raise UsageError(f"digest {path}: {e}") from None


@dataclass
class Chain:
    """What verify needs to know of one instance's chain once it has been read."""

    instance: int
    first: Any
    events: int = 0
    last_seq: int = 0
    head: str = GENESIS
    last_to: str | None = None
    last_at: str = ""
    definition_hashes: frozenset[str] = frozenset()
    problem: VerifyProblem | None = None


#: A check run on each event whose chain is intact so far: (chain, row) -> reason or None.
EventCheck = Callable[[Chain, tuple[Any, ...]], "str | None"]


def event_problem(row: tuple[Any, ...], last_seq: int, head: str, last_at: str) -> str | None:
    """Why an event row (``storage.EventRow`` order) does not follow its predecessor, or None.

    Malformed values (a seq that is not a number, bytes, text that is not UTF-8) are reasons
    like any other: nothing here raises on what a row holds."""
    seq, digest, at = row[2], row[15], row[9]
    if type(seq) is not int:
        return f"seq {seq!r} is not an integer"
    if seq != last_seq + 1:
        return f"sequence jumps from {last_seq} to {seq} (an event was removed or inserted)"
    if row[14] != head:
        return "prev_hash does not match the previous event's hash"
    try:
        computed = hashlib.sha256(_payload(row).encode("utf-8"))
    except (TypeError, ValueError, UnicodeError) as e:
        return f"a stored value is malformed ({type(e).__name__}: not text, a number or null)"
    if computed.hexdigest() != digest:
        return "hash does not match the event's content (the event was altered)"
    if not (isinstance(at, str) and TIME_FORMAT.fullmatch(at)):
        return f"time {at!r} is not an ISO 8601 UTC time as workflow writes it"
    if at < last_at:
        return f"time runs backwards: {at} is earlier than the previous event's {last_at}"
    return None


def chains(
    events: Iterable[tuple[Any, ...]],
    wanted: Mapping[int, int] | None = None,
    found: dict[int, tuple[int, str]] | None = None,
    check: EventCheck | None = None,
) -> Iterator[Chain]:
    """Re-compute chains from event rows ordered by (instance, seq), one chain at a time.

    Rows are tuples in ``storage.EventRow`` order (plain driver rows are fine: this loop
    runs once per stored event, so it indexes rather than building objects). Only the
    current instance is held in memory. Each chain reports its first broken event: a broken
    link, an altered event, a time earlier than the event before, or what ``check`` says.
    ``wanted`` maps instance -> seq whose stored hash should be copied into ``found`` (what
    a digest asks about).
    """
    wanted = wanted or {}
    chain: Chain | None = None
    defs: set[str] = set()
    encode = _ENCODER.encode
    payload = _payload
    sha256 = hashlib.sha256
    for row in events:
        instance, seq, digest = row[1], row[2], row[15]
        if chain is None or instance != chain.instance:
            if chain is not None:
                chain.definition_hashes = frozenset(defs)
                yield chain
            chain = Chain(instance=instance, first=_as_event_row(row))
            defs = set()
        chain.events += 1
        defs.add(row[12])
        if found is not None and wanted.get(instance) == seq:
            found[instance] = (seq, digest)
        reason = None
        if chain.problem is None:
            at = row[9]
            # The common case, inline: an intact event of a well-formed row.
            try:
                fast = (
                    seq == chain.last_seq + 1
                    and row[14] == chain.head
                    and at >= chain.last_at
                    and sha256(
                        (
                            encode([HASH_FORMAT, *row[1:15]])
                            if len(row) < 17 or row[16] is None
                            else payload(row)
                        ).encode("utf-8")
                    ).hexdigest()
                    == digest
                    and TIME_FORMAT.fullmatch(at) is not None
                )
            except (TypeError, ValueError, UnicodeError):
                fast = False
            if not fast:
                reason = event_problem(row, chain.last_seq, chain.head, chain.last_at)
        if check is not None:
            # Run on every event (it also notes which events idempotency records name).
            extra = check(chain, row)
            reason = reason or extra
        if chain.problem is None and reason is not None:
            chain.problem = VerifyProblem(
                instance if type(instance) is int else None,
                seq if type(seq) is int else None,
                reason,
            )
        if type(seq) is int:
            chain.last_seq = seq
        chain.head = digest
        chain.last_to = row[5]
        if isinstance(row[9], str):
            chain.last_at = row[9]
    if chain is not None:
        chain.definition_hashes = frozenset(defs)
        yield chain


def _as_event_row(row: tuple[Any, ...]) -> Any:
    from workflow.storage.store import EventRow  # storage imports nothing from here at import time

    return row if isinstance(row, EventRow) else EventRow(*row)


def sort_key(value: object) -> tuple[int, Any]:
    """How SQLite orders mixed values (numbers, then text, then bytes), so that an id an
    intruder turned into text compares without error; PostgreSQL only has integers here."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    if isinstance(value, bytes):
        return (2, value)
    return (-1, 0)


def merge_by_instance(
    instances: Iterator[Any], found_chains: Iterator[Chain]
) -> Iterator[tuple[Any | None, Chain | None]]:
    """Pair instance rows and chains, both ordered by instance id; a missing side is None."""
    inst = next(instances, None)
    chain = next(found_chains, None)
    while inst is not None or chain is not None:
        if chain is None or (inst is not None and sort_key(inst.id) < sort_key(chain.instance)):
            yield inst, None
            inst = next(instances, None)
        elif inst is None or sort_key(chain.instance) < sort_key(inst.id):
            yield None, chain
            chain = next(found_chains, None)
        else:
            yield inst, chain
            inst = next(instances, None)
            chain = next(found_chains, None)

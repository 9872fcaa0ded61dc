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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from json.encoder import c_make_encoder as _c_make_encoder  # type: ignore[attr-defined]
from json.encoder import encode_basestring as _encode_basestring
from pathlib import Path
from typing import Any

from workflow.errors import UsageError
from workflow.records import VerifyProblem

#: The first event encoding: a JSON array of the tag and the fields (still that of grant
#: events and of every event written before ``wf3``, whose ``hash_format`` is NULL).
HASH_FORMAT = "wf1"
#: The encoding of an event that records how its caller was authenticated (the service):
#: ``wf1``'s fields, then ``auth``. Events without it keep ``wf1``, so old trails still verify.
AUTH_FORMAT = "wf2"
#: The third encoding (an event's ``hash_format`` says it): the same fields as ``wf2``
#: (``auth`` null or not), length-prefixed text instead of JSON, cheaper to compute (see
#: :func:`wf3_payload` and docs/audit.md).
WF3 = "wf3"
#: The encoding new events are written in (None would mean wf1/wf2, as before revision 0011;
#: tests set it so to write such events). Old events keep their encodings.
EVENT_FORMAT: str | None = WF3
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
    auth: str | None = None,
    hash_format: str | None = WF3,
) -> str:
    """SHA-256 of an event's fields; JSON-valued fields enter as their stored canonical text.

    ``hash_format``: ``wf3`` (what events are written in now), or None for the encoding of
    events written before it (``wf1``, or ``wf2`` when there is an ``auth``)."""
    values = (
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
        auth,
    )
    return hashlib.sha256(encode_event(values, hash_format)).hexdigest()


class UnknownFormat(ValueError):
    """An event's ``hash_format`` names no encoding workflow ever wrote."""


def encode_event(values: Sequence[Any], hash_format: object) -> bytes:
    """The bytes an event's hash is taken over: ``values`` are the 15 hashed fields
    (instance .. prev_hash, then auth), ``hash_format`` the event's stored format.

    Raises ``ValueError`` for a format no version of workflow wrote, ``TypeError`` or
    ``UnicodeError`` for a value that is not what its field holds (verify: a problem)."""
    if hash_format == WF3:
        return wf3_payload(values)
    if hash_format is not None:
        raise UnknownFormat(f"hash format {hash_format!r}")
    auth = values[14]
    if auth is None:
        return _json([HASH_FORMAT, *values[:14]]).encode("utf-8")
    return _json([AUTH_FORMAT, *values[:14], auth]).encode("utf-8")


#: ``wf3``'s header: the tag, instance and seq, then the length of each text field (-1: null).
_WF3 = "wf3" + " %d" * 15 + "\n" + "%s" * 13


def wf3_payload(values: Sequence[Any]) -> bytes:
    """The ``wf3`` encoding of an event's 15 hashed fields (instance, seq, trigger,
    from_state, to_state, actor, role, os_user, at, evidence, note, definition_hash, policy,
    prev_hash, auth), as docs/audit.md specifies it: UTF-8 of ``wf3``, then `` N`` for
    instance and seq (decimal) and for each of the 13 text fields its length in code points
    (``-1`` for null), a line feed, then the 13 texts one after another (null: nothing).

    Strict on types: instance and seq must be ``int`` (not bool), the rest ``str`` or None
    (TypeError otherwise); text that cannot be UTF-8 (a lone surrogate) is a UnicodeError."""
    if len(values) != 15:
        raise ValueError(f"wf3 encodes 15 fields, not {len(values)}")
    instance, seq, *texts = values
    if type(instance) is not int or type(seq) is not int:
        raise TypeError("instance and seq must be integers")
    lengths = []
    for text in texts:
        if text is None:
            lengths.append(-1)
        elif type(text) is str:
            lengths.append(len(text))
        else:
            raise TypeError(f"{type(text).__name__} where text or null belongs")
    return (_WF3 % (instance, seq, *lengths, *(t or "" for t in texts))).encode("utf-8")


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
        hash_format=None,  # grant events keep wf1
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
    """The hash an event row should carry (``row`` is a storage.EventRow, or a tuple in its
    order): the encoding its ``hash_format`` (field 17) names over fields 1..14 and ``auth``
    (field 16); a row without those fields is a ``wf1`` row (no auth, no format)."""
    if not isinstance(row, tuple):
        row = (
            None,
            *(getattr(row, n) for n in _EVENT_FIELDS),
            None,
            getattr(row, "auth", None),
            getattr(row, "hash_format", None),
        )
    return hashlib.sha256(_row_payload(row)).hexdigest()


def _row_payload(row: tuple[Any, ...]) -> bytes:
    """The bytes an event row's hash is taken over (storage.EventRow order)."""
    auth = row[16] if len(row) > 16 else None
    hash_format = row[17] if len(row) > 17 else None
    return encode_event((*row[1:15], auth), hash_format)


# The JSON of wf1/wf2: the C encoder made once (``JSONEncoder.encode`` builds one per call,
# which costs as much as the hashing); the text is exactly ``_ENCODER.encode``'s.
_C_ENCODER: Any = (
    None
    if _c_make_encoder is None
    else _c_make_encoder(None, None, _encode_basestring, None, ":", ",", False, False, True)
)


def _json(value: list[Any]) -> str:
    """``_ENCODER.encode(value)``, faster."""
    if _C_ENCODER is None:  # pragma: no cover - CPython has the C encoder
        return _ENCODER.encode(value)
    return "".join(_C_ENCODER(value, 0))


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

    Malformed values (a seq that is not a number, bytes, text that is not UTF-8, a hash format
    no workflow wrote) are reasons like any other: nothing here raises on what a row holds."""
    seq, digest, at = row[2], row[15], row[9]
    if type(seq) is not int:
        return f"seq {seq!r} is not an integer"
    if seq != last_seq + 1:
        return f"sequence jumps from {last_seq} to {seq} (an event was removed or inserted)"
    if row[14] != head:
        return "prev_hash does not match the previous event's hash"
    try:
        computed = hashlib.sha256(_row_payload(row))
    except UnknownFormat as e:
        return f"{e}: not one workflow writes (the event was altered)"
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
    link, an altered event, a time earlier than the event before, or what ``check`` says
    (``check`` sees the chain's ``instance`` and ``first``; its counts are filled in when
    the chain is yielded). ``wanted`` maps instance -> seq whose stored hash should be
    copied into ``found`` (what a digest asks about).
    """
    wanted = wanted or {}
    sha256 = hashlib.sha256
    json_text = _json
    wf3 = _WF3
    timely = TIME_FORMAT.fullmatch
    chain: Chain | None = None
    # The current chain's state lives in locals (this loop runs once per event) and is
    # written to its Chain when the chain is done.
    last_seq, head, last_at, count, problem, want = 0, GENESIS, "", 0, None, None
    defs: set[str] = set()
    last: tuple[Any, ...] = ()
    for row in events:
        instance, seq, digest = row[1], row[2], row[15]
        if chain is None or instance != chain.instance:
            if chain is not None:
                _close(chain, count, last_seq, head, last, last_at, defs, problem)
                yield chain
            chain = Chain(instance=instance, first=_as_event_row(row))
            last_seq, head, last_at, count, problem = 0, GENESIS, "", 0, None
            defs = set()
            want = wanted.get(instance) if found is not None else None
        count += 1
        last = row
        defs.add(row[12])
        if want is not None and seq == want and found is not None:
            found[instance] = (seq, digest)
        reason = None
        at = row[9]
        if problem is None:
            # The common case, inline: an intact event of a well-formed row. Anything else
            # (or a row without the 18 fields) goes to event_problem, which says why.
            fast = False
            try:
                if seq == last_seq + 1 and row[14] == head and at >= last_at:
                    if row[17] == WF3 and type(instance) is int is type(seq):
                        # wf3_payload, unrolled. A value that is not text renders longer than
                        # its len() (bytes) or has none (numbers: TypeError), so a row that
                        # is not all text cannot produce a well-formed payload's bytes.
                        f, n, au = row[4], row[11], row[16]
                        data = (
                            wf3
                            % (
                                instance,
                                seq,
                                len(row[3]),
                                -1 if f is None else len(f),
                                len(row[5]),
                                len(row[6]),
                                len(row[7]),
                                len(row[8]),
                                len(at),
                                len(row[10]),
                                -1 if n is None else len(n),
                                len(row[12]),
                                len(row[13]),
                                len(row[14]),
                                -1 if au is None else len(au),
                                row[3],
                                f or "",
                                row[5],
                                row[6],
                                row[7],
                                row[8],
                                at,
                                row[10],
                                n or "",
                                row[12],
                                row[13],
                                row[14],
                                au or "",
                            )
                        ).encode("utf-8")
                    elif row[17] is None and row[16] is None:
                        data = json_text([HASH_FORMAT, *row[1:15]]).encode("utf-8")
                    else:
                        data = _row_payload(row)
                    fast = sha256(data).hexdigest() == digest and timely(at) is not None
            except (TypeError, ValueError, UnicodeError, IndexError):
                fast = False
            if not fast:
                reason = event_problem(row, last_seq, head, last_at)
        if check is not None:
            # Run on every event (it also notes which events idempotency records name).
            extra = check(chain, row)
            reason = reason or extra
        if problem is None and reason is not None:
            problem = VerifyProblem(
                instance if type(instance) is int else None,
                seq if type(seq) is int else None,
                reason,
            )
        if type(seq) is int:
            last_seq = seq
        head = digest
        if isinstance(at, str):
            last_at = at
    if chain is not None:
        _close(chain, count, last_seq, head, last, last_at, defs, problem)
        yield chain


def _close(
    chain: Chain,
    count: int,
    last_seq: int,
    head: str,
    last: tuple[Any, ...],
    last_at: str,
    defs: set[str],
    problem: VerifyProblem | None,
) -> None:
    """Write what the scan of one chain found into its Chain."""
    chain.events = count
    chain.last_seq = last_seq
    chain.head = head
    chain.last_to = last[5]
    chain.last_at = last_at
    chain.definition_hashes = frozenset(defs)
    chain.problem = problem


def _as_event_row(row: tuple[Any, ...]) -> Any:
    from workflow.storage.rowtypes import EventRow  # lean: no SQLAlchemy (a verify worker)

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

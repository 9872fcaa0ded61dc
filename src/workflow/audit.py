"""The audit trail's cryptography: canonical encoding, per-instance hash chains, verify, digest.

Each event's ``hash`` is SHA-256 over a canonical encoding of every stored field of the event,
including the previous event's hash, so changing, removing, reordering or inserting an event
breaks the chain from that point. Chains are per instance: writers on different instances
never contend for a global head. A *digest* commits to the head of every chain (and their
count) at one moment; verifying against it later proves nothing it covered was removed or
changed since, including the newest events and whole instances, which a chain alone cannot.

This module is pure: storage hands it rows, it hands back hashes and problems.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from workflow.records import VerifyProblem

HASH_FORMAT = "wf1"
GENESIS = "0" * 64

# One encoder for every hash: json.dumps with options builds a new encoder per call, which
# costs as much as the hashing itself (verify runs this once per event).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


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


def row_hash(row: Any) -> str:
    """The hash an event row should carry (``row`` is a storage.EventRow): the same
    encoding as :func:`event_hash`, taken straight from the row's fields (1..14)."""
    if isinstance(row, tuple):
        fields = row[1:15]
    else:
        fields = tuple(getattr(row, name) for name in _EVENT_FIELDS)
    payload = _ENCODER.encode([HASH_FORMAT, *fields])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


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
    """A commitment to every event of every instance at one moment."""

    instances: int
    events: int
    root: str
    heads: Mapping[str, tuple[int, str]]
    taken_at: str = ""
    grants: tuple[int, str] = (0, GENESIS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": HASH_FORMAT,
            "taken_at": self.taken_at,
            "instances": self.instances,
            "events": self.events,
            "root": self.root,
            "grants": {"seq": self.grants[0], "hash": self.grants[1]},
            "heads": {k: {"seq": s, "hash": h} for k, (s, h) in self.heads.items()},
        }

    @staticmethod
    def root_of(heads: Mapping[str, tuple[int, str]], grants: tuple[int, str]) -> str:
        """SHA-256 over every instance head (by id) and the grant chain's head."""
        h = hashlib.sha256()
        h.update(f"grants:{grants[0]}:{grants[1]}\n".encode())
        for key in sorted(heads, key=int):
            seq, head = heads[key]
            h.update(f"{key}:{seq}:{head}\n".encode())
        return h.hexdigest()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Digest:
        """Read a digest back; ``ValueError`` if it is not one or does not add up."""
        try:
            heads = {str(int(k)): (int(v["seq"]), str(v["hash"])) for k, v in data["heads"].items()}
            g = data.get("grants") or {"seq": 0, "hash": GENESIS}
            grants = (int(g["seq"]), str(g["hash"]))
            digest = cls(
                instances=int(data["instances"]),
                events=int(data["events"]),
                root=str(data["root"]),
                heads=heads,
                taken_at=str(data.get("taken_at", "")),
                grants=grants,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"not a workflow digest ({e})") from None
        if (
            cls.root_of(heads, grants) != digest.root
            or len(heads) != digest.instances
            or (sum(s for s, _ in heads.values()) != digest.events)
        ):
            raise ValueError("the digest does not add up (its root, counts and heads disagree)")
        return digest


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


def chains(
    events: Iterable[tuple[Any, ...]],
    wanted: Mapping[int, int] | None = None,
    found: dict[int, tuple[int, str]] | None = None,
) -> Iterator[Chain]:
    """Re-compute chains from event rows ordered by (instance, seq), one chain at a time.

    Rows are tuples in ``storage.EventRow`` order (plain driver rows are fine: this loop
    runs once per stored event, so it indexes rather than building objects). Only the
    current instance is held in memory. Each chain reports its first broken event.
    ``wanted`` maps instance -> seq whose stored hash should be copied into ``found`` (what
    a digest asks about).
    """
    wanted = wanted or {}
    chain: Chain | None = None
    defs: set[str] = set()
    encode = _ENCODER.encode
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
        if chain.problem is None:
            reason = None
            if seq != chain.last_seq + 1:
                reason = (
                    f"sequence jumps from {chain.last_seq} to {seq} "
                    "(an event was removed or inserted)"
                )
            elif row[14] != chain.head:
                reason = "prev_hash does not match the previous event's hash"
            elif sha256(encode([HASH_FORMAT, *row[1:15]]).encode("utf-8")).hexdigest() != digest:
                reason = "hash does not match the event's content (the event was altered)"
            if reason is not None:
                chain.problem = VerifyProblem(instance, seq, reason)
        chain.last_seq = seq
        chain.head = digest
        chain.last_to = row[5]
        chain.last_at = row[9]
    if chain is not None:
        chain.definition_hashes = frozenset(defs)
        yield chain


def _as_event_row(row: tuple[Any, ...]) -> Any:
    from workflow.storage import EventRow  # storage imports nothing from here at import time

    return row if isinstance(row, EventRow) else EventRow(*row)


def merge_by_instance(
    instances: Iterator[Any], found_chains: Iterator[Chain]
) -> Iterator[tuple[Any | None, Chain | None]]:
    """Pair instance rows and chains, both ordered by instance id; a missing side is None."""
    inst = next(instances, None)
    chain = next(found_chains, None)
    while inst is not None or chain is not None:
        if chain is None or (inst is not None and inst.id < chain.instance):
            yield inst, None
            inst = next(instances, None)
        elif inst is None or chain.instance < inst.id:
            yield None, chain
            chain = next(found_chains, None)
        else:
            yield inst, chain
            inst = next(instances, None)
            chain = next(found_chains, None)

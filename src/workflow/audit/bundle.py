"""Proof bundles: one instance's events with inclusion proofs to a signed checkpoint, and
``check``, which verifies a bundle with **no database** (hashlib and ``cryptography`` only).

A bundle is a JSON object::

    {"format": "workflow-proof/1",
     "checkpoint": "<the signed checkpoint note, as text>",
     "instance": 7,
     "tree_size": 1234,                 # the checkpoint's size
     "events": [ {"instance", "seq", "trigger", "from_state", "to_state", "actor", "role",
                  "os_user", "at", "evidence", "note", "definition_hash", "policy",
                  "prev_hash", "auth", "hash_format", "hash", "leaf_index",
                  "inclusion_proof": [base64...]},
                 ... ]}

Each event carries its stored fields exactly (``from_state``, ``to_state`` and ``evidence``
as their stored canonical JSON text), so its hash can be re-computed in the encoding its
``hash_format`` names (docs/audit.md): ``"wf3"``, the length-prefixed text of the fields
then ``auth``; null (or absent, in bundles made before it existed): SHA-256 of the UTF-8
JSON array (no spaces, non-ASCII kept) ``["wf1", instance, seq, trigger, from_state,
to_state, actor, role, os_user, at, evidence, note, definition_hash, policy, prev_hash]``,
or ``"wf2"`` and the same fields then ``auth`` when ``auth`` is not null. ``check`` verifies:
the log's signature on the checkpoint (and the witnesses' cosignatures it is asked for); that
each event's hash is the hash of its fields; that the events form the instance's chain from
its start (seq 1, 2, 3..., each ``prev_hash`` the hash before, the first 64 zeros); that each
``inclusion_proof`` is the RFC 6962 audit path of leaf ``SHA-256(0x00 || hash bytes)`` at
``leaf_index`` to the checkpoint's root, for the checkpoint's size (RFC 9162 2.1.3.2).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from workflow.audit import merkle
from workflow.audit.chain import _EVENT_FIELDS, GENESIS, UnknownFormat, encode_event
from workflow.audit.log import ProofFailed, inclusion_proofs, integrate, require_signed_tree
from workflow.audit.note import NoteError, Verifier, open_checkpoint
from workflow.errors import InstanceNotFound, UsageError
from workflow.storage import auditlog as q
from workflow.storage.store import Store

__all__ = ["FORMAT", "CheckResult", "ProofFailed", "check", "event_hash_of", "load", "prove"]

FORMAT = "workflow-proof/1"
#: A bundle file larger than this is refused (an instance of 10,000 events is ~15 MB).
BUNDLE_LIMIT = 64 * 1024 * 1024
#: The event fields a bundle carries, in the order of the hash encoding (``auth`` apart):
#: the stored event's, the instance named ``instance``.
FIELDS = ("instance", *_EVENT_FIELDS[1:])


def prove(store: Store, instance_id: int, checkpoint_text: str) -> dict[str, Any]:
    """A bundle proving the instance's events are in the tree ``checkpoint_text`` signed.

    Integrates first. Events logged after the checkpoint are left out (``later_events``
    says how many): prove against a newer checkpoint to cover them."""
    try:
        cp = open_checkpoint(checkpoint_text, None).checkpoint
    except NoteError as e:
        raise UsageError(f"checkpoint: {e}") from None
    integrate(store)
    with store.snapshot() as conn:
        require_signed_tree(
            conn, cp, removed=": entries were removed, or the checkpoint is of another log",
            rewritten=f"the log's first {cp.size} entries no longer hash to the checkpoint's "
            "root: history was rewritten (run `workflow audit verify --checkpoint` to locate it)",
        )
        entries = q.instance_entries(conn, instance_id)
        if not entries:
            raise InstanceNotFound(instance_id)
        covered = [(row, leaf) for row, leaf in entries if leaf is not None and leaf < cp.size]
        for row, leaf in covered:
            logged = q.leaf_of(conn, "event", row.id)
            if logged is None or logged.entry_hash != row.hash:
                raise ProofFailed(
                    f"instance {instance_id} seq {row.seq} differs from the entry the log holds "
                    f"at leaf {leaf}: history was rewritten"
                )
        proofs = inclusion_proofs(conn, [leaf for _, leaf in covered], cp.size)
    events = []
    for (row, leaf), proof in zip(covered, proofs, strict=True):
        item = {
            name: getattr(row, "instance_id" if name == "instance" else name) for name in FIELDS
        }
        item["auth"] = row.auth
        item["hash_format"] = row.hash_format
        item["hash"] = row.hash
        item["leaf_index"] = leaf
        item["inclusion_proof"] = [base64.b64encode(p).decode() for p in proof]
        events.append(item)
    return {
        "format": FORMAT,
        "checkpoint": checkpoint_text,
        "instance": instance_id,
        "tree_size": cp.size,
        "events": events,
        "later_events": len(entries) - len(covered),
    }


# --------------------------------------------------------------------------- check


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    instance: Any = None
    events: int = 0
    tree_size: int = 0
    origin: str = ""
    cosigners: tuple[str, ...] = ()
    problems: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "instance": self.instance,
            "events_checked": self.events,
            "tree_size": self.tree_size,
            "origin": self.origin,
            "cosigners": list(self.cosigners),
            "problems": list(self.problems),
        }


def event_hash_of(item: Mapping[str, Any]) -> str:
    """The hash of a bundle event's fields in the encoding its ``hash_format`` names
    (``wf3``; null or absent: ``wf1``, or ``wf2`` with ``auth``). ``ValueError`` for any
    other format (a bundle whose events were relabelled)."""
    values = (*(item[name] for name in FIELDS), item.get("auth"))
    return hashlib.sha256(encode_event(values, item.get("hash_format"))).hexdigest()


def load(data: bytes | str) -> Any:
    """A bundle file's JSON (UsageError if it is not JSON within the size limit)."""
    if len(data) > BUNDLE_LIMIT:
        raise UsageError(f"the bundle is larger than {BUNDLE_LIMIT} bytes")
    try:
        return json.loads(data, parse_constant=_refuse)
    except (ValueError, RecursionError) as e:
        raise UsageError(
            f"the bundle is not JSON ({str(e).splitlines()[0] if str(e) else e})"
        ) from None


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def check(
    bundle: Any,
    public_key: Verifier,
    witnesses: Sequence[Verifier] = (),
    min_cosignatures: int = 0,
    previous: Any = None,
) -> CheckResult:
    """Verify a bundle without any database (see the module's docstring for what).

    ``previous``: an older bundle of the same instance; then every event it held must still
    be in this one, at the same leaf, unchanged (an instance's history rewritten between
    the two is caught, whoever holds the database)."""
    problems: list[str] = []
    try:
        return _check(bundle, public_key, witnesses, min_cosignatures, previous, problems)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        problems.append(f"the bundle is malformed ({type(e).__name__}: {e})")
        return CheckResult(False, problems=tuple(problems))


def _check(
    bundle: Any,
    public_key: Verifier,
    witnesses: Sequence[Verifier],
    min_cosignatures: int,
    previous: Any,
    problems: list[str],
) -> CheckResult:
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        return CheckResult(False, problems=(f"not a {FORMAT} bundle",))
    try:
        opened = open_checkpoint(bundle["checkpoint"], public_key, tuple(witnesses))
    except NoteError as e:
        return CheckResult(False, problems=(f"checkpoint: {e}",))
    cp = opened.checkpoint
    cosigners = tuple(name for name, _ in opened.cosigners)
    if len(cosigners) < min_cosignatures:
        problems.append(
            f"the checkpoint has {len(cosigners)} valid cosignature(s) of the given witnesses, "
            f"fewer than the {min_cosignatures} required"
        )
    instance = bundle["instance"]
    if type(instance) is not int or bundle.get("tree_size") != cp.size:
        problems.append("the bundle's instance or tree size is not the checkpoint's")
    events = bundle["events"]
    if not isinstance(events, list) or not events:
        problems.append("the bundle holds no events")
        events = []
    prev, last_leaf = GENESIS, -1
    for n, item in enumerate(events, start=1):
        where = f"event {n} (seq {item.get('seq')!r})"
        if item["instance"] != instance or item["seq"] != n or type(item["seq"]) is not int:
            problems.append(f"{where}: not seq {n} of instance {instance}")
            break
        if n == 1 and item["trigger"] != "start":
            problems.append(f"{where}: the first event is not the instance's start")
        if item["prev_hash"] != prev:
            problems.append(f"{where}: prev_hash is not the previous event's hash (chain broken)")
            break
        try:
            computed = event_hash_of(item)
        except UnknownFormat as e:
            problems.append(f"{where}: {e} is not one workflow writes (altered)")
            break
        if computed != item["hash"]:
            problems.append(f"{where}: its hash is not the hash of its fields (altered)")
            break
        leaf = item["leaf_index"]
        if type(leaf) is not int or leaf <= last_leaf:
            problems.append(f"{where}: leaf_index is not after the previous event's")
            break
        try:
            proof = [base64.b64decode(p, validate=True) for p in item["inclusion_proof"]]
            data = bytes.fromhex(item["hash"])
        except (binascii.Error, ValueError, TypeError):
            problems.append(f"{where}: the inclusion proof or hash is not base64 / hex")
            break
        if any(
            base64.b64encode(p).decode() != s
            for p, s in zip(proof, item["inclusion_proof"], strict=True)
        ):
            problems.append(f"{where}: the inclusion proof is not canonical base64")
            break
        if not merkle.verify_inclusion(leaf, cp.size, merkle.leaf_hash(data), proof, cp.root):
            problems.append(
                f"{where}: its inclusion proof does not lead to the checkpoint's root "
                f"(leaf {leaf}, tree size {cp.size})"
            )
            break
        prev, last_leaf = item["hash"], leaf
    if previous is not None:
        problems.extend(_compare(previous, instance, events))
    return CheckResult(
        ok=not problems,
        instance=instance,
        events=len(events),
        tree_size=cp.size,
        origin=cp.origin,
        cosigners=cosigners,
        problems=tuple(problems),
    )


def _compare(previous: Any, instance: Any, events: list[Any]) -> list[str]:
    if not isinstance(previous, dict) or previous.get("instance") != instance:
        return ["the previous bundle is not of this instance"]
    now = {e.get("seq"): e for e in events if isinstance(e, dict)}
    for old in previous.get("events", []):
        seq = old.get("seq")
        new = now.get(seq)
        if new is None:
            return [f"seq {seq} of the previous bundle is missing now (history was rewritten)"]
        if (new.get("hash"), new.get("leaf_index")) != (old.get("hash"), old.get("leaf_index")):
            return [
                f"seq {seq} differs from the previous bundle's (leaf {old.get('leaf_index')}): "
                "history was rewritten"
            ]
    return []

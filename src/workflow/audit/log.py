"""The append-only log of every audit entry, as an RFC 6962 Merkle tree, over a bare ``Store``.

**What is in it.** Every audit entry: instance events, grant events, account events and
denials. A leaf is ``SHA-256(0x00 || h)`` where ``h`` is the entry's own hash (the 32 bytes
of its hex ``hash``: ``wf3`` for events, ``wf1``/``wf2`` for older events, ``wf1`` grant
events, ``wd1`` denials, ``wa1`` account events; each encoding is tagged, so entries of
different kinds never collide).

**How entries get in, and in what order (after commit, as Trillian Tessera does).** Writers
do not touch the log. A database trigger on each audit table queues the new entry in
``workflow_audit_queue`` inside the writer's own transaction, which costs an insert and takes
no lock another writer waits for, so writers on different instances contend no more than
before. :func:`integrate` then moves queued entries into the log: under one lock (a
PostgreSQL advisory lock / SQLite's write lock) it reads the queue rows *visible* to it,
i.e. committed, in queue order, gives them the next leaf indexes, stores the leaves and the
perfect subtrees they complete, and deletes them from the queue, all in one transaction.
Entries committed but not yet integrated are exactly the queue's rows: no watermark, so an
entry whose transaction began early and committed late is never skipped; it simply gets a
later leaf. The order is therefore *integration order*: an entry's leaf comes after every
entry integrated before it committed. Within one chain (an instance's events, the grant, denial
and account chains) writers are serialised, so each chain's entries reach the log in chain
order. ``checkpoint``, ``prove``, ``verify --checkpoint`` and ``cosign`` integrate first.

**What is stored.** Every perfect subtree's hash (``workflow_audit_nodes``), so the root of
any size and any inclusion or consistency proof read O(log n) rows in one query.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

from workflow.audit import merkle
from workflow.audit.chain import now_utc
from workflow.audit.note import (
    COSIGNATURE,
    Checkpoint,
    NoteError,
    Signer,
    Verifier,
    add_signature,
    open_checkpoint,
    parse_note,
    sign_checkpoint,
)
from workflow.errors import UsageError, WorkflowError
from workflow.storage import auditlog as q
from workflow.storage.store import Store

#: Queue rows integrated per transaction (bounds the time the log's lock is held).
BATCH = 5000
_HEX64 = re.compile(r"[0-9a-f]{64}")


def entry_bytes(entry_hash: object) -> bytes:
    """What a leaf hashes: the 32 bytes of a well-formed hex hash; anything else an intruder
    stored, as its UTF-8 text (it then matches no recomputed hash, and verify says so)."""
    if isinstance(entry_hash, str) and _HEX64.fullmatch(entry_hash):
        return bytes.fromhex(entry_hash)
    return str(entry_hash).encode("utf-8", "surrogateescape")


def integrate(store: Store, limit: int | None = None) -> int:
    """Move committed queue entries into the log, a batch per transaction; return how many."""
    total = 0
    while limit is None or total < limit:
        want = BATCH if limit is None else min(BATCH, limit - total)
        done = store.run(functools.partial(_integrate_batch, limit=want), write=True)
        total += done
        if done < want:
            break
    return total


def _integrate_batch(conn: Any, limit: int) -> int:
    q.lock_log(conn)
    rows = q.queued(conn, limit)
    if not rows:
        return 0
    size = q.tree_size(conn)
    compact = _compact_range(conn, size)
    nodes: list[tuple[int, bytes]] = []
    now = now_utc()
    leaves = []
    for row in rows:
        leaves.append(q.LeafRow(compact.size, row.source, row.source_id, row.entry_hash, now))
        compact.append(
            merkle.leaf_hash(entry_bytes(row.entry_hash)),
            lambda node, h: nodes.append((q.node_id(*node), h)),
        )
    q.append(conn, leaves, nodes, [r.id for r in rows])
    return len(rows)


def _compact_range(conn: Any, size: int) -> merkle.CompactRange:
    edge = merkle.root_plan(size)
    found = q.nodes(conn, edge)
    missing = [n for n in edge if n not in found]
    if missing:
        raise TreeDamaged(f"the audit log's stored tree lacks node {missing[0]} (altered?)")
    return merkle.CompactRange(size, [found[n] for n in edge])


class ProofFailed(WorkflowError):
    """The log cannot prove what was asked: it no longer matches the checkpoint (history
    was rewritten), or the instance's events differ from the entries the log holds."""

    exit_code = 1


class TreeDamaged(UsageError):
    """The stored tree is incomplete (a node missing): it was altered outside workflow."""

    exit_code = 1


@dataclass(frozen=True)
class TreeHead:
    size: int
    root: bytes


def head(conn: Any, size: int | None = None) -> TreeHead:
    """The root of the log's first ``size`` leaves (default: all), from the stored nodes."""
    if size is None:
        size = q.tree_size(conn)
    plan = merkle.root_plan(size)
    found = q.nodes(conn, plan)
    if len(found) != len(plan):
        raise TreeDamaged(f"the audit log's stored tree lacks nodes for size {size} (altered?)")
    return TreeHead(size, merkle.evaluate([plan], found)[0])


def tree_head(store: Store) -> TreeHead:
    """Integrate, then the current tree head."""
    integrate(store)
    with store.snapshot() as conn:
        return head(conn)


def checkpoint(store: Store, signer: Signer, origin: str | None = None) -> str:
    """Integrate, then a checkpoint of the whole log signed by ``signer`` (a C2SP note)."""
    current = tree_head(store)
    name = origin or signer.name
    if not name or "\n" in name:
        raise UsageError("the origin must be one non-empty line")
    return sign_checkpoint(Checkpoint(name, current.size, current.root), signer)


def consistency_proof(conn: Any, old: int, new: int) -> list[bytes]:
    plan = merkle.consistency_plan(old, new)
    found = q.nodes(conn, merkle.needed(plan))
    try:
        return merkle.evaluate(plan, found)
    except KeyError as e:
        raise TreeDamaged(f"the audit log's stored tree lacks node {e} (altered?)") from None


def inclusion_proofs(conn: Any, indexes: list[int], size: int) -> list[list[bytes]]:
    plans = [merkle.inclusion_plan(i, size) for i in indexes]
    found = q.nodes(conn, {n for plan in plans for n in merkle.needed(plan)})
    try:
        return [merkle.evaluate(plan, found) for plan in plans]
    except KeyError as e:
        raise TreeDamaged(f"the audit log's stored tree lacks node {e} (altered?)") from None


def is_consistent(old: Checkpoint, new: TreeHead, proof: list[bytes]) -> bool:
    if old.size == 0:
        return old.root == merkle.EMPTY_ROOT
    return merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)


# --------------------------------------------------------------------------- verify


@dataclass(frozen=True)
class LogProblem:
    """A problem of the log: the leaf (None: not in the log) and the entry it names."""

    leaf: int | None
    entry: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"leaf_index": self.leaf, "entry": self.entry, "reason": self.reason}


@dataclass(frozen=True)
class ConsistencyResult:
    """``verify --checkpoint``: whether the current log extends the checkpoint's."""

    ok: bool
    checkpoint_size: int
    tree_size: int
    root: str
    signature_checked: bool
    problems: tuple[LogProblem, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checkpoint_size": self.checkpoint_size,
            "tree_size": self.tree_size,
            "root": self.root,
            "signature_checked": self.signature_checked,
            "problems": [p.to_dict() for p in self.problems],
        }


def read_checkpoint(data: str | bytes, public_key: Verifier | None) -> Checkpoint:
    """A checkpoint from a file's content: a signed note, or a proof bundle holding one."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError("the checkpoint is not UTF-8 text") from None
    if data.lstrip().startswith("{"):
        import json

        try:
            data = json.loads(data)["checkpoint"]
        except (ValueError, KeyError, TypeError):
            raise UsageError("not a checkpoint, nor a proof bundle holding one") from None
        if not isinstance(data, str):
            raise UsageError("the bundle's checkpoint is not text")
    try:
        return open_checkpoint(data, public_key).checkpoint
    except NoteError as e:
        raise UsageError(f"checkpoint: {e}") from None


def verify_checkpoint(
    store: Store, data: str | bytes, public_key: Verifier | None = None
) -> ConsistencyResult:
    """Integrate, then prove the current log extends the tree ``data`` (a checkpoint, or a
    proof bundle's) signed, and that every leaf still matches its entry and every entry is
    in the log. Problems name the first entry that differs where the database still shows
    it (a leaf whose entry changed or vanished, a leaf hash rewritten in the tree)."""
    old = read_checkpoint(data, public_key)
    integrate(store)
    problems: list[LogProblem] = []
    with store.snapshot() as conn:
        size = q.tree_size(conn)
        try:
            current = head(conn, size)
        except TreeDamaged as e:
            current = TreeHead(size, b"")
            problems.append(LogProblem(None, "tree", str(e)))
        if size < old.size:
            problems.append(
                LogProblem(
                    size,
                    f"leaf {size}",
                    f"the log holds {size} entries, fewer than the {old.size} the checkpoint "
                    f"covered: leaves {size} to {old.size - 1} were removed",
                )
            )
        elif current.root:
            proof = consistency_proof(conn, old.size, size)
            if not is_consistent(old, current, proof):
                first = _first_rewritten_leaf(conn, old.size)
                problems.append(
                    first
                    or LogProblem(
                        None,
                        f"leaves 0 to {old.size - 1}",
                        f"the log does not extend the checkpoint (size {old.size}): its first "
                        f"{old.size} entries were rewritten, together with the tree",
                    )
                )
        for leaf, source, source_id, _logged, now in q.mismatches(conn):
            what = "was removed" if now is None else "differs from the one the log holds"
            problems.append(
                LogProblem(
                    leaf,
                    q.describe(conn, source, source_id),
                    f"the entry {what} (history was rewritten after it was logged)",
                )
            )
        for source, source_id in q.unlogged(conn):
            problems.append(
                LogProblem(
                    None,
                    q.describe(conn, source, source_id),
                    "the entry is in no leaf of the log (inserted around the log)",
                )
            )
        damaged, recomputed = _scan_leaves(conn)
        if damaged is not None and all(p.leaf != damaged.leaf for p in problems):
            problems.append(damaged)
        elif damaged is None and current.root and recomputed != current.root:
            problems.append(
                LogProblem(
                    None,
                    "tree",
                    "the tree's stored nodes do not add up to its leaves (the tree was altered)",
                )
            )
    problems.sort(key=lambda p: (p.leaf is None, p.leaf or 0))
    return ConsistencyResult(
        ok=not problems,
        checkpoint_size=old.size,
        tree_size=size,
        root=current.root.hex(),
        signature_checked=public_key is not None,
        problems=tuple(problems),
    )


def _first_rewritten_leaf(conn: Any, size: int) -> LogProblem | None:
    """Where the stored leaf hashes still show history (the tree's level 0 untouched), the
    first leaf whose entry hash was replaced in the log."""
    for leaf, source, source_id, entry, stored in q.leaf_pairs(conn, size):
        if stored is not None and bytes(stored) != merkle.leaf_hash(entry_bytes(entry)):
            return LogProblem(
                leaf,
                q.describe(conn, source, source_id),
                "the log's entry at this leaf was replaced (history was rewritten)",
            )
    return None


def _scan_leaves(conn: Any) -> tuple[LogProblem | None, bytes]:
    """The first leaf whose stored leaf hash does not match its entry (a tampered tree), and
    the root re-computed from the log's entries alone."""
    compact = merkle.CompactRange()
    bad: LogProblem | None = None
    for leaf, source, source_id, entry, stored in q.leaf_pairs(conn):
        computed = merkle.leaf_hash(entry_bytes(entry))
        compact.append(computed)
        if bad is None and (stored is None or bytes(stored) != computed):
            bad = LogProblem(
                leaf,
                q.describe(conn, source, source_id),
                "the tree's leaf hash does not match the log's entry (the tree was altered)",
            )
    return bad, compact.root()


# --------------------------------------------------------------------------- witnesses


def require_signed_tree(
    conn: Any, cp: Checkpoint, *, removed: str = "", rewritten: str | None = None
) -> None:
    """ProofFailed unless the tree ``cp`` signed is still this log's: at least ``cp.size``
    entries, the first ``cp.size`` of them hashing to ``cp.root``. ``removed`` is added to
    the message of a log smaller than the checkpoint, ``rewritten`` replaces the message of
    a root that differs (each caller says what it means for its reader)."""
    size = q.tree_size(conn)
    if cp.size > size:
        raise ProofFailed(f"the checkpoint covers {cp.size} entries, the log holds {size}{removed}")
    try:
        root = head(conn, cp.size).root
    except TreeDamaged as e:
        raise ProofFailed(str(e)) from None
    if root != cp.root:
        raise ProofFailed(
            rewritten
            or f"the checkpoint's root is not this log's at size {cp.size} "
            "(another log, or history was rewritten)"
        )


def cosign(
    store: Store,
    checkpoint_text: str,
    witness: Signer,
    last: str | None = None,
    log_key: Verifier | None = None,
) -> str:
    """A witness's cosignature (``cosignature/v1``) added to a checkpoint, after checking,
    on this database, that the checkpoint is this log's tree at its size and (``last``: the
    checkpoint the witness cosigned before) that it is consistent with ``last``: never
    smaller, never a fork. ProofFailed (exit 1) otherwise; nothing is signed."""
    try:
        opened = open_checkpoint(checkpoint_text, log_key)
        before = Checkpoint.parse(parse_note(last).text) if last else None
    except NoteError as e:
        raise UsageError(f"checkpoint: {e}") from None
    cp = opened.checkpoint
    if before is not None and before.origin != cp.origin:
        raise UsageError(
            f"this witness cosigned checkpoints of {before.origin!r}, not {cp.origin!r}"
        )
    integrate(store)
    with store.snapshot() as conn:
        require_signed_tree(conn, cp)
        if before is not None:
            if cp.size < before.size:
                raise ProofFailed(
                    f"the checkpoint (size {cp.size}) is older than the one this witness "
                    f"cosigned last (size {before.size})"
                )
            proof = consistency_proof(conn, before.size, cp.size)
            if not is_consistent(before, TreeHead(cp.size, cp.root), proof):
                raise ProofFailed(
                    f"the checkpoint is not consistent with the one this witness cosigned "
                    f"last (size {before.size}): the log forked or history was rewritten"
                )
    cosigner = Signer(witness.name, COSIGNATURE, witness.seed)
    return add_signature(opened.note, cosigner.sign(cp.text()))

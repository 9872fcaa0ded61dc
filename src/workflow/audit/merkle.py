"""RFC 6962 / RFC 9162 Merkle trees: hashes, roots, inclusion and consistency proofs.

The tree over leaves ``d[0..n)`` is RFC 6962's: a leaf hashes as ``SHA-256(0x00 || d)``, an
inner node as ``SHA-256(0x01 || left || right)``, and a tree of ``n`` leaves splits at the
largest power of two smaller than ``n``. The empty tree's root is ``SHA-256("")``.

Storage keeps every *perfect* subtree's hash (a node at ``level`` l and ``index`` i covers
leaves ``[i * 2**l, (i + 1) * 2**l)``); every hash a root or a proof needs is such a node or
a fold of O(log n) of them along the tree's right edge. So proof *generation* here is planned
in two steps: :func:`inclusion_plan` / :func:`consistency_plan` / :func:`root_plan` name the
perfect nodes needed (one batched read), and :func:`evaluate` folds them into hashes.

Verification follows RFC 9162 sections 2.1.3.2 and 2.1.4.2 exactly, including every bound
check: a leaf index outside the tree, a path too long or too short, a proof for another tree
size, a root of the wrong length are refused (the class of bug of immudb's GHSA-672p-m5jq-mrh8,
where a verifier that only folds the path accepts forged proofs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence

#: A perfect subtree: (level, index); it covers leaves [index << level, (index + 1) << level).
Node = tuple[int, int]
#: A hash as the fold of perfect subtrees from the right: h(n1, h(n2, ... nk)).
Term = tuple[Node, ...]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


# --------------------------------------------------------------------------- building


class CompactRange:
    """The right edge of a tree of ``size`` leaves: one perfect subtree per set bit of the
    size, largest first. Appending a leaf merges equal subtrees (Trillian's compact range);
    every perfect node made on the way is reported to ``on_node`` so it can be stored."""

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        nodes = range_nodes(0, size)
        if len(nodes) != len(hashes):
            raise ValueError(
                f"a tree of {size} leaves has {len(nodes)} edge nodes, not {len(hashes)}"
            )
        self.size = size
        self.nodes: list[Node] = list(nodes)
        self.hashes: list[bytes] = list(hashes)

    def append(self, leaf: bytes, on_node: Callable[[Node, bytes], None] | None = None) -> None:
        """Append one leaf *hash*."""
        node: Node = (0, self.size)
        h = leaf
        if on_node is not None:
            on_node(node, h)
        while self.nodes and self.nodes[-1][0] == node[0]:
            (level, index), left = self.nodes.pop(), self.hashes.pop()
            h = node_hash(left, h)
            node = (level + 1, index >> 1)
            if on_node is not None:
                on_node(node, h)
        self.nodes.append(node)
        self.hashes.append(h)
        self.size += 1

    def root(self) -> bytes:
        return fold(self.hashes) if self.hashes else EMPTY_ROOT


def fold(hashes: Sequence[bytes]) -> bytes:
    """The hash of perfect subtrees side by side, left to right: folded from the right."""
    h = hashes[-1]
    for left in reversed(hashes[:-1]):
        h = node_hash(left, h)
    return h


def root_of(leaves: Iterable[bytes]) -> bytes:
    """The root over leaf *hashes* (streaming, O(log n) memory)."""
    compact = CompactRange()
    for leaf in leaves:
        compact.append(leaf)
    return compact.root()


# --------------------------------------------------------------------------- planning


def range_nodes(lo: int, hi: int) -> Term:
    """The perfect subtrees whose fold is the RFC 6962 hash of leaves [lo, hi), as they
    appear in the recursion (``lo`` aligned as the recursion aligns it)."""
    out: list[Node] = []
    while hi > lo:
        n = hi - lo
        if n & (n - 1) == 0 and lo % n == 0:
            out.append((n.bit_length() - 1, lo >> (n.bit_length() - 1)))
            break
        k = _split(n)
        if lo % k:
            raise ValueError(f"range [{lo}, {hi}) is not one of the tree's")
        out.append((k.bit_length() - 1, lo >> (k.bit_length() - 1)))
        lo += k
    return tuple(out)


def root_plan(size: int) -> Term:
    """What the root of a tree of ``size`` leaves folds (empty: the empty tree)."""
    return range_nodes(0, size)


def inclusion_plan(index: int, size: int) -> list[Term]:
    """The audit path of leaf ``index`` in a tree of ``size`` leaves (RFC 6962 PATH), leaf
    side first, each hash as a term to evaluate."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    path: list[Term] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(range_nodes(lo + k, hi))
            hi = lo + k
        else:
            path.append(range_nodes(lo, lo + k))
            lo = lo + k
    path.reverse()
    return path


def consistency_plan(old: int, new: int) -> list[Term]:
    """The consistency proof from a tree of ``old`` leaves to one of ``new`` (RFC 6962
    PROOF / SUBPROOF), as terms; empty when ``old`` is 0 or equals ``new``."""
    if not 0 <= old <= new:
        raise ValueError(f"no consistency proof from {old} leaves to {new}")
    if old in (0, new):
        return []
    out: list[Term] = []

    def subproof(m: int, lo: int, hi: int, whole: bool) -> None:
        n = hi - lo
        if m == n:
            if not whole:
                out.append(range_nodes(lo, hi))
            return
        k = _split(n)
        if m <= k:
            subproof(m, lo, lo + k, whole)
            out.append(range_nodes(lo + k, hi))
        else:
            subproof(m - k, lo + k, hi, False)
            out.append(range_nodes(lo, lo + k))

    subproof(old, 0, new, True)
    return out


def needed(terms: Iterable[Term]) -> set[Node]:
    return {node for term in terms for node in term}


def evaluate(terms: Sequence[Term], hashes: Mapping[Node, bytes]) -> list[bytes]:
    """The hashes of planned terms, from the stored perfect nodes (KeyError if one is
    missing: the store is incomplete)."""
    return [fold([hashes[n] for n in term]) if term else EMPTY_ROOT for term in terms]


# --------------------------------------------------------------------------- verifying


def _hash_ok(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes | None:
    """The root a valid audit path implies (RFC 9162 2.1.3.2), or None if the path cannot
    be one for this index and size (index out of range, path too long or too short)."""
    if type(index) is not int or type(size) is not int or not 0 <= index < size:
        return None
    if not _hash_ok(leaf) or not all(_hash_ok(p) for p in proof):
        return None
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return None  # the path is longer than this leaf's depth
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        return None  # the path is shorter than this leaf's depth
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree of ``size``
    leaves whose root is ``root``."""
    computed = root_from_inclusion(index, size, leaf, proof)
    return computed is not None and _hash_ok(root) and computed == root


def verify_consistency(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether ``proof`` shows the tree of ``new`` leaves (root ``new_root``) extends the
    tree of ``old`` leaves (root ``old_root``) (RFC 9162 2.1.4.2).

    Equal sizes need an empty proof and equal roots. An old size of 0 proves nothing and is
    refused here (the empty tree is a prefix of every tree: callers decide that case)."""
    if type(old) is not int or type(new) is not int or not 0 <= old <= new:
        return False
    if not (_hash_ok(old_root) and _hash_ok(new_root)) or not all(_hash_ok(p) for p in proof):
        return False
    if old == new:
        return not proof and old_root == new_root
    if old == 0 or not proof:
        return False
    path = list(proof)
    if old & (old - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root

"""Audit proofs an outsider can check (issue 14): the RFC 6962 tree, signed checkpoints,
inclusion and consistency proofs, witnesses, and the database-free ``check``."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workflow.audit import merkle

VECTORS = json.loads(
    (Path(__file__).parent / "vectors" / "merkle_transparency_dev.json").read_text()
)


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _tree(n: int) -> tuple[list[bytes], dict[merkle.Node, bytes]]:
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    store: dict[merkle.Node, bytes] = {}
    compact = merkle.CompactRange()
    for leaf in leaves:
        compact.append(leaf, store.__setitem__)
    return leaves, store


def _reference_root(leaves: list[bytes]) -> bytes:
    """RFC 6962's recursive definition, word for word."""
    if not leaves:
        return merkle.EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return merkle.node_hash(_reference_root(leaves[:k]), _reference_root(leaves[k:]))


# --------------------------------------------------------------------------- Merkle vectors


def test_reference_tree_roots() -> None:
    ref = VECTORS["reference_tree"]
    leaves = [merkle.leaf_hash(bytes.fromhex(x)) for x in ref["leaves_hex"]]
    for n in range(1, 9):
        assert merkle.root_of(leaves[:n]).hex() == ref["roots_hex"][n - 1]
    assert merkle.root_of([]) == merkle.EMPTY_ROOT


@pytest.mark.parametrize("vector", VECTORS["inclusion"], ids=lambda v: v["file"])
def test_inclusion_vectors(vector: dict) -> None:
    ok = merkle.verify_inclusion(
        vector["leafIdx"],
        vector["treeSize"],
        _b64(vector["leafHash"]),
        [_b64(p) for p in vector["proof"] or []],
        _b64(vector["root"]),
    )
    assert ok is not vector["wantErr"]


@pytest.mark.parametrize("vector", VECTORS["consistency"], ids=lambda v: v["file"])
def test_consistency_vectors(vector: dict) -> None:
    root1, root2 = _b64(vector["root1"]), _b64(vector["root2"])
    ok = merkle.verify_consistency(
        vector["size1"], vector["size2"], root1, root2, [_b64(p) for p in vector["proof"] or []]
    )
    if len(root1) != 32 and not vector["wantErr"]:
        # transparency-dev accepts equal sizes with any equal "roots" ("don't care");
        # this verifier is stricter and refuses a root that is not a SHA-256 hash.
        assert not ok
        return
    assert ok is not vector["wantErr"]


def test_generated_proofs_match_the_vectors() -> None:
    ref = VECTORS["reference_tree"]
    store: dict[merkle.Node, bytes] = {}
    compact = merkle.CompactRange()
    for x in ref["leaves_hex"]:
        compact.append(merkle.leaf_hash(bytes.fromhex(x)), store.__setitem__)
    checked = 0
    for v in VECTORS["inclusion"]:
        if not v["wantErr"] and v["file"].split("/")[1].isdigit():
            proof = merkle.evaluate(merkle.inclusion_plan(v["leafIdx"], v["treeSize"]), store)
            assert [base64.b64encode(p).decode() for p in proof] == (v["proof"] or [])
            checked += 1
    for v in VECTORS["consistency"]:
        if not v["wantErr"] and len(_b64(v["root1"])) == 32:
            proof = merkle.evaluate(merkle.consistency_plan(v["size1"], v["size2"]), store)
            assert [base64.b64encode(p).decode() for p in proof] == (v["proof"] or [])
            checked += 1
    assert checked >= 9


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 70), st.data())
def test_every_proof_of_every_size_verifies_and_only_for_its_size(n: int, data) -> None:
    more, _ = _tree(2 * n)  # the same leaves, then more: the real roots of larger trees
    leaves, store = more[:n], _tree(n)[1]
    root = _reference_root(leaves)
    assert merkle.evaluate([merkle.root_plan(n)], store)[0] == root
    i = data.draw(st.integers(0, n - 1))
    proof = merkle.evaluate(merkle.inclusion_plan(i, n), store)
    assert merkle.verify_inclusion(i, n, leaves[i], proof, root)
    assert len(proof) <= n.bit_length()
    # the same proof never verifies against the (real) root of a tree of another size
    for other in {n - 1, n + 1, 2 * n, n // 2} - {n}:
        if other > i:
            other_root = _reference_root(more[:other])
            assert not merkle.verify_inclusion(i, other, leaves[i], proof, other_root)
            assert not merkle.verify_inclusion(i, n, leaves[i], proof, other_root)
    for j in {i - 1, i + 1, i ^ 1, i + n} - {i}:
        if j >= 0:
            assert not merkle.verify_inclusion(j, n, leaves[i], proof, root)
    # naive-verifier forgeries (GHSA-672p-m5jq-mrh8): path too long, too short
    assert not merkle.verify_inclusion(i, n, leaves[i], [*proof, root], root)
    if proof:
        assert not merkle.verify_inclusion(i, n, leaves[i], proof[:-1], root)
        assert not merkle.verify_inclusion(i, n, proof[0], proof, root) or proof[0] == leaves[i]
    m = data.draw(st.integers(1, n))
    old_root = _reference_root(leaves[:m])
    cproof = merkle.evaluate(merkle.consistency_plan(m, n), store)
    assert merkle.verify_consistency(m, n, old_root, root, cproof)
    if m < n:
        assert not merkle.verify_consistency(
            m, n + 1, old_root, _reference_root(more[: n + 1]), cproof
        )
        assert not merkle.verify_consistency(m, n, root, old_root, cproof)
        assert not merkle.verify_consistency(m, n, old_root, root, [*cproof, root])
        assert not merkle.verify_consistency(m, n, old_root, root, cproof[:-1])
        if m > 1:
            assert not merkle.verify_consistency(m - 1, n, old_root, root, cproof)

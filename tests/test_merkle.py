"""Tests for perspt_store.merkle: RFC 9162 shape, proofs, and canonical encoding.

The tree code is checked three ways: against the published RFC 6962 test
vectors (run with SHA-256), against a deliberately naive recursive
transcription of RFC 9162 §2.1 (run with BLAKE3), and by Hypothesis laws
(every proof verifies; every single-bit corruption is rejected without an
exception). The BLAKE3 vectors below are quoted in docs/merkle.md, and a test
keeps the two in step.
"""

from __future__ import annotations

import dataclasses
import doctest
import math
import random
import re
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace

import pydantic
import pytest
from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st

from perspt_store import merkle
from perspt_store.merkle import (
    BLAKE3,
    NODE_STATE_FIELDS,
    NODE_STATE_TAG,
    SHA256,
    Hasher,
    MerkleTree,
    empty_root,
    encode_fields,
    encode_node_state,
    hash_node_state,
    leaf_hash,
    node_hash,
    tree_root,
    verify_consistency,
    verify_inclusion,
)
from perspt_store.rows import NodeStateRecord

DOCS = Path(__file__).resolve().parents[1] / "docs" / "merkle.md"
FAST = settings(max_examples=50, deadline=None)


def hx(text: str) -> bytes:
    return bytes.fromhex(text)


# --- RFC 9162 reference: a literal transcription of §2.1, slow on purpose ----


def _split(n: int) -> int:
    """Largest power of two strictly below n (n >= 2)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


class Reference:
    """MTH, PATH and PROOF exactly as RFC 9162 writes them (memoised MTH)."""

    def __init__(self, leaves: Sequence[bytes], hasher: Hasher = BLAKE3) -> None:
        self.leaves = list(leaves)
        self.hasher = hasher
        self._memo: dict[tuple[int, int], bytes] = {}

    def mth(self, lo: int, hi: int) -> bytes:
        if (lo, hi) not in self._memo:
            n = hi - lo
            if n == 0:
                value = self.hasher.digest(b"")
            elif n == 1:
                value = self.leaves[lo]
            else:
                k = _split(n)
                value = self.hasher.digest(b"\x01" + self.mth(lo, lo + k) + self.mth(lo + k, hi))
            self._memo[lo, hi] = value
        return self._memo[lo, hi]

    def path(self, m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n == 1:
            return []
        k = _split(n)
        if m < k:
            return [*self.path(m, lo, lo + k), self.mth(lo + k, hi)]
        return [*self.path(m - k, lo + k, hi), self.mth(lo, lo + k)]

    def proof(self, m: int, n: int) -> list[bytes]:
        return self.subproof(m, 0, n, True) if 0 < m < n else []

    def subproof(self, m: int, lo: int, hi: int, b: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if b else [self.mth(lo, hi)]
        k = _split(n)
        if m <= k:
            return [*self.subproof(m, lo, lo + k, b), self.mth(lo + k, hi)]
        return [*self.subproof(m - k, lo + k, hi, False), self.mth(lo, lo + k)]


def path_shape(m: int, n: int) -> list[bool]:
    """Sibling-on-the-left flags of PATH(m, D[n]), bottom-up (from the RFC recursion)."""
    if n == 1:
        return []
    k = _split(n)
    return [*path_shape(m, k), False] if m < k else [*path_shape(m - k, n - k), True]


def proof_shape(m: int, n: int, b: bool = True) -> list[str]:
    """Step kinds of PROOF(m, D[n]): 'both' folds into old and new root, 'new' only new."""
    if m == n:
        return ["seed=old_root" if b else "seed=proof"]
    k = _split(n)
    if m <= k:
        return [*proof_shape(m, k, b), "new"]
    return [*proof_shape(m - k, n - k, False), "both"]


def leaves_for(n: int, salt: bytes = b"", hasher: Hasher = BLAKE3) -> list[bytes]:
    return [hasher.leaf(salt + i.to_bytes(4, "big")) for i in range(n)]


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8 % len(out)] ^= 1 << (bit % 8)
    return bytes(out)


# --- published RFC 6962 / 9162 vectors (SHA-256) ------------------------------
# From the certificate-transparency reference tests, as carried by
# transparency-dev/merkle (testonly/constants.go, proof/verify_test.go,
# rfc6962/rfc6962_test.go). Indices here are 0-based.

CT_INPUTS = [
    hx(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_ROOTS = {
    0: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}
CT_INCLUSION = {
    (0, 1): [],
    (0, 2): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"],
    (1, 2): ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"],
    (2, 3): ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    (1, 5): [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}
CT_CONSISTENCY = {
    (1, 1): [],
    (1, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
    (6, 7): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}


@pytest.fixture(scope="module")
def ct_tree() -> MerkleTree:
    return MerkleTree([SHA256.leaf(data) for data in CT_INPUTS], hasher=SHA256)


def test_sha256_hasher_matches_rfc6962_hasher_vectors() -> None:
    assert empty_root(hasher=SHA256) == hx(CT_ROOTS[0])
    assert leaf_hash(b"", hasher=SHA256) == hx(CT_ROOTS[1])
    assert leaf_hash(b"L123456", hasher=SHA256) == hx(
        "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
    )
    assert node_hash(b"N123", b"N456", hasher=SHA256) == hx(
        "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"
    )


@pytest.mark.parametrize("size", range(9))
def test_roots_match_ct_vectors(ct_tree: MerkleTree, size: int) -> None:
    leaves = [SHA256.leaf(data) for data in CT_INPUTS[:size]]
    assert ct_tree.root(size) == hx(CT_ROOTS[size])
    assert tree_root(leaves, hasher=SHA256) == hx(CT_ROOTS[size])
    assert MerkleTree(leaves, hasher=SHA256).root() == hx(CT_ROOTS[size])


@pytest.mark.parametrize(("index", "size"), CT_INCLUSION)
def test_inclusion_proofs_match_ct_vectors(ct_tree: MerkleTree, index: int, size: int) -> None:
    expected = [hx(h) for h in CT_INCLUSION[index, size]]
    assert ct_tree.inclusion_proof(index, size) == expected
    leaf = SHA256.leaf(CT_INPUTS[index])
    assert verify_inclusion(leaf, index, size, expected, hx(CT_ROOTS[size]), hasher=SHA256)


@pytest.mark.parametrize(("old", "new"), CT_CONSISTENCY)
def test_consistency_proofs_match_ct_vectors(ct_tree: MerkleTree, old: int, new: int) -> None:
    expected = [hx(h) for h in CT_CONSISTENCY[old, new]]
    assert ct_tree.consistency_proof(old, new) == expected
    assert verify_consistency(
        old, new, hx(CT_ROOTS[old]), hx(CT_ROOTS[new]), expected, hasher=SHA256
    )


def test_every_ct_proof_agrees_with_the_reference(ct_tree: MerkleTree) -> None:
    ref = Reference([SHA256.leaf(data) for data in CT_INPUTS], SHA256)
    for n in range(1, 9):
        for m in range(n):
            assert ct_tree.inclusion_proof(m, n) == ref.path(m, 0, n)
        for m in range(n + 1):
            assert ct_tree.consistency_proof(m, n) == ref.proof(m, n)


# --- BLAKE3 vectors (quoted in docs/merkle.md) ---------------------------------

B3_EMPTY = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
B3_LEAF_EMPTY = "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213"
B3_LEAF_L123456 = "ee360c0eefc24240e0d193ce14adb90ae356f0c7ed6f69792d0d4dcaac4afee6"
B3_NODE_N123_N456 = "9150a66ae0f2f5231f678f7f7af3687118634b55d650b52136d448a62f1aa486"
B3_ROOTS = {
    1: "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213",
    2: "d35bd1e16b877c48d056182ad83ae459a44ae2a0c42497d73048b521b661d966",
    3: "5969a72267bd42acf0b2f4d0749032d41a434c8c2d3d7969d4c5a22a1f78304d",
    4: "d74b65d2a8d18d4e9c7e46d6b40e1844705cf36532ac15d205bd3fca5d2bfa58",
    5: "4cb64056def39595286034a932fbb340cffda1338e639f6eaec0d9f875ef59a7",
    6: "e70d89e0403cf28bab02212d5efeefa7cbeb146a4211198ec326314a6ade37d1",
    7: "502bedc8e0155fea3cff11d2d479550eceb9365ec7cc0fb893a048534b4ab9b5",
    8: "eed80dc82a14685b1a6607764e4c253418c4279033e89c0c6ddd7fd1717bede7",
}
B3_INCLUSION_5_8 = [
    "88880e8209cb0b3de4bc379905ceec53eb64c42e7bcbe26bac685549eb397624",
    "d607abd5bfd93555b252d5c3a967aed96db31c2f6b4c9cc223ccf8b3e43a619b",
    "d74b65d2a8d18d4e9c7e46d6b40e1844705cf36532ac15d205bd3fca5d2bfa58",
]
B3_CONSISTENCY_6_8 = [
    "c05914b4ec41520d13a9b0194bd817289caf7c56f30eb20d9dbdaf425520629b",
    "d607abd5bfd93555b252d5c3a967aed96db31c2f6b4c9cc223ccf8b3e43a619b",
    "d74b65d2a8d18d4e9c7e46d6b40e1844705cf36532ac15d205bd3fca5d2bfa58",
]
B3_DEMO_FIELDS = (
    "64656d6f2f7631000000000300000001610000000000000000016203000000080000000000000001"
    "00000001630500000009000000010000000178"
)
B3_NODE_STATE_FULL = (
    "7065727370742d73746f72652f6e6f64652d73746174652f7631000000000c0000000d617474656d"
    "70745f636f756e7403000000080000000000000002000000086368696c6472656e050000001a0000"
    "0002000000077461736b2d3161000000077461736b2d31620000000c636f6d6d69747465645f6174"
    "0100000014323032352d30312d30325430333a30343a30355a00000004676f616c010000000c4164"
    "642061207061727365720000000f6c6173745f6572726f725f7479706500000000000000000b6d65"
    "726b6c655f686173680200000020000102030405060708090a0b0c0d0e0f10111213141516171819"
    "1a1b1c1d1e1f0000000a6e6f64655f636c6173730100000009496e74657266616365000000076e6f"
    "64655f696401000000067461736b2d310000000c6f776e65725f706c7567696e0100000004727573"
    "7400000009706172656e745f69640100000004726f6f740000000573746174650100000009436f6d"
    "706c6574656400000007765f746f74616c04000000083fd0000000000000"
)
B3_NODE_STATE_FULL_HASH = "5d7ce19bcb320dcaf048fbff20b5bd8fe04d0822f615ac0a0d454ce4c3ac2ff6"
B3_NODE_STATE_MINIMAL_HASH = "bbfb884fd76b393af2303acc0db2797ae07495597ffc3f6f27415fa9212e660d"
B3_NODE_STATE_UNICODE_HASH = "0ac7155fb37ab28899b92aaac089b74427288504e1d9e20f47fa18a48a82230c"


@dataclasses.dataclass
class NodeState:
    """Stands in for the pydantic NodeStateRecord (same attribute names).

    It carries ``session_id`` like the real record does; the encoding ignores it.
    """

    node_id: str = "n"
    session_id: str = "s"
    state: str = "Pending"
    v_total: float = 0.0
    merkle_hash: bytes | None = None
    attempt_count: int = 0
    node_class: str | None = None
    owner_plugin: str | None = None
    goal: str | None = None
    parent_id: str | None = None
    children: list[str] | None = None
    last_error_type: str | None = None
    committed_at: str | None = None


FULL = NodeState(
    node_id="task-1",
    session_id="sess-42",
    state="Completed",
    v_total=0.25,
    merkle_hash=bytes(range(32)),
    attempt_count=2,
    node_class="Interface",
    owner_plugin="rust",
    goal="Add a parser",
    parent_id="root",
    children=["task-1a", "task-1b"],
    last_error_type=None,
    committed_at="2025-01-02T03:04:05Z",
)


def test_blake3_primitives_match_documented_vectors() -> None:
    assert empty_root() == hx(B3_EMPTY) == blake3(b"").digest()
    assert MerkleTree().root() == hx(B3_EMPTY)
    assert leaf_hash(b"") == hx(B3_LEAF_EMPTY)
    assert leaf_hash(b"L123456") == hx(B3_LEAF_L123456)
    assert node_hash(b"N123", b"N456") == hx(B3_NODE_N123_N456)


def test_blake3_tree_matches_documented_vectors() -> None:
    tree = MerkleTree(leaf_hash(data) for data in CT_INPUTS)
    assert {n: tree.root(n).hex() for n in range(1, 9)} == B3_ROOTS
    assert [p.hex() for p in tree.inclusion_proof(5, 8)] == B3_INCLUSION_5_8
    assert [p.hex() for p in tree.consistency_proof(6, 8)] == B3_CONSISTENCY_6_8


def test_encoding_matches_documented_vectors() -> None:
    assert encode_fields("demo/v1", {"b": 1, "a": None, "c": ["x"]}).hex() == B3_DEMO_FIELDS
    assert encode_node_state(FULL).hex() == B3_NODE_STATE_FULL
    assert hash_node_state(FULL).hex() == B3_NODE_STATE_FULL_HASH
    assert hash_node_state(FULL) == blake3(b"\x00" + hx(B3_NODE_STATE_FULL)).digest()
    assert hash_node_state(NodeState()).hex() == B3_NODE_STATE_MINIMAL_HASH
    unicode = NodeState(goal="Grüße, 世界 🚀")
    assert hash_node_state(unicode).hex() == B3_NODE_STATE_UNICODE_HASH


def test_docs_quote_every_vector() -> None:
    docs = re.sub(r"\s+", "", DOCS.read_text(encoding="utf-8"))
    vectors = [
        B3_EMPTY,
        B3_LEAF_EMPTY,
        B3_LEAF_L123456,
        B3_NODE_N123_N456,
        *B3_ROOTS.values(),
        *B3_INCLUSION_5_8,
        *B3_CONSISTENCY_6_8,
        B3_DEMO_FIELDS,
        B3_NODE_STATE_FULL,
        B3_NODE_STATE_FULL_HASH,
        B3_NODE_STATE_MINIMAL_HASH,
        B3_NODE_STATE_UNICODE_HASH,
    ]
    assert [v for v in vectors if v not in docs] == []


# --- shape and proofs against the reference (BLAKE3) ---------------------------


def test_roots_agree_with_reference_for_every_size_up_to_130() -> None:
    leaves = leaves_for(130)
    ref = Reference(leaves)
    tree = MerkleTree()
    assert tree.root() == ref.mth(0, 0)
    for n in range(1, 131):
        tree.append(leaves[n - 1])
        assert tree.root() == ref.mth(0, n) == tree_root(leaves[:n])
        assert MerkleTree(leaves[:n]).root() == ref.mth(0, n)
    assert [tree.root(n) for n in range(131)] == [ref.mth(0, n) for n in range(131)]


def test_inclusion_proofs_agree_with_reference_for_all_sizes_up_to_64() -> None:
    leaves = leaves_for(64)
    ref = Reference(leaves)
    tree = MerkleTree(leaves)
    for n in range(1, 65):
        root = tree.root(n)
        for m in range(n):
            proof = tree.inclusion_proof(m, n)
            assert proof == ref.path(m, 0, n)
            assert verify_inclusion(leaves[m], m, n, proof, root)


def test_consistency_proofs_verify_for_all_pairs_up_to_64() -> None:
    leaves = leaves_for(64)
    ref = Reference(leaves)
    tree = MerkleTree(leaves)
    for n in range(1, 65):
        for m in range(1, n + 1):
            proof = tree.consistency_proof(m, n)
            assert proof == ref.proof(m, n)
            assert verify_consistency(m, n, tree.root(m), tree.root(n), proof)


@FAST
@given(n=st.integers(0, 1000), salt=st.binary(max_size=4), chunks=st.lists(st.integers(1, 50)))
def test_append_extend_and_one_shot_agree(n: int, salt: bytes, chunks: list[int]) -> None:
    leaves = leaves_for(n, salt)
    one_by_one = MerkleTree()
    assert [one_by_one.append(h) for h in leaves] == list(range(n))
    in_chunks = MerkleTree()
    start = 0
    for size in [*chunks, n]:
        assert in_chunks.extend(leaves[start : start + size]) == min(n, start + size)
        start += size
    ref = Reference(leaves)
    assert one_by_one.root() == in_chunks.root() == tree_root(leaves) == ref.mth(0, n)
    rng = random.Random(n)
    for size in rng.sample(range(n + 1), min(n + 1, 5)):
        assert one_by_one.root(size) == in_chunks.root(size) == ref.mth(0, size)
    assert [one_by_one.leaf(i) for i in range(n)] == leaves


# --- proof laws: valid proofs verify; one flipped bit anywhere fails ----------


InclusionArgs = tuple[bytes, int, int, list[bytes], bytes]


def _inclusion_mutations(
    leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes, bit: int
) -> list[tuple[str, InclusionArgs]]:
    """Corrupted argument sets for verify_inclusion, each named for the assert message."""
    cases: list[tuple[str, InclusionArgs]] = [
        ("leaf", (flip(leaf, bit), index, size, proof, root)),
        ("root", (leaf, index, size, proof, flip(root, bit))),
        ("short leaf", (leaf[:-1], index, size, proof, root)),
        ("extra last", (leaf, index, size, [*proof, root], root)),
        ("extra first", (leaf, index, size, [root, *proof], root)),
    ]
    for i in range(len(proof)):
        bad = [flip(p, bit) if j == i else p for j, p in enumerate(proof)]
        cases.append((f"proof[{i}]", (leaf, index, size, bad, root)))
        cases.append((f"drop[{i}]", (leaf, index, size, proof[:i] + proof[i + 1 :], root)))
    for b in range((size + 1).bit_length()):
        cases.append((f"index^{b}", (leaf, index ^ (1 << b), size, proof, root)))
    return cases


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 1000),
    salt=st.binary(max_size=4),
    picks=st.lists(st.integers(0, 999), min_size=1, max_size=4),
    bit=st.integers(0, 255),
)
def test_inclusion_proofs_verify_and_every_bit_flip_fails(
    n: int, salt: bytes, picks: list[int], bit: int
) -> None:
    leaves = leaves_for(n, salt)
    tree = MerkleTree(leaves)
    root = tree.root()
    for index in {p % n for p in picks}:
        proof = tree.inclusion_proof(index, n)
        assert verify_inclusion(leaves[index], index, n, proof, root)
        for name, args in _inclusion_mutations(leaves[index], index, n, proof, root, bit):
            assert verify_inclusion(*args) is False, name
        # The root is trusted for one size, but the proof alone does not pin
        # the size: a flipped size verifies exactly when RFC 9162 would give
        # that size the same path shape.
        for b in range((n + 1).bit_length()):
            other = n ^ (1 << b)
            same = other > index and path_shape(index, other) == path_shape(index, n)
            assert verify_inclusion(leaves[index], index, other, proof, root) is same


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(2, 1000),
    salt=st.binary(max_size=4),
    old=st.integers(1, 999),
    bit=st.integers(0, 255),
)
def test_consistency_proofs_verify_and_every_bit_flip_fails(
    n: int, salt: bytes, old: int, bit: int
) -> None:
    m = old % (n - 1) + 1  # 1 <= m < n, so the proof is never empty
    leaves = leaves_for(n, salt)
    tree = MerkleTree(leaves)
    old_root, new_root = tree.root(m), tree.root()
    proof = tree.consistency_proof(m, n)
    assert proof == Reference(leaves).proof(m, n)
    assert verify_consistency(m, n, old_root, new_root, proof)

    def check(m2: int, n2: int, r1: bytes, r2: bytes, p: list[bytes]) -> bool:
        return verify_consistency(m2, n2, r1, r2, p)

    assert not check(m, n, flip(old_root, bit), new_root, proof)
    assert not check(m, n, old_root, flip(new_root, bit), proof)
    assert not check(m, n, old_root[:-1], new_root, proof)
    assert not check(m, n, old_root, new_root, [*proof, new_root])
    assert not check(m, n, old_root, new_root, [old_root, *proof])
    for i in range(len(proof)):
        assert not check(
            m, n, old_root, new_root, [*proof[:i], flip(proof[i], bit), *proof[i + 1 :]]
        )
        assert not check(m, n, old_root, new_root, proof[:i] + proof[i + 1 :])
    # As for inclusion, sizes are pinned by the trusted roots, not by the
    # proof: a flipped size verifies iff the RFC proof shape is unchanged.
    for b in range(n.bit_length() + 1):
        for m2, n2 in ((m ^ (1 << b), n), (m, n ^ (1 << b))):
            same = 0 < m2 < n2 and proof_shape(m2, n2) == proof_shape(m, n)
            assert check(m2, n2, old_root, new_root, proof) is same, (m2, n2)


# --- edge cases ------------------------------------------------------------------


def test_empty_tree() -> None:
    tree = MerkleTree()
    assert tree.size == 0
    assert tree.root() == tree.root(0) == empty_root() == tree_root([])
    assert tree.consistency_proof(0) == []
    with pytest.raises(ValueError, match="out of range"):
        tree.inclusion_proof(0)
    with pytest.raises(ValueError, match="out of range"):
        tree.leaf(0)


def test_single_leaf_tree() -> None:
    leaf = leaf_hash(b"only")
    tree = MerkleTree([leaf])
    assert tree.root() == leaf
    assert tree.inclusion_proof(0) == []
    assert verify_inclusion(leaf, 0, 1, [], leaf)
    assert not verify_inclusion(leaf, 0, 1, [], empty_root())


def test_consistency_edge_cases() -> None:
    tree = MerkleTree(leaves_for(10))
    r5, r10 = tree.root(5), tree.root(10)
    assert tree.consistency_proof(5, 5) == tree.consistency_proof(0, 10) == []
    assert tree.consistency_proof(10) == []
    # m -> m: empty proof, verifies iff the roots are equal.
    assert verify_consistency(5, 5, r5, r5, [])
    assert not verify_consistency(5, 5, r5, r10, [])
    assert not verify_consistency(5, 5, r5, r5, [r5])
    # 0 -> n: empty proof, always verifies whatever old_root is given.
    assert verify_consistency(0, 10, empty_root(), r10, [])
    assert verify_consistency(0, 10, b"", b"", [])
    assert verify_consistency(0, 0, r5, r10, [])
    assert not verify_consistency(0, 10, empty_root(), r10, [r5])
    # Shrinking is never consistent.
    assert not verify_consistency(10, 5, r10, r5, tree.consistency_proof(5, 10))
    assert not verify_consistency(5, 10, r5, r10, [])


def test_verifiers_return_false_for_wrong_shapes() -> None:
    leaves = leaves_for(8)
    tree = MerkleTree(leaves)
    root, proof = tree.root(), tree.inclusion_proof(3)
    assert not verify_inclusion(leaves[3], 8, 8, proof, root)  # index == size
    assert not verify_inclusion(leaves[3], 3, 0, proof, root)
    assert not verify_inclusion(leaves[3], 3, 8, proof, root + b"\x00")
    assert not verify_inclusion(leaves[3], 3, 8, [*proof[:-1], proof[-1][:31]], root)
    assert not verify_inclusion(leaves[3], 3, 8, [], root)
    assert not verify_inclusion(leaves[3], 3, 2**70, proof, root)
    assert not verify_consistency(3, 8, tree.root(3), root, [b""] * 4)
    assert not verify_consistency(3, 2**70, tree.root(3), root, tree.consistency_proof(3))


@pytest.mark.parametrize("bad", [-1, 1.0, "1", None, True])
def test_bad_numbers_raise_value_error(bad: object) -> None:
    tree = MerkleTree(leaves_for(4))
    leaf, root = tree.leaf(0), tree.root()
    calls: list[Callable[[], object]] = [
        lambda: tree.leaf(bad),  # type: ignore[arg-type]
        lambda: tree.inclusion_proof(bad),  # type: ignore[arg-type]
        lambda: tree.consistency_proof(bad),  # type: ignore[arg-type]
        lambda: verify_inclusion(leaf, bad, 4, [], root),  # type: ignore[arg-type]
        lambda: verify_inclusion(leaf, 0, bad, [], root),  # type: ignore[arg-type]
        lambda: verify_consistency(bad, 4, root, root, []),  # type: ignore[arg-type]
        lambda: verify_consistency(1, bad, root, root, []),  # type: ignore[arg-type]
    ]
    if bad is not None:  # None means "current size" for these two
        calls += [
            lambda: tree.root(bad),  # type: ignore[arg-type]
            lambda: tree.inclusion_proof(0, bad),  # type: ignore[arg-type]
        ]
    for call in calls:
        with pytest.raises(ValueError):
            call()


def test_out_of_range_arguments_raise_value_error_not_index_error() -> None:
    tree = MerkleTree(leaves_for(4))
    for call in (
        lambda: tree.leaf(4),
        lambda: tree.root(5),
        lambda: tree.inclusion_proof(4),
        lambda: tree.inclusion_proof(2, 2),
        lambda: tree.inclusion_proof(0, 5),
        lambda: tree.consistency_proof(3, 2),
        lambda: tree.consistency_proof(1, 5),
    ):
        with pytest.raises(ValueError) as info:
            call()
        assert not isinstance(info.value, IndexError)


def test_non_bytes_hashes_raise_value_error() -> None:
    tree = MerkleTree(leaves_for(4))
    root = tree.root()
    with pytest.raises(ValueError):
        verify_inclusion("00" * 32, 0, 4, [], root)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        verify_inclusion(tree.leaf(0), 0, 4, [None], root)  # type: ignore[list-item]
    with pytest.raises(ValueError):
        verify_inclusion(tree.leaf(0), 0, 4, None, root)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        verify_consistency(1, 4, tree.leaf(0), root, "proof")  # type: ignore[arg-type]


def test_bad_leaf_hashes_are_rejected_atomically() -> None:
    tree = MerkleTree(leaves_for(3))
    before = tree.root()
    with pytest.raises(ValueError, match="32-byte"):
        tree.append(b"short")
    with pytest.raises(ValueError, match="leaf_hash"):
        tree.extend([leaf_hash(b"ok"), "not bytes"])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        tree_root([b"x" * 31])
    with pytest.raises(ValueError):
        MerkleTree([b"x" * 33])
    assert tree.size == 3 and tree.root() == before


def test_custom_hasher_digest_size_is_enforced() -> None:
    narrow = Hasher("blake3-16", lambda data: blake3(data).digest(16), digest_size=16)
    tree = MerkleTree([narrow.leaf(b"a"), narrow.leaf(b"b")], hasher=narrow)
    assert len(tree.root()) == 16
    with pytest.raises(ValueError, match="16-byte"):
        tree.append(leaf_hash(b"c"))
    assert verify_inclusion(
        narrow.leaf(b"b"), 1, 2, tree.inclusion_proof(1), tree.root(), hasher=narrow
    )
    assert not verify_inclusion(narrow.leaf(b"b"), 1, 2, tree.inclusion_proof(1), tree.root())


def test_docstring_examples_run() -> None:
    failed, attempted = doctest.testmod(merkle)
    assert attempted > 0 and failed == 0


def test_repr_names_size_and_hasher() -> None:
    assert repr(MerkleTree(leaves_for(2))) == "MerkleTree(size=2, hasher='blake3')"


# --- canonical encoding -------------------------------------------------------


@dataclasses.dataclass
class ReversedNodeState:
    """Same fields as NodeState, declared in the opposite order."""

    committed_at: str | None
    last_error_type: str | None
    children: list[str] | None
    parent_id: str | None
    goal: str | None
    owner_plugin: str | None
    node_class: str | None
    attempt_count: int
    merkle_hash: bytes | None
    v_total: float
    state: str
    session_id: str
    node_id: str


class PydanticNodeState(pydantic.BaseModel):
    attempt_count: int
    v_total: float
    node_id: str
    session_id: str
    state: str
    merkle_hash: bytes | None = None
    node_class: str | None = None
    owner_plugin: str | None = None
    goal: str | None = None
    parent_id: str | None = None
    children: list[str] | None = None
    last_error_type: str | None = None
    committed_at: str | None = None
    extra_field_not_hashed: int = 7


def test_encoding_ignores_attribute_order_and_carrier_type() -> None:
    fields = dataclasses.asdict(FULL)
    shuffled = list(fields.items())
    random.Random(1).shuffle(shuffled)
    carriers = [
        FULL,
        ReversedNodeState(**fields),
        SimpleNamespace(**dict(shuffled)),
        SimpleNamespace(**dict(reversed(shuffled)), unrelated="ignored"),
        PydanticNodeState(**fields),
    ]
    assert {encode_node_state(c) for c in carriers} == {encode_node_state(FULL)}


@FAST
@given(st.dictionaries(st.text(min_size=1, max_size=8), st.integers(-(2**63), 2**63 - 1)))
def test_encode_fields_ignores_mapping_order(fields: dict[str, int]) -> None:
    items = list(fields.items())
    random.Random(len(items)).shuffle(items)
    assert encode_fields("t/v1", fields) == encode_fields("t/v1", dict(items))
    assert encode_fields("t/v1", fields) == encode_fields("t/v1", dict(reversed(items)))


def test_none_empty_and_missing_are_distinct() -> None:
    variants: list[dict[str, object]] = [{}, {"goal": None}, {"goal": ""}, {"goal": b""}]
    variants += [{"goal": []}, {"goal": 0}, {"goal": False}, {"goal": 0.0}]
    assert len({encode_fields("t/v1", v) for v in variants}) == len(variants)
    assert hash_node_state(NodeState(goal=None)) != hash_node_state(NodeState(goal=""))
    with pytest.raises(ValueError, match="no attribute 'goal'"):
        encode_node_state(SimpleNamespace(**{k: None for k in NODE_STATE_FIELDS if k != "goal"}))


def test_children_lists_are_length_delimited() -> None:
    variants = [None, [], [""], ["", ""], ["ab"], ["a", "b"], ["b", "a"]]
    hashes = {hash_node_state(NodeState(children=c)) for c in variants}
    assert len(hashes) == len(variants)
    assert hash_node_state(NodeState(children=("a", "b"))) == hash_node_state(  # type: ignore[arg-type]
        NodeState(children=["a", "b"])
    )


def test_bytes_and_str_are_distinct() -> None:
    as_bytes = hash_node_state(NodeState(merkle_hash=b"ab"))
    as_str = hash_node_state(NodeState(merkle_hash="ab"))  # type: ignore[arg-type]
    assert as_bytes != as_str
    assert hash_node_state(NodeState(merkle_hash=bytearray(b"ab"))) == as_bytes  # type: ignore[arg-type]


def test_floats_are_hashed_exactly() -> None:
    def h(v: float) -> bytes:
        return hash_node_state(NodeState(v_total=v))

    assert 0.1 != 0.1000000000000001
    assert h(0.1) != h(0.1000000000000001)
    assert h(0.1) != h(float(struct.unpack(">f", struct.pack(">f", 0.1))[0]))  # float32 rounding
    assert h(-0.0) == h(0.0)  # equal values, equal hashes
    assert h(1) == h(1.0)  # an int v_total is a float64 to the hash
    assert encode_fields("t/v1", {"x": 1}) != encode_fields("t/v1", {"x": 1.0})
    assert encode_fields("t/v1", {"x": True}) != encode_fields("t/v1", {"x": 1})
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="finite"):
            h(bad)


def test_strings_are_utf8_without_normalisation() -> None:
    nfc, nfd = "\u00fc", "u\u0308"  # "ü" composed and decomposed
    assert hash_node_state(NodeState(goal=nfc)) != hash_node_state(NodeState(goal=nfd))
    assert encode_fields("t/v1", {"g": "é"}).endswith(b"\x01\x00\x00\x00\x02\xc3\xa9")
    with pytest.raises(ValueError, match="Unicode"):
        hash_node_state(NodeState(goal="\ud800"))


@pytest.mark.parametrize(
    "fields",
    [{"x": 2**63}, {"x": -(2**63) - 1}, {"x": {"a": 1}}, {"x": {1, 2}}, {"x": [1]}, {"": 1}],
)
def test_unencodable_values_raise_value_error(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        encode_fields("t/v1", fields)


@pytest.mark.parametrize("tag", ["", "a\x00b"])
def test_bad_tags_raise_value_error(tag: str) -> None:
    with pytest.raises(ValueError, match="tag"):
        encode_fields(tag, {})


def test_node_state_tag_and_field_set() -> None:
    encoded = encode_node_state(FULL)
    assert encoded.startswith(NODE_STATE_TAG.encode() + b"\x00" + (12).to_bytes(4, "big"))
    assert len(NODE_STATE_FIELDS) == 12
    # Every NodeStateRecord field but the session (the container, not content).
    record_fields = set(NodeStateRecord.model_fields)
    assert set(NODE_STATE_FIELDS) == record_fields - {"session_id"}
    assert set(NODE_STATE_FIELDS) == {f.name for f in dataclasses.fields(NodeState)} - {
        "session_id"
    }
    assert list(NODE_STATE_FIELDS) == sorted(NODE_STATE_FIELDS)


def test_state_hash_and_roots_do_not_depend_on_the_session() -> None:
    moved = dataclasses.replace(FULL, session_id="another-session")
    assert encode_node_state(moved) == encode_node_state(FULL)
    assert hash_node_state(moved) == hash_node_state(FULL)
    assert b"session_id" not in encode_node_state(FULL)
    # A carrier without any session_id attribute encodes the same bytes.
    fields = {k: v for k, v in dataclasses.asdict(FULL).items() if k != "session_id"}
    assert encode_node_state(SimpleNamespace(**fields)) == encode_node_state(FULL)
    real = NodeStateRecord(**dataclasses.asdict(FULL))
    assert hash_node_state(real) == hash_node_state(real.model_copy(update={"session_id": "x"}))
    assert hash_node_state(real).hex() == B3_NODE_STATE_FULL_HASH
    # The same states give the same state root whichever session holds them.
    states = [FULL, NodeState(), NodeState(node_id="m", state="Completed", v_total=1.5)]
    roots = {
        MerkleTree(hash_node_state(dataclasses.replace(s, session_id=sid)) for s in states).root()
        for sid in ("s", "sess-42", "imported-copy")
    }
    assert len(roots) == 1
    # Content still counts: changing any hashed field changes the hash.
    assert hash_node_state(dataclasses.replace(FULL, node_id="task-2")) != hash_node_state(FULL)


def decode_fields(data: bytes) -> tuple[str, dict[str, object]]:
    """An independent parser for the grammar in docs/merkle.md."""
    tag_end = data.index(0)
    tag, pos = data[:tag_end].decode(), tag_end + 1

    def u32() -> int:
        nonlocal pos
        pos += 4
        return int.from_bytes(data[pos - 4 : pos], "big")

    def take(n: int) -> bytes:
        nonlocal pos
        pos += n
        assert pos <= len(data)
        return data[pos - n : pos]

    fields: dict[str, object] = {}
    for _ in range(u32()):
        name = take(u32()).decode()
        kind = take(1)[0]
        payload = take(u32())
        value: object
        if kind == 0:
            assert payload == b""
            value = None
        elif kind == 1:
            value = payload.decode()
        elif kind == 2:
            value = payload
        elif kind == 3:
            value = int.from_bytes(payload, "big", signed=True)
        elif kind == 4:
            value = struct.unpack(">d", payload)[0]
        elif kind == 5:
            count, rest = int.from_bytes(payload[:4], "big"), payload[4:]
            items = []
            for _ in range(count):
                size = int.from_bytes(rest[:4], "big")
                items.append(rest[4 : 4 + size].decode())
                rest = rest[4 + size :]
            assert rest == b""
            value = items
        else:
            assert kind == 6 and payload in (b"\x00", b"\x01")
            value = payload == b"\x01"
        fields[name] = value
    assert pos == len(data)
    assert list(fields) == sorted(fields, key=lambda n: n.encode())
    return tag, fields


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.text(),
    st.binary(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.text(), max_size=4),
)


@FAST
@given(
    tag=st.text(min_size=1).filter(lambda t: "\x00" not in t),
    fields=st.dictionaries(st.text(min_size=1), scalars, max_size=6),
)
def test_encoding_round_trips_through_the_documented_grammar(
    tag: str, fields: dict[str, object]
) -> None:
    try:
        encoded = encode_fields(tag, fields)
    except ValueError:  # lone surrogates are not UTF-8
        return
    expected = {k: (v + 0.0 if isinstance(v, float) else v) for k, v in fields.items()}
    assert decode_fields(encoded) == (tag, expected)


@FAST
@given(a=st.dictionaries(st.text(max_size=3, min_size=1), scalars, max_size=3), b=st.data())
def test_distinct_records_encode_distinctly(a: dict[str, object], b: st.DataObject) -> None:
    other: dict[str, object] = b.draw(
        st.dictionaries(st.text(max_size=3, min_size=1), scalars, max_size=3)
    )
    try:
        ea, eb = encode_fields("t/v1", a), encode_fields("t/v1", other)
    except ValueError:
        return

    def norm(d: dict[str, object]) -> dict[str, tuple[str, object]]:
        # Types matter (True is not 1); -0.0 is written as 0.0.
        return {k: (type(v).__name__, v + 0.0 if isinstance(v, float) else v) for k, v in d.items()}

    assert (ea == eb) == (norm(a) == norm(other))

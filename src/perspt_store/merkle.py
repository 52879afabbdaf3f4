"""Merkle trees, proofs and canonical record hashing (pure code, no database).

The tree is the one of RFC 9162 (Certificate Transparency v2), §2.1, with
BLAKE3 in place of SHA-256:

* ``leaf_hash(d) = H(0x00 || d)`` and ``node_hash(l, r) = H(0x01 || l || r)``;
  the prefixes keep a leaf from ever being mistaken for an interior node.
* The root of ``n > 1`` leaves is ``node_hash(root(D[0:k]), root(D[k:n]))``
  where ``k`` is the largest power of two strictly below ``n``; the root of one
  leaf is its leaf hash; the empty tree hashes to ``H(b"")``.
* Inclusion and consistency proofs are RFC 9162 ``PATH`` and ``PROOF``
  (§2.1.3, §2.1.4): same hashes, same order, verifiable by any RFC 9162
  implementation that is given BLAKE3.

`MerkleTree` keeps, for every level ``h``, the list of roots of the *complete*
aligned subtrees of ``2**h`` leaves seen so far (level 0 is the leaves). An
append adds one leaf and, amortised, one interior hash, so appends never
rebuild anything. Because a complete subtree never changes once it exists,
the same lists serve every historical size: the root of the first ``m``
leaves is the fold of one cached subtree per set bit of ``m`` (the
"frontier"), and a proof reads its hashes from the cache, hashing only for
the one ragged right-edge subtree a proof can contain. Roots and proofs thus
cost ``O(log n)`` hash operations; memory is about ``2n`` hashes.

The hash function is a `Hasher`; `BLAKE3` is the default everywhere and
`SHA256` exists so the tests can check the code against the published
RFC 6962 test vectors.

Records are hashed as leaves over a canonical binary encoding
(`encode_fields`, `encode_node_state`) that is independent of attribute
order and of the Python version; ``docs/merkle.md`` specifies it byte by
byte, with test vectors.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from blake3 import blake3

__all__ = [
    "BLAKE3",
    "NODE_STATE_FIELDS",
    "NODE_STATE_TAG",
    "SHA256",
    "Hasher",
    "MerkleTree",
    "StateTree",
    "empty_root",
    "encode_fields",
    "encode_node_state",
    "hash_node_state",
    "leaf_hash",
    "node_hash",
    "tree_root",
    "verify_consistency",
    "verify_inclusion",
]


@dataclass(frozen=True, slots=True)
class Hasher:
    """A hash function plugged into the RFC 9162 tree.

    Args:
        name: A label for messages and benchmarks.
        digest: Maps a byte string to its digest.
        digest_size: The length of every digest ``digest`` returns.
    """

    name: str
    digest: Callable[[bytes], bytes]
    digest_size: int = 32

    def empty_root(self) -> bytes:
        """Return the root of the empty tree, ``H(b"")``."""
        return self.digest(b"")

    def leaf(self, data: bytes) -> bytes:
        """Return the leaf hash ``H(0x00 || data)``."""
        return self.digest(b"\x00" + data)

    def node(self, left: bytes, right: bytes) -> bytes:
        """Return the interior-node hash ``H(0x01 || left || right)``."""
        return self.digest(b"\x01" + left + right)


BLAKE3 = Hasher("blake3", lambda data: blake3(data).digest())
"""The default hasher: BLAKE3 with 32-byte output."""

SHA256 = Hasher("sha256", lambda data: hashlib.sha256(data).digest())
"""SHA-256, i.e. exactly RFC 6962/9162; used to check the published vectors."""


def leaf_hash(data: bytes, *, hasher: Hasher = BLAKE3) -> bytes:
    """Hash one leaf's data: ``blake3(0x00 || data)``.

    Example:
        >>> len(leaf_hash(b"entry"))
        32
    """
    return hasher.leaf(data)


def node_hash(left: bytes, right: bytes, *, hasher: Hasher = BLAKE3) -> bytes:
    """Hash an interior node from its children: ``blake3(0x01 || left || right)``."""
    return hasher.node(left, right)


def empty_root(*, hasher: Hasher = BLAKE3) -> bytes:
    """Return the root of the empty tree: ``blake3(b"")``."""
    return hasher.empty_root()


def tree_root(leaf_hashes: Sequence[bytes], *, hasher: Hasher = BLAKE3) -> bytes:
    """Compute the root of a list of leaf hashes in one pass.

    Pairs neighbours level by level and carries an odd last node up
    unchanged. That yields exactly RFC 9162's split-at-the-largest-power-of-two
    shape: every left subtree it builds is complete, and the leftover right
    edge is folded in last.

    Args:
        leaf_hashes: Leaf hashes (not leaf data), in log order.
        hasher: The hash function.

    Returns:
        The root; `empty_root` for an empty sequence.

    Raises:
        ValueError: If an element is not a digest of ``hasher.digest_size``
            bytes.
    """
    level = list(leaf_hashes)
    _check_hashes(level, hasher)
    if not level:
        return hasher.empty_root()
    digest = hasher.digest
    while len(level) > 1:
        paired = [digest(b"\x01" + a + b) for a, b in zip(level[0::2], level[1::2], strict=False)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


class MerkleTree:
    """An append-only RFC 9162 Merkle tree over leaf hashes.

    Leaves are numbered from 0. Every past size of the tree stays provable:
    `root`, `inclusion_proof` and `consistency_proof` accept any size up to
    the current one. Not thread-safe: serialise appends with reads.

    Example:
        >>> tree = MerkleTree([leaf_hash(b"a"), leaf_hash(b"b")])
        >>> tree.append(leaf_hash(b"c"))
        2
        >>> proof = tree.inclusion_proof(1)
        >>> verify_inclusion(leaf_hash(b"b"), 1, 3, proof, tree.root())
        True

    Args:
        leaf_hashes: Initial leaf hashes, in log order.
        hasher: The hash function (BLAKE3 unless testing).

    Raises:
        ValueError: If a leaf hash is not ``hasher.digest_size`` bytes.
    """

    __slots__ = ("_hasher", "_levels")

    def __init__(self, leaf_hashes: Iterable[bytes] = (), *, hasher: Hasher = BLAKE3) -> None:
        self._hasher = hasher
        # _levels[h][i] is the root of leaves [i * 2**h, (i + 1) * 2**h);
        # len(_levels[h]) == size >> h at all times.
        self._levels: list[list[bytes]] = [[]]
        self.extend(leaf_hashes)

    @property
    def size(self) -> int:
        """The number of leaves."""
        return len(self._levels[0])

    @property
    def hasher(self) -> Hasher:
        """The hash function of this tree."""
        return self._hasher

    def __repr__(self) -> str:
        return f"MerkleTree(size={self.size}, hasher={self._hasher.name!r})"

    def append(self, leaf_hash: bytes) -> int:
        """Append one leaf hash.

        Costs one interior hash amortised (``log2(n)`` at worst).

        Returns:
            The new leaf's 0-based index.

        Raises:
            ValueError: If ``leaf_hash`` is not ``hasher.digest_size`` bytes.
        """
        _check_hashes((leaf_hash,), self._hasher)
        levels = self._levels
        levels[0].append(leaf_hash)
        node = self._hasher.node
        height = 0
        # Each level whose length becomes even has just completed a pair.
        while len(levels[height]) % 2 == 0:
            level = levels[height]
            parent = node(level[-2], level[-1])
            height += 1
            if height == len(levels):
                levels.append([])
            levels[height].append(parent)
        return len(levels[0]) - 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> int:
        """Append many leaf hashes, hashing each new pair level by level.

        Returns:
            The new size.

        Raises:
            ValueError: If a leaf hash is not ``hasher.digest_size`` bytes;
                nothing is appended then.
        """
        new = list(leaf_hashes)
        _check_hashes(new, self._hasher)
        levels = self._levels
        levels[0].extend(new)
        digest = self._hasher.digest
        height = 0
        while len(levels[height]) >= 2:
            level = levels[height]
            if height + 1 == len(levels):
                levels.append([])
            upper = levels[height + 1]
            start = 2 * len(upper)
            if start + 1 >= len(level):
                break  # no new pair here, hence none above either
            upper.extend(
                [
                    digest(b"\x01" + a + b)
                    for a, b in zip(level[start::2], level[start + 1 :: 2], strict=False)
                ]
            )
            height += 1
        return self.size

    def leaf(self, index: int) -> bytes:
        """Return the leaf hash at ``index``.

        Raises:
            ValueError: If ``index`` is not in ``0 <= index < size``.
        """
        _check_int("index", index)
        if index >= self.size:
            raise ValueError(f"leaf index {index} is out of range for a tree of {self.size} leaves")
        return self._levels[0][index]

    def root(self, size: int | None = None) -> bytes:
        """Return the root of the first ``size`` leaves (``O(log n)``).

        Args:
            size: A past or the current size; ``None`` means the current size.

        Raises:
            ValueError: If ``size`` is negative or larger than the tree.
        """
        size = self._check_size(size)
        if size == 0:
            return self._hasher.empty_root()
        return self._range_root(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Prove that leaf ``index`` is in the tree of the first ``size`` leaves.

        Returns RFC 9162 ``PATH(index, D[0:size])``: sibling hashes from the
        leaf upwards.

        Raises:
            ValueError: If ``size`` exceeds the tree or ``index >= size``.
        """
        size = self._check_size(size)
        _check_int("index", index)
        if index >= size:
            raise ValueError(f"leaf index {index} is out of range for a tree of {size} leaves")
        path: list[bytes] = []
        start, end = 0, size
        # Descend from the root; the RFC recursion lists siblings bottom-up, hence the reverse.
        while end - start > 1:
            split = start + _largest_power_of_two_below(end - start)
            if index < split:
                path.append(self._range_root(split, end))
                end = split
            else:
                path.append(self._range_root(start, split))
                start = split
        path.reverse()
        return path

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """Prove that the tree of ``old_size`` leaves is a prefix of ``new_size``.

        Returns RFC 9162 ``PROOF(old_size, D[0:new_size])``. It is empty when
        ``old_size`` is 0 or equal to ``new_size``.

        Raises:
            ValueError: If ``new_size`` exceeds the tree or
                ``old_size > new_size``.
        """
        new_size = self._check_size(new_size)
        _check_int("old_size", old_size)
        if old_size > new_size:
            raise ValueError(f"old_size {old_size} is larger than new_size {new_size}")
        if old_size in (0, new_size):
            return []
        proof: list[bytes] = []
        start, end, is_old_root = 0, new_size, True
        # SUBPROOF(m, D[start:end], b) unrolled; collected top-down, reversed below.
        while end != old_size:
            split = start + _largest_power_of_two_below(end - start)
            if old_size <= split:
                proof.append(self._range_root(split, end))
                end = split
            else:
                proof.append(self._range_root(start, split))
                start, is_old_root = split, False
        if not is_old_root:
            proof.append(self._range_root(start, end))
        proof.reverse()
        return proof

    def _check_size(self, size: int | None) -> int:
        if size is None:
            return self.size
        _check_int("size", size)
        if size > self.size:
            raise ValueError(f"size {size} is larger than the tree ({self.size} leaves)")
        return size

    def _range_root(self, start: int, end: int) -> bytes:
        """Root of leaves ``[start, end)``; ``start`` must be a multiple of a
        power of two ``>= end - start``, which holds for every subtree the
        RFC recursion visits, so the range splits into complete cached
        subtrees, largest first."""
        levels = self._levels
        width = end - start
        if width & (width - 1) == 0:  # complete: one lookup, the common case
            height = width.bit_length() - 1
            return levels[height][start >> height]
        parts: list[bytes] = []
        for height in range(width.bit_length() - 1, -1, -1):
            if width >> height & 1:
                parts.append(levels[height][start >> height])
                start += 1 << height
        digest = self._hasher.digest
        result = parts.pop()
        while parts:
            result = digest(b"\x01" + parts.pop() + result)
        return result


class StateTree:
    """The RFC 9162 tree over the latest leaf of every node, in ``node_id`` order.

    Levels are cached bottom-up (an odd last node is carried up unchanged, which gives the
    RFC's split-at-the-largest-power-of-two shape), so updating a node rehashes its path
    and adding or removing one rehashes only the subtrees to its right.
    """

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._levels: list[list[bytes]] = [[]]

    def __len__(self) -> int:
        return len(self._ids)

    def leaves(self) -> dict[str, bytes]:
        """Node id → latest leaf hash."""
        return dict(zip(self._ids, self._levels[0], strict=True))

    def set(self, node_id: str, leaf: bytes | None) -> None:
        """Make ``leaf`` the node's latest leaf; None removes the node."""
        ids, leaves = self._ids, self._levels[0]
        i = bisect.bisect_left(ids, node_id)
        present = i < len(ids) and ids[i] == node_id
        if leaf is None:
            if present:
                del ids[i], leaves[i]
                self._rehash(i, path_only=False)
        elif present:
            leaves[i] = leaf
            self._rehash(i, path_only=True)
        else:
            ids.insert(i, node_id)
            leaves.insert(i, leaf)
            self._rehash(i, path_only=False)

    def root(self) -> bytes:
        """The state root; the empty-tree hash when there are no nodes."""
        top = self._levels[-1]
        return top[0] if top else empty_root()

    def _rehash(self, index: int, *, path_only: bool) -> None:
        levels = self._levels
        level = 0
        while len(levels[level]) > 1:
            below = levels[level]
            if level + 1 == len(levels):
                levels.append([])
            above = levels[level + 1]
            size = (len(below) + 1) // 2
            del above[size:]
            index //= 2
            stop = index + 1 if path_only else size
            for j in range(index, stop):
                pair = below[2 * j : 2 * j + 2]
                value = node_hash(pair[0], pair[1]) if len(pair) == 2 else pair[0]
                if j < len(above):
                    above[j] = value
                else:
                    above.append(value)
            level += 1
        del levels[level + 1 :]


def verify_inclusion(
    leaf_hash: bytes,
    index: int,
    size: int,
    proof: Sequence[bytes],
    root: bytes,
    *,
    hasher: Hasher = BLAKE3,
) -> bool:
    """Check an inclusion proof (RFC 9162 §2.1.3.2).

    Args:
        leaf_hash: The hash of the leaf claimed to be at ``index``.
        index: The leaf's 0-based index.
        size: The tree size that ``root`` belongs to.
        proof: The audit path, as returned by `MerkleTree.inclusion_proof`.
        root: The trusted root of the tree of ``size`` leaves.
        hasher: The hash function.

    Returns:
        Whether the proof is valid. Any mismatch, including ``index >= size``,
        a proof of the wrong length or a hash of the wrong length, gives
        ``False``.

    Raises:
        ValueError: If ``index`` or ``size`` is not a non-negative int, or a
            hash is not ``bytes``.
    """
    _check_int("index", index)
    _check_int("size", size)
    _check_bytes(leaf_hash, root, *_check_proof(proof))
    if index >= size or not _all_digests(hasher, leaf_hash, root, *proof):
        return False
    digest = hasher.digest  # inlined node hash: this loop is the verifier's hot path
    fn, sn = index, size - 1
    result = leaf_hash
    for sibling in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            result = digest(b"\x01" + sibling + result)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            result = digest(b"\x01" + result + sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and result == root


def verify_consistency(
    old_size: int,
    new_size: int,
    old_root: bytes,
    new_root: bytes,
    proof: Sequence[bytes],
    *,
    hasher: Hasher = BLAKE3,
) -> bool:
    """Check a consistency proof (RFC 9162 §2.1.4.2).

    Two cases the RFC leaves to the caller are settled here: from size 0 the
    proof must be empty and it always verifies (every tree extends the empty
    one, so ``old_root`` is not inspected); from ``m`` to ``m`` the proof
    must be empty and it verifies iff ``old_root == new_root``.

    Args:
        old_size: The size of the earlier tree.
        new_size: The size of the later tree.
        old_root: The trusted root at ``old_size``.
        new_root: The trusted root at ``new_size``.
        proof: As returned by `MerkleTree.consistency_proof`.
        hasher: The hash function.

    Returns:
        Whether the proof is valid; ``False`` on any mismatch, including
        ``old_size > new_size`` and hashes of the wrong length.

    Raises:
        ValueError: If a size is not a non-negative int, or a hash is not
            ``bytes``.
    """
    _check_int("old_size", old_size)
    _check_int("new_size", new_size)
    _check_bytes(old_root, new_root, *_check_proof(proof))
    if old_size > new_size:
        return False
    if old_size == 0:
        return not proof
    if not _all_digests(hasher, old_root, new_root, *proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        # The old tree is a complete subtree, so the RFC omits its root.
        path.insert(0, old_root)
    if not path:
        return False
    digest = hasher.digest
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    old_result = new_result = path[0]
    for sibling in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            old_result = digest(b"\x01" + sibling + old_result)
            new_result = digest(b"\x01" + sibling + new_result)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            new_result = digest(b"\x01" + new_result + sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and old_result == old_root and new_result == new_root


# --- canonical encoding ----------------------------------------------------

NODE_STATE_TAG = "perspt-store/node-state/v1"
"""Record tag of `encode_node_state`; a new field set needs a new version."""

NODE_STATE_FIELDS = (
    "attempt_count",
    "children",
    "committed_at",
    "goal",
    "last_error_type",
    "merkle_hash",
    "node_class",
    "node_id",
    "owner_plugin",
    "parent_id",
    "state",
    "v_total",
)
"""The 12 node-state attributes that are hashed (encoded in this sorted order).

``session_id`` is deliberately not among them: a session's state root is a
function of its node states only, so the same states give the same root in
any session, and a session imported under the same or another id keeps its
roots. The session is the container, not content.
"""

_NONE, _STR, _BYTES, _INT, _FLOAT, _STR_LIST, _BOOL = range(7)
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")


def encode_fields(tag: str, fields: Mapping[str, object]) -> bytes:
    """Encode a flat record canonically, for hashing.

    The output is ``tag`` in UTF-8, a zero byte, the field count and then
    each field sorted by the UTF-8 bytes of its name, as
    ``name, type byte, payload`` with length-prefixed name and payload (all
    lengths and counts unsigned 32-bit big-endian). Types: 0 ``None``,
    1 ``str`` (UTF-8, not normalised), 2 ``bytes``, 3 ``int`` (signed 64-bit),
    4 ``float`` (IEEE-754 binary64, ``-0.0`` written as ``0.0``), 5 list or
    tuple of ``str``, 6 ``bool``. ``docs/merkle.md`` has the full grammar.

    Args:
        tag: Names the record kind and its version; must not contain NUL.
        fields: Field names to values; insertion order does not matter, and
            an absent field encodes differently from one set to ``None``.

    Returns:
        The canonical bytes.

    Raises:
        ValueError: For NaN or infinite floats, ints outside 64 bits, strings
            that are not valid Unicode, an empty or NUL-containing tag, an
            empty field name, or a value of any other type.
    """
    if not isinstance(tag, str) or not tag or "\x00" in tag:
        raise ValueError(f"record tag must be a non-empty str without NUL, got {tag!r}")
    encoded: list[tuple[bytes, bytes]] = []
    for name, value in fields.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"field names must be non-empty str, got {name!r}")
        raw_name = _utf8(name, name)
        encoded.append((raw_name, _encode_value(name, value)))
    encoded.sort()
    out = [tag.encode("utf-8"), b"\x00", _u32(len(encoded))]
    for raw_name, raw_value in encoded:
        out += (_u32(len(raw_name)), raw_name, raw_value)
    return b"".join(out)


def encode_node_state(record: object) -> bytes:
    """Encode a node-state record canonically (tag `NODE_STATE_TAG`).

    Reads the 12 attributes in `NODE_STATE_FIELDS` from any object (a
    ``NodeStateRecord``, a dataclass, a namespace) and ignores the rest,
    ``session_id`` included: equal states hash equally in every session.
    ``v_total`` is hashed as a float64, so an int there is converted first.

    Raises:
        ValueError: If an attribute is missing or has a value
            `encode_fields` rejects.
    """
    fields: dict[str, object] = {}
    for name in NODE_STATE_FIELDS:
        try:
            fields[name] = getattr(record, name)
        except AttributeError:
            raise ValueError(
                f"{type(record).__name__} has no attribute {name!r}; "
                f"a node-state record needs all of {', '.join(NODE_STATE_FIELDS)}"
            ) from None
    v_total = fields["v_total"]
    if isinstance(v_total, int) and not isinstance(v_total, bool):
        fields["v_total"] = float(v_total)
    return encode_fields(NODE_STATE_TAG, fields)


def hash_node_state(record: object, *, hasher: Hasher = BLAKE3) -> bytes:
    """Return the leaf hash of a node-state record: ``leaf_hash(encode_node_state(record))``.

    Raises:
        ValueError: As `encode_node_state`.
    """
    return hasher.leaf(encode_node_state(record))


def _encode_value(name: str, value: object) -> bytes:
    """Type byte plus length-prefixed payload of one field value."""
    # bool before int: bool is an int subclass but must hash differently.
    if value is None:
        kind, payload = _NONE, b""
    elif isinstance(value, bool):
        kind, payload = _BOOL, b"\x01" if value else b"\x00"
    elif isinstance(value, str):
        kind, payload = _STR, _utf8(name, value)
    elif isinstance(value, bytes | bytearray | memoryview):
        kind, payload = _BYTES, bytes(value)
    elif isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise ValueError(f"field {name!r}: int {value} does not fit in 64 bits")
        kind, payload = _INT, _I64.pack(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"field {name!r}: {value} cannot be hashed; use a finite float")
        # -0.0 == 0.0 in Python, so equal records must not hash differently.
        kind, payload = _FLOAT, _F64.pack(value + 0.0)
    elif isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        items = [_utf8(name, item) for item in value]
        kind = _STR_LIST
        payload = b"".join([_u32(len(items)), *(_u32(len(item)) + item for item in items)])
    else:
        raise ValueError(
            f"field {name!r}: cannot encode {type(value).__name__}; "
            "use None, str, bytes, int, float, bool or a list of str"
        )
    return bytes((kind,)) + _u32(len(payload)) + payload


def _utf8(name: str, text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"field {name!r}: string is not valid Unicode ({exc.reason})") from None


def _u32(number: int) -> bytes:
    if number >= 2**32:
        raise ValueError(f"length {number} does not fit the 32-bit length prefix")
    return _U32.pack(number)


# --- argument checks ---------------------------------------------------------


def _largest_power_of_two_below(n: int) -> int:
    """Largest ``k = 2**i`` with ``k < n``, for ``n >= 2``."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_int(name: str, value: object) -> None:
    # bool is an int, but True as an index is a bug, not a leaf number.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")


def _check_bytes(*values: object) -> None:
    for value in values:
        if not isinstance(value, bytes):
            raise ValueError(f"hashes must be bytes, got {type(value).__name__}")


def _check_proof(proof: object) -> Sequence[object]:
    if not isinstance(proof, list | tuple):
        raise ValueError(f"a proof must be a list of hashes, got {type(proof).__name__}")
    return proof


def _all_digests(hasher: Hasher, *values: bytes) -> bool:
    size = hasher.digest_size
    return all(len(value) == size for value in values)


def _check_hashes(values: Iterable[object], hasher: Hasher) -> None:
    size = hasher.digest_size
    for value in values:
        if not isinstance(value, bytes) or len(value) != size:
            raise ValueError(
                f"leaf hashes must be {size}-byte {hasher.name} digests, got {value!r:.80}; "
                "hash leaf data with leaf_hash() first"
            )

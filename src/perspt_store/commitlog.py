"""The session commit log's public types: commits, proofs, checkpoints and verification
reports.

Every node-state write is one *commit*: a leaf ``hash_node_state(row)`` appended to the
session's log (an RFC 9162 tree, :class:`~perspt_store.merkle.MerkleTree`), after which the
session's *state root* is the tree hash over the latest leaf of every node, in ``node_id``
order (:class:`~perspt_store.merkle.StateTree`). ``seq`` is 0-based: commit ``seq`` is leaf
``seq`` of the log, and the log has ``seq + 1`` leaves after it.

A *removal* (written by a rollback for nodes that did not exist at its target) is a commit
whose row has the tombstone state :data:`REMOVED_STATE`: it is a leaf of the log, but the
node leaves the state tree and the latest node states.

The store writes and reads the log in :mod:`perspt_store.store.commits`; this module only
describes what it hands out.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, NamedTuple

from blake3 import blake3
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import merkle
from ._displayable import Displayable
from .errors import IntegrityError
from .rows import NodeStateRecord

__all__ = [
    "CHECKPOINT_SCHEME",
    "COMMIT_KINDS",
    "REMOVED_STATE",
    "Checkpoint",
    "ConsistencyProof",
    "InclusionProof",
    "NodeCommit",
    "Problem",
    "RollbackChange",
    "VerificationReport",
]

REMOVED_STATE = "__removed__"
"""The state of a tombstone snapshot: the node no longer exists in the session."""

COMMIT_KINDS = ("commit", "restore", "remove", "backfill")
"""How a log entry came to be: a write, a rollback's restore or removal, or a migration."""


class NodeCommit(NamedTuple):
    """What one node-state write added to the session's commit log."""

    session_id: str
    seq: int
    """The commit's 0-based position in the log (its leaf index)."""
    node_id: str
    kind: str
    """commit, restore, remove or backfill."""
    leaf_hash: bytes
    """``hash_node_state`` of the row."""
    state_root: bytes
    """The session's state root after this commit."""
    log_root: bytes
    """The log's root after this commit (over ``log_size`` leaves)."""
    log_size: int
    """``seq + 1``."""


CHECKPOINT_SCHEME = "perspt-store/merkle-log/v1 (RFC 9162, blake3)"



class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid", defer_build=True)


class InclusionProof(_Frozen):
    """Proof that commit ``seq`` is leaf ``seq`` of the session's log at ``log_size``."""

    session_id: str
    seq: int
    log_size: int
    leaf_hash: bytes
    path: list[bytes]
    log_root: bytes

    @classmethod
    def of(
        cls, session_id: str, tree: merkle.MerkleTree, seq: int, size: int | None = None
    ) -> InclusionProof:
        """The proof for leaf ``seq`` of ``tree`` at ``size`` leaves (default: all).

        Raises:
            ValueError: ``seq`` or ``size`` is out of range.
        """
        size = tree.size if size is None else size
        path = tree.inclusion_proof(seq, size)  # first: it checks seq and size
        return cls(
            session_id=session_id, seq=seq, log_size=size, leaf_hash=tree.leaf(seq),
            path=path, log_root=tree.root(size),
        )

    def verify(self) -> bool:
        """True if the path leads from ``leaf_hash`` to ``log_root`` (RFC 9162 §2.1.3.2)."""
        return merkle.verify_inclusion(
            self.leaf_hash, self.seq, self.log_size, self.path, self.log_root
        )


class ConsistencyProof(_Frozen):
    """Proof that the log at ``new_size`` extends the log at ``old_size``."""

    session_id: str
    old_size: int
    new_size: int
    old_root: bytes
    new_root: bytes
    path: list[bytes]

    @classmethod
    def of(
        cls, session_id: str, tree: merkle.MerkleTree, old_size: int, new_size: int | None = None
    ) -> ConsistencyProof:
        """The proof that ``tree`` at ``new_size`` (default: all) extends it at ``old_size``.

        Raises:
            ValueError: The sizes are out of range or ``old_size > new_size``.
        """
        new_size = tree.size if new_size is None else new_size
        path = tree.consistency_proof(old_size, new_size)  # first: it checks the sizes
        return cls(
            session_id=session_id, old_size=old_size, new_size=new_size,
            old_root=tree.root(old_size), new_root=tree.root(new_size), path=path,
        )

    def verify(self) -> bool:
        """True if the log at ``new_size`` is an append-only extension (RFC 9162 §2.1.4.2)."""
        return merkle.verify_consistency(
            self.old_size, self.new_size, self.old_root, self.new_root, self.path
        )


class Checkpoint(_Frozen):
    """A signed-off summary of a session's log, to keep outside the database.

    Its JSON form (:meth:`to_json`) has hex hashes. With a 32-byte key, ``mac`` is the keyed
    blake3 of the canonical JSON of the other fields; verify it with :meth:`verify_mac`.

    Every field is checked when a checkpoint is built or parsed: the scheme is this
    library's, ``size`` an int from 0 (never a bool), the roots and the MAC 32 bytes.
    """

    scheme: str
    session_id: str
    size: Annotated[int, Field(ge=0, le=2**63 - 1)]
    log_root: Annotated[bytes, Field(min_length=32, max_length=32)]
    state_root: Annotated[bytes, Field(min_length=32, max_length=32)]
    time: str
    mac: Annotated[bytes, Field(min_length=32, max_length=32)] | None = None

    @field_validator("scheme")
    @classmethod
    def _known_scheme(cls, scheme: str) -> str:
        if scheme != CHECKPOINT_SCHEME:
            raise ValueError(f"unknown scheme {scheme!r}; this library reads {CHECKPOINT_SCHEME!r}")
        return scheme

    def _payload(self) -> bytes:
        body = self.to_dict()
        body.pop("mac")
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (hashes as lowercase hex)."""
        return {
            "scheme": self.scheme,
            "session_id": self.session_id,
            "size": self.size,
            "log_root": self.log_root.hex(),
            "state_root": self.state_root.hex(),
            "time": self.time,
            "mac": None if self.mac is None else self.mac.hex(),
        }

    def to_json(self) -> str:
        """The checkpoint as JSON text."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> Checkpoint:
        """Parse :meth:`to_json` output (keys it does not know are ignored).

        Raises:
            ValueError: The text is not a checkpoint; the one-line message says which field
                is wrong and why.
        """
        prefix = "not a perspt-store checkpoint"
        try:
            data = json.loads(text)
        except (ValueError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
            raise ValueError(f"{prefix}: not JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{prefix}: not a JSON object")
        fields = ("scheme", "session_id", "size", "log_root", "state_root", "time")
        missing = [name for name in fields if name not in data]
        if missing:
            raise ValueError(f"{prefix}: no {', '.join(missing)}")
        values = {name: data[name] for name in (*fields, "mac") if name in data}
        for name in ("log_root", "state_root", "mac"):
            if isinstance(values.get(name), str):
                try:
                    values[name] = bytes.fromhex(values[name])
                except ValueError:
                    raise ValueError(f"{prefix}: {name}: not hex digits") from None
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                if error["type"] in ("bytes_too_short", "bytes_too_long"):
                    n = len(error["input"])
                    why = f"{n} byte{'' if n == 1 else 's'}, not 32"
                else:
                    why = error["msg"].removeprefix("Value error, ")
                    why = why.replace("Input should", "should")
                problems.append(f"{'.'.join(str(part) for part in error['loc'])}: {why}")
            raise ValueError(f"{prefix}: {'; '.join(problems)}") from exc

    def sign(self, key: bytes) -> Checkpoint:
        """A copy with ``mac`` set from a 32-byte key."""
        return self.model_copy(update={"mac": blake3(self._payload(), key=key).digest()})

    def verify_mac(self, key: bytes) -> bool:
        """True if ``mac`` was made with ``key`` over these exact fields."""
        return self.mac is not None and self.sign(key).mac == self.mac


class Problem(_Frozen):
    """One difference ``verify_session`` found."""

    kind: str
    """edited, deleted, inserted, reordered, forged, root-mismatch or checkpoint."""
    detail: str
    seq: int | None = None
    node_id: str | None = None


class VerificationReport(Displayable, _Frozen):
    """What ``verify_session`` recomputed and what differs. ``ok`` only if nothing does."""

    _text_renderer: ClassVar[str | None] = "verification_repr"
    _html_renderer: ClassVar[str] = "verification_html"

    session_id: str
    log_size: int
    log_root: bytes
    state_root: bytes
    problems: list[Problem]
    notes: list[str]

    @property
    def ok(self) -> bool:
        """True when no problem was found (notes do not count)."""
        return not self.problems

    def __bool__(self) -> bool:
        return self.ok

    def raise_for_problems(self) -> None:
        """Raise :class:`~perspt_store.IntegrityError` if any problem was found.

        Raises:
            IntegrityError: The session failed verification; the message lists the problems.
        """
        if self.problems:
            listed = "; ".join(
                f"{p.kind} at seq {p.seq}: {p.detail}"
                if p.seq is not None
                else f"{p.kind}: {p.detail}"
                for p in self.problems
            )
            raise IntegrityError(
                f"session {self.session_id!r} failed verification: {listed}",
                table="merkle_log",
                operation="verify",
            )


class RollbackChange(NamedTuple):
    """One commit a rollback appends (see ``SessionStore.rollback_plan``)."""

    node_id: str
    kind: str
    """``restore`` (the node gets its row at the target back) or ``remove`` (the target did
    not have the node: a tombstone row)."""
    record: NodeStateRecord
    """The row the commit writes: the node's row at the target, or the tombstone."""

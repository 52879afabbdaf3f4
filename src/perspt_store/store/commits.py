"""The Merkle commit log of each session: commits, roots, proofs, checkpoints, verification
and rollback.

Every node-state write appends one leaf to its session's log in the same transaction, and
sets ``sessions.merkle_root`` to the new *state root* (the tree over the latest state of every
node, in ``node_id`` order). ``seq`` is 0-based: commit ``seq`` is leaf ``seq`` of the log, and
the log has ``seq + 1`` leaves after it. Nothing is ever deleted: a rollback appends commits
that restore the target's states (and tombstones for nodes the target did not have).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, NamedTuple

from blake3 import blake3
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .. import merkle
from .._commitlog import (
    INSERT_LOG_INTO,
    INSERT_LOG_SQL,
    REMOVED_STATE,
    NodeCommit,
    SessionLog,
    log_rows,
)
from .._displayable import Displayable
from .._mapping import table_map
from ..errors import IntegrityError, RecordNotFoundError, SessionNotFoundError
from ..rows import NodeStateRecord
from ._base import StoreBase, consistent

CHECKPOINT_SCHEME = "perspt-store/merkle-log/v1 (RFC 9162, blake3)"

# One node state, its log entry and the session's new root in one statement (DuckDB 2.0 runs
# data-modifying CTEs exactly once, atomically with the statement): a third of the cost of
# BEGIN, three statements and COMMIT. The UPDATE must be the main statement: DuckDB rejects
# UPDATE ... RETURNING on a table that foreign keys reference.
_COMMIT_ONE_SQL = (
    f"WITH node AS ({table_map(NodeStateRecord).insert_sql} RETURNING id), "
    f"entry AS ({INSERT_LOG_INTO} "
    "SELECT ?, ?, node.id, ?, ?, ?, ?, ? FROM node RETURNING seq) "
    "UPDATE sessions SET merkle_root = ?, updated_at = now() WHERE session_id = ?"
)

_LOG_ENTRIES_SQL = """
SELECT seq, node_state_id, node_id, kind, leaf_hash, state_root, log_root
FROM merkle_log WHERE session_id = ? ORDER BY seq
"""


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
    """One commit a rollback appends (see :meth:`CommitLogMixin.rollback_plan`)."""

    node_id: str
    kind: str
    """``restore`` (the node gets its row at the target back) or ``remove`` (the target did
    not have the node: a tombstone row)."""
    record: NodeStateRecord
    """The row the commit writes: the node's row at the target, or the tombstone."""


class CommitLogMixin(StoreBase):
    """Commits, Merkle roots, proofs, checkpoints, verification and rollback."""

    # --- writing ------------------------------------------------------------------------

    def _session_log(self, session_id: str, *, check: bool = False) -> SessionLog:
        """The session's trees as of the last commit (cached; call under the write lock).

        With ``check``, a cached log is first compared with the database's (another store
        handle on the same file may have committed since): one count, reloaded if it differs.
        """
        log = self._commit_logs.get(session_id)
        if log is not None and check:
            stored = self._scalar(
                "SELECT count(*) FROM merkle_log WHERE session_id = ?",
                [session_id],
                table="merkle_log",
            )
            if stored != log.log.size:
                log = None
        if log is None:
            entries = self._execute(
                "SELECT node_id, kind, leaf_hash FROM merkle_log WHERE session_id = ? ORDER BY seq",
                [session_id],
                table="merkle_log",
                operation="select",
            )
            try:
                log = SessionLog.from_entries(entries)
            except ValueError as exc:  # a leaf that is no blake3 digest: not our writing
                raise IntegrityError(
                    f"the commit log of session {session_id!r} holds an entry the store did "
                    f"not write ({exc}); nothing was written: run verify_session",
                    table="merkle_log",
                    operation="commit",
                ) from exc
            self._commit_logs[session_id] = log
        return log

    def _commit_node_states(self, items: Sequence[tuple[NodeStateRecord, str]]) -> list[NodeCommit]:
        """Append node-state rows and their commits atomically; one statement per table.

        Args:
            items: ``(record, kind)`` pairs in commit order; kind is commit, restore or remove.
        """
        if not items:
            return []
        if len(items) == 1:
            return [self._commit_one(*items[0])]
        with self.transaction():
            records = [record for record, _ in items]
            ids = self._insert_rows(records, returning_ids=True)
            for session_id in {record.session_id for record in records}:
                self._session_log(session_id, check=True)
            commits = [
                self._session_log(record.session_id).append(
                    record.session_id, record.node_id, kind, merkle.hash_node_state(record)
                )
                for record, kind in items
            ]
            self._write(INSERT_LOG_SQL, log_rows(commits, ids), table="merkle_log")
            roots = {c.session_id: c.state_root for c in commits}  # the last one wins
            for session_id, root in roots.items():
                self._write(
                    "UPDATE sessions SET merkle_root = ?, updated_at = now() WHERE session_id = ?",
                    [root, session_id],
                    table="sessions",
                    operation="update",
                )
        return commits

    def _commit_one(self, record: NodeStateRecord, kind: str) -> NodeCommit:
        """:meth:`_commit_node_states` of one record, in one statement."""
        self._check_writable("node_states")
        if self._buffer is not None:
            self._drain_pending()  # buffered rows commit first, as before a transaction
        session_id = record.session_id
        leaf = merkle.hash_node_state(record)
        row = table_map(NodeStateRecord).encode(record)
        with self._lock:

            def commit_once() -> NodeCommit:
                # Inside a caller's transaction a stale log would doom it: check it first.
                log = self._session_log(session_id, check=self.in_transaction)
                commit = log.append(session_id, record.node_id, kind, leaf)
                params = [
                    *row,
                    *(session_id, commit.seq, commit.node_id, kind, commit.leaf_hash),
                    *(commit.state_root, commit.log_root, commit.state_root, session_id),
                ]
                try:
                    self._execute(
                        _COMMIT_ONE_SQL, params, table="node_states", operation="insert",
                        session_id=session_id,
                    )
                except BaseException:
                    self._commit_logs.pop(session_id, None)  # it holds the failed commit
                    raise
                return commit

            # Another handle on this file may commit to the session first: reload, retry.
            commit = self._retrying(commit_once, commits=True)
            if not self.in_transaction:
                self._changed()
        return commit

    # --- reading ------------------------------------------------------------------------

    def _log_entries(self, session_id: str) -> list[tuple[Any, ...]]:
        if not self._session_exists(session_id):
            raise SessionNotFoundError(session_id, table="merkle_log")
        return self._execute(_LOG_ENTRIES_SQL, [session_id], table="merkle_log", operation="select")

    def _log_tree(self, session_id: str) -> merkle.MerkleTree:
        return merkle.MerkleTree(entry[4] for entry in self._log_entries(session_id))

    def _log_tree_at(self, session_id: str, size: int | None) -> tuple[merkle.MerkleTree, int]:
        """The session's log tree and ``size``, the whole log's when None (for the proofs)."""
        tree = self._log_tree(session_id)
        return tree, tree.size if size is None else size

    @consistent
    def get_commit_log(self, session_id: str) -> list[NodeCommit]:
        """Every commit of the session, in ``seq`` order.

        Raises:
            SessionNotFoundError: No such session.
        """
        entries = self._log_entries(session_id)
        return [
            NodeCommit(session_id, seq, node_id, kind, leaf, state_root, log_root, seq + 1)
            for seq, _, node_id, kind, leaf, state_root, log_root in entries
        ]

    @consistent
    def state_root(self, session_id: str) -> bytes:
        """The tree hash over the latest state of every node (ordered by node id); the
        empty-tree hash before the first commit.

        Raises:
            SessionNotFoundError: No such session.
        """
        entries = self._log_entries(session_id)
        return entries[-1][5] if entries else merkle.empty_root()

    @consistent
    def log_root(self, session_id: str, size: int | None = None) -> bytes:
        """The root of the session's commit log over its first ``size`` commits (all if None).

        Raises:
            SessionNotFoundError: No such session.
            ValueError: ``size`` is negative or larger than the log.
        """
        return self._log_tree(session_id).root(size)

    @consistent
    def inclusion_proof(self, session_id: str, seq: int, size: int | None = None) -> InclusionProof:
        """Prove that commit ``seq`` is in the log of ``size`` commits (default: all).

        Raises:
            SessionNotFoundError: No such session.
            ValueError: ``seq`` or ``size`` is out of range.
        """
        tree, size = self._log_tree_at(session_id, size)
        return InclusionProof(
            path=tree.inclusion_proof(seq, size),  # first: it checks seq and size
            session_id=session_id,
            seq=seq,
            log_size=size,
            leaf_hash=tree.leaf(seq),
            log_root=tree.root(size),
        )

    @consistent
    def consistency_proof(
        self, session_id: str, old_size: int, new_size: int | None = None
    ) -> ConsistencyProof:
        """Prove that the log at ``new_size`` (default: now) extends the log at ``old_size``.

        Raises:
            SessionNotFoundError: No such session.
            ValueError: The sizes are out of range or ``old_size > new_size``.
        """
        tree, new_size = self._log_tree_at(session_id, new_size)
        return ConsistencyProof(
            path=tree.consistency_proof(old_size, new_size),  # first: it checks the sizes
            session_id=session_id,
            old_size=old_size,
            new_size=new_size,
            old_root=tree.root(old_size),
            new_root=tree.root(new_size),
        )

    @consistent
    def checkpoint(self, session_id: str, *, key: bytes | None = None) -> Checkpoint:
        """A JSON-serialisable checkpoint of the session's log, MAC'd if ``key`` is given.

        Keep it outside the database: ``verify_session(session_id, against=checkpoint)``
        then proves that the log still extends it.

        Raises:
            SessionNotFoundError: No such session.
            ValueError: ``key`` is not 32 bytes.
        """
        entries = self._log_entries(session_id)
        tree = merkle.MerkleTree(entry[4] for entry in entries)
        checkpoint = Checkpoint(
            scheme=CHECKPOINT_SCHEME,
            session_id=session_id,
            size=tree.size,
            log_root=tree.root(),
            state_root=entries[-1][5] if entries else merkle.empty_root(),
            time=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        )
        if key is not None:
            if len(key) != 32:
                raise ValueError("a checkpoint key must be 32 bytes")
            checkpoint = checkpoint.sign(key)
        return checkpoint

    # --- verification -------------------------------------------------------------------

    @consistent
    def verify_session(
        self, session_id: str, against: Checkpoint | None = None, *, key: bytes | None = None
    ) -> VerificationReport:
        """Recompute every leaf and root of the session from its stored rows and report
        precisely what differs.

        Detects node states edited, deleted, inserted or reordered behind the store's back,
        forged log entries, a ``merkle_root`` that no longer matches (a value set through
        ``update_merkle_root`` or carried over from upstream is a note, not a problem) and,
        with ``against``, a log that no longer extends that checkpoint (and, with ``key``, a
        checkpoint whose MAC does not match, or that has none).

        Raises:
            SessionNotFoundError: No such session.
            ValueError: ``key`` is not 32 bytes.
        """
        if key is not None and len(key) != 32:
            raise ValueError(f"a checkpoint key must be 32 bytes, not {len(key)}")
        entries = self._log_entries(session_id)
        mapping = table_map(NodeStateRecord)
        mark = self._legacy_marks.get("node_states")
        rows = {
            values[-1]: mapping.decode(values[:-1], legacy=mark is not None and values[-1] <= mark)
            for values in self._execute(
                f"SELECT {mapping.select_list}, id FROM node_states WHERE session_id = ? "
                "ORDER BY id",
                [session_id],
                table="node_states",
                operation="select",
            )
        }
        problems: list[Problem] = []
        notes: list[str] = []
        # From the rows as they are now: the log, and each node's latest leaf (the state
        # root is computed once, at the end).
        log_tree = merkle.MerkleTree()
        latest: dict[str, bytes | None] = {}
        stored = merkle.MerkleTree()
        stored_state = SessionLog()
        last_row_id = -1
        for expected_seq, entry in enumerate(entries):
            seq, row_id, node_id, kind, leaf, state_root, log_root = entry
            if seq != expected_seq:
                problems.append(
                    Problem(
                        kind="deleted",
                        seq=expected_seq,
                        detail=f"log entries {expected_seq}..{seq - 1} are missing",
                    )
                )
            row = rows.pop(row_id, None)
            if row_id <= last_row_id:
                problems.append(
                    Problem(
                        kind="reordered",
                        seq=seq,
                        node_id=node_id,
                        detail=f"node state {row_id} is out of insertion order",
                    )
                )
            last_row_id = max(last_row_id, row_id)
            if row is None:
                problems.append(
                    Problem(
                        kind="deleted",
                        seq=seq,
                        node_id=node_id,
                        detail=f"node state {row_id} committed at seq {seq} is gone",
                    )
                )
                actual_leaf = leaf
            else:
                actual_leaf = merkle.hash_node_state(row)
                if actual_leaf != leaf or row.node_id != node_id:
                    problems.append(
                        Problem(
                            kind="edited",
                            seq=seq,
                            node_id=node_id,
                            detail=f"node state {row_id} no longer hashes to its committed leaf",
                        )
                    )
            log_tree.append(actual_leaf)
            latest[node_id] = None if kind == "remove" else actual_leaf
            stored.append(leaf)
            stored_state.state.set(node_id, None if kind == "remove" else leaf)
            if stored.root() != log_root or stored_state.state.root() != state_root:
                problems.append(
                    Problem(
                        kind="forged",
                        seq=seq,
                        node_id=node_id,
                        detail="the entry's roots do not follow from the log",
                    )
                )
        for row_id, row in rows.items():
            problems.append(
                Problem(
                    kind="inserted",
                    node_id=row.node_id,
                    detail=f"node state {row_id} was never committed",
                )
            )
        state_root = merkle.tree_root(
            [leaf for _, leaf in sorted(latest.items()) if leaf is not None]
        )
        self._check_merkle_root(session_id, state_root, len(entries), problems, notes)
        if against is not None:
            self._check_against(session_id, log_tree, against, key, problems, notes)
        return VerificationReport(
            session_id=session_id,
            log_size=log_tree.size,
            log_root=log_tree.root(),
            state_root=state_root,
            problems=problems,
            notes=notes,
        )

    def _check_merkle_root(
        self,
        session_id: str,
        state_root: bytes,
        log_size: int,
        problems: list[Problem],
        notes: list[str],
    ) -> None:
        stored = self._scalar(
            "SELECT merkle_root FROM sessions WHERE session_id = ?",
            [session_id],
            table="sessions",
        )
        if stored == state_root or (stored is None and not log_size):
            return
        override = self._execute(
            "SELECT merkle_root, source, log_size FROM merkle_root_overrides "
            "WHERE session_id = ? ORDER BY id DESC LIMIT 1",
            [session_id],
            table="merkle_root_overrides",
            operation="select",
        )
        # Only the override that is current excuses the root: set after the last commit
        # (a commit since would have set the state root).
        if override and override[0][0] == stored and override[0][2] in (None, log_size):
            how = "update_merkle_root" if override[0][1] == "update_merkle_root" else "upstream"
            notes.append(
                f"sessions.merkle_root was set by {how}, not by a commit; the state root is "
                f"{state_root.hex()}"
            )
            return
        problems.append(
            Problem(
                kind="root-mismatch",
                detail="sessions.merkle_root is neither the state root nor a recorded override",
            )
        )

    @staticmethod
    def _check_against(
        session_id: str,
        log: merkle.MerkleTree,
        against: Checkpoint,
        key: bytes | None,
        problems: list[Problem],
        notes: list[str],
    ) -> None:
        if against.session_id != session_id:
            problems.append(
                Problem(
                    kind="checkpoint",
                    detail=f"the checkpoint is of session {against.session_id!r}, "
                    f"not {session_id!r}",
                )
            )
            return
        if key is not None and against.mac is None:
            detail = "the checkpoint has no MAC to check the key against"
            problems.append(Problem(kind="checkpoint", detail=detail))
        elif key is not None and not against.verify_mac(key):
            problems.append(Problem(kind="checkpoint", detail="the checkpoint's MAC is wrong"))
        elif key is None and against.mac is not None:
            notes.append("the checkpoint's MAC was not checked: no key was given")
        if against.size > log.size:
            problems.append(
                Problem(
                    kind="checkpoint",
                    detail=f"the log has {log.size} commits, fewer than the "
                    f"checkpoint's {against.size}",
                )
            )
            return
        proof = log.consistency_proof(against.size, log.size)
        if not merkle.verify_consistency(
            against.size, log.size, against.log_root, log.root(), proof
        ):
            problems.append(
                Problem(
                    kind="checkpoint",
                    detail=f"the log no longer extends the checkpoint at size {against.size}",
                )
            )

    # --- rollback -----------------------------------------------------------------------

    def rollback(
        self, session_id: str, *, to_seq: int | None = None, to_root: bytes | None = None
    ) -> NodeCommit:
        """Restore the node states as of commit ``to_seq`` (or of the last commit whose state
        root is ``to_root``) by appending commits; nothing is deleted.

        Nodes that differ get a ``restore`` commit (a copy of their row at the target);
        nodes the target did not have get a ``remove`` commit (a tombstone row). Afterwards
        ``state_root(session_id)`` equals the target's state root and
        ``get_latest_node_states`` returns the target's states.

        Returns:
            The last commit appended (the current head if nothing differed).

        Raises:
            ValueError: Neither or both of ``to_seq`` and ``to_root`` were given.
            RecordNotFoundError: No such commit or root in the session; nothing changed.
        """
        if (to_seq is None) == (to_root is None):
            raise ValueError("give exactly one of to_seq and to_root")

        def restore() -> tuple[list[NodeCommit], list[tuple[Any, ...]]]:
            with self.transaction():
                entries = self._log_entries(session_id)
                changes = self._rollback_changes(session_id, entries, to_seq, to_root)
                commits = self._commit_node_states([(c.record, c.kind) for c in changes])
            return commits, entries

        # A whole transaction: if another handle commits to the session meanwhile, it runs
        # again against the log as it is then.
        commits, entries = self._retrying(restore, commits=True)
        if commits:
            return commits[-1]
        head = entries[-1]
        return NodeCommit(
            session_id, head[0], head[2], head[3], head[4], head[5], head[6], head[0] + 1
        )

    @consistent
    def rollback_plan(
        self, session_id: str, *, to_seq: int | None = None, to_root: bytes | None = None
    ) -> list[RollbackChange]:
        """What :meth:`rollback` with the same arguments would append now, without writing:
        one :class:`RollbackChange` per node that differs, in ``node_id`` order (empty when
        the session is already at the target).

        Raises:
            ValueError: Neither or both of ``to_seq`` and ``to_root`` were given.
            RecordNotFoundError: No such commit or root in the session.
        """
        if (to_seq is None) == (to_root is None):
            raise ValueError("give exactly one of to_seq and to_root")
        entries = self._log_entries(session_id)
        return self._rollback_changes(session_id, entries, to_seq, to_root)

    def _rollback_changes(
        self,
        session_id: str,
        entries: list[tuple[Any, ...]],
        to_seq: int | None,
        to_root: bytes | None,
    ) -> list[RollbackChange]:
        """The restore and remove commits that bring the log's head back to the target."""
        target = self._rollback_target(session_id, entries, to_seq, to_root)
        latest: dict[str, tuple[int, str]] = {}
        for _seq, row_id, node_id, kind, *_ in entries[: target + 1]:
            latest[node_id] = (row_id, kind)
        wanted = [row_id for row_id, kind in latest.values() if kind != "remove"]
        restored = {
            row.node_id: row
            for row in self._select(
                NodeStateRecord,
                f"id IN ({', '.join('?' for _ in wanted)})" if wanted else "false",
                wanted,
                order_by="id",
            )
        }
        current = self._session_log(session_id, check=True).state.leaves()
        changes: list[RollbackChange] = []
        for node_id in sorted(set(restored) | set(current)):
            row = restored.get(node_id)
            if row is None:
                tombstone = NodeStateRecord(
                    node_id=node_id, session_id=session_id, state=REMOVED_STATE
                )
                changes.append(RollbackChange(node_id, "remove", tombstone))
            elif current.get(node_id) != merkle.hash_node_state(row):
                changes.append(RollbackChange(node_id, "restore", row))
        return changes

    @staticmethod
    def _rollback_target(
        session_id: str,
        entries: list[tuple[Any, ...]],
        to_seq: int | None,
        to_root: bytes | None,
    ) -> int:
        if to_seq is not None:
            if not 0 <= to_seq < len(entries):
                raise RecordNotFoundError(
                    f"session {session_id!r} has no commit {to_seq} (its log has "
                    f"{len(entries)} commits, seq 0..{len(entries) - 1}); nothing changed",
                    table="merkle_log",
                    operation="rollback",
                )
            return to_seq
        matches = [entry[0] for entry in entries if entry[5] == to_root]
        if not matches:
            shown = to_root.hex() if isinstance(to_root, bytes) else repr(to_root)
            raise RecordNotFoundError(
                f"no commit of session {session_id!r} has state root {shown}; nothing changed",
                table="merkle_log",
                operation="rollback",
            )
        return int(matches[-1])


__all__ = [
    "CHECKPOINT_SCHEME",
    "Checkpoint",
    "CommitLogMixin",
    "ConsistencyProof",
    "InclusionProof",
    "NodeCommit",
    "Problem",
    "RollbackChange",
    "VerificationReport",
]

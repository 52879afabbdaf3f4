"""The store's commit code: the Merkle commit log of each session, written, read, verified and
rolled back, and the ``merkle_log`` SQL (with the migration that backfills it).

Every node-state write appends one leaf to its session's log in the same transaction, and
sets ``sessions.merkle_root`` to the new *state root* (the tree over the latest state of every
node, in ``node_id`` order). Nothing is ever deleted: a rollback appends commits that restore
the target's states (and tombstones for nodes the target did not have). The types handed out
live in :mod:`perspt_store.commitlog`; the trees in :mod:`perspt_store.merkle`.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import duckdb

from .. import merkle
from .._mapping import table_map
from ..commitlog import (
    CHECKPOINT_SCHEME,
    COMMIT_KINDS,
    REMOVED_STATE,
    Checkpoint,
    ConsistencyProof,
    InclusionProof,
    NodeCommit,
    Problem,
    RollbackChange,
    VerificationReport,
)
from ..errors import IntegrityError, RecordNotFoundError, SessionNotFoundError
from ..rows import NodeStateRecord
from ._base import StoreBase, consistent, translate_error
from ._groupcommit import BufferedCommit, GroupCommit


class LogEntry(NamedTuple):
    """One ``merkle_log`` row, as :data:`_LOG_ENTRIES_SQL` reads it."""

    seq: int
    node_state_id: int
    node_id: str
    kind: str
    leaf_hash: bytes
    state_root: bytes
    log_root: bytes

    def commit(self, session_id: str) -> NodeCommit:
        """The entry as the commit it records."""
        return NodeCommit(
            session_id, self.seq, self.node_id, self.kind, self.leaf_hash, self.state_root,
            self.log_root, self.seq + 1,
        )


# --- the merkle_log SQL ---------------------------------------------------------------------

MERKLE_LOG_COLUMNS = ("session_id", *LogEntry._fields)
"""The columns of ``merkle_log`` the store writes (``created_at`` takes its default)."""

INSERT_LOG_INTO = f"INSERT INTO merkle_log ({', '.join(MERKLE_LOG_COLUMNS)})"
"""The head of every statement that appends log entries, columns in that order."""

INSERT_LOG_SQL = f"{INSERT_LOG_INTO} SELECT {', '.join('unnest(?)' for _ in MERKLE_LOG_COLUMNS)}"
"""Appends many log entries in one statement (one list parameter per column)."""


def log_rows(commits: Sequence[NodeCommit], node_state_ids: Sequence[int]) -> list[list[Any]]:
    """Column lists for :data:`INSERT_LOG_SQL`."""
    return [
        [c.session_id for c in commits],
        [c.seq for c in commits],
        list(node_state_ids),
        [c.node_id for c in commits],
        [c.kind for c in commits],
        [c.leaf_hash for c in commits],
        [c.state_root for c in commits],
        [c.log_root for c in commits],
    ]


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

_LOG_ENTRIES_SQL = (
    f"SELECT {', '.join(LogEntry._fields)} FROM merkle_log WHERE session_id = ? ORDER BY seq"
)
"""A session's log, as :class:`LogEntry` values, in ``seq`` order."""


class SessionLog:
    """Both trees of one session, as of the last commit."""

    def __init__(self) -> None:
        self.log = merkle.MerkleTree()
        self.state = merkle.StateTree()

    @classmethod
    def from_entries(cls, entries: Iterable[Sequence[Any]]) -> SessionLog:
        """Rebuild from stored ``(node_id, kind, leaf_hash)`` rows in ``seq`` order."""
        built = cls()
        for node_id, kind, leaf in entries:
            built.log.append(leaf)
            built.state.set(node_id, None if kind == "remove" else leaf)
        return built

    def append(self, session_id: str, node_id: str, kind: str, leaf: bytes) -> NodeCommit:
        """Add one commit to both trees and describe it."""
        seq = self.log.append(leaf)
        self.state.set(node_id, None if kind == "remove" else leaf)
        return NodeCommit(
            session_id=session_id,
            seq=seq,
            node_id=node_id,
            kind=kind,
            leaf_hash=leaf,
            state_root=self.state.root(),
            log_root=self.log.root(),
            log_size=self.log.size,
        )


# --- migration: backfill the log of rows written before it existed -------------------------


def backfill(conn: Any, legacy_mark: int | None) -> None:
    """Give every existing node-state row a log entry, in insertion order, per session.

    Rows at or below ``legacy_mark`` are decoded with upstream's encodings first, so their
    leaves hash what the store will read back. A session whose stored ``merkle_root`` is not
    the state root we compute (upstream stored a seal hash there) gets that root recorded as
    an ``upstream`` override, which ``verify_session`` reports as a note.
    """
    mapping = table_map(NodeStateRecord)
    rows = conn.execute(mapping.select(
        "NOT EXISTS (SELECT 1 FROM merkle_log l WHERE l.node_state_id = node_states.id)",
        order_by="id", extra=("id",),
    )[0]).fetchall()
    logs: dict[str, SessionLog] = {}
    commits: list[NodeCommit] = []
    ids: list[int] = []
    for values in rows:
        node_state_id = values[-1]
        legacy = legacy_mark is not None and node_state_id <= legacy_mark
        record = mapping.decode(values[:-1], legacy=legacy)
        log = logs.setdefault(record.session_id, SessionLog())
        kind = "remove" if record.state == REMOVED_STATE else "backfill"
        commits.append(
            log.append(record.session_id, record.node_id, kind, merkle.hash_node_state(record))
        )
        ids.append(node_state_id)
    if commits:
        conn.execute(INSERT_LOG_SQL, log_rows(commits, ids))
    if not logs:
        return
    stored = dict(
        conn.execute(
            "SELECT session_id, merkle_root FROM sessions WHERE session_id IN (SELECT unnest(?))",
            [list(logs)],
        ).fetchall()
    )
    # A NULL root (never set) is recorded too: the session now has commits, and
    # verify_session must not take the missing root for a forged one.
    overrides = [
        (session_id, stored[session_id])
        for session_id, log in logs.items()
        if session_id in stored and stored[session_id] != log.state.root()
    ]
    if overrides:
        conn.execute(
            "INSERT INTO merkle_root_overrides (session_id, merkle_root, source) "
            "SELECT unnest(?), unnest(?), 'upstream'",
            [[sid for sid, _ in overrides], [root for _, root in overrides]],
        )



class CommitLogMixin(StoreBase):
    """Commits, Merkle roots, proofs, checkpoints, verification and rollback."""

    # --- writing ------------------------------------------------------------------------

    def record_node_state(self, record: NodeStateRecord) -> NodeCommit:
        """Append one snapshot of a node and commit it to the session's Merkle log, in one
        transaction (``sessions.merkle_root`` becomes the new state root).

        In a ``durability="batched"`` store (outside ``transaction()``) the commit is
        computed now and returned, and the row, its log entry and the new root are written
        together by the next group flush (see :mod:`perspt_store.store._groupcommit`).

        Returns:
            The commit: its ``seq``, leaf hash, state root, log root and log size.

        Raises:
            SessionNotFoundError: The session does not exist; nothing was written.
        """
        return self._commit_node_states([(record, "commit")])[0]


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
            for session_id in {record.session_id for record in records}:
                self._session_log(session_id, check=True)
            commits = [
                self._session_log(record.session_id).append(
                    record.session_id, record.node_id, kind, merkle.hash_node_state(record)
                )
                for record, kind in items
            ]
            self._persist_commits(list(zip(records, commits, strict=True)))
        return commits

    def _persist_commits(self, items: Sequence[tuple[NodeStateRecord, NodeCommit]]) -> None:
        """Write node-state rows with the commits computed for them, in order: one statement
        per table (inside the caller's transaction: a batch, a rollback or a group flush)."""
        ids = self._insert_rows([record for record, _ in items], returning_ids=True)
        commits = [commit for _, commit in items]
        self._write(INSERT_LOG_SQL, log_rows(commits, ids), table="merkle_log")
        roots = {c.session_id: c.state_root for c in commits}  # the last one wins
        for session_id, root in roots.items():
            self._write(
                "UPDATE sessions SET merkle_root = ?, updated_at = now() WHERE session_id = ?",
                [root, session_id],
                table="sessions",
                operation="update",
            )

    def _commit_one(self, record: NodeStateRecord, kind: str) -> NodeCommit:
        """:meth:`_commit_node_states` of one record, in one statement."""
        self._check_writable("node_states")
        group = self._group
        if group is not None:
            if group.takes_now():
                return self._buffer_commit(group, record, kind)
            group.drain_pending()  # buffered rows commit first, as before a transaction
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

    def _buffer_commit(self, group: GroupCommit, record: NodeStateRecord, kind: str) -> NodeCommit:
        """Batched mode: compute the commit now (seq, leaf, roots) and buffer the row with
        it; the group flush writes row, log entry and root together (a crash loses them
        together, like any buffered row)."""
        session_id = record.session_id
        group.require_session(session_id, "node_states")
        leaf = merkle.hash_node_state(record)
        with self._lock:  # a flush holds it too: it never runs between seq and buffer
            if session_id not in self._commit_logs and group.buffered_commits:
                group.drain()  # the stored log must hold every buffered commit: load it after
            if not group.buffered_commits and session_id in self._commit_logs:
                # Nothing buffered: the stored log is the whole truth. Another handle on the
                # file may have committed since; a stale cache would hand out a taken seq.
                self._drop_stale_log(session_id)
            log = self._session_log(session_id)
            commit = log.append(session_id, record.node_id, kind, leaf)
            try:
                group.add(BufferedCommit(record, commit))
            except BaseException:
                self._commit_logs.pop(session_id, None)  # it holds a commit not buffered
                raise
        return commit

    def _drop_stale_log(self, session_id: str) -> None:
        """Forget the cached log if the stored one has another size (one count, on this
        thread's cursor: it commits no buffered rows)."""
        try:
            ((stored,),) = (
                self._cursor()
                .execute("SELECT count(*) FROM merkle_log WHERE session_id = ?", [session_id])
                .fetchall()
            )
        except duckdb.Error as exc:
            raise translate_error(exc, table="merkle_log", operation="select") from exc
        if stored != self._commit_logs[session_id].log.size:
            self._commit_logs.pop(session_id, None)

    # --- reading ------------------------------------------------------------------------

    def _log_entries(self, session_id: str) -> list[LogEntry]:
        if not self._session_exists(session_id):
            raise SessionNotFoundError(session_id, table="merkle_log")
        rows = self._execute(_LOG_ENTRIES_SQL, [session_id], table="merkle_log", operation="select")
        return [LogEntry._make(row) for row in rows]

    def _log_tree(self, session_id: str) -> merkle.MerkleTree:
        return merkle.MerkleTree(entry.leaf_hash for entry in self._log_entries(session_id))

    @consistent
    def get_commit_log(self, session_id: str) -> list[NodeCommit]:
        """Every commit of the session, in ``seq`` order.

        Raises:
            SessionNotFoundError: No such session.
        """
        return [entry.commit(session_id) for entry in self._log_entries(session_id)]

    @consistent
    def state_root(self, session_id: str) -> bytes:
        """The tree hash over the latest state of every node (ordered by node id); the
        empty-tree hash before the first commit.

        Raises:
            SessionNotFoundError: No such session.
        """
        entries = self._log_entries(session_id)
        return entries[-1].state_root if entries else merkle.empty_root()

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
        return InclusionProof.of(session_id, self._log_tree(session_id), seq, size)

    @consistent
    def consistency_proof(
        self, session_id: str, old_size: int, new_size: int | None = None
    ) -> ConsistencyProof:
        """Prove that the log at ``new_size`` (default: now) extends the log at ``old_size``.

        Raises:
            SessionNotFoundError: No such session.
            ValueError: The sizes are out of range or ``old_size > new_size``.
        """
        return ConsistencyProof.of(session_id, self._log_tree(session_id), old_size, new_size)

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
        tree = merkle.MerkleTree(entry.leaf_hash for entry in entries)
        checkpoint = Checkpoint(
            scheme=CHECKPOINT_SCHEME,
            session_id=session_id,
            size=tree.size,
            log_root=tree.root(),
            state_root=entries[-1].state_root if entries else merkle.empty_root(),
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
        rows = {
            row.id: row
            for row in self._select(NodeStateRecord, "session_id = ?", [session_id], order_by="id")
        }
        problems: list[Problem] = []
        notes: list[str] = []
        # From the rows as they are now: the log, and each node's latest leaf (the state
        # root is computed once, at the end).
        log_tree = merkle.MerkleTree()
        latest: dict[str, bytes | None] = {}
        stored = merkle.MerkleTree()
        stored_state = merkle.StateTree()
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
            stored_state.set(node_id, None if kind == "remove" else leaf)
            if stored.root() != log_root or stored_state.root() != state_root:
                problems.append(
                    Problem(
                        kind="forged",
                        seq=seq,
                        node_id=node_id,
                        detail="the entry's roots do not follow from the log",
                    )
                )
        for stray in rows.values():
            problems.append(
                Problem(
                    kind="inserted",
                    node_id=stray.node_id,
                    detail=f"node state {stray.id} was never committed",
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

        def restore() -> tuple[list[NodeCommit], list[LogEntry]]:
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
        return entries[-1].commit(session_id)

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
        entries: list[LogEntry],
        to_seq: int | None,
        to_root: bytes | None,
    ) -> list[RollbackChange]:
        """The restore and remove commits that bring the log's head back to the target."""
        target = self._rollback_target(session_id, entries, to_seq, to_root)
        latest: dict[str, tuple[int, str]] = {}
        for entry in entries[: target + 1]:
            latest[entry.node_id] = (entry.node_state_id, entry.kind)
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
        # The head's leaves from the same entries (the caller's snapshot), never from the
        # cached log: rollback_plan is a read on any thread, and the cache may hold commits
        # a batched store has not flushed yet (reloading it here rewound a writer's seqs).
        current: dict[str, bytes] = {}
        for entry in entries:
            if entry.kind == "remove":
                current.pop(entry.node_id, None)
            else:
                current[entry.node_id] = entry.leaf_hash
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
        entries: list[LogEntry],
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
        matches = [entry.seq for entry in entries if entry.state_root == to_root]
        if not matches:
            shown = to_root.hex() if isinstance(to_root, bytes) else repr(to_root)
            raise RecordNotFoundError(
                f"no commit of session {session_id!r} has state root {shown}; nothing changed",
                table="merkle_log",
                operation="rollback",
            )
        return matches[-1]


__all__ = [
    "CHECKPOINT_SCHEME",
    "COMMIT_KINDS",
    "REMOVED_STATE",
    "Checkpoint",
    "CommitLogMixin",
    "ConsistencyProof",
    "InclusionProof",
    "LogEntry",
    "NodeCommit",
    "Problem",
    "RollbackChange",
    "VerificationReport",
]

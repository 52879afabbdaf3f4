"""The session commit log's in-memory side: the state tree and the log tree of one session.

Every node-state write is one *commit*: a leaf ``hash_node_state(row)`` appended to the
session's log (an RFC 9162 tree, :class:`~perspt_store.merkle.MerkleTree`), after which the
session's *state root* is the tree hash over the latest leaf of every node, in ``node_id``
order. Commits are stored in the ``merkle_log`` table; this module keeps both trees in
memory so a commit costs O(log n) hashes, not a rebuild.

A *removal* (written by a rollback for nodes that did not exist at its target) is a commit
whose row has the tombstone state :data:`REMOVED_STATE`: it is a leaf of the log, but the
node leaves the state tree and the latest node states.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from ._mapping import table_map
from .merkle import MerkleTree, empty_root, hash_node_state, node_hash
from .rows import NodeStateRecord

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


class SessionLog:
    """Both trees of one session, as of the last commit."""

    def __init__(self) -> None:
        self.log = MerkleTree()
        self.state = StateTree()

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

MERKLE_LOG_COLUMNS = (
    "session_id",
    "seq",
    "node_state_id",
    "node_id",
    "kind",
    "leaf_hash",
    "state_root",
    "log_root",
)

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
            log.append(record.session_id, record.node_id, kind, hash_node_state(record))
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

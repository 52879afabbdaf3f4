"""Sessions family: ``sessions``, ``node_states``, ``energy_history``, ``task_graph_edges``,
and the per-session artifact directories."""

from __future__ import annotations

from pathlib import Path

from ..commitlog import REMOVED_STATE
from ..errors import SessionNotFoundError
from ..rowlist import RowList
from ..rows import EnergyRecord, NodeStateRecord, SessionRecord, TaskGraphEdgeRow
from ._base import StoreBase

_PATH_SEPARATORS = ("/", "\\", "\x00")


def validate_session_id_for_path(session_id: str) -> str:
    """Return ``session_id`` if it is safe as one path component, else raise ValueError."""
    if (
        not session_id
        or session_id in (".", "..")
        or any(sep in session_id for sep in _PATH_SEPARATORS)
        or session_id != session_id.strip()
        or ":" in session_id  # a drive on Windows
    ):
        raise ValueError(
            f"session id {session_id!r} cannot be used as a directory name: it must be one "
            "path component without separators, '..', ':' or surrounding spaces"
        )
    return session_id


class SessionsMixin(StoreBase):
    """Sessions, node snapshots, energy history and the task graph."""

    # --- sessions -------------------------------------------------------------------------

    def create_session(self, record: SessionRecord) -> None:
        """Insert a new session; ``created_at``/``updated_at`` default to now.

        Raises:
            DuplicateRecordError: A session with this id already exists.
        """
        self._insert(record)

    def update_merkle_root(self, session_id: str, merkle_root: bytes) -> int:
        """Set the session's ``merkle_root`` (and ``updated_at``); returns the rows changed (1).

        Commits set ``merkle_root`` to the state root themselves; a value set here is
        recorded as an override, which ``verify_session`` reports as a note (upstream's
        ledger stores an interface seal hash here).

        Raises:
            ValueError: ``merkle_root`` is not 32 bytes (a blake3 digest).
            SessionNotFoundError: No such session; nothing was changed.
        """
        if len(merkle_root) != 32:
            raise ValueError(
                f"merkle_root must be a 32-byte blake3 digest, not {len(merkle_root)} bytes"
            )
        with self.transaction():
            changed = self._update_session(session_id, "merkle_root", bytes(merkle_root))
            # The log size it was set at: a commit after it sets the state root again.
            self._write(
                "INSERT INTO merkle_root_overrides (session_id, merkle_root, source, log_size) "
                "VALUES (?, ?, 'update_merkle_root', "
                "(SELECT count(*) FROM merkle_log WHERE session_id = ?))",
                [session_id, bytes(merkle_root), session_id],
                table="merkle_root_overrides",
                session_id=session_id,
            )
        return changed

    def update_session_status(self, session_id: str, status: str) -> int:
        """Set the session's ``status`` (and ``updated_at``); returns the rows changed (1).

        Raises:
            SessionNotFoundError: No such session; nothing was changed.
        """
        return self._update_session(session_id, "status", status)

    def _update_session(self, session_id: str, column: str, value: object) -> int:
        (changed,) = self._write(
            f"UPDATE sessions SET {column} = ?, updated_at = now() WHERE session_id = ?",
            [value, session_id],
            table="sessions",
            operation="update",
        )[0]
        if changed == 0:
            raise SessionNotFoundError(session_id, table="sessions", operation="update")
        return int(changed)

    def get_session(self, session_id: str) -> SessionRecord | None:
        """The session, or None."""
        return self._select_one(SessionRecord, "session_id = ?", [session_id])

    def list_sessions_paginated(self, limit: int, offset: int) -> list[SessionRecord]:
        """Sessions newest first (``created_at`` descending, then insertion order descending),
        then ``LIMIT``/``OFFSET``."""
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must be >= 0")
        return self._select(
            SessionRecord,
            order_by=f"created_at DESC, {self._order_column('sessions')} DESC",
            limit=limit,
            offset=offset,
        )

    def list_recent_sessions(self, limit: int) -> list[SessionRecord]:
        """The ``limit`` newest sessions (``list_sessions_paginated(limit, 0)``)."""
        return self.list_sessions_paginated(limit, 0)

    def count_sessions(self) -> int:
        """How many sessions the store holds."""
        return int(self._scalar("SELECT count(*) FROM sessions", table="sessions"))

    # --- session artifact directories -----------------------------------------------------

    @property
    def sessions_dir(self) -> Path:
        """The root of the per-session artifact directories."""
        return self._sessions_dir

    def get_session_dir(self, session_id: str) -> Path:
        """``<sessions_dir>/<session_id>``; computes the path, creates nothing.

        Raises:
            ValueError: The id is not a single safe path component (e.g. ``"../x"``).
        """
        return self._sessions_dir / validate_session_id_for_path(session_id)

    def create_session_dir(self, session_id: str) -> Path:
        """Like :meth:`get_session_dir`, and create the directory (with parents).

        Raises:
            ValueError: The id is not a single safe path component.
            ReadOnlyStoreError: The store is read-only (it creates nothing on disk).
        """
        self._check_writable(None)
        path = self.get_session_dir(session_id)
        path.mkdir(parents=True, exist_ok=True)
        return path

    # --- node_states ----------------------------------------------------------------------

    def get_node_states(self, session_id: str) -> list[NodeStateRecord]:
        """Every snapshot of the session (several per node), in insertion order."""
        return self._select(NodeStateRecord, "session_id = ?", [session_id], order_by="id")

    def get_latest_node_states(self, session_id: str) -> list[NodeStateRecord]:
        """The last-recorded snapshot of each node, ordered by when it was recorded.

        Nodes removed by a rollback (latest state ``"__removed__"``) are left out."""
        rows = self._select(
            NodeStateRecord, "session_id = ?", [session_id], latest_per="node_id", order_by="id"
        )
        return [row for row in rows if row.state != REMOVED_STATE]

    # --- energy_history -------------------------------------------------------------------

    def record_energy(self, record: EnergyRecord) -> None:
        """Append one energy measurement (its ``timestamp`` is now)."""
        self._insert(record)

    def get_energy_history(self, session_id: str, node_id: str) -> list[EnergyRecord]:
        """One node's measurements in insertion order; the last is the latest."""
        return self._select(
            EnergyRecord, "session_id = ? AND node_id = ?", [session_id, node_id], order_by="id"
        )

    def get_session_energy_history(self, session_id: str) -> RowList[EnergyRecord]:
        """Every node's measurements in insertion order.

        A session's history can run to hundreds of thousands of rows, so they come back as
        a :class:`~perspt_store.RowList`: a list whose models are built as they are first
        read (``len()`` and the last few rows cost only what they touch).
        """
        return self._select_rows(EnergyRecord, "session_id = ?", [session_id], order_by="id")

    # --- task_graph_edges -----------------------------------------------------------------

    def record_task_graph_edge(self, record: TaskGraphEdgeRow) -> None:
        """Append one edge (duplicates allowed, as upstream; see
        :meth:`record_task_graph_edge_once`)."""
        self._insert(record)

    def record_task_graph_edge_once(self, record: TaskGraphEdgeRow) -> bool:
        """Append the edge unless the same (parent, child, type) edge exists; True if added."""
        (added,) = self._write(
            "INSERT INTO task_graph_edges (session_id, parent_node_id, child_node_id, edge_type) "
            "SELECT ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM task_graph_edges "
            "WHERE session_id = ? AND parent_node_id = ? AND child_node_id = ? AND edge_type = ?)",
            [record.session_id, record.parent_node_id, record.child_node_id, record.edge_type] * 2,
            table="task_graph_edges",
            session_id=record.session_id,
        )[0]
        return bool(added)

    def get_task_graph_edges(self, session_id: str) -> list[TaskGraphEdgeRow]:
        """The session's edges in insertion order."""
        return self._select(TaskGraphEdgeRow, "session_id = ?", [session_id], order_by="id")

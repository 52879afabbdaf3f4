"""``SessionStore``: the public class, composed from one mixin per table family."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..frames import FramesMixin
from ._arguments import check_public_methods
from ._base import PathLike
from ._groupcommit import GroupCommitHost
from .branches import BranchesMixin
from .bulk import BulkMixin
from .commits import CommitLogMixin
from .evidence import EvidenceMixin
from .planning import PlanningMixin
from .reviews import ReviewsMixin
from .sessions import SessionsMixin
from .snapshot import (
    NodeReviewSummary,
    NodeSnapshotDetail,
    SessionReviewSummary,
    SessionSnapshot,
    SnapshotMixin,
)
from .telemetry import LlmSummary, TelemetryMixin

__all__ = [
    "LlmSummary",
    "NodeReviewSummary",
    "NodeSnapshotDetail",
    "SessionReviewSummary",
    "SessionSnapshot",
    "SessionStore",
]


class SessionStore(
    SessionsMixin,
    TelemetryMixin,
    EvidenceMixin,
    ReviewsMixin,
    BranchesMixin,
    PlanningMixin,
    BulkMixin,
    CommitLogMixin,
    SnapshotMixin,
    FramesMixin,
):
    """A DuckDB-backed store of SRBN agent-orchestration sessions.

    Every method of upstream perspt-store 0.6.2 exists with the same name, parameter order
    and return shape; lists come back in insertion order, "latest" means the last row
    recorded, and every value round-trips exactly.

    Example:
        >>> import perspt_store as ps
        >>> with ps.SessionStore.in_memory() as store:
        ...     store.create_session(ps.SessionRecord(
        ...         session_id="s1", task="add a CLI", working_dir="/src", status="RUNNING"))
        ...     store.record_energy(ps.EnergyRecord(node_id="n1", session_id="s1", v_total=0.5))
        ...     [e.v_total for e in store.get_energy_history("s1", "n1")]
        [0.5]

    One store may be shared by threads. Use it as a context manager, or call :meth:`close`.
    """

    @classmethod
    def open(cls, path: PathLike, **options: object) -> SessionStore:
        """Open (or create) the database at ``path`` read-write: parent directories are
        created and the schema is created or migrated in place."""
        return cls(path, **options)  # type: ignore[arg-type]

    @classmethod
    def open_default(cls, **options: object) -> SessionStore:
        """Open the default database, :meth:`default_db_path` (upstream's ``new()``)."""
        return cls(None, **options)  # type: ignore[arg-type]

    @classmethod
    def in_memory(cls, **options: object) -> SessionStore:
        """A private in-memory store (tests, fixtures, experiments)."""
        return cls(":memory:", **options)  # type: ignore[arg-type]

    @classmethod
    def open_read_only(cls, path: PathLike, **options: object) -> SessionStore:
        """Open an existing file read-only: nothing is ever written to it, no schema DDL
        runs, and every write raises :class:`~perspt_store.ReadOnlyStoreError`.

        Raises:
            StoreError: There is no database at ``path`` (nothing is created).
            StoreLockedError: Another process holds the file read-write.
        """
        return cls(path, read_only=True, **options)  # type: ignore[arg-type]


if TYPE_CHECKING:

    def _hosts_group_commit(store: SessionStore) -> GroupCommitHost:
        return store  # mypy checks that SessionStore offers what group commit uses


check_public_methods(SessionStore)  # a wrong argument type is a TypeError, never a write

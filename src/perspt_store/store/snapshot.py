"""Set-based loaders for resume and review: a whole session, a node's review and a session's
review summary, each with a constant number of queries however many nodes there are.

Upstream's ledger loads a session with 5 + 6·N queries and swallows every error into an empty
result (SPEC D18); its session summary counts snapshot rows instead of nodes and compares
states case-sensitively (D19). Here every table is read once for the whole session, rows are
grouped by node in Python, and errors propagate.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, ParamSpec, TypeVar

from .._displayable import Displayable
from .._mapping import gc_paused, table_map
from ..commitlog import REMOVED_STATE
from ..errors import SessionNotFoundError
from ..rowlist import RowList
from ..rows import (
    ArtifactBundleRow,
    BranchFlushRow,
    BudgetEnvelopeRow,
    ContextProvenanceRecord,
    EnergyRecord,
    EscalationReportRecord,
    InterfaceSealRow,
    NodeStateRecord,
    ProvisionalBranchRow,
    Row,
    SheafValidationRow,
    TaskGraphEdgeRow,
    VerificationResultRow,
)
from ._base import StoreBase, consistent
from .overview import counts_sql

__all__ = [
    "COMPLETED_STATES",
    "NodeReviewSummary",
    "NodeSnapshotDetail",
    "SessionReviewSummary",
    "SessionSnapshot",
    "SnapshotMixin",
    "state_kind",
]

R = TypeVar("R", bound=Row)
P = ParamSpec("P")
T = TypeVar("T")

COMPLETED_STATES = frozenset({"completed", "stable", "verified"})
"""Node states (compared case-insensitively) that count as completed."""

SEAL_HASH_SIZE = 32

_HAS_ARROW = importlib.util.find_spec("pyarrow") is not None

# The per-node tables of a snapshot, by the NodeSnapshotDetail field they fill.
_NODE_TABLES: dict[str, type[Row]] = {
    "energy_history": EnergyRecord,
    "verification": VerificationResultRow,
    "artifact_bundle": ArtifactBundleRow,
    "sheaf_validations": SheafValidationRow,
    "interface_seals": InterfaceSealRow,
    "context_provenance": ContextProvenanceRecord,
}
_LATEST_FIELDS = frozenset({"verification", "artifact_bundle", "context_provenance"})


def state_kind(state: str) -> str:
    """Classify a node state, case-insensitively: ``completed`` (completed, stable,
    verified), ``failed``, ``escalated``, or ``other``.

    Surrounding whitespace and JSON quotes are ignored (``'"Completed"'`` is completed).
    """
    key = state.strip().strip('"').strip().lower()
    if key in COMPLETED_STATES:
        return "completed"
    if key in ("failed", "escalated"):
        return key
    return "other"


@dataclass(frozen=True, eq=False, repr=False)
class NodeSnapshotDetail:
    """One node of a :class:`SessionSnapshot`: its latest state and its evidence.

    A loaded snapshot builds these models lazily, on a node's first field access (from
    columns already fetched: no query, the store may be closed); equality, ``repr``,
    pickling and copying see the same models either way.
    """

    record: NodeStateRecord
    """The node's latest snapshot (the last recorded)."""
    energy_history: list[EnergyRecord]
    """Every energy measurement of the node, in insertion order (the last is the latest)."""
    verification: VerificationResultRow | None
    """The node's latest verification result."""
    artifact_bundle: ArtifactBundleRow | None
    """The node's latest artifact bundle."""
    sheaf_validations: list[SheafValidationRow]
    """The node's sheaf validations, in insertion order."""
    interface_seals: list[InterfaceSealRow]
    """The node's interface seals, in insertion order (the last is the most recent)."""
    context_provenance: ContextProvenanceRecord | None
    """The node's latest context provenance."""

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _DETAIL_FIELDS)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NodeSnapshotDetail):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:  # as a frozen dataclass's (lists make it unhashable)
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={value!r}" for name, value in zip(_DETAIL_FIELDS, self._values(), strict=True)
        )
        return f"NodeSnapshotDetail({fields})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (NodeSnapshotDetail, self._values())

    @property
    def node_id(self) -> str:
        """The node's id."""
        return self.record.node_id

    @property
    def seal_hash(self) -> bytes | None:
        """The hash of the node's most recent interface seal if it is 32 bytes (what a
        resume restores as the node's seal), else None."""
        if self.interface_seals:
            seal = self.interface_seals[-1].seal_hash
            if len(seal) == SEAL_HASH_SIZE:
                return seal
        return None


_DETAIL_FIELDS = tuple(f.name for f in dataclasses.fields(NodeSnapshotDetail))


class _NodeRows:
    """The fetched rows of a snapshot's per-node tables, shared by its lazy details: each
    table ordered by node then insertion, with each node's span of rows."""

    def __init__(
        self,
        states: RowList[NodeStateRecord],
        grouped: dict[str, tuple[RowList[Any], dict[str, tuple[int, int]]]],
    ) -> None:
        self.lock = threading.Lock()
        self.states = states
        self.grouped = grouped

    def rows(self, field: str, node_id: str) -> list[Any]:
        rows, ranges = self.grouped[field]
        span = ranges.get(node_id)
        return [] if span is None else rows._span(*span)


class _LazyNodeDetail(NodeSnapshotDetail):
    """A :class:`NodeSnapshotDetail` whose models are built on first access (thread-safe)."""

    def __new__(cls, *args: Any, **fields: Any) -> Any:
        if fields:  # dataclasses.replace(): a plain detail with the changed fields
            return NodeSnapshotDetail(**fields)
        return object.__new__(cls)

    def __init__(self, node_id: str, index: int, rows: _NodeRows) -> None:
        # The dataclass fields are not set: __getattr__ builds them all on first access.
        object.__setattr__(self, "_lazy", (node_id, index, rows))

    def __getattr__(self, name: str) -> Any:
        if name not in _DETAIL_FIELDS:
            raise AttributeError(name)
        node_id, index, rows = self.__dict__["_lazy"]
        with rows.lock:
            if "record" not in self.__dict__:  # another thread may have built them meanwhile
                (record,) = rows.states._span(index, index + 1)
                values = {
                    "record": record,
                    "energy_history": rows.rows("energy_history", node_id),
                    "verification": _one(rows.rows("verification", node_id)),
                    "artifact_bundle": _one(rows.rows("artifact_bundle", node_id)),
                    "sheaf_validations": rows.rows("sheaf_validations", node_id),
                    "interface_seals": rows.rows("interface_seals", node_id),
                    "context_provenance": _one(rows.rows("context_provenance", node_id)),
                }
                for key, value in values.items():  # the record last: it marks "all built"
                    if key != "record":
                        object.__setattr__(self, key, value)
                object.__setattr__(self, "record", record)
        return self.__dict__[name]

    @property
    def node_id(self) -> str:
        """The node's id (known without building the node's models)."""
        node_id: str = self.__dict__["_lazy"][0]
        return node_id


def _one(rows: list[R]) -> R | None:
    return rows[0] if rows else None


@dataclass(frozen=True, repr=False)
class SessionSnapshot(Displayable):
    """Everything a resume needs about one session, read with one query per table."""

    _text_renderer: ClassVar[str | None] = "snapshot_repr"
    _html_renderer: ClassVar[str] = "snapshot_html"

    session_id: str
    node_details: list[NodeSnapshotDetail]
    """One entry per node (nodes removed by a rollback excluded), ordered by when the node's
    latest state was recorded (as ``get_latest_node_states``)."""
    graph_edges: list[TaskGraphEdgeRow]
    """Every task-graph edge, in insertion order (including edges to unknown nodes)."""
    branches: list[ProvisionalBranchRow]
    """Every provisional branch, in insertion order."""
    escalation_reports: list[EscalationReportRecord]
    """Every escalation report, in insertion order."""
    flushes: list[BranchFlushRow]
    """Every branch flush decision, in insertion order."""
    budget: BudgetEnvelopeRow | None
    """The session's budget envelope, if it has one."""

    def node(self, node_id: str) -> NodeSnapshotDetail | None:
        """The detail of one node, or None."""
        for detail in self.node_details:
            if detail.node_id == node_id:  # known without building the models
                return detail
        return None


@dataclass(frozen=True, repr=False)
class NodeReviewSummary(Displayable):
    """What a reviewer sees about one node."""

    _text_renderer: ClassVar[str | None] = "node_review_repr"
    _html_renderer: ClassVar[str] = "node_review_html"

    node_id: str
    latest_energy: EnergyRecord | None
    """The node's last energy measurement."""
    energy_history: list[EnergyRecord]
    """Every energy measurement, in insertion order."""
    attempt_count: int
    """``max(1, len(energy_history))``, as upstream."""
    escalation_reports: list[EscalationReportRecord]
    """The node's escalation reports, in insertion order."""
    sheaf_validations: list[SheafValidationRow]
    """The node's sheaf validations, in insertion order."""
    interface_seals: list[InterfaceSealRow]
    """The node's interface seals, in insertion order."""
    context_provenance: list[ContextProvenanceRecord]
    """The node's latest context provenance: a list of zero or one row, as upstream."""
    branches: list[ProvisionalBranchRow]
    """The provisional branches working on the node, in insertion order."""


@dataclass(frozen=True, repr=False)
class SessionReviewSummary(Displayable):
    """Counts and energies over a whole session, per node (not per snapshot row)."""

    _text_renderer: ClassVar[str | None] = "session_summary_repr"
    _html_renderer: ClassVar[str] = "session_summary_html"

    session_id: str
    total_nodes: int
    """Distinct nodes (their latest states; nodes removed by a rollback excluded)."""
    completed: int
    """Nodes whose latest state is completed, stable or verified (any case)."""
    failed: int
    """Nodes whose latest state is failed (any case)."""
    escalated: int
    """Nodes whose latest state is escalated (any case)."""
    total_energy: float
    """Sum over the nodes of their energy: the ``v_total`` of the node's latest energy
    measurement, or of its latest snapshot if it has no measurement."""
    node_energies: list[tuple[str, EnergyRecord]]
    """``(node_id, latest energy measurement)`` for each node that has one, in node order."""
    escalation_reports: list[EscalationReportRecord]
    """Every escalation report of the session, in insertion order."""
    branches_total: int
    active_branches: int
    sealed_branches: int
    merged_branches: int
    flushed_branches: int
    flush_decisions: list[BranchFlushRow]
    """The session's branch flush decisions (``branch_flushes``), in insertion order."""
    review_total: int
    reviews_approved: int
    """Outcomes starting with ``approved``, or ``auto_approved``."""
    reviews_rejected: int
    """Outcomes ``rejected`` or ``aborted``."""
    reviews_corrected: int
    """Outcomes ``correction_requested``."""


# One statement: whether the session exists, and its budget envelope if any.
def _session_and_budget_sql() -> str:
    mapping = table_map(BudgetEnvelopeRow)
    columns = ", ".join(f"b.{c}" for c in mapping.columns + mapping.db_columns)
    return (
        f"SELECT s.session_id IS NOT NULL, {columns} FROM (SELECT ?::VARCHAR AS sid) q "
        "LEFT JOIN sessions s ON s.session_id = q.sid "
        "LEFT JOIN budget_envelopes b ON b.session_id = q.sid"
    )


_SESSION_AND_BUDGET_SQL = _session_and_budget_sql()

# One statement: whether the session exists, and the branch and review counts.
_SUMMARY_COUNTS_SQL = counts_sql("(SELECT count(*) FROM sessions WHERE session_id = $1)")


def _gc_paused(func: Callable[P, T]) -> Callable[P, T]:
    """Run ``func`` with the cyclic garbage collector paused (see ``_mapping.gc_paused``)."""

    @functools.wraps(func)
    def paused(*args: P.args, **kwargs: P.kwargs) -> T:
        with gc_paused():
            return func(*args, **kwargs)

    return paused


def _by_node(rows: Sequence[R]) -> dict[str, list[R]]:
    grouped: dict[str, list[R]] = {}
    for row in rows:
        node_id: str = row.node_id  # type: ignore[attr-defined]
        group = grouped.get(node_id)
        if group is None:
            grouped[node_id] = [row]
        else:
            group.append(row)
    return grouped


def _latest_by_node(rows: Sequence[R]) -> dict[str, R]:
    """Rows in insertion order → node id → its last row."""
    return {row.node_id: row for row in rows}  # type: ignore[attr-defined]


class SnapshotMixin(StoreBase):
    """``load_session_snapshot``, ``node_review_summary`` and ``session_summary``."""

    def _load(
        self,
        model: type[R],
        where: str,
        params: Sequence[Any],
        *,
        latest_per: str | None = None,
        newest_first: bool = False,
        limit: int | None = None,
    ) -> list[R]:
        """Rows of one table in insertion order (newest first if asked), as ``_select``."""
        return self._select(
            model, where, params, latest_per=latest_per,
            order_by="id DESC" if newest_first else "id", limit=limit,
        )

    def _lazy_details(self, session_id: str) -> list[NodeSnapshotDetail] | None:
        """The node details, built lazily from columns fetched once per table; None when
        this file or these rows need the eager path (no pyarrow, another schema version,
        rows upstream wrote, a row its model rejects)."""
        if not _HAS_ARROW:
            return None
        import pyarrow.compute as pc

        where, params = "session_id = ?", [session_id]
        states = self._fetch_arrow(
            NodeStateRecord, where, params, order_by="id", latest_per="node_id"
        )
        if states is None:
            return None
        grouped: dict[str, tuple[RowList[Any], dict[str, tuple[int, int]]]] = {}
        for field, model in _NODE_TABLES.items():
            table = self._fetch_arrow(
                model, where, params, order_by="node_id, id",
                latest_per="node_id" if field in _LATEST_FIELDS else None,
            )
            if table is None:
                return None
            ranges: dict[str, tuple[int, int]] = {}
            if table.num_rows:
                counts = pc.value_counts(table["node_id"])  # in order of appearance
                start = 0
                for node_id, count in zip(
                    counts.field("values").to_pylist(), counts.field("counts").to_pylist(),
                    strict=True,
                ):
                    ranges[node_id] = (start, start + count)
                    start += count
            grouped[field] = (RowList.from_arrow(table_map(model), table), ranges)
        rows = _NodeRows(RowList.from_arrow(table_map(NodeStateRecord), states), grouped)
        return [
            _LazyNodeDetail(node_id, index, rows)
            for index, (node_id, state) in enumerate(
                zip(states["node_id"].to_pylist(), states["state"].to_pylist(), strict=True)
            )
            if state != REMOVED_STATE
        ]

    def _eager_details(self, session_id: str) -> list[NodeSnapshotDetail]:
        where, params = "session_id = ?", [session_id]
        nodes = [
            row
            for row in self._load(NodeStateRecord, where, params, latest_per="node_id")
            if row.state != REMOVED_STATE
        ]
        energy = _by_node(self._load(EnergyRecord, where, params))
        sheaf = _by_node(self._load(SheafValidationRow, where, params))
        seals = _by_node(self._load(InterfaceSealRow, where, params))
        verification = _latest_by_node(
            self._load(VerificationResultRow, where, params, latest_per="node_id")
        )
        bundles = _latest_by_node(
            self._load(ArtifactBundleRow, where, params, latest_per="node_id")
        )
        provenance = _latest_by_node(
            self._load(ContextProvenanceRecord, where, params, latest_per="node_id")
        )
        return [
            NodeSnapshotDetail(
                record=record,
                energy_history=energy.get(record.node_id) or [],
                verification=verification.get(record.node_id),
                artifact_bundle=bundles.get(record.node_id),
                sheaf_validations=sheaf.get(record.node_id) or [],
                interface_seals=seals.get(record.node_id) or [],
                context_provenance=provenance.get(record.node_id),
            )
            for record in nodes
        ]

    @_gc_paused
    @consistent
    def load_session_snapshot(self, session_id: str) -> SessionSnapshot:
        """Load everything a resume needs about a session in 12 queries, whatever its size.

        Per node: its latest state, energy history, latest verification result, latest
        artifact bundle, sheaf validations, interface seals and latest context provenance;
        for the session: its task-graph edges, provisional branches, escalation reports,
        branch flushes and budget envelope. Each table is read once for the whole session
        and grouped by node; any query error propagates (upstream swallowed them). With
        pyarrow installed, the per-node tables are fetched as columns and each node's models
        are built on its first access (no query then: the store may be closed meanwhile).

        A session without node snapshots gives a snapshot with no ``node_details`` (upstream's
        ledger refuses to resume it; that decision is the caller's).

        Raises:
            SessionNotFoundError: No such session.
            StoreError: A query failed, or a row holds a value its model rejects.
        """
        exists, budget = self._session_and_budget(session_id)
        if not exists:
            raise SessionNotFoundError(session_id, table="sessions")
        where, params = "session_id = ?", [session_id]
        edges = self._load(TaskGraphEdgeRow, where, params)
        branches = self._load(ProvisionalBranchRow, where, params)
        escalations = self._load(EscalationReportRecord, where, params)
        flushes = self._load(BranchFlushRow, where, params)
        details = self._lazy_details(session_id)
        if details is None:
            details = self._eager_details(session_id)
        return SessionSnapshot(
            session_id=session_id,
            node_details=details,
            graph_edges=edges,
            branches=branches,
            escalation_reports=escalations,
            flushes=flushes,
            budget=budget,
        )

    @_gc_paused
    @consistent
    def node_review_summary(self, session_id: str, node_id: str) -> NodeReviewSummary:
        """What a reviewer sees about one node, in 6 queries (7 if the node has no rows).

        Raises:
            SessionNotFoundError: No such session.
            StoreError: A query failed.
        """
        where, params = "session_id = ? AND node_id = ?", [session_id, node_id]
        energy = self._load(EnergyRecord, where, params)
        escalations = self._load(EscalationReportRecord, where, params)
        sheaf = self._load(SheafValidationRow, where, params)
        seals = self._load(InterfaceSealRow, where, params)
        provenance = self._load(
            ContextProvenanceRecord, where, params, newest_first=True, limit=1
        )
        branches = self._load(ProvisionalBranchRow, where, params)
        if not (energy or escalations or sheaf or seals or provenance or branches):
            if not self._session_exists(session_id):
                raise SessionNotFoundError(session_id, table="sessions")
        return NodeReviewSummary(
            node_id=node_id,
            latest_energy=energy[-1] if energy else None,
            energy_history=energy,
            attempt_count=max(1, len(energy)),
            escalation_reports=escalations,
            sheaf_validations=sheaf,
            interface_seals=seals,
            context_provenance=provenance,
            branches=branches,
        )

    @_gc_paused
    @consistent
    def session_summary(self, session_id: str) -> SessionReviewSummary:
        """Counts and energies over the session's nodes, in 5 queries.

        Nodes are counted once each, by their latest state (upstream counted snapshot rows,
        D19), and states are classified case-insensitively with :func:`state_kind`.

        Raises:
            SessionNotFoundError: No such session.
            StoreError: A query failed.
        """
        counts = self._execute(
            _SUMMARY_COUNTS_SQL, [session_id], table="sessions", operation="select"
        )[0]
        (exists, total, active, sealed, merged, flushed, reviews, approved, rejected,
         corrected) = (int(value) for value in counts)
        if not exists:
            raise SessionNotFoundError(session_id, table="sessions")
        where, params = "session_id = ?", [session_id]
        nodes = [
            row
            for row in self._load(
                NodeStateRecord, where, params, latest_per="node_id"
            )
            if row.state != REMOVED_STATE
        ]
        latest_energy = _latest_by_node(
            self._load(EnergyRecord, where, params, latest_per="node_id")
        )
        escalations = self._load(EscalationReportRecord, where, params)
        flushes = self._load(BranchFlushRow, where, params)
        kinds = {"completed": 0, "failed": 0, "escalated": 0, "other": 0}
        total_energy = 0.0
        node_energies: list[tuple[str, EnergyRecord]] = []
        for record in nodes:
            kinds[state_kind(record.state)] += 1
            measured = latest_energy.get(record.node_id)
            if measured is None:
                total_energy += record.v_total
            else:
                total_energy += measured.v_total
                node_energies.append((record.node_id, measured))
        return SessionReviewSummary(
            session_id=session_id,
            total_nodes=len(nodes),
            completed=kinds["completed"],
            failed=kinds["failed"],
            escalated=kinds["escalated"],
            total_energy=total_energy,
            node_energies=node_energies,
            escalation_reports=escalations,
            branches_total=total,
            active_branches=active,
            sealed_branches=sealed,
            merged_branches=merged,
            flushed_branches=flushed,
            flush_decisions=flushes,
            review_total=reviews,
            reviews_approved=approved,
            reviews_rejected=rejected,
            reviews_corrected=corrected,
        )

    def _session_and_budget(self, session_id: str) -> tuple[bool, BudgetEnvelopeRow | None]:
        rows = self._execute(
            _SESSION_AND_BUDGET_SQL, [session_id], table="budget_envelopes",
            operation="select",
        )
        exists, *budget = rows[0]
        if budget[0] is None:  # no envelope (its session_id is the key, never NULL)
            return bool(exists), None
        return bool(exists), table_map(BudgetEnvelopeRow).read([budget])[0]

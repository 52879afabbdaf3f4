"""Set-based loaders for resume and review: a whole session, a node's review and a session's
review summary, each with a constant number of queries however many nodes there are.

Upstream's ledger loads a session with 5 + 6·N queries and swallows every error into an empty
result (SPEC D18); its session summary counts snapshot rows instead of nodes and compares
states case-sensitively (D19). Here every table is read once for the whole session, rows are
grouped by node in Python, and errors propagate.
"""

from __future__ import annotations

import functools
import gc
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, ParamSpec, TypeVar

import annotated_types
from pydantic import BaseModel, BeforeValidator
from pydantic_core import SchemaValidator, ValidationError, core_schema

from .._commitlog import REMOVED_STATE
from .._displayable import Displayable
from .._mapping import TableMap, _decode_json_list, _unwrap_optional, table_map
from ..errors import SessionNotFoundError, StoreError
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
from ..schema import SCHEMA_VERSION
from ._base import StoreBase, consistent
from .reviews import review_kind_sql

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


@dataclass(frozen=True)
class NodeSnapshotDetail:
    """One node of a :class:`SessionSnapshot`: its latest state and its evidence."""

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
            if detail.record.node_id == node_id:
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

# One statement: whether the session exists, and the branch, flush and review counts.
_SUMMARY_COUNTS_SQL = f"""
WITH b AS (SELECT lower(state) AS s FROM provisional_branches WHERE session_id = $1),
     r AS (SELECT outcome AS o FROM review_outcomes WHERE session_id = $1)
SELECT
    (SELECT count(*) FROM sessions WHERE session_id = $1),
    (SELECT count(*) FROM b),
    (SELECT count(*) FROM b WHERE s = 'active'),
    (SELECT count(*) FROM b WHERE s = 'sealed'),
    (SELECT count(*) FROM b WHERE s = 'merged'),
    (SELECT count(*) FROM b WHERE s = 'flushed'),
    (SELECT count(*) FROM r),
    (SELECT count(*) FROM r WHERE {review_kind_sql("approved", "o")}),
    (SELECT count(*) FROM r WHERE {review_kind_sql("rejected", "o")}),
    (SELECT count(*) FROM r WHERE {review_kind_sql("corrected", "o")})
"""


# --- decoding many rows at once -----------------------------------------------------------
#
# ``TableMap.decode`` validates one row at a time; with pydantic's per-instance private-attribute
# hook and the ``_db`` update, that is ~85% of a snapshot load. Here a whole result is decoded at
# once, and the instances are assembled as pydantic's ``model_construct`` does, minus its Python
# overhead. Validation stays exactly the model's:
#
# * each query also selects a SQL predicate that is TRUE only for rows whose values pass the
#   model's field checks (NOT NULL for required fields, finiteness of floats, ge/le ranges),
#   derived from the fields' types and constraints; the columns' types (this library's schema)
#   give the exact Python types strict validation requires. When every row passes, no further
#   check is needed;
# * otherwise (or when a model has a check the predicate does not cover), the rows go through
#   one call into pydantic-core with the model's own field schemas, which raises for a bad row;
# * rows written by upstream (legacy encodings) and stores with an unknown schema version take
#   the one-row path, ``TableMap.decode``.


@dataclass(frozen=True)
class _Decoder:
    """How to decode one model's rows in bulk."""

    validator: SchemaValidator | None
    """Validates a list of field dicts; None if the model is not the plain shape this path
    reproduces exactly (then every row takes ``TableMap.decode``)."""
    check_sql: str | None
    """A SQL predicate over the row's columns: TRUE only if the row passes validation; None
    if some field check is not expressible (then rows are always validated)."""
    fields_set: set[str]
    """Every field: the rows are built from all columns. Shared by the instances, which are
    frozen (pydantic copies it before any change, e.g. in ``model_copy``)."""
    fields_of: Callable[[Sequence[Any]], dict[str, Any]]
    """A selected row → its field values by name (the first ``len(columns)`` values)."""
    private_of: Callable[[Sequence[Any]], dict[str, Any]]
    """A selected row → the instance's private attributes (``_db``: its db columns)."""


_DECODERS: dict[type[Row], _Decoder] = {}


def _decoder(model: type[Row]) -> _Decoder:
    decoder = _DECODERS.get(model)
    if decoder is None:
        validator = _batch_validator(model)
        check = _check_sql(model) if validator is not None else None
        mapping = table_map(model)
        decoder = _DECODERS[model] = _Decoder(
            validator,
            check,
            set(model.model_fields),
            _row_reader(mapping.columns, 0),
            _row_reader(mapping.db_columns, len(mapping.columns), wrap="_db"),
        )
    return decoder


def _row_reader(
    names: Sequence[str], start: int, *, wrap: str | None = None
) -> Callable[[Sequence[Any]], dict[str, Any]]:
    """``lambda row: {names[0]: row[start], ...}`` (wrapped as ``{wrap: {...}}``), compiled:
    a dict display is about twice as fast as ``dict(zip(names, row))`` and needs no slice.
    The names are a model's field or column names, checked to be identifiers."""
    if not all(name.isidentifier() for name in names):  # pragma: no cover - never for rows
        raise ValueError(f"not identifiers: {names}")
    items = ", ".join(f"{name!r}: row[{start + i}]" for i, name in enumerate(names))
    body = f"{{{items}}}" if wrap is None else f"{{{wrap!r}: {{{items}}}}}"
    reader: Callable[[Sequence[Any]], dict[str, Any]] = eval(f"lambda row: {body}")
    return reader


def _batch_validator(model: type[Row]) -> SchemaValidator | None:
    schema: Any = model.__pydantic_core_schema__
    if (
        schema.get("type") != "model"
        or schema.get("schema", {}).get("type") != "model-fields"
        or schema.get("custom_init")
        or schema.get("root_model")
        or set(model.__private_attributes__) != {"_db"}
        or any(  # pydantic installs init_private_attributes; anything else is custom
            getattr(klass.__dict__["model_post_init"], "__name__", "")
            != "init_private_attributes"
            for klass in model.__mro__[: model.__mro__.index(Row) + 1]
            if "model_post_init" in klass.__dict__
        )
    ):
        return None
    return SchemaValidator(core_schema.list_schema(schema["schema"]), schema.get("config"))


_BOUNDS: dict[type[Any], tuple[str, str]] = {
    annotated_types.Ge: (">=", "ge"),
    annotated_types.Gt: (">", "gt"),
    annotated_types.Le: ("<=", "le"),
    annotated_types.Lt: ("<", "lt"),
}


def _check_sql(model: type[Row]) -> str | None:
    """The SQL predicate of :attr:`_Decoder.check_sql`, or None."""
    mapping = table_map(model)
    allow_inf_nan = model.model_config.get("allow_inf_nan", True)
    parts: list[str] = []
    for name, field in model.model_fields.items():
        if name in mapping.json_lists:  # _decode_json_list always yields a valid value
            if any(not isinstance(m, BeforeValidator) for m in field.metadata):
                return None
            continue
        if _constrained_union(field.annotation):  # e.g. Int32 | None: not in field.metadata
            return None
        inner, optional = _unwrap_optional(field.annotation)
        if inner not in (str, bytes, bool, int, float):
            return None
        checks: list[str] = []
        if inner is float and not allow_inf_nan:
            checks.append(f"isfinite({name})")
        for constraint in field.metadata:
            known = _BOUNDS.get(type(constraint))
            if known is None:
                return None
            op, attribute = known
            bound = getattr(constraint, attribute)
            literal = repr(float(bound)) if inner is float else str(int(bound))
            checks.append(f"{name} {op} {literal}")
        if optional or name in mapping.text_or_empty:  # NULL is None, or reads as ''
            if checks:
                parts.append(f"({name} IS NULL OR ({' AND '.join(checks)}))")
        else:
            parts.append(f"({' AND '.join([f'{name} IS NOT NULL', *checks])})")
    return " AND ".join(parts) or "TRUE"


def _constrained_union(annotation: Any) -> bool:
    """True for ``Annotated[T, ...] | None``: its constraints sit inside the union."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(typing.get_origin(a) is typing.Annotated for a in typing.get_args(annotation))
    return False


def _decode_many(
    mapping: TableMap[R], rows: list[tuple[Any, ...]], mark: int | None, *, trusted: bool
) -> list[R]:
    """Models from rows selected with ``mapping.select_list`` (ending with the db columns,
    ``id`` among them), then the decoder's check if ``trusted``; the same result as
    ``mapping.decode`` row by row.

    Args:
        trusted: The store's schema is this library's, and the rows end with the value of the
            decoder's ``check_sql``.
    """
    model, n = mapping.model, len(mapping.columns)
    db_columns = mapping.db_columns
    n_db = len(db_columns)
    decoder = _decoder(model)
    id_at = n + db_columns.index("id")
    if decoder.validator is None or (
        mark is not None and any(row[id_at] <= mark for row in rows)
    ):
        return [
            mapping.decode(row[: n + n_db], legacy=mark is not None and row[id_at] <= mark)
            for row in rows
        ]
    fields_of, private_of = decoder.fields_of, decoder.private_of
    dicts = [fields_of(row) for row in rows]
    table = mapping.table
    for name in mapping.json_lists:
        optional = name in mapping.optional
        for data in dicts:
            raw = data[name]
            data[name] = [] if raw == "[]" else _decode_json_list(raw, optional, table, name)
    for name in mapping.text_or_empty:
        for data in dicts:
            if data[name] is None:
                data[name] = ""
    new = object.__new__
    set_dict, set_fields, set_extra, set_private = _SLOT_SETTERS
    out: list[R] = []
    if trusted and decoder.check_sql is not None and all(row[-1] for row in rows):
        fields_set = decoder.fields_set
        for data, row in zip(dicts, rows, strict=True):
            obj = new(model)
            set_dict(obj, data)
            set_fields(obj, fields_set)
            set_extra(obj, None)
            set_private(obj, private_of(row))
            out.append(obj)
        return out
    try:
        validated = decoder.validator.validate_python(dicts)
    except ValidationError as exc:
        raise StoreError(
            f"a row of {table} holds a value its model rejects: {exc}",
            table=table,
            operation="select",
        ) from exc
    for (fields, _, fields_set), row in zip(validated, rows, strict=True):
        obj = new(model)
        set_dict(obj, fields)
        set_fields(obj, fields_set)
        set_extra(obj, None)
        set_private(obj, private_of(row))
        out.append(obj)
    return out


def _slot_setters() -> tuple[Callable[[Any, Any], None], ...]:
    """Setters of the four attributes a pydantic model instance carries (its ``__dict__``
    and three slots): the slot descriptors' own ``__set__`` when available (the fastest),
    else ``object.__setattr__``."""
    names = ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__")
    setters: list[Callable[[Any, Any], None]] = []
    for name in names:
        descriptor = BaseModel.__dict__.get(name)
        setter = getattr(descriptor, "__set__", None)
        if setter is None:  # pragma: no cover - another pydantic layout
            setter = functools.partial(_set_attribute, name=name)
        setters.append(setter)
    return tuple(setters)


def _set_attribute(obj: Any, value: Any, *, name: str) -> None:  # pragma: no cover
    object.__setattr__(obj, name, value)


_SLOT_SETTERS = _slot_setters()


def _gc_paused(func: Callable[P, T]) -> Callable[P, T]:
    """Run ``func`` with the cyclic garbage collector paused.

    A load allocates several acyclic objects per row (tuples, dicts, models, lists); the
    collector would run passes over them, repeatedly and for nothing (about a third of a
    large snapshot's time). Reference counting still frees everything as usual.
    """

    @functools.wraps(func)
    def paused(*args: P.args, **kwargs: P.kwargs) -> T:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return func(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()

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
        """Rows of one table in insertion order (as ``_select``), decoded in one batch."""
        mapping = table_map(model)
        check = _decoder(model).check_sql
        trusted = check is not None and self.schema_version == SCHEMA_VERSION
        select = f"{mapping.select_list}, ({check})" if trusted else mapping.select_list
        sql = f"SELECT {select} FROM {mapping.table} WHERE {where}"
        if latest_per:
            sql += f" QUALIFY row_number() OVER (PARTITION BY {latest_per} ORDER BY id DESC) = 1"
        sql += " ORDER BY id DESC" if newest_first else " ORDER BY id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self._execute(sql, list(params), table=mapping.table, operation="select")
        return _decode_many(
            mapping, rows, self._legacy_marks.get(mapping.table), trusted=trusted
        )

    @_gc_paused
    @consistent
    def load_session_snapshot(self, session_id: str) -> SessionSnapshot:
        """Load everything a resume needs about a session in 12 queries, whatever its size.

        Per node: its latest state, energy history, latest verification result, latest
        artifact bundle, sheaf validations, interface seals and latest context provenance;
        for the session: its task-graph edges, provisional branches, escalation reports,
        branch flushes and budget envelope. Each table is read once for the whole session
        and grouped by node in Python; any query error propagates (upstream swallowed them).

        A session without node snapshots gives a snapshot with no ``node_details`` (upstream's
        ledger refuses to resume it; that decision is the caller's).

        Raises:
            SessionNotFoundError: No such session.
            StoreError: A query failed.
        """
        exists, budget = self._session_and_budget(session_id)
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
        edges = self._load(TaskGraphEdgeRow, where, params)
        branches = self._load(ProvisionalBranchRow, where, params)
        escalations = self._load(EscalationReportRecord, where, params)
        flushes = self._load(BranchFlushRow, where, params)
        energy = _by_node(self._load(EnergyRecord, where, params))
        sheaf = _by_node(self._load(SheafValidationRow, where, params))
        seals = _by_node(self._load(InterfaceSealRow, where, params))
        verification = _latest_by_node(
            self._load(
                VerificationResultRow, where, params, latest_per="node_id"
            )
        )
        bundles = _latest_by_node(
            self._load(ArtifactBundleRow, where, params, latest_per="node_id")
        )
        provenance = _latest_by_node(
            self._load(
                ContextProvenanceRecord, where, params, latest_per="node_id"
            )
        )
        details = []
        for record in nodes:
            node_id = record.node_id
            details.append(
                NodeSnapshotDetail(
                    record=record,
                    energy_history=energy.get(node_id) or [],
                    verification=verification.get(node_id),
                    artifact_bundle=bundles.get(node_id),
                    sheaf_validations=sheaf.get(node_id) or [],
                    interface_seals=seals.get(node_id) or [],
                    context_provenance=provenance.get(node_id),
                )
            )
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
        return bool(exists), self._decode_rows(BudgetEnvelopeRow, [budget], None)[0]

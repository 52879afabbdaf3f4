"""The 23 row models: one immutable pydantic model per table, with upstream's names.

The models are the data dictionary. Each knows its table (``__table__``); its fields are the
table's columns, in the table's order, minus the columns the database fills in. Those
(``id``, ``created_at``/``timestamp``, ``updated_at``) are readable as properties on a model
that was read from the store, and are ``None`` on one you built yourself. Equality compares
the fields only, so a row read back equals the row you wrote.

Types follow SPEC §4: hashes are ``bytes`` (raw BLOBs), lists of ids or paths are
``list[str]`` (stored as compact JSON text, as upstream), opaque JSON documents stay ``str``.
Values are validated on construction: integers must fit their column (INTEGER is 32-bit),
floats must be finite (and fit upstream's REAL, i.e. float32, for the energy fields), text
must be storable (see :func:`storable_text`), and nothing is coerced from a string.
"""

import ast
import datetime as _dt
import inspect
import itertools
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, field_validator
from pydantic_core import PydanticCustomError

from ._displayable import Displayable

__all__ = [
    "ROW_MODELS",
    "ArtifactBundleRow",
    "BranchFlushRow",
    "BranchLineageRow",
    "BudgetEnvelopeRow",
    "ContextProvenanceRecord",
    "CorrectionAttemptRow",
    "EnergyRecord",
    "EscalationReportRecord",
    "FeatureCharterRow",
    "InterfaceSealRow",
    "LlmRequestRecord",
    "NodeStateRecord",
    "PlanRevisionRow",
    "ProvisionalBranchRow",
    "RepairFootprintRow",
    "ReviewOutcomeRow",
    "RewriteRecordRow",
    "Row",
    "SessionRecord",
    "SheafValidationRow",
    "SrbnStepRecord",
    "StructuralDigestRecord",
    "TaskGraphEdgeRow",
    "VerificationResultRow",
]

_FLOAT32_MAX = 3.4028234663852886e38

Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
"""A value for an INTEGER (32-bit) column; larger values are rejected, never wrapped."""
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
"""A value for a BIGINT column."""
Real = Annotated[float, Field(ge=-_FLOAT32_MAX, le=_FLOAT32_MAX)]
"""An energy value: finite and within float32 range (upstream's REAL), stored as DOUBLE."""


def _tuple_to_list(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


StrList = Annotated[list[str], BeforeValidator(_tuple_to_list)]
"""A list of ids or paths, stored as compact JSON text (``'["a","b"]'``)."""


def storable_text(value: str) -> str:
    """``value`` if DuckDB can store it in a VARCHAR, else raise.

    DuckDB stores UTF-8. A Python ``str`` can hold code points UTF-8 cannot encode: the
    surrogates U+D800..U+DFFF (a lone one, e.g. from ``bytes.decode(errors="surrogateescape")``,
    or a UTF-16 pair kept as two code points); DuckDB refuses them on insert. Every other
    code point is stored and read back intact, NUL, noncharacters (U+FFFE) and U+10FFFF
    included (checked by ``tests/test_rows.py`` against the engine).

    Raises:
        pydantic_core.PydanticCustomError: The text holds a surrogate (a row model turns it
            into a ``ValidationError`` naming the field).
    """
    if not value.isascii():  # ASCII (the common case) is known storable without a scan
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise PydanticCustomError(
                "string_not_storable",
                "text DuckDB cannot store: code point U+{code} at index {index} is a "
                "surrogate, which has no UTF-8 encoding (decode bytes with errors='replace', "
                "or re-encode UTF-16 pairs, before building the row)",
                {"code": f"{ord(value[exc.start]):04X}", "index": exc.start},
            ) from None
    return value


class Row(Displayable, BaseModel):
    """Base of every row model: frozen, strict, and compared by its fields only."""

    _html_renderer: ClassVar[str] = "row_html"

    model_config = ConfigDict(
        frozen=True,
        strict=True,
        extra="forbid",
        allow_inf_nan=False,
        defer_build=True,
    )
    """``defer_build``: a model's validator is built on its first use (pydantic holds a lock
    while it builds), not at import, so ``import perspt_store`` stays quick. The fields'
    descriptions are the attribute docstrings, read once for all models by
    :func:`_attach_field_docstrings` (pydantic's ``use_attribute_docstrings`` re-reads the
    source for every model)."""

    __table__: ClassVar[str]
    """The table this model maps to."""
    __db_columns__: ClassVar[tuple[str, ...]] = ()
    """Columns the database fills in, readable as properties after a read."""
    __legacy_empty_as_none__: ClassVar[frozenset[str]] = frozenset()
    """Optional text fields that upstream wrote as '' for None (decoded so on legacy rows)."""
    __unique__: ClassVar[tuple[str, ...]] = ()
    """The key a caller's rows must not repeat (a primary or unique key, ``id`` aside)."""
    __mutable__: ClassVar[tuple[str, ...]] = ()
    """Columns the store changes in place once the row is written (an ``UPDATE`` or an
    upsert); every other column of a stored row never changes. Empty for an append-only
    table. A lake re-export checks that the lake's rows, these columns aside, are the first
    of the store's (``delta.py``)."""

    _db: dict[str, Any] = PrivateAttr(default_factory=dict)

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        """Every text field, and every item of a list field, must be storable
        (:func:`storable_text`): rejected here, never by the database at a later flush."""
        if type(value) is str:
            storable_text(value)
        elif type(value) is list:
            for item in value:
                storable_text(item)
        return value

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.__dict__ == other.__dict__

    def to_dict(self) -> dict[str, Any]:
        """The row's fields as a plain dict (bytes stay bytes, lists stay lists)."""
        return self.model_dump()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Row":
        """Build (and validate) a row from a dict as returned by :meth:`to_dict`."""
        return cls.model_validate(data)


class _HasId:
    _db: dict[str, Any]

    @property
    def id(self) -> int | None:
        """The row's ``id`` (insertion order); None until read back from the store."""
        value: int | None = self._db.get("id")
        return value


class _HasCreatedAt:
    _db: dict[str, Any]

    @property
    def created_at(self) -> _dt.datetime | None:
        """When the row was written (naive UTC); None until read back from the store."""
        value: _dt.datetime | None = self._db.get("created_at")
        return value


class _HasUpdatedAt:
    _db: dict[str, Any]

    @property
    def updated_at(self) -> _dt.datetime | None:
        """When the row last changed (naive UTC); None until read back from the store."""
        value: _dt.datetime | None = self._db.get("updated_at")
        return value


class _HasTimestamp:
    _db: dict[str, Any]

    @property
    def timestamp(self) -> _dt.datetime | None:
        """When the row was written (naive UTC); None until read back from the store."""
        value: _dt.datetime | None = self._db.get("timestamp")
        return value


# --- sessions family ----------------------------------------------------------------------


class SessionRecord(Row, _HasCreatedAt, _HasUpdatedAt):
    """One agent run (table ``sessions``)."""

    __table__ = "sessions"
    __db_columns__ = ("created_at", "updated_at")
    __unique__ = ("session_id",)
    __mutable__ = ("status", "merkle_root", "updated_at")
    __legacy_empty_as_none__ = frozenset({"detected_toolchain"})

    session_id: str
    """Primary key."""
    task: str
    """The task the run was started with."""
    working_dir: str
    """The run's working directory."""
    merkle_root: bytes | None = None
    """The session's state root (32 bytes) after the last commit; None before any."""
    detected_toolchain: str | None = None
    """Toolchain detected for the project, if any (upstream never sets it)."""
    status: str = "active"
    """RUNNING, COMPLETED, PARTIAL, FAILED, ABORTED (``active`` is the column default)."""


class NodeStateRecord(Row, _HasId, _HasCreatedAt):
    """One snapshot of a node's state (table ``node_states``, append-only history)."""

    __table__ = "node_states"
    __db_columns__ = ("id", "created_at")
    __legacy_empty_as_none__ = frozenset(
        {"node_class", "owner_plugin", "goal", "parent_id", "last_error_type", "committed_at"}
    )

    node_id: str
    """The node."""
    session_id: str
    """The session (FK)."""
    state: str
    """The node's state, e.g. ``Completed``."""
    v_total: Real = 0.0
    """Total Lyapunov energy V(x) at the snapshot."""
    merkle_hash: bytes | None = None
    """The node's 32-byte interface-seal hash (Interface-class nodes only)."""
    attempt_count: Int32 = 0
    """How many attempts the node took."""
    node_class: str | None = None
    """The node's class (e.g. Interface, Implementation)."""
    owner_plugin: str | None = None
    """The language plugin that owns the node."""
    goal: str | None = None
    """The node's goal text."""
    parent_id: str | None = None
    """The parent node's id."""
    children: StrList | None = None
    """Child node ids (JSON list); None when unknown, ``[]`` when none."""
    last_error_type: str | None = None
    """The type of the last error the node hit."""
    committed_at: str | None = None
    """Commit time as UTC ISO-8601 text, ``YYYY-MM-DDTHH:MM:SSZ``."""


class EnergyRecord(Row, _HasId, _HasTimestamp):
    """One measurement of a node's energy V(x) and its components (table ``energy_history``)."""

    __table__ = "energy_history"
    __db_columns__ = ("id", "timestamp")

    node_id: str
    """The node."""
    session_id: str
    """The session (FK)."""
    v_syn: Real = 0.0
    """Syntactic energy."""
    v_str: Real = 0.0
    """Structural energy."""
    v_log: Real = 0.0
    """Logical (test) energy."""
    v_boot: Real = 0.0
    """Bootstrap energy."""
    v_sheaf: Real = 0.0
    """Sheaf-consistency energy."""
    v_total: Real = 0.0
    """Total energy V(x)."""


class TaskGraphEdgeRow(Row, _HasId, _HasCreatedAt):
    """One edge of the task DAG (table ``task_graph_edges``)."""

    __table__ = "task_graph_edges"
    __db_columns__ = ("id", "created_at")

    session_id: str
    """The session (FK)."""
    parent_node_id: str
    """The edge's source node."""
    child_node_id: str
    """The edge's target node."""
    edge_type: str = "dependency"
    """depends_on, split_sequence, interface_boundary, or an inherited kind."""


# --- telemetry family ---------------------------------------------------------------------


class LlmRequestRecord(Row, _HasId, _HasTimestamp):
    """One LLM call (table ``llm_requests``); usage-only rows have empty prompt and response."""

    __table__ = "llm_requests"
    __db_columns__ = ("id", "timestamp")
    __legacy_empty_as_none__ = frozenset({"node_id"})

    session_id: str
    """The session (FK)."""
    node_id: str | None = None
    """The node the call served, if any."""
    model: str
    """The model name."""
    prompt: str = ""
    """The prompt text ('' for usage-only rows)."""
    response: str = ""
    """The response text ('' for usage-only rows)."""
    tokens_in: Int32 = 0
    """Prompt tokens reported by the provider (0 if unknown)."""
    tokens_out: Int32 = 0
    """Completion tokens reported by the provider (0 if unknown)."""
    latency_ms: Int32 = 0
    """Wall-clock latency in milliseconds."""


class SrbnStepRecord(Row, _HasId, _HasCreatedAt):
    """One step of the SRBN loop for a node (table ``srbn_step_records``)."""

    __table__ = "srbn_step_records"
    __db_columns__ = ("id", "created_at")

    session_id: str
    """The session (FK)."""
    node_id: str
    """The node."""
    step: str
    """speculate, verify, converge, sheaf_validate or commit."""
    outcome: str
    """ok or escalated."""
    energy_json: str | None = None
    """Energy components as an opaque JSON document."""
    parse_state: str | None = None
    """How the LLM response parsed."""
    retry_classification: str | None = None
    """Why the step was retried, if it was."""
    attempt_count: Int32 = 0
    """Attempts taken by the step."""
    duration_ms: Int32 = 0
    """Duration in milliseconds."""


class CorrectionAttemptRow(Row, _HasId):
    """One correction attempt for a node (table ``correction_attempts``)."""

    __table__ = "correction_attempts"
    __db_columns__ = ("id",)

    session_id: str
    """The session (FK)."""
    node_id: str
    """The node."""
    attempt: Int32
    """The attempt number (can repeat across resumes)."""
    parse_state: str
    """How the response parsed."""
    retry_classification: str | None = None
    """Why a retry was needed, if it was."""
    response_fingerprint: str
    """A fingerprint of the response."""
    response_length: Int32
    """The response's length in characters."""
    energy_json: str | None = None
    """Energy components as an opaque JSON document."""
    accepted: bool
    """Whether the correction was accepted."""
    rejection_reason: str | None = None
    """Why it was rejected, if it was."""
    created_at: Int64
    """Unix epoch seconds supplied by the caller (not a TIMESTAMP)."""


# --- evidence family ----------------------------------------------------------------------


class StructuralDigestRecord(Row, _HasId, _HasCreatedAt):
    """A content hash of one artifact of a node (table ``structural_digests``)."""

    __table__ = "structural_digests"
    __db_columns__ = ("id", "created_at")

    digest_id: str
    """The digest's id (not unique; the ledger writes ``sd-<node>-<uuid4>``)."""
    session_id: str
    """The session (FK)."""
    node_id: str
    """The node."""
    source_path: str
    """The artifact's path."""
    artifact_kind: str
    """What kind of artifact it is."""
    hash: bytes
    """The artifact's hash."""
    version: Int32 = 1
    """The digest's version."""


class ContextProvenanceRecord(Row, _HasId, _HasCreatedAt):
    """What went into a node's LLM context (table ``context_provenance``)."""

    __table__ = "context_provenance"
    __db_columns__ = ("id", "created_at")

    session_id: str
    """The session (FK)."""
    node_id: str
    """The node."""
    context_package_id: str
    """The context package's id."""
    structural_hashes: StrList = Field(default_factory=list)
    """``"<id>:<hex>"`` entries for the structural digests included."""
    summary_hashes: StrList = Field(default_factory=list)
    """``"<id>:<hex>"`` entries for the summaries included."""
    dependency_hashes: StrList = Field(default_factory=list)
    """``"<id>:<hex>"`` entries for the dependencies included."""
    included_file_count: Int32 = 0
    """Files included in the context."""
    total_bytes: Int32 = 0
    """Bytes included in the context (INTEGER: at most 2**31 - 1)."""


class EscalationReportRecord(Row, _HasId, _HasCreatedAt):
    """A node escalated out of the normal loop (table ``escalation_reports``)."""

    __table__ = "escalation_reports"
    __db_columns__ = ("id", "created_at")

    session_id: str
    """The session (FK)."""
    node_id: str
    """The node."""
    category: str
    """The escalation category (enum display name)."""
    action: str
    """The rewrite action, as an opaque JSON document."""
    energy_snapshot: str = ""
    """Energy components, as an opaque JSON document."""
    stage_outcomes: str = ""
    """Stage outcomes, as an opaque JSON document."""
    evidence: str = ""
    """Free-text evidence."""
    affected_node_ids: StrList = Field(default_factory=list)
    """Nodes affected by the escalation."""


class RewriteRecordRow(Row, _HasId, _HasCreatedAt):
    """A rewrite of the task graph around a node (table ``rewrite_records``)."""

    __table__ = "rewrite_records"
    __db_columns__ = ("id", "created_at")

    session_id: str
    """The session (FK)."""
    node_id: str
    """The node that was rewritten."""
    action: str
    """The rewrite action, as an opaque JSON document."""
    category: str
    """The escalation category that caused it."""
    requeued_nodes: StrList = Field(default_factory=list)
    """Nodes put back in the queue."""
    inserted_nodes: StrList = Field(default_factory=list)
    """Nodes inserted into the graph."""


class SheafValidationRow(Row, _HasId, _HasCreatedAt):
    """One sheaf-consistency check (table ``sheaf_validations``)."""

    __table__ = "sheaf_validations"
    __db_columns__ = ("id", "created_at")
    __legacy_empty_as_none__ = frozenset({"plugin_source"})

    session_id: str
    """The session (FK)."""
    node_id: str
    """The node checked."""
    validator_class: str
    """The validator that ran."""
    plugin_source: str | None = None
    """The plugin that provided the validator, if any."""
    passed: bool
    """Whether the check passed."""
    evidence_summary: str = ""
    """Free-text summary of the evidence."""
    affected_files: StrList = Field(default_factory=list)
    """Files the check found problems in."""
    v_sheaf_contribution: Real = 0.0
    """This check's contribution to V_sheaf."""
    requeue_targets: StrList = Field(default_factory=list)
    """Nodes to requeue because of the check."""


# --- reviews family -----------------------------------------------------------------------


class VerificationResultRow(Row, _HasId, _HasCreatedAt):
    """The verifier's verdict on a node (table ``verification_results``)."""

    __table__ = "verification_results"
    __db_columns__ = ("id", "created_at")
    __legacy_empty_as_none__ = frozenset({"degraded_reason"})

    session_id: str
    """The session (FK)."""
    node_id: str
    """The node verified."""
    result_json: str
    """The full verification result, as an opaque JSON document."""
    syntax_ok: bool = False
    """Syntax check passed."""
    build_ok: bool = False
    """Build passed."""
    tests_ok: bool = False
    """Tests passed."""
    lint_ok: bool = False
    """Lint passed."""
    diagnostics_count: Int32 = 0
    """Number of diagnostics."""
    tests_passed: Int32 = 0
    """Number of tests that passed."""
    tests_failed: Int32 = 0
    """Number of tests that failed."""
    degraded: bool = False
    """Whether verification ran in a degraded mode."""
    degraded_reason: str | None = None
    """Why it was degraded, if it was."""

    @property
    def passed(self) -> bool:
        """Syntax, build and tests all passed (lint is advisory): the one rule for what
        ``show``, notebooks and summaries call a verified node."""
        return self.syntax_ok and self.build_ok and self.tests_ok


class ArtifactBundleRow(Row, _HasId, _HasCreatedAt):
    """The artifacts a node produced (table ``artifact_bundles``)."""

    __table__ = "artifact_bundles"
    __db_columns__ = ("id", "created_at")

    session_id: str
    """The session (FK)."""
    node_id: str
    """The node."""
    bundle_json: str
    """The full bundle, as an opaque JSON document."""
    artifact_count: Int32 = 0
    """Number of artifacts."""
    command_count: Int32 = 0
    """Number of commands."""
    touched_files: StrList = Field(default_factory=list)
    """Paths of the bundle's artifacts."""


class ReviewOutcomeRow(Row, _HasId, _HasCreatedAt):
    """A human or automatic review of a node (table ``review_outcomes``)."""

    __table__ = "review_outcomes"
    __db_columns__ = ("id", "created_at")
    __legacy_empty_as_none__ = frozenset({"reviewer_note", "escalation_category"})

    session_id: str
    """The session (FK)."""
    node_id: str
    """The node reviewed."""
    outcome: str
    """approved, approved_with_edit, auto_approved, rejected, aborted, correction_requested..."""
    reviewer_note: str | None = None
    """The reviewer's note, if any."""
    energy_at_review: float | None = None
    """The node's energy at review time, if known."""
    degraded: bool | None = None
    """Whether verification was degraded at review time, if known."""
    escalation_category: str | None = None
    """The escalation category under review, if any."""


# --- branches family ----------------------------------------------------------------------


class ProvisionalBranchRow(Row, _HasId, _HasCreatedAt, _HasUpdatedAt):
    """A speculative branch of work on a node (table ``provisional_branches``)."""

    __table__ = "provisional_branches"
    __db_columns__ = ("id", "created_at", "updated_at")
    __mutable__ = ("state", "updated_at")
    __legacy_empty_as_none__ = frozenset({"sandbox_dir"})

    branch_id: str
    """The branch's id (not unique across sessions)."""
    session_id: str
    """The session (FK)."""
    node_id: str
    """The node the branch works on."""
    parent_node_id: str
    """The parent node (``"root"`` for root nodes)."""
    state: str = "active"
    """active, sealed, merged or flushed."""
    parent_seal_hash: bytes | None = None
    """The parent's interface-seal hash the branch builds on."""
    sandbox_dir: str | None = None
    """The branch's sandbox directory."""


class BranchLineageRow(Row, _HasId, _HasCreatedAt):
    """A parent → child link between branches (table ``branch_lineage``)."""

    __table__ = "branch_lineage"
    __db_columns__ = ("id", "created_at")

    lineage_id: str
    """The link's id (the orchestrator writes ``lin_<branch>_<parent>``)."""
    parent_branch_id: str
    """The parent; the orchestrator stores the parent **node** id here."""
    child_branch_id: str
    """The child branch."""
    depends_on_seal: bool = True
    """Whether the child depends on the parent's interface seal."""
    session_id: str | None = None
    """The session, when known (our addition; upstream rows have None)."""


class InterfaceSealRow(Row, _HasId, _HasCreatedAt):
    """A sealed interface artifact of a node (table ``interface_seals``)."""

    __table__ = "interface_seals"
    __db_columns__ = ("id", "created_at")

    seal_id: str
    """The seal's id (not unique)."""
    session_id: str
    """The session (FK)."""
    node_id: str
    """The sealed node."""
    sealed_path: str
    """The sealed artifact's path."""
    artifact_kind: str
    """What kind of artifact it is."""
    seal_hash: bytes
    """The seal's hash (32 bytes in practice)."""
    version: Int32 = 1
    """The seal's version."""


class BranchFlushRow(Row, _HasId, _HasCreatedAt):
    """A decision to flush a parent's live branches (table ``branch_flushes``)."""

    __table__ = "branch_flushes"
    __db_columns__ = ("id", "created_at")

    flush_id: str
    """The flush's id."""
    session_id: str
    """The session (FK)."""
    parent_node_id: str
    """The parent whose branches were flushed."""
    flushed_branch_ids: StrList = Field(default_factory=list)
    """The branches flushed."""
    requeue_node_ids: StrList = Field(default_factory=list)
    """The nodes requeued."""
    reason: str
    """Why the branches were flushed."""


# --- planning family ----------------------------------------------------------------------


class FeatureCharterRow(Row, _HasCreatedAt):
    """The scope limits of a session's feature (table ``feature_charters``)."""

    __table__ = "feature_charters"
    __db_columns__ = ("created_at",)
    __unique__ = ("charter_id",)

    charter_id: str
    """Primary key."""
    session_id: str
    """The session (FK)."""
    scope_description: str
    """What the feature covers."""
    max_modules: Int32 | None = None
    """Most modules the feature may touch."""
    max_files: Int32 | None = None
    """Most files the feature may touch."""
    max_revisions: Int32 | None = None
    """Most plan revisions allowed."""
    language_constraint: str | None = None
    """The language the feature must be written in."""


class PlanRevisionRow(Row, _HasCreatedAt):
    """One revision of the task plan (table ``plan_revisions``)."""

    __table__ = "plan_revisions"
    __db_columns__ = ("created_at",)
    __unique__ = ("revision_id",)
    __mutable__ = ("status",)

    revision_id: str
    """Primary key."""
    session_id: str
    """The session (FK)."""
    sequence: Int32
    """The revision's position in the session's plan history."""
    plan_json: str
    """The task plan, as an opaque JSON document."""
    reason: str
    """Why the plan was revised."""
    supersedes: str | None = None
    """The revision this one replaces."""
    status: str = "active"
    """active, superseded or cancelled."""


class RepairFootprintRow(Row, _HasId, _HasCreatedAt):
    """What one repair attempt touched (table ``repair_footprints``)."""

    __table__ = "repair_footprints"
    __db_columns__ = ("id", "created_at")
    __unique__ = ("footprint_id",)
    __mutable__ = ("resolved",)

    footprint_id: str
    """Unique id of the footprint."""
    session_id: str
    """The session (FK)."""
    node_id: str
    """The node repaired."""
    revision_id: str
    """The plan revision it belongs to (the orchestrator writes ``"initial"``)."""
    attempt: Int32
    """The attempt number."""
    affected_files: StrList = Field(default_factory=list)
    """Files the repair touched."""
    bundle_json: str
    """The repair's artifact bundle, as an opaque JSON document."""
    diagnosis: str
    """What was wrong."""
    resolved: bool = False
    """Whether the repair resolved the problem."""


class BudgetEnvelopeRow(Row, _HasUpdatedAt):
    """A session's budget limits and usage (table ``budget_envelopes``, one per session)."""

    __table__ = "budget_envelopes"
    __db_columns__ = ("updated_at",)
    __unique__ = ("session_id",)
    __mutable__ = (  # an upsert overwrites them all
        "max_steps", "steps_used", "max_revisions", "revisions_used", "max_cost_usd",
        "cost_used_usd", "updated_at",
    )

    session_id: str
    """Primary key and FK."""
    max_steps: Int32 | None = None
    """Step limit, if any."""
    steps_used: Int32 = 0
    """Steps used so far."""
    max_revisions: Int32 | None = None
    """Plan-revision limit, if any."""
    revisions_used: Int32 = 0
    """Plan revisions used so far."""
    max_cost_usd: float | None = None
    """Cost limit in US dollars, if any."""
    cost_used_usd: float = 0.0
    """Cost so far in US dollars."""


def _attach_field_docstrings(models: tuple[type[Row], ...]) -> None:
    """Set each field's ``description`` to its attribute docstring, as pydantic's
    ``use_attribute_docstrings`` does, from one parse of this module's source.

    Runs before any model is built, so the descriptions are in their schemas too. Without the
    source (a bytecode-only install) the descriptions stay None, as pydantic leaves them.
    """
    try:
        source = Path(__file__).read_text(encoding="utf-8")
    except OSError:  # pragma: no cover - bytecode-only install
        return
    docs: dict[str, dict[str, str]] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef):
            fields = docs[node.name] = {}
            for before, after in itertools.pairwise(node.body):
                if (
                    isinstance(before, ast.AnnAssign)
                    and isinstance(before.target, ast.Name)
                    and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)
                ):
                    fields[before.target.id] = inspect.cleandoc(after.value.value)
    for model in models:
        own = docs.get(model.__name__, {})
        for name, info in model.__pydantic_fields__.items():
            if info.description is None and name in own:
                info.description = own[name]


_MODELS: tuple[type[Row], ...] = (
    SessionRecord,
    NodeStateRecord,
    EnergyRecord,
    LlmRequestRecord,
    StructuralDigestRecord,
    ContextProvenanceRecord,
    EscalationReportRecord,
    RewriteRecordRow,
    SheafValidationRow,
    ProvisionalBranchRow,
    BranchLineageRow,
    InterfaceSealRow,
    BranchFlushRow,
    TaskGraphEdgeRow,
    ReviewOutcomeRow,
    VerificationResultRow,
    ArtifactBundleRow,
    FeatureCharterRow,
    PlanRevisionRow,
    RepairFootprintRow,
    BudgetEnvelopeRow,
    SrbnStepRecord,
    CorrectionAttemptRow,
)
_attach_field_docstrings(_MODELS)

ROW_MODELS: dict[str, type[Row]] = {model.__table__: model for model in _MODELS}
"""Table name → row model, in schema order."""

"""perspt-store: DuckDB persistence for SRBN agent-orchestration sessions.

A Python port of the Rust crate perspt-store 0.6.2: the same tables, row types and method
names, with exact round-trips, insertion-ordered results, a blake3 Merkle commit log, bulk
paths, and safe behaviour under crashes, threads and hostile input.
"""

from __future__ import annotations

import typing

from .commitlog import (
    Checkpoint,
    ConsistencyProof,
    InclusionProof,
    NodeCommit,
    Problem,
    RollbackChange,
    VerificationReport,
)
from .errors import (
    DuplicateRecordError,
    FlushError,
    IntegrityError,
    ReadOnlyStoreError,
    RecordNotFoundError,
    SchemaVersionError,
    SessionNotFoundError,
    StoreClosedError,
    StoreError,
    StoreLockedError,
)
from .rows import (
    ROW_MODELS,
    ArtifactBundleRow,
    BranchFlushRow,
    BranchLineageRow,
    BudgetEnvelopeRow,
    ContextProvenanceRecord,
    CorrectionAttemptRow,
    EnergyRecord,
    EscalationReportRecord,
    FeatureCharterRow,
    InterfaceSealRow,
    LlmRequestRecord,
    NodeStateRecord,
    PlanRevisionRow,
    ProvisionalBranchRow,
    RepairFootprintRow,
    ReviewOutcomeRow,
    RewriteRecordRow,
    Row,
    SessionRecord,
    SheafValidationRow,
    SrbnStepRecord,
    StructuralDigestRecord,
    TaskGraphEdgeRow,
    VerificationResultRow,
)
from .schema import SCHEMA_VERSION, init_schema
from .store import (
    LlmSummary,
    NodeReviewSummary,
    NodeSnapshotDetail,
    SessionReviewSummary,
    SessionSnapshot,
    SessionStore,
)

if typing.TYPE_CHECKING:
    from .aio import AsyncSessionStore
    from .delta import export_delta
    from .lake import ExportReport, ImportReport, SessionImport, export_parquet, import_lake

__version__ = "0.1.0"

_LAZY = {
    "AsyncSessionStore": "aio",  # needs the ``async`` extra (anyio)
    "export_delta": "delta",  # needs the ``lake`` extra (deltalake)
    **{
        name: "lake"
        for name in (
            "ExportReport", "ImportReport", "SessionImport", "export_parquet", "import_lake"
        )
    },
}
"""Names whose module is imported on first use, so ``import perspt_store`` stays quick."""


def __getattr__(name: str) -> typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "ROW_MODELS",
    "SCHEMA_VERSION",
    "ArtifactBundleRow",
    "AsyncSessionStore",
    "BranchFlushRow",
    "BranchLineageRow",
    "BudgetEnvelopeRow",
    "Checkpoint",
    "ConsistencyProof",
    "ContextProvenanceRecord",
    "CorrectionAttemptRow",
    "DuplicateRecordError",
    "EnergyRecord",
    "EscalationReportRecord",
    "ExportReport",
    "FeatureCharterRow",
    "FlushError",
    "ImportReport",
    "InclusionProof",
    "IntegrityError",
    "InterfaceSealRow",
    "LlmRequestRecord",
    "LlmSummary",
    "NodeCommit",
    "NodeReviewSummary",
    "NodeSnapshotDetail",
    "NodeStateRecord",
    "PlanRevisionRow",
    "Problem",
    "ProvisionalBranchRow",
    "ReadOnlyStoreError",
    "RecordNotFoundError",
    "RepairFootprintRow",
    "ReviewOutcomeRow",
    "RewriteRecordRow",
    "RollbackChange",
    "Row",
    "SchemaVersionError",
    "SessionImport",
    "SessionNotFoundError",
    "SessionRecord",
    "SessionReviewSummary",
    "SessionSnapshot",
    "SessionStore",
    "SheafValidationRow",
    "SrbnStepRecord",
    "StoreClosedError",
    "StoreError",
    "StoreLockedError",
    "StructuralDigestRecord",
    "TaskGraphEdgeRow",
    "VerificationReport",
    "VerificationResultRow",
    "__version__",
    "export_delta",
    "export_parquet",
    "import_lake",
    "init_schema",
]

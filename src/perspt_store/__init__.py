"""perspt-store: DuckDB persistence for SRBN agent-orchestration sessions.

A Python port of the Rust crate perspt-store 0.6.2: the same tables, row types and method
names, with exact round-trips, insertion-ordered results, a blake3 Merkle commit log, bulk
paths, and safe behaviour under crashes, threads and hostile input.

``import perspt_store`` loads only the errors: every other public name is imported on first
use (see ``_LAZY``), so a command line or a test worker that imports the package pays for
pydantic's model machinery, the row models and the store only when it touches them.
"""

from __future__ import annotations

import typing

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

if typing.TYPE_CHECKING:
    from .aio import AsyncSessionStore
    from .commitlog import (
        Checkpoint,
        ConsistencyProof,
        InclusionProof,
        NodeCommit,
        Problem,
        RollbackChange,
        VerificationReport,
    )
    from .delta import export_delta
    from .lake import (
        ExportReport,
        ImportReport,
        SessionImport,
        export_parquet,
        import_lake,
    )
    from .rowlist import RowList
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

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    **dict.fromkeys(
        (
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
        ),
        "rows",
    ),
    **dict.fromkeys(("SCHEMA_VERSION", "init_schema"), "schema"),
    **dict.fromkeys(
        (
            "LlmSummary",
            "NodeReviewSummary",
            "NodeSnapshotDetail",
            "SessionReviewSummary",
            "SessionSnapshot",
            "SessionStore",
        ),
        "store",
    ),
    **dict.fromkeys(
        (
            "Checkpoint",
            "ConsistencyProof",
            "InclusionProof",
            "NodeCommit",
            "Problem",
            "RollbackChange",
            "VerificationReport",
        ),
        "commitlog",
    ),
    "RowList": "rowlist",
    "AsyncSessionStore": "aio",  # needs the ``async`` extra (anyio)
    "export_delta": "delta",  # needs the ``lake`` extra (deltalake)
    **dict.fromkeys(
        (
            "ExportReport",
            "ImportReport",
            "SessionImport",
            "export_parquet",
            "import_lake",
        ),
        "lake",
    ),
}
"""Public names whose module is imported on first use, so ``import perspt_store`` stays
quick: ``perspt_store.SessionStore`` (or ``from perspt_store import SessionStore``) imports
the store, the row models and DuckDB's connection code then."""

_SUBMODULES = frozenset(
    {
        "_displayable",
        "_engine",
        "_mapping",
        "_publish",
        "commitlog",
        "frames",
        "merkle",
        "rows",
        "schema",
        "store",
    }
)
"""Submodules ``import perspt_store`` loaded before it went lazy: still attributes of the
package (``perspt_store.rows``) without an import of their own."""


def __getattr__(name: str) -> typing.Any:
    import importlib

    module = _LAZY.get(name)
    if module is None:
        if name in _SUBMODULES:
            return importlib.import_module(f".{name}", __name__)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
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
    "RowList",
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

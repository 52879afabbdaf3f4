"""The public surface: ``perspt_store.__all__`` is sorted and complete (as httpx's
test_exported_members), and SessionStore has every upstream method of SPEC §5 with upstream's
parameter names and order."""

from __future__ import annotations
import __future__

import inspect
import re
import types
import typing
from typing import Any

import pytest

import perspt_store as ps
from perspt_store import errors, rows

# --- __all__ ------------------------------------------------------------------------------


def public_names(module: types.ModuleType) -> set[str]:
    """Names a user can see on ``module``: not private, not a submodule, not the
    ``from __future__ import annotations`` feature; ``__version__`` included; names the
    module imports on first use (its ``_LAZY``) too."""
    return {
        name
        for name, value in vars(module).items()
        if (not name.startswith("_") or name == "__version__")
        and not isinstance(value, types.ModuleType)
        and value is not __future__.annotations
    } | set(getattr(module, "_LAZY", ()))


def isort_key(name: str) -> tuple[int, list[Any]]:
    """ruff RUF022's "isort-style" order: SCREAMING_SNAKE_CASE, then CamelCase, then the rest;
    natural sort within each group."""
    group = 0 if name.isupper() and len(name) > 1 else 1 if name[:1].isupper() else 2
    natural = [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
    return group, natural


def test_all_is_sorted_and_equals_the_public_names() -> None:
    assert ps.__all__ == sorted(ps.__all__, key=isort_key)
    assert len(set(ps.__all__)) == len(ps.__all__)
    assert set(ps.__all__) == public_names(ps)


@pytest.mark.parametrize("name", ps.__all__)
def test_every_exported_name_is_importable(name: str) -> None:
    namespace: dict[str, Any] = {}
    exec(f"from perspt_store import {name}", namespace)
    assert namespace[name] is getattr(ps, name)


def test_every_error_and_row_model_is_exported_at_the_top() -> None:
    assert set(errors.__all__) <= set(ps.__all__)
    assert set(rows.__all__) <= set(ps.__all__)
    for name in errors.__all__:
        error = getattr(ps, name)
        assert issubclass(error, ps.StoreError) and error.__doc__, name


def test_version_is_a_pep_440_string() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+([abc]|rc|\.dev|\.post)?\d*", ps.__version__)


# --- SPEC §5: the 74 upstream methods ------------------------------------------------------

# Method -> parameters as SPEC §5 lists them: a name, or a row type for "the record".
# Upstream's constructor `new()` is `SessionStore.open_default()` here (checked below).
SPEC_METHODS: list[tuple[str, list[Any]]] = [
    # 5.1 construction and paths
    ("open", ["path"]),
    ("open_read_only", ["path"]),
    ("default_db_path", []),
    ("get_session_dir", ["session_id"]),
    ("create_session_dir", ["session_id"]),
    # 5.2 sessions
    ("create_session", [ps.SessionRecord]),
    ("update_merkle_root", ["session_id", "merkle_root"]),
    ("update_session_status", ["session_id", "status"]),
    ("get_session", ["session_id"]),
    ("list_sessions_paginated", ["limit", "offset"]),
    ("list_recent_sessions", ["limit"]),
    ("count_sessions", []),
    # 5.3 node_states
    ("record_node_state", [ps.NodeStateRecord]),
    ("get_node_states", ["session_id"]),
    ("get_latest_node_states", ["session_id"]),
    # 5.4 energy_history
    ("record_energy", [ps.EnergyRecord]),
    ("get_energy_history", ["session_id", "node_id"]),
    ("get_session_energy_history", ["session_id"]),
    # 5.5 llm_requests
    ("record_llm_request", [ps.LlmRequestRecord]),
    ("get_llm_requests", ["session_id"]),
    ("get_global_llm_summary", []),
    # 5.6 structural_digests
    ("record_structural_digest", [ps.StructuralDigestRecord]),
    ("get_structural_digests", ["session_id", "node_id"]),
    # 5.7 context_provenance
    ("record_context_provenance", [ps.ContextProvenanceRecord]),
    ("get_context_provenance", ["session_id", "node_id"]),
    # 5.8 escalation_reports and rewrite_records
    ("record_escalation_report", [ps.EscalationReportRecord]),
    ("get_escalation_reports", ["session_id"]),
    ("record_rewrite", [ps.RewriteRecordRow]),
    ("get_rewrite_records", ["session_id"]),
    # 5.9 sheaf_validations
    ("record_sheaf_validation", [ps.SheafValidationRow]),
    ("get_sheaf_validations", ["session_id", "node_id"]),
    ("get_all_sheaf_validations", ["session_id"]),
    # 5.10 provisional_branches and branch_lineage
    ("record_provisional_branch", [ps.ProvisionalBranchRow]),
    ("update_branch_state", ["branch_id", "new_state"]),
    ("get_provisional_branches", ["session_id"]),
    ("get_live_branches_for_parent", ["session_id", "parent_node_id"]),
    ("flush_branches_for_parent", ["session_id", "parent_node_id"]),
    ("record_branch_lineage", [ps.BranchLineageRow]),
    ("get_child_branches", ["parent_branch_id"]),
    # 5.11 interface_seals and branch_flushes
    ("record_interface_seal", [ps.InterfaceSealRow]),
    ("get_interface_seals", ["session_id", "node_id"]),
    ("has_interface_seals", ["session_id", "node_id"]),
    ("record_branch_flush", [ps.BranchFlushRow]),
    ("get_branch_flushes", ["session_id"]),
    # 5.12 task_graph_edges
    ("record_task_graph_edge", [ps.TaskGraphEdgeRow]),
    ("get_task_graph_edges", ["session_id"]),
    # 5.13 review_outcomes
    ("record_review_outcome", [ps.ReviewOutcomeRow]),
    ("get_review_outcomes", ["session_id", "node_id"]),
    ("get_latest_review_outcome", ["session_id", "node_id"]),
    ("get_all_review_outcomes", ["session_id"]),
    # 5.14 verification_results and artifact_bundles
    ("record_verification_result", [ps.VerificationResultRow]),
    ("get_verification_result", ["session_id", "node_id"]),
    ("get_all_verification_results", ["session_id"]),
    ("record_artifact_bundle", [ps.ArtifactBundleRow]),
    ("get_artifact_bundle", ["session_id", "node_id"]),
    # 5.15 feature_charters and plan_revisions
    ("record_feature_charter", [ps.FeatureCharterRow]),
    ("get_feature_charter", ["session_id"]),
    ("record_plan_revision", [ps.PlanRevisionRow]),
    ("get_active_plan_revision", ["session_id"]),
    ("get_plan_revisions", ["session_id"]),
    ("supersede_plan_revision", ["revision_id"]),
    # 5.16 repair_footprints
    ("record_repair_footprint", [ps.RepairFootprintRow]),
    ("get_repair_footprints", ["session_id", "node_id"]),
    ("get_all_repair_footprints", ["session_id"]),
    ("resolve_repair_footprint", ["footprint_id"]),
    # 5.17 budget_envelopes
    ("upsert_budget_envelope", [ps.BudgetEnvelopeRow]),
    ("get_budget_envelope", ["session_id"]),
    # 5.18 srbn_step_records
    ("record_step", [ps.SrbnStepRecord]),
    ("get_step_timeline", ["session_id", "node_id"]),
    ("get_session_steps", ["session_id"]),
    # 5.19 correction_attempts
    ("record_correction_attempt", [ps.CorrectionAttemptRow]),
    ("get_correction_attempts", ["session_id", "node_id"]),
    ("get_session_correction_attempts", ["session_id"]),
]
CLASS_LEVEL = {"open", "open_read_only", "default_db_path"}


def test_the_list_covers_all_74_upstream_methods() -> None:
    names = [name for name, _ in SPEC_METHODS]
    assert len(set(names)) == len(names) == 74 - 1  # all but the constructor alias `new`


def _signature(name: str) -> inspect.Signature:
    """The method's signature as a caller sees it (no ``self``/``cls``)."""
    attr = inspect.getattr_static(ps.SessionStore, name)
    if isinstance(attr, (classmethod, staticmethod)):
        return inspect.signature(getattr(ps.SessionStore, name))
    parameters = list(inspect.signature(attr).parameters.values())
    assert parameters[0].name == "self", f"{name} is not an instance method"
    return inspect.signature(attr).replace(parameters=parameters[1:])


@pytest.mark.parametrize(("name", "spec_params"), SPEC_METHODS, ids=[n for n, _ in SPEC_METHODS])
def test_session_store_has_the_upstream_method_with_its_parameters_in_order(
    name: str, spec_params: list[Any]
) -> None:
    assert callable(getattr(ps.SessionStore, name, None)), f"SessionStore.{name} is missing"
    if name in CLASS_LEVEL:  # usable without an instance, as upstream's associated functions
        assert isinstance(inspect.getattr_static(ps.SessionStore, name),
                          (classmethod, staticmethod)), name
    params = list(_signature(name).parameters.values())
    leading = params[: len(spec_params)]
    assert len(leading) == len(spec_params), f"{name} takes fewer parameters than upstream"
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    hints = typing.get_type_hints(getattr(ps.SessionStore, name))
    for param, spec in zip(leading, spec_params, strict=True):
        assert param.kind in positional and param.default is inspect.Parameter.empty, (
            f"{name}({param.name}) must be a required positional parameter"
        )
        if isinstance(spec, str):
            assert param.name == spec, f"{name}: parameter {param.name!r}, upstream {spec!r}"
        else:
            assert hints[param.name] is spec, f"{name}({param.name}) should take a {spec}"
    for extra in params[len(spec_params):]:  # port additions must not break upstream calls
        assert (
            extra.default is not inspect.Parameter.empty
            or extra.kind in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
        ), f"{name}: extra parameter {extra.name!r} must be optional"


def test_upstreams_new_is_open_default() -> None:
    assert isinstance(inspect.getattr_static(ps.SessionStore, "open_default"), classmethod)
    required = [p for p in _signature("open_default").parameters.values()
                if p.default is inspect.Parameter.empty
                and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    assert required == []


def test_init_schema_takes_a_connection() -> None:
    assert list(inspect.signature(ps.init_schema).parameters) == ["conn"]

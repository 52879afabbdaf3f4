"""The demo session: a realistic SRBN run recorded through the public API, reproducible by seed."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import perspt_store as ps
from perspt_store.demo import (
    DEMO_EDGES,
    DEMO_NODES,
    ESCALATED_NODE,
    INTERFACE_NODE,
    demo_session_id,
    record_demo_session,
)
from perspt_store.schema import TABLES

NODE_IDS = [n.node_id for n in DEMO_NODES]
STEP_NAMES = {"speculate", "verify", "converge", "sheaf_validate", "commit"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ps.SessionStore, str]]:
    """One demo session (seed 0), recorded once for the read-only shape tests."""
    with ps.SessionStore.in_memory(sessions_dir=tmp_path_factory.mktemp("sessions")) as store:
        yield store, record_demo_session(store, seed=0)


def table_counts(store: ps.SessionStore) -> dict[str, int]:
    return {t: store.sql(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in TABLES}


def session_rows(store: ps.SessionStore, sid: str) -> dict[str, list[ps.Row]]:
    """Every row of the session, by table (compared by fields: db-filled columns ignored)."""
    charter = store.get_feature_charter(sid)
    budget = store.get_budget_envelope(sid)
    session = store.get_session(sid)
    assert charter is not None and budget is not None and session is not None
    return {
        "session": [session],
        "node_states": list(store.get_node_states(sid)),
        "energy": list(store.get_session_energy_history(sid)),
        "edges": list(store.get_task_graph_edges(sid)),
        "llm": list(store.get_llm_requests(sid)),
        "steps": list(store.get_session_steps(sid)),
        "corrections": list(store.get_session_correction_attempts(sid)),
        "provenance": [p for n in NODE_IDS if (p := store.get_context_provenance(sid, n))],
        "escalations": list(store.get_escalation_reports(sid)),
        "rewrites": list(store.get_rewrite_records(sid)),
        "sheaf": list(store.get_all_sheaf_validations(sid)),
        "branches": list(store.get_provisional_branches(sid)),
        "lineage": list(store.get_branch_lineage(sid)),
        "seals": [s for n in NODE_IDS for s in store.get_interface_seals(sid, n)],
        "flushes": list(store.get_branch_flushes(sid)),
        "reviews": list(store.get_all_review_outcomes(sid)),
        "verification": [v for n in NODE_IDS for v in [store.get_verification_result(sid, n)]
                         if v],
        "bundles": [b for n in NODE_IDS if (b := store.get_artifact_bundle(sid, n))],
        "charter": [charter],
        "plans": list(store.get_plan_revisions(sid)),
        "footprints": list(store.get_all_repair_footprints(sid)),
        "budget": [budget],
    }


def assert_demo_shape(store: ps.SessionStore, sid: str) -> None:
    """The invariants every demo session has, whatever its seed."""
    session = store.get_session(sid)
    assert session is not None and session.status == "COMPLETED"
    states = store.get_latest_node_states(sid)
    assert [s.node_id for s in states] == NODE_IDS
    assert {s.state for s in states} == {"Completed"}
    attempts = {s.node_id: s.attempt_count for s in states}
    assert all(2 <= a <= 4 for a in attempts.values())
    assert attempts[ESCALATED_NODE] >= 3
    total_attempts = sum(attempts.values())

    for state in states:
        history = store.get_energy_history(sid, state.node_id)
        totals = [e.v_total for e in history]
        assert len(history) == state.attempt_count
        assert all(a > b for a, b in itertools.pairwise(totals)), totals
        assert totals[-1] < 0.05
        assert state.v_total == totals[-1]
        for e in history:
            parts = (e.v_syn, e.v_str, e.v_log, e.v_boot, e.v_sheaf)
            assert min(parts) >= 0
            assert e.v_total == pytest.approx(sum(parts), abs=1e-9)

    counts = {t: len(rows) for t, rows in session_rows(store, sid).items()}
    assert counts == {
        "session": 1, "node_states": 5, "energy": total_attempts, "edges": len(DEMO_EDGES),
        "llm": total_attempts + 2,  # one per attempt, plus one per correction
        # per attempt speculate + verify; per node converge + commit; the escalated node's
        # extra converge (escalated) and its sheaf_validate
        "steps": 2 * total_attempts + 2 * len(NODE_IDS) + 2,
        "corrections": 2, "provenance": 5, "escalations": 1, "rewrites": 1, "sheaf": 1,
        "branches": 3, "lineage": 3, "seals": 1, "flushes": 1,
        "reviews": 6,  # one per node plus the rejected review at escalation
        "verification": 5, "bundles": 5, "charter": 1, "plans": 1, "footprints": 1,
        "budget": 1,
    }


def test_demo_session_completes_with_every_node_committed(
    demo: tuple[ps.SessionStore, str],
) -> None:
    store, sid = demo
    assert sid == demo_session_id(0)
    assert_demo_shape(store, sid)
    committed = [s.committed_at for s in store.get_latest_node_states(sid)]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", c or "") for c in committed)
    assert committed == sorted(committed)


def test_demo_writes_every_table_but_structural_digests(
    demo: tuple[ps.SessionStore, str],
) -> None:
    store, _ = demo
    empty = {table for table, count in table_counts(store).items() if count == 0}
    assert empty == {"structural_digests"}  # the orchestrator never writes digests (SPEC §1)


def test_demo_energies_fall_and_steps_follow_the_srbn_loop(
    demo: tuple[ps.SessionStore, str],
) -> None:
    store, sid = demo
    steps = store.get_session_steps(sid)
    assert {s.step for s in steps} == STEP_NAMES
    escalated = [s for s in steps if s.outcome == "escalated"]
    assert [(s.node_id, s.step) for s in escalated] == [(ESCALATED_NODE, "converge")]
    assert {s.outcome for s in steps} == {"ok", "escalated"}
    for node_id in NODE_IDS:
        names = [s.step for s in store.get_step_timeline(sid, node_id)]
        assert names[0] == "speculate" and names[-1] == "commit"
        assert names[-2] in ("converge", "sheaf_validate")


def test_demo_seals_the_interface_node_with_a_32_byte_hash(
    demo: tuple[ps.SessionStore, str],
) -> None:
    store, sid = demo
    (seal,) = store.get_interface_seals(sid, INTERFACE_NODE)
    assert len(seal.seal_hash) == 32
    hashes = {s.node_id: s.merkle_hash for s in store.get_latest_node_states(sid)}
    assert hashes.pop(INTERFACE_NODE) == seal.seal_hash
    assert set(hashes.values()) == {None}  # only Interface-class nodes carry a hash
    assert [n for n in NODE_IDS if store.has_interface_seals(sid, n)] == [INTERFACE_NODE]


def test_demo_flushes_the_live_branches_of_the_escalated_parent(
    demo: tuple[ps.SessionStore, str],
) -> None:
    store, sid = demo
    branches = {b.branch_id: b for b in store.get_provisional_branches(sid)}
    (flush,) = store.get_branch_flushes(sid)
    assert flush.parent_node_id == ESCALATED_NODE
    assert len(flush.flushed_branch_ids) == 2
    assert {branches[b].state for b in flush.flushed_branch_ids} == {"flushed"}
    assert {branches[b].parent_node_id for b in flush.flushed_branch_ids} == {ESCALATED_NODE}
    assert sorted(flush.requeue_node_ids) == sorted(
        branches[b].node_id for b in flush.flushed_branch_ids
    )
    (merged,) = [b for b in branches.values() if b.state == "merged"]
    (seal,) = store.get_interface_seals(sid, INTERFACE_NODE)
    assert merged.parent_node_id == INTERFACE_NODE and merged.parent_seal_hash == seal.seal_hash
    assert store.get_live_branches_for_parent(sid, ESCALATED_NODE) == []
    children = store.get_child_branches(ESCALATED_NODE, session_id=sid)
    assert sorted(children) == sorted(flush.flushed_branch_ids)


def test_demo_escalation_is_rewritten_repaired_and_reviewed(
    demo: tuple[ps.SessionStore, str],
) -> None:
    store, sid = demo
    (report,) = store.get_escalation_reports(sid)
    (rewrite,) = store.get_rewrite_records(sid)
    assert report.node_id == rewrite.node_id == ESCALATED_NODE
    assert report.category == rewrite.category
    (footprint,) = store.get_repair_footprints(sid, ESCALATED_NODE)
    assert footprint.revision_id == "initial" and footprint.resolved
    corrections = store.get_correction_attempts(sid, ESCALATED_NODE)
    assert [(c.attempt, c.accepted) for c in corrections] == [(1, False), (2, True)]
    assert corrections[0].rejection_reason
    outcomes = [r.outcome for r in store.get_review_outcomes(sid, ESCALATED_NODE)]
    assert outcomes == ["rejected", "approved"]
    rejected = store.get_review_outcomes(sid, ESCALATED_NODE)[0]
    assert rejected.escalation_category == report.category
    all_outcomes = [r.outcome for r in store.get_all_review_outcomes(sid)]
    assert {"approved", "auto_approved", "rejected"} == set(all_outcomes)
    assert all_outcomes.count("rejected") == 1
    assert all(r.energy_at_review is None for r in store.get_all_review_outcomes(sid))
    failed, passed = (store.sql(
        "SELECT tests_ok FROM verification_results WHERE node_id = ? ORDER BY id",
        [ESCALATED_NODE],
    ).fetchall())
    assert (failed, passed) == ((False,), (True,))


def test_demo_llm_requests_are_mostly_usage_only(demo: tuple[ps.SessionStore, str]) -> None:
    store, sid = demo
    requests = store.get_llm_requests(sid)
    full = [r for r in requests if r.prompt or r.response]
    assert len(full) == 2
    assert all(r.prompt and r.response for r in full)
    assert all(r.tokens_in > 0 and r.tokens_out > 0 and r.latency_ms > 0 for r in requests)
    assert {r.node_id for r in requests} == set(NODE_IDS)


def test_demo_budget_counts_steps_and_cost(demo: tuple[ps.SessionStore, str]) -> None:
    store, sid = demo
    budget = store.get_budget_envelope(sid)
    assert budget is not None
    assert budget.steps_used == len(store.get_session_steps(sid))
    assert budget.max_steps is not None and budget.steps_used <= budget.max_steps
    assert budget.max_cost_usd is not None and 0 < budget.cost_used_usd < budget.max_cost_usd


def test_demo_plan_charter_and_provenance_describe_the_graph(
    demo: tuple[ps.SessionStore, str],
) -> None:
    store, sid = demo
    plan = store.get_active_plan_revision(sid)
    assert plan is not None and plan.sequence == 1 and plan.reason == "initial plan"
    assert f'"id":"{NODE_IDS[0]}"' in plan.plan_json
    assert store.get_feature_charter(sid) is not None
    edges = [(e.parent_node_id, e.child_node_id, e.edge_type)
             for e in store.get_task_graph_edges(sid)]
    assert edges == list(DEMO_EDGES)
    (seal,) = store.get_interface_seals(sid, INTERFACE_NODE)
    for child in ("token_bucket", ESCALATED_NODE):  # the interface's dependants
        provenance = store.get_context_provenance(sid, child)
        assert provenance is not None
        assert provenance.dependency_hashes == [f"{INTERFACE_NODE}:{seal.seal_hash.hex()}"]


def test_same_seed_records_the_same_rows(tmp_path: Path) -> None:
    with ps.SessionStore.in_memory() as one, ps.SessionStore.open(tmp_path / "b.db") as two:
        sid_one = record_demo_session(one, seed=3)
        sid_two = record_demo_session(two, seed=3)
        assert sid_one == sid_two == demo_session_id(3)
        assert session_rows(one, sid_one) == session_rows(two, sid_two)


def test_different_seeds_coexist_in_one_store_and_differ() -> None:
    with ps.SessionStore.in_memory() as store:
        first = record_demo_session(store, seed=0)
        second = record_demo_session(store, seed=1)
        custom = record_demo_session(store, "my-demo", seed=0)
        assert len({first, second, custom}) == 3 and custom == "my-demo"
        assert store.count_sessions() == 3
        for sid in (first, second, custom):
            assert_demo_shape(store, sid)
        energies = [[e.v_total for e in store.get_session_energy_history(s)]
                    for s in (first, second)]
        assert energies[0] != energies[1]
        # the same seed under another id writes the same values
        assert [e.v_total for e in store.get_session_energy_history(custom)] == energies[0]


def test_recording_an_existing_session_writes_nothing() -> None:
    with ps.SessionStore.in_memory() as store:
        record_demo_session(store, seed=0)
        before = table_counts(store)
        with pytest.raises(ps.DuplicateRecordError):
            record_demo_session(store, seed=0)
        assert table_counts(store) == before


def test_demo_needs_a_writable_store(tmp_path: Path) -> None:
    path = tmp_path / "perspt.db"
    ps.SessionStore.open(path).close()
    with ps.SessionStore.open_read_only(path) as store, pytest.raises(ps.ReadOnlyStoreError):
        record_demo_session(store)


def test_progress_reports_each_node_as_it_commits() -> None:
    seen: list[tuple[str, int]] = []
    with ps.SessionStore.in_memory() as store:
        sid = demo_session_id(0)

        def progress(node_id: str) -> None:
            seen.append((node_id, len(store.get_latest_node_states(sid))))

        record_demo_session(store, seed=0, progress=progress)
    assert seen == [(node_id, i) for i, node_id in enumerate(NODE_IDS, start=1)]


@settings(deadline=None, max_examples=4)
@given(seed=st.integers(min_value=0, max_value=2**32))
def test_every_seed_records_a_converging_session(seed: int) -> None:
    with ps.SessionStore.in_memory() as store:
        assert_demo_shape(store, record_demo_session(store, seed=seed))


def test_demo_module_imports_neither_click_nor_rich() -> None:
    code = (
        "import sys, perspt_store, perspt_store.demo, perspt_store.pytest_plugin\n"
        "print(sorted(m for m in ('click', 'rich') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"

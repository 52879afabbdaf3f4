"""Set-based resume and review loaders: ``load_session_snapshot``, ``node_review_summary``
and ``session_summary`` (SPEC §1.1; D18: constant query counts and errors that propagate;
D19: nodes counted once, states parsed case-insensitively)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import perspt_store as ps
from conftest import spy_statements
from upstream_files import write_upstream_062

PROPERTY = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SEAL = bytes(range(32))


def node(node_id: str, state: str = "Completed", session_id: str = "test-session",
         **fields: Any) -> ps.NodeStateRecord:
    return ps.NodeStateRecord(node_id=node_id, session_id=session_id, state=state, **fields)


def energy(node_id: str, v_total: float, session_id: str = "test-session") -> ps.EnergyRecord:
    return ps.EnergyRecord(node_id=node_id, session_id=session_id, v_total=v_total)


def node_rows(session_id: str, n: int, tag: str = "") -> list[ps.Row]:
    """Node ``n``'s evidence: two of every kind, so "latest" and "all" differ."""
    nid = f"node-{n}"
    rows: list[ps.Row] = []
    for k in range(2):
        rows += [
            node(nid, "Verifying" if k == 0 else "Completed", session_id, v_total=n + k / 10),
            energy(nid, n + k / 100, session_id),
            ps.VerificationResultRow(session_id=session_id, node_id=nid,
                                     result_json=f"{tag}{n}.{k}", tests_passed=k),
            ps.ArtifactBundleRow(session_id=session_id, node_id=nid, bundle_json=f"{n}.{k}",
                                 touched_files=[f"f{n}"]),
            ps.SheafValidationRow(session_id=session_id, node_id=nid, validator_class=f"v{k}",
                                  passed=k == 1),
            ps.InterfaceSealRow(seal_id=f"seal-{n}-{k}", session_id=session_id, node_id=nid,
                                sealed_path="api.rs", artifact_kind="interface",
                                seal_hash=SEAL if k else b"short"),
            ps.ContextProvenanceRecord(session_id=session_id, node_id=nid,
                                       context_package_id=f"ctx-{n}-{k}"),
        ]
    return rows


def session_rows(session_id: str, nodes: int) -> list[ps.Row]:
    rows: list[ps.Row] = []
    for n in range(nodes):
        rows += node_rows(session_id, n)
        rows.append(ps.TaskGraphEdgeRow(session_id=session_id, parent_node_id="node-0",
                                        child_node_id=f"node-{n}"))
        rows.append(ps.ProvisionalBranchRow(branch_id=f"b{n}", session_id=session_id,
                                            node_id=f"node-{n}", parent_node_id="node-0"))
        rows.append(ps.EscalationReportRecord(session_id=session_id, node_id=f"node-{n}",
                                              category="c", action="{}"))
    rows.append(ps.BranchFlushRow(flush_id="f", session_id=session_id, parent_node_id="node-0",
                                  reason="r"))
    rows.append(ps.BudgetEnvelopeRow(session_id=session_id, max_steps=9, steps_used=nodes))
    return rows


def per_node_snapshot(store: ps.SessionStore, session_id: str) -> ps.SessionSnapshot:
    """The snapshot built the way upstream's ledger does it: 5 + 6·N getter calls."""
    details = [
        ps.NodeSnapshotDetail(
            record=record,
            energy_history=store.get_energy_history(session_id, record.node_id),
            verification=store.get_verification_result(session_id, record.node_id),
            artifact_bundle=store.get_artifact_bundle(session_id, record.node_id),
            sheaf_validations=store.get_sheaf_validations(session_id, record.node_id),
            interface_seals=store.get_interface_seals(session_id, record.node_id),
            context_provenance=store.get_context_provenance(session_id, record.node_id),
        )
        for record in store.get_latest_node_states(session_id)
    ]
    return ps.SessionSnapshot(
        session_id=session_id,
        node_details=details,
        graph_edges=store.get_task_graph_edges(session_id),
        branches=store.get_provisional_branches(session_id),
        escalation_reports=store.get_escalation_reports(session_id),
        flushes=store.get_branch_flushes(session_id),
        budget=store.get_budget_envelope(session_id),
    )


# --- load_session_snapshot ------------------------------------------------------------------


def test_snapshot_holds_each_nodes_latest_state_and_evidence(
    store: ps.SessionStore, session: str
) -> None:
    store.record_many(session_rows(session, 3))
    snap = store.load_session_snapshot(session)
    assert snap.session_id == session
    assert [d.node_id for d in snap.node_details] == ["node-0", "node-1", "node-2"]
    detail = snap.node("node-1")
    assert detail is not None
    assert detail.record.state == "Completed" and detail.record.v_total == 1.1
    assert [e.v_total for e in detail.energy_history] == [1.0, 1.01]
    assert detail.verification is not None and detail.verification.result_json == "1.1"
    assert detail.artifact_bundle is not None and detail.artifact_bundle.bundle_json == "1.1"
    assert [v.validator_class for v in detail.sheaf_validations] == ["v0", "v1"]
    assert [s.seal_id for s in detail.interface_seals] == ["seal-1-0", "seal-1-1"]
    assert detail.context_provenance is not None
    assert detail.context_provenance.context_package_id == "ctx-1-1"
    assert detail.seal_hash == SEAL, "the last seal's hash, being 32 bytes"
    assert [e.child_node_id for e in snap.graph_edges] == ["node-0", "node-1", "node-2"]
    assert [b.branch_id for b in snap.branches] == ["b0", "b1", "b2"]
    assert len(snap.escalation_reports) == 3 and len(snap.flushes) == 1
    assert snap.budget == ps.BudgetEnvelopeRow(session_id=session, max_steps=9, steps_used=3)
    assert snap.node("nope") is None
    assert detail.energy_history[0].id is not None, "db-filled columns are read back"


def test_snapshot_equals_the_per_node_getters(store: ps.SessionStore, session: str) -> None:
    store.record_many(session_rows(session, 6))
    store.record_node_state(node("node-3", "escalated"))  # a later re-commit reorders
    store.record_energy(energy("node-5", 9.0))
    other = "other-session"
    store.create_session(ps.SessionRecord(session_id=other, task="t", working_dir="/w"))
    store.record_many(session_rows(other, 2))  # another session's rows stay out
    assert store.load_session_snapshot(session) == per_node_snapshot(store, session)
    assert store.load_session_snapshot(other) == per_node_snapshot(store, other)


@given(
    st.lists(
        st.tuples(st.sampled_from(["node", "energy", "verify", "seal", "prov", "sheaf"]),
                  st.integers(0, 4), st.booleans()),
        max_size=30,
    )
)
@PROPERTY
def test_any_session_loads_like_the_per_node_getters(
    store: ps.SessionStore, ops: list[tuple[str, int, bool]]
) -> None:
    """Law: whatever was recorded, in whatever order, the set-based load equals upstream's
    per-node assembly."""
    sid = f"s-{len(store.list_recent_sessions(1000))}"
    store.create_session(ps.SessionRecord(session_id=sid, task="t", working_dir="/w"))
    rows: list[ps.Row] = []
    for kind, n, flag in ops:
        nid = f"n{n}"
        if kind == "node":
            rows.append(node(nid, "Failed" if flag else "Completed", sid))
        elif kind == "energy":
            rows.append(energy(nid, float(len(rows)), sid))
        elif kind == "verify":
            rows.append(ps.VerificationResultRow(session_id=sid, node_id=nid,
                                                 result_json=str(len(rows)), lint_ok=flag))
        elif kind == "seal":
            rows.append(ps.InterfaceSealRow(seal_id=str(len(rows)), session_id=sid,
                                            node_id=nid, sealed_path="p", artifact_kind="k",
                                            seal_hash=SEAL if flag else b""))
        elif kind == "prov":
            rows.append(ps.ContextProvenanceRecord(session_id=sid, node_id=nid,
                                                   context_package_id=str(len(rows))))
        else:
            rows.append(ps.SheafValidationRow(session_id=sid, node_id=nid,
                                              validator_class="v", passed=flag))
    store.record_many(rows)
    assert store.load_session_snapshot(sid) == per_node_snapshot(store, sid)


@pytest.mark.parametrize("nodes", [10, 200])
def test_snapshot_runs_a_constant_number_of_queries(
    nodes: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """D18: upstream ran 5 + 6·N queries (1,205 for 200 nodes)."""
    with ps.SessionStore.in_memory(sessions_dir=tmp_path) as store:
        store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
        store.record_many(session_rows("s", nodes))
        seen = spy_statements(store, monkeypatch)
        snap = store.load_session_snapshot("s")
        assert len(snap.node_details) == nodes
        assert len(seen) <= 12, seen
        count = len(seen)
        seen.clear()
        store.session_summary("s")
        assert len(seen) <= 5
        seen.clear()
        store.node_review_summary("s", "node-1")
        assert len(seen) <= 7
    assert count == 12, "the same 12 statements for any number of nodes"


def test_a_failing_query_propagates(store: ps.SessionStore, session: str) -> None:
    """D18: upstream swallowed every error into an empty result."""
    store.record_many(session_rows(session, 2))
    store.sql("DROP TABLE interface_seals")
    with pytest.raises(ps.StoreError, match="interface_seals"):
        store.load_session_snapshot(session)
    with pytest.raises(ps.StoreError, match="interface_seals"):
        store.node_review_summary(session, "node-0")


def test_a_corrupt_value_raises_instead_of_being_read(store: ps.SessionStore, session: str) -> None:
    store.record_many(session_rows(session, 2))
    store.sql("UPDATE energy_history SET v_total = NULL WHERE node_id = 'node-1'")
    with pytest.raises(ps.StoreError, match="energy_history"):
        store.load_session_snapshot(session)


def test_unknown_and_empty_sessions(store: ps.SessionStore, session: str) -> None:
    with pytest.raises(ps.SessionNotFoundError):
        store.load_session_snapshot("ghost")
    with pytest.raises(ps.SessionNotFoundError):
        store.session_summary("ghost")
    with pytest.raises(ps.SessionNotFoundError):
        store.node_review_summary("ghost", "n")
    store.record_task_graph_edge(ps.TaskGraphEdgeRow(session_id=session, parent_node_id="a",
                                                     child_node_id="b"))
    snap = store.load_session_snapshot(session)
    assert snap.node_details == [] and len(snap.graph_edges) == 1 and snap.budget is None
    empty = store.node_review_summary(session, "nobody")
    assert empty.attempt_count == 1 and empty.latest_energy is None
    assert empty.context_provenance == [] and empty.branches == []


def test_nodes_removed_by_a_rollback_are_left_out(store: ps.SessionStore, session: str) -> None:
    first = store.record_node_state(node("a"))
    store.record_node_state(node("b"))
    store.rollback(session, to_seq=first.seq)
    assert [d.node_id for d in store.load_session_snapshot(session).node_details] == ["a"]
    summary = store.session_summary(session)
    assert summary.total_nodes == 1


def test_seal_hash_is_only_a_32_byte_last_seal(store: ps.SessionStore, session: str) -> None:
    store.record_node_state(node("a"))
    store.record_interface_seal(ps.InterfaceSealRow(
        seal_id="1", session_id=session, node_id="a", sealed_path="p", artifact_kind="k",
        seal_hash=SEAL))
    store.record_interface_seal(ps.InterfaceSealRow(
        seal_id="2", session_id=session, node_id="a", sealed_path="p", artifact_kind="k",
        seal_hash=SEAL[:16]))
    detail = store.load_session_snapshot(session).node("a")
    assert detail is not None and detail.seal_hash is None


def test_a_migrated_upstream_file_loads_like_the_per_node_getters(tmp_path: Path) -> None:
    """Rows written by upstream take their legacy decoding in the set-based load too."""
    uf = write_upstream_062(tmp_path / "upstream.db")
    copy = tmp_path / "migrated.db"
    shutil.copy(uf.path, copy)
    with ps.SessionStore.open(copy) as store:
        for session_id in uf.session_ids:
            store.record_energy(energy("late-node", 1.5, session_id))  # a post-migration row
            snap = store.load_session_snapshot(session_id)
            assert snap == per_node_snapshot(store, session_id)
            assert store.session_summary(session_id).total_nodes == len(snap.node_details)


# --- node_review_summary ---------------------------------------------------------------------


def test_node_review_summary_gathers_one_nodes_rows(store: ps.SessionStore, session: str) -> None:
    store.record_many(session_rows(session, 3))
    summary = store.node_review_summary(session, "node-2")
    assert summary.node_id == "node-2"
    assert [e.v_total for e in summary.energy_history] == [2.0, 2.01]
    assert summary.latest_energy == summary.energy_history[-1]
    assert summary.attempt_count == 2, "max(1, number of energy rows)"
    assert [r.node_id for r in summary.escalation_reports] == ["node-2"]
    assert [v.validator_class for v in summary.sheaf_validations] == ["v0", "v1"]
    assert [s.seal_id for s in summary.interface_seals] == ["seal-2-0", "seal-2-1"]
    assert [p.context_package_id for p in summary.context_provenance] == ["ctx-2-1"]
    assert [b.branch_id for b in summary.branches] == ["b2"]


# --- session_summary -------------------------------------------------------------------------


def test_session_summary_counts_nodes_not_snapshots(store: ps.SessionStore, session: str) -> None:
    """D19: one node committed twice as "Completed" is one completed node, and its energy is
    counted once (the latest)."""
    store.record_node_state(node("a", v_total=0.9))
    store.record_node_state(node("a", v_total=0.4))
    summary = store.session_summary(session)
    assert (summary.total_nodes, summary.completed) == (1, 1)
    assert summary.total_energy == 0.4
    assert summary.node_energies == []


def test_session_summary_parses_states_case_insensitively(
    store: ps.SessionStore, session: str
) -> None:
    states = ["COMPLETED", "stable", "Verified", "completed", "FAILED", "failed", "Escalated",
              "Coding", '"Completed"']
    store.record_many([node(f"n{i}", state) for i, state in enumerate(states)])
    summary = store.session_summary(session)
    assert summary.total_nodes == len(states)
    assert (summary.completed, summary.failed, summary.escalated) == (5, 2, 1)


def test_session_summary_energies_branches_flushes_and_reviews(
    store: ps.SessionStore, session: str
) -> None:
    store.record_many([node("a", v_total=5.0), node("b", v_total=7.0)])
    store.record_many([energy("a", 1.0), energy("a", 2.0)])
    for i, state in enumerate(["active", "sealed", "sealed", "merged", "flushed", "ACTIVE"]):
        store.record_provisional_branch(ps.ProvisionalBranchRow(
            branch_id=f"b{i}", session_id=session, node_id="a", parent_node_id="root",
            state=state))
    flush = ps.BranchFlushRow(flush_id="f", session_id=session, parent_node_id="root", reason="r")
    store.record_branch_flush(flush)
    outcomes = ["approved", "approved_with_edit", "auto_approved", "rejected", "aborted",
                "correction_requested", "skipped"]
    for outcome in outcomes:
        store.record_review_outcome(ps.ReviewOutcomeRow(session_id=session, node_id="a",
                                                        outcome=outcome))
    store.record_escalation_report(ps.EscalationReportRecord(
        session_id=session, node_id="b", category="c", action="{}"))
    summary = store.session_summary(session)
    assert summary.total_energy == 2.0 + 7.0, "latest measurement, else the snapshot's"
    assert [(nid, e.v_total) for nid, e in summary.node_energies] == [("a", 2.0)]
    assert (summary.branches_total, summary.active_branches, summary.sealed_branches,
            summary.merged_branches, summary.flushed_branches) == (6, 2, 2, 1, 1)
    assert summary.flush_decisions == [flush]  # the rows, as upstream returns them
    assert (summary.review_total, summary.reviews_approved, summary.reviews_rejected,
            summary.reviews_corrected) == (7, 3, 2, 1)
    assert [r.node_id for r in summary.escalation_reports] == ["b"]


def test_state_kind_classifies_states() -> None:
    from perspt_store.store.snapshot import state_kind

    assert [state_kind(s) for s in ("Stable", " verified ", "FAILED", "escalated", "Retry")] == [
        "completed", "completed", "failed", "escalated", "other"
    ]


# --- the bulk decoder's SQL pre-check is sound -------------------------------------------------

GOOD: dict[Any, list[Any]] = {
    float: [0.0, -2.5, 3.4e38, -1e-300], int: [0, -7, 2**31 - 1], bool: [True, False],
    bytes: [b"", SEAL], str: ["", "x"],
}
BAD: dict[Any, list[Any]] = {
    float: [None, float("nan"), float("inf"), float("-inf"), 1e39, -3.5e38],
    int: [None], bool: [None], bytes: [None], str: [None],
}


@given(st.data())
@settings(PROPERTY, max_examples=60)
def test_rows_the_precheck_passes_are_rows_the_model_accepts(
    store: ps.SessionStore, data: st.DataObject
) -> None:
    """Law: the bulk decoder skips pydantic only for rows its SQL predicate passes, so that
    predicate must never pass a row the model rejects; either way a bad row raises."""
    from pydantic import ValidationError

    from perspt_store._mapping import _unwrap_optional, table_map

    sid = f"s-{len(store.list_recent_sessions(1000))}"
    store.create_session(ps.SessionRecord(session_id=sid, task="t", working_dir="/w"))
    model = data.draw(st.sampled_from([ps.EnergyRecord, ps.NodeStateRecord,
                                       ps.SheafValidationRow, ps.VerificationResultRow,
                                       ps.ReviewOutcomeRow, ps.ContextProvenanceRecord]))
    mapping = table_map(model)
    fields = [name for name in model.model_fields if name != "session_id"]
    corrupt = data.draw(st.sampled_from([None, *fields]), label="corrupted field")
    values: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        kind, optional = _unwrap_optional(field.annotation)
        if name == "session_id":
            values[name] = sid
        elif name in mapping.json_lists:
            values[name] = data.draw(st.sampled_from([None, "[]", '["a"]', "oops"]))
        elif name == corrupt:
            values[name] = data.draw(st.sampled_from(BAD[kind]), label=name)
        else:
            pool = GOOD[kind] + ([None] if optional else [])
            values[name] = data.draw(st.sampled_from(pool), label=name)
    columns = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    table = mapping.table
    constraints_ok = True
    try:  # the table's own constraints (NOT NULL) may refuse the row outright
        store.sql(f"DELETE FROM {table} WHERE session_id = ?", [sid])
        store.sql(f"INSERT INTO {table} ({columns}) VALUES ({marks})", list(values.values()))
    except ps.StoreError:
        constraints_ok = False
    if not constraints_ok:
        return
    (passed,) = store.sql(
        f"SELECT ({mapping.check_sql}) FROM {table} WHERE session_id = ?", [sid]
    ).fetchall()[0]
    raw = store.sql(f"SELECT {mapping.select_list} FROM {table} WHERE session_id = ?",
                    [sid]).fetchall()[0]
    try:
        expected: Any = mapping.decode(raw)
    except ValidationError:
        expected = None
    if passed:
        assert expected is not None, f"the pre-check passed a row the model rejects: {values}"
    where = "session_id = ?"
    if expected is None:
        with pytest.raises(ps.StoreError, match=table):
            store._load(model, where, [sid])  # type: ignore[attr-defined]
    else:
        assert store._load(model, where, [sid]) == [expected]  # type: ignore[attr-defined]


# --- lazy node details ----------------------------------------------------------------------


def _lazy_store(tmp_path: Path, nodes: int = 4) -> tuple[ps.SessionStore, ps.SessionSnapshot]:
    store = ps.SessionStore.open(tmp_path / "lazy.db", publish_interval=None)
    store.create_session(ps.SessionRecord(session_id="lazy", task="t", working_dir="/w"))
    store.record_many(session_rows("lazy", nodes))
    return store, store.load_session_snapshot("lazy")


def test_lazy_details_equal_the_getters_and_survive_closing_the_store(tmp_path: Path) -> None:
    store, snapshot = _lazy_store(tmp_path)
    expected = per_node_snapshot(store, "lazy")
    store.close()  # nothing of the details was built yet: their columns need no connection
    assert snapshot == expected
    assert [d.node_id for d in snapshot.node_details] == [
        d.record.node_id for d in expected.node_details
    ]
    assert snapshot.node("node-2") == expected.node("node-2")


def test_lazy_details_repr_pickle_copy_and_hash_as_plain_details(tmp_path: Path) -> None:
    import copy
    import pickle

    store, snapshot = _lazy_store(tmp_path)
    with store:
        expected = per_node_snapshot(store, "lazy")
    detail = snapshot.node_details[1]
    assert repr(detail) == repr(expected.node_details[1])
    assert repr(detail).startswith("NodeSnapshotDetail(record=")
    (tmp_path / "again").mkdir()
    other, fresh = _lazy_store(tmp_path / "again")
    other.close()
    restored = pickle.loads(pickle.dumps(fresh))  # not touched before pickling
    assert restored == expected
    assert type(restored.node_details[0]) is ps.NodeSnapshotDetail
    assert copy.deepcopy(snapshot) == expected
    with pytest.raises(TypeError):
        hash(detail)  # lists inside: unhashable, as the frozen dataclass was
    assert detail.seal_hash == SEAL
    import dataclasses

    changed = dataclasses.replace(detail, energy_history=[])
    assert type(changed) is ps.NodeSnapshotDetail and changed.energy_history == []
    assert changed.record == expected.node_details[1].record


def test_two_threads_touching_one_lazy_detail_see_the_same_models(tmp_path: Path) -> None:
    import threading

    store, snapshot = _lazy_store(tmp_path, nodes=30)
    with store:
        expected = per_node_snapshot(store, "lazy")
    barrier = threading.Barrier(2)
    seen: list[list[Any]] = [[], []]

    def touch(slot: int) -> None:
        barrier.wait()
        for detail in snapshot.node_details:
            seen[slot].append((detail.energy_history, detail.record))

    threads = [threading.Thread(target=touch, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Built once: both threads got the very same objects, and the right ones.
    for (e1, r1), (e2, r2) in zip(seen[0], seen[1], strict=True):
        assert e1 is e2 and r1 is r2
    assert snapshot == expected


def test_a_row_its_model_rejects_still_fails_the_load(tmp_path: Path) -> None:
    store, _ = _lazy_store(tmp_path)
    with store:
        store.sql("UPDATE energy_history SET v_total = 'NaN'::DOUBLE WHERE node_id = 'node-1'")
        with pytest.raises(ps.StoreError, match="energy_history"):
            store.load_session_snapshot("lazy")


def test_without_pyarrow_the_snapshot_is_built_eagerly_and_equal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from perspt_store.store import snapshot as module

    store, lazy = _lazy_store(tmp_path)
    with store:
        monkeypatch.setattr(module, "_HAS_ARROW", False)
        eager = store.load_session_snapshot("lazy")
    assert all(type(d) is ps.NodeSnapshotDetail for d in eager.node_details)
    assert eager == lazy

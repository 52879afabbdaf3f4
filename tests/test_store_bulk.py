"""Bulk writes: ``record_many`` writes any mix of rows atomically, one statement per table,
with the same results and guarantees as the single-row methods."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import perspt_store as ps
from conftest import spy_statements
from perspt_store._mapping import table_map
from perspt_store.schema import SEQUENCED_TABLES, TABLES
from perspt_store.store import bulk
from upstream_files import READERS, edge_case_rows, read_table, write_row

PROPERTY = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def new_session(session_id: str) -> ps.SessionRecord:
    return ps.SessionRecord(session_id=session_id, task="t", working_dir="/tmp/w")


def energy(node_id: str, v_total: float, session_id: str = "test-session") -> ps.EnergyRecord:
    return ps.EnergyRecord(node_id=node_id, session_id=session_id, v_total=v_total)


def node(node_id: str, state: str = "Completed", session_id: str = "test-session",
         **fields: Any) -> ps.NodeStateRecord:
    return ps.NodeStateRecord(node_id=node_id, session_id=session_id, state=state, **fields)


def row_counts(store: ps.SessionStore) -> dict[str, int]:
    return {t: store.sql(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in TABLES}


def test_mixed_rows_read_back_in_the_order_given(store: ps.SessionStore, session: str) -> None:
    rows: list[ps.Row] = [
        energy("a", 0.1),
        ps.VerificationResultRow(session_id=session, node_id="a", result_json="{1}"),
        energy("b", 0.2),
        ps.VerificationResultRow(session_id=session, node_id="a", result_json="{2}"),
        energy("a", 0.3),
        ps.TaskGraphEdgeRow(session_id=session, parent_node_id="a", child_node_id="b"),
        ps.VerificationResultRow(session_id=session, node_id="a", result_json="{3}"),
    ]
    assert store.record_many(rows) == len(rows)
    assert [e.v_total for e in store.get_session_energy_history(session)] == [0.1, 0.2, 0.3]
    assert [e.v_total for e in store.get_energy_history(session, "a")] == [0.1, 0.3]
    latest = store.get_verification_result(session, "a")
    assert latest is not None and latest.result_json == "{3}", "latest is the last given"
    assert store.get_task_graph_edges(session) == [rows[5]]
    ids = [e.id for e in store.get_session_energy_history(session)]
    assert ids == sorted(ids), "ids follow the order given"


@pytest.fixture
def two_stores(tmp_path: Path) -> Iterator[tuple[ps.SessionStore, ps.SessionStore]]:
    with ps.SessionStore.in_memory(sessions_dir=tmp_path) as bulk, ps.SessionStore.in_memory(
        sessions_dir=tmp_path
    ) as single:
        yield bulk, single


def _all_tables_batch(session_id: str, node_id: str, tag: str) -> list[ps.Row]:
    rows = edge_case_rows(session_id, node_id, tag)
    # Several rows for the tables that keep history, so order within a batch is observable.
    extra = [
        energy(node_id, 0.25, session_id),
        node(node_id, "Verified", session_id, v_total=0.5, children=["x", "y"]),
        ps.VerificationResultRow(session_id=session_id, node_id=node_id, result_json="{}",
                                 build_ok=True, degraded_reason=None),
        ps.ContextProvenanceRecord(session_id=session_id, node_id=node_id,
                                   context_package_id="ctx-2", structural_hashes=["é:ff"]),
    ]
    return [*rows.values(), *extra]


def test_every_table_reads_back_as_if_recorded_one_by_one(
    two_stores: tuple[ps.SessionStore, ps.SessionStore],
) -> None:
    """Each row has its single-row method's semantics: same getters, same values, same
    Merkle roots."""
    bulk, single = two_stores
    batch: list[ps.Row] = [new_session("s1"), new_session("s2")]
    batch += _all_tables_batch("s1", "n1", "a") + _all_tables_batch("s2", "n2", "b")
    batch += _all_tables_batch("s1", "n3", "c")
    assert bulk.record_many(batch) == len(batch)
    for row in batch:
        write_row(single, row)
    for table in READERS:
        expected = [r for r in batch if type(r).__table__ == table]
        assert read_table(bulk, table, expected) == read_table(single, table, expected), table
    for sid in ("s1", "s2"):
        assert bulk.state_root(sid) == single.state_root(sid)
        assert bulk.get_session(sid) == single.get_session(sid)
        assert bulk.verify_session(sid).ok


_EXAMPLE = itertools.count()


@given(
    st.lists(
        st.tuples(st.sampled_from(["energy", "node", "verify", "edge"]),
                  st.sampled_from(["n1", "n2", "n3"]),
                  st.floats(min_value=-1e6, max_value=1e6)),
        max_size=25,
    )
)
@PROPERTY
def test_record_many_equals_recording_each_row(
    two_stores: tuple[ps.SessionStore, ps.SessionStore], ops: list[tuple[str, str, float]]
) -> None:
    """Law: for any sequence of rows, record_many gives the same reads, ids order and Merkle
    state as calling the single-row methods in that order."""
    sid = f"s{next(_EXAMPLE)}"  # the stores are shared by the examples

    def build(op: str, nid: str, x: float) -> ps.Row:
        if op == "energy":
            return energy(nid, x, sid)
        if op == "node":
            return node(nid, "Completed" if x > 0 else "Failed", sid, v_total=abs(x))
        if op == "verify":
            return ps.VerificationResultRow(session_id=sid, node_id=nid, result_json=repr(x))
        return ps.TaskGraphEdgeRow(session_id=sid, parent_node_id=nid, child_node_id=repr(x))

    rows = [build(*op) for op in ops]
    bulk, single = two_stores
    for s in (bulk, single):
        s.create_session(new_session(sid))
    bulk.record_many(rows)
    for row in rows:
        write_row(single, row)
    assert bulk.get_session_energy_history(sid) == single.get_session_energy_history(sid)
    assert bulk.get_node_states(sid) == single.get_node_states(sid)
    assert bulk.get_latest_node_states(sid) == single.get_latest_node_states(sid)
    assert bulk.get_all_verification_results(sid) == single.get_all_verification_results(sid)
    assert bulk.get_task_graph_edges(sid) == single.get_task_graph_edges(sid)
    assert bulk.state_root(sid) == single.state_root(sid)
    assert [c.leaf_hash for c in bulk.get_commit_log(sid)] == [
        c.leaf_hash for c in single.get_commit_log(sid)
    ]


def test_unknown_session_names_it_and_writes_nothing(store: ps.SessionStore, session: str) -> None:
    before = row_counts(store)
    batch: list[ps.Row] = [
        energy("a", 1.0),
        node("a"),
        new_session("created-here"),
        energy("b", 2.0, "created-here"),
        ps.SheafValidationRow(session_id="ghost-1", node_id="a", validator_class="v",
                              passed=True),
        energy("c", 3.0, "ghost-2"),
    ]
    with pytest.raises(ps.SessionNotFoundError) as info:
        store.record_many(batch)
    assert info.value.session_id == "ghost-1", "the first unknown session in batch order"
    assert "ghost-1" in str(info.value)
    assert row_counts(store) == before, "nothing was written"
    assert store.get_session("created-here") is None


def test_sessions_created_in_the_batch_can_be_referenced(store: ps.SessionStore) -> None:
    batch = [
        energy("a", 0.5, "fresh"),  # before its session, in batch order
        new_session("fresh"),
        node("a", session_id="fresh"),
        ps.BudgetEnvelopeRow(session_id="fresh", max_steps=3),
    ]
    assert store.record_many(batch) == 4
    created = store.get_session("fresh")
    assert created is not None and created.task == "t"
    assert created.merkle_root == store.state_root("fresh"), "its node state was committed"
    assert store.get_energy_history("fresh", "a") == [batch[0]]
    assert store.get_latest_node_states("fresh") == [batch[2]]


def test_node_states_are_committed_to_the_merkle_log(store: ps.SessionStore, session: str) -> None:
    batch = [node(f"n{i % 3}", v_total=float(i)) for i in range(7)]
    store.record_many(batch)
    commits = store.get_commit_log(session)
    assert [c.seq for c in commits] == list(range(7))
    assert [c.node_id for c in commits] == [r.node_id for r in batch]
    session_row = store.get_session(session)
    assert session_row is not None and session_row.merkle_root == store.state_root(session)
    assert store.verify_session(session).ok
    assert [r.v_total for r in store.get_latest_node_states(session)] == [4.0, 5.0, 6.0]


def test_budget_rows_upsert_and_the_last_one_wins(store: ps.SessionStore, session: str) -> None:
    store.upsert_budget_envelope(ps.BudgetEnvelopeRow(session_id=session, max_steps=1))
    store.record_many([
        ps.BudgetEnvelopeRow(session_id=session, max_steps=5, steps_used=1),
        ps.BudgetEnvelopeRow(session_id=session, max_steps=None, steps_used=2),
    ])
    assert store.get_budget_envelope(session) == ps.BudgetEnvelopeRow(
        session_id=session, max_steps=None, steps_used=2
    )


def test_duplicate_keys_raise_and_write_nothing(store: ps.SessionStore, session: str) -> None:
    store.record_feature_charter(
        ps.FeatureCharterRow(charter_id="c1", session_id=session, scope_description="x")
    )
    before = row_counts(store)
    cases: dict[str, list[ps.Row]] = {
        "existing charter": [
            energy("a", 1.0),
            ps.FeatureCharterRow(charter_id="c1", session_id=session, scope_description="y"),
        ],
        "footprint twice in the batch": [
            node("a"),
            *[
                ps.RepairFootprintRow(footprint_id="f", session_id=session, node_id="a",
                                      revision_id="initial", attempt=1, bundle_json="{}",
                                      diagnosis="d")
                for _ in range(2)
            ],
        ],
        "existing session": [energy("a", 1.0), new_session(session)],
    }
    for case, batch in cases.items():
        with pytest.raises(ps.DuplicateRecordError):
            store.record_many(batch)
        assert row_counts(store) == before, case
    assert store.record_many([energy("a", 1.0)]) == 1, "the store is still usable"


def test_non_rows_are_rejected_before_anything_is_written(
    store: ps.SessionStore, session: str
) -> None:
    with pytest.raises(TypeError, match="row models"):
        store.record_many([energy("a", 1.0), {"node_id": "a"}])  # type: ignore[list-item]
    assert store.get_session_energy_history(session) == []


def test_any_iterable_is_accepted_and_empty_writes_nothing(
    store: ps.SessionStore, session: str
) -> None:
    def rows() -> Iterator[ps.Row]:
        for i in range(3):
            yield energy("a", float(i))

    assert store.record_many(rows()) == 3
    assert store.record_many(()) == 0
    assert store.record_many(iter([])) == 0
    assert [e.v_total for e in store.get_energy_history(session, "a")] == [0.0, 1.0, 2.0]


def test_one_statement_per_table_however_many_rows(
    store: ps.SessionStore, session: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch: list[ps.Row] = [energy(f"n{i % 50}", i / 7) for i in range(3000)]
    batch += [ps.SheafValidationRow(session_id=session, node_id=f"n{i}", validator_class="v",
                                    passed=i % 2 == 0) for i in range(500)]
    seen = spy_statements(store, monkeypatch)
    store.record_many(batch)
    inserts = [s for s in seen if s.startswith("INSERT")]
    assert len(inserts) == 2, inserts
    assert len(seen) <= 4, "plus one session check (and one id reservation for Arrow)"
    monkeypatch.undo()
    assert len(store.get_session_energy_history(session)) == 3000


def test_large_and_small_batches_store_identical_rows(
    two_stores: tuple[ps.SessionStore, ps.SessionStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Big batches take the Arrow path (when pyarrow is installed), small ones ``unnest``:
    both store exactly the same values, ids and order."""
    n = 64
    monkeypatch.setattr(bulk, "ARROW_MIN_ROWS", n)  # so a small test crosses the threshold
    rows: list[ps.Row] = []
    for i in range(n):
        edge = edge_case_rows("s", f"n{i % 7}", str(i))
        for table in ("budget_envelopes", "node_states"):  # not appended in bulk
            edge.pop(table)
        rows += edge.values()
        rows.append(ps.ContextProvenanceRecord(
            session_id="s", node_id=f"n{i}", context_package_id="ünï",
            structural_hashes=["a:ff", "é"], total_bytes=2**31 - 1))
    big, small = two_stores
    for s in two_stores:
        s.create_session(new_session("s"))
    seen = spy_statements(big, monkeypatch)
    big.record_many(rows)
    if bulk._HAS_ARROW:
        assert sum("_perspt_bulk_" in sql for sql in seen) == len(SEQUENCED_TABLES) - 1
    monkeypatch.undo()
    for start in range(0, len(rows), n // 4):
        small.record_many(rows[start:start + n // 4])
    for model in ps.ROW_MODELS.values():
        mapping = table_map(model)
        key = "id" if mapping.table in SEQUENCED_TABLES else mapping.columns[0]
        sql = f"SELECT {', '.join(mapping.columns)}, {key} FROM {mapping.table} ORDER BY {key}"
        assert big.sql(sql).fetchall() == small.sql(sql).fetchall(), mapping.table
    assert big.get_all_sheaf_validations("s") == small.get_all_sheaf_validations("s")
    assert len(big.get_all_sheaf_validations("s")) == n


def test_a_rolled_back_transaction_undoes_record_many(
    store: ps.SessionStore, session: str
) -> None:
    with pytest.raises(RuntimeError, match="boom"), store.transaction():
        store.record_energy(energy("a", 1.0))
        store.record_many([energy("a", 2.0), node("a")])
        raise RuntimeError("boom")
    assert store.get_session_energy_history(session) == []
    assert store.get_node_states(session) == []
    assert store.get_commit_log(session) == []
    store.record_many([node("a")])
    assert store.verify_session(session).ok, "the commit log is consistent after a rollback"


def test_an_unknown_session_does_not_spoil_an_enclosing_transaction(
    store: ps.SessionStore, session: str
) -> None:
    """The session check runs before any write, so a caller may catch it and go on."""
    with store.transaction():
        store.record_energy(energy("a", 1.0))
        with pytest.raises(ps.SessionNotFoundError):
            store.record_many([energy("a", 2.0, "ghost")])
        store.record_many([energy("a", 3.0)])
    assert [e.v_total for e in store.get_energy_history(session, "a")] == [1.0, 3.0]


def test_lineage_rows_are_checked_like_the_single_write(store: ps.SessionStore) -> None:
    """``session_id`` is optional on lineage rows; when given, the session must exist."""
    unscoped = ps.BranchLineageRow(lineage_id="l", parent_branch_id="p", child_branch_id="c")
    assert store.record_many([unscoped]) == 1
    assert store.get_child_branches("p") == ["c"]
    scoped = ps.BranchLineageRow(lineage_id="l2", parent_branch_id="p", child_branch_id="d",
                                 session_id="not-a-session")
    with pytest.raises(ps.SessionNotFoundError, match="not-a-session"):
        store.record_many([scoped])
    assert store.get_child_branches("p") == ["c"]


def test_read_only_and_closed_stores_refuse(db_path: Path) -> None:
    ps.SessionStore.open(db_path).close()
    with ps.SessionStore.open_read_only(db_path) as reader:
        with pytest.raises(ps.ReadOnlyStoreError):
            reader.record_many([energy("a", 1.0)])
    closed = ps.SessionStore.open(db_path)
    closed.close()
    with pytest.raises(ps.StoreClosedError):
        closed.record_many([energy("a", 1.0)])

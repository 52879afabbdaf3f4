"""Read-only means read-only: opening a file read-only never changes a byte of it (nor
creates anything beside it), every write method raises ``ReadOnlyStoreError``, and no
schema DDL runs.

Every public method of ``SessionStore`` is classified below as a read, a write or
lifecycle; a new method fails ``test_every_public_method_is_classified`` until it is, so a
new write method cannot escape these tests.
"""

from __future__ import annotations

import hashlib
import inspect
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import perspt_store as ps
from upstream_files import WRITE_METHOD, edge_case_rows, write_row

S = "ro-session"
N = "ro-node"


def _rows(tag: str) -> dict[str, ps.Row]:
    return edge_case_rows(S, N, tag)


def populate(path: Path) -> None:
    """A file with a session, one row in every table and a few commits."""
    with ps.SessionStore.open(path, publish_interval=None) as store:
        store.create_session(ps.SessionRecord(session_id=S, task="t", working_dir="/w"))
        for table, row in _rows("a").items():
            if table == "plan_revisions":
                row = row.model_copy(update={"sequence": 5})
            write_row(store, row)
            if table == "node_states":
                store.record_node_state(row.model_copy(update={"state": "DONE"}))
        store.record_plan_revision(
            ps.PlanRevisionRow(
                revision_id="rev-active", session_id=S, sequence=1, plan_json="{}", reason="r"
            )
        )


def tree(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` (recursively) -> sha256 of its bytes."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "dir"
        for p in sorted(directory.rglob("*"))
    }


# --- the methods -----------------------------------------------------------------------------

ReadCall = Callable[[ps.SessionStore], Any]


def _consistent_read(store: ps.SessionStore) -> None:
    with store.consistent_read():
        store.get_session(S)
        store.get_latest_node_states(S)


READS: dict[str, ReadCall] = {
    "checkpoint": lambda s: s.checkpoint(S),
    "consistency_proof": lambda s: s.consistency_proof(S, 1),
    "consistent_read": lambda s: _consistent_read(s),
    "count_lineage_rewrites": lambda s: s.count_lineage_rewrites(S, N),
    "count_sessions": lambda s: s.count_sessions(),
    "get_active_plan_revision": lambda s: s.get_active_plan_revision(S),
    "get_all_repair_footprints": lambda s: s.get_all_repair_footprints(S),
    "get_all_review_outcomes": lambda s: s.get_all_review_outcomes(S),
    "get_all_sheaf_validations": lambda s: s.get_all_sheaf_validations(S),
    "get_all_verification_results": lambda s: s.get_all_verification_results(S),
    "get_artifact_bundle": lambda s: s.get_artifact_bundle(S, N),
    "get_branch_flushes": lambda s: s.get_branch_flushes(S),
    "get_branch_lineage": lambda s: s.get_branch_lineage(S),
    "get_budget_envelope": lambda s: s.get_budget_envelope(S),
    "get_child_branches": lambda s: s.get_child_branches("p-a"),
    "get_commit_log": lambda s: s.get_commit_log(S),
    "get_context_provenance": lambda s: s.get_context_provenance(S, N),
    "get_correction_attempts": lambda s: s.get_correction_attempts(S, N),
    "get_energy_history": lambda s: s.get_energy_history(S, N),
    "get_escalation_reports": lambda s: s.get_escalation_reports(S),
    "get_feature_charter": lambda s: s.get_feature_charter(S),
    "get_global_llm_summary": lambda s: s.get_global_llm_summary(),
    "get_interface_seals": lambda s: s.get_interface_seals(S, N),
    "get_latest_node_states": lambda s: s.get_latest_node_states(S),
    "get_latest_review_outcome": lambda s: s.get_latest_review_outcome(S, N),
    "get_live_branches_for_parent": lambda s: s.get_live_branches_for_parent(S, ""),
    "get_llm_requests": lambda s: s.get_llm_requests(S),
    "get_node_states": lambda s: s.get_node_states(S),
    "get_plan_revisions": lambda s: s.get_plan_revisions(S),
    "get_provisional_branches": lambda s: s.get_provisional_branches(S),
    "get_repair_footprints": lambda s: s.get_repair_footprints(S, N),
    "get_review_outcomes": lambda s: s.get_review_outcomes(S, N),
    "get_rewrite_records": lambda s: s.get_rewrite_records(S),
    "get_session": lambda s: s.get_session(S),
    "get_session_correction_attempts": lambda s: s.get_session_correction_attempts(S),
    "get_session_dir": lambda s: s.get_session_dir(S),
    "get_session_energy_history": lambda s: s.get_session_energy_history(S),
    "get_session_steps": lambda s: s.get_session_steps(S),
    "get_sheaf_validations": lambda s: s.get_sheaf_validations(S, N),
    "get_step_timeline": lambda s: s.get_step_timeline(S, N),
    "get_structural_digests": lambda s: s.get_structural_digests(S, N),
    "get_task_graph_edges": lambda s: s.get_task_graph_edges(S),
    "get_verification_result": lambda s: s.get_verification_result(S, N),
    "has_interface_seals": lambda s: s.has_interface_seals(S, N),
    "inclusion_proof": lambda s: s.inclusion_proof(S, 0),
    "list_recent_sessions": lambda s: s.list_recent_sessions(10),
    "list_sessions_paginated": lambda s: s.list_sessions_paginated(10, 0),
    "load_session_snapshot": lambda s: s.load_session_snapshot(S),
    "log_root": lambda s: s.log_root(S),
    "node_review_summary": lambda s: s.node_review_summary(S, N),
    "session_summary": lambda s: s.session_summary(S),
    "sql": lambda s: s.sql("SELECT count(*) FROM sessions").fetchall(),
    "state_root": lambda s: s.state_root(S),
    "verify_session": lambda s: s.verify_session(S),
    "rollback_plan": lambda s: s.rollback_plan(S, to_seq=0),
    "frame": lambda s: s.frame("energy_history").fetchall(),
    "energy_frame": lambda s: s.energy_frame(S).fetchall(),
    "llm_frame": lambda s: s.llm_frame(S).fetchall(),
    "node_states_frame": lambda s: s.node_states_frame(S).fetchall(),
    "steps_frame": lambda s: s.steps_frame(S).fetchall(),
}


def _transaction(store: ps.SessionStore) -> None:
    with store.transaction():
        pass


WriteCall = Callable[[ps.SessionStore], Any]
WRITES: dict[str, WriteCall] = {
    **{
        method: (lambda m, t: lambda s: getattr(s, m)(_rows("b")[t]))(method, table)
        for table, method in WRITE_METHOD.items()
        if table != "sessions"
    },
    "create_session": lambda s: s.create_session(
        ps.SessionRecord(session_id="new", task="t", working_dir="/w")
    ),
    "create_session_dir": lambda s: s.create_session_dir(S),
    "record_task_graph_edge_once": lambda s: s.record_task_graph_edge_once(
        _rows("b")["task_graph_edges"]
    ),
    "record_many": lambda s: s.record_many(list(_rows("c").values())),
    "update_merkle_root": lambda s: s.update_merkle_root(S, b"\x01" * 32),
    "update_session_status": lambda s: s.update_session_status(S, "DONE"),
    "update_branch_state": lambda s: s.update_branch_state("br-a", "merged"),
    "flush_branches_for_parent": lambda s: s.flush_branches_for_parent(S, ""),
    "supersede_plan_revision": lambda s: s.supersede_plan_revision("rev-active"),
    "resolve_repair_footprint": lambda s: s.resolve_repair_footprint("fp-a"),
    "replace_active_plan": lambda s: s.replace_active_plan(
        S,
        ps.PlanRevisionRow(
            revision_id="rev-new", session_id=S, sequence=10, plan_json="{}", reason="r"
        ),
    ),
    "rollback": lambda s: s.rollback(S, to_seq=0),
    "transaction": _transaction,
}
WRITE_SQL = (
    "INSERT INTO sessions (session_id, task, working_dir) VALUES ('x', 't', '/w')",
    "UPDATE sessions SET status = 'x'",
    "DELETE FROM energy_history",
    "CREATE TABLE evil (a INTEGER)",
    "DROP TABLE sessions",
    "ALTER TABLE sessions ADD COLUMN evil INTEGER",
    "SELECT nextval('seq_energy_history_id')",
)
LIFECYCLE = {
    "close",
    "flush",  # commits buffered writes; a read-only store buffers none (a no-op)
    "default_db_path",
    "open",
    "open_default",
    "open_read_only",
    "in_memory",
}


def test_every_public_method_is_classified() -> None:
    public = {
        name
        for name, value in inspect.getmembers(ps.SessionStore)
        if not name.startswith("_") and callable(value)
    }
    assert public == set(READS) | set(WRITES) | LIFECYCLE
    assert not set(READS) & set(WRITES)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "perspt.db"
    populate(path)
    return path


@pytest.fixture
def populated(template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the populated file, alone in its directory."""
    path = tmp_path / "data" / "perspt.db"
    path.parent.mkdir()
    shutil.copyfile(template, path)
    return path


def test_reading_everything_read_only_changes_no_byte_and_creates_nothing(
    populated: Path,
) -> None:
    before = tree(populated.parent)
    with ps.SessionStore.open_read_only(populated) as store:
        assert store.read_only
        for name, call in READS.items():
            call(store)  # every read works on a read-only store
            assert tree(populated.parent) == before, f"{name} changed the directory"
    assert tree(populated.parent) == before


def test_every_write_method_raises_read_only_store_error_and_writes_nothing(
    populated: Path,
) -> None:
    before = tree(populated.parent)
    count = "SELECT (SELECT count(*) FROM sessions), (SELECT count(*) FROM node_states)"
    with ps.SessionStore.open_read_only(populated) as store:
        counts = store.sql(count).fetchall()
        for method, call in WRITES.items():
            with pytest.raises(ps.ReadOnlyStoreError):
                call(store)
            assert store.sql(count).fetchall() == counts, method  # still usable, unchanged
        for statement in WRITE_SQL:
            with pytest.raises(ps.ReadOnlyStoreError):
                store.sql(statement)
        assert not store.in_transaction
    assert tree(populated.parent) == before


def test_write_methods_would_work_on_the_same_file_read_write(populated: Path) -> None:
    """The refusals above come from read-only mode, not from bad arguments."""
    with ps.SessionStore.open(populated, publish_interval=None) as store:
        # replace_active_plan first (the edge-case revision has the highest sequence);
        # record_many last (it repeats keys the single writes use).
        order = sorted(WRITES, key=lambda m: (m != "replace_active_plan", m == "record_many"))
        for method in order:
            WRITES[method](store)


def test_read_only_runs_no_schema_ddl_on_an_older_file(template: Path, tmp_path: Path) -> None:
    """A file missing the tables of a later version stays as it is: the read-only store
    reports the file's version and reads what exists."""
    path = tmp_path / "old.db"
    shutil.copyfile(template, path)
    import duckdb

    with duckdb.connect(str(path)) as conn:  # make it look like schema version 2
        conn.execute("DROP TABLE merkle_root_overrides")
        conn.execute("DROP VIEW merkle_log")
        conn.execute("DROP TABLE merkle_log_detached")
        conn.execute("UPDATE perspt_store_meta SET value = '2' WHERE key = 'schema_version'")
    before = tree(tmp_path)
    with ps.SessionStore.open_read_only(path) as store:
        assert store.schema_version == 2
        assert store.get_session(S) is not None
        assert len(store.get_node_states(S)) == 2
        tables = {t for (t,) in store.sql("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert "merkle_log" not in tables
    assert tree(tmp_path) == before


def test_a_missing_file_read_only_raises_store_error_and_creates_nothing(
    tmp_path: Path,
) -> None:
    with pytest.raises(ps.StoreError, match="no database"):
        ps.SessionStore.open_read_only(tmp_path / "sub" / "missing.db")
    assert list(tmp_path.iterdir()) == []


def test_a_newer_schema_opens_read_only_and_changes_nothing(populated: Path) -> None:
    import duckdb

    with duckdb.connect(str(populated)) as conn:
        conn.execute("UPDATE perspt_store_meta SET value = '999' WHERE key = 'schema_version'")
    before = tree(populated.parent)
    with ps.SessionStore.open(populated) as store:  # read-write requested
        assert store.read_only
        assert store.publisher is None
        assert store.get_session(S) is not None
        with pytest.raises(ps.SchemaVersionError):
            store.record_energy(_rows("e")["energy_history"])
        with pytest.raises(ps.SchemaVersionError):
            store.record_many([_rows("e")["energy_history"]])
    assert tree(populated.parent) == before


# --- sql() on a read-only store: every writing form is refused by the engine ----------------

SNEAKY_WRITES = (
    "WITH d AS (DELETE FROM energy_history RETURNING 1) SELECT count(*) FROM d",
    "WITH u AS (UPDATE sessions SET status = 'x' RETURNING 1) SELECT count(*) FROM u",
    "WITH i AS (INSERT INTO sessions (session_id, task, working_dir) VALUES ('z', 't', '/w') "
    "RETURNING 1) SELECT * FROM i",
    "SELECT 1; DELETE FROM energy_history",
    "COMMIT; DELETE FROM energy_history",
    "BEGIN TRANSACTION; DELETE FROM energy_history; COMMIT",
    "ROLLBACK",
    "CHECKPOINT",
    "COPY energy_history FROM 'x.csv'",
    "INSERT INTO energy_history SELECT * FROM energy_history",
    "TRUNCATE energy_history",
    "DELETE FROM energy_history",
    "UPDATE sessions SET status = 'x'",
    "MERGE INTO sessions USING (SELECT 1) s(a) ON false WHEN NOT MATCHED THEN DO NOTHING",
    "CREATE TABLE evil AS SELECT 1",
    "CREATE OR REPLACE MACRO evil() AS 1",
    "CREATE SEQUENCE evil_seq",
    "DROP TABLE energy_history",
    "ALTER TABLE sessions ADD COLUMN evil INTEGER",
    "SELECT nextval('seq_energy_history_id')",
    "PRAGMA enable_checkpoint_on_shutdown",
    "SET threads = 1",
    "DETACH DATABASE perspt",
    "USE memory",
    "INSTALL sqlite",
    "LOAD sqlite",
    "CALL checkpoint()",
    "VACUUM",
    # EXPLAIN ANALYZE runs the statement it explains.
    "EXPLAIN ANALYZE COPY sessions TO 'x.csv'",
    "EXPLAIN ANALYZE DELETE FROM energy_history",
    "EXPLAIN ANALYZE SET GLOBAL autoinstall_known_extensions = true",
    "EXPLAIN ANALYZE INSTALL httpfs",
    "EXPLAIN ANALYZE VACUUM",
    # Table functions that write, called from a SELECT.
    "SELECT * FROM checkpoint()",
    "SELECT * FROM (SELECT * FROM force_checkpoint()) AS c",
)


def _fingerprint(store: ps.SessionStore) -> list[Any]:
    return store.sql(
        "SELECT (SELECT count(*) FROM sessions), (SELECT count(*) FROM energy_history), "
        "(SELECT list(status ORDER BY session_id) FROM sessions), "
        "(SELECT count(*) FROM duckdb_tables()), (SELECT count(*) FROM duckdb_sequences())"
    ).fetchall()


def _refuses_every_sneaky_write(store: ps.SessionStore, tmp_path: Path) -> None:
    before = _fingerprint(store)
    wrote = []
    for statement in SNEAKY_WRITES:
        try:
            store.sql(statement.replace("x.csv", str(tmp_path / "x.csv"))).fetchall()
        except ps.ReadOnlyStoreError:
            pass
        except ps.StoreError as exc:
            wrote.append(f"{statement!r} raised {exc!r}, not ReadOnlyStoreError")
        else:
            wrote.append(f"{statement!r} ran")
        assert _fingerprint(store) == before, statement
    assert wrote == []
    assert store.sql("SELECT count(*) FROM sessions").fetchall() == [(before[0][0],)]


def test_a_read_only_view_of_a_file_this_process_writes_refuses_every_write(
    populated: Path, tmp_path: Path
) -> None:
    with ps.SessionStore.open(populated, publish_interval=None) as writer:
        with ps.SessionStore.open_read_only(populated) as view:
            _refuses_every_sneaky_write(view, tmp_path)
            writer.record_energy(_rows("f")["energy_history"])  # the view stays live
            assert view.get_energy_history(S, N)[-1] == writer.get_energy_history(S, N)[-1]
        assert writer.verify_session(S).ok


def test_a_read_only_file_refuses_every_write(populated: Path, tmp_path: Path) -> None:
    before = tree(populated.parent)
    with ps.SessionStore.open_read_only(populated) as store:
        _refuses_every_sneaky_write(store, tmp_path)
    assert tree(populated.parent) == before

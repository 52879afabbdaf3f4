"""Insertion order is a stored fact: an UPDATE never moves a row.

DuckDB gives an updated row a new ``rowid``, so ordering by it put a superseded plan
revision last. The four tables without an ``id`` sequence (sessions, feature charters, plan
revisions, budget envelopes) carry a ``row_order`` column drawn from a sequence instead, and
the store, the frames and the lake order by it.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

import perspt_store as ps
from conftest import add_session
from perspt_store import schema

S = "order"


def _revision(revision_id: str, sequence: int = 1) -> ps.PlanRevisionRow:
    return ps.PlanRevisionRow(
        revision_id=revision_id, session_id=S, sequence=sequence, plan_json="{}", reason="r"
    )


def test_superseding_a_revision_keeps_its_place(store: ps.SessionStore) -> None:
    add_session(store, S)
    with store.transaction():  # one created_at for all three
        for revision_id in ("r1", "r2", "r3"):
            store.record_plan_revision(_revision(revision_id))
    assert [r.revision_id for r in store.get_plan_revisions(S)] == ["r1", "r2", "r3"]
    store.supersede_plan_revision("r1")
    store.supersede_plan_revision("r2")
    assert [r.revision_id for r in store.get_plan_revisions(S)] == ["r1", "r2", "r3"]
    frame = store.frame("plan_revisions").fetchall()
    assert [row[0] for row in frame] == ["r1", "r2", "r3"]


def test_updating_a_session_keeps_its_place_among_ties(store: ps.SessionStore) -> None:
    with store.transaction():  # one created_at for all three
        for session_id in ("a", "b", "c"):
            add_session(store, session_id)
    newest_first = ["c", "b", "a"]
    assert [s.session_id for s in store.list_recent_sessions(10)] == newest_first
    store.update_session_status("a", "DONE")
    store.update_merkle_root("b", bytes(32))
    assert [s.session_id for s in store.list_recent_sessions(10)] == newest_first
    assert [s.session_id for s in store.list_sessions_paginated(1, 1)] == ["b"]


def test_an_upserted_envelope_and_the_newest_charter_keep_their_places(
    store: ps.SessionStore,
) -> None:
    add_session(store, S)
    with store.transaction():
        for charter_id in ("c1", "c2"):
            store.record_feature_charter(
                ps.FeatureCharterRow(charter_id=charter_id, session_id=S, scope_description="x")
            )
    store.sql("UPDATE feature_charters SET scope_description = 'y' WHERE charter_id = 'c2'")
    store.sql("UPDATE feature_charters SET scope_description = 'z' WHERE charter_id = 'c1'")
    charter = store.get_feature_charter(S)
    assert charter is not None and charter.charter_id == "c2"


def test_the_order_column_is_filled_for_rows_of_an_older_file(tmp_path: Path) -> None:
    """A file of schema version 3 (before row_order) migrates with its rows in rowid order,
    and new rows come after them."""
    path = tmp_path / "perspt.db"
    with duckdb.connect(str(path)) as conn:
        conn.execute(schema.META_SQL)
        for migration in schema.MIGRATIONS[:3]:
            migration(conn, legacy=False)
        conn.execute(f"INSERT INTO {schema.META_TABLE} VALUES ('schema_version', '3')")
        conn.execute("BEGIN TRANSACTION")
        for session_id in ("a", "b", "c"):
            conn.execute(
                "INSERT INTO sessions (session_id, task, working_dir) VALUES (?, 't', '/w')",
                [session_id],
            )
        conn.execute("COMMIT")
    with ps.SessionStore.open(path, publish_interval=None) as store:
        assert store.schema_version == schema.SCHEMA_VERSION
        in_order = store.sql("SELECT session_id, row_order FROM sessions ORDER BY row_order")
        assert in_order.fetchall() == [("a", 1), ("b", 2), ("c", 3)]
        add_session(store, "d")
        assert [s.session_id for s in store.list_recent_sessions(2)] == ["d", "c"]
        store.update_session_status("a", "DONE")
        assert [s.session_id for s in store.list_recent_sessions(4)][1:] == ["c", "b", "a"]


def test_a_lake_import_draws_new_row_order_in_the_lakes_order(tmp_path: Path) -> None:
    from perspt_store.lake import export_parquet, import_lake

    lake = tmp_path / "lake"
    with ps.SessionStore.open(tmp_path / "a.db", publish_interval=None) as source:
        with source.transaction():  # one created_at: only the stored order tells them apart
            for session_id in ("x1", "x2", "x3"):
                add_session(source, session_id)
                for revision in ("r1", "r2"):
                    source.record_plan_revision(
                        ps.PlanRevisionRow(
                            revision_id=f"{session_id}-{revision}", session_id=session_id,
                            sequence=1, plan_json="{}", reason="r",
                        )
                    )
        source.supersede_plan_revision("x1-r1")
        assert export_parquet(source, lake).ok
    with ps.SessionStore.open(tmp_path / "b.db", publish_interval=None) as target:
        add_session(target, "mine")
        assert import_lake(target, lake).ok
        assert import_lake(target, lake).skipped == ["x1", "x2", "x3"]  # identical: skipped
        orders = target.sql("SELECT session_id, row_order FROM sessions ORDER BY row_order")
        assert [sid for sid, _ in orders.fetchall()] == ["mine", "x1", "x2", "x3"]
        assert len({order for _, order in orders.fetchall()}) == 4
        revisions = [r.revision_id for r in target.get_plan_revisions("x1")]
        assert revisions == ["x1-r1", "x1-r2"]

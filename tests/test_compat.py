"""Files stay readable by upstream's engine: new files use DuckDB 1.5's storage format."""

from __future__ import annotations

from pathlib import Path

import duckdb

import perspt_store as ps


def storage_version(path: Path) -> str:
    conn = duckdb.connect(str(path), read_only=True)
    try:
        ((tags,),) = conn.execute(
            "SELECT tags FROM duckdb_databases() WHERE database_name = current_database()"
        ).fetchall()
    finally:
        conn.close()
    return str(tags["storage_version"])


def test_a_new_file_is_created_in_upstreams_storage_format(tmp_path: Path) -> None:
    path = tmp_path / "perspt.db"
    with ps.SessionStore.open(path) as store:
        store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
        store.record_node_state(ps.NodeStateRecord(session_id="s", node_id="n", state="ok"))
    assert storage_version(path) == "v1.5.0+"
    with ps.SessionStore.open(path) as store:  # reopening and writing keeps the format
        store.record_node_state(ps.NodeStateRecord(session_id="s", node_id="n", state="ok2"))
        store.sql("CHECKPOINT").fetchall()
    assert storage_version(path) == "v1.5.0+"

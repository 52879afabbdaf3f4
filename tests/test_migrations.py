"""Migrations from each earlier schema version of ours.

``schema.MIGRATIONS`` is append-only: version 1 is upstream 0.6.2's layout, version 2 adds
our changes (DOUBLE energies, ``branch_lineage.session_id``, the meta table's legacy marks),
version 3 the Merkle commit log. A file written at version k is built here by applying only
the first k migrations, exactly as that version of the library did, and filled with real
rows; opening it with the current library must upgrade it in place, keep every row exactly,
backfill the commit log, and record the new version. (Upstream 0.5-era and 0.6.2 files, and
a failed migration of one, are covered in test_upstream_files.py and test_schema.py.)
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import duckdb
import pytest

import perspt_store as ps
from perspt_store import schema
from perspt_store._mapping import table_map
from upstream_files import edge_case_rows, group_like_readers, read_table

A = "session-a"
B = "session-b"
SEAL = hashlib.sha256(b"an interface seal").digest()


def node_rows() -> list[ps.NodeStateRecord]:
    """Interleaved snapshots of two sessions (several per node)."""
    return [
        ps.NodeStateRecord(
            node_id=f"n{k % 3}",
            session_id=(A, B)[k % 2],
            state=("PENDING", "RUNNING", "DONE")[k % 3],
            v_total=k / 3,
            attempt_count=k,
            children=[f"c{k}"] if k % 2 else None,
            goal="" if k == 4 else f"goal {k}",
        )
        for k in range(9)
    ]


def other_rows() -> dict[str, ps.Row]:
    return {t: r for t, r in edge_case_rows(A, "n0", "old").items() if t != "node_states"}


def build(path: Path, version: int) -> None:
    """A file as the library at schema ``version`` left it, with rows in every table."""
    conn = duckdb.connect(str(path))
    conn.execute("BEGIN TRANSACTION")
    conn.execute(schema.META_SQL)
    for number, migration in enumerate(schema.MIGRATIONS[:version], start=1):
        migration(conn, legacy=False)
        conn.execute(
            f"INSERT INTO {schema.META_TABLE} VALUES ('schema_version', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [str(number)],
        )
    conn.execute("COMMIT")
    for session_id, root in ((A, None), (B, SEAL)):  # B's root was set by update_merkle_root
        insert(
            conn,
            ps.SessionRecord(session_id=session_id, task="t", working_dir="/w", merkle_root=root),
        )
    for row in node_rows():
        insert(conn, row)
    for row in other_rows().values():
        insert(conn, row, version)
    conn.close()


def insert(conn: duckdb.DuckDBPyConnection, row: ps.Row, version: int = 3) -> None:
    mapping = table_map(type(row))
    columns, values = list(mapping.columns), mapping.encode(row)
    if isinstance(row, ps.BranchLineageRow) and version < 2:  # no session_id column yet
        columns, values = columns[:-1], values[:-1]
    marks = ", ".join("?" for _ in columns)
    conn.execute(f"INSERT INTO {mapping.table} ({', '.join(columns)}) VALUES ({marks})", values)


def dump(path: Path) -> dict[str, Any]:
    """Every table's rows (and the schema version) on a raw read-only connection."""
    with duckdb.connect(str(path), read_only=True) as conn:
        tables = [
            t
            for (t,) in conn.execute(
                "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' ORDER BY 1"
            ).fetchall()
        ]
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}


@pytest.mark.parametrize("version", [1, 2])
def test_a_file_of_an_earlier_version_upgrades_in_place_and_keeps_every_row(
    tmp_path: Path, version: int
) -> None:
    path = tmp_path / f"v{version}.db"
    build(path, version)
    before = dump(path)
    assert before[schema.META_TABLE] == [("schema_version", str(version))]
    assert "merkle_log" not in before
    with ps.SessionStore.open(path, publish_interval=None) as store:
        assert store.schema_version == schema.SCHEMA_VERSION
        # Every row reads back exactly: our rows were never upstream's (no legacy decoding).
        assert store.get_session(A).merkle_root is None  # a missing root stays missing
        assert store.get_node_states(A) == [r for r in node_rows() if r.session_id == A]
        assert store.get_node_states(B) == [r for r in node_rows() if r.session_id == B]
        for table, row in other_rows().items():
            want = row
            if isinstance(row, ps.BranchLineageRow) and version < 2:
                want = row.model_copy(update={"session_id": None})
                assert store.get_child_branches(row.parent_branch_id) == [row.child_branch_id]
                continue
            assert read_table(store, table, [want]) == group_like_readers(table, [want]), table
        # The commit log is backfilled in insertion order, one leaf per node state...
        for session_id in (A, B):
            log = store.get_commit_log(session_id)
            states = store.get_node_states(session_id)
            assert [c.node_id for c in log] == [s.node_id for s in states]
            assert {c.kind for c in log} == {"backfill"}
            report = store.verify_session(session_id)
            assert report.ok, report.problems
        # ... B's seal hash and A's missing root are kept, and reported as notes (the roots
        # were not set by commits), not as corruption.
        assert store.get_session(B).merkle_root == SEAL  # type: ignore[union-attr]
        assert store.verify_session(B).notes
        assert store.verify_session(A).notes
        # Writing goes on: ids continue, the log continues from the backfill.
        top = max(s.id for sid in (A, B) for s in store.get_node_states(sid))  # type: ignore[type-var]
        commit = store.record_node_state(
            ps.NodeStateRecord(node_id="n9", session_id=A, state="NEW")
        )
        assert commit.seq == len(log := store.get_commit_log(A)) - 1
        assert store.get_node_states(A)[-1].id > top  # type: ignore[operator]
        assert store.get_session(A).merkle_root == commit.state_root  # type: ignore[union-attr]
        assert store.verify_session(A).ok
    after = dump(path)
    assert after[schema.META_TABLE] == [("schema_version", str(schema.SCHEMA_VERSION))]
    for table, rows in before.items():  # nothing lost: every old row is still there
        if table not in (schema.META_TABLE, "sessions", "node_states"):
            # Columns added since (row_order) come after the old ones.
            kept = [row[: len(rows[0])] for row in after[table][: len(rows)]] if rows else []
            assert kept == rows or table == "branch_lineage", table


@pytest.mark.parametrize("version", [1, 2])
def test_the_backfilled_log_equals_the_log_the_current_library_writes(
    tmp_path: Path, version: int
) -> None:
    """Same rows, same order: the same leaves, log roots and state roots as if the rows had
    been recorded one by one today."""
    path = tmp_path / "old.db"
    build(path, version)
    with (
        ps.SessionStore.open(path, publish_interval=None) as migrated,
        ps.SessionStore.in_memory() as fresh,
    ):
        for session_id in (A, B):
            fresh.create_session(
                ps.SessionRecord(session_id=session_id, task="t", working_dir="/w")
            )
        for row in node_rows():
            fresh.record_node_state(row)
        for session_id in (A, B):
            old, new = migrated.get_commit_log(session_id), fresh.get_commit_log(session_id)
            assert [(c.leaf_hash, c.state_root, c.log_root) for c in old] == [
                (c.leaf_hash, c.state_root, c.log_root) for c in new
            ]
            assert migrated.state_root(session_id) == fresh.state_root(session_id)


def test_reopening_an_upgraded_file_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    build(path, 1)
    ps.SessionStore.open(path, publish_interval=None).close()
    once = dump(path)
    ps.SessionStore.open(path, publish_interval=None).close()
    assert dump(path) == once


def test_a_failed_upgrade_of_our_file_rolls_back_and_leaves_it_as_it_was(tmp_path: Path) -> None:
    """A version-2 file holding a node state the backfill cannot read (a NULL attempt count,
    written behind the library's back): migration 3 fails, and the file stays at version 2
    with every row, openable read-only."""
    path = tmp_path / "v2.db"
    build(path, 2)
    with duckdb.connect(str(path)) as conn:
        conn.execute(
            "INSERT INTO node_states (node_id, session_id, state, attempt_count) "
            "VALUES ('bad', ?, 'S', NULL)",
            [A],
        )
    before = dump(path)
    with pytest.raises(ps.SchemaVersionError, match="could not migrate"):
        ps.SessionStore.open(path, publish_interval=None)
    assert dump(path) == before
    assert not path.with_name(path.name + ".snapshot").exists()
    with ps.SessionStore.open_read_only(path) as store:
        assert store.schema_version == 2
        assert store.get_session(A) is not None
        assert store.get_energy_history(A, "n0") == [other_rows()["energy_history"]]
    # Repaired, it upgrades.
    with duckdb.connect(str(path)) as conn:
        conn.execute("UPDATE node_states SET attempt_count = 0 WHERE node_id = 'bad'")
    with ps.SessionStore.open(path, publish_interval=None) as store:
        assert store.schema_version == schema.SCHEMA_VERSION
        assert store.verify_session(A).ok

"""Schema 5: a node-state row carries its own commit, and ``merkle_log`` is a view over them.

The migration from a schema-4 file (where ``merkle_log`` was a table), the packed entry's
round trip through the view, entries written by hand, and the guard that replaced the log's
primary key for two handles on one file.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import log_tamper
import perspt_store as ps
from conftest import add_session
from perspt_store import schema
from perspt_store._mapping import table_map
from perspt_store.commitlog import COMMIT_KINDS, NodeCommit
from perspt_store.store.commits import INSERT_LOG_SQL, SessionLog, log_rows, pack_commit

LOG = "SELECT * FROM merkle_log ORDER BY session_id, seq"


def node(session_id: str, node_id: str, state: str = "Running") -> ps.NodeStateRecord:
    return ps.NodeStateRecord(node_id=node_id, session_id=session_id, state=state, goal="g")


def write_schema_4(path: Path, sessions: tuple[str, ...] = ("s1", "s2")) -> None:
    """A file as the store wrote it at schema 4: rows from before the log existed (their
    entries backfilled by migration 3, with the migration's time), then commits written the
    schema-4 way: the row, its ``merkle_log`` entry and the root in one transaction."""
    mapping = table_map(ps.NodeStateRecord)
    conn = duckdb.connect(str(path))
    try:
        conn.execute(schema.META_SQL)
        for migration in schema.MIGRATIONS[:2]:
            migration(conn, legacy=False)
        # The table as releases before schema 5 created it: with a foreign key.
        conn.execute(schema.MERKLE_LOG_SQL.replace(
            "PRIMARY KEY (session_id, seq)",
            "PRIMARY KEY (session_id, seq), "
            "FOREIGN KEY (session_id) REFERENCES sessions(session_id)"))
        for sid in sessions:
            conn.execute(
                "INSERT INTO sessions (session_id, task, working_dir) VALUES (?, 't', '/w')", [sid]
            )
            for i in range(3):  # before the log: backfilled below
                conn.execute(mapping.insert_sql, mapping.encode(node(sid, f"n{i}", "Old")))
        conn.execute("SELECT 1 FROM range(10000)").fetchall()  # the backfill comes later
        for migration in schema.MIGRATIONS[2:4]:
            migration(conn, legacy=False)
        conn.execute("INSERT INTO perspt_store_meta VALUES ('schema_version', '4')")
        for sid in sessions:
            log = SessionLog.from_entries(conn.execute(
                "SELECT node_id, kind, leaf_hash FROM merkle_log WHERE session_id = ? "
                "ORDER BY seq", [sid]).fetchall())
            for i in range(4):
                record = node(sid, f"n{i % 2}", f"state {i}")
                conn.execute("BEGIN")
                ((row_id,),) = conn.execute(
                    mapping.insert_sql + " RETURNING id", mapping.encode(record)
                ).fetchall()
                leaf = ps.merkle.hash_node_state(record)
                commit = log.append(sid, record.node_id, "commit", leaf)
                conn.execute(INSERT_LOG_SQL, log_rows([commit], [row_id]))
                conn.execute("UPDATE sessions SET merkle_root = ? WHERE session_id = ?",
                             [commit.state_root, sid])
                conn.execute("COMMIT")
    finally:
        conn.close()


def read_before(path: Path) -> tuple[list[Any], dict[str, Any]]:
    """The log's rows and each session's verification, read without migrating."""
    with ps.SessionStore.open_read_only(path, publish_interval=None) as store:
        assert store.schema_version == 4
        reports = {sid: store.verify_session(sid) for sid in ("s1", "s2")}
        return store.sql(LOG).fetchall(), reports


def test_a_schema_4_file_moves_its_log_onto_the_rows_and_reads_the_same(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    write_schema_4(path)
    log_before, reports = read_before(path)
    assert len(log_before) == 14 and all(r.ok for r in reports.values())
    with ps.SessionStore.open(path) as store:
        assert store.schema_version == ps.SCHEMA_VERSION
        kinds = {t: k for t, k in store.sql(
            "SELECT table_name, table_type FROM information_schema.tables "
            "WHERE table_name LIKE 'merkle_log%'").fetchall()}
        assert kinds == {"merkle_log": "VIEW", "merkle_log_detached": "BASE TABLE"}
        # Every column, the entries' own times included (backfilled ones differ from
        # their rows').
        assert store.sql(LOG).fetchall() == log_before
        assert store.sql("SELECT count(*) FROM merkle_log_detached").fetchall() == [(0,)]
        assert store.sql(
            "SELECT count(*) FROM node_states WHERE merkle_commit IS NULL").fetchall() == [(0,)]
        for sid, before in reports.items():
            after = store.verify_session(sid)
            assert after.ok and after.log_root == before.log_root
            assert after.state_root == before.state_root
            # The log goes on where it stopped.
            commit = store.record_node_state(node(sid, "n9"))
            assert commit.seq == before.log_size
            assert store.verify_session(sid).ok


def test_entries_no_row_can_carry_stay_detached_and_are_still_reported(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    write_schema_4(path)
    with duckdb.connect(str(path)) as conn:  # a forger, before the migration
        conn.execute(
            "DELETE FROM node_states WHERE id = (SELECT node_state_id FROM merkle_log "
            "WHERE session_id = 's1' AND seq = 4)"
        )
        conn.execute("UPDATE merkle_log SET node_state_id = 1 WHERE session_id = 's2' AND seq = 5")
    log_before, reports = read_before(path)
    problems = {sid: [(p.kind, p.seq) for p in r.problems] for sid, r in reports.items()}
    assert problems["s1"] and problems["s2"]
    with ps.SessionStore.open(path) as store:
        assert store.sql(LOG).fetchall() == log_before
        detached = store.sql("SELECT session_id, seq FROM merkle_log_detached").fetchall()
        assert sorted(detached) == [("s1", 4), ("s2", 5)]
        for sid, expected in problems.items():
            assert [(p.kind, p.seq) for p in store.verify_session(sid).problems] == expected


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(COMMIT_KINDS),
    seq=st.integers(0, 2**31 - 1),
    hashes=st.lists(st.binary(min_size=32, max_size=32), min_size=3, max_size=3),
)
def test_a_packed_entry_reads_back_through_the_view_as_written(
    kind: str, seq: int, hashes: list[bytes]
) -> None:
    with ps.SessionStore.in_memory() as store:
        add_session(store, "s")
        ((row_id, created_at),) = store.sql(
            "INSERT INTO node_states (node_id, session_id, state) VALUES ('n', 's', 'x') "
            "RETURNING id, created_at").fetchall()
        commit = NodeCommit("s", seq, "n", kind, *hashes, seq + 1)
        log_tamper.set_entry(store.sql, row_id, pack_commit(commit))
        assert store.sql(LOG).fetchall() == [
            ("s", seq, row_id, "n", kind, *hashes, created_at)
        ]


@pytest.mark.parametrize("entry", [b"", b"junk", bytes(104), bytes(106), b"\x09" + bytes(104)])
def test_an_entry_the_store_did_not_write_is_reported_and_blocks_commits(
    store: ps.SessionStore, session: str, entry: bytes
) -> None:
    for name in "abc":
        store.record_node_state(node(session, name))
    row_id, _ = log_tamper.carrier(store.sql, session, 1)
    log_tamper.set_entry(store.sql, row_id, entry)
    report = store.verify_session(session)
    assert "forged" in {p.kind for p in report.problems}
    with pytest.raises(ps.IntegrityError, match="did not write"):
        store.record_node_state(node(session, "d"))


def test_two_handles_taking_turns_never_reuse_a_seq(tmp_path: Path) -> None:
    """Each handle caches the log; the other's commits must be seen before the next one
    (what merkle_log's primary key enforced before the log moved onto the rows)."""
    path = tmp_path / "two.db"
    with ps.SessionStore.open(path) as one, ps.SessionStore.open(path) as two:
        add_session(one, "s")
        seqs = []
        for i in range(12):
            handle = (one, two)[i % 3 == 0]
            seqs.append(handle.record_node_state(node("s", f"n{i % 4}", str(i))).seq)
        assert seqs == list(range(12))
        assert one.verify_session("s").ok and two.verify_session("s").ok


def test_two_handles_committing_from_threads_keep_one_log(tmp_path: Path) -> None:
    path = tmp_path / "two.db"
    with ps.SessionStore.open(path) as one, ps.SessionStore.open(path) as two:
        add_session(one, "s")
        errors: list[BaseException] = []

        def commit(handle: ps.SessionStore, worker: int) -> None:
            try:
                for i in range(15):
                    handle.record_node_state(node("s", f"w{worker}", str(i)))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=commit, args=((one, two)[w % 2], w))
                   for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        log = one.get_commit_log("s")
        assert [c.seq for c in log] == list(range(60))
        assert one.verify_session("s").ok


def test_exports_and_frames_show_the_log_as_merkle_log_not_as_a_column(
    tmp_path: Path,
) -> None:
    with ps.SessionStore.open(tmp_path / "a.db") as store:
        add_session(store, "s")
        store.record_node_state(node("s", "a"))
        assert "merkle_commit" not in store.frame("node_states", "s").columns
        assert len(store.frame("merkle_log", "s").fetchall()) == 1
        ps.export_parquet(store, tmp_path / "lake")
    files = list((tmp_path / "lake" / "node_states").rglob("*.parquet"))
    columns = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{files[0]}')").fetchall()
    assert "merkle_commit" not in {c[0] for c in columns}
    with ps.SessionStore.open(tmp_path / "b.db") as other:
        assert ps.import_lake(other, tmp_path / "lake").ok
        assert other.verify_session("s").ok
        assert [c.seq for c in other.get_commit_log("s")] == [0]


def test_a_migrated_file_still_deletes_sessions(tmp_path: Path) -> None:
    """The old log table had a foreign key to ``sessions``: dropped, not renamed (DuckDB
    would keep the old name in that key, and every DELETE FROM sessions would fail)."""
    path = tmp_path / "old.db"
    write_schema_4(path)
    with ps.SessionStore.open(path) as store:
        add_session(store, "spare")
        store.sql("DELETE FROM sessions WHERE session_id = 'spare'").fetchall()
        assert store.get_session("spare") is None


_KILLED_MIGRATION = """
import os, sys
import duckdb
import perspt_store as ps


class NoCheckpoint:  # the process dies after the migration commits, before its checkpoint
    def __init__(self, conn):
        self.conn = conn

    def execute(self, sql, *args):
        if sql.strip() == "CHECKPOINT":
            os._exit(0)
        return self.conn.execute(sql, *args)


conn = duckdb.connect(sys.argv[1], config={"autoload_known_extensions": False,
                                           "autoinstall_known_extensions": False})
conn.execute("SET checkpoint_threshold = '1GB'")
ps.init_schema(NoCheckpoint(conn))
raise SystemExit("the migration did not checkpoint")
"""


def test_a_migration_killed_before_its_checkpoint_leaves_a_file_that_opens(
    tmp_path: Path,
) -> None:
    """Replaying the migration from the WAL (a dropped table with a foreign key) needs
    DuckDB's built-in core_functions, which nothing has loaded when a file is opened with
    auto-loading off: the store loads it explicitly and replays the log."""
    import subprocess
    import sys

    path = tmp_path / "old.db"
    write_schema_4(path)
    log_before, _ = read_before(path)
    subprocess.run([sys.executable, "-c", _KILLED_MIGRATION, str(path)], check=True, timeout=120)
    assert path.with_name(path.name + ".wal").stat().st_size > 0
    with pytest.raises(duckdb.Error, match="core_functions"):  # DuckDB alone cannot open it
        duckdb.connect(str(path), config={"autoload_known_extensions": False}).close()
    with pytest.raises(ps.StoreError, match="open it read-write once"):  # replays nothing
        ps.SessionStore.open_read_only(path)
    with ps.SessionStore.open(path) as store:
        assert store.schema_version == ps.SCHEMA_VERSION
        assert store.sql(LOG).fetchall() == log_before
        assert all(store.verify_session(sid).ok for sid in ("s1", "s2"))


def test_a_commit_checked_before_another_handles_transaction_commits_does_not_reuse_its_seq(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Handle B counts the stored log while A's transaction holds a commit, then A's
    transaction commits, then B writes. B's count and write are one transaction, so B's
    write meets a write-write conflict and runs again on the log as it is then. (Found by a
    skeptical review: with the count and the write in two transactions, B reused A's seq.)
    The pause after B's count is the only hook: it forces the interleaving threads produce."""
    path = tmp_path / "c.db"
    with ps.SessionStore.open(path, publish_interval=None) as a, \
            ps.SessionStore.open(path, publish_interval=None) as b:
        add_session(a, "s")
        a.record_node_state(node("s", "n", "a0"))
        b.record_node_state(node("s", "n", "b0"))  # both handles cache the log
        counted, go = threading.Event(), threading.Event()
        count_log = b._scalar

        def paused(sql: str, params: Any = (), **kwargs: Any) -> Any:
            value = count_log(sql, params, **kwargs)
            if "count(*) FROM merkle_log" in sql and not counted.is_set():
                counted.set()
                go.wait(10)
            return value

        monkeypatch.setattr(b, "_scalar", paused)
        acked: dict[str, ps.NodeCommit] = {}
        writer = threading.Thread(
            target=lambda: acked.setdefault("b", b.record_node_state(node("s", "n", "b1"))))
        with a.transaction():
            acked["a"] = a.record_node_state(node("s", "n", "a1"))
            writer.start()
            assert counted.wait(10)
        go.set()  # A has committed: B goes on
        writer.join(30)
        assert sorted(c.seq for c in acked.values()) == [2, 3]
        assert [c.seq for c in a.get_commit_log("s")] == [0, 1, 2, 3]
        assert a.verify_session("s").ok


def test_a_repeated_seq_is_reported_once_without_a_false_gap(store: ps.SessionStore,
                                                            session: str) -> None:
    for name in "abcd":
        store.record_node_state(node(session, name))
    log_tamper.set_field(store.sql, session, 2, "seq", (1).to_bytes(8, "big"))  # two seq 1s
    problems = store.verify_session(session).problems
    assert ("forged", 1, "log entry 1 appears more than once") in {
        (p.kind, p.seq, p.detail) for p in problems}
    assert not [p for p in problems if p.kind == "deleted" and p.seq == 3]


def test_two_handles_on_one_borrowed_in_memory_connection_never_reuse_a_seq() -> None:
    """An in-memory database has no path to share log sizes by: handles on a borrowed
    connection check the stored log on every commit."""
    conn = duckdb.connect()
    try:
        ps.init_schema(conn)
        one, two = ps.SessionStore(conn), ps.SessionStore(conn.cursor())
        add_session(one, "s")
        seqs = [(one, two)[i % 3 == 0].record_node_state(node("s", f"n{i % 2}", str(i))).seq
                for i in range(9)]
        assert seqs == list(range(9))
        assert one.verify_session("s").ok
        one.close()
        two.close()
    finally:
        conn.close()

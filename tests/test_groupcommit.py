"""Group commit (``durability="batched"``): ``record_*`` calls return once buffered, a
background thread commits in bulk, a thread reads its own writes, ``flush()``/``close()``
make everything durable, and a failed flush never loses rows silently.

"Committed" is observed through a second connection to the same database instance (raw
SQL): it sees only what was committed, and reading through it never triggers a flush.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest

import perspt_store as ps
from conftest import run_threads
from perspt_store.store._groupcommit import BUFFERED_MODELS

SLOW = 3600.0  # a flush interval that never elapses during a test
WAIT = 30.0  # generous deadline for the background flusher on a loaded machine



def test_buffered_models_are_the_append_only_tables_without_a_unique_key() -> None:
    """BUFFERED_MODELS is derived from the models; this is the set it stands for."""
    assert BUFFERED_MODELS == {
        ps.EnergyRecord,
        ps.LlmRequestRecord,
        ps.SrbnStepRecord,
        ps.CorrectionAttemptRow,
        ps.StructuralDigestRecord,
        ps.ContextProvenanceRecord,
        ps.EscalationReportRecord,
        ps.RewriteRecordRow,
        ps.SheafValidationRow,
        ps.ProvisionalBranchRow,
        ps.InterfaceSealRow,
        ps.BranchFlushRow,
        ps.TaskGraphEdgeRow,
        ps.ReviewOutcomeRow,
        ps.VerificationResultRow,
        ps.ArtifactBundleRow,
    }

@pytest.fixture
def batched(db_path: Path) -> Iterator[ps.SessionStore]:
    """A file store in batched mode whose flusher only runs when asked (or at close)."""
    with ps.SessionStore.open(
        db_path, durability="batched", flush_interval=SLOW, publish_interval=None
    ) as store:
        store.create_session(
            ps.SessionRecord(session_id="s", task="t", working_dir="/w", status="RUNNING")
        )
        yield store


@pytest.fixture
def observer(db_path: Path, batched: ps.SessionStore) -> Iterator[duckdb.DuckDBPyConnection]:
    """A raw connection to the same database: it sees only committed rows."""
    conn = connect(db_path)
    yield conn
    conn.close()


def connect(path: Path) -> duckdb.DuckDBPyConnection:
    """A raw connection to the database instance a store in this process holds open."""
    try:
        return duckdb.connect(str(path))
    except duckdb.ConnectionException:  # the store's connection has settings of its own
        return duckdb.connect(str(path), config={
            "autoinstall_known_extensions": False, "autoload_known_extensions": False})


def energy(v_total: float, node_id: str = "n", session_id: str = "s") -> ps.EnergyRecord:
    return ps.EnergyRecord(node_id=node_id, session_id=session_id, v_total=v_total)


def committed(conn: duckdb.DuckDBPyConnection, table: str = "energy_history") -> int:
    return int(conn.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_immediate_is_the_default_and_flush_is_a_no_op(store: ps.SessionStore) -> None:
    assert store.durability == "immediate"
    store.flush()


def test_invalid_options_are_rejected(db_path: Path) -> None:
    with pytest.raises(ValueError, match="durability"):
        ps.SessionStore.open(db_path, durability="eventually")
    with pytest.raises(ValueError, match="flush_interval"):
        ps.SessionStore.open(db_path, durability="batched", flush_interval=0)
    with pytest.raises(ValueError, match="flush_rows"):
        ps.SessionStore.open(db_path, durability="batched", flush_rows=0)


def test_records_are_buffered_until_flush(
    batched: ps.SessionStore, observer: duckdb.DuckDBPyConnection
) -> None:
    assert batched.durability == "batched"
    for i in range(5):
        batched.record_energy(energy(float(i)))
    assert committed(observer) == 0, "buffered, not committed"
    batched.flush()
    assert committed(observer) == 5
    assert [v for (v,) in observer.execute(
        "SELECT v_total FROM energy_history ORDER BY id").fetchall()] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_the_store_reads_its_own_writes(batched: ps.SessionStore) -> None:
    batched.record_energy(energy(1.0))
    batched.record_step(ps.SrbnStepRecord(session_id="s", node_id="n", step="verify",
                                          outcome="ok"))
    assert [e.v_total for e in batched.get_energy_history("s", "n")] == [1.0]
    batched.record_energy(energy(2.0))
    assert batched.sql("SELECT count(*) FROM energy_history").fetchall() == [(2,)]
    assert len(batched.get_session_steps("s")) == 1
    batched.record_provisional_branch(ps.ProvisionalBranchRow(
        branch_id="b", session_id="s", node_id="n", parent_node_id="root"))
    assert batched.update_branch_state("b", "merged") == 1, "writes see buffered rows too"


def test_the_background_flusher_commits_within_the_interval(db_path: Path) -> None:
    with ps.SessionStore.open(
        db_path, durability="batched", flush_interval=0.02, publish_interval=None
    ) as store:
        store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
        conn = connect(db_path)
        try:
            for i in range(10):
                store.record_energy(energy(float(i)))
            wait_for(lambda: committed(conn) == 10, "the background flush")
        finally:
            conn.close()


def test_a_full_buffer_is_flushed_before_the_interval(db_path: Path) -> None:
    """``flush_rows`` buffered rows wake the flusher long before the (never elapsing)
    interval. How many rows one flush takes depends on thread timing (it takes whatever is
    buffered when it runs, e.g. 73 of 120), so the test waits for the state that must follow
    whatever the timing: fewer than ``flush_rows`` rows left, every other one committed."""
    flush_rows, recorded = 50, 120
    with ps.SessionStore.open(
        db_path, durability="batched", flush_interval=SLOW, flush_rows=flush_rows,
        publish_interval=None,
    ) as store:
        store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
        conn = connect(db_path)
        try:
            for i in range(recorded):
                store.record_energy(energy(float(i)))
            wait_for(lambda: store.pending_writes < flush_rows, "flushes triggered by size")
            left = store.pending_writes  # in-flight rows count: these are all committed
            assert committed(conn) == recorded - left >= recorded - flush_rows + 1
            assert [v for (v,) in conn.execute(
                "SELECT v_total FROM energy_history ORDER BY id").fetchall()] == [
                float(i) for i in range(recorded - left)], "a prefix, in order"
        finally:
            conn.close()


def test_unknown_session_raises_at_the_call_and_buffers_nothing(
    batched: ps.SessionStore, observer: duckdb.DuckDBPyConnection
) -> None:
    with pytest.raises(ps.SessionNotFoundError, match="ghost"):
        batched.record_energy(energy(1.0, session_id="ghost"))
    batched.flush()
    assert committed(observer) == 0
    with pytest.raises(ps.SessionNotFoundError, match="ghost"):
        batched.record_branch_lineage(ps.BranchLineageRow(
            lineage_id="l", parent_branch_id="p", child_branch_id="c", session_id="ghost"))
    batched.record_branch_lineage(  # no session: fine, as with immediate writes
        ps.BranchLineageRow(lineage_id="l", parent_branch_id="p", child_branch_id="c"))
    assert batched.get_child_branches("p") == ["c"]


def test_close_makes_everything_durable(db_path: Path) -> None:
    store = ps.SessionStore.open(db_path, durability="batched", flush_interval=SLOW)
    store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
    for i in range(100):
        store.record_energy(energy(float(i), node_id=f"n{i % 3}"))
    store.close()
    with ps.SessionStore.open_read_only(db_path) as reader:
        assert [e.v_total for e in reader.get_session_energy_history("s")] == [
            float(i) for i in range(100)
        ]


def test_writes_inside_a_transaction_are_not_buffered(
    batched: ps.SessionStore, observer: duckdb.DuckDBPyConnection
) -> None:
    batched.record_energy(energy(1.0))  # buffered before the block: committed first
    with batched.transaction():
        batched.record_energy(energy(2.0))
        batched.record_sheaf_validation(ps.SheafValidationRow(
            session_id="s", node_id="n", validator_class="v", passed=True))
    assert committed(observer) == 2, "committed with the transaction, no flush needed"
    assert committed(observer, "sheaf_validations") == 1
    with pytest.raises(RuntimeError), batched.transaction():
        batched.record_energy(energy(3.0))
        raise RuntimeError("roll back")
    batched.flush()
    assert [e.v_total for e in batched.get_energy_history("s", "n")] == [1.0, 2.0]


def test_flush_inside_a_transaction_is_refused(batched: ps.SessionStore) -> None:
    with batched.transaction():
        with pytest.raises(ps.StoreError, match="transaction"):
            batched.flush()


def test_node_state_commits_buffer_with_their_log_entries(
    batched: ps.SessionStore, observer: duckdb.DuckDBPyConnection
) -> None:
    """record_node_state returns its commit at once; row, log entry and root persist
    together in the group flush, in order with the other buffered rows (#14 section 3)."""
    commits = []
    for node, v in (("a", 0.5), ("b", 0.25), ("a", 0.75)):
        commits.append(batched.record_node_state(
            ps.NodeStateRecord(node_id=node, session_id="s", state="Completed", v_total=v)
        ))
        if node == "b":
            batched.record_energy(energy(0.5, node_id="a"))
    assert [c.seq for c in commits] == [0, 1, 2]
    assert [c.log_size for c in commits] == [1, 2, 3]
    assert batched.pending_writes == 4
    assert committed(observer, "node_states") == 0
    assert committed(observer, "merkle_log") == 0
    root = observer.execute("SELECT merkle_root FROM sessions").fetchall()[0][0]
    assert root is None, "the root follows its commit, not ahead of it"
    batched.flush()
    assert committed(observer, "node_states") == 3
    assert committed(observer, "merkle_log") == 3
    assert committed(observer) == 1
    assert observer.execute("SELECT merkle_root FROM sessions").fetchall()[0][0] == (
        commits[-1].state_root
    )
    assert batched.get_commit_log("s") == commits
    assert batched.verify_session("s").ok
    batched.record_many([energy(0.7, node_id="a")])  # bulk writes are synchronous
    assert committed(observer) == 2


def test_a_thread_reads_its_own_buffered_commits(batched: ps.SessionStore) -> None:
    commit = batched.record_node_state(
        ps.NodeStateRecord(node_id="a", session_id="s", state="Running")
    )
    assert batched.state_root("s") == commit.state_root
    assert batched.pending_writes == 0
    assert batched.verify_session("s").ok


def test_buffered_commits_follow_synchronous_ones_in_one_log(
    batched: ps.SessionStore, observer: duckdb.DuckDBPyConnection
) -> None:
    """Buffered commits, a record_many batch, a rollback and more buffered commits make one
    contiguous log that verifies."""
    state = ps.NodeStateRecord
    first = batched.record_node_state(state(node_id="a", session_id="s", state="A"))
    batched.record_many([state(node_id="b", session_id="s", state="B")])
    batched.record_node_state(state(node_id="a", session_id="s", state="A2"))
    batched.rollback("s", to_seq=first.seq)
    last = batched.record_node_state(state(node_id="c", session_id="s", state="C"))
    batched.flush()
    log = batched.get_commit_log("s")
    assert [c.seq for c in log] == list(range(len(log)))
    assert log[-1] == last
    assert batched.state_root("s") == last.state_root
    assert batched.verify_session("s").ok


def test_a_buffered_commit_of_a_vanished_session_is_handed_back_and_the_log_stays_a_prefix(
    batched: ps.SessionStore, observer: duckdb.DuckDBPyConnection
) -> None:
    batched.create_session(ps.SessionRecord(session_id="gone", task="t", working_dir="/w"))
    state = ps.NodeStateRecord
    kept = batched.record_node_state(state(node_id="a", session_id="s", state="A"))
    lost = [
        state(node_id=f"n{i}", session_id="gone", state="X") for i in range(3)
    ]
    for record in lost:
        batched.record_node_state(record)
    batched.record_node_state(state(node_id="b", session_id="s", state="B"))
    observer.execute("DELETE FROM sessions WHERE session_id = 'gone'")
    with pytest.raises(ps.FlushError) as info:
        batched.flush()
    assert list(info.value.rows) == lost
    assert [c.seq for c in batched.get_commit_log("s")] == [kept.seq, kept.seq + 1]
    assert batched.verify_session("s").ok
    again = batched.record_node_state(state(node_id="c", session_id="s", state="C"))
    assert again.seq == 2
    batched.flush()
    assert batched.verify_session("s").ok


def test_a_buffered_commit_to_a_missing_session_fails_on_the_call(
    batched: ps.SessionStore,
) -> None:
    with pytest.raises(ps.SessionNotFoundError):
        batched.record_node_state(ps.NodeStateRecord(node_id="a", session_id="nope", state="A"))
    assert batched.pending_writes == 0


def test_many_producer_threads_lose_nothing_and_keep_their_order(db_path: Path) -> None:
    threads, per_thread = 8, 250
    with ps.SessionStore.open(
        db_path, durability="batched", flush_interval=0.005, flush_rows=100,
        publish_interval=None,
    ) as store:
        store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
        def produce(t: int) -> None:
            for i in range(per_thread):
                store.record_energy(energy(float(i), node_id=f"t{t}"))
                if i % 50 == 0:
                    assert len(store.get_energy_history("s", f"t{t}")) == i + 1

        run_threads(produce, threads)
        store.flush()
        for t in range(threads):
            history = store.get_energy_history("s", f"t{t}")
            assert [e.v_total for e in history] == [float(i) for i in range(per_thread)]
    with ps.SessionStore.open_read_only(db_path) as reader:
        assert len(reader.get_session_energy_history("s")) == threads * per_thread


def _delete_session(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute("DELETE FROM sessions WHERE session_id = 's'")


def _restore_session(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute("INSERT INTO sessions (session_id, task, working_dir) VALUES ('s', 't', '/w')")


def test_a_flush_hands_back_rows_it_cannot_write_and_never_retries_them(
    batched: ps.SessionStore, observer: duckdb.DuckDBPyConnection
) -> None:
    """The session disappears behind the store's back: its rows cannot be written. flush()
    raises once, with those rows; they leave the buffer (they would fail forever), and the
    store goes on as if they had never been recorded."""
    batched.record_energy(energy(1.0))  # the session is checked (and remembered) here
    _delete_session(observer)
    batched.record_energy(energy(2.0))
    with pytest.raises(ps.FlushError) as info:
        batched.flush()
    assert [r.v_total for r in info.value.rows] == [1.0, 2.0]
    assert isinstance(info.value, ps.StoreError)
    assert "handed back" in str(info.value) and "'s' does not exist" in str(info.value)
    assert batched.pending_writes == 0
    batched.flush()  # reported once: nothing is stuck
    assert committed(observer) == 0
    with pytest.raises(ps.SessionNotFoundError):  # no longer remembered as existing
        batched.record_energy(energy(3.0))
    _restore_session(observer)
    batched.record_many(info.value.rows)  # the caller decides what to do with them
    assert [e.v_total for e in batched.get_energy_history("s", "n")] == [1.0, 2.0]


def test_a_bad_row_among_good_ones_from_several_threads_is_isolated(
    batched: ps.SessionStore, observer: duckdb.DuckDBPyConnection
) -> None:
    """Rows that fail are found (by session, by table, then by halving) and handed back;
    every other buffered row commits, in each thread's order."""
    batched.create_session(ps.SessionRecord(session_id="gone", task="t", working_dir="/w"))
    threads, per_thread = 4, 60
    bad: list[ps.Row] = []
    barrier = threading.Barrier(threads)

    def produce(t: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            batched.record_energy(energy(float(i), node_id=f"t{t}"))
            batched.record_llm_request(ps.LlmRequestRecord(
                session_id="s", node_id=f"t{t}", model="m", tokens_in=i))
            if i in (7, 41):
                row: ps.Row
                if t % 2:  # a row whose session will be gone when it is flushed
                    row = energy(-1.0, node_id=f"t{t}", session_id="gone")
                else:  # a row that skipped validation: DuckDB cannot encode its prompt
                    row = ps.LlmRequestRecord.model_construct(
                        session_id="s", node_id=f"t{t}", model="m", prompt="caf\udce9",
                        response="", tokens_in=-i)
                bad.append(row)
                batched._insert(row)  # record_energy or record_llm_request

    run_threads(produce, threads)
    observer.execute("DELETE FROM sessions WHERE session_id = 'gone'")
    with pytest.raises(ps.FlushError) as info:
        batched.flush()
    assert sorted(map(repr, info.value.rows)) == sorted(map(repr, bad))
    assert batched.pending_writes == 0
    for t in range(threads):
        assert [e.v_total for e in batched.get_energy_history("s", f"t{t}")] == [
            float(i) for i in range(per_thread)]
        assert [r.tokens_in for r in batched.get_llm_requests("s")
                if r.node_id == f"t{t}"] == list(range(per_thread))
    batched.record_energy(energy(99.0, node_id="after"))
    batched.flush()
    assert committed(observer) == threads * per_thread + 1


def test_bisection_finds_a_few_bad_rows_among_thousands(
    batched: ps.SessionStore, observer: duckdb.DuckDBPyConnection
) -> None:
    """Enough rows for the bulk Arrow path; the bad rows (skipped validation) are found."""
    bad_at = {5, 777, 1500}
    bad: list[ps.Row] = []
    for i in range(1600):
        if i in bad_at:
            row = ps.LlmRequestRecord.model_construct(
                session_id="s", node_id=None, model="m", prompt="\ud800", response="",
                tokens_in=i)
            bad.append(row)
        else:
            row = ps.LlmRequestRecord(session_id="s", model="m", tokens_in=i)
        batched.record_llm_request(row)
    with pytest.raises(ps.FlushError) as info:
        batched.flush()
    assert list(info.value.rows) == bad, "handed back in the order they were recorded"
    assert [v for (v,) in observer.execute(
        "SELECT tokens_in FROM llm_requests ORDER BY id").fetchall()] == [
        i for i in range(1600) if i not in bad_at]


def test_when_isolation_gives_up_every_row_is_committed_or_handed_back(
    batched: ps.SessionStore, observer: duckdb.DuckDBPyConnection
) -> None:
    """Half of 2,000 rows fail: isolation stops after MAX_FAILED_ATTEMPTS failed attempts
    and hands back what it has not committed; no row is lost or written twice."""
    for i in range(2000):
        batched.record_llm_request(
            ps.LlmRequestRecord.model_construct(
                session_id="s", node_id=None, model="m", prompt="\ud800", response="",
                tokens_in=i)
            if i % 2 else ps.LlmRequestRecord(session_id="s", model="m", tokens_in=i))
    with pytest.raises(ps.FlushError, match="gave up after 200 failed attempts") as info:
        batched.flush()
    written = [v for (v,) in observer.execute(
        "SELECT tokens_in FROM llm_requests ORDER BY id").fetchall()]
    handed_back = [r.tokens_in for r in info.value.rows]
    assert written == sorted(written) and handed_back == sorted(handed_back)
    assert sorted(written + handed_back) == list(range(2000))
    assert all(v % 2 == 0 for v in written)
    assert batched.pending_writes == 0
    batched.record_energy(energy(1.0))
    batched.flush()
    assert committed(observer) == 1


def test_a_background_flush_failure_is_reported_once_and_never_sticks(db_path: Path) -> None:
    with ps.SessionStore.open(
        db_path, durability="batched", flush_interval=0.01, publish_interval=None
    ) as store:
        store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
        store.create_session(ps.SessionRecord(session_id="gone", task="t", working_dir="/w"))
        conn = connect(db_path)
        try:
            store.record_energy(energy(1.0))
            store.record_energy(energy(-1.0, session_id="gone"))  # checked, remembered
            wait_for(lambda: store.pending_writes == 0, "the first flush")
            conn.execute("DELETE FROM energy_history WHERE session_id = 'gone'")
            conn.execute("DELETE FROM sessions WHERE session_id = 'gone'")
            store.record_energy(energy(2.0))
            store.record_energy(energy(-2.0, session_id="gone"))  # cannot be written
            store.record_energy(energy(3.0))
            wait_for(lambda: store.pending_writes == 0, "the flusher to deal with all three")
            assert committed(conn) == 3, "the good rows committed without anybody asking"
            for _ in range(3):  # reads never raise it
                assert [e.v_total for e in store.get_energy_history("s", "n")] == [
                    1.0, 2.0, 3.0]
            with pytest.raises(ps.FlushError, match="this call wrote nothing") as info:
                store.record_energy(energy(98.0))
            assert info.value.rows == (energy(-2.0, session_id="gone"),)
            store.record_energy(energy(4.0))  # reported once: the store goes on
            store.flush()
            assert [v for (v,) in conn.execute(
                "SELECT v_total FROM energy_history ORDER BY id").fetchall()] == [
                1.0, 2.0, 3.0, 4.0]
        finally:
            conn.close()


def test_close_returns_rows_it_could_not_write(db_path: Path) -> None:
    store = ps.SessionStore.open(
        db_path, durability="batched", flush_interval=SLOW, publish_interval=None
    )
    store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
    store.create_session(ps.SessionRecord(session_id="kept", task="t", working_dir="/w"))
    store.record_energy(energy(1.0))
    store.record_energy(energy(2.0, session_id="kept"))
    conn = connect(db_path)
    try:
        _delete_session(conn)
        with pytest.raises(ps.FlushError) as info:
            store.close()
    finally:
        conn.close()
    assert store.closed, "closed anyway"
    assert info.value.rows == (energy(1.0),)
    with pytest.raises(ps.StoreClosedError):
        store.record_energy(energy(2.0))
    with ps.SessionStore.open_read_only(db_path) as reader:
        assert reader.get_session_energy_history("kept") == [energy(2.0, session_id="kept")]


def test_a_read_by_a_thread_with_nothing_buffered_does_not_wait_for_writers(
    batched: ps.SessionStore,
) -> None:
    """One thread holds the write lock (an open transaction) while another has rows
    buffered: a third thread's reads complete meanwhile. They see what is committed; the
    thread that buffered the rows sees them (read your writes) once it reads."""
    in_transaction, recorded, reads_done = (threading.Event() for _ in range(3))
    seen: dict[str, object] = {}

    def writer() -> None:
        with batched.transaction():
            in_transaction.set()
            seen["reads finished while the lock was held"] = reads_done.wait(WAIT)

    def reader() -> None:  # its first use of the store: it opens its cursor meanwhile too
        assert recorded.wait(WAIT)
        seen["energy"] = batched.get_energy_history("s", "n")
        seen["sql"] = batched.sql("SELECT count(*) FROM energy_history").fetchall()
        seen["steps"] = batched.get_session_steps("s")
        seen["pending"] = batched.pending_writes
        reads_done.set()

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    try:
        assert in_transaction.wait(WAIT)
        batched.record_energy(energy(0.0))  # this (the main) thread now has rows buffered
        batched.record_step(
            ps.SrbnStepRecord(session_id="s", node_id="n", step="v", outcome="ok"))
    finally:
        recorded.set()
        for thread in threads:
            thread.join()
    assert seen == {
        "reads finished while the lock was held": True,
        "energy": [], "sql": [(0,)], "steps": [], "pending": 2,
    }
    assert batched.pending_writes == 2
    assert batched.get_energy_history("s", "n") == [energy(0.0)], "read your own writes"
    assert batched.pending_writes == 0


def test_a_thread_reads_its_own_buffered_rows_and_only_those_are_flushed_for_it(
    batched: ps.SessionStore, observer: duckdb.DuckDBPyConnection
) -> None:
    other_recorded = threading.Event()

    def other(_: int) -> None:
        batched.record_energy(energy(1.0, node_id="other"))
        other_recorded.set()

    run_threads(other, 1)
    assert other_recorded.is_set()
    assert batched.get_energy_history("s", "other") == [], "not committed yet, not waited for"
    assert batched.pending_writes == 1
    batched.record_energy(energy(2.0, node_id="mine"))
    assert [e.node_id for e in batched.get_session_energy_history("s")] == ["other", "mine"]
    assert batched.pending_writes == 0, "draining for this thread commits the whole buffer"
    assert committed(observer) == 2


@pytest.mark.parametrize("durability", ["batched", "immediate"])
def test_close_inside_a_transaction_is_refused_and_changes_nothing(
    db_path: Path, durability: str
) -> None:
    """Rows other threads buffer while a transaction is open never join it: close() inside
    the block refuses; after the block everything commits."""
    store = ps.SessionStore.open(
        db_path, durability=durability, flush_interval=SLOW, publish_interval=None
    )
    store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
    others = 5 if durability == "batched" else 0  # (immediate: they would wait for the block)
    with store.transaction():
        store.record_energy(energy(0.0, node_id="caller"))
        # Buffered while the block is open (batched mode takes no lock to buffer a row).
        run_threads(lambda t: store.record_energy(energy(1.0, node_id=f"t{t}")), others)
        assert store.pending_writes == others
        with pytest.raises(ps.StoreError, match=r"close\(\) inside transaction\(\)"):
            store.close()
        assert not store.closed and store.in_transaction
        store.record_energy(energy(2.0, node_id="caller"))
    store.close()
    with ps.SessionStore.open_read_only(db_path) as reader:
        rows = reader.get_session_energy_history("s")
    assert sorted((e.node_id, e.v_total) for e in rows) == [
        ("caller", 0.0), ("caller", 2.0), *((f"t{t}", 1.0) for t in range(others))]


def test_consistent_read_blocks_neither_buffer_rows_nor_close_the_store(
    batched: ps.SessionStore, observer: duckdb.DuckDBPyConnection
) -> None:
    """Inside consistent_read() (a read-only transaction on this thread's cursor) writes
    are refused as in immediate mode, and close() refuses, changing nothing."""
    batched.record_energy(energy(1.0))
    with batched.consistent_read():
        with pytest.raises(ps.ReadOnlyStoreError):
            batched.record_energy(energy(2.0))
        with pytest.raises(ps.StoreError, match=r"close\(\) inside consistent_read\(\)"):
            batched.close()
        assert not batched.closed
    batched.record_energy(energy(3.0))  # the buffer still takes rows
    batched.close()
    assert [v for (v,) in observer.execute(
        "SELECT v_total FROM energy_history ORDER BY id").fetchall()] == [1.0, 3.0]


def test_threads_recording_reading_and_flushing_while_the_store_closes_lose_nothing(
    db_path: Path,
) -> None:
    """Every row whose record_* call returned is in the file after close(), whatever the
    interleaving; a call that raised (the store was closing) wrote nothing."""
    store = ps.SessionStore.open(
        db_path, durability="batched", flush_interval=0.005, flush_rows=64,
        publish_interval=None,
    )
    store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
    producers = 6
    acknowledged: list[list[float]] = [[] for _ in range(producers)]
    started = threading.Barrier(producers + 3)

    def produce(t: int) -> None:
        started.wait()
        for i in range(100_000):
            try:
                store.record_energy(energy(float(i), node_id=f"t{t}"))
            except ps.StoreError:  # closed (or closing): this call wrote nothing
                return
            acknowledged[t].append(float(i))

    def read_and_flush(t: int) -> None:
        started.wait()
        while not store.closed:
            try:
                if t:
                    store.flush()
                else:
                    store.get_session_energy_history("s")
            except ps.StoreError:  # closed meanwhile
                return

    def close(_: int) -> None:
        started.wait()
        wait_for(lambda: all(len(a) > 200 for a in acknowledged), "some rows")
        store.close()

    run_threads(
        lambda t: produce(t) if t < producers else
        read_and_flush(t - producers) if t < producers + 2 else close(t), producers + 3)
    with ps.SessionStore.open_read_only(db_path) as reader:
        rows = reader.get_session_energy_history("s")
    for t in range(producers):
        assert [e.v_total for e in rows if e.node_id == f"t{t}"] == acknowledged[t]


def test_a_normal_exit_commits_the_good_rows_and_reports_the_bad_ones(db_path: Path) -> None:
    result = _run_child(db_path, """
        import duckdb, threading
        store.create_session(ps.SessionRecord(session_id="gone", task="t", working_dir="/w"))
        store.record_energy(ps.EnergyRecord(node_id="x", session_id="gone", v_total=-1.0))
        store.flush()
        store._cursor().execute("DELETE FROM energy_history WHERE session_id = 'gone'")
        store._cursor().execute("DELETE FROM sessions WHERE session_id = 'gone'")
        store.record_energy(ps.EnergyRecord(node_id="x", session_id="gone", v_total=-2.0))
        def more():
            for i in range(200, 300):
                store.record_energy(ps.EnergyRecord(node_id="n", session_id="s", v_total=float(i)))
        t = threading.Thread(target=more, daemon=True)
        t.start(); t.join()
        raise SystemExit(0)  # never closes the store
        """)
    assert result.returncode == 0, result.stderr
    assert "closing a batched store at exit failed" in result.stderr
    assert "1 buffered row" in result.stderr
    with ps.SessionStore.open_read_only(db_path) as reader:
        assert [e.v_total for e in reader.get_session_energy_history("s")] == [
            float(i) for i in range(300)]


def _run_child(db_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(
        f"""
        import os, time
        import perspt_store as ps
        store = ps.SessionStore.open({str(db_path)!r}, durability="batched",
                                     flush_interval=0.05, publish_interval=None)
        store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
        for i in range(200):
            store.record_energy(ps.EnergyRecord(node_id="n", session_id="s", v_total=float(i)))
        """
    ) + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_a_crash_after_the_flush_interval_loses_nothing(db_path: Path) -> None:
    """The loss window is bounded: rows older than the interval (plus a flush) are durable
    even if the process dies without closing."""
    result = _run_child(
        db_path,
        """
        deadline = time.monotonic() + 30
        while store.pending_writes and time.monotonic() < deadline:
            time.sleep(0.01)
        os._exit(0)  # no close, no atexit: like a crash
        """,
    )
    assert result.returncode == 0, result.stderr
    with ps.SessionStore.open_read_only(db_path) as reader:
        assert len(reader.get_session_energy_history("s")) == 200


def test_a_normal_exit_without_close_flushes(db_path: Path) -> None:
    result = _run_child(db_path, "raise SystemExit(0)  # never closes the store\n")
    assert result.returncode == 0, result.stderr
    with ps.SessionStore.open_read_only(db_path) as reader:
        assert len(reader.get_session_energy_history("s")) == 200

"""Group commit (``durability="batched"``): ``record_*`` calls return once buffered, a
background thread commits in bulk, the store reads its own writes, ``flush()``/``close()``
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

SLOW = 3600.0  # a flush interval that never elapses during a test
WAIT = 30.0  # generous deadline for the background flusher on a loaded machine


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
    conn = duckdb.connect(str(db_path))
    yield conn
    conn.close()


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
        conn = duckdb.connect(str(db_path))
        try:
            for i in range(10):
                store.record_energy(energy(float(i)))
            wait_for(lambda: committed(conn) == 10, "the background flush")
        finally:
            conn.close()


def test_a_full_buffer_is_flushed_before_the_interval(db_path: Path) -> None:
    with ps.SessionStore.open(
        db_path, durability="batched", flush_interval=SLOW, flush_rows=50, publish_interval=None
    ) as store:
        store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
        conn = duckdb.connect(str(db_path))
        try:
            for i in range(120):
                store.record_energy(energy(float(i)))
            wait_for(lambda: committed(conn) >= 100, "a flush triggered by size")
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


def test_node_state_commits_are_synchronous_and_keep_order(
    batched: ps.SessionStore, observer: duckdb.DuckDBPyConnection
) -> None:
    """record_node_state is the durable path: it commits the buffer, then the node."""
    batched.record_energy(energy(0.5, node_id="a"))
    commit = batched.record_node_state(
        ps.NodeStateRecord(node_id="a", session_id="s", state="Completed", v_total=0.5)
    )
    assert committed(observer, "node_states") == 1
    assert committed(observer, "merkle_log") == 1
    assert committed(observer) == 1, "the energy row recorded before it is committed too"
    assert batched.state_root("s") == commit.state_root
    batched.record_many([energy(0.7, node_id="a")])  # bulk writes are synchronous as well
    assert committed(observer) == 2


def test_many_producer_threads_lose_nothing_and_keep_their_order(db_path: Path) -> None:
    threads, per_thread = 8, 250
    with ps.SessionStore.open(
        db_path, durability="batched", flush_interval=0.005, flush_rows=100,
        publish_interval=None,
    ) as store:
        store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
        errors: list[BaseException] = []

        def produce(t: int) -> None:
            try:
                for i in range(per_thread):
                    store.record_energy(energy(float(i), node_id=f"t{t}"))
                    if i % 50 == 0:
                        assert len(store.get_energy_history("s", f"t{t}")) == i + 1
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        workers = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert errors == []
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


def test_a_failed_flush_keeps_the_rows_and_says_so(
    batched: ps.SessionStore, observer: duckdb.DuckDBPyConnection
) -> None:
    """The session disappears behind the store's back: the flush fails, nothing is lost,
    and a later flush writes everything once the cause is fixed."""
    batched.record_energy(energy(1.0))  # the session is checked (and remembered) here
    _delete_session(observer)
    batched.record_energy(energy(2.0))
    for _ in range(2):  # failures repeat while the cause remains, and lose nothing
        with pytest.raises(ps.FlushError) as info:
            batched.flush()
        assert [r.v_total for r in info.value.rows] == [1.0, 2.0]
        assert isinstance(info.value, ps.StoreError)
    _restore_session(observer)
    batched.flush()
    assert [v for (v,) in observer.execute(
        "SELECT v_total FROM energy_history ORDER BY id").fetchall()] == [1.0, 2.0]


def test_a_background_failure_is_reported_to_the_next_call(db_path: Path) -> None:
    with ps.SessionStore.open(
        db_path, durability="batched", flush_interval=0.01, publish_interval=None
    ) as store:
        store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
        conn = duckdb.connect(str(db_path))
        try:
            store.record_energy(energy(1.0))
            wait_for(lambda: committed(conn) == 1, "the first flush")
            conn.execute("DELETE FROM energy_history")  # so the session can go
            _delete_session(conn)
            store.record_energy(energy(2.0))  # the flusher will fail on this one
            failure: ps.FlushError | None = None
            deadline = time.monotonic() + WAIT
            while failure is None and time.monotonic() < deadline:
                try:
                    store.record_energy(energy(99.0))
                except ps.FlushError as exc:
                    failure = exc
                time.sleep(0.01)
            assert failure is not None, "the failure reached a later record_* call"
            assert "still buffered" in str(failure)
            _restore_session(conn)
            store.flush()
            values = [v for (v,) in conn.execute(
                "SELECT v_total FROM energy_history ORDER BY id").fetchall()]
            assert values[0] == 2.0 and set(values[1:]) <= {99.0}, "nothing was lost"
        finally:
            conn.close()


def test_close_returns_rows_it_could_not_write(db_path: Path) -> None:
    store = ps.SessionStore.open(
        db_path, durability="batched", flush_interval=SLOW, publish_interval=None
    )
    store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
    store.record_energy(energy(1.0))
    conn = duckdb.connect(str(db_path))
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

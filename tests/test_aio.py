"""AsyncSessionStore: its surface is the sync store's (checked against the class and the
committed stub), it behaves as the sync store does, blocks keep to one thread, and cancelling
never leaves half of anything. Every test runs under asyncio and trio (AnyIO's pytest plugin).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import functools
import inspect
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import perspt_store as ps
from perspt_store import aio

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def session_record(session_id: str = "s1") -> ps.SessionRecord:
    return ps.SessionRecord(session_id=session_id, task="t", working_dir="/w", status="RUNNING")


def energy(session_id: str, node_id: str, v_total: float) -> ps.EnergyRecord:
    return ps.EnergyRecord(session_id=session_id, node_id=node_id, v_total=v_total)


# --- the surface --------------------------------------------------------------------------


def public_attributes(cls: type) -> dict[str, Any]:
    return {
        name: inspect.getattr_static(cls, name) for name in dir(cls) if not name.startswith("_")
    }


def test_every_public_sync_method_has_an_async_twin() -> None:
    sync = public_attributes(ps.SessionStore)
    missing = sorted(set(sync) - set(public_attributes(ps.AsyncSessionStore)))
    assert missing == []
    for name, attribute in sync.items():
        twin = inspect.getattr_static(ps.AsyncSessionStore, name)
        if isinstance(attribute, property):
            assert isinstance(twin, property), name
        elif isinstance(attribute, staticmethod):  # default_db_path: computes, no I/O
            assert isinstance(twin, staticmethod), name
        elif isinstance(attribute, classmethod):  # the constructors
            assert isinstance(twin, classmethod), name
            assert inspect.iscoroutinefunction(twin.__func__), name
        elif name in ("transaction", "consistent_read"):  # blocks: for ``async with``
            assert inspect.isasyncgenfunction(inspect.unwrap(twin)), name
        else:
            assert inspect.iscoroutinefunction(twin), name
            expected = inspect.signature(attribute)
            if name == "sql":  # a relation is fetched on the worker: see SqlResult
                expected = expected.replace(return_annotation="SqlResult | None")
            assert inspect.signature(twin) == expected, name


def test_the_committed_stub_matches_the_sync_class() -> None:
    """If this fails, SessionStore changed: run `python -m perspt_store.aio --write-stub`."""
    assert aio.stub_path().read_text(encoding="utf-8") == aio.render_stub()


def test_the_stub_declares_exactly_the_derived_twins() -> None:
    tree = ast.parse(aio.stub_path().read_text(encoding="utf-8"))
    (surface,) = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    declared = {node.name: node for node in surface.body if isinstance(node, ast.FunctionDef
                                                                       | ast.AsyncFunctionDef)}
    derived = {name for name in vars(aio.AsyncSurface) if not name.startswith("_")}
    assert set(declared) == derived
    for name, node in declared.items():
        is_property = isinstance(vars(aio.AsyncSurface)[name], property)
        assert isinstance(node, ast.AsyncFunctionDef) != is_property, name


def test_importing_perspt_store_does_not_import_anyio() -> None:
    import subprocess
    import sys

    code = "import sys, perspt_store; print('anyio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- same results, same errors --------------------------------------------------------------


async def test_results_and_errors_are_the_sync_stores(tmp_path: Path) -> None:
    with ps.SessionStore.in_memory(sessions_dir=tmp_path / "a") as sync:
        async with await ps.AsyncSessionStore.in_memory(sessions_dir=tmp_path / "b") as store:
            for target in (sync, store):
                outcome = target.create_session(session_record())
                if inspect.isawaitable(outcome):
                    await outcome
            record = ps.NodeStateRecord(session_id="s1", node_id="n1", state="COMPLETED")
            sync_commit = sync.record_node_state(record)
            async_commit = await store.record_node_state(record)
            assert (async_commit.seq, async_commit.node_id) == (sync_commit.seq, "n1")
            assert await store.get_session("nope") is None
            assert (await store.verify_session("s1")).ok

            calls = {
                "duplicate": ("create_session", (session_record(),)),
                "missing session": ("record_energy", (energy("nope", "n", 1.0),)),
                "wrong type": ("get_session", (123,)),
                "bad root": ("update_merkle_root", ("s1", b"short")),
            }
            for what, (name, args) in calls.items():
                with pytest.raises(Exception) as expected:
                    getattr(sync, name)(*args)
                with pytest.raises(Exception) as got:
                    await getattr(store, name)(*args)
                assert type(got.value) is type(expected.value), what
                assert str(got.value) == str(expected.value), what


async def test_open_read_only_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "perspt.db"
    async with await ps.AsyncSessionStore.open(path, publish_interval=None) as store:
        await store.create_session(session_record())
    async with await ps.AsyncSessionStore.open_read_only(path) as reader:
        assert reader.read_only
        assert (await reader.get_session("s1")) is not None
        with pytest.raises(ps.ReadOnlyStoreError):
            await reader.record_energy(energy("s1", "n", 1.0))
        with pytest.raises(ps.ReadOnlyStoreError):
            async with reader.transaction():
                pass
    assert reader.closed
    with pytest.raises(ps.StoreClosedError):
        await reader.get_session("s1")


async def test_a_relation_is_fetched_on_the_thread_that_made_it() -> None:
    async with await ps.AsyncSessionStore.in_memory() as store:
        await store.create_session(session_record())
        rows = await store.run_sync(lambda s: s.sql("SELECT session_id FROM sessions").fetchall())
        assert rows == [("s1",)]


async def test_sql_returns_rows_fetched_on_the_worker_not_a_relation() -> None:
    async with await ps.AsyncSessionStore.in_memory(max_threads=2) as store:
        await store.create_session(session_record())
        await store.record_energy(energy("s1", "n", 0.5))
        result = await store.sql("SELECT session_id, 42 AS answer FROM sessions WHERE "
                                 "session_id = ?", ["s1"])
        assert isinstance(result, aio.SqlResult)
        assert result.columns == ["session_id", "answer"]
        assert result.types == ["VARCHAR", "INTEGER"]
        assert list(result) == [("s1", 42)] and len(result) == 1
        assert result.fetchone() == ("s1", 42)
        assert result.fetchone() is None and result.fetchall() == []
        # Any statement: it has run when the call returns; errors are the sync store's.
        await store.sql("CREATE TABLE scratch (i INTEGER)")
        await store.sql("INSERT INTO scratch VALUES (1), (2)")
        counted = await store.sql("SELECT count(*) FROM scratch")
        assert counted is not None and counted.fetchall() == [(2,)]
        with pytest.raises(ps.StoreError):
            await store.sql("SELECT * FROM no_such_table")
        # A frame method's default (to="relation") is fetched the same way.
        frame = await store.energy_frame("s1")
        assert isinstance(frame, aio.SqlResult) and len(frame.fetchmany(5)) == 1


# --- transactions and consistent reads --------------------------------------------------------


async def test_a_transaction_commits_every_write_on_one_thread() -> None:
    async with await ps.AsyncSessionStore.in_memory() as store:
        await store.create_session(session_record())
        threads = set()
        assert not store.in_transaction
        async with store.transaction():
            assert store.in_transaction
            for k in range(5):
                await store.record_energy(energy("s1", "n", float(k)))
                threads.add(await store.run_sync(lambda _s: threading.get_ident()))
            async with store.transaction():  # nested: joins the outer one
                await store.record_energy(energy("s1", "n", 5.0))
        assert not store.in_transaction
        assert len(threads) == 1
        history = await store.get_energy_history("s1", "n")
        assert [e.v_total for e in history] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


async def test_a_failing_transaction_rolls_back_whole() -> None:
    async with await ps.AsyncSessionStore.in_memory() as store:
        await store.create_session(session_record())
        with pytest.raises(KeyError):
            async with store.transaction():
                await store.record_energy(energy("s1", "n", 1.0))
                raise KeyError("boom")
        with pytest.raises(ps.StoreError, match="nothing was committed"):
            async with store.transaction():
                await store.record_energy(energy("s1", "n", 2.0))
                with pytest.raises(KeyError):
                    async with store.transaction():  # the inner block's failure dooms it all
                        raise KeyError("inner")
        with pytest.raises(ps.SessionNotFoundError):
            async with store.transaction():
                await store.record_energy(energy("s1", "n", 3.0))
                await store.record_energy(energy("missing", "n", 4.0))
        assert await store.get_energy_history("s1", "n") == []


async def test_a_cancelled_transaction_rolls_back_whole() -> None:
    async with await ps.AsyncSessionStore.in_memory() as store:
        await store.create_session(session_record())
        with anyio.CancelScope() as scope:
            async with store.transaction():
                await store.record_energy(energy("s1", "n", 1.0))
                await store.record_energy(energy("s1", "n", 2.0))
                scope.cancel()
                await store.record_energy(energy("s1", "n", 3.0))  # runs, then cancels
                await anyio.sleep(1)
        assert scope.cancelled_caught
        assert await store.get_energy_history("s1", "n") == []
        # The store goes on: the next transaction commits.
        async with store.transaction():
            await store.record_energy(energy("s1", "n", 4.0))
        assert [e.v_total for e in await store.get_energy_history("s1", "n")] == [4.0]


async def test_other_tasks_wait_for_a_transaction_off_the_loop() -> None:
    async with await ps.AsyncSessionStore.in_memory() as store:
        await store.create_session(session_record())
        inside, release = anyio.Event(), anyio.Event()
        order: list[str] = []

        async def holder() -> None:
            async with store.transaction():
                await store.record_energy(energy("s1", "n", 1.0))
                inside.set()
                await release.wait()  # the loop keeps running: other tasks go on
                order.append("commit")

        async def writer() -> None:
            await inside.wait()
            await store.record_energy(energy("s1", "n", 2.0))  # waits for the write lock
            order.append("write")

        async with anyio.create_task_group() as tg:
            tg.start_soon(holder)
            tg.start_soon(writer)
            await inside.wait()
            # A read from another task neither waits nor sees the open transaction.
            assert await store.get_energy_history("s1", "n") == []
            release.set()
        assert order == ["commit", "write"]
        assert [e.v_total for e in await store.get_energy_history("s1", "n")] == [1.0, 2.0]


async def test_a_consistent_read_sees_one_snapshot() -> None:
    async with await ps.AsyncSessionStore.in_memory() as store:
        await store.create_session(session_record())
        go, written = anyio.Event(), anyio.Event()

        async def write_elsewhere() -> None:  # started before the block: not part of it
            await go.wait()
            await store.record_energy(energy("s1", "n", 1.0))
            written.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(write_elsewhere)
            async with store.consistent_read():
                assert await store.get_energy_history("s1", "n") == []  # the snapshot starts
                go.set()
                await written.wait()
                assert await store.get_energy_history("s1", "n") == []
        assert len(await store.get_energy_history("s1", "n")) == 1


async def test_close_inside_a_transaction_is_refused() -> None:
    async with await ps.AsyncSessionStore.in_memory() as store:
        await store.create_session(session_record())
        async with store.transaction():
            with pytest.raises(ps.StoreError, match="close"):
                await store.close()
            await store.record_energy(energy("s1", "n", 1.0))
        assert len(await store.get_energy_history("s1", "n")) == 1


# --- cancellation -------------------------------------------------------------------------------


async def test_a_cancelled_write_that_started_still_completes() -> None:
    async with await ps.AsyncSessionStore.in_memory() as store:
        await store.create_session(session_record())
        inside, release = anyio.Event(), anyio.Event()
        started = threading.Event()

        async def holder() -> None:
            async with store.transaction():
                await store.record_energy(energy("s1", "n", 1.0))
                inside.set()
                await release.wait()

        def write(s: ps.SessionStore) -> None:
            started.set()
            s.record_energy(energy("s1", "n", 2.0))  # blocks on the holder's write lock

        async with anyio.create_task_group() as tg:
            tg.start_soon(holder)
            await inside.wait()
            with anyio.CancelScope() as scope:

                async def cancel_then_release() -> None:
                    while not started.is_set():
                        await anyio.sleep(0.001)
                    scope.cancel()  # while the write waits for the holder's lock
                    await anyio.sleep(0.01)
                    release.set()

                tg.start_soon(cancel_then_release)
                await store.run_sync(write)
            assert scope.cancelled_caught  # the call was cancelled once it had finished...
        # ...and its write is there, whole, after the holder's.
        assert [e.v_total for e in await store.get_energy_history("s1", "n")] == [1.0, 2.0]


async def test_one_tasks_calls_one_after_another_stay_on_one_warm_thread() -> None:
    async with await ps.AsyncSessionStore.in_memory(max_threads=4) as store:
        threads = {await store.run_sync(lambda s: threading.get_ident()) for _ in range(20)}
        assert len(threads) == 1
        assert threading.get_ident() not in threads  # a worker, never the loop's thread


@pytest.mark.parametrize("threads", [1, 3])
async def test_calls_use_every_thread_and_wait_in_order_when_all_are_busy(threads: int) -> None:
    async with await ps.AsyncSessionStore.in_memory(max_threads=threads) as store:
        busy: list[int] = []  # the threads holding a call (a list: appends are atomic)
        release = threading.Event()

        def hold(s: ps.SessionStore) -> None:
            busy.append(threading.get_ident())
            release.wait(10)

        handed: list[int] = []  # the order the calls were handed over in
        ran: list[int] = []

        async def hand(n: int) -> None:
            handed.append(n)  # nothing awaits between this and the hand-over
            await store.run_sync(lambda s: ran.append(n))

        async with anyio.create_task_group() as tg:
            for _ in range(threads):
                tg.start_soon(store.run_sync, hold)
            with anyio.fail_after(10):
                while len(busy) < threads:  # every thread holds a call at once
                    await anyio.sleep(0.001)
            for n in range(6):  # every thread busy: these wait
                tg.start_soon(hand, n)
            with anyio.fail_after(10):
                while len(handed) < 6:
                    await anyio.sleep(0.001)
            await anyio.sleep(0.05)
            assert ran == []
            release.set()
        assert len(set(busy)) == threads
        if threads == 1:  # one thread: they ran in the order handed over
            assert ran == handed
        assert sorted(ran) == list(range(6))


async def held_write_lock(store: ps.AsyncSessionStore, writes: list[Any]) -> list[Any]:
    """Run ``writes`` (awaitables' factories) as concurrent tasks while another task holds
    the write lock in a transaction, so they all wait in the write lane; what each returned
    or raised, in order."""
    inside, release = anyio.Event(), anyio.Event()
    outcomes: list[Any] = [None] * len(writes)
    handed = 0  # writes handed over: a call hands over before it first waits

    async def holder() -> None:
        async with store.transaction():
            await store.record_energy(energy("s1", "holder", 0.0))
            inside.set()
            await release.wait()

    async def write(n: int) -> None:
        nonlocal handed
        try:
            call = writes[n]()
            handed += 1  # nothing awaits between this and the hand-over
            outcomes[n] = await call
        except Exception as exc:
            outcomes[n] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await inside.wait()
        for n in range(len(writes)):
            tg.start_soon(write, n)
        with anyio.fail_after(30):  # every write waits in the lane (for the lock) first
            while handed < len(writes):
                await anyio.sleep(0.001)
        release.set()
    return outcomes


async def test_concurrent_durable_appends_share_commits() -> None:
    async with await ps.AsyncSessionStore.in_memory() as store:
        await store.create_session(session_record())
        transactions = 0
        opened = store.sync.transaction

        @contextlib.contextmanager
        def counted() -> Iterator[None]:
            nonlocal transactions
            transactions += 1
            with opened():
                yield

        store.sync.transaction = counted  # type: ignore[method-assign]
        outcomes = await held_write_lock(
            store, [functools.partial(store.record_energy, energy("s1", f"n{n}", float(n)))
                    for n in range(40)]
        )
        assert outcomes == [None] * 40
        history = await store.get_session_energy_history("s1")
        assert sorted(e.v_total for e in history if e.node_id != "holder") == [
            float(n) for n in range(40)
        ]
        assert 1 <= transactions < 40  # 40 writes, far fewer commits


async def test_a_bad_row_in_a_shared_commit_fails_only_its_own_call() -> None:
    async with await ps.AsyncSessionStore.in_memory() as store:
        await store.create_session(session_record())
        writes = [functools.partial(store.record_energy, energy("s1", f"n{n}", float(n)))
                  for n in range(20)]
        writes[7] = functools.partial(store.record_energy, energy("nope", "n7", 7.0))
        writes[13] = functools.partial(store.record_energy, "not a row")  # type: ignore[arg-type]
        outcomes = await held_write_lock(store, writes)
        assert isinstance(outcomes[7], ps.SessionNotFoundError)
        assert isinstance(outcomes[13], TypeError)
        assert [o for n, o in enumerate(outcomes) if n not in (7, 13)] == [None] * 18
        stored = {e.node_id for e in await store.get_session_energy_history("s1")}
        assert stored == {"holder"} | {f"n{n}" for n in range(20) if n not in (7, 13)}
        assert await store.get_session_energy_history("nope") == []


async def test_concurrent_node_state_commits_share_commits_and_each_gets_its_own() -> None:
    async with await ps.AsyncSessionStore.in_memory() as store:
        await store.create_session(session_record())
        writes = [functools.partial(store.record_node_state, ps.NodeStateRecord(
            session_id="s1", node_id=f"n{n % 7}", state=f"k{n}")) for n in range(30)]
        writes[11] = functools.partial(store.record_node_state, ps.NodeStateRecord(
            session_id="nope", node_id="n", state="k"))
        outcomes = await held_write_lock(store, writes)
        assert isinstance(outcomes[11], ps.SessionNotFoundError)
        commits = [o for n, o in enumerate(outcomes) if n != 11]
        assert all(isinstance(c, ps.NodeCommit) for c in commits)
        assert sorted(c.seq for c in commits) == list(range(29))  # one seq each, none lost
        report = await store.verify_session("s1")
        assert report.ok and report.log_size == 29
        last = max(commits, key=lambda c: c.seq)
        assert (await store.get_session("s1")).merkle_root == last.state_root  # type: ignore[union-attr]


async def test_a_stream_of_shared_commits_never_starves_other_calls() -> None:
    writers = 30
    async with await ps.AsyncSessionStore.in_memory(max_threads=1) as store:
        await store.create_session(session_record())
        stop = anyio.Event()
        acked = 0

        async def writer(n: int) -> None:
            nonlocal acked
            while not stop.is_set():
                await store.record_energy(energy("s1", f"n{n}", 1.0))
                acked += 1

        async with anyio.create_task_group() as tg:
            for n in range(writers):
                tg.start_soon(writer, n)
            with anyio.fail_after(20):
                while acked < 10 * writers:  # the lane is busy from now on
                    await anyio.sleep(0.01)
                for _ in range(5):  # the one thread serves these between two commits
                    before = acked
                    ran_at = await store.run_sync(lambda s: acked)
                    assert ran_at - before <= 2 * writers  # the group in progress, at most
            stop.set()


async def test_close_while_writes_wait_in_the_lane_keeps_every_acknowledged_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "perspt.db"
    store = await ps.AsyncSessionStore.open(path, publish_interval=None)
    await store.create_session(session_record())
    writes: list[Any] = [functools.partial(store.record_energy, energy("s1", f"n{n}", float(n)))
                         for n in range(30)]
    writes[5] = functools.partial(store.record_energy, energy("nope", "n5", 5.0))
    writes.append(store.close)  # waits for the lock too, among the writes
    writes += [functools.partial(store.record_energy, energy("s1", f"late{n}", 0.0))
               for n in range(10)]
    with anyio.fail_after(60):  # a guard against a deadlock, not a timing assertion
        outcomes = await held_write_lock(store, writes)
        with pytest.raises(ps.StoreClosedError):
            await store.record_energy(energy("s1", "after", 0.0))
    # The close and the writes race for the lock as sync threads do: a write fails only
    # with StoreClosedError (or its own error), and whatever it acknowledged is kept.
    assert isinstance(outcomes[5], ps.SessionNotFoundError | ps.StoreClosedError)
    assert all(o is None or isinstance(o, ps.StoreClosedError)
               for n, o in enumerate(outcomes) if n != 5)
    acknowledged = {f"n{n}" for n, o in enumerate(outcomes[:30]) if o is None}
    acknowledged |= {f"late{n}" for n, o in enumerate(outcomes[31:]) if o is None}
    with ps.SessionStore.open(path) as reopened:
        stored = [e.node_id for e in reopened.get_session_energy_history("s1")]
    assert sorted(stored) == sorted(acknowledged | {"holder"})  # each once, nothing failed


async def test_close_ends_every_worker_thread() -> None:
    before = {t.ident for t in threading.enumerate() if t.name.startswith("perspt-store-worker")}
    store = await ps.AsyncSessionStore.in_memory(max_threads=3)
    await store.create_session(session_record())
    await store.close()
    with anyio.fail_after(10):
        while any(t.name.startswith("perspt-store-worker") and t.ident not in before
                  for t in threading.enumerate()):
            await anyio.sleep(0.01)


async def test_close_returns_once_every_worker_thread_has_ended() -> None:
    # A worker thread still ending (dropping its DuckDB cursor) when the interpreter exits
    # aborted the process ("terminate called ... FATAL: exception not rethrown").
    store = await ps.AsyncSessionStore.in_memory(max_threads=2)
    await store.create_session(session_record())
    async with store.consistent_read():  # a block's thread, ended with the block
        await store.get_session("s1")
    started, gate = threading.Event(), threading.Event()
    closed = anyio.Event()

    def busy(_: ps.SessionStore) -> None:
        started.set()
        gate.wait()

    async def close() -> None:
        await store.close()
        closed.set()

    with anyio.fail_after(60):  # a guard against a deadlock, not a timing assertion
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.run_sync, busy)
            while not started.is_set():
                await anyio.sleep(0.001)
            tg.start_soon(close)
            await anyio.sleep(0.05)  # close() is waiting for the busy worker, or returned
            returned_early = closed.is_set()
            gate.set()
    assert not returned_early
    assert not [t for t in [*store._jobs.threads, *(b.thread for b in store._blocks)]
                if t.is_alive()]


# --- batched durability -------------------------------------------------------------------------


async def test_a_task_reads_its_own_batched_writes_whatever_thread_runs_them() -> None:
    options = {"durability": "batched", "flush_interval": 60.0, "flush_rows": 1_000_000}
    async with await ps.AsyncSessionStore.in_memory(max_threads=4, **options) as store:
        await store.create_session(session_record())
        failures: list[int] = []

        async def writer_reader(task: int) -> None:
            for k in range(10):
                await store.record_energy(energy("s1", f"n{task}", float(k)))
                seen = await store.get_energy_history("s1", f"n{task}")
                if len(seen) != k + 1:
                    failures.append(task)

        async with anyio.create_task_group() as tg:
            for task in range(16):
                tg.start_soon(writer_reader, task)
        assert failures == []
        await store.record_energy(energy("s1", "late", 1.0))
        assert store.pending_writes == 1
        await store.flush()
        assert store.pending_writes == 0


async def test_buffered_writes_run_on_the_loop_thread() -> None:
    options = {"durability": "batched", "flush_interval": 60.0, "flush_rows": 1_000_000}
    async with await ps.AsyncSessionStore.in_memory(max_threads=1, **options) as store:
        await store.create_session(session_record())
        await store.record_energy(energy("s1", "first", 0.0))  # the session is checked once
        group = store.sync._group
        assert group is not None
        buffer = group.buffer
        for k in range(100):
            await store.record_energy(energy("s1", "n", float(k)))
        # The write buffer remembers which thread buffered rows: this one, the loop's.
        assert buffer.owes_current_thread()
        assert store.pending_writes == 101
        history = await store.get_energy_history("s1", "n")  # reads its own writes
        assert [e.v_total for e in history] == [float(k) for k in range(100)]


async def test_a_buffered_write_that_needs_duckdb_runs_on_a_worker(tmp_path: Path) -> None:
    path = tmp_path / "perspt.db"
    async with await ps.AsyncSessionStore.open(path, publish_interval=None) as store:
        await store.create_session(session_record())
    options = {"durability": "batched", "publish_interval": None}
    async with await ps.AsyncSessionStore.open(path, **options) as store:
        # A session this handle has not seen: checked in DuckDB, off the loop, with the
        # sync store's error when it does not exist; nothing is buffered then.
        with pytest.raises(ps.SessionNotFoundError):
            await store.record_energy(energy("nope", "n", 1.0))
        assert store.pending_writes == 0
        await store.record_energy(energy("s1", "n", 1.0))
        await store.record_energy(energy("s1", "n", 2.0))
        assert store.pending_writes == 2  # the second one only buffered, on the loop
    async with await ps.AsyncSessionStore.open_read_only(path) as reader:
        assert [e.v_total for e in await reader.get_energy_history("s1", "n")] == [1.0, 2.0]


async def test_io_refused_on_the_loop_ends_with_the_buffered_call(tmp_path: Path) -> None:
    path = tmp_path / "perspt.db"
    async with await ps.AsyncSessionStore.open(path, publish_interval=None) as store:
        await store.create_session(session_record())
    options = {"durability": "batched", "publish_interval": None}
    async with await ps.AsyncSessionStore.open(path, max_threads=1, **options) as store:
        release = threading.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.run_sync, lambda s: release.wait())  # the one worker, busy
            await anyio.sleep(0.01)
            # An unseen session: the write hops, and waits in the queue behind the busy job.
            tg.start_soon(store.record_energy, energy("s1", "n", 1.0))
            await anyio.sleep(0.01)
            # Meanwhile the loop's thread may use the sync store directly (blocking, but
            # allowed): I/O is refused only during a buffered call, not while it waits.
            assert store.sync.count_sessions() == 1
            release.set()
        assert [e.v_total for e in await store.get_energy_history("s1", "n")] == [1.0]


async def test_a_buffer_far_behind_is_committed_off_the_loop() -> None:
    # flush_rows=1: from 4 rows waiting the producer commits them itself. A transaction held
    # by another task keeps the flusher from committing, so that commit waits for the write
    # lock: on a worker, while the loop goes on (else the block could never end).
    options = {"durability": "batched", "flush_interval": 60.0, "flush_rows": 1}
    async with await ps.AsyncSessionStore.in_memory(max_threads=2, **options) as store:
        await store.create_session(session_record())
        go_on = anyio.Event()
        in_block = anyio.Event()

        async def hold_a_transaction() -> None:
            async with store.transaction():
                await store.record_energy(energy("s1", "block", 0.0))
                in_block.set()
                await go_on.wait()

        async def producer() -> None:
            for k in range(8):
                await store.record_energy(energy("s1", "n", float(k)))

        with anyio.fail_after(60):  # a guard against a deadlock, not a timing assertion
            async with anyio.create_task_group() as tg:
                tg.start_soon(hold_a_transaction)
                await in_block.wait()
                tg.start_soon(producer)
                for _ in range(20):
                    await anyio.sleep(0.005)  # the loop runs while the producer waits
                go_on.set()
        await store.flush()
        assert [e.v_total for e in await store.get_energy_history("s1", "n")] == [
            float(k) for k in range(8)
        ]
        assert len(await store.get_energy_history("s1", "block")) == 1


async def test_once_the_loops_turn_is_over_every_buffered_write_yields_until_it_polls() -> None:
    turns = aio._Turns()
    assert not turns.over()  # a turn has just begun
    turns.began -= 3600.0  # its time is used up
    assert turns.over()  # the write that notices ends it...
    assert all(turns.over() for _ in range(50))  # ...and every write after it yields too
    with anyio.fail_after(10):  # a guard, not a timing assertion
        while turns.over():  # until the loop has looked at its timers and I/O
            await anyio.sleep(0)
    assert not turns.over()  # then a new turn begins


async def test_a_turn_ended_on_a_loop_that_is_gone_does_not_hold_up_this_one() -> None:
    turns = aio._Turns()
    turns.ended_on = object()  # a loop that ended before its turn did (asyncio.run again)
    assert not turns.over()
    assert turns.ended_on is None


async def test_buffered_writes_of_many_tasks_all_land_in_order_while_the_loop_turns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Many tasks writing with no time to a turn: every write ends the loop's turn and yields,
    # in any order; each task's rows still land whole and in its order, and other tasks keep
    # running meanwhile.
    monkeypatch.setattr(aio, "_TURN", 0.0)
    options = {"durability": "batched", "flush_interval": 60.0, "flush_rows": 1_000_000}
    async with await ps.AsyncSessionStore.in_memory(**options) as store:
        await store.create_session(session_record())
        await store.record_energy(energy("s1", "first", 0.0))  # the session is checked once
        ticks = 0
        writing = True

        async def ticker() -> None:
            nonlocal ticks
            while writing:
                ticks += 1
                await anyio.sleep(0)

        async def writer(task: int) -> None:
            for k in range(50):
                await store.record_energy(energy("s1", f"n{task}", float(k)))

        async with anyio.create_task_group() as outer:
            outer.start_soon(ticker)
            async with anyio.create_task_group() as tg:
                for task in range(40):
                    tg.start_soon(writer, task)
            writing = False
        assert ticks > 1
        for task in range(40):
            history = await store.get_energy_history("s1", f"n{task}")
            assert [e.v_total for e in history] == [float(k) for k in range(50)]


SUBCLASS_ROW_WHILE_A_BLOCK_IS_OPEN = """
import sys, anyio
import perspt_store as ps

class MyEnergy(ps.EnergyRecord):  # the sync store takes it, but does not buffer it
    pass

async def main():
    options = {"durability": "batched", "flush_interval": 60.0, "flush_rows": 1_000_000}
    async with await ps.AsyncSessionStore.in_memory(**options) as store:
        await store.create_session(ps.SessionRecord(
            session_id="s1", task="t", working_dir="/w", status="RUNNING"))
        await store.record_energy(ps.EnergyRecord(session_id="s1", node_id="n"))  # seen
        entered = anyio.Event()

        async def hold_a_transaction():
            async with store.transaction():
                entered.set()
                await anyio.sleep(0.2)  # a timer: it fires only if the loop runs

        async with anyio.create_task_group() as tg:
            tg.start_soon(hold_a_transaction)
            await entered.wait()
            await store.record_energy(MyEnergy(session_id="s1", node_id="n", v_total=1.0))
        assert len(await store.get_energy_history("s1", "n")) == 2
    print("ok")

anyio.run(main, backend=sys.argv[1])
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_record_that_batched_mode_does_not_buffer_never_blocks_the_loop_on_the_write_lock(
    backend: str, tmp_path: Path
) -> None:
    # A subclass of a buffered model is written at once by the sync store, which takes the
    # write lock. On the loop's thread that used to wait there for another task's open
    # transaction block, whose task could then never run: the loop hung. A subprocess, so a
    # hang fails the test instead of the suite.
    script = tmp_path / "subclass_row.py"
    script.write_text(SUBCLASS_ROW_WHILE_A_BLOCK_IS_OPEN, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script), backend], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.mark.parametrize("durability", ["immediate", "batched"])
def test_trio_in_guest_mode_on_an_asyncio_host(durability: str) -> None:
    # In trio's guest mode asyncio reports its host loop as running inside trio's tasks: the
    # store must still wait the trio way there.
    trio = pytest.importorskip("trio")

    async def in_trio() -> list[float]:
        async with await ps.AsyncSessionStore.in_memory(durability=durability) as store:
            await store.create_session(session_record())
            for k in range(2_000):  # enough buffered writes for the loop's turns to end
                await store.record_energy(energy("s1", "n", float(k)))
            return [e.v_total for e in await store.get_energy_history("s1", "n")]

    async def host() -> list[float]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        trio.lowlevel.start_guest_run(
            in_trio, run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=done.set_result, host_uses_signal_set_wakeup_fd=True,
        )
        outcome = await asyncio.wait_for(done, 120)
        return outcome.unwrap()  # type: ignore[no-any-return]

    assert asyncio.run(host()) == [float(k) for k in range(2_000)]


def test_outside_any_task_the_running_loop_is_asyncios() -> None:
    # sniffio finds no library outside a task (a loop callback, say): the running asyncio
    # loop is still the one the store uses there.
    async def main() -> bool:
        loop = asyncio.get_running_loop()
        seen: asyncio.Future[bool] = loop.create_future()

        def callback() -> None:
            try:
                seen.set_result(aio._asyncio_loop() is loop)
            except Exception as exc:
                seen.set_exception(exc)

        loop.call_soon(callback)
        return await seen

    assert asyncio.run(main())


# --- static types ---------------------------------------------------------------------------

CALLS = [
    'get_session("s")',
    'record_node_state(ps.NodeStateRecord(session_id="s", node_id="n", state="RUNNING"))',
    "list_recent_sessions(3)",
    "load_session_snapshot('s')",
    "verify_session('s')",
    "get_latest_review_outcome('s', 'n')",
]
TYPED_USE = "\n".join([
    "import perspt_store as ps",
    "async def main(path: str) -> None:",
    "    sync = ps.SessionStore.open(path)",
    "    async with await ps.AsyncSessionStore.open(path) as store:",
    *(f"        reveal_type(sync.{call})\n        reveal_type(await store.{call})"
      for call in CALLS),
    "        reveal_type(sync.pending_writes)\n        reveal_type(store.pending_writes)",
    "        async with store.transaction():",
    "            await store.get_session(1)",
])


def test_type_checkers_see_the_sync_signatures_as_awaitables(tmp_path: Path) -> None:
    from mypy import api

    (tmp_path / "use.py").write_text(TYPED_USE, encoding="utf-8")
    out, _, _ = api.run(["--strict", "--cache-dir", str(tmp_path / "cache"),
                         str(tmp_path / "use.py")])
    revealed = re.findall(r'Revealed type is "(.*)"', out)
    assert len(revealed) == 2 * (len(CALLS) + 1), out
    assert revealed[0::2] == revealed[1::2], out  # async == sync, call by call
    assert "SessionRecord | None" in revealed[0], out
    assert 'Argument 1 to "get_session" of "AsyncSurface" has incompatible type "int"' in out

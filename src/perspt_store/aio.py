"""``AsyncSessionStore``: the store for asyncio and trio orchestrators, on AnyIO worker threads.

Every public method of :class:`~perspt_store.SessionStore` is an awaitable here with the same
name, parameters, return type, results and errors, because each one *is* the sync method, run
on one of the store's worker threads so the event loop never waits for DuckDB.
The twins are derived from the sync class (:func:`derive_surface`), never copied; type checkers
see them through ``_aio_surface.pyi``, generated from the same class and checked for drift.

Threads. Each store starts ``max_threads`` worker threads of its own when it is made, and hands
each call to the thread that went idle last (so one task's calls keep to one warm thread, see
:class:`_Pool`); a finished call wakes its task with one thread-safe callback
(``loop.call_soon_threadsafe`` under asyncio, the trio token's ``run_sync_soon`` under trio),
so a hop costs two thread wake-ups and nothing else. DuckDB serialises writes (the sync store
holds one write lock), so more threads only help reads, which run in parallel on their own
cursors; a few threads are enough, and each is one more DuckDB cursor and one more thread
competing with the event loop for the GIL.

Shared commits. In immediate durability a ``record_*`` append or ``record_node_state``
awaited by several tasks at once joins a lane (:class:`_WriteLane`) that commits every write
waiting in one transaction; each call still returns once its row is committed, and a failing
group is retried write by write, so a bad row fails only its own call.

Buffered writes run on the loop. In batched durability a ``record_*`` of an append-only table
only appends the row to the write buffer (a few microseconds), so it runs on the event loop's
thread with I/O refused: if it would touch DuckDB after all (its session not seen yet), the
sync store says so before changing anything and the call hops to a worker; if the buffer is
far behind, the commit the sync store would make on the spot is made on a worker instead.
Such writes await nothing, so they yield by the loop's turn (:class:`_Turns`).

Blocks. ``transaction()`` and ``consistent_read()`` are per-thread in the sync store, so an
``async with`` block runs on a thread of its own (:class:`_BlockThread`), started for the
block: every call made inside the block, by the task or by tasks it starts there, runs on that
thread, in the order made, and joins the block. Calls from other tasks run on the pool as
usual: their writes wait (on their worker thread, never on the loop) until the block ends.

Cancellation. A call that has started on its thread always finishes: cancelling the task that
awaits it waits for the call to return, discards its result and then raises the
cancellation. A write is therefore either done whole or, if the
task was cancelled before its thread picked it up, not done at all; never half done. A
``transaction()`` block left by a cancellation (or any exception) rolls back as a whole.

Read your writes. In batched durability the sync store lets a *thread* read its own buffered
rows; a task's calls may land on different threads, so a task that buffered rows commits the
buffer before its next call that is not a ``record_*`` (an empty transaction, which waits for a
flush in progress). A task thus reads its own writes, as a thread does with the sync store.

Results. A method whose sync twin returns a DuckDB relation (``sql()``, the ``*_frame``
methods with ``to="relation"``) returns a :class:`SqlResult` instead: the relation is fetched
on the worker thread that made it, because a relation is bound to that thread's cursor.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import functools
import inspect
import queue
import re
import sys
import threading
import time
import typing
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Self, TypeVar

import duckdb

try:
    import anyio
    import anyio.from_thread
    import anyio.lowlevel
    import anyio.to_thread
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "AsyncSessionStore needs AnyIO: pip install 'perspt-store[async]'"
    ) from exc

from ._aio_surface import AsyncSurface
from .store import SessionStore
from .store._base import PathLike, WouldBlock
from .store._groupcommit import BUFFERED_MODELS
from .store.internals import internals

__all__ = [
    "DEFAULT_MAX_THREADS",
    "AsyncSessionStore",
    "SqlResult",
    "derive_surface",
    "render_stub",
]

T = TypeVar("T")

DEFAULT_MAX_THREADS = 4
"""Worker threads one store uses at most: writes are serialised anyway, reads scale a little."""

# Methods AsyncSessionStore defines itself, because their sync form is bound to a thread
# (the blocks) or owns the store's lifetime (close).
_HAND_WRITTEN = frozenset({"close", "consistent_read", "in_transaction", "transaction"})
_CONSTRUCTORS = ("open", "open_default", "in_memory", "open_read_only")


def _buffered_records(cls: type) -> frozenset[str]:
    """The ``record_*`` methods that only buffer their row in batched mode: one row parameter
    of a model batched mode buffers, and a body that does nothing but ``self._insert(row)``
    (``record_task_graph_edge_once``, say, takes a buffered model but writes at once)."""
    names = set()
    for name, function in inspect.getmembers(cls, inspect.isfunction):
        if not name.startswith("record_"):
            continue
        hints = typing.get_type_hints(function)
        hints.pop("return", None)
        if (
            len(hints) == 1
            and next(iter(hints.values())) in BUFFERED_MODELS
            and inspect.unwrap(function).__code__.co_names == ("_insert",)
        ):
            names.add(name)
    return frozenset(names)


_ASYNC_RETURNS = {"sql": "SqlResult | None"}
"""Twins that return something else than their sync method: a relation is fetched into a
:class:`SqlResult` on the worker (None when the statement gives no relation, as in sync)."""

_BUFFERED_RECORDS = _buffered_records(SessionStore)
"""Methods run on the event loop's thread in batched mode (they append to the buffer)."""

_SHARED_COMMITS = _BUFFERED_RECORDS | {"record_node_state"}
"""Methods whose concurrent calls share a commit in immediate durability (:class:`_WriteLane`):
appends, and node-state commits (each computes its Merkle commit inside the group's
transaction; a group rolled back is retried call by call, recomputing them)."""


class _Abandoned(BaseException):
    """Thrown into a sync block on its thread: the async block left with an exception."""


class SqlResult:
    """A query's result, fetched on the worker thread that ran it: what the async ``sql()``
    (and a ``*_frame(to="relation")``) returns instead of a DuckDB relation, which is bound
    to that thread's cursor.

    Use it like a fetched cursor: ``fetchall()``, ``fetchone()``, ``fetchmany(n)``, or
    iterate it; ``columns`` and ``types`` name the columns. For a DataFrame, ask a
    ``*_frame`` method for ``to="pandas"`` / ``"polars"`` / ``"arrow"``, or fetch one on the
    worker: ``await store.run_sync(lambda s: s.sql(query).df())``.
    """

    __slots__ = ("_next", "columns", "rows", "types")

    def __init__(self, columns: list[str], types: list[str], rows: list[tuple[Any, ...]]) -> None:
        self.columns = columns
        """The column names, in order."""
        self.types = types
        """DuckDB's type of each column, e.g. ``"VARCHAR"``."""
        self.rows = rows
        """Every row, as the relation's ``fetchall()`` gave them."""
        self._next = 0

    @classmethod
    def fetch(cls, relation: duckdb.DuckDBPyRelation) -> SqlResult:
        """Fetch ``relation`` whole (on the thread whose cursor made it)."""
        return cls(list(relation.columns), [str(t) for t in relation.types], relation.fetchall())

    def fetchall(self) -> list[tuple[Any, ...]]:
        """The rows not fetched yet (all of them, the first time)."""
        rows = self.rows[self._next :]
        self._next = len(self.rows)
        return rows

    def fetchone(self) -> tuple[Any, ...] | None:
        """The next row, or None after the last."""
        if self._next >= len(self.rows):
            return None
        self._next += 1
        return self.rows[self._next - 1]

    def fetchmany(self, size: int = 1) -> list[tuple[Any, ...]]:
        """Up to ``size`` next rows."""
        rows = self.rows[self._next : self._next + size]
        self._next += len(rows)
        return rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"<SqlResult {len(self.rows)} rows of ({', '.join(self.columns)})>"


try:
    from sniffio import current_async_library
except ImportError:  # trio needs sniffio: without it, a running loop is asyncio's

    def current_async_library() -> str:
        return "asyncio"


def _asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop; None under trio, including trio in guest mode on an asyncio
    host loop, which asyncio reports as running in trio's tasks too."""
    loop = asyncio._get_running_loop()
    if loop is None:
        return None
    try:
        library = current_async_library()
    except Exception:  # sniffio sees no task: a coroutine driven by hand on the loop
        return loop
    return loop if library == "asyncio" else None


def _fetched(function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)``, a DuckDB relation it returns fetched (on this thread)."""
    result = function(*args, **kwargs)
    if isinstance(result, duckdb.DuckDBPyRelation):
        return SqlResult.fetch(result)
    return result


class _Job:
    """One call handed to a worker thread, and how it wakes the task that awaits it."""

    __slots__ = ("claim", "function", "outcome", "wake")

    def __init__(self, function: Callable[[], Any], wake: Callable[[], object]) -> None:
        self.function: Callable[[], Any] | None = function
        self.wake = wake
        self.claim = threading.Lock()  # taken by the worker that runs it, or by a cancellation
        self.outcome: tuple[bool, Any] | None = None

    def run(self) -> bool:
        """On a worker thread: run the call unless its task was cancelled before (False)."""
        if not self.claim.acquire(blocking=False):
            return False  # its task was cancelled before any thread picked it up: never run
        self.execute()
        return True

    def execute(self) -> None:
        """Run the call (claimed) and keep what it returned or raised."""
        assert self.function is not None
        try:
            self.outcome = (True, self.function())
        except BaseException as exc:
            self.outcome = (False, exc)

    def notify(self) -> None:
        """Wake the task that awaits the call (after :meth:`run`)."""
        try:
            self.wake()
        except RuntimeError:  # the event loop is closed: nobody is waiting any more
            pass


_Jobs = queue.SimpleQueue[_Job | None]


def _serve(jobs: _Jobs) -> None:
    """A thread of its own: run jobs until told to stop (None)."""
    while (job := jobs.get()) is not None:
        if job.run():
            job.notify()


class _Pool:
    """The store's worker threads; a call goes to the thread that went idle last.

    One task's calls, one after another, thus keep landing on the same warm thread (its
    DuckDB cursor, its CPU's caches) instead of going round all of them: that made a durable
    write about 0.2 ms cheaper than a first-in, first-out hand-off over four threads
    (``benchmarks/bench_async.py``). Calls made while every thread is busy wait in order.
    """

    def __init__(self, size: int) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Jobs] = []  # the inboxes of idle threads, the last idle last
        self._backlog: collections.deque[_Job | None] = collections.deque()
        self._stopped = False
        self.size = size
        self.threads = [
            threading.Thread(target=self._serve, args=(queue.SimpleQueue(),),
                             name=f"perspt-store-worker-{n}", daemon=True)
            for n in range(size)
        ]
        for thread in self.threads:  # started now rather than on the event loop's first call
            thread.start()

    def put(self, job: _Job | None) -> None:
        """Hand ``job`` to a thread (``None`` ends one, after the jobs handed before it).

        A job handed over once the pool is stopping (the write lane's next group, queued as
        ``close()`` ran) gets a thread of its own: no job is left without a thread.
        """
        with self._lock:
            late = self._stopped and job is not None
            if not late:
                if not self._idle:
                    self._backlog.append(job)
                    return
                inbox = self._idle.pop()
        if late:
            inbox = queue.SimpleQueue()
            for item in (job, None):  # the job, then the thread ends
                inbox.put(item)
            threading.Thread(target=_serve, args=(inbox,), name="perspt-store-late",
                             daemon=True).start()
            return
        inbox.put(job)

    def stop(self) -> None:
        """End every thread once the jobs handed to the pool so far have run."""
        with self._lock:
            self._stopped = True
        for _ in range(self.size):
            self.put(None)

    def _serve(self, inbox: _Jobs) -> None:
        waited, job = self._backlogged(inbox)
        while True:
            if not waited:
                job = inbox.get()
            if job is None:
                return
            ran = job.run()
            # Idle again *before* the caller wakes and hands over its next call, so that
            # call comes back to this thread.
            waited, after = self._backlogged(inbox)
            if ran:
                job.notify()
            job = after

    def _backlogged(self, inbox: _Jobs) -> tuple[bool, _Job | None]:
        """``(True, job)`` for the oldest job waiting; else ``(False, None)``, and this thread
        is idle: its next job comes to ``inbox``."""
        with self._lock:
            if self._backlog:
                return True, self._backlog.popleft()
            self._idle.append(inbox)
            return False, None


class _WriteLane:
    """Immediate durability: ``record_*`` appends and node-state commits awaited by several
    tasks at once share one durable commit.

    Each such write joins the lane instead of taking a thread of its own; one pool thread at a
    time drains it, running every write waiting in one :meth:`SessionStore.transaction`: one
    commit (and one sync to disk) for all of them, where separate threads would each wait
    for the write lock and commit alone. A write still returns only once it is committed.
    If any write of a group fails (or the commit does), the group is rolled back whole and
    each of its writes runs again on its own, so a bad row fails its own call and no other.
    A write alone in the lane runs as it would without it.
    """

    MAX_GROUP = 256
    """Writes one commit takes at most (a bound on a group's retry after a failure)."""

    def __init__(self, pool: _Pool, store: SessionStore) -> None:
        self._pool = pool
        self._store = store
        self._lock = threading.Lock()
        self._waiting: collections.deque[_Job] = collections.deque()
        self._draining = False  # a pool thread is draining (or about to)

    def put(self, job: _Job) -> None:
        with self._lock:
            self._waiting.append(job)
            if self._draining:
                return
            self._draining = True
        self._pool.put(_Job(self._drain, lambda: None))

    def _drain(self) -> None:
        """Commit one group (every write waiting, up to :attr:`MAX_GROUP`); if more arrived
        meanwhile, queue the next drain behind the pool's other calls, so a steady stream of
        writes never keeps a thread (or, with one thread, the reads) waiting."""
        with self._lock:
            group = [self._waiting.popleft()
                     for _ in range(min(len(self._waiting), self.MAX_GROUP))]
        claimed = [job for job in group if job.claim.acquire(blocking=False)]
        if len(claimed) > 1:
            self._commit_together(claimed)
        else:
            for job in claimed:
                job.execute()
        for job in claimed:
            job.notify()
        with self._lock:
            self._draining = bool(self._waiting)
            again = self._draining
        if again:
            self._pool.put(_Job(self._drain, lambda: None))

    def _commit_together(self, group: list[_Job]) -> None:
        results: list[Any] = []
        try:
            with self._store.transaction():
                for job in group:
                    assert job.function is not None
                    results.append(job.function())
        except BaseException:
            for job in group:  # rolled back whole: each again, alone
                job.execute()
        else:  # outcomes only once committed: a cancelled waiter waits for the commit
            for job, result in zip(group, results, strict=True):
                job.outcome = (True, result)


def _wake_future(future: asyncio.Future[None]) -> None:
    if not future.done():  # a cancelled waiter's future is done already
        future.set_result(None)


async def _hand_over(jobs: _Jobs | _Pool | _WriteLane, call: Callable[[], T]) -> T:
    """Run ``call()`` on a thread serving ``jobs`` and return (or raise) what it did.

    A task cancelled before a thread picked the call up raises at once and the call never
    runs; once it has started, the task waits for it to finish, then raises the cancellation
    (the call's result is discarded).
    """
    loop = _asyncio_loop()  # None under trio
    if loop is not None:
        future: asyncio.Future[None] = loop.create_future()
        job = _Job(call, functools.partial(loop.call_soon_threadsafe, _wake_future, future))
        jobs.put(job)
        try:
            await future
        except BaseException:
            if job.claim.acquire(blocking=False):
                raise  # not started, and now it never will
            with anyio.CancelScope(shield=True):
                while job.outcome is None:  # started: it completes before we raise
                    future = loop.create_future()
                    job.wake = functools.partial(loop.call_soon_threadsafe, _wake_future, future)
                    if job.outcome is None:
                        with contextlib.suppress(asyncio.CancelledError):
                            await future
            raise
    else:
        done = anyio.Event()
        token = anyio.lowlevel.current_token().native_token
        job = _Job(call, functools.partial(token.run_sync_soon, done.set))  # type: ignore[attr-defined]
        jobs.put(job)
        try:
            await done.wait()
        except BaseException:
            if job.claim.acquire(blocking=False):
                raise
            with anyio.CancelScope(shield=True):
                await done.wait()
            raise
    assert job.outcome is not None
    ok, value = job.outcome
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


async def _on_a_thread_of_its_own(call: Callable[[], T]) -> T:
    """``call()`` on a thread started for it (opening a store; calls after ``close()``)."""
    jobs: _Jobs = queue.SimpleQueue()
    threading.Thread(target=_serve, args=(jobs,), name="perspt-store-call", daemon=True).start()
    try:
        return await _hand_over(jobs, call)
    finally:
        jobs.put(None)  # the thread ends after the call (or at once, if it never started)


def _join(threads: list[threading.Thread]) -> None:
    """Wait for ``threads`` to end (none of them is the calling thread)."""
    for thread in threads:
        thread.join()


_TURN = 0.0005
"""Seconds of buffered writes the event loop's thread runs, over all tasks, before the loop
gets a turn for its timers and I/O."""


async def _yield_to_loop() -> None:
    """A checkpoint, cheaper than AnyIO's: it skips the backend look-up under asyncio."""
    if _asyncio_loop() is not None:
        await asyncio.sleep(0)
    else:
        await anyio.lowlevel.checkpoint()


def _running_loop() -> object:
    """The running asyncio loop, or trio's token for the running trio run."""
    loop = _asyncio_loop()
    if loop is not None:
        return loop
    return anyio.lowlevel.current_token().native_token


def _after_the_loop_polls(loop: object, callback: Callable[[], object]) -> None:
    """Call ``callback`` on ``loop`` once it has looked at its timers and I/O (its next
    iteration under asyncio; under trio, a callback that arrives through its wake-up
    socket, so it runs after trio's next I/O check)."""
    if isinstance(loop, asyncio.AbstractEventLoop):
        loop.call_soon(callback)
    else:
        loop.run_sync_soon(callback)  # type: ignore[attr-defined]


class _Turns:
    """Batched mode's buffered writes run on the event loop's thread, and never await
    anything: without yielding, a task writing in a loop would keep timers and I/O waiting.
    Yielding every so often per task is not enough: an event loop iteration steps every
    task that was ready when it began, so 200 writing tasks, each running 0.5 ms before it
    yields, held the loop 100 ms (286 ms once, measured). So the budget is the loop's: once
    :data:`_TURN` seconds of buffered writes have run, every buffered write yields, whichever
    task makes it, until the loop has polled; then a new turn begins."""

    __slots__ = ("began", "ended_on")

    def __init__(self) -> None:
        self.began = time.monotonic()
        self.ended_on: object = None  # the loop whose turn is over, until it polls

    def over(self) -> bool:
        """True if the calling task should yield now."""
        if self.ended_on is not None:
            loop = _running_loop()
            if loop is self.ended_on:
                return True
            self.ended_on = None  # ended on another loop (asyncio.run again): a new turn
            self.began = time.monotonic()
            return False
        if time.monotonic() - self.began < _TURN:
            return False
        loop = _running_loop()
        self.ended_on = loop
        _after_the_loop_polls(loop, self._begin)
        return True

    def _begin(self) -> None:
        self.ended_on = None
        self.began = time.monotonic()


class _BlockThread:
    """A thread of its own for one ``transaction()`` or ``consistent_read()`` block (and the
    blocks nested in it): it runs the calls made inside, one at a time, in order."""

    def __init__(self) -> None:
        self._jobs: _Jobs = queue.SimpleQueue()
        self.transactions = 0  # transaction() blocks open on it (for in_transaction)
        self.alive = True
        self.thread = threading.Thread(
            target=_serve, args=(self._jobs,), name="perspt-store-block", daemon=True
        )
        self.thread.start()

    async def call(self, function: Callable[[], T]) -> T:
        """Run ``function`` on this thread; a cancelled caller waits until it has finished."""
        return await _hand_over(self._jobs, function)

    def stop(self) -> None:
        self.alive = False
        self._jobs.put(None)


class AsyncSessionStore(AsyncSurface):
    """A :class:`~perspt_store.SessionStore` for asyncio and trio: every method awaitable.

    Open it with ``await``, use it with ``async with`` (which closes it):

    .. code-block:: python

        async with await AsyncSessionStore.open("perspt.db") as store:
            await store.create_session(SessionRecord(session_id="s1", task="t",
                                                     working_dir="/src", status="RUNNING"))
            async with store.transaction():
                await store.record_energy(EnergyRecord(node_id="n1", session_id="s1"))

    Each method takes the sync method's arguments and returns (or raises) what it does; see
    :class:`~perspt_store.SessionStore` for them, and the module docstring for threads,
    blocks, cancellation and batched durability. ``store.sync`` is the wrapped sync store
    (call it only from worker threads, e.g. with :meth:`run_sync`).

    ``sql()`` (and a ``*_frame`` method with ``to="relation"``) returns a :class:`SqlResult`,
    the relation fetched on the worker thread whose cursor made it; for a DataFrame ask the
    frame methods for ``to="pandas"`` / ``"polars"`` / ``"arrow"``, or fetch it on the worker:
    ``await store.run_sync(lambda s: s.sql(query).df())``.
    """

    def __init__(self, store: SessionStore, *, max_threads: int = DEFAULT_MAX_THREADS) -> None:
        """Wrap an open sync store (which this one now owns: ``close()`` closes it).

        Args:
            store: The sync store every call runs on.
            max_threads: How many worker threads this store starts (now) to run its calls.
        """
        if not isinstance(store, SessionStore):
            raise TypeError(f"AsyncSessionStore wraps a SessionStore, not {type(store).__name__}")
        if max_threads < 1:
            raise ValueError(f"max_threads must be at least 1, not {max_threads}")
        self.sync = store
        self.max_threads = max_threads
        self._block: contextvars.ContextVar[_BlockThread | None] = contextvars.ContextVar(
            f"perspt-store-block-{id(self):x}", default=None
        )
        # Batched mode: True in a task that may have rows buffered (see "Read your writes").
        self._owes: contextvars.ContextVar[bool] = contextvars.ContextVar(
            f"perspt-store-owes-{id(self):x}", default=False
        )
        self._jobs = _Pool(max_threads)
        self._blocks: list[_BlockThread] = []  # threads of blocks, joined by close() once ended
        self._lane = _WriteLane(self._jobs, store)
        self._stopped = False  # closed, and the workers told to end
        self._turns = _Turns()  # when buffered writes let the loop run its timers and I/O
        self._inside = internals(store)
        self._io_refused = self._inside.io_refused()  # entered at every buffered write
        with contextlib.suppress(Exception):  # import AnyIO's backend now, not mid-run
            anyio.lowlevel.current_token()

    # --- opening ------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, path: PathLike, *, max_threads: int = DEFAULT_MAX_THREADS, **options: object
    ) -> Self:
        """:meth:`SessionStore.open <perspt_store.SessionStore.open>` on a worker thread."""
        return await cls._opened(SessionStore.open, (path,), options, max_threads)

    @classmethod
    async def open_default(
        cls, *, max_threads: int = DEFAULT_MAX_THREADS, **options: object
    ) -> Self:
        """:meth:`SessionStore.open_default <perspt_store.SessionStore.open_default>`."""
        return await cls._opened(SessionStore.open_default, (), options, max_threads)

    @classmethod
    async def in_memory(cls, *, max_threads: int = DEFAULT_MAX_THREADS, **options: object) -> Self:
        """:meth:`SessionStore.in_memory <perspt_store.SessionStore.in_memory>`."""
        return await cls._opened(SessionStore.in_memory, (), options, max_threads)

    @classmethod
    async def open_read_only(
        cls, path: PathLike, *, max_threads: int = DEFAULT_MAX_THREADS, **options: object
    ) -> Self:
        """:meth:`SessionStore.open_read_only <perspt_store.SessionStore.open_read_only>`."""
        return await cls._opened(SessionStore.open_read_only, (path,), options, max_threads)

    @classmethod
    async def _opened(
        cls,
        opener: Callable[..., SessionStore],
        args: tuple[object, ...],
        options: dict[str, object],
        max_threads: int,
    ) -> Self:
        opened: list[SessionStore] = []

        def open_it() -> SessionStore:
            opened.append(opener(*args, **options))
            return opened[0]

        try:
            store = await _on_a_thread_of_its_own(open_it)
        except BaseException:
            for store in opened:  # opened, then cancelled: nobody will close it
                store.close()
            raise
        try:
            return cls(store, max_threads=max_threads)
        except BaseException:
            store.close()
            raise

    @staticmethod
    def default_db_path() -> Path:
        """:meth:`SessionStore.default_db_path`: computes a path, touches nothing (not async)."""
        return SessionStore.default_db_path()

    # --- running calls ------------------------------------------------------------------

    async def run_sync(self, function: Callable[[SessionStore], T]) -> T:
        """Run ``function(store.sync)`` where this store runs its calls (a worker thread, or
        the thread of the block it is called in): several sync calls for one hop, or a
        relation fetched on the thread that made it."""
        return await self._run(functools.partial(function, self.sync), name="run_sync")

    async def _run(self, call: Callable[[], T], *, name: str) -> T:
        block = self._block.get()
        if block is not None and block.alive:
            return await block.call(call)
        if self._stopped:  # closed: the sync store raises StoreClosedError, on a thread
            return await _on_a_thread_of_its_own(call)
        if self.sync.durability == "batched" and name not in ("close", "flush"):
            if name.startswith("record_"):
                if not self._owes.get():
                    self._owes.set(True)  # in this task's context: it dies with the task
                if name in _BUFFERED_RECORDS:
                    return await self._buffered(call)
            elif self._owes.get():
                if self.sync.pending_writes:
                    call = functools.partial(self._caught_up, call)
                result = await _hand_over(self._jobs, call)
                self._owes.set(False)  # not if cancelled first: then it catches up later
                return result
        elif name in _SHARED_COMMITS:  # immediate: a write that may share a commit
            return await _hand_over(self._lane, call)
        return await _hand_over(self._jobs, call)

    async def _buffered(self, call: Callable[[], T]) -> T:
        """A ``record_*`` that batched mode buffers: run it here, on the event loop's thread,
        with I/O refused (it appends to the buffer, a few microseconds); on a worker if it
        needs DuckDB after all (a session not seen yet), and the commit on a worker if the
        buffer is far behind."""
        try:
            with self._io_refused:  # lifted before any await: other tasks share this thread
                result = call()
        except WouldBlock:  # raised before anything changed
            return await _hand_over(self._jobs, call)
        if self._inside.take_owed_drain():
            with anyio.CancelScope(shield=True):  # the producer's commit, as in the sync store
                await _hand_over(self._jobs, self._inside.drain)
        if self._turns.over():  # let the loop's timers, I/O and other tasks run
            await _yield_to_loop()
        return result

    def _caught_up(self, call: Callable[[], T]) -> T:
        """Batched mode: commit the write buffer (waiting for a flush in progress), then
        ``call()``: the calling task's buffered rows are committed before it reads."""
        with self.sync.transaction():  # commits every buffered row first, on its own
            pass
        return call()

    # --- blocks -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """:meth:`SessionStore.transaction`, for ``async with``: every call inside the block
        (from this task, or tasks it starts inside) runs on the block's own thread and joins
        the transaction. Leaving the block by an exception or a cancellation rolls it all
        back; nesting joins the outer block, as in the sync store."""
        async with self._sync_block(self.sync.transaction, transaction=True):
            yield

    @contextlib.asynccontextmanager
    async def consistent_read(self) -> AsyncIterator[None]:
        """:meth:`SessionStore.consistent_read`, for ``async with``: the calls inside the block
        read one snapshot (they run on the block's own thread)."""
        async with self._sync_block(self.sync.consistent_read, transaction=False):
            yield

    @contextlib.asynccontextmanager
    async def _sync_block(
        self, open_block: Callable[[], AbstractContextManager[None]], *, transaction: bool
    ) -> AsyncIterator[None]:
        """Enter the sync block ``open_block()`` on a thread of its own (the enclosing block's,
        if any), route this context's calls to it, and exit it there."""
        outer = self._block.get()
        thread = outer if outer is not None and outer.alive else None
        owned = thread is None
        if thread is None:
            thread = _BlockThread()
            self._blocks = [b for b in self._blocks if b.thread.is_alive()]
            self._blocks.append(thread)
        catch_up = owned and self._owes.get() and bool(self.sync.pending_writes)
        entered: list[AbstractContextManager[None]] = []

        def enter() -> None:
            if catch_up:
                self._caught_up(lambda: None)
            block = open_block()
            block.__enter__()
            entered.append(block)

        def leave(failed: bool) -> None:
            if failed:
                entered[0].__exit__(_Abandoned, _Abandoned(), None)
            else:
                entered[0].__exit__(None, None, None)

        try:
            await thread.call(enter)
            reset = self._block.set(thread)
            thread.transactions += int(transaction)
            try:
                yield
            finally:
                thread.transactions -= int(transaction)
                self._block.reset(reset)
        except BaseException:
            if entered:
                with anyio.CancelScope(shield=True), contextlib.suppress(_Abandoned):
                    await thread.call(functools.partial(leave, True))
            raise
        else:
            with anyio.CancelScope(shield=True):  # a commit, once started, completes
                await thread.call(functools.partial(leave, False))
        finally:
            if owned:
                thread.stop()

    @property
    def in_transaction(self) -> bool:
        """True inside an ``async with store.transaction():`` block (in this task's context)."""
        block = self._block.get()
        return block is not None and block.alive and block.transactions > 0

    # --- closing ------------------------------------------------------------------------

    async def close(self) -> None:
        """:meth:`SessionStore.close` on a worker thread; it finishes even if cancelled. The
        worker threads end once the calls handed to them have run, and ``close()`` returns
        once they have ended (off the loop): a thread still ending (dropping its DuckDB
        cursor) while the interpreter exits would abort the process."""
        with anyio.CancelScope(shield=True):
            try:
                await self._run(self.sync.close, name="close")
            finally:
                if self.sync.closed and not self._stopped:
                    self._stopped = True
                    self._jobs.stop()
                if self._stopped:  # closed, even if it raised (a FlushError, say)
                    # Not the threads of blocks still open (close() may be called in one).
                    threads = [*self._jobs.threads,
                               *(b.thread for b in self._blocks if not b.alive)]
                    if any(thread.is_alive() for thread in threads):
                        await _on_a_thread_of_its_own(functools.partial(_join, threads))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.sync!r}>"


# --- deriving the surface from the sync class -------------------------------------------


def _public(cls: type) -> Iterator[tuple[str, Any]]:
    """The public methods and properties of ``cls`` that the surface derives, by name."""
    for name in sorted(dir(cls)):
        if name.startswith("_") or name in _HAND_WRITTEN or name in _CONSTRUCTORS:
            continue
        attribute = inspect.getattr_static(cls, name)
        if inspect.isfunction(attribute) or isinstance(attribute, property):
            yield name, attribute


def _twin(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    if name in _BUFFERED_RECORDS:  # returns None, never a relation: no _fetched (hot path)

        async def twin(self: AsyncSessionStore, /, *args: Any, **kwargs: Any) -> Any:
            call = functools.partial(getattr(self.sync, name), *args, **kwargs)
            return await self._run(call, name=name)

    else:

        async def twin(self: AsyncSessionStore, /, *args: Any, **kwargs: Any) -> Any:
            call = functools.partial(_fetched, getattr(self.sync, name), *args, **kwargs)
            return await self._run(call, name=name)

    functools.update_wrapper(twin, method)  # name, docstring, and the sync signature
    if name in _ASYNC_RETURNS:
        signature = inspect.signature(method)
        twin.__signature__ = signature.replace(  # type: ignore[attr-defined]
            return_annotation=_ASYNC_RETURNS[name]
        )
    return twin


def _passthrough(name: str, prop: property) -> property:
    def get(self: AsyncSessionStore) -> Any:
        return getattr(self.sync, name)

    functools.update_wrapper(get, prop.fget)  # type: ignore[arg-type]
    return property(get, doc=prop.__doc__)


def derive_surface(surface: type, sync: type) -> None:
    """Give ``surface`` an awaitable twin of each public method of ``sync`` and a property
    reading each public property (its blocks, ``close`` and constructors are hand-written)."""
    for name, attribute in _public(sync):
        if isinstance(attribute, property):
            setattr(surface, name, _passthrough(name, attribute))
        else:
            setattr(surface, name, _twin(name, attribute))


derive_surface(AsyncSurface, SessionStore)


# --- the typing stub ------------------------------------------------------------------------

_BUILTINS = frozenset({"None", "bool", "bytes", "dict", "float", "int", "list", "str", "tuple"})


def _annotation(function: Callable[..., Any], text: Any, imports: dict[str, str]) -> str:
    """``text`` (a string annotation of ``function``) with its names added to ``imports``."""
    if not isinstance(text, str):
        text = inspect.formatannotation(text)
    namespace = inspect.unwrap(function).__globals__
    for dotted in set(re.findall(r"[A-Za-z_][A-Za-z0-9_.]*", text)):
        name = dotted.split(".")[0]
        if name in _BUILTINS:
            continue
        value = namespace[name]
        if inspect.ismodule(value):  # e.g. ``_publish.Publisher``: import the module
            parent, _, last = value.__name__.rpartition(".")
            assert last == name, dotted
            imports[name] = parent
            continue
        home = getattr(value, "__module__", None)
        module = home if getattr(sys.modules.get(home or ""), name, None) is value else None
        imports[name] = module or inspect.unwrap(function).__module__
    return str(text)


def _parameters(function: Callable[..., Any], imports: dict[str, str]) -> str:
    out: list[str] = []
    star = False
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind is parameter.KEYWORD_ONLY and not star:
            out.append("*")
            star = True
        text = parameter.name
        if parameter.kind is parameter.VAR_POSITIONAL:
            text, star = f"*{text}", True
        elif parameter.kind is parameter.VAR_KEYWORD:
            text = f"**{text}"
        if parameter.annotation is not parameter.empty:
            text += f": {_annotation(function, parameter.annotation, imports)}"
        if parameter.default is not parameter.empty:
            text += f" = {parameter.default!r}"
        out.append(text)
    return ", ".join(out)


def render_stub() -> str:
    """The text of ``_aio_surface.pyi``: the surface's typed signatures, from the sync class."""
    imports: dict[str, str] = {}
    body: list[str] = []
    for name, attribute in _public(SessionStore):
        if isinstance(attribute, property):
            getter = attribute.fget
            assert getter is not None
            returns = _annotation(getter, inspect.signature(getter).return_annotation, imports)
            body += ["    @property", f"    def {name}(self) -> {returns}: ..."]
            continue
        returns = inspect.signature(attribute).return_annotation
        if name in _ASYNC_RETURNS:
            imports["SqlResult"] = "perspt_store.aio"
            shown = _ASYNC_RETURNS[name]
        else:
            shown = _annotation(attribute, returns, imports)
        body.append(f"    async def {name}({_parameters(attribute, imports)}) -> {shown}: ...")
    modules: dict[str, list[str]] = {}
    for name, module in imports.items():
        modules.setdefault(module, []).append(name)
    lines = [
        '"""Generated from SessionStore by `python -m perspt_store.aio --write-stub`; do not edit.',
        "",
        "tests/test_aio.py fails when this stub drifts from the sync class.",
        '"""',
        "",
    ]
    lines += [
        f"from {module} import {', '.join(sorted(names))}"
        for module, names in sorted(modules.items())
    ]
    lines += ["", "class AsyncSurface:", *body]
    return "\n".join(lines) + "\n"


def stub_path() -> Path:
    """Where the committed stub lives."""
    return Path(__file__).with_name("_aio_surface.pyi")


if __name__ == "__main__":  # pragma: no cover - a developer tool
    if sys.argv[1:] != ["--write-stub"]:
        sys.exit("usage: python -m perspt_store.aio --write-stub")
    stub_path().write_text(render_stub(), encoding="utf-8")

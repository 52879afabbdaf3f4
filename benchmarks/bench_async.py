"""AsyncSessionStore under an asyncio event loop: how late the loop runs, and throughput.

* Event-loop lag: TASKS tasks, each doing OPS durable ``record_node_state`` calls plus a read
  (``get_energy_history``) after each, while a ticker task asks to wake every 1 ms and records
  how late it wakes. Once through ``AsyncSessionStore``, once calling a ``SessionStore``
  directly from the same tasks (which blocks the loop). p50 / p99 / max of the lag, and the
  longest full (generation 2) garbage collection meanwhile, which stops every thread. The
  async store runs once more after ``gc.freeze()`` (the start-up step docs/async.md
  suggests), and once with the tasks making only buffered writes in batched durability (20
  ``record_energy`` per durable call of the other runs), which run on the loop's own thread.
  Beside each async run, the same ticker in a separate process (no GIL shared, no DuckDB):
  how late the OS alone wakes a thread on this machine meanwhile, the floor under any
  in-process figure.
* Throughput: durable ``record_energy`` calls per second with 1, 8 and 200 tasks through the
  async store, against the sync store called in a loop from one thread; both durability
  modes (batched includes the final ``flush()``). And reads (``get_energy_history``) the same
  way, where concurrency can help. Beside one task, the same calls handed to
  ``asyncio.to_thread`` (the standard library's way off the loop): what one hop costs in any
  design that keeps DuckDB off the event loop.
* One task, call by call: the same call through the sync store, the async store and
  ``asyncio.to_thread``, in a random order each round (three stores, three files), so the
  machine's drift falls on all three alike; the median time of each. The steadiest figure
  for what one task awaiting one call at a time pays for the hop.

Every run uses a fresh file store. Run alone: ``python benchmarks/bench_async.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from _common import SESSION, energy_row, node_state, print_table, session_record

import perspt_store as ps
from perspt_store.store.bulk import ARROW_MIN_ROWS

TICK = 0.001


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def ticker(lags: list[float], done: asyncio.Event) -> None:
    while not done.is_set():
        start = time.perf_counter()
        await asyncio.sleep(TICK)
        lags.append(time.perf_counter() - start - TICK)


OS_TICKER = """
import sys, time
lags = []
while sys.stdin.readline().strip() != "stop":  # one line per second of ticking
    end = time.perf_counter() + 1.0
    while time.perf_counter() < end:
        start = time.perf_counter()
        time.sleep(0.001)
        lags.append(time.perf_counter() - start - 0.001)
    print("tick", flush=True)
lags.sort()
print(lags[len(lags) // 2], lags[int(0.99 * len(lags))], lags[-1], len(lags))
"""


class OsTicker:
    """The 1 ms ticker in a process of its own, ticking in one-second rounds while the
    benchmark runs: how late the OS alone wakes a sleeping thread (scheduling noise)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", OS_TICKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True,
        )

    async def run(self, done: asyncio.Event) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        while True:
            self.process.stdin.write("go\n")
            self.process.stdin.flush()
            await asyncio.to_thread(self.process.stdout.readline)
            if done.is_set():
                break
        self.process.stdin.write("stop\n")
        self.process.stdin.flush()
        summary = await asyncio.to_thread(self.process.stdout.readline)
        p50, p99, worst, n = map(float, summary.split())
        self.process.wait()
        return {"p50 lag": f"{p50 * 1e3:.2f} ms", "p99 lag": f"{p99 * 1e3:.2f} ms",
                "max lag": f"{worst * 1e3:.1f} ms", "ticks": int(n)}


@contextlib.contextmanager
def full_collections() -> Iterator[list[float]]:
    """The seconds each full (generation 2) garbage collection takes inside the block."""
    pauses: list[float] = []
    started = [0.0]

    def note(phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - started[0])

    gc.callbacks.append(note)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(note)


@contextlib.contextmanager
def frozen(freeze: bool) -> Iterator[None]:
    """With ``freeze``, every object alive now is left out of garbage collections in the
    block (``gc.freeze()``, as an application would do once started)."""
    if freeze:
        gc.collect()
        gc.freeze()
    try:
        yield
    finally:
        if freeze:
            gc.unfreeze()


BATCHED_WRITES = 20
"""In the batched lag run, buffered ``record_energy`` calls per durable call of the others."""


async def lag_run(
    path: Path, tasks: int, ops: int, *, blocking: bool, max_threads: int, freeze: bool = False,
    batched: bool = False,
) -> list[dict[str, Any]]:
    """The ticker's lag while ``tasks`` tasks write and read (blocking: the sync store), and
    (not blocking) the OS ticker's beside it; with ``freeze``, after ``gc.freeze()``. With
    ``batched``, the tasks only make buffered writes (``record_energy``, batched durability),
    which run on the loop's own thread."""
    sync = ps.SessionStore.open(
        path, publish_interval=None, durability="batched" if batched else "immediate"
    )
    sync.create_session(session_record())
    store = ps.AsyncSessionStore(sync, max_threads=max_threads)

    async def node(task: int) -> None:
        if batched:
            for i in range(ops * BATCHED_WRITES):
                await store.record_energy(energy_row(task * ops * BATCHED_WRITES + i))
            return
        for i in range(ops):
            row = node_state(task, i % 5)
            if blocking:
                sync.record_node_state(row)
                sync.get_energy_history(SESSION, row.node_id)
                await asyncio.sleep(0)  # let the others (and the ticker) in between calls
            else:
                await store.record_node_state(row)
                await store.get_energy_history(SESSION, row.node_id)

    lags: list[float] = []
    done = asyncio.Event()
    with frozen(freeze), full_collections() as pauses:
        tick = asyncio.create_task(ticker(lags, done))
        os_ticker = None if blocking else OsTicker()
        os_tick = None if os_ticker is None else asyncio.create_task(os_ticker.run(done))
        await asyncio.sleep(0.05)  # the ticker is running before the load starts
        start = time.perf_counter()
        await asyncio.gather(*(node(t) for t in range(tasks)))
        elapsed = time.perf_counter() - start
        done.set()
        await tick
        await store.close()
    name = ("SessionStore, called from the tasks" if blocking
            else f"AsyncSessionStore, max_threads={max_threads}")
    if batched:
        name += ", batched record_energy only"
    rows = [{
        "calls": f"{tasks} x {ops * BATCHED_WRITES if batched else ops}",
        "store": name + (", after gc.freeze()" if freeze else ""),
        "p50 lag": f"{percentile(lags, 0.5) * 1e3:.2f} ms",
        "p99 lag": f"{percentile(lags, 0.99) * 1e3:.2f} ms",
        "max lag": f"{max(lags) * 1e3:.1f} ms",
        "longest full GC": f"{max(pauses) * 1e3:.1f} ms" if pauses else "none",
        "ticks": len(lags),
        "wall": f"{elapsed:.1f} s",
    }]
    if os_tick is not None:
        rows.append({"calls": "", "store": "  the OS meanwhile (a ticker in its own process)",
                     **await os_tick, "longest full GC": "", "wall": ""})
    return rows


def seeded(path: Path, durability: str = "immediate", *, rows: bool = True) -> ps.SessionStore:
    """A sync store with the benchmark's session and, with ``rows``, 5,000 energy rows over
    50 nodes for the reads."""
    store = ps.SessionStore.open(path, publish_interval=None, durability=durability)
    store.create_session(session_record())
    if rows:
        store.record_many(energy_row(i, nodes=50) for i in range(5_000))
    return store


def sync_rate(path: Path, calls: int, durability: str, read: bool) -> float:
    """Calls per second from one thread, calling the sync store in a loop."""
    with seeded(path, durability, rows=read) as store:
        start = time.perf_counter()
        for i in range(calls):
            if read:
                store.get_energy_history(SESSION, f"node-{i % 50:05d}")
            else:
                store.record_energy(energy_row(i))
        store.flush()
        return calls / (time.perf_counter() - start)


async def async_rate(path: Path, calls: int, tasks: int, durability: str, read: bool) -> float:
    """Calls per second through the async store, split over ``tasks`` tasks."""
    async with await ps.AsyncSessionStore.open(
        path, publish_interval=None, durability=durability
    ) as store:
        await store.create_session(session_record())
        if read:
            await store.record_many([energy_row(i, nodes=50) for i in range(5_000)])

        async def worker(first: int) -> None:
            for i in range(first, calls, tasks):
                if read:
                    await store.get_energy_history(SESSION, f"node-{i % 50:05d}")
                else:
                    await store.record_energy(energy_row(i))

        start = time.perf_counter()
        await asyncio.gather(*(worker(t) for t in range(tasks)))
        await store.flush()
        return calls / (time.perf_counter() - start)


async def to_thread_rate(path: Path, calls: int, durability: str, read: bool) -> float:
    """Calls per second from one task handing each sync call to ``asyncio.to_thread``."""
    with seeded(path, durability, rows=read) as store:
        start = time.perf_counter()
        for i in range(calls):
            if read:
                await asyncio.to_thread(store.get_energy_history, SESSION, f"node-{i % 50:05d}")
            else:
                await asyncio.to_thread(store.record_energy, energy_row(i))
        await asyncio.to_thread(store.flush)
        return calls / (time.perf_counter() - start)


async def call_by_call(folder: Path, calls: int, read: bool) -> dict[str, Any]:
    """One task: each round makes the same call through the sync store, the async store and
    ``asyncio.to_thread``, in a random order; the median seconds of each."""
    stores = [seeded(folder / f"{name}.db") for name in ("sync", "async", "to_thread")]
    sync, to_thread = stores[0], stores[2]
    async with ps.AsyncSessionStore(stores[1]) as store:
        times: dict[str, list[float]] = {"sync": [], "async": [], "to_thread": []}
        order = list(times)
        for i in range(calls):
            node, row = f"node-{i % 50:05d}", energy_row(i)
            random.shuffle(order)
            for way in order:
                start = time.perf_counter()
                if way == "sync":
                    sync.get_energy_history(SESSION, node) if read else sync.record_energy(row)
                elif way == "async":
                    await (store.get_energy_history(SESSION, node) if read
                           else store.record_energy(row))
                elif read:
                    await asyncio.to_thread(to_thread.get_energy_history, SESSION, node)
                else:
                    await asyncio.to_thread(to_thread.record_energy, row)
                times[way].append(time.perf_counter() - start)
    sync.close()
    to_thread.close()
    base = statistics.median(times["sync"])
    row_out: dict[str, Any] = {"call": "get_energy_history" if read else "record_energy",
                               "durability": "immediate", "rounds": calls}
    for way, label in (("sync", "sync"), ("async", "AsyncSessionStore"),
                       ("to_thread", "asyncio.to_thread")):
        median = statistics.median(times[way])
        row_out[label] = f"{median * 1e3:.3f} ms ({base / median:.2f}x)"
    return row_out


def table(title: str, rows: list[dict[str, Any]]) -> None:
    header = list(rows[0])
    print_table(title, header, [[str(row[h]) for h in header] for row in rows])


def median_of(repeats: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    args = parser.parse_args()
    tasks, ops = (200, 10) if args.quick else (200, 50)
    calls = {"immediate": 500 if args.quick else 2_000, "batched": 5_000 if args.quick else 20_000}
    reads = 1_000 if args.quick else 4_000
    repeats = 1 if args.quick else 3

    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(10**6))

        def fresh() -> Path:
            return Path(tmp) / f"bench-{next(counter)}.db"

        def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
            return asyncio.run(coroutine)

        def sync_rate_fresh(n: int, durability: str, read: bool) -> float:
            return sync_rate(fresh(), n, durability, read)

        def async_rate_fresh(n: int, tasks: int, durability: str, read: bool) -> float:
            return float(run(async_rate(fresh(), n, tasks, durability, read)))

        def to_thread_rate_fresh(n: int, durability: str, read: bool) -> float:
            return float(run(to_thread_rate(fresh(), n, durability, read)))

        lag_rows = [
            *run(lag_run(fresh(), tasks, ops, blocking=False, max_threads=4)),
            *run(lag_run(fresh(), tasks, ops, blocking=False, max_threads=4, freeze=True)),
            *run(lag_run(fresh(), tasks, ops, blocking=False, max_threads=2)),
            *run(lag_run(fresh(), tasks, ops, blocking=False, max_threads=4, batched=True)),
            *run(lag_run(fresh(), tasks, ops, blocking=True, max_threads=1)),
        ]
        table(f"Event-loop lag (ticker every {TICK * 1e3:.0f} ms, durable writes)", lag_rows)

        # One-time costs of the process (the first Arrow bulk insert imports pyarrow, and
        # pyarrow imports pandas if it is installed: about half a second) are paid here, so
        # they land on neither side of the comparison.
        for durability in ("immediate", "batched"):
            sync_rate_fresh(2 * ARROW_MIN_ROWS, durability, False)
            async_rate_fresh(2 * ARROW_MIN_ROWS, 1, durability, False)

        rows = []
        for what, durability, n, read in (
            ("record_energy", "immediate", calls["immediate"], False),
            ("record_energy", "batched", calls["batched"], False),
            ("get_energy_history", "immediate", reads, True),
        ):
            row: dict[str, Any] = {"call": what, "durability": durability, "calls": n}
            base = median_of(repeats, functools.partial(sync_rate_fresh, n, durability, read))
            row["sync, 1 thread"] = f"{base:,.0f}/s"
            for t in (1, 8, 200):
                rate = median_of(
                    repeats, functools.partial(async_rate_fresh, n, t, durability, read)
                )
                label = f"async, {t} task{'s' if t > 1 else ''}"
                row[label] = f"{rate:,.0f}/s ({rate / base:.2f}x)"
                if t == 1:
                    rate = median_of(
                        repeats, functools.partial(to_thread_rate_fresh, n, durability, read)
                    )
                    row["to_thread, 1 task"] = f"{rate:,.0f}/s ({rate / base:.2f}x)"
            rows.append(row)
        table("Throughput (calls per second; x: against the sync store)", rows)

        rounds = 300 if args.quick else 1_000
        rows = []
        for read in (False, True):
            folder = Path(tmp) / f"call-by-call-{read}"
            folder.mkdir()
            rows.append(run(call_by_call(folder, rounds, read)))
        table("One task, call by call (median per call; x: sync time / this time)", rows)


if __name__ == "__main__":
    main()

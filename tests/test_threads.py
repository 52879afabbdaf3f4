"""Threads: one store shared by 8 threads that write and read at once loses nothing,
duplicates nothing, keeps each thread's order, and keeps a consistent Merkle log.

Each thread owns its node ids, so what it wrote can be told apart: energies carry the
thread's write counter in ``v_total``, LLM requests in ``tokens_in``, node states in
``attempt_count``. Writes mix single records, ``record_many`` batches, ``transaction()``
blocks and Merkle commits; every few writes the thread reads its own history back (it must
see every write it made, in order) and reads other tables that other threads are writing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import perspt_store as ps
from conftest import run_threads as run_in_threads

THREADS = 8
SESSION = "threads"


@dataclass
class Written:
    """What one thread wrote, in its program order."""

    energies: list[int] = field(default_factory=list)
    llm: list[int] = field(default_factory=list)
    nodes: list[tuple[str, int]] = field(default_factory=list)
    writes: int = 0
    """Write calls made (a batch or a transaction counts once)."""
    reads: int = 0


def _energy(t: int, k: int) -> ps.EnergyRecord:
    return ps.EnergyRecord(node_id=f"t{t}", session_id=SESSION, v_total=float(k), v_syn=k / 7)


def _llm(t: int, k: int) -> ps.LlmRequestRecord:
    return ps.LlmRequestRecord(
        session_id=SESSION, node_id=f"t{t}", model="m", prompt=f"{t}:{k} ü'", tokens_in=k
    )


def _node(t: int, k: int) -> ps.NodeStateRecord:
    return ps.NodeStateRecord(
        node_id=f"t{t}-n{k % 3}", session_id=SESSION, state="RUNNING", attempt_count=k
    )


def worker(store: ps.SessionStore, t: int, n_writes: int, out: Written) -> None:
    k_energy = k_llm = k_node = 0
    for w in range(n_writes):
        if w % 50 == 24:  # a batch over two tables
            rows: list[ps.Row] = []
            for _ in range(3):
                rows.append(_energy(t, k_energy))
                out.energies.append(k_energy)
                k_energy += 1
            rows.append(_llm(t, k_llm))
            out.llm.append(k_llm)
            k_llm += 1
            store.record_many(rows)
        elif w % 100 == 13:  # a transaction: a commit and an energy, atomically
            with store.transaction():
                store.record_node_state(_node(t, k_node))
                store.record_energy(_energy(t, k_energy))
            out.nodes.append((f"t{t}-n{k_node % 3}", k_node))
            out.energies.append(k_energy)
            k_node += 1
            k_energy += 1
        elif w % 25 == 5:
            store.record_node_state(_node(t, k_node))
            out.nodes.append((f"t{t}-n{k_node % 3}", k_node))
            k_node += 1
        elif w % 2:
            store.record_llm_request(_llm(t, k_llm))
            out.llm.append(k_llm)
            k_llm += 1
        else:
            store.record_energy(_energy(t, k_energy))
            out.energies.append(k_energy)
            k_energy += 1
        out.writes += 1
        if w % 50 == 0:  # read your own writes, in order, while others write
            mine = [int(e.v_total) for e in store.get_energy_history(SESSION, f"t{t}")]
            assert mine == out.energies, f"thread {t} reads back {len(mine)} energies"
            latest = {n.node_id: n.attempt_count for n in store.get_latest_node_states(SESSION)}
            for node_id, k in out.nodes[-3:]:
                assert latest[node_id] == k
            assert store.get_global_llm_summary().count >= len(out.llm)
            out.reads += 3


def run_threads(store: ps.SessionStore, n_writes: int) -> list[Written]:
    store.create_session(ps.SessionRecord(session_id=SESSION, task="t", working_dir="/w"))
    written = [Written() for _ in range(THREADS)]
    barrier = threading.Barrier(THREADS)

    def run(t: int) -> None:
        barrier.wait()
        worker(store, t, n_writes, written[t])

    run_in_threads(run, THREADS)
    return written


def check(store: ps.SessionStore, written: list[Written]) -> None:
    # Batched mode: a thread reads its own writes, not the rows other threads buffered;
    # commit them. (A no-op in immediate mode.)
    store.flush()
    energies = store.get_session_energy_history(SESSION)
    llm = store.get_llm_requests(SESSION)
    nodes = store.get_node_states(SESSION)
    for t, w in enumerate(written):
        # Nothing lost, nothing duplicated, and each thread's writes in its order.
        assert [int(e.v_total) for e in energies if e.node_id == f"t{t}"] == w.energies
        assert [r.tokens_in for r in llm if r.node_id == f"t{t}"] == w.llm
        mine = [(n.node_id, n.attempt_count) for n in nodes if n.node_id.startswith(f"t{t}-")]
        assert mine == w.nodes
    assert len(energies) == sum(len(w.energies) for w in written)
    assert len(llm) == sum(len(w.llm) for w in written)
    assert len(nodes) == sum(len(w.nodes) for w in written)
    # Insertion order is the id order, ids are unique.
    for rows in (energies, llm, nodes):
        ids = [r.id for r in rows]
        assert ids == sorted(set(ids))
    # One contiguous commit log, one leaf per node state, in insertion order; it verifies.
    log = store.get_commit_log(SESSION)
    assert [c.seq for c in log] == list(range(len(nodes)))
    assert [c.node_id for c in log] == [n.node_id for n in nodes]
    report = store.verify_session(SESSION)
    assert report.ok, report.problems
    assert store.get_session(SESSION).merkle_root == log[-1].state_root  # type: ignore[union-attr]


Opener = Callable[[Path], ps.SessionStore]
OPENERS: dict[str, Opener] = {
    "file": lambda p: ps.SessionStore.open(p, publish_interval=0.2),
    "memory": lambda p: ps.SessionStore.in_memory(sessions_dir=p.parent),
    "batched": lambda p: ps.SessionStore.open(p, durability="batched", flush_interval=0.01),
}


@pytest.mark.parametrize("kind", OPENERS)
def test_eight_threads_writing_and_reading_lose_and_reorder_nothing(
    kind: str, db_path: Path
) -> None:
    with OPENERS[kind](db_path) as store:
        written = run_threads(store, 100)
        check(store, written)
    assert sum(w.writes for w in written) == THREADS * 100


@pytest.mark.slow
def test_eight_threads_with_2000_writes_each(db_path: Path) -> None:
    """Group commit (batched) keeps this within the test budget: the appends are buffered,
    node states, batches and transactions still commit one by one under the write lock."""
    kind = "batched"
    with OPENERS[kind](db_path) as store:
        written = run_threads(store, 2000)
        check(store, written)
        assert all(w.writes == 2000 for w in written)
        rows = sum(len(w.energies) + len(w.llm) + len(w.nodes) for w in written)
    # What the threads wrote is durable: a fresh open reads exactly the same.
    with ps.SessionStore.open_read_only(db_path) as again:
        check(again, written)
    print(f"\n{kind}: {THREADS} threads x 2000 writes = {rows} rows, all present, in order")

"""Hundreds of tasks share one AsyncSessionStore, interleaving writes, reads, transactions and
snapshots, and are cancelled at random points. Afterwards: nothing acknowledged is missing,
nothing cancelled is half there, every session verifies, and each task's rows are in the
order it wrote them. Runs under asyncio and trio, in both durability modes, on a file."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

import perspt_store as ps

pytestmark = pytest.mark.anyio

TASKS = 240
OPS = 8
SESSIONS = [f"s{n}" for n in range(6)]
TXN_ROWS = 3


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Ledger:
    """What the tasks were told: acknowledged writes, and writes started but not acknowledged
    (cancelled: each may be there whole, or not at all)."""

    energy: set[tuple[str, int, int]] = field(default_factory=set)  # (session, task, k)
    states: set[tuple[str, int, int]] = field(default_factory=set)
    transactions: set[tuple[str, int, int]] = field(default_factory=set)
    attempted_transactions: set[tuple[str, int, int]] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)


class Progress:
    """Counts a task's store calls; ``reached`` is set when the ``target``-th one starts."""

    def __init__(self, target: int) -> None:
        self.calls, self.target, self.reached = 0, target, anyio.Event()

    def step(self) -> None:
        self.calls += 1
        if self.calls == self.target:
            self.reached.set()


async def one_task(
    store: ps.AsyncSessionStore, task: int, ledger: Ledger, progress: Progress
) -> None:
    """A node's life: OPS random operations; k numbers them, so order is checkable."""
    rng = random.Random(task)
    node, group_node = f"t{task}", f"x{task}"
    seen: dict[str, int] = {}  # per session: how many energy rows this task acknowledged
    for k in range(OPS):
        session = rng.choice(SESSIONS)
        op = rng.choice(["energy", "energy", "state", "transaction", "read", "snapshot"])
        progress.step()
        if op == "energy":
            await store.record_energy(ps.EnergyRecord(
                session_id=session, node_id=node, v_total=float(k)))
            ledger.energy.add((session, task, k))
            seen[session] = seen.get(session, 0) + 1
        elif op == "state":
            await store.record_node_state(ps.NodeStateRecord(
                session_id=session, node_id=node, state=f"k{k}"))
            ledger.states.add((session, task, k))
        elif op == "transaction":
            ledger.attempted_transactions.add((session, task, k))
            async with store.transaction():
                for j in range(TXN_ROWS):
                    progress.step()
                    await store.record_energy(ps.EnergyRecord(
                        session_id=session, node_id=group_node, v_total=float(k * 10 + j)))
            ledger.transactions.add((session, task, k))
        elif op == "read":  # a task reads its own writes, in its order
            history = [int(e.v_total) for e in await store.get_energy_history(session, node)]
            if history != sorted(history) or len(history) < seen.get(session, 0):
                ledger.problems.append(f"task {task} read {history} in {session}")
        else:
            snapshot = await store.load_session_snapshot(session)
            if snapshot.session_id != session:
                ledger.problems.append(f"snapshot of {session} is {snapshot.session_id}")


async def cancel_at(scope: anyio.CancelScope, progress: Progress) -> None:
    """Cancel ``scope`` once its task has started its ``target``-th store call: the
    cancellation lands while the task awaits that call."""
    await progress.reached.wait()
    scope.cancel()


async def run_task(
    store: ps.AsyncSessionStore, task: int, ledger: Ledger, tg: anyio.abc.TaskGroup
) -> None:
    progress = Progress(random.Random(-task).randrange(1, OPS * 2))
    with anyio.CancelScope() as scope:
        if task % 3 == 0:  # a third are cancelled at a random point of their life
            tg.start_soon(cancel_at, scope, progress)
        try:
            await one_task(store, task, ledger, progress)
        finally:
            progress.reached.set()  # ended first: the canceller has nothing left to do


@pytest.mark.slow
@pytest.mark.parametrize("durability", ["immediate", "batched"])
async def test_hundreds_of_tasks_with_cancellations_lose_and_tear_nothing(
    tmp_path: Path, durability: str
) -> None:
    ledger = Ledger()
    options = {"durability": durability, "publish_interval": None}
    async with await ps.AsyncSessionStore.open(tmp_path / "perspt.db", **options) as store:
        for session in SESSIONS:
            await store.create_session(ps.SessionRecord(
                session_id=session, task="t", working_dir="/w", status="RUNNING"))
        async with anyio.create_task_group() as tg:
            for task in range(TASKS):
                tg.start_soon(run_task, store, task, ledger, tg)
        await store.flush()

        assert ledger.problems == []
        assert ledger.transactions, "no transaction was acknowledged: the test tests nothing"
        cancelled = ledger.attempted_transactions - ledger.transactions
        assert cancelled, "no transaction was cancelled: the test tests nothing"
        for session in SESSIONS:
            assert (await store.verify_session(session)).ok
            energy = await store.get_session_energy_history(session)
            mine = [(int(e.node_id[1:]), int(e.v_total)) for e in energy if e.node_id[0] == "t"]
            # Per-task order, and nothing acknowledged missing.
            for task in {t for t, _ in mine}:
                ks = [k for t, k in mine if t == task]
                assert ks == sorted(set(ks)), (session, task, ks)
            acked = {(t, k) for s, t, k in ledger.energy if s == session}
            assert acked <= set(mine)
            # Transactions: all of a block's rows, or none; acknowledged ones all.
            groups = Counter(
                (int(e.node_id[1:]), int(e.v_total) // 10) for e in energy if e.node_id[0] == "x"
            )
            assert set(groups.values()) <= {TXN_ROWS}, groups
            assert {(t, k) for s, t, k in ledger.transactions if s == session} <= set(groups)
            assert set(groups) <= {(t, k) for s, t, k in ledger.attempted_transactions
                                   if s == session}
            # Node states: acknowledged ones present, each task's in order.
            states = [(int(r.node_id[1:]), int(r.state[1:]))
                      for r in await store.get_node_states(session)]
            assert {(t, k) for s, t, k in ledger.states if s == session} <= set(states)
            for task in {t for t, _ in states}:
                ks = [k for t, k in states if t == task]
                assert ks == sorted(set(ks)), (session, task, ks)

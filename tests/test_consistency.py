"""Consistent reads: every public read that runs more than one statement sees one snapshot of
the database, whatever other threads or store handles commit meanwhile.

Two kinds of test. The structural one checks, with DuckDB's own transaction ids, that each
read method of ``SessionStore`` runs all its statements in one transaction (a new read method
joins the check through ``test_read_only.READS``). The behavioural ones run a writer that
commits related rows together while readers verify, snapshot and summarise the session
hundreds of times: a false tamper alarm or a torn snapshot fails them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import perspt_store as ps
from conftest import run_threads
from test_read_only import READS, S, populate

ROUNDS = 200


def _transaction_ids(store: ps.SessionStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Before each statement the store runs, record the id of the transaction it runs in
    (DuckDB gives every autocommitted statement a new one)."""
    seen: list[int] = []
    real = store._execute

    def spy(sql: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(store._cursor().execute("SELECT txid_current()").fetchall()[0][0])
        return real(sql, *args, **kwargs)

    monkeypatch.setattr(store, "_execute", spy)
    return seen


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("consistency") / "perspt.db"
    populate(path)
    return path


@pytest.mark.parametrize("method", sorted(READS))
def test_every_read_runs_its_statements_in_one_transaction(
    method: str, populated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ps.SessionStore.open(populated, publish_interval=None) as store:
        ids = _transaction_ids(store, monkeypatch)
        READS[method](store)
        transactions = len(set(ids))
        assert transactions <= 1, f"{method}: {len(ids)} statements, {transactions} transactions"


# --- a live writer ---------------------------------------------------------------------------


class Writer:
    """Commits, in one transaction each, a node state and an energy row that carry the same
    counter (``attempt_count`` and ``v_total``), cycling over a few nodes, until stopped."""

    def __init__(self, store: ps.SessionStore, nodes: int = 4) -> None:
        self.store, self.nodes = store, nodes
        self.stop = threading.Event()
        self.commits = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            k = 0
            while not self.stop.is_set():
                k += 1
                node = f"n{k % self.nodes}"
                with self.store.transaction():
                    self.store.record_node_state(
                        ps.NodeStateRecord(
                            node_id=node, session_id=S, state="RUNNING", attempt_count=k
                        )
                    )
                    self.store.record_energy(
                        ps.EnergyRecord(node_id=node, session_id=S, v_total=float(k))
                    )
                self.commits = k
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        assert self.error is None, self.error
        assert self.commits > 0


def _store_pair(kind: str, tmp_path: Path) -> Iterator[tuple[ps.SessionStore, ps.SessionStore]]:
    """(writer's store, reader's store): one store shared by threads, or two handles on one
    file in one process."""
    path = tmp_path / "perspt.db"
    with ps.SessionStore.open(path, publish_interval=None) as writer:
        writer.create_session(ps.SessionRecord(session_id=S, task="t", working_dir="/w"))
        if kind == "shared":
            yield writer, writer
        else:
            with ps.SessionStore.open(path, publish_interval=None) as reader:
                yield writer, reader


@pytest.fixture(params=["shared", "two-handles"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    yield from _store_pair(request.param, tmp_path)


def _repeat_while_writing(
    writer_store: ps.SessionStore, check: Callable[[], list[str]]
) -> list[str]:
    failures: list[str] = []
    with Writer(writer_store):
        for _ in range(ROUNDS):
            failures += check()
    return failures


def test_verify_session_reports_no_tampering_while_another_thread_commits(pair: Any) -> None:
    writer, reader = pair

    def check() -> list[str]:
        report = reader.verify_session(S)
        return [f"{p.kind}: {p.detail}" for p in report.problems]

    assert _repeat_while_writing(writer, check) == []
    assert writer.verify_session(S).ok


def test_load_session_snapshot_never_pairs_states_and_energy_of_different_commits(
    pair: Any,
) -> None:
    writer, reader = pair

    def check() -> list[str]:
        snapshot = reader.load_session_snapshot(S)
        torn = []
        for detail in snapshot.node_details:
            state = detail.record.attempt_count
            energy = detail.energy_history[-1].v_total if detail.energy_history else None
            if energy != float(state):
                torn.append(f"{detail.node_id}: state {state}, energy {energy}")
        return torn

    assert _repeat_while_writing(writer, check) == []


def test_session_summary_counts_agree_with_each_other_while_writing(pair: Any) -> None:
    writer, reader = pair

    def check() -> list[str]:
        summary = reader.session_summary(S)
        latest = reader.get_latest_node_states(S)  # its own read: only a sanity bound
        nodes = summary.total_nodes
        return [] if nodes <= max(len(latest), 4) else [f"{nodes} nodes"]

    assert _repeat_while_writing(writer, check) == []


def test_checkpoint_and_proofs_describe_one_log_while_writing(pair: Any) -> None:
    writer, reader = pair

    def check() -> list[str]:
        checkpoint = reader.checkpoint(S)
        problems = []
        if checkpoint.size:
            proof = reader.inclusion_proof(S, checkpoint.size - 1)
            if not proof.verify():
                problems.append("inclusion proof does not verify")
            commit = reader.get_commit_log(S)[checkpoint.size - 1]
            if commit.state_root != checkpoint.state_root and commit.log_size == checkpoint.size:
                problems.append("checkpoint state root is not its last commit's")
        return problems

    assert _repeat_while_writing(writer, check) == []


def test_a_read_inside_a_transaction_sees_the_transactions_own_writes(
    store: ps.SessionStore,
) -> None:
    store.create_session(ps.SessionRecord(session_id=S, task="t", working_dir="/w"))
    with store.transaction():
        store.record_node_state(ps.NodeStateRecord(node_id="a", session_id=S, state="R"))
        assert store.verify_session(S).ok
        assert [d.node_id for d in store.load_session_snapshot(S).node_details] == ["a"]
    assert store.verify_session(S).log_size == 1


def test_a_failing_read_leaves_no_transaction_open(store: ps.SessionStore) -> None:
    with pytest.raises(ps.SessionNotFoundError):
        store.verify_session("missing")
    with pytest.raises(ps.SessionNotFoundError):
        store.load_session_snapshot("missing")
    store.create_session(ps.SessionRecord(session_id=S, task="t", working_dir="/w"))
    # Had a read left this thread's transaction open, the session would be invisible to
    # every other thread's cursor until it ended.
    seen: list[object] = []
    other = threading.Thread(target=lambda: seen.append(store.get_session(S)))
    other.start()
    other.join()
    assert seen != [None]


# --- two store handles on one file in one process ---------------------------------------------


def _node(node: str, k: int) -> ps.NodeStateRecord:
    return ps.NodeStateRecord(node_id=node, session_id=S, state="RUNNING", attempt_count=k)


@pytest.fixture
def handles(tmp_path: Path) -> Iterator[tuple[ps.SessionStore, ps.SessionStore]]:
    """Two SessionStores on one file in one process; the session exists."""
    path = tmp_path / "perspt.db"
    with (
        ps.SessionStore.open(path, publish_interval=None) as a,
        ps.SessionStore.open(path, publish_interval=None) as b,
    ):
        a.create_session(ps.SessionRecord(session_id=S, task="t", working_dir="/w"))
        yield a, b


def _at_once(rounds: int, *calls: Callable[[int], object]) -> None:
    """Run each call ``rounds`` times (with the round number), each in its own thread, all
    at once; re-raise the first exception."""
    run_threads(lambda t: [calls[t](k) for k in range(rounds)], len(calls))


def test_two_handles_take_turns_committing_to_one_session(handles: Any) -> None:
    a, b = handles
    seqs = [
        a.record_node_state(_node("x", 1)).seq,
        b.record_node_state(_node("y", 2)).seq,
        a.record_node_state(_node("x", 3)).seq,  # A's cached log is one commit behind
        b.record_node_state(_node("z", 4)).seq,
    ]
    with a.transaction():  # behind again, inside a transaction
        seqs.append(a.record_node_state(_node("y", 5)).seq)
    seqs.append(b.rollback(S, to_seq=1).seq)
    seqs.append(a.record_node_state(_node("x", 6)).seq)
    assert seqs == [0, 1, 2, 3, 4, seqs[5], seqs[5] + 1]
    assert a.verify_session(S).ok and b.verify_session(S).ok
    assert a.state_root(S) == b.state_root(S) == b.verify_session(S).state_root


def test_two_handles_committing_at_once_lose_nothing(handles: Any) -> None:
    a, b = handles
    rounds = 100
    _at_once(
        rounds,
        lambda k: a.record_node_state(_node("p", k)),
        lambda k: b.record_node_state(_node("q", k)),
    )
    report = a.verify_session(S)
    assert report.ok, report.problems
    assert report.log_size == 2 * rounds
    latest = {r.node_id: r.attempt_count for r in b.get_latest_node_states(S)}
    assert latest == {"p": rounds - 1, "q": rounds - 1}


# --- threads: reads never wait for writers; cursors of exited threads are released ----------


def test_a_new_thread_reads_while_another_holds_a_transaction(store: ps.SessionStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    store.create_session(ps.SessionRecord(session_id=S, task="t", working_dir="/w"))
    with ThreadPoolExecutor(max_workers=2) as pool, store.transaction():
        store.record_energy(ps.EnergyRecord(node_id="n", session_id=S, v_total=1.0))
        # Fresh threads' first calls: they see the last commit, not this transaction.
        futures = [pool.submit(store.get_energy_history, S, "n") for _ in range(4)]
        futures.append(pool.submit(store.load_session_snapshot, S))
        results = [future.result(timeout=30) for future in futures]
    assert results[:4] == [[], [], [], []]
    assert len(store.get_energy_history(S, "n")) == 1


def test_cursors_of_exited_threads_are_released(store: ps.SessionStore) -> None:
    store.create_session(ps.SessionRecord(session_id=S, task="t", working_dir="/w"))
    for _ in range(500):
        thread = threading.Thread(target=store.get_session, args=(S,))
        thread.start()
        thread.join()
    assert store.get_session(S) is not None
    assert len(store._cursors) <= 3  # this thread's, the last one's at most, and one spare


def _a_batch(store: ps.SessionStore, k: int) -> None:
    store.record_many([_node("p", k), _node("p2", k)])


def _a_rollback(store: ps.SessionStore, k: int) -> None:
    store.record_node_state(_node("p", k))
    store.rollback(S, to_seq=0)


def _a_status(store: ps.SessionStore, k: int) -> None:
    store.update_session_status(S, f"RUNNING-{k}")
    store.upsert_budget_envelope(ps.BudgetEnvelopeRow(session_id=S, max_steps=k))


@pytest.mark.parametrize("write", [_a_batch, _a_rollback, _a_status], ids=lambda f: f.__name__)
def test_two_handles_racing_on_one_session_lose_nothing(handles: Any, write: Any) -> None:
    """Whole transactions (record_many, rollback) and updates of the session row run again
    when the other handle wins a race, instead of failing with a false duplicate."""
    a, b = handles
    a.record_node_state(_node("first", 0))
    _at_once(40, lambda k: write(a, k), lambda k: b.record_node_state(_node("q", k)))
    report = b.verify_session(S)
    assert report.ok, report.problems


def test_a_race_inside_a_callers_transaction_says_to_run_it_again(handles: Any) -> None:
    a, b = handles
    with pytest.raises(ps.StoreError, match="run it again"), a.transaction():
        a.get_session(S)  # the transaction's snapshot is taken
        b.record_node_state(_node("q", 1))  # commits first, to the same session
        a.record_node_state(_node("p", 1))
    assert [c.node_id for c in a.get_commit_log(S)] == ["q"]
    assert a.verify_session(S).ok
    a.record_node_state(_node("p", 3))  # and the next commit goes through
    assert a.verify_session(S).log_size == 2

"""Regressions found auditing issue #10 item by item: siblings of its defects that the first
round of fixes missed. Deterministic: threads are joined, never timed."""

from __future__ import annotations

import threading
from pathlib import Path

import perspt_store as ps
from conftest import run_threads

S = "s"


def _node(node: str, k: int) -> ps.NodeStateRecord:
    return ps.NodeStateRecord(node_id=node, session_id=S, state="RUNNING", attempt_count=k)


def _in_another_thread(call: object) -> object:
    out: list[object] = []
    run_threads(lambda _: out.append(call()), 1)  # type: ignore[operator]
    return out[0]


def test_rollback_plan_from_a_reader_never_rewinds_a_batched_writers_log(tmp_path: Path) -> None:
    """rollback_plan is a read: it must not replace the cached commit log (which holds the
    commits buffered but not flushed yet) with the older one its snapshot sees, or the next
    buffered commit reuses a seq and its flush fails (an acknowledged commit lost)."""
    with ps.SessionStore.open(
        tmp_path / "p.db", publish_interval=None, durability="batched", flush_interval=3600
    ) as store:
        store.create_session(ps.SessionRecord(session_id=S, task="t", working_dir="/w"))
        store.record_node_state(_node("a", 1))
        store.flush()
        store.record_node_state(_node("a", 2))  # seq 1, buffered
        plan = _in_another_thread(lambda: store.rollback_plan(S, to_seq=0))
        assert plan == []  # the reader's snapshot: seq 0 is the head, nothing to restore
        third = store.record_node_state(_node("b", 3))
        assert third.seq == 2
        store.flush()  # raised FlushError: seq 1 already exists
        report = store.verify_session(S)
        assert report.ok and report.log_size == 3, report.problems


def test_rollback_plan_while_a_batched_writer_commits_loses_nothing(tmp_path: Path) -> None:
    with ps.SessionStore.open(
        tmp_path / "p.db", publish_interval=None, durability="batched", flush_rows=5
    ) as store:
        store.create_session(ps.SessionRecord(session_id=S, task="t", working_dir="/w"))
        store.record_node_state(_node("a", 0))
        store.flush()
        done = threading.Event()
        plans = [0]

        def work(t: int) -> None:
            if t == 0:
                try:
                    for k in range(300):
                        store.record_node_state(_node(f"n{k % 3}", k))
                    store.flush()
                finally:
                    done.set()
            else:
                while not done.is_set():
                    store.rollback_plan(S, to_seq=0)
                    plans[0] += 1

        run_threads(work, 2)
        report = store.verify_session(S)
        assert report.ok and report.log_size == 301, (report.log_size, report.problems)


def test_a_batched_handle_commits_after_another_handle_without_reusing_a_seq(
    tmp_path: Path,
) -> None:
    """Item 7 in batched mode: a handle whose buffer holds no commits must not compute the
    next commit from a cached log another handle on the file has moved past (the commit was
    returned, then its flush failed on a duplicate seq: an acknowledged commit lost)."""
    path = tmp_path / "p.db"
    with (
        ps.SessionStore.open(
            path, publish_interval=None, durability="batched", flush_interval=3600
        ) as a,
        ps.SessionStore.open(path, publish_interval=None) as b,
    ):
        a.create_session(ps.SessionRecord(session_id=S, task="t", working_dir="/w"))
        assert a.record_node_state(_node("x", 1)).seq == 0
        a.flush()
        assert b.record_node_state(_node("y", 2)).seq == 1
        assert a.record_node_state(_node("x", 3)).seq == 2
        a.flush()  # raised FlushError: seq 1 already exists
        assert b.record_node_state(_node("y", 4)).seq == 3
        report = b.verify_session(S)
        assert report.ok and report.log_size == 4, report.problems


# --- item 8's class outside SessionStore: the lake functions trust their arguments' types ----


def test_the_lake_functions_say_typeerror_for_a_store_that_is_not_one(tmp_path: Path) -> None:
    import pytest

    from perspt_store import export_parquet, import_lake

    with pytest.raises(TypeError, match="SessionStore"):
        export_parquet("perspt.db", tmp_path / "lake")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="SessionStore"):
        import_lake(None, tmp_path)  # type: ignore[arg-type]
    assert not (tmp_path / "lake").exists()


def test_every_module_function_taking_a_store_says_typeerror_for_another_value(
    tmp_path: Path,
) -> None:
    import pytest

    from perspt_store import delta, plots

    calls = [
        lambda bad: delta.export_delta(bad, tmp_path / "delta"),
        lambda bad: plots.plot_energy(bad, "s"),
        lambda bad: plots.plot_task_graph(bad, "s"),
        lambda bad: plots.plot_llm(bad, "s"),
        lambda bad: plots.plot_llm(bad),
    ]
    for call in calls:
        for bad in ("perspt.db", None, 3):
            with pytest.raises(TypeError, match="SessionStore"):
                call(bad)
    assert not (tmp_path / "delta").exists()


def test_one_session_id_given_as_a_string_is_a_typeerror_not_its_characters(
    tmp_path: Path,
) -> None:
    import pytest

    from perspt_store import export_parquet, import_lake

    with ps.SessionStore.in_memory() as store:
        store.create_session(ps.SessionRecord(session_id="run-1", task="t", working_dir="/w"))
        with pytest.raises(TypeError, match=r"\['run-1'\]"):
            export_parquet(store, tmp_path / "lake", "run-1")  # was: no session 'r'
        export_parquet(store, tmp_path / "lake", ["run-1"])
    with ps.SessionStore.in_memory() as target:
        with pytest.raises(TypeError, match=r"\['run-1'\]"):
            import_lake(target, tmp_path / "lake", "run-1")
        assert import_lake(target, tmp_path / "lake", ["run-1"]).ok

"""Tables as DuckDB relations for notebooks: ``store.frame`` and the per-topic helpers,
their conversion to pandas, Polars and Arrow, and the optional libraries staying lazy."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import perspt_store as ps
from perspt_store.demo import ESCALATED_NODE, demo_session_id, record_demo_session
from perspt_store.frames import FRAME_TABLES, INSTALL_HINT, convert
from perspt_store.schema import SEQUENCED_TABLES

OPTIONAL = ("pandas", "polars", "pyarrow", "matplotlib")


def dicts(relation: Any) -> list[dict[str, Any]]:
    return [dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()]


@pytest.fixture(scope="module")
def shared() -> Iterator[ps.SessionStore]:
    """One store for the tests that only read: two demo sessions (each one transaction),
    then rows of a third session interleaved with late rows of the second."""
    with ps.SessionStore.in_memory() as store:
        record_demo_session(store, seed=1)
        sid = record_demo_session(store, seed=0)
        store.create_session(ps.SessionRecord(session_id="other", task="t", working_dir="/w"))
        for i in range(3):
            store.record_energy(ps.EnergyRecord(session_id="other", node_id="x", v_total=i))
            store.record_energy(ps.EnergyRecord(session_id=sid, node_id="late", v_total=i / 10))
        yield store


@pytest.fixture
def store(shared: ps.SessionStore) -> ps.SessionStore:
    """The shared store (read only: these tests never write to it)."""
    return shared


@pytest.fixture
def demo() -> str:
    return demo_session_id(0)


# --- frame ----------------------------------------------------------------------------------


@pytest.mark.parametrize("table", FRAME_TABLES)
def test_frame_has_every_column_and_row_of_the_session_in_insertion_order(
    store: ps.SessionStore, demo: str, table: str
) -> None:
    relation = store.frame(table, demo)
    columns = [c for (c,) in store.sql(
        "SELECT column_name FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index",
        [table]).fetchall()
        if (table, c) != ("node_states", "merkle_commit")]  # shown as merkle_log's rows
    assert relation.columns == columns
    rows = dicts(relation)
    assert len(rows) == store.sql(f"SELECT count(*) FROM {table} WHERE session_id = ?",
                                  [demo]).fetchall()[0][0]
    assert {r["session_id"] for r in rows} <= {demo}
    if table in SEQUENCED_TABLES:
        assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    if table == "merkle_log":
        assert [r["seq"] for r in rows] == list(range(len(rows)))


def test_frame_without_a_session_reads_every_session(
    store: ps.SessionStore, demo: str
) -> None:
    rows = dicts(store.frame("energy_history"))
    assert len(rows) == store.sql("SELECT count(*) FROM energy_history").fetchall()[0][0]
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    assert {r["session_id"] for r in rows} == {demo, "other", "demo-2265b1f5"}


def test_frame_filters_by_node(store: ps.SessionStore, demo: str) -> None:
    rows = dicts(store.frame("srbn_step_records", demo, ESCALATED_NODE))
    assert rows and {r["node_id"] for r in rows} == {ESCALATED_NODE}
    assert [r["step"] for r in rows] == [s.step for s in
                                         store.get_step_timeline(demo, ESCALATED_NODE)]


@pytest.mark.parametrize("table", ["sessions; DROP TABLE sessions", "node_state", "SESSIONS",
                                   "perspt_store_meta", "merkle_root_overrides", ""])
def test_frame_only_reads_the_allowed_tables(
    store: ps.SessionStore, demo: str, table: str
) -> None:
    with pytest.raises(ValueError, match="no table"):
        store.frame(table)
    assert store.count_sessions() == 3


def test_an_unknown_table_suggests_the_closest(store: ps.SessionStore) -> None:
    with pytest.raises(ValueError, match="did you mean 'node_states'"):
        store.frame("node_state")


def test_node_filter_on_a_table_without_nodes_is_refused(store: ps.SessionStore) -> None:
    with pytest.raises(ValueError, match="no node_id column"):
        store.frame("sessions", node_id="n")


def test_session_ids_are_bound_never_spliced(store: ps.SessionStore, demo: str) -> None:
    assert store.frame("sessions", "x' OR '1'='1").fetchall() == []
    assert store.energy_frame("x' OR '1'='1").fetchall() == []


# --- per-topic helpers ------------------------------------------------------------------------


def test_energy_frame_numbers_attempts_per_node(store: ps.SessionStore, demo: str) -> None:
    rows = dicts(store.energy_frame(demo))
    history = store.get_session_energy_history(demo)
    assert [r["id"] for r in rows] == [e.id for e in history]
    assert [r["v_total"] for r in rows] == [e.v_total for e in history]
    seen: dict[str, int] = {}
    for row in rows:
        seen[row["node_id"]] = seen.get(row["node_id"], 0) + 1
        assert row["attempt"] == seen[row["node_id"]]
    node = dicts(store.energy_frame(demo, ESCALATED_NODE))
    assert [r["attempt"] for r in node] == list(range(1, len(node) + 1))
    assert [r["v_syn"] for r in node] == [e.v_syn for e in
                                         store.get_energy_history(demo, ESCALATED_NODE)]
    assert dicts(store.energy_frame(node_id="x"))[-1]["attempt"] == 3


def test_node_states_frame_latest_matches_get_latest_node_states() -> None:
    with ps.SessionStore.in_memory() as store:
        check_latest_node_states(store)


def check_latest_node_states(store: ps.SessionStore) -> None:
    record_demo_session(store, seed=0)
    sid = "rolled"
    store.create_session(ps.SessionRecord(session_id=sid, task="t", working_dir="/w"))
    for node, state in (("a", "1"), ("b", "1"), ("a", "2"), ("c", "1")):
        store.record_node_state(ps.NodeStateRecord(session_id=sid, node_id=node, state=state))
    store.rollback(sid, to_seq=2)  # c did not exist then: it gets a tombstone
    latest = dicts(store.node_states_frame(sid))
    expected = store.get_latest_node_states(sid)
    assert [(r["id"], r["node_id"], r["state"]) for r in latest] == [
        (s.id, s.node_id, s.state) for s in expected]
    assert "c" not in {r["node_id"] for r in latest}
    history = dicts(store.node_states_frame(sid, latest=False))
    assert [(r["node_id"], r["state"]) for r in history] == [
        (s.node_id, s.state) for s in store.get_node_states(sid)]
    assert dicts(store.node_states_frame(sid, "a")) == [r for r in latest if r["node_id"] == "a"]
    assert len(dicts(store.node_states_frame())) == len(latest) + 5  # and the demo's nodes


def test_llm_frame_has_sizes_and_the_texts_only_on_request(
    store: ps.SessionStore, demo: str
) -> None:
    requests = store.get_llm_requests(demo)
    rows = dicts(store.llm_frame(demo))
    assert "prompt" not in rows[0]
    assert [(r["prompt_chars"], r["response_chars"], r["tokens_in"]) for r in rows] == [
        (len(q.prompt), len(q.response), q.tokens_in) for q in requests]
    full = dicts(store.llm_frame(demo, text=True))
    assert [(r["prompt"], r["response"]) for r in full] == [(q.prompt, q.response)
                                                           for q in requests]


def test_steps_frame_matches_the_session_steps(store: ps.SessionStore, demo: str) -> None:
    rows = dicts(store.steps_frame(demo))
    assert [(r["node_id"], r["step"], r["energy_json"]) for r in rows] == [
        (s.node_id, s.step, s.energy_json) for s in store.get_session_steps(demo)]


# --- conversions ------------------------------------------------------------------------------


def test_frames_convert_to_pandas_polars_and_arrow(store: ps.SessionStore, demo: str) -> None:
    pd = pytest.importorskip("pandas")
    pl = pytest.importorskip("polars")
    pa = pytest.importorskip("pyarrow")
    relation = store.energy_frame(demo)
    expected = [e.v_total for e in store.get_session_energy_history(demo)]
    df = relation.df()
    assert isinstance(df, pd.DataFrame) and df["v_total"].tolist() == expected
    assert relation.pl()["v_total"].to_list() == expected
    assert store.energy_frame(demo, to="pandas")["attempt"].tolist() == df["attempt"].tolist()
    frame = store.node_states_frame(demo, to="polars")
    assert isinstance(frame, pl.DataFrame) and frame.height == 5
    table = store.steps_frame(demo, to="arrow")
    assert isinstance(table, pa.Table) and table.num_rows == len(store.get_session_steps(demo))
    hashes = store.frame("merkle_log", demo, to="arrow").column("leaf_hash").to_pylist()
    assert hashes == [c.leaf_hash for c in store.get_commit_log(demo)]  # bytes stay bytes


def test_convert_to_an_unknown_target_is_refused(store: ps.SessionStore) -> None:
    with pytest.raises(ValueError, match="relation, pandas, polars, arrow"):
        convert(store.frame("sessions"), "excel")  # type: ignore[arg-type]
    relation = store.frame("sessions")
    assert convert(relation) is relation


@pytest.mark.parametrize(("target", "library"),
                         [("pandas", "pandas"), ("polars", "polars"), ("arrow", "pyarrow")])
def test_a_missing_library_gives_the_install_hint(
    store: ps.SessionStore, monkeypatch: pytest.MonkeyPatch, target: str, library: str
) -> None:
    monkeypatch.setitem(sys.modules, library, None)  # as if it were not installed
    with pytest.raises(ModuleNotFoundError, match=r"perspt-store\[frames\]") as info:
        store.frame("sessions", to=target)  # type: ignore[arg-type]
    assert info.value.name == library and INSTALL_HINT in str(info.value)


def test_importing_the_library_loads_no_optional_dependency(tmp_path: Path) -> None:
    code = (
        "import sys, json\n"
        "import perspt_store as ps\n"
        "import perspt_store.frames, perspt_store.plots, perspt_store.lake\n"
        "import perspt_store.cli\n"
        "with ps.SessionStore.in_memory() as s:\n"
        "    s.create_session(ps.SessionRecord(session_id='s', task='t', working_dir='/w'))\n"
        "    s.energy_frame('s').fetchall(); s.frame('node_states').fetchall()\n"
        "    ps.export_parquet(s, sys.argv[1])\n"
        f"print(json.dumps(sorted(m for m in {list(OPTIONAL)!r} if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "lake")],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


# --- threads and read-only stores --------------------------------------------------------------


def test_frames_run_on_the_calling_threads_cursor(tmp_path: Path) -> None:
    with ps.SessionStore.open(tmp_path / "t.db", publish_interval=None) as store:
        demo = record_demo_session(store, seed=0)
        store.create_session(ps.SessionRecord(session_id="other", task="t", working_dir="/w"))
        check_threads(store, demo)


def check_threads(store: ps.SessionStore, demo: str) -> None:
    expected = len(store.get_session_energy_history(demo))
    results: list[int] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(20):
                results.append(len(store.energy_frame(demo).fetchall()))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def write() -> None:
        for i in range(20):
            store.record_energy(ps.EnergyRecord(session_id="other", node_id="w", v_total=i))

    threads = [threading.Thread(target=read) for _ in range(3)] + [threading.Thread(target=write)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [expected] * 60


def test_frames_on_a_read_only_store(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    with ps.SessionStore.open(path, publish_interval=None) as store:
        sid = record_demo_session(store, seed=2)
    before = path.read_bytes()
    with ps.SessionStore.open_read_only(path) as store:
        assert len(store.node_states_frame(sid).fetchall()) == 5
    assert path.read_bytes() == before


def test_frames_decode_rows_upstream_wrote_as_the_models_do(tmp_path: Path) -> None:
    from upstream_files import write_upstream_062

    write_upstream_062(tmp_path / "u.db")
    with ps.SessionStore.open(tmp_path / "u.db", publish_interval=None) as store:
        for table, model in ps.ROW_MODELS.items():
            order = "id" if table in SEQUENCED_TABLES else "rowid"
            models = store._select(model, order_by=order)
            rows = dicts(store.frame(table))
            assert len(rows) == len(models), table
            for row, decoded in zip(rows, models, strict=True):
                for name, value in decoded.to_dict().items():
                    got = row[name]
                    if isinstance(value, list) or (value is None and name in (
                            "children", "structural_hashes", "summary_hashes")):
                        continue  # lists stay JSON text in frames
                    if isinstance(value, str) and got is None:
                        continue  # NULL in a text column the model reads as ''
                    assert got == value, (table, name)

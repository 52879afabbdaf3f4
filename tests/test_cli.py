"""The perspt-store command line: every command, its output formats, errors and exit codes."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import click
import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st

import perspt_store as ps
from perspt_store._shaping import jsonable, merge_timeline, row_dict
from perspt_store.cli import cli
from perspt_store.cli._common import closest, one_line
from perspt_store.cli._graph import render_dot, render_mermaid
from perspt_store.demo import (
    DEMO_NODES,
    ESCALATED_NODE,
    INTERFACE_NODE,
    demo_session_id,
    record_demo_session,
)
from perspt_store.schema import TABLES

ROOT = Path(__file__).resolve().parents[1]
SID = demo_session_id(0)
NODE_IDS = [n.node_id for n in DEMO_NODES]

# Every command that only reads, with arguments that succeed on the demo database.
READ_COMMANDS = [
    ["sessions"],
    ["show", SID],
    ["nodes", SID],
    ["nodes", SID, "--history"],
    ["energy", SID],
    ["energy", SID, "--node", ESCALATED_NODE],
    ["llm", SID],
    ["timeline", SID],
    ["timeline", SID, "--node", ESCALATED_NODE],
    ["branches", SID],
    ["branches", SID, "--flushes"],
    ["graph", SID],
    ["graph", SID, "--format", "dot"],
    ["sql", "SELECT count(*) AS n FROM sessions"],
    ["tables"],
]
LISTINGS = [c for c in READ_COMMANDS if c[0] not in ("show", "graph")]


def invoke(db: Path | None, *args: str) -> Result:
    """Run the CLI in-process, as a user would from a shell (no terminal, no $COLUMNS)."""
    runner = CliRunner(env={"COLUMNS": None, "PERSPT_STORE_DB": None})
    prefix = ["--db", str(db)] if db is not None else []
    return runner.invoke(cli, [*prefix, *args], prog_name="perspt-store")


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database file holding the seed-0 demo session (closed: only read from here on)."""
    path = tmp_path_factory.mktemp("demo") / "perspt.db"
    with ps.SessionStore.open(path) as store:
        record_demo_session(store, seed=0)
    return path


@pytest.fixture
def demo_store(demo_db: Path) -> Iterator[ps.SessionStore]:
    """The demo database opened read-only, to compare the CLI's output with the library's."""
    with ps.SessionStore.open_read_only(demo_db) as store:
        yield store


def json_out(result: Result) -> object:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def nl_out(result: Result) -> list[dict[str, object]]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


# --- program --------------------------------------------------------------------------------


def test_version_prints_the_package_version() -> None:
    result = invoke(None, "--version")
    assert result.exit_code == 0
    assert result.stdout == f"perspt-store, version {ps.__version__}\n"


def test_python_dash_m_runs_the_cli() -> None:
    out = subprocess.run([sys.executable, "-m", "perspt_store", "--version"],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"perspt-store, version {ps.__version__}"


def test_help_lists_every_command_in_order() -> None:
    result = invoke(None, "-h")
    assert result.exit_code == 0
    listed = [line.split()[0] for line in
              result.stdout.split("Commands:\n", 1)[1].splitlines() if line.strip()]
    assert listed == ["init", "demo", "sessions", "show", "nodes", "energy", "llm",
                      "timeline", "branches", "graph", "sql", "tables", "verify", "log",
                      "checkpoint", "rollback", "export", "import", "compact", "lake", "serve"]


def test_without_click_main_prints_the_install_hint_and_exits_1() -> None:
    code = (
        "import sys\n"
        "sys.modules['click'] = None  # as if the cli extra were not installed\n"
        "from perspt_store.cli import main\n"
        "main(['--help'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 1
    assert "pip install 'perspt-store[cli]'" in out.stderr
    assert "Traceback" not in out.stderr


def test_db_comes_from_the_environment_variable(demo_db: Path) -> None:
    runner = CliRunner(env={"PERSPT_STORE_DB": str(demo_db), "COLUMNS": None})
    result = runner.invoke(cli, ["sessions", "--json"])
    assert [s["session_id"] for s in json_out(result)] == [SID]  # type: ignore[union-attr]


# --- write commands -------------------------------------------------------------------------


def test_init_creates_the_database_with_its_schema(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "perspt.db"
    result = invoke(path, "init")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Created database {path} (schema version {ps.SCHEMA_VERSION})\n"
    with ps.SessionStore.open_read_only(path) as store:
        assert store.schema_version == ps.SCHEMA_VERSION
        assert store.count_sessions() == 0


def test_init_keeps_an_existing_database(tmp_path: Path) -> None:
    path = tmp_path / "perspt.db"
    with ps.SessionStore.open(path) as store:
        store.create_session(ps.SessionRecord(session_id="s1", task="t", working_dir="/w"))
    result = invoke(path, "init")
    assert result.exit_code == 0
    assert result.stdout.startswith(f"Opened existing database {path}")
    with ps.SessionStore.open_read_only(path) as store:
        assert store.get_session("s1") is not None


def test_demo_records_a_session_and_prints_its_summary(tmp_path: Path) -> None:
    path = tmp_path / "perspt.db"
    result = invoke(path, "demo")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # no progress bar when not on a terminal
    out = result.stdout
    assert out.startswith(f"Recorded demo session {SID} (seed 0) into {path}\n")
    with ps.SessionStore.open_read_only(path) as store:
        flushed = store.get_branch_flushes(SID)[0].flushed_branch_ids
        requests = store.get_llm_requests(SID)
        latest = {e.node_id: e.v_total for e in store.get_session_energy_history(SID)}
    for node_id in NODE_IDS:
        (line,) = [ln for ln in out.splitlines() if f" {node_id} " in ln]
        assert "Completed" in line and f"{latest[node_id]:.4f}" in line
    assert "COMPLETED" in out
    assert f"flushed: {', '.join(flushed)}" in out
    assert f"{len(requests)} requests" in out
    assert f"{sum(r.tokens_in for r in requests):,} tokens in" in out
    assert all(line == line.rstrip() for line in out.splitlines())


def test_demo_json_is_the_session_summary(tmp_path: Path) -> None:
    path = tmp_path / "perspt.db"
    summary = json_out(invoke(path, "demo", "--seed", "4", "--json"))
    assert isinstance(summary, dict)
    sid = demo_session_id(4)
    assert summary["session"]["session_id"] == sid
    with ps.SessionStore.open_read_only(path) as store:
        assert summary["session"]["merkle_root"] == store.get_session(sid).merkle_root.hex()  # type: ignore[union-attr]
        assert summary["branches"]["flushed_branch_ids"] == (
            store.get_branch_flushes(sid)[0].flushed_branch_ids
        )
        assert summary["llm"]["requests"] == len(store.get_llm_requests(sid))
        for node in summary["nodes"]:
            history = store.get_energy_history(sid, node["node_id"])
            assert node["v_total"] == history[-1].v_total
            assert node["state"] == "Completed"
    assert summary["reviews"] == {"total": 6, "approved": 5, "rejected": 1, "corrected": 0}


def test_demo_twice_records_the_next_seed(tmp_path: Path) -> None:
    path = tmp_path / "perspt.db"
    assert invoke(path, "demo", "--nl").exit_code == 0
    second = nl_out(invoke(path, "demo", "--nl"))
    assert second[0]["session"]["session_id"] == demo_session_id(1)  # type: ignore[index]
    ids = [s["session_id"] for s in nl_out(invoke(path, "sessions", "--nl"))]
    assert sorted(ids) == sorted([demo_session_id(0), demo_session_id(1)])


def test_demo_with_a_taken_session_id_fails_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "perspt.db"
    assert invoke(path, "demo", "--session-id", "mine").exit_code == 0
    before = json_out(invoke(path, "tables", "--json"))
    assert_one_line_error(invoke(path, "demo", "--session-id", "mine", "--seed", "9"),
                          "already exists")
    assert json_out(invoke(path, "tables", "--json")) == before


# --- read-only commands ---------------------------------------------------------------------


@pytest.mark.parametrize("args", READ_COMMANDS, ids=" ".join)
def test_read_commands_leave_the_file_byte_identical(demo_db: Path, args: list[str]) -> None:
    before = demo_db.read_bytes()
    siblings = sorted(p.name for p in demo_db.parent.iterdir())
    result = invoke(demo_db, *args)
    assert result.exit_code == 0, result.output
    assert result.stdout
    assert demo_db.read_bytes() == before
    assert sorted(p.name for p in demo_db.parent.iterdir()) == siblings  # no WAL left behind


@pytest.mark.parametrize("args", READ_COMMANDS, ids=" ".join)
def test_read_commands_on_a_missing_database_say_how_to_create_one(
    tmp_path: Path, args: list[str]
) -> None:
    path = tmp_path / "missing.db"
    assert_one_line_error(invoke(path, *args), f"no database at {path}", "perspt-store init",
                          "perspt-store demo")
    assert not path.exists()


@pytest.mark.parametrize("args", LISTINGS, ids=" ".join)
def test_listings_print_json_arrays_json_lines_and_tables(demo_db: Path, args: list[str]) -> None:
    rows = json_out(invoke(demo_db, *args, "--json"))
    assert isinstance(rows, list) and rows
    assert nl_out(invoke(demo_db, *args, "--nl")) == rows
    table = invoke(demo_db, *args)
    assert table.exit_code == 0
    assert "┃" in table.stdout  # a rich table's header


@pytest.mark.parametrize("args", [*LISTINGS, ["show", SID]], ids=" ".join)
def test_json_and_nl_together_are_a_usage_error(demo_db: Path, args: list[str]) -> None:
    result = invoke(demo_db, *args, "--json", "--nl")
    assert result.exit_code == 2
    assert "cannot be used together" in result.stderr


@pytest.mark.parametrize(
    "args",
    [c for c in READ_COMMANDS if SID in c],
    ids=" ".join,
)
def test_an_unknown_session_exits_1_and_suggests_the_closest(
    demo_db: Path, args: list[str]
) -> None:
    typo = SID[:-1]
    result = invoke(demo_db, *[typo if a == SID else a for a in args])
    assert_one_line_error(result, f"no session {typo!r}", f"did you mean {SID}?")


def test_an_unknown_session_with_no_close_match_points_to_sessions(demo_db: Path) -> None:
    assert_one_line_error(invoke(demo_db, "show", "zzzz"), "perspt-store sessions")


@pytest.mark.parametrize("command", ["energy", "timeline"])
def test_an_unknown_node_exits_1_and_suggests_the_closest(demo_db: Path, command: str) -> None:
    result = invoke(demo_db, command, SID, "--node", "token_buckt")
    assert_one_line_error(result, "no node 'token_buckt'", "did you mean token_bucket?")


def test_sessions_are_newest_first_and_paginated(tmp_path: Path) -> None:
    path = tmp_path / "perspt.db"
    with ps.SessionStore.open(path) as store:
        for i in range(5):
            store.create_session(ps.SessionRecord(session_id=f"s{i}", task=f"task {i}",
                                                  working_dir="/w", status="RUNNING"))
    listed = json_out(invoke(path, "sessions", "--json"))
    assert [s["session_id"] for s in listed] == ["s4", "s3", "s2", "s1", "s0"]  # type: ignore[index, union-attr]
    page = json_out(invoke(path, "sessions", "--limit", "2", "--offset", "1", "--json"))
    assert [s["session_id"] for s in page] == ["s3", "s2"]  # type: ignore[index, union-attr]
    table = invoke(path, "sessions", "--limit", "2", "--offset", "1")
    assert "sessions 2-3 of 5" in table.stdout
    assert "s3" in table.stdout and "s4" not in table.stdout
    beyond = invoke(path, "sessions", "--offset", "9")
    assert beyond.exit_code == 0 and "no sessions at offset 9 (5 in total)" in beyond.stdout


def test_sessions_json_has_every_field_with_bytes_as_hex(
    demo_db: Path, demo_store: ps.SessionStore
) -> None:
    (row,) = json_out(invoke(demo_db, "sessions", "--json"))  # type: ignore[misc]
    session = demo_store.get_session(SID)
    assert session is not None and session.merkle_root is not None
    assert row["merkle_root"] == session.merkle_root.hex()
    assert row["task"] == session.task and row["status"] == "COMPLETED"
    assert row["detected_toolchain"] is None
    # Times are aware ISO-8601 in UTC (the database stores naive UTC).
    created = dt.datetime.fromisoformat(row["created_at"])
    assert created.utcoffset() == dt.timedelta(0)
    assert created == session.created_at.replace(tzinfo=dt.UTC)  # type: ignore[union-attr]


def test_show_summarises_the_session(demo_db: Path, demo_store: ps.SessionStore) -> None:
    result = invoke(demo_db, "show", SID)
    assert result.exit_code == 0
    out = result.stdout
    budget = demo_store.get_budget_envelope(SID)
    assert budget is not None
    assert f"steps {budget.steps_used} / {budget.max_steps}" in out
    assert "5/5 nodes passed, 1 degraded" in out
    assert "6 total: 5 approved, 1 rejected, 0 corrected" in out
    assert "1 (1 rewrite)" in out
    assert "3 total: 0 active, 0 sealed, 1 merged, 2 flushed; 1 flush" in out
    (line,) = [ln for ln in out.splitlines() if f" {ESCALATED_NODE} " in ln]
    assert "Completed" in line and "approved" in line


def test_show_json_matches_the_library(demo_db: Path, demo_store: ps.SessionStore) -> None:
    summary = json_out(invoke(demo_db, "show", SID, "--json"))
    assert isinstance(summary, dict)
    assert summary == json_out(invoke(demo_db, "show", SID, "--nl"))
    assert [n["node_id"] for n in summary["nodes"]] == NODE_IDS
    assert summary["budget"]["steps_used"] == len(demo_store.get_session_steps(SID))
    assert summary["verification"] == {"nodes": 5, "passed": 5, "degraded": 1}
    assert summary["escalations"] == 1


def test_show_lists_nodes_that_have_no_snapshot_yet(tmp_path: Path) -> None:
    path = tmp_path / "perspt.db"
    with ps.SessionStore.open(path) as store:
        store.create_session(ps.SessionRecord(session_id="run", task="t", working_dir="/w",
                                              status="RUNNING"))
        store.record_energy(ps.EnergyRecord(node_id="busy", session_id="run", v_total=1.5))
        store.record_task_graph_edge(ps.TaskGraphEdgeRow(
            session_id="run", parent_node_id="busy", child_node_id="later"))
    summary = json_out(invoke(path, "show", "run", "--json"))
    assert [(n["node_id"], n["state"], n["v_total"]) for n in summary["nodes"]] == [  # type: ignore[index]
        ("busy", None, 1.5), ("later", None, None)]
    table = invoke(path, "show", "run").stdout
    assert "(running)" in table and "(pending)" in table


def test_nodes_lists_latest_snapshots_or_the_history(
    demo_db: Path, demo_store: ps.SessionStore
) -> None:
    latest = json_out(invoke(demo_db, "nodes", SID, "--json"))
    assert [n["node_id"] for n in latest] == NODE_IDS  # type: ignore[index, union-attr]
    interface = latest[0]  # type: ignore[index]
    (seal,) = demo_store.get_interface_seals(SID, INTERFACE_NODE)
    assert interface["merkle_hash"] == seal.seal_hash.hex()
    assert interface["children"] == ["token_bucket", "client_middleware"]
    history = json_out(invoke(demo_db, "nodes", SID, "--history", "--json"))
    assert len(history) == len(demo_store.get_node_states(SID))  # type: ignore[arg-type]


def test_energy_lists_measurements_in_order(demo_db: Path, demo_store: ps.SessionStore) -> None:
    rows = json_out(invoke(demo_db, "energy", SID, "--node", "token_bucket", "--json"))
    expected = demo_store.get_energy_history(SID, "token_bucket")
    assert [r["v_total"] for r in rows] == [e.v_total for e in expected]  # type: ignore[index, union-attr]
    assert [r["id"] for r in rows] == [e.id for e in expected]  # type: ignore[index, union-attr]
    every = json_out(invoke(demo_db, "energy", SID, "--json"))
    assert len(every) == len(demo_store.get_session_energy_history(SID))  # type: ignore[arg-type]
    table = invoke(demo_db, "energy", SID, "--node", "token_bucket").stdout
    assert "v_sheaf" in table and ESCALATED_NODE not in table


def test_llm_lists_requests_with_totals(demo_db: Path, demo_store: ps.SessionStore) -> None:
    requests = demo_store.get_llm_requests(SID)
    rows = json_out(invoke(demo_db, "llm", SID, "--json"))
    assert [r["tokens_in"] for r in rows] == [q.tokens_in for q in requests]  # type: ignore[index, union-attr]
    assert rows[0]["prompt"] == requests[0].prompt != ""  # type: ignore[index]
    table = invoke(demo_db, "llm", SID).stdout
    assert "usage only" in table
    tokens_in = sum(q.tokens_in for q in requests)
    assert f"{len(requests)} requests · {tokens_in:,} tokens in" in table


def test_timeline_interleaves_corrections_after_their_attempt(demo_db: Path) -> None:
    rows = json_out(invoke(demo_db, "timeline", SID, "--node", ESCALATED_NODE, "--json"))
    assert isinstance(rows, list)
    kinds = [(r["kind"], r.get("step"), r.get("attempt_count", r.get("attempt"))) for r in rows]
    first_correction = kinds.index(("correction", None, 1))
    assert kinds[first_correction - 1] == ("step", "verify", 1)
    assert kinds[first_correction + 1] == ("step", "speculate", 2)
    second = kinds.index(("correction", None, 2))
    assert kinds[second - 1] == ("step", "converge", 2)
    assert [r["outcome"] for r in rows if r["kind"] == "step" and r["step"] == "converge"] == [
        "escalated", "ok"]
    table = invoke(demo_db, "timeline", SID, "--node", ESCALATED_NODE).stdout
    assert "rejected" in table and "accepted" in table and "escalated" in table


def test_branches_and_flushes(demo_db: Path, demo_store: ps.SessionStore) -> None:
    rows = json_out(invoke(demo_db, "branches", SID, "--json"))
    assert [r["state"] for r in rows] == ["merged", "flushed", "flushed"]  # type: ignore[index, union-attr]
    flushes = json_out(invoke(demo_db, "branches", SID, "--flushes", "--json"))
    assert flushes == [jsonable(row_dict(f))
                       for f in demo_store.get_branch_flushes(SID)]
    table = invoke(demo_db, "branches", SID).stdout
    assert "Branches" in table and "Flushes" in table


def test_graph_prints_mermaid_and_dot(demo_db: Path, demo_store: ps.SessionStore) -> None:
    mermaid = invoke(demo_db, "graph", SID).stdout
    assert mermaid.startswith("flowchart TD\n")
    edges = demo_store.get_task_graph_edges(SID)
    assert f"{INTERFACE_NODE} -.->|interface_boundary| token_bucket" in mermaid
    assert "token_bucket -->|depends_on| limiter_tests" in mermaid
    assert mermaid.count("|") == 2 * len(edges)
    dot = invoke(demo_db, "graph", SID, "--format", "dot").stdout
    assert dot.startswith(f'digraph "{SID}" {{') and dot.rstrip().endswith("}")
    assert dot.count(" -> ") == len(edges)
    boundary = '[label="interface_boundary", style=dashed];'
    assert f'"{INTERFACE_NODE}" -> "token_bucket" {boundary}' in dot
    assert invoke(demo_db, "graph", SID, "--format", "svg").exit_code == 2


def test_sql_runs_a_query_with_parameters(demo_db: Path, demo_store: ps.SessionStore) -> None:
    rows = json_out(invoke(
        demo_db, "sql", "SELECT node_id, count(*) AS n FROM energy_history "
        "WHERE node_id = ? GROUP BY node_id", "-p", "token_bucket", "--json",
    ))
    expected = len(demo_store.get_energy_history(SID, "token_bucket"))
    assert rows == [{"node_id": "token_bucket", "n": expected}]
    blob = json_out(invoke(demo_db, "sql", "SELECT '\\xAB\\x01'::BLOB AS b, "
                           "TIMESTAMP '2026-01-02 03:04:05' AS t, 1.5::DECIMAL(4,2) AS d",
                           "--json"))
    assert blob == [{"b": "ab01", "t": "2026-01-02T03:04:05Z", "d": 1.5}]  # times are UTC


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("SELECT * FROM no_such_table", "no_such_table"),
        ("SELEC 1", "syntax error"),
        ("SELECT 'abc'::INTEGER", "Conversion Error"),  # fails while fetching, not binding
        ("DELETE FROM sessions", "read-only"),
    ],
)
def test_sql_errors_exit_1_on_one_line(demo_db: Path, query: str, fragment: str) -> None:
    before = demo_db.read_bytes()
    assert_one_line_error(invoke(demo_db, "sql", query), fragment)
    assert demo_db.read_bytes() == before


def test_tables_counts_rows_per_table(demo_db: Path, demo_store: ps.SessionStore) -> None:
    rows = json_out(invoke(demo_db, "tables", "--json"))
    assert [r["table"] for r in rows] == list(TABLES)  # type: ignore[index, union-attr]
    counts = {r["table"]: r["rows"] for r in rows}  # type: ignore[index, union-attr]
    assert counts["node_states"] == 5 and counts["sessions"] == 1
    assert counts["energy_history"] == len(demo_store.get_session_energy_history(SID))
    assert f"schema version {ps.SCHEMA_VERSION}" in invoke(demo_db, "tables").stdout


def test_table_cells_are_never_read_as_markup(tmp_path: Path) -> None:
    path = tmp_path / "perspt.db"
    task = "[bold red]not markup[/] and a\nsecond line"
    with ps.SessionStore.open(path) as store:
        store.create_session(ps.SessionRecord(session_id="s", task=task, working_dir="/w"))
    out = invoke(path, "sessions").stdout
    assert "[bold red]not markup[/] and a second line" in out


def test_a_database_another_process_writes_gives_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    holder = subprocess.Popen(  # an agent holding the file read-write
        [sys.executable, "-c",
         "import sys, perspt_store as ps\n"
         f"store = ps.SessionStore.open({str(path)!r}, publish_interval=None)\n"
         "print('ready', flush=True)\n"
         "sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        result = invoke(path, "sessions")
    finally:
        holder.communicate("", timeout=60)
    assert_one_line_error(result, "locked by another process")


@pytest.mark.parametrize("args", [["init"], ["sessions"], ["demo"]], ids=" ".join)
def test_a_file_that_is_not_a_database_is_refused_and_left_alone(
    tmp_path: Path, args: list[str]
) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"not a database\n" * 100)
    assert_one_line_error(invoke(path, *args), str(path))
    assert path.read_bytes() == b"not a database\n" * 100


@pytest.mark.parametrize(
    "args",
    [["nope"], ["show"], ["sessions", "--limit", "-1"], ["sessions", "--limit", "x"],
     ["graph", SID, "--format", "png"], ["demo", "--seed", "one"], ["sessions", "--bogus"]],
    ids=" ".join,
)
def test_usage_errors_exit_2(demo_db: Path, args: list[str]) -> None:
    result = invoke(demo_db, *args)
    assert result.exit_code == 2
    assert "Usage: perspt-store" in result.stderr


# --- pure helpers ---------------------------------------------------------------------------


def test_one_line_drops_the_caret_diagram() -> None:
    message = 'Parser Error: syntax error at or near "SELEC"\n\nLINE 1: SELEC 1\n        ^'
    assert one_line(message) == 'Parser Error: syntax error at or near "SELEC"'
    assert one_line("Conversion Error: bad\n\nLINE 1: SELECT 'a'::INT\n        ^^^^^") == (
        "Conversion Error: bad")


def test_closest_prefers_similar_ids_and_prefixes() -> None:
    ids = ["demo-d82c07cd", "demo-0c5a1f2e", "other"]
    assert closest("demo-d82c07c", ids)[0] == "demo-d82c07cd"
    assert closest("oth", ids) == ["other"]
    assert closest("zzzz", ids) == []


def test_dot_and_mermaid_escape_awkward_node_ids() -> None:
    edge = ps.TaskGraphEdgeRow(session_id="s", parent_node_id='a "quoted" \\ node',
                               child_node_id="b<c>|d", edge_type="depends_on")
    dot = render_dot([], [edge], name='s"1')
    assert 'digraph "s\\"1" {' in dot
    assert '"a \\"quoted\\" \\\\ node" -> "b<c>|d"' in dot
    mermaid = render_mermaid([], [edge])
    assert 'a__quoted____node["a #quot;quoted#quot; \\ node"]' in mermaid
    assert 'b_c__d["b#lt;c#gt;|d"]' in mermaid
    assert "a__quoted____node -->|depends_on| b_c__d" in mermaid


@settings(deadline=None, max_examples=60)
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=6, unique=True))
def test_mermaid_gives_every_node_its_own_safe_name(node_ids: list[str]) -> None:
    edges = [ps.TaskGraphEdgeRow(session_id="s", parent_node_id=a, child_node_id=b)
             for a, b in zip(node_ids, node_ids[1:] + node_ids[:1], strict=True)]
    lines = render_mermaid([], edges).splitlines()
    node_lines = lines[1:1 + len(node_ids)]
    names = [line.split("[", 1)[0].strip() for line in node_lines]
    assert len(set(names)) == len(node_ids)
    assert all(name.replace("_", "a").isalnum() and name.isascii() for name in names)
    assert len(lines) == 1 + 2 * len(node_ids)


@settings(deadline=None, max_examples=60)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
))
def test_jsonable_output_always_serialises(value: object) -> None:
    json.dumps(jsonable(value), allow_nan=False)


def test_merge_timeline_places_a_correction_before_any_step_of_its_node() -> None:
    step = ps.SrbnStepRecord(session_id="s", node_id="n", step="verify", outcome="ok",
                             attempt_count=3)
    early = ps.CorrectionAttemptRow(session_id="s", node_id="n", attempt=1, parse_state="ok",
                                    response_fingerprint="f", response_length=1,
                                    accepted=True, created_at=0)
    orphan = early.model_copy(update={"node_id": "m"})
    assert merge_timeline([step], [early, orphan]) == [early, step, orphan]


# --- docs -----------------------------------------------------------------------------------


def load_reference_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_cli_reference",
                                                  ROOT / "docs" / "gen_cli_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_cli_reference_is_up_to_date() -> None:
    generator = load_reference_generator()
    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert page == generator.updated(page), (
        "docs/cli.md is out of date: run python docs/gen_cli_reference.py"
    )


@pytest.mark.parametrize("name", cli.list_commands(click.Context(cli)))
def test_every_command_has_help_an_example_and_a_reference_entry(name: str) -> None:
    command = cli.get_command(click.Context(cli), name)
    assert command is not None and command.name == name
    assert command.help and "Example:" in command.help
    assert f"## perspt-store {name}\n" in (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")


def test_reference_generation_ignores_the_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = load_reference_generator()
    wide = generator.render_reference()
    monkeypatch.setenv("COLUMNS", "200")
    assert generator.render_reference() == wide

"""The command line in an 80-column terminal, and what it says about rollbacks and time.

Tables are rendered as on a terminal 80 columns wide ($COLUMNS, which rich's Console takes as
its width) and asserted on as text: no line is wider, no table loses its right border, ids are
never cut, long text is cut to one line first.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st

import log_tamper
import perspt_store as ps
from perspt_store.cli import cli
from perspt_store.cli._output import emit_rows
from perspt_store.demo import DEMO_NODES, demo_session_id, record_demo_session
from perspt_store.store.telemetry import counted_tokens

SID = demo_session_id(0)
NODE_IDS = [n.node_id for n in DEMO_NODES]
WIDTH = 80


def invoke(db: Path, *args: str, width: int | None = WIDTH) -> Result:
    env = {"COLUMNS": None if width is None else str(width), "PERSPT_STORE_DB": None}
    return CliRunner(env=env).invoke(cli, ["--db", str(db), *args], prog_name="perspt-store")


def output(db: Path, *args: str, width: int | None = WIDTH) -> str:
    result = invoke(db, *args, width=width)
    assert result.exit_code == 0, result.output
    return result.stdout


def assert_fits(text: str, width: int = WIDTH) -> None:
    """No line wider than the terminal; every table row closed by its right border."""
    for line in text.splitlines():
        assert len(line) <= width, f"{len(line)} columns: {line!r}"
        if line[:1] in "┃│┏┡└":
            assert line[-1] in "┃│┓┩┘", f"cropped: {line!r}"


def cells(text: str) -> list[list[str]]:
    """The cells of every body row of the tables in ``text``."""
    return [[c.strip() for c in line.strip("│").split("│")]
            for line in text.splitlines() if line.startswith("│")]


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo80") / "perspt.db"
    with ps.SessionStore.open(path) as store:
        record_demo_session(store, seed=0)
        long = "a-long-session-id-a-user-copies-" + "x" * 8
        store.create_session(ps.SessionRecord(
            session_id=long, task="a task whose text goes on " * 8, working_dir="/w"))
    return path


@pytest.fixture
def rolled_back_db(tmp_path: Path) -> Iterator[Path]:
    """A demo database rolled back to its second commit: three nodes removed."""
    path = tmp_path / "perspt.db"
    with ps.SessionStore.open(path) as store:
        record_demo_session(store, seed=0)
    yield path


# --- fitting 80 columns ---------------------------------------------------------------------


READS = [
    ["sessions"], ["show", SID], ["nodes", SID], ["nodes", SID, "--history"], ["energy", SID],
    ["llm", SID], ["timeline", SID], ["branches", SID], ["branches", SID, "--flushes"],
    ["log", SID], ["tables"], ["verify", SID],
]


@pytest.mark.parametrize("args", READS, ids=" ".join)
def test_every_table_fits_80_columns_with_ids_whole(demo_db: Path, args: list[str]) -> None:
    text = output(demo_db, *args)
    assert_fits(text)
    for row in cells(text):
        for value in row:  # a node id in a cell is either whole or absent
            if any(value.startswith(n[:6]) and value != n for n in NODE_IDS):
                assert not value.endswith("…"), f"cut id {value!r} in {row}"


def test_show_fits_80_columns_and_lists_every_node_whole(demo_db: Path) -> None:
    text = output(demo_db, "show", SID)
    assert_fits(text)
    nodes = [row[0] for row in cells(text)]
    assert nodes == NODE_IDS
    assert "(degraded)" not in text and "* verified in degraded mode" in text


def test_sessions_at_80_columns_cut_the_task_not_the_id(demo_db: Path) -> None:
    text = output(demo_db, "sessions")
    assert_fits(text)
    long_id = "a-long-session-id-a-user-copies-" + "x" * 8
    rows = cells(text)
    assert [r[0] for r in rows] == [long_id, SID] or [r[0] for r in rows] == [SID, long_id]
    task = next(r[2] for r in rows if r[0] == long_id)
    assert task.startswith("a task") and task.endswith("…")  # one line, cut
    assert len(rows) == 2  # no row wrapped onto a second line
    assert "(created_at, updated_at, merkle_root left out at this width" in text


def test_piped_output_keeps_its_natural_width(demo_db: Path) -> None:
    text = output(demo_db, "sessions", width=None)
    assert "left out" not in text
    assert "merkle_root" in text and max(len(line) for line in text.splitlines()) > WIDTH


def test_optional_columns_go_last_first_and_ids_stay() -> None:
    rows = [{"node_id": "n" * 30, "state": "Completed", "goal": "g " * 60, "extra": "x" * 40}]
    runner = CliRunner(env={"COLUMNS": "60"})

    import click

    from perspt_store.cli._output import Column

    @click.command()
    def show_rows() -> None:
        emit_rows(rows, "table", columns=["node_id", "state", Column("goal", drop=1),
                                          Column("extra", drop=1)])

    text = runner.invoke(show_rows).stdout
    assert_fits(text, 60)
    assert "n" * 30 in text and "extra" not in text.splitlines()[1]
    assert "(extra left out at this width" in text


# --- rollbacks ------------------------------------------------------------------------------


def test_show_after_a_rollback_does_not_list_removed_nodes_as_running(
    rolled_back_db: Path,
) -> None:
    result = invoke(rolled_back_db, "rollback", SID, "--to", "1")
    assert result.exit_code == 0, result.output
    assert_fits(result.stdout)
    removed = NODE_IDS[2:]
    for node_id in removed:
        assert re.search(rf"removed +{node_id}$", result.stdout, re.M)
    text = output(rolled_back_db, "show", SID)
    assert_fits(text)
    assert "(running)" not in text
    assert [row[0] for row in cells(text)] == NODE_IDS[:2]
    assert f"removed by a rollback: {', '.join(sorted(removed))}" in text
    overview = json.loads(output(rolled_back_db, "show", SID, "--json"))
    assert [n["node_id"] for n in overview["nodes"]] == NODE_IDS[:2]
    assert overview["removed_nodes"] == sorted(removed)
    log = json.loads(output(rolled_back_db, "log", SID, "--json"))
    assert [(c["node_id"], c["kind"], c["state"]) for c in log[5:]] == [
        (n, "remove", "__removed__") for n in sorted(removed)
    ]


def test_rollback_dry_run_prints_the_changes_and_writes_nothing(rolled_back_db: Path) -> None:
    before = rolled_back_db.read_bytes()
    dry = json.loads(output(rolled_back_db, "rollback", SID, "--to", "1", "--dry-run", "--json"))
    text = output(rolled_back_db, "rollback", SID, "--to", "1", "--dry-run")
    assert rolled_back_db.read_bytes() == before
    assert dry["dry_run"] is True
    assert "back to commit 1 would append 3 commits" in text and "nothing was written" in text
    assert_fits(text)
    real = json.loads(output(rolled_back_db, "rollback", SID, "--to", "1", "--json"))
    assert real["changes"] == dry["changes"]
    assert [c["kind"] for c in real["changes"]] == ["remove"] * 3
    again = output(rolled_back_db, "rollback", SID, "--to", "1", "--dry-run")
    assert "already there; nothing to append" in again


def test_rollback_prints_the_states_it_restored(rolled_back_db: Path) -> None:
    with ps.SessionStore.open(rolled_back_db) as store:
        first = store.get_latest_node_states(SID)[0]
        store.record_node_state(first.model_copy(update={"state": "Failed"}))
    text = output(rolled_back_db, "rollback", SID, "--to", "4")
    assert re.search(rf"restored +{first.node_id} +state {first.state}$", text, re.M)


# --- history, timeline and log columns ------------------------------------------------------


def test_nodes_history_has_the_commit_seq_and_time(demo_db: Path) -> None:
    rows = json.loads(output(demo_db, "nodes", SID, "--history", "--json"))
    log = json.loads(output(demo_db, "log", SID, "--json"))
    assert [r["seq"] for r in rows] == [c["seq"] for c in log]
    assert [r["node_id"] for r in rows] == [c["node_id"] for c in log]
    assert [r["state"] for r in rows] == [c["state"] for c in log]
    text = output(demo_db, "nodes", SID, "--history")
    header = text.splitlines()[1]
    assert "seq" in header and "recorded" in header


def test_timeline_table_has_a_time_for_steps_and_corrections(demo_db: Path) -> None:
    text = output(demo_db, "timeline", SID, width=200)
    times = [row[0] for row in cells(text)]
    assert times and all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", t) for t in times)
    assert any(row[2] == "correction" for row in cells(text))


# --- one time convention --------------------------------------------------------------------


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


@pytest.mark.parametrize("args", [a for a in READS if a[0] != "tables"], ids=" ".join)
def test_every_json_time_is_aware_utc(demo_db: Path, args: list[str]) -> None:
    document = json.loads(output(demo_db, *args, "--json"))
    times = [s for s in strings(document) if re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+.*", s)]
    for text in times:
        assert dt.datetime.fromisoformat(text).utcoffset() == dt.timedelta(0), text
        assert text.endswith("Z")
    if args[0] in ("sessions", "show", "nodes", "llm", "energy"):
        assert times


# --- the token rule is the store's -----------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.text(max_size=30), st.integers(0, 50),
                          st.text(max_size=30)), max_size=6))
def test_counted_tokens_agrees_with_the_store_summary(
    requests: list[tuple[int, str, int, str]],
) -> None:
    with ps.SessionStore.in_memory() as store:
        store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
        for tokens_in, prompt, tokens_out, response in requests:
            store.record_llm_request(ps.LlmRequestRecord(
                session_id="s", model="m", prompt=prompt, response=response,
                tokens_in=tokens_in, tokens_out=tokens_out, latency_ms=1))
        summary = store.get_global_llm_summary()
    assert summary.tokens_in == sum(counted_tokens(r[0], r[1]) for r in requests)
    assert summary.tokens_out == sum(counted_tokens(r[2], r[3]) for r in requests)


def test_show_keeps_a_60_character_node_id_whole_by_leaving_columns_out(tmp_path: Path) -> None:
    path = tmp_path / "long.db"
    long_id = "node-" + "n" * 55
    with ps.SessionStore.open(path) as store:
        store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
        store.record_node_state(ps.NodeStateRecord(
            session_id="s", node_id=long_id, state="Completed", node_class="Implementation",
            v_total=0.125))
    text = output(path, "show", "s")
    assert_fits(text)
    (row,) = cells(text)
    assert row[0] == long_id and row[-1] == "0.1250"  # the id and V(x) whole
    assert "left out at this width" in text


def test_show_renders_within_a_rich_console_80_wide(demo_db: Path) -> None:
    import io

    from rich.console import Console

    from perspt_store.cli._sessions import overview_renderables, session_overview

    with ps.SessionStore.open_read_only(demo_db) as store, store.consistent_read():
        overview = session_overview(store, SID)
    out = Console(width=WIDTH, file=io.StringIO(), color_system=None)
    for renderable in overview_renderables(overview, out):
        out.print(renderable)
    text = out.file.getvalue()  # type: ignore[attr-defined]
    assert_fits("\n".join(line.rstrip() for line in text.splitlines()))
    assert [row[0] for row in cells(text) if row[0] in NODE_IDS] == NODE_IDS


def test_history_seqs_are_empty_when_the_log_was_edited_behind_the_stores_back(
    rolled_back_db: Path,
) -> None:
    import duckdb

    with duckdb.connect(str(rolled_back_db)) as con:  # a forger deletes one log entry
        log_tamper.delete_entry(con.execute, SID, 4)
    rows = json.loads(output(rolled_back_db, "nodes", SID, "--history", "--json"))
    assert len(rows) == len(NODE_IDS) and all(r["seq"] is None for r in rows)
    log = json.loads(output(rolled_back_db, "log", SID, "--json"))
    assert all(c["state"] is None for c in log)  # no guess at which row a commit was
    assert invoke(rolled_back_db, "verify", SID).exit_code == 1

"""Beyond one machine: Parquet lakes written by ``export_parquet`` and merged by
``import_lake``; sessions from many stores queried together and merged into one store whose
Merkle logs still verify."""

from __future__ import annotations

import datetime as _dt
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import perspt_store as ps
from perspt_store.cli import cli
from perspt_store.demo import record_demo_session
from perspt_store.lake import (
    LAKE_FORMAT,
    LAKE_TABLES,
    MANIFEST,
    export_parquet,
    import_lake,
    lake_views,
    partition_dir,
)
from perspt_store.schema import SCHEMA_VERSION, SEQUENCED_TABLES

WEIRD = "run/7 x=y%z é'"
"""A session id that needs URL-encoding in a partition directory name."""

LOCK = ".export.lock"
"""The lake's lock file: an exporter holds it while it swaps partitions and the manifest."""


def new_session(store: ps.SessionStore, session_id: str, **fields: Any) -> str:
    store.create_session(
        ps.SessionRecord(session_id=session_id, task="t", working_dir="/w", **fields)
    )
    return session_id


def small_session(store: ps.SessionStore, session_id: str, nodes: int = 3) -> str:
    """A session with node states (commits), energy, LLM calls, a charter and lineage."""
    new_session(store, session_id, status="RUNNING")
    for i in range(nodes):
        store.record_energy(ps.EnergyRecord(session_id=session_id, node_id=f"n{i}",
                                            v_total=1.0 / (i + 1), v_syn=0.25))
        store.record_node_state(ps.NodeStateRecord(
            session_id=session_id, node_id=f"n{i}", state="Running", merkle_hash=bytes([i]) * 32,
            children=[f"n{i + 1}"], goal=None))
        store.record_llm_request(ps.LlmRequestRecord(
            session_id=session_id, node_id=f"n{i}", model="m", prompt="p" * i, response="",
            tokens_in=10 * i, latency_ms=100 + i))
    store.record_node_state(ps.NodeStateRecord(session_id=session_id, node_id="n0",
                                               state="Completed"))
    store.record_branch_lineage(ps.BranchLineageRow(
        lineage_id=f"lin-{session_id}", parent_branch_id="p", child_branch_id="c",
        session_id=session_id))
    return session_id


def contents(store: ps.SessionStore, session_id: str) -> dict[str, Any]:
    """Every row of the session in every table, in insertion order, with the timestamps the
    database filled in (ids aside: they are the target's own after an import)."""
    out: dict[str, Any] = {}
    for table, model in ps.ROW_MODELS.items():
        order = "id" if table in SEQUENCED_TABLES else "rowid"
        rows = store._select(model, "session_id = ?", [session_id], order_by=order)
        out[table] = [
            (row.to_dict(), {c: getattr(row, c) for c in row.__db_columns__ if c != "id"})
            for row in rows
        ]
    out["merkle_log"] = store.get_commit_log(session_id)
    out["overrides"] = store.sql(
        "SELECT merkle_root, source, created_at FROM merkle_root_overrides "
        "WHERE session_id = ? ORDER BY id", [session_id]).fetchall()
    return out


def table_counts(store: ps.SessionStore) -> dict[str, int]:
    return {t: store.sql(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in LAKE_TABLES}


@pytest.fixture
def machines() -> Iterator[tuple[ps.SessionStore, ps.SessionStore]]:
    """Two stores, as on two machines: demo sessions, a small one, and a weird id."""
    with ps.SessionStore.in_memory() as a, ps.SessionStore.in_memory() as b:
        record_demo_session(a, seed=1)
        small_session(a, WEIRD)
        record_demo_session(b, seed=2)
        small_session(b, "b-small")
        yield a, b


# --- the multi-machine story ------------------------------------------------------------------


def test_two_machines_are_queried_together_and_merged_into_a_third_store(
    machines: tuple[ps.SessionStore, ps.SessionStore], tmp_path: Path
) -> None:
    a, b = machines
    lakes = tmp_path / "lake"
    export_parquet(a, lakes / "machine=a")
    export_parquet(b, lakes / "machine=b")
    sessions = {"a": [*a.sql("SELECT session_id FROM sessions").fetchall()],
                "b": [*b.sql("SELECT session_id FROM sessions").fetchall()]}

    # One DuckDB connection over the Parquet dataset of both machines.
    con = duckdb.connect()
    assert "energy_history" in lake_views(con, lakes / "machine=a", lakes / "machine=b")
    for table in ("energy_history", "node_states", "llm_requests", "merkle_log"):
        got = con.sql(f"SELECT session_id, count(*) FROM {table} GROUP BY ALL").fetchall()
        want = [*a.sql(f"SELECT session_id, count(*) FROM {table} GROUP BY ALL").fetchall(),
                *b.sql(f"SELECT session_id, count(*) FROM {table} GROUP BY ALL").fetchall()]
        assert sorted(got) == sorted(want), table
    by_machine = con.sql(
        f"SELECT machine, session_id FROM read_parquet('{lakes}/*/sessions/*/*.parquet', "
        "hive_partitioning=true, hive_types={'session_id': VARCHAR}) ORDER BY ALL"
    ).fetchall()
    assert by_machine == sorted([("a", s) for (s,) in sessions["a"]]
                                + [("b", s) for (s,) in sessions["b"]])
    # Energies read back exactly, through the lake.
    assert sorted(con.sql("SELECT v_total FROM energy_history WHERE session_id = ?",
                          params=[WEIRD]).fetchall()) == sorted(
        (e.v_total,) for e in a.get_session_energy_history(WEIRD))

    with ps.SessionStore.open(tmp_path / "central.db", publish_interval=None) as central:
        assert import_lake(central, lakes / "machine=a").imported == [s for (s,) in sessions["a"]]
        assert import_lake(central, lakes / "machine=b").ok
        for source, ids in ((a, sessions["a"]), (b, sessions["b"])):
            for (sid,) in ids:
                report = central.verify_session(sid)
                assert report.ok, report
                assert report.log_root == source.verify_session(sid).log_root
                assert contents(central, sid) == contents(source, sid)
                assert central.load_session_snapshot(sid) == source.load_session_snapshot(sid)


def test_importing_the_same_lake_twice_adds_nothing(
    machines: tuple[ps.SessionStore, ps.SessionStore], tmp_path: Path
) -> None:
    a, _ = machines
    export_parquet(a, tmp_path / "lake")
    with ps.SessionStore.in_memory() as central:
        first = import_lake(central, tmp_path / "lake")
        before = table_counts(central)
        second = import_lake(central, tmp_path / "lake")
        assert table_counts(central) == before
        assert second.skipped == first.imported and not second.imported and second.ok
        assert second.rows == {}


def test_import_gives_new_ids_and_remaps_the_commit_log(tmp_path: Path) -> None:
    with ps.SessionStore.in_memory() as source, ps.SessionStore.in_memory() as target:
        small_session(source, "s")
        for i in range(5):  # the target's ids 1..n are taken by another session
            small_session(target, f"local-{i}")
        export_parquet(source, tmp_path / "lake")
        assert import_lake(target, tmp_path / "lake").imported == ["s"]
        ids = [r.id for r in target.get_node_states("s")]
        assert min(ids) > max(r.id for r in target.get_node_states("local-4"))  # type: ignore[operator]
        assert ids == sorted(ids)
        log = target.sql(
            "SELECT l.seq, n.node_id, n.state FROM merkle_log l JOIN node_states n "
            "ON n.id = l.node_state_id WHERE l.session_id = 's' ORDER BY l.seq").fetchall()
        assert [(n, s) for _, n, s in log] == [(r.node_id, r.state)
                                              for r in source.get_node_states("s")]
        assert target.verify_session("s").ok
        for seq in range(len(log)):
            assert target.inclusion_proof("s", seq).verify()
        # The imported session goes on: its next commit extends the imported log.
        old = target.checkpoint("s")
        target.record_node_state(ps.NodeStateRecord(session_id="s", node_id="n9", state="x"))
        assert target.verify_session("s", against=old).ok
        # And the sequences stay ahead of every imported id.
        target.record_energy(ps.EnergyRecord(session_id="s", node_id="n9"))
        assert target.get_energy_history("s", "n9")[0].id == max(
            r[0] for r in target.sql("SELECT id FROM energy_history").fetchall())


def test_insertion_order_survives_export_and_import(tmp_path: Path) -> None:
    with ps.SessionStore.in_memory() as source:
        for sid in ("x", "y"):
            new_session(source, sid)
        with source.transaction():  # one transaction: every created_at ties
            for i in range(6):
                sid = "xy"[i % 2]
                source.record_energy(ps.EnergyRecord(session_id=sid, node_id="n", v_total=i))
                source.record_node_state(ps.NodeStateRecord(session_id=sid, node_id=f"n{i % 3}",
                                                            state=f"s{i}"))
                source.record_feature_charter(ps.FeatureCharterRow(
                    charter_id=f"{'zyxwvu'[i]}-{sid}", session_id=sid, scope_description=f"{i}"))
                source.record_plan_revision(ps.PlanRevisionRow(
                    revision_id=f"{'zyxwvu'[i]}-rev-{sid}", session_id=sid, sequence=1,
                    plan_json="{}", reason=f"{i}"))
        export_parquet(source, tmp_path / "lake")
        with ps.SessionStore.in_memory() as target:
            import_lake(target, tmp_path / "lake")
            for sid in ("x", "y"):
                assert contents(target, sid) == contents(source, sid)
                # "latest" among ties is the last inserted, as in the source
                assert target.get_feature_charter(sid) == source.get_feature_charter(sid)
                assert target.get_active_plan_revision(sid) == \
                    source.get_active_plan_revision(sid)
                assert target.get_latest_node_states(sid) == source.get_latest_node_states(sid)


# --- conflicts and invalid lakes ------------------------------------------------------------


def test_a_session_with_a_different_history_is_reported_and_not_merged(
    machines: tuple[ps.SessionStore, ps.SessionStore], tmp_path: Path
) -> None:
    a, _ = machines
    export_parquet(a, tmp_path / "lake")
    with ps.SessionStore.in_memory() as central:
        small_session(central, WEIRD, nodes=2)  # same id, another run
        before = contents(central, WEIRD)
        report = import_lake(central, tmp_path / "lake")
        assert not report.ok and not report
        (conflict,) = report.conflicts
        assert conflict.session_id == WEIRD and conflict.status == "conflict"
        assert "different history" in conflict.detail and "node_states" in conflict.detail
        assert "commit log: store 3 commits" in conflict.detail
        assert contents(central, WEIRD) == before  # nothing merged
        assert len(report.imported) == 1  # the other session went in


def test_a_status_change_alone_is_a_different_history(tmp_path: Path) -> None:
    with ps.SessionStore.in_memory() as source, ps.SessionStore.in_memory() as central:
        small_session(source, "s")
        export_parquet(source, tmp_path / "lake")
        import_lake(central, tmp_path / "lake")
        source.update_session_status("s", "COMPLETED")  # same rows, one field changed
        export_parquet(source, tmp_path / "lake")
        report = import_lake(central, tmp_path / "lake")
        assert [c.session_id for c in report.conflicts] == ["s"]
        assert "sessions (store 1 rows, lake 1)" in report.conflicts[0].detail


def test_a_key_held_by_another_session_is_a_conflict_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    with ps.SessionStore.in_memory() as source, ps.SessionStore.in_memory() as central:
        small_session(source, "s")
        source.record_feature_charter(ps.FeatureCharterRow(
            charter_id="charter-1", session_id="s", scope_description="x"))
        export_parquet(source, tmp_path / "lake")
        new_session(central, "other")
        central.record_feature_charter(ps.FeatureCharterRow(
            charter_id="charter-1", session_id="other", scope_description="y"))
        before = table_counts(central)
        report = import_lake(central, tmp_path / "lake")
        assert [(c.session_id, c.status) for c in report.conflicts] == [("s", "conflict")]
        assert "charter-1" in report.conflicts[0].detail
        assert table_counts(central) == before
        assert central.get_session("s") is None


@pytest.mark.parametrize("damage", ["missing partition", "extra rows", "wrong checkpoint",
                                    "edited node state"])
def test_a_lake_that_does_not_match_its_manifest_is_invalid_and_not_imported(
    tmp_path: Path, damage: str
) -> None:
    lake = tmp_path / "lake"
    with ps.SessionStore.in_memory() as source:
        small_session(source, "s")
        small_session(source, "t")
        export_parquet(source, lake)
    manifest = json.loads((lake / MANIFEST).read_text())
    if damage == "missing partition":
        for f in (lake / partition_dir("energy_history", "s")).iterdir():
            f.unlink()
    elif damage == "extra rows":
        manifest["sessions"]["s"]["rows"]["llm_requests"] -= 1
    elif damage == "wrong checkpoint":
        manifest["sessions"]["s"]["checkpoint"]["log_root"] = "00" * 32
    else:
        part = lake / partition_dir("node_states", "s")
        (data,) = part.glob("*.parquet")
        duckdb.execute(
            f"COPY (SELECT * REPLACE ('Forged' AS state) FROM read_parquet('{data}', "
            f"hive_partitioning=false)) TO '{part / 'forged.parquet'}' (FORMAT parquet)")
        data.unlink()
    (lake / MANIFEST).write_text(json.dumps(manifest))
    with ps.SessionStore.in_memory() as central:
        report = import_lake(central, lake)
        assert report.imported == ["t"]
        (bad,) = report.conflicts
        assert (bad.session_id, bad.status) == ("s", "invalid")
        assert "nothing was imported" in bad.detail
        assert central.get_session("s") is None
        assert central.sql("SELECT count(*) FROM node_states WHERE session_id = 's'"
                           ).fetchall() == [(0,)]


def test_a_directory_that_is_not_a_lake_is_refused(tmp_path: Path) -> None:
    with ps.SessionStore.in_memory() as central:
        with pytest.raises(ps.StoreError, match=r"no manifest\.json"):
            import_lake(central, tmp_path)
        (tmp_path / MANIFEST).write_text("{}")
        with pytest.raises(ps.StoreError, match="not a perspt-store lake manifest"):
            import_lake(central, tmp_path)
        with pytest.raises(ps.StoreError, match="no lake directory or database file"):
            import_lake(central, tmp_path / "missing")


def test_a_lake_from_a_newer_schema_is_refused(tmp_path: Path) -> None:
    with ps.SessionStore.in_memory() as source:
        small_session(source, "s")
        export_parquet(source, tmp_path)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    manifest["schema_version"] = SCHEMA_VERSION + 1
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with ps.SessionStore.in_memory() as central, pytest.raises(ps.SchemaVersionError):
        import_lake(central, tmp_path)
    with ps.SessionStore.in_memory() as other, pytest.raises(ps.SchemaVersionError):
        export_parquet(other, tmp_path)


def test_import_into_a_read_only_store_is_refused(tmp_path: Path) -> None:
    with ps.SessionStore.open(tmp_path / "t.db") as target:
        small_session(target, "s")
        export_parquet(target, tmp_path / "lake")
    with ps.SessionStore.open_read_only(tmp_path / "t.db") as read_only, \
            pytest.raises(ps.ReadOnlyStoreError):
        import_lake(read_only, tmp_path / "lake")


def test_importing_named_sessions_only(tmp_path: Path) -> None:
    with ps.SessionStore.in_memory() as source:
        small_session(source, "s")
        small_session(source, "t")
        export_parquet(source, tmp_path / "lake")
    with ps.SessionStore.in_memory() as central:
        assert import_lake(central, tmp_path / "lake", ["t"]).imported == ["t"]
        assert central.get_session("s") is None
        with pytest.raises(ps.RecordNotFoundError, match="'nope'"):
            import_lake(central, tmp_path / "lake", ["nope"])


# --- export ---------------------------------------------------------------------------------


def test_the_manifest_records_versions_checkpoints_and_row_counts(tmp_path: Path) -> None:
    with ps.SessionStore.in_memory() as store:
        small_session(store, "s")
        report = export_parquet(store, tmp_path)
        manifest = json.loads((tmp_path / MANIFEST).read_text())
        assert manifest == report.manifest
        assert manifest["format"] == LAKE_FORMAT
        assert (manifest["schema_version"], manifest["library_version"]) == (
            SCHEMA_VERSION, ps.__version__)
        entry = manifest["sessions"]["s"]
        checkpoint = ps.Checkpoint.from_json(json.dumps(entry["checkpoint"]))
        assert store.verify_session("s", against=checkpoint).ok
        assert (checkpoint.size, checkpoint.log_root) == (4, store.log_root("s"))
        assert entry["rows"] == {t: store.sql(f"SELECT count(*) FROM {t} WHERE session_id = 's'"
                                              ).fetchall()[0][0] for t in LAKE_TABLES}
        assert report.rows == {t: n for t, n in entry["rows"].items() if n}


def test_re_export_replaces_a_sessions_partitions_and_keeps_the_others(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with ps.SessionStore.in_memory() as store:
        small_session(store, "s")
        small_session(store, "t")
        export_parquet(store, lake)
        files = sorted(p.relative_to(lake) for p in lake.rglob("*.parquet"))
        export_parquet(store, lake)  # again: the same files, nothing duplicated
        assert sorted(p.relative_to(lake) for p in lake.rglob("*.parquet")) == files
        store.record_energy(ps.EnergyRecord(session_id="s", node_id="late", v_total=9.0))
        assert export_parquet(store, lake, ["s"]).session_ids == ["s"]
        con = duckdb.connect()
        lake_views(con, lake)
        assert con.sql("SELECT session_id, count(*) FROM energy_history GROUP BY ALL "
                       "ORDER BY ALL").fetchall() == [("s", 4), ("t", 3)]
        manifest = json.loads((lake / MANIFEST).read_text())
        assert set(manifest["sessions"]) == {"s", "t"}
        assert manifest["sessions"]["s"]["rows"]["energy_history"] == 4
        assert not [p for p in lake.iterdir() if p.name.startswith(("_staging", "."))]


def test_several_stores_export_into_one_directory(
    machines: tuple[ps.SessionStore, ps.SessionStore], tmp_path: Path
) -> None:
    a, b = machines
    export_parquet(a, tmp_path / "lake")
    export_parquet(b, tmp_path / "lake")
    manifest = json.loads((tmp_path / "lake" / MANIFEST).read_text())
    assert len(manifest["sessions"]) == 4
    with ps.SessionStore.in_memory() as central:
        report = import_lake(central, tmp_path / "lake")
        assert len(report.imported) == 4
        assert all(central.verify_session(s).ok for s in report.imported)


def test_export_of_unknown_sessions_writes_nothing(tmp_path: Path) -> None:
    with ps.SessionStore.in_memory() as store:
        small_session(store, "s")
        with pytest.raises(ps.RecordNotFoundError, match="'nope'"):
            export_parquet(store, tmp_path / "lake", ["s", "nope"])
    assert not list((tmp_path / "lake").rglob("*.parquet"))
    assert not (tmp_path / "lake" / MANIFEST).exists()


def test_export_to_a_file_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with ps.SessionStore.in_memory() as store, pytest.raises(ps.StoreError, match="cannot"):
        export_parquet(store, tmp_path / "file")


def test_export_reads_a_read_only_store_and_leaves_its_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with ps.SessionStore.open(path, publish_interval=None) as store:
        record_demo_session(store, seed=3)
    before = path.read_bytes()
    with ps.SessionStore.open_read_only(path) as store:
        report = export_parquet(store, tmp_path / "lake")
    assert path.read_bytes() == before and len(report.session_ids) == 1


def test_lineage_rows_without_a_session_are_not_exported(tmp_path: Path) -> None:
    with ps.SessionStore.in_memory() as store:
        small_session(store, "s")
        store.record_branch_lineage(ps.BranchLineageRow(
            lineage_id="orphan", parent_branch_id="p", child_branch_id="c"))
        report = export_parquet(store, tmp_path)
    assert report.rows["branch_lineage"] == 1
    assert duckdb.sql(f"SELECT lineage_id FROM read_parquet('{tmp_path}/branch_lineage/*/*')"
                      ).fetchall() == [("lin-s",)]


def test_export_is_one_consistent_snapshot_while_a_run_writes(tmp_path: Path) -> None:
    with ps.SessionStore.open(tmp_path / "live.db", publish_interval=None) as store:
        small_session(store, "s")
        stop = threading.Event()

        def run() -> None:
            i = 0
            while not stop.is_set():
                with store.transaction():
                    store.record_node_state(ps.NodeStateRecord(
                        session_id="s", node_id=f"w{i % 4}", state=f"s{i}"))
                    store.record_energy(ps.EnergyRecord(session_id="s", node_id="w"))
                i += 1

        writer = threading.Thread(target=run)
        writer.start()
        try:
            for round_ in range(3):
                export_parquet(store, tmp_path / f"lake{round_}")
        finally:
            stop.set()
            writer.join()
        for round_ in range(3):
            with ps.SessionStore.in_memory() as central:
                assert import_lake(central, tmp_path / f"lake{round_}").imported == ["s"]


def test_batched_writes_are_flushed_into_the_export(tmp_path: Path) -> None:
    with ps.SessionStore.open(tmp_path / "b.db", durability="batched", flush_interval=60,
                              publish_interval=None) as store:
        new_session(store, "s")
        for i in range(5):
            store.record_energy(ps.EnergyRecord(session_id="s", node_id="n", v_total=i))
        assert store.pending_writes
        report = export_parquet(store, tmp_path / "lake")
        assert report.rows["energy_history"] == 5


def test_an_upstream_file_round_trips_through_a_lake(tmp_path: Path) -> None:
    from upstream_files import write_upstream_062

    path = tmp_path / "upstream.db"
    write_upstream_062(path)
    with ps.SessionStore.open(path, publish_interval=None) as source:  # migrates in place
        export_parquet(source, tmp_path / "lake")
        sessions = [s for (s,) in source.sql("SELECT session_id FROM sessions").fetchall()]
        with ps.SessionStore.in_memory() as central:
            assert import_lake(central, tmp_path / "lake").imported == sessions
            for sid in sessions:
                # decoded values (the raw upstream root of an override is decoded too)
                ours_rows, theirs_rows = contents(central, sid), contents(source, sid)
                assert ours_rows.pop("overrides") != theirs_rows.pop("overrides")
                assert ours_rows == theirs_rows
                ours, theirs = central.verify_session(sid), source.verify_session(sid)
                assert (ours.ok, ours.log_root, ours.notes) == (
                    theirs.ok, theirs.log_root, theirs.notes)
            assert import_lake(central, tmp_path / "lake").skipped == sessions
    # An unmigrated upstream file cannot be exported until it is migrated.
    write_upstream_062(tmp_path / "raw.db")
    with ps.SessionStore.open_read_only(tmp_path / "raw.db") as raw, \
            pytest.raises(ps.StoreError, match="migrate"):
        export_parquet(raw, tmp_path / "lake2")


# --- another store file as the source --------------------------------------------------------


def test_importing_another_database_file(tmp_path: Path) -> None:
    with ps.SessionStore.open(tmp_path / "a.db", publish_interval=None) as a:
        sid = record_demo_session(a, seed=4)
        expected = contents(a, sid)
    with ps.SessionStore.open(tmp_path / "c.db", publish_interval=None) as central:
        report = import_lake(central, tmp_path / "a.db")
        assert (report.source, report.imported) == (str(tmp_path / "a.db"), [sid])
        assert contents(central, sid) == expected and central.verify_session(sid).ok
        assert import_lake(central, tmp_path / "a.db").skipped == [sid]
        with pytest.raises(ps.RecordNotFoundError, match=r"no session 'nope' in .*a\.db"):
            import_lake(central, tmp_path / "a.db", ["nope"])


def test_importing_a_file_another_store_in_this_process_is_writing(tmp_path: Path) -> None:
    with ps.SessionStore.open(tmp_path / "a.db", publish_interval=None) as live, \
            ps.SessionStore.in_memory() as central:
        small_session(live, "s")
        assert import_lake(central, tmp_path / "a.db").imported == ["s"]


# --- the law ----------------------------------------------------------------------------------


events = st.lists(
    st.tuples(st.sampled_from(["s1", "s2", "s/3"]), st.sampled_from(["a", "b", "c"]),
              st.sampled_from(["state", "energy", "llm", "rollback"]), st.floats(0, 10)),
    max_size=25,
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(events=events)
def test_import_of_an_export_reproduces_every_session(
    events: list[tuple[str, str, str, float]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    lake = tmp_path_factory.mktemp("lake")
    with ps.SessionStore.in_memory() as source, ps.SessionStore.in_memory() as target:
        for sid in ("s1", "s2", "s/3"):
            new_session(source, sid)
        small_session(target, "already-here")
        for sid, node, kind, value in events:
            if kind == "state":
                source.record_node_state(ps.NodeStateRecord(
                    session_id=sid, node_id=node, state="S", v_total=value))
            elif kind == "energy":
                source.record_energy(ps.EnergyRecord(session_id=sid, node_id=node,
                                                     v_total=value))
            elif kind == "llm":
                source.record_llm_request(ps.LlmRequestRecord(
                    session_id=sid, node_id=node, model="m", prompt=str(value), response=""))
            elif source.get_commit_log(sid):
                source.rollback(sid, to_seq=0)
        export_parquet(source, lake)
        report = import_lake(target, lake)
        assert sorted(report.imported) == ["s/3", "s1", "s2"]
        for sid in ("s1", "s2", "s/3"):
            assert contents(target, sid) == contents(source, sid)
            assert target.verify_session(sid).ok
        assert import_lake(target, lake).skipped == report.imported


# --- a lake keeps histories -------------------------------------------------------------------


def commits(store: ps.SessionStore, session_id: str, count: int, tag: str = "x") -> None:
    """Append ``count`` commits to the session's log."""
    for i in range(count):
        store.record_node_state(ps.NodeStateRecord(
            session_id=session_id, node_id=f"{tag}{i}", state=f"{tag}-state-{i}"))


def lake_files(lake: Path) -> dict[str, bytes]:
    """Every file of the lake, by relative path, with its bytes."""
    return {str(p.relative_to(lake)): p.read_bytes() for p in lake.rglob("*") if p.is_file()}


def leftovers(lake: Path) -> list[str]:
    """What an export leaves beside the tables and the manifest: nothing, when it is done."""
    return sorted(p.name for p in lake.iterdir() if p.name.startswith(("_", ".")))


def test_another_history_with_the_same_id_is_a_conflict_and_the_lake_keeps_its_copy(
    tmp_path: Path,
) -> None:
    lake = tmp_path / "lake"
    with ps.SessionStore.open(tmp_path / "a.db", publish_interval=None) as a:
        new_session(a, "run-1")
        commits(a, "run-1", 3, "a")
        small_session(a, "a-only")
        first = export_parquet(a, lake)
        assert first.ok and not first.conflicts
        a_root = a.log_root("run-1")
    before = lake_files(lake)
    with ps.SessionStore.open(tmp_path / "b.db", publish_interval=None) as b:
        new_session(b, "run-1")
        commits(b, "run-1", 1, "b")
        small_session(b, "b-only")
        report = export_parquet(b, lake)
    assert not report.ok and not report
    (conflict,) = report.conflicts
    assert conflict.session_id == "run-1"
    assert "different history" in conflict.detail and "3 commits" in conflict.detail
    # The other session went in; the lake's copy of run-1 is untouched, byte for byte.
    assert report.session_ids == ["b-only"]
    assert set(report.rows) and report.manifest["sessions"]["run-1"] == (
        first.manifest["sessions"]["run-1"])
    after = lake_files(lake)
    assert {k: v for k, v in after.items() if "b-only" not in k and k != MANIFEST} == {
        k: v for k, v in before.items() if k != MANIFEST}
    manifest = json.loads((lake / MANIFEST).read_text())
    assert manifest["sessions"]["run-1"]["checkpoint"]["size"] == 3
    assert set(manifest["sessions"]) == {"run-1", "a-only", "b-only"}
    assert leftovers(lake) == []
    with ps.SessionStore.in_memory() as central:
        assert import_lake(central, lake).ok
        assert central.log_root("run-1") == a_root and central.verify_session("run-1").ok


def test_a_log_that_extends_the_lakes_copy_replaces_it(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with ps.SessionStore.open(tmp_path / "a.db", publish_interval=None) as a:
        new_session(a, "run-1")
        commits(a, "run-1", 3)
        export_parquet(a, lake)
        assert export_parquet(a, lake).session_ids == ["run-1"]  # the same log: re-exported
        old = ps.Checkpoint.from_json(json.dumps(
            json.loads((lake / MANIFEST).read_text())["sessions"]["run-1"]["checkpoint"]))
        commits(a, "run-1", 4, "later")
        a.record_energy(ps.EnergyRecord(session_id="run-1", node_id="later0", v_total=2.0))
        report = export_parquet(a, lake)
        assert report.ok and report.session_ids == ["run-1"] and not report.conflicts
        entry = json.loads((lake / MANIFEST).read_text())["sessions"]["run-1"]
        assert entry["checkpoint"]["size"] == 7
        assert entry["checkpoint"]["log_root"] == a.log_root("run-1").hex()
        assert entry["rows"]["energy_history"] == 1
        assert leftovers(lake) == []
        with ps.SessionStore.in_memory() as central:
            assert import_lake(central, lake).imported == ["run-1"]
            assert central.verify_session("run-1", against=old).ok
            assert central.log_root("run-1") == a.log_root("run-1")


def test_a_store_behind_the_lakes_copy_does_not_roll_it_back(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with ps.SessionStore.open(tmp_path / "a.db", publish_interval=None) as a:
        new_session(a, "run-1")
        commits(a, "run-1", 3)
    (tmp_path / "old.db").write_bytes((tmp_path / "a.db").read_bytes())  # a copy at 3
    with ps.SessionStore.open(tmp_path / "a.db", publish_interval=None) as a:
        commits(a, "run-1", 2, "later")
        export_parquet(a, lake)
    before = lake_files(lake)
    with ps.SessionStore.open_read_only(tmp_path / "old.db") as old:
        report = export_parquet(old, lake)
    (conflict,) = report.conflicts
    assert "more commits" in conflict.detail and report.session_ids == []
    assert lake_files(lake) == before


def test_sessions_without_commits_are_told_apart_by_creation(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with ps.SessionStore.in_memory() as a, ps.SessionStore.in_memory() as b:
        new_session(a, "run-1")
        a.record_energy(ps.EnergyRecord(session_id="run-1", node_id="n", v_total=1.0))
        export_parquet(a, lake)
        a.record_energy(ps.EnergyRecord(session_id="run-1", node_id="n", v_total=0.5))
        assert export_parquet(a, lake).session_ids == ["run-1"]  # the same session, later
        time.sleep(0.01)  # created (a moment) later: another session with the same id
        new_session(b, "run-1")
        report = export_parquet(b, lake)
        (conflict,) = report.conflicts
        assert "another session" in conflict.detail
        entry = json.loads((lake / MANIFEST).read_text())["sessions"]["run-1"]
        assert entry["rows"]["energy_history"] == 2


# Several processes exporting into one lake at once: each runs this with a JSON list of
# [lake, session] jobs, waits for the GO file so that they start together, and prints what
# each export reported.
EXPORTER = """
import json, sys, time
from pathlib import Path
import perspt_store as ps
from perspt_store.lake import export_parquet

db, go, jobs = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
with ps.SessionStore.open_read_only(db) as store:
    deadline = time.monotonic() + 60
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.001)
    out = []
    for lake, sid in jobs:
        report = export_parquet(store, lake, [sid])
        out.append({"exported": report.session_ids,
                    "conflicts": [c.session_id for c in getattr(report, "conflicts", [])]})
print(json.dumps(out))
"""


def run_exporters(tmp_path: Path, work: list[tuple[Path, list[tuple[Path, str]]]]) -> list[Any]:
    """Start one process per (database, jobs), release them together, and return what each
    printed (bounded in time: a hung exporter fails the test)."""
    script = tmp_path / "exporter.py"
    script.write_text(EXPORTER)
    go = tmp_path / "GO"
    return run_processes(script, go, [
        [str(db), str(go), json.dumps([[str(lake), sid] for lake, sid in jobs])]
        for db, jobs in work
    ])


def run_processes(script: Path, go: Path, argvs: list[list[str]]) -> list[Any]:
    """Run ``script`` in one process per argv, release them together by creating ``go``,
    and return what each printed as JSON (bounded in time: a hung process fails the test)."""
    procs = [
        subprocess.Popen([sys.executable, str(script), *argv],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for argv in argvs
    ]
    go.touch()
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
            results.append(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def test_two_processes_export_forty_sessions_into_one_lake_at_once(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    work = []
    for p in range(2):
        db = tmp_path / f"p{p}.db"
        with ps.SessionStore.open(db, publish_interval=None) as store:
            for i in range(20):
                new_session(store, f"p{p}-s{i}")
                commits(store, f"p{p}-s{i}", 1 + i % 3, f"p{p}")
        work.append((db, [(lake, f"p{p}-s{i}") for i in range(20)]))
    results = run_exporters(tmp_path, work)
    assert all(r == {"exported": [r["exported"][0]], "conflicts": []}
               for out in results for r in out)
    manifest = json.loads((lake / MANIFEST).read_text())
    expected = {f"p{p}-s{i}" for p in range(2) for i in range(20)}
    assert set(manifest["sessions"]) == expected
    assert leftovers(lake) == []
    with ps.SessionStore.in_memory() as central:
        report = import_lake(central, lake)
        assert report.ok and set(report.imported) == expected
        assert all(central.verify_session(sid).ok for sid in expected)


def test_two_processes_exporting_one_id_with_different_histories_one_wins(
    tmp_path: Path,
) -> None:
    lakes = [tmp_path / f"lake{i}" for i in range(5)]
    work = []
    roots = {}
    for p in range(2):
        db = tmp_path / f"p{p}.db"
        with ps.SessionStore.open(db, publish_interval=None) as store:
            new_session(store, "run-1")
            commits(store, "run-1", 2 + p, f"p{p}")
            roots[p] = store.log_root("run-1")
        work.append((db, [(lake, "run-1") for lake in lakes]))
    results = run_exporters(tmp_path, work)
    for i, lake in enumerate(lakes):
        outcomes = [results[p][i] for p in range(2)]
        winners = [p for p in range(2) if outcomes[p]["exported"] == ["run-1"]]
        losers = [p for p in range(2) if outcomes[p]["conflicts"] == ["run-1"]]
        assert len(winners) == 1 and len(losers) == 1 and winners != losers, outcomes
        entry = json.loads((lake / MANIFEST).read_text())["sessions"]["run-1"]
        assert entry["checkpoint"]["log_root"] == roots[winners[0]].hex()
        assert leftovers(lake) == []
        with ps.SessionStore.in_memory() as central:
            assert import_lake(central, lake).imported == ["run-1"]
            assert central.verify_session("run-1").ok
            assert central.log_root("run-1") == roots[winners[0]]


def test_an_import_reads_a_session_again_if_an_export_replaced_it_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = tmp_path / "lake"
    with ps.SessionStore.open(tmp_path / "a.db", publish_interval=None) as source, \
            ps.SessionStore.open(tmp_path / "c.db", publish_interval=None) as central:
        small_session(source, "s")
        export_parquet(source, lake)
        commits(source, "s", 2, "later")
        source.record_energy(ps.EnergyRecord(session_id="s", node_id="later0", v_total=1.0))
        write = central._write
        replaced = []

        def write_then_export(*args: Any, **kwargs: Any) -> Any:
            result = write(*args, **kwargs)
            if not replaced:  # after the import read its first table: a newer export
                replaced.append(export_parquet(source, lake).session_ids)
            return result

        monkeypatch.setattr(central, "_write", write_then_export)
        report = import_lake(central, lake)
        assert replaced == [["s"]]
        assert report.imported == ["s"], report.sessions
        assert central.verify_session("s").ok
        assert central.log_root("s") == source.log_root("s")
        assert contents(central, "s") == contents(source, "s")


# --- a killed exporter, a stale lock ------------------------------------------------------------

# Re-exports the lake's sessions and kills itself (SIGKILL) at its N-th rename inside the lake.
KILLED_EXPORTER = """
import os, signal, sys
from pathlib import Path
import perspt_store as ps
from perspt_store.lake import export_parquet

db, lake, n = sys.argv[1], os.path.realpath(sys.argv[2]), int(sys.argv[3])
renames = 0

def patched(real):
    def rename(src, dst, *args, **kwargs):
        global renames
        if os.path.realpath(str(dst)).startswith(lake):
            renames += 1
            if renames == n:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst, *args, **kwargs)
    return rename

os.replace, os.rename = patched(os.replace), patched(os.rename)
with ps.SessionStore.open_read_only(db) as store:
    export_parquet(store, lake)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_an_exporter_killed_at_any_step_leaves_an_importable_lake(tmp_path: Path) -> None:
    script = tmp_path / "killed.py"
    script.write_text(KILLED_EXPORTER)
    db = tmp_path / "a.db"
    for n in (1, 2, 3, 5, 8, 12, 17, 40):
        lake = tmp_path / f"lake{n}"
        with ps.SessionStore.open(db, publish_interval=None) as store:
            if n == 1:
                small_session(store, "s")
                small_session(store, "t")
            old = {sid: store.log_root(sid) for sid in ("s", "t")}
            export_parquet(store, lake)
            commits(store, "s", 2, f"k{n}-")
            store.record_energy(ps.EnergyRecord(session_id="t", node_id="n", v_total=3.0))
            new = {sid: store.log_root(sid) for sid in ("s", "t")}
        proc = subprocess.run([sys.executable, str(script), str(db), str(lake), str(n)],
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode in (0, -signal.SIGKILL), proc.stderr
        # The lake holds each session as it was or as it is now, never a mixture.
        with ps.SessionStore.in_memory() as central:
            report = import_lake(central, lake)
            assert report.ok, report.conflicts
            for sid in ("s", "t"):
                assert central.verify_session(sid).ok
                assert central.log_root(sid) in (old[sid], new[sid])
        # The next export is not blocked by what the killed one left, and cleans it up.
        with ps.SessionStore.open_read_only(db) as store:
            report = export_parquet(store, lake)
            assert report.ok and sorted(report.session_ids) == ["s", "t"]
        assert leftovers(lake) == []
        with ps.SessionStore.in_memory() as central:
            assert import_lake(central, lake).ok
            assert central.log_root("s") == new["s"]


def test_a_lock_left_by_a_dead_process_on_this_machine_is_broken_at_once(
    tmp_path: Path,
) -> None:
    lake = tmp_path / "lake"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    lake.mkdir()
    (lake / LOCK).write_text(json.dumps({"host": socket.gethostname(),
                                         "pid": int(dead.stdout), "token": "dead"}))
    with ps.SessionStore.in_memory() as store:
        small_session(store, "s")
        assert export_parquet(store, lake).session_ids == ["s"]
    assert leftovers(lake) == []


def test_a_lock_from_another_machine_is_broken_once_it_stops_changing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import perspt_store.lake as lake_module

    monkeypatch.setattr(lake_module, "_STALE_AFTER", 0.2)
    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / LOCK).write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "t"}))
    with ps.SessionStore.in_memory() as store:
        small_session(store, "s")
        assert export_parquet(store, lake).session_ids == ["s"]
    assert leftovers(lake) == []


def test_an_unreadable_lock_file_is_broken_once_it_stops_changing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import perspt_store.lake as lake_module

    monkeypatch.setattr(lake_module, "_STALE_AFTER", 0.2)
    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / LOCK).write_text("")  # a writer killed between creating and filling it
    with ps.SessionStore.in_memory() as store:
        small_session(store, "s")
        assert export_parquet(store, lake).ok
    assert leftovers(lake) == []


# --- command line -----------------------------------------------------------------------------


def invoke(db: Path, *args: str) -> Any:
    runner = CliRunner(env={"COLUMNS": None, "PERSPT_STORE_DB": None})
    return runner.invoke(cli, ["--db", str(db), *args], prog_name="perspt-store")


def test_cli_export_and_import(tmp_path: Path) -> None:
    source = tmp_path / "a.db"
    with ps.SessionStore.open(source, publish_interval=None) as store:
        sid = small_session(store, "r")
        small_session(store, "s")
    before = source.read_bytes()
    result = invoke(source, "export", "--parquet", str(tmp_path / "lake"), sid, "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert (row["session_id"], row["commits"]) == (sid, 4)
    assert source.read_bytes() == before  # export only reads
    result = invoke(source, "export", "--parquet", str(tmp_path / "lake"))
    assert result.exit_code == 0 and "exported 2 sessions" in result.stdout

    central = tmp_path / "central.db"
    result = invoke(central, "import", str(tmp_path / "lake"), "--nl")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["status"] for line in result.stdout.splitlines()] == [
        "imported", "imported"]
    result = invoke(central, "import", str(tmp_path / "lake"))
    assert result.exit_code == 0 and "2 skipped" in result.stdout
    result = invoke(central, "import", str(source), "--session", "s", "--json")
    assert json.loads(result.stdout)[0]["status"] == "skipped"


def test_cli_import_conflicts_exit_1_with_the_details(tmp_path: Path) -> None:
    with ps.SessionStore.open(tmp_path / "a.db", publish_interval=None) as store:
        small_session(store, "s")
        export_parquet(store, tmp_path / "lake")
    with ps.SessionStore.open(tmp_path / "c.db", publish_interval=None) as central:
        small_session(central, "s", nodes=1)
    result = invoke(tmp_path / "c.db", "import", str(tmp_path / "lake"))
    assert result.exit_code == 1
    assert "conflict" in result.stdout and "1 conflict" in result.stdout
    assert result.stderr.startswith("conflict: s: already in the store with a different history")


def test_cli_export_of_another_history_exits_1_and_leaves_the_lake_alone(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with ps.SessionStore.open(tmp_path / "a.db", publish_interval=None) as a:
        new_session(a, "run-1")
        commits(a, "run-1", 3, "a")
    with ps.SessionStore.open(tmp_path / "b.db", publish_interval=None) as b:
        new_session(b, "run-1")
        commits(b, "run-1", 1, "b")
    assert invoke(tmp_path / "a.db", "export", "--parquet", str(lake)).exit_code == 0
    before = lake_files(lake)
    result = invoke(tmp_path / "b.db", "export", "--parquet", str(lake), "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == []
    assert result.stderr.startswith("conflict: run-1: the lake holds a different history")
    assert lake_files(lake) == before
    # Exporting the longer log again is fine.
    assert invoke(tmp_path / "a.db", "export", "--parquet", str(lake)).exit_code == 0


def test_cli_export_of_an_unknown_session_suggests_the_closest(tmp_path: Path) -> None:
    with ps.SessionStore.open(tmp_path / "a.db", publish_interval=None) as store:
        small_session(store, "session-1")
    result = invoke(tmp_path / "a.db", "export", "--parquet", str(tmp_path / "lake"),
                    "session-2")
    assert result.exit_code == 1 and "did you mean session-1" in result.stderr
    assert not (tmp_path / "lake").exists() or not any((tmp_path / "lake").iterdir())


def test_cli_import_of_something_that_is_not_a_lake_is_a_one_line_error(tmp_path: Path) -> None:
    result = invoke(tmp_path / "c.db", "import", str(tmp_path))
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")


def test_export_timestamps_are_kept(tmp_path: Path) -> None:
    with ps.SessionStore.in_memory() as source:
        small_session(source, "s")
        created = source.get_session("s").created_at  # type: ignore[union-attr]
        export_parquet(source, tmp_path)
    with ps.SessionStore.in_memory() as central:
        import_lake(central, tmp_path)
        assert central.get_session("s").created_at == created  # type: ignore[union-attr]
        assert isinstance(created, _dt.datetime)

"""The lake as Delta Lake tables (``export_delta``): many processes export into one lake at
once and lose or duplicate nothing, a lake keeps histories, readers never see half an
export (a killed exporter included), imports work as of any version, and Polars and pyarrow
read the tables."""

from __future__ import annotations

import datetime as _dt
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import perspt_store as ps
from perspt_store.cli import cli
from perspt_store.delta import (
    CHECKPOINTS,
    compact_lake,
    export_delta,
    is_delta_lake,
    lake_dataset,
    lake_tables,
    verify_lake,
)
from perspt_store.demo import record_demo_session
from perspt_store.lake import LAKE_TABLES, import_lake
from test_lake import WEIRD, commits, contents, new_session, run_processes, small_session


def lake_files(lake: Path) -> dict[str, bytes]:
    """Every file of the lake (the Delta logs included) and its bytes."""
    return {str(p.relative_to(lake)): p.read_bytes() for p in sorted(lake.rglob("*"))
            if p.is_file()}


def counts(store: ps.SessionStore, session_ids: list[str]) -> dict[str, int]:
    """Rows per table of these sessions in the store."""
    return {t: store.sql(f"SELECT count(*) FROM {t} WHERE session_id IN (SELECT unnest(?))",
                         [session_ids]).fetchall()[0][0] for t in LAKE_TABLES}


def lake_counts(lake: Path) -> dict[str, int]:
    """Rows per table in the lake's latest Delta versions, read by Polars."""
    return {t: pl.scan_delta(str(lake / t)).select(pl.len()).collect().item()
            for t in LAKE_TABLES}


# --- export, import, query ----------------------------------------------------------------------


def test_two_stores_export_into_one_delta_lake_and_a_third_imports_both(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with ps.SessionStore.in_memory() as a, ps.SessionStore.in_memory() as b:
        ids_a = [record_demo_session(a, seed=1), small_session(a, WEIRD)]
        ids_b = [record_demo_session(b, seed=2), small_session(b, "123")]
        exported = export_delta(a, lake)
        assert exported.ok and exported.session_ids == ids_a
        assert export_delta(b, lake).session_ids == ids_b
        assert is_delta_lake(lake) and not is_delta_lake(tmp_path)
        # Every row exactly once, in every table, as the stores hold them.
        expected = {t: counts(a, ids_a)[t] + counts(b, ids_b)[t] for t in LAKE_TABLES}
        assert lake_counts(lake) == expected
        with ps.SessionStore.in_memory() as central:
            report = import_lake(central, lake)
            assert report.ok and sorted(report.imported) == sorted(ids_a + ids_b)
            for store, ids in ((a, ids_a), (b, ids_b)):
                for sid in ids:
                    assert central.verify_session(sid).ok
                    assert contents(central, sid) == contents(store, sid)
            assert import_lake(central, lake).skipped == report.imported  # idempotent
        # Notebooks show both reports.
        assert "Exported 2 sessions" in exported._repr_html_()
        verification = verify_lake(lake)
        assert verification.ok and "verified" in verification._repr_html_()


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(session_id=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                          min_size=1, max_size=16))
def test_any_session_id_round_trips_through_a_delta_lake(
    session_id: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Whatever its id (quotes, slashes, '=', '%', any script), a session is written to its
    own partition, read back under its id, and imports as it was."""
    assume(session_id != "other")
    lake = tmp_path_factory.mktemp("lake")
    with ps.SessionStore.in_memory() as source, ps.SessionStore.in_memory() as target:
        small_session(source, session_id, nodes=1)
        small_session(source, "other", nodes=1)
        assert export_delta(source, lake).ok
        merkle = pl.read_delta(str(lake / "merkle_log"))
        assert sorted(merkle["session_id"].unique().to_list()) == sorted([session_id, "other"])
        pinned = lake_dataset(lake, "node_states").to_table(
            filter=ds.field("session_id") == session_id)
        assert pinned.num_rows == 2
        assert import_lake(target, lake).ok
        assert contents(target, session_id) == contents(source, session_id)
        assert export_delta(source, lake).unchanged == [session_id, "other"]


def test_polars_and_pyarrow_read_every_session(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with ps.SessionStore.in_memory() as store:
        ids = [record_demo_session(store, seed=s) for s in (1, 2)] + [small_session(store, "7")]
        export_delta(store, lake)
        per_session = dict(store.sql(
            "SELECT session_id, count(*) FROM energy_history GROUP BY ALL").fetchall())
    # Polars straight from the Delta table: session_id is text, even "7".
    energy = pl.scan_delta(str(lake / "energy_history"))
    assert energy.collect_schema()["session_id"] == pl.String
    got = dict(energy.group_by("session_id").len().collect().iter_rows())
    assert got == per_session
    # pyarrow: the Delta table as a dataset, and the checkpoint-pinned dataset.
    from deltalake import DeltaTable

    table = DeltaTable(str(lake / "node_states")).to_pyarrow_dataset().to_table()
    assert set(table["session_id"].to_pylist()) == set(ids)
    pinned = lake_dataset(lake, "energy_history")
    assert isinstance(pinned, ds.Dataset)
    lazy = pl.scan_pyarrow_dataset(pinned).group_by("session_id").len().collect()
    assert dict(lazy.iter_rows()) == per_session
    merkle = lake_dataset(lake, "merkle_log").to_table(filter=ds.field("session_id") == "7")
    assert merkle.num_rows == 4 and merkle.schema.field("leaf_hash").type == pa.binary()
    with pytest.raises(ValueError, match="not a lake table"):
        lake_dataset(lake, "nope")


def test_an_unchanged_re_export_writes_nothing(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with ps.SessionStore.in_memory() as store:
        sid = small_session(store, "s")
        first = export_delta(store, lake)
        before = lake_files(lake)
        report = export_delta(store, lake)
        assert (report.session_ids, report.unchanged, report.ok) == ([], [sid], True)
        assert report.version == first.version
        assert lake_files(lake) == before
        # A row without a commit (energy) is a change: written again.
        store.record_energy(ps.EnergyRecord(session_id=sid, node_id="n0", v_total=0.0))
        assert export_delta(store, lake).session_ids == [sid]
        assert lake_counts(lake)["energy_history"] == 4


def test_a_log_that_extends_the_lakes_copy_replaces_it(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with ps.SessionStore.in_memory() as store:
        sid = small_session(store, "s")
        small_session(store, "t")
        export_delta(store, lake)
        commits(store, sid, 3, "more")
        assert export_delta(store, lake, [sid]).session_ids == [sid]
        assert lake_counts(lake)["node_states"] == 4 + 3 + 4  # replaced, never appended
        with ps.SessionStore.in_memory() as central:
            assert import_lake(central, lake).ok
            assert central.log_root(sid) == store.log_root(sid)
            assert contents(central, sid) == contents(store, sid)


def test_another_history_is_a_conflict_and_the_lake_is_left_untouched(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with ps.SessionStore.in_memory() as a, ps.SessionStore.in_memory() as b:
        new_session(a, "run-1")
        commits(a, "run-1", 3, "a")
        new_session(b, "run-1")
        commits(b, "run-1", 1, "b")
        small_session(b, "other")
        export_delta(a, lake)
        before = {p: c for p, c in lake_files(lake).items() if not p.startswith("other")}
        report = export_delta(b, lake)
        assert not report.ok and report.session_ids == ["other"]
        (conflict,) = report.conflicts
        assert conflict.session_id == "run-1" and "different history" in conflict.detail
        after = lake_files(lake)
        assert all(after[p] == c for p, c in before.items())  # nothing of run-1 rewritten
        with ps.SessionStore.in_memory() as central:
            assert import_lake(central, lake).ok
            assert central.log_root("run-1") == a.log_root("run-1")


def test_a_store_behind_the_lake_and_a_twin_without_commits_are_conflicts(
    tmp_path: Path,
) -> None:
    lake = tmp_path / "lake"
    db = tmp_path / "a.db"
    with ps.SessionStore.open(db, publish_interval=None) as store:
        new_session(store, "s")
        commits(store, "s", 2, "x")
    old = tmp_path / "old.db"
    old.write_bytes(db.read_bytes())
    with ps.SessionStore.open(db, publish_interval=None) as store:
        commits(store, "s", 2, "y")
        export_delta(store, lake)
    with ps.SessionStore.open_read_only(old) as behind:
        (conflict,) = export_delta(behind, lake).conflicts
        assert "the store is behind" in conflict.detail
    with ps.SessionStore.in_memory() as twin:
        time.sleep(0.01)
        new_session(twin, "empty")
        with ps.SessionStore.in_memory() as first:
            new_session(first, "empty")
            export_delta(first, lake, ["empty"])
        (conflict,) = export_delta(twin, lake).conflicts
        assert "another session with the same id" in conflict.detail


def test_an_export_that_loses_the_race_for_a_checkpoint_puts_the_winners_rows_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B (behind) reads the lake; A (the longer log) exports, whole; B writes its tables
    over A's, and its checkpoint commit fails: B finds itself behind A, reports it, and
    puts A's rows back into the tables it had written."""
    import perspt_store.delta as delta

    lake = tmp_path / "lake"
    db = tmp_path / "a.db"
    with ps.SessionStore.open(db, publish_interval=None) as store:
        small_session(store, "s")
    old = tmp_path / "old.db"
    old.write_bytes(db.read_bytes())
    with ps.SessionStore.open(db, publish_interval=None) as store:
        commits(store, "s", 2, "ahead")
    write, raced = delta._write, []

    def write_racing(table: Any, *args: Any) -> None:
        if not raced:  # B's first write: A goes first, from start to end
            raced.append(True)
            with ps.SessionStore.open_read_only(db) as ahead:
                assert export_delta(ahead, lake).session_ids == ["s"]
        write(table, *args)

    monkeypatch.setattr(delta, "_write", write_racing)
    with ps.SessionStore.open_read_only(old) as behind:
        report = export_delta(behind, lake)
    assert raced and report.session_ids == []
    (conflict,) = report.conflicts
    assert "the store is behind" in conflict.detail
    with ps.SessionStore.open_read_only(db) as ahead:
        assert lake_counts(lake) == counts(ahead, ["s"])  # the latest versions: A's rows
        with ps.SessionStore.in_memory() as central:
            assert import_lake(central, lake).ok
            assert contents(central, "s") == contents(ahead, "s")
    assert not any("did not commit" in v.detail for v in verify_lake(lake).sessions)


def test_export_refuses_unknown_sessions_and_parquet_lakes_and_writes_nothing(
    tmp_path: Path,
) -> None:
    with ps.SessionStore.in_memory() as store:
        small_session(store, "s")
        with pytest.raises(ps.RecordNotFoundError, match="'nope'"):
            export_delta(store, tmp_path / "lake", ["s", "nope"])
        assert not (tmp_path / "lake").exists()
        ps.export_parquet(store, tmp_path / "parquet")
        before = lake_files(tmp_path / "parquet")
        with pytest.raises(ps.StoreError, match="is a Parquet lake"):
            export_delta(store, tmp_path / "parquet")
        assert lake_files(tmp_path / "parquet") == before


def test_import_reports_a_different_history_in_the_store_and_merges_nothing(
    tmp_path: Path,
) -> None:
    lake = tmp_path / "lake"
    with ps.SessionStore.in_memory() as source, ps.SessionStore.in_memory() as central:
        small_session(source, "s")
        small_session(source, "t")
        export_delta(source, lake)
        small_session(central, "s", nodes=1)
        before = contents(central, "s")
        report = import_lake(central, lake)
        assert not report.ok and report.imported == ["t"]
        (conflict,) = report.conflicts
        assert conflict.status == "conflict" and "different history" in conflict.detail
        assert contents(central, "s") == before


# --- time travel ----------------------------------------------------------------------------


def test_import_as_of_a_version_or_a_time(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with ps.SessionStore.in_memory() as store:
        sid = small_session(store, "s")
        v1 = export_delta(store, lake).version
        root1 = store.log_root(sid)
        time.sleep(0.05)
        between = _dt.datetime.now(_dt.UTC)
        time.sleep(0.05)
        commits(store, sid, 2, "later")
        small_session(store, "t")
        v2 = export_delta(store, lake).version
        assert v1 is not None and v2 is not None and v2 > v1
    for as_of in (v1, between):
        with ps.SessionStore.in_memory() as central:
            report = import_lake(central, lake, as_of=as_of)
            assert report.imported == [sid]
            assert central.log_root(sid) == root1 and central.verify_session(sid).ok
    with ps.SessionStore.in_memory() as central:
        assert sorted(import_lake(central, lake, as_of=v2).imported) == ["s", "t"]
        with pytest.raises(ps.StoreError, match="no version"):
            import_lake(central, lake, as_of=v2 + 5)
        with pytest.raises(ValueError, match="timezone"):
            import_lake(central, lake, as_of=_dt.datetime(2020, 1, 1))
        with pytest.raises(ps.StoreError, match="not a Delta lake"):
            import_lake(central, tmp_path / "nothing", as_of=1)
    assert verify_lake(lake, as_of=v1).sessions[0].commits == 4


# --- many writers -----------------------------------------------------------------------------

WORKER = """
import json, sys, time
from pathlib import Path
import perspt_store as ps
from perspt_store.delta import export_delta

lake, go, jobs = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
while not go.exists():
    time.sleep(0.001)
out = []
for db, sids, extend in jobs:
    if extend:  # commit more to the session first: the export must extend the lake's copy
        with ps.SessionStore.open(db, publish_interval=None) as store:
            for sid in sids:
                store.record_node_state(ps.NodeStateRecord(
                    session_id=sid, node_id="grow", state=str(time.time_ns())))
                store.record_energy(ps.EnergyRecord(session_id=sid, node_id="grow", v_total=1))
    with ps.SessionStore.open_read_only(db) as store:
        report = export_delta(store, lake, sids)
        out.append({"exported": report.session_ids, "unchanged": report.unchanged,
                    "conflicts": [[c.session_id, c.detail] for c in report.conflicts]})
print(json.dumps(out))
"""


def run_workers(tmp_path: Path, lake: Path, work: list[list[Any]]) -> list[Any]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    go = tmp_path / "GO"
    return run_processes(script, go, [[str(lake), str(go), json.dumps(jobs)] for jobs in work])


def test_four_processes_export_at_once_and_same_session_extensions_race(tmp_path: Path) -> None:
    """4 processes x 6 exports: each its own sessions (re-exported after more commits) and
    one shared session, exported from copies of one history at different lengths."""
    lake = tmp_path / "lake"
    history = tmp_path / "history.db"
    prefixes = []
    with ps.SessionStore.open(history, publish_interval=None) as store:
        new_session(store, "shared")
    for size in range(1, 9):  # copies of the shared session after 1..8 commits
        with ps.SessionStore.open(history, publish_interval=None) as store:
            commits(store, "shared", 1, f"h{size}-")
        prefixes.append(tmp_path / f"shared-{size}.db")
        prefixes[-1].write_bytes(history.read_bytes())
    work = []
    for p in range(4):
        own = tmp_path / f"p{p}.db"
        with ps.SessionStore.open(own, publish_interval=None) as store:
            for i in range(3):
                small_session(store, f"p{p}-s{i}", nodes=1 + i)
        jobs: list[list[Any]] = [
            [str(own), [f"p{p}-s0", f"p{p}-s1"], False],
            [str(prefixes[p]), ["shared"], False],
            [str(own), [f"p{p}-s2"], False],
            [str(own), [f"p{p}-s0"], True],
            [str(prefixes[p + 4]), ["shared"], False],
            [str(own), [f"p{p}-s1", f"p{p}-s2"], True],
        ]
        work.append(jobs)
    results = run_workers(tmp_path, lake, work)
    for out in results:
        for i, result in enumerate(out):
            if i in (1, 4):  # the shared session: written, or behind a longer copy
                assert all("the store is behind" in d for _, d in result["conflicts"]), result
            else:
                assert result["conflicts"] == [] and result["exported"], result
    # The longest copy of the shared history can never be refused: it is in the lake.
    with ps.SessionStore.open_read_only(prefixes[-1]) as longest:
        shared_root = longest.log_root("shared")
        shared_counts = counts(longest, ["shared"])
    expected = {t: shared_counts[t] for t in LAKE_TABLES}
    with ps.SessionStore.in_memory() as central:
        report = import_lake(central, lake)
        assert report.ok, report.conflicts
        names = [f"p{p}-s{i}" for p in range(4) for i in range(3)]
        assert sorted(report.imported) == sorted([*names, "shared"])
        assert central.log_root("shared") == shared_root
        for p in range(4):
            with ps.SessionStore.open_read_only(tmp_path / f"p{p}.db") as own:
                mine = [n for n in names if n.startswith(f"p{p}-")]
                for sid in mine:
                    assert central.verify_session(sid).ok
                    assert central.log_root(sid) == own.log_root(sid)
                for t, n in counts(own, mine).items():
                    expected[t] += n
    assert lake_counts(lake) == expected  # nothing lost, nothing duplicated
    assert all(v.ok for v in verify_lake(lake).sessions)


# --- a killed exporter ------------------------------------------------------------------------

KILLED = """
import os, signal, sys
import perspt_store as ps
import perspt_store.delta as delta

db, lake, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
write, calls = delta._write, [0]

def killing_write(table, *args, **kwargs):
    calls[0] += 1
    # Midway (the nth write), or at the checkpoint: this Delta transaction never commits.
    if calls[0] == n or table.table_uri.rstrip("/").endswith(delta.CHECKPOINTS):
        os.kill(os.getpid(), signal.SIGKILL)
    return write(table, *args, **kwargs)

delta._write = killing_write
with ps.SessionStore.open_read_only(db) as store:
    delta.export_delta(store, lake)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_an_exporter_killed_midway_leaves_every_session_as_it_was(tmp_path: Path) -> None:
    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    db = tmp_path / "a.db"
    lake = tmp_path / "lake"
    with ps.SessionStore.open(db, publish_interval=None) as store:
        small_session(store, "s")
        small_session(store, "t")
        export_delta(store, lake)
    # The writes of one export: one per table whose rows changed, then the checkpoint.
    # Kill it at the first, the second, the third, and at the checkpoint itself (0).
    for n in (1, 2, 3, 0):
        with ps.SessionStore.open(db, publish_interval=None) as store:
            old = {sid: (store.log_root(sid), contents(store, sid)) for sid in ("s", "t")}
            old_counts = counts(store, ["s", "t"])
            commits(store, "s", 2, f"k{n}-")
            store.record_energy(ps.EnergyRecord(session_id="t", node_id="n", v_total=3.0))
            new = {sid: store.log_root(sid) for sid in ("s", "t")}
        proc = subprocess.run([sys.executable, str(script), str(db), str(lake), str(n)],
                              capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        # Readers take each session as of its checkpoint: the previous export, whole.
        with ps.SessionStore.in_memory() as central:
            assert import_lake(central, lake).ok
            for sid in ("s", "t"):
                assert central.log_root(sid) == old[sid][0]
                assert contents(central, sid) == old[sid][1]
        verdicts = verify_lake(lake).sessions
        assert all(v.ok for v in verdicts)
        # The documented query path (every table, each session as of its checkpoint) shows
        # the previous export whole; a plain reader of the latest versions may not.
        pinned = {t: d.count_rows() for t, d in lake_tables(lake).items()}
        assert pinned == old_counts
        ahead = sorted(v.session_id for v in verdicts if "did not commit" in v.detail)
        if n != 1:  # some tables already hold the unfinished export's rows
            assert ahead
        if n == 0:  # every changed table was written: a plain reader sees the new rows
            assert lake_counts(lake) != old_counts
        if n == 3:
            # lake compact puts an abandoned export's tables back, once it is old enough.
            assert compact_lake(lake, retention_hours=1).repaired == []
            assert compact_lake(lake, retention_hours=1,
                                abandoned_after_hours=0).repaired == ahead
            assert lake_counts(lake) == old_counts  # plain readers: the previous export
            assert not any("did not commit" in v.detail for v in verify_lake(lake).sessions)
            with ps.SessionStore.in_memory() as central:
                assert import_lake(central, lake).ok
                assert {s: central.log_root(s) for s in ("s", "t")} == {
                    s: old[s][0] for s in ("s", "t")}
        # The next export goes through, and replaces what the killed one left.
        with ps.SessionStore.open_read_only(db) as store:
            assert sorted(export_delta(store, lake).session_ids) == ["s", "t"]
            assert lake_counts(lake) == counts(store, ["s", "t"])
        with ps.SessionStore.in_memory() as central:
            assert import_lake(central, lake).ok
            assert {sid: central.log_root(sid) for sid in ("s", "t")} == new
        assert not any("did not commit" in v.detail for v in verify_lake(lake).sessions)


# --- verify and compact ---------------------------------------------------------------------------


def test_verify_reports_a_session_whose_lake_rows_were_tampered_with(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with ps.SessionStore.in_memory() as store:
        small_session(store, "s")
        small_session(store, "t")
        export_delta(store, lake)
    # Rewrite t's node states behind the exporter's back, in the pinned file itself.
    row = next(r for r in pl.read_delta(str(lake / CHECKPOINTS)).iter_rows(named=True)
               if r["session_id"] == "t")
    (pin,) = [p for p in row["tables"] if p["name"] == "node_states"]
    from urllib.parse import unquote

    import pyarrow.parquet as pq

    path = lake / "node_states" / unquote(pin["files"][0])
    data = pq.read_table(path)
    states = data["state"].to_pylist()
    states[0] = "Forged"
    pq.write_table(data.set_column(data.schema.get_field_index("state"), "state",
                                   pa.array(states)), path)
    report = verify_lake(lake)
    assert not report.ok
    verdict = {v.session_id: v for v in report.sessions}
    assert verdict["s"].ok and not verdict["t"].ok
    assert "does not verify" in verdict["t"].detail


def data_files(table: Path) -> set[Path]:
    return {p for p in table.rglob("*.parquet") if "_delta_log" not in p.parts}


def test_compact_keeps_every_file_a_checkpoint_pins(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with ps.SessionStore.in_memory() as store:
        small_session(store, "s")
        small_session(store, "t")
        export_delta(store, lake)
        commits(store, "s", 1, "more")
        export_delta(store, lake, ["s"])
        before = data_files(lake / "node_states")
        assert len(before) == 3  # t's, and s's before and after the re-export
        report = compact_lake(lake, retention_hours=1)
        assert report.removed == {t: 0 for t in report.removed}  # replaced < 1 hour ago
        with pytest.raises(ValueError, match="at least 1"):
            compact_lake(lake, retention_hours=0)
        assert data_files(lake / "node_states") == before
        with ps.SessionStore.in_memory() as central:
            assert import_lake(central, lake).ok
            assert central.log_root("s") == store.log_root("s")


# --- command line -----------------------------------------------------------------------------


def invoke(*args: str) -> Any:
    runner = CliRunner(env={"COLUMNS": None, "PERSPT_STORE_DB": None})
    return runner.invoke(cli, list(args), prog_name="perspt-store")


def test_cli_export_delta_verify_compact_and_import(tmp_path: Path) -> None:
    lake = str(tmp_path / "lake")
    with ps.SessionStore.open(tmp_path / "a.db", publish_interval=None) as store:
        small_session(store, "s")
    a = str(tmp_path / "a.db")
    result = invoke("--db", a, "export", "--delta", lake, "--json")
    assert result.exit_code == 0, result.output
    assert [r["session_id"] for r in json.loads(result.stdout)] == ["s"]
    result = invoke("--db", a, "export", "--delta", lake)
    assert result.exit_code == 0 and "1 unchanged" in result.stdout
    result = invoke("lake", "verify", lake, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)[0]["ok"] is True
    result = invoke("lake", "compact", lake)
    assert result.exit_code == 0 and result.stdout.startswith("Compacted")
    result = invoke("--db", str(tmp_path / "c.db"), "import", lake, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)[0]["status"] == "imported"
    result = invoke("--db", a, "export", "--delta", lake, "--parquet", lake)
    assert result.exit_code == 2
    result = invoke("lake", "verify", str(tmp_path))
    assert result.exit_code == 1 and result.stderr.startswith("Error: ")


def test_cli_export_delta_of_another_history_exits_1(tmp_path: Path) -> None:
    lake = str(tmp_path / "lake")
    for name, n in (("a", 3), ("b", 1)):
        with ps.SessionStore.open(tmp_path / f"{name}.db", publish_interval=None) as store:
            new_session(store, "run-1")
            commits(store, "run-1", n, name)
    assert invoke("--db", str(tmp_path / "a.db"), "export", "--delta", lake).exit_code == 0
    before = lake_files(Path(lake))
    result = invoke("--db", str(tmp_path / "b.db"), "export", "--delta", lake)
    assert result.exit_code == 1
    assert result.stderr.startswith("conflict: run-1: the lake holds a different history")
    assert lake_files(Path(lake)) == before


def test_cli_imports_a_delta_lake_as_of_a_version_or_a_time(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    db = tmp_path / "a.db"
    with ps.SessionStore.open(db, publish_interval=None) as store:
        small_session(store, "s")
    result = invoke("--db", str(db), "export", "--delta", str(lake))
    assert result.exit_code == 0, result.output
    v1 = export_delta_version(lake)
    assert f"lake version {v1}" in result.stdout
    with ps.SessionStore.open(db, publish_interval=None) as store:
        root1 = store.log_root("s")
        time.sleep(0.05)
        between = _dt.datetime.now(_dt.UTC)
        time.sleep(0.05)
        commits(store, "s", 2, "later")
        small_session(store, "t")
    assert invoke("--db", str(db), "export", "--delta", str(lake)).exit_code == 0

    def imported(*options: str) -> tuple[list[str], bytes | None]:
        target = tmp_path / f"c{len(list(tmp_path.glob('c*.db')))}.db"
        result = invoke("--db", str(target), "import", str(lake), *options, "--json")
        assert result.exit_code == 0, result.output
        with ps.SessionStore.open_read_only(target) as central:
            return (sorted(r["session_id"] for r in json.loads(result.stdout)),
                    central.log_root("s"))

    naive = between.replace(tzinfo=None).isoformat()  # no zone: UTC
    zoned = between.astimezone(_dt.timezone(_dt.timedelta(hours=2))).isoformat()
    for options in (["--version", str(v1)], ["--timestamp", naive], ["--timestamp", zoned],
                    ["--timestamp", naive.replace("+00:00", "") + "Z"]):
        assert imported(*options) == (["s"], root1), options
    assert imported()[0] == ["s", "t"]
    # Bad values: usage errors (exit 2), nothing imported.
    for options, message in (
        (["--version", "1", "--timestamp", naive], "not both"),
        (["--version", "-1"], "--version"),
        (["--timestamp", "yesterday"], "not an ISO 8601 time"),
    ):
        result = invoke("--db", str(tmp_path / "bad.db"), "import", str(lake), *options)
        assert result.exit_code == 2 and message in result.stderr, (options, result.output)
    # A version the lake does not have: exit 1, clear.
    result = invoke("--db", str(tmp_path / "bad.db"), "import", str(lake), "--version", "99")
    assert result.exit_code == 1 and "no version as of 99" in result.stderr
    # A Parquet lake or a database file has no history.
    with ps.SessionStore.open_read_only(db) as store:
        ps.export_parquet(store, tmp_path / "parquet")
    for source in (tmp_path / "parquet", db):
        result = invoke("--db", str(tmp_path / "bad2.db"), "import", str(source),
                        "--version", "0")
        assert result.exit_code == 2 and "is not a Delta lake" in result.stderr, result.output
    assert not (tmp_path / "bad2.db").exists()


def export_delta_version(lake: Path) -> int:
    from deltalake import DeltaTable

    return DeltaTable(str(lake / CHECKPOINTS)).version()


def test_tables_write_a_log_checkpoint_every_ten_commits(tmp_path: Path) -> None:
    """Every export loads every table: a log checkpoint every 10 commits keeps the load
    from replaying a long tail of JSON commits (Delta's default is every 100)."""
    lake = tmp_path / "lake"
    with ps.SessionStore.in_memory() as store:
        for i in range(11):
            small_session(store, f"s{i}", nodes=1)
            export_delta(store, lake, [f"s{i}"])
    for table in ("node_states", CHECKPOINTS):
        log = lake / table / "_delta_log"
        assert (log / "_last_checkpoint").exists(), sorted(p.name for p in log.iterdir())


# --- object storage -------------------------------------------------------------------------


def test_storage_options_reach_every_delta_table_through_a_file_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lake by URL (file://, the object-store path of delta-rs on the local file system):
    export, the pinned datasets and compact pass storage_options to every table they open;
    import and verify read a file:// lake from its directory."""
    import deltalake

    lake = tmp_path / "lake"
    url = lake.as_uri()
    options = {"timeout": "30s"}
    seen: list[tuple[str, Any]] = []
    init, create = deltalake.DeltaTable.__init__, deltalake.DeltaTable.create

    def spy_init(self: Any, table_uri: Any, *args: Any, **kwargs: Any) -> None:
        seen.append((str(table_uri), kwargs.get("storage_options")))
        init(self, table_uri, *args, **kwargs)

    def spy_create(cls: Any, table_uri: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append((str(table_uri), kwargs.get("storage_options")))
        return create.__func__(cls, table_uri, *args, **kwargs)  # type: ignore[attr-defined]

    monkeypatch.setattr(deltalake.DeltaTable, "__init__", spy_init)
    monkeypatch.setattr(deltalake.DeltaTable, "create", classmethod(spy_create))
    with ps.SessionStore.in_memory() as store:
        ids = [small_session(store, "s"), record_demo_session(store, seed=3)]
        report = export_delta(store, url, storage_options=options)
        assert report.ok and report.session_ids == ids and report.uri == url
        assert is_delta_lake(url) and is_delta_lake(lake)  # the files are where the URL says
        assert export_delta(store, url, storage_options=options).unchanged == ids
        pinned = {t: d.count_rows() for t, d in
                  lake_tables(url, storage_options=options).items()}
        assert pinned == counts(store, ids)
        assert compact_lake(url, retention_hours=1, storage_options=options).repaired == []
        assert seen and all(uri.startswith(url) and opts == options for uri, opts in seen)
        with ps.SessionStore.in_memory() as central:
            assert sorted(import_lake(central, url).imported) == sorted(ids)
            for sid in ids:
                assert contents(central, sid) == contents(store, sid)
        assert verify_lake(url).ok
    with ps.SessionStore.in_memory() as central, pytest.raises(ps.StoreError, match="copy"):
        import_lake(central, "s3://no-such-bucket/lake")


def test_a_session_the_lake_changed_after_the_export_looked_is_read_and_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export reads the rows only of sessions the lake does not already hold; if the lake
    changes before it decides (a twin store with the same log and rows but another status
    exports in between: a status changes in place, so neither copy's rows are lost), it
    reads the session after all and writes it."""
    import perspt_store.delta as delta

    lake = tmp_path / "lake"
    db = tmp_path / "a.db"
    with ps.SessionStore.open(db, publish_interval=None) as store:
        small_session(store, "s")
        small_session(store, "t")
        store.record_energy(ps.EnergyRecord(session_id="s", node_id="n0", v_total=2.0))
    twin = tmp_path / "twin.db"
    twin.write_bytes(db.read_bytes())
    with ps.SessionStore.open(twin, publish_interval=None) as other:
        other.update_session_status("s", "TWIN")
    with ps.SessionStore.open(db, publish_interval=None) as store:
        export_delta(store, lake)
        expected = counts(store, ["s", "t"])
    snapshot, reads = delta._snapshot, []

    def snapshot_then_twin(*args: Any) -> Any:
        snap = snapshot(*args)
        reads.append(sorted(snap.read))
        if len(reads) == 1:
            with ps.SessionStore.open_read_only(twin) as other:
                assert export_delta(other, lake).session_ids == ["s"]  # another status
        return snap

    monkeypatch.setattr(delta, "_snapshot", snapshot_then_twin)
    with ps.SessionStore.open_read_only(db) as store:
        report = export_delta(store, lake)
    assert report.session_ids == ["s"] and report.unchanged == ["t"]
    # The first snapshot read no rows (the lake held both); the twin's export read s; then
    # the export read again, and wrote s.
    assert reads[0] == [] and reads[-1] == ["s", "t"]
    assert lake_counts(lake) == expected
    statuses = pl.read_delta(str(lake / "sessions")).sort("session_id")["status"].to_list()
    assert statuses == ["RUNNING", "RUNNING"]


@pytest.mark.s3
def test_a_lake_on_an_s3_api_with_conditional_puts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against moto's S3 server (conditional puts, If-None-Match, as AWS S3 has them): two
    stores export into one lake by s3:// URL, a re-export writes nothing, another history
    is a conflict, and compact runs. moto[server] and boto3 come with the test extra."""
    import boto3
    import moto.server as moto_server
    from deltalake import DeltaTable

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        options = {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1",
                   "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                   "AWS_ALLOW_HTTP": "true"}
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                     aws_access_key_id="test", aws_secret_access_key="test",
                     ).create_bucket(Bucket="fleet")
        url = "s3://fleet/lake"
        with ps.SessionStore.in_memory() as a, ps.SessionStore.in_memory() as b:
            ids_a = [small_session(a, "a1"), small_session(a, "shared")]
            ids_b = [small_session(b, "b1")]
            new_session(b, "shared")
            assert export_delta(a, url, storage_options=options).session_ids == ids_a
            report = export_delta(b, url, storage_options=options)
            assert report.session_ids == ids_b
            assert [c.session_id for c in report.conflicts] == ["shared"]
            assert export_delta(a, url, storage_options=options).unchanged == ids_a
            nodes = DeltaTable(f"{url}/node_states", storage_options=options).to_pyarrow_table()
            expected = counts(a, ids_a)["node_states"] + counts(b, ids_b)["node_states"]
            assert nodes.num_rows == expected
            assert compact_lake(url, retention_hours=1, storage_options=options).repaired == []
    finally:
        server.stop()


def test_a_re_export_writes_only_the_tables_whose_rows_changed(tmp_path: Path) -> None:
    from deltalake import DeltaTable

    lake = tmp_path / "lake"

    def versions() -> dict[str, int]:
        return {t: DeltaTable(str(lake / t)).version() for t in (*LAKE_TABLES, CHECKPOINTS)}

    with ps.SessionStore.in_memory() as store:
        ids = [record_demo_session(store, seed=1), small_session(store, "t")]
        export_delta(store, lake)
        before = versions()
        store.record_energy(ps.EnergyRecord(session_id="t", node_id="n0", v_total=5.0))
        assert export_delta(store, lake).session_ids == ["t"]
        after = versions()
        changed = sorted(t for t in after if after[t] != before[t])
        assert changed == sorted(["energy_history", CHECKPOINTS])
        # Every table still reads each session whole, by pins and plainly.
        assert {t: d.count_rows() for t, d in lake_tables(lake).items()} == counts(store, ids)
        assert lake_counts(lake) == counts(store, ids)
        assert verify_lake(lake).ok
        with ps.SessionStore.in_memory() as central:
            assert import_lake(central, lake).ok
            assert all(contents(central, sid) == contents(store, sid) for sid in ids)


# --- rows outside the commit log: a re-export replaces only what it extends -----------------


def _copies(tmp_path: Path) -> tuple[Path, Path]:
    """Two copies of one store file holding session ``s`` (3 energies, 4 commits)."""
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    with ps.SessionStore.open(a, publish_interval=None) as store:
        small_session(store, "s")
    b.write_bytes(a.read_bytes())
    return a, b


def _energy(store: ps.SessionStore, *totals: float) -> None:
    for v in totals:
        store.record_energy(ps.EnergyRecord(session_id="s", node_id="n0", v_total=v))


@pytest.mark.parametrize(("mine", "theirs"), [((4.0, 5.0), (6.0,)), ((4.0,), (6.0,)),
                                              ((4.0,), (6.0, 7.0))],
                         ids=["fewer", "as-many", "more"])
def test_copies_sharing_a_log_that_differ_in_other_rows_conflict_and_the_lake_keeps_its_rows(
    tmp_path: Path, mine: tuple[float, ...], theirs: tuple[float, ...],
) -> None:
    """Copy A records e4, e5, copy B e6 after the copy was taken, no commit: B's export is a
    conflict naming energy_history, and the lake keeps A's rows (it used to replace them).
    So too when B recorded as many energies as A, or more, but not A's."""
    lake = tmp_path / "lake"
    a, b = _copies(tmp_path)
    with ps.SessionStore.open(a, publish_interval=None) as store:
        _energy(store, *mine)
        assert export_delta(store, lake).session_ids == ["s"]
        expected = contents(store, "s")
    before = lake_files(lake)
    with ps.SessionStore.open(b, publish_interval=None) as store:
        _energy(store, *theirs)
        report = export_delta(store, lake)
    assert not report.ok and report.session_ids == []
    (conflict,) = report.conflicts
    assert conflict.session_id == "s" and "energy_history" in conflict.detail
    assert "llm_requests" not in conflict.detail  # only the tables that differ are named
    assert lake_files(lake) == before
    with ps.SessionStore.in_memory() as central:
        assert import_lake(central, lake).ok
        assert contents(central, "s") == expected


def test_a_copy_with_fewer_rows_outside_the_log_is_a_conflict(tmp_path: Path) -> None:
    """B never got A's later LLM request: its copy is behind the lake's in that table."""
    lake = tmp_path / "lake"
    a, b = _copies(tmp_path)
    with ps.SessionStore.open(a, publish_interval=None) as store:
        store.record_llm_request(ps.LlmRequestRecord(session_id="s", model="m", prompt="late",
                                                     response=""))
        export_delta(store, lake)
    with ps.SessionStore.open(b, publish_interval=None) as store:
        commits(store, "s", 1, "b")  # its log extends the lake's: only the rows differ
        (conflict,) = export_delta(store, lake).conflicts
    assert "llm_requests" in conflict.detail and "energy_history" not in conflict.detail


def test_a_growing_session_with_status_budget_plan_and_branch_updates_re_exports(
    tmp_path: Path,
) -> None:
    """Rows the store changes in place (session status, budget upserts, a superseded plan,
    a branch's state, a resolved footprint) never make a re-export of the same store a
    conflict; nor does a copy that only adds rows."""
    lake = tmp_path / "lake"
    db = tmp_path / "a.db"
    with ps.SessionStore.open(db, publish_interval=None) as store:
        small_session(store, "s")
        store.upsert_budget_envelope(ps.BudgetEnvelopeRow(session_id="s", steps_used=1))
        store.record_plan_revision(ps.PlanRevisionRow(
            revision_id="r1", session_id="s", sequence=1, plan_json="{}", reason="start"))
        store.record_provisional_branch(ps.ProvisionalBranchRow(
            branch_id="b1", session_id="s", node_id="n1", parent_node_id="root"))
        store.record_repair_footprint(ps.RepairFootprintRow(
            footprint_id="f1", session_id="s", node_id="n1", revision_id="r1", attempt=1,
            bundle_json="{}", diagnosis="d"))
        assert export_delta(store, lake).session_ids == ["s"]
        for round_ in range(2):
            store.update_session_status("s", f"STEP-{round_}")
            store.upsert_budget_envelope(ps.BudgetEnvelopeRow(session_id="s",
                                                              steps_used=2 + round_))
            store.update_branch_state("b1", "sealed" if round_ else "merged", session_id="s")
            _energy(store, 10.0 + round_)
            report = export_delta(store, lake)
            assert (report.ok, report.session_ids) == (True, ["s"]), report.conflicts
        store.replace_active_plan("s", ps.PlanRevisionRow(
            revision_id="r2", session_id="s", sequence=2, plan_json="{}", reason="again"))
        store.resolve_repair_footprint("f1")
        commits(store, "s", 2, "more")
        report = export_delta(store, lake)
        assert (report.ok, report.session_ids) == (True, ["s"]), report.conflicts
        assert export_delta(store, lake).unchanged == ["s"]  # equal content: unchanged
        expected = contents(store, "s")
    copy = tmp_path / "copy.db"
    copy.write_bytes(db.read_bytes())
    with ps.SessionStore.open(copy, publish_interval=None) as store:
        store.update_session_status("s", "DONE")
        _energy(store, 99.0)
        report = export_delta(store, lake)
        assert (report.ok, report.session_ids) == (True, ["s"]), report.conflicts
        expected = contents(store, "s")
    with ps.SessionStore.in_memory() as central:
        assert import_lake(central, lake).ok
        assert contents(central, "s") == expected


def test_a_session_imported_from_the_lake_and_grown_re_exports(tmp_path: Path) -> None:
    """An import draws ids anew: the rows are the lake's all the same (ids aside), so the
    importer's grown copy extends the lake's."""
    lake = tmp_path / "lake"
    with ps.SessionStore.in_memory() as origin:
        small_session(origin, "pad")  # the importer's ids will differ from the origin's
        small_session(origin, "s")
        export_delta(origin, lake)
    with ps.SessionStore.in_memory() as other:
        assert import_lake(other, lake, ["s"]).ok
        assert export_delta(other, lake, ["s"]).ok
        _energy(other, 7.0)
        report = export_delta(other, lake, ["s"])
        assert (report.ok, report.session_ids) == (True, ["s"]), report.conflicts


def test_cli_export_delta_of_a_copy_with_other_rows_exits_1(tmp_path: Path) -> None:
    lake = str(tmp_path / "lake")
    a, b = _copies(tmp_path)
    for path, totals in ((a, (4.0, 5.0)), (b, (6.0,))):
        with ps.SessionStore.open(path, publish_interval=None) as store:
            _energy(store, *totals)
    assert invoke("--db", str(a), "export", "--delta", lake).exit_code == 0
    before = lake_files(Path(lake))
    result = invoke("--db", str(b), "export", "--delta", lake)
    assert result.exit_code == 1
    assert result.stderr.startswith("conflict: s: ") and "energy_history" in result.stderr
    assert lake_files(Path(lake)) == before


def test_every_column_the_store_changes_in_place_is_declared_mutable() -> None:
    """The re-export rule leaves ``Row.__mutable__`` columns out of its comparison: every
    UPDATE and upsert the store runs must change only those (else a normal re-export would
    be a conflict). Read from the store's source: its UPDATE statements, the columns
    ``_update_session`` is called with, and the upserts (every column but the key)."""
    import re

    import perspt_store.store as store_package
    from perspt_store._mapping import table_map

    source = "\n".join(p.read_text() for p in Path(store_package.__file__).parent.glob("*.py"))
    changed: dict[str, set[str]] = {}
    for table, assignments in re.findall(r"UPDATE (\w+) SET (.+?)[\s\"']+WHERE", source, re.S):
        if assignments.startswith("{COMMIT_COLUMN} = "):
            continue  # a row's log entry, set as it is migrated or imported: never exported
        changed.setdefault(table, set()).update(re.findall(r"(\w+) = ", assignments))
    changed["sessions"].update(re.findall(r"_update_session\(\w+, \"(\w+)\"", source))
    for model, key in re.findall(r"table_map\((\w+)\)\.upsert_sql\(\s*\"(\w+)\"", source):
        mapping = table_map(getattr(ps, model))
        changed.setdefault(mapping.table, set()).update(
            c for c in (*mapping.columns, "updated_at") if c != key)
    assert set(changed) == {"sessions", "provisional_branches", "plan_revisions",
                            "repair_footprints", "budget_envelopes"}
    assert {"status", "merkle_root"} <= changed["sessions"]
    for table, columns in changed.items():
        assert columns <= set(ps.ROW_MODELS[table].__mutable__), table

"""Regression tests found by probing the Delta lake as a skeptical user (issue #15): each
one failed before its fix."""

from __future__ import annotations

import datetime as _dt
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import polars as pl
import pytest

import perspt_store as ps
from perspt_store.delta import compact_lake, export_delta, verify_lake
from perspt_store.lake import export_parquet, import_lake
from test_delta import lake_files
from test_lake import small_session


def test_a_parquet_export_into_a_delta_lake_is_refused_and_writes_nothing(
    tmp_path: Path,
) -> None:
    """Both lakes name partitions ``<table>/session_id=<id>/``: a Parquet export into a
    Delta lake replaced the Delta tables' data files, and every session became unreadable."""
    lake = tmp_path / "lake"
    with ps.SessionStore.in_memory() as store:
        small_session(store, "s")
        assert export_delta(store, lake).ok
        before = lake_files(lake)
        with pytest.raises(ps.StoreError, match="Delta lake"):
            export_parquet(store, lake)
    assert lake_files(lake) == before
    assert verify_lake(lake).ok


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_compact_and_verify_see_a_new_session_whose_first_export_was_killed(
    tmp_path: Path,
) -> None:
    """An exporter killed during a session's *first* export leaves its rows in the tables it
    wrote, with no checkpoint row. Plain Delta readers see a session the lake does not hold;
    ``lake verify`` must name it and ``lake compact`` must remove those rows."""
    from test_delta import KILLED

    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    db = tmp_path / "a.db"
    lake = tmp_path / "lake"
    with ps.SessionStore.open(db, publish_interval=None) as store:
        small_session(store, "old")
        export_delta(store, lake)
        small_session(store, "new")
    proc = subprocess.run([sys.executable, str(script), str(db), str(lake), "3"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "new" in pl.read_delta(str(lake / "sessions"))["session_id"].to_list()
    verification = verify_lake(lake)
    assert verification.ok
    assert [v.session_id for v in verification.sessions if "did not commit" in v.detail] == ["new"]
    with ps.SessionStore.in_memory() as central:  # pinned readers never saw it
        assert import_lake(central, lake).imported == ["old"]
    assert compact_lake(lake, retention_hours=1).repaired == []  # not old enough yet
    assert compact_lake(lake, retention_hours=1, abandoned_after_hours=0).repaired == ["new"]
    for table in ("sessions", "node_states", "energy_history"):
        assert pl.read_delta(str(lake / table))["session_id"].unique().to_list() == ["old"]
    assert [v.session_id for v in verify_lake(lake).sessions] == ["old"]
    with ps.SessionStore.open_read_only(db) as store:  # the next export writes it whole
        assert export_delta(store, lake).session_ids == ["new"]
    assert verify_lake(lake).ok and len(verify_lake(lake).sessions) == 2


def test_import_as_of_a_bad_version_or_time_says_what_is_wrong_and_imports_nothing(
    tmp_path: Path,
) -> None:
    """A time before the lake existed used to import nothing and report success (an empty
    lake), ``True`` was taken for version 1, and a version past the latest gave delta-rs's
    kernel message."""
    lake = tmp_path / "lake"
    with ps.SessionStore.in_memory() as store:
        small_session(store, "s")
        latest = export_delta(store, lake).version
    assert latest is not None
    long_ago = _dt.datetime(2001, 1, 1, tzinfo=_dt.UTC)
    with ps.SessionStore.in_memory() as central:
        with pytest.raises(ps.StoreError, match="did not exist yet"):
            import_lake(central, lake, as_of=long_ago)
        with pytest.raises(ps.StoreError, match=f"latest version is {latest}"):
            import_lake(central, lake, as_of=latest + 1)
        with pytest.raises(ValueError, match="not negative"):
            import_lake(central, lake, as_of=-1)
        for bad in (True, "1", 1.5):
            with pytest.raises(TypeError, match="version"):
                import_lake(central, lake, as_of=bad)  # type: ignore[arg-type]
        assert central.sql("SELECT count(*) FROM sessions").fetchall() == [(0,)]
        with pytest.raises(ps.StoreError, match="did not exist yet"):
            verify_lake(lake, as_of=long_ago)
        assert import_lake(central, lake, as_of=latest).imported == ["s"]
    from click.testing import CliRunner

    from perspt_store.cli import cli

    db = tmp_path / "central.db"
    result = CliRunner().invoke(cli, ["--db", str(db), "import", str(lake),
                                      "--timestamp", "2001-01-01"])
    assert result.exit_code == 1 and "did not exist yet" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(("table", "column", "value"), [
    ("energy_history", "v_total", 9.99), ("sessions", "task", "forged"),
    ("llm_requests", "model", "other"),
])
def test_an_edited_row_outside_the_commit_log_fails_verify_and_import(
    tmp_path: Path, table: str, column: str, value: Any,
) -> None:
    """The checkpoint holds a digest of every table's rows, but only the Merkle log was
    checked: an edited energy, session or LLM row in a pinned file verified and imported."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from click.testing import CliRunner
    from deltalake import DeltaTable

    from perspt_store.cli import cli
    from perspt_store.delta import CHECKPOINTS

    lake = tmp_path / "lake"
    with ps.SessionStore.in_memory() as store:
        small_session(store, "s")
        small_session(store, "t")
        export_delta(store, lake)
    (row,) = [r for r in DeltaTable(str(lake / CHECKPOINTS)).to_pyarrow_table().to_pylist()
              if r["session_id"] == "s"]
    (pin,) = [p for p in row["tables"] if p["name"] == table]
    path = lake / table / unquote(pin["files"][0])
    data = pq.read_table(path)
    values = data[column].to_pylist()
    values[-1] = value
    pq.write_table(data.set_column(data.column_names.index(column), column,
                                   pa.array(values, data.schema.field(column).type)), path)
    verdicts = {v.session_id: v for v in verify_lake(lake).sessions}
    assert verdicts["t"].ok and not verdicts["s"].ok and table in verdicts["s"].detail
    with ps.SessionStore.in_memory() as central:
        report = import_lake(central, lake)
        assert report.imported == ["t"]
        assert [(s.session_id, s.status) for s in report.sessions if s.status != "imported"] == [
            ("s", "invalid")]
        assert central.get_session("s") is None
    result = CliRunner().invoke(cli, ["lake", "verify", str(lake)])
    assert result.exit_code == 1 and "failed: s: " in result.output

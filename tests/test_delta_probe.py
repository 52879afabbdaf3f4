"""Regression tests found by probing the Delta lake as a skeptical user (issue #15): each
one failed before its fix."""

from __future__ import annotations

import datetime as _dt
import signal
import subprocess
import sys
from pathlib import Path

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

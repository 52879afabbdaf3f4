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

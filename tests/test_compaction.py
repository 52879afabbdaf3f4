"""``compact`` rewrites an old, big-block file into the compact form, verified both sides."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

import perspt_store as ps
from perspt_store.cli import cli
from perspt_store.compaction import BACKUP_SUFFIX, compact
from test_read_only import S, populate


def old_file(path: Path) -> Path:
    """A store created with DuckDB's default 256 KiB blocks, as before, with rows in every
    table and a few commits."""
    duckdb.connect(str(path), config={"storage_compatibility_version": "v1.5.0"}).close()
    populate(path)
    return path


def block_size(path: Path) -> int:
    with duckdb.connect(str(path), read_only=True) as conn:
        return int(conn.execute("PRAGMA database_size").fetchall()[0][2])


def everything(path: Path) -> dict[str, object]:
    with ps.SessionStore.open_read_only(path) as store:
        return {
            "snapshot": store.load_session_snapshot(S),
            "log": store.get_commit_log(S),
            "plans": store.get_plan_revisions(S),
            "sessions": store.list_recent_sessions(10),
        }


def test_compact_shrinks_an_old_file_and_keeps_every_row(tmp_path: Path) -> None:
    db = old_file(tmp_path / "perspt.db")
    assert block_size(db) == 262_144
    before = everything(db)
    report = compact(db)
    assert block_size(db) == 16_384
    assert report.bytes_after * 5 < report.bytes_before
    assert report.original == tmp_path / ("perspt.db" + BACKUP_SUFFIX)
    assert block_size(report.original) == 262_144  # the original is kept as it was
    assert everything(db) == before
    with ps.SessionStore.open(db) as store:  # and writing goes on: ids continue
        assert store.verify_session(S).ok
        top = max(r.id for r in store.get_node_states(S))  # type: ignore[type-var]
        store.record_node_state(ps.NodeStateRecord(node_id="new", session_id=S, state="x"))
        assert store.get_node_states(S)[-1].id == top + 1  # type: ignore[operator]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "perspt.db", "perspt.db" + BACKUP_SUFFIX, "perspt.db.snapshot"
    ]


def test_a_file_that_fails_verification_is_not_compacted(tmp_path: Path) -> None:
    db = old_file(tmp_path / "perspt.db")
    with duckdb.connect(str(db)) as conn:  # tampering behind the store's back
        conn.execute("UPDATE node_states SET state = 'forged' WHERE session_id = ?", [S])
    original = db.read_bytes()
    with pytest.raises(ps.IntegrityError, match="fail verification"):
        compact(db)
    assert db.read_bytes() == original
    assert not (tmp_path / ("perspt.db" + BACKUP_SUFFIX)).exists()


def test_the_cli_compacts_and_says_what_it_did(tmp_path: Path) -> None:
    db = old_file(tmp_path / "perspt.db")
    result = CliRunner().invoke(cli, ["--db", str(db), "compact"])
    assert result.exit_code == 0, result.output
    assert "MB" in result.output and BACKUP_SUFFIX in result.output
    again = CliRunner().invoke(cli, ["--db", str(db), "compact"])
    assert again.exit_code == 1
    assert "exists" in again.output and "Traceback" not in again.output

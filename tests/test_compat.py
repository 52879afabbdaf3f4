"""Files stay readable by upstream's engine: new files use DuckDB 1.5's storage format."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

import perspt_store as ps
from perspt_store.schema import TABLES


def storage_version(path: Path) -> str:
    conn = duckdb.connect(str(path), read_only=True)
    try:
        ((tags,),) = conn.execute(
            "SELECT tags FROM duckdb_databases() WHERE database_name = current_database()"
        ).fetchall()
    finally:
        conn.close()
    return str(tags["storage_version"])


def test_a_new_file_is_created_in_upstreams_storage_format(tmp_path: Path) -> None:
    path = tmp_path / "perspt.db"
    with ps.SessionStore.open(path) as store:
        store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
        store.record_node_state(ps.NodeStateRecord(session_id="s", node_id="n", state="ok"))
    assert storage_version(path) == "v1.5.0+"
    with ps.SessionStore.open(path) as store:  # reopening and writing keeps the format
        store.record_node_state(ps.NodeStateRecord(session_id="s", node_id="n", state="ok2"))
        store.sql("CHECKPOINT").fetchall()
    assert storage_version(path) == "v1.5.0+"


# --- upstream's own engine, DuckDB 1.5.4, reads and writes what we create -----------------

UPSTREAM_DUCKDB = "1.5.4"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def upstream_python() -> Path:
    """A Python with upstream's DuckDB in a virtualenv of its own, made on first use and kept
    beside the project (``.venv-duckdb-1.5.4``, ignored by git)."""
    venv = ROOT / f".venv-duckdb-{UPSTREAM_DUCKDB}"
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import duckdb; print(duckdb.__version__)"]
    if not python.exists() or subprocess.run(
        probe, capture_output=True, text=True, check=False
    ).stdout.strip() != UPSTREAM_DUCKDB:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"duckdb=={UPSTREAM_DUCKDB}"],
            check=True,
            timeout=900,
        )
    return python


_UPSTREAM_SCRIPT = """
import json, sys
import duckdb
assert duckdb.__version__ == sys.argv[1], duckdb.__version__
db, snapshot, tables, LOG = sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5]
out = {}
for path in (db, snapshot):
    conn = duckdb.connect(path, read_only=True)
    out[path] = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
    out[path + ":block"] = conn.execute("PRAGMA database_size").fetchone()[2]
    out[path + ":log"] = conn.execute(LOG).fetchall()  # the view's decoding, on 1.5.4
    conn.close()
# Upstream's statements name their columns: our extra columns take their defaults.
conn = duckdb.connect(db)
conn.execute(
    "INSERT INTO sessions (session_id, task, working_dir, merkle_root, detected_toolchain, "
    "status) VALUES ('up', 'task', '/w', NULL, NULL, 'RUNNING')"
)
conn.execute(
    "INSERT INTO node_states (node_id, session_id, state, v_total, merkle_hash, "
    "attempt_count) VALUES ('n', 'up', 'Completed', 0.5, NULL, 1)"
)
conn.execute("UPDATE sessions SET status = 'COMPLETED' WHERE session_id = 'up'")
conn.execute("CHECKPOINT")
conn.close()
print(json.dumps(out))
"""


# The commit log as the merkle_log view decodes it from the node-state rows (schema 5).
_LOG_ROWS = (
    "SELECT session_id, seq, node_state_id, node_id, kind, hex(leaf_hash), hex(state_root), "
    "hex(log_root), CAST(created_at AS VARCHAR) FROM merkle_log ORDER BY session_id, seq"
)


def test_upstreams_engine_reads_and_writes_a_new_file_and_its_snapshot(
    tmp_path: Path, upstream_python: Path
) -> None:
    from test_read_only import S, populate

    path = tmp_path / "perspt.db"
    populate(path)  # a row in every table, commits, a plan revision superseded
    with ps.SessionStore.open(path) as store:  # publishes the snapshot on close
        tables = [*TABLES, "merkle_log", "merkle_root_overrides"]
        counts = {t: store.sql(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in tables}
        log = [list(row) for row in store.sql(_LOG_ROWS).fetchall()]
        assert len(log) == counts["merkle_log"] > 0
    snapshot = path.with_name(path.name + ".snapshot")
    result = subprocess.run(
        [str(upstream_python), "-c", _UPSTREAM_SCRIPT, UPSTREAM_DUCKDB, str(path),
         str(snapshot), json.dumps(tables), _LOG_ROWS],
        capture_output=True, text=True, check=False, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen[str(path)] == counts
    assert seen[str(snapshot)] == counts
    assert seen[str(path) + ":block"] == seen[str(snapshot) + ":block"] == 16384
    assert seen[str(path) + ":log"] == seen[str(snapshot) + ":log"] == log
    with ps.SessionStore.open(path) as store:  # upstream's rows read back, in order
        assert [s.session_id for s in store.list_recent_sessions(1)] == ["up"]
        assert store.get_session("up").status == "COMPLETED"  # type: ignore[union-attr]
        assert [n.state for n in store.get_node_states("up")] == ["Completed"]
        assert store.verify_session(S).ok


def test_new_files_and_snapshots_are_small(tmp_path: Path) -> None:
    """Blocks of 16 KiB, not DuckDB's 256 KiB: every table and index claims whole blocks."""
    path = tmp_path / "perspt.db"
    ps.SessionStore.open(path).close()
    snapshot = path.with_name(path.name + ".snapshot")
    assert path.stat().st_size <= 300_000
    assert snapshot.stat().st_size <= 300_000

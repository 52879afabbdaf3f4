"""The Merkle commands of the command line: verify, log, checkpoint, rollback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import perspt_store as ps
from perspt_store.cli import cli

SID = "s-merkle"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "perspt.db"
    with ps.SessionStore.open(path) as store:
        store.create_session(ps.SessionRecord(session_id=SID, task="t", working_dir="/w"))
        for i in range(5):
            store.record_node_state(
                ps.NodeStateRecord(session_id=SID, node_id=f"n{i % 2}", state=f"s{i}")
            )
    return path


def run(db: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--db", str(db), *args])
    return result.exit_code, result.output


def test_verify_an_intact_session_exits_0(db: Path) -> None:
    code, out = run(db, "verify", SID)
    assert code == 0 and out.startswith(f"OK: session {SID}: 5 commits")


def test_verify_a_tampered_session_exits_1_and_names_the_problem(db: Path) -> None:
    with ps.SessionStore.open(db) as store:
        store.sql("UPDATE node_states SET state = 'forged' WHERE id = 2").fetchall()
    code, out = run(db, "verify", SID, "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert [(p["kind"], p["seq"]) for p in report["problems"]] == [("edited", 1)]


def test_checkpoint_then_verify_against_it_with_a_key(db: Path, tmp_path: Path) -> None:
    key = tmp_path / "key.hex"
    key.write_text(bytes(range(32)).hex())
    checkpoint = tmp_path / "cp.json"
    assert run(db, "checkpoint", SID, "--key-file", str(key), "-o", str(checkpoint))[0] == 0
    assert json.loads(checkpoint.read_text())["size"] == 5
    with ps.SessionStore.open(db) as store:
        store.record_node_state(ps.NodeStateRecord(session_id=SID, node_id="n9", state="x"))
    args = ("verify", SID, "--against", str(checkpoint), "--key-file", str(key))
    assert run(db, *args)[0] == 0
    other = tmp_path / "other.key"
    other.write_bytes(bytes(32))
    code, out = run(db, "verify", SID, "--against", str(checkpoint), "--key-file", str(other))
    assert code == 1 and "MAC" in out


def test_log_lists_every_commit(db: Path) -> None:
    code, out = run(db, "log", SID, "--nl")
    commits = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [c["seq"] for c in commits] == [0, 1, 2, 3, 4]
    assert all(len(c["state_root"]) == 64 for c in commits)


def test_rollback_by_seq_and_by_root(db: Path) -> None:
    code, out = run(db, "rollback", SID, "--to", "1", "--json")
    assert code == 0
    with ps.SessionStore.open_read_only(db) as store:
        target = store.get_commit_log(SID)[1].state_root
        assert store.state_root(SID) == target
    assert json.loads(out)["state_root"] == target.hex()
    code, _ = run(db, "rollback", SID, "--to", target.hex())
    assert code == 0


def test_rollback_errors(db: Path) -> None:
    assert run(db, "rollback", SID, "--to", "not-a-target")[0] == 2
    code, out = run(db, "rollback", SID, "--to", "99")
    assert code == 1 and "no commit 99" in out
    assert run(db, "rollback", "nope", "--to", "1")[0] == 1


def test_a_bad_checkpoint_file_is_a_one_line_usage_error(db: Path, tmp_path: Path) -> None:
    # Exit 2, not 1: exit 1 from verify means the log failed, never that the input was bad.
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    code, out = run(db, "verify", SID, "--against", str(bad))
    last = out.strip().splitlines()[-1]
    assert code == 2 and last.startswith("Error: Invalid value for '--against'")
    assert "not a perspt-store checkpoint: no scheme" in last

"""Errors a person sees: every bad path, file, id or option ends in one clear line that
names what was wrong, never a traceback, and opening a file never reaches for the network.

The store: every OS error at open (a directory, a path under a regular file, a file that is
not DuckDB, permission denied) is a StoreError naming the path; DuckDB never installs or
loads an extension on its own. The messages: a read says "reading <table>", a write
"writing <table>", a duplicate names its key in words. Checkpoints are validated when they
are built or parsed. The CLI: exit 2 for bad usage or input, 1 for what the store refuses.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pydantic
import pytest
from click.testing import CliRunner, Result

import perspt_store as ps
from perspt_store import _publish
from perspt_store.cli import cli
from perspt_store.store._base import translate_error
from perspt_store.store.commits import CHECKPOINT_SCHEME, Checkpoint

SID = "s-err"
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# --- files that are not a DuckDB database ------------------------------------------------


def _sqlite(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    return path


def _parquet(path: Path) -> Path:
    with duckdb.connect() as conn:
        conn.execute(f"COPY (SELECT 1 AS x) TO '{path}' (FORMAT parquet)")
    return path


def _bytes(name: str, data: bytes) -> Callable[[Path], Path]:
    def write(directory: Path) -> Path:
        path = directory / name
        path.write_bytes(data)
        return path

    return write


NOT_DUCKDB: dict[str, Callable[[Path], Path]] = {
    "sqlite": lambda d: _sqlite(d / "run.db"),
    "sqlite named .sqlite": lambda d: _sqlite(d / "run.sqlite"),
    "empty": _bytes("run.db", b""),
    "random bytes": _bytes("run.db", b"\x00" * 8 + os.urandom(4088)),
    "parquet named .db": lambda d: _parquet(d / "run.db"),
    "parquet": lambda d: _parquet(d / "run.parquet"),
    "json": _bytes("run.json", b'{"a": 1}'),
    "text": _bytes("run.db", b"hello, this is no database\n"),
}


def _open(path: Path, read_only: bool) -> ps.SessionStore:
    if read_only:
        return ps.SessionStore.open_read_only(path)
    return ps.SessionStore.open(path, publish_interval=None)


def _no_engine_noise(message: str) -> None:
    for word in ("extension", "download", "http", "Catalog Error", "IO Error", "in-memory"):
        assert word not in message, message


@pytest.mark.parametrize("read_only", [False, True], ids=["read-write", "read-only"])
@pytest.mark.parametrize("kind", list(NOT_DUCKDB))
def test_a_file_that_is_not_duckdb_is_refused_by_name_and_left_alone(
    tmp_path: Path, kind: str, read_only: bool
) -> None:
    path = NOT_DUCKDB[kind](tmp_path)
    before = path.read_bytes()
    # No download is attempted: the message has no extension noise (below), and every
    # connection has auto-install and auto-load off (test_every_store_connection_...).
    with pytest.raises(ps.StoreError) as err:
        _open(path, read_only)
    message = str(err.value)
    assert f"{path} is not a DuckDB database" in message
    assert err.value.operation == "open"
    assert "\n" not in message
    _no_engine_noise(message)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_sqlite_file_is_called_one(tmp_path: Path) -> None:
    path = _sqlite(tmp_path / "run.db")
    with pytest.raises(ps.StoreError, match="it is a SQLite database"):
        ps.SessionStore.open(path)


@pytest.mark.parametrize("read_only", [False, True], ids=["read-write", "read-only"])
def test_a_path_under_a_regular_file_is_a_store_error_naming_it(
    tmp_path: Path, read_only: bool
) -> None:
    (tmp_path / "afile").write_text("x")
    path = tmp_path / "afile" / "deeper" / "x.db"
    with pytest.raises(ps.StoreError) as err:
        _open(path, read_only)
    assert str(err.value).startswith("cannot ")
    assert f"{tmp_path / 'afile'} is not a directory" in str(err.value)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("read_only", [False, True], ids=["read-write", "read-only"])
def test_a_directory_given_as_the_database_is_a_store_error(
    tmp_path: Path, read_only: bool
) -> None:
    with pytest.raises(ps.StoreError, match="is a directory, not a database file") as err:
        _open(tmp_path, read_only)
    assert str(tmp_path) in str(err.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
@pytest.mark.parametrize("read_only", [False, True], ids=["read-write", "read-only"])
@pytest.mark.timeout(30)
def test_a_named_pipe_is_refused_without_blocking(tmp_path: Path, read_only: bool) -> None:
    path = tmp_path / "run.db"
    os.mkfifo(path)
    with pytest.raises(ps.StoreError, match="is not a regular file"):
        _open(path, read_only)


@pytest.mark.skipif(sys.platform == "win32", reason="file names there are always text")
@pytest.mark.parametrize("read_only", [False, True], ids=["read-write", "read-only"])
def test_a_file_name_that_is_not_utf8_is_a_store_error(tmp_path: Path, read_only: bool) -> None:
    path = tmp_path / os.fsdecode(b"\xff.db")
    with pytest.raises(ps.StoreError, match="valid UTF-8"):
        _open(path, read_only)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(AS_ROOT, reason="root reads any file")
@pytest.mark.parametrize("read_only", [False, True], ids=["read-write", "read-only"])
def test_an_unreadable_file_is_a_store_error_saying_permission_denied(
    tmp_path: Path, read_only: bool
) -> None:
    path = tmp_path / "run.db"
    ps.SessionStore.open(path, publish_interval=None).close()
    path.chmod(0)
    try:
        with pytest.raises(ps.StoreError, match="permission denied") as err:
            _open(path, read_only)
        assert str(path) in str(err.value)
    finally:
        path.chmod(0o600)


WRITE_ONLY = Path("/proc/sys/vm/drop_caches")  # mode 0200: unreadable even for root


def _unreadable(path: Path) -> bool:
    try:
        path.open("rb").close()
    except PermissionError:
        return True
    except OSError:
        return False
    return False


@pytest.mark.skipif(not _unreadable(WRITE_ONLY), reason="needs Linux's write-only sysctl file")
def test_a_file_the_os_refuses_to_read_is_a_store_error_even_for_root() -> None:
    with pytest.raises(ps.StoreError) as err:
        ps.SessionStore.open_read_only(WRITE_ONLY)  # read-only: nothing is ever written
    assert str(err.value) == f"cannot open {WRITE_ONLY}: permission denied"


@pytest.mark.skipif(AS_ROOT, reason="root writes anywhere")
def test_an_unwritable_directory_is_a_store_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ps.StoreError, match="permission denied") as err:
            ps.SessionStore.open(locked / "sub" / "run.db")
        assert str(locked) in str(err.value)
    finally:
        locked.chmod(0o700)


# --- never the network ---------------------------------------------------------------------

_SETTINGS = (
    "SELECT current_setting('autoinstall_known_extensions'), "
    "current_setting('autoload_known_extensions')"
)


def _extension_settings(conn: Any) -> tuple[Any, ...]:
    return tuple(conn.execute(_SETTINGS).fetchall()[0])


def test_every_store_connection_turns_off_extension_autoinstall_and_autoload(
    tmp_path: Path,
) -> None:
    path = tmp_path / "run.db"
    with ps.SessionStore.in_memory() as store:
        assert tuple(store.sql(_SETTINGS).fetchall()[0]) == (False, False)
    with ps.SessionStore.open(path, publish_interval=None) as writer:
        assert tuple(writer.sql(_SETTINGS).fetchall()[0]) == (False, False)
        # A read-only store in the writer's own process shares its engine instance.
        with ps.SessionStore.open_read_only(path) as view:
            assert tuple(view.sql(_SETTINGS).fetchall()[0]) == (False, False)
    with ps.SessionStore.open_read_only(path) as reader:
        assert tuple(reader.sql(_SETTINGS).fetchall()[0]) == (False, False)
        # Every thread's cursor is a connection to the same instance: same settings.
        assert _extension_settings(reader._cursor()) == (False, False)


def test_the_snapshot_a_reader_falls_back_to_is_attached_without_extensions(
    tmp_path: Path,
) -> None:
    db = tmp_path / "run.db"
    with ps.SessionStore.open(db, publish_interval=None) as store:
        store.create_session(ps.SessionRecord(session_id=SID, task="t", working_dir="/w"))
    _publish.snapshot_path(db).write_bytes(db.read_bytes())
    conn, _ = _publish.open_snapshot(db, RuntimeError("locked"))
    try:
        assert _extension_settings(conn) == (False, False)
    finally:
        conn.close()
    # A snapshot that is a SQLite file: an error, and no download on the way to it.
    _publish.snapshot_path(db).unlink()
    _sqlite(_publish.snapshot_path(db))
    with pytest.raises(ps.StoreLockedError) as err:
        _publish.open_snapshot(db, RuntimeError("locked"))
    assert "download" not in str(err.value) and "http" not in str(err.value)


# --- the words of an error -----------------------------------------------------------------


@pytest.fixture
def mem() -> ps.SessionStore:
    store = ps.SessionStore.in_memory()
    store.create_session(ps.SessionRecord(session_id=SID, task="t", working_dir="/w"))
    return store


def test_a_read_of_an_unknown_session_does_not_say_writing(mem: ps.SessionStore) -> None:
    for read in (mem.get_commit_log, mem.verify_session, mem.checkpoint, mem.state_root):
        with pytest.raises(ps.SessionNotFoundError) as err:
            read("nope")
        assert "writing" not in str(err.value), str(err.value)
        assert "'nope'" in str(err.value) and "does not exist" in str(err.value)


def test_a_write_to_an_unknown_session_says_nothing_was_written_where(
    mem: ps.SessionStore,
) -> None:
    with pytest.raises(ps.SessionNotFoundError) as err:
        mem.record_energy(ps.EnergyRecord(session_id="nope", node_id="n"))
    assert str(err.value) == (
        "session 'nope' does not exist, so nothing was written to energy_history; "
        "create it with create_session() first"
    )
    assert (err.value.operation, err.value.table) == ("insert", "energy_history")


def test_a_duplicate_key_is_named_in_words_alone_and_within_one_batch(
    mem: ps.SessionStore,
) -> None:
    charter = ps.FeatureCharterRow(charter_id="ch-1", session_id=SID, scope_description="s")
    mem.record_feature_charter(charter)
    with pytest.raises(ps.DuplicateRecordError) as err:
        mem.record_feature_charter(charter)
    assert str(err.value) == (
        "writing feature_charters failed: a row with charter_id 'ch-1' already exists; "
        "nothing was written"
    )
    again = ps.FeatureCharterRow(charter_id="ch-2", session_id=SID, scope_description="s")
    with pytest.raises(ps.DuplicateRecordError) as err:
        mem.record_many([again, ps.EnergyRecord(session_id=SID, node_id="n"), again])
    assert str(err.value) == (
        "writing feature_charters failed: charter_id 'ch-2' is given twice in this batch or "
        "transaction; nothing was written"
    )
    twice = ps.SessionRecord(session_id="s-2", task="t", working_dir="/w")
    with pytest.raises(ps.DuplicateRecordError, match="session_id 's-2' is given twice"):
        mem.record_many([twice, twice])


def test_the_key_columns_translate_error_names_are_the_schemas(tmp_path: Path) -> None:
    from perspt_store.store._base import _KEY_COLUMNS

    with ps.SessionStore.open(tmp_path / "run.db", publish_interval=None) as store:
        found: dict[str, tuple[str, ...]] = {}
        for table, columns in store.sql(
            "SELECT table_name, constraint_column_names FROM duckdb_constraints() "
            "WHERE constraint_type IN ('PRIMARY KEY', 'UNIQUE') ORDER BY table_name"
        ).fetchall():
            if columns != ["id"]:  # ids come from sequences: never a caller's duplicate
                found[table] = tuple(columns)
    assert found == _KEY_COLUMNS


def test_a_read_that_fails_says_reading_the_table(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    with ps.SessionStore.open(path, publish_interval=None) as store:
        store.create_session(ps.SessionRecord(session_id=SID, task="t", working_dir="/w"))
    with duckdb.connect(str(path)) as conn:
        conn.execute("DROP TABLE energy_history")
    with ps.SessionStore.open_read_only(path) as store, pytest.raises(ps.StoreError) as err:
        store.get_session_energy_history(SID)
    assert str(err.value).startswith(
        "reading energy_history failed: the database has no table 'energy_history'"
    )
    assert err.value.operation == "select"


@pytest.mark.parametrize(
    ("operation", "table", "words"),
    [
        ("select", "merkle_log", "reading merkle_log"),
        ("insert", "node_states", "writing node_states"),
        ("update", "sessions", "updating sessions"),
        ("delete", "sessions", "deleting from sessions"),
        ("open", None, "opening the database"),
        ("commit", None, "committing the transaction"),
        ("sql", None, "running the SQL"),
        ("begin transaction", None, "starting a transaction"),
        ("export", "sessions", "exporting sessions"),
        ("import", None, "importing"),
    ],
)
def test_each_operation_is_said_in_words(operation: str, table: str | None, words: str) -> None:
    error = translate_error(
        duckdb.InvalidInputException("Invalid Input Error: boom"), table=table, operation=operation
    )
    assert str(error) == f"{words} failed: Invalid Input Error: boom"
    assert error.operation == operation


# --- checkpoints ---------------------------------------------------------------------------

GOOD = {
    "scheme": CHECKPOINT_SCHEME,
    "session_id": SID,
    "size": 3,
    "log_root": "ab" * 32,
    "state_root": "cd" * 32,
    "time": "2025-01-01T00:00:00.000000Z",
    "mac": None,
}


def test_a_good_checkpoint_parses_and_round_trips() -> None:
    checkpoint = Checkpoint.from_json(json.dumps(GOOD))
    assert Checkpoint.from_json(checkpoint.to_json()) == checkpoint
    signed = checkpoint.sign(bytes(32))
    assert Checkpoint.from_json(signed.to_json()) == signed


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("size", -1, "size"),
        ("size", True, "size"),
        ("size", 1.5, "size"),
        ("size", "3", "size"),
        ("size", 2**64, "size"),
        ("log_root", "ab" * 31, "log_root"),
        ("state_root", "cd" * 33, "state_root"),
        ("mac", "00" * 16, "mac"),
        ("log_root", "zz" * 32, "log_root"),
        ("log_root", None, "log_root"),
        ("scheme", "perspt-store/merkle-log/v9", "scheme"),
        ("session_id", None, "session_id"),
        ("time", 5, "time"),
    ],
)
def test_a_bad_checkpoint_field_is_a_one_line_value_error_naming_it(
    field: str, value: Any, says: str
) -> None:
    with pytest.raises(ValueError) as err:
        Checkpoint.from_json(json.dumps({**GOOD, field: value}))
    message = str(err.value)
    assert message.startswith("not a perspt-store checkpoint: ") and says in message
    assert "\n" not in message and "errors.pydantic.dev" not in message


@pytest.mark.parametrize("text", ["", "{", "[1]", "null", '"x"', "{}", b"\xff\xfe"])
def test_text_that_is_no_checkpoint_is_a_value_error(text: str | bytes) -> None:
    with pytest.raises(ValueError, match=r"^not a perspt-store checkpoint"):
        Checkpoint.from_json(text)


@pytest.mark.parametrize(
    "changes",
    [
        {"size": -1},
        {"size": True},
        {"log_root": bytes(31)},
        {"state_root": bytes(33)},
        {"mac": bytes(31)},
        {"scheme": "other"},
    ],
)
def test_a_checkpoint_built_directly_is_validated_too(changes: dict[str, Any]) -> None:
    fields: dict[str, Any] = {
        "scheme": CHECKPOINT_SCHEME,
        "session_id": SID,
        "size": 0,
        "log_root": bytes(32),
        "state_root": bytes(32),
        "time": "t",
    }
    with pytest.raises(pydantic.ValidationError):
        Checkpoint(**{**fields, **changes})


# --- the command line ----------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "perspt.db"
    with ps.SessionStore.open(path, publish_interval=None) as store:
        store.create_session(ps.SessionRecord(session_id=SID, task="t", working_dir="/w"))
        for i in range(3):
            store.record_node_state(ps.NodeStateRecord(session_id=SID, node_id=f"n{i}", state="s"))
    return path


def run(db: Path | str, *args: str) -> Result:
    runner = CliRunner(env={"COLUMNS": None, "PERSPT_STORE_DB": None})
    return runner.invoke(cli, ["--db", str(db), *args], prog_name="perspt-store")


def fails(result: Result, code: int, *fragments: str) -> str:
    """The command failed with ``code`` and one ``Error:`` line naming ``fragments``; no
    exception escaped. Returns that line."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}"
    )
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in last, last
    return last


def test_checkpoint_to_a_missing_directory_is_a_usage_error(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "missing_dir" / "cp.json"
    fails(run(db, "checkpoint", SID, "-o", str(out)), 2, "missing_dir", "does not exist")
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "cp.json"
    fails(run(db, "checkpoint", SID, "-o", str(out)), 2, "afile", "not a directory")
    assert run(db, "checkpoint", SID, "-o", str(tmp_path / "cp.json")).exit_code == 0


@pytest.mark.parametrize("command", ["energy", "llm", "graph"])
def test_a_plot_into_a_missing_directory_is_a_usage_error(
    db: Path, tmp_path: Path, command: str
) -> None:
    out = tmp_path / "missing_dir" / "plot.png"
    fails(run(db, command, SID, "--plot", str(out)), 2, "missing_dir", "does not exist")


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"size": -1}, "size"),
        ({"size": True}, "size"),
        ({"log_root": "ab" * 31}, "log_root"),
        ({"scheme": "nope"}, "scheme"),
        ({"mac": "00"}, "mac"),
        ({"time": None}, "time"),
    ],
)
def test_verify_against_a_bad_checkpoint_is_a_one_line_usage_error(
    db: Path, tmp_path: Path, changes: dict[str, Any], says: str
) -> None:
    good = run(db, "checkpoint", SID)
    assert good.exit_code == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads(good.output), **changes}))
    fails(run(db, "verify", SID, "--against", str(bad)), 2, "--against", says)


def test_verify_against_a_file_that_is_no_text_is_a_usage_error(db: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(os.urandom(64) + b"\xff")
    fails(run(db, "verify", SID, "--against", str(bad)), 2, "not a perspt-store checkpoint")


@pytest.mark.parametrize("command", ["init", "demo", "sessions", "import"])
def test_a_database_under_a_regular_file_is_one_line(tmp_path: Path, command: str) -> None:
    (tmp_path / "afile").write_text("x")
    args = [command, str(tmp_path)] if command == "import" else [command]
    fails(run(tmp_path / "afile" / "x.db", *args), 1, "afile", "is not a directory")


@pytest.mark.parametrize("command", ["init", "sessions", "tables", "demo"])
@pytest.mark.parametrize("kind", ["sqlite", "parquet", "empty", "random bytes", "json"])
def test_a_database_that_is_not_duckdb_is_one_line(
    tmp_path: Path, command: str, kind: str
) -> None:
    path = NOT_DUCKDB[kind](tmp_path)
    before = path.read_bytes()
    line = fails(run(path, command), 1, str(path), "is not a DuckDB database")
    _no_engine_noise(line)
    assert path.read_bytes() == before


def test_importing_a_file_that_is_not_duckdb_is_one_line(db: Path, tmp_path: Path) -> None:
    source = _sqlite(tmp_path / "other.sqlite")
    line = fails(run(db, "import", str(source)), 1, "is not a DuckDB database")
    _no_engine_noise(line)


@pytest.mark.parametrize(
    "command",
    [
        ["show"],
        ["nodes"],
        ["energy"],
        ["llm"],
        ["timeline"],
        ["branches"],
        ["graph"],
        ["verify"],
        ["log"],
        ["checkpoint"],
        ["rollback", "--to", "1"],
    ],
)
@pytest.mark.parametrize("bad", ["\udcff", "a\udc80b"])
def test_a_session_id_that_is_not_utf8_is_a_usage_error(
    db: Path, command: list[str], bad: str
) -> None:
    fails(run(db, command[0], bad, *command[1:]), 2, "SESSION", "UTF-8")


@pytest.mark.parametrize(
    "args",
    [
        ["energy", SID, "--node", "\udcff"],
        ["timeline", SID, "--node", "\udcff"],
        ["sql", "SELECT ?", "-p", "\udcff"],
        ["sql", "SELECT '\udcff'"],
        ["import", "{db}", "--session", "\udcff"],
        ["demo", "--session-id", "\udcff"],
    ],
)
def test_any_text_option_that_is_not_utf8_is_a_usage_error(db: Path, args: list[str]) -> None:
    fails(run(db, *(a.format(db=db) for a in args)), 2, "UTF-8")


@pytest.mark.parametrize(
    "args",
    [
        ["sessions", "--limit", str(2**64)],
        ["sessions", "--offset", str(2**64)],
        ["rollback", SID, "--to", "\uff11"],  # a fullwidth digit is not a seq
        ["rollback", SID, "--to", "-1"],
    ],
)
def test_out_of_range_numbers_are_usage_errors(db: Path, args: list[str]) -> None:
    fails(run(db, *args), 2)


def test_a_long_unknown_id_is_shortened_in_the_error(db: Path) -> None:
    line = fails(run(db, "show", "x" * 5000), 1, "no session")
    assert len(line) < 300


@pytest.mark.skipif(AS_ROOT, reason="root reads any file")
def test_an_unreadable_key_file_is_a_usage_error(db: Path, tmp_path: Path) -> None:
    key = tmp_path / "key.hex"
    key.write_text("00" * 32)
    key.chmod(0)
    try:
        fails(run(db, "checkpoint", SID, "--key-file", str(key)), 2, "--key-file")
    finally:
        key.chmod(0o600)


def test_a_sqlite_database_from_a_shell_is_one_line_on_stderr(tmp_path: Path) -> None:
    path = _sqlite(tmp_path / "run.db")
    done = subprocess.run(
        [sys.executable, "-m", "perspt_store", "--db", str(path), "sessions"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == f"Error: {path} is not a DuckDB database (it is a SQLite database)\n"


# Every command with hostile arguments: none lets an exception escape.
HOSTILE_IDS = ["nope", "", "\udcff", "a\x00b", "../../etc", "x" * 2000, "'; DROP TABLE t; --"]
SESSION_COMMANDS = ["show", "nodes", "energy", "llm", "timeline", "branches", "graph", "verify",
                    "log", "checkpoint"]


@pytest.mark.parametrize("value", HOSTILE_IDS, ids=range(len(HOSTILE_IDS)))
def test_no_command_lets_an_exception_escape_for_any_id(db: Path, value: str) -> None:
    commands = [[c, value] for c in SESSION_COMMANDS] + [
        ["rollback", value, "--to", "1"],
        ["energy", SID, "--node", value],
        ["timeline", SID, "--node", value],
        ["sql", "SELECT ?", "-p", value],
        ["rollback", SID, "--to", value],
        ["import", str(db), "--session", value],
        ["demo", "--session-id", value],
    ]
    for args in commands:
        result = run(db, *args)
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            f"{args!r:.80}: {type(result.exception).__name__}: {result.exception}"
        )
        assert result.exit_code in (0, 1, 2)
        if result.exit_code:
            assert result.output.strip().splitlines()[-1].startswith("Error: ")


def test_a_file_held_by_a_read_only_process_is_locked_not_read_only(tmp_path: Path) -> None:
    # DuckDB's message for this lock suggests opening read-only; it is still a lock.
    db = tmp_path / "held.db"
    ps.SessionStore.open(db).close()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, duckdb; c = duckdb.connect(sys.argv[1], read_only=True); "
         "print('held', flush=True); sys.stdin.read()", str(db)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(ps.StoreLockedError):
            ps.SessionStore.open(db)
    finally:
        holder.communicate("")

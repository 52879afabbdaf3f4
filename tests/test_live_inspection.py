"""Live inspection: another process can read a database while a writer holds it.

DuckDB lets one process open a file read-write and then no other process can open it at
all. The writer therefore publishes a consistent read snapshot beside the file
(``<db>.snapshot``, see ``perspt_store._publish``) and ``open_read_only`` falls back to it
when the file is locked, saying how stale its view is. These tests run the writer
(``crash_writer.py``) as a real second process and read from this one.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

import perspt_store as ps
from crash_writer import SESSION, committed_prefix, parse_log, read_tables
from perspt_store._publish import read_snapshot_time

WRITER = Path(__file__).with_name("crash_writer.py")
TIMEOUT = 60.0


class Writer:
    """A crash_writer.py process writing ``db``."""

    def __init__(self, db: Path, *args: str) -> None:
        self.db = db
        self.out = db.with_name("writer.log")
        self.proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(db), "--out", str(self.out), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        self.wait_for(lambda: self.out.exists() and self.out.read_text().startswith("R "))

    def wait_for(self, condition: object, what: str = "the writer to start") -> None:
        deadline = time.monotonic() + TIMEOUT
        while not condition():  # type: ignore[operator]
            if self.proc.poll() is not None and self.proc.returncode != 0:
                raise AssertionError(f"the writer failed:\n{self.proc.communicate()[1]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.01)

    @property
    def snapshot(self) -> Path:
        return self.db.with_name(self.db.name + ".snapshot")

    def acked(self) -> int:
        return parse_log(self.out).acked

    def finished(self) -> bool:
        return self.proc.poll() is not None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


def _snapshot_time(path: Path) -> dt.datetime | None:
    with duckdb.connect(str(path), read_only=True) as conn:
        return read_snapshot_time(conn)


@pytest.fixture
def writers() -> Iterator[list[Writer]]:
    started: list[Writer] = []
    yield started
    for writer in started:
        writer.stop()


def test_a_reader_process_sees_the_writers_data_while_it_writes(
    tmp_path: Path, writers: list[Writer]
) -> None:
    db = tmp_path / "live.db"
    writer = Writer(db, "--ops", "150", "--pace", "0.02", "--publish-interval", "0.2")
    writers.append(writer)
    writer.wait_for(writer.snapshot.exists, "the first snapshot")
    views: list[tuple[dt.datetime, int]] = []
    staleness: list[float] = []
    while True:
        try:
            store = ps.SessionStore.open_read_only(db)
        except ps.StoreLockedError:  # only if the writer had published nothing yet
            raise
        with store:
            live = not store.is_snapshot
            acked = parse_log(writer.out).acks  # acknowledged before we read
            m = committed_prefix(read_tables(store), len(acked) + 1)  # never torn
            assert store.verify_session(SESSION).ok
            if live:  # the writer has closed: the file itself, complete
                break
            assert store.read_only
            assert store.snapshot_path == writer.snapshot
            assert store.snapshot_time is not None
            assert store.snapshot_time.tzinfo is not None
            # Everything acknowledged before the snapshot was taken is in it: the view is
            # at most `staleness` seconds old.
            taken = store.snapshot_time.timestamp()
            assert m >= sum(1 for t in acked if t < taken)
            age = store.staleness
            assert age is not None and age >= 0
            staleness.append(age)
            views.append((store.snapshot_time, m))
        time.sleep(0.05)
    writer.wait_for(writer.finished, "the writer to exit")
    assert m == 150
    assert len({t for t, _ in views}) >= 2, "the reader saw the data move on"
    assert [m for _, m in views] == sorted(m for _, m in views)  # views only move forward
    print(
        f"\n{len(views)} snapshot reads, {len({t for t, _ in views})} distinct snapshots, "
        f"staleness at open max {max(staleness):.3f} s (publish_interval 0.2 s)"
    )


def test_a_locked_file_without_a_snapshot_raises_store_locked_error(
    tmp_path: Path, writers: list[Writer]
) -> None:
    db = tmp_path / "locked.db"
    writer = Writer(db, "--pace", "0.05")  # publishes nothing
    writers.append(writer)
    with pytest.raises(ps.StoreLockedError, match="locked by another process"):
        ps.SessionStore.open_read_only(db)
    with pytest.raises(ps.StoreLockedError):
        ps.SessionStore.open(db)  # a second writer is refused too
    assert not writer.snapshot.exists()


def test_an_open_snapshot_reader_keeps_its_view_while_newer_snapshots_replace_it(
    tmp_path: Path, writers: list[Writer]
) -> None:
    db = tmp_path / "replace.db"
    writer = Writer(db, "--pace", "0.01", "--publish-interval", "0.1")
    writers.append(writer)
    writer.wait_for(writer.snapshot.exists, "the first snapshot")
    with ps.SessionStore.open_read_only(db) as old:
        assert old.is_snapshot
        first = committed_prefix(read_tables(old), writer.acked() + 1)
        taken = old.snapshot_time
        writer.wait_for(lambda: _snapshot_time(writer.snapshot) != taken, "a newer snapshot")
        # The file was replaced under the reader; its view is intact and unchanged.
        assert committed_prefix(read_tables(old), first) == first
        assert old.verify_session(SESSION).ok
    with ps.SessionStore.open_read_only(db) as new:
        assert new.snapshot_time != taken
        assert committed_prefix(read_tables(new), writer.acked() + 1) >= first


def test_a_snapshot_reader_refuses_every_write(tmp_path: Path, writers: list[Writer]) -> None:
    db = tmp_path / "ro.db"
    writer = Writer(db, "--pace", "0.05", "--publish-interval", "0.1")
    writers.append(writer)
    writer.wait_for(writer.snapshot.exists, "the first snapshot")
    with ps.SessionStore.open_read_only(db) as store:
        assert store.is_snapshot
        with pytest.raises(ps.ReadOnlyStoreError):
            store.record_energy(ps.EnergyRecord(node_id="n", session_id=SESSION))
        with pytest.raises(ps.ReadOnlyStoreError):
            store.update_session_status(SESSION, "HIJACKED")
        with pytest.raises(ps.ReadOnlyStoreError):
            store.sql("DELETE FROM energy_history")


# --- in one process ------------------------------------------------------------------------


def test_read_only_in_the_writers_own_process_is_a_live_view(db_path: Path) -> None:
    with ps.SessionStore.open(db_path, publish_interval=None) as writer:
        writer.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
        with ps.SessionStore.open_read_only(db_path) as reader:
            assert reader.read_only and not reader.is_snapshot
            assert reader.staleness == 0.0
            writer.record_energy(ps.EnergyRecord(node_id="n", session_id="s", v_total=1.5))
            assert [e.v_total for e in reader.get_energy_history("s", "n")] == [1.5]
            with pytest.raises(ps.ReadOnlyStoreError):
                reader.record_energy(ps.EnergyRecord(node_id="n", session_id="s"))
            for statement in (
                "INSERT INTO energy_history (node_id, session_id) VALUES ('n', 's')",
                "CREATE TABLE evil (a INTEGER)",
                "SELECT 1; DELETE FROM energy_history",
            ):
                with pytest.raises(ps.ReadOnlyStoreError):
                    reader.sql(statement)
            assert reader.sql("SELECT count(*) FROM energy_history").fetchall() == [(1,)]
        # Closing the reader leaves the writer working.
        writer.record_energy(ps.EnergyRecord(node_id="n", session_id="s", v_total=2.5))
        assert len(writer.get_energy_history("s", "n")) == 2


def _wait(condition: object, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_the_writer_publishes_only_after_changes_and_on_close(db_path: Path) -> None:
    store = ps.SessionStore.open(db_path, publish_interval=0.05)
    publisher = store.publisher
    assert publisher is not None
    _wait(lambda: publisher.publishes == 1, "the first publish")  # once after opening
    time.sleep(0.3)  # several intervals with nothing written
    assert publisher.publishes == 1
    store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
    _wait(lambda: publisher.publishes == 2, "a publish of the new session")
    store.record_energy(ps.EnergyRecord(node_id="n", session_id="s", v_total=3.0))
    store.close()  # publishes the final state, whether or not the thread got to it
    snapshot = db_path.with_name(db_path.name + ".snapshot")
    with duckdb.connect(str(snapshot), read_only=True) as conn:
        assert conn.execute("SELECT v_total FROM energy_history").fetchall() == [(3.0,)]
        (taken,) = conn.execute(
            "SELECT value FROM perspt_store_meta WHERE key = 'snapshot_taken_at'"
        ).fetchone()
        assert dt.datetime.fromisoformat(taken) <= dt.datetime.now(dt.UTC)
    # Nothing but the database and its snapshot is left beside it.
    assert sorted(p.name for p in db_path.parent.iterdir()) == ["perspt.db", "perspt.db.snapshot"]


def test_a_snapshot_reads_back_exactly_like_the_database(db_path: Path) -> None:
    from upstream_files import edge_case_rows, write_row

    with ps.SessionStore.open(db_path) as store:
        store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
        for row in edge_case_rows("s", "n", "x").values():
            write_row(store, row)
        store.create_session(ps.SessionRecord(session_id="s2", task="t", working_dir="/w"))
    snapshot = db_path.with_name(db_path.name + ".snapshot")
    with (
        ps.SessionStore.open_read_only(db_path) as live,
        ps.SessionStore.open_read_only(snapshot) as snap,
    ):
        assert snap.load_session_snapshot("s") == live.load_session_snapshot("s")
        assert snap.list_sessions_paginated(10, 0) == live.list_sessions_paginated(10, 0)
        assert snap.get_commit_log("s") == live.get_commit_log("s")
        assert snap.schema_version == live.schema_version


def test_temporaries_of_a_killed_publisher_are_removed_on_the_next_open(db_path: Path) -> None:
    ps.SessionStore.open(db_path, publish_interval=None).close()
    stale = [db_path.with_name(db_path.name + ".snapshot.tmp-999999-0" + s) for s in ("", ".wal")]
    for path in stale:
        path.write_bytes(b"half a snapshot")
    with ps.SessionStore.open(db_path, publish_interval=None):
        assert not any(path.exists() for path in stale)


@pytest.mark.parametrize("interval", [0, -1.0])
def test_a_publish_interval_must_be_positive(db_path: Path, interval: float) -> None:
    with pytest.raises(ValueError, match="publish_interval"):
        ps.SessionStore.open(db_path, publish_interval=interval)


def test_memory_and_read_only_stores_publish_nothing(db_path: Path) -> None:
    with ps.SessionStore.in_memory(publish_interval=0.01) as memory:
        assert memory.publisher is None
    ps.SessionStore.open(db_path, publish_interval=None).close()
    with ps.SessionStore.open_read_only(db_path, publish_interval=0.01) as ro:
        assert ro.publisher is None
    assert not db_path.with_name(db_path.name + ".snapshot").exists()


# --- figures for docs/reliability.md ------------------------------------------------------


def _publish_cost(rows: int, directory: Path) -> tuple[float, int]:
    from perspt_store._publish import publish

    path = directory / f"cost-{rows}.db"
    with ps.SessionStore.open(path, publish_interval=None) as store:
        store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
        store.sql(
            "INSERT INTO energy_history (node_id, session_id, v_total) "
            "SELECT 'n' || (i % 50), 's', i / 3 FROM range(?) t(i)",
            [rows * 9 // 10],
        )
        store.sql(
            "INSERT INTO llm_requests (session_id, model, prompt, response, tokens_in) "
            "SELECT 's', 'm', repeat('p', 400), repeat('r', 200), i FROM range(?) t(i)",
            [rows // 10],
        )
        times = []
        for _ in range(3):
            started = time.perf_counter()
            publish(store._conn, path)
            times.append(time.perf_counter() - started)
    return sorted(times)[1], path.with_name(path.name + ".snapshot").stat().st_size


def _staleness(interval: float, directory: Path) -> list[float]:
    db = directory / f"stale-{interval}.db"
    writer = Writer(db, "--ops", "400", "--pace", "0.01", "--publish-interval", str(interval))
    try:
        writer.wait_for(writer.snapshot.exists, "the first snapshot")
        ages = []
        while not writer.finished():
            try:
                with ps.SessionStore.open_read_only(db) as store:
                    if store.is_snapshot:
                        ages.append(store.staleness or 0.0)
            except ps.StoreLockedError:
                pass
            time.sleep(0.037)
        return ages
    finally:
        writer.stop()


def main() -> None:
    import statistics
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for rows in (1_000, 10_000, 100_000, 200_000):
            seconds, size = _publish_cost(rows, directory)
            print(f"publish {rows:>7} rows: {seconds * 1000:6.0f} ms, snapshot {size >> 10} KiB")
        for interval in (0.2, 2.0):
            ages = _staleness(interval, directory)
            print(
                f"publish_interval {interval}: {len(ages)} reads of the snapshot while writing, "
                f"staleness median {statistics.median(ages):.2f} s, max {max(ages):.2f} s"
            )


if __name__ == "__main__":
    main()

"""Shared fixtures: every store test runs on an in-memory store and on a file store."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

import perspt_store as ps

T = TypeVar("T")


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ps.SessionStore]:
    """A fresh store, in memory and on disk (closed after the test)."""
    if request.param == "memory":
        s = ps.SessionStore.in_memory(sessions_dir=tmp_path / "sessions")
    else:
        s = ps.SessionStore.open(tmp_path / "perspt.db")
    with s:
        yield s


@pytest.fixture
def session(store: ps.SessionStore) -> str:
    """The id of a seeded session, as upstream's test fixture: RUNNING, "test task"."""
    store.create_session(
        ps.SessionRecord(
            session_id="test-session", task="test task", working_dir="/tmp/work", status="RUNNING"
        )
    )
    return "test-session"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A path for a database file under tmp_path."""
    return tmp_path / "perspt.db"


@pytest.fixture
def read_only_store(seeded_db: Path) -> Iterator[ps.SessionStore]:
    """The module's ``seeded_db`` file opened read-only; asserts afterwards that the file and
    its directory are byte-for-byte unchanged."""
    before = seeded_db.read_bytes()
    files_before = sorted(p.name for p in seeded_db.parent.iterdir())
    with ps.SessionStore.open_read_only(seeded_db) as store:
        yield store
    assert seeded_db.read_bytes() == before
    assert sorted(p.name for p in seeded_db.parent.iterdir()) == files_before


def assert_all_refused_read_only(
    store: ps.SessionStore, calls: Mapping[str, Callable[[ps.SessionStore], Any]]
) -> None:
    """Every write call on the read-only store raises ReadOnlyStoreError, nothing else."""
    not_refused = []
    for method, write in calls.items():
        try:
            write(store)
        except ps.ReadOnlyStoreError:
            continue
        except Exception as exc:
            not_refused.append(f"{method} raised {exc!r}")
        else:
            not_refused.append(f"{method} wrote")
    assert not_refused == []


def assert_all_raise_closed(
    store: ps.SessionStore, calls: Mapping[str, Callable[[ps.SessionStore], Any]]
) -> None:
    """Every call on the (closed) store raises StoreClosedError, nothing else."""
    for name, call in calls.items():
        try:
            call(store)
        except ps.StoreClosedError:
            continue
        except BaseException as exc:
            pytest.fail(f"{name} raised {exc!r}, not StoreClosedError")
        pytest.fail(f"{name} did not raise on a closed store")


def spy_statements(store: ps.SessionStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every SQL statement the store runs through its one execution helper (the
    database stays real), whitespace collapsed."""
    seen: list[str] = []
    real = store._execute

    def spy(sql: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(" ".join(sql.split()))
        return real(sql, *args, **kwargs)

    monkeypatch.setattr(store, "_execute", spy)
    return seen


def run_threads(target: Callable[[int], object], n: int) -> None:
    """Run ``target(0..n-1)`` in n threads at once; re-raise the first exception one of them
    raised."""
    errors: list[BaseException] = []

    def run(t: int) -> None:
        try:
            target(t)
        except BaseException as exc:  # re-raised below
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(t,)) for t in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]


def some(value: T | None) -> T:
    """The value, asserting that a lookup found something."""
    assert value is not None
    return value


def add_session(store: ps.SessionStore, session_id: str) -> str:
    """Create a session with placeholder task and directory; returns its id."""
    store.create_session(ps.SessionRecord(session_id=session_id, task="t", working_dir="/w"))
    return session_id


def rows(store: ps.SessionStore, query: str, params: list[Any] | None = None) -> list[Any]:
    """Every row of a query, through the store's own connection."""
    return store.sql(query, params).fetchall()


def scalar(store: ps.SessionStore, query: str, params: list[Any] | None = None) -> Any:
    """The first value of a query's first row."""
    return rows(store, query, params)[0][0]


def count(store: ps.SessionStore, table: str) -> int:
    """How many rows a table holds (``table`` is one of the schema's names)."""
    return int(scalar(store, f"SELECT count(*) FROM {table}"))

"""pytest fixtures for code that uses perspt-store.

Installing perspt-store registers this module as a pytest plugin (the ``pytest11`` entry
point), so the fixtures below are available in any test suite without a ``conftest.py``.
Their names start with ``perspt_`` so they never shadow your own fixtures. Nothing is
imported until a fixture is used, so the plugin costs nothing in suites that ignore it.

Fixtures:

``perspt_store``
    A fresh in-memory :class:`~perspt_store.SessionStore`, closed after the test. Its
    session artifact directories go under ``tmp_path / "sessions"``, never into your real
    data directory.

``perspt_store_path``
    A :class:`pathlib.Path` for a database file that does not exist yet:
    ``tmp_path / "perspt.db"``. Use it to test code that opens the store itself (or a
    read-only reader beside a writer).

``perspt_store_file``
    A :class:`~perspt_store.SessionStore` opened read-write at ``perspt_store_path``
    (the file is created, with its schema), closed after the test.

``perspt_async_store``
    A fresh in-memory :class:`~perspt_store.AsyncSessionStore` (needs the ``async``
    extra), closed after the test. It is a plain fixture, made without awaiting anything, so
    it works in async tests run by pytest-asyncio, AnyIO's pytest plugin (asyncio or trio),
    or any other runner. Its artifact directories go under ``tmp_path / "sessions"``.

``perspt_session_factory``
    A function that creates a session and returns the :class:`~perspt_store.SessionRecord`
    read back from the store (so ``created_at`` is set). Defaults: ids ``session-1``,
    ``session-2``, ... (skipping ids that exist), task ``"task <n>"``, ``working_dir`` a
    directory under ``tmp_path``, status ``RUNNING`` (as the orchestrator starts a run).
    Any :class:`~perspt_store.SessionRecord` field can be overridden by keyword, and
    ``store=`` writes to another store (by default it uses ``perspt_store``).

Example::

    import perspt_store as ps

    def test_energy_is_recorded(perspt_store, perspt_session_factory):
        session = perspt_session_factory(task="add a CLI")
        sid = session.session_id
        perspt_store.record_energy(ps.EnergyRecord(node_id="n1", session_id=sid, v_total=0.5))
        assert [e.v_total for e in perspt_store.get_energy_history(sid, "n1")] == [0.5]

    def test_file_store(perspt_store_file, perspt_session_factory):
        session = perspt_session_factory(store=perspt_store_file, status="COMPLETED")
        assert perspt_store_file.get_session(session.session_id).status == "COMPLETED"
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    from .aio import AsyncSessionStore
    from .rows import SessionRecord
    from .store import SessionStore

__all__ = [
    "SessionFactory",
    "perspt_async_store",
    "perspt_session_factory",
    "perspt_store",
    "perspt_store_file",
    "perspt_store_path",
]


class SessionFactory(Protocol):
    """The type of the ``perspt_session_factory`` fixture."""

    def __call__(
        self, *, store: SessionStore | None = None, **overrides: Any
    ) -> SessionRecord: ...


@pytest.fixture
def perspt_store(tmp_path: Path) -> Iterator[SessionStore]:
    """A fresh in-memory SessionStore, closed after the test."""
    from .store import SessionStore

    with SessionStore.in_memory(sessions_dir=tmp_path / "sessions") as store:
        yield store


@pytest.fixture
def perspt_async_store(tmp_path: Path) -> Iterator[AsyncSessionStore]:
    """A fresh in-memory AsyncSessionStore, closed after the test (see the module)."""
    from .aio import AsyncSessionStore
    from .store import SessionStore

    # Not an async fixture: those need each runner's own decorator. The store is built
    # around a sync one (opening it awaits nothing) and closed the same way.
    store = AsyncSessionStore(SessionStore.in_memory(sessions_dir=tmp_path / "sessions"))
    try:
        yield store
    finally:
        store.sync.close()


@pytest.fixture
def perspt_store_path(tmp_path: Path) -> Path:
    """A path for a database file under ``tmp_path`` (not created)."""
    return tmp_path / "perspt.db"


@pytest.fixture
def perspt_store_file(perspt_store_path: Path) -> Iterator[SessionStore]:
    """A SessionStore opened read-write at ``perspt_store_path``, closed after the test."""
    from .store import SessionStore

    with SessionStore.open(perspt_store_path) as store:
        yield store


@pytest.fixture
def perspt_session_factory(request: pytest.FixtureRequest, tmp_path: Path) -> SessionFactory:
    """Create sessions with sensible defaults; keyword arguments override any field."""
    from .rows import SessionRecord

    counter = itertools.count(1)

    def create(*, store: SessionStore | None = None, **overrides: Any) -> SessionRecord:
        # Resolved lazily so a test that only writes to a file store never builds the
        # in-memory one.
        target: SessionStore = (
            store if store is not None else request.getfixturevalue("perspt_store")
        )
        n = next(counter)
        if "session_id" not in overrides:
            while target.get_session(f"session-{n}") is not None:
                n = next(counter)
        fields: dict[str, Any] = {
            "session_id": f"session-{n}",
            "task": f"task {n}",
            "working_dir": str(tmp_path / "work"),
            "status": "RUNNING",
        }
        fields.update(overrides)
        record = SessionRecord(**fields)
        target.create_session(record)
        stored = target.get_session(record.session_id)
        assert stored is not None
        return stored

    return create

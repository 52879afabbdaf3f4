"""The pytest plugin: fixtures that users get by installing perspt-store."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

import perspt_store as ps
from perspt_store.pytest_plugin import SessionFactory

pytest_plugins = ["pytester"]

# Warnings are errors in these runs, and pytest-asyncio (a test dependency) warns unless its
# fixture loop scope is set.
STRICT = ("-p", "no:cacheprovider", "-W", "error",
          "-o", "asyncio_default_fixture_loop_scope=function")

# A user's test module: no conftest, no imports of the plugin, only the fixtures.
USER_TESTS = '''
import perspt_store as ps

seen = []


def test_memory_store_is_fresh_and_writable(perspt_store):
    assert isinstance(perspt_store, ps.SessionStore)
    assert perspt_store.path is None and not perspt_store.read_only
    assert perspt_store.count_sessions() == 0
    seen.append(perspt_store)


def test_memory_store_was_closed_after_the_previous_test(perspt_store):
    assert seen[0].closed
    assert perspt_store is not seen[0] and not perspt_store.closed


def test_store_path_is_under_tmp_path_and_not_created(perspt_store_path, tmp_path):
    assert perspt_store_path == tmp_path / "perspt.db"
    assert not perspt_store_path.exists()


def test_file_store_is_opened_at_the_path(perspt_store_file, perspt_store_path):
    assert perspt_store_file.path == perspt_store_path and perspt_store_path.exists()
    seen.append(perspt_store_file)


def test_file_store_was_closed_after_the_previous_test():
    assert seen[-1].closed


def test_factory_creates_running_sessions_with_unique_ids(perspt_session_factory, perspt_store):
    first, second = perspt_session_factory(), perspt_session_factory()
    assert first.session_id != second.session_id
    assert first.status == "RUNNING" and first.created_at is not None
    assert perspt_store.count_sessions() == 2


def test_factory_takes_overrides_and_another_store(perspt_session_factory, perspt_store_file):
    record = perspt_session_factory(store=perspt_store_file, task="port it", status="COMPLETED")
    assert perspt_store_file.get_session(record.session_id) == record
    assert record.task == "port it"


def test_plugin_is_registered_under_its_entry_point_name(pytestconfig):
    assert pytestconfig.pluginmanager.has_plugin("perspt_store")
'''


def test_the_package_registers_the_plugin_entry_point() -> None:
    (entry,) = [e for e in importlib.metadata.entry_points(group="pytest11")
                if e.name == "perspt_store"]
    assert entry.value == "perspt_store.pytest_plugin"


def test_fixtures_work_in_a_suite_without_conftest(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    # A fresh interpreter: the plugin can only come from the installed entry point.
    result = pytester.runpytest_subprocess(*STRICT)
    result.assert_outcomes(passed=8)


ASYNC_USER_TESTS = '''
import pytest

import perspt_store as ps

seen = []


async def check(store):
    assert isinstance(store, ps.AsyncSessionStore) and not store.closed
    await store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
    async with store.transaction():
        await store.record_energy(ps.EnergyRecord(node_id="n", session_id="s", v_total=0.5))
    assert [e.v_total for e in await store.get_energy_history("s", "n")] == [0.5]
    seen.append(store)


@pytest.mark.asyncio
async def test_under_pytest_asyncio(perspt_async_store):
    await check(perspt_async_store)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_under_anyio(perspt_async_store, anyio_backend):
    await check(perspt_async_store)


def test_each_store_was_fresh_and_closed_after_its_test():
    assert len(seen) == 3 and len(set(map(id, seen))) == 3
    assert all(store.closed for store in seen)
'''


def test_the_async_fixture_works_under_pytest_asyncio_and_anyio(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_user=ASYNC_USER_TESTS)
    result = pytester.runpytest_subprocess(*STRICT)
    result.assert_outcomes(passed=4)


def test_disabling_the_plugin_removes_the_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user="def test_uses_it(perspt_store):\n    pass\n")
    result = pytester.runpytest(*STRICT, "-p", "no:perspt_store")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'perspt_store' not found*"])


# The plugin is active in this suite too, so its fixtures can be used directly.


def test_factory_skips_ids_that_exist(
    perspt_store: ps.SessionStore, perspt_session_factory: SessionFactory
) -> None:
    perspt_store.create_session(ps.SessionRecord(session_id="session-1", task="t",
                                                 working_dir="/w"))
    record = perspt_session_factory()
    assert record.session_id == "session-2"
    assert perspt_store.count_sessions() == 2


def test_factory_working_dir_is_under_tmp_path(
    perspt_session_factory: SessionFactory, tmp_path: Path
) -> None:
    record = perspt_session_factory()
    assert Path(record.working_dir).is_relative_to(tmp_path)


def test_memory_store_keeps_session_dirs_under_tmp_path(
    perspt_store: ps.SessionStore, perspt_session_factory: SessionFactory, tmp_path: Path
) -> None:
    record = perspt_session_factory()
    made = perspt_store.create_session_dir(record.session_id)
    assert made.is_dir() and made.is_relative_to(tmp_path)


def test_factory_rejects_invalid_fields(perspt_session_factory: SessionFactory) -> None:
    with pytest.raises(ValueError, match="task"):
        perspt_session_factory(task=123)

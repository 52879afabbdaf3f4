"""``get_session_energy_history`` returns a :class:`RowList`: the same models as the eager
list, built from the fetched columns as they are first read (#14 §2)."""

from __future__ import annotations

import copy
import json
import pickle
import threading
from collections.abc import Iterator, MutableSequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import perspt_store as ps
from perspt_store.rowlist import CHUNK_ROWS, RowList

SID = "s-1"
ROWS = 2 * CHUNK_ROWS + 7  # three chunks, the last one partial

PROPERTY = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def energy(i: int, session_id: str = SID) -> ps.EnergyRecord:
    return ps.EnergyRecord(
        node_id=f"node-{i % 7}", session_id=session_id, v_syn=i / 3, v_total=i * 1.5
    )


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[ps.SessionStore]:
    with ps.SessionStore.open(tmp_path / "e.db") as store:
        store.create_session(ps.SessionRecord(session_id=SID, task="t", working_dir="/w"))
        store.record_many([energy(i) for i in range(ROWS)])
        store.create_session(ps.SessionRecord(session_id="other", task="t", working_dir="/w"))
        store.record_energy(energy(1, "other"))  # another session's row, in the same table
        yield store


def eager(store: ps.SessionStore, session_id: str = SID) -> list[ps.EnergyRecord]:
    """The rows as the other readers build them: a list of models made up front."""
    return store._select(ps.EnergyRecord, "session_id = ?", [session_id], order_by="id")


def unbuilt(rows: RowList[ps.EnergyRecord]) -> bool:
    return rows._data is None


def test_the_history_is_the_eager_list_in_order(filled: ps.SessionStore) -> None:
    rows = filled.get_session_energy_history(SID)
    expected = eager(filled)
    assert isinstance(rows, RowList) and isinstance(rows, MutableSequence)
    assert len(expected) == ROWS
    assert rows == expected and expected == rows
    assert [r.id for r in rows] == sorted(r.id for r in expected)
    assert all(type(r) is ps.EnergyRecord for r in rows)


def test_len_and_the_last_rows_build_only_what_they_touch(filled: ps.SessionStore) -> None:
    rows = filled.get_session_energy_history(SID)
    assert len(rows) == ROWS and bool(rows)
    assert unbuilt(rows) and rows._chunks == {}
    expected = eager(filled)
    assert rows[-1] == expected[-1] and rows[-20:] == expected[-20:]
    assert sorted(rows._chunks) == [1, 2]  # the chunks the last 20 rows lie in
    assert rows[0] == expected[0]  # the last chunk: now built, the columns dropped
    assert not unbuilt(rows) and rows._arrow is None and rows._chunks == {}
    assert rows == expected


@pytest.mark.parametrize(
    "index",
    [0, 1, CHUNK_ROWS - 1, CHUNK_ROWS, CHUNK_ROWS + 1, ROWS - 1, -1, -CHUNK_ROWS, -ROWS],
)
def test_indexing_matches_a_list(filled: ps.SessionStore, index: int) -> None:
    assert filled.get_session_energy_history(SID)[index] == eager(filled)[index]


@pytest.mark.parametrize("index", [ROWS, -(ROWS + 1), 10**9])
def test_an_index_out_of_range_raises_index_error(filled: ps.SessionStore, index: int) -> None:
    with pytest.raises(IndexError):
        filled.get_session_energy_history(SID)[index]


@given(
    start=st.none() | st.integers(-ROWS - 10, ROWS + 10),
    stop=st.none() | st.integers(-ROWS - 10, ROWS + 10),
    step=st.none() | st.sampled_from([1, 2, -1, -3, CHUNK_ROWS]),
)
@PROPERTY
def test_slices_match_a_list(
    filled: ps.SessionStore, start: int | None, stop: int | None, step: int | None
) -> None:
    rows = filled.get_session_energy_history(SID)
    part = rows[start:stop:step]
    assert isinstance(part, RowList)
    assert part == eager(filled)[start:stop:step]


def test_iteration_crosses_chunks_and_keeps_identity(filled: ps.SessionStore) -> None:
    rows = filled.get_session_energy_history(SID)
    walked = list(rows)
    assert walked == eager(filled)
    assert all(a is b for a, b in zip(walked, rows, strict=True))  # built once
    assert rows[CHUNK_ROWS] is walked[CHUNK_ROWS]


def test_mutations_act_on_every_model(filled: ps.SessionStore) -> None:
    rows = filled.get_session_energy_history(SID)
    expected = eager(filled)
    extra = energy(10**6)
    rows.append(extra)
    expected.append(extra)
    assert len(rows) == len(expected) and rows == expected
    del rows[:CHUNK_ROWS]
    del expected[:CHUNK_ROWS]
    rows.sort(key=lambda r: -r.v_total)
    expected.sort(key=lambda r: -r.v_total)
    assert rows == expected and rows[-1] == expected[-1]
    assert rows + [extra] == expected + [extra]  # noqa: RUF005 (a list's +)


def test_pickling_and_copies_hold_the_same_models(filled: ps.SessionStore) -> None:
    expected = eager(filled)
    for clone in (
        pickle.loads(pickle.dumps(filled.get_session_energy_history(SID))),
        copy.copy(filled.get_session_energy_history(SID)),
        copy.deepcopy(filled.get_session_energy_history(SID)),
        filled.get_session_energy_history(SID).copy(),
    ):
        assert type(clone) is RowList and clone == expected


def test_a_plain_list_and_json_see_every_row(filled: ps.SessionStore) -> None:
    rows = filled.get_session_energy_history(SID)
    as_json = json.dumps(list(rows), default=lambda m: m.model_dump(mode="json"))
    assert len(json.loads(as_json)) == ROWS
    with pytest.raises(TypeError):  # never silently empty, as an unfilled list subclass is
        json.dumps(rows)


def test_an_unknown_session_gives_an_empty_list(filled: ps.SessionStore) -> None:
    rows = filled.get_session_energy_history("nobody")
    assert rows == [] and len(rows) == 0 and not rows and list(rows) == []


def test_the_rows_outlive_the_store_and_ignore_later_writes(tmp_path: Path) -> None:
    store = ps.SessionStore.open(tmp_path / "e.db")
    store.create_session(ps.SessionRecord(session_id=SID, task="t", working_dir="/w"))
    store.record_many([energy(i) for i in range(ROWS)])
    rows = store.get_session_energy_history(SID)
    expected = eager(store)
    store.record_energy(energy(-1))  # after the read: not in it
    store.close()
    assert rows == expected and len(rows) == ROWS


def test_threads_reading_one_list_get_the_same_models(filled: ps.SessionStore) -> None:
    rows = filled.get_session_energy_history(SID)
    seen: list[list[ps.EnergyRecord]] = [[], [], [], []]
    barrier = threading.Barrier(4)

    def read(k: int) -> None:
        barrier.wait()
        order = range(len(rows)) if k % 2 else range(len(rows) - 1, -1, -1)
        seen[k] = [rows[i] for i in order]

    threads = [threading.Thread(target=read, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    forward = seen[1]
    for k in (0, 2):
        seen[k].reverse()
    for k in range(4):
        assert all(a is b for a, b in zip(seen[k], forward, strict=True))
    assert forward == eager(filled)


def test_a_row_its_model_rejects_fails_the_read(filled: ps.SessionStore) -> None:
    filled.sql("UPDATE energy_history SET v_total = 'NaN'::DOUBLE WHERE id = 5")
    with pytest.raises(ps.StoreError, match="energy_history"):
        filled.get_session_energy_history(SID)


def test_without_pyarrow_the_list_is_built_up_front(
    filled: ps.SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from perspt_store.store import _base

    monkeypatch.setattr(_base, "_HAS_ARROW", False)
    rows = filled.get_session_energy_history(SID)
    assert type(rows) is RowList and not unbuilt(rows)
    assert rows == eager(filled)


TEXT = st.text(min_size=1, max_size=12)
FLOAT = st.floats(allow_nan=False, allow_infinity=False, width=32)  # upstream's REAL


@given(rows=st.lists(st.tuples(TEXT, FLOAT, FLOAT, FLOAT), max_size=40))
@PROPERTY
def test_any_history_round_trips(rows: list[tuple[str, float, float, float]]) -> None:
    records = [
        ps.EnergyRecord(node_id=n, session_id=SID, v_syn=a, v_sheaf=b, v_total=c)
        for n, a, b, c in rows
    ]
    with ps.SessionStore.in_memory() as store:
        store.create_session(ps.SessionRecord(session_id=SID, task="t", working_dir="/w"))
        store.record_many(records)
        got = store.get_session_energy_history(SID)
        assert got == eager(store)
        assert [r.model_dump(exclude={"id", "timestamp"}) for r in got] == [
            r.model_dump() for r in records
        ]
        assert [(r.node_id, r.v_syn, r.v_sheaf, r.v_total) for r in got] == rows


# --- found by probing: each failed before its fix ----------------------------------------


@pytest.mark.parametrize("index", [1.5, "a", None])
def test_an_index_of_another_type_raises_type_error_as_a_list(
    filled: ps.SessionStore, index: object
) -> None:
    with pytest.raises(TypeError, match="list indices must be integers or slices"):
        filled.get_session_energy_history(SID)[index]  # type: ignore[call-overload]


def test_timestamps_outside_pythons_range_read_as_the_eager_reader_gives_them(
    filled: ps.SessionStore,
) -> None:
    filled.record_node_state(ps.NodeStateRecord(session_id=SID, node_id="node-1", state="Ok"))
    for row_id, value in ((1, "infinity"), (2, "-infinity"), (3, "10000-01-01")):
        filled.sql(
            f"UPDATE energy_history SET timestamp = '{value}'::TIMESTAMP WHERE id = {row_id}"
        )
    expected = [(type(r.timestamp), r.timestamp) for r in eager(filled)]
    got = filled.get_session_energy_history(SID)
    assert [(type(r.timestamp), r.timestamp) for r in got] == expected
    detail = filled.load_session_snapshot(SID).node("node-1")
    assert detail is not None
    assert [(type(r.timestamp), r.timestamp) for r in detail.energy_history] == [
        (type(r.timestamp), r.timestamp) for r in filled.get_energy_history(SID, "node-1")
    ]


@pytest.mark.parametrize("built", [False, True])
def test_changes_made_while_iterating_are_seen_as_a_list_sees_them(
    filled: ps.SessionStore, built: bool
) -> None:
    def walk(rows: MutableSequence[ps.EnergyRecord]) -> list[int | None]:
        seen = []
        for k, row in enumerate(rows):
            seen.append(row.id)
            if k == 2:
                del rows[0]  # a list's iterator goes on by position
            if k == 5:
                rows.append(rows[0])
        return seen

    rows = filled.get_session_energy_history(SID)
    if built:
        rows.data  # noqa: B018 (builds every model)
    assert walk(rows) == walk(eager(filled))


def test_a_reader_racing_a_change_gets_a_row_of_one_state(filled: ps.SessionStore) -> None:
    expected = eager(filled)
    for _ in range(5):
        rows = filled.get_session_energy_history(SID)
        marker = energy(10**6)
        changer = threading.Thread(target=rows.insert, args=(0, marker))
        changer.start()
        last, first = rows[-1], rows[0]
        changer.join()
        assert last == expected[-1]  # the last row either way
        assert first in (expected[0], marker)


def test_reading_every_row_drops_the_columns(filled: ps.SessionStore) -> None:
    rows = filled.get_session_energy_history(SID)
    assert rows[5:5] == [] and rows[9:3] == [] and rows._chunks == {}  # nothing to build
    assert sum(1 for _ in rows) == ROWS
    assert rows._arrow is None and rows._chunks == {} and rows._data is not None


class Tagged(RowList[ps.EnergyRecord]):
    pass


def test_copies_and_pickles_keep_a_subclass_and_its_attributes(
    filled: ps.SessionStore,
) -> None:
    rows = Tagged(filled.get_session_energy_history(SID))
    rows.note = "kept"  # type: ignore[attr-defined]
    for clone in (copy.copy(rows), copy.deepcopy(rows), pickle.loads(pickle.dumps(rows))):
        assert type(clone) is Tagged and clone.note == "kept"  # type: ignore[attr-defined]
        assert clone == rows
    plain = filled.get_session_energy_history(SID)
    assert plain[0] is not None  # partly built
    plain.note = "kept"  # type: ignore[attr-defined]
    assert copy.copy(plain).note == "kept"  # type: ignore[attr-defined]
    assert pickle.loads(pickle.dumps(plain)) == eager(filled)

"""Sessions family: ``sessions``, ``node_states``, ``energy_history``, ``task_graph_edges`` and
the per-session artifact directories.

Every store test runs on an in-memory store and on a file store (the ``store`` fixture). A
store costs ~0.1 s to create, so related cases share one test and one store, each case
naming itself in its assertion message. The SPEC defects a test guards against are named in
its docstring (D1, D2, D6, D9, D16, ...).
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import duckdb
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import perspt_store as ps
from conftest import assert_all_raise_closed, rows, scalar

HASH32 = bytes(range(32))
OLD = dt.datetime(2000, 1, 1)
FLOAT32_MAX = 3.4028234663852886e38
ENERGY_FIELDS = ("v_syn", "v_str", "v_log", "v_boot", "v_sheaf", "v_total")
OPTIONAL_NODE_TEXT = (
    "node_class",
    "owner_plugin",
    "goal",
    "parent_id",
    "last_error_type",
    "committed_at",
)

# The store fixture is shared by a test's examples, so each example isolates itself.
PROPERTY = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def new_session(session_id: str, **fields: Any) -> ps.SessionRecord:
    fields.setdefault("task", f"task of {session_id}")
    fields.setdefault("working_dir", "/tmp/work")
    return ps.SessionRecord(session_id=session_id, **fields)


def node(node_id: str, session_id: str = "test-session", **fields: Any) -> ps.NodeStateRecord:
    fields.setdefault("state", "Completed")
    return ps.NodeStateRecord(node_id=node_id, session_id=session_id, **fields)


def full_node(node_id: str = "n1", **overrides: Any) -> ps.NodeStateRecord:
    """A snapshot with every field set (upstream's phase-8 fields included)."""
    fields: dict[str, Any] = {
        "state": "Completed",
        "v_total": 0.42,
        "merkle_hash": HASH32,
        "attempt_count": 3,
        "node_class": "Interface",
        "owner_plugin": "rust",
        "goal": "define the trait",
        "parent_id": "root",
        "children": ["n2", "n3"],
        "last_error_type": "CompileError",
        "committed_at": "2025-01-02T03:04:05Z",
    }
    fields.update(overrides)
    return ps.NodeStateRecord(node_id=node_id, session_id="test-session", **fields)


def energy(node_id: str = "n1", session_id: str = "test-session", **v: float) -> ps.EnergyRecord:
    return ps.EnergyRecord(node_id=node_id, session_id=session_id, **v)


def edge(
    parent: str, child: str, session_id: str = "test-session", **kw: str
) -> ps.TaskGraphEdgeRow:
    return ps.TaskGraphEdgeRow(
        session_id=session_id, parent_node_id=parent, child_node_id=child, **kw
    )


def age_session(store: ps.SessionStore, session_id: str) -> None:
    """Move a session's timestamps into the past, so a refresh shows without sleeping."""
    rows(
        store,
        "UPDATE sessions SET created_at = ?, updated_at = ? WHERE session_id = ?",
        [OLD, OLD, session_id],
    )


def ids(records: list[ps.SessionRecord]) -> list[str]:
    return [r.session_id for r in records]


# --- sessions ------------------------------------------------------------------------------


def test_create_session_round_trips_every_field(store: ps.SessionStore) -> None:
    record = new_session(
        "s'; DROP TABLE sessions; --",
        task='réparer 🦆 "quoted" \\x00 \n',
        working_dir="C:\\work",
        merkle_root=HASH32,
        detected_toolchain="cargo",
        status="RUNNING",
    )
    assert (record.created_at, record.updated_at) == (None, None)
    store.create_session(record)
    assert (record.created_at, record.updated_at) == (None, None)  # not mutated
    got = store.get_session(record.session_id)
    assert got == record
    assert got is not None
    assert (got.session_id, got.task, got.working_dir) == (
        record.session_id,
        'réparer 🦆 "quoted" \\x00 \n',
        "C:\\work",
    )
    assert (got.merkle_root, got.detected_toolchain, got.status) == (HASH32, "cargo", "RUNNING")
    assert isinstance(got.created_at, dt.datetime)
    assert got.created_at.tzinfo is None  # naive UTC, as upstream
    assert got.updated_at == got.created_at
    assert store.count_sessions() == 1


def test_create_session_defaults_to_null_columns_and_active_status(
    store: ps.SessionStore,
) -> None:
    store.create_session(new_session("s1"))
    got = store.get_session("s1")
    assert got is not None
    assert (got.merkle_root, got.detected_toolchain, got.status) == (None, None, "active")
    assert rows(store, "SELECT merkle_root IS NULL, detected_toolchain IS NULL FROM sessions") == [
        (True, True)
    ]


def test_a_null_status_written_by_another_tool_reads_as_empty_text(
    store: ps.SessionStore,
) -> None:
    """D30: status is a nullable VARCHAR typed as str; a NULL there must not break
    get_session or the dashboard's session list (NULL text reads as '')."""
    rows(
        store,
        "INSERT INTO sessions (session_id, task, working_dir, status) "
        "VALUES ('s1', 't', '/w', NULL)",
    )
    store.create_session(new_session("s2", status="RUNNING"))
    got = store.get_session("s1")
    assert got is not None
    assert got.status == ""
    assert [(s.session_id, s.status) for s in store.list_recent_sessions(5)] == [
        ("s2", "RUNNING"),
        ("s1", ""),
    ]


def test_session_none_and_empty_values_round_trip_exactly(store: ps.SessionStore) -> None:
    """D6: None is NULL and reads back None; '' and b'' stay themselves."""
    cases = [(root, tool) for root in (None, b"", HASH32) for tool in (None, "", "cargo")]
    for i, (root, tool) in enumerate(cases):
        store.create_session(new_session(f"s{i}", merkle_root=root, detected_toolchain=tool))
    for i, (root, tool) in enumerate(cases):
        got = store.get_session(f"s{i}")
        assert got is not None
        assert (got.merkle_root, got.detected_toolchain) == (root, tool), (root, tool)
        assert type(got.merkle_root) is type(root), root
        assert type(got.detected_toolchain) is type(tool), tool
        stored = rows(
            store,
            "SELECT merkle_root IS NULL, detected_toolchain IS NULL FROM sessions "
            "WHERE session_id = ?",
            [f"s{i}"],
        )
        assert stored == [(root is None, tool is None)], (root, tool)


def test_create_duplicate_session_raises_and_keeps_the_original(store: ps.SessionStore) -> None:
    store.create_session(new_session("s1", task="first"))
    with pytest.raises(ps.DuplicateRecordError) as info:
        store.create_session(new_session("s1", task="second"))
    assert info.value.table == "sessions"
    assert isinstance(info.value.__cause__, duckdb.Error)
    got = store.get_session("s1")
    assert got is not None
    assert got.task == "first"
    assert store.count_sessions() == 1
    assert store.get_session("nope") is None
    assert store.get_session("S1") is None  # ids are case-sensitive


def test_update_merkle_root_stores_exactly_the_raw_bytes(
    store: ps.SessionStore, session: str
) -> None:
    """D1/D2: the BLOB holds the 32 raw bytes (not 64 hex characters) and every getter
    returns them; bytes that look like escapes or hex text are never decoded."""
    assert store.update_merkle_root(session, HASH32) == 1
    assert (
        scalar(
            store, "SELECT octet_length(merkle_root) FROM sessions WHERE session_id = ?", [session]
        )
        == 32
    )
    assert scalar(store, "SELECT merkle_root FROM sessions") == HASH32
    got = store.get_session(session)
    assert got is not None and got.merkle_root == HASH32
    assert store.list_recent_sessions(1)[0].merkle_root == HASH32
    assert store.list_sessions_paginated(10, 0)[0].merkle_root == HASH32
    for root in [b"\\xab\\x00" * 4, b"abcdef0123456789" * 2, bytes(range(32))]:
        store.update_merkle_root(session, bytearray(root))
        got = store.get_session(session)
        assert got is not None
        assert got.merkle_root == root
        assert type(got.merkle_root) is bytes
        assert scalar(store, "SELECT octet_length(merkle_root) FROM sessions") == len(root)


def test_session_updates_change_one_column_and_refresh_updated_at(
    store: ps.SessionStore, session: str
) -> None:
    age_session(store, session)
    assert store.update_merkle_root(session, HASH32) == 1
    got = store.get_session(session)
    assert got is not None
    assert got.created_at == OLD
    assert got.updated_at is not None and got.updated_at > OLD
    assert (got.task, got.status, got.merkle_root) == ("test task", "RUNNING", HASH32)
    for status in ["COMPLETED", "PARTIAL", "FAILED", "ABORTED", ""]:
        age_session(store, session)
        assert store.update_session_status(session, status) == 1
        got = store.get_session(session)
        assert got is not None
        assert got.status == status
        assert got.created_at == OLD
        assert got.updated_at is not None and got.updated_at > OLD, status
        assert (got.merkle_root, got.detected_toolchain) == (HASH32, None)


def test_update_of_unknown_session_raises_session_not_found_and_changes_nothing(
    store: ps.SessionStore, session: str
) -> None:
    """D23: an update naming no session is an error, not a silent no-op."""
    before = rows(store, "SELECT * FROM sessions")
    with pytest.raises(ps.SessionNotFoundError) as info:
        store.update_merkle_root("nope", HASH32)
    assert info.value.session_id == "nope"
    with pytest.raises(ps.SessionNotFoundError) as info:
        store.update_session_status("nope", "COMPLETED")
    assert info.value.session_id == "nope"
    assert rows(store, "SELECT * FROM sessions") == before
    assert store.get_session("nope") is None
    assert store.count_sessions() == 1


def test_sessions_are_listed_newest_first_even_within_one_transaction(
    store: ps.SessionStore,
) -> None:
    """D9: sessions created in one transaction share created_at; the newest still comes
    first, and updating an older one does not reorder the list."""
    store.create_session(new_session("s1"))
    store.create_session(new_session("s2"))
    assert ids(store.list_recent_sessions(10)) == ["s2", "s1"]
    with store.transaction():
        for sid in ["t1", "t2", "t3"]:
            store.create_session(new_session(sid))
    created = {s.session_id: s.created_at for s in store.list_recent_sessions(10)}
    assert created["t1"] == created["t2"] == created["t3"]  # the tie really happens
    store.update_session_status("t1", "COMPLETED")
    store.update_merkle_root("t2", HASH32)
    store.update_session_status("s1", "FAILED")
    expected = ["t3", "t2", "t1", "s2", "s1"]
    assert ids(store.list_recent_sessions(10)) == expected
    assert ids(store.list_sessions_paginated(10, 0)) == expected
    assert ids(store.list_sessions_paginated(2, 1)) == ["t2", "t1"]


def test_list_sessions_paginates_with_offsets_and_counts(store: ps.SessionStore) -> None:
    assert store.count_sessions() == 0
    names = [f"s{i}" for i in range(7)]
    with store.transaction():
        for sid in names[:4]:
            store.create_session(new_session(sid))
    for sid in names[4:]:
        store.create_session(new_session(sid))
    assert store.count_sessions() == 7
    assert type(store.count_sessions()) is int
    newest_first = names[::-1]
    pages = [store.list_sessions_paginated(3, offset) for offset in (0, 3, 6)]
    assert [ids(page) for page in pages] == [newest_first[0:3], newest_first[3:6], ["s0"]]
    assert store.list_sessions_paginated(3, 7) == []
    assert store.list_sessions_paginated(3, 100) == []
    assert store.list_sessions_paginated(0, 0) == []
    assert store.list_recent_sessions(0) == []
    assert store.list_recent_sessions(3) == pages[0]
    assert store.list_recent_sessions(100) == [new_session(s) for s in newest_first]
    for call in (
        lambda: store.list_sessions_paginated(-1, 0),
        lambda: store.list_sessions_paginated(5, -1),
        lambda: store.list_recent_sessions(-1),
    ):
        with pytest.raises(ValueError):
            call()


@given(limit=st.integers(0, 9), offset=st.integers(0, 9))
@PROPERTY
def test_a_page_is_a_slice_of_the_newest_first_list(
    store: ps.SessionStore, limit: int, offset: int
) -> None:
    if store.count_sessions() == 0:
        with store.transaction():
            for i in range(4):
                store.create_session(new_session(f"s{i}"))
        for i in range(4, 7):
            store.create_session(new_session(f"s{i}"))
    everything = ids(store.list_recent_sessions(100))
    assert everything == [f"s{i}" for i in reversed(range(7))]
    page = store.list_sessions_paginated(limit, offset)
    assert ids(page) == everything[offset : offset + limit]


# --- node_states ---------------------------------------------------------------------------


def test_node_state_phase8_roundtrip(store: ps.SessionStore, session: str) -> None:
    """Upstream test: every phase-8 field and a 32-byte hash come back from the latest-per-node
    getter as one row with every field equal."""
    record = full_node()
    store.record_node_state(record)
    latest = store.get_latest_node_states(session)
    assert latest == [record]
    got = latest[0]
    assert (got.node_id, got.session_id, got.state) == ("n1", session, "Completed")
    assert (got.v_total, got.merkle_hash, got.attempt_count) == (0.42, HASH32, 3)
    assert (got.node_class, got.owner_plugin, got.goal) == ("Interface", "rust", "define the trait")
    assert (got.parent_id, got.children) == ("root", ["n2", "n3"])
    assert (got.last_error_type, got.committed_at) == ("CompileError", "2025-01-02T03:04:05Z")
    assert store.get_node_states(session) == [record]
    assert scalar(store, "SELECT octet_length(merkle_hash) FROM node_states") == 32
    assert scalar(store, "SELECT children FROM node_states") == '["n2","n3"]'


def test_latest_node_states_dedup(store: ps.SessionStore, session: str) -> None:
    """Upstream test: two snapshots of one node -> one row, the second one."""
    store.record_node_state(node("n1", state="Running", attempt_count=1, goal="first goal"))
    second = node("n1", state="Completed", attempt_count=2, goal="second goal")
    store.record_node_state(second)
    latest = store.get_latest_node_states(session)
    assert len(latest) == 1
    assert (latest[0].state, latest[0].attempt_count, latest[0].goal) == (
        "Completed",
        2,
        "second goal",
    )
    assert latest == [second]
    assert len(store.get_node_states(session)) == 2


def test_backward_compat_empty_phase8_fields(store: ps.SessionStore, session: str) -> None:
    """Upstream test: a snapshot with every optional field absent reads back as None, and the
    node has no verification result or artifact bundle."""
    store.record_node_state(ps.NodeStateRecord(node_id="n1", session_id=session, state="Completed"))
    (got,) = store.get_latest_node_states(session)
    for name in ("merkle_hash", "children", *OPTIONAL_NODE_TEXT):
        assert getattr(got, name) is None, name
    assert (got.v_total, got.attempt_count) == (0.0, 0)
    assert store.get_verification_result(session, "n1") is None
    assert store.get_artifact_bundle(session, "n1") is None


def test_latest_node_state_is_the_last_inserted_even_within_one_transaction(
    store: ps.SessionStore, session: str
) -> None:
    """D9: A, B, C for one node in one transaction share created_at; latest is C and the
    history is A, B, C."""
    a, b, c = (node("n1", state=s, attempt_count=i) for i, s in enumerate("ABC", 1))
    with store.transaction():
        for record in (a, b, c):
            store.record_node_state(record)
    history = store.get_node_states(session)
    assert history == [a, b, c]
    assert len({h.created_at for h in history}) == 1  # the tie really happens
    assert store.get_latest_node_states(session) == [c]


def test_latest_node_states_are_ordered_by_when_each_was_recorded(
    store: ps.SessionStore, session: str
) -> None:
    store.create_session(new_session("other"))
    with store.transaction():
        for node_id, state in [("n1", "a"), ("n2", "a"), ("n3", "a"), ("n1", "b"), ("n2", "b")]:
            store.record_node_state(node(node_id, state=state))
    store.record_node_state(node("n0", state="a"))
    theirs = node("n1", session_id="other", state="theirs")
    store.record_node_state(theirs)
    latest = store.get_latest_node_states(session)
    assert [(r.node_id, r.state) for r in latest] == [
        ("n3", "a"),
        ("n1", "b"),
        ("n2", "b"),
        ("n0", "a"),
    ]
    latest_ids = [r.id for r in latest]
    assert None not in latest_ids
    assert latest_ids == sorted(latest_ids)  # type: ignore[type-var]
    assert len(store.get_node_states(session)) == 6
    assert store.get_node_states("other") == [theirs]
    assert store.get_latest_node_states("other") == [theirs]
    assert store.get_node_states("nope") == []
    assert store.get_latest_node_states("nope") == []


def test_node_state_optional_fields_keep_none_and_empty_apart(
    store: ps.SessionStore, session: str
) -> None:
    """D6: each optional text column keeps None (NULL) and '' apart, children keeps None
    (NULL) and [] ('[]') apart, merkle_hash keeps None and b'' apart."""
    cases: list[tuple[str, Any, Any]] = [
        (column, value, value) for column in OPTIONAL_NODE_TEXT for value in (None, "")
    ]
    cases += [
        ("children", None, None),
        ("children", [], "[]"),
        ("children", ["n2", "ñ", 'a"b', ""], '["n2","ñ","a\\"b",""]'),
        ("merkle_hash", None, None),
        ("merkle_hash", b"", b""),
        ("merkle_hash", b"deadbeef", b"deadbeef"),  # hex-looking bytes are not decoded
    ]
    for i, (column, value, _) in enumerate(cases):
        store.record_node_state(full_node(f"n{i}", **{column: value}))
    history = store.get_node_states(session)
    for i, (column, value, stored) in enumerate(cases):
        got = history[i]
        assert got.node_id == f"n{i}"
        assert getattr(got, column) == value, (column, value)
        assert type(getattr(got, column)) is type(value), (column, value)
        assert got == full_node(f"n{i}", **{column: value})
        raw = scalar(store, f"SELECT {column} FROM node_states WHERE node_id = ?", [f"n{i}"])
        assert raw == stored, (column, value)
    # committed_at is text, kept verbatim (never parsed into a TIMESTAMP).
    texts = ["2025-01-02T03:04:05Z", "not a timestamp", "2025-01-02 03:04:05+02:00"]
    for text in texts:
        store.record_node_state(full_node("c", committed_at=text))
    assert [r.committed_at for r in store.get_node_states(session)[-3:]] == texts
    assert scalar(store, "SELECT DISTINCT typeof(committed_at) FROM node_states") == "VARCHAR"


def test_record_node_state_for_unknown_session_raises_and_writes_nothing(
    store: ps.SessionStore, session: str
) -> None:
    with pytest.raises(ps.SessionNotFoundError) as info:
        store.record_node_state(node("n1", session_id="nope"))
    assert info.value.session_id == "nope"
    assert scalar(store, "SELECT count(*) FROM node_states") == 0
    assert store.get_node_states("nope") == []
    assert store.get_session("nope") is None
    # Inside a transaction the failure takes the earlier, valid write with it.
    with pytest.raises(ps.SessionNotFoundError), store.transaction():
        store.record_node_state(node("n1"))
        store.record_node_state(node("n1", session_id="nope"))
    assert store.get_node_states(session) == []
    store.record_node_state(node("n1"))  # the store is still usable
    assert len(store.get_node_states(session)) == 1


@pytest.mark.parametrize(
    "fields",
    [
        {"v_total": 1e39},
        {"v_total": -1e39},
        {"v_total": math.nan},
        {"v_total": math.inf},
        {"attempt_count": 2**31},
        {"attempt_count": -(2**31) - 1},
        {"attempt_count": "3"},
        {"children": "[]"},
        {"merkle_hash": "00" * 32},
    ],
    ids=[
        "huge",
        "-huge",
        "nan",
        "inf",
        "int-overflow",
        "int-underflow",
        "str-int",
        "str-list",
        "str-hash",
    ],
)
def test_node_state_rejects_values_its_columns_cannot_hold(fields: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        node("n1", **fields)


def test_node_state_extreme_valid_values_round_trip(store: ps.SessionStore, session: str) -> None:
    records = [
        full_node(v_total=FLOAT32_MAX, attempt_count=2**31 - 1),
        full_node(v_total=-FLOAT32_MAX, attempt_count=-(2**31)),
        full_node(v_total=5e-324, attempt_count=0),
        full_node(v_total=-0.0, goal="x" * 100_000),
    ]
    for record in records:
        store.record_node_state(record)
    assert store.get_node_states(session) == records
    assert math.copysign(1.0, store.get_node_states(session)[-1].v_total) == -1.0


optional_text = st.none() | st.text(max_size=20)


@given(
    state=st.text(max_size=20).filter(lambda s: s != "__removed__"),
    v_total=st.floats(-FLOAT32_MAX, FLOAT32_MAX, allow_nan=False),
    merkle_hash=st.none() | st.binary(max_size=40),
    attempt_count=st.integers(-(2**31), 2**31 - 1),
    texts=st.tuples(*[optional_text] * len(OPTIONAL_NODE_TEXT)),
    children=st.none() | st.lists(st.text(max_size=8), max_size=4),
)
@PROPERTY
def test_any_node_state_round_trips_exactly(
    store: ps.SessionStore,
    session: str,
    state: str,
    v_total: float,
    merkle_hash: bytes | None,
    attempt_count: int,
    texts: tuple[str | None, ...],
    children: list[str] | None,
) -> None:
    record = node(
        "n1",
        state=state,
        v_total=v_total,
        merkle_hash=merkle_hash,
        attempt_count=attempt_count,
        children=children,
        **dict(zip(OPTIONAL_NODE_TEXT, texts, strict=True)),
    )
    store.record_node_state(record)
    assert store.get_node_states(session)[-1] == record
    assert store.get_latest_node_states(session) == [record]


# --- energy_history ------------------------------------------------------------------------


def test_energy_round_trips_every_component_exactly(store: ps.SessionStore, session: str) -> None:
    """Energies are DOUBLE here: 0.42 reads back as 0.42, not float32's 0.41999998688697815."""
    record = energy(v_syn=0.42, v_str=0.1, v_log=1 / 3, v_boot=-2.5, v_sheaf=5e-324, v_total=1e38)
    store.record_energy(record)
    store.record_energy(energy("n2"))
    got = store.get_energy_history(session, "n1")
    assert got == [record]
    assert [getattr(got[0], f) for f in ENERGY_FIELDS] == [0.42, 0.1, 1 / 3, -2.5, 5e-324, 1e38]
    defaults = store.get_energy_history(session, "n2")[0]
    assert [getattr(defaults, f) for f in ENERGY_FIELDS] == [0.0] * 6
    assert store.get_session_energy_history(session) == [record, energy("n2")]


def test_energy_history_is_in_insertion_order_and_filtered_by_node(
    store: ps.SessionStore, session: str
) -> None:
    store.create_session(new_session("other"))
    with store.transaction():
        store.record_energy(energy("n1", v_total=3.0))
        store.record_energy(energy("n2", v_total=2.0))
        store.record_energy(energy("n1", v_total=1.0))
    store.record_energy(energy("n1", session_id="other", v_total=9.0))
    store.record_energy(energy("n1", v_total=0.5))
    history = store.get_energy_history(session, "n1")
    assert [e.v_total for e in history] == [3.0, 1.0, 0.5]
    assert history[0].timestamp == history[1].timestamp  # one transaction: a tie on time
    assert [e.v_total for e in store.get_energy_history(session, "n2")] == [2.0]
    assert [e.v_total for e in store.get_energy_history("other", "n1")] == [9.0]
    assert store.get_energy_history(session, "n9") == []
    whole = store.get_session_energy_history(session)
    assert [(e.node_id, e.v_total) for e in whole] == [
        ("n1", 3.0),
        ("n2", 2.0),
        ("n1", 1.0),
        ("n1", 0.5),
    ]
    assert store.get_session_energy_history("nope") == []


@pytest.mark.parametrize("value", [1e39, -1e39, 3.5e38, math.nan, math.inf, -math.inf], ids=str)
def test_energy_rejects_non_finite_and_out_of_float32_range(value: float) -> None:
    for component in ENERGY_FIELDS:
        with pytest.raises(pydantic.ValidationError):
            energy(**{component: value})
    with pytest.raises(pydantic.ValidationError):
        ps.EnergyRecord(node_id="n1", session_id="s", v_total="0.42")  # type: ignore[arg-type]


@given(
    values=st.lists(
        st.floats(-FLOAT32_MAX, FLOAT32_MAX, allow_nan=False, allow_infinity=False),
        min_size=6,
        max_size=6,
    )
)
@PROPERTY
def test_any_finite_float32_range_energy_reads_back_identically(
    store: ps.SessionStore, session: str, values: list[float]
) -> None:
    record = energy(**dict(zip(ENERGY_FIELDS, values, strict=True)))
    store.record_energy(record)
    got = store.get_energy_history(session, "n1")[-1]
    assert [getattr(got, f) for f in ENERGY_FIELDS] == values
    assert got == record


# --- task_graph_edges ----------------------------------------------------------------------


def test_task_graph_edge_roundtrip(store: ps.SessionStore, session: str) -> None:
    """Upstream test: one depends_on edge comes back with the same parent, child and type;
    the type defaults to 'dependency'."""
    record = edge("n1", "n2", edge_type="depends_on")
    store.record_task_graph_edge(record)
    store.record_task_graph_edge(edge("n2", "n3"))
    got = store.get_task_graph_edges(session)
    assert got == [record, edge("n2", "n3", edge_type="dependency")]
    assert (got[0].parent_node_id, got[0].child_node_id, got[0].edge_type) == (
        "n1",
        "n2",
        "depends_on",
    )
    assert got[1].edge_type == "dependency"


def test_task_graph_edges_allow_duplicates_in_insertion_order(
    store: ps.SessionStore, session: str
) -> None:
    store.create_session(new_session("other"))
    edges = [
        edge("n2", "n3", edge_type="split_sequence"),
        edge("n1", "n2", edge_type="depends_on"),
        edge("n2", "n3", edge_type="split_sequence"),
        edge("n1", "n2", session_id="other"),
    ]
    with store.transaction():
        for e in edges:
            store.record_task_graph_edge(e)
    got = store.get_task_graph_edges(session)
    assert got == edges[:3]
    assert got[0].id is not None and got[2].id is not None and got[0].id < got[2].id
    assert store.get_task_graph_edges("other") == edges[3:]
    assert store.get_task_graph_edges("nope") == []


def test_record_task_graph_edge_once_is_idempotent(store: ps.SessionStore, session: str) -> None:
    store.create_session(new_session("other"))
    e = edge("n1", "n2", edge_type="depends_on")
    assert store.record_task_graph_edge_once(e) is True
    assert store.record_task_graph_edge_once(e) is False
    assert store.record_task_graph_edge_once(edge("n1", "n2", edge_type="interface_boundary"))
    assert store.record_task_graph_edge_once(edge("n2", "n1", edge_type="depends_on"))
    assert store.record_task_graph_edge_once(edge("n1", "n2", "other", edge_type="depends_on"))
    got = store.get_task_graph_edges(session)
    assert [(x.parent_node_id, x.child_node_id, x.edge_type) for x in got] == [
        ("n1", "n2", "depends_on"),
        ("n1", "n2", "interface_boundary"),
        ("n2", "n1", "depends_on"),
    ]
    store.record_task_graph_edge(edge("n3", "n4"))
    assert store.record_task_graph_edge_once(edge("n3", "n4")) is False
    assert len(store.get_task_graph_edges(session)) == 4


def test_energy_and_edge_writes_for_an_unknown_session_raise_and_write_nothing(
    store: ps.SessionStore, session: str
) -> None:
    writes = [
        (store.record_energy, energy(session_id="nope"), "energy_history"),
        (store.record_task_graph_edge, edge("n1", "n2", "nope"), "task_graph_edges"),
        (store.record_task_graph_edge_once, edge("n1", "n2", "nope"), "task_graph_edges"),
    ]
    for write, record, table in writes:
        with pytest.raises(ps.SessionNotFoundError) as info:
            write(record)
        assert (info.value.session_id, info.value.table) == ("nope", table)
        assert scalar(store, f"SELECT count(*) FROM {table}") == 0, table


# --- session artifact directories ----------------------------------------------------------

UNSAFE_IDS = ["../x", "a/b", "..", "", ".", "a\\b", "/abs", "x\x00y", " x", "x ", "c:", "../../e"]


def test_session_dirs_stay_under_the_stores_sessions_dir(
    store: ps.SessionStore, tmp_path: Path
) -> None:
    """D16: the artifact root sits beside the database file (or where an in-memory store was
    told), under tmp_path here, never in the user's real data dir."""
    if store.path is not None:
        assert store.sessions_dir == store.path.parent / "sessions"
    assert store.sessions_dir.resolve().is_relative_to(tmp_path.resolve())
    path = store.get_session_dir("s1")
    assert path == store.sessions_dir / "s1"
    assert not path.exists()  # get_ computes, creates nothing
    assert store.create_session_dir("s1") == path
    assert path.is_dir()
    assert path.resolve().is_relative_to(tmp_path.resolve())
    (path / "artifact.txt").write_text("kept")
    assert store.create_session_dir("s1") == path  # idempotent, keeps contents
    assert (path / "artifact.txt").read_text() == "kept"
    for session_id in ["sess-2025_01.a", "ünïcode", "...x", "a..b"]:
        created = store.create_session_dir(session_id)
        assert (created.parent, created.name) == (store.sessions_dir, session_id)


def test_unsafe_session_ids_are_rejected_as_directory_names(
    store: ps.SessionStore, tmp_path: Path
) -> None:
    """D16: '../x', 'a/b', '..', '' and friends raise ValueError and create nothing."""
    before = sorted(tmp_path.rglob("*"))
    for session_id in UNSAFE_IDS:
        with pytest.raises(ValueError):
            store.get_session_dir(session_id)
        with pytest.raises(ValueError):
            store.create_session_dir(session_id)
    assert sorted(tmp_path.rglob("*")) == before
    assert not (tmp_path.parent / "x").exists()


# --- model identity: db-filled columns and equality ----------------------------------------


def test_db_filled_columns_are_set_on_read_and_equality_ignores_them(
    store: ps.SessionStore, session: str
) -> None:
    cases: list[tuple[ps.Row, Any, Any, tuple[str, ...]]] = [
        (new_session("s2"), store.create_session, lambda: store.get_session("s2"),
         ("created_at", "updated_at")),
        (full_node(), store.record_node_state, lambda: store.get_node_states(session)[0],
         ("id", "created_at")),
        (energy(), store.record_energy, lambda: store.get_session_energy_history(session)[0],
         ("id", "timestamp")),
        (edge("a", "b"), store.record_task_graph_edge,
         lambda: store.get_task_graph_edges(session)[0], ("id", "created_at")),
    ]  # fmt: skip
    for record, write, read, db_columns in cases:
        name = type(record).__name__
        assert all(getattr(record, c) is None for c in db_columns), name
        write(record)
        got = read()
        assert got == record, name  # equality ignores the db-filled columns
        assert got.to_dict() == record.to_dict(), name
        assert type(got).from_dict(got.to_dict()) == record, name
        for column in db_columns:
            expected_type = int if column == "id" else dt.datetime
            assert isinstance(getattr(got, column), expected_type), (name, column)
        with pytest.raises((AttributeError, pydantic.ValidationError)):  # read-only
            setattr(got, db_columns[0], None)
        assert getattr(got, db_columns[0]) is not None
    # Two reads of equal rows differ in id, yet compare equal; other types never do.
    store.record_node_state(full_node())
    first, second = store.get_node_states(session)
    assert first.id != second.id
    assert first == second == full_node()
    assert first != full_node(goal="other")
    assert first != ps.EnergyRecord(node_id="n1", session_id=session)


# --- errors: nothing raw escapes -----------------------------------------------------------

CALLS_AFTER_CLOSE: dict[str, Any] = {
    "create_session": lambda s: s.create_session(new_session("s9")),
    "get_session": lambda s: s.get_session("s1"),
    "update_merkle_root": lambda s: s.update_merkle_root("s1", HASH32),
    "update_session_status": lambda s: s.update_session_status("s1", "DONE"),
    "list_sessions_paginated": lambda s: s.list_sessions_paginated(1, 0),
    "list_recent_sessions": lambda s: s.list_recent_sessions(1),
    "count_sessions": lambda s: s.count_sessions(),
    "record_node_state": lambda s: s.record_node_state(node("n1", session_id="s1")),
    "get_node_states": lambda s: s.get_node_states("s1"),
    "get_latest_node_states": lambda s: s.get_latest_node_states("s1"),
    "record_energy": lambda s: s.record_energy(energy(session_id="s1")),
    "get_energy_history": lambda s: s.get_energy_history("s1", "n1"),
    "get_session_energy_history": lambda s: s.get_session_energy_history("s1"),
    "record_task_graph_edge": lambda s: s.record_task_graph_edge(edge("a", "b", "s1")),
    "record_task_graph_edge_once": lambda s: s.record_task_graph_edge_once(edge("a", "b", "s1")),
    "get_task_graph_edges": lambda s: s.get_task_graph_edges("s1"),
    "transaction": lambda s: s.transaction().__enter__(),
    "sql": lambda s: s.sql("SELECT 1"),
}


def test_every_method_raises_store_closed_error_after_close(store: ps.SessionStore) -> None:
    store.create_session(new_session("s1"))
    store.close()
    assert store.closed
    assert_all_raise_closed(store, CALLS_AFTER_CLOSE)
    store.close()  # idempotent


def test_every_public_error_class_is_a_store_error() -> None:
    errors = [
        obj
        # Names imported on first use may need an extra (anyio, deltalake); none is an error.
        for obj in (getattr(ps, name) for name in ps.__all__ if name not in ps._LAZY)
        if isinstance(obj, type) and issubclass(obj, BaseException)
    ]
    assert ps.SessionNotFoundError in errors
    for error in errors:
        assert issubclass(error, ps.StoreError), error
        assert not issubclass(error, duckdb.Error), error


def test_engine_failures_surface_as_store_errors_with_the_engine_cause(
    store: ps.SessionStore, session: str
) -> None:
    """A broken table and bad SQL raise StoreError (chained to DuckDB's error); a NULL in a
    typed column is reported rather than read as a made-up default (D8)."""
    store.record_node_state(node("n1", attempt_count=4))
    rows(store, "UPDATE node_states SET attempt_count = NULL")
    with pytest.raises(ps.StoreError) as corrupt:
        store.get_node_states(session)
    assert corrupt.value.table == "node_states"
    rows(store, "DROP TABLE energy_history")
    with pytest.raises(ps.StoreError) as info:
        store.get_session_energy_history(session)
    assert isinstance(info.value.__cause__, duckdb.Error)
    assert not isinstance(info.value, duckdb.Error)
    with pytest.raises(ps.StoreError) as write:
        store.record_energy(energy())
    assert isinstance(write.value.__cause__, duckdb.Error)
    with pytest.raises(ps.StoreError) as bad_sql:
        store.sql("SELEC 1")
    assert isinstance(bad_sql.value.__cause__, duckdb.Error)

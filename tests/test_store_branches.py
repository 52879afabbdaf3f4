"""Branches family: ``provisional_branches``, ``branch_lineage``, ``interface_seals``,
``branch_flushes``.

Every test runs on an in-memory and a file store (the ``store`` fixture). Besides exact
round-trips (raw 32-byte hashes, D1-D3; None vs ``""``, D6) these pin the live-set and flush
semantics: a flush is one atomic statement scoped to its session (D11), and every list is in
insertion order (D9/D10).
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import perspt_store as ps
from conftest import add_session, assert_all_refused_read_only, count, some

SID = "test-session"
HASH32 = bytes(range(32))
PROPERTY = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
STATES = ("active", "sealed", "merged", "flushed")


def branch(
    branch_id: str = "b1", parent: str = "p1", session_id: str = SID, **fields: Any
) -> ps.ProvisionalBranchRow:
    fields.setdefault("node_id", f"node-of-{branch_id}")
    return ps.ProvisionalBranchRow(
        branch_id=branch_id, session_id=session_id, parent_node_id=parent, **fields
    )


def lineage(parent: str = "p1", child: str = "c1", **fields: Any) -> ps.BranchLineageRow:
    fields.setdefault("lineage_id", f"lin_{child}_{parent}")
    return ps.BranchLineageRow(parent_branch_id=parent, child_branch_id=child, **fields)


def seal(node_id: str = "n1", session_id: str = SID, **fields: Any) -> ps.InterfaceSealRow:
    fields.setdefault("seal_id", "seal-1")
    fields.setdefault("sealed_path", "src/api.rs")
    fields.setdefault("artifact_kind", "interface")
    fields.setdefault("seal_hash", HASH32)
    return ps.InterfaceSealRow(session_id=session_id, node_id=node_id, **fields)


def flush(session_id: str = SID, **fields: Any) -> ps.BranchFlushRow:
    fields.setdefault("flush_id", "flush-1")
    fields.setdefault("parent_node_id", "p1")
    fields.setdefault("reason", "parent failed verification")
    return ps.BranchFlushRow(session_id=session_id, **fields)


def states(store: ps.SessionStore, session_id: str) -> dict[str, str]:
    return {b.branch_id: b.state for b in store.get_provisional_branches(session_id)}


# --- provisional_branches -------------------------------------------------------------------


def test_provisional_branch_round_trips_every_field(store: ps.SessionStore, session: str) -> None:
    row = branch(
        "branch_n1_0f3c",
        parent="root",
        node_id="nœud-1",
        state="sealed",
        parent_seal_hash=HASH32,
        sandbox_dir="/tmp/sandbox/ü",
    )
    store.record_provisional_branch(row)

    (got,) = store.get_provisional_branches(session)
    stored = store.sql("SELECT octet_length(parent_seal_hash) FROM provisional_branches")

    assert got == row
    assert got.parent_seal_hash == HASH32
    assert stored.fetchall() == [(32,)]  # raw bytes, not 64 hex characters (D1)
    assert isinstance(got.id, int)
    assert isinstance(got.created_at, dt.datetime)
    assert isinstance(got.updated_at, dt.datetime)


def test_parent_seal_hash_and_sandbox_dir_round_trip_exactly(
    store: ps.SessionStore, session: str
) -> None:
    # Rows the port writes are never legacy-decoded: hex-looking bytes and "" stay as written.
    hashes = [None, HASH32, b"\x00" * 32, b"ab" * 16, b"", b"\xff"]
    dirs = [None, "", "/sb"]
    pairs = list(itertools.product(hashes, dirs))
    rows = [branch(f"b{i}", parent_seal_hash=h, sandbox_dir=d) for i, (h, d) in enumerate(pairs)]
    with store.transaction():
        for row in rows:
            store.record_provisional_branch(row)

    got = store.get_provisional_branches(session)

    assert [(b.parent_seal_hash, b.sandbox_dir) for b in got] == pairs
    assert [type(b.sandbox_dir) for b in got] == [type(d) for _, d in pairs]
    assert got == rows
    # state was left to its default
    assert {b.state for b in got} == {"active"}
    assert store.sql("SELECT DISTINCT state FROM provisional_branches").fetchall() == [("active",)]


def test_get_provisional_branches_lists_the_session_in_insertion_order(
    store: ps.SessionStore, session: str
) -> None:
    other = add_session(store, "other-session")
    store.record_provisional_branch(branch("b3"))
    store.record_provisional_branch(branch("x", session_id=other))
    with store.transaction():
        store.record_provisional_branch(branch("b1", parent="p2"))
        store.record_provisional_branch(branch("b2", state="merged"))

    assert [b.branch_id for b in store.get_provisional_branches(session)] == ["b3", "b1", "b2"]
    assert [b.branch_id for b in store.get_provisional_branches(other)] == ["x"]
    assert store.get_provisional_branches("no-such-session") == []


def test_update_branch_state_returns_rows_changed_and_refreshes_updated_at(
    store: ps.SessionStore, session: str
) -> None:
    store.record_provisional_branch(branch("b1"))
    store.record_provisional_branch(branch("b2"))
    (before, untouched) = store.get_provisional_branches(session)
    time.sleep(0.01)

    changed = store.update_branch_state("b1", "sealed")

    after, still = store.get_provisional_branches(session)
    assert changed == 1
    assert after.state == "sealed"
    assert some(after.updated_at) > some(before.updated_at)
    assert after.created_at == before.created_at
    assert still == untouched
    assert still.updated_at == untouched.updated_at
    assert store.update_branch_state("no-such-branch", "merged") == 0
    assert store.update_branch_state("b1", "merged", session_id="no-such-session") == 0
    assert states(store, session) == {"b1": "sealed", "b2": "active"}


def test_update_branch_state_scoped_to_a_session_leaves_other_sessions_untouched(
    store: ps.SessionStore, session: str
) -> None:
    # D11: branch_id is not unique across sessions.
    other = add_session(store, "other-session")
    store.record_provisional_branch(branch("shared"))
    store.record_provisional_branch(branch("shared", session_id=other))
    (theirs_before,) = store.get_provisional_branches(other)

    assert store.update_branch_state("shared", "merged", session_id=session) == 1

    assert states(store, session) == {"shared": "merged"}
    assert store.get_provisional_branches(other) == [theirs_before]
    assert store.get_provisional_branches(other)[0].updated_at == theirs_before.updated_at

    # Unscoped, as upstream: every session's row with that id changes.
    assert store.update_branch_state("shared", "flushed") == 2
    assert states(store, session) == {"shared": "flushed"}
    assert states(store, other) == {"shared": "flushed"}


def test_get_live_branches_for_parent_returns_active_and_sealed_in_insertion_order(
    store: ps.SessionStore, session: str
) -> None:
    other = add_session(store, "other-session")
    store.record_provisional_branch(branch("b5", state="active"))
    store.record_provisional_branch(branch("b4", state="merged"))
    store.record_provisional_branch(branch("b3", state="sealed"))
    store.record_provisional_branch(branch("b2", state="flushed"))
    store.record_provisional_branch(branch("x1", parent="p2"))
    store.record_provisional_branch(branch("x2", session_id=other))
    store.record_provisional_branch(branch("b1", state="active"))

    live = store.get_live_branches_for_parent(session, "p1")

    assert [(b.branch_id, b.state) for b in live] == [
        ("b5", "active"),
        ("b3", "sealed"),
        ("b1", "active"),
    ]
    assert live[0] == branch("b5")
    assert store.get_live_branches_for_parent(session, "nobody") == []
    assert [b.branch_id for b in store.get_live_branches_for_parent(other, "p1")] == ["x2"]


def test_flush_branches_for_parent_flushes_exactly_the_live_set(
    store: ps.SessionStore, session: str
) -> None:
    other = add_session(store, "other-session")
    for branch_id, state in [
        ("b9", "active"),
        ("b2", "merged"),
        ("b5", "sealed"),
        ("b3", "flushed"),
        ("b1", "active"),
    ]:
        store.record_provisional_branch(branch(branch_id, state=state))
    store.record_provisional_branch(branch("q1", parent="p2"))
    store.record_provisional_branch(branch("b9", session_id=other))
    store.record_provisional_branch(branch("b5", session_id=other, state="sealed"))
    theirs = store.get_provisional_branches(other)

    flushed = store.flush_branches_for_parent(session, "p1")

    assert flushed == ["b9", "b5", "b1"]  # insertion order, not alphabetical
    assert states(store, session) == {
        "b9": "flushed",
        "b2": "merged",
        "b5": "flushed",
        "b3": "flushed",
        "b1": "flushed",
        "q1": "active",
    }
    assert store.get_live_branches_for_parent(session, "p1") == []
    assert store.get_provisional_branches(other) == theirs  # same ids, other session: untouched
    # Callers record the flush decision themselves.
    assert store.get_branch_flushes(session) == []
    assert count(store, "branch_flushes") == 0
    # Nothing live is left, so a second flush changes nothing.
    assert store.flush_branches_for_parent(session, "p1") == []
    assert store.flush_branches_for_parent(session, "nobody") == []
    assert store.flush_branches_for_parent("no-such-session", "p1") == []


def test_flush_branches_for_parent_is_rolled_back_with_its_transaction(
    store: ps.SessionStore, session: str
) -> None:
    store.record_provisional_branch(branch("b1"))
    store.record_provisional_branch(branch("b2", state="sealed"))
    before = store.get_provisional_branches(session)

    with pytest.raises(RuntimeError, match="abort"), store.transaction():
        assert store.flush_branches_for_parent(session, "p1") == ["b1", "b2"]
        store.record_branch_flush(flush(flushed_branch_ids=["b1", "b2"]))
        raise RuntimeError("abort")

    after = store.get_provisional_branches(session)
    assert after == before
    assert [b.updated_at for b in after] == [b.updated_at for b in before]
    assert store.get_branch_flushes(session) == []
    assert store.flush_branches_for_parent(session, "p1") == ["b1", "b2"]


_session_ids = itertools.count()


@PROPERTY
@given(st.lists(st.tuples(st.sampled_from(["p1", "p2"]), st.sampled_from(STATES)), max_size=8))
def test_flush_returns_and_flushes_exactly_the_live_branches_of_the_parent(
    store: ps.SessionStore, spec: list[tuple[str, str]]
) -> None:
    session_id = add_session(store, f"prop-{next(_session_ids)}")
    rows = [
        branch(f"b{i}", parent=p, session_id=session_id, state=s) for i, (p, s) in enumerate(spec)
    ]
    with store.transaction():
        for row in rows:
            store.record_provisional_branch(row)
    live = [r.branch_id for r in rows if r.parent_node_id == "p1" and r.state in STATES[:2]]

    assert [b.branch_id for b in store.get_live_branches_for_parent(session_id, "p1")] == live
    assert store.flush_branches_for_parent(session_id, "p1") == live
    expected = {r.branch_id: "flushed" if r.branch_id in live else r.state for r in rows}
    assert states(store, session_id) == expected


# --- branch_lineage -------------------------------------------------------------------------


def test_branch_lineage_round_trips(store: ps.SessionStore, session: str) -> None:
    default = lineage("p1", "c1", session_id=session)
    explicit = lineage("p1", "c2", depends_on_seal=False, session_id=session)
    store.record_branch_lineage(default)
    store.record_branch_lineage(explicit)

    got = store.get_branch_lineage(session)

    assert got == [default, explicit]
    assert [row.depends_on_seal for row in got] == [True, False]
    assert all(isinstance(row.id, int) and row.created_at is not None for row in got)


def test_get_child_branches_is_in_insertion_order_and_optionally_scoped(
    store: ps.SessionStore, session: str
) -> None:
    other = add_session(store, "other-session")
    store.record_branch_lineage(lineage("p1", "c3", session_id=session))
    store.record_branch_lineage(lineage("p1", "d1", session_id=other))
    store.record_branch_lineage(lineage("p2", "c9", session_id=session))
    with store.transaction():
        store.record_branch_lineage(lineage("p1", "c1", session_id=session))
        store.record_branch_lineage(lineage("p1", "c2"))

    assert store.get_child_branches("p1") == ["c3", "d1", "c1", "c2"]
    assert store.get_child_branches("p1", session_id=session) == ["c3", "c1"]
    assert store.get_child_branches("p1", session_id=other) == ["d1"]
    assert store.get_child_branches("p2") == ["c9"]
    assert store.get_child_branches("nobody") == []
    # A link without a session (as upstream wrote them) is only found unscoped.
    assert store.sql(
        "SELECT session_id FROM branch_lineage WHERE child_branch_id = 'c2'"
    ).fetchall() == [(None,)]
    # D28: lineage is retrievable per session.
    assert [r.child_branch_id for r in store.get_branch_lineage(session)] == ["c3", "c9", "c1"]
    assert [r.child_branch_id for r in store.get_branch_lineage(other)] == ["d1"]


# --- interface_seals ------------------------------------------------------------------------


def test_interface_seal_hash_round_trips_exactly(store: ps.SessionStore, session: str) -> None:
    # D3: upstream always read the seal hash back empty.
    row = seal(seal_hash=HASH32, version=3)
    store.record_interface_seal(row)

    (got,) = store.get_interface_seals(session, "n1")
    stored = store.sql("SELECT octet_length(seal_hash), version FROM interface_seals").fetchall()

    assert got == row
    assert got.seal_hash == HASH32
    assert len(got.seal_hash) == 32
    assert got.version == 3
    assert stored == [(32, 3)]
    assert isinstance(got.id, int)
    assert got.created_at is not None


@PROPERTY
@given(seal_hash=st.binary(max_size=64), path=st.text(max_size=40))
def test_any_seal_hash_and_path_round_trip(
    store: ps.SessionStore, session: str, seal_hash: bytes, path: str
) -> None:
    row = seal("prop", seal_hash=seal_hash, sealed_path=path)
    store.record_interface_seal(row)

    assert store.get_interface_seals(session, "prop")[-1] == row


def test_has_interface_seals_is_scoped_to_session_and_node(
    store: ps.SessionStore, session: str
) -> None:
    other = add_session(store, "other-session")
    assert store.has_interface_seals(session, "n1") is False

    store.record_interface_seal(seal("n1"))

    assert store.has_interface_seals(session, "n1") is True
    assert store.get_interface_seals(session, "n1")[0].version == 1  # the default
    assert store.has_interface_seals(session, "n2") is False
    assert store.has_interface_seals(other, "n1") is False
    assert store.get_interface_seals(other, "n1") == []


def test_get_interface_seals_last_element_is_the_most_recent(
    store: ps.SessionStore, session: str
) -> None:
    store.record_interface_seal(seal(seal_id="s1", seal_hash=b"\x01" * 32, version=1))
    with store.transaction():
        store.record_interface_seal(seal(seal_id="s2", seal_hash=b"\x02" * 32, version=2))
        store.record_interface_seal(seal("n2", seal_id="other-node"))
        store.record_interface_seal(seal(seal_id="s3", seal_hash=b"\x03" * 32, version=3))

    seals = store.get_interface_seals(session, "n1")

    assert [s.seal_id for s in seals] == ["s1", "s2", "s3"]
    assert seals[-1].seal_hash == b"\x03" * 32
    assert seals[-1].version == 3


def test_null_version_in_interface_seals_makes_the_getter_raise(
    store: ps.SessionStore, session: str
) -> None:
    # D8: a corrupt value is reported, never replaced by a default.
    store.record_interface_seal(seal())
    store.sql("UPDATE interface_seals SET version = NULL")

    with pytest.raises(ps.StoreError) as info:
        store.get_interface_seals(session, "n1")

    assert info.value.table == "interface_seals"
    assert isinstance(info.value.__cause__, pydantic.ValidationError)
    assert store.has_interface_seals(session, "n1") is True


# --- branch_flushes -------------------------------------------------------------------------


def test_branch_flush_round_trips_its_lists(store: ps.SessionStore, session: str) -> None:
    row = flush(flushed_branch_ids=["b1", "branch_ü_2"], requeue_node_ids=[], reason="")
    store.record_branch_flush(row)

    (got,) = store.get_branch_flushes(session)
    stored = store.sql("SELECT flushed_branch_ids, requeue_node_ids FROM branch_flushes")

    assert got == row
    assert got.flushed_branch_ids == ["b1", "branch_ü_2"]
    assert got.requeue_node_ids == []
    assert got.reason == ""
    assert stored.fetchall() == [('["b1","branch_ü_2"]', "[]")]
    assert isinstance(got.id, int)
    assert got.created_at is not None
    # Upstream wrote '' when serialisation failed; other tools may write anything (SPEC §4).
    for raw in ("", "not json", '{"a":1}', "[1,2]"):
        store.sql(
            "UPDATE branch_flushes SET flushed_branch_ids = ?, requeue_node_ids = ?", [raw] * 2
        )
        (got,) = store.get_branch_flushes(session)
        assert (got.flushed_branch_ids, got.requeue_node_ids) == ([], []), raw


def test_get_branch_flushes_is_the_session_in_insertion_order(
    store: ps.SessionStore, session: str
) -> None:
    other = add_session(store, "other-session")
    store.record_branch_flush(flush(flush_id="f3", requeue_node_ids=["n1", "n2"]))
    store.record_branch_flush(flush(other, flush_id="x"))
    with store.transaction():
        store.record_branch_flush(flush(flush_id="f1", parent_node_id="p2"))
        store.record_branch_flush(flush(flush_id="f2"))

    got = store.get_branch_flushes(session)

    assert [f.flush_id for f in got] == ["f3", "f1", "f2"]
    assert got[0].requeue_node_ids == ["n1", "n2"]
    assert [f.flush_id for f in store.get_branch_flushes(other)] == ["x"]
    assert store.get_branch_flushes("no-such-session") == []


# --- unknown sessions -----------------------------------------------------------------------

UNKNOWN_SESSION_WRITES: dict[str, Callable[[ps.SessionStore], None]] = {
    "provisional_branches": lambda s: s.record_provisional_branch(branch(session_id="ghost")),
    "interface_seals": lambda s: s.record_interface_seal(seal(session_id="ghost")),
    "branch_flushes": lambda s: s.record_branch_flush(flush("ghost")),
}


@pytest.mark.parametrize("table", list(UNKNOWN_SESSION_WRITES))
def test_write_for_an_unknown_session_raises_and_writes_nothing(
    store: ps.SessionStore, session: str, table: str
) -> None:
    with pytest.raises(ps.SessionNotFoundError) as info:
        UNKNOWN_SESSION_WRITES[table](store)

    assert info.value.session_id == "ghost"
    assert info.value.table == table
    assert count(store, table) == 0
    store.record_branch_flush(flush())  # the store is still usable
    assert count(store, "branch_flushes") == 1


def test_unknown_session_write_inside_a_transaction_rolls_back_the_rest(
    store: ps.SessionStore, session: str
) -> None:
    with pytest.raises(ps.SessionNotFoundError), store.transaction():
        store.record_provisional_branch(branch("b1"))
        store.record_interface_seal(seal(session_id="ghost"))

    assert store.get_provisional_branches(session) == []
    assert count(store, "interface_seals") == 0


# --- read-only stores -----------------------------------------------------------------------

SEEDED_BRANCHES = [branch("b1", parent_seal_hash=HASH32), branch("b2", state="sealed")]
SEEDED_LINEAGE = lineage("p1", "b1", session_id=SID)
SEEDED_SEAL = seal(version=2)
SEEDED_FLUSH = flush(flushed_branch_ids=["b0"], requeue_node_ids=["n0"])


@pytest.fixture(scope="module")
def seeded_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed database file holding one session and rows of each branches table."""
    path = tmp_path_factory.mktemp("branches-ro") / "perspt.db"
    with ps.SessionStore.open(path) as store:
        store.create_session(
            ps.SessionRecord(session_id=SID, task="test task", working_dir="/w", status="RUNNING")
        )
        for row in SEEDED_BRANCHES:
            store.record_provisional_branch(row)
        store.record_branch_lineage(SEEDED_LINEAGE)
        store.record_interface_seal(SEEDED_SEAL)
        store.record_branch_flush(SEEDED_FLUSH)
    return path


def test_read_only_store_queries_work(read_only_store: ps.SessionStore) -> None:
    store = read_only_store

    assert store.read_only
    assert [s.session_id for s in store.list_recent_sessions(10)] == [SID]
    assert store.get_provisional_branches(SID) == SEEDED_BRANCHES
    assert store.get_live_branches_for_parent(SID, "p1") == SEEDED_BRANCHES
    assert store.get_child_branches("p1") == ["b1"]
    assert store.get_child_branches("p1", session_id=SID) == ["b1"]
    assert store.get_branch_lineage(SID) == [SEEDED_LINEAGE]
    assert store.get_interface_seals(SID, "n1") == [SEEDED_SEAL]
    assert store.has_interface_seals(SID, "n1") is True
    assert store.get_branch_flushes(SID) == [SEEDED_FLUSH]


READ_ONLY_WRITES: dict[str, Callable[[ps.SessionStore], object]] = {
    "create_session": lambda s: s.create_session(
        ps.SessionRecord(session_id="new", task="t", working_dir="/w")
    ),
    "record_provisional_branch": lambda s: s.record_provisional_branch(branch("b3")),
    "update_branch_state": lambda s: s.update_branch_state("b1", "merged"),
    "update_branch_state_scoped": lambda s: s.update_branch_state("b1", "merged", session_id=SID),
    "update_branch_state_unknown": lambda s: s.update_branch_state("no-such-branch", "merged"),
    "flush_branches_for_parent": lambda s: s.flush_branches_for_parent(SID, "p1"),
    "flush_branches_for_unknown_parent": lambda s: s.flush_branches_for_parent(SID, "nobody"),
    "record_branch_lineage": lambda s: s.record_branch_lineage(lineage("p1", "b9")),
    "record_interface_seal": lambda s: s.record_interface_seal(seal()),
    "record_branch_flush": lambda s: s.record_branch_flush(flush()),
    "transaction": lambda s: s.transaction().__enter__(),
}


def test_read_only_store_rejects_writes(read_only_store: ps.SessionStore) -> None:
    assert_all_refused_read_only(read_only_store, READ_ONLY_WRITES)
    # Nothing changed, and reads still work after the refusal.
    assert read_only_store.get_provisional_branches(SID) == SEEDED_BRANCHES
    assert read_only_store.get_branch_flushes(SID) == [SEEDED_FLUSH]

"""Planning family: ``feature_charters``, ``plan_revisions``, ``repair_footprints``,
``budget_envelopes``.

Every test runs on an in-memory and a file store (the ``store`` fixture). Besides the upstream
unit tests of SPEC §8 (same names), these pin the port's fixes: the newest charter wins (D25),
``replace_active_plan`` leaves exactly one active revision (D24), updates report how many rows
they changed (D23), every list has a total order (D10), and an upsert refreshes ``updated_at``
(D12).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import perspt_store as ps
from conftest import add_session, assert_all_refused_read_only, count, some

SID = "test-session"
PROPERTY = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def charter(charter_id: str = "c1", session_id: str = SID, **fields: Any) -> ps.FeatureCharterRow:
    fields.setdefault("scope_description", f"scope of {charter_id}")
    return ps.FeatureCharterRow(charter_id=charter_id, session_id=session_id, **fields)


def revision(
    revision_id: str = "rev-1", sequence: int = 1, session_id: str = SID, **fields: Any
) -> ps.PlanRevisionRow:
    fields.setdefault("plan_json", f'{{"tasks":["{revision_id}"]}}')
    fields.setdefault("reason", "initial plan")
    return ps.PlanRevisionRow(
        revision_id=revision_id, session_id=session_id, sequence=sequence, **fields
    )


def footprint(
    footprint_id: str = "fp-1", node_id: str = "n1", attempt: int = 1, **fields: Any
) -> ps.RepairFootprintRow:
    fields.setdefault("session_id", SID)
    fields.setdefault("revision_id", "initial")
    fields.setdefault("bundle_json", '{"artifacts":[]}')
    fields.setdefault("diagnosis", "type error in handler")
    return ps.RepairFootprintRow(
        footprint_id=footprint_id, node_id=node_id, attempt=attempt, **fields
    )


def envelope(session_id: str = SID, **fields: Any) -> ps.BudgetEnvelopeRow:
    return ps.BudgetEnvelopeRow(session_id=session_id, **fields)


def plan_state(store: ps.SessionStore, session_id: str = SID) -> list[tuple[str, int, str]]:
    return [(r.revision_id, r.sequence, r.status) for r in store.get_plan_revisions(session_id)]


# --- feature_charters -----------------------------------------------------------------------


def test_feature_charter_roundtrip(store: ps.SessionStore, session: str) -> None:
    row = charter(
        "charter-1",
        scope_description="Add a CLI with ünïcode help ✓",
        max_modules=5,
        max_files=20,
        max_revisions=3,
        language_constraint="rust",
    )
    store.record_feature_charter(row)

    got = store.get_feature_charter(session)

    assert got == row
    assert (got.max_modules, got.max_files, got.max_revisions) == (5, 20, 3)
    assert got.language_constraint == "rust"
    assert got.created_at is not None


def test_feature_charter_limits_may_be_none_and_empty_text_stays_empty(
    store: ps.SessionStore, session: str
) -> None:
    row = charter(scope_description="", language_constraint="")
    store.record_feature_charter(row)

    got = some(store.get_feature_charter(session))
    stored = store.sql("SELECT max_modules, max_files, max_revisions FROM feature_charters")

    assert got == row
    assert (got.max_modules, got.max_files, got.max_revisions) == (None, None, None)
    assert got.language_constraint == ""
    assert stored.fetchall() == [(None, None, None)]


def test_feature_charter_returns_none_for_missing(store: ps.SessionStore, session: str) -> None:
    other = add_session(store, "other-session")
    store.record_feature_charter(charter(session_id=other))

    assert store.get_feature_charter(session) is None
    assert store.get_feature_charter("no-such-session") is None


@pytest.mark.parametrize("in_transaction", [False, True], ids=["autocommit", "one-transaction"])
def test_feature_charter_getter_returns_the_newest_every_time(
    store: ps.SessionStore, session: str, in_transaction: bool
) -> None:
    # D25: several charters per session are allowed; the getter returns the last recorded,
    # whatever the ids sort like and even when both rows share one created_at.
    for first, second in [("c1", "c2"), ("zz-first", "aa-second")]:
        session_id = add_session(store, f"s-{first}")
        rows = [charter(first, session_id, max_files=1), charter(second, session_id, max_files=2)]
        if in_transaction:
            with store.transaction():
                for row in rows:
                    store.record_feature_charter(row)
        else:
            for row in rows:
                store.record_feature_charter(row)

        for _ in range(5):
            assert store.get_feature_charter(session_id) == rows[1]
    assert store.get_feature_charter(session) is None


def test_feature_charter_newest_survives_reopening_the_file(db_path: Path) -> None:
    with ps.SessionStore.open(db_path) as store:
        add_session(store, SID)
        with store.transaction():
            store.record_feature_charter(charter("zz-first"))
            store.record_feature_charter(charter("aa-second"))

    for _ in range(3):
        with ps.SessionStore.open(db_path) as store:
            assert some(store.get_feature_charter(SID)).charter_id == "aa-second"


def test_duplicate_charter_id_raises_and_writes_nothing(
    store: ps.SessionStore, session: str
) -> None:
    other = add_session(store, "other-session")
    store.record_feature_charter(charter("c1", max_files=1))

    with pytest.raises(ps.DuplicateRecordError) as info:
        store.record_feature_charter(charter("c1", max_files=2))
    with pytest.raises(ps.DuplicateRecordError):
        store.record_feature_charter(charter("c1", session_id=other))

    assert info.value.table == "feature_charters"
    assert count(store, "feature_charters") == 1
    assert store.get_feature_charter(session) == charter("c1", max_files=1)
    assert store.get_feature_charter(other) is None


# --- plan_revisions -------------------------------------------------------------------------


def test_plan_revision_roundtrip(store: ps.SessionStore, session: str) -> None:
    row = revision("rev-1", 1, plan_json='{"tasks":[{"id":"t1","goal":"ü"}]}')
    store.record_plan_revision(row)

    got = store.get_active_plan_revision(session)

    assert got == row
    assert got.status == "active"
    assert got.supersedes is None
    assert got.created_at is not None
    assert store.get_plan_revisions(session) == [row]


def test_plan_revision_supersede(store: ps.SessionStore, session: str) -> None:
    store.record_plan_revision(revision("rev-1", 1))

    assert store.supersede_plan_revision("rev-1") == 1
    store.record_plan_revision(revision("rev-2", 2, supersedes="rev-1", reason="replan"))

    active = some(store.get_active_plan_revision(session))
    revisions = store.get_plan_revisions(session)
    assert active.revision_id == "rev-2"
    assert active.supersedes == "rev-1"
    assert [r.revision_id for r in revisions] == ["rev-1", "rev-2"]
    assert [r.status for r in revisions] == ["superseded", "active"]
    # D23: superseding an unknown revision reports that nothing changed.
    assert store.supersede_plan_revision("no-such-revision") == 0
    assert store.get_plan_revisions(session) == revisions


def test_get_plan_revisions_orders_by_sequence_then_insertion(
    store: ps.SessionStore, session: str
) -> None:
    other = add_session(store, "other-session")
    store.record_plan_revision(revision("r-c", 3, status="cancelled"))
    store.record_plan_revision(revision("x", 1, session_id=other))
    with store.transaction():
        store.record_plan_revision(revision("r-b2", 2))
        store.record_plan_revision(revision("r-a", 1, status="superseded"))
        store.record_plan_revision(revision("r-b1", 2))

    assert [r.revision_id for r in store.get_plan_revisions(session)] == [
        "r-a",
        "r-b2",
        "r-b1",
        "r-c",
    ]
    assert [r.revision_id for r in store.get_plan_revisions(other)] == ["x"]
    assert store.get_plan_revisions("no-such-session") == []


def test_get_active_plan_revision_prefers_the_highest_sequence_then_the_newest(
    store: ps.SessionStore, session: str
) -> None:
    assert store.get_active_plan_revision(session) is None
    store.record_plan_revision(revision("r-9", 9, status="superseded"))
    store.record_plan_revision(revision("r-8", 8, status="cancelled"))
    assert store.get_active_plan_revision(session) is None

    store.record_plan_revision(revision("r-1", 1))
    with store.transaction():
        store.record_plan_revision(revision("r-z", 2))
        store.record_plan_revision(revision("r-a", 2))

    assert some(store.get_active_plan_revision(session)).revision_id == "r-a"


def test_replace_active_plan_leaves_exactly_one_active_revision(
    store: ps.SessionStore, session: str
) -> None:
    assert store.replace_active_plan(session, revision("rev-1", 1)) == []
    assert store.replace_active_plan(session, revision("rev-2", 2, supersedes="rev-1")) == ["rev-1"]

    assert plan_state(store) == [("rev-1", 1, "superseded"), ("rev-2", 2, "active")]
    assert store.get_active_plan_revision(session) == revision("rev-2", 2, supersedes="rev-1")


def test_replace_active_plan_supersedes_every_active_revision(
    store: ps.SessionStore, session: str
) -> None:
    # D24: record_plan_revision alone lets two active revisions coexist; the replace fixes it.
    store.record_plan_revision(revision("rev-a", 1))
    store.record_plan_revision(revision("rev-b", 2))
    store.record_plan_revision(revision("rev-c", 3, status="cancelled"))

    superseded = store.replace_active_plan(session, revision("rev-d", 4))

    assert sorted(superseded) == ["rev-a", "rev-b"]
    assert plan_state(store) == [
        ("rev-a", 1, "superseded"),
        ("rev-b", 2, "superseded"),
        ("rev-c", 3, "cancelled"),
        ("rev-d", 4, "active"),
    ]
    actives = store.sql("SELECT count(*) FROM plan_revisions WHERE status = 'active'").fetchall()
    assert actives == [(1,)]


@settings(PROPERTY, max_examples=8)
@given(steps=st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=6))
def test_replace_active_plan_always_leaves_one_active_revision(
    store: ps.SessionStore, session: str, steps: list[int]
) -> None:
    store.sql("DELETE FROM plan_revisions")
    sequence = 0
    previous: str | None = None
    for i, gap in enumerate(steps):
        sequence += gap
        row = revision(f"r{i}", sequence, supersedes=previous)
        superseded = store.replace_active_plan(session, row)
        assert superseded == ([] if previous is None else [previous])
        assert some(store.get_active_plan_revision(session)) == row
        previous = row.revision_id

    statuses = [status for _, _, status in plan_state(store)]
    assert statuses == ["superseded"] * (len(steps) - 1) + ["active"]


def test_replace_active_plan_rejects_a_bad_new_row_and_changes_nothing(
    store: ps.SessionStore, session: str
) -> None:
    add_session(store, "other")
    store.record_plan_revision(revision("rev-1", 2))
    store.record_plan_revision(revision("rev-0", 3, status="superseded"))  # highest sequence
    before = store.get_plan_revisions(session)
    bad_rows = {
        "another session's row": revision("new", 9, "other"),
        "a superseded row": revision("new", 9, status="superseded"),
        "a cancelled row": revision("new", 9, status="cancelled"),
        "the highest sequence again": revision("new", 3),
        "a lower sequence": revision("new", 1),
    }

    for case, row in bad_rows.items():
        with pytest.raises(ValueError):
            store.replace_active_plan(session, row)

        assert store.get_plan_revisions(session) == before, case
        assert [r.status for r in store.get_plan_revisions(session)] == ["active", "superseded"]
        assert store.get_plan_revisions("other") == [], case
        assert not store.in_transaction
    assert count(store, "plan_revisions") == 2


def test_replace_active_plan_is_atomic(store: ps.SessionStore, session: str) -> None:
    store.record_plan_revision(revision("rev-1", 1))

    # The insert fails after the supersede ran: the supersede is rolled back too.
    with pytest.raises(ps.DuplicateRecordError):
        store.replace_active_plan(session, revision("rev-1", 2))
    assert plan_state(store) == [("rev-1", 1, "active")]

    # Inside an outer transaction that fails, nothing of the replace survives.
    with pytest.raises(RuntimeError, match="abort"), store.transaction():
        assert store.replace_active_plan(session, revision("rev-2", 2)) == ["rev-1"]
        raise RuntimeError("abort")
    assert plan_state(store) == [("rev-1", 1, "active")]


# --- repair_footprints ----------------------------------------------------------------------


def test_repair_footprint_roundtrip(store: ps.SessionStore, session: str) -> None:
    row = footprint(
        "fp-1",
        attempt=2,
        affected_files=["src/handler.rs", "src/ü.rs"],
        bundle_json='{"artifacts":[{"path":"src/handler.rs"}]}',
        diagnosis="borrow checker: ✗",
    )
    store.record_repair_footprint(row)

    (got,) = store.get_repair_footprints(session, "n1")
    stored = store.sql("SELECT affected_files FROM repair_footprints").fetchall()

    assert got == row
    assert got.footprint_id == "fp-1"
    assert got.diagnosis == "borrow checker: ✗"
    assert got.resolved is False
    assert stored == [('["src/handler.rs","src/ü.rs"]',)]
    assert isinstance(got.id, int)
    assert got.created_at is not None
    assert store.get_all_repair_footprints(session) == [row]
    # Upstream wrote '' when serialisation failed: it reads as no files, not as an error.
    store.sql("UPDATE repair_footprints SET affected_files = ''")
    assert store.get_all_repair_footprints(session)[0].affected_files == []


def test_repair_footprint_resolve(store: ps.SessionStore, session: str) -> None:
    store.record_repair_footprint(footprint("fp-1"))
    store.record_repair_footprint(footprint("fp-2", attempt=2))

    assert store.resolve_repair_footprint("fp-1") == 1

    assert [(f.footprint_id, f.resolved) for f in store.get_repair_footprints(session, "n1")] == [
        ("fp-1", True),
        ("fp-2", False),
    ]


def test_resolve_repair_footprint_of_an_unknown_footprint_returns_zero(
    store: ps.SessionStore, session: str
) -> None:
    # D23
    store.record_repair_footprint(footprint("fp-1"))

    assert store.resolve_repair_footprint("nope") == 0
    assert [f.resolved for f in store.get_all_repair_footprints(session)] == [False]


def test_duplicate_footprint_id_raises_and_writes_nothing(
    store: ps.SessionStore, session: str
) -> None:
    other = add_session(store, "other-session")
    original = footprint("fp-1", diagnosis="first")
    store.record_repair_footprint(original)

    with pytest.raises(ps.DuplicateRecordError) as info:
        store.record_repair_footprint(footprint("fp-1", node_id="n2", diagnosis="second"))
    with pytest.raises(ps.DuplicateRecordError):
        store.record_repair_footprint(footprint("fp-1", session_id=other))

    assert info.value.table == "repair_footprints"
    assert store.get_all_repair_footprints(session) == [original]
    assert store.get_all_repair_footprints(other) == []
    assert count(store, "repair_footprints") == 1


def test_get_repair_footprints_orders_by_attempt_then_insertion(
    store: ps.SessionStore, session: str
) -> None:
    with store.transaction():
        for footprint_id, node_id, attempt in [
            ("a2-first", "n1", 2),
            ("a1-first", "n1", 1),
            ("other-node", "n2", 1),
            ("a2-second", "n1", 2),
            ("a1-second", "n1", 1),
        ]:
            store.record_repair_footprint(footprint(footprint_id, node_id, attempt))

    got = store.get_repair_footprints(session, "n1")

    assert [f.footprint_id for f in got] == ["a1-first", "a1-second", "a2-first", "a2-second"]
    assert store.get_repair_footprints(session, "n3") == []


def test_get_all_repair_footprints_orders_by_node_attempt_then_insertion(
    store: ps.SessionStore, session: str
) -> None:
    other = add_session(store, "other-session")
    for footprint_id, node_id, attempt in [
        ("n2-a1", "n2", 1),
        ("n1-a2", "n1", 2),
        ("n1-a1", "n1", 1),
        ("n2-a1-again", "n2", 1),
        ("n10-a1", "n10", 1),
    ]:
        store.record_repair_footprint(footprint(footprint_id, node_id, attempt))
    store.record_repair_footprint(footprint("theirs", "n0", 1, session_id=other))

    got = store.get_all_repair_footprints(session)

    assert [f.footprint_id for f in got] == ["n1-a1", "n1-a2", "n10-a1", "n2-a1", "n2-a1-again"]
    assert [f.footprint_id for f in store.get_all_repair_footprints(other)] == ["theirs"]
    assert store.get_all_repair_footprints("no-such-session") == []


# --- budget_envelopes -----------------------------------------------------------------------


def test_budget_envelope_upsert_and_get(store: ps.SessionStore, session: str) -> None:
    row = envelope(
        max_steps=100, steps_used=5, max_revisions=3, max_cost_usd=10.0, cost_used_usd=0.25
    )
    store.upsert_budget_envelope(row)

    got = some(store.get_budget_envelope(session))

    assert got == row
    assert (got.max_steps, got.steps_used, got.cost_used_usd) == (100, 5, 0.25)
    assert got.updated_at is not None


def test_budget_envelope_upsert_updates(store: ps.SessionStore, session: str) -> None:
    store.upsert_budget_envelope(
        envelope(
            max_steps=100,
            steps_used=5,
            max_revisions=5,
            revisions_used=1,
            max_cost_usd=10.0,
            cost_used_usd=0.25,
        )
    )
    update = envelope(
        max_steps=None,
        steps_used=42,
        max_revisions=5,
        revisions_used=3,
        max_cost_usd=None,
        cost_used_usd=4.5,
    )

    store.upsert_budget_envelope(update)

    got = some(store.get_budget_envelope(session))
    assert got == update
    assert (got.steps_used, got.revisions_used, got.cost_used_usd) == (42, 3, 4.5)
    assert got.max_steps is None  # a limit can be set back to None (last write wins)
    assert got.max_cost_usd is None
    assert count(store, "budget_envelopes") == 1


def test_budget_envelope_missing_returns_none(store: ps.SessionStore, session: str) -> None:
    other = add_session(store, "other-session")
    store.upsert_budget_envelope(envelope(other, steps_used=1))

    assert store.get_budget_envelope(session) is None
    assert store.get_budget_envelope("no-such-session") is None
    theirs = some(store.get_budget_envelope(other))
    assert theirs.steps_used == 1
    # The other fields kept their defaults: no limits, nothing used.
    assert (theirs.max_steps, theirs.max_revisions, theirs.max_cost_usd) == (None, None, None)
    assert (theirs.revisions_used, theirs.cost_used_usd) == (0, 0.0)


def test_budget_envelope_upsert_refreshes_updated_at(store: ps.SessionStore, session: str) -> None:
    # D12: upstream left updated_at at its first value on the update path.
    store.upsert_budget_envelope(envelope(steps_used=1))
    first = some(some(store.get_budget_envelope(session)).updated_at)
    time.sleep(0.01)

    store.upsert_budget_envelope(envelope(steps_used=2))

    second = some(some(store.get_budget_envelope(session)).updated_at)
    assert second > first


@settings(PROPERTY, max_examples=10)
@given(
    st.lists(
        st.builds(
            envelope,
            max_steps=st.none() | st.integers(0, 2**31 - 1),
            steps_used=st.integers(-(2**31), 2**31 - 1),
            max_revisions=st.none() | st.integers(0, 2**31 - 1),
            revisions_used=st.integers(0, 100),
            max_cost_usd=st.none() | st.floats(allow_nan=False, allow_infinity=False),
            cost_used_usd=st.floats(allow_nan=False, allow_infinity=False),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_budget_envelope_last_upsert_wins_exactly(
    store: ps.SessionStore, session: str, writes: list[ps.BudgetEnvelopeRow]
) -> None:
    for row in writes:
        store.upsert_budget_envelope(row)

    got = some(store.get_budget_envelope(session))

    assert got.to_dict() == writes[-1].to_dict()
    assert str(got.cost_used_usd) == str(writes[-1].cost_used_usd)  # bit-exact, -0.0 included


# --- unknown sessions -----------------------------------------------------------------------

UNKNOWN_SESSION_WRITES: dict[str, Callable[[ps.SessionStore], object]] = {
    "feature_charters": lambda s: s.record_feature_charter(charter(session_id="ghost")),
    "plan_revisions": lambda s: s.record_plan_revision(revision(session_id="ghost")),
    "replace_active_plan": lambda s: s.replace_active_plan("ghost", revision(session_id="ghost")),
    "repair_footprints": lambda s: s.record_repair_footprint(footprint(session_id="ghost")),
    "budget_envelopes": lambda s: s.upsert_budget_envelope(envelope("ghost")),
}


@pytest.mark.parametrize("write", list(UNKNOWN_SESSION_WRITES))
def test_write_for_an_unknown_session_raises_and_writes_nothing(
    store: ps.SessionStore, session: str, write: str
) -> None:
    table = "plan_revisions" if write == "replace_active_plan" else write

    with pytest.raises(ps.SessionNotFoundError) as info:
        UNKNOWN_SESSION_WRITES[write](store)

    assert info.value.session_id == "ghost"
    assert info.value.table == table
    assert count(store, table) == 0
    assert not store.in_transaction
    store.upsert_budget_envelope(envelope())  # the store is still usable
    assert count(store, "budget_envelopes") == 1


# --- read-only stores -----------------------------------------------------------------------

SEEDED_CHARTER = charter(max_files=4, language_constraint="python")
SEEDED_REVISIONS = [revision("rev-1", 1, status="superseded"), revision("rev-2", 2)]
SEEDED_FOOTPRINT = footprint(affected_files=["a.py"])
SEEDED_ENVELOPE = envelope(max_steps=10, steps_used=2, cost_used_usd=0.5)


@pytest.fixture(scope="module")
def seeded_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed database file holding one session and rows of each planning table."""
    path = tmp_path_factory.mktemp("planning-ro") / "perspt.db"
    with ps.SessionStore.open(path) as store:
        store.create_session(
            ps.SessionRecord(session_id=SID, task="test task", working_dir="/w", status="RUNNING")
        )
        store.record_feature_charter(SEEDED_CHARTER)
        for row in SEEDED_REVISIONS:
            store.record_plan_revision(row)
        store.record_repair_footprint(SEEDED_FOOTPRINT)
        store.upsert_budget_envelope(SEEDED_ENVELOPE)
    return path


def test_read_only_store_queries_work(read_only_store: ps.SessionStore) -> None:
    store = read_only_store

    assert store.read_only
    assert [s.session_id for s in store.list_recent_sessions(10)] == [SID]
    assert store.get_feature_charter(SID) == SEEDED_CHARTER
    assert store.get_plan_revisions(SID) == SEEDED_REVISIONS
    assert store.get_active_plan_revision(SID) == SEEDED_REVISIONS[1]
    assert store.get_repair_footprints(SID, "n1") == [SEEDED_FOOTPRINT]
    assert store.get_all_repair_footprints(SID) == [SEEDED_FOOTPRINT]
    assert store.get_budget_envelope(SID) == SEEDED_ENVELOPE


READ_ONLY_WRITES: dict[str, Callable[[ps.SessionStore], object]] = {
    "create_session": lambda s: s.create_session(
        ps.SessionRecord(session_id="new", task="t", working_dir="/w")
    ),
    "record_feature_charter": lambda s: s.record_feature_charter(charter("c2")),
    "record_plan_revision": lambda s: s.record_plan_revision(revision("rev-3", 3)),
    "supersede_plan_revision": lambda s: s.supersede_plan_revision("rev-2"),
    "supersede_unknown_plan_revision": lambda s: s.supersede_plan_revision("nope"),
    "replace_active_plan": lambda s: s.replace_active_plan(SID, revision("rev-3", 3)),
    "record_repair_footprint": lambda s: s.record_repair_footprint(footprint("fp-2")),
    "resolve_repair_footprint": lambda s: s.resolve_repair_footprint("fp-1"),
    "resolve_unknown_repair_footprint": lambda s: s.resolve_repair_footprint("nope"),
    "upsert_budget_envelope": lambda s: s.upsert_budget_envelope(envelope(steps_used=9)),
}


def test_read_only_store_rejects_writes(read_only_store: ps.SessionStore) -> None:
    assert_all_refused_read_only(read_only_store, READ_ONLY_WRITES)
    # Nothing changed, and reads still work after the refusal.
    assert read_only_store.get_plan_revisions(SID) == SEEDED_REVISIONS
    assert read_only_store.get_budget_envelope(SID) == SEEDED_ENVELOPE
    assert read_only_store.get_all_repair_footprints(SID) == [SEEDED_FOOTPRINT]

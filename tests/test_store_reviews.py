"""Reviews family: ``verification_results``, ``artifact_bundles``, ``review_outcomes``.

Every test runs on an in-memory and a file store (the ``store`` fixture). The upstream unit
tests of SPEC §8 keep their names; the rest pin the port's promises: "latest" is the last row
recorded even inside one transaction (D9), None is NULL and ``""`` stays ``""`` (D6/D7), and a
corrupt value makes a getter raise instead of inventing one (D8).
"""

from __future__ import annotations

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
PROPERTY = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def verification(
    node_id: str = "n1", session_id: str = SID, **fields: Any
) -> ps.VerificationResultRow:
    fields.setdefault("result_json", '{"syntax_ok":true}')
    return ps.VerificationResultRow(session_id=session_id, node_id=node_id, **fields)


def bundle(node_id: str = "n1", session_id: str = SID, **fields: Any) -> ps.ArtifactBundleRow:
    fields.setdefault("bundle_json", '{"artifacts":[]}')
    return ps.ArtifactBundleRow(session_id=session_id, node_id=node_id, **fields)


def review(node_id: str = "n1", session_id: str = SID, **fields: Any) -> ps.ReviewOutcomeRow:
    fields.setdefault("outcome", "approved")
    return ps.ReviewOutcomeRow(session_id=session_id, node_id=node_id, **fields)


# --- verification_results -------------------------------------------------------------------


def test_verification_result_roundtrip(store: ps.SessionStore, session: str) -> None:
    row = verification(
        syntax_ok=True, build_ok=True, tests_ok=False, lint_ok=True, tests_passed=5, tests_failed=1
    )
    store.record_verification_result(row)

    got = store.get_verification_result(session, "n1")

    assert got == row
    assert (got.syntax_ok, got.build_ok, got.tests_ok) == (True, True, False)
    assert (got.tests_passed, got.tests_failed) == (5, 1)
    assert got.degraded is False
    assert got.degraded_reason is None


def test_verification_result_degraded(store: ps.SessionStore, session: str) -> None:
    store.record_verification_result(verification(degraded=True, degraded_reason="LSP unavailable"))

    got = store.get_verification_result(session, "n1")

    assert got is not None
    assert got.degraded is True
    assert got.degraded_reason == "LSP unavailable"


def test_verification_result_every_field_round_trips(store: ps.SessionStore, session: str) -> None:
    row = verification(
        node_id="nœud-1",
        result_json='{"diagnostics":["E1"],"note":"ünïcode ✓"}' + " " * 10_000,
        syntax_ok=True,
        build_ok=False,
        tests_ok=True,
        lint_ok=False,
        diagnostics_count=2**31 - 1,
        tests_passed=0,
        tests_failed=-(2**31),
        degraded=True,
        degraded_reason="timeout: cargo test",
    )
    store.record_verification_result(row)

    got = store.get_verification_result(session, "nœud-1")

    assert got is not None
    assert got.to_dict() == row.to_dict()
    assert isinstance(got.id, int)
    assert got.created_at is not None


def test_verification_result_defaults_are_false_and_zero(
    store: ps.SessionStore, session: str
) -> None:
    store.record_verification_result(verification())

    got = store.get_verification_result(session, "n1")

    assert got is not None
    assert [got.syntax_ok, got.build_ok, got.tests_ok, got.lint_ok, got.degraded] == [False] * 5
    assert [got.diagnostics_count, got.tests_passed, got.tests_failed] == [0, 0, 0]
    assert got.degraded_reason is None


def test_degraded_reason_none_and_empty_string_stay_distinct(
    store: ps.SessionStore, session: str
) -> None:
    reasons = [None, "", "LSP unavailable"]
    for i, reason in enumerate(reasons):
        store.record_verification_result(
            verification(f"n{i}", degraded=True, degraded_reason=reason)
        )

    got = [some(store.get_verification_result(session, f"n{i}")) for i in range(3)]
    stored = store.sql("SELECT degraded_reason FROM verification_results ORDER BY id").fetchall()

    assert [r.degraded_reason for r in got] == reasons
    assert [type(r.degraded_reason) for r in got] == [type(None), str, str]
    assert stored == [(None,), ("",), ("LSP unavailable",)]  # None is NULL, "" is ''


def test_get_verification_result_returns_latest_even_within_one_transaction(
    store: ps.SessionStore, session: str
) -> None:
    # D9: rows of one transaction share created_at; "latest" must still be the last recorded.
    with store.transaction():
        for passed in (1, 2, 3):
            store.record_verification_result(verification(tests_passed=passed))

    got = store.get_verification_result(session, "n1")
    (only,) = store.get_all_verification_results(session)

    assert got is not None
    assert got.tests_passed == 3
    assert only.tests_passed == 3


def test_get_verification_result_is_scoped_to_session_and_node(
    store: ps.SessionStore, session: str
) -> None:
    other = add_session(store, "other-session")
    store.record_verification_result(verification("n1", tests_passed=1))
    store.record_verification_result(verification("n2", tests_passed=2))
    store.record_verification_result(verification("n1", session_id=other, tests_passed=3))

    assert some(store.get_verification_result(session, "n1")).tests_passed == 1
    assert some(store.get_verification_result(other, "n1")).tests_passed == 3
    assert store.get_verification_result(other, "n2") is None


def test_get_all_verification_results_returns_latest_per_node_ordered_by_when_recorded(
    store: ps.SessionStore, session: str
) -> None:
    other = add_session(store, "other-session")
    store.record_verification_result(verification("n1", tests_passed=10))
    store.record_verification_result(verification("n2", tests_passed=20))
    store.record_verification_result(verification("n1", tests_passed=11))
    store.record_verification_result(verification("n9", session_id=other, tests_passed=90))
    with store.transaction():
        store.record_verification_result(verification("n3", tests_passed=30))
        store.record_verification_result(verification("n2", tests_passed=21))

    results = store.get_all_verification_results(session)

    # Latest rows: n1 (3rd recorded), n3 (5th), n2 (6th): ordered by when each was recorded.
    assert [(r.node_id, r.tests_passed) for r in results] == [("n1", 11), ("n3", 30), ("n2", 21)]
    ids = [some(r.id) for r in results]
    assert ids == sorted(ids)


NULLABLE_INTEGER_COLUMNS = {
    "verification_results": ("diagnostics_count", "tests_passed", "tests_failed"),
    "artifact_bundles": ("artifact_count", "command_count"),
}


@pytest.mark.parametrize("table", list(NULLABLE_INTEGER_COLUMNS))
def test_null_in_a_nullable_integer_column_makes_the_getters_raise(
    store: ps.SessionStore, session: str, table: str
) -> None:
    # D8: a corrupt value is reported, never silently read as 0 or False.
    getters: list[Callable[[], object]]
    if table == "verification_results":
        store.record_verification_result(verification(tests_passed=5))
        getters = [
            lambda: store.get_verification_result(session, "n1"),
            lambda: store.get_all_verification_results(session),
        ]
    else:
        store.record_artifact_bundle(bundle(artifact_count=3, command_count=1))
        getters = [lambda: store.get_artifact_bundle(session, "n1")]
    healthy = [getter() for getter in getters]

    for column in NULLABLE_INTEGER_COLUMNS[table]:
        (original,) = store.sql(f"SELECT {column} FROM {table}").fetchall()[0]
        store.sql(f"UPDATE {table} SET {column} = NULL")
        for getter in getters:
            with pytest.raises(ps.StoreError) as info:
                getter()
            assert info.value.table == table, column
            assert isinstance(info.value.__cause__, pydantic.ValidationError), column
        store.sql(f"UPDATE {table} SET {column} = ?", [original])

    assert [getter() for getter in getters] == healthy


# --- artifact_bundles -----------------------------------------------------------------------


def test_artifact_bundle_roundtrip(store: ps.SessionStore, session: str) -> None:
    row = bundle(artifact_count=3, command_count=1, touched_files=["src/main.rs", "Cargo.toml"])
    store.record_artifact_bundle(row)

    got = store.get_artifact_bundle(session, "n1")

    assert got == row
    assert (got.artifact_count, got.command_count) == (3, 1)
    assert "src/main.rs" in got.touched_files
    assert isinstance(got.id, int)
    assert got.created_at is not None


def test_artifact_bundle_touched_files_are_compact_json_and_null_reads_as_empty(
    store: ps.SessionStore, session: str
) -> None:
    store.record_artifact_bundle(bundle(touched_files=["src/a.py", "docs/ü ✓.md"]))
    store.record_artifact_bundle(bundle("n2"))

    stored = store.sql("SELECT touched_files FROM artifact_bundles ORDER BY id").fetchall()

    assert stored == [('["src/a.py","docs/ü ✓.md"]',), ("[]",)]
    assert some(store.get_artifact_bundle(session, "n1")).touched_files == [
        "src/a.py",
        "docs/ü ✓.md",
    ]
    assert some(store.get_artifact_bundle(session, "n2")).touched_files == []
    # D30: NULL (or upstream's '' for a failed serialisation) in the JSON column is not fatal.
    for raw in (None, ""):
        store.sql("UPDATE artifact_bundles SET touched_files = ?", [raw])
        assert some(store.get_artifact_bundle(session, "n1")).touched_files == [], raw


def test_get_artifact_bundle_returns_latest_even_within_one_transaction(
    store: ps.SessionStore, session: str
) -> None:
    store.record_artifact_bundle(bundle(artifact_count=1))
    with store.transaction():
        store.record_artifact_bundle(bundle(artifact_count=2))
        store.record_artifact_bundle(bundle("n2", artifact_count=20))
        store.record_artifact_bundle(bundle(artifact_count=3))

    assert some(store.get_artifact_bundle(session, "n1")).artifact_count == 3
    assert some(store.get_artifact_bundle(session, "n2")).artifact_count == 20


# --- review_outcomes ------------------------------------------------------------------------


def test_review_outcome_roundtrip(store: ps.SessionStore, session: str) -> None:
    row = review(outcome="approved", reviewer_note="LGTM")
    store.record_review_outcome(row)

    (got,) = store.get_review_outcomes(session, "n1")
    stored = store.sql(
        "SELECT energy_at_review, degraded, escalation_category FROM review_outcomes"
    ).fetchall()

    assert got == row
    assert got.outcome == "approved"
    assert got.reviewer_note == "LGTM"
    # D7: unknown audit values are NULL, not 0.0 / false.
    assert got.energy_at_review is None
    assert got.degraded is None
    assert got.escalation_category is None
    assert stored == [(None, None, None)]


def test_review_outcome_with_audit_fields(store: ps.SessionStore, session: str) -> None:
    row = review(
        outcome="rejected", energy_at_review=0.42, degraded=True, escalation_category="complexity"
    )
    store.record_review_outcome(row)

    got = store.get_latest_review_outcome(session, "n1")

    assert got == row
    assert got.outcome == "rejected"
    assert got.energy_at_review == 0.42  # exact: the column is DOUBLE
    assert got.degraded is True
    assert got.escalation_category == "complexity"
    assert got.reviewer_note is None


def test_review_outcome_zero_energy_false_degraded_and_empty_text_are_kept(
    store: ps.SessionStore, session: str
) -> None:
    # Rows we write are not legacy: 0.0/False/"" are real values, not upstream placeholders.
    row = review(energy_at_review=0.0, degraded=False, reviewer_note="", escalation_category="")
    store.record_review_outcome(row)

    got = store.get_latest_review_outcome(session, "n1")

    assert got is not None
    assert got.energy_at_review == 0.0
    assert got.energy_at_review is not None
    assert got.degraded is False
    assert got.reviewer_note == ""
    assert got.escalation_category == ""


def test_get_all_review_outcomes(store: ps.SessionStore, session: str) -> None:
    other = add_session(store, "other-session")
    rows = [
        review("n1", outcome="approved"),
        review("n2", outcome="rejected"),
        review("n1", outcome="approved_with_edit"),
    ]
    store.record_review_outcome(review("n1", session_id=other, outcome="aborted"))
    for row in rows:
        store.record_review_outcome(row)

    got = store.get_all_review_outcomes(session)

    assert len(got) == 3
    assert got == rows  # insertion order, other sessions excluded
    assert store.get_all_review_outcomes("no-such-session") == []


def test_review_outcomes_of_a_node_are_in_insertion_order_and_the_last_is_latest(
    store: ps.SessionStore, session: str
) -> None:
    # D9: rows of one transaction share created_at; order and "latest" follow insertion.
    store.record_review_outcome(review("n1", outcome="rejected"))
    with store.transaction():
        for outcome in ("correction_requested", "auto_approved"):
            store.record_review_outcome(review("n1", outcome=outcome))
            store.record_review_outcome(review("n2", outcome="skipped"))

    got = store.get_review_outcomes(session, "n1")

    assert [r.outcome for r in got] == ["rejected", "correction_requested", "auto_approved"]
    assert some(store.get_latest_review_outcome(session, "n1")).outcome == "auto_approved"
    assert some(store.get_latest_review_outcome(session, "n2")).outcome == "skipped"
    assert store.get_review_outcomes(session, "n3") == []
    assert store.get_latest_review_outcome(session, "n3") is None


@PROPERTY
@given(
    outcome=st.text(max_size=20),
    note=st.none() | st.text(max_size=50),
    energy=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    degraded=st.none() | st.booleans(),
    category=st.none() | st.text(max_size=20),
)
def test_any_review_outcome_round_trips_exactly(
    store: ps.SessionStore,
    session: str,
    outcome: str,
    note: str | None,
    energy: float | None,
    degraded: bool | None,
    category: str | None,
) -> None:
    row = review(
        "prop",
        outcome=outcome,
        reviewer_note=note,
        energy_at_review=energy,
        degraded=degraded,
        escalation_category=category,
    )
    store.record_review_outcome(row)

    got = store.get_latest_review_outcome(session, "prop")

    assert got is not None
    assert got.to_dict() == row.to_dict()
    if energy is not None:
        assert str(got.energy_at_review) == str(energy)  # bit-exact, -0.0 included


# --- backward compatibility and missing rows ------------------------------------------------


def test_backward_compat(store: ps.SessionStore, session: str) -> None:
    # A node recorded without any review data: every lookup is empty, none fails.
    store.record_node_state(ps.NodeStateRecord(node_id="n1", session_id=session, state="Completed"))

    assert store.get_verification_result(session, "n1") is None
    assert store.get_artifact_bundle(session, "n1") is None
    assert store.get_latest_review_outcome(session, "n1") is None
    assert store.get_review_outcomes(session, "n1") == []
    assert store.get_all_verification_results(session) == []
    assert store.get_all_verification_results("no-such-session") == []
    assert store.get_all_review_outcomes(session) == []


# --- unknown sessions -----------------------------------------------------------------------

UNKNOWN_SESSION_WRITES: dict[str, Callable[[ps.SessionStore], None]] = {
    "verification_results": lambda s: s.record_verification_result(
        verification(session_id="ghost")
    ),
    "artifact_bundles": lambda s: s.record_artifact_bundle(bundle(session_id="ghost")),
    "review_outcomes": lambda s: s.record_review_outcome(review(session_id="ghost")),
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
    # The store is still usable afterwards.
    store.record_review_outcome(review())
    assert count(store, "review_outcomes") == 1


# --- read-only stores -----------------------------------------------------------------------

SEEDED_VERIFICATION = verification(syntax_ok=True, tests_passed=4, degraded_reason="")
SEEDED_BUNDLE = bundle(artifact_count=2, touched_files=["a.py"])
SEEDED_REVIEW = review(energy_at_review=0.25, degraded=False)


@pytest.fixture(scope="module")
def seeded_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed database file holding one session and one row of each reviews table."""
    path = tmp_path_factory.mktemp("reviews-ro") / "perspt.db"
    with ps.SessionStore.open(path) as store:
        store.create_session(
            ps.SessionRecord(session_id=SID, task="test task", working_dir="/w", status="RUNNING")
        )
        store.record_verification_result(SEEDED_VERIFICATION)
        store.record_artifact_bundle(SEEDED_BUNDLE)
        store.record_review_outcome(SEEDED_REVIEW)
    return path


def test_read_only_store_queries_work(read_only_store: ps.SessionStore) -> None:
    store = read_only_store

    assert store.read_only
    assert [s.session_id for s in store.list_recent_sessions(10)] == [SID]
    assert store.get_verification_result(SID, "n1") == SEEDED_VERIFICATION
    assert store.get_all_verification_results(SID) == [SEEDED_VERIFICATION]
    assert store.get_artifact_bundle(SID, "n1") == SEEDED_BUNDLE
    assert store.get_review_outcomes(SID, "n1") == [SEEDED_REVIEW]
    assert store.get_latest_review_outcome(SID, "n1") == SEEDED_REVIEW
    assert store.get_all_review_outcomes(SID) == [SEEDED_REVIEW]


READ_ONLY_WRITES: dict[str, Callable[[ps.SessionStore], object]] = {
    "create_session": lambda s: s.create_session(
        ps.SessionRecord(session_id="new", task="t", working_dir="/w")
    ),
    "record_verification_result": lambda s: s.record_verification_result(verification()),
    "record_artifact_bundle": lambda s: s.record_artifact_bundle(bundle()),
    "record_review_outcome": lambda s: s.record_review_outcome(review()),
}


def test_read_only_store_rejects_writes(read_only_store: ps.SessionStore) -> None:
    assert_all_refused_read_only(read_only_store, READ_ONLY_WRITES)
    # Nothing was written, and reads still work after the refusal.
    assert read_only_store.get_all_review_outcomes(SID) == [SEEDED_REVIEW]
    assert read_only_store.get_all_verification_results(SID) == [SEEDED_VERIFICATION]


# --- one review rule: the summary's SQL and the dashboard's Python count alike ---------------

OUTCOMES = st.one_of(
    st.sampled_from(["approved", "approved_with_edit", "auto_approved", "rejected", "aborted",
                     "correction_requested", "skipped", "APPROVED", "auto_approved_x",
                     "it's approved", "rejected ", ""]),
    st.text(max_size=12),
)


@PROPERTY
@given(outcomes=st.lists(OUTCOMES, max_size=12))
def test_count_reviews_agrees_with_session_summary(
    store: ps.SessionStore, outcomes: list[str]
) -> None:
    from perspt_store.store import overview
    from perspt_store.store.reviews import count_reviews

    sid = add_session(store, f"s{store.count_sessions()}")
    for outcome in outcomes:
        store.record_review_outcome(ps.ReviewOutcomeRow(session_id=sid, node_id="n",
                                                        outcome=outcome))
    summary = store.session_summary(sid)
    assert count_reviews(outcomes) == {
        "total": summary.review_total,
        "approved": summary.reviews_approved,
        "rejected": summary.reviews_rejected,
        "corrected": summary.reviews_corrected,
    }
    counted = overview.session_counts(store, sid)  # the dashboard's summary
    assert count_reviews(outcomes) == {
        "total": counted["reviews"],
        **{kind: counted[kind] for kind in ("approved", "rejected", "corrected")},
    }


def test_review_kind_names_the_ledger_rule() -> None:
    from perspt_store.store.reviews import review_kind

    assert [review_kind(o) for o in ("approved", "approved_with_edit", "auto_approved",
                                     "rejected", "aborted", "correction_requested", "skipped",
                                     "Approved")] == [
        "approved", "approved", "approved", "rejected", "rejected", "corrected", None, None
    ]


def test_dashboard_counts_reviews_with_the_store_rule() -> None:
    pytest.importorskip("starlette")
    from perspt_store.store import reviews
    from perspt_store.web import _pages

    assert not hasattr(_pages, "review_counts"), "one owner: store.reviews.count_reviews"
    assert _pages.count_reviews is reviews.count_reviews

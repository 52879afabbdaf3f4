"""Telemetry family: ``llm_requests`` (and the global summary), ``srbn_step_records``,
``correction_attempts``.

Every store test runs on an in-memory store and on a file store (the ``store`` fixture). A
store costs ~0.1 s to create, so related cases share one test and one store.
"""

from __future__ import annotations

import datetime as dt
import statistics
from typing import Any

import duckdb
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import perspt_store as ps
from conftest import add_session, assert_all_raise_closed, rows, scalar

# The store fixture is shared by a test's examples, so each example isolates itself.
PROPERTY = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
HOSTILE = "'; DROP TABLE sessions; --"


def llm(session_id: str = "test-session", **fields: Any) -> ps.LlmRequestRecord:
    fields.setdefault("model", "gpt-test")
    return ps.LlmRequestRecord(session_id=session_id, **fields)


def step(node_id: str, step_name: str = "verify", session_id: str = "test-session",
         **fields: Any) -> ps.SrbnStepRecord:  # fmt: skip
    fields.setdefault("outcome", "ok")
    return ps.SrbnStepRecord(session_id=session_id, node_id=node_id, step=step_name, **fields)


def attempt(node_id: str, number: int, session_id: str = "test-session",
            **fields: Any) -> ps.CorrectionAttemptRow:  # fmt: skip
    fields.setdefault("parse_state", "ok")
    fields.setdefault("response_fingerprint", f"fp-{node_id}-{number}")
    fields.setdefault("response_length", 100)
    fields.setdefault("accepted", False)
    fields.setdefault("created_at", 1_700_000_000)
    return ps.CorrectionAttemptRow(session_id=session_id, node_id=node_id, attempt=number, **fields)


# --- llm_requests --------------------------------------------------------------------------


def test_llm_request_round_trips_every_field(store: ps.SessionStore, session: str) -> None:
    record = llm(
        node_id="n1",
        model="claude-x",
        prompt="What is 2+2?",
        response="4",
        tokens_in=12,
        tokens_out=1,
        latency_ms=250,
    )
    assert (record.id, record.timestamp) == (None, None)
    store.record_llm_request(record)
    (got,) = store.get_llm_requests(session)
    assert got == record
    assert (got.session_id, got.node_id, got.model) == (session, "n1", "claude-x")
    assert (got.prompt, got.response) == ("What is 2+2?", "4")
    assert (got.tokens_in, got.tokens_out, got.latency_ms) == (12, 1, 250)
    assert isinstance(got.id, int)
    assert isinstance(got.timestamp, dt.datetime)
    defaults = llm()
    store.record_llm_request(defaults)
    usage_only = store.get_llm_requests(session)[1]
    assert usage_only == defaults
    assert (usage_only.node_id, usage_only.prompt, usage_only.response) == (None, "", "")
    assert (usage_only.tokens_in, usage_only.tokens_out, usage_only.latency_ms) == (0, 0, 0)


def test_llm_request_node_id_keeps_none_and_empty_apart(
    store: ps.SessionStore, session: str
) -> None:
    """D6: upstream wrote None as '' and read '' back as None; both survive here."""
    for node_id in (None, "", "n1"):
        store.record_llm_request(llm(node_id=node_id))
    got = [r.node_id for r in store.get_llm_requests(session)]
    assert got == [None, "", "n1"]
    assert [r[0] for r in rows(store, "SELECT node_id IS NULL FROM llm_requests ORDER BY id")] == [
        True,
        False,
        False,
    ]


def test_llm_request_text_survives_a_megabyte_quotes_and_emoji(
    store: ps.SessionStore, session: str
) -> None:
    megabyte = ('prompt ñ 🦆 "x" \\n\n' * 60_000)[:1_000_000]
    assert len(megabyte) == 1_000_000
    texts = [
        megabyte,
        HOSTILE,
        "🦆👨‍👩‍👧 ünïcödé ✓",
        "'\"`\\x00\\\\%_?$1:name",
        "line1\r\nline2\ttab\x00nul",
    ]
    records = [llm(node_id=HOSTILE, prompt=t, response=t[::-1], model=t[:50]) for t in texts]
    for record in records:
        store.record_llm_request(record)
    got = store.get_llm_requests(session)
    assert got == records
    assert len(got[0].prompt) == 1_000_000
    assert got[0].prompt == megabyte
    assert store.count_sessions() == 1  # nothing was executed as SQL
    assert store.get_session(session) is not None


def test_llm_requests_are_in_insertion_order_and_scoped_to_their_session(
    store: ps.SessionStore, session: str
) -> None:
    other = add_session(store, "other")
    with store.transaction():
        for i in range(3):
            store.record_llm_request(llm(prompt=f"p{i}"))
        store.record_llm_request(llm(other, prompt="theirs"))
    store.record_llm_request(llm(prompt="p3"))
    got = store.get_llm_requests(session)
    assert [r.prompt for r in got] == ["p0", "p1", "p2", "p3"]
    assert got[0].timestamp == got[2].timestamp  # one transaction: a tie on time
    assert [r.prompt for r in store.get_llm_requests(other)] == ["theirs"]
    assert store.get_llm_requests("nope") == []


@pytest.mark.parametrize("field", ["tokens_in", "tokens_out", "latency_ms"])
def test_llm_request_rejects_counts_outside_integer_range(field: str) -> None:
    for bad in (2**31, -(2**31) - 1, "5", 1.5):
        with pytest.raises(pydantic.ValidationError):
            llm(**{field: bad})
    assert getattr(llm(**{field: 2**31 - 1}), field) == 2**31 - 1


# --- get_global_llm_summary ------------------------------------------------------------------


def test_global_llm_summary_of_an_empty_store_is_all_zero_ints(store: ps.SessionStore) -> None:
    summary = store.get_global_llm_summary()
    assert summary == (0, 0, 0, 0)
    assert isinstance(summary, ps.LlmSummary)
    assert isinstance(summary, tuple)
    assert summary._fields == ("count", "tokens_in", "tokens_out", "median_latency_ms")
    assert (summary.count, summary.tokens_in, summary.tokens_out) == (0, 0, 0)
    assert summary.median_latency_ms == 0
    assert all(type(v) is int for v in summary)


def test_global_llm_summary_estimates_missing_token_counts_with_integer_ceil(
    store: ps.SessionStore, session: str
) -> None:
    """D13: a row without a count contributes ceil(len/4) of its text, in integers; a
    usage-only row (empty text, no counts) contributes nothing."""
    store.record_llm_request(llm(prompt="x" * 11, response="y" * 5, tokens_in=0, tokens_out=0))
    summary = store.get_global_llm_summary()
    assert (summary.count, summary.tokens_in, summary.tokens_out) == (1, 3, 2)
    for _ in range(3):
        store.record_llm_request(llm())  # usage-only
    summary = store.get_global_llm_summary()
    assert (summary.count, summary.tokens_in, summary.tokens_out) == (4, 3, 2)
    # Reported counts win over the estimate; non-positive counts fall back to it.
    store.record_llm_request(llm(prompt="x" * 400, response="y", tokens_in=7, tokens_out=9))
    store.record_llm_request(llm(prompt="🦆" * 8, response="abcd", tokens_in=-5))
    summary = store.get_global_llm_summary()
    assert (summary.count, summary.tokens_in, summary.tokens_out) == (6, 3 + 7 + 2, 2 + 9 + 1)
    assert all(type(v) is int for v in summary)


def test_global_llm_summary_reports_the_median_latency_as_an_int(
    store: ps.SessionStore, session: str
) -> None:
    for latency in (5, 700, 7):
        store.record_llm_request(llm(latency_ms=latency))
    assert store.get_global_llm_summary().median_latency_ms == 7  # not the sum 712
    store.record_llm_request(llm(latency_ms=13))
    assert store.get_global_llm_summary().median_latency_ms == 10  # (7 + 13) / 2
    rows(store, "DELETE FROM llm_requests")
    store.record_llm_request(llm(latency_ms=10))
    store.record_llm_request(llm(latency_ms=11))
    median = store.get_global_llm_summary().median_latency_ms
    assert type(median) is int
    assert median in (10, 11)  # 10.5 rounds to a nearest int


def test_global_llm_summary_spans_all_sessions(store: ps.SessionStore, session: str) -> None:
    other = add_session(store, "other")
    store.record_llm_request(llm(tokens_in=10, tokens_out=1, latency_ms=100))
    store.record_llm_request(llm(other, tokens_in=20, tokens_out=2, latency_ms=300))
    store.record_llm_request(llm(other, node_id="n1", tokens_in=30, tokens_out=3, latency_ms=200))
    assert store.get_global_llm_summary() == ps.LlmSummary(3, 60, 6, 200)


requests = st.lists(
    st.tuples(
        st.text(max_size=30),
        st.text(max_size=30),
        st.integers(-3, 50),
        st.integers(-3, 50),
        st.integers(-(2**31), 2**31 - 1),
    ),
    max_size=6,
)


@given(batch=requests)
@PROPERTY
def test_global_llm_summary_matches_a_python_model(
    store: ps.SessionStore, session: str, batch: list[tuple[str, str, int, int, int]]
) -> None:
    rows(store, "DELETE FROM llm_requests")
    with store.transaction():
        for prompt, response, tin, tout, latency in batch:
            store.record_llm_request(
                llm(prompt=prompt, response=response, tokens_in=tin, tokens_out=tout,
                    latency_ms=latency)
            )  # fmt: skip
    summary = store.get_global_llm_summary()
    assert summary.count == len(batch)
    assert summary.tokens_in == sum(t if t > 0 else (len(p) + 3) // 4 for p, _, t, _, _ in batch)
    assert summary.tokens_out == sum(t if t > 0 else (len(r) + 3) // 4 for _, r, _, t, _ in batch)
    if batch:
        exact = statistics.median(latency for *_, latency in batch)
        assert abs(summary.median_latency_ms - exact) <= 0.5
    else:
        assert summary.median_latency_ms == 0
    assert all(type(v) is int for v in summary)


# --- srbn_step_records ---------------------------------------------------------------------


def test_srbn_step_record_roundtrip(store: ps.SessionStore, session: str) -> None:
    """Upstream test: two steps of one node come back in insertion order with their fields;
    the session-wide list has both."""
    first = step(
        "n1",
        "speculate",
        outcome="ok",
        energy_json='{"v_syn": 0.5}',
        parse_state="parsed",
        retry_classification=None,
        attempt_count=1,
        duration_ms=1200,
    )
    second = step(
        "n1",
        "converge",
        outcome="escalated",
        retry_classification="syntax_error",
        attempt_count=3,
        duration_ms=50,
    )
    assert (first.id, first.created_at) == (None, None)
    store.record_step(first)
    store.record_step(second)
    timeline = store.get_step_timeline(session, "n1")
    assert timeline == [first, second]
    assert [(s.step, s.outcome, s.duration_ms) for s in timeline] == [
        ("speculate", "ok", 1200),
        ("converge", "escalated", 50),
    ]
    assert [s.retry_classification for s in timeline] == [None, "syntax_error"]
    assert timeline[0].energy_json == '{"v_syn": 0.5}'
    assert isinstance(timeline[0].id, int)
    assert isinstance(timeline[0].created_at, dt.datetime)
    assert store.get_session_steps(session) == [first, second]


def test_step_timeline_filters_by_node(store: ps.SessionStore, session: str) -> None:
    """Upstream test (n1, n2, n1 -> 2 and 1; session 3), plus insertion order inside one
    transaction and session scoping."""
    other = add_session(store, "other")
    with store.transaction():
        store.record_step(step("n1", "speculate"))
        store.record_step(step("n2", "speculate"))
        store.record_step(step("n1", "verify"))
        store.record_step(step("n1", "verify", session_id=other))
    assert [s.step for s in store.get_step_timeline(session, "n1")] == ["speculate", "verify"]
    assert [s.step for s in store.get_step_timeline(session, "n2")] == ["speculate"]
    assert [(s.node_id, s.step) for s in store.get_session_steps(session)] == [
        ("n1", "speculate"),
        ("n2", "speculate"),
        ("n1", "verify"),
    ]
    assert len(store.get_session_steps(other)) == 1
    assert store.get_step_timeline(session, "n9") == []
    assert store.get_session_steps("nope") == []


# --- correction_attempts -------------------------------------------------------------------


def test_correction_attempt_roundtrip(store: ps.SessionStore, session: str) -> None:
    """Upstream test: attempts come back ordered by attempt number, with their accepted flags
    and a rejection reason present or absent."""
    second = attempt(
        "n1",
        2,
        parse_state="parsed",
        retry_classification=None,
        response_fingerprint="abc123",
        response_length=512,
        energy_json='{"v_total": 0.1}',
        accepted=True,
        rejection_reason=None,
        created_at=1_700_000_100,
    )
    first = attempt(
        "n1",
        1,
        parse_state="malformed",
        retry_classification="parse_error",
        response_fingerprint="def456",
        response_length=17,
        energy_json=None,
        accepted=False,
        rejection_reason="no code block",
        created_at=1_700_000_000,
    )
    assert first.id is None
    store.record_correction_attempt(second)  # recorded out of order on purpose
    store.record_correction_attempt(first)
    got = store.get_correction_attempts(session, "n1")
    assert got == [first, second]
    assert [a.attempt for a in got] == [1, 2]
    assert [a.accepted for a in got] == [False, True]
    assert [a.rejection_reason for a in got] == ["no code block", None]
    assert (got[0].parse_state, got[0].retry_classification) == ("malformed", "parse_error")
    assert (got[1].response_fingerprint, got[1].response_length) == ("abc123", 512)
    assert (got[1].energy_json, got[0].energy_json) == ('{"v_total": 0.1}', None)
    assert [a.created_at for a in got] == [1_700_000_000, 1_700_000_100]
    assert all(isinstance(a.id, int) for a in got)
    assert store.get_session_correction_attempts(session) == [first, second]


def test_correction_attempts_order_by_attempt_then_insertion(
    store: ps.SessionStore, session: str
) -> None:
    """D10: the same attempt number can repeat across resumes; ties keep insertion order."""
    other = add_session(store, "other")
    with store.transaction():
        for number, tag in [(1, "x"), (1, "y"), (0, "z"), (2, "w"), (1, "v")]:
            store.record_correction_attempt(attempt("n1", number, response_fingerprint=tag))
        store.record_correction_attempt(attempt("n1", 0, other, response_fingerprint="theirs"))
    got = store.get_correction_attempts(session, "n1")
    assert [(a.attempt, a.response_fingerprint) for a in got] == [
        (0, "z"),
        (1, "x"),
        (1, "y"),
        (1, "v"),
        (2, "w"),
    ]
    assert [a.response_fingerprint for a in store.get_correction_attempts(other, "n1")] == [
        "theirs"
    ]
    assert store.get_correction_attempts(session, "n9") == []


def test_session_correction_attempts_order_by_node_attempt_then_insertion(
    store: ps.SessionStore, session: str
) -> None:
    recorded = [("b", 1, "b1"), ("a", 2, "a2"), ("a", 1, "a1"), ("b", 0, "b0"), ("a", 1, "a1'"),
                ("c", -1, "c-1")]  # fmt: skip
    for node_id, number, tag in recorded:
        store.record_correction_attempt(attempt(node_id, number, response_fingerprint=tag))
    got = store.get_session_correction_attempts(session)
    assert [a.response_fingerprint for a in got] == ["a1", "a1'", "a2", "b0", "b1", "c-1"]
    assert store.get_session_correction_attempts("nope") == []


def test_correction_created_at_is_epoch_seconds_beyond_32_bits_and_ints_fit(
    store: ps.SessionStore, session: str
) -> None:
    stamps = [0, 2**31 - 1, 2**31, 2**32 + 7, 4_102_444_800, 2**63 - 1, -(2**63), -1]
    for number, stamp in enumerate(stamps):
        store.record_correction_attempt(attempt("n1", number, created_at=stamp))
    got = store.get_correction_attempts(session, "n1")
    assert [a.created_at for a in got] == stamps
    assert all(type(a.created_at) is int for a in got)
    assert scalar(store, "SELECT DISTINCT typeof(created_at) FROM correction_attempts") == "BIGINT"
    # attempt and response_length are INTEGER: their limits fit exactly.
    limits = [
        attempt("n2", 2**31 - 1, response_length=2**31 - 1),
        attempt("n2", -(2**31), response_length=-(2**31)),
    ]
    for row in limits:
        store.record_correction_attempt(row)
    assert store.get_correction_attempts(session, "n2") == limits[::-1]


def test_optional_step_and_correction_fields_keep_none_and_empty_apart(
    store: ps.SessionStore, session: str
) -> None:
    """D6: None is NULL, '' stays ''; the step counters default to 0."""
    step_fields = ("energy_json", "parse_state", "retry_classification")
    attempt_fields = ("retry_classification", "energy_json", "rejection_reason")
    for number, value in enumerate((None, "")):
        store.record_step(step("n1", **dict.fromkeys(step_fields, value)))
        store.record_correction_attempt(
            attempt("n1", number, **dict.fromkeys(attempt_fields, value))
        )
    none_step, empty_step = store.get_step_timeline(session, "n1")
    assert [getattr(none_step, n) for n in step_fields] == [None] * 3
    assert [getattr(empty_step, n) for n in step_fields] == [""] * 3
    assert (none_step.attempt_count, none_step.duration_ms) == (0, 0)
    assert rows(
        store,
        "SELECT energy_json IS NULL, parse_state IS NULL, retry_classification IS NULL "
        "FROM srbn_step_records ORDER BY id",
    ) == [(True, True, True), (False, False, False)]
    none_attempt, empty_attempt = store.get_correction_attempts(session, "n1")
    assert [getattr(none_attempt, n) for n in attempt_fields] == [None] * 3
    assert [getattr(empty_attempt, n) for n in attempt_fields] == [""] * 3


@pytest.mark.parametrize(
    "fields",
    [
        {"attempt": 2**31},
        {"attempt": -(2**31) - 1},
        {"response_length": 2**31},
        {"created_at": 2**63},
        {"created_at": dt.datetime(2025, 1, 1)},
        {"created_at": "1700000000"},
        {"accepted": 1},
        {"accepted": "true"},
    ],
    ids=[
        "attempt-overflow",
        "attempt-underflow",
        "length-overflow",
        "created-at-overflow",
        "created-at-datetime",
        "created-at-str",
        "accepted-int",
        "accepted-str",
    ],
)
def test_correction_attempt_rejects_values_its_columns_cannot_hold(
    fields: dict[str, Any],
) -> None:
    number = fields.pop("attempt", 1)
    with pytest.raises(pydantic.ValidationError):
        attempt("n1", number, **fields)


# --- writes naming an unknown session, closed stores ---------------------------------------


def test_telemetry_writes_for_an_unknown_session_raise_and_write_nothing(
    store: ps.SessionStore, session: str
) -> None:
    writes = [
        (store.record_llm_request, llm("nope"), "llm_requests"),
        (store.record_step, step("n1", session_id="nope"), "srbn_step_records"),
        (store.record_correction_attempt, attempt("n1", 1, "nope"), "correction_attempts"),
    ]
    for write, record, table in writes:
        with pytest.raises(ps.SessionNotFoundError) as info:
            write(record)
        assert (info.value.session_id, info.value.table) == ("nope", table)
        assert isinstance(info.value.__cause__, duckdb.Error)
        assert scalar(store, f"SELECT count(*) FROM {table}") == 0, table
    assert store.get_session("nope") is None


CALLS_AFTER_CLOSE: dict[str, Any] = {
    "record_llm_request": lambda s: s.record_llm_request(llm("s1")),
    "get_llm_requests": lambda s: s.get_llm_requests("s1"),
    "get_global_llm_summary": lambda s: s.get_global_llm_summary(),
    "record_step": lambda s: s.record_step(step("n1", session_id="s1")),
    "get_step_timeline": lambda s: s.get_step_timeline("s1", "n1"),
    "get_session_steps": lambda s: s.get_session_steps("s1"),
    "record_correction_attempt": lambda s: s.record_correction_attempt(attempt("n1", 1, "s1")),
    "get_correction_attempts": lambda s: s.get_correction_attempts("s1", "n1"),
    "get_session_correction_attempts": lambda s: s.get_session_correction_attempts("s1"),
}


def test_every_telemetry_method_raises_store_closed_error_after_close(
    store: ps.SessionStore,
) -> None:
    add_session(store, "s1")
    store.close()
    assert_all_raise_closed(store, CALLS_AFTER_CLOSE)


def test_telemetry_engine_failures_surface_as_store_errors(
    store: ps.SessionStore, session: str
) -> None:
    """A corrupt row (NULL in a nullable column the model types as int) and a missing table
    raise StoreError, chained to the engine's error where there is one; never a raw duckdb
    exception, and never a made-up default (D8)."""
    store.record_llm_request(llm(tokens_in=5))
    rows(store, "UPDATE llm_requests SET tokens_in = NULL")
    with pytest.raises(ps.StoreError) as corrupt:
        store.get_llm_requests(session)
    assert corrupt.value.table == "llm_requests"
    rows(store, "DROP TABLE srbn_step_records")
    for call in (
        lambda: store.get_session_steps(session),
        lambda: store.get_step_timeline(session, "n1"),
        lambda: store.record_step(step("n1")),
    ):
        with pytest.raises(ps.StoreError) as info:
            call()
        assert isinstance(info.value.__cause__, duckdb.Error)

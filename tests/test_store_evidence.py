"""Evidence family: ``structural_digests``, ``context_provenance``, ``escalation_reports``,
``rewrite_records``, ``sheaf_validations``.

Every store test runs on an in-memory store and on a file store (the ``store`` fixture). A
store costs ~0.1 s to create, so related cases share one test and one store.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import duckdb
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import perspt_store as ps
from conftest import add_session, assert_all_raise_closed, rows, scalar

HASH32 = bytes(range(32))

# The store fixture is shared by a test's examples, so each example isolates itself.
PROPERTY = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def digest(node_id: str = "n1", session_id: str = "test-session",
           **fields: Any) -> ps.StructuralDigestRecord:  # fmt: skip
    fields.setdefault("digest_id", f"sd-{node_id}-1")
    fields.setdefault("source_path", "src/lib.rs")
    fields.setdefault("artifact_kind", "source")
    fields.setdefault("hash", HASH32)
    return ps.StructuralDigestRecord(session_id=session_id, node_id=node_id, **fields)


def provenance(node_id: str = "n1", session_id: str = "test-session",
               **fields: Any) -> ps.ContextProvenanceRecord:  # fmt: skip
    fields.setdefault("context_package_id", f"ctx-{node_id}")
    return ps.ContextProvenanceRecord(session_id=session_id, node_id=node_id, **fields)


def escalation(node_id: str = "n1", session_id: str = "test-session",
               **fields: Any) -> ps.EscalationReportRecord:  # fmt: skip
    fields.setdefault("category", "ComplexityExceeded")
    fields.setdefault("action", '{"Split":{"into":2}}')
    return ps.EscalationReportRecord(session_id=session_id, node_id=node_id, **fields)


def rewrite(node_id: str = "n1", session_id: str = "test-session",
            **fields: Any) -> ps.RewriteRecordRow:  # fmt: skip
    fields.setdefault("action", '{"Split":{"into":2}}')
    fields.setdefault("category", "ComplexityExceeded")
    return ps.RewriteRecordRow(session_id=session_id, node_id=node_id, **fields)


def sheaf(node_id: str = "n1", session_id: str = "test-session",
          **fields: Any) -> ps.SheafValidationRow:  # fmt: skip
    fields.setdefault("validator_class", "ExportImportConsistency")
    fields.setdefault("passed", True)
    return ps.SheafValidationRow(session_id=session_id, node_id=node_id, **fields)


# --- structural_digests --------------------------------------------------------------------


def test_structural_digest_round_trips_hash_bytes_and_version(
    store: ps.SessionStore, session: str
) -> None:
    """D3/D4: the stored 32 hash bytes and version 7 come back (upstream returned an empty
    hash and failed outright on the version column)."""
    record = digest(digest_id="sd-n1-abc", source_path="src/a.rs", artifact_kind="ast",
                    hash=HASH32, version=7)  # fmt: skip
    assert (record.id, record.created_at) == (None, None)
    store.record_structural_digest(record)
    (got,) = store.get_structural_digests(session, "n1")
    assert got == record
    assert (got.digest_id, got.source_path, got.artifact_kind) == ("sd-n1-abc", "src/a.rs", "ast")
    assert (got.hash, got.version) == (HASH32, 7)
    assert isinstance(got.id, int)
    assert isinstance(got.created_at, dt.datetime)
    assert scalar(store, "SELECT octet_length(hash) FROM structural_digests") == 32


def test_structural_digests_in_insertion_order_per_node_with_raw_hashes(
    store: ps.SessionStore, session: str
) -> None:
    other = add_session(store, "other")
    hashes = [b"", b"abcdef0123456789", bytes(range(256)), b"\\x00", HASH32]
    with store.transaction():
        for i, h in enumerate(hashes):
            store.record_structural_digest(digest(digest_id="same-id", hash=h, version=i))
        store.record_structural_digest(digest("n2"))
        store.record_structural_digest(digest(session_id=other))
    got = store.get_structural_digests(session, "n1")
    assert [d.hash for d in got] == hashes  # hex-looking bytes are not decoded
    assert [d.version for d in got] == [0, 1, 2, 3, 4]
    assert [d.digest_id for d in got] == ["same-id"] * 5  # not unique
    assert store.get_structural_digests(session, "n2") == [digest("n2")]
    assert store.get_structural_digests(session, "n2")[0].version == 1  # the default
    assert store.get_structural_digests(other, "n1") == [digest(session_id=other)]
    assert store.get_structural_digests(session, "n9") == []


@pytest.mark.parametrize(
    "fields",
    [{"version": 2**31}, {"version": -(2**31) - 1}, {"hash": "00" * 32}, {"hash": None}],
    ids=["version-overflow", "version-underflow", "hex-text-hash", "no-hash"],
)
def test_structural_digest_rejects_values_its_columns_cannot_hold(fields: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        digest(**fields)


# --- context_provenance --------------------------------------------------------------------


def test_context_provenance_round_trips_every_field_incl_empty_lists(
    store: ps.SessionStore, session: str
) -> None:
    record = provenance(
        context_package_id="ctx-42",
        structural_hashes=[f"sd-1:{HASH32.hex()}", f"sd-2:{'ab' * 32}"],
        summary_hashes=[f"sum-1:{'cd' * 32}"],
        dependency_hashes=["dep:00ff", "dép-ñ:1"],
        included_file_count=12,
        total_bytes=2**31 - 1,
    )
    store.record_context_provenance(record)
    got = store.get_context_provenance(session, "n1")
    assert got == record
    assert got is not None
    assert got.structural_hashes == [f"sd-1:{HASH32.hex()}", f"sd-2:{'ab' * 32}"]
    assert got.summary_hashes == [f"sum-1:{'cd' * 32}"]
    assert got.dependency_hashes == ["dep:00ff", "dép-ñ:1"]
    assert (got.context_package_id, got.included_file_count, got.total_bytes) == (
        "ctx-42",
        12,
        2**31 - 1,
    )
    assert isinstance(got.id, int) and isinstance(got.created_at, dt.datetime)
    assert scalar(store, "SELECT dependency_hashes FROM context_provenance") == (
        '["dep:00ff","dép-ñ:1"]'
    )
    # Empty lists (the defaults) round-trip as '[]', never NULL.
    empty = provenance("n2", structural_hashes=[], summary_hashes=[], dependency_hashes=[])
    assert empty == provenance("n2")
    store.record_context_provenance(empty)
    got = store.get_context_provenance(session, "n2")
    assert got == empty
    assert got is not None
    assert (got.structural_hashes, got.summary_hashes, got.dependency_hashes) == ([], [], [])
    assert (got.included_file_count, got.total_bytes) == (0, 0)
    assert rows(
        store,
        "SELECT structural_hashes, summary_hashes, dependency_hashes FROM context_provenance "
        "WHERE node_id = 'n2'",
    ) == [("[]", "[]", "[]")]


def test_context_provenance_latest_is_the_last_inserted_even_within_one_transaction(
    store: ps.SessionStore, session: str
) -> None:
    """D9: three rows for one node in one transaction tie on created_at; the last wins."""
    other = add_session(store, "other")
    assert store.get_context_provenance(session, "n1") is None
    with store.transaction():
        for i in range(3):
            store.record_context_provenance(provenance(context_package_id=f"p{i}"))
        store.record_context_provenance(provenance("n2", context_package_id="n2-only"))
        store.record_context_provenance(provenance(session_id=other, context_package_id="x"))
    stamps = {r[0] for r in rows(store, "SELECT created_at FROM context_provenance")}
    assert len(stamps) == 1  # the tie really happens
    latest = store.get_context_provenance(session, "n1")
    assert latest is not None and latest.context_package_id == "p2"
    n2 = store.get_context_provenance(session, "n2")
    assert n2 is not None and n2.context_package_id == "n2-only"
    theirs = store.get_context_provenance(other, "n1")
    assert theirs is not None and theirs.context_package_id == "x"
    store.record_context_provenance(provenance(context_package_id="p3"))
    latest = store.get_context_provenance(session, "n1")
    assert latest is not None and latest.context_package_id == "p3"
    assert store.get_context_provenance(session, "n9") is None


@pytest.mark.parametrize("field", ["total_bytes", "included_file_count"])
def test_context_provenance_rejects_counts_over_32_bits(field: str) -> None:
    """D22: 3 GiB does not fit the INTEGER column; it is refused, never wrapped."""
    with pytest.raises(pydantic.ValidationError):
        provenance(**{field: 3 * 2**30})
    with pytest.raises(pydantic.ValidationError):
        provenance(**{field: -(2**31) - 1})
    assert getattr(provenance(**{field: 2**31 - 1}), field) == 2**31 - 1


def test_context_provenance_rejects_non_list_hashes() -> None:
    for bad in ("a,b", '["a"]', [1, 2], None):
        with pytest.raises(pydantic.ValidationError):
            provenance(structural_hashes=bad)
    assert provenance(summary_hashes=("a", "b")).summary_hashes == ["a", "b"]


# --- escalation_reports --------------------------------------------------------------------


def test_escalation_report_round_trips_every_field(store: ps.SessionStore, session: str) -> None:
    record = escalation(
        category="SheafInconsistency",
        action='{ "Requeue" : {"nodes": ["n2"] } }',  # opaque: kept byte for byte
        energy_snapshot='{"v_syn":0.1,"v_total":0.42}',
        stage_outcomes='[{"stage":"verify","ok":false}]',
        evidence="3 failing tests — see log ✗",
        affected_node_ids=["n2", "n3"],
    )
    store.record_escalation_report(record)
    store.record_escalation_report(escalation("n2"))
    full, defaults = store.get_escalation_reports(session)
    assert full == record
    assert (full.category, full.action) == (
        "SheafInconsistency",
        '{ "Requeue" : {"nodes": ["n2"] } }',
    )
    assert (full.energy_snapshot, full.stage_outcomes) == (
        '{"v_syn":0.1,"v_total":0.42}',
        '[{"stage":"verify","ok":false}]',
    )
    assert (full.evidence, full.affected_node_ids) == ("3 failing tests — see log ✗", ["n2", "n3"])
    assert isinstance(full.id, int) and isinstance(full.created_at, dt.datetime)
    assert (defaults.energy_snapshot, defaults.stage_outcomes, defaults.evidence) == ("", "", "")
    assert defaults.affected_node_ids == []
    assert defaults == escalation("n2")


def test_escalation_reports_filter_by_node_in_insertion_order(
    store: ps.SessionStore, session: str
) -> None:
    other = add_session(store, "other")
    with store.transaction():
        for node_id, evidence in [("n1", "a"), ("n2", "b"), ("n1", "c")]:
            store.record_escalation_report(escalation(node_id, evidence=evidence))
        store.record_escalation_report(escalation(session_id=other, evidence="theirs"))
    store.record_escalation_report(escalation("n2", evidence="d"))
    assert [r.evidence for r in store.get_escalation_reports(session)] == ["a", "b", "c", "d"]
    assert [r.evidence for r in store.get_escalation_reports(session, None)] == [
        "a",
        "b",
        "c",
        "d",
    ]
    assert [r.evidence for r in store.get_escalation_reports(session, "n1")] == ["a", "c"]
    assert [r.evidence for r in store.get_escalation_reports(session, node_id="n2")] == ["b", "d"]
    assert store.get_escalation_reports(session, "n9") == []
    assert store.get_escalation_reports(session, "") == []
    assert [r.evidence for r in store.get_escalation_reports(other)] == ["theirs"]
    assert store.get_escalation_reports("nope") == []


# --- rewrite_records -----------------------------------------------------------------------


def test_rewrite_records_round_trip_in_insertion_order(
    store: ps.SessionStore, session: str
) -> None:
    other = add_session(store, "other")
    first = rewrite(
        "task1",
        action='{"Split":{"into":["task1__a","task1__b"]}}',
        category="ComplexityExceeded",
        requeued_nodes=["task2"],
        inserted_nodes=["task1__a", "task1__b"],
    )
    second = rewrite("task2", requeued_nodes=[], inserted_nodes=[])
    with store.transaction():
        store.record_rewrite(first)
        store.record_rewrite(rewrite(session_id=other))
        store.record_rewrite(second)
    got = store.get_rewrite_records(session)
    assert got == [first, second]
    assert (got[0].requeued_nodes, got[0].inserted_nodes) == (["task2"], ["task1__a", "task1__b"])
    assert (got[1].requeued_nodes, got[1].inserted_nodes) == ([], [])
    assert got[0].action == '{"Split":{"into":["task1__a","task1__b"]}}'
    assert isinstance(got[0].id, int) and isinstance(got[0].created_at, dt.datetime)
    assert got[0].id < got[1].id  # type: ignore[operator]
    assert store.get_rewrite_records(other) == [rewrite(session_id=other)]
    assert store.get_rewrite_records("nope") == []


def test_count_lineage_rewrites_counts_the_node_and_its_derived_nodes_only(
    store: ps.SessionStore, session: str
) -> None:
    """D21: 'task1' counts task1 and task1__*, not task10; LIKE wildcards are literal."""
    other = add_session(store, "other")
    store.record_rewrite(rewrite("task1"))
    store.record_rewrite(rewrite("task10"))
    assert store.count_lineage_rewrites(session, "task1") == 1
    assert store.count_lineage_rewrites(session, "task10") == 1
    store.record_rewrite(rewrite("task1__split"))
    assert store.count_lineage_rewrites(session, "task1") == 2
    assert store.count_lineage_rewrites(session, "task1__split") == 1
    for node_id in ["task1__split__b", "task1_x", "xtask1", "t%", "t_", "tx"]:
        store.record_rewrite(rewrite(node_id))
    store.record_rewrite(rewrite("task1", session_id=other))
    assert store.count_lineage_rewrites(session, "task1") == 3
    assert store.count_lineage_rewrites(session, "task10") == 1
    assert store.count_lineage_rewrites(session, "task1__split") == 2
    assert store.count_lineage_rewrites(session, "task1__split__b") == 1
    assert store.count_lineage_rewrites(session, "t%") == 1
    assert store.count_lineage_rewrites(session, "t_") == 1
    assert store.count_lineage_rewrites(session, "task") == 0
    assert store.count_lineage_rewrites(session, "nope") == 0
    assert store.count_lineage_rewrites(other, "task1") == 1
    assert store.count_lineage_rewrites("nope", "task1") == 0
    assert type(store.count_lineage_rewrites(session, "task1")) is int


# --- sheaf_validations ---------------------------------------------------------------------


def test_sheaf_validation_passed_round_trips_through_both_getters(
    store: ps.SessionStore, session: str
) -> None:
    """D5: upstream failed to read `passed` whenever a row existed; here both getters return
    the native booleans."""
    passed = sheaf(passed=True)
    failed = sheaf(passed=False, validator_class="TypeCompat")
    store.record_sheaf_validation(passed)
    store.record_sheaf_validation(failed)
    assert store.get_sheaf_validations(session, "n1") == [passed, failed]
    assert store.get_all_sheaf_validations(session) == [passed, failed]
    assert [v.passed for v in store.get_all_sheaf_validations(session)] == [True, False]
    assert all(type(v.passed) is bool for v in store.get_sheaf_validations(session, "n1"))
    assert scalar(store, "SELECT DISTINCT typeof(passed) FROM sheaf_validations") == "BOOLEAN"


def test_sheaf_validation_round_trips_every_field(store: ps.SessionStore, session: str) -> None:
    record = sheaf(
        validator_class="ExportImportConsistency",
        plugin_source="rust-analyzer",
        passed=False,
        evidence_summary="missing export `Foo` — 2 importers",
        affected_files=["src/lib.rs", "src/ñ.rs"],
        v_sheaf_contribution=0.42,
        requeue_targets=["n2"],
    )
    bare = sheaf("n2")
    store.record_sheaf_validation(record)
    store.record_sheaf_validation(bare)
    got = store.get_sheaf_validations(session, "n1")
    assert got == [record]
    assert got[0].v_sheaf_contribution == 0.42  # DOUBLE: exact, not float32
    assert (got[0].plugin_source, got[0].evidence_summary) == (
        "rust-analyzer",
        "missing export `Foo` — 2 importers",
    )
    assert (got[0].affected_files, got[0].requeue_targets) == (["src/lib.rs", "src/ñ.rs"], ["n2"])
    assert isinstance(got[0].id, int) and isinstance(got[0].created_at, dt.datetime)
    (defaults,) = store.get_sheaf_validations(session, "n2")
    assert defaults == bare
    assert (defaults.plugin_source, defaults.evidence_summary) == (None, "")
    assert (defaults.affected_files, defaults.requeue_targets) == ([], [])
    assert defaults.v_sheaf_contribution == 0.0
    # D6: upstream wrote a None plugin_source as '' and read '' back as None.
    for source in (None, "", "plugin"):
        store.record_sheaf_validation(sheaf("n3", plugin_source=source))
    assert [v.plugin_source for v in store.get_sheaf_validations(session, "n3")] == [
        None,
        "",
        "plugin",
    ]
    assert rows(
        store,
        "SELECT plugin_source IS NULL FROM sheaf_validations WHERE node_id = 'n3' ORDER BY id",
    ) == [(True,), (False,), (False,)]


def test_sheaf_validations_in_insertion_order_filtered_by_node(
    store: ps.SessionStore, session: str
) -> None:
    other = add_session(store, "other")
    with store.transaction():
        for node_id, validator in [("n2", "a"), ("n1", "b"), ("n2", "c")]:
            store.record_sheaf_validation(sheaf(node_id, validator_class=validator))
        store.record_sheaf_validation(sheaf(session_id=other, validator_class="theirs"))
    store.record_sheaf_validation(sheaf("n1", validator_class="d"))
    all_rows = store.get_all_sheaf_validations(session)
    assert [(v.node_id, v.validator_class) for v in all_rows] == [
        ("n2", "a"),
        ("n1", "b"),
        ("n2", "c"),
        ("n1", "d"),
    ]
    assert [v.validator_class for v in store.get_sheaf_validations(session, "n2")] == ["a", "c"]
    assert [v.validator_class for v in store.get_sheaf_validations(session, "n1")] == ["b", "d"]
    assert [v.validator_class for v in store.get_all_sheaf_validations(other)] == ["theirs"]
    assert store.get_sheaf_validations(session, "n9") == []
    assert store.get_all_sheaf_validations("nope") == []


@pytest.mark.parametrize(
    "fields",
    [
        {"passed": 1},
        {"passed": "true"},
        {"passed": None},
        {"v_sheaf_contribution": float("nan")},
        {"v_sheaf_contribution": 1e39},
        {"affected_files": "a.rs"},
    ],
    ids=["passed-int", "passed-str", "passed-none", "nan", "huge", "list-as-str"],
)
def test_sheaf_validation_rejects_values_its_columns_cannot_hold(fields: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        sheaf(**fields)


# --- D30: rows written by other tools ------------------------------------------------------

NULL_TEXT_INSERTS = [
    "INSERT INTO context_provenance (session_id, node_id, context_package_id, structural_hashes,"
    " summary_hashes, dependency_hashes) VALUES ('test-session', 'n1', 'ctx', NULL, NULL, NULL)",
    "INSERT INTO escalation_reports (session_id, node_id, category, action, energy_snapshot,"
    " stage_outcomes, evidence, affected_node_ids)"
    " VALUES ('test-session', 'n1', 'cat', '{}', NULL, NULL, NULL, NULL)",
    "INSERT INTO rewrite_records (session_id, node_id, action, category, requeued_nodes,"
    " inserted_nodes) VALUES ('test-session', 'n1', '{}', 'cat', NULL, NULL)",
    "INSERT INTO sheaf_validations (session_id, node_id, validator_class, plugin_source, passed,"
    " evidence_summary, affected_files, requeue_targets)"
    " VALUES ('test-session', 'n1', 'V', NULL, true, NULL, NULL, NULL)",
]


def test_nulls_in_nullable_text_columns_read_as_empty_values(
    store: ps.SessionStore, session: str
) -> None:
    """D30: a NULL in any nullable TEXT column (written by another tool) does not break the
    getters: text reads as '', lists as [], optional text as None."""
    for insert in NULL_TEXT_INSERTS:
        assert rows(store, insert) == [(1,)]
    got_provenance = store.get_context_provenance(session, "n1")
    assert got_provenance == provenance(context_package_id="ctx")
    (got_escalation,) = store.get_escalation_reports(session)
    assert got_escalation == escalation(category="cat", action="{}")
    assert (got_escalation.energy_snapshot, got_escalation.stage_outcomes) == ("", "")
    assert (got_escalation.evidence, got_escalation.affected_node_ids) == ("", [])
    (got_rewrite,) = store.get_rewrite_records(session)
    assert got_rewrite == rewrite(action="{}", category="cat")
    assert (got_rewrite.requeued_nodes, got_rewrite.inserted_nodes) == ([], [])
    expected_sheaf = sheaf(validator_class="V", passed=True)
    assert store.get_sheaf_validations(session, "n1") == [expected_sheaf]
    (got_sheaf,) = store.get_all_sheaf_validations(session)
    assert (got_sheaf.plugin_source, got_sheaf.evidence_summary) == (None, "")
    assert (got_sheaf.affected_files, got_sheaf.requeue_targets) == ([], [])
    # The counted getter is unaffected as well.
    assert store.count_lineage_rewrites(session, "n1") == 1


def test_empty_or_malformed_json_lists_read_as_empty_lists_and_are_logged(
    store: ps.SessionStore, session: str, caplog: pytest.LogCaptureFixture
) -> None:
    """SPEC §4 read tolerance: '' (upstream's failed serialisation) reads as [], and
    malformed JSON is logged and read as []."""
    rows(
        store,
        "INSERT INTO rewrite_records (session_id, node_id, action, category, requeued_nodes,"
        " inserted_nodes) VALUES ('test-session', 'n1', '{}', 'c', '', '[\"ok\"]'),"
        " ('test-session', 'n2', '{}', 'c', 'not json', '{\"a\": 1}'),"
        " ('test-session', 'n3', '{}', 'c', '[1, 2]', '[\"x\", null]')",
    )
    with caplog.at_level(logging.WARNING, logger="perspt_store"):
        got = store.get_rewrite_records(session)
    assert [(r.requeued_nodes, r.inserted_nodes) for r in got] == [
        ([], ["ok"]),
        ([], []),
        ([], []),
    ]
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "rewrite_records.requeued_nodes" in logged
    assert "rewrite_records.inserted_nodes" in logged


# --- properties ----------------------------------------------------------------------------

str_lists = st.lists(st.text(max_size=10), max_size=4)


@given(
    hashes=st.tuples(str_lists, str_lists, str_lists),
    counts=st.tuples(st.integers(-(2**31), 2**31 - 1), st.integers(-(2**31), 2**31 - 1)),
    blob=st.binary(max_size=64),
    passed=st.booleans(),
    source=st.none() | st.text(max_size=10),
)
@PROPERTY
def test_any_evidence_row_round_trips_exactly(
    store: ps.SessionStore,
    session: str,
    hashes: tuple[list[str], list[str], list[str]],
    counts: tuple[int, int],
    blob: bytes,
    passed: bool,
    source: str | None,
) -> None:
    record = provenance(
        structural_hashes=hashes[0],
        summary_hashes=hashes[1],
        dependency_hashes=hashes[2],
        included_file_count=counts[0],
        total_bytes=counts[1],
    )
    store.record_context_provenance(record)
    assert store.get_context_provenance(session, "n1") == record
    store.record_structural_digest(digest(hash=blob, version=counts[0]))
    assert store.get_structural_digests(session, "n1")[-1] == digest(hash=blob, version=counts[0])
    check = sheaf(passed=passed, plugin_source=source, affected_files=hashes[0],
                  requeue_targets=hashes[1])  # fmt: skip
    store.record_sheaf_validation(check)
    assert store.get_all_sheaf_validations(session)[-1] == check


# --- writes naming an unknown session, closed stores, engine errors -----------------------


def test_evidence_writes_for_an_unknown_session_raise_and_write_nothing(
    store: ps.SessionStore, session: str
) -> None:
    writes = [
        (store.record_structural_digest, digest(session_id="nope"), "structural_digests"),
        (store.record_context_provenance, provenance(session_id="nope"), "context_provenance"),
        (store.record_escalation_report, escalation(session_id="nope"), "escalation_reports"),
        (store.record_rewrite, rewrite(session_id="nope"), "rewrite_records"),
        (store.record_sheaf_validation, sheaf(session_id="nope"), "sheaf_validations"),
    ]
    for write, record, table in writes:
        with pytest.raises(ps.SessionNotFoundError) as info:
            write(record)
        assert (info.value.session_id, info.value.table) == ("nope", table)
        assert scalar(store, f"SELECT count(*) FROM {table}") == 0, table
    assert store.get_session("nope") is None


CALLS_AFTER_CLOSE: dict[str, Any] = {
    "record_structural_digest": lambda s: s.record_structural_digest(digest(session_id="s1")),
    "get_structural_digests": lambda s: s.get_structural_digests("s1", "n1"),
    "record_context_provenance": lambda s: s.record_context_provenance(provenance("n1", "s1")),
    "get_context_provenance": lambda s: s.get_context_provenance("s1", "n1"),
    "record_escalation_report": lambda s: s.record_escalation_report(escalation("n1", "s1")),
    "get_escalation_reports": lambda s: s.get_escalation_reports("s1"),
    "get_escalation_reports(node)": lambda s: s.get_escalation_reports("s1", "n1"),
    "record_rewrite": lambda s: s.record_rewrite(rewrite("n1", "s1")),
    "get_rewrite_records": lambda s: s.get_rewrite_records("s1"),
    "count_lineage_rewrites": lambda s: s.count_lineage_rewrites("s1", "n1"),
    "record_sheaf_validation": lambda s: s.record_sheaf_validation(sheaf("n1", "s1")),
    "get_sheaf_validations": lambda s: s.get_sheaf_validations("s1", "n1"),
    "get_all_sheaf_validations": lambda s: s.get_all_sheaf_validations("s1"),
}


def test_every_evidence_method_raises_store_closed_error_after_close(
    store: ps.SessionStore,
) -> None:
    add_session(store, "s1")
    store.close()
    assert_all_raise_closed(store, CALLS_AFTER_CLOSE)


def test_evidence_engine_failures_surface_as_store_errors(
    store: ps.SessionStore, session: str
) -> None:
    """A NULL in a nullable column the model types as int is reported, not read as a made-up
    default (D8); a missing table raises StoreError chained to the engine's error."""
    store.record_structural_digest(digest(version=3))
    rows(store, "UPDATE structural_digests SET version = NULL")
    with pytest.raises(ps.StoreError) as corrupt:
        store.get_structural_digests(session, "n1")
    assert corrupt.value.table == "structural_digests"
    assert not isinstance(corrupt.value, duckdb.Error)
    rows(store, "DROP TABLE sheaf_validations")
    for call in (
        lambda: store.get_sheaf_validations(session, "n1"),
        lambda: store.get_all_sheaf_validations(session),
        lambda: store.record_sheaf_validation(sheaf()),
    ):
        with pytest.raises(ps.StoreError) as info:
            call()
        assert isinstance(info.value.__cause__, duckdb.Error)
        assert not isinstance(info.value, duckdb.Error)

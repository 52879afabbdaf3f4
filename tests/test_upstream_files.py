"""Files written by upstream perspt-store (Rust 0.6.2, and an 0.5-era layout) open, migrate in
place and read back decoded (SPEC §7); rows written afterwards round-trip exactly."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

import perspt_store as ps
from upstream_files import (
    MISSING_IN_05,
    NODE_STATES_LATER_COLUMNS,
    READERS,
    REAL_COLUMNS,
    SEQUENCED,
    SESSION_A,
    SESSION_B,
    TABLES_062,
    UpstreamFile,
    edge_case_rows,
    f32,
    group_like_readers,
    read_like,
    read_table,
    write_row,
    write_upstream_05,
    write_upstream_062,
)

# --- helpers ------------------------------------------------------------------------------


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(path: Path) -> dict[str, Any]:
    """The catalog and the full contents of every table, read with raw DuckDB (read-only)."""
    conn = duckdb.connect(str(path), read_only=True)
    try:
        out: dict[str, Any] = {
            "columns": conn.execute(
                "SELECT table_name, column_index, column_name, data_type, is_nullable, "
                "column_default FROM duckdb_columns() ORDER BY ALL"
            ).fetchall(),
            "indexes": conn.execute(
                "SELECT index_name, table_name, sql FROM duckdb_indexes() ORDER BY ALL"
            ).fetchall(),
            "sequences": conn.execute(
                "SELECT sequence_name, last_value FROM duckdb_sequences() ORDER BY ALL"
            ).fetchall(),
        }
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
        for table in tables:
            rows = conn.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
            out[table] = hashlib.sha256(repr(rows).encode()).hexdigest()
        return out
    finally:
        conn.close()


def raw(path: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    conn = duckdb.connect(str(path), read_only=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def column_types(path: Path) -> dict[tuple[str, str], tuple[int, str, bool]]:
    rows = raw(path, "SELECT table_name, column_name, column_index, data_type, is_nullable "
                     "FROM duckdb_columns()")
    return {(t, c): (i, dt, n) for t, c, i, dt, n in rows}


def meta(path: Path) -> dict[str, str]:
    return dict(raw(path, "SELECT key, value FROM perspt_store_meta"))


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template_062(tmp_path_factory: pytest.TempPathFactory) -> UpstreamFile:
    return write_upstream_062(tmp_path_factory.mktemp("u062") / "perspt.db")


@pytest.fixture(scope="module")
def template_05(tmp_path_factory: pytest.TempPathFactory) -> UpstreamFile:
    return write_upstream_05(tmp_path_factory.mktemp("u05") / "perspt.db")


def copy_of(template: UpstreamFile, directory: Path) -> UpstreamFile:
    path = directory / "perspt.db"
    shutil.copyfile(template.path, path)
    return dataclasses.replace(template, path=path)


@pytest.fixture(scope="module")
def migrated_062(
    template_062: UpstreamFile, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[UpstreamFile, ps.SessionStore]]:
    """An upstream 0.6.2 file opened (and so migrated) read-write; tests only read it."""
    uf = copy_of(template_062, tmp_path_factory.mktemp("migrated"))
    with ps.SessionStore.open(uf.path) as store:
        yield uf, store


@pytest.fixture
def upstream_062(template_062: UpstreamFile, tmp_path: Path) -> UpstreamFile:
    """A fresh, unmigrated upstream 0.6.2 file."""
    return copy_of(template_062, tmp_path)


@pytest.fixture
def upstream_05(template_05: UpstreamFile, tmp_path: Path) -> UpstreamFile:
    """A fresh 0.5-era file."""
    return copy_of(template_05, tmp_path)


def assert_reads_expected(store: ps.SessionStore, uf: UpstreamFile, table: str) -> None:
    expected = uf.rows(table)
    assert expected, f"the fixture has no {table} rows"
    assert read_table(store, table, expected) == group_like_readers(table, expected)


# --- upstream 0.6.2 files: opened read-write ----------------------------------------------


@pytest.mark.parametrize("table", [t for t in TABLES_062 if t != "branch_lineage"])
def test_every_upstream_row_reads_back_decoded(
    migrated_062: tuple[UpstreamFile, ps.SessionStore], table: str
) -> None:
    uf, store = migrated_062
    assert_reads_expected(store, uf, table)


def test_upstream_lineage_rows_read_back_without_a_session(
    migrated_062: tuple[UpstreamFile, ps.SessionStore],
) -> None:
    uf, store = migrated_062
    children = [r.child_branch_id for r in uf.rows("branch_lineage")]
    assert store.get_child_branches("iface_api") == children[:1]
    assert store.get_child_branches("root") == children[1:]
    # Upstream rows have no session: the new column is NULL, so no session claims them.
    assert store.get_branch_lineage(SESSION_A) == []
    assert store.sql(
        "SELECT count(*) FROM branch_lineage WHERE session_id IS NULL").fetchall() == [(2,)]


def test_legacy_encodings_decode_per_spec_7_1(
    migrated_062: tuple[UpstreamFile, ps.SessionStore],
) -> None:
    """Spot checks written out by hand, independent of the fixture's expectations."""
    _, store = migrated_062
    seal = hashlib.sha256(b"iface_api seal").digest()
    # Hex text in a BLOB -> the 32 bytes; '' -> None; an empty blob -> None.
    a, b = store.get_session(SESSION_A), store.get_session(SESSION_B)
    assert a is not None and b is not None
    assert (a.merkle_root, a.detected_toolchain, a.status) == (seal, None, "COMPLETED")
    assert (b.merkle_root, b.detected_toolchain) == (None, "cargo")
    pre, iface, impl1, impl2 = store.get_node_states(SESSION_A)
    assert iface.merkle_hash == seal and pre.merkle_hash is None and impl1.merkle_hash is None
    # The snapshot from before the phase-8 migration: NULL in the seven later columns.
    assert [getattr(pre, c) for c, _ in NODE_STATES_LATER_COLUMNS] == [None] * 7
    assert iface.last_error_type is None  # '' -> None
    assert (iface.children, impl1.children, impl2.children) == (["impl_divide"], [], None)
    assert iface.v_total == 0.41999998688697815  # REAL: float32 rounding is kept
    llm = store.get_llm_requests(SESSION_A)
    assert [r.node_id for r in llm] == ["iface_api", None]
    assert (llm[1].prompt, llm[1].response) == ("", "")  # usage-only rows stay ''
    # Reviews: upstream's 0.0/false placeholders and '' read as None; real values survive.
    approved, rejected, edited = store.get_all_review_outcomes(SESSION_A)
    assert (approved.reviewer_note, approved.energy_at_review, approved.degraded,
            approved.escalation_category) == ("LGTM", None, None, None)
    assert (rejected.reviewer_note, rejected.energy_at_review, rejected.degraded,
            rejected.escalation_category) == (None, 0.42, True, "complexity")
    assert (edited.energy_at_review, edited.degraded) == (None, None)
    ok = store.get_verification_result(SESSION_A, "iface_api")
    degraded = store.get_verification_result(SESSION_A, "impl_divide")
    assert ok is not None and degraded is not None
    assert (ok.syntax_ok, ok.build_ok, ok.tests_ok, ok.lint_ok) == (True, True, False, True)
    assert (ok.tests_passed, ok.tests_failed, ok.degraded_reason) == (5, 1, None)
    assert (degraded.degraded, degraded.degraded_reason) == (True, "LSP unavailable")
    # A list upstream failed to serialise ('') reads as [].
    prov = store.get_context_provenance(SESSION_A, "impl_divide")
    assert prov is not None and prov.structural_hashes == []
    assert store.get_escalation_reports(SESSION_B)[0].affected_node_ids == []
    seals = store.get_interface_seals(SESSION_A, "iface_api")
    assert [s.seal_hash for s in seals] == [hashlib.sha256(b"iface_api seal v1").digest(), seal]
    digests = store.get_structural_digests(SESSION_A, "impl_divide")
    assert [(len(d.hash), d.version) for d in digests] == [(20, 7)]
    branches = store.get_provisional_branches(SESSION_A)
    assert [(br.parent_seal_hash, br.sandbox_dir) for br in branches] == [
        (None, None), (seal, "/tmp/perspt/sandbox/impl_divide")]
    sheaf = store.get_all_sheaf_validations(SESSION_A)
    assert [(v.passed, v.plugin_source) for v in sheaf] == [(True, "rust"), (False, None)]
    assert sheaf[1].v_sheaf_contribution == f32(0.75) == 0.75


def test_migration_widens_energy_columns_to_double_and_keeps_their_values(
    upstream_062: UpstreamFile,
) -> None:
    before = raw(upstream_062.path, "SELECT id, v_syn, v_str, v_log, v_boot, v_sheaf, v_total "
                                    "FROM energy_history ORDER BY id")
    ps.SessionStore.open(upstream_062.path).close()
    types = column_types(upstream_062.path)
    for table, columns in REAL_COLUMNS.items():
        for column in columns:
            assert types[(table, column)][1] == "DOUBLE", (table, column)
    after = raw(upstream_062.path, "SELECT id, v_syn, v_str, v_log, v_boot, v_sheaf, v_total "
                                   "FROM energy_history ORDER BY id")
    assert after == before  # float32 values widen exactly
    assert after[0][-1] == f32(0.42)


def test_migration_keeps_every_upstream_column_and_only_adds_nullable_ones(
    upstream_062: UpstreamFile,
) -> None:
    before = column_types(upstream_062.path)
    ps.SessionStore.open(upstream_062.path).close()
    after = column_types(upstream_062.path)
    for (table, column), (index, dtype, nullable) in before.items():
        widened = dtype == "FLOAT" and column in REAL_COLUMNS.get(table, ())
        assert after[(table, column)] == (index, "DOUBLE" if widened else dtype, nullable)
    added = {key: value for key, value in after.items() if key not in before}
    in_upstream_tables = {k: v for k, v in added.items() if k[0] in TABLES_062}
    ordered = ("sessions", "feature_charters", "plan_revisions", "budget_envelopes")
    last = {t: max(i for (table, _), (i, _, _) in before.items() if table == t) for t in ordered}
    assert in_upstream_tables == {
        ("branch_lineage", "session_id"): (7, "VARCHAR", True),
        **{(t, "row_order"): (last[t] + 1, "BIGINT", True) for t in ordered},
        ("node_states", "merkle_commit"): (16, "BLOB", True),  # a row's own log entry
    }
    node_columns = sorted((i, c) for (t, c), (i, _, _) in after.items() if t == "node_states")
    assert [c for _, c in node_columns][-8:-1] == [c for c, _ in NODE_STATES_LATER_COLUMNS]
    assert len(node_columns) == 16


def test_migration_records_schema_version_and_legacy_high_water_marks(
    upstream_062: UpstreamFile,
) -> None:
    assert "perspt_store_meta" not in {t for (t, _) in column_types(upstream_062.path)}
    with ps.SessionStore.open(upstream_062.path) as store:
        assert store.schema_version == ps.SCHEMA_VERSION
    recorded = meta(upstream_062.path)
    assert recorded["schema_version"] == str(ps.SCHEMA_VERSION)
    for table in SEQUENCED:
        assert recorded[f"legacy_max_id:{table}"] == str(upstream_062.max_ids[table]), table
    assert recorded["legacy_max_rowid:sessions"] == "1"  # two upstream sessions: rowids 0, 1


def test_rows_written_after_migration_round_trip_exactly_and_continue_the_sequences(
    upstream_062: UpstreamFile,
) -> None:
    """New rows sit next to upstream's in the same session and node; each is decoded by its
    own rule: '' stays '', 0.0/False stay, hex-looking bytes stay raw."""
    new_session = ps.SessionRecord(session_id="new-session", task="", working_dir="",
                                   merkle_root=b"00ff", detected_toolchain="", status="")
    rows = edge_case_rows(SESSION_A, "impl_divide", tag="new")
    with ps.SessionStore.open(upstream_062.path) as store:
        store.create_session(new_session)
        for row in rows.values():
            write_row(store, row)
    with ps.SessionStore.open(upstream_062.path) as store:
        assert store.get_session("new-session") == new_session
        for table, row in rows.items():
            got = read_like(store, row)
            assert got[-1] == row, table
            if table in SEQUENCED:
                # Sequences continue from upstream's last value (gaps included).
                assert got[-1].id == upstream_062.sequence_last[table] + 1, table
            # Upstream's rows beside the new one are still decoded with the legacy rules.
            scope = READERS[table][0]
            if scope != "latest" and table not in ("feature_charters", "budget_envelopes"):
                old = [r for r in upstream_062.rows(table, SESSION_A)
                       if scope == "session" or r.node_id == "impl_divide"]
                assert got[:-1] == group_like_readers(table, old), table


def test_the_llm_sequence_gap_left_by_a_failed_upstream_insert_is_not_reused(
    upstream_062: UpstreamFile,
) -> None:
    assert upstream_062.sequence_last["llm_requests"] > upstream_062.max_ids["llm_requests"]
    with ps.SessionStore.open(upstream_062.path) as store:
        store.record_llm_request(ps.LlmRequestRecord(session_id=SESSION_B, model="m"))
        ids = [r.id for r in store.get_llm_requests(SESSION_B)]
    assert ids[-1] == upstream_062.sequence_last["llm_requests"] + 1


def test_reopening_a_migrated_file_changes_nothing(upstream_062: UpstreamFile) -> None:
    ps.SessionStore.open(upstream_062.path).close()
    before, sha = fingerprint(upstream_062.path), file_sha(upstream_062.path)
    with ps.SessionStore.open(upstream_062.path) as store:
        assert store.schema_version == ps.SCHEMA_VERSION
        assert store.count_sessions() == 2
    assert fingerprint(upstream_062.path) == before
    assert file_sha(upstream_062.path) == sha


# --- upstream 0.6.2 files: opened read-only -----------------------------------------------


def test_open_read_only_decodes_an_unmigrated_file_without_writing_to_it(
    upstream_062: UpstreamFile,
) -> None:
    path = upstream_062.path
    sha, listing = file_sha(path), sorted(p.name for p in path.parent.iterdir())
    with ps.SessionStore.open_read_only(path) as store:
        for table in TABLES_062:
            if table != "branch_lineage":
                assert_reads_expected(store, upstream_062, table)
        assert store.get_child_branches("iface_api") == [
            upstream_062.rows("branch_lineage")[0].child_branch_id]
        with pytest.raises(ps.ReadOnlyStoreError):
            store.record_energy(ps.EnergyRecord(node_id="n", session_id=SESSION_A))
    assert file_sha(path) == sha
    assert sorted(p.name for p in path.parent.iterdir()) == listing  # no WAL, no lock file
    assert column_types(path)[("energy_history", "v_total")][1] == "FLOAT"


def test_open_read_only_on_an_unmigrated_file_reports_our_missing_column_clearly(
    upstream_062: UpstreamFile,
) -> None:
    with ps.SessionStore.open_read_only(upstream_062.path) as store:
        with pytest.raises(ps.StoreError, match=r"has no column 'session_id'.*read-write") as info:
            store.get_branch_lineage(SESSION_A)
    assert isinstance(info.value.__cause__, duckdb.Error)


# --- 0.5-era files ------------------------------------------------------------------------


def test_05_file_migrates_in_place_and_reads_back_decoded(upstream_05: UpstreamFile) -> None:
    (sid,) = upstream_05.session_ids
    with ps.SessionStore.open(upstream_05.path) as store:
        for table in upstream_05.tables:
            if table != "branch_lineage":
                if upstream_05.rows(table):
                    assert_reads_expected(store, upstream_05, table)
        states = store.get_node_states(sid)
        assert [s.node_id for s in states] == ["n1", "n2"]
        assert all(getattr(s, c) is None for s in states for c, _ in NODE_STATES_LATER_COLUMNS)
        assert states[0].merkle_hash == hashlib.sha256(b"n1 seal").digest()
        # The tables 0.5 lacked now exist, empty, and take new rows.
        assert store.get_all_review_outcomes(sid) == []
        assert store.get_budget_envelope(sid) is None
        assert store.get_session_steps(sid) == []
        rows = edge_case_rows(sid, "n2", tag="after")
        for table in MISSING_IN_05:
            write_row(store, rows[table])
            assert read_like(store, rows[table])[-1] == rows[table], table
        store.record_node_state(rows["node_states"])
        assert store.get_latest_node_states(sid)[-1] == rows["node_states"]
    tables = {t for (t, _) in column_types(upstream_05.path)}
    assert set(TABLES_062) <= tables
    assert meta(upstream_05.path)["legacy_max_id:node_states"] == "2"


@pytest.mark.parametrize(
    ("read", "missing"),
    [
        (lambda s, sid: s.get_all_review_outcomes(sid), "review_outcomes"),
        (lambda s, sid: s.get_verification_result(sid, "n1"), "verification_results"),
        (lambda s, sid: s.get_all_verification_results(sid), "verification_results"),
        (lambda s, sid: s.get_artifact_bundle(sid, "n1"), "artifact_bundles"),
        (lambda s, sid: s.get_feature_charter(sid), "feature_charters"),
        (lambda s, sid: s.get_plan_revisions(sid), "plan_revisions"),
        (lambda s, sid: s.get_all_repair_footprints(sid), "repair_footprints"),
        (lambda s, sid: s.get_budget_envelope(sid), "budget_envelopes"),
        (lambda s, sid: s.get_session_steps(sid), "srbn_step_records"),
        (lambda s, sid: s.get_session_correction_attempts(sid), "correction_attempts"),
        (lambda s, sid: s.get_task_graph_edges(sid), "task_graph_edges"),
    ],
)
def test_05_file_read_only_reading_a_missing_table_raises_a_clear_store_error(
    upstream_05: UpstreamFile, read: Any, missing: str
) -> None:
    (sid,) = upstream_05.session_ids
    sha = file_sha(upstream_05.path)
    with ps.SessionStore.open_read_only(upstream_05.path) as store:
        with pytest.raises(ps.StoreError) as info:
            read(store, sid)
        message = str(info.value)
        assert f"no table '{missing}'" in message
        assert "open it read-write" in message
        assert info.value.table == missing
        assert isinstance(info.value.__cause__, duckdb.CatalogException)
        # The store stays usable: the tables 0.5 had still read.
        assert store.get_session(sid) == upstream_05.rows("sessions")[0]
    assert file_sha(upstream_05.path) == sha


def test_05_file_read_only_reading_node_states_names_the_missing_column(
    upstream_05: UpstreamFile,
) -> None:
    (sid,) = upstream_05.session_ids
    with ps.SessionStore.open_read_only(upstream_05.path) as store:
        with pytest.raises(ps.StoreError, match="table 'node_states' has no column 'node_class'"):
            store.get_latest_node_states(sid)
        assert store.get_session_energy_history(sid) == upstream_05.rows("energy_history")

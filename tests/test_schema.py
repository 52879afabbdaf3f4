"""The schema: upstream 0.6.2's tables, sequences and indexes exactly (SPEC §3), our additive
objects, idempotent initialisation, transactional migrations, and clear errors for files that
are not (whole) DuckDB databases or are newer than this library."""

from __future__ import annotations

import hashlib
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import duckdb
import pytest

import perspt_store as ps
from perspt_store import schema
from upstream_files import (
    REAL_COLUMNS,
    UPSTREAM_INDEXES,
    edge_case_rows,
    write_row,
    write_upstream_05,
    write_upstream_062,
)

# SPEC §3, transcribed: column, type, null ("no" = primary key, NOT_NULL, yes), default
# ("-" none, SEQ = nextval('seq_<table>_id')), constraints. Types are upstream's spelling;
# TEXT is VARCHAR in DuckDB and the port stores REAL energies as DOUBLE.
SPEC_SCHEMA = """
sessions
    session_id            VARCHAR    no        -                  PK
    task                  TEXT       NOT_NULL  -
    working_dir           TEXT       NOT_NULL  -
    merkle_root           BLOB       yes       -
    detected_toolchain    VARCHAR    yes       -
    created_at            TIMESTAMP  yes       CURRENT_TIMESTAMP
    updated_at            TIMESTAMP  yes       CURRENT_TIMESTAMP
    status                VARCHAR    yes       'active'
node_states
    id                    INTEGER    no        SEQ                PK
    node_id               VARCHAR    NOT_NULL  -
    session_id            VARCHAR    NOT_NULL  -                  FK
    state                 VARCHAR    NOT_NULL  -
    v_total               REAL       yes       0.0
    merkle_hash           BLOB       yes       -
    attempt_count         INTEGER    yes       0
    created_at            TIMESTAMP  yes       CURRENT_TIMESTAMP
    node_class            VARCHAR    yes       -
    owner_plugin          VARCHAR    yes       -
    goal                  TEXT       yes       -
    parent_id             VARCHAR    yes       -
    children              TEXT       yes       -
    last_error_type       VARCHAR    yes       -
    committed_at          VARCHAR    yes       -
energy_history
    id                    INTEGER    no        SEQ                PK
    node_id               VARCHAR    NOT_NULL  -
    session_id            VARCHAR    NOT_NULL  -                  FK
    timestamp             TIMESTAMP  yes       CURRENT_TIMESTAMP
    v_syn                 REAL       yes       0.0
    v_str                 REAL       yes       0.0
    v_log                 REAL       yes       0.0
    v_boot                REAL       yes       0.0
    v_sheaf               REAL       yes       0.0
    v_total               REAL       yes       0.0
llm_requests
    id                    INTEGER    no        SEQ                PK
    session_id            VARCHAR    NOT_NULL  -                  FK
    node_id               VARCHAR    yes       -
    model                 VARCHAR    NOT_NULL  -
    prompt                TEXT       NOT_NULL  -
    response              TEXT       NOT_NULL  -
    tokens_in             INTEGER    yes       0
    tokens_out            INTEGER    yes       0
    latency_ms            INTEGER    yes       0
    timestamp             TIMESTAMP  yes       CURRENT_TIMESTAMP
structural_digests
    id                    INTEGER    no        SEQ                PK
    digest_id             VARCHAR    NOT_NULL  -
    session_id            VARCHAR    NOT_NULL  -                  FK
    node_id               VARCHAR    NOT_NULL  -
    source_path           VARCHAR    NOT_NULL  -
    artifact_kind         VARCHAR    NOT_NULL  -
    hash                  BLOB       NOT_NULL  -
    version               INTEGER    yes       1
    created_at            TIMESTAMP  yes       CURRENT_TIMESTAMP
context_provenance
    id                    INTEGER    no        SEQ                PK
    session_id            VARCHAR    NOT_NULL  -                  FK
    node_id               VARCHAR    NOT_NULL  -
    context_package_id    VARCHAR    NOT_NULL  -
    structural_hashes     TEXT       yes       -
    summary_hashes        TEXT       yes       -
    dependency_hashes     TEXT       yes       -
    included_file_count   INTEGER    yes       0
    total_bytes           INTEGER    yes       0
    created_at            TIMESTAMP  yes       CURRENT_TIMESTAMP
escalation_reports
    id                    INTEGER    no        SEQ                PK
    session_id            VARCHAR    NOT_NULL  -                  FK
    node_id               VARCHAR    NOT_NULL  -
    category              VARCHAR    NOT_NULL  -
    action                VARCHAR    NOT_NULL  -
    energy_snapshot       TEXT       yes       -
    stage_outcomes        TEXT       yes       -
    evidence              TEXT       yes       -
    affected_node_ids     TEXT       yes       -
    created_at            TIMESTAMP  yes       CURRENT_TIMESTAMP
rewrite_records
    id                    INTEGER    no        SEQ                PK
    session_id            VARCHAR    NOT_NULL  -                  FK
    node_id               VARCHAR    NOT_NULL  -
    action                VARCHAR    NOT_NULL  -
    category              VARCHAR    NOT_NULL  -
    requeued_nodes        TEXT       yes       -
    inserted_nodes        TEXT       yes       -
    created_at            TIMESTAMP  yes       CURRENT_TIMESTAMP
sheaf_validations
    id                    INTEGER    no        SEQ                PK
    session_id            VARCHAR    NOT_NULL  -                  FK
    node_id               VARCHAR    NOT_NULL  -
    validator_class       VARCHAR    NOT_NULL  -
    plugin_source         VARCHAR    yes       -
    passed                BOOLEAN    NOT_NULL  -
    evidence_summary      TEXT       yes       -
    affected_files        TEXT       yes       -
    v_sheaf_contribution  REAL       yes       0.0
    requeue_targets       TEXT       yes       -
    created_at            TIMESTAMP  yes       CURRENT_TIMESTAMP
provisional_branches
    id                    INTEGER    no        SEQ                PK
    branch_id             VARCHAR    NOT_NULL  -
    session_id            VARCHAR    NOT_NULL  -                  FK
    node_id               VARCHAR    NOT_NULL  -
    parent_node_id        VARCHAR    NOT_NULL  -
    state                 VARCHAR    NOT_NULL  'active'
    parent_seal_hash      BLOB       yes       -
    sandbox_dir           VARCHAR    yes       -
    created_at            TIMESTAMP  yes       CURRENT_TIMESTAMP
    updated_at            TIMESTAMP  yes       CURRENT_TIMESTAMP
branch_lineage
    id                    INTEGER    no        SEQ                PK
    lineage_id            VARCHAR    NOT_NULL  -
    parent_branch_id      VARCHAR    NOT_NULL  -
    child_branch_id       VARCHAR    NOT_NULL  -
    depends_on_seal       BOOLEAN    NOT_NULL  true
    created_at            TIMESTAMP  yes       CURRENT_TIMESTAMP
interface_seals
    id                    INTEGER    no        SEQ                PK
    seal_id               VARCHAR    NOT_NULL  -
    session_id            VARCHAR    NOT_NULL  -                  FK
    node_id               VARCHAR    NOT_NULL  -
    sealed_path           VARCHAR    NOT_NULL  -
    artifact_kind         VARCHAR    NOT_NULL  -
    seal_hash             BLOB       NOT_NULL  -
    version               INTEGER    yes       1
    created_at            TIMESTAMP  yes       CURRENT_TIMESTAMP
branch_flushes
    id                    INTEGER    no        SEQ                PK
    flush_id              VARCHAR    NOT_NULL  -
    session_id            VARCHAR    NOT_NULL  -                  FK
    parent_node_id        VARCHAR    NOT_NULL  -
    flushed_branch_ids    TEXT       NOT_NULL  -
    requeue_node_ids      TEXT       NOT_NULL  -
    reason                TEXT       NOT_NULL  -
    created_at            TIMESTAMP  yes       CURRENT_TIMESTAMP
task_graph_edges
    id                    INTEGER    no        SEQ                PK
    session_id            VARCHAR    NOT_NULL  -                  FK
    parent_node_id        VARCHAR    NOT_NULL  -
    child_node_id         VARCHAR    NOT_NULL  -
    edge_type             VARCHAR    NOT_NULL  'dependency'
    created_at            TIMESTAMP  yes       CURRENT_TIMESTAMP
review_outcomes
    id                    INTEGER    no        SEQ                PK
    session_id            VARCHAR    NOT_NULL  -                  FK
    node_id               VARCHAR    NOT_NULL  -
    outcome               VARCHAR    NOT_NULL  -
    reviewer_note         TEXT       yes       -
    energy_at_review      DOUBLE     yes       -
    degraded              BOOLEAN    yes       -
    escalation_category   VARCHAR    yes       -
    created_at            TIMESTAMP  yes       CURRENT_TIMESTAMP
verification_results
    id                    INTEGER    no        SEQ                PK
    session_id            VARCHAR    NOT_NULL  -                  FK
    node_id               VARCHAR    NOT_NULL  -
    result_json           TEXT       NOT_NULL  -
    syntax_ok             BOOLEAN    NOT_NULL  false
    build_ok              BOOLEAN    NOT_NULL  false
    tests_ok              BOOLEAN    NOT_NULL  false
    lint_ok               BOOLEAN    NOT_NULL  false
    diagnostics_count     INTEGER    yes       0
    tests_passed          INTEGER    yes       0
    tests_failed          INTEGER    yes       0
    degraded              BOOLEAN    NOT_NULL  false
    degraded_reason       VARCHAR    yes       -
    created_at            TIMESTAMP  yes       CURRENT_TIMESTAMP
artifact_bundles
    id                    INTEGER    no        SEQ                PK
    session_id            VARCHAR    NOT_NULL  -                  FK
    node_id               VARCHAR    NOT_NULL  -
    bundle_json           TEXT       NOT_NULL  -
    artifact_count        INTEGER    yes       0
    command_count         INTEGER    yes       0
    touched_files         TEXT       yes       -
    created_at            TIMESTAMP  yes       CURRENT_TIMESTAMP
feature_charters
    charter_id            VARCHAR    no        -                  PK
    session_id            VARCHAR    NOT_NULL  -                  FK
    scope_description     TEXT       NOT_NULL  -
    max_modules           INTEGER    yes       -
    max_files             INTEGER    yes       -
    max_revisions         INTEGER    yes       -
    language_constraint   VARCHAR    yes       -
    created_at            TIMESTAMP  yes       CURRENT_TIMESTAMP
plan_revisions
    revision_id           VARCHAR    no        -                  PK
    session_id            VARCHAR    NOT_NULL  -                  FK
    sequence              INTEGER    NOT_NULL  -
    plan_json             TEXT       NOT_NULL  -
    reason                VARCHAR    NOT_NULL  -
    supersedes            VARCHAR    yes       -
    status                VARCHAR    NOT_NULL  'active'
    created_at            TIMESTAMP  yes       CURRENT_TIMESTAMP
repair_footprints
    id                    INTEGER    no        SEQ                PK
    footprint_id          VARCHAR    NOT_NULL  -                  UNIQUE
    session_id            VARCHAR    NOT_NULL  -                  FK
    node_id               VARCHAR    NOT_NULL  -
    revision_id           VARCHAR    NOT_NULL  -
    attempt               INTEGER    NOT_NULL  -
    affected_files        TEXT       NOT_NULL  -
    bundle_json           TEXT       NOT_NULL  -
    diagnosis             TEXT       NOT_NULL  -
    resolved              BOOLEAN    NOT_NULL  false
    created_at            TIMESTAMP  yes       CURRENT_TIMESTAMP
budget_envelopes
    session_id            VARCHAR    no        -                  PK,FK
    max_steps             INTEGER    yes       -
    steps_used            INTEGER    NOT_NULL  0
    max_revisions         INTEGER    yes       -
    revisions_used        INTEGER    NOT_NULL  0
    max_cost_usd          DOUBLE     yes       -
    cost_used_usd         DOUBLE     NOT_NULL  0.0
    updated_at            TIMESTAMP  yes       CURRENT_TIMESTAMP
srbn_step_records
    id                    INTEGER    no        SEQ                PK
    session_id            VARCHAR    NOT_NULL  -                  FK
    node_id               VARCHAR    NOT_NULL  -
    step                  VARCHAR    NOT_NULL  -
    outcome               VARCHAR    NOT_NULL  -
    energy_json           TEXT       yes       -
    parse_state           VARCHAR    yes       -
    retry_classification  VARCHAR    yes       -
    attempt_count         INTEGER    yes       0
    duration_ms           INTEGER    yes       0
    created_at            TIMESTAMP  yes       CURRENT_TIMESTAMP
correction_attempts
    id                    INTEGER    no        SEQ                PK
    session_id            VARCHAR    NOT_NULL  -                  FK
    node_id               VARCHAR    NOT_NULL  -
    attempt               INTEGER    NOT_NULL  -
    parse_state           VARCHAR    NOT_NULL  -
    retry_classification  VARCHAR    yes       -
    response_fingerprint  VARCHAR    NOT_NULL  -
    response_length       INTEGER    NOT_NULL  -
    energy_json           TEXT       yes       -
    accepted              BOOLEAN    NOT_NULL  -
    rejection_reason      TEXT       yes       -
    created_at            BIGINT     NOT_NULL  -
"""

# Our additive objects (schema.py's docstring documents each one).
_ORDERED = ("sessions", "feature_charters", "plan_revisions", "budget_envelopes")
OUR_COLUMNS = {
    ("branch_lineage", "session_id"): ("VARCHAR", True, None),
    # Stored insertion order of the tables without an id (an UPDATE changes a rowid).
    **{(t, "row_order"): ("BIGINT", True, f"nextval('seq_{t}_row_order')") for t in _ORDERED},
    # The log entry of each row the store wrote (read through the merkle_log view).
    ("node_states", "merkle_commit"): ("BLOB", True, None),
}
OUR_TABLES = {"perspt_store_meta", "merkle_log_detached", "merkle_root_overrides"}
OUR_VIEWS = {"merkle_log"}
OUR_INDEXES = {"idx_branch_lineage_session": ("branch_lineage", "session_id")}
OUR_SEQUENCES = {"seq_merkle_root_overrides_id", *(f"seq_{t}_row_order" for t in _ORDERED)}


def parse_spec() -> dict[str, list[tuple[str, str, bool, str | None, set[str]]]]:
    """Table -> [(column, DuckDB type, nullable, default, constraints)] in column order."""
    tables: dict[str, list[tuple[str, str, bool, str | None, set[str]]]] = {}
    current = ""
    for line in SPEC_SCHEMA.strip().splitlines():
        if not line.startswith(" "):
            current = line.strip()
            tables[current] = []
            continue
        name, dtype, null, default, *constraints = line.split()
        if dtype == "TEXT":
            dtype = "VARCHAR"
        if dtype == "REAL":
            assert name in REAL_COLUMNS[current], (current, name)
            dtype = "DOUBLE"
        if default == "SEQ":
            default = f"nextval('seq_{current}_id')"
        tables[current].append((
            name, dtype, null == "yes", None if default == "-" else default,
            set(constraints[0].split(",")) if constraints else set(),
        ))
    return tables


SPEC = parse_spec()
SPEC_SEQUENCES = {f"seq_{t}_id" for t, cols in SPEC.items() if cols[0][0] == "id"}


def columns(conn: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    for table, name, dtype, nullable, default in conn.execute(
        "SELECT table_name, column_name, data_type, is_nullable, column_default "
        "FROM duckdb_columns() WHERE NOT internal ORDER BY table_name, column_index"
    ).fetchall():
        out.setdefault(table, []).append((name, dtype, nullable, default))
    return out


def catalog(conn: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Everything that defines the schema (no row contents)."""
    return {
        "columns": columns(conn),
        "indexes": sorted(conn.execute(
            "SELECT index_name, table_name, sql FROM duckdb_indexes()").fetchall()),
        "sequences": sorted(conn.execute(
            "SELECT sequence_name, increment_by FROM duckdb_sequences()").fetchall()),
        "constraints": sorted(map(str, conn.execute(
            "SELECT table_name, constraint_type, constraint_column_names, constraint_text "
            "FROM duckdb_constraints()").fetchall())),
        "views": conn.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal")
        .fetchall(),
    }


def file_state(path: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(sha256 of the bytes, catalog, every table's rows) of a database file."""
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    conn = duckdb.connect(str(path), read_only=True)
    try:
        tables = [t for (t,) in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        rows = {t: conn.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in tables}
        return sha, catalog(conn), rows
    finally:
        conn.close()


@pytest.fixture
def conn() -> Any:
    """A raw, empty in-memory DuckDB connection."""
    c = duckdb.connect()
    yield c
    c.close()


@pytest.fixture(scope="module")
def fresh() -> Any:
    """A raw connection on which init_schema ran once (tests only read its catalog)."""
    c = duckdb.connect()
    assert ps.init_schema(c) == ps.SCHEMA_VERSION
    yield c
    c.close()


# --- the layout ---------------------------------------------------------------------------


def test_the_spec_transcription_has_23_tables_19_sequences_and_31_indexes() -> None:
    assert list(SPEC) == list(schema.TABLES)
    assert len(SPEC_SEQUENCES) == 19
    assert {f"seq_{t}_id" for t in schema.SEQUENCED_TABLES} == SPEC_SEQUENCES
    assert len(UPSTREAM_INDEXES) == 31


def test_init_schema_creates_exactly_the_upstream_tables_and_our_documented_ones(
    conn: Any,
) -> None:
    assert ps.init_schema(conn) == ps.SCHEMA_VERSION
    tables = {t for (t,) in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert tables == set(SPEC) | OUR_TABLES
    views = {v for (v,) in conn.execute(
        "SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert views == OUR_VIEWS


def test_every_object_we_add_is_documented_in_the_schema_module() -> None:
    doc = schema.__doc__ or ""
    for name in sorted(OUR_TABLES | OUR_VIEWS | set(OUR_INDEXES) | {c for _, c in OUR_COLUMNS}):
        if name.startswith("idx_"):
            continue  # an index on a documented column needs no note of its own
        assert f"``{name}``" in doc, f"{name} is not described in schema.py's docstring"


@pytest.mark.parametrize("table", list(SPEC))
def test_every_upstream_column_has_the_spec_name_type_nullability_and_default(
    fresh: Any, table: str
) -> None:
    actual = columns(fresh)[table]
    expected = [(name, dtype, nullable, default) for name, dtype, nullable, default, _ in
                SPEC[table]]
    ours = [(c, *v) for (t, c), v in OUR_COLUMNS.items() if t == table]
    assert actual == expected + ours


@pytest.mark.parametrize("table", list(SPEC))
def test_every_upstream_key_and_foreign_key_is_in_place(fresh: Any, table: str) -> None:
    found = {
        (kind, tuple(cols), text)
        for kind, cols, text in fresh.execute(
            "SELECT constraint_type, constraint_column_names, constraint_text "
            "FROM duckdb_constraints() WHERE table_name = ? AND constraint_type <> 'NOT NULL'",
            [table],
        ).fetchall()
    }
    expected = set()
    for name, _, _, _, constraints in SPEC[table]:
        if "PK" in constraints:
            expected.add(("PRIMARY KEY", (name,), f"PRIMARY KEY({name})"))
        if "UNIQUE" in constraints:
            expected.add(("UNIQUE", (name,), f"UNIQUE({name})"))
        if "FK" in constraints:
            expected.add(("FOREIGN KEY", (name,),
                          "FOREIGN KEY (session_id) REFERENCES sessions(session_id)"))
    assert found == expected
    # FK on every table but sessions and branch_lineage (SPEC §3.0)
    has_fk = any(kind == "FOREIGN KEY" for kind, _, _ in found)
    assert has_fk == (table not in ("sessions", "branch_lineage"))


def test_the_19_sequences_start_at_1_and_feed_each_id(fresh: Any) -> None:
    seqs = {name: (start, step) for name, start, step in fresh.execute(
        "SELECT sequence_name, start_value, increment_by FROM duckdb_sequences()").fetchall()}
    assert set(seqs) == SPEC_SEQUENCES | OUR_SEQUENCES
    assert all(seqs[name] == (1, 1) for name in SPEC_SEQUENCES)
    for name in SPEC_SEQUENCES:
        table = name.removeprefix("seq_").removesuffix("_id")
        column, _, _, default = columns(fresh)[table][0]
        assert (column, default) == ("id", f"nextval('{name}')")


def test_all_31_upstream_indexes_exist_on_their_columns(fresh: Any) -> None:
    found = {
        name: (table, re.search(r"\((.*)\)", sql).group(1))  # type: ignore[union-attr]
        for name, table, sql in fresh.execute(
            "SELECT index_name, table_name, sql FROM duckdb_indexes()").fetchall()
    }
    assert found == {**UPSTREAM_INDEXES, **OUR_INDEXES}


# --- idempotence --------------------------------------------------------------------------


def test_init_schema_twice_is_a_no_op(conn: Any) -> None:
    assert ps.init_schema(conn) == ps.SCHEMA_VERSION
    before = catalog(conn)
    meta = conn.execute("SELECT * FROM perspt_store_meta ORDER BY ALL").fetchall()
    assert ps.init_schema(conn) == ps.SCHEMA_VERSION
    assert catalog(conn) == before
    assert conn.execute("SELECT * FROM perspt_store_meta ORDER BY ALL").fetchall() == meta


def test_reopening_a_file_with_data_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "perspt.db"
    with ps.SessionStore.open(path) as store:
        store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="w"))
        for row in edge_case_rows("s", "n", tag="x").values():
            write_row(store, row)
    before = file_state(path)
    for _ in range(2):
        ps.SessionStore.open(path).close()
        conn = duckdb.connect(str(path))
        assert ps.init_schema(conn) == ps.SCHEMA_VERSION
        conn.close()
    assert file_state(path) == before


@pytest.mark.parametrize("writer", [write_upstream_062, write_upstream_05])
def test_a_migrated_upstream_file_has_the_same_schema_as_a_fresh_one(
    tmp_path: Path, conn: Any, writer: Any
) -> None:
    ps.init_schema(conn)
    upstream = writer(tmp_path / "upstream.db")
    ps.SessionStore.open(upstream.path).close()
    migrated = duckdb.connect(str(upstream.path), read_only=True)
    try:
        assert catalog(migrated) == catalog(conn)
    finally:
        migrated.close()


def test_init_schema_on_a_read_only_connection_raises_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "upstream.db"
    write_upstream_062(path)
    conn = duckdb.connect(str(path), read_only=True)
    try:
        with pytest.raises(ps.SchemaVersionError, match="could not migrate") as info:
            ps.init_schema(conn)
        assert isinstance(info.value.__cause__, duckdb.Error)
    finally:
        conn.close()


# --- versions and failed migrations -------------------------------------------------------


@pytest.fixture
def newer_file(tmp_path: Path) -> Path:
    """A file written by a (hypothetical) newer perspt-store: schema_version is one ahead."""
    path = tmp_path / "newer.db"
    with ps.SessionStore.open(path) as store:
        store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="w"))
        store.record_energy(ps.EnergyRecord(node_id="n", session_id="s", v_total=0.5))
    conn = duckdb.connect(str(path))
    conn.execute("UPDATE perspt_store_meta SET value = ? WHERE key = 'schema_version'",
                 [str(ps.SCHEMA_VERSION + 1)])
    conn.close()
    return path


def test_init_schema_refuses_a_file_from_a_newer_library(newer_file: Path) -> None:
    before = file_state(newer_file)
    conn = duckdb.connect(str(newer_file))
    try:
        with pytest.raises(ps.SchemaVersionError, match=f"schema version {ps.SCHEMA_VERSION + 1}"):
            ps.init_schema(conn)
    finally:
        conn.close()
    assert file_state(newer_file)[1:] == before[1:]


def _write_calls(sid: str) -> dict[str, Any]:
    rows = edge_case_rows(sid, "n", tag="w")
    calls: dict[str, Any] = {
        f"{name}": (lambda s, r=row: write_row(s, r)) for name, row in rows.items()
    }
    calls.update({
        "create_session": lambda s: s.create_session(
            ps.SessionRecord(session_id="s2", task="t", working_dir="w")),
        "update_merkle_root": lambda s: s.update_merkle_root(sid, b"\x01" * 32),
        "update_session_status": lambda s: s.update_session_status(sid, "COMPLETED"),
        "update_branch_state": lambda s: s.update_branch_state("b", "merged"),
        "flush_branches_for_parent": lambda s: s.flush_branches_for_parent(sid, "p"),
        "supersede_plan_revision": lambda s: s.supersede_plan_revision("r"),
        "resolve_repair_footprint": lambda s: s.resolve_repair_footprint("f"),
        "record_task_graph_edge_once": lambda s: s.record_task_graph_edge_once(
            ps.TaskGraphEdgeRow(session_id=sid, parent_node_id="a", child_node_id="b")),
        "replace_active_plan": lambda s: s.replace_active_plan(sid, ps.PlanRevisionRow(
            revision_id="r9", session_id=sid, sequence=9, plan_json="{}", reason="r")),
        "transaction": lambda s: s.transaction().__enter__(),
    })
    return calls


def test_a_newer_file_opens_for_reading_but_every_write_raises(newer_file: Path) -> None:
    before = file_state(newer_file)
    with ps.SessionStore.open(newer_file) as store:
        assert store.read_only
        assert store.get_energy_history("s", "n")[0].v_total == 0.5
        for name, call in _write_calls("s").items():
            with pytest.raises(ps.SchemaVersionError, match="newer"):
                call(store)
                pytest.fail(f"{name} wrote to a newer file")
    assert file_state(newer_file)[1:] == before[1:]


def test_a_user_index_on_another_column_survives_the_double_migration(tmp_path: Path) -> None:
    upstream = write_upstream_05(tmp_path / "old.db")
    conn = duckdb.connect(str(upstream.path))
    conn.execute("CREATE INDEX idx_dashboard_node ON energy_history(node_id)")
    conn.close()
    with ps.SessionStore.open(upstream.path) as store:
        indexes = store.sql(
            "SELECT index_name FROM duckdb_indexes() WHERE table_name = 'energy_history'"
        ).fetchall()
        kinds = store.sql(
            "SELECT data_type FROM duckdb_columns() "
            "WHERE table_name = 'energy_history' AND column_name = 'v_total'"
        ).fetchall()
    assert {"idx_dashboard_node", "idx_energy_history_session"} <= {i for (i,) in indexes}
    assert kinds == [("DOUBLE",)]


def test_a_user_index_on_an_energy_column_is_named_and_nothing_changes(tmp_path: Path) -> None:
    upstream = write_upstream_05(tmp_path / "old.db")
    conn = duckdb.connect(str(upstream.path))
    conn.execute("CREATE INDEX idx_dashboard_energy ON energy_history(v_total)")
    conn.close()
    before = file_state(upstream.path)
    with pytest.raises(ps.SchemaVersionError, match=r"idx_dashboard_energy.*drop it"):
        ps.SessionStore.open(upstream.path)
    assert file_state(upstream.path) == before


def test_a_failed_migration_rolls_back_and_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    """A 0.5-era file that already has a table of its own named ``merkle_log``: migrations 1
    and 2 succeed, migration 3 cannot backfill the commit log into that table; everything,
    migration 1 included, is rolled back."""
    upstream = write_upstream_05(tmp_path / "old.db")
    conn = duckdb.connect(str(upstream.path))
    conn.execute("CREATE TABLE merkle_log (note VARCHAR)")
    conn.close()
    before = file_state(upstream.path)
    with pytest.raises(ps.SchemaVersionError, match="could not migrate") as info:
        ps.SessionStore.open(upstream.path)
    assert isinstance(info.value.__cause__, duckdb.Error)
    assert file_state(upstream.path) == before  # byte for byte
    assert "review_outcomes" not in before[2] and "perspt_store_meta" not in before[2]
    # The failed open released the file: it opens again (read-only here) and reads.
    with ps.SessionStore.open_read_only(upstream.path) as store:
        assert store.get_session(upstream.session_ids[0]) is not None
    # And on a raw connection the failure leaves no open transaction behind.
    conn = duckdb.connect(str(upstream.path))
    try:
        with pytest.raises(ps.SchemaVersionError):
            ps.init_schema(conn)
        assert conn.execute("SELECT count(*) FROM sessions").fetchall() == [(1,)]
        assert "node_class" not in [c[0] for c in columns(conn)["node_states"]]
    finally:
        conn.close()


# --- files that are not (whole) DuckDB databases ------------------------------------------


def _truncated(tmp_path: Path) -> Path:
    good = tmp_path / "good.db"
    with ps.SessionStore.open(good) as store:
        store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="w"))
    data = good.read_bytes()
    bad = tmp_path / "truncated.db"
    bad.write_bytes(data[: len(data) // 2])
    return bad


@pytest.mark.parametrize(
    "make",
    [
        lambda d: (d / "random.db", (d / "random.db").write_bytes(os.urandom(64 * 1024)))[0],
        lambda d: (d / "notes.db", (d / "notes.db").write_text("not a database\n" * 200))[0],
        lambda d: (d / "empty.db", (d / "empty.db").write_bytes(b"\x00" * 10))[0],
        _truncated,
    ],
    ids=["random-bytes", "text-file", "ten-zero-bytes", "truncated-duckdb"],
)
@pytest.mark.parametrize("mode", ["open", "open_read_only"])
def test_a_file_that_is_not_a_whole_duckdb_database_raises_a_clear_store_error(
    tmp_path: Path, make: Any, mode: str
) -> None:
    path = make(tmp_path)
    data = path.read_bytes()
    listing = sorted(p.name for p in tmp_path.iterdir())
    for _ in range(2):  # the failed open releases the file: the second try fails the same way
        with pytest.raises(ps.StoreError) as info:
            getattr(ps.SessionStore, mode)(path)
        # A plain StoreError: not a misleading subclass (version, lock, read-only).
        assert not isinstance(info.value, (ps.SchemaVersionError, ps.StoreLockedError,
                                           ps.ReadOnlyStoreError))
        assert str(path) in str(info.value)
        # Refused by its header before DuckDB reads it, or by DuckDB itself.
        assert "is not a DuckDB database" in str(info.value) or isinstance(
            info.value.__cause__, duckdb.Error
        )
    assert path.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == listing


def test_open_read_only_on_a_missing_file_raises_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "perspt.db"
    with pytest.raises(ps.StoreError, match="no database"):
        ps.SessionStore.open_read_only(path)
    assert list(tmp_path.iterdir()) == []


# --- models and tables agree --------------------------------------------------------------


def test_every_table_has_exactly_one_row_model() -> None:
    assert list(ps.ROW_MODELS) == list(schema.TABLES)
    assert len(set(ps.ROW_MODELS.values())) == len(schema.TABLES) == 23
    for table, model in ps.ROW_MODELS.items():
        assert model.__table__ == table


def _python_type(annotation: Any) -> tuple[Any, bool]:
    optional = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        optional = True
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return (list if typing.get_origin(annotation) is list else annotation), optional


COLUMN_FOR_TYPE = {str: {"VARCHAR"}, list: {"VARCHAR"}, bytes: {"BLOB"}, bool: {"BOOLEAN"},
                   int: {"INTEGER", "BIGINT"}, float: {"DOUBLE"}}


@pytest.mark.parametrize("table", list(SPEC))
def test_each_models_fields_and_database_columns_are_the_tables_columns_in_order(
    fresh: Any, table: str
) -> None:
    model = ps.ROW_MODELS[table]
    # Not the row's own: its insertion order, and the log entry it carries.
    table_columns = [c[0] for c in columns(fresh)[table]
                     if c[0] not in ("row_order", "merkle_commit")]
    db_columns = list(model.__db_columns__)
    assert sorted([*model.model_fields, *db_columns]) == sorted(table_columns)
    assert [c for c in table_columns if c not in db_columns] == list(model.model_fields)
    assert [c for c in table_columns if c in db_columns] == db_columns
    # Each field's Python type fits its column; an optional field has a nullable column.
    info = {c[0]: c for c in columns(fresh)[table]}
    for name, field in model.model_fields.items():
        base, optional = _python_type(field.annotation)
        _, dtype, nullable, _ = info[name]
        assert dtype in COLUMN_FOR_TYPE[base], (name, base, dtype)
        if optional:
            assert nullable, f"{table}.{name} is optional but the column is NOT NULL"


def test_a_damaged_block_names_the_read_snapshot_and_the_snapshot_recovers_the_data(
    tmp_path: Path,
) -> None:
    """DuckDB rewrites its metadata block (block 0, just after the three 4 kB headers) in
    place at every checkpoint, so a process killed inside that write leaves a block whose
    checksum fails: docs/reliability.md. The store says so, and its snapshot recovers it."""
    db = tmp_path / "agent.db"
    with ps.SessionStore.open(db, publish_interval=0.01) as store:
        store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="w"))
        store.record_node_state(ps.NodeStateRecord(
            session_id="s", node_id="n", state="COMPLETED", v_total=0.25, attempt_count=1
        ))
    snapshot = tmp_path / "agent.db.snapshot"
    assert snapshot.exists()
    with db.open("r+b") as f:  # a torn write: the block's second half is not what it was
        f.seek(3 * 4096 + 128 * 1024)
        f.write(os.urandom(128 * 1024))
    with pytest.raises(ps.StoreError, match="is damaged") as info:
        ps.SessionStore.open(db)
    assert str(snapshot) in str(info.value)
    assert not isinstance(info.value, ps.StoreLockedError)

    with ps.SessionStore.open(tmp_path / "recovered.db") as recovered:
        report = ps.import_lake(recovered, snapshot)
        assert report.ok
        assert [n.node_id for n in recovered.get_latest_node_states("s")] == ["n"]
        assert recovered.verify_session("s").ok

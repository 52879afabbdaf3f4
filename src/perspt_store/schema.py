"""Every table, sequence and index of the store, and the migrations that build them.

The layout is upstream perspt-store 0.6.2's (same names, columns, defaults and constraints,
so a file stays readable by the Rust crate) with purely additive changes:

* ``perspt_store_meta`` records the schema version and, for files first written by upstream,
  the legacy high-water marks (rows at or below them are decoded with upstream's encodings);
* the float energy columns are ``DOUBLE`` instead of ``REAL``, so a float reads back exactly
  as written (upstream reads them as f64 either way);
* ``branch_lineage`` gains a nullable ``session_id`` so lineage can be scoped per session;
* ``merkle_log`` is each session's append-only commit log (see :mod:`perspt_store.merkle`):
  since schema 5 a view over ``merkle_commit``, the ``node_states`` column in which each row
  the store wrote carries its log entry (``merkle_log_detached`` keeps the entries that no
  row can carry);
* ``merkle_root_overrides`` records ``sessions.merkle_root`` values that are not a state root
  (set through ``update_merkle_root``, or carried over from an upstream file), each with the
  ``log_size`` it was set at: a commit since then ends its excuse;
* the four tables without an ``id`` sequence (sessions, feature charters, plan revisions,
  budget envelopes) gain a nullable ``row_order``, drawn from ``seq_<table>_row_order``:
  their insertion order, stored (DuckDB gives an updated row a new ``rowid``).

Schema changes are an append-only list, :data:`MIGRATIONS`: the position of a migration in
the list is the version it brings the file to. :func:`init_schema` applies the missing ones in
one transaction, so a failed migration leaves the file as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from .errors import SchemaVersionError

__all__ = [
    "ENERGY_COLUMNS",
    "META_TABLE",
    "MIGRATIONS",
    "ROW_ORDER_VERSION",
    "SCHEMA_VERSION",
    "SEQUENCED_TABLES",
    "TABLES",
    "init_schema",
    "order_key",
    "read_schema_version",
]

Connection = Any  # a duckdb.DuckDBPyConnection; kept loose so the stubs need not be exact

META_TABLE = "perspt_store_meta"

# --- sessions family ----------------------------------------------------------------------

SESSIONS_SQL = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id VARCHAR PRIMARY KEY,
    task TEXT NOT NULL,
    working_dir TEXT NOT NULL,
    merkle_root BLOB,
    detected_toolchain VARCHAR,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    status VARCHAR DEFAULT 'active'
)"""

# The last seven columns were added by an upstream migration; they stay last, in this order.
NODE_STATES_SQL = """
CREATE TABLE IF NOT EXISTS node_states (
    id INTEGER PRIMARY KEY DEFAULT nextval('seq_node_states_id'),
    node_id VARCHAR NOT NULL,
    session_id VARCHAR NOT NULL,
    state VARCHAR NOT NULL,
    v_total DOUBLE DEFAULT 0.0,
    merkle_hash BLOB,
    attempt_count INTEGER DEFAULT 0,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    node_class VARCHAR,
    owner_plugin VARCHAR,
    goal TEXT,
    parent_id VARCHAR,
    children TEXT,
    last_error_type VARCHAR,
    committed_at VARCHAR,
    FOREIGN KEY (session_id) REFERENCES sessions(session_id)
)"""

NODE_STATES_LATER_COLUMNS = (
    ("node_class", "VARCHAR"),
    ("owner_plugin", "VARCHAR"),
    ("goal", "TEXT"),
    ("parent_id", "VARCHAR"),
    ("children", "TEXT"),
    ("last_error_type", "VARCHAR"),
    ("committed_at", "VARCHAR"),
)

ENERGY_HISTORY_SQL = """
CREATE TABLE IF NOT EXISTS energy_history (
    id INTEGER PRIMARY KEY DEFAULT nextval('seq_energy_history_id'),
    node_id VARCHAR NOT NULL,
    session_id VARCHAR NOT NULL,
    timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    v_syn DOUBLE DEFAULT 0.0,
    v_str DOUBLE DEFAULT 0.0,
    v_log DOUBLE DEFAULT 0.0,
    v_boot DOUBLE DEFAULT 0.0,
    v_sheaf DOUBLE DEFAULT 0.0,
    v_total DOUBLE DEFAULT 0.0,
    FOREIGN KEY (session_id) REFERENCES sessions(session_id)
)"""

TASK_GRAPH_EDGES_SQL = """
CREATE TABLE IF NOT EXISTS task_graph_edges (
    id INTEGER PRIMARY KEY DEFAULT nextval('seq_task_graph_edges_id'),
    session_id VARCHAR NOT NULL,
    parent_node_id VARCHAR NOT NULL,
    child_node_id VARCHAR NOT NULL,
    edge_type VARCHAR NOT NULL DEFAULT 'dependency',
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (session_id) REFERENCES sessions(session_id)
)"""

# --- telemetry family ---------------------------------------------------------------------

LLM_REQUESTS_SQL = """
CREATE TABLE IF NOT EXISTS llm_requests (
    id INTEGER PRIMARY KEY DEFAULT nextval('seq_llm_requests_id'),
    session_id VARCHAR NOT NULL,
    node_id VARCHAR,
    model VARCHAR NOT NULL,
    prompt TEXT NOT NULL,
    response TEXT NOT NULL,
    tokens_in INTEGER DEFAULT 0,
    tokens_out INTEGER DEFAULT 0,
    latency_ms INTEGER DEFAULT 0,
    timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (session_id) REFERENCES sessions(session_id)
)"""

SRBN_STEP_RECORDS_SQL = """
CREATE TABLE IF NOT EXISTS srbn_step_records (
    id INTEGER PRIMARY KEY DEFAULT nextval('seq_srbn_step_records_id'),
    session_id VARCHAR NOT NULL,
    node_id VARCHAR NOT NULL,
    step VARCHAR NOT NULL,
    outcome VARCHAR NOT NULL,
    energy_json TEXT,
    parse_state VARCHAR,
    retry_classification VARCHAR,
    attempt_count INTEGER DEFAULT 0,
    duration_ms INTEGER DEFAULT 0,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (session_id) REFERENCES sessions(session_id)
)"""

CORRECTION_ATTEMPTS_SQL = """
CREATE TABLE IF NOT EXISTS correction_attempts (
    id INTEGER PRIMARY KEY DEFAULT nextval('seq_correction_attempts_id'),
    session_id VARCHAR NOT NULL,
    node_id VARCHAR NOT NULL,
    attempt INTEGER NOT NULL,
    parse_state VARCHAR NOT NULL,
    retry_classification VARCHAR,
    response_fingerprint VARCHAR NOT NULL,
    response_length INTEGER NOT NULL,
    energy_json TEXT,
    accepted BOOLEAN NOT NULL,
    rejection_reason TEXT,
    created_at BIGINT NOT NULL,
    FOREIGN KEY (session_id) REFERENCES sessions(session_id)
)"""

# --- evidence family ----------------------------------------------------------------------

STRUCTURAL_DIGESTS_SQL = """
CREATE TABLE IF NOT EXISTS structural_digests (
    id INTEGER PRIMARY KEY DEFAULT nextval('seq_structural_digests_id'),
    digest_id VARCHAR NOT NULL,
    session_id VARCHAR NOT NULL,
    node_id VARCHAR NOT NULL,
    source_path VARCHAR NOT NULL,
    artifact_kind VARCHAR NOT NULL,
    hash BLOB NOT NULL,
    version INTEGER DEFAULT 1,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (session_id) REFERENCES sessions(session_id)
)"""

CONTEXT_PROVENANCE_SQL = """
CREATE TABLE IF NOT EXISTS context_provenance (
    id INTEGER PRIMARY KEY DEFAULT nextval('seq_context_provenance_id'),
    session_id VARCHAR NOT NULL,
    node_id VARCHAR NOT NULL,
    context_package_id VARCHAR NOT NULL,
    structural_hashes TEXT,
    summary_hashes TEXT,
    dependency_hashes TEXT,
    included_file_count INTEGER DEFAULT 0,
    total_bytes INTEGER DEFAULT 0,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (session_id) REFERENCES sessions(session_id)
)"""

ESCALATION_REPORTS_SQL = """
CREATE TABLE IF NOT EXISTS escalation_reports (
    id INTEGER PRIMARY KEY DEFAULT nextval('seq_escalation_reports_id'),
    session_id VARCHAR NOT NULL,
    node_id VARCHAR NOT NULL,
    category VARCHAR NOT NULL,
    action VARCHAR NOT NULL,
    energy_snapshot TEXT,
    stage_outcomes TEXT,
    evidence TEXT,
    affected_node_ids TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (session_id) REFERENCES sessions(session_id)
)"""

REWRITE_RECORDS_SQL = """
CREATE TABLE IF NOT EXISTS rewrite_records (
    id INTEGER PRIMARY KEY DEFAULT nextval('seq_rewrite_records_id'),
    session_id VARCHAR NOT NULL,
    node_id VARCHAR NOT NULL,
    action VARCHAR NOT NULL,
    category VARCHAR NOT NULL,
    requeued_nodes TEXT,
    inserted_nodes TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (session_id) REFERENCES sessions(session_id)
)"""

SHEAF_VALIDATIONS_SQL = """
CREATE TABLE IF NOT EXISTS sheaf_validations (
    id INTEGER PRIMARY KEY DEFAULT nextval('seq_sheaf_validations_id'),
    session_id VARCHAR NOT NULL,
    node_id VARCHAR NOT NULL,
    validator_class VARCHAR NOT NULL,
    plugin_source VARCHAR,
    passed BOOLEAN NOT NULL,
    evidence_summary TEXT,
    affected_files TEXT,
    v_sheaf_contribution DOUBLE DEFAULT 0.0,
    requeue_targets TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (session_id) REFERENCES sessions(session_id)
)"""

# --- reviews family -----------------------------------------------------------------------

VERIFICATION_RESULTS_SQL = """
CREATE TABLE IF NOT EXISTS verification_results (
    id INTEGER PRIMARY KEY DEFAULT nextval('seq_verification_results_id'),
    session_id VARCHAR NOT NULL,
    node_id VARCHAR NOT NULL,
    result_json TEXT NOT NULL,
    syntax_ok BOOLEAN NOT NULL DEFAULT false,
    build_ok BOOLEAN NOT NULL DEFAULT false,
    tests_ok BOOLEAN NOT NULL DEFAULT false,
    lint_ok BOOLEAN NOT NULL DEFAULT false,
    diagnostics_count INTEGER DEFAULT 0,
    tests_passed INTEGER DEFAULT 0,
    tests_failed INTEGER DEFAULT 0,
    degraded BOOLEAN NOT NULL DEFAULT false,
    degraded_reason VARCHAR,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (session_id) REFERENCES sessions(session_id)
)"""

ARTIFACT_BUNDLES_SQL = """
CREATE TABLE IF NOT EXISTS artifact_bundles (
    id INTEGER PRIMARY KEY DEFAULT nextval('seq_artifact_bundles_id'),
    session_id VARCHAR NOT NULL,
    node_id VARCHAR NOT NULL,
    bundle_json TEXT NOT NULL,
    artifact_count INTEGER DEFAULT 0,
    command_count INTEGER DEFAULT 0,
    touched_files TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (session_id) REFERENCES sessions(session_id)
)"""

REVIEW_OUTCOMES_SQL = """
CREATE TABLE IF NOT EXISTS review_outcomes (
    id INTEGER PRIMARY KEY DEFAULT nextval('seq_review_outcomes_id'),
    session_id VARCHAR NOT NULL,
    node_id VARCHAR NOT NULL,
    outcome VARCHAR NOT NULL,
    reviewer_note TEXT,
    energy_at_review DOUBLE,
    degraded BOOLEAN,
    escalation_category VARCHAR,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (session_id) REFERENCES sessions(session_id)
)"""

# --- branches family ----------------------------------------------------------------------

PROVISIONAL_BRANCHES_SQL = """
CREATE TABLE IF NOT EXISTS provisional_branches (
    id INTEGER PRIMARY KEY DEFAULT nextval('seq_provisional_branches_id'),
    branch_id VARCHAR NOT NULL,
    session_id VARCHAR NOT NULL,
    node_id VARCHAR NOT NULL,
    parent_node_id VARCHAR NOT NULL,
    state VARCHAR NOT NULL DEFAULT 'active',
    parent_seal_hash BLOB,
    sandbox_dir VARCHAR,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (session_id) REFERENCES sessions(session_id)
)"""

# No FK upstream; the trailing session_id is ours (nullable, additive).
BRANCH_LINEAGE_SQL = """
CREATE TABLE IF NOT EXISTS branch_lineage (
    id INTEGER PRIMARY KEY DEFAULT nextval('seq_branch_lineage_id'),
    lineage_id VARCHAR NOT NULL,
    parent_branch_id VARCHAR NOT NULL,
    child_branch_id VARCHAR NOT NULL,
    depends_on_seal BOOLEAN NOT NULL DEFAULT true,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    session_id VARCHAR
)"""

INTERFACE_SEALS_SQL = """
CREATE TABLE IF NOT EXISTS interface_seals (
    id INTEGER PRIMARY KEY DEFAULT nextval('seq_interface_seals_id'),
    seal_id VARCHAR NOT NULL,
    session_id VARCHAR NOT NULL,
    node_id VARCHAR NOT NULL,
    sealed_path VARCHAR NOT NULL,
    artifact_kind VARCHAR NOT NULL,
    seal_hash BLOB NOT NULL,
    version INTEGER DEFAULT 1,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (session_id) REFERENCES sessions(session_id)
)"""

BRANCH_FLUSHES_SQL = """
CREATE TABLE IF NOT EXISTS branch_flushes (
    id INTEGER PRIMARY KEY DEFAULT nextval('seq_branch_flushes_id'),
    flush_id VARCHAR NOT NULL,
    session_id VARCHAR NOT NULL,
    parent_node_id VARCHAR NOT NULL,
    flushed_branch_ids TEXT NOT NULL,
    requeue_node_ids TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (session_id) REFERENCES sessions(session_id)
)"""

# --- planning family ----------------------------------------------------------------------

FEATURE_CHARTERS_SQL = """
CREATE TABLE IF NOT EXISTS feature_charters (
    charter_id VARCHAR PRIMARY KEY,
    session_id VARCHAR NOT NULL,
    scope_description TEXT NOT NULL,
    max_modules INTEGER,
    max_files INTEGER,
    max_revisions INTEGER,
    language_constraint VARCHAR,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (session_id) REFERENCES sessions(session_id)
)"""

PLAN_REVISIONS_SQL = """
CREATE TABLE IF NOT EXISTS plan_revisions (
    revision_id VARCHAR PRIMARY KEY,
    session_id VARCHAR NOT NULL,
    sequence INTEGER NOT NULL,
    plan_json TEXT NOT NULL,
    reason VARCHAR NOT NULL,
    supersedes VARCHAR,
    status VARCHAR NOT NULL DEFAULT 'active',
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (session_id) REFERENCES sessions(session_id)
)"""

REPAIR_FOOTPRINTS_SQL = """
CREATE TABLE IF NOT EXISTS repair_footprints (
    id INTEGER PRIMARY KEY DEFAULT nextval('seq_repair_footprints_id'),
    footprint_id VARCHAR NOT NULL UNIQUE,
    session_id VARCHAR NOT NULL,
    node_id VARCHAR NOT NULL,
    revision_id VARCHAR NOT NULL,
    attempt INTEGER NOT NULL,
    affected_files TEXT NOT NULL,
    bundle_json TEXT NOT NULL,
    diagnosis TEXT NOT NULL,
    resolved BOOLEAN NOT NULL DEFAULT false,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (session_id) REFERENCES sessions(session_id)
)"""

BUDGET_ENVELOPES_SQL = """
CREATE TABLE IF NOT EXISTS budget_envelopes (
    session_id VARCHAR PRIMARY KEY,
    max_steps INTEGER,
    steps_used INTEGER NOT NULL DEFAULT 0,
    max_revisions INTEGER,
    revisions_used INTEGER NOT NULL DEFAULT 0,
    max_cost_usd DOUBLE,
    cost_used_usd DOUBLE NOT NULL DEFAULT 0.0,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (session_id) REFERENCES sessions(session_id)
)"""

# --- ours ---------------------------------------------------------------------------------

# One row per commit: seq is the 0-based leaf index of the session's log, node_state_id the
# node_states row it commits, and the roots are the session's after it (perspt_store.merkle).
# Schema 3 and 4's table; migration 5 moves its entries onto the node-state rows and drops it.
# Files created before schema 5 have a foreign key to sessions here; it is left out now: a
# dropped table with a foreign key replays from the WAL only with an extension loaded.
MERKLE_LOG_SQL = """
CREATE TABLE IF NOT EXISTS merkle_log (
    session_id VARCHAR NOT NULL,
    seq INTEGER NOT NULL,
    node_state_id INTEGER NOT NULL,
    node_id VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    leaf_hash BLOB NOT NULL,
    state_root BLOB NOT NULL,
    log_root BLOB NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (session_id, seq)
)"""

# sessions.merkle_root values that are not a state root: set through update_merkle_root, or
# carried over from an upstream file. verify_session reports them as notes, not corruption.
MERKLE_ROOT_OVERRIDES_SQL = """
CREATE TABLE IF NOT EXISTS merkle_root_overrides (
    id INTEGER PRIMARY KEY DEFAULT nextval('seq_merkle_root_overrides_id'),
    session_id VARCHAR NOT NULL,
    merkle_root BLOB,
    source VARCHAR NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (session_id) REFERENCES sessions(session_id)
)"""

META_SQL = f"""
CREATE TABLE IF NOT EXISTS {META_TABLE} (
    key VARCHAR PRIMARY KEY,
    value VARCHAR
)"""

# Upstream's 23 tables in creation order (sessions first: it is every FK's parent), each with
# its DDL and explicit indexes. Sequences are named seq_<table>_id.
_UPSTREAM_TABLES: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("sessions", SESSIONS_SQL, ()),
    ("node_states", NODE_STATES_SQL, (("idx_node_states_session", "session_id"),)),
    ("energy_history", ENERGY_HISTORY_SQL, (("idx_energy_history_session", "session_id"),)),
    ("llm_requests", LLM_REQUESTS_SQL, (("idx_llm_requests_session", "session_id"),)),
    (
        "structural_digests",
        STRUCTURAL_DIGESTS_SQL,
        (("idx_structural_digests_session", "session_id"),),
    ),
    (
        "context_provenance",
        CONTEXT_PROVENANCE_SQL,
        (("idx_context_provenance_session", "session_id"),),
    ),
    (
        "escalation_reports",
        ESCALATION_REPORTS_SQL,
        (("idx_escalation_reports_session", "session_id"),),
    ),
    ("rewrite_records", REWRITE_RECORDS_SQL, (("idx_rewrite_records_session", "session_id"),)),
    (
        "sheaf_validations",
        SHEAF_VALIDATIONS_SQL,
        (("idx_sheaf_validations_session", "session_id"),),
    ),
    (
        "provisional_branches",
        PROVISIONAL_BRANCHES_SQL,
        (
            ("idx_provisional_branches_session", "session_id"),
            ("idx_provisional_branches_parent", "parent_node_id"),
        ),
    ),
    ("branch_lineage", BRANCH_LINEAGE_SQL, (("idx_branch_lineage_parent", "parent_branch_id"),)),
    (
        "interface_seals",
        INTERFACE_SEALS_SQL,
        (
            ("idx_interface_seals_session", "session_id"),
            ("idx_interface_seals_node", "node_id"),
        ),
    ),
    ("branch_flushes", BRANCH_FLUSHES_SQL, (("idx_branch_flushes_session", "session_id"),)),
    (
        "task_graph_edges",
        TASK_GRAPH_EDGES_SQL,
        (
            ("idx_task_graph_edges_session", "session_id"),
            ("idx_task_graph_edges_parent", "parent_node_id"),
        ),
    ),
    (
        "review_outcomes",
        REVIEW_OUTCOMES_SQL,
        (
            ("idx_review_outcomes_session", "session_id"),
            ("idx_review_outcomes_node", "node_id"),
        ),
    ),
    (
        "verification_results",
        VERIFICATION_RESULTS_SQL,
        (
            ("idx_verification_results_session", "session_id"),
            ("idx_verification_results_node", "node_id"),
        ),
    ),
    (
        "artifact_bundles",
        ARTIFACT_BUNDLES_SQL,
        (
            ("idx_artifact_bundles_session", "session_id"),
            ("idx_artifact_bundles_node", "node_id"),
        ),
    ),
    ("feature_charters", FEATURE_CHARTERS_SQL, (("idx_feature_charters_session", "session_id"),)),
    (
        "plan_revisions",
        PLAN_REVISIONS_SQL,
        (
            ("idx_plan_revisions_session", "session_id"),
            ("idx_plan_revisions_status", "status"),
        ),
    ),
    (
        "repair_footprints",
        REPAIR_FOOTPRINTS_SQL,
        (
            ("idx_repair_footprints_session", "session_id"),
            ("idx_repair_footprints_node", "node_id"),
        ),
    ),
    ("budget_envelopes", BUDGET_ENVELOPES_SQL, ()),
    (
        "srbn_step_records",
        SRBN_STEP_RECORDS_SQL,
        (
            ("idx_srbn_step_records_session", "session_id"),
            ("idx_srbn_step_records_node", "session_id, node_id"),
        ),
    ),
    (
        "correction_attempts",
        CORRECTION_ATTEMPTS_SQL,
        (
            ("idx_correction_attempts_session", "session_id"),
            ("idx_correction_attempts_node", "session_id, node_id"),
        ),
    ),
)

TABLES: tuple[str, ...] = tuple(name for name, _, _ in _UPSTREAM_TABLES)
"""Upstream's 23 tables, in creation order."""

_NATURAL_KEY_TABLES = frozenset(
    {"sessions", "feature_charters", "plan_revisions", "budget_envelopes"}
)
SEQUENCED_TABLES: tuple[str, ...] = tuple(t for t in TABLES if t not in _NATURAL_KEY_TABLES)
"""The 19 tables whose ``id`` comes from ``seq_<table>_id`` (insertion order)."""

_INDEXES: dict[str, tuple[tuple[str, str], ...]] = {name: idx for name, _, idx in _UPSTREAM_TABLES}

ENERGY_COLUMNS: dict[str, tuple[str, ...]] = {
    "node_states": ("v_total",),
    "energy_history": ("v_syn", "v_str", "v_log", "v_boot", "v_sheaf", "v_total"),
    "sheaf_validations": ("v_sheaf_contribution",),
}
"""Upstream's REAL columns, stored as DOUBLE here so floats read back exactly."""


# --- migrations ---------------------------------------------------------------------------


def _existing_tables(conn: Connection) -> set[str]:
    rows = conn.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main'"
    ).fetchall()
    return {r[0] for r in rows}


def _column_types(conn: Connection, table: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT column_name, data_type FROM duckdb_columns() "
        "WHERE database_name = current_database() AND schema_name = 'main' AND table_name = ?",
        [table],
    ).fetchall()
    return {name: dtype for name, dtype in rows}


def _set_meta(conn: Connection, key: str, value: str) -> None:
    conn.execute(
        f"INSERT INTO {META_TABLE} (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [key, value],
    )


def _migrate_1_upstream_layout(conn: Connection, *, legacy: bool) -> None:
    """Complete upstream 0.6.2's layout: every table, sequence and index, and the seven
    ``node_states`` columns that 0.5-era files lack. Existing objects are left alone."""
    statements: list[str] = []
    for table, ddl, indexes in _UPSTREAM_TABLES:
        if table in SEQUENCED_TABLES:
            statements.append(f"CREATE SEQUENCE IF NOT EXISTS seq_{table}_id START 1")
        statements.append(ddl)
        if table == "node_states":
            statements += [
                f"ALTER TABLE node_states ADD COLUMN IF NOT EXISTS {column} {dtype}"
                for column, dtype in NODE_STATES_LATER_COLUMNS
            ]
        statements += [
            f"CREATE INDEX IF NOT EXISTS {index} ON {table}({columns})"
            for index, columns in indexes
        ]
    # One script, not ~80 round trips: opening a fresh store is mostly this DDL.
    conn.execute(";\n".join(statements))


def _migrate_2_python_port(conn: Connection, *, legacy: bool) -> None:
    """Our additive changes: legacy high-water marks, DOUBLE energies, lineage session_id."""
    if legacy:
        # Rows that exist now were written by upstream and are decoded with its encodings.
        for table in SEQUENCED_TABLES:
            (mark,) = conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()
            _set_meta(conn, f"legacy_max_id:{table}", str(mark))
        (mark,) = conn.execute("SELECT coalesce(max(rowid), -1) FROM sessions").fetchone()
        _set_meta(conn, "legacy_max_rowid:sessions", str(mark))
    for table, columns in ENERGY_COLUMNS.items():
        types = _column_types(conn, table)
        real = [c for c in columns if types.get(c) == "FLOAT"]
        if not real:
            continue
        # DuckDB refuses ALTER COLUMN TYPE on an indexed table: drop every index on it
        # (a user's own included), alter, and recreate each from its own DDL. An index on
        # the column itself still blocks the change inside a transaction: say which.
        indexes = conn.execute(
            "SELECT index_name, sql, expressions FROM duckdb_indexes() WHERE database_name = "
            "current_database() AND schema_name = 'main' AND table_name = ?",
            [table],
        ).fetchall()
        blocking = [name for name, _, expr in indexes if any(c in str(expr) for c in real)]
        if blocking:
            raise SchemaVersionError(
                f"index {', '.join(blocking)} on {table}({', '.join(real)}) blocks changing "
                "those columns from REAL to DOUBLE; drop it, open the file, then recreate it",
                table=table,
                operation="migrate",
            )
        for index, _, _ in indexes:
            conn.execute(f'DROP INDEX "{index}"')
        for column in real:
            conn.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE DOUBLE")
        for _, ddl, _ in indexes:
            conn.execute(ddl)
    conn.execute("ALTER TABLE branch_lineage ADD COLUMN IF NOT EXISTS session_id VARCHAR")
    conn.execute(
        "CREATE INDEX IF NOT EXISTS idx_branch_lineage_session ON branch_lineage(session_id)"
    )


# A migration gets the connection and whether the file was first written by upstream.
Migration = Callable[..., None]

def _migrate_3_commit_log(conn: Connection, *, legacy: bool) -> None:
    """The Merkle commit log, backfilled from existing node states in insertion order."""
    conn.execute(MERKLE_LOG_SQL)
    conn.execute("CREATE SEQUENCE IF NOT EXISTS seq_merkle_root_overrides_id START 1")
    conn.execute(MERKLE_ROOT_OVERRIDES_SQL)
    mark = conn.execute(
        f"SELECT value FROM {META_TABLE} WHERE key = 'legacy_max_id:node_states'"
    ).fetchone()
    # The commit code knows how a commit is hashed; imported here, when a file is migrated,
    # so this module stays free of the store (and ``import perspt_store`` stays light).
    from .store.commits import backfill

    backfill(conn, int(mark[0]) if mark else None)


ROW_ORDER_VERSION = 4
"""The schema version from which the natural-key tables carry ``row_order``."""


def order_key(table: str, schema_version: int | None = None) -> str:
    """The column that orders a table's rows by insertion: ``id`` where a sequence draws
    it, else ``row_order`` (``rowid`` in a file older than :data:`ROW_ORDER_VERSION`, which
    is only ever read: DuckDB gives an updated row a new rowid)."""
    if table in SEQUENCED_TABLES or table == "merkle_root_overrides":
        return "id"
    if table == "merkle_log":
        return "seq"  # within a session (a view since schema 5: it has no rowid)
    if table not in _NATURAL_KEY_TABLES:
        return "rowid"  # the meta table (ordered by key)
    if schema_version is not None and schema_version < ROW_ORDER_VERSION:
        return "rowid"
    return "row_order"


def _migrate_4_stored_order(conn: Connection, *, legacy: bool) -> None:
    """Insertion order as a stored column of the natural-key tables, and the log size at
    which each ``merkle_root`` override was set (only the current one is excused)."""
    for table in (t for t in TABLES if t in _NATURAL_KEY_TABLES):
        sequence = f"seq_{table}_row_order"
        conn.execute(f"CREATE SEQUENCE IF NOT EXISTS {sequence} START 1")
        # Existing rows draw their numbers in rowid order: the best record of it there is.
        conn.execute(
            f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS row_order BIGINT "
            f"DEFAULT nextval('{sequence}')"
        )
        conn.execute(
            f"UPDATE {table} SET row_order = ranked.n FROM (SELECT rowid AS r, "
            f"row_number() OVER (ORDER BY rowid) AS n FROM {table}) AS ranked "
            f"WHERE {table}.rowid = ranked.r"
        )
    if legacy or conn.execute(
        f"SELECT 1 FROM {META_TABLE} WHERE key = 'legacy_max_rowid:sessions'"
    ).fetchone():
        (mark,) = conn.execute(
            "SELECT coalesce(max(row_order), 0) FROM sessions WHERE rowid <= coalesce(("
            f"SELECT CAST(value AS BIGINT) FROM {META_TABLE} "
            "WHERE key = 'legacy_max_rowid:sessions'), -1)"
        ).fetchone()
        _set_meta(conn, "legacy_max_row_order:sessions", str(mark))
    conn.execute("ALTER TABLE merkle_root_overrides ADD COLUMN IF NOT EXISTS log_size INTEGER")
    # Older overrides: the commits made before them (or in their transaction).
    conn.execute(
        "UPDATE merkle_root_overrides SET log_size = (SELECT count(*) FROM merkle_log l "
        "WHERE l.session_id = merkle_root_overrides.session_id "
        "AND l.created_at <= merkle_root_overrides.created_at) WHERE log_size IS NULL"
    )


def _migrate_5_commits_on_rows(conn: Connection, *, legacy: bool) -> None:
    """Each node-state row the store wrote carries its own log entry (``merkle_commit``);
    ``merkle_log`` becomes a view over them, so a commit writes one table, not two."""
    from .store.commits import move_log_onto_rows  # the commit code owns the layout

    move_log_onto_rows(conn)


MIGRATIONS: tuple[Migration, ...] = (
    _migrate_1_upstream_layout,
    _migrate_2_python_port,
    _migrate_3_commit_log,
    _migrate_4_stored_order,
    _migrate_5_commits_on_rows,
)
"""Append-only: the position of a migration (1-based) is the schema version it produces."""

SCHEMA_VERSION = len(MIGRATIONS)


def read_schema_version(conn: Connection) -> int | None:
    """The schema version recorded in the file; ``0`` for an upstream file, None when empty."""
    tables = _existing_tables(conn)
    if META_TABLE in tables:
        row = conn.execute(
            f"SELECT value FROM {META_TABLE} WHERE key = 'schema_version'"
        ).fetchone()
        return int(row[0]) if row else 0
    return 0 if tables & set(TABLES) else None


def init_schema(conn: Connection) -> int:
    """Create or migrate every table, sequence and index; idempotent.

    Applies the migrations the file lacks in one transaction, so a failure leaves the file as
    it was. A file already at :data:`SCHEMA_VERSION` is not written to at all.

    Args:
        conn: A read-write ``duckdb`` connection.

    Returns:
        The schema version of the file afterwards.

    Raises:
        SchemaVersionError: The file was written by a newer perspt-store, or a migration failed
            (the original DuckDB error is chained as ``__cause__``).
    """
    version = read_schema_version(conn)
    if version is not None and version > SCHEMA_VERSION:
        raise SchemaVersionError.newer(
            version, SCHEMA_VERSION, "upgrade perspt-store to write to it", operation="migrate"
        )
    if version == SCHEMA_VERSION:
        return version
    legacy = version == 0  # tables exist but no meta table: written by upstream
    start = version or 0
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute(META_SQL)
        for number, migration in enumerate(MIGRATIONS[start:], start=start + 1):
            migration(conn, legacy=legacy)
            _set_meta(conn, "schema_version", str(number))
        conn.execute("COMMIT")
        if start in (3, 4):
            # Migration 5 dropped a table with a foreign key: checkpoint now, so the WAL
            # need not replay that (see _engine.replay_wal_with_core_functions).
            import duckdb  # only here: importing this module stays light

            with contextlib.suppress(duckdb.Error):
                conn.execute("CHECKPOINT")
    except Exception as exc:
        conn.execute("ROLLBACK")
        raise SchemaVersionError(
            f"could not migrate the database from schema version {start} to "
            f"{SCHEMA_VERSION}: {exc}",
            operation="migrate",
        ) from exc
    return SCHEMA_VERSION

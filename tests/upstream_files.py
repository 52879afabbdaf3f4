"""Database files exactly as upstream perspt-store (Rust) writes them, built with raw DuckDB SQL.

Nothing here goes through perspt_store's schema or mapping code: the DDL below is upstream's
(SPEC §3, REAL energy columns, no meta table, ``branch_lineage`` without ``session_id``) and
every value is encoded the way upstream's writers encode it (SPEC §6 D1/D6/D7/D8, §7.1):

* hashes are bound as lowercase hex *text* into BLOB columns (64 bytes for a 32-byte hash),
  and ``None`` as ``''``, i.e. an empty blob;
* ``None`` in optional text columns is written as ``''``;
* a review's ``None`` energy/degraded is written as ``0.0``/``false``;
* booleans and numbers are bound as strings where upstream binds them so (``'true'``, ``'3'``);
* lists are compact JSON text (serde_json: no spaces, non-ASCII kept), ``''`` when upstream's
  serialisation failed;
* energies go into REAL (float32) columns.

The row models are only used as plain containers for the values a Rust caller passes in and
for the values a correct reader must decode (SPEC §7.1's read rules, applied by
:func:`upstream_read_back`).

The second half of the module maps each table to the store method that writes it and the
getters that read it back, for the round-trip tests.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

import perspt_store as ps

# --- upstream's DDL (SPEC §3), in upstream's creation order -------------------------------

SEQUENCED = (
    "node_states",
    "energy_history",
    "llm_requests",
    "structural_digests",
    "context_provenance",
    "escalation_reports",
    "rewrite_records",
    "sheaf_validations",
    "provisional_branches",
    "branch_lineage",
    "interface_seals",
    "branch_flushes",
    "task_graph_edges",
    "review_outcomes",
    "verification_results",
    "artifact_bundles",
    "repair_footprints",
    "srbn_step_records",
    "correction_attempts",
)

_FK = "FOREIGN KEY (session_id) REFERENCES sessions(session_id)"

# node_states as upstream creates it: the seven later columns come from ALTER TABLE.
_UPSTREAM_DDL: dict[str, str] = {
    "sessions": """
        CREATE TABLE IF NOT EXISTS sessions (
            session_id VARCHAR PRIMARY KEY,
            task TEXT NOT NULL,
            working_dir TEXT NOT NULL,
            merkle_root BLOB,
            detected_toolchain VARCHAR,
            created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            status VARCHAR DEFAULT 'active'
        )""",
    "node_states": f"""
        CREATE TABLE IF NOT EXISTS node_states (
            id INTEGER PRIMARY KEY DEFAULT nextval('seq_node_states_id'),
            node_id VARCHAR NOT NULL,
            session_id VARCHAR NOT NULL,
            state VARCHAR NOT NULL,
            v_total REAL DEFAULT 0.0,
            merkle_hash BLOB,
            attempt_count INTEGER DEFAULT 0,
            created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            {_FK}
        )""",
    "energy_history": f"""
        CREATE TABLE IF NOT EXISTS energy_history (
            id INTEGER PRIMARY KEY DEFAULT nextval('seq_energy_history_id'),
            node_id VARCHAR NOT NULL,
            session_id VARCHAR NOT NULL,
            timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            v_syn REAL DEFAULT 0.0,
            v_str REAL DEFAULT 0.0,
            v_log REAL DEFAULT 0.0,
            v_boot REAL DEFAULT 0.0,
            v_sheaf REAL DEFAULT 0.0,
            v_total REAL DEFAULT 0.0,
            {_FK}
        )""",
    "llm_requests": f"""
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
            {_FK}
        )""",
    "structural_digests": f"""
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
            {_FK}
        )""",
    "context_provenance": f"""
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
            {_FK}
        )""",
    "escalation_reports": f"""
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
            {_FK}
        )""",
    "rewrite_records": f"""
        CREATE TABLE IF NOT EXISTS rewrite_records (
            id INTEGER PRIMARY KEY DEFAULT nextval('seq_rewrite_records_id'),
            session_id VARCHAR NOT NULL,
            node_id VARCHAR NOT NULL,
            action VARCHAR NOT NULL,
            category VARCHAR NOT NULL,
            requeued_nodes TEXT,
            inserted_nodes TEXT,
            created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            {_FK}
        )""",
    "sheaf_validations": f"""
        CREATE TABLE IF NOT EXISTS sheaf_validations (
            id INTEGER PRIMARY KEY DEFAULT nextval('seq_sheaf_validations_id'),
            session_id VARCHAR NOT NULL,
            node_id VARCHAR NOT NULL,
            validator_class VARCHAR NOT NULL,
            plugin_source VARCHAR,
            passed BOOLEAN NOT NULL,
            evidence_summary TEXT,
            affected_files TEXT,
            v_sheaf_contribution REAL DEFAULT 0.0,
            requeue_targets TEXT,
            created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            {_FK}
        )""",
    "provisional_branches": f"""
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
            {_FK}
        )""",
    "branch_lineage": """
        CREATE TABLE IF NOT EXISTS branch_lineage (
            id INTEGER PRIMARY KEY DEFAULT nextval('seq_branch_lineage_id'),
            lineage_id VARCHAR NOT NULL,
            parent_branch_id VARCHAR NOT NULL,
            child_branch_id VARCHAR NOT NULL,
            depends_on_seal BOOLEAN NOT NULL DEFAULT true,
            created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
        )""",
    "interface_seals": f"""
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
            {_FK}
        )""",
    "branch_flushes": f"""
        CREATE TABLE IF NOT EXISTS branch_flushes (
            id INTEGER PRIMARY KEY DEFAULT nextval('seq_branch_flushes_id'),
            flush_id VARCHAR NOT NULL,
            session_id VARCHAR NOT NULL,
            parent_node_id VARCHAR NOT NULL,
            flushed_branch_ids TEXT NOT NULL,
            requeue_node_ids TEXT NOT NULL,
            reason TEXT NOT NULL,
            created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            {_FK}
        )""",
    "task_graph_edges": f"""
        CREATE TABLE IF NOT EXISTS task_graph_edges (
            id INTEGER PRIMARY KEY DEFAULT nextval('seq_task_graph_edges_id'),
            session_id VARCHAR NOT NULL,
            parent_node_id VARCHAR NOT NULL,
            child_node_id VARCHAR NOT NULL,
            edge_type VARCHAR NOT NULL DEFAULT 'dependency',
            created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            {_FK}
        )""",
    "review_outcomes": f"""
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
            {_FK}
        )""",
    "verification_results": f"""
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
            {_FK}
        )""",
    "artifact_bundles": f"""
        CREATE TABLE IF NOT EXISTS artifact_bundles (
            id INTEGER PRIMARY KEY DEFAULT nextval('seq_artifact_bundles_id'),
            session_id VARCHAR NOT NULL,
            node_id VARCHAR NOT NULL,
            bundle_json TEXT NOT NULL,
            artifact_count INTEGER DEFAULT 0,
            command_count INTEGER DEFAULT 0,
            touched_files TEXT,
            created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            {_FK}
        )""",
    "feature_charters": f"""
        CREATE TABLE IF NOT EXISTS feature_charters (
            charter_id VARCHAR PRIMARY KEY,
            session_id VARCHAR NOT NULL,
            scope_description TEXT NOT NULL,
            max_modules INTEGER,
            max_files INTEGER,
            max_revisions INTEGER,
            language_constraint VARCHAR,
            created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            {_FK}
        )""",
    "plan_revisions": f"""
        CREATE TABLE IF NOT EXISTS plan_revisions (
            revision_id VARCHAR PRIMARY KEY,
            session_id VARCHAR NOT NULL,
            sequence INTEGER NOT NULL,
            plan_json TEXT NOT NULL,
            reason VARCHAR NOT NULL,
            supersedes VARCHAR,
            status VARCHAR NOT NULL DEFAULT 'active',
            created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            {_FK}
        )""",
    "repair_footprints": f"""
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
            {_FK}
        )""",
    "budget_envelopes": f"""
        CREATE TABLE IF NOT EXISTS budget_envelopes (
            session_id VARCHAR PRIMARY KEY,
            max_steps INTEGER,
            steps_used INTEGER NOT NULL DEFAULT 0,
            max_revisions INTEGER,
            revisions_used INTEGER NOT NULL DEFAULT 0,
            max_cost_usd DOUBLE,
            cost_used_usd DOUBLE NOT NULL DEFAULT 0.0,
            updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            {_FK}
        )""",
    "srbn_step_records": f"""
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
            {_FK}
        )""",
    "correction_attempts": f"""
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
            {_FK}
        )""",
}

# The 31 explicit indexes of SPEC §3: name -> (table, indexed columns).
UPSTREAM_INDEXES: dict[str, tuple[str, str]] = {
    "idx_node_states_session": ("node_states", "session_id"),
    "idx_energy_history_session": ("energy_history", "session_id"),
    "idx_llm_requests_session": ("llm_requests", "session_id"),
    "idx_structural_digests_session": ("structural_digests", "session_id"),
    "idx_context_provenance_session": ("context_provenance", "session_id"),
    "idx_escalation_reports_session": ("escalation_reports", "session_id"),
    "idx_rewrite_records_session": ("rewrite_records", "session_id"),
    "idx_sheaf_validations_session": ("sheaf_validations", "session_id"),
    "idx_provisional_branches_session": ("provisional_branches", "session_id"),
    "idx_provisional_branches_parent": ("provisional_branches", "parent_node_id"),
    "idx_branch_lineage_parent": ("branch_lineage", "parent_branch_id"),
    "idx_interface_seals_session": ("interface_seals", "session_id"),
    "idx_interface_seals_node": ("interface_seals", "node_id"),
    "idx_branch_flushes_session": ("branch_flushes", "session_id"),
    "idx_task_graph_edges_session": ("task_graph_edges", "session_id"),
    "idx_task_graph_edges_parent": ("task_graph_edges", "parent_node_id"),
    "idx_review_outcomes_session": ("review_outcomes", "session_id"),
    "idx_review_outcomes_node": ("review_outcomes", "node_id"),
    "idx_verification_results_session": ("verification_results", "session_id"),
    "idx_verification_results_node": ("verification_results", "node_id"),
    "idx_artifact_bundles_session": ("artifact_bundles", "session_id"),
    "idx_artifact_bundles_node": ("artifact_bundles", "node_id"),
    "idx_feature_charters_session": ("feature_charters", "session_id"),
    "idx_plan_revisions_session": ("plan_revisions", "session_id"),
    "idx_plan_revisions_status": ("plan_revisions", "status"),
    "idx_repair_footprints_session": ("repair_footprints", "session_id"),
    "idx_repair_footprints_node": ("repair_footprints", "node_id"),
    "idx_srbn_step_records_session": ("srbn_step_records", "session_id"),
    "idx_srbn_step_records_node": ("srbn_step_records", "session_id, node_id"),
    "idx_correction_attempts_session": ("correction_attempts", "session_id"),
    "idx_correction_attempts_node": ("correction_attempts", "session_id, node_id"),
}

NODE_STATES_LATER_COLUMNS = (
    ("node_class", "VARCHAR"),
    ("owner_plugin", "VARCHAR"),
    ("goal", "TEXT"),
    ("parent_id", "VARCHAR"),
    ("children", "TEXT"),
    ("last_error_type", "VARCHAR"),
    ("committed_at", "VARCHAR"),
)

# Upstream's creation order: the node_states migration runs after branch_flushes.
TABLES_062 = tuple(_UPSTREAM_DDL)
# A 0.5-era file: the tables up to branch_flushes, node_states without the later columns.
TABLES_05 = TABLES_062[: TABLES_062.index("branch_flushes") + 1]
MISSING_IN_05 = tuple(t for t in TABLES_062 if t not in TABLES_05)

REAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "node_states": ("v_total",),
    "energy_history": ("v_syn", "v_str", "v_log", "v_boot", "v_sheaf", "v_total"),
    "sheaf_validations": ("v_sheaf_contribution",),
}


def create_upstream_schema(conn: duckdb.DuckDBPyConnection, *, era: str = "0.6.2") -> None:
    """Run upstream's schema initialisation for ``era`` ("0.6.2" or "0.5") on ``conn``.

    Like upstream: one autocommitted statement at a time, sequences before their table,
    indexes after it, and (0.6.2) the seven ``ALTER TABLE node_states ADD COLUMN`` right
    after ``branch_flushes``.
    """
    tables = TABLES_062 if era == "0.6.2" else TABLES_05
    for table in tables:
        if table in SEQUENCED:
            conn.execute(f"CREATE SEQUENCE IF NOT EXISTS seq_{table}_id START 1")
        conn.execute(_UPSTREAM_DDL[table])
        for index, (on_table, columns) in UPSTREAM_INDEXES.items():
            if on_table == table:
                conn.execute(f"CREATE INDEX IF NOT EXISTS {index} ON {table}({columns})")
        if table == "branch_flushes" and era == "0.6.2":
            for column, dtype in NODE_STATES_LATER_COLUMNS:
                try:  # upstream ignores every error here (D14)
                    conn.execute(f"ALTER TABLE node_states ADD COLUMN {column} {dtype}")
                except duckdb.Error:
                    pass


# --- upstream's value encodings -----------------------------------------------------------


def f32(value: float) -> float:
    """``value`` rounded to float32, as a REAL column stores it."""
    result: float = struct.unpack("<f", struct.pack("<f", value))[0]
    return result


def _hex(value: bytes | None) -> str:
    """D1/D6: a hash is bound as lowercase hex text; None as '' (an empty blob)."""
    return "" if value is None else value.hex()


def _opt(value: str | None) -> str:
    """D6: None in an optional text column is written as ''."""
    return "" if value is None else value


def _json(value: list[str] | None) -> str:
    """A serde_json compact list; '' for None (upstream's Option<String> of JSON)."""
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _text_bool(value: bool) -> str:
    """D8: booleans are bound as text."""
    return "true" if value else "false"


# SPEC §7.1: optional text columns where upstream's '' meant None.
EMPTY_MEANS_NONE: dict[str, tuple[str, ...]] = {
    "sessions": ("detected_toolchain",),
    "llm_requests": ("node_id",),
    "sheaf_validations": ("plugin_source",),
    "provisional_branches": ("sandbox_dir",),
    "review_outcomes": ("reviewer_note", "escalation_category"),
    "verification_results": ("degraded_reason",),
    "node_states": (
        "node_class", "owner_plugin", "goal", "parent_id", "last_error_type", "committed_at"
    ),
}


def upstream_values(row: ps.Row) -> dict[str, Any]:
    """The column values upstream 0.6.2's writer binds for ``row`` (SPEC §5, §6)."""
    v = dict(row.__dict__)
    if isinstance(row, ps.SessionRecord):
        v["merkle_root"] = _hex(row.merkle_root)
        v["detected_toolchain"] = _opt(row.detected_toolchain)
    elif isinstance(row, ps.NodeStateRecord):
        v["v_total"] = str(row.v_total)
        v["merkle_hash"] = _hex(row.merkle_hash)
        for name in ("node_class", "owner_plugin", "goal", "parent_id", "last_error_type",
                     "committed_at"):
            v[name] = _opt(v[name])
        v["children"] = _json(row.children)
    elif isinstance(row, ps.LlmRequestRecord):
        v["node_id"] = _opt(row.node_id)
    elif isinstance(row, ps.StructuralDigestRecord):
        v["hash"] = _hex(row.hash)
    elif isinstance(row, ps.InterfaceSealRow):
        v["seal_hash"] = _hex(row.seal_hash)
    elif isinstance(row, ps.ProvisionalBranchRow):
        v["parent_seal_hash"] = _hex(row.parent_seal_hash)
        v["sandbox_dir"] = _opt(row.sandbox_dir)
    elif isinstance(row, ps.SheafValidationRow):
        v["passed"] = _text_bool(row.passed)
        v["plugin_source"] = _opt(row.plugin_source)
        v["v_sheaf_contribution"] = str(row.v_sheaf_contribution)
    elif isinstance(row, ps.BranchLineageRow):
        assert row.session_id is None, "upstream's branch_lineage has no session_id"
        del v["session_id"]
        v["depends_on_seal"] = _text_bool(row.depends_on_seal)
    elif isinstance(row, ps.ReviewOutcomeRow):
        v["reviewer_note"] = _opt(row.reviewer_note)
        v["escalation_category"] = _opt(row.escalation_category)
        v["energy_at_review"] = 0.0 if row.energy_at_review is None else row.energy_at_review
        v["degraded"] = False if row.degraded is None else row.degraded
    elif isinstance(row, ps.VerificationResultRow):
        for name in ("syntax_ok", "build_ok", "tests_ok", "lint_ok", "degraded"):
            v[name] = _text_bool(v[name])
        for name in ("diagnostics_count", "tests_passed", "tests_failed"):
            v[name] = str(v[name])
        v["degraded_reason"] = _opt(row.degraded_reason)
    # Lists everywhere else are compact JSON; optional scalars elsewhere bind typed (NULL).
    for name, value in list(v.items()):
        if isinstance(value, list):
            v[name] = _json(value)
    return v


def upstream_read_back(row: ps.Row) -> ps.Row:
    """What a correct reader returns for ``row`` after upstream wrote it (SPEC §7.1).

    Encoding is lossless except: REAL energies are float32; '' in an optional text column
    and an empty hash blob read as None; a review's 0.0 energy / false degraded read as None.
    """
    data = row.to_dict()
    for name in REAL_COLUMNS.get(type(row).__table__, ()):
        data[name] = f32(data[name])
    for name in EMPTY_MEANS_NONE.get(type(row).__table__, ()):
        if data[name] == "":
            data[name] = None
    for name in ("merkle_root", "merkle_hash", "parent_seal_hash"):
        if data.get(name) == b"":
            data[name] = None
    if isinstance(row, ps.ReviewOutcomeRow):
        if data["energy_at_review"] == 0.0:
            data["energy_at_review"] = None
        if data["degraded"] is False:
            data["degraded"] = None
    return type(row).from_dict(data)


# --- writing a file -----------------------------------------------------------------------


@dataclass
class UpstreamFile:
    """A database file written as upstream would, and what a correct reader returns from it."""

    path: Path
    era: str
    session_ids: tuple[str, ...]
    expected: dict[str, list[ps.Row]] = field(default_factory=dict)
    """Table -> the decoded rows a reader must return, in insertion order."""
    max_ids: dict[str, int] = field(default_factory=dict)
    """Sequenced table -> MAX(id) when the file was written (0 for an empty table)."""
    sequence_last: dict[str, int] = field(default_factory=dict)
    """Sequenced table -> the sequence's last value (ahead of max_ids after a failed insert)."""

    @property
    def tables(self) -> tuple[str, ...]:
        return TABLES_062 if self.era == "0.6.2" else TABLES_05

    def rows(self, table: str, session_id: str | None = None) -> list[ps.Row]:
        """Expected rows of ``table`` (of one session if given), in insertion order."""
        rows = self.expected.get(table, [])
        if session_id is None:
            return list(rows)
        return [r for r in rows if getattr(r, "session_id", None) == session_id]


class _UpstreamWriter:
    def __init__(self, conn: duckdb.DuckDBPyConnection, tables: Iterable[str]) -> None:
        self.conn = conn
        self.expected: dict[str, list[ps.Row]] = {t: [] for t in tables}

    def write(
        self,
        row: ps.Row,
        *,
        raw: dict[str, Any] | None = None,
        only: tuple[str, ...] | None = None,
        expect: ps.Row | None = None,
    ) -> None:
        """Insert ``row`` as upstream does; ``raw`` overrides encoded values, ``only`` limits
        the columns written (the rest take their default, e.g. NULL), ``expect`` overrides
        the decoded expectation."""
        values = upstream_values(row)
        values.update(raw or {})
        if only is not None:
            values = {k: v for k, v in values.items() if k in only}
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        table = type(row).__table__
        self.conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", list(values.values()))
        self.expected[table].append(expect if expect is not None else upstream_read_back(row))

    def update_expected(self, table: str, index: int, **changes: Any) -> None:
        old = self.expected[table][index]
        self.expected[table][index] = type(old).from_dict({**old.to_dict(), **changes})


def _h(label: str) -> bytes:
    """A deterministic 32-byte hash."""
    return hashlib.sha256(label.encode()).digest()


def _finish(conn: duckdb.DuckDBPyConnection, uf: UpstreamFile, expected: dict[str, Any]) -> None:
    uf.expected = expected
    existing = {r[0] for r in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    for table in SEQUENCED:
        if table not in existing:
            continue
        (mark,) = conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()
        uf.max_ids[table] = int(mark)
        (last,) = conn.execute(
            "SELECT coalesce(last_value, 0) FROM duckdb_sequences() WHERE sequence_name = ?",
            [f"seq_{table}_id"],
        ).fetchone()
        uf.sequence_last[table] = int(last)


SESSION_A = "9b1f6c0e-5d2a-4c1e-9a57-2f7d3e8b4a01"
SESSION_B = "c3e8a7d2-1f4b-4e6a-8d90-6b5a2c1f0e77"
BRANCH_IFACE = "branch_iface_api_0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
BRANCH_IMPL = "branch_impl_divide_1a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d"
BRANCH_B = "branch_task1_77aa88bb-99cc-4dde-8eff-001122334455"


def write_upstream_062(path: Path) -> UpstreamFile:
    """Write a file as upstream perspt-store 0.6.2 would after two agent runs.

    Session A is a completed three-node run (plan -> iface_api -> impl_divide) with every
    table populated; session B is a small running one. Every legacy encoding appears at
    least once: hex-text hashes, empty blobs and '' for None, review 0.0/false placeholders,
    a '' JSON list, float32 energies, a node snapshot from before the phase-8 migration
    (NULL in the seven later columns), and a sequence gap left by a failed insert.

    Returns:
        The file, with the values a correct reader must decode, table by table.
    """
    path = Path(path)
    conn = duckdb.connect(str(path))
    try:
        conn.execute("SET TimeZone = 'UTC'")  # the Rust build has no ICU: naive UTC stamps
        create_upstream_schema(conn, era="0.6.2")
        w = _UpstreamWriter(conn, TABLES_062)
        a, b = SESSION_A, SESSION_B

        # sessions (no id; ordered by rowid)
        w.write(ps.SessionRecord(
            session_id=a, task="Add a divide command to the calculator CLI",
            working_dir="/home/dev/src/calc", merkle_root=None, detected_toolchain=None,
            status="RUNNING"))
        w.write(ps.SessionRecord(
            session_id=b, task="Fix the 'off-by-one' in parser; DROP TABLE sessions; --",
            working_dir="C:\\Users\\dev\\src\\parser", merkle_root=None,
            detected_toolchain="cargo", status="RUNNING"))

        # node_states: a snapshot from before the phase-8 migration (seven NULL columns)
        w.write(
            ps.NodeStateRecord(node_id="plan", session_id=a, state="Completed", v_total=0.0,
                               attempt_count=1),
            only=("node_id", "session_id", "state", "v_total", "merkle_hash", "attempt_count"),
        )
        w.write(ps.NodeStateRecord(
            node_id="iface_api", session_id=a, state="Completed", v_total=0.42,
            merkle_hash=_h("iface_api seal"), attempt_count=2, node_class="Interface",
            owner_plugin="rust", goal="Define the Divide trait", parent_id="plan",
            children=["impl_divide"], last_error_type=None, committed_at="2025-11-20T10:15:02Z"))
        w.write(ps.NodeStateRecord(
            node_id="impl_divide", session_id=a, state="Completed", v_total=1.5,
            merkle_hash=None, attempt_count=3, node_class="Implementation", owner_plugin="rust",
            goal="Implement divide — «zéro» check, 'quotes' and \"doubles\"", parent_id="iface_api",
            children=[], last_error_type="CompilationError", committed_at="2025-11-20T10:17:45Z"))
        w.write(ps.NodeStateRecord(
            node_id="impl_divide", session_id=a, state="Completed", v_total=0.1,
            attempt_count=4, node_class="Implementation", owner_plugin="rust",
            goal="Implement divide", parent_id="iface_api", children=None,
            committed_at="2025-11-20T10:19:00Z"))
        w.write(ps.NodeStateRecord(node_id="task1", session_id=b, state="Completed",
                                   v_total=2.75, attempt_count=1))
        # Upstream wrote the commit's merkle hash into the session afterwards.
        conn.execute("UPDATE sessions SET merkle_root = ?, status = 'COMPLETED', "
                     "updated_at = CURRENT_TIMESTAMP WHERE session_id = ?",
                     [_h("iface_api seal").hex(), a])
        w.update_expected("sessions", 0, merkle_root=_h("iface_api seal"), status="COMPLETED")

        # energy_history (float32)
        for node, sid, vals in (
            ("iface_api", a, (0.1, 0.2, 0.0, 0.0, 0.12, 0.42)),
            ("impl_divide", a, (1.0, 0.5, 3.0, 0.0, 0.0, 4.5)),
            ("impl_divide", a, (0.0, 0.0, 0.1, 0.0, 0.0, 0.1)),
            ("task1", b, (1e-7, 123.456, 2.5, 0.333, 0.0, 126.289)),
        ):
            w.write(ps.EnergyRecord(node_id=node, session_id=sid, v_syn=vals[0], v_str=vals[1],
                                    v_log=vals[2], v_boot=vals[3], v_sheaf=vals[4],
                                    v_total=vals[5]))

        # llm_requests: one full row, one usage-only row with no node, one estimated row
        w.write(ps.LlmRequestRecord(
            session_id=a, node_id="iface_api", model="gpt-4o",
            prompt="Write the Divide trait.\nReturn only code.", response="pub trait Divide {}",
            tokens_in=120, tokens_out=45, latency_ms=900))
        w.write(ps.LlmRequestRecord(session_id=a, node_id=None, model="gpt-4o", prompt="",
                                    response="", tokens_in=0, tokens_out=0, latency_ms=300))
        w.write(ps.LlmRequestRecord(session_id=b, node_id="task1", model="claude-sonnet",
                                    prompt="x" * 11, response="ok", latency_ms=1200))
        # A failed insert (unknown session) consumed an id: sequences have gaps.
        conn.execute("SELECT nextval('seq_llm_requests_id')")

        # structural_digests (hex-text hashes; version read by name, D4)
        w.write(ps.StructuralDigestRecord(
            digest_id="sd-iface_api-3f2a", session_id=a, node_id="iface_api",
            source_path="src/api.rs", artifact_kind="interface", hash=_h("src/api.rs"),
            version=1))
        w.write(ps.StructuralDigestRecord(
            digest_id="sd-impl_divide-8c1d", session_id=a, node_id="impl_divide",
            source_path="src/divide.rs", artifact_kind="implementation",
            hash=_h("src/divide.rs")[:20], version=7))
        w.write(ps.StructuralDigestRecord(
            digest_id="sd-task1-0001", session_id=b, node_id="task1", source_path="parser.py",
            artifact_kind="module", hash=_h("parser.py"), version=2))

        # context_provenance (JSON lists of "<id>:<hex>"; one list upstream failed to write)
        w.write(ps.ContextProvenanceRecord(
            session_id=a, node_id="iface_api", context_package_id="ctx-iface-1",
            structural_hashes=[f"src/api.rs:{_h('src/api.rs').hex()}"], summary_hashes=[],
            dependency_hashes=["plan:abcd"], included_file_count=3, total_bytes=40960))
        w.write(
            ps.ContextProvenanceRecord(
                session_id=a, node_id="impl_divide", context_package_id="ctx-impl-1",
                structural_hashes=[], summary_hashes=[f"api:{_h('summary').hex()}"],
                dependency_hashes=[], included_file_count=1, total_bytes=2048),
            raw={"structural_hashes": ""},
        )
        w.write(ps.ContextProvenanceRecord(
            session_id=b, node_id="task1", context_package_id="ctx-task1",
            included_file_count=0, total_bytes=0))

        # escalation_reports (opaque JSON documents, one '' list)
        w.write(ps.EscalationReportRecord(
            session_id=a, node_id="impl_divide", category="ComplexityExceeded",
            action='{"type":"Split","into":["impl_divide__1","impl_divide__2"]}',
            energy_snapshot='{"v_syn":1.0,"v_total":4.5}',
            stage_outcomes='[{"stage":"build","ok":false}]',
            evidence="cargo build failed: E0308 mismatched types",
            affected_node_ids=["impl_divide", "tests"]))
        w.write(
            ps.EscalationReportRecord(
                session_id=b, node_id="task10", category="Stalled", action='{"type":"Retry"}',
                energy_snapshot="{}", stage_outcomes="[]", evidence="",
                affected_node_ids=[]),
            raw={"affected_node_ids": ""},
        )

        # rewrite_records
        w.write(ps.RewriteRecordRow(
            session_id=a, node_id="impl_divide", action='{"type":"Split"}',
            category="ComplexityExceeded", requeued_nodes=["impl_divide"],
            inserted_nodes=["impl_divide__1", "impl_divide__2"]))
        w.write(ps.RewriteRecordRow(session_id=b, node_id="task1", action='{"type":"Retry"}',
                                    category="Stalled", requeued_nodes=[], inserted_nodes=[]))

        # sheaf_validations (passed bound as text, D8; REAL contribution)
        w.write(ps.SheafValidationRow(
            session_id=a, node_id="iface_api", validator_class="InterfaceConsistency",
            plugin_source="rust", passed=True, evidence_summary="", affected_files=[],
            v_sheaf_contribution=0.0, requeue_targets=[]))
        w.write(ps.SheafValidationRow(
            session_id=a, node_id="impl_divide", validator_class="SignatureMatch",
            plugin_source=None, passed=False, evidence_summary="signature mismatch: divide",
            affected_files=["src/divide.rs"], v_sheaf_contribution=0.75,
            requeue_targets=["impl_divide"]))
        w.write(ps.SheafValidationRow(
            session_id=b, node_id="task1", validator_class="ImportGraph", plugin_source="python",
            passed=True, v_sheaf_contribution=0.1))

        # provisional_branches (hex-text parent seal, empty blob for None, '' sandbox)
        w.write(ps.ProvisionalBranchRow(
            branch_id=BRANCH_IFACE, session_id=a, node_id="iface_api", parent_node_id="root",
            state="active", parent_seal_hash=None, sandbox_dir=None))
        w.write(ps.ProvisionalBranchRow(
            branch_id=BRANCH_IMPL, session_id=a, node_id="impl_divide",
            parent_node_id="iface_api", state="active", parent_seal_hash=_h("iface_api seal"),
            sandbox_dir="/tmp/perspt/sandbox/impl_divide"))
        w.write(ps.ProvisionalBranchRow(
            branch_id=BRANCH_B, session_id=b, node_id="task1", parent_node_id="root",
            state="active", sandbox_dir="/tmp/perspt/sandbox/task1"))
        conn.execute("UPDATE provisional_branches SET state = 'merged', "
                     "updated_at = CURRENT_TIMESTAMP WHERE branch_id = ?", [BRANCH_IMPL])
        w.update_expected("provisional_branches", 1, state="merged")
        conn.execute("UPDATE provisional_branches SET state = 'flushed', "
                     "updated_at = CURRENT_TIMESTAMP WHERE branch_id = ?", [BRANCH_B])
        w.update_expected("provisional_branches", 2, state="flushed")

        # branch_lineage (no session column; parent is a node id, D28; bool as text)
        w.write(ps.BranchLineageRow(
            lineage_id=f"lin_{BRANCH_IMPL}_iface_api", parent_branch_id="iface_api",
            child_branch_id=BRANCH_IMPL, depends_on_seal=True))
        w.write(ps.BranchLineageRow(
            lineage_id=f"lin_{BRANCH_B}_root", parent_branch_id="root",
            child_branch_id=BRANCH_B, depends_on_seal=False))

        # interface_seals (hex-text seal hashes, D1)
        w.write(ps.InterfaceSealRow(
            seal_id="seal-iface-1", session_id=a, node_id="iface_api", sealed_path="src/api.rs",
            artifact_kind="interface", seal_hash=_h("iface_api seal v1"), version=1))
        w.write(ps.InterfaceSealRow(
            seal_id="seal-iface-2", session_id=a, node_id="iface_api", sealed_path="src/api.rs",
            artifact_kind="interface", seal_hash=_h("iface_api seal"), version=2))
        w.write(ps.InterfaceSealRow(
            seal_id="seal-task1", session_id=b, node_id="task1", sealed_path="parser.pyi",
            artifact_kind="stub", seal_hash=_h("parser.pyi"), version=1))

        # branch_flushes
        w.write(ps.BranchFlushRow(
            flush_id="flush-0001", session_id=b, parent_node_id="root",
            flushed_branch_ids=[BRANCH_B], requeue_node_ids=["task1"],
            reason="parent seal changed"))

        # task_graph_edges
        w.write(ps.TaskGraphEdgeRow(session_id=a, parent_node_id="plan",
                                    child_node_id="iface_api", edge_type="depends_on"))
        w.write(ps.TaskGraphEdgeRow(session_id=a, parent_node_id="iface_api",
                                    child_node_id="impl_divide", edge_type="interface_boundary"))
        w.write(ps.TaskGraphEdgeRow(session_id=b, parent_node_id="task1",
                                    child_node_id="task10", edge_type="split_sequence"))

        # review_outcomes (None note/category as '', None energy/degraded as 0.0/false, D7)
        w.write(ps.ReviewOutcomeRow(session_id=a, node_id="iface_api", outcome="approved",
                                    reviewer_note="LGTM"))
        w.write(ps.ReviewOutcomeRow(
            session_id=a, node_id="impl_divide", outcome="rejected", reviewer_note=None,
            energy_at_review=0.42, degraded=True, escalation_category="complexity"))
        w.write(ps.ReviewOutcomeRow(session_id=a, node_id="impl_divide",
                                    outcome="approved_with_edit", reviewer_note="renamed fn"))
        w.write(ps.ReviewOutcomeRow(session_id=b, node_id="task1", outcome="auto_approved"))

        # verification_results (booleans and counts bound as text, D8)
        w.write(ps.VerificationResultRow(
            session_id=a, node_id="iface_api", result_json='{"syntax":"ok","tests":[5,1]}',
            syntax_ok=True, build_ok=True, tests_ok=False, lint_ok=True, diagnostics_count=2,
            tests_passed=5, tests_failed=1, degraded=False, degraded_reason=None))
        w.write(ps.VerificationResultRow(
            session_id=a, node_id="impl_divide", result_json="{}", syntax_ok=True,
            degraded=True, degraded_reason="LSP unavailable"))
        w.write(ps.VerificationResultRow(
            session_id=b, node_id="task1", result_json='{"ok":true}', syntax_ok=True,
            build_ok=True, tests_ok=True, lint_ok=True, tests_passed=12))

        # artifact_bundles
        w.write(ps.ArtifactBundleRow(
            session_id=a, node_id="iface_api", bundle_json='{"artifacts":3}', artifact_count=3,
            command_count=1, touched_files=["src/api.rs", "src/lib.rs", "Cargo.toml"]))
        w.write(ps.ArtifactBundleRow(session_id=b, node_id="task1", bundle_json="{}",
                                     touched_files=[]))

        # feature_charters (typed parameters: None is NULL)
        w.write(ps.FeatureCharterRow(
            charter_id="charter-calc", session_id=a, scope_description="CLI arithmetic only",
            max_modules=5, max_files=20, max_revisions=3, language_constraint="rust"))
        w.write(ps.FeatureCharterRow(charter_id="charter-parser", session_id=b,
                                     scope_description="parser fixes"))

        # plan_revisions: rev-1 inserted active, then superseded by rev-2
        w.write(ps.PlanRevisionRow(revision_id="rev-1", session_id=a, sequence=1,
                                   plan_json='{"tasks":["plan"]}', reason="initial"))
        conn.execute("UPDATE plan_revisions SET status = 'superseded' WHERE revision_id = ?",
                     ["rev-1"])
        w.update_expected("plan_revisions", 0, status="superseded")
        w.write(ps.PlanRevisionRow(
            revision_id="rev-2", session_id=a, sequence=2,
            plan_json='{"tasks":["plan","iface_api","impl_divide"]}', reason="split",
            supersedes="rev-1"))
        w.write(ps.PlanRevisionRow(revision_id="rev-b1", session_id=b, sequence=1,
                                   plan_json="{}", reason="initial"))

        # repair_footprints (insert order = node_id, attempt: the getters' order)
        w.write(ps.RepairFootprintRow(
            footprint_id="fp-impl-1", session_id=a, node_id="impl_divide",
            revision_id="initial", attempt=1, affected_files=["src/divide.rs"],
            bundle_json='{"files":1}', diagnosis="E0308 mismatched types"))
        w.write(ps.RepairFootprintRow(
            footprint_id="fp-impl-2", session_id=a, node_id="impl_divide",
            revision_id="initial", attempt=2, affected_files=["src/divide.rs", "src/lib.rs"],
            bundle_json="{}", diagnosis="missing zero check"))
        conn.execute("UPDATE repair_footprints SET resolved = true WHERE footprint_id = ?",
                     ["fp-impl-2"])
        w.update_expected("repair_footprints", 1, resolved=True)
        w.write(ps.RepairFootprintRow(
            footprint_id="fp-task1-1", session_id=b, node_id="task1", revision_id="initial",
            attempt=1, affected_files=[], bundle_json="{}", diagnosis=""))

        # budget_envelopes (upsert: last write wins)
        w.write(ps.BudgetEnvelopeRow(session_id=a, max_steps=100, steps_used=5,
                                     max_revisions=10, revisions_used=0, max_cost_usd=5.0,
                                     cost_used_usd=0.25))
        conn.execute("UPDATE budget_envelopes SET steps_used = 42, revisions_used = 3, "
                     "cost_used_usd = 4.5 WHERE session_id = ?", [a])
        w.update_expected("budget_envelopes", 0, steps_used=42, revisions_used=3,
                          cost_used_usd=4.5)
        w.write(ps.BudgetEnvelopeRow(session_id=b, steps_used=1, cost_used_usd=0.01))

        # srbn_step_records (typed: None is NULL)
        w.write(ps.SrbnStepRecord(session_id=a, node_id="impl_divide", step="speculate",
                                  outcome="ok", duration_ms=1500))
        w.write(ps.SrbnStepRecord(
            session_id=a, node_id="impl_divide", step="verify", outcome="ok",
            energy_json='{"v_total":4.5}', parse_state="clean", duration_ms=3200))
        w.write(ps.SrbnStepRecord(
            session_id=a, node_id="impl_divide", step="converge", outcome="escalated",
            retry_classification="compile_error", attempt_count=3, duration_ms=9100))
        w.write(ps.SrbnStepRecord(session_id=b, node_id="task1", step="commit", outcome="ok"))

        # correction_attempts (created_at: caller's epoch seconds)
        w.write(ps.CorrectionAttemptRow(
            session_id=a, node_id="impl_divide", attempt=1, parse_state="malformed",
            retry_classification="parse_error", response_fingerprint="fp:9a8b",
            response_length=512, energy_json='{"v_total":4.5}', accepted=False,
            rejection_reason="no code block", created_at=1763633702))
        w.write(ps.CorrectionAttemptRow(
            session_id=a, node_id="impl_divide", attempt=2, parse_state="clean",
            response_fingerprint="fp:1c2d", response_length=2048, accepted=True,
            created_at=1763633760))
        w.write(ps.CorrectionAttemptRow(
            session_id=b, node_id="task1", attempt=1, parse_state="clean",
            response_fingerprint="fp:0000", response_length=0, accepted=True,
            created_at=1763640000))

        uf = UpstreamFile(path=path, era="0.6.2", session_ids=(a, b))
        _finish(conn, uf, w.expected)
    finally:
        conn.close()
    return uf


def write_upstream_05(path: Path) -> UpstreamFile:
    """Write a file as an 0.5-era upstream would: ``node_states`` without the seven later
    columns, and none of the tables from ``task_graph_edges`` on (review outcomes,
    verification results, bundles, charters, plans, footprints, budgets, steps,
    corrections). Same encodings as 0.6.2.
    """
    path = Path(path)
    conn = duckdb.connect(str(path))
    try:
        conn.execute("SET TimeZone = 'UTC'")
        create_upstream_schema(conn, era="0.5")
        w = _UpstreamWriter(conn, TABLES_05)
        a = "old-session-0001"
        early = ("node_id", "session_id", "state", "v_total", "merkle_hash", "attempt_count")
        w.write(ps.SessionRecord(session_id=a, task="legacy run", working_dir="/srv/legacy",
                                 merkle_root=_h("old root"), status="COMPLETED"))
        w.write(ps.NodeStateRecord(node_id="n1", session_id=a, state="Completed",
                                   v_total=0.3, merkle_hash=_h("n1 seal"), attempt_count=1),
                only=early)
        w.write(ps.NodeStateRecord(node_id="n2", session_id=a, state="Completed",
                                   v_total=0.7, attempt_count=2), only=early)
        w.write(ps.EnergyRecord(node_id="n1", session_id=a, v_syn=0.1, v_total=0.3))
        w.write(ps.LlmRequestRecord(session_id=a, node_id=None, model="gpt-4", prompt="p",
                                    response="r", tokens_in=3, tokens_out=4, latency_ms=50))
        w.write(ps.SheafValidationRow(session_id=a, node_id="n1", validator_class="V",
                                      passed=True, v_sheaf_contribution=0.2))
        w.write(ps.ProvisionalBranchRow(branch_id="br-1", session_id=a, node_id="n2",
                                        parent_node_id="n1", parent_seal_hash=_h("n1 seal")))
        w.write(ps.InterfaceSealRow(seal_id="s1", session_id=a, node_id="n1",
                                    sealed_path="a.rs", artifact_kind="interface",
                                    seal_hash=_h("n1 seal")))
        uf = UpstreamFile(path=path, era="0.5", session_ids=(a,))
        _finish(conn, uf, w.expected)
    finally:
        conn.close()
    return uf


# --- how the store writes and reads each table (for round-trip tests) ---------------------

WRITE_METHOD: dict[str, str] = {
    "sessions": "create_session",
    "node_states": "record_node_state",
    "energy_history": "record_energy",
    "llm_requests": "record_llm_request",
    "structural_digests": "record_structural_digest",
    "context_provenance": "record_context_provenance",
    "escalation_reports": "record_escalation_report",
    "rewrite_records": "record_rewrite",
    "sheaf_validations": "record_sheaf_validation",
    "provisional_branches": "record_provisional_branch",
    "branch_lineage": "record_branch_lineage",
    "interface_seals": "record_interface_seal",
    "branch_flushes": "record_branch_flush",
    "task_graph_edges": "record_task_graph_edge",
    "review_outcomes": "record_review_outcome",
    "verification_results": "record_verification_result",
    "artifact_bundles": "record_artifact_bundle",
    "feature_charters": "record_feature_charter",
    "plan_revisions": "record_plan_revision",
    "repair_footprints": "record_repair_footprint",
    "budget_envelopes": "upsert_budget_envelope",
    "srbn_step_records": "record_step",
    "correction_attempts": "record_correction_attempt",
}
"""Table -> the SessionStore method that writes one row model of it."""


def write_row(store: ps.SessionStore, row: ps.Row) -> None:
    """Write ``row`` with the store method for its table."""
    getattr(store, WRITE_METHOD[type(row).__table__])(row)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | ps.RowList) else [value]


# Table -> (scope, reader). scope "session": reader(store, session_id) gives the session's
# rows; "node": reader(store, session_id, node_id) gives that node's rows; "latest": reader
# gives only the node's last row (so one row per node is all that can be observed).
READERS: dict[str, tuple[str, Callable[..., Any]]] = {
    "sessions": ("session", lambda s, sid: s.get_session(sid)),
    "node_states": ("session", lambda s, sid: s.get_node_states(sid)),
    "energy_history": ("session", lambda s, sid: s.get_session_energy_history(sid)),
    "llm_requests": ("session", lambda s, sid: s.get_llm_requests(sid)),
    "structural_digests": ("node", lambda s, sid, nid: s.get_structural_digests(sid, nid)),
    "context_provenance": ("latest", lambda s, sid, nid: s.get_context_provenance(sid, nid)),
    "escalation_reports": ("session", lambda s, sid: s.get_escalation_reports(sid)),
    "rewrite_records": ("session", lambda s, sid: s.get_rewrite_records(sid)),
    "sheaf_validations": ("session", lambda s, sid: s.get_all_sheaf_validations(sid)),
    "provisional_branches": ("session", lambda s, sid: s.get_provisional_branches(sid)),
    "branch_lineage": ("session", lambda s, sid: s.get_branch_lineage(sid)),
    "interface_seals": ("node", lambda s, sid, nid: s.get_interface_seals(sid, nid)),
    "branch_flushes": ("session", lambda s, sid: s.get_branch_flushes(sid)),
    "task_graph_edges": ("session", lambda s, sid: s.get_task_graph_edges(sid)),
    "review_outcomes": ("session", lambda s, sid: s.get_all_review_outcomes(sid)),
    "verification_results": ("latest", lambda s, sid, nid: s.get_verification_result(sid, nid)),
    "artifact_bundles": ("latest", lambda s, sid, nid: s.get_artifact_bundle(sid, nid)),
    "feature_charters": ("session", lambda s, sid: s.get_feature_charter(sid)),
    "plan_revisions": ("session", lambda s, sid: s.get_plan_revisions(sid)),
    "repair_footprints": ("session", lambda s, sid: s.get_all_repair_footprints(sid)),
    "budget_envelopes": ("session", lambda s, sid: s.get_budget_envelope(sid)),
    "srbn_step_records": ("session", lambda s, sid: s.get_session_steps(sid)),
    "correction_attempts": ("session", lambda s, sid: s.get_session_correction_attempts(sid)),
}


def read_like(store: ps.SessionStore, row: ps.Row) -> list[ps.Row]:
    """The rows a public getter returns for ``row``'s session (and node, for node-scoped
    getters), as a list; "latest" getters give at most one."""
    scope, reader = READERS[type(row).__table__]
    session_id = row.session_id
    if scope == "session":
        return _as_list(reader(store, session_id))
    return _as_list(reader(store, session_id, row.node_id))


def read_table(store: ps.SessionStore, table: str, expected: list[ps.Row]) -> list[ps.Row]:
    """Read back every row the getters can show for the sessions/nodes in ``expected``,
    grouped as the getters group them: per session, or per (session, node) in order of
    first appearance."""
    scope, reader = READERS[table]
    if scope == "session":
        keys = list(dict.fromkeys(r.session_id for r in expected))
        return [row for sid in keys for row in _as_list(reader(store, sid))]
    pairs = list(dict.fromkeys((r.session_id, r.node_id) for r in expected))
    return [row for sid, nid in pairs for row in _as_list(reader(store, sid, nid))]


def group_like_readers(table: str, expected: list[ps.Row]) -> list[ps.Row]:
    """``expected`` in the shape :func:`read_table` returns: grouped the same way, and only
    the last row per node for "latest" getters."""
    scope, _ = READERS[table]
    key: Callable[[Any], Any]
    if scope == "session":
        key = lambda r: r.session_id  # noqa: E731
    else:
        key = lambda r: (r.session_id, r.node_id)  # noqa: E731
    groups: dict[Any, list[ps.Row]] = {}
    for row in expected:
        groups.setdefault(key(row), []).append(row)
    if scope == "latest":
        return [rows[-1] for rows in groups.values()]
    return [row for rows in groups.values() for row in rows]


def edge_case_rows(session_id: str, node_id: str, tag: str) -> dict[str, ps.Row]:
    """One row per table (except ``sessions``) full of the values upstream could not store:
    '' in optional text columns, 0.0/False review values, empty lists, hex-looking and
    empty byte strings, and floats that float32 would round. Keys are made unique by ``tag``;
    rows that getters order by attempt/sequence sort last."""
    s, n = session_id, node_id
    rows: list[ps.Row] = [
        ps.NodeStateRecord(
            node_id=n, session_id=s, state="", v_total=0.1, merkle_hash=b"abcdef",
            attempt_count=0, node_class="", owner_plugin="", goal="", parent_id="",
            children=[], last_error_type="", committed_at=""),
        ps.EnergyRecord(node_id=n, session_id=s, v_syn=0.1, v_str=0.2, v_log=0.3, v_boot=0.0,
                        v_sheaf=1e-300, v_total=0.42),
        ps.LlmRequestRecord(session_id=s, node_id="", model="", prompt="", response=""),
        ps.StructuralDigestRecord(digest_id=f"sd-{tag}", session_id=s, node_id=n,
                                  source_path="", artifact_kind="", hash=b"0123", version=0),
        ps.ContextProvenanceRecord(session_id=s, node_id=n, context_package_id="",
                                   structural_hashes=[""], summary_hashes=[],
                                   dependency_hashes=["a:00"]),
        ps.EscalationReportRecord(session_id=s, node_id=n, category="", action="",
                                  energy_snapshot="", stage_outcomes="", evidence="",
                                  affected_node_ids=[""]),
        ps.RewriteRecordRow(session_id=s, node_id=n, action="", category="",
                            requeued_nodes=[], inserted_nodes=[]),
        ps.SheafValidationRow(session_id=s, node_id=n, validator_class="", plugin_source="",
                              passed=False, evidence_summary="", affected_files=[],
                              v_sheaf_contribution=0.1, requeue_targets=[]),
        ps.ProvisionalBranchRow(branch_id=f"br-{tag}", session_id=s, node_id=n,
                                parent_node_id="", state="", parent_seal_hash=b"",
                                sandbox_dir=""),
        ps.BranchLineageRow(lineage_id=f"lin-{tag}", parent_branch_id=f"p-{tag}",
                            child_branch_id="", depends_on_seal=False, session_id=s),
        ps.InterfaceSealRow(seal_id="", session_id=s, node_id=n, sealed_path="",
                            artifact_kind="", seal_hash=b"cafe", version=0),
        ps.BranchFlushRow(flush_id="", session_id=s, parent_node_id="", flushed_branch_ids=[],
                          requeue_node_ids=[], reason=""),
        ps.TaskGraphEdgeRow(session_id=s, parent_node_id="", child_node_id="", edge_type=""),
        ps.ReviewOutcomeRow(session_id=s, node_id=n, outcome="", reviewer_note="",
                            energy_at_review=0.0, degraded=False, escalation_category=""),
        ps.VerificationResultRow(session_id=s, node_id=n, result_json="", degraded_reason=""),
        ps.ArtifactBundleRow(session_id=s, node_id=n, bundle_json="", touched_files=[]),
        ps.FeatureCharterRow(charter_id=f"ch-{tag}", session_id=s, scope_description="",
                             max_modules=0, language_constraint=""),
        ps.PlanRevisionRow(revision_id=f"rev-{tag}", session_id=s, sequence=2**31 - 1,
                           plan_json="", reason="", supersedes="", status=""),
        ps.RepairFootprintRow(footprint_id=f"fp-{tag}", session_id=s, node_id=n,
                              revision_id="", attempt=2**31 - 1, affected_files=[""],
                              bundle_json="", diagnosis=""),
        ps.BudgetEnvelopeRow(session_id=s, max_steps=0, max_revisions=0, max_cost_usd=0.0,
                             cost_used_usd=0.1),
        ps.SrbnStepRecord(session_id=s, node_id=n, step="", outcome="", energy_json="",
                          parse_state="", retry_classification=""),
        ps.CorrectionAttemptRow(session_id=s, node_id=n, attempt=2**31 - 1, parse_state="",
                                retry_classification="", response_fingerprint="",
                                response_length=0, energy_json="", accepted=False,
                                rejection_reason="", created_at=2**63 - 1),
    ]
    return {type(row).__table__: row for row in rows}

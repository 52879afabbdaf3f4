"""Generate ``docs/schema.md``, the data dictionary, from the code that defines the schema.

Every fact on that page comes from the package: the tables, column types, nullability,
defaults, keys and indexes are read from a fresh in-memory database built by
:func:`perspt_store.init_schema`; the Python types and the descriptions come from the row
models in :data:`perspt_store.rows.ROW_MODELS` (one field docstring per column). Only the
tables and the view the port adds (which have no row model) are described here, in
``OWN_TABLES``.

Usage::

    python docs/gen_schema.py          # rewrite docs/schema.md
    python docs/gen_schema.py --check  # exit 1 if docs/schema.md is out of date

``tests/test_docs.py`` runs the check, so a schema or docstring change without a
regenerated page fails the test suite.
"""

from __future__ import annotations

import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

import duckdb
from annotated_types import Ge
from pydantic.fields import FieldInfo

from perspt_store.rows import ROW_MODELS, Row
from perspt_store.schema import init_schema

OUTPUT = Path(__file__).parent / "schema.md"

FAMILIES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "Sessions family",
        "api/sessions.md",
        ("sessions", "node_states", "energy_history", "task_graph_edges"),
    ),
    (
        "Telemetry family",
        "api/telemetry.md",
        ("llm_requests", "srbn_step_records", "correction_attempts"),
    ),
    (
        "Evidence family",
        "api/evidence.md",
        (
            "structural_digests",
            "context_provenance",
            "escalation_reports",
            "rewrite_records",
            "sheaf_validations",
        ),
    ),
    (
        "Reviews family",
        "api/reviews.md",
        ("verification_results", "artifact_bundles", "review_outcomes"),
    ),
    (
        "Branches family",
        "api/branches.md",
        ("provisional_branches", "branch_lineage", "interface_seals", "branch_flushes"),
    ),
    (
        "Planning family",
        "api/planning.md",
        ("feature_charters", "plan_revisions", "repair_footprints", "budget_envelopes"),
    ),
    (
        "Commit log and metadata tables",
        "api/commits.md",
        ("merkle_log", "merkle_log_detached", "merkle_root_overrides", "perspt_store_meta"),
    ),
)
"""(heading, API page, tables) per family, in the order of the API pages; every table must be
in exactly one. Headings never equal a table name, so each table's anchor is its name."""

OWN_TABLES: dict[str, tuple[str, dict[str, str]]] = {
    "merkle_log": (
        "A view: one row per commit of a session's Merkle log (see [The Merkle log]"
        "(merkle.md)). Since schema 5 each node-state row the store writes carries its own "
        "commit in `node_states.merkle_commit` (one table written per commit, not two), "
        "and this view decodes those entries, then adds `merkle_log_detached`'s. Written by "
        "`record_node_state` and `rollback` with the node state they commit; never updated "
        "or deleted.",
        {
            "session_id": "The session (FK).",
            "seq": "The commit's 0-based position in the session's log (its leaf index).",
            "node_state_id": "The `node_states.id` of the row this commit hashes.",
            "node_id": "The node committed.",
            "kind": "`commit` (a write), `restore` or `remove` (a rollback), or `backfill` "
            "(a row that existed before the log, committed at migration).",
            "leaf_hash": "`hash_node_state` of the row (32 bytes).",
            "state_root": "The session's state root after this commit (32 bytes).",
            "log_root": "The root of the session's log after this commit (32 bytes).",
            "created_at": "When the commit was written (naive UTC): its row's `created_at`, "
            "unless the entry keeps a time of its own (a backfilled one).",
        },
    ),
    "merkle_log_detached": (
        "Log entries that no node-state row can carry (their row was deleted or changed "
        "behind the store's back, or two entries name one row), kept as they were so "
        "`verify_session` still reports them: entries of a schema-4 file's `merkle_log` "
        "table that no row could carry when the file was migrated, and entries of a lake "
        "import that no imported row can carry. Commits never go here.",
        {
            "session_id": "As in `merkle_log`.",
            "seq": "As in `merkle_log`.",
            "node_state_id": "As in `merkle_log`.",
            "node_id": "As in `merkle_log`.",
            "kind": "As in `merkle_log`.",
            "leaf_hash": "As in `merkle_log`.",
            "state_root": "As in `merkle_log`.",
            "log_root": "As in `merkle_log`.",
            "created_at": "As in `merkle_log`.",
        },
    ),
    "merkle_root_overrides": (
        "`sessions.merkle_root` values that are not a state root: set through "
        "`update_merkle_root`, or carried over from an upstream file at migration. "
        "`verify_session` reports the current one (no commit since) as a note, not as a "
        "problem.",
        {
            "id": "Insertion order.",
            "session_id": "The session (FK).",
            "merkle_root": "The value written to `sessions.merkle_root`.",
            "source": "`update_merkle_root` or `upstream`.",
            "created_at": "When it was recorded (naive UTC).",
            "log_size": "The session's commit count when it was set: a commit since ends "
            "the excuse.",
        },
    ),
    "perspt_store_meta": (
        "Key/value facts about the file: `schema_version`, and for a file first written by "
        "upstream the legacy high-water marks `legacy_max_id:<table>` and "
        "`legacy_max_rowid:sessions` (see [Migrating](migrating.md)).",
        {
            "key": "The fact's name.",
            "value": "Its value, as text.",
        },
    ),
}

_DB_COLUMN_TYPES = {
    "id": "int",
    "created_at": "datetime",
    "updated_at": "datetime",
    "timestamp": "datetime",
}


_CODE_SPAN = re.compile(r"(`+)(?:.+?)\1")


def _cell(text: str) -> str:
    """Make ``text`` one cell of a Markdown table: one line, and a ``|`` outside code spans
    escaped (inside a code span the tables extension keeps it, and would show a backslash)."""
    text = " ".join(text.split())
    out, end = [], 0
    for span in _CODE_SPAN.finditer(text):
        out += [text[end : span.start()].replace("|", "\\|"), span.group()]
        end = span.end()
    return "".join([*out, text[end:].replace("|", "\\|")])


def _type_name(annotation: Any) -> str:
    if annotation is type(None):
        return "None"
    if typing.get_origin(annotation) is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        return f"list[{_type_name(item)}]"
    return str(annotation.__name__)


def _metadata(annotation: Any) -> list[Any]:
    """Constraints attached with ``Annotated``, also inside ``T | None``."""
    if typing.get_origin(annotation) is typing.Annotated:
        return list(annotation.__metadata__)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _metadata(arg)]
    return []


def _bounds(field: FieldInfo) -> str:
    """The range a numeric field is validated to, when it has one."""
    metadata = list(field.metadata) + _metadata(field.annotation)
    low = next((m.ge for m in metadata if isinstance(m, Ge)), None)
    if low is None:
        return ""
    if isinstance(low, int) and low == -(2**31):
        return "32-bit"
    if isinstance(low, int) and low == -(2**63):
        return "64-bit"
    return "finite, float32 range"


def _python_type(field: FieldInfo) -> tuple[str, str]:
    """The field's type as code (with its default when it has one) and a note on its range."""
    text = _type_name(field.annotation)
    if not field.is_required():
        text += f" = {field.get_default(call_default_factory=True)!r}"
    return text, _bounds(field)


def _description(model: type[Row], column: str) -> tuple[str, str, str]:
    """The Python type, a note, and the description of one column of ``model``'s table."""
    field = model.model_fields.get(column)
    if field is not None:
        return (*_python_type(field), field.description or "")
    attribute = getattr(model, column, None)
    if isinstance(attribute, property) and column in model.__db_columns__:
        doc = (attribute.__doc__ or "").strip()
        return f"{_DB_COLUMN_TYPES[column]} | None", "read-only", doc
    if column == "merkle_commit":  # ours, and no model's: the row's log entry
        return "—", "not in the model", (
            "The commit of a row the store wrote, packed (kind, seq, leaf hash, state root, "
            "log root; perspt-store, schema 5); read it as a row of the `merkle_log` view. "
            "`NULL` for rows written by upstream's SQL."
        )
    if column == "row_order":  # ours, and no model's: the store orders by it
        return "—", "not in the model", (
            "Insertion order, drawn from `seq_<table>_row_order` (perspt-store; DuckDB gives "
            "an updated row a new rowid, so the order is stored)."
        )
    raise SystemExit(f"{model.__name__} has no field or read-only property for {column!r}")


def _catalog(conn: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    columns: dict[str, list[tuple[str, str, bool, str | None]]] = {}
    for table, name, dtype, nullable, default in conn.execute(
        "SELECT table_name, column_name, data_type, is_nullable, column_default "
        "FROM duckdb_columns() WHERE database_name = current_database() AND schema_name = 'main' "
        "ORDER BY table_name, column_index"
    ).fetchall():
        columns.setdefault(table, []).append((name, dtype, nullable, default))
    constraints: dict[str, list[str]] = {}
    for table, kind, names, ref_table, ref_names in conn.execute(
        "SELECT table_name, constraint_type, constraint_column_names, referenced_table, "
        "referenced_column_names FROM duckdb_constraints() "
        "WHERE database_name = current_database() "
        "AND constraint_type IN ('PRIMARY KEY', 'UNIQUE', 'FOREIGN KEY') "
        "ORDER BY table_name, constraint_index"
    ).fetchall():
        cols = ", ".join(f"`{n}`" for n in names)
        if kind == "FOREIGN KEY":
            refs = ", ".join(ref_names)
            text = f"foreign key {cols} → `{ref_table}({refs})`"
        else:
            text = f"{kind.lower()} {cols}"
        constraints.setdefault(table, []).append(text)
    indexes: dict[str, list[str]] = {}
    for table, name, expressions in conn.execute(
        "SELECT table_name, index_name, expressions FROM duckdb_indexes() "
        "WHERE database_name = current_database() ORDER BY table_name, index_name"
    ).fetchall():
        indexes.setdefault(table, []).append(f"`{name}` ({expressions.strip('[]')})")
    sequences = {
        name
        for (name,) in conn.execute("SELECT sequence_name FROM duckdb_sequences()").fetchall()
    }
    return {
        "columns": columns,
        "constraints": constraints,
        "indexes": indexes,
        "sequences": sequences,
    }


def _table_section(table: str, catalog: dict[str, Any], out: list[str]) -> None:
    model = ROW_MODELS.get(table)
    out.append(f"### `{table}`")
    out.append("")
    if model is not None:
        doc = (model.__doc__ or "").strip().splitlines()[0]
        out.append(f"{doc} Row model: [`{model.__name__}`][perspt_store.{model.__name__}].")
    else:
        out.append(OWN_TABLES[table][0] + " Added by perspt-store; no row model.")
    out.append("")
    out.append("| Column | SQL type | Null | Default | Python | Description |")
    out.append("| --- | --- | --- | --- | --- | --- |")
    for name, dtype, nullable, default in catalog["columns"][table]:
        if model is not None:
            python, note, description = _description(model, name)
            python_cell = f"`{python}`" + (f" ({note})" if note else "")
        else:
            python_cell, description = "—", OWN_TABLES[table][1][name]
        default_cell = f"`{default}`" if default is not None else ""
        out.append(
            f"| `{name}` | {dtype} | {'yes' if nullable else 'no'} | {_cell(default_cell)} "
            f"| {_cell(python_cell)} | {_cell(description)} |"
        )
    out.append("")
    facts = list(catalog["constraints"].get(table, []))
    if f"seq_{table}_id" in catalog["sequences"]:
        facts.append(f"`id` from sequence `seq_{table}_id` (insertion order)")
    facts += [f"index {index}" for index in catalog["indexes"].get(table, [])]
    out.append(("Keys and indexes: " + "; ".join(facts) if facts else "No keys or indexes")
               + ".")
    out.append("")


def render() -> str:
    """The text of ``docs/schema.md``."""
    conn = duckdb.connect(":memory:")
    try:
        version = init_schema(conn)
        catalog = _catalog(conn)
    finally:
        conn.close()
    tables = [t for _, _, family_tables in FAMILIES for t in family_tables]
    missing = set(catalog["columns"]) - set(tables)
    unknown = set(tables) - set(catalog["columns"])
    if missing or unknown or len(tables) != len(set(tables)):
        raise SystemExit(
            f"FAMILIES is out of step with the schema: missing {sorted(missing)}, "
            f"unknown {sorted(unknown)}; add every table to exactly one family"
        )
    out = [
        "# Schema: the data dictionary",
        "",
        "<!-- Generated by docs/gen_schema.py from perspt_store.rows and perspt_store.schema."
        " Do not edit: run `python docs/gen_schema.py`. tests/test_docs.py checks it. -->",
        "",
        f"Schema version {version}: upstream perspt-store 0.6.2's 23 tables, with the same "
        "names, columns, defaults and constraints, plus three tables and a view of our own. Each "
        "upstream table has one row model; the **Python** column is the type of the model's "
        "field (and its default when the field is optional), and the description is the "
        "field's docstring.",
        "",
        "How values are stored:",
        "",
        "* `INTEGER` is 32-bit: the row models reject values outside "
        "-2<sup>31</sup>..2<sup>31</sup>-1 when they are built, so nothing wraps.",
        "* The energy columns are `DOUBLE` (upstream: `REAL`), so a float reads back exactly; "
        "the models still keep them finite and within float32 range, so upstream can read them.",
        "* `BLOB` columns hold raw bytes (a 32-byte hash is 32 bytes).",
        "* `list[str]` fields are stored as compact JSON text (`'[\"a\",\"b\"]'`); other JSON "
        "documents (`*_json`, `action`, `energy_snapshot`, `stage_outcomes`) are opaque `str`.",
        "* `None` is stored as `NULL` and `''` as `''`. Columns marked *read-only* are filled "
        "by the database and are properties of a model read back from the store.",
        "* Timestamps are naive `TIMESTAMP`s in UTC (every connection runs "
        "`SET TimeZone = 'UTC'`); ordering never relies on them, only on `id` (see "
        "[Concepts](concepts.md#order-and-latest)).",
        "* `VARCHAR` is also what upstream's DDL calls `TEXT`.",
        "",
    ]
    for family, page, family_tables in FAMILIES:
        out.append(f"## {family}")
        out.append("")
        out.append(f"Methods: [Python API]({page}).")
        out.append("")
        for table in family_tables:
            _table_section(table, catalog, out)
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is out of date: run python docs/gen_schema.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

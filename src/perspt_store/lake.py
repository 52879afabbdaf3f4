"""Beyond one machine: export sessions as a Parquet lake, and merge lakes into a store.

A *lake* is a directory any engine that reads Parquet can query (DuckDB, Polars, Spark,
Trino, …)::

    DIR/
      manifest.json                           what was exported, and each session's checkpoint
      sessions/session_id=<id>/data_0.parquet
      node_states/session_id=<id>/data_0.parquet
      …                                       one directory per table, hive-partitioned
      merkle_log/session_id=<id>/data_0.parquet

Every table (upstream's 23, ``merkle_log`` and ``merkle_root_overrides``) is written by
DuckDB's own ``COPY … (FORMAT parquet, PARTITION_BY (session_id))``; partition values are
URL-encoded as DuckDB writes them (``urllib.parse.quote(id, safe="")``). Columns are the
table's, with the stored values (ids too); rows upstream wrote into a migrated file are
decoded first, as the row models decode them. ``branch_lineage`` rows without a session are
not exported.

Re-exporting is idempotent: each exported session's partitions are replaced (deleted, then
moved in from a staging directory), never appended to, and its manifest entry is replaced;
other sessions' partitions and entries are left alone, so several stores may export into
one directory (one at a time).

:func:`import_lake` merges a lake, or another store file, into a store. Each session is
imported in one transaction, in the lake's insertion order, with new ids from the target's
sequences (``merkle_log.node_state_id`` remapped), then verified against its manifest
checkpoint; a session already in the store is skipped if it is identical, and reported as a
conflict otherwise (nothing of it is written).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import duckdb

from .errors import (
    DuplicateRecordError,
    ReadOnlyStoreError,
    RecordNotFoundError,
    SchemaVersionError,
    StoreClosedError,
    StoreError,
)
from .frames import legacy_replacements, order_key
from .schema import SCHEMA_VERSION, SEQUENCED_TABLES, TABLES
from .store import SessionStore
from .store._base import PathLike, translate_error

__all__ = [
    "LAKE_FORMAT",
    "LAKE_TABLES",
    "MANIFEST",
    "ExportReport",
    "ImportReport",
    "SessionImport",
    "export_parquet",
    "import_lake",
    "lake_views",
    "partition_dir",
]

LAKE_FORMAT = "perspt-store-lake/1"
"""The ``format`` of a lake's manifest."""

MANIFEST = "manifest.json"
"""The manifest's file name, at the top of the lake."""

LAKE_TABLES: tuple[str, ...] = (*TABLES, "merkle_log", "merkle_root_overrides")
"""Every table a lake holds, parents first (the order an import writes them in)."""

_ID_TABLES = frozenset({*SEQUENCED_TABLES, "merkle_root_overrides"})
"""Tables whose ``id`` the target's sequence assigns anew on import."""

_ORDERED_NATURAL = ("feature_charters", "plan_revisions")
"""Natural-key tables that may hold several rows per session: their order is kept by
writing such a session's partition as one file, in insertion order."""

STATUSES = ("imported", "skipped", "conflict", "invalid")


def partition_dir(table: str, session_id: str) -> str:
    """The partition directory of a session's rows of ``table``, relative to the lake:
    ``table/session_id=<id URL-encoded as DuckDB writes it>``."""
    return f"{table}/session_id={quote(session_id, safe='')}"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# --- reports --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_parquet` wrote."""

    path: Path
    """The lake directory."""
    session_ids: list[str]
    """The sessions exported (their partitions and manifest entries were replaced)."""
    rows: dict[str, int]
    """Rows written per table (over the exported sessions); tables without rows left out."""
    manifest: dict[str, Any] = field(repr=False)
    """The lake's manifest after the export (every session in the lake)."""

    def _repr_html_(self) -> str:
        from ._display import export_report_html

        return export_report_html(self)


@dataclass(frozen=True)
class SessionImport:
    """What :func:`import_lake` did with one session."""

    session_id: str
    status: str
    """``imported``; ``skipped`` (already in the store, identical); ``conflict`` (in the store
    with a different history, or a key another session of the store holds); ``invalid`` (the
    lake's rows do not match its manifest or fail verification). Only ``imported`` wrote."""
    detail: str
    """A sentence saying why (what differs, which key, which check failed)."""
    rows: dict[str, int] = field(default_factory=dict)
    """Rows written per table (``imported`` only)."""


@dataclass(frozen=True)
class ImportReport:
    """What :func:`import_lake` did, session by session. ``ok`` unless something conflicted
    or was invalid (those sessions were not written; the others were)."""

    source: str
    sessions: list[SessionImport]

    def _ids(self, *statuses: str) -> list[str]:
        return [s.session_id for s in self.sessions if s.status in statuses]

    @property
    def imported(self) -> list[str]:
        """Sessions written into the store."""
        return self._ids("imported")

    @property
    def skipped(self) -> list[str]:
        """Sessions already in the store with the same history."""
        return self._ids("skipped")

    @property
    def conflicts(self) -> list[SessionImport]:
        """Sessions not written because they conflict or are invalid."""
        return [s for s in self.sessions if s.status in ("conflict", "invalid")]

    @property
    def rows(self) -> dict[str, int]:
        """Rows written per table, over every imported session."""
        total: dict[str, int] = {}
        for entry in self.sessions:
            for table, count in entry.rows.items():
                total[table] = total.get(table, 0) + count
        return total

    @property
    def ok(self) -> bool:
        """True when no session conflicted or was invalid."""
        return not self.conflicts

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        counts = ", ".join(
            f"{len(self._ids(status))} {status}" for status in STATUSES if self._ids(status)
        )
        return f"<ImportReport from {self.source}: {counts or 'no sessions'}>"

    def _repr_html_(self) -> str:
        from ._display import import_report_html

        return import_report_html(self)


# --- manifest -------------------------------------------------------------------------------


def _read_manifest(directory: Path) -> dict[str, Any] | None:
    """The lake's manifest, None if there is none. Raises StoreError if it is not one."""
    path = directory / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path} is not a perspt-store lake manifest: {exc}",
                         operation="read manifest") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != LAKE_FORMAT or not \
            isinstance(manifest.get("sessions"), dict):
        raise StoreError(
            f"{path} is not a perspt-store lake manifest (format {LAKE_FORMAT!r} expected)",
            operation="read manifest",
        )
    version = manifest.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the lake at {directory} has schema version {version}, newer than this "
            f"library's {SCHEMA_VERSION}; upgrade perspt-store to use it",
            operation="read manifest",
        )
    return manifest


def _write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest atomically (a temporary file renamed over it)."""
    temporary = directory / f".{MANIFEST}.{uuid.uuid4().hex}.tmp"
    temporary.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n",
                         encoding="utf-8")
    os.replace(temporary, directory / MANIFEST)


# --- export ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _read_snapshot(store: SessionStore) -> Iterator[duckdb.DuckDBPyConnection]:
    """This thread's cursor inside one read transaction, so every query sees the same
    committed state (a writer may go on in other threads); joins the caller's transaction.

    The store counts it as a transaction on this thread, so its reads do not commit a
    batched-mode buffer in the middle of it.
    """
    cursor = store._cursor()
    if store.in_transaction:
        yield cursor
        return
    store.flush()
    try:
        cursor.execute("BEGIN TRANSACTION")
    except duckdb.Error as exc:
        raise translate_error(exc, table=None, operation="export") from exc
    local = store._local
    local.depth, local.doomed = 1, False
    try:
        yield cursor
    finally:
        local.depth, local.doomed = 0, False
        with contextlib.suppress(duckdb.Error):
            cursor.execute("ROLLBACK")


def _run(cursor: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None, *,
         table: str | None, operation: str) -> list[tuple[Any, ...]]:
    try:
        return cursor.execute(sql, params).fetchall()
    except duckdb.Error as exc:
        raise translate_error(exc, table=table, operation=operation) from exc


def _check_exportable(store: SessionStore) -> None:
    version = store.schema_version
    if version is not None and version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the database has schema version {version}, newer than this library's "
            f"{SCHEMA_VERSION}; upgrade perspt-store to export it",
            operation="export",
        )
    if version is not None and version < SCHEMA_VERSION:
        raise StoreError(
            f"the database has schema version {version} (this library writes "
            f"{SCHEMA_VERSION}); open it read-write once with SessionStore.open() to migrate "
            "it in place, then export it",
            operation="export",
        )


def _select_sql(table: str, marks: dict[str, int], where: str) -> str:
    """Every column of ``table`` (upstream's rows decoded), filtered, in insertion order."""
    replacements = legacy_replacements(table, marks)
    replace = f" REPLACE ({', '.join(replacements)})" if replacements else ""
    return f"SELECT *{replace} FROM {table} WHERE {where} ORDER BY {order_key(table)}"


def export_parquet(
    store: SessionStore, directory: PathLike, session_ids: Iterable[str] | None = None
) -> ExportReport:
    """Write sessions to a Parquet lake at ``directory`` (see the module docs for its layout).

    Every table is written with DuckDB's ``COPY … PARTITION_BY (session_id)``, so any engine
    that reads hive-partitioned Parquet can query the sessions of many stores together (read
    ``session_id`` as VARCHAR: ``hive_types={'session_id': VARCHAR}`` in DuckDB). The
    manifest records the schema and library versions, and per session its Merkle checkpoint
    and row counts.

    The export reads one consistent snapshot of the store (a run may go on writing), works
    on a read-only store, and is idempotent: a session exported again has its partitions and
    manifest entry replaced, never duplicated.

    Args:
        store: The store to export (read-only is fine).
        directory: The lake directory; created if needed. Keep one exporter per directory
            at a time.
        session_ids: The sessions to export; all of them by default.

    Returns:
        What was written.

    Raises:
        RecordNotFoundError: A named session is not in the store (nothing was written).
        StoreError: The database is not migrated to this library's schema, the directory
            holds something that is not a lake manifest, or writing failed.
        SchemaVersionError: The store or the lake is newer than this library.

    Example:
        >>> report = ps.export_parquet(store, "lake/machine=a")  # doctest: +SKIP
    """
    from . import __version__

    _check_exportable(store)
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot export to {directory}: {exc}", operation="export") from exc
    manifest = _read_manifest(directory) or {"format": LAKE_FORMAT, "sessions": {}}
    staging = directory / f"_staging-{uuid.uuid4().hex}"
    marks = store._legacy_marks
    rows: dict[str, int] = {}
    try:
        with _read_snapshot(store) as cursor:
            present = [sid for (sid,) in _run(
                cursor, "SELECT session_id FROM sessions ORDER BY rowid", None,
                table="sessions", operation="export")] if store.schema_version else []
            if session_ids is None:
                ids = present
            else:
                ids = list(dict.fromkeys(session_ids))
                known = set(present)
                missing = [sid for sid in ids if sid not in known]
                if missing:
                    raise RecordNotFoundError(
                        f"no session {missing[0]!r} in the store; nothing was exported",
                        table="sessions", operation="export",
                    )
            counts: dict[str, dict[str, int]] = {sid: {} for sid in ids}
            when = _now()
            if ids:
                for table, sid, count in _run(
                    cursor, _COUNTS_SQL, [ids], table=None, operation="export"
                ):
                    counts[sid][table] = count
                    rows[table] = rows.get(table, 0) + count
                staging.mkdir()
                for table in LAKE_TABLES:
                    found = [(sid, counts[sid][table]) for sid in ids if table in counts[sid]]
                    if found:
                        _export_table(cursor, table, ids, found, marks, staging)
            entries = {
                sid: {
                    "exported_at": when,
                    "schema_version": SCHEMA_VERSION,
                    "library_version": __version__,
                    "checkpoint": store.checkpoint(sid).to_dict(),
                    "rows": {table: counts[sid].get(table, 0) for table in LAKE_TABLES},
                }
                for sid in ids
            }
        for table in LAKE_TABLES:
            for sid in ids:
                target = directory / partition_dir(table, sid)
                if target.exists():
                    shutil.rmtree(target)
                staged = staging / partition_dir(table, sid)
                if staged.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(staged, target)
        sessions = dict(manifest["sessions"])
        sessions.update(entries)
        manifest = {
            "format": LAKE_FORMAT,
            "schema_version": SCHEMA_VERSION,
            "library_version": __version__,
            "exported_at": when,
            "layout": "<table>/session_id=<url-encoded session id>/*.parquet",
            "tables": list(LAKE_TABLES),
            "sessions": sessions,
        }
        _write_manifest(directory, manifest)
    except OSError as exc:
        raise StoreError(f"exporting to {directory} failed: {exc}", operation="export") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportReport(path=directory, session_ids=ids, rows=rows, manifest=manifest)


_COUNTS_SQL = " UNION ALL ".join(
    f"SELECT '{table}', session_id, count(*) FROM {table} "
    "WHERE session_id IN (SELECT unnest($1)) GROUP BY session_id"
    for table in LAKE_TABLES
)
"""Rows per table and session, for a list of sessions, in one statement."""


def _export_table(
    cursor: duckdb.DuckDBPyConnection,
    table: str,
    ids: list[str],
    found: list[tuple[str, int]],
    marks: dict[str, int],
    staging: Path,
) -> None:
    """COPY one table's rows of the sessions into ``staging``, partitioned by session."""
    query = _select_sql(table, marks, "session_id IN (SELECT unnest(?))")
    _run(
        cursor,
        f"COPY ({query}) TO {_literal(str(staging / table))} "
        "(FORMAT parquet, PARTITION_BY (session_id))",
        [ids], table=table, operation="export",
    )
    if table in _ORDERED_NATURAL:
        # PARTITION_BY does not keep row order; rewrite these as one file in order.
        for sid, count in found:
            if count < 2:
                continue
            partition = staging / partition_dir(table, sid)
            shutil.rmtree(partition, ignore_errors=True)
            partition.mkdir(parents=True)
            replacements = legacy_replacements(table, marks)
            replace = f" REPLACE ({', '.join(replacements)})" if replacements else ""
            query = (
                f"SELECT * EXCLUDE (session_id, _order) FROM (SELECT *{replace}, rowid AS "
                f"_order FROM {table} WHERE session_id = ?) ORDER BY _order"
            )
            _run(
                cursor,
                f"COPY ({query}) TO "
                f"{_literal(str(partition / 'data_0.parquet'))} (FORMAT parquet)",
                [sid], table=table, operation="export",
            )


# --- import ---------------------------------------------------------------------------------


class _Invalid(Exception):
    """Internal: the lake's rows of a session do not match its manifest."""


def import_lake(
    store: SessionStore, source: PathLike, session_ids: Iterable[str] | None = None
) -> ImportReport:
    """Merge a lake (a directory written by :func:`export_parquet`), or another store's
    database file, into ``store``.

    Each session is imported in one transaction, in order of creation, rows in their
    insertion order: ids come from ``store``'s sequences (``merkle_log.node_state_id``
    follows its node state), timestamps are kept. Before it commits, the session is
    verified (``verify_session``) and its log checked against the manifest's checkpoint
    and row counts. So:

    * a session not in ``store`` is ``imported`` (or ``invalid``, and not written, if its
      rows do not match the manifest, e.g. a partly copied lake);
    * a session already in ``store`` with the same rows is ``skipped``: importing the same
      data twice adds nothing;
    * a session already in ``store`` with a different history, or whose unique keys
      (charter, revision, footprint ids) another session of ``store`` holds, is a
      ``conflict``: nothing of it is written, and the report says what differs.

    Conflicts do not raise: check ``report.ok`` (the command line exits 1).

    Args:
        store: A read-write store.
        source: A lake directory, or a DuckDB database file written by perspt-store (opened
            read-only, so a file another process is writing is read from its snapshot).
        session_ids: Only these sessions of the source; all by default.

    Raises:
        ReadOnlyStoreError: ``store`` is read-only.
        RecordNotFoundError: A named session is not in the source.
        StoreError: ``source`` is neither a lake nor a database file.
        SchemaVersionError: The source is newer than this library.
    """
    store._check_writable(None)
    path = Path(source)
    if path.is_dir():
        return _import_directory(store, path, session_ids)
    if path.is_file():
        with SessionStore.open_read_only(path) as other, \
                tempfile.TemporaryDirectory(prefix="perspt-lake-") as temporary:
            try:
                export_parquet(other, temporary, session_ids)
            except RecordNotFoundError as exc:
                raise RecordNotFoundError(
                    f"{str(exc).split(' in the store', 1)[0]} in {path}; nothing was imported",
                    table="sessions", operation="import",
                ) from exc
            report = _import_directory(store, Path(temporary), None)
        return ImportReport(source=str(path), sessions=report.sessions)
    raise StoreError(f"no lake directory or database file at {path}; nothing was imported",
                     operation="import")


def _import_directory(
    store: SessionStore, directory: Path, session_ids: Iterable[str] | None
) -> ImportReport:
    manifest = _read_manifest(directory)
    if manifest is None:
        raise StoreError(
            f"{directory} is not a perspt-store lake: it has no {MANIFEST}; write one with "
            "export_parquet (perspt-store export --parquet DIR)",
            operation="import",
        )
    entries: dict[str, Any] = manifest["sessions"]
    names = list(entries)
    if session_ids is not None:
        wanted = list(dict.fromkeys(session_ids))
        missing = [sid for sid in wanted if sid not in entries]
        if missing:
            raise RecordNotFoundError(
                f"no session {missing[0]!r} in the lake at {directory}; nothing was imported",
                table="sessions", operation="import",
            )
        names = wanted
    created = _created_at(store, directory, names)
    position = {sid: i for i, sid in enumerate(names)}
    names.sort(key=lambda sid: (created.get(sid) is None, created.get(sid) or _dt.datetime.min,
                                position[sid]))
    results = [_import_session(store, directory, sid, entries[sid]) for sid in names]
    return ImportReport(source=str(directory), sessions=results)


def _parquet(directory: Path, table: str, session_id: str) -> str | None:
    """The glob of a session's Parquet files of ``table``, None if it has none."""
    partition = directory / partition_dir(table, session_id)
    if not partition.is_dir() or not any(partition.glob("*.parquet")):
        return None
    return str(partition / "*.parquet")


def _created_at(
    store: SessionStore, directory: Path, names: list[str]
) -> dict[str, _dt.datetime]:
    created: dict[str, _dt.datetime] = {}
    cursor = store._cursor()
    for sid in names:
        files = _parquet(directory, "sessions", sid)
        if files is None:
            continue
        found = _run(cursor, "SELECT max(created_at) FROM read_parquet(?, hive_partitioning=false)",
                     [files], table="sessions", operation="import")
        if found and found[0][0] is not None:
            created[sid] = found[0][0]
    return created


def _import_session(
    store: SessionStore, directory: Path, session_id: str, entry: dict[str, Any]
) -> SessionImport:
    files = {t: f for t in LAKE_TABLES if (f := _parquet(directory, t, session_id)) is not None}
    if store.get_session(session_id) is not None:
        try:
            return _compare(store, session_id, entry, files)
        except (ReadOnlyStoreError, StoreClosedError):
            raise
        except StoreError as exc:  # e.g. a lake file without a column the store has
            return SessionImport(session_id, "invalid",
                                 f"it could not be compared with the store's copy: {exc}")
    if "sessions" not in files:
        return SessionImport(session_id, "invalid",
                             "the lake has no sessions row for it (a partial copy?)")
    try:
        with store.transaction():
            written = _insert_session(store, session_id, files)
            _check_imported(store, session_id, entry, written)
    except _Invalid as exc:
        return SessionImport(session_id, "invalid", f"{exc}; nothing was imported")
    except DuplicateRecordError as exc:
        return SessionImport(
            session_id, "conflict",
            f"a key of this session is already used by another session of the store "
            f"({exc}); nothing was imported",
        )
    except (ReadOnlyStoreError, StoreClosedError):
        raise
    except StoreError as exc:
        return SessionImport(session_id, "invalid",
                             f"its rows could not be read or written: {exc}")
    store._commit_logs.pop(session_id, None)
    total = sum(written.values())
    return SessionImport(session_id, "imported", f"{total} rows imported",
                         {t: n for t, n in written.items() if n})


def _insert_session(store: SessionStore, session_id: str, files: dict[str, str]) -> dict[str, int]:
    """Insert the session's rows, parents first; returns rows written per table."""
    written: dict[str, int] = {}
    old_ids: list[int] = []
    new_ids: list[int] = []
    for table, glob in files.items():
        if table in _ID_TABLES:
            # One new id per row, drawn from the target's sequence; the i-th smallest goes
            # to the row with the i-th smallest old id, so the order is kept.
            pairs = store._write(
                f"SELECT id, nextval('seq_{table}_id') FROM read_parquet(?, "
                "hive_partitioning=false)",
                [glob], table=table, operation="import",
            )
            ids = sorted(new for _, new in pairs)
            result = store._write(
                f"INSERT INTO {table} BY NAME SELECT * EXCLUDE (rn) "
                "REPLACE (list_extract($1, rn)::INTEGER AS id), $2 AS session_id FROM "
                "(SELECT *, row_number() OVER (ORDER BY id) AS rn "
                "FROM read_parquet($3, hive_partitioning=false)) ORDER BY rn",
                [ids, session_id, glob], table=table, operation="import", session_id=session_id,
            )
            if table == "node_states":
                old_ids, new_ids = sorted(old for old, _ in pairs), ids
        elif table == "merkle_log":
            result = store._write(
                "INSERT INTO merkle_log BY NAME SELECT m.* REPLACE (r.new_id AS node_state_id), "
                "$1 AS session_id FROM read_parquet($2, hive_partitioning=false) m "
                "JOIN (SELECT unnest($3) AS old_id, unnest($4) AS new_id) r "
                "ON m.node_state_id = r.old_id ORDER BY m.seq",
                [session_id, glob, old_ids, new_ids], table=table, operation="import",
                session_id=session_id,
            )
        else:
            result = store._write(
                f"INSERT INTO {table} BY NAME SELECT * EXCLUDE (filename, file_row_number), "
                "$1 AS session_id FROM read_parquet($2, hive_partitioning=false, filename=true, "
                "file_row_number=true) ORDER BY filename, file_row_number",
                [session_id, glob], table=table, operation="import", session_id=session_id,
            )
        written[table] = int(result[0][0]) if result else 0
    return written


def _check_imported(
    store: SessionStore, session_id: str, entry: dict[str, Any], written: dict[str, int]
) -> None:
    """Raise _Invalid unless what was written matches the manifest and verifies."""
    expected = entry.get("rows", {})
    wrong = [
        f"{table} {written.get(table, 0)} (manifest: {expected.get(table, 0)})"
        for table in LAKE_TABLES
        if written.get(table, 0) != expected.get(table, 0)
    ]
    if wrong:
        raise _Invalid(f"its rows do not match the lake's manifest: {', '.join(wrong)}")
    report = store.verify_session(session_id)
    if not report.ok:
        problems = "; ".join(f"{p.kind}: {p.detail}" for p in report.problems[:3])
        raise _Invalid(f"its Merkle log does not verify: {problems}")
    checkpoint = entry.get("checkpoint", {})
    ours = (report.log_size, report.log_root.hex(), report.state_root.hex())
    theirs = (checkpoint.get("size"), checkpoint.get("log_root"), checkpoint.get("state_root"))
    if ours != theirs:
        raise _Invalid(
            f"its Merkle log ({ours[0]} commits, root {ours[1][:16]}…) is not the manifest's "
            f"checkpoint ({theirs[0]} commits, root {str(theirs[1])[:16]}…)"
        )


def _digest_sql(columns: list[str]) -> str:
    """A struct of the row count and an order-sensitive digest of ``columns`` (one JSON
    object per row), with an ``{order}`` placeholder for the ORDER BY."""
    fields = ", ".join(f'"{c}" := "{c}"' for c in columns)
    return (
        "{{'n': count(*), 'digest': md5(coalesce(string_agg(to_json(struct_pack("
        + fields.replace("{", "{{").replace("}", "}}")
        + ")), chr(10) ORDER BY {order}), ''))}}"
    )


def _compare(
    store: SessionStore, session_id: str, entry: dict[str, Any], files: dict[str, str]
) -> SessionImport:
    """Skip a session the store already has if its rows are the lake's (ids aside), else
    report how they differ. One statement compares every table."""
    cursor = store._cursor()
    parts: list[str] = []
    params: list[Any] = []
    columns = _table_columns(cursor)
    for table in LAKE_TABLES:
        replacements = legacy_replacements(table, store._legacy_marks)
        replace = f" REPLACE ({', '.join(replacements)})" if replacements else ""
        key = "seq" if table == "merkle_log" else order_key(table)
        skip = {"id", "session_id"} | ({"node_state_id"} if table == "merkle_log" else set())
        digest = _digest_sql([c for c in columns[table] if c not in skip])
        ours = (
            f"(SELECT {digest.format(order='_order')} FROM (SELECT *{replace}, {key} AS _order "
            f"FROM {table} WHERE session_id = ?))"
        )
        params.append(session_id)
        glob = files.get(table)
        if glob is None:
            theirs = "(SELECT {'n': 0, 'digest': md5('')})"
        else:
            order = (
                "seq" if table == "merkle_log" else "id" if table in _ID_TABLES
                else "filename, file_row_number"
            )
            theirs = (
                f"(SELECT {digest.format(order=order)} FROM read_parquet(?, "
                "hive_partitioning=false, filename=true, file_row_number=true))"
            )
            params.append(glob)
        parts.append(f"SELECT '{table}', {ours}, {theirs}")
    differs = [
        f"{table} (store {ours['n']} rows, lake {theirs['n']})"
        for table, ours, theirs in _run(
            cursor, " UNION ALL ".join(parts), params, table=None, operation="import"
        )
        if ours != theirs
    ]
    if not differs:
        return SessionImport(session_id, "skipped", "already in the store, identical")
    differs.sort(key=lambda text: LAKE_TABLES.index(text.split(" ", 1)[0]))
    checkpoint = entry.get("checkpoint", {})
    mine = store.checkpoint(session_id)
    log = (
        f"; commit log: store {mine.size} commits (root {mine.log_root.hex()[:16]}…), lake "
        f"{checkpoint.get('size')} (root {str(checkpoint.get('log_root'))[:16]}…)"
    )
    return SessionImport(
        session_id, "conflict",
        "already in the store with a different history: " + ", ".join(differs)
        + log + "; nothing was imported",
    )


def _table_columns(cursor: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    """Each lake table's columns in the store, in table order."""
    found: dict[str, list[str]] = {table: [] for table in LAKE_TABLES}
    for table, column in _run(
        cursor,
        "SELECT table_name, column_name FROM duckdb_columns() WHERE database_name = "
        "current_database() AND schema_name = 'main' ORDER BY table_name, column_index",
        None, table=None, operation="import",
    ):
        if table in found:
            found[table].append(column)
    return found


# --- reading lakes --------------------------------------------------------------------------


def lake_views(
    connection: duckdb.DuckDBPyConnection, *lakes: PathLike | str
) -> list[str]:
    """Create one view per table on ``connection`` over the Parquet files of every lake.

    Each view (``sessions``, ``node_states``, …, ``merkle_log``) reads
    ``<lake>/<table>/*/*.parquet`` of each lake given, hive-partitioned with ``session_id``
    as VARCHAR and columns matched by name, so one query spans every machine's sessions.
    A lake may be a local directory or a URL DuckDB can read (``s3://…``, with the httpfs
    extension loaded and credentials set on ``connection``); local lakes without a table's
    files are left out of its view.

    Returns:
        The views created (tables no lake has are skipped).

    Example:
        >>> con = duckdb.connect()  # doctest: +SKIP
        >>> lake_views(con, "lakes/machine=a", "lakes/machine=b")  # doctest: +SKIP
    """
    created = []
    for table in LAKE_TABLES:
        globs = []
        for lake in lakes:
            text = str(lake).rstrip("/")
            if "://" not in text and not any(Path(text, table).glob("*/*.parquet")):
                continue
            globs.append(f"{text}/{table}/*/*.parquet")
        if not globs:
            continue
        files = "[" + ", ".join(_literal(g) for g in globs) + "]"
        try:
            connection.execute(
                f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM read_parquet({files}, "
                "hive_partitioning=true, hive_types={'session_id': VARCHAR}, "
                "union_by_name=true)"
            )
        except duckdb.Error as exc:
            raise translate_error(exc, table=table, operation="create view") from exc
        created.append(table)
    return created

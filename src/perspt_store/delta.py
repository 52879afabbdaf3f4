"""The lake as Delta Lake tables: many stores export into one lake at once, any engine reads it.

Needs the ``lake`` extra (``deltalake`` and ``pyarrow``)::

    URI/
      sessions/          one Delta table per store table (upstream's 23, merkle_log,
      node_states/       merkle_root_overrides), partitioned by session_id, rows as the
      …                  store holds them (upstream's legacy rows decoded, as the Parquet
      merkle_log/        export does)
      lake_checkpoints/  one row per session: its Merkle checkpoint, and per table the
                         row count, a digest, and the data files that hold its rows

An export of a session writes its rows table by table (each a Delta transaction that
replaces the exported sessions' partitions, ``mode="overwrite",
predicate="session_id IN (…)"``; one per table for all the sessions of an export),
then commits its row of ``lake_checkpoints`` last. That row *pins* the files each table
transaction wrote, so a reader that takes each session's rows from the files its checkpoint
pins (:func:`import_lake`, :func:`lake_dataset`, ``perspt-store lake verify``) never sees half
an export, even one killed midway: until the checkpoint commits, readers keep the previous
export's files (Delta never rewrites a file; ``lake compact`` keeps every pinned file).

History: before it writes, an export reads the session's checkpoint row and goes on only if
the store's commit log extends it (a Merkle consistency proof, :func:`lake._conflict`) and
the rows no log covers extend the lake's too: in every table, the lake's rows of the session
are the store's first rows in insertion order, columns the store changes in place
(``Row.__mutable__``) and its numbering aside (:func:`_rows_lost`); the
checkpoint commit is conditional on that row being unchanged (Delta's optimistic
concurrency: a concurrent commit into the same partition fails ours). A lost race starts the
export over, against the winner's checkpoint; a session it then may not (or need not)
write gets the winner's rows back in the tables it wrote (``_restore``), so the latest
versions that plain Delta readers see hold what the checkpoints say. A session whose log
and rows equal the lake's copy is not written at all (nor read from the store), and a
table whose rows of a session equal the lake's is not written for it (its pin carries
over). ``lake compact`` repairs sessions left with an abandoned export's rows.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import random
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import unquote

import duckdb

from ._displayable import Displayable
from .errors import StoreError
from .lake import (
    LAKE_TABLES,
    MANIFEST,
    ExportConflict,
    ExportReport,
    ImportReport,
    SessionImport,
    _check_exportable,
    _conflict,
    _digest_sql,
    _import_session,
    _named,
    _read_snapshot,
    _run,
    _select_sql,
    _session_facts,
    _table_columns,
)
from .merkle import MerkleTree
from .schema import SCHEMA_VERSION, order_key
from .store import SessionStore
from .store._base import PathLike, translate_error
from .store.internals import internals

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.dataset as pads
    from deltalake import DeltaTable

__all__ = [
    "CHECKPOINTS",
    "DeltaExportReport",
    "LakeCompaction",
    "LakeVerification",
    "SessionVerdict",
    "compact_lake",
    "export_delta",
    "import_delta",
    "is_delta_lake",
    "lake_dataset",
    "lake_tables",
    "verify_lake",
]

CHECKPOINTS = "lake_checkpoints"
"""The table of each session's checkpoint and pinned files, committed last by an export."""

AsOf = int | _dt.datetime | None
"""A version of ``lake_checkpoints`` (an int), a time (a timezone-aware datetime), or the
latest (None): the lake as it was then."""

_ATTEMPTS = 200
"""Times an export starts over after losing a race for a session's checkpoint."""

_ABANDONED_HOURS = 1.0
"""What ``lake compact`` takes for an abandoned export: rows a session's checkpoint does
not pin, written this long ago (a live export takes seconds)."""

_RETENTION_HOURS = 168
"""What ``lake compact`` keeps by default: Delta's own default (7 days). Files no checkpoint
pins are removed once they have been replaced for this long (a reader that started before
can still finish)."""


_TABLE_CONFIGURATION = {
    # Keep the log of every version: a checkpoint pins files by version too, and
    # ``lake compact`` keeps those versions' files.
    "delta.enableExpiredLogCleanup": "false",
    # Every export loads each table: with Delta's default (a log checkpoint every 100
    # commits) a load replays up to 99 JSON commits, 8x slower at 95 than at 5.
    "delta.checkpointInterval": "10",
}
"""The configuration of every table the lake creates."""


def _deltalake() -> Any:
    """The ``deltalake`` module, or a StoreError naming the extra to install."""
    try:
        import deltalake
    except ModuleNotFoundError as exc:
        raise StoreError(
            "a Delta lake needs the 'lake' extra: pip install 'perspt-store[lake]'",
            operation="lake",
        ) from exc
    return deltalake


def _base(uri: PathLike | str) -> str:
    """The lake's location: a URL (``s3://…``) as given, a local path made absolute."""
    text = str(uri)
    if "://" in text:
        return text.rstrip("/")
    return str(Path(text).absolute())


def _local(base: str) -> bool:
    return "://" not in base


def _readable(base: str) -> str:
    """Where import and verify read the lake: a local path (a ``file://`` URL's too)."""
    if base.startswith("file://"):
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        return url2pathname(urlparse(base).path)
    return base


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _in(session_ids: Iterable[str]) -> str:
    """A Delta predicate selecting these sessions' partitions."""
    return f"session_id IN ({', '.join(_literal(s) for s in session_ids)})"


def is_delta_lake(uri: PathLike | str) -> bool:
    """Whether ``uri`` holds a Delta lake written by :func:`export_delta` (a local
    directory with a ``lake_checkpoints`` Delta table; a URL is taken for one)."""
    base = _base(uri)
    return not _local(base) or (Path(base) / CHECKPOINTS / "_delta_log").is_dir()


def _checkpoint_schema() -> pa.Schema:
    import pyarrow as pa

    table = pa.struct([
        ("name", pa.string()), ("rows", pa.int64()), ("digest", pa.string()),
        ("version", pa.int64()), ("files", pa.list_(pa.string())),
    ])
    return pa.schema([
        ("session_id", pa.string()), ("export_id", pa.string()),
        ("exported_at", pa.timestamp("us", tz="UTC")), ("library_version", pa.string()),
        ("schema_version", pa.int32()), ("session_created_at", pa.string()),
        ("log_size", pa.int64()), ("log_root", pa.string()), ("state_root", pa.string()),
        ("checkpoint", pa.string()), ("tables", pa.list_(table)),
    ])


def _translate(exc: Exception, what: str) -> StoreError:
    return StoreError(f"{what} failed: {exc}", operation="lake")


def _open(base: str, table: str, schema: pa.Schema | None,
          storage_options: dict[str, str] | None) -> DeltaTable | None:
    """The lake's Delta table ``table``, created (empty, partitioned by session) if it does
    not exist and ``schema`` is given; None if it does not exist and no schema is."""
    deltalake = _deltalake()
    from deltalake.exceptions import TableNotFoundError

    uri = f"{base}/{table}"
    failure: Exception | None = None
    for _ in range(20):
        try:
            found: DeltaTable = deltalake.DeltaTable(uri, storage_options=storage_options)
            return found
        except TableNotFoundError:
            if schema is None:
                return None
        try:
            found = deltalake.DeltaTable.create(
                uri, schema, mode="ignore", partition_by=["session_id"],
                configuration=_TABLE_CONFIGURATION, storage_options=storage_options,
            )
            return found
        except Exception as exc:  # another exporter created it meanwhile: load it
            failure = exc
            time.sleep(random.uniform(0.001, 0.02))
    raise StoreError(f"the Delta table {uri} could not be opened or created: {failure}",
                     operation="lake") from failure


# --- reports ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeltaExportReport(ExportReport):
    """What :func:`export_delta` wrote. ``manifest["sessions"]`` holds, per exported
    session, its checkpoint and row counts (the Parquet manifest's shape)."""

    _html_renderer: ClassVar[str] = "export_report_html"

    uri: str = ""
    """The lake's location."""
    unchanged: list[str] = field(default_factory=list)
    """Sessions not written: the lake already holds them exactly (log and every row)."""
    version: int | None = None
    """The version of ``lake_checkpoints`` after the export (None if nothing was ever
    written): import as of it with ``import_lake(store, uri, as_of=version)``."""


@dataclass(frozen=True)
class SessionVerdict:
    """What ``verify_lake`` found for one session."""

    session_id: str
    ok: bool
    commits: int
    log_root: str
    detail: str
    """``verified`` or what failed; a note when the session's tables hold rows of a later,
    unfinished export (readers ignore them; the next export of it replaces them)."""


@dataclass(frozen=True)
class LakeVerification(Displayable):
    """Every session of a Delta lake checked against its checkpoint."""

    _html_renderer: ClassVar[str] = "lake_verification_html"

    uri: str
    sessions: list[SessionVerdict]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.sessions)

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class LakeCompaction:
    """What ``compact_lake`` did, per table."""

    uri: str
    optimized: dict[str, int]
    """Files rewritten by Delta's optimize (bin-packing), per table."""
    removed: dict[str, int]
    """Files removed by vacuum, per table."""
    repaired: list[str] = field(default_factory=list)
    """Sessions whose tables held rows of an export that never committed its checkpoint
    (killed, or lost), older than ``abandoned_after_hours``: put back to their checkpoint's
    rows, so that plain Delta readers see them again."""


# --- export -------------------------------------------------------------------------------


@dataclass
class _Snapshot:
    """The store's copy of the sessions to export, read in one consistent snapshot."""

    ids: list[str]
    rows: dict[str, pa.Table]
    counts: dict[str, dict[str, int]]
    digests: dict[str, dict[str, str]]
    leaves: dict[str, list[bytes]]
    created: dict[str, str | None]
    checkpoints: dict[str, Any]
    read: set[str] = field(default_factory=set)
    """The sessions whose rows and checkpoints were read."""


def _digests_sql(store: SessionStore, columns: dict[str, list[str]]) -> str:
    """Per table and session: a digest of the exported rows in order (lake.py's digest)."""
    from ._mapping import star

    parts = []
    for table in LAKE_TABLES:
        key = "seq" if table == "merkle_log" else order_key(table)
        digest = _digest_sql([c for c in columns[table] if c != "session_id"])
        parts.append(
            f"SELECT '{table}', session_id, {digest.format(order='_order')}.digest FROM "
            f"(SELECT {star(table, internals(store).legacy_marks)}, {key} AS _order "
            f"FROM {table} "
            "WHERE session_id IN (SELECT unnest($1))) GROUP BY session_id"
        )
    return " UNION ALL ".join(parts)


def _snapshot(store: SessionStore, session_ids: Iterable[str] | None,
              lake: dict[str, dict[str, Any]] | None = None) -> _Snapshot:
    """The sessions' facts and digests, and the rows of those the lake's checkpoint rows
    ``lake`` (read before) do not show unchanged: a periodic export of a whole store reads
    only what changed. ``snap.read`` says whose rows were read."""
    _check_exportable(store)
    marks = internals(store).legacy_marks
    with _read_snapshot(store) as cursor:
        ids, counts, leaves, created = _session_facts(store, cursor, session_ids)
        snap = _Snapshot(ids, {}, counts, {s: {} for s in ids}, leaves, created, {})
        if not ids:
            return snap
        for table, sid, digest in _run(cursor, _digests_sql(store, _table_columns(cursor)),
                                       [ids], table=None, operation="export"):
            snap.digests[sid][table] = digest
        lake = lake or {}
        wanted = [sid for sid in ids if sid not in lake or not _unchanged(snap, sid, lake[sid])]
        for table in LAKE_TABLES:
            query = _select_sql(table, marks, "session_id IN (SELECT unnest($1))")
            try:
                snap.rows[table] = cursor.sql(query, params=[wanted]).to_arrow_table()
            except duckdb.Error as exc:
                raise translate_error(exc, table=table, operation="export") from exc
        snap.checkpoints = {sid: store.checkpoint(sid) for sid in wanted}
        snap.read = set(wanted)
    return snap


def _entry(row: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint row as a Parquet manifest entry (what lake.py's checks read)."""
    return {
        "exported_at": str(row["exported_at"]),
        "created_at": row["session_created_at"],
        "checkpoint": json.loads(row["checkpoint"]),
        "rows": {t["name"]: t["rows"] for t in row["tables"]},
        "schema_version": row["schema_version"],
        "library_version": row["library_version"],
    }


def _checkpoint_rows(table: DeltaTable | None, session_ids: Sequence[str] | None = None
                     ) -> dict[str, dict[str, Any]]:
    """The checkpoint rows of the sessions (all if None) in ``table``'s loaded version."""
    if table is None:
        return {}
    filters = None if session_ids is None else [("session_id", "in", list(session_ids))]
    if session_ids is not None and not session_ids:
        return {}
    rows = table.to_pyarrow_table(filters=filters).to_pylist()
    return {row["session_id"]: row for row in rows}


def _unchanged(snap: _Snapshot, sid: str, there: dict[str, Any]) -> bool:
    tree = MerkleTree(snap.leaves[sid])
    if there["log_size"] != tree.size or there["log_root"] != tree.root().hex():
        return False
    theirs = {t["name"]: (t["rows"], t["digest"]) for t in there["tables"]}
    return all(
        theirs.get(t, (0, None)) == (snap.counts[sid].get(t, 0), snap.digests[sid].get(t))
        for t in LAKE_TABLES if snap.counts[sid].get(t, 0) or t in theirs
    )


def _decide(base: str, snap: _Snapshot, there: dict[str, dict[str, Any]],
            storage_options: dict[str, str] | None
            ) -> tuple[list[ExportConflict], list[str], list[str]]:
    """Per session, against the lake's checkpoint rows ``there``: a conflict, unchanged,
    or to write."""
    conflicts: list[ExportConflict] = []
    unchanged: list[str] = []
    todo: list[str] = []
    for sid in snap.ids:
        row = there.get(sid)
        reason = _conflict(
            functools.partial(_lake_log, base, sid, row, storage_options),
            None if row is None else _entry(row), {"created_at": snap.created[sid]},
            snap.leaves[sid],
        )
        if reason is not None:
            conflicts.append(ExportConflict(sid, reason))
        elif row is not None and _unchanged(snap, sid, row):
            unchanged.append(sid)
        else:
            todo.append(sid)
    # The log extends the lake's: do the rows no log covers extend the lake's too? (Those
    # of sessions whose rows were not read are decided again once they are.)
    lost = _rows_lost(base, snap, {sid: there[sid] for sid in todo
                                   if sid in there and sid in snap.read}, storage_options)
    if lost:
        conflicts += [ExportConflict(sid, reason) for sid, reason in lost.items()]
        conflicts.sort(key=lambda c: snap.ids.index(c.session_id))
        todo = [sid for sid in todo if sid not in lost]
    return conflicts, unchanged, todo


_SCRATCH: dict[int, duckdb.DuckDBPyConnection] = {}


def _scratch() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB for this process's comparisons (a connection costs 20-40 ms, a
    cursor of it well under 1 ms; each use takes its own cursor, so its registered tables
    are its own). Per process id: a forked child never uses its parent's."""
    pid = os.getpid()
    found = _SCRATCH.get(pid)
    if found is None:
        found = _SCRATCH.setdefault(pid, duckdb.connect())
    return found


_NUMBERING = frozenset({"session_id", "id", "row_order"})
"""Columns a store numbers rows by (an import draws them anew), and the partition."""


def _lasting_columns(table: str, columns: Sequence[str]) -> list[str]:
    """The columns of ``table`` that never change once a row is written (the row model's
    ``__mutable__`` aside), the store's numbering aside."""
    from .rows import ROW_MODELS

    model = ROW_MODELS.get(table)
    mutable = set(model.__mutable__) if model is not None else set()
    return [c for c in columns if c not in _NUMBERING and c not in mutable]


def _rows_lost(base: str, snap: _Snapshot, there: dict[str, dict[str, Any]],
               storage_options: dict[str, str] | None) -> dict[str, str]:
    """Sessions whose rows in the lake (their checkpoint rows ``there``) a re-export would
    lose, each with why: in some table the lake's rows are not the first of the store's
    rows of the session, in insertion order. ``merkle_log`` is left to the consistency
    proof; columns the store changes in place (``Row.__mutable__``) are not compared.

    Cheap in the usual case, a store re-exporting its own grown session: the lake's
    recorded (count, digest) of a table is the digest of the store's first ``count`` rows.
    Only where it is not (rows changed in place, ids drawn anew by an import, or rows
    lost) are the lake's pinned rows read and compared, those columns aside."""
    behind: dict[str, list[str]] = {}
    prefixes: dict[str, dict[str, tuple[int, str | None]]] = {}  # table -> sid -> pin
    for sid, row in there.items():
        for pin in row["tables"]:
            name, count = pin["name"], pin["rows"] or 0
            mine = snap.counts[sid].get(name, 0)
            if name == "merkle_log" or count == 0 \
                    or (count, pin["digest"]) == (mine, snap.digests[sid].get(name)):
                continue
            if count > mine:
                behind.setdefault(sid, []).append(
                    f"{name} (the lake holds {count} rows, the store {mine})")
            else:
                prefixes.setdefault(name, {})[sid] = (count, pin["digest"])
    if prefixes:
        with _scratch().cursor() as scratch:
            for name, pins in prefixes.items():
                for sid, count in _not_prefixes(scratch, base, name, snap, there, pins,
                                                storage_options):
                    behind.setdefault(sid, []).append(
                        f"{name} (the lake's {count} rows are not the store's first "
                        f"{count} of {snap.counts[sid].get(name, 0)})")
    return {
        sid: ("the lake holds rows of this session that the store's copy does not: its log "
              "extends the lake's, but in " + ", ".join(sorted(
                  tables, key=lambda t: LAKE_TABLES.index(t.split(" ", 1)[0])))
              + " the lake's rows are not the first of the store's (a copy of the store "
              "that recorded other rows?), and replacing them would lose them; the lake's "
              "copy was left as it is")
        for sid, tables in behind.items()
    }


def _not_prefixes(con: duckdb.DuckDBPyConnection, base: str, name: str, snap: _Snapshot,
                  there: dict[str, dict[str, Any]], pins: dict[str, tuple[int, str | None]],
                  storage_options: dict[str, str] | None) -> list[tuple[str, int]]:
    """The sessions (and the lake's count) whose rows of table ``name`` in the lake are not
    the store's first rows of it. ``pins``: per session, the lake's (count, digest)."""
    ours = snap.rows[name]
    key = "seq" if name == "merkle_log" else order_key(name)
    wanted = "(SELECT unnest($1) AS session_id, unnest($2) AS _count)"
    sids = list(pins)
    counts = [pins[sid][0] for sid in sids]

    def first(columns: list[str], source: str) -> str:
        """Per session, the digest of its first ``_count`` rows of ``source``."""
        digest = _digest_sql(columns).format(order="_order")
        return (f"SELECT session_id, {digest}.digest FROM (SELECT s.*, s.{key} AS _order, "
                f"row_number() OVER (PARTITION BY s.session_id ORDER BY s.{key}) AS _rank, "
                f"w._count FROM {source} s JOIN {wanted} w USING (session_id)) "
                "WHERE _rank <= _count GROUP BY session_id")

    con.register("_ours", ours)
    try:
        # The digest the lake recorded is of every column (session_id aside) in order.
        full = [c for c in ours.column_names if c != "session_id"]
        found = dict(con.execute(first(full, "_ours"), [sids, counts]).fetchall())
        unsure = [sid for sid in sids if found.get(sid) != pins[sid][1]]
        lasting = _lasting_columns(name, full)
        if not unsure or not lasting:
            return []  # every lake copy a prefix, or nothing but counts to compare
        lake = _pinned_table(base, name, {sid: there[sid] for sid in unsure}, storage_options)
        columns = [c for c in lasting if c in lake.column_names]
        if not columns:  # a lake of another schema: nothing in common to compare
            return []
        con.register("_theirs", lake)
        try:
            digest = _digest_sql(columns).format(order="_order")
            theirs = dict(con.execute(
                f"SELECT session_id, {digest}.digest FROM (SELECT *, {key} AS _order "
                "FROM _theirs) GROUP BY session_id").fetchall())
            mine = dict(con.execute(first(columns, "_ours"),
                                    [unsure, [pins[sid][0] for sid in unsure]]).fetchall())
        finally:
            con.unregister("_theirs")
    finally:
        con.unregister("_ours")
    return [(sid, pins[sid][0]) for sid in unsure if theirs.get(sid) != mine.get(sid)]


def _write(table: DeltaTable, data: pa.Table, predicate: str, export_id: str) -> None:
    """One Delta transaction replacing the partitions ``predicate`` selects with ``data``
    (a seam the kill test uses)."""
    deltalake = _deltalake()
    deltalake.write_deltalake(
        table, data, mode="overwrite", predicate=predicate, partition_by=["session_id"],
        commit_properties=deltalake.CommitProperties(
            custom_metadata={"perspt_export": export_id}),
    )


def _write_tables(base: str, snap: _Snapshot, todo: list[str], export_id: str,
                  storage_options: dict[str, str] | None, there: dict[str, dict[str, Any]]
                  ) -> dict[str, list[dict[str, Any]]]:
    """Write the sessions' rows, table by table; each session's pins (per table: rows,
    digest, version, files).

    A table whose rows of a session equal the lake's (count and digest, as its checkpoint
    row ``there`` pins them) and whose live files are the pinned ones is not written for
    it: its pin carries over. So re-exporting a session that grew writes only the tables
    that changed, and a table with no rows (and none to remove) is not written at all."""
    import pyarrow as pa
    import pyarrow.compute as pc

    pins: dict[str, list[dict[str, Any]]] = {sid: [] for sid in todo}
    for name in LAKE_TABLES:
        rows = snap.rows[name]
        table = _open(base, name, rows.schema, storage_options)
        assert table is not None
        live = _live_files(table, todo)
        kept: dict[str, dict[str, Any]] = {}
        for sid in todo:
            pin = next((p for p in there.get(sid, {"tables": []})["tables"]
                        if p["name"] == name), None)
            mine = (snap.counts[sid].get(name, 0), snap.digests[sid].get(name))
            if pin is not None and (pin["rows"], pin["digest"]) == mine \
                    and sorted(live.get(sid, [])) == sorted(pin["files"]):
                kept[sid] = pin
        write = [sid for sid in todo if sid not in kept]
        rows = rows.filter(pc.is_in(rows["session_id"], value_set=pa.array(write, pa.string())))
        version: int | None = None
        files: dict[str, list[str]] = {}
        if rows.num_rows or any(live.get(sid) for sid in write):
            _replace(table, rows, _in(write), export_id)
            # The table as this transaction left it: the sessions' partitions hold exactly
            # the files it wrote.
            version = table.version()
            files = _live_files(table, write)
        for sid in todo:
            pins[sid].append(kept.get(sid) or {
                "name": name, "rows": snap.counts[sid].get(name, 0),
                "digest": snap.digests[sid].get(name),
                "version": version,
                "files": sorted(files.get(sid, [])),
            })
    return pins


def _replace(table: DeltaTable, data: pa.Table, predicate: str, export_id: str) -> None:
    """``_write``, again while another export of one of the sessions wrote meanwhile."""
    from deltalake.exceptions import CommitFailedError

    for attempt in range(_ATTEMPTS):
        try:
            _write(table, data, predicate, export_id)
            return
        except CommitFailedError:
            if attempt == _ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0.001, 0.05))
            table.update_incremental()


def _restore(base: str, session_ids: list[str], storage_options: dict[str, str] | None
             ) -> None:
    """Make the latest version of every table hold, for these sessions, the rows their
    checkpoints pin (where it holds other rows), and pin the files written instead.

    The re-pin commits only if no export committed a checkpoint of one of them since it
    was read; if one did, its tables may have been overwritten by this restore: restore
    again, to its rows. So the last to write a session's tables also commits its pins."""
    from deltalake.exceptions import CommitFailedError

    export_id = uuid.uuid4().hex
    for _ in range(_ATTEMPTS):
        checkpoints = _open(base, CHECKPOINTS, None, storage_options)
        assert checkpoints is not None
        committed = _checkpoint_rows(checkpoints, session_ids)
        # A session with no checkpoint (its first export died) has no rows to put back: its
        # partitions are emptied.
        rows = {sid: committed.get(sid) or _no_checkpoint(sid) for sid in session_ids}
        repinned = {sid: {p["name"]: p for p in row["tables"]} for sid, row in rows.items()}
        changed = False
        for name in LAKE_TABLES:
            table = _open(base, name, None, storage_options)
            if table is None:
                continue
            live = _live_files(table, list(rows))
            stale = {sid: row for sid, row in rows.items()
                     if sorted(live.get(sid, [])) != _pinned_files(row, name)}
            if not stale:
                continue
            changed = True
            data = _pinned_table(base, name, stale, storage_options)
            order = [f.name for f in table.schema().to_arrow()]  # type: ignore[attr-defined]
            _replace(table, data.select(order), _in(stale), export_id)
            files = _live_files(table, list(stale))
            for sid in stale:
                pin = repinned[sid].setdefault(name, {
                    "name": name, "rows": 0, "digest": None, "version": None, "files": []})
                pin.update(version=table.version(), files=sorted(files.get(sid, [])))
        if not changed:
            return
        import pyarrow as pa

        if not committed:  # nothing to re-pin: look again, in case a checkpoint came meanwhile
            continue
        updated = [{**row, "tables": list(repinned[sid].values())}
                   for sid, row in rows.items() if sid in committed]
        try:
            _write(checkpoints, pa.Table.from_pylist(updated, schema=_checkpoint_schema()),
                   _in(committed), export_id)
            return
        except CommitFailedError:
            time.sleep(random.uniform(0.001, 0.05))
    raise StoreError("other exports of these sessions kept committing while this one put "
                     "their rows back; export again", operation="export")


def _no_checkpoint(session_id: str) -> dict[str, Any]:
    """What stands for the checkpoint row of a session the lake has none of: it pins no
    file (a first export that died before its checkpoint left the only rows it has)."""
    return {"session_id": session_id, "tables": []}


def _pinned_files(row: dict[str, Any], table: str) -> list[str]:
    """The files (as the Delta log names them) a checkpoint row pins for ``table``."""
    return sorted(next((p["files"] for p in row["tables"] if p["name"] == table), []))


def _live_files(table: DeltaTable, session_ids: Sequence[str] | None
                ) -> dict[str, list[str]]:
    """The data files (paths relative to the table, as the Delta log holds them) of the
    sessions' partitions (every session's if None) in the table's loaded version."""
    import pyarrow as pa

    actions = pa.table(table.get_add_actions(flatten=True))
    found: dict[str, list[str]] = {}
    if "partition.session_id" not in actions.column_names:
        return found
    wanted = None if session_ids is None else set(session_ids)
    for path, sid in zip(actions["path"].to_pylist(),
                         actions["partition.session_id"].to_pylist(), strict=True):
        if wanted is None or sid in wanted:
            found.setdefault(sid, []).append(path)
    return found


def export_delta(
    store: SessionStore,
    uri: PathLike | str,
    session_ids: Iterable[str] | None = None,
    storage_options: dict[str, str] | None = None,
) -> DeltaExportReport:
    """Write sessions into a Delta lake at ``uri`` (see the module docs for its layout).

    Any number of exporters, in several processes or on several machines sharing the
    storage, may export into one lake at the same time: nothing is lost or duplicated.
    A session already in the lake is replaced only when the store's commit log extends the
    lake's checkpoint of it (a Merkle consistency proof), it was created at the same
    time, and in every table the lake's rows of it are the store's first rows (columns the
    store changes in place aside: ``Row.__mutable__``); otherwise it is a conflict,
    reported in ``report.conflicts`` (not raised), and the lake's copy is left alone. A
    session the lake holds exactly is not written (``report.unchanged``).

    Args:
        store: The store to export (read-only is fine); read in one consistent snapshot.
        uri: A local directory (created if needed) or an object-store URL.
        session_ids: The sessions to export; all of them by default.
        storage_options: Passed to delta-rs for object storage (credentials, and on S3 a
            locking provider or conditional puts: see the lake guide).

    Raises:
        RecordNotFoundError: A named session is not in the store (nothing was written).
        StoreError: The ``lake`` extra is missing, the store is not migrated, or a write
            failed.
    """
    from . import __version__

    _deltalake()
    from deltalake.exceptions import CommitFailedError

    base = _base(uri)
    session_ids = None if session_ids is None else list(session_ids)
    # The lake's checkpoint rows first (a hint: decided again below), so that the snapshot
    # reads the rows of changed sessions only.
    try:
        hint = _open(base, CHECKPOINTS, None, storage_options)
    except Exception:
        hint = None
    snap = _snapshot(store, session_ids, _checkpoint_rows(hint, session_ids))
    if _local(base):
        if (Path(base) / MANIFEST).exists():
            raise StoreError(
                f"{base} is a Parquet lake (it has a {MANIFEST}); export the Delta lake to "
                "another directory", operation="export")
        try:
            Path(base).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot export to {base}: {exc}", operation="export") from exc
    conflicts: list[ExportConflict] = []
    unchanged: list[str] = []
    todo: list[str] = []
    version: int | None = None
    entries: dict[str, dict[str, Any]] = {}
    written: set[str] = set()  # sessions whose tables an attempt wrote
    there: dict[str, dict[str, Any]] = {}
    try:
        for attempt in range(_ATTEMPTS):
            if attempt == 0 and hint is not None:  # brought up to date: cheaper than a load
                hint.update_incremental()
                checkpoints: DeltaTable | None = hint
            else:
                checkpoints = _open(base, CHECKPOINTS,
                                    _checkpoint_schema() if snap.ids else None, storage_options)
            there = _checkpoint_rows(checkpoints, snap.ids)
            conflicts, unchanged, todo = _decide(base, snap, there, storage_options)
            if not snap.read.issuperset(todo):  # the lake changed since the hint
                snap = _snapshot(store, snap.ids)
                conflicts, unchanged, todo = _decide(base, snap, there, storage_options)
            if not todo or checkpoints is None:
                version = None if checkpoints is None else checkpoints.version()
                break
            export_id = uuid.uuid4().hex
            written.update(todo)
            pins = _write_tables(base, snap, todo, export_id, storage_options, there)
            rows = _checkpoint_table(snap, todo, pins, export_id, __version__)
            try:
                _write(checkpoints, rows, _in(todo), export_id)
            except CommitFailedError:
                # Another export of one of these sessions committed its checkpoint since we
                # read ours: decide again against it.
                time.sleep(random.uniform(0.001, 0.05) * min(attempt + 1, 10))
                continue
            version = checkpoints.version()
            entries = {row["session_id"]: _entry(row) for row in rows.to_pylist()}
            break
        else:
            raise StoreError(
                f"other exports of these sessions kept committing first ({_ATTEMPTS} "
                "attempts); export again", operation="export")
        # A session this export wrote but then lost to another's checkpoint (a conflict
        # now, or equal): put the winner's rows back, so that plain readers of the
        # latest versions see the lake's copy, not ours.
        lost = sorted(written.difference(todo))
        if lost:
            _restore(base, lost, storage_options)
    except StoreError:
        raise
    except Exception as exc:  # delta-rs and object-store errors
        raise _translate(exc, f"exporting to {base}") from exc
    counts: dict[str, int] = {}
    for sid in todo:
        for name, count in snap.counts[sid].items():
            counts[name] = counts.get(name, 0) + count
    return DeltaExportReport(
        path=Path(base) if _local(base) else Path(base.split("://", 1)[1]),
        session_ids=todo, rows=counts, manifest={"sessions": entries}, conflicts=conflicts,
        uri=base, unchanged=unchanged, version=version,
    )


def _checkpoint_table(snap: _Snapshot, todo: list[str], pins: dict[str, list[dict[str, Any]]],
                      export_id: str, library_version: str) -> pa.Table:
    import pyarrow as pa

    now = _dt.datetime.now(_dt.UTC)
    rows = []
    for sid in todo:
        checkpoint = snap.checkpoints[sid]
        rows.append({
            "session_id": sid, "export_id": export_id, "exported_at": now,
            "library_version": library_version, "schema_version": SCHEMA_VERSION,
            "session_created_at": snap.created[sid], "log_size": checkpoint.size,
            "log_root": checkpoint.log_root.hex(), "state_root": checkpoint.state_root.hex(),
            "checkpoint": checkpoint.to_json(), "tables": pins[sid],
        })
    return pa.Table.from_pylist(rows, schema=_checkpoint_schema())


def _lake_log(base: str, session_id: str, row: dict[str, Any] | None,
              storage_options: dict[str, str] | None, size: int, root: bytes
              ) -> MerkleTree | None:
    """The lake's commit log of a session, from the merkle_log files its checkpoint pins;
    None unless it matches the checkpoint (``size`` commits, ``root``)."""
    if row is None:
        return None
    try:
        table = _pinned_table(base, "merkle_log", {session_id: row}, storage_options)
        leaves = [bytes(x) for x in table.sort_by("seq")["leaf_hash"].to_pylist()]
    except Exception:
        return None
    tree = MerkleTree(leaves)
    return tree if tree.size == size and tree.root() == root else None


# --- reading ------------------------------------------------------------------------------


def _checkpoints_as_of(base: str, as_of: AsOf, storage_options: dict[str, str] | None
                       ) -> tuple[dict[str, dict[str, Any]], int | None]:
    """Every session's checkpoint row in the lake as of ``as_of``, and that version."""
    table = _open(base, CHECKPOINTS, None, storage_options)
    if table is None:
        raise StoreError(
            f"{base} is not a Delta lake of perspt-store: it has no {CHECKPOINTS} table; "
            "write one with export_delta (perspt-store export --delta URI)",
            operation="import")
    if as_of is not None:
        if isinstance(as_of, bool) or not isinstance(as_of, int | _dt.datetime):
            raise TypeError("as_of must be a version of the lake (an int) or a timezone-aware "
                            f"datetime, not {type(as_of).__name__} {as_of!r}")
        if isinstance(as_of, _dt.datetime) and as_of.tzinfo is None:
            raise ValueError("as_of must be a timezone-aware datetime (e.g. UTC)")
        if isinstance(as_of, int) and as_of < 0:
            raise ValueError(f"as_of must be a version of the lake, not negative: {as_of}")
        latest = table.version()
        if isinstance(as_of, int) and as_of > latest:
            raise StoreError(f"the lake at {base} has no version as of {as_of}: its latest "
                             f"version is {latest}", operation="import")
        if isinstance(as_of, _dt.datetime):
            # delta-rs loads the first version for any earlier time: say so instead.
            millis = table.metadata().created_time
            created = None if millis is None else _dt.datetime.fromtimestamp(millis / 1000,
                                                                             _dt.UTC)
            if created is not None and as_of < created:
                raise StoreError(
                    f"the lake at {base} did not exist yet at {as_of.isoformat()}: it was "
                    f"created at {created.isoformat()}", operation="import")
        try:
            table.load_as_version(as_of)
        except Exception as exc:
            raise StoreError(f"the lake at {base} has no version as of {as_of}: {exc}",
                             operation="import") from exc
    return _checkpoint_rows(table), table.version()


def _file_paths(base: str, table: str, row: dict[str, Any]) -> list[str]:
    """Where the files a checkpoint row pins for ``table`` are."""
    return [f"{base}/{table}/{unquote(path)}" for path in _pinned_files(row, table)]


def _pinned_table(base: str, table: str, rows: dict[str, dict[str, Any]],
                  storage_options: dict[str, str] | None) -> pa.Table:
    return lake_dataset(base, table, storage_options=storage_options, _rows=rows).to_table()


def lake_dataset(
    uri: PathLike | str, table: str, *, as_of: AsOf = None,
    storage_options: dict[str, str] | None = None,
    _rows: dict[str, dict[str, Any]] | None = None,
) -> pads.Dataset:
    """A pyarrow dataset of one table of a Delta lake: every session's rows as of its
    checkpoint (never half an export), with ``session_id``.

    Polars reads it with ``pl.scan_pyarrow_dataset(ds)``, DuckDB with
    ``con.sql("SELECT … FROM ds")`` (a replacement scan of the Python variable).

    Raises:
        StoreError: ``uri`` is not a Delta lake, or has no such version.
        ValueError: ``table`` is not a lake table.
    """

    if table not in LAKE_TABLES:
        raise ValueError(f"{table!r} is not a lake table (one of {', '.join(LAKE_TABLES)})")
    base = _base(uri)
    rows = _rows if _rows is not None else _checkpoints_as_of(base, as_of, storage_options)[0]
    dataset = _dataset(base, table, rows, storage_options)
    if dataset is None:
        raise StoreError(f"the lake at {base} has no table {table}", operation="read")
    return dataset


def _dataset(base: str, table: str, rows: dict[str, dict[str, Any]],
             storage_options: dict[str, str] | None) -> pads.Dataset | None:
    """The pyarrow dataset of the files ``rows`` pin in ``table``; None without the table."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    data = _open(base, table, None, storage_options)
    if data is None:
        return None
    schema = pa.schema(data.schema().to_arrow())
    paths: list[str] = []
    partitions = []
    for sid, row in rows.items():
        for path in _file_paths(base, table, row):
            paths.append(path)
            partitions.append(ds.field("session_id") == sid)
    if _local(base):
        filesystem: Any = pafs.LocalFileSystem()
    else:
        filesystem, _ = pafs.FileSystem.from_uri(base)
        paths = [p.split("://", 1)[1] for p in paths]
    file_schema = pa.schema([f for f in schema if f.name != "session_id"])
    dataset = ds.FileSystemDataset.from_paths(
        paths, schema=file_schema.append(pa.field("session_id", pa.string())),
        format=ds.ParquetFileFormat(), filesystem=filesystem, partitions=partitions,
    )
    return dataset


def lake_tables(
    uri: PathLike | str, *, as_of: AsOf = None, storage_options: dict[str, str] | None = None,
) -> dict[str, pads.Dataset]:
    """Every table of a Delta lake as a pyarrow dataset of each session's rows as of its
    checkpoint (:func:`lake_dataset` for each table, from one read of the checkpoints):
    the way to query the lake that never shows half an export, a killed one included.

    Register them with DuckDB (``con.register(name, dataset)``), scan them with Polars
    (``pl.scan_pyarrow_dataset``), or read them with pyarrow.

    Raises:
        StoreError: ``uri`` is not a Delta lake, or has no such version.
    """
    base = _base(uri)
    rows = _checkpoints_as_of(base, as_of, storage_options)[0]
    tables = {}
    for name in LAKE_TABLES:
        dataset = _dataset(base, name, rows, storage_options)
        if dataset is not None:  # else no export has written it yet
            tables[name] = dataset
    return tables


# --- import -------------------------------------------------------------------------------


def import_delta(store: SessionStore, uri: PathLike | str,
                 session_ids: Iterable[str] | None = None, *, as_of: AsOf = None
                 ) -> ImportReport:
    """Merge a Delta lake into ``store`` (use :func:`lake.import_lake`, which detects it):
    each session from the files its checkpoint pins, with lake.py's guarantees."""
    base = _readable(_base(uri))
    if not _local(base):
        raise StoreError(
            f"importing from {base} is not supported: import reads the pinned files with "
            "DuckDB, so copy the lake to a local directory first", operation="import")
    rows, _ = _checkpoints_as_of(base, as_of, None)
    names = _named(list(rows), session_ids, f"the lake at {base}", "import")
    names.sort(key=lambda sid: (rows[sid]["session_created_at"] is None,
                                rows[sid]["session_created_at"] or "", sid))
    results = []
    columns: dict[tuple[str, int], list[str]] = {}
    with duckdb.connect() as scratch:
        for sid in names:
            files = {t: paths for t in LAKE_TABLES if (paths := _file_paths(base, t, rows[sid]))}
            edited = _edited_tables(scratch, rows[sid], files, columns)
            result: SessionImport | None
            if edited:
                detail = (f"its rows in {', '.join(edited)} do not match the digest its "
                          "checkpoint recorded (a file edited after the export?)")
                with SessionStore.in_memory() as trial:  # what else fails, e.g. its log
                    tried = _import_session(trial, sid, _entry(rows[sid]), files,
                                            lambda: False)
                if tried is not None and tried.status == "invalid":
                    detail = f"{tried.detail.removesuffix('; nothing was imported')}; {detail}"
                result = SessionImport(sid, "invalid", f"{detail}; nothing was imported")
            else:
                result = _import_session(store, sid, _entry(rows[sid]), files, lambda: False)
            assert result is not None  # pinned files never change
            results.append(result)
    return ImportReport(source=base, sessions=results)


def _edited_tables(con: duckdb.DuckDBPyConnection, row: dict[str, Any],
                   files: dict[str, list[str]], columns: dict[tuple[str, int], list[str]]
                   ) -> list[str]:
    """The tables whose pinned rows of a session no longer have the digest its checkpoint
    recorded at export (lake.py's digest, over the files' columns in their order; one
    statement for all the tables). The node states and the commit log are checked by the
    Merkle log too; this covers the rows no log covers (energy, LLM calls, status, …). A
    table without a stored order column spread over several files is not checked (the
    files' order is not the rows'). ``columns`` caches each table's file columns per
    schema version."""
    parts: list[str] = []
    params: list[Any] = []
    expected: dict[str, str] = {}
    try:
        for pin in row["tables"]:
            name, paths = pin["name"], files.get(pin["name"], [])
            if not paths or pin["digest"] is None:
                continue
            key = "seq" if name == "merkle_log" else order_key(name)
            if key == "rowid":
                if len(paths) > 1:
                    continue
                key = "file_row_number"
            source = (f"read_parquet(${len(params) + 1}, hive_partitioning=false, "
                      "file_row_number=true)")
            cached = columns.get((name, row["schema_version"]))
            if cached is None:
                cached = [c for (c, *_) in con.execute(
                    "DESCRIBE SELECT * FROM read_parquet($1)", [paths[:1]]).fetchall()
                    if c != "session_id"]
                columns[(name, row["schema_version"])] = cached
            digest = _digest_sql(cached).format(order="_order")
            parts.append(f"SELECT {_literal(name)}, {digest}.digest FROM "
                         f"(SELECT *, {key} AS _order FROM {source})")
            params.append(paths)
            expected[name] = pin["digest"]
        if not parts:
            return []
        found = dict(con.execute(" UNION ALL ".join(parts), params).fetchall())
    except duckdb.Error:
        return []  # unreadable files: the import reports them
    return [name for name, digest in expected.items() if found.get(name) != digest]


# --- verify and compact -------------------------------------------------------------------


def verify_lake(uri: PathLike | str, *, as_of: AsOf = None) -> LakeVerification:
    """Check every session of a Delta lake against its checkpoint: its rows (the pinned
    files) are loaded into a scratch store, the Merkle log recomputed from the node states,
    and its size and roots compared with the checkpoint's (a local directory or a
    ``file://`` URL: the rows are read with DuckDB)."""
    base = _readable(_base(uri))
    rows, _ = _checkpoints_as_of(base, as_of, None)
    ahead = _ahead(base, rows) if as_of is None else set()
    verdicts = []
    with SessionStore.in_memory() as scratch:
        report = import_delta(scratch, base, as_of=as_of)
        for entry in report.sessions:
            row = rows[entry.session_id]
            ok = entry.status == "imported"
            detail = "verified against its checkpoint" if ok else entry.detail
            if entry.session_id in ahead:
                detail += ("; its tables also hold rows of a later export that did not "
                           "commit its checkpoint (pinned readers ignore them; the next "
                           "export of it, or lake compact, replaces them)")
            verdicts.append(SessionVerdict(entry.session_id, ok, row["log_size"],
                                           row["log_root"], detail))
    for sid in sorted(ahead.difference(rows)):
        verdicts.append(SessionVerdict(
            sid, True, 0, "",
            "not in the lake (no checkpoint): its tables hold rows of an export that did "
            "not commit its checkpoint (pinned readers ignore them; the next export of it, "
            "or lake compact, removes them)"))
    return LakeVerification(uri=base, sessions=verdicts)


def _ahead(base: str, rows: dict[str, dict[str, Any]]) -> set[str]:
    """Sessions whose live files in some table are not the ones their checkpoint pins."""
    ahead: set[str] = set()
    for name in LAKE_TABLES:
        table = _open(base, name, None, None)
        if table is None:
            continue
        live = _live_files(table, None)
        for sid in live.keys() | rows.keys():
            row = rows.get(sid) or _no_checkpoint(sid)
            if sorted(live.get(sid, [])) != _pinned_files(row, name):
                ahead.add(sid)
    return ahead


def _abandoned(base: str, rows: dict[str, dict[str, Any]], hours: float,
               storage_options: dict[str, str] | None) -> set[str]:
    """Sessions whose live files in some table are not the ones their checkpoint pins, and
    were written more than ``hours`` ago (when only removed, the table's last commit)."""
    import pyarrow as pa

    cutoff = (time.time() - hours * 3600) * 1000  # Delta's times are in milliseconds
    found: set[str] = set()
    for name in LAKE_TABLES:
        table = _open(base, name, None, storage_options)
        if table is None:
            continue
        actions = pa.table(table.get_add_actions(flatten=True))
        written: dict[str, list[tuple[str, int]]] = {}
        if "partition.session_id" in actions.column_names:
            for path, sid, at in zip(actions["path"].to_pylist(),
                                     actions["partition.session_id"].to_pylist(),
                                     actions["modification_time"].to_pylist(), strict=True):
                written.setdefault(sid, []).append((path, at))
        last: int | None = None
        for sid in written.keys() | rows.keys():
            pinned = _pinned_files(rows.get(sid) or _no_checkpoint(sid), name)
            live = written.get(sid, [])
            if sorted(path for path, _ in live) == pinned:
                continue
            stray = [at for path, at in live if path not in pinned]
            if not stray:  # the unfinished export only removed rows: its commit's time
                if last is None:
                    last = int(table.history(1)[0]["timestamp"])
                stray = [last]
            if max(stray) <= cutoff:
                found.add(sid)
    return found


def compact_lake(uri: PathLike | str, *, retention_hours: int = _RETENTION_HOURS,
                 abandoned_after_hours: float = _ABANDONED_HOURS,
                 storage_options: dict[str, str] | None = None) -> LakeCompaction:
    """Delta maintenance of every table: repair abandoned exports, optimize (bin-pack small
    files), vacuum files replaced more than ``retention_hours`` ago, and write a log
    checkpoint.

    Repair: a session whose tables hold rows its checkpoint does not pin, written more than
    ``abandoned_after_hours`` ago (an exporter killed before its checkpoint, whose store
    never exported the session again), gets its checkpoint's rows back in those tables, so
    plain Delta readers of the latest versions see the lake's copy again. An export of the
    session still running then (slower than that) loses its checkpoint commit and starts
    over: nothing is lost. A session with no checkpoint at all (its first export died) has
    its rows removed; a first export still running then that commits its checkpoint after
    the repair looked again is readable through its pins, but plain readers miss the rows
    the repair removed until it is exported again.

    Vacuum keeps every version a session's checkpoint pins (``keep_versions``), so a
    reader still finds every session's files however old its export.

    Raises:
        ValueError: ``retention_hours`` is below 1, or ``abandoned_after_hours`` below 0.
    """
    if retention_hours < 1:
        raise ValueError("retention_hours must be at least 1 (readers may still be reading)")
    if abandoned_after_hours < 0:
        raise ValueError("abandoned_after_hours must not be negative")
    base = _base(uri)
    rows, _ = _checkpoints_as_of(base, None, storage_options)
    optimized: dict[str, int] = {}
    removed: dict[str, int] = {}
    try:
        repaired = sorted(_abandoned(base, rows, abandoned_after_hours, storage_options))
        if repaired:
            _restore(base, repaired, storage_options)
            rows, _ = _checkpoints_as_of(base, None, storage_options)
        for name in (*LAKE_TABLES, CHECKPOINTS):
            table = _open(base, name, None, storage_options)
            if table is None:
                continue
            metrics = table.optimize.compact()
            optimized[name] = int(metrics.get("numFilesRemoved", 0))
            keep = sorted({p["version"] for row in rows.values() for p in row["tables"]
                           if p["name"] == name and p["version"] is not None})
            removed[name] = len(table.vacuum(
                retention_hours=retention_hours, dry_run=False,
                enforce_retention_duration=retention_hours >= _RETENTION_HOURS,
                keep_versions=keep or None,
            ))
            table.create_checkpoint()
    except Exception as exc:
        raise _translate(exc, f"compacting {base}") from exc
    return LakeCompaction(uri=base, optimized=optimized, removed=removed, repaired=repaired)

"""The store's commit code: the Merkle commit log of each session, written, read, verified and
rolled back, and the ``merkle_log`` SQL (the migrations that backfill it and that move it
onto the node-state rows).

Every node-state write appends one leaf to its session's log in the same statement (the row
carries its log entry, and ``merkle_log`` is a view that decodes them), and
sets ``sessions.merkle_root`` to the new *state root* (the tree over the latest state of every
node, in ``node_id`` order). Nothing is ever deleted: a rollback appends commits that restore
the target's states (and tombstones for nodes the target did not have). The types handed out
live in :mod:`perspt_store.commitlog`; the trees in :mod:`perspt_store.merkle`.
"""

from __future__ import annotations

import datetime as _dt
import os
import threading
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, NamedTuple

import duckdb

from .. import merkle
from .._mapping import table_map
from ..commitlog import (
    CHECKPOINT_SCHEME,
    COMMIT_KINDS,
    REMOVED_STATE,
    Checkpoint,
    ConsistencyProof,
    InclusionProof,
    NodeCommit,
    Problem,
    RollbackChange,
    VerificationReport,
)
from ..errors import IntegrityError, RecordNotFoundError, SessionNotFoundError
from ..rows import NodeStateRecord
from ._base import CommitRaceError, StoreBase, consistent, translate_error
from ._groupcommit import BufferedCommit, GroupCommit


class LogEntry(NamedTuple):
    """One ``merkle_log`` row, as :data:`_LOG_ENTRIES_SQL` reads it."""

    seq: int
    node_state_id: int
    node_id: str
    kind: str
    leaf_hash: bytes
    state_root: bytes
    log_root: bytes

    def commit(self, session_id: str) -> NodeCommit:
        """The entry as the commit it records."""
        return NodeCommit(
            session_id, self.seq, self.node_id, self.kind, self.leaf_hash, self.state_root,
            self.log_root, self.seq + 1,
        )


# --- schema 3 and 4's merkle_log table (migration 3 backfills it; migration 5 moves it) ----

MERKLE_LOG_COLUMNS = ("session_id", *LogEntry._fields)
"""The columns of the ``merkle_log`` table the backfill writes (``created_at`` takes its
default)."""

INSERT_LOG_INTO = f"INSERT INTO merkle_log ({', '.join(MERKLE_LOG_COLUMNS)})"
"""The head of every statement that appends log entries, columns in that order."""

INSERT_LOG_SQL = f"{INSERT_LOG_INTO} SELECT {', '.join('unnest(?)' for _ in MERKLE_LOG_COLUMNS)}"
"""Appends many log entries in one statement (one list parameter per column)."""


def log_rows(commits: Sequence[NodeCommit], node_state_ids: Sequence[int]) -> list[list[Any]]:
    """Column lists for :data:`INSERT_LOG_SQL`."""
    return [
        [c.session_id for c in commits],
        [c.seq for c in commits],
        list(node_state_ids),
        [c.node_id for c in commits],
        [c.kind for c in commits],
        [c.leaf_hash for c in commits],
        [c.state_root for c in commits],
        [c.log_root for c in commits],
    ]


# --- the commit a node-state row carries (schema 5) -------------------------------------
#
# A store-written node-state row carries its own log entry in one BLOB column: one INSERT
# (and the session's root) per commit instead of three tables, the cost that decided it
# (docs/performance.md, "The Merkle commit log in the store"). ``merkle_log`` is a view that
# decodes those entries, so every reader, the lake and upstream's SQL see the table they
# always saw. The layout, big-endian:
#
#   kind (1 byte, index in COMMIT_KINDS) | seq (8) | leaf hash (32) | state root (32) |
#   log root (32) [| created_at, microseconds since the epoch (8)]
#
# The optional time is the log entry's own, kept only where it differs from the row's
# ``created_at`` (entries backfilled when a file was migrated, or imported with them).

COMMIT_COLUMN = "merkle_commit"
"""The ``node_states`` column holding the log entry of a store-written row."""

ENTRY_SIZE = 105
"""Bytes of a packed log entry without its own time."""

_ENTRY_SIZES = f"({ENTRY_SIZE}, {ENTRY_SIZE + 8})"  # without and with the entry's own time

_KIND_CODES = {kind: code for code, kind in enumerate(COMMIT_KINDS)}


def pack_commit(commit: NodeCommit) -> bytes:
    """The log entry of ``commit``, as its node-state row carries it."""
    return b"".join((
        bytes((_KIND_CODES[commit.kind],)),
        commit.seq.to_bytes(8, "big"),
        commit.leaf_hash,
        commit.state_root,
        commit.log_root,
    ))


def _field(offset: int, size: int) -> str:
    """Bytes ``offset .. offset + size`` of the packed entry, as hex (DuckDB 2 has no
    substring of a BLOB; hex digits work on 1.5.4 and 2 alike)."""
    return f"substring(hex({COMMIT_COLUMN}), {2 * offset + 1}, {2 * size})"


def _hash_field(offset: int) -> str:
    """A 32-byte field of the packed entry; NULL if the entry has no valid length."""
    whole = f"octet_length({COMMIT_COLUMN}) IN {_ENTRY_SIZES}"
    return f"CASE WHEN {whole} THEN unhex({_field(offset, 32)}) END"


_LOG_COLUMNS_SQL = (  # merkle_log's, in order
    "session_id, seq, node_state_id, node_id, kind, leaf_hash, state_root, log_root, created_at"
)

# An entry of another length (written by hand) decodes to NULLs: verify_session reports it.
MERKLE_LOG_VIEW_SQL = f"""
CREATE VIEW merkle_log AS
SELECT
    session_id,
    TRY_CAST(TRY_CAST('0x' || {_field(1, 8)} AS BIGINT) AS INTEGER) AS seq,
    id AS node_state_id,
    node_id,
    CASE WHEN octet_length({COMMIT_COLUMN}) IN {_ENTRY_SIZES} THEN CASE {_field(0, 1)}
        {" ".join(f"WHEN '{code:02X}' THEN '{kind}'" for kind, code in _KIND_CODES.items())}
    END END AS kind,
    {_hash_field(9)} AS leaf_hash,
    {_hash_field(41)} AS state_root,
    {_hash_field(73)} AS log_root,
    CASE WHEN octet_length({COMMIT_COLUMN}) = {ENTRY_SIZE + 8}
        THEN make_timestamp(TRY_CAST('0x' || {_field(ENTRY_SIZE, 8)} AS BIGINT))
        ELSE created_at END AS created_at
FROM node_states WHERE {COMMIT_COLUMN} IS NOT NULL
UNION ALL
SELECT {_LOG_COLUMNS_SQL} FROM merkle_log_detached"""
"""The commit log, decoded from the rows that carry it (and the detached entries)."""


def pack_sql(log: str, row: str) -> str:
    """SQL packing a ``merkle_log``-shaped row ``log`` onto node-state row ``row`` (the
    entry's own time kept where it differs from the row's)."""
    kinds = " ".join(f"WHEN '{kind}' THEN {code}" for kind, code in _KIND_CODES.items())
    return (
        f"unhex(format('{{:02x}}{{:016x}}', CASE {log}.kind {kinds} END, {log}.seq)) "
        f"|| {log}.leaf_hash || {log}.state_root || {log}.log_root || CASE WHEN "
        f"{log}.created_at = {row}.created_at THEN ''::BLOB "
        f"ELSE unhex(format('{{:016x}}', epoch_us({log}.created_at))) END"
    )


def placeable_sql(log: str, row: str) -> str:
    """The condition under which log entry ``log`` can be carried by row ``row``."""
    kinds = ", ".join(f"'{kind}'" for kind in COMMIT_KINDS)
    return (
        f"{row}.id = {log}.node_state_id AND {row}.session_id = {log}.session_id "
        f"AND {row}.node_id = {log}.node_id AND {log}.kind IN ({kinds}) AND {log}.seq >= 0 "
        f"AND octet_length({log}.leaf_hash) = 32 AND octet_length({log}.state_root) = 32 "
        f"AND octet_length({log}.log_root) = 32 AND {log}.created_at IS NOT NULL "
        f"AND epoch_us({log}.created_at) >= 0 AND {row}.{COMMIT_COLUMN} IS NULL"
    )


def carry_entries_sql(source: str) -> list[str]:
    """Statements that put the log entries of relation ``source`` (``merkle_log``'s columns
    and a unique ``entry_no``) on the node-state rows they commit, where a row can carry
    them (:func:`placeable_sql`), and the others in ``merkle_log_detached``. Run them in
    order, in one transaction, on one connection (they share a temporary table)."""
    return [
        f"CREATE TEMP TABLE perspt_placed AS SELECT l.entry_no, n.id, {pack_sql('l', 'n')} "
        f"AS entry FROM {source} l JOIN node_states n ON {placeable_sql('l', 'n')} "
        "QUALIFY row_number() OVER (PARTITION BY n.id ORDER BY l.seq) = 1",
        f"UPDATE node_states SET {COMMIT_COLUMN} = p.entry FROM perspt_placed p "
        "WHERE node_states.id = p.id",
        f"INSERT INTO merkle_log_detached SELECT {_LOG_COLUMNS_SQL} FROM {source} "
        "WHERE entry_no NOT IN (SELECT entry_no FROM perspt_placed) ORDER BY session_id, seq",
        "DROP TABLE perspt_placed",
    ]


MERKLE_LOG_DETACHED_SQL = """
CREATE TABLE merkle_log_detached (
    session_id VARCHAR,
    seq INTEGER,
    node_state_id INTEGER,
    node_id VARCHAR,
    kind VARCHAR,
    leaf_hash BLOB,
    state_root BLOB,
    log_root BLOB,
    created_at TIMESTAMP
)"""
"""Log entries that no node-state row can carry, kept as they were so ``verify_session``
still reports them: from a migrated file (the row was deleted or changed behind the store's
back, or two entries name one row) or from a lake import. Commits never go here."""


def move_log_onto_rows(conn: Any) -> None:
    """Migration 5: each ``merkle_log`` entry moves onto the node-state row it commits, what
    no row can carry to ``merkle_log_detached``; the table makes way for the view.

    (Not renamed: DuckDB keeps the old name in the foreign key that files older than schema
    5 have from the log to ``sessions``, and a ``DELETE FROM sessions`` then fails.)
    """
    conn.execute(f"ALTER TABLE node_states ADD COLUMN IF NOT EXISTS {COMMIT_COLUMN} BLOB")
    conn.execute(MERKLE_LOG_DETACHED_SQL)
    for statement in carry_entries_sql("(SELECT *, rowid AS entry_no FROM merkle_log)"):
        conn.execute(statement)
    conn.execute("DROP TABLE merkle_log")
    conn.execute(MERKLE_LOG_VIEW_SQL)


# One node state carrying its commit, and the session's new root, in one statement (DuckDB
# 2.0 runs data-modifying CTEs exactly once, atomically with the statement). The UPDATE must
# be the main statement: DuckDB rejects UPDATE ... RETURNING on a table that foreign keys
# reference. It also guards the log: two handles committing to one session at once both
# update its row, and DuckDB fails the later one (a write-write conflict).
_NODE_MAP = table_map(NodeStateRecord)
_INSERT_CARRYING = (
    f"INSERT INTO node_states ({', '.join(_NODE_MAP.columns)}, {COMMIT_COLUMN})"
)
_COMMIT_ONE_SQL = (
    f"WITH node AS ({_INSERT_CARRYING} VALUES ({', '.join('?' for _ in _NODE_MAP.columns)}, ?) "
    "RETURNING id) "
    "UPDATE sessions SET merkle_root = ?, updated_at = now() WHERE session_id = ?"
)
_COMMIT_MANY_SQL = (
    f"{_INSERT_CARRYING} SELECT {', '.join('unnest(?)' for _ in _NODE_MAP.columns)}, unnest(?)"
)

_LOG_ENTRIES_SQL = (
    f"SELECT {', '.join(LogEntry._fields)} FROM merkle_log WHERE session_id = ? ORDER BY seq"
)
"""A session's log, as :class:`LogEntry` values, in ``seq`` order."""


def _readable(entry: LogEntry) -> bool:
    """True if every field of the entry decoded (the view gives NULLs for bytes the store
    did not write)."""
    return None not in entry and entry.kind in COMMIT_KINDS and all(
        len(digest) == merkle.BLAKE3.digest_size
        for digest in (entry.leaf_hash, entry.state_root, entry.log_root)
    )


class SessionLog:
    """Both trees of one session, as of the last commit."""

    def __init__(self) -> None:
        self.log = merkle.MerkleTree()
        self.state = merkle.StateTree()

    @classmethod
    def from_entries(cls, entries: Iterable[Sequence[Any]]) -> SessionLog:
        """Rebuild from stored ``(node_id, kind, leaf_hash)`` rows in ``seq`` order."""
        built = cls()
        for node_id, kind, leaf in entries:
            if kind not in COMMIT_KINDS:
                raise ValueError(f"a log entry of kind {kind!r}")
            built.log.append(leaf)
            built.state.set(node_id, None if kind == "remove" else leaf)
        return built

    def append(self, session_id: str, node_id: str, kind: str, leaf: bytes) -> NodeCommit:
        """Add one commit to both trees and describe it."""
        seq = self.log.append(leaf)
        self.state.set(node_id, None if kind == "remove" else leaf)
        return NodeCommit(
            session_id=session_id,
            seq=seq,
            node_id=node_id,
            kind=kind,
            leaf_hash=leaf,
            state_root=self.state.root(),
            log_root=self.log.root(),
            log_size=self.log.size,
        )


# --- migration: backfill the log of rows written before it existed -------------------------


def backfill(conn: Any, legacy_mark: int | None) -> None:
    """Give every existing node-state row a log entry, in insertion order, per session.

    Rows at or below ``legacy_mark`` are decoded with upstream's encodings first, so their
    leaves hash what the store will read back. A session whose stored ``merkle_root`` is not
    the state root we compute (upstream stored a seal hash there) gets that root recorded as
    an ``upstream`` override, which ``verify_session`` reports as a note.
    """
    mapping = table_map(NodeStateRecord)
    rows = conn.execute(mapping.select(
        "NOT EXISTS (SELECT 1 FROM merkle_log l WHERE l.node_state_id = node_states.id)",
        order_by="id", extra=("id",),
    )[0]).fetchall()
    logs: dict[str, SessionLog] = {}
    commits: list[NodeCommit] = []
    ids: list[int] = []
    for values in rows:
        node_state_id = values[-1]
        legacy = legacy_mark is not None and node_state_id <= legacy_mark
        record = mapping.decode(values[:-1], legacy=legacy)
        log = logs.setdefault(record.session_id, SessionLog())
        kind = "remove" if record.state == REMOVED_STATE else "backfill"
        commits.append(
            log.append(record.session_id, record.node_id, kind, merkle.hash_node_state(record))
        )
        ids.append(node_state_id)
    if commits:
        conn.execute(INSERT_LOG_SQL, log_rows(commits, ids))
    if not logs:
        return
    stored = dict(
        conn.execute(
            "SELECT session_id, merkle_root FROM sessions WHERE session_id IN (SELECT unnest(?))",
            [list(logs)],
        ).fetchall()
    )
    # A NULL root (never set) is recorded too: the session now has commits, and
    # verify_session must not take the missing root for a forged one.
    overrides = [
        (session_id, stored[session_id])
        for session_id, log in logs.items()
        if session_id in stored and stored[session_id] != log.state.root()
    ]
    if overrides:
        conn.execute(
            "INSERT INTO merkle_root_overrides (session_id, merkle_root, source) "
            "SELECT unnest(?), unnest(?), 'upstream'",
            [[sid for sid, _ in overrides], [root for _, root in overrides]],
        )



class LogSizes:
    """Each session's log size as this process's store handles on one database last wrote or
    loaded it, shared by those handles (DuckDB lets one process, and so one set of handles,
    write a file). A handle whose cached log has another size checks the stored log in the
    transaction of its commit: the guard that ``merkle_log``'s primary key gave before the
    log moved onto the node-state rows. Commits that overlap are caught by DuckDB itself:
    each updates the session's row, and the later one fails with a write-write conflict."""

    _by_database: ClassVar[weakref.WeakValueDictionary[str, LogSizes]] = (
        weakref.WeakValueDictionary()
    )
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, *, trust_cache: bool = True) -> None:
        self.trust_cache = trust_cache
        """False where other handles may write without sharing these sizes (an in-memory
        database on a borrowed connection): every commit then checks the stored log."""
        self.lock = threading.RLock()
        """Held from a commit's check of its cached log until it is written (committed, if
        the check needed a transaction)."""
        self.sizes: dict[str, int] = {}

    @classmethod
    def of(cls, database: str | None, *, borrowed: bool) -> LogSizes:
        """The sizes shared by the handles on ``database`` (a file's real path); a new,
        unshared one for an in-memory database (not to be trusted if its connection was
        ``borrowed``: another handle may hold a cursor of it)."""
        if database is None:
            return cls(trust_cache=not borrowed)
        with cls._registry_lock:
            sizes = cls._by_database.get(database)
            if sizes is None:
                sizes = cls._by_database[database] = cls()
            return sizes


class CommitLogMixin(StoreBase):
    """Commits, Merkle roots, proofs, checkpoints, verification and rollback."""

    # --- writing ------------------------------------------------------------------------

    def record_node_state(self, record: NodeStateRecord) -> NodeCommit:
        """Append one snapshot of a node and commit it to the session's Merkle log, in one
        transaction (``sessions.merkle_root`` becomes the new state root).

        In a ``durability="batched"`` store (outside ``transaction()``) the commit is
        computed now and returned, and the row, its log entry and the new root are written
        together by the next group flush (see :mod:`perspt_store.store._groupcommit`).

        Returns:
            The commit: its ``seq``, leaf hash, state root, log root and log size.

        Raises:
            SessionNotFoundError: The session does not exist; nothing was written.
        """
        return self._commit_node_states([(record, "commit")])[0]


    _log_sizes: LogSizes | None = None

    def _shared_log_sizes(self) -> LogSizes:
        """The :class:`LogSizes` of this store's database (looked up once)."""
        if self._log_sizes is None:
            try:  # on this thread's cursor: it commits no buffered rows
                ((path,),) = self._cursor().execute(
                    "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
                ).fetchall()
            except duckdb.Error as exc:
                raise translate_error(exc, table=None, operation="select") from exc
            self._log_sizes = LogSizes.of(
                os.path.realpath(path) if path else None, borrowed=not self._owns_conn
            )
        return self._log_sizes

    def _session_log(self, session_id: str, *, check: bool) -> SessionLog:
        """The session's trees as of the last commit (cached; call under the write lock and
        the shared :class:`LogSizes` lock).

        With ``check``, a cached log is first compared with the database's (one count,
        reloaded if it differs): call it in the transaction of the write it prepares.
        Without, the cache is taken as it is (batched mode: it holds the buffered commits).
        """
        log = self._commit_logs.get(session_id)
        sizes = self._shared_log_sizes().sizes
        if log is not None and check:
            stored = self._scalar(
                "SELECT count(*) FROM merkle_log WHERE session_id = ?",
                [session_id],
                table="merkle_log",
            )
            if stored != log.log.size:
                log = None
        if log is None:
            entries = self._execute(
                "SELECT seq, node_id, kind, leaf_hash FROM merkle_log WHERE session_id = ? "
                "ORDER BY seq",
                [session_id],
                table="merkle_log",
                operation="select",
            )
            try:
                # A gap or a repeated seq: the next commit's seq would be ambiguous.
                for position, (seq, *_) in enumerate(entries):
                    if seq != position:
                        raise ValueError(f"seq {seq} where {position} belongs")
                log = SessionLog.from_entries(entry[1:] for entry in entries)
            except (ValueError, TypeError) as exc:  # an entry the store did not write
                raise IntegrityError(
                    f"the commit log of session {session_id!r} holds an entry the store did "
                    f"not write ({exc}); nothing was written: run verify_session",
                    table="merkle_log",
                    operation="commit",
                ) from exc
            self._commit_logs[session_id] = log
            # Never lowered from a load (this read may be older than another handle's
            # commit): only commits set it (_note_commits).
            sizes.setdefault(session_id, log.log.size)
        return log

    def _logs_may_have_changed(self) -> None:
        with self._lock, self._shared_log_sizes().lock:
            super()._logs_may_have_changed()
            sizes = self._shared_log_sizes().sizes
            for session_id in sizes:  # other handles' cached logs are checked too
                sizes[session_id] = -1

    def _note_commits(self, commits: Iterable[NodeCommit]) -> None:
        """Tell the other handles on this database the sessions' new log sizes."""
        shared = self._shared_log_sizes()
        with shared.lock:
            for commit in commits:
                shared.sizes[commit.session_id] = commit.log_size

    def _commit_node_states(self, items: Sequence[tuple[NodeStateRecord, str]]) -> list[NodeCommit]:
        """Append node-state rows and their commits atomically; one statement per table.

        Args:
            items: ``(record, kind)`` pairs in commit order; kind is commit, restore or remove.
        """
        if not items:
            return []
        if len(items) == 1:
            return [self._commit_one(*items[0])]
        # Locks in the order every commit takes them; the shared one until the COMMIT.
        with self._lock, self._shared_log_sizes().lock, self.transaction():
            records = [record for record, _ in items]
            logs = {
                session_id: self._session_log(session_id, check=True)
                for session_id in {record.session_id for record in records}
            }
            commits = [
                logs[record.session_id].append(
                    record.session_id, record.node_id, kind, merkle.hash_node_state(record)
                )
                for record, kind in items
            ]
            self._persist_commits(list(zip(records, commits, strict=True)))
        return commits

    def _persist_commits(self, items: Sequence[tuple[NodeStateRecord, NodeCommit]]) -> None:
        """Write node-state rows carrying the commits computed for them, in order, and each
        session's new root (inside the caller's transaction: a batch, a rollback or a group
        flush).

        Raises:
            CommitRaceError: A session's stored log is not the one the commits extend
                (another handle on the file committed to it first); nothing was written.
        """
        records = [record for record, _ in items]
        commits = [commit for _, commit in items]
        first: dict[str, int] = {}
        for commit in commits:
            first.setdefault(commit.session_id, commit.seq)
        stored = dict(self._execute(
            "SELECT session_id, count(*) FROM merkle_log WHERE session_id IN (SELECT unnest(?)) "
            "GROUP BY session_id",
            [list(first)], table="merkle_log", operation="select",
        ))
        moved = [sid for sid, seq in first.items() if stored.get(sid, 0) != seq]
        if moved:
            raise CommitRaceError(
                f"another store handle on this file committed to session {moved[0]!r} first "
                "(its log has moved on); nothing of these commits was written",
                table="merkle_log", operation="commit",
            )
        self._write(
            _COMMIT_MANY_SQL,
            [*_NODE_MAP.encode_columns(records), [pack_commit(c) for c in commits]],
            table="node_states",
            session_id=next(iter(first)) if len(first) == 1 else None,
        )
        roots = {c.session_id: c.state_root for c in commits}  # the last one wins
        for session_id, root in roots.items():
            self._write(
                "UPDATE sessions SET merkle_root = ?, updated_at = now() WHERE session_id = ?",
                [root, session_id],
                table="sessions",
                operation="update",
            )
        self._note_commits(commits)

    def _commit_one(self, record: NodeStateRecord, kind: str) -> NodeCommit:
        """:meth:`_commit_node_states` of one record, in one statement."""
        self._check_writable("node_states")
        group = self._group
        if group is not None:
            if group.takes_now():
                return self._buffer_commit(group, record, kind)
            group.drain_pending()  # buffered rows commit first, as before a transaction
        session_id = record.session_id
        leaf = merkle.hash_node_state(record)
        row = _NODE_MAP.encode(record)
        with self._lock:

            def write(check: bool) -> NodeCommit:
                log = self._session_log(session_id, check=check)
                commit = log.append(session_id, record.node_id, kind, leaf)
                params = [*row, pack_commit(commit), commit.state_root, session_id]
                try:
                    self._execute(
                        _COMMIT_ONE_SQL, params, table="node_states", operation="insert",
                        session_id=session_id,
                    )
                except BaseException:
                    self._commit_logs.pop(session_id, None)  # it holds the failed commit
                    raise
                self._note_commits((commit,))
                return commit

            def commit_once() -> NodeCommit:
                sizes = self._shared_log_sizes()
                with sizes.lock:
                    if self.in_transaction:  # a stale log would doom the caller's: check it
                        return write(check=True)
                    cached = self._commit_logs.get(session_id)
                    if (
                        cached is not None
                        and sizes.trust_cache
                        and sizes.sizes.get(session_id) == cached.log.size
                    ):
                        return write(check=False)  # no handle has committed since
                    # Loaded or checked, the log must be the one the write extends: both in
                    # one transaction (a commit another handle makes after its start fails
                    # ours with a write-write conflict on the session's row; we run again).
                    with self.transaction():
                        return write(check=True)

            # Another handle on this file may commit to the session first: reload, retry.
            commit = self._retrying(commit_once, commits=True)
            if not self.in_transaction:
                self._changed()
        return commit

    def _buffer_commit(self, group: GroupCommit, record: NodeStateRecord, kind: str) -> NodeCommit:
        """Batched mode: compute the commit now (seq, leaf, roots) and buffer the row with
        it; the group flush writes row, log entry and root together (a crash loses them
        together, like any buffered row)."""
        session_id = record.session_id
        group.require_session(session_id, "node_states")
        leaf = merkle.hash_node_state(record)
        with self._lock:  # a flush holds it too: it never runs between seq and buffer
            if session_id not in self._commit_logs and group.buffered_commits:
                group.drain()  # the stored log must hold every buffered commit: load it after
            if not group.buffered_commits and session_id in self._commit_logs:
                # Nothing buffered: the stored log is the whole truth. Another handle on the
                # file may have committed since; a stale cache would hand out a taken seq.
                self._drop_stale_log(session_id)
            log = self._session_log(session_id, check=False)
            commit = log.append(session_id, record.node_id, kind, leaf)
            try:
                group.add(BufferedCommit(record, commit))
            except BaseException:
                self._commit_logs.pop(session_id, None)  # it holds a commit not buffered
                raise
        return commit

    def _drop_stale_log(self, session_id: str) -> None:
        """Forget the cached log if the stored one has another size (one count, on this
        thread's cursor: it commits no buffered rows)."""
        try:
            ((stored,),) = (
                self._cursor()
                .execute("SELECT count(*) FROM merkle_log WHERE session_id = ?", [session_id])
                .fetchall()
            )
        except duckdb.Error as exc:
            raise translate_error(exc, table="merkle_log", operation="select") from exc
        if stored != self._commit_logs[session_id].log.size:
            self._commit_logs.pop(session_id, None)

    # --- reading ------------------------------------------------------------------------

    def _log_entries(self, session_id: str, *, readable: bool = True) -> list[LogEntry]:
        """The session's log entries in ``seq`` order.

        Raises:
            SessionNotFoundError: No such session.
            IntegrityError: With ``readable`` (every caller but ``verify_session``, which
                reports it): an entry cannot be read (written by hand, not by the store).
        """
        if not self._session_exists(session_id):
            raise SessionNotFoundError(session_id, table="merkle_log")
        rows = self._execute(_LOG_ENTRIES_SQL, [session_id], table="merkle_log", operation="select")
        entries = [LogEntry._make(row) for row in rows]
        if readable:
            for entry in entries:
                if not _readable(entry):
                    raise IntegrityError(
                        f"the commit log of session {session_id!r} holds an entry the store "
                        f"did not write (carried by node state {entry.node_state_id}); run "
                        "verify_session",
                        table="merkle_log",
                        operation="select",
                    )
        return entries

    def _log_tree(self, session_id: str) -> merkle.MerkleTree:
        return merkle.MerkleTree(entry.leaf_hash for entry in self._log_entries(session_id))

    @consistent
    def get_commit_log(self, session_id: str) -> list[NodeCommit]:
        """Every commit of the session, in ``seq`` order.

        Raises:
            SessionNotFoundError: No such session.
        """
        return [entry.commit(session_id) for entry in self._log_entries(session_id)]

    @consistent
    def state_root(self, session_id: str) -> bytes:
        """The tree hash over the latest state of every node (ordered by node id); the
        empty-tree hash before the first commit.

        Raises:
            SessionNotFoundError: No such session.
        """
        entries = self._log_entries(session_id)
        return entries[-1].state_root if entries else merkle.empty_root()

    @consistent
    def log_root(self, session_id: str, size: int | None = None) -> bytes:
        """The root of the session's commit log over its first ``size`` commits (all if None).

        Raises:
            SessionNotFoundError: No such session.
            ValueError: ``size`` is negative or larger than the log.
        """
        return self._log_tree(session_id).root(size)

    @consistent
    def inclusion_proof(self, session_id: str, seq: int, size: int | None = None) -> InclusionProof:
        """Prove that commit ``seq`` is in the log of ``size`` commits (default: all).

        Raises:
            SessionNotFoundError: No such session.
            ValueError: ``seq`` or ``size`` is out of range.
        """
        return InclusionProof.of(session_id, self._log_tree(session_id), seq, size)

    @consistent
    def consistency_proof(
        self, session_id: str, old_size: int, new_size: int | None = None
    ) -> ConsistencyProof:
        """Prove that the log at ``new_size`` (default: now) extends the log at ``old_size``.

        Raises:
            SessionNotFoundError: No such session.
            ValueError: The sizes are out of range or ``old_size > new_size``.
        """
        return ConsistencyProof.of(session_id, self._log_tree(session_id), old_size, new_size)

    @consistent
    def checkpoint(self, session_id: str, *, key: bytes | None = None) -> Checkpoint:
        """A JSON-serialisable checkpoint of the session's log, MAC'd if ``key`` is given.

        Keep it outside the database: ``verify_session(session_id, against=checkpoint)``
        then proves that the log still extends it.

        Raises:
            SessionNotFoundError: No such session.
            ValueError: ``key`` is not 32 bytes.
        """
        entries = self._log_entries(session_id)
        tree = merkle.MerkleTree(entry.leaf_hash for entry in entries)
        checkpoint = Checkpoint(
            scheme=CHECKPOINT_SCHEME,
            session_id=session_id,
            size=tree.size,
            log_root=tree.root(),
            state_root=entries[-1].state_root if entries else merkle.empty_root(),
            time=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        )
        if key is not None:
            if len(key) != 32:
                raise ValueError("a checkpoint key must be 32 bytes")
            checkpoint = checkpoint.sign(key)
        return checkpoint

    # --- verification -------------------------------------------------------------------

    @consistent
    def verify_session(
        self, session_id: str, against: Checkpoint | None = None, *, key: bytes | None = None
    ) -> VerificationReport:
        """Recompute every leaf and root of the session from its stored rows and report
        precisely what differs.

        Detects node states edited, deleted, inserted or reordered behind the store's back,
        forged log entries, a ``merkle_root`` that no longer matches (a value set through
        ``update_merkle_root`` or carried over from upstream is a note, not a problem) and,
        with ``against``, a log that no longer extends that checkpoint (and, with ``key``, a
        checkpoint whose MAC does not match, or that has none).

        Raises:
            SessionNotFoundError: No such session.
            ValueError: ``key`` is not 32 bytes.
        """
        if key is not None and len(key) != 32:
            raise ValueError(f"a checkpoint key must be 32 bytes, not {len(key)}")
        entries = self._log_entries(session_id, readable=False)
        rows = {
            row.id: row
            for row in self._select(NodeStateRecord, "session_id = ?", [session_id], order_by="id")
        }
        problems: list[Problem] = []
        notes: list[str] = []
        # From the rows as they are now: the log, and each node's latest leaf (the state
        # root is computed once, at the end).
        log_tree = merkle.MerkleTree()
        latest: dict[str, bytes | None] = {}
        stored = merkle.MerkleTree()
        stored_state = merkle.StateTree()
        last_row_id = -1
        expected_seq = 0  # the seq that follows the entries seen so far
        for entry in entries:
            seq, row_id, node_id, kind, leaf, state_root, log_root = entry
            if not _readable(entry):
                problems.append(
                    Problem(
                        kind="forged",
                        node_id=node_id,
                        detail=f"node state {row_id} carries a log entry the store did not "
                        "write (it cannot be read)",
                    )
                )
                rows.pop(row_id, None)
                continue
            if seq > expected_seq:
                problems.append(
                    Problem(
                        kind="deleted",
                        seq=expected_seq,
                        detail=f"log entries {expected_seq}..{seq - 1} are missing",
                    )
                )
            elif seq < expected_seq:
                problems.append(
                    Problem(
                        kind="forged",
                        seq=seq,
                        node_id=node_id,
                        detail=f"log entry {seq} appears more than once",
                    )
                )
            expected_seq = max(expected_seq, seq + 1)
            row = rows.pop(row_id, None)
            if row_id <= last_row_id:
                problems.append(
                    Problem(
                        kind="reordered",
                        seq=seq,
                        node_id=node_id,
                        detail=f"node state {row_id} is out of insertion order",
                    )
                )
            last_row_id = max(last_row_id, row_id)
            if row is None:
                problems.append(
                    Problem(
                        kind="deleted",
                        seq=seq,
                        node_id=node_id,
                        detail=f"node state {row_id} committed at seq {seq} is gone",
                    )
                )
                actual_leaf = leaf
            else:
                actual_leaf = merkle.hash_node_state(row)
                if actual_leaf != leaf or row.node_id != node_id:
                    problems.append(
                        Problem(
                            kind="edited",
                            seq=seq,
                            node_id=node_id,
                            detail=f"node state {row_id} no longer hashes to its committed leaf",
                        )
                    )
            log_tree.append(actual_leaf)
            latest[node_id] = None if kind == "remove" else actual_leaf
            stored.append(leaf)
            stored_state.set(node_id, None if kind == "remove" else leaf)
            if stored.root() != log_root or stored_state.root() != state_root:
                problems.append(
                    Problem(
                        kind="forged",
                        seq=seq,
                        node_id=node_id,
                        detail="the entry's roots do not follow from the log",
                    )
                )
        for stray in rows.values():
            problems.append(
                Problem(
                    kind="inserted",
                    node_id=stray.node_id,
                    detail=f"node state {stray.id} was never committed",
                )
            )
        state_root = merkle.tree_root(
            [leaf for _, leaf in sorted(latest.items()) if leaf is not None]
        )
        self._check_merkle_root(session_id, state_root, len(entries), problems, notes)
        if against is not None:
            self._check_against(session_id, log_tree, against, key, problems, notes)
        return VerificationReport(
            session_id=session_id,
            log_size=log_tree.size,
            log_root=log_tree.root(),
            state_root=state_root,
            problems=problems,
            notes=notes,
        )

    def _check_merkle_root(
        self,
        session_id: str,
        state_root: bytes,
        log_size: int,
        problems: list[Problem],
        notes: list[str],
    ) -> None:
        stored = self._scalar(
            "SELECT merkle_root FROM sessions WHERE session_id = ?",
            [session_id],
            table="sessions",
        )
        if stored == state_root or (stored is None and not log_size):
            return
        override = self._execute(
            "SELECT merkle_root, source, log_size FROM merkle_root_overrides "
            "WHERE session_id = ? ORDER BY id DESC LIMIT 1",
            [session_id],
            table="merkle_root_overrides",
            operation="select",
        )
        # Only the override that is current excuses the root: set after the last commit
        # (a commit since would have set the state root).
        if override and override[0][0] == stored and override[0][2] in (None, log_size):
            how = "update_merkle_root" if override[0][1] == "update_merkle_root" else "upstream"
            notes.append(
                f"sessions.merkle_root was set by {how}, not by a commit; the state root is "
                f"{state_root.hex()}"
            )
            return
        problems.append(
            Problem(
                kind="root-mismatch",
                detail="sessions.merkle_root is neither the state root nor a recorded override",
            )
        )

    @staticmethod
    def _check_against(
        session_id: str,
        log: merkle.MerkleTree,
        against: Checkpoint,
        key: bytes | None,
        problems: list[Problem],
        notes: list[str],
    ) -> None:
        if against.session_id != session_id:
            problems.append(
                Problem(
                    kind="checkpoint",
                    detail=f"the checkpoint is of session {against.session_id!r}, "
                    f"not {session_id!r}",
                )
            )
            return
        if key is not None and against.mac is None:
            detail = "the checkpoint has no MAC to check the key against"
            problems.append(Problem(kind="checkpoint", detail=detail))
        elif key is not None and not against.verify_mac(key):
            problems.append(Problem(kind="checkpoint", detail="the checkpoint's MAC is wrong"))
        elif key is None and against.mac is not None:
            notes.append("the checkpoint's MAC was not checked: no key was given")
        if against.size > log.size:
            problems.append(
                Problem(
                    kind="checkpoint",
                    detail=f"the log has {log.size} commits, fewer than the "
                    f"checkpoint's {against.size}",
                )
            )
            return
        proof = log.consistency_proof(against.size, log.size)
        if not merkle.verify_consistency(
            against.size, log.size, against.log_root, log.root(), proof
        ):
            problems.append(
                Problem(
                    kind="checkpoint",
                    detail=f"the log no longer extends the checkpoint at size {against.size}",
                )
            )

    # --- rollback -----------------------------------------------------------------------

    def rollback(
        self, session_id: str, *, to_seq: int | None = None, to_root: bytes | None = None
    ) -> NodeCommit:
        """Restore the node states as of commit ``to_seq`` (or of the last commit whose state
        root is ``to_root``) by appending commits; nothing is deleted.

        Nodes that differ get a ``restore`` commit (a copy of their row at the target);
        nodes the target did not have get a ``remove`` commit (a tombstone row). Afterwards
        ``state_root(session_id)`` equals the target's state root and
        ``get_latest_node_states`` returns the target's states.

        Returns:
            The last commit appended (the current head if nothing differed).

        Raises:
            ValueError: Neither or both of ``to_seq`` and ``to_root`` were given.
            RecordNotFoundError: No such commit or root in the session; nothing changed.
        """
        if (to_seq is None) == (to_root is None):
            raise ValueError("give exactly one of to_seq and to_root")

        def restore() -> tuple[list[NodeCommit], list[LogEntry]]:
            with self.transaction():
                entries = self._log_entries(session_id)
                changes = self._rollback_changes(session_id, entries, to_seq, to_root)
                commits = self._commit_node_states([(c.record, c.kind) for c in changes])
            return commits, entries

        # A whole transaction: if another handle commits to the session meanwhile, it runs
        # again against the log as it is then.
        commits, entries = self._retrying(restore, commits=True)
        if commits:
            return commits[-1]
        return entries[-1].commit(session_id)

    @consistent
    def rollback_plan(
        self, session_id: str, *, to_seq: int | None = None, to_root: bytes | None = None
    ) -> list[RollbackChange]:
        """What :meth:`rollback` with the same arguments would append now, without writing:
        one :class:`RollbackChange` per node that differs, in ``node_id`` order (empty when
        the session is already at the target).

        Raises:
            ValueError: Neither or both of ``to_seq`` and ``to_root`` were given.
            RecordNotFoundError: No such commit or root in the session.
        """
        if (to_seq is None) == (to_root is None):
            raise ValueError("give exactly one of to_seq and to_root")
        entries = self._log_entries(session_id)
        return self._rollback_changes(session_id, entries, to_seq, to_root)

    def _rollback_changes(
        self,
        session_id: str,
        entries: list[LogEntry],
        to_seq: int | None,
        to_root: bytes | None,
    ) -> list[RollbackChange]:
        """The restore and remove commits that bring the log's head back to the target."""
        target = self._rollback_target(session_id, entries, to_seq, to_root)
        latest: dict[str, tuple[int, str]] = {}
        for entry in entries[: target + 1]:
            latest[entry.node_id] = (entry.node_state_id, entry.kind)
        wanted = [row_id for row_id, kind in latest.values() if kind != "remove"]
        restored = {
            row.node_id: row
            for row in self._select(
                NodeStateRecord,
                f"id IN ({', '.join('?' for _ in wanted)})" if wanted else "false",
                wanted,
                order_by="id",
            )
        }
        # The head's leaves from the same entries (the caller's snapshot), never from the
        # cached log: rollback_plan is a read on any thread, and the cache may hold commits
        # a batched store has not flushed yet (reloading it here rewound a writer's seqs).
        current: dict[str, bytes] = {}
        for entry in entries:
            if entry.kind == "remove":
                current.pop(entry.node_id, None)
            else:
                current[entry.node_id] = entry.leaf_hash
        changes: list[RollbackChange] = []
        for node_id in sorted(set(restored) | set(current)):
            row = restored.get(node_id)
            if row is None:
                tombstone = NodeStateRecord(
                    node_id=node_id, session_id=session_id, state=REMOVED_STATE
                )
                changes.append(RollbackChange(node_id, "remove", tombstone))
            elif current.get(node_id) != merkle.hash_node_state(row):
                changes.append(RollbackChange(node_id, "restore", row))
        return changes

    @staticmethod
    def _rollback_target(
        session_id: str,
        entries: list[LogEntry],
        to_seq: int | None,
        to_root: bytes | None,
    ) -> int:
        if to_seq is not None:
            if not 0 <= to_seq < len(entries):
                raise RecordNotFoundError(
                    f"session {session_id!r} has no commit {to_seq} (its log has "
                    f"{len(entries)} commits, seq 0..{len(entries) - 1}); nothing changed",
                    table="merkle_log",
                    operation="rollback",
                )
            return to_seq
        matches = [entry.seq for entry in entries if entry.state_root == to_root]
        if not matches:
            shown = to_root.hex() if isinstance(to_root, bytes) else repr(to_root)
            raise RecordNotFoundError(
                f"no commit of session {session_id!r} has state root {shown}; nothing changed",
                table="merkle_log",
                operation="rollback",
            )
        return matches[-1]


__all__ = [
    "CHECKPOINT_SCHEME",
    "COMMIT_KINDS",
    "REMOVED_STATE",
    "Checkpoint",
    "CommitLogMixin",
    "ConsistencyProof",
    "InclusionProof",
    "LogEntry",
    "NodeCommit",
    "Problem",
    "RollbackChange",
    "VerificationReport",
]

"""How the store connects to DuckDB: one place for the engine settings every connection gets.

DuckDB installs and loads "known" extensions on its own when a statement or a file needs
one: opening a SQLite file makes it download ``sqlite_scanner``. The store never wants
that: it reads and writes DuckDB files only, and must never reach for the network, so
every connection it opens turns both off (a user can still ``INSTALL`` and ``LOAD`` an
extension explicitly on the store's connection).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

NO_AUTO_EXTENSIONS: dict[str, bool] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}
"""The settings every connection the store opens starts with."""

DUCKDB_MAGIC = b"DUCK"
"""DuckDB's main header: an 8-byte checksum, then these four bytes."""

_KNOWN_FORMATS = (
    (b"SQLite format 3\x00", "a SQLite database"),
    (b"PAR1", "a Parquet file"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip file"),
)


UPSTREAM_STORAGE = "v1.5.0"
"""The DuckDB storage format new files are created in: the one upstream's engine reads."""
BLOCK_SIZE = 16384
"""The block size of new files (the store's and its snapshots): with DuckDB's default,
256 KiB, every table and index claims whole blocks and a small store is ten times bigger."""
NEW_FILE_CONFIG: dict[str, str | bool | int] = {
    "storage_compatibility_version": UPSTREAM_STORAGE,
    "default_block_size": BLOCK_SIZE,
}
"""``connect`` options that create a new file in that format and block size."""
NEW_FILE_ATTACH = f"(STORAGE_VERSION '{UPSTREAM_STORAGE}', BLOCK_SIZE {BLOCK_SIZE})"
"""The same, as ``ATTACH`` options."""


def connect(
    database: str | Path,
    *,
    read_only: bool = False,
    new_file: bool = False,
    **config: str | bool | int,
) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect`` with extension auto-install and auto-load turned off; with
    ``new_file``, a file that does not exist yet is created with :data:`NEW_FILE_CONFIG`.

    A file path is passed as an absolute path, so a name such as ``md:x`` or
    ``sqlite:x.db`` is a file name, never a DuckDB database-type prefix.
    """
    target = database if isinstance(database, str) else str(Path(database).absolute())
    settings: dict[str, str | bool | int | float | list[str]] = {**NO_AUTO_EXTENSIONS, **config}
    if new_file:
        settings.update(NEW_FILE_CONFIG)
    try:
        return duckdb.connect(target, read_only=read_only, config=settings)
    except duckdb.CatalogException as exc:
        if read_only or not needs_core_functions(exc):
            raise
        replay_wal_with_core_functions(target)
        return duckdb.connect(target, read_only=read_only, config=settings)


def needs_core_functions(exc: duckdb.Error) -> bool:
    """True if opening a file failed because replaying its WAL needs ``core_functions``."""
    message = str(exc)
    return "replaying WAL" in message and "core_functions" in message


def replay_wal_with_core_functions(path: str) -> None:
    """Replay ``path``'s write-ahead log into the file with DuckDB's ``core_functions``
    loaded, then checkpoint it.

    Replaying some DDL (a dropped table with a foreign key rebinds the table it references,
    defaults such as ``CURRENT_TIMESTAMP`` included) needs functions of that extension, and
    with auto-loading off nothing has loaded it yet when a file is opened, so a process
    killed between such a commit and its checkpoint leaves a file DuckDB will not open.
    ``core_functions`` is built into DuckDB (nothing is downloaded): load it explicitly on
    an in-memory connection, attach the file there (the replay), and checkpoint.
    """
    conn = duckdb.connect(":memory:", config=dict(NO_AUTO_EXTENSIONS))
    try:
        conn.execute("LOAD core_functions")
        conn.execute("ATTACH ? AS perspt_replay", [path])
        conn.execute("CHECKPOINT perspt_replay")
        conn.execute("DETACH perspt_replay")
    finally:
        conn.close()


def not_duckdb(header: bytes) -> str | None:
    """Why a file starting with ``header`` (its first 16 bytes or fewer) is no DuckDB
    database, in words (``"it is a SQLite database"``); None if it may be one."""
    if header[8:12] == DUCKDB_MAGIC:
        return None
    if not header:
        return "it is empty"
    for magic, kind in _KNOWN_FORMATS:
        if header.startswith(magic):
            return f"it is {kind}"
    if len(header) < 12:
        return f"it holds only {len(header)} bytes"
    return "it has no DuckDB header"


def os_reason(exc: OSError) -> str:
    """An OS error in a few lowercase words: ``permission denied``, ``not a directory``."""
    reason = exc.strerror or str(exc)
    return reason[:1].lower() + reason[1:]


def check_database_file(path: Path, *, create: bool) -> bool:
    """Look at ``path`` before DuckDB does, and say in words why it cannot be a database.

    Nothing is created or changed. A file whose first bytes cannot be read is left for
    DuckDB to try (on some systems another process's lock refuses reads).

    Args:
        path: The database file.
        create: The caller would create the file if it is missing (says "create").

    Returns:
        True if the file exists (and may be a DuckDB database), False if it is missing.

    Raises:
        StoreError: ``path`` is not valid UTF-8 (DuckDB cannot take it), is a directory,
            lies under a regular file, cannot be looked at, or is a file that is no DuckDB
            database (a SQLite database, a Parquet file,
            an empty file, ...).
    """
    from .errors import StoreError

    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise StoreError(
            f"cannot open {path}: DuckDB takes only file names that are valid UTF-8",
            operation="open",
        ) from exc
    try:
        if path.is_dir():
            raise StoreError(f"{path} is a directory, not a database file", operation="open")
        if not path.exists():
            blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
            if blocker is not None:
                raise StoreError(
                    f"cannot {'create' if create else 'open'} {path}: {blocker} is not a directory",
                    operation="open",
                )
            return False
        if not path.is_file():  # a FIFO would block the header read below, forever
            raise StoreError(
                f"{path} is not a regular file, so not a database file", operation="open"
            )
    except OSError as exc:
        raise StoreError(f"cannot open {path}: {os_reason(exc)}", operation="open") from exc
    try:
        with path.open("rb") as file:
            header = file.read(16)
    except OSError:
        return True
    why = not_duckdb(header)
    if why is not None:
        raise StoreError(f"{path} is not a DuckDB database ({why})", operation="open")
    return True

"""Tables as DuckDB relations, for notebooks: filter by session and node, convert to pandas,
Polars or Arrow.

Every ``*_frame`` method returns a DuckDB relation (lazy: nothing runs until you read it) on
the calling thread's cursor, so use it in the thread that made it. Read it with
``.fetchall()``, or convert it with ``.df()`` (pandas), ``.pl()`` (Polars) or
``.to_arrow_table()`` (pyarrow); those libraries are optional (``pip install
'perspt-store[frames]'``) and only imported when you convert. :func:`convert` does the same
with an install hint when the library is missing.

Rows come in insertion order. Values are the stored ones, except that rows written by
upstream perspt-store (Rust) into a migrated file are decoded as the row models decode them
(hex-text hashes become bytes, ``''`` placeholders become NULL), so a frame and a ``get_*``
call agree. List fields stay JSON text, as stored.

Example:
    >>> import perspt_store as ps
    >>> with ps.SessionStore.in_memory() as store:
    ...     store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
    ...     store.record_energy(ps.EnergyRecord(session_id="s", node_id="n", v_total=0.5))
    ...     store.energy_frame("s").fetchall()[0][3:]  # attempt, v_syn .. v_total
    (1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5)
"""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING, Any, Literal

import duckdb

from ._mapping import star
from .commitlog import REMOVED_STATE
from .rows import ROW_MODELS
from .schema import TABLES

if TYPE_CHECKING:
    from .store._base import StoreBase as _StoreBase
else:  # SessionStore supplies StoreBase; importing it here would be circular
    _StoreBase = object

__all__ = [
    "FRAME_TABLES",
    "INSTALL_HINT",
    "FramesMixin",
    "convert",
]

FRAME_TABLES: tuple[str, ...] = (*TABLES, "merkle_log")
"""The tables :meth:`FramesMixin.frame` reads: upstream's 23 and the Merkle commit log."""

INSTALL_HINT = "pip install 'perspt-store[frames]'"
"""How to install pandas, Polars and pyarrow for :func:`convert`."""

Target = Literal["relation", "pandas", "polars", "arrow"]

_LIBRARIES = {"pandas": "pandas", "polars": "polars", "arrow": "pyarrow"}

# Tables with a node_id column (frame(node_id=...) filters them).
_NODE_TABLES = frozenset(
    {table for table, model in ROW_MODELS.items() if "node_id" in model.model_fields}
    | {"merkle_log"}
)


def _require(library: str) -> None:
    """Import ``library`` or raise ModuleNotFoundError with the install hint."""
    try:
        importlib.import_module(library)
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"converting a frame to {library} needs {library}: {INSTALL_HINT}",
            name=library,
        ) from exc


def convert(relation: duckdb.DuckDBPyRelation, to: Target = "relation") -> Any:
    """Run ``relation`` and return its rows as a pandas DataFrame, a Polars DataFrame or a
    pyarrow Table (``to="relation"`` returns it unchanged).

    Raises:
        ModuleNotFoundError: The library is not installed (the message says how to install
            it: ``pip install 'perspt-store[frames]'``).
        ValueError: ``to`` is not one of relation, pandas, polars, arrow.
    """
    if to == "relation":
        return relation
    library = _LIBRARIES.get(to)
    if library is None:
        raise ValueError(f"to must be one of relation, pandas, polars, arrow; not {to!r}")
    _require(library)
    if to == "pandas":
        return relation.df()
    if to == "polars":
        return relation.pl()
    to_table = getattr(relation, "to_arrow_table", None)  # duckdb >= 1.4; .arrow() before
    return to_table() if to_table is not None else relation.arrow()


def check_table(table: str) -> str:
    """``table`` if :meth:`FramesMixin.frame` can read it, else ValueError naming the choices."""
    if table in FRAME_TABLES:
        return table
    hint = difflib.get_close_matches(str(table), FRAME_TABLES, n=1)
    suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
    raise ValueError(
        f"no table {table!r}{suggestion} (tables: {', '.join(FRAME_TABLES)})"
    )


class FramesMixin(_StoreBase):
    """DuckDB relations over the tables, for notebooks (``frame`` and per-topic helpers)."""

    def _frame(
        self,
        table: str,
        select: str,
        session_id: str | None,
        node_id: str | None,
        *,
        qualify: str = "",
        to: Target = "relation",
    ) -> Any:
        """``SELECT select FROM table`` (upstream's rows decoded, an ``_order`` column added),
        filtered, in insertion order."""
        from .store.internals import internals  # store/ imports this module: not at the top

        inside = internals(self)
        selected = star(table, inside.legacy_marks, self.schema_version)
        source = f"(SELECT {selected}, {inside.order_column(table)} AS _order FROM {table})"
        where: list[str] = []
        params: list[Any] = []
        if session_id is not None:
            where.append("session_id = ?")
            params.append(session_id)
        if node_id is not None:
            if table not in _NODE_TABLES:
                raise ValueError(f"table {table!r} has no node_id column to filter on")
            where.append("node_id = ?")
            params.append(node_id)
        sql = f"SELECT {select} FROM {source} t"
        if where:
            sql += " WHERE " + " AND ".join(where)
        if qualify:
            sql += f" QUALIFY {qualify}"
        sql += " ORDER BY _order"
        return convert(self.sql(sql, params or None), to)

    def frame(
        self,
        table: str,
        session_id: str | None = None,
        node_id: str | None = None,
        *,
        to: Target = "relation",
    ) -> Any:
        """Every column of ``table``, optionally one session's (and one node's) rows, in
        insertion order.

        Args:
            table: One of :data:`FRAME_TABLES` (upstream's 23 tables and ``merkle_log``).
            session_id: Only this session's rows (``branch_lineage`` rows without a session
                are then left out).
            node_id: Only this node's rows (tables with a ``node_id`` column).
            to: ``"relation"`` (default), or ``"pandas"``, ``"polars"``, ``"arrow"`` to get
                the rows converted (see :func:`convert`).

        Returns:
            A DuckDB relation on this thread's cursor (or the converted rows).

        Raises:
            ValueError: ``table`` is not one of :data:`FRAME_TABLES`, or it has no
                ``node_id`` column and ``node_id`` was given.
        """
        return self._frame(check_table(table), _ALL, session_id, node_id, to=to)

    def energy_frame(
        self, session_id: str | None = None, node_id: str | None = None, *, to: Target = "relation"
    ) -> Any:
        """Energy measurements with their attempt number (1, 2, … per session and node).

        Columns: ``id, session_id, node_id, attempt, v_syn, v_str, v_log, v_boot, v_sheaf,
        v_total, timestamp``, in insertion order.
        """
        select = (
            "id, session_id, node_id, "
            "row_number() OVER (PARTITION BY session_id, node_id ORDER BY id) AS attempt, "
            "v_syn, v_str, v_log, v_boot, v_sheaf, v_total, timestamp"
        )
        return self._frame("energy_history", select, session_id, node_id, to=to)

    def llm_frame(
        self,
        session_id: str | None = None,
        node_id: str | None = None,
        *,
        text: bool = False,
        to: Target = "relation",
    ) -> Any:
        """LLM requests with their sizes; the prompt and response texts only if ``text``.

        Columns: ``id, session_id, node_id, model, tokens_in, tokens_out, latency_ms,
        prompt_chars, response_chars, timestamp`` (then ``prompt, response`` with ``text``),
        in insertion order. ``prompt_chars``/``response_chars`` are the texts' lengths.
        """
        select = (
            "id, session_id, node_id, model, tokens_in, tokens_out, latency_ms, "
            "length(prompt) AS prompt_chars, length(response) AS response_chars, timestamp"
        )
        if text:
            select += ", prompt, response"
        return self._frame("llm_requests", select, session_id, node_id, to=to)

    def node_states_frame(
        self,
        session_id: str | None = None,
        node_id: str | None = None,
        *,
        latest: bool = True,
        to: Target = "relation",
    ) -> Any:
        """Node snapshots (every column): the latest of each node (default), or every one.

        With ``latest`` (as ``get_latest_node_states``), one row per session and node, the
        last recorded, ordered by when it was recorded; nodes removed by a rollback are left
        out. Without it, every snapshot in insertion order (rollback tombstones included).
        """
        qualify = (
            "row_number() OVER (PARTITION BY session_id, node_id ORDER BY id DESC) = 1 "
            f"AND state <> {_literal(REMOVED_STATE)}"
            if latest
            else ""
        )
        return self._frame("node_states", _ALL, session_id, node_id, qualify=qualify, to=to)

    def steps_frame(
        self, session_id: str | None = None, node_id: str | None = None, *, to: Target = "relation"
    ) -> Any:
        """SRBN step records (every column), in insertion order."""
        return self._frame("srbn_step_records", _ALL, session_id, node_id, to=to)


_ALL = "* EXCLUDE (_order)"


def _literal(text: str) -> str:
    """A SQL string literal (for values that must be inlined, never table names)."""
    return "'" + text.replace("'", "''") + "'"

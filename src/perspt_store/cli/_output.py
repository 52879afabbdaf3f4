"""Everything the command line prints: tables, JSON documents and JSON lines.

The one owner of output formats. Commands hand it plain rows (dicts) or documents; it turns
values into JSON (:func:`jsonable`) or table cells (:func:`cell`), and lays tables out for
the terminal: on a narrow one, long text is cut with an ellipsis before any id is (ids are
what a user copies into the next command), and columns a command marks optional are left out
when even that does not fit.

Times: the database stores naive UTC; everything printed is marked as UTC the same way, ISO-8601
with ``Z`` (``2026-01-02T03:04:05Z`` in JSON, ``2026-01-02 03:04:05Z`` in tables), as in
checkpoints.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import click
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from .._display import short_hash, shorten
from .._shaping import iso_time, jsonable

Format = Literal["table", "json", "nl"]

NONE = "—"
TEXT_LIMIT = 72
"""The most characters of one text value a table cell holds (the rest is in --json)."""

ID_COLUMNS = frozenset(
    {"session_id", "node_id", "parent_node_id", "child_node_id", "branch_id", "flush_id",
     "revision_id", "table", "seq", "id"}
)
"""Columns whose values a user copies into the next command: never wrapped nor cut."""

ID_LIST_COLUMNS = frozenset({"flushed_branch_ids", "requeue_node_ids"})
"""Columns holding lists of ids: wrapped between the ids, never cut."""


# --- values -------------------------------------------------------------------------------


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    return f"{count} {noun if count == 1 else plural_form or noun + 's'}"


def cell(value: Any, *, fold: bool = False) -> Text:
    """One table cell: never parsed as rich markup; long text shortened, and cut with an
    ellipsis (on one line) when its column is narrowed; ``fold``: kept whole (ids), wrapped
    if its column is narrower."""
    if value is None:
        return Text(NONE, style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, float):
        return Text(f"{value:.6g}")
    if isinstance(value, (bytes, bytearray)):
        return Text(short_hash(bytes(value)), no_wrap=True, overflow="ellipsis")
    if isinstance(value, _dt.datetime):  # to the second: --json has the rest
        return Text(iso_time(value.replace(microsecond=0), sep=" "))
    if isinstance(value, uuid.UUID):
        value = str(value)
    if isinstance(value, (list, tuple)):
        value = ", ".join(str(v) for v in value)
    text = " ".join(str(value).split())
    if fold:
        return Text(text, overflow="fold")
    return Text(shorten(text, TEXT_LIMIT), no_wrap=True, overflow="ellipsis")


# --- printing -----------------------------------------------------------------------------


def console() -> Console:
    """A console on stdout (plain text, no colour, when stdout is not a terminal)."""
    return Console(highlight=False)


def print_renderables(*renderables: Any, out: Console | None = None) -> None:
    """Print rich renderables on stdout. On a terminal (or with ``$COLUMNS``) they fit its
    width; piped, they keep their natural width (rich would otherwise squeeze them into 80
    columns)."""
    out = out or console()
    if out.is_terminal:
        for renderable in renderables:
            out.print(renderable)
        return
    if "COLUMNS" not in os.environ:
        unbounded = out.options.update(max_width=10_000)
        out.width = max(
            [out.width, *(Measurement.get(out, unbounded, r).maximum for r in renderables)]
        )
    with out.capture() as captured:
        for renderable in renderables:
            out.print(renderable)
    # rich pads every cell to its column's width; trailing blanks only get in the way
    # of grep, diff and copy-paste.
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


def _json(value: Any, *, one_line: bool) -> str:
    return json.dumps(jsonable(value), ensure_ascii=False, indent=None if one_line else 2)


def emit_json(document: Any, fmt: Format) -> None:
    """Print one JSON document: indented for ``json``, one compact line for ``nl``."""
    click.echo(_json(document, one_line=fmt == "nl"))


@dataclass(frozen=True)
class Column:
    """A table column: the row key it shows, its header, and whether it may be left out on
    a terminal too narrow for every column: ``drop`` 0 never; otherwise the highest goes
    first (ties: the rightmost)."""

    key: str
    header: str | None = None
    drop: int = 0
    number: bool = False
    """Its values are numbers formatted as text: right-aligned and never cut, as numbers."""


ColumnSpec = str | tuple[str, str] | Column


def _column(spec: ColumnSpec) -> Column:
    if isinstance(spec, Column):
        return spec
    if isinstance(spec, tuple):
        return Column(spec[0], spec[1])
    return Column(spec)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool)


def _kept_whole(column: Column, rows: Sequence[dict[str, Any]]) -> bool:
    """Whether a column's values are never wrapped nor cut: ids, times and numbers (a cut
    time or number reads as a different one)."""
    values = [row.get(column.key) for row in rows if row.get(column.key) is not None]
    return (
        column.key in ID_COLUMNS
        or column.number
        or any(isinstance(v, _dt.datetime) for v in values)
        or (bool(values) and all(_is_number(v) for v in values))
    )


def _narrowest(column: Column, rows: Sequence[dict[str, Any]]) -> int:
    """The fewest characters a column can be given: its longest value if kept whole, its
    longest id for a list of ids, else a few characters (the rest cut)."""
    texts = [cell(row.get(column.key), fold=True).plain for row in rows]
    if column.key in ID_LIST_COLUMNS:
        texts = [part for t in texts for part in t.split(", ")]
    longest = max([len(t) for t in texts] + [len(column.header or column.key)])
    if _kept_whole(column, rows) or column.key in ID_LIST_COLUMNS:
        return longest
    return min(longest, _NARROWEST)


def rows_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[ColumnSpec],
    *,
    title: str | None = None,
    caption: str | None = None,
) -> Table:
    """``rows`` as a rich table: numbers right-aligned, id columns kept whole."""
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    whole = [_kept_whole(c, rows) for c in map(_column, columns)]
    for column, keep in zip(map(_column, columns), whole, strict=True):
        values = [row.get(column.key) for row in rows if row.get(column.key) is not None]
        numeric = bool(values) and all(_is_number(v) for v in values)
        table.add_column(
            column.header or column.key,
            justify="right" if numeric or column.number else "left",
            no_wrap=keep,
        )
    for row in rows:
        table.add_row(
            *(
                cell(row.get(c.key), fold=keep or c.key in ID_LIST_COLUMNS)
                for c, keep in zip(map(_column, columns), whole, strict=True)
            )
        )
    return table


# A text column narrowed to fit keeps at least this many characters (its cut text and "…");
# below that, optional columns are left out instead.
_NARROWEST = 8


def fitting_columns(
    rows: Sequence[dict[str, Any]], columns: Sequence[ColumnSpec], width: int
) -> list[Column]:
    """``columns`` less those (by their ``drop`` priority) that a table ``width`` wide cannot
    hold once every text column is cut to a few characters: ids, times and numbers stay
    whole."""
    kept = [_column(c) for c in columns]
    while 1 + sum(_narrowest(c, rows) + 3 for c in kept) > width:  # borders and padding
        droppable = [(c.drop, i) for i, c in enumerate(kept) if c.drop]
        if not droppable:
            break
        del kept[max(droppable)[1]]
    return kept


def emit_rows(
    rows: Sequence[dict[str, Any]],
    fmt: Format,
    *,
    columns: Sequence[ColumnSpec] | None = None,
    title: str | None = None,
    caption: str | None = None,
) -> None:
    """Print rows as a JSON array (``json``), JSON lines (``nl``) or a table.

    Args:
        rows: The rows, all keys included in JSON output.
        fmt: ``"table"``, ``"json"`` or ``"nl"``.
        columns: What a table shows: keys, ``(key, header)`` pairs or :class:`Column`; all
            keys by default.
        title: The table's title.
        caption: A line under the table (totals, paging).
    """
    if fmt == "json":
        click.echo(_json(list(rows), one_line=False))
        return
    if fmt == "nl":
        for row in rows:
            click.echo(_json(row, one_line=True))
        return
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    out = console()
    print_renderables(fitted_table(rows, columns, out, title=title, caption=caption), out=out)


def fitted_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[ColumnSpec],
    out: Console,
    *,
    title: str | None = None,
    caption: str | None = None,
) -> Table:
    """:func:`rows_table`, less the optional columns ``out`` is too narrow for (named under
    the table) when its width is fixed (a terminal, or ``$COLUMNS``)."""
    if out.is_terminal or "COLUMNS" in os.environ:
        shown = fitting_columns(rows, columns, out.width)
        hidden = [c.header or c.key for c in map(_column, columns) if c not in shown]
        if hidden:
            note = f"({', '.join(hidden)} left out at this width; --json has every column)"
            caption = f"{caption}\n{note}" if caption else note
        columns = shown
    return rows_table(rows, columns, title=title, caption=caption)

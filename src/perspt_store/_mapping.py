"""The one place where row models become SQL parameters and SQL rows become row models.

Columns are always mapped by name, from the model's fields (upstream once read a column by the
wrong position). Encoding:

* ``bytes`` stay ``bytes`` (bound to BLOB; a ``str`` would be escape-parsed by DuckDB);
* ``list[str]`` becomes compact JSON text (``'["a","b"]'``, non-ASCII kept), ``None`` NULL;
* everything else is bound as its Python value, ``None`` as NULL.

Decoding is lenient only where upstream's files require it: ``''`` or NULL in a JSON-list column
reads as ``[]`` (``None`` for ``children``) and malformed JSON is logged and read the same way;
NULL in a nullable text column that the model types as ``str`` reads as ``''``. Rows written by
upstream (at or below the legacy high-water mark recorded at migration, SPEC §7) additionally
decode hex-text hashes to bytes, ``''`` in optional text columns to None, and review outcomes'
``0.0``/``false`` placeholders to None.
"""

from __future__ import annotations

import json
import logging
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Generic, TypeVar, cast

from .rows import ReviewOutcomeRow, Row

R = TypeVar("R", bound=Row)

logger = logging.getLogger("perspt_store")

_HEX_TEXT = re.compile(rb"(?:[0-9a-f]{2})+")


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """``(T, True)`` for ``T | None``, else ``(annotation, False)``; ``Annotated`` stripped."""
    optional = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            annotation, optional = args[0], True
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation, optional


@dataclass(frozen=True)
class TableMap(Generic[R]):
    """How one row model maps to its table."""

    model: type[R]
    table: str
    columns: tuple[str, ...]
    """The model's fields, i.e. the columns it writes, in table order."""
    db_columns: tuple[str, ...]
    """Columns the database fills in, read back into the model's properties."""
    json_lists: frozenset[str]
    blobs: frozenset[str]
    optional: frozenset[str]
    text_or_empty: frozenset[str]
    """Non-optional ``str`` fields whose column is nullable: NULL reads as ''."""

    @property
    def select_list(self) -> str:
        return ", ".join(self.columns + self.db_columns)

    @property
    def insert_sql(self) -> str:
        marks = ", ".join("?" for _ in self.columns)
        return f"INSERT INTO {self.table} ({', '.join(self.columns)}) VALUES ({marks})"

    @property
    def bulk_insert_sql(self) -> str:
        """Inserts many rows in one statement: one list parameter per column, zipped by
        ``unnest`` in list order (so ids follow the list's order)."""
        values = ", ".join("unnest(?)" for _ in self.columns)
        return f"INSERT INTO {self.table} ({', '.join(self.columns)}) SELECT {values}"

    def encode_columns(self, rows: Sequence[Row]) -> list[list[Any]]:
        """The rows' fields as one list per column, for :attr:`bulk_insert_sql`."""
        return [
            [self.encode_value(name, row.__dict__[name]) for row in rows] for name in self.columns
        ]

    def encode(self, row: Row) -> list[Any]:
        """The row's fields as SQL parameters, in ``columns`` order."""
        values = row.__dict__
        return [self.encode_value(name, values[name]) for name in self.columns]

    def encode_value(self, name: str, value: Any) -> Any:
        if name in self.json_lists and value is not None:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        return value

    def decode(self, values: Sequence[Any], *, legacy: bool = False) -> R:
        """Build a model from one SQL row selected with ``select_list``.

        Raises:
            pydantic.ValidationError: The row holds a value the model does not accept
                (e.g. NULL in a non-optional integer column).
        """
        n = len(self.columns)
        data = dict(zip(self.columns, values[:n], strict=True))
        for name in self.json_lists:
            data[name] = _decode_json_list(data[name], name in self.optional, self.table, name)
        for name in self.text_or_empty:
            if data[name] is None:
                data[name] = ""
        if legacy:
            self._decode_legacy(data)
        row = self.model.model_validate(data)
        row._db.update(zip(self.db_columns, values[n:], strict=True))
        return row

    def _decode_legacy(self, data: dict[str, Any]) -> None:
        for name in self.blobs:
            data[name] = _decode_legacy_blob(data[name], name in self.optional)
        for name in self.model.__legacy_empty_as_none__:
            if data[name] == "":
                data[name] = None
        if self.model is ReviewOutcomeRow:
            # Upstream wrote None as 0.0 / false; on its rows the two cannot be told apart.
            if data["energy_at_review"] == 0.0:
                data["energy_at_review"] = None
            if data["degraded"] is False:
                data["degraded"] = None


def _decode_json_list(raw: Any, optional: bool, table: str, column: str) -> list[str] | None:
    empty: list[str] | None = None if optional else []
    if raw is None or raw == "":
        return empty
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        logger.warning("malformed JSON list in %s.%s read as empty: %.80r", table, column, raw)
        return empty
    return value


def _decode_legacy_blob(raw: bytes | None, optional: bool) -> bytes | None:
    if raw is None or raw == b"":
        return None if optional else b""
    if _HEX_TEXT.fullmatch(raw):
        return bytes.fromhex(raw.decode("ascii"))
    return raw


def table_map(model: type[R]) -> TableMap[R]:
    """The (cached) mapping of a row model to its table."""
    return cast(TableMap[R], _table_map(model))


@cache
def _table_map(model: type[Row]) -> TableMap[Row]:
    json_lists: set[str] = set()
    blobs: set[str] = set()
    optional: set[str] = set()
    text_or_empty: set[str] = set()
    for name, field in model.model_fields.items():
        inner, is_optional = _unwrap_optional(field.annotation)
        if is_optional:
            optional.add(name)
        if typing.get_origin(inner) is list:
            json_lists.add(name)
        elif inner is bytes:
            blobs.add(name)
        elif inner is str and not is_optional and not field.is_required():
            text_or_empty.add(name)
    return TableMap(
        model=model,
        table=model.__table__,
        columns=tuple(model.model_fields),
        db_columns=model.__db_columns__,
        json_lists=frozenset(json_lists),
        blobs=frozenset(blobs),
        optional=frozenset(optional),
        text_or_empty=frozenset(text_or_empty),
    )

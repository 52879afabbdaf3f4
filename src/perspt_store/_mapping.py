"""The one place where row models become SQL and SQL rows become row models.

Per model, one :class:`TableMap` owns: the columns and their insertion order (the model's
fields), the SELECT (:meth:`TableMap.select`: filters, latest-per-key, order, LIMIT/OFFSET
bound as parameters), the many-row decode (:meth:`TableMap.read`, :meth:`TableMap.read_columns`:
models built in bulk, validated by pydantic-core only when a SQL check says a row needs it),
the rules for rows upstream wrote in both their Python form (:meth:`TableMap.decode` with
``legacy``) and their SQL form (:meth:`TableMap.legacy_sql`, :func:`legacy_replacements`: the
getters, the snapshot, frames and the lake use it; ``tests/test_mapping.py`` proves the two
forms agree), and the INSERT, bulk INSERT and upsert statements generated from the fields.

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

import contextlib
import functools
import gc
import json
import logging
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Generic, TypeVar, cast

import annotated_types
from pydantic import BaseModel, BeforeValidator
from pydantic_core import SchemaValidator, core_schema

from .rows import ROW_MODELS, ReviewOutcomeRow, Row

R = TypeVar("R", bound=Row)

logger = logging.getLogger("perspt_store")

# json.dumps with non-default options builds a new encoder per call; one encoder is reused
# (compact, non-ASCII kept).
_ENCODE_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

HEX_TEXT = "(?:[0-9a-f]{2})+"
"""Upstream's hex-text hash, written once: the same pattern in Python's and DuckDB's (RE2)
regular expressions (the legacy rules' Python form and SQL form both use it)."""

_HEX_TEXT = re.compile(HEX_TEXT.encode("ascii"))


def legacy_key(table: str, schema_version: int | None = None) -> str | None:
    """The column a table's legacy high-water mark counts (``id``, or ``row_order``/``rowid``
    for sessions), or None if the table has no mark. The one place this rule is written."""
    from .schema import SEQUENCED_TABLES, order_key  # schema imports this module's users

    if table == "sessions" or table in SEQUENCED_TABLES:
        return order_key(table, schema_version)
    return None


def _legacy_blob_sql(name: str, empty: str) -> str:
    """The SQL form of :func:`_decode_legacy_blob` for one column."""
    return (
        f"CASE WHEN {name} IS NULL OR octet_length({name}) = 0 THEN {empty} "
        f"WHEN regexp_full_match({name}::VARCHAR, '{HEX_TEXT}') "
        f"THEN unhex({name}::VARCHAR) ELSE {name} END"
    )


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


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector paused (nesting-safe).

    Building many models allocates several acyclic objects per row (dicts, models, lists);
    the collector would run passes over them, repeatedly and for nothing (more than half of
    a 100,000-row read). Reference counting still frees everything as usual.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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

    def upsert_sql(self, key: str, *, touch: str | None = None, bulk: bool = False) -> str:
        """Insert a row, or overwrite every other field of the row with the same ``key``
        (last write wins, NULLs included); ``touch`` names a column set to ``now()`` on an
        update. ``bulk``: one list parameter per column (as :attr:`bulk_insert_sql`)."""
        if key not in self.columns:
            raise ValueError(f"{self.table} has no column {key!r}")
        source = (
            "SELECT " + ", ".join("unnest(?)" for _ in self.columns)
            if bulk
            else "VALUES (" + ", ".join("?" for _ in self.columns) + ")"
        )
        updates = [f"{name} = excluded.{name}" for name in self.columns if name != key]
        if touch is not None:
            # Inside DO UPDATE SET, CURRENT_TIMESTAMP would be read as a column: now().
            updates.append(f"{touch} = now()")
        return (
            f"INSERT INTO {self.table} ({', '.join(self.columns)}) {source} "
            f"ON CONFLICT ({key}) DO UPDATE SET {', '.join(updates)}"
        )

    def select(
        self,
        where: str = "",
        params: Sequence[Any] = (),
        *,
        order_by: str = "",
        latest_per: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        legacy: tuple[str, int] | None = None,
        extra: Sequence[str] = (),
    ) -> tuple[str, list[Any]]:
        """A SELECT of this table's columns (``select_list``, then ``extra`` expressions) and
        its parameters. Only identifiers and the caller's predicate are SQL text: every value,
        LIMIT and OFFSET included, is a bound parameter.

        Args:
            where: A predicate over the table's columns, with ``?`` placeholders.
            params: Values for the placeholders.
            order_by: An ORDER BY list (default: none).
            latest_per: Keep only the last-inserted row (highest ``id``) per value of this
                column, e.g. ``"node_id"``.
            limit: LIMIT, if any (with ``offset``).
            legacy: ``(key column, mark)``: decode upstream's rows (``key <= mark``) in SQL,
                with :meth:`legacy_sql`, so they read like this library's rows.
        """
        items = list(self.columns + self.db_columns)
        if legacy is not None:
            replaced = dict(self.legacy_sql(*legacy))
            items = [f"{replaced[c]} AS {c}" if c in replaced else c for c in items]
        sql = f"SELECT {', '.join([*items, *extra])} FROM {self.table}"
        if where:
            sql += f" WHERE {where}"
        if latest_per:
            sql += f" QUALIFY row_number() OVER (PARTITION BY {latest_per} ORDER BY id DESC) = 1"
        if order_by:
            sql += f" ORDER BY {order_by}"
        values = list(params)
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            values += [int(limit), int(offset)]
        return sql, values

    def legacy_sql(self, key: str, mark: int) -> list[tuple[str, str]]:
        """The SQL form of the legacy rules (:meth:`_decode_legacy`): ``(column, expression)``
        for each column they change, the expression decoding rows with ``key <= mark``."""
        t = self.table  # columns qualified: never read as a same-named alias of the SELECT
        legacy = f"{t}.{key} <= {int(mark)}"
        items: list[tuple[str, str]] = []
        for name in sorted(self.blobs):
            empty = "NULL" if name in self.optional else "''::BLOB"
            column = f"{t}.{name}"
            items.append((
                name,
                f"CASE WHEN {legacy} THEN ({_legacy_blob_sql(column, empty)}) ELSE {column} END",
            ))
        for name in sorted(self.model.__legacy_empty_as_none__):
            column = f"{t}.{name}"
            items.append(
                (name, f"CASE WHEN {legacy} AND {column} = '' THEN NULL ELSE {column} END")
            )
        if self.model is ReviewOutcomeRow:
            items.append((
                "energy_at_review",
                f"CASE WHEN {legacy} AND {t}.energy_at_review = 0.0 THEN NULL "
                f"ELSE {t}.energy_at_review END",
            ))
            items.append((
                "degraded",
                f"CASE WHEN {legacy} AND {t}.degraded = false THEN NULL ELSE {t}.degraded END",
            ))
        return items

    def encode_columns(self, rows: Sequence[Row]) -> list[list[Any]]:
        """The rows' fields as one list per column, for :attr:`bulk_insert_sql`."""
        values = [row.__dict__ for row in rows]
        columns: list[list[Any]] = []
        for name in self.columns:
            if name in self.json_lists:
                columns.append(
                    [None if (v := d[name]) is None else _ENCODE_JSON(v) for d in values]
                )
            else:
                columns.append([d[name] for d in values])
        return columns

    def encode(self, row: Row) -> list[Any]:
        """The row's fields as SQL parameters, in ``columns`` order."""
        values = row.__dict__
        return [self.encode_value(name, values[name]) for name in self.columns]

    def encode_value(self, name: str, value: Any) -> Any:
        if name in self.json_lists and value is not None:
            return _ENCODE_JSON(value)
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


    # --- reading many rows ----------------------------------------------------------------

    @property
    def check_sql(self) -> str | None:
        """A SQL predicate over the row's columns, TRUE only for rows whose values pass the
        model's field checks (NOT NULL for required fields, finiteness, ge/le ranges), derived
        from the fields' types and constraints; None if some check is not expressible."""
        return _reader(self.model).check_sql

    def read(self, rows: Sequence[Sequence[Any]], *, checked: bool = False) -> list[R]:
        with gc_paused():
            return self._read(rows, checked=checked)

    def _read(self, rows: Sequence[Sequence[Any]], *, checked: bool) -> list[R]:
        """Models from rows selected with :meth:`select` (upstream's rows already decoded
        there), the same as :meth:`decode` row by row, in bulk.

        Args:
            checked: Each row ends with the value of :attr:`check_sql` (selected as an
                ``extra`` column, on a file with this library's schema). When every row
                passes, the models are assembled without validating again (the columns'
                types give the exact Python types strict validation requires); otherwise
                the rows go through one call into pydantic-core with the model's own field
                schemas.

        Raises:
            StoreError: A row holds a value its model rejects.
        """
        from .errors import StoreError

        reader = _reader(self.model)
        columns, n = self.columns, len(self.columns)
        try:
            if reader.validator is None:
                return [self.decode(row[: n + len(self.db_columns)]) for row in rows]
            dicts = [dict(zip(columns, row, strict=False)) for row in rows]  # the fields only
            self._fix_columns(dicts)
            privates = self._privates(rows)
            if checked and reader.check_sql is not None and all(row[-1] for row in rows):
                return self.construct(dicts, privates)
            validated = reader.validator.validate_python(dicts)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise StoreError(
                f"a row of {self.table} holds a value its model rejects: {exc}",
                table=self.table,
                operation="select",
            ) from exc
        return self.construct([fields for fields, _, _ in validated], privates)

    def _privates(self, rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        n, db_columns = len(self.columns), self.db_columns
        if len(db_columns) == 1:
            (name,) = db_columns
            return [{"_db": {name: row[n]}} for row in rows]
        return [{"_db": dict(zip(db_columns, row[n:], strict=False))} for row in rows]

    def _fix_columns(self, dicts: list[dict[str, Any]]) -> None:
        """JSON-list text to lists, NULL to '' (the decoding rules of :meth:`decode` that
        apply to every row), in place."""
        table = self.table
        for name in self.json_lists:
            optional = name in self.optional
            for data in dicts:
                raw = data[name]
                data[name] = [] if raw == "[]" else _decode_json_list(raw, optional, table, name)
        for name in self.text_or_empty:
            for data in dicts:
                if data[name] is None:
                    data[name] = ""

    def read_columns(self, columns: dict[str, list[Any]]) -> list[R]:
        """Models from the values of every selected column, one list per column (e.g. from
        Arrow), of rows that passed :attr:`check_sql`: assembled without validating again."""
        with gc_paused():
            fields = [columns[name] for name in self.columns]
            names = self.columns
            dicts = [dict(zip(names, row, strict=True)) for row in zip(*fields, strict=True)]
            db_names = self.db_columns
            db_values = [columns[name] for name in db_names]
            privates = (
                [{"_db": dict(zip(db_names, row, strict=True))}
                 for row in zip(*db_values, strict=True)]
                if db_names
                else [{"_db": {}} for _ in dicts]
            )
            self._fix_columns(dicts)
            return self.construct(dicts, privates)

    def construct(self, dicts: list[dict[str, Any]], privates: list[dict[str, Any]]) -> list[R]:
        """Instances from valid field dicts, as pydantic's ``model_construct`` makes them,
        minus its per-instance Python overhead (the field set is shared: the instances are
        frozen, and pydantic copies it before any change)."""
        model = self.model
        fields_set = _reader(model).fields_set
        new = object.__new__
        set_dict, set_fields, set_extra, set_private = _SLOT_SETTERS
        out: list[R] = []
        for data, private in zip(dicts, privates, strict=True):
            obj = new(model)
            set_dict(obj, data)
            set_fields(obj, fields_set)
            set_extra(obj, None)
            set_private(obj, private)
            out.append(obj)
        return out

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


CHECK_COLUMN = "_check"
"""The name :meth:`TableMap.select` callers give the :attr:`TableMap.check_sql` column."""


@dataclass(frozen=True)
class _Reader:
    """What bulk reads of one model need, built once per model."""

    validator: SchemaValidator | None
    """Validates a list of field dicts; None if the model is not the plain shape
    :meth:`TableMap.construct` reproduces exactly (then every row takes ``decode``)."""
    check_sql: str | None
    fields_set: set[str]


@cache
def _reader(model: type[Row]) -> _Reader:
    validator = _batch_validator(model)
    check = _check_sql(model) if validator is not None else None
    return _Reader(validator, check, set(model.model_fields))


def _batch_validator(model: type[Row]) -> SchemaValidator | None:
    schema: Any = model.__pydantic_core_schema__
    if (
        schema.get("type") != "model"
        or schema.get("schema", {}).get("type") != "model-fields"
        or schema.get("custom_init")
        or schema.get("root_model")
        or set(model.__private_attributes__) != {"_db"}
        or any(  # pydantic installs init_private_attributes; anything else is custom
            getattr(klass.__dict__["model_post_init"], "__name__", "")
            != "init_private_attributes"
            for klass in model.__mro__[: model.__mro__.index(Row) + 1]
            if "model_post_init" in klass.__dict__
        )
    ):
        return None
    return SchemaValidator(core_schema.list_schema(schema["schema"]), schema.get("config"))


_BOUNDS: dict[type[Any], tuple[str, str]] = {
    annotated_types.Ge: (">=", "ge"),
    annotated_types.Gt: (">", "gt"),
    annotated_types.Le: ("<=", "le"),
    annotated_types.Lt: ("<", "lt"),
}


def _check_sql(model: type[Row]) -> str | None:
    """The SQL predicate of :attr:`_Decoder.check_sql`, or None."""
    mapping = table_map(model)
    allow_inf_nan = model.model_config.get("allow_inf_nan", True)
    parts: list[str] = []
    for name, field in model.model_fields.items():
        if name in mapping.json_lists:  # _decode_json_list always yields a valid value
            if any(not isinstance(m, BeforeValidator) for m in field.metadata):
                return None
            continue
        if _constrained_union(field.annotation):  # e.g. Int32 | None: not in field.metadata
            return None
        inner, optional = _unwrap_optional(field.annotation)
        if inner not in (str, bytes, bool, int, float):
            return None
        checks: list[str] = []
        if inner is float and not allow_inf_nan:
            checks.append(f"isfinite({name})")
        for constraint in field.metadata:
            known = _BOUNDS.get(type(constraint))
            if known is None:
                return None
            op, attribute = known
            bound = getattr(constraint, attribute)
            literal = repr(float(bound)) if inner is float else str(int(bound))
            checks.append(f"{name} {op} {literal}")
        if optional or name in mapping.text_or_empty:  # NULL is None, or reads as ''
            if checks:
                parts.append(f"({name} IS NULL OR ({' AND '.join(checks)}))")
        else:
            parts.append(f"({' AND '.join([f'{name} IS NOT NULL', *checks])})")
    return " AND ".join(parts) or "TRUE"


def _constrained_union(annotation: Any) -> bool:
    """True for ``Annotated[T, ...] | None``: its constraints sit inside the union."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(typing.get_origin(a) is typing.Annotated for a in typing.get_args(annotation))
    return False



def _slot_setters() -> tuple[Callable[[Any, Any], None], ...]:
    """Setters of the four attributes a pydantic model instance carries (its ``__dict__``
    and three slots): the slot descriptors' own ``__set__`` when available (the fastest),
    else ``object.__setattr__``."""
    names = ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__")
    setters: list[Callable[[Any, Any], None]] = []
    for name in names:
        descriptor = BaseModel.__dict__.get(name)
        setter = getattr(descriptor, "__set__", None)
        if setter is None:  # pragma: no cover - another pydantic layout
            setter = functools.partial(_set_attribute, name=name)
        setters.append(setter)
    return tuple(setters)


def _set_attribute(obj: Any, value: Any, *, name: str) -> None:  # pragma: no cover
    object.__setattr__(obj, name, value)


_SLOT_SETTERS = _slot_setters()


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


def legacy_replacements(
    table: str, marks: Mapping[str, int], schema_version: int | None = None
) -> list[str]:
    """``expr AS column`` items (for ``SELECT * REPLACE (...)``) that decode the rows
    upstream wrote (at or below the table's legacy high-water mark) as the row models do;
    empty when the table has none. ``schema_version`` is the file's (default: current),
    which names the mark's column."""
    if table == "merkle_root_overrides" and marks.get("sessions") is not None:
        # The raw sessions.merkle_root of upstream's rows, recorded at migration: decoded
        # as that column is, so an override still matches the root it stands for.
        return [
            "CASE WHEN source <> 'upstream' THEN merkle_root "
            f"ELSE ({_legacy_blob_sql('merkle_root', 'NULL')}) END AS merkle_root"
        ]
    mark = marks.get(table)
    key = legacy_key(table, schema_version)
    model = ROW_MODELS.get(table)
    if mark is None or key is None or model is None:
        return []
    return [f"{expr} AS {name}" for name, expr in table_map(model).legacy_sql(key, mark)]


COMMITS_ON_ROWS_VERSION = 5
"""The schema version from which ``node_states`` carries each store-written row's log
entry in ``merkle_commit`` (read through the ``merkle_log`` view, never as a column)."""


def star(table: str, marks: Mapping[str, int], schema_version: int | None = None) -> str:
    """``*`` for ``SELECT`` over ``table`` as exports and frames show it: upstream's rows
    decoded (:func:`legacy_replacements`), and without ``node_states.merkle_commit`` (the
    log entries are ``merkle_log``'s rows). ``schema_version``: the file's (default:
    current)."""
    exclude = (
        " EXCLUDE (merkle_commit)"
        if table == "node_states"
        and (schema_version is None or schema_version >= COMMITS_ON_ROWS_VERSION)
        else ""
    )
    replacements = legacy_replacements(table, marks, schema_version)
    replace = f" REPLACE ({', '.join(replacements)})" if replacements else ""
    return f"*{exclude}{replace}"


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

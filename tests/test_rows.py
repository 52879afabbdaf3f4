"""The 23 row models: every value a column can hold round-trips exactly through a store, and
values a column cannot hold are rejected when the model is built (never wrapped or coerced).

Strategies are derived per model from its fields (the Python type) and from the column each
field maps to (the DuckDB type: INTEGER is 32-bit, BIGINT 64-bit; upstream's REAL energy
columns only take float32-range values). Text includes NUL: DuckDB 2.0 stores "\\x00" in a
VARCHAR and returns it intact (checked by test_nul_characters_survive_a_file_round_trip).
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import types
import typing
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import perspt_store as ps
from upstream_files import REAL_COLUMNS, read_like, write_row

MODELS = list(ps.ROW_MODELS.values())
FLOAT32_MAX = 3.4028234663852886e38
INT_RANGES = {"INTEGER": (-(2**31), 2**31 - 1), "BIGINT": (-(2**63), 2**63 - 1)}

# --- deriving strategies from the models and the schema -----------------------------------


@cache
def column_types() -> dict[tuple[str, str], str]:
    conn = duckdb.connect()
    try:
        ps.init_schema(conn)
        rows = conn.execute("SELECT table_name, column_name, data_type FROM duckdb_columns()")
        return {(t, c): dtype for t, c, dtype in rows.fetchall()}
    finally:
        conn.close()


def python_type(annotation: Any) -> tuple[Any, bool]:
    """``(base type, optional)`` of a field annotation, Annotated and Optional unwrapped."""
    optional = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional, annotation = True, args[0]
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is list:
        return list, optional
    return annotation, optional


def fields_of(model: type[ps.Row]) -> Iterator[tuple[str, Any, bool, str]]:
    """``(name, python type, optional, column type)`` for each field of ``model``."""
    for name, info in model.model_fields.items():
        base, optional = python_type(info.annotation)
        yield name, base, optional, column_types()[(model.__table__, name)]


SPECIAL_TEXT = [
    "", " ", "'", '"', "''", "'; DROP TABLE sessions; --", "\\", "\\x00", "\x00", "a\x00b",
    "%", "_", "\n\r\t", "\x1b[31m", "NULL", "null", "[]", '["a"]', "😀", "é", "\u202e", "0",
]
text = st.one_of(
    st.text(),
    st.sampled_from(SPECIAL_TEXT),
    st.builds(str.__add__, st.sampled_from(SPECIAL_TEXT), st.text(max_size=20)),
)
blobs = st.one_of(
    st.binary(max_size=80),
    st.sampled_from([b"", b"\x00", b"00ff", b"abcdef", b"ABCD", b"\\x00", bytes(range(256))]),
)


def strategy_for(model: type[ps.Row], name: str, base: Any, column: str) -> st.SearchStrategy[Any]:
    if base is str:
        return text
    if base is bytes:
        return blobs
    if base is bool:
        return st.booleans()
    if base is list:
        return st.lists(text, max_size=5)
    if base is int:
        lo, hi = INT_RANGES[column]
        return st.one_of(st.integers(lo, hi), st.sampled_from([lo, hi, 0, -1]))
    if base is float:
        assert column == "DOUBLE", (model, name, column)
        if name in REAL_COLUMNS.get(model.__table__, ()):
            return st.floats(-FLOAT32_MAX, FLOAT32_MAX, allow_nan=False, allow_infinity=False)
        return st.floats(allow_nan=False, allow_infinity=False)
    raise AssertionError(f"no strategy for {model.__name__}.{name}: {base}")


_unique = itertools.count()


@st.composite
def rows_of(draw: st.DrawFn, model: type[ps.Row], *, unique: bool = True) -> ps.Row:
    """A valid row of ``model``; with ``unique``, its keys (session, PKs, lineage parent)
    get a fresh prefix so rows from different examples never collide in one store."""
    data: dict[str, Any] = {}
    for name, base, optional, column in fields_of(model):
        value = strategy_for(model, name, base, column)
        data[name] = draw(st.none() | value) if optional else draw(value)
    if unique:
        tag = f"u{next(_unique)}|"
        for key in ("session_id", "charter_id", "revision_id", "footprint_id",
                    "parent_branch_id"):
            if key in data and data[key] is not None:
                data[key] = tag + data[key]
    return model.model_validate(data)


def ensure_session(store: ps.SessionStore, row: ps.Row) -> None:
    session_id = getattr(row, "session_id", None)
    if session_id is not None and not isinstance(row, ps.SessionRecord):
        if store.get_session(session_id) is None:
            store.create_session(ps.SessionRecord(session_id=session_id, task="t",
                                                  working_dir="/w"))


def read_back(store: ps.SessionStore, row: ps.Row) -> list[ps.Row]:
    """The rows the public getters return for ``row``'s keys."""
    if isinstance(row, ps.BranchLineageRow) and row.session_id is None:
        # No getter returns session-less lineage rows as models; check every column by SQL.
        children = store.get_child_branches(row.parent_branch_id)
        assert children == [row.child_branch_id]
        got = store.sql(
            "SELECT lineage_id, parent_branch_id, child_branch_id, depends_on_seal, session_id "
            "FROM branch_lineage WHERE parent_branch_id = ?", params=[row.parent_branch_id]
        ).fetchall()
        return [ps.BranchLineageRow(**dict(zip(type(row).model_fields, values, strict=True)))
                for values in got]
    return read_like(store, row)


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_value_a_column_holds_round_trips_through_the_store(model: type[ps.Row]) -> None:
    with ps.SessionStore.in_memory() as store:

        @settings(max_examples=25, deadline=None)
        @given(row=rows_of(model))
        def check(row: ps.Row) -> None:
            ensure_session(store, row)
            write_row(store, row)
            got = read_back(store, row)
            assert got == [row]
            assert got[0].to_dict() == row.to_dict()  # same types, too (bytes, lists, ints)

        check()


@settings(max_examples=4, deadline=None)
@given(rows=st.tuples(*(rows_of(m) for m in MODELS)))
def test_rows_of_every_table_survive_closing_and_reopening_a_file(
    tmp_path_factory: pytest.TempPathFactory, rows: tuple[ps.Row, ...]
) -> None:
    path = tmp_path_factory.mktemp("reopen") / "perspt.db"
    with ps.SessionStore.open(path) as store:
        for row in rows:
            ensure_session(store, row)
            write_row(store, row)
    with ps.SessionStore.open_read_only(path) as store:
        for row in rows:
            assert read_back(store, row) == [row], type(row).__name__


def test_nul_characters_survive_a_file_round_trip(tmp_path: Path) -> None:
    """DuckDB 2.0 keeps NUL inside VARCHAR (no C-string truncation), so the models accept it."""
    session = ps.SessionRecord(session_id="a\x00b", task="\x00", working_dir="w\x00",
                               detected_toolchain="\x00\x00")
    state = ps.NodeStateRecord(node_id="n\x00", session_id="a\x00b", state="x\x00y",
                               children=["\x00", "c\x00"], goal="\x00")
    with ps.SessionStore.open(tmp_path / "nul.db") as store:
        store.create_session(session)
        store.record_node_state(state)
    with ps.SessionStore.open(tmp_path / "nul.db") as store:
        got = store.get_session("a\x00b")
        assert got is not None
        # (Recording a node state moved the session's merkle_root to the new state root.)
        assert got.to_dict() == {**session.to_dict(), "merkle_root": got.merkle_root}
        assert store.get_session("a") is None  # not truncated at the NUL
        assert store.get_node_states("a\x00b") == [state]


def test_database_filled_columns_are_none_until_read_and_ignored_by_equality(
    store: ps.SessionStore, session: str
) -> None:
    row = ps.EnergyRecord(node_id="n1", session_id=session, v_total=0.5)
    assert (row.id, row.timestamp) == (None, None)
    store.record_energy(row)
    (got,) = store.get_energy_history(session, "n1")
    assert isinstance(got.id, int) and isinstance(got.timestamp, dt.datetime)
    assert got == row
    assert "id" not in got.to_dict() and "timestamp" not in got.to_dict()


# --- validation ---------------------------------------------------------------------------


def _minimal(model: type[ps.Row]) -> dict[str, Any]:
    """Values for the required fields of ``model``."""
    samples = {str: "x", bytes: b"x", bool: True, int: 1, float: 1.0, list: []}
    return {
        name: samples[base]
        for name, base, optional, _ in fields_of(model)
        if model.model_fields[name].is_required()
    }


def _fields(kind: Any, *, column: str | None = None) -> list[tuple[type[ps.Row], str]]:
    return [
        (model, name)
        for model in MODELS
        for name, base, _, col in fields_of(model)
        if base is kind and (column is None or col == column)
    ]


def _ids(pairs: list[tuple[type[ps.Row], str]]) -> list[str]:
    return [f"{m.__name__}.{n}" for m, n in pairs]


INTEGER_FIELDS = _fields(int, column="INTEGER")
FLOAT_FIELDS = _fields(float)
REAL_FIELDS = [(m, n) for m, n in FLOAT_FIELDS if n in REAL_COLUMNS.get(m.__table__, ())]
DOUBLE_FIELDS = [(m, n) for m, n in FLOAT_FIELDS if (m, n) not in REAL_FIELDS]


def test_the_field_lists_cover_the_expected_columns() -> None:
    assert len(INTEGER_FIELDS) > 20
    assert _fields(int, column="BIGINT") == [(ps.CorrectionAttemptRow, "created_at")]
    assert len(REAL_FIELDS) == 8
    assert sorted(_ids(DOUBLE_FIELDS)) == [
        "BudgetEnvelopeRow.cost_used_usd", "BudgetEnvelopeRow.max_cost_usd",
        "ReviewOutcomeRow.energy_at_review",
    ]


@pytest.mark.parametrize(("model", "name"), INTEGER_FIELDS, ids=_ids(INTEGER_FIELDS))
def test_integer_fields_accept_the_32_bit_range_and_reject_beyond_it(
    model: type[ps.Row], name: str
) -> None:
    base = _minimal(model)
    for ok in (2**31 - 1, -(2**31)):
        assert getattr(model(**{**base, name: ok}), name) == ok
    for bad in (2**31, -(2**31) - 1, 3 * 2**30, 2**63):
        with pytest.raises(ValidationError):
            model(**{**base, name: bad})


def test_bigint_created_at_accepts_the_64_bit_range_and_rejects_beyond_it() -> None:
    base = _minimal(ps.CorrectionAttemptRow)
    for ok in (2**63 - 1, -(2**63), 2**31):
        assert ps.CorrectionAttemptRow(**{**base, "created_at": ok}).created_at == ok
    for bad in (2**63, -(2**63) - 1):
        with pytest.raises(ValidationError):
            ps.CorrectionAttemptRow(**{**base, "created_at": bad})


@pytest.mark.parametrize(("model", "name"), FLOAT_FIELDS, ids=_ids(FLOAT_FIELDS))
def test_float_fields_reject_nan_infinity_and_text(model: type[ps.Row], name: str) -> None:
    for bad in (math.nan, math.inf, -math.inf, "1.5"):
        with pytest.raises(ValidationError):
            model(**{**_minimal(model), name: bad})


@pytest.mark.parametrize(("model", "name"), REAL_FIELDS, ids=_ids(REAL_FIELDS))
def test_energy_fields_reject_values_outside_float32_range(model: type[ps.Row], name: str) -> None:
    base = _minimal(model)
    assert getattr(model(**{**base, name: FLOAT32_MAX}), name) == FLOAT32_MAX
    assert getattr(model(**{**base, name: 0.1}), name) == 0.1  # not rounded to float32
    for bad in (1e39, -1e39):
        with pytest.raises(ValidationError):
            model(**{**base, name: bad})


@pytest.mark.parametrize(("model", "name"), DOUBLE_FIELDS, ids=_ids(DOUBLE_FIELDS))
def test_double_fields_accept_any_finite_float(model: type[ps.Row], name: str) -> None:
    assert getattr(model(**{**_minimal(model), name: 1e300}), name) == 1e300


BYTES_FIELDS = _fields(bytes)
STR_FIELDS = _fields(str)
BOOL_FIELDS = _fields(bool)
LIST_FIELDS = _fields(list)


@pytest.mark.parametrize(("model", "name"), BYTES_FIELDS, ids=_ids(BYTES_FIELDS))
def test_bytes_fields_reject_text_and_other_types(model: type[ps.Row], name: str) -> None:
    for bad in ("00ff", "", bytearray(b"x"), [0, 1]):
        with pytest.raises(ValidationError):
            model(**{**_minimal(model), name: bad})


@pytest.mark.parametrize(("model", "name"), INTEGER_FIELDS, ids=_ids(INTEGER_FIELDS))
def test_integer_fields_are_not_coerced_from_strings_floats_or_bools(
    model: type[ps.Row], name: str
) -> None:
    for bad in ("5", 5.0, True, b"5"):
        with pytest.raises(ValidationError):
            model(**{**_minimal(model), name: bad})


@pytest.mark.parametrize(("model", "name"), STR_FIELDS, ids=_ids(STR_FIELDS))
def test_text_fields_are_not_coerced_from_bytes_or_numbers(model: type[ps.Row], name: str) -> None:
    for bad in (b"x", 5):
        with pytest.raises(ValidationError):
            model(**{**_minimal(model), name: bad})


# Text DuckDB cannot store: a Python str holding a surrogate code point (a lone one, or a
# UTF-16 pair kept as two code points) has no UTF-8 encoding, and DuckDB refuses it on insert.
UNSTORABLE_TEXT = ["caf\udce9", "\ud800", "\udfff", "a\ud83d\ude00b"]
# Text that looks odd but DuckDB 2.0 stores and returns intact: kept.
STORABLE_ODD_TEXT = ["a\x00b", "\x00", "\ufffe", "\uffff", "\U0010ffff", "\ufeff",
                     "\x01\x7f\x85", "\ue000", "\u202e"]


def test_the_text_rule_matches_what_duckdb_stores() -> None:
    """Ground truth for the rule below, from the engine itself (parameter and list paths)."""
    conn = duckdb.connect()
    try:
        conn.execute("CREATE TABLE t (v VARCHAR)")
        for value in STORABLE_ODD_TEXT:
            conn.execute("INSERT INTO t VALUES (?)", [value])
            conn.execute("INSERT INTO t SELECT unnest(?)", [[value]])
            got = conn.execute("SELECT v FROM t").fetchall()
            assert got == [(value,), (value,)], repr(value)
            conn.execute("DELETE FROM t")
        for value in UNSTORABLE_TEXT:
            with pytest.raises(duckdb.Error):
                conn.execute("INSERT INTO t VALUES (?)", [value])
            with pytest.raises(duckdb.Error):
                conn.execute("INSERT INTO t SELECT unnest(?)", [[value]])
    finally:
        conn.close()


@pytest.mark.parametrize(("model", "name"), STR_FIELDS, ids=_ids(STR_FIELDS))
def test_text_fields_reject_what_duckdb_cannot_store(model: type[ps.Row], name: str) -> None:
    base = _minimal(model)
    for bad in UNSTORABLE_TEXT:
        with pytest.raises(ValidationError, match=name):
            model(**{**base, name: bad})
        with pytest.raises(ValidationError, match=name):
            model.model_validate({**base, name: bad})
    for ok in STORABLE_ODD_TEXT:
        assert getattr(model(**{**base, name: ok}), name) == ok


@pytest.mark.parametrize(("model", "name"), LIST_FIELDS, ids=_ids(LIST_FIELDS))
def test_list_fields_reject_items_duckdb_cannot_store(model: type[ps.Row], name: str) -> None:
    base = _minimal(model)
    for bad in UNSTORABLE_TEXT:
        with pytest.raises(ValidationError, match=name):
            model(**{**base, name: ["ok", bad]})
    assert getattr(model(**{**base, name: STORABLE_ODD_TEXT}), name) == STORABLE_ODD_TEXT


def test_odd_but_storable_text_round_trips_through_a_file(tmp_path: Path) -> None:
    row = ps.LlmRequestRecord(session_id="s", model="m", prompt="".join(STORABLE_ODD_TEXT),
                              response="\U0010ffff\x00")
    state = ps.NodeStateRecord(node_id="n", session_id="s", state="x",
                               children=STORABLE_ODD_TEXT)
    with ps.SessionStore.open(tmp_path / "odd.db", durability="batched") as store:
        store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
        store.record_llm_request(row)
        store.record_node_state(state)
    with ps.SessionStore.open_read_only(tmp_path / "odd.db") as store:
        assert store.get_llm_requests("s") == [row]
        assert store.get_node_states("s") == [state]


@pytest.mark.parametrize(("model", "name"), BOOL_FIELDS, ids=_ids(BOOL_FIELDS))
def test_bool_fields_are_not_coerced_from_text_or_ints(model: type[ps.Row], name: str) -> None:
    for bad in ("true", "false", 1, 0):
        with pytest.raises(ValidationError):
            model(**{**_minimal(model), name: bad})


@pytest.mark.parametrize(("model", "name"), LIST_FIELDS, ids=_ids(LIST_FIELDS))
def test_list_fields_take_lists_of_text_only(model: type[ps.Row], name: str) -> None:
    base = _minimal(model)
    assert getattr(model(**{**base, name: ("a", "b")}), name) == ["a", "b"]
    for bad in ('["a"]', [1], [b"a"], [None]):
        with pytest.raises(ValidationError):
            model(**{**base, name: bad})


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_unknown_and_database_filled_fields_are_rejected(model: type[ps.Row]) -> None:
    base = _minimal(model)
    with pytest.raises(ValidationError):
        model(**{**base, "bogus": 1})
    for column in model.__db_columns__:
        with pytest.raises(ValidationError):
            model(**{**base, column: None})


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_required_fields_must_be_given(model: type[ps.Row]) -> None:
    base = _minimal(model)
    for name in base:
        with pytest.raises(ValidationError):
            model(**{k: v for k, v in base.items() if k != name})


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_models_are_frozen(model: type[ps.Row]) -> None:
    row = model(**_minimal(model))
    for name in model.model_fields:
        with pytest.raises(ValidationError):
            setattr(row, name, getattr(row, name))
    try:
        digest = hash(row)
    except TypeError:  # a model with list fields cannot be hashed
        assert any(base is list for _, base, _, _ in fields_of(model))
    else:  # equal rows hash equal
        assert hash(model(**_minimal(model))) == digest


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_to_dict_and_from_dict_round_trip(model: type[ps.Row]) -> None:
    @settings(max_examples=25, deadline=None)
    @given(row=rows_of(model, unique=False))
    def check(row: ps.Row) -> None:
        data = row.to_dict()
        assert list(data) == list(model.model_fields)
        again = model.from_dict(data)
        assert again == row and type(again) is model
        assert again.to_dict() == data

    check()


def test_equality_compares_type_and_every_field() -> None:
    a = ps.TaskGraphEdgeRow(session_id="s", parent_node_id="p", child_node_id="c")
    assert a == ps.TaskGraphEdgeRow(session_id="s", parent_node_id="p", child_node_id="c")
    assert a != ps.TaskGraphEdgeRow(session_id="s", parent_node_id="p", child_node_id="d")
    assert a != a.to_dict()
    assert ps.NodeStateRecord(node_id="n", session_id="s", state="x", children=[]) != (
        ps.NodeStateRecord(node_id="n", session_id="s", state="x", children=None))
    assert ps.SessionRecord(session_id="s", task="", working_dir="", detected_toolchain="") != (
        ps.SessionRecord(session_id="s", task="", working_dir=""))


def test_repr_names_the_model_and_shows_every_field() -> None:
    row = ps.NodeStateRecord(node_id="n1", session_id="s1", state="Completed",
                             merkle_hash=b"\x00\x01", children=["a"])
    text = repr(row)
    assert text.startswith("NodeStateRecord(node_id='n1', session_id='s1', state='Completed'")
    assert "merkle_hash=b'\\x00\\x01'" in text and "children=['a']" in text
    assert "_db" not in text
    assert eval(text, {"NodeStateRecord": ps.NodeStateRecord}) == row


@given(syntax=st.booleans(), build=st.booleans(), tests=st.booleans(), lint=st.booleans(),
       degraded=st.booleans())
def test_a_verification_passed_when_syntax_build_and_tests_did(
    syntax: bool, build: bool, tests: bool, lint: bool, degraded: bool
) -> None:
    row = ps.VerificationResultRow(
        session_id="s", node_id="n", result_json="{}", syntax_ok=syntax, build_ok=build,
        tests_ok=tests, lint_ok=lint, degraded=degraded)
    assert row.passed is (syntax and build and tests)  # lint and degraded do not decide
    assert "passed" not in row.to_dict()  # derived, not a column

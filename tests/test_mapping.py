"""The table map: the legacy rules' Python form and SQL form agree, and its statements are
generated from the model's fields."""

from __future__ import annotations

from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import perspt_store as ps
from perspt_store._mapping import HEX_TEXT, legacy_replacements, table_map

LEGACY_MODELS = [
    m for m in ps.ROW_MODELS.values()
    if table_map(m).blobs or m.__legacy_empty_as_none__ or m is ps.ReviewOutcomeRow
]

_blob = st.one_of(
    st.none(),
    st.binary(max_size=6),
    st.binary(min_size=1, max_size=6).map(lambda b: b.hex().encode()),  # upstream's hex text
    st.binary(min_size=1, max_size=6).map(lambda b: b.hex().upper().encode()),
    st.sampled_from([b"", b"a", b"abc", b"0g", b"\xff\x00"]),
)
_text = st.one_of(st.none(), st.just(""), st.text(max_size=4))


def _sql_type(mapping: Any, name: str) -> str:
    if name in mapping.blobs:
        return "BLOB"
    if name == "energy_at_review":
        return "DOUBLE"
    if name == "degraded":
        return "BOOLEAN"
    return "VARCHAR"


def _value(name: str, mapping: Any) -> st.SearchStrategy[Any]:
    if name in mapping.blobs:
        return _blob
    if name == "energy_at_review":
        return st.sampled_from([None, 0.0, -0.0, 1.5])
    if name == "degraded":
        return st.sampled_from([None, False, True])
    return _text


@given(st.data())
@settings(max_examples=150, deadline=None)
def test_legacy_rules_in_python_and_in_sql_agree_on_every_column(data: st.DataObject) -> None:
    """Law: for a row upstream wrote (key <= mark), the SQL form of the legacy rules gives,
    column by column, what the Python form gives; a newer row is left as it is."""
    model = data.draw(st.sampled_from(LEGACY_MODELS))
    mapping = table_map(model)
    rules = dict(mapping.legacy_sql("id", 100))
    changed = set(rules)
    assert changed == (
        set(mapping.blobs) | set(model.__legacy_empty_as_none__)
        | ({"energy_at_review", "degraded"} if model is ps.ReviewOutcomeRow else set())
    )
    raw = {name: data.draw(_value(name, mapping), label=name) for name in sorted(changed)}
    row_id = data.draw(st.sampled_from([1, 100, 101]), label="id")
    legacy = row_id <= 100
    expected = dict(raw)
    if legacy:
        mapping._decode_legacy(expected)
    source = ", ".join(
        [f"?::{_sql_type(mapping, name)} AS {name}" for name in raw] + ["?::BIGINT AS id"]
    )
    sql = f"SELECT {', '.join(rules[n] for n in raw)} FROM (SELECT {source}) {mapping.table}"
    got = duckdb.connect().execute(sql, [*raw.values(), row_id]).fetchall()[0]
    for name, value in zip(raw, got, strict=True):
        want = expected[name]
        if name == "energy_at_review" and want is not None:
            assert value == want, name
        else:
            assert value == want and type(value) is type(want), (name, raw[name], value, want)


def test_the_hex_pattern_is_written_once() -> None:
    import pathlib

    import perspt_store

    root = pathlib.Path(perspt_store.__file__).parent
    hits = [p.name for p in root.rglob("*.py") if "[0-9a-f]{2}" in p.read_text()]
    assert hits == ["_mapping.py"]
    assert HEX_TEXT == "(?:[0-9a-f]{2})+"


def test_legacy_replacements_only_for_tables_with_a_mark() -> None:
    assert legacy_replacements("energy_history", {}) == []
    items = legacy_replacements("interface_seals", {"interface_seals": 3})
    assert items and all(" AS " in item for item in items)


def test_select_binds_every_value() -> None:
    mapping = table_map(ps.EnergyRecord)
    sql, params = mapping.select(
        "session_id = ?", ["s"], order_by="id", latest_per="node_id", limit=5, offset=2
    )
    assert sql.endswith("ORDER BY id LIMIT ? OFFSET ?")
    assert params == ["s", 5, 2]
    assert "5" not in sql


def test_upsert_is_generated_from_the_fields() -> None:
    mapping = table_map(ps.BudgetEnvelopeRow)
    one = mapping.upsert_sql("session_id", touch="updated_at")
    bulk = mapping.upsert_sql("session_id", touch="updated_at", bulk=True)
    for sql in (one, bulk):
        assert "ON CONFLICT (session_id) DO UPDATE SET" in sql
        assert "session_id = excluded" not in sql
        for name in mapping.columns[1:]:
            assert f"{name} = excluded.{name}" in sql
    assert one.count("?") == bulk.count("unnest(?)") == len(mapping.columns)
    with pytest.raises(ValueError, match="no column"):
        mapping.upsert_sql("nope")


def test_budget_upsert_round_trips(store: ps.SessionStore, session: str) -> None:
    first = ps.BudgetEnvelopeRow(session_id=session, max_steps=3, steps_used=1, max_cost_usd=2.5)
    store.upsert_budget_envelope(first)
    second = ps.BudgetEnvelopeRow(session_id=session, max_steps=None, steps_used=2)
    store.upsert_budget_envelope(second)
    assert store.get_budget_envelope(session) == second
    store.record_many([first, second, first])
    assert store.get_budget_envelope(session) == first

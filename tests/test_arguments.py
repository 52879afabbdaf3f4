"""Strict inputs: every public method takes exactly the types it declares.

A write method given another row model must not write that row somewhere else, and a bad id
must not reach DuckDB as a conversion error: each raises TypeError naming the parameter and
the expected type, and nothing is written.
"""

from __future__ import annotations

import inspect
import shutil
import typing
from pathlib import Path
from typing import Any

import pytest

import perspt_store as ps
from perspt_store.schema import TABLES
from perspt_store.store._arguments import _accepted
from test_read_only import READS, WRITES, S, populate
from upstream_files import WRITE_METHOD, edge_case_rows


def _fingerprint(store: ps.SessionStore) -> list[Any]:
    tables = [*TABLES, "merkle_log", "merkle_root_overrides"]
    return [store.sql(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in tables]


def _checked_parameters() -> list[tuple[str, str, tuple[type, ...]]]:
    found = []
    for name in sorted(set(READS) | set(WRITES)):
        method = getattr(ps.SessionStore, name)
        hints = typing.get_type_hints(method)
        for parameter in inspect.signature(method).parameters:
            accepted = _accepted(hints.get(parameter))
            if parameter != "self" and accepted is not None:
                found.append((name, parameter, accepted))
    return found


CHECKED = _checked_parameters()


def test_the_check_covers_every_id_and_record_parameter() -> None:
    names = {(method, parameter) for method, parameter, _ in CHECKED}
    assert ("get_session", "session_id") in names
    assert ("record_energy", "record") in names
    assert ("update_merkle_root", "merkle_root") in names
    # Every single-row write method checks its model.
    models = {m for m, _, accepted in CHECKED if any(issubclass(t, ps.Row) for t in accepted)}
    assert set(WRITE_METHOD.values()) <= models


class _Wrong:
    """An argument no parameter accepts."""


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("arguments") / "perspt.db"
    populate(path)
    return path


@pytest.mark.parametrize(("method", "parameter", "accepted"), CHECKED, ids=str)
def test_a_wrong_argument_type_is_a_type_error_and_writes_nothing(
    method: str, parameter: str, accepted: tuple[type, ...], template: Path, tmp_path: Path
) -> None:
    path = tmp_path / "perspt.db"
    shutil.copy(template, path)
    with ps.SessionStore.open(path, publish_interval=None) as store:
        before = _fingerprint(store)
        function = getattr(store, method)
        signature = inspect.signature(function)
        # Every other parameter gets a value of a right type; this one a wrong one.
        arguments = {}
        for name, p in signature.parameters.items():
            if p.default is not p.empty and name != parameter:
                continue
            arguments[name] = _Wrong() if name == parameter else _valid(function, name)
        with pytest.raises(TypeError, match=f"argument '{parameter}' must be"):
            function(**arguments)
        assert _fingerprint(store) == before


def _valid(function: Any, name: str) -> Any:
    hint = typing.get_type_hints(function)[name]
    accepted = _accepted(hint) or ()
    if str in accepted:
        return S
    if int in accepted:
        return 0
    if bytes in accepted:
        return b"\x00" * 32
    for kind in accepted:
        if isinstance(kind, type) and issubclass(kind, ps.Row):
            return edge_case_rows(S, "n", "z")[kind.__table__]
    return None


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda s: s.record_energy(ps.LlmRequestRecord(session_id=S, node_id="n", model="m")),
         "must be EnergyRecord, not LlmRequestRecord"),
        (lambda s: s.record_step(ps.SessionRecord(session_id="x", task="t", working_dir="/")),
         "must be SrbnStepRecord, not SessionRecord"),
        (lambda s: s.record_energy(ps.NodeStateRecord(session_id=S, node_id="n", state="x")),
         "must be EnergyRecord, not NodeStateRecord"),
        (lambda s: s.record_energy({"session_id": S}), "must be EnergyRecord, not dict"),
        (lambda s: s.get_session(123), "'session_id' must be str, not int"),
        (lambda s: s.update_session_status(S, None), "'status' must be str, not NoneType"),
        (lambda s: s.update_merkle_root(S, 5), "'merkle_root' must be bytes, not int"),
        (lambda s: s.list_sessions_paginated(True, 0), "'limit' must be int, not bool"),
    ],
)
def test_the_issues_examples(call: Any, error: str, tmp_path: Any) -> None:
    with ps.SessionStore.in_memory() as store:
        store.create_session(ps.SessionRecord(session_id=S, task="t", working_dir="/w"))
        before = _fingerprint(store)
        with pytest.raises(TypeError, match=error):
            call(store)
        assert _fingerprint(store) == before
        assert store.verify_session(S).ok


def test_a_merkle_root_must_be_a_32_byte_digest() -> None:
    with ps.SessionStore.in_memory() as store:
        store.create_session(ps.SessionRecord(session_id=S, task="t", working_dir="/w"))
        for wrong in (b"", b"\x00" * 5, b"\x00" * 33):
            with pytest.raises(ValueError, match="32-byte"):
                store.update_merkle_root(S, wrong)
        store.update_merkle_root(S, bytearray(32))
        session = store.get_session(S)
        assert session is not None and session.merkle_root == bytes(32)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda s: s.get_session("a\ud800b"), "'session_id' holds a code point"),
        (lambda s: s.get_energy_history(S, "\udce9"), "'node_id' holds a code point"),
        (lambda s: s.list_recent_sessions(10**30), "'limit' is out of range"),
        (lambda s: s.inclusion_proof(S, -(2**70)), "'seq' is out of range"),
    ],
)
def test_values_duckdb_cannot_hold_are_a_value_error(call: Any, error: str) -> None:
    with ps.SessionStore.in_memory() as store:
        store.create_session(ps.SessionRecord(session_id=S, task="t", working_dir="/w"))
        with pytest.raises(ValueError, match=error):
            call(store)

"""Hostile input: values never become SQL, session ids never escape the sessions directory,
duplicate keys write nothing, whatever the tables.

(Round trips of every model with arbitrary unicode, quotes, SQL fragments, long text and
extreme numbers are in test_rows.py; newer, non-DuckDB and truncated files, and failed
migrations, in test_schema.py.)

The SQL audit wraps the store's connection in a spy that records every statement and its
parameters, then drives every public method with values full of SQL fragments carrying a
marker. The marker must show up in parameters only, never in a statement's text; and the
statements a method runs must be the same whatever the values (only identifiers from the
store's fixed tables and columns are ever part of SQL text).
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import perspt_store as ps
from upstream_files import edge_case_rows, read_like, write_row

MARK = "\u27e6hostile\u27e7"
HOSTILE = f'x\'); DROP TABLE sessions; --{MARK}"; SELECT * FROM "sessions"; \\\'\u202e\x00'
S = f"s'{MARK}\"; DELETE FROM sessions; --"
N = f"n' OR '1'='1{MARK}"
BLOB = b"\x00'\"\\" + MARK.encode()


# --- a spy on every statement the store runs ------------------------------------------------


class SpyCursor:
    """A DuckDB connection/cursor that logs ``(sql, params)`` and forwards everything."""

    def __init__(self, inner: Any, log: list[tuple[str, Any]]) -> None:
        self._inner = inner
        self._log = log

    def execute(self, sql: str, params: Any = None) -> Any:
        self._log.append((sql, params))
        return self._inner.execute(sql, params)

    def executemany(self, sql: str, params: Any = None) -> Any:
        self._log.append((sql, params))
        return self._inner.executemany(sql, params)

    def sql(self, sql: str, params: Any = None, **kwargs: Any) -> Any:
        self._log.append((sql, params))
        return self._inner.sql(sql, params=params, **kwargs)

    def cursor(self) -> SpyCursor:
        return SpyCursor(self._inner.cursor(), self._log)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def spy_on(store: ps.SessionStore) -> list[tuple[str, Any]]:
    """Route every statement of ``store`` (any thread) through a logging spy."""
    log: list[tuple[str, Any]] = []
    store._conn = SpyCursor(store._conn, log)  # type: ignore[assignment]
    store._local = type(store._local)()  # drop cached cursors: new ones come from the spy
    return log


def _flatten(params: Any) -> Iterator[Any]:
    if isinstance(params, (list, tuple)):
        for value in params:
            yield from _flatten(value)
    elif isinstance(params, dict):
        for value in params.values():
            yield from _flatten(value)
    else:
        yield params


def _mentions_mark(value: Any) -> bool:
    if isinstance(value, str):
        return MARK in value
    if isinstance(value, bytes):
        return MARK.encode() in value
    return False


# --- hostile rows -------------------------------------------------------------------------


def _inner(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0]
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def hostile(row: ps.Row, text: str = HOSTILE, session: str = S, node: str = N) -> ps.Row:
    """``row`` with every text, list and bytes field replaced by hostile values (each field's
    own, so keys stay unique), in session ``session`` and node ``node``."""
    data = row.model_dump()
    for name, field in type(row).model_fields.items():
        kind = _inner(field.annotation)
        if name == "session_id":
            data[name] = session
        elif name == "node_id":
            data[name] = node
        elif kind is str:
            data[name] = f"{text}|{name}"
        elif typing.get_origin(kind) is list:
            data[name] = [text, name, ""]
        elif kind is bytes:
            data[name] = BLOB + name.encode()
    return type(row)(**data)


def hostile_rows(text: str = HOSTILE, session: str = S, node: str = N) -> dict[str, ps.Row]:
    rows = {
        table: hostile(row, text, session, node)
        for table, row in edge_case_rows(session, node, "h").items()
    }
    rows["plan_revisions"] = rows["plan_revisions"].model_copy(update={"sequence": 5})
    return rows


def _drive_every_method(store: ps.SessionStore, rows: dict[str, ps.Row], session: str) -> None:
    """Write every table with hostile rows, read them back exactly, then call every other
    public method with hostile arguments."""
    store.create_session(
        ps.SessionRecord(
            session_id=session, task=HOSTILE, working_dir=HOSTILE, detected_toolchain=HOSTILE
        )
    )
    for row in rows.values():
        write_row(store, row)
    for table, row in rows.items():  # exact round trips before anything is mutated
        assert read_like(store, row) == [row], table
    node = rows["node_states"].node_id  # type: ignore[attr-defined]
    branch = rows["provisional_branches"]
    lineage = rows["branch_lineage"]
    store.record_task_graph_edge_once(rows["task_graph_edges"])
    store.record_many(
        [
            hostile(r, HOSTILE + "many", session, node)
            for r in rows.values()
            if r.__table__ not in ("feature_charters", "plan_revisions", "repair_footprints")
        ]
    )
    store.record_node_state(rows["node_states"].model_copy(update={"state": HOSTILE}))
    reads: list[Callable[[], Any]] = [
        lambda: store.get_session(session),
        lambda: store.list_sessions_paginated(5, 0),
        lambda: store.get_latest_node_states(session),
        lambda: store.get_energy_history(session, node),
        lambda: store.get_step_timeline(session, node),
        lambda: store.get_correction_attempts(session, node),
        lambda: store.get_structural_digests(session, node),
        lambda: store.get_context_provenance(session, node),
        lambda: store.get_escalation_reports(session, node),
        lambda: store.get_sheaf_validations(session, node),
        lambda: store.get_interface_seals(session, node),
        lambda: store.has_interface_seals(session, node),
        lambda: store.get_live_branches_for_parent(session, branch.parent_node_id),  # type: ignore[attr-defined]
        lambda: store.get_child_branches(lineage.parent_branch_id, session_id=session),  # type: ignore[attr-defined]
        lambda: store.count_lineage_rewrites(session, node),
        lambda: store.get_review_outcomes(session, node),
        lambda: store.get_latest_review_outcome(session, node),
        lambda: store.get_verification_result(session, node),
        lambda: store.get_artifact_bundle(session, node),
        lambda: store.get_repair_footprints(session, node),
        lambda: store.get_active_plan_revision(session),
        lambda: store.node_review_summary(session, node),
        lambda: store.session_summary(session),
        lambda: store.load_session_snapshot(session),
        lambda: store.get_global_llm_summary(),
        lambda: store.count_sessions(),
        lambda: store.get_commit_log(session),
        lambda: store.inclusion_proof(session, 0),
        lambda: store.consistency_proof(session, 1),
        lambda: store.checkpoint(session),
        lambda: store.verify_session(session),
        lambda: store.state_root(session),
        lambda: store.log_root(session),
        lambda: store.frame("llm_requests", session, node).fetchall(),
        lambda: store.energy_frame(session, node).fetchall(),
        lambda: store.llm_frame(session, node).fetchall(),
        lambda: store.node_states_frame(session, node).fetchall(),
        lambda: store.steps_frame(session, node).fetchall(),
    ]
    for read in reads:
        read()
    store.update_branch_state(branch.branch_id, HOSTILE, session_id=session)  # type: ignore[attr-defined]
    store.flush_branches_for_parent(session, branch.parent_node_id)  # type: ignore[attr-defined]
    store.supersede_plan_revision(rows["plan_revisions"].revision_id)  # type: ignore[attr-defined]
    store.replace_active_plan(
        session,
        ps.PlanRevisionRow(
            revision_id=HOSTILE + "rev",
            session_id=session,
            sequence=6,
            plan_json=HOSTILE,
            reason=HOSTILE,
            supersedes=HOSTILE,
        ),
    )
    store.resolve_repair_footprint(rows["repair_footprints"].footprint_id)  # type: ignore[attr-defined]
    store.update_session_status(session, HOSTILE)
    store.update_merkle_root(session, BLOB.ljust(32, b"\0"))  # a digest is 32 bytes
    store.rollback(session, to_seq=0)
    assert store.verify_session(session).ok


@pytest.mark.parametrize("durability", ["immediate", "batched"])
def test_hostile_values_reach_sql_as_parameters_never_as_text(
    durability: str, tmp_path: Path
) -> None:
    with ps.SessionStore.open(
        tmp_path / "h.db", durability=durability, publish_interval=None
    ) as store:
        log = spy_on(store)
        _drive_every_method(store, hostile_rows(), S)
        store.flush()
        assert store.get_session(S).status == HOSTILE  # type: ignore[union-attr]
        # Every table is still there, with every row.
        assert store.count_sessions() == 1
    texts = [sql for sql, _ in log]
    assert len(texts) > 100
    leaked = [sql for sql in texts if MARK in sql]
    assert not leaked, f"a value became SQL text: {leaked[0][:300]}"
    assert any(_mentions_mark(v) for _, params in log for v in _flatten(params))


@pytest.mark.parametrize(
    "table", [HOSTILE, "sessions; DROP TABLE sessions", "energy_history e", "main.sessions", ""]
)
def test_a_table_name_outside_the_allow_list_is_refused_before_any_sql(
    store: ps.SessionStore, table: str
) -> None:
    log = spy_on(store)
    with pytest.raises(ValueError, match="no table"):
        store.frame(table)
    assert log == []


def _statements(store: ps.SessionStore, text: str, n: int) -> list[str]:
    """The SQL texts (in order) of a fixed sequence of calls that carry ``text`` and ``n``."""
    log = spy_on(store)
    session = f"s-{n}-{text}"
    store.create_session(ps.SessionRecord(session_id=session, task=text, working_dir=text))
    store.record_energy(ps.EnergyRecord(node_id=text, session_id=session, v_total=n / 3))
    store.record_llm_request(
        ps.LlmRequestRecord(session_id=session, node_id=text, model=text, prompt=text, tokens_in=n)
    )
    store.record_node_state(
        ps.NodeStateRecord(
            node_id=text,
            session_id=session,
            state=text,
            goal=text,
            children=[text],
            attempt_count=n,
        )
    )
    store.get_energy_history(session, text)
    store.get_latest_node_states(session)
    store.list_sessions_paginated(n, n)
    store.get_child_branches(text, session_id=session)
    store.update_session_status(session, text)
    store.has_interface_seals(session, text)
    return [sql for sql, _ in log]


@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=40), n=st.integers(min_value=0, max_value=2**31 - 1))
def test_the_sql_a_method_runs_does_not_depend_on_its_values(text: str, n: int) -> None:
    """A law: the same calls with other values run exactly the same statements."""
    with ps.SessionStore.in_memory() as a, ps.SessionStore.in_memory() as b:
        assert _statements(a, text, n) == _statements(b, "plain", 7)


# --- session ids as path components ------------------------------------------------------------


@pytest.fixture(scope="module")
def sessions_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ps.SessionStore]:
    root = tmp_path_factory.mktemp("paths")
    with ps.SessionStore.in_memory(sessions_dir=root / "sessions") as store:
        yield store


_PATH_ALPHABET = st.sampled_from(
    [*"./\\:\x00 ~$%*?<>|\"'\n\t", "..", "\u2215", "\uff0f", "\u2024", "\u202e", "é", "a"]
)


@settings(deadline=None, max_examples=300)
@given(session_id=st.one_of(st.text(), st.lists(_PATH_ALPHABET, max_size=8).map("".join)))
def test_any_session_id_is_refused_or_names_one_directory_inside_the_sessions_dir(
    sessions_store: ps.SessionStore, session_id: str
) -> None:
    root = sessions_store.sessions_dir
    try:
        path = sessions_store.get_session_dir(session_id)
    except ValueError:
        return
    assert path.parent == root
    assert path.name == session_id
    assert os.path.normpath(path) == str(path)  # nothing for the OS to reinterpret
    resolved = os.path.realpath(path)
    assert os.path.commonpath([resolved, os.path.realpath(root)]) == os.path.realpath(root)
    assert resolved != os.path.realpath(root)


@settings(deadline=None, max_examples=60)
@given(session_id=st.lists(_PATH_ALPHABET, min_size=1, max_size=6).map("".join))
def test_creating_a_session_dir_creates_one_entry_in_the_sessions_dir_or_nothing(
    sessions_store: ps.SessionStore, session_id: str
) -> None:
    root = sessions_store.sessions_dir
    root.mkdir(parents=True, exist_ok=True)
    outside = sorted(root.parent.parent.iterdir())
    before = set(root.iterdir())
    try:
        made = sessions_store.create_session_dir(session_id)
    except ValueError:
        assert set(root.iterdir()) == before
    else:
        assert made.is_dir() and made.parent == root
        assert set(root.iterdir()) - before <= {made}
    assert sorted(root.parent.parent.iterdir()) == outside  # nothing outside the store's dir


def test_a_session_id_that_is_no_path_is_still_a_valid_session(
    store: ps.SessionStore,
) -> None:
    """Ids are data: '../../etc' can be stored and read; only its directory is refused."""
    for session_id in ("../../etc", "a/b", "", "..", "x\x00y"):
        store.create_session(ps.SessionRecord(session_id=session_id, task="t", working_dir="/"))
        assert store.get_session(session_id).session_id == session_id  # type: ignore[union-attr]
        with pytest.raises(ValueError):
            store.get_session_dir(session_id)


# --- duplicate keys write nothing ----------------------------------------------------------------

KEYED = {
    "sessions": lambda: ps.SessionRecord(session_id="dup", task="t2", working_dir="/x"),
    "feature_charters": lambda: ps.FeatureCharterRow(
        charter_id="ch", session_id="dup", scope_description="again"
    ),
    "plan_revisions": lambda: ps.PlanRevisionRow(
        revision_id="rev", session_id="dup", sequence=9, plan_json="{}", reason="again"
    ),
    "repair_footprints": lambda: ps.RepairFootprintRow(
        footprint_id="fp",
        session_id="dup",
        node_id="n",
        revision_id="rev",
        attempt=2,
        affected_files=[],
        bundle_json="{}",
        diagnosis="again",
    ),
}


def _counts(store: ps.SessionStore) -> dict[str, Any]:
    tables = [
        t
        for (t,) in store.sql(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' ORDER BY 1"
        ).fetchall()
    ]
    return {t: store.sql(f"SELECT count(*), max(rowid) FROM {t}").fetchall() for t in tables}


@pytest.fixture
def keyed_store(store: ps.SessionStore) -> ps.SessionStore:
    store.create_session(ps.SessionRecord(session_id="dup", task="t", working_dir="/w"))
    store.record_feature_charter(
        ps.FeatureCharterRow(charter_id="ch", session_id="dup", scope_description="s")
    )
    store.record_plan_revision(
        ps.PlanRevisionRow(
            revision_id="rev", session_id="dup", sequence=1, plan_json="{}", reason="r"
        )
    )
    store.record_repair_footprint(
        ps.RepairFootprintRow(
            footprint_id="fp",
            session_id="dup",
            node_id="n",
            revision_id="rev",
            attempt=1,
            affected_files=[],
            bundle_json="{}",
            diagnosis="d",
        )
    )
    return store


@pytest.mark.parametrize("table", KEYED)
def test_a_duplicate_key_raises_and_writes_nothing_alone_in_a_batch_or_a_transaction(
    keyed_store: ps.SessionStore, table: str
) -> None:
    store = keyed_store
    before = _counts(store)
    duplicate = KEYED[table]()
    with pytest.raises(ps.DuplicateRecordError) as err:
        write_row(store, duplicate)
    assert err.value.table == table
    assert _counts(store) == before
    # In a batch, after rows of other tables: the whole batch is refused.
    batch: list[ps.Row] = [
        ps.EnergyRecord(node_id="n", session_id="dup", v_total=1.0),
        ps.NodeStateRecord(node_id="n", session_id="dup", state="S"),
        duplicate,
    ]
    with pytest.raises(ps.DuplicateRecordError):
        store.record_many(batch)
    assert _counts(store) == before
    # In a transaction, after other writes: all of it is rolled back.
    with pytest.raises(ps.DuplicateRecordError):
        with store.transaction():
            store.record_energy(ps.EnergyRecord(node_id="n", session_id="dup"))
            store.record_node_state(ps.NodeStateRecord(node_id="n", session_id="dup", state="S"))
            write_row(store, duplicate)
    assert _counts(store) == before
    assert store.verify_session("dup").ok
    # The store is still fine, and the original row is untouched.
    store.record_energy(ps.EnergyRecord(node_id="n", session_id="dup", v_total=2.0))
    assert [e.v_total for e in store.get_energy_history("dup", "n")] == [2.0]


def test_a_key_repeated_within_one_batch_writes_nothing(keyed_store: ps.SessionStore) -> None:
    store = keyed_store
    before = _counts(store)
    new = ps.FeatureCharterRow(charter_id="new", session_id="dup", scope_description="s")
    with pytest.raises(ps.DuplicateRecordError):
        store.record_many([new, ps.EnergyRecord(node_id="n", session_id="dup"), new])
    assert _counts(store) == before

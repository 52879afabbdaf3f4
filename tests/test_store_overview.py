"""``perspt_store.store.overview``: the set-based reads behind the dashboard and the CLI.

The pages built on them are tested in ``tests/test_web.py`` (against the getters, and on a
file upstream wrote); here, what the functions themselves promise.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import perspt_store as ps
from perspt_store.schema import TABLES
from perspt_store.store import overview
from upstream_files import write_upstream_05


def test_table_counts_count_every_table_and_none_for_one_a_file_lacks(tmp_path: Path) -> None:
    uf = write_upstream_05(tmp_path / "old.db")
    with ps.SessionStore.open_read_only(uf.path) as store, store.consistent_read():
        counts = overview.table_counts(store)
        assert list(counts) == list(TABLES)
        missing = [t for t, n in counts.items() if n is None]
        assert missing and set(missing).isdisjoint(uf.tables)
        for table in uf.tables:
            if table in counts:
                assert counts[table] == len(uf.rows(table))
        # the read stays usable: no failed statement aborted the snapshot
        assert overview.session_ids(store) == list(uf.session_ids)


def test_session_row_counts_count_per_table(store: ps.SessionStore, session: str) -> None:
    store.record_energy(ps.EnergyRecord(node_id="n", session_id=session, v_total=1.0))
    store.record_energy(ps.EnergyRecord(node_id="n", session_id=session, v_total=0.5))
    assert overview.session_row_counts(store, session, ["energy_history", "node_states"]) == {
        "energy_history": 2, "node_states": 0,
    }


@pytest.mark.parametrize("tables", [["sessions"], ["no_such_table"], ["node_states; DROP"]])
def test_session_row_counts_refuse_names_that_are_not_session_tables(
    store: ps.SessionStore, session: str, tables: list[str]
) -> None:
    with pytest.raises(ValueError, match="not per-session tables"):
        overview.session_row_counts(store, session, tables)


def test_energy_series_refuses_a_column_energy_history_lacks(
    store: ps.SessionStore, session: str
) -> None:
    with pytest.raises(ValueError, match="not energy_history columns"):
        overview.energy_series(store, session, ["v_total", "1; DROP TABLE sessions"])


def test_decision_rows_are_the_getters_rows(store: ps.SessionStore, session: str) -> None:
    for attempt in (2, 1):
        store.record_verification_result(ps.VerificationResultRow(
            session_id=session, node_id=f"n{attempt}", syntax_ok=True, build_ok=True,
            tests_ok=attempt == 1, result_json="{}"))
    store.record_verification_result(ps.VerificationResultRow(
        session_id=session, node_id="n2", syntax_ok=False, build_ok=True, tests_ok=True,
        result_json="{}"))
    rows = overview.decision_rows(store, "verification_results", session)
    getter = store.get_all_verification_results(session)
    assert [(r["node_id"], r["syntax_ok"], r["id"]) for r in rows] == [
        (g.node_id, g.syntax_ok, g.id) for g in getter
    ]
    with pytest.raises(KeyError):
        overview.decision_rows(store, "sessions", session)

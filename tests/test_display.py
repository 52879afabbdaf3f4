"""Rich display in Jupyter: ``_repr_html_`` and a readable ``__repr__`` for rows, sessions,
snapshots, summaries, verification and lake reports; every value escaped and shortened."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import perspt_store as ps
from perspt_store import _display
from perspt_store.demo import ESCALATED_NODE, record_demo_session

HOSTILE = "<script>alert('x')</script> & \"q\""


def visible(markup: str) -> str:
    """The text a reader sees: tags and the style sheet removed, entities decoded."""
    markup = re.sub(r"<style>.*?</style>", "", markup, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", markup))


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[ps.SessionStore, str]]:
    with ps.SessionStore.in_memory() as store:
        yield store, record_demo_session(store, seed=0)


# --- rows ---------------------------------------------------------------------------------------


def test_a_row_renders_as_a_field_table_with_its_database_columns(
    demo: tuple[ps.SessionStore, str],
) -> None:
    store, sid = demo
    session = store.get_session(sid)
    assert session is not None
    markup = session._repr_html_()
    assert "SessionRecord (sessions)" in markup
    text = visible(markup)
    for name in ("session_id", "task", "status", "merkle_root", "created_at", "updated_at"):
        assert name in text
    assert sid in text and "COMPLETED" in text
    assert session.merkle_root is not None
    assert session.merkle_root.hex()[:16] + "…" in text
    assert f'title="{session.merkle_root.hex()}"' in markup  # the full hash on hover
    state = store.get_latest_node_states(sid)[0]
    assert re.search(r"<th>id</th><td>\d+</td>", state._repr_html_())


def test_row_values_are_escaped_and_long_text_is_cut() -> None:
    row = ps.LlmRequestRecord(session_id=HOSTILE, node_id=None, model="m",
                              prompt="p" * 1_000_000, response="")
    markup = row._repr_html_()
    assert "<script>" not in markup and "&lt;script&gt;" in markup
    assert len(markup) < 5_000
    text = visible(markup)
    assert "(1,000,000 chars)" in text and HOSTILE in text
    assert re.search(r"<th>node_id</th><td><span class=\"none\">—</span></td>", markup)
    assert "(empty)" not in text  # "" is text, not bytes: shown as an empty cell


@settings(max_examples=200, deadline=None)
@given(value=st.one_of(st.text(), st.binary(), st.none(), st.floats(allow_nan=False),
                       st.lists(st.text(max_size=5), max_size=5), st.booleans(),
                       st.integers()))
def test_a_cell_is_inert_and_bounded(value: object) -> None:
    markup = _display.cell(value)
    assert not re.search(r"<(?!/?span\b)", markup)  # no tag but our own spans
    assert len(visible(markup)) <= _display.TEXT_LIMIT + 40
    if isinstance(value, str):  # what is shown is the text itself (maybe cut), unaltered
        assert html.unescape(re.sub(r"<[^>]+>", "", markup)).startswith(
            value[: _display.TEXT_LIMIT - 1])


def test_tables_say_how_many_rows_they_left_out() -> None:
    markup = _display.table_html([[i] for i in range(75)], ["n"])
    assert "… 25 more rows" in visible(markup)
    assert markup.count("<tr>") == 1 + 50 + 1
    assert "(none)" in visible(_display.table_html([], ["n"]))


# --- verification -----------------------------------------------------------------------------


def test_verification_report_repr_and_html(tmp_path: Path) -> None:
    with ps.SessionStore.in_memory() as store:
        sid = record_demo_session(store, seed=1)
        report = store.verify_session(sid)
        text = repr(report)
        assert text.startswith(f"<VerificationReport {sid} OK: 5 commits, log root ")
        assert "\n" not in text and report.log_root.hex()[:16] in text
        assert text.endswith("…>") and "note" not in text
        store.update_merkle_root(sid, bytes(32))  # an override: a note, still OK
        report = store.verify_session(sid)
        assert repr(report).endswith(", 1 note>")
        markup = report._repr_html_()
        assert 'class="badge ok">OK<' in markup and "Notes" in markup
        assert "update_merkle_root" in visible(markup)
        store.sql("UPDATE node_states SET state = ? WHERE node_id = ?",
                  [HOSTILE, ESCALATED_NODE])
        broken = store.verify_session(sid)
        assert repr(broken).startswith(f"<VerificationReport {sid} FAILED")
        markup = broken._repr_html_()
        assert 'class="badge bad">FAILED<' in markup
        assert "edited" in visible(markup) and ESCALATED_NODE in visible(markup)


# --- snapshots and summaries ------------------------------------------------------------------


def test_session_snapshot_repr_and_html(demo: tuple[ps.SessionStore, str]) -> None:
    store, sid = demo
    snapshot = store.load_session_snapshot(sid)
    assert repr(snapshot) == (
        f"<SessionSnapshot {sid}: 5 nodes, 6 edges, 3 branches, 1 escalation, 1 flush, "
        f"budget {snapshot.budget.steps_used}/80 steps>"  # type: ignore[union-attr]
    )
    text = visible(snapshot._repr_html_())
    assert f"Snapshot of session {sid}" in text
    for detail in snapshot.node_details:
        assert detail.node_id in text
    assert "verified" in text and "budget" in text and "steps" in text


def test_node_review_summary_repr_and_html(demo: tuple[ps.SessionStore, str]) -> None:
    store, sid = demo
    summary = store.node_review_summary(sid, ESCALATED_NODE)
    latest = summary.latest_energy
    assert latest is not None
    assert repr(summary) == (
        f"<NodeReviewSummary {ESCALATED_NODE}: {len(summary.energy_history)} energy "
        f"measurements (latest V={latest.v_total:.4g}), 1 escalation, 1 sheaf validation, "
        f"0 seals, 0 branches>"
    )
    text = visible(summary._repr_html_())
    assert f"Review of node {ESCALATED_NODE}" in text and "Escalations" in text
    assert "V_total" in text and f"{latest.v_total:.6g}" in text


def test_session_review_summary_repr_and_html(demo: tuple[ps.SessionStore, str]) -> None:
    store, sid = demo
    summary = store.session_summary(sid)
    assert repr(summary) == (
        f"<SessionReviewSummary {sid}: 5 nodes (5 completed, 0 failed, 0 escalated), "
        f"total V={summary.total_energy:.4g}, 3 branches, "
        f"{len(store.get_all_review_outcomes(sid))} reviews>"
    )
    markup = summary._repr_html_()
    assert 'class="badge ok">all completed<' in markup
    text = visible(markup)
    assert "Latest energy per node" in text
    assert f"{summary.review_total}: {summary.reviews_approved} approved" in text


def test_a_failing_session_summary_needs_attention() -> None:
    with ps.SessionStore.in_memory() as store:
        store.create_session(ps.SessionRecord(session_id=HOSTILE, task="t", working_dir="/w"))
        store.record_node_state(ps.NodeStateRecord(session_id=HOSTILE, node_id=HOSTILE,
                                                   state="FAILED"))
        markup = store.session_summary(HOSTILE)._repr_html_()
        assert "needs attention" in markup and "<script>" not in markup
        assert "<script>" not in store.load_session_snapshot(HOSTILE)._repr_html_()


# --- lake reports -----------------------------------------------------------------------------


def test_export_and_import_reports_render(demo: tuple[ps.SessionStore, str], tmp_path: Path
                                          ) -> None:
    store, sid = demo
    exported = ps.export_parquet(store, tmp_path / "lake")
    text = visible(exported._repr_html_())
    assert f"Exported 1 sessions to {tmp_path / 'lake'}" in text and sid in text
    with ps.SessionStore.in_memory() as central:
        imported = ps.import_lake(central, tmp_path / "lake")
        assert repr(imported) == f"<ImportReport from {tmp_path / 'lake'}: 1 imported>"
        assert 'class="badge ok">imported<' in imported._repr_html_()
        again = ps.import_lake(central, tmp_path / "lake")
        assert repr(again).endswith(": 1 skipped>")
        assert "already in the store, identical" in visible(again._repr_html_())

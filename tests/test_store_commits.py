"""The session commit log: commits, roots, proofs, checkpoints, tamper detection, rollback."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import log_tamper
import perspt_store as ps
from conftest import add_session, spy_statements
from perspt_store import merkle
from perspt_store.store.commits import Checkpoint

KEY = bytes(range(32))


def node(
    session: str, node_id: str, state: str = "Completed", **fields: object
) -> ps.NodeStateRecord:
    return ps.NodeStateRecord(session_id=session, node_id=node_id, state=state, **fields)  # type: ignore[arg-type]


def commit_some(store: ps.SessionStore, session: str, n: int = 6) -> list[ps.NodeStateRecord]:
    rows = [
        node(session, f"n{i % 3}", state=f"s{i}", v_total=1.0 / (i + 1), attempt_count=i)
        for i in range(n)
    ]
    for row in rows:
        store.record_node_state(row)
    return rows


# --- commits and roots ------------------------------------------------------------------


def test_each_commit_reports_its_seq_and_roots_and_sets_merkle_root(
    store: ps.SessionStore, session: str
) -> None:
    first = store.record_node_state(node(session, "a"))
    second = store.record_node_state(node(session, "b", v_total=0.5))
    assert (first.seq, first.log_size, second.seq, second.log_size) == (0, 1, 1, 2)
    assert first.leaf_hash == merkle.hash_node_state(node(session, "a"))
    assert second.state_root == store.state_root(session)
    assert second.log_root == store.log_root(session) == store.log_root(session, 2)
    assert first.log_root == store.log_root(session, 1)
    session_row = store.get_session(session)
    assert session_row is not None and session_row.merkle_root == second.state_root


def test_a_commit_is_one_statement(
    store: ps.SessionStore, session: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.record_node_state(node(session, "a"))  # loads the session's log once
    seen = spy_statements(store, monkeypatch)
    store.record_node_state(node(session, "b"))
    assert len(seen) == 1, seen
    assert seen[0].startswith("WITH node AS (INSERT INTO node_states")


def test_a_commit_that_fails_half_way_writes_nothing_and_the_next_one_works(
    store: ps.SessionStore, session: str
) -> None:
    """The node row, the log entry and the new root commit together or not at all."""
    first = store.record_node_state(node(session, "a"))
    # A forged entry took the next log position behind the store's back: the log entry of
    # the next commit collides with it after its node row was inserted, and the reloaded
    # log holds a leaf no commit could have written.
    store.sql(
        "INSERT INTO merkle_log_detached (session_id, seq, node_state_id, node_id, kind, "
        "leaf_hash, "
        "state_root, log_root) VALUES (?, 1, 0, 'x', 'commit', ?, ?, ?)",
        params=[session, b"x", b"x", b"x"],
    ).fetchall()
    with pytest.raises(ps.IntegrityError, match="did not write"):
        store.record_node_state(node(session, "b"))
    assert [r.node_id for r in store.get_node_states(session)] == ["a"]
    session_row = store.get_session(session)
    assert session_row is not None and session_row.merkle_root == first.state_root

    store.sql(
        "DELETE FROM merkle_log_detached WHERE session_id = ? AND seq = 1", [session]
    ).fetchall()
    second = store.record_node_state(node(session, "b"))
    assert second.seq == 1
    assert store.verify_session(session).ok


def test_state_root_is_the_tree_over_latest_states_by_node_id(
    store: ps.SessionStore, session: str
) -> None:
    commit_some(store, session, 7)
    latest = sorted(store.get_latest_node_states(session), key=lambda r: r.node_id)
    expected = merkle.tree_root([merkle.hash_node_state(r) for r in latest])
    assert store.state_root(session) == expected


def test_same_states_give_the_same_root_whatever_the_order_or_session(
    store: ps.SessionStore,
) -> None:
    one, two = add_session(store, "one"), add_session(store, "two")
    for node_id in ["x", "y", "z"]:
        store.record_node_state(node(one, node_id, state="draft"))
        store.record_node_state(node(one, node_id))
    for node_id in ["z", "x", "y"]:
        store.record_node_state(node(two, node_id))
    assert store.state_root(one) == store.state_root(two)
    assert store.log_root(one) != store.log_root(two)  # the histories differ


def test_empty_session_has_the_empty_root(store: ps.SessionStore, session: str) -> None:
    assert store.state_root(session) == merkle.empty_root()
    assert store.get_commit_log(session) == []
    assert store.verify_session(session).ok


def test_commit_to_unknown_session_writes_nothing(store: ps.SessionStore) -> None:
    with pytest.raises(ps.SessionNotFoundError):
        store.record_node_state(node("ghost", "a"))
    assert store.sql("SELECT count(*) FROM merkle_log").fetchall() == [(0,)]
    assert store.sql("SELECT count(*) FROM node_states").fetchall() == [(0,)]


def test_reading_the_log_of_an_unknown_session_raises(store: ps.SessionStore) -> None:
    for call in (store.state_root, store.log_root, store.get_commit_log, store.verify_session):
        with pytest.raises(ps.SessionNotFoundError):
            call("ghost")


def test_a_rolled_back_transaction_leaves_the_log_untouched(
    store: ps.SessionStore, session: str
) -> None:
    commit_some(store, session, 3)
    with pytest.raises(RuntimeError), store.transaction():
        store.record_node_state(node(session, "phantom"))
        raise RuntimeError("abort")
    nxt = store.record_node_state(node(session, "real"))
    assert nxt.seq == 3
    assert [c.node_id for c in store.get_commit_log(session)][-1] == "real"
    assert store.verify_session(session).ok


def test_commits_from_threads_form_one_contiguous_log(store: ps.SessionStore, session: str) -> None:
    def worker(t: int) -> None:
        for i in range(40):
            store.record_node_state(node(session, f"t{t}-n{i % 5}", state=f"s{i}"))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log = store.get_commit_log(session)
    assert [c.seq for c in log] == list(range(160))
    report = store.verify_session(session)
    assert report.ok, report.problems
    assert report.log_size == 160


def test_log_survives_reopening_a_file(db_path: Path) -> None:
    with ps.SessionStore.open(db_path) as store:
        session = add_session(store, "s")
        commit_some(store, session, 4)
        root_before = store.state_root(session)
    with ps.SessionStore.open(db_path) as store:
        assert store.state_root(session) == root_before
        c = store.record_node_state(node(session, "later"))
        assert c.seq == 4
        assert store.verify_session(session).ok


# --- proofs -----------------------------------------------------------------------------


def test_every_commit_has_an_inclusion_proof_that_verifies(
    store: ps.SessionStore, session: str
) -> None:
    commit_some(store, session, 9)
    root = store.log_root(session)
    for seq, commit in enumerate(store.get_commit_log(session)):
        proof = store.inclusion_proof(session, seq)
        assert proof.leaf_hash == commit.leaf_hash
        assert proof.log_root == root
        assert proof.verify()
        assert merkle.verify_inclusion(proof.leaf_hash, seq, 9, proof.path, root)
        historic = store.inclusion_proof(session, seq, size=seq + 1)
        assert historic.log_root == commit.log_root and historic.verify()


def test_a_proof_for_another_leaf_does_not_verify(store: ps.SessionStore, session: str) -> None:
    commit_some(store, session, 5)
    proof = store.inclusion_proof(session, 2)
    forged = proof.model_copy(update={"leaf_hash": store.inclusion_proof(session, 3).leaf_hash})
    assert not forged.verify()


def test_consistency_proofs_between_every_pair_of_sizes(
    store: ps.SessionStore, session: str
) -> None:
    commit_some(store, session, 7)
    for old in range(8):
        for new in range(old, 8):
            proof = store.consistency_proof(session, old, new)
            assert proof.verify(), (old, new)


@pytest.mark.parametrize("seq", [-1, 3, 99])
def test_out_of_range_proofs_raise_value_error(
    store: ps.SessionStore, session: str, seq: int
) -> None:
    commit_some(store, session, 3)
    with pytest.raises(ValueError):
        store.inclusion_proof(session, seq)
    with pytest.raises(ValueError):
        store.consistency_proof(session, 2, 1)


# --- checkpoints ------------------------------------------------------------------------


def test_checkpoint_round_trips_through_json_and_checks_its_mac(
    store: ps.SessionStore, session: str
) -> None:
    commit_some(store, session, 4)
    checkpoint = store.checkpoint(session, key=KEY)
    parsed = Checkpoint.from_json(checkpoint.to_json())
    assert parsed == checkpoint
    assert parsed.size == 4 and parsed.log_root == store.log_root(session)
    assert parsed.state_root == store.state_root(session)
    assert parsed.verify_mac(KEY)
    assert not parsed.verify_mac(bytes(32))
    tampered = parsed.model_copy(update={"size": 3})
    assert not tampered.verify_mac(KEY)


def test_checkpoint_rejects_bad_keys_and_bad_json(store: ps.SessionStore, session: str) -> None:
    with pytest.raises(ValueError):
        store.checkpoint(session, key=b"short")
    with pytest.raises(ValueError):
        Checkpoint.from_json('{"scheme": 1}')


def test_the_log_still_extends_an_older_checkpoint(store: ps.SessionStore, session: str) -> None:
    commit_some(store, session, 4)
    checkpoint = store.checkpoint(session, key=KEY)
    commit_some(store, session, 5)
    report = store.verify_session(session, against=checkpoint, key=KEY)
    assert report.ok, report.problems


def test_a_rewritten_history_no_longer_extends_the_checkpoint(
    store: ps.SessionStore, session: str
) -> None:
    commit_some(store, session, 4)
    checkpoint = store.checkpoint(session)
    store.sql("UPDATE node_states SET goal = 'rewritten' WHERE id = 1").fetchall()
    report = store.verify_session(session, against=checkpoint)
    assert {p.kind for p in report.problems} >= {"edited", "checkpoint"}


def test_a_checkpoint_larger_than_the_log_is_reported(store: ps.SessionStore, session: str) -> None:
    commit_some(store, session, 2)
    checkpoint = store.checkpoint(session).model_copy(update={"size": 5})
    assert [p.kind for p in store.verify_session(session, against=checkpoint).problems] == [
        "checkpoint"
    ]


# --- tamper detection -------------------------------------------------------------------


def kinds(store: ps.SessionStore, session: str) -> set[str]:
    return {p.kind for p in store.verify_session(session).problems}


def test_an_intact_session_verifies(store: ps.SessionStore, session: str) -> None:
    commit_some(store, session)
    report = store.verify_session(session)
    assert report.ok and bool(report) and report.problems == [] and report.notes == []
    assert report.log_size == 6
    assert report.state_root == store.state_root(session)


def test_an_edited_node_state_is_reported_with_its_seq(
    store: ps.SessionStore, session: str
) -> None:
    commit_some(store, session)
    store.sql("UPDATE node_states SET v_total = 42 WHERE id = 3").fetchall()
    report = store.verify_session(session)
    edited = [p for p in report.problems if p.kind == "edited"]
    assert [(p.seq, p.node_id) for p in edited] == [(2, "n2")]
    assert not report.ok


def test_a_deleted_node_state_is_reported(store: ps.SessionStore, session: str) -> None:
    commit_some(store, session)
    store.sql("DELETE FROM node_states WHERE id = 2").fetchall()
    assert "deleted" in kinds(store, session)


def test_an_inserted_node_state_is_reported(store: ps.SessionStore, session: str) -> None:
    commit_some(store, session)
    store.sql(
        "INSERT INTO node_states (node_id, session_id, state) VALUES ('sneaky', ?, 'Completed')",
        [session],
    ).fetchall()
    assert "inserted" in kinds(store, session)


def test_reordered_node_states_are_reported(store: ps.SessionStore, session: str) -> None:
    commit_some(store, session)
    log_tamper.swap_entries(store.sql, session, 1, 2)  # which rows entries 1 and 2 ride on
    assert "reordered" in kinds(store, session)


def test_a_forged_log_entry_is_reported(store: ps.SessionStore, session: str) -> None:
    commit_some(store, session)
    log_tamper.set_field(store.sql, session, 4, "log_root", bytes(32))
    report = store.verify_session(session)
    assert [(p.kind, p.seq) for p in report.problems] == [("forged", 4)]


def test_a_deleted_log_entry_is_reported(store: ps.SessionStore, session: str) -> None:
    commit_some(store, session)
    log_tamper.delete_entry(store.sql, session, 2)
    assert {"deleted", "inserted"} <= kinds(store, session)


def test_a_merkle_root_changed_behind_the_store_is_corruption(
    store: ps.SessionStore, session: str
) -> None:
    commit_some(store, session)
    store.sql(
        "UPDATE sessions SET merkle_root = ? WHERE session_id = ?", [bytes(32), session]
    ).fetchall()
    assert kinds(store, session) == {"root-mismatch"}


def test_update_merkle_root_is_a_note_not_corruption(store: ps.SessionStore, session: str) -> None:
    commit_some(store, session)
    store.update_merkle_root(session, b"\x07" * 32)
    report = store.verify_session(session)
    assert report.ok
    assert len(report.notes) == 1 and "update_merkle_root" in report.notes[0]
    store.record_node_state(node(session, "after"))  # a commit sets the state root again
    assert store.verify_session(session).notes == []


# --- rollback ---------------------------------------------------------------------------


def test_rollback_restores_the_states_and_root_of_the_target(
    store: ps.SessionStore, session: str
) -> None:
    commit_some(store, session, 6)
    target = store.get_commit_log(session)[2]
    history_before = len(store.get_node_states(session))
    head = store.rollback(session, to_seq=2)
    assert store.state_root(session) == target.state_root
    assert head.state_root == target.state_root
    assert len(store.get_node_states(session)) > history_before  # appended, not deleted
    assert [c.kind for c in store.get_commit_log(session)][6:] == ["restore"] * (head.seq - 5)
    assert store.verify_session(session).ok


def test_rollback_makes_resume_see_the_target_states(store: ps.SessionStore, session: str) -> None:
    store.record_node_state(node(session, "a", state="v1"))
    store.record_node_state(node(session, "b", state="v1"))
    snapshot = store.get_latest_node_states(session)
    store.record_node_state(node(session, "a", state="v2"))
    store.record_node_state(node(session, "c", state="v1"))
    store.rollback(session, to_seq=1)
    latest = store.get_latest_node_states(session)
    assert sorted(latest, key=lambda r: r.node_id) == sorted(snapshot, key=lambda r: r.node_id)
    kinds_appended = [c.kind for c in store.get_commit_log(session)][4:]
    assert sorted(kinds_appended) == ["remove", "restore"]  # c removed, a restored


@settings(max_examples=25, deadline=None)
@given(
    history=st.lists(
        st.tuples(st.sampled_from("abcd"), st.sampled_from(["v1", "v2", "v3"])),
        min_size=1,
        max_size=12,
    ),
    data=st.data(),
)
def test_rollback_plan_is_what_rollback_appends_and_writes_nothing(
    history: list[tuple[str, str]], data: st.DataObject
) -> None:
    with ps.SessionStore.in_memory() as store:
        add_session(store, "s")
        for node_id, state in history:
            store.record_node_state(node("s", node_id, state=state))
        target = data.draw(st.integers(0, len(history) - 1), label="to_seq")
        log_before = store.get_commit_log("s")
        plan = store.rollback_plan("s", to_seq=target)
        assert store.get_commit_log("s") == log_before  # a plan writes nothing
        store.rollback("s", to_seq=target)
        appended = store.get_commit_log("s")[len(log_before):]
        assert [(c.node_id, c.kind) for c in plan] == [(c.node_id, c.kind) for c in appended]
        latest = {r.node_id: r.state for r in store.get_latest_node_states("s")}
        for change in plan:
            if change.kind == "restore":
                assert latest[change.node_id] == change.record.state
            else:
                assert change.node_id not in latest
        assert store.rollback_plan("s", to_seq=target) == []  # already there


def test_rollback_plan_refuses_what_rollback_refuses(store: ps.SessionStore, session: str) -> None:
    commit_some(store, session, 3)
    with pytest.raises(ps.RecordNotFoundError, match="nothing changed"):
        store.rollback_plan(session, to_seq=3)
    with pytest.raises(ValueError, match="exactly one"):
        store.rollback_plan(session)


def test_rollback_by_state_root(store: ps.SessionStore, session: str) -> None:
    commit_some(store, session, 5)
    target = store.get_commit_log(session)[1].state_root
    store.rollback(session, to_root=target)
    assert store.state_root(session) == target


def test_rollback_to_the_current_state_appends_nothing(
    store: ps.SessionStore, session: str
) -> None:
    commit_some(store, session, 3)
    head = store.rollback(session, to_seq=2)
    assert head.seq == 2 and len(store.get_commit_log(session)) == 3


@pytest.mark.parametrize("target", [{"to_seq": 10}, {"to_seq": -1}, {"to_root": bytes(32)}])
def test_rollback_to_an_unknown_target_changes_nothing(
    store: ps.SessionStore, session: str, target: dict[str, object]
) -> None:
    commit_some(store, session, 3)
    before = store.get_commit_log(session)
    with pytest.raises(ps.RecordNotFoundError):
        store.rollback(session, **target)  # type: ignore[arg-type]
    assert store.get_commit_log(session) == before


def test_rollback_needs_exactly_one_target(store: ps.SessionStore, session: str) -> None:
    with pytest.raises(ValueError):
        store.rollback(session)
    with pytest.raises(ValueError):
        store.rollback(session, to_seq=0, to_root=bytes(32))


def test_commits_after_a_rollback_continue_the_log(store: ps.SessionStore, session: str) -> None:
    commit_some(store, session, 4)
    store.rollback(session, to_seq=0)
    c = store.record_node_state(node(session, "n9"))
    assert c.seq == len(store.get_commit_log(session)) - 1
    assert store.verify_session(session).ok


# --- verify_session(against=...) and overrides: only what is true is excused ----------------


def test_a_checkpoint_of_another_session_does_not_verify_this_one(
    store: ps.SessionStore, session: str
) -> None:
    key = bytes(range(32))
    other = add_session(store, "other")
    store.record_node_state(node(other, "a"))
    checkpoint = store.checkpoint(other, key=key)
    store.record_node_state(node(session, "a"))  # the same first commit: b extends a's log
    store.record_node_state(node(session, "b"))
    assert store.verify_session(other, against=checkpoint, key=key).ok
    report = store.verify_session(session, against=checkpoint, key=key)
    assert not report.ok
    assert [p.kind for p in report.problems] == ["checkpoint"]
    assert "other" in report.problems[0].detail


def test_a_macd_checkpoint_verified_without_a_key_says_so(
    store: ps.SessionStore, session: str
) -> None:
    store.record_node_state(node(session, "a"))
    signed = store.checkpoint(session, key=bytes(32))
    report = store.verify_session(session, against=signed)
    assert report.ok
    assert any("MAC" in note and "not checked" in note for note in report.notes)
    unsigned = store.checkpoint(session)
    assert not any("MAC" in n for n in store.verify_session(session, against=unsigned).notes)


def test_only_the_current_override_is_excused(store: ps.SessionStore, session: str) -> None:
    forged = bytes([7]) * 32
    store.record_node_state(node(session, "a"))
    store.update_merkle_root(session, forged)
    assert store.verify_session(session).ok  # a note: set by update_merkle_root
    store.record_node_state(node(session, "b"))  # the commit sets the state root again
    assert store.verify_session(session).ok
    store.sql("UPDATE sessions SET merkle_root = ? WHERE session_id = ?", [forged, session])
    report = store.verify_session(session)
    assert [p.kind for p in report.problems] == ["root-mismatch"]
    assert not any("update_merkle_root" in note for note in report.notes)
    store.update_merkle_root(session, forged)  # set through the API again: excused again
    assert store.verify_session(session).ok


def test_a_key_against_an_unsigned_checkpoint_says_it_has_no_mac(
    store: ps.SessionStore, session: str
) -> None:
    store.record_node_state(node(session, "a"))
    unsigned = store.checkpoint(session)
    report = store.verify_session(session, against=unsigned, key=bytes(32))
    assert [p.detail for p in report.problems] == [
        "the checkpoint has no MAC to check the key against"
    ]
    with pytest.raises(ValueError, match="32 bytes, not 5"):
        store.verify_session(session, against=unsigned, key=b"short")

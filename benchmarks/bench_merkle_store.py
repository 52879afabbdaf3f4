"""The Merkle commit log inside the store.

* ``record_node_state`` (the row carrying its commit-log entry, and the state root, in one
  statement) in a session of N nodes, vs a bare parameterised INSERT of the same node row
  (autocommit) into a database of the same size: the difference is the commit log's
  overhead. The floor is the store's statement in raw SQL with precomputed hashes (the node
  row with its packed entry and the ``UPDATE sessions`` in one statement, a data-modifying
  CTE): DuckDB's own cost for the same work;
* ``verify_session`` of a session with C commits (every leaf and root recomputed from the
  stored rows).

Run alone: ``python benchmarks/bench_merkle_store.py [--quick]``; only the raw-SQL commit
layouts: ``--layouts ROUNDS``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
from _common import (
    SESSION,
    fmt_seconds,
    fresh_path,
    gc_paused,
    node_state,
    per_call,
    print_table,
    session_record,
    time_calls,
)

import perspt_store as ps
from perspt_store._mapping import table_map
from perspt_store.schema import MERKLE_LOG_SQL
from perspt_store.store.commits import _COMMIT_ONE_SQL as COMMIT_ONE_SQL

# Schema 4's statement (three tables: the node row, a merkle_log row, the root), kept here
# to compare against: the store wrote it until the log moved onto the rows.
_MAPPING = table_map(ps.NodeStateRecord)
THREE_TABLES_SQL = (
    f"WITH node AS ({_MAPPING.insert_sql} RETURNING id), "
    "entry AS (INSERT INTO merkle_log (session_id, seq, node_state_id, node_id, kind, "
    "leaf_hash, state_root, log_root) SELECT ?, ?, node.id, ?, ?, ?, ?, ? FROM node "
    "RETURNING seq) "
    "UPDATE sessions SET merkle_root = ?, updated_at = now() WHERE session_id = ?"
)
ENTRY = bytes(105)  # a packed log entry's size (commits.pack_commit)


def bench_commit(root: Path, nodes: int, calls: int) -> dict[str, Any]:
    """record_node_state of existing nodes, interleaved call by call with a bare INSERT of the
    same row and the store's statement in raw SQL."""
    seed = [session_record(), *(node_state(n, 0) for n in range(nodes))]
    with ps.SessionStore.open(fresh_path(root, f"commit_{nodes}.db"),
                              publish_interval=None) as store:
        store.record_many(seed)
        bare = duckdb.connect(str(fresh_path(root, f"commit_bare_{nodes}.db")))
        ps.init_schema(bare)
        bare.execute("INSERT INTO sessions (session_id, task, working_dir) VALUES (?, 't', '/')",
                     [SESSION])
        mapping = table_map(ps.NodeStateRecord)
        bare.execute(mapping.bulk_insert_sql, mapping.encode_columns(seed[1:]))
        floor_conn = duckdb.connect(str(fresh_path(root, f"commit_floor_{nodes}.db")))
        ps.init_schema(floor_conn)
        floor_conn.execute(
            "INSERT INTO sessions (session_id, task, working_dir) VALUES (?, 't', '/')", [SESSION]
        )
        floor_conn.execute(mapping.bulk_insert_sql, mapping.encode_columns(seed[1:]))
        updates = [node_state(i % nodes, 1 + i // nodes % 4) for i in range(calls + 50)]
        params = [mapping.encode(row) for row in updates]
        ours_it, bare_it, floor_it = iter(updates), iter(params), iter(params)
        digest = bytes(32)

        def floor_commit() -> None:  # the store's statement, without hashing or Python layers
            floor_conn.execute(COMMIT_ONE_SQL, [*next(floor_it), ENTRY, digest, SESSION])
            floor_conn.fetchall()

        for _ in range(25):  # warm up
            store.record_node_state(next(ours_it))
            bare.execute(mapping.insert_sql, next(bare_it)).fetchall()
            floor_commit()
        # One call of each a round, in a shuffled order: a change in the machine's load hits
        # all three alike.
        calls_of: dict[str, Any] = {
            "ours": lambda: store.record_node_state(next(ours_it)),
            "bare": lambda: bare.execute(mapping.insert_sql, next(bare_it)).fetchall(),
            "floor": floor_commit,
        }
        times: dict[str, list[float]] = {name: [] for name in calls_of}
        order = list(calls_of)
        shuffle = random.Random(14).shuffle
        with gc_paused():
            for _ in range(calls):
                shuffle(order)
                for name in order:
                    start = time.perf_counter()
                    calls_of[name]()
                    times[name].append(time.perf_counter() - start)
        ours, theirs, floor = times["ours"], times["bare"], times["floor"]
        bare.close()
        floor_conn.close()
        assert store.verify_session(SESSION).ok
    m_ours, m_bare = statistics.median(ours), statistics.median(theirs)
    paired = statistics.median(a - b for a, b in zip(ours, theirs, strict=True))
    return {"nodes": nodes, "calls": len(ours), "ours_s": m_ours, "bare_s": m_bare,
            "floor_s": statistics.median(floor), "overhead_s": m_ours - m_bare,
            "paired_s": paired}


_CARRY_COLUMNS = ("log_seq INTEGER", "log_kind VARCHAR", "leaf_hash BLOB", "state_root BLOB",
                  "log_root BLOB")
_LOG_TABLE = ("merkle_log table",)


def bench_layouts(root: Path, nodes: int, rounds: int) -> dict[str, Any]:
    """#14 section 3: DuckDB's own cost of a durable commit in each candidate layout, in raw
    SQL with precomputed hashes, side by side with a bare INSERT of the same row. Each
    variant has its own file of ``nodes`` node states (checkpointed after seeding, so every
    file starts alike) and runs autocommit; each round makes one call of every variant, in
    a shuffled order, so a change in the machine's load hits all of them alike. Reported:
    the median per call, its difference from the bare INSERT's median, and the median of
    the per-round differences (the steadier figure on a shared machine).

    * ``bare INSERT + root UPDATE``: the node row and ``UPDATE sessions SET merkle_root,
      updated_at = now()`` in one statement, nothing else: the floor of any layout that
      keeps ``sessions.merkle_root`` equal to the state root after every commit;
    * ``three tables (schema 4)``: the store's statement until schema 5 (node row, a
      ``merkle_log`` row, the root);
    * ``three tables, root only``: the same, the UPDATE setting only ``merkle_root``;
    * ``row carries its commit``: nullable log columns on ``node_states`` (one INSERT) and
      the root UPDATE, in one statement (two tables);
    * ``row carries its commit, root only``: the same, the UPDATE setting only the root;
    * ``row carries its commit, no root``: the INSERT alone (one table; does not keep
      ``sessions.merkle_root``, shown for the floor of the layout);
    * ``row carries a packed commit (schema 5)``: the same two, the log entry packed into
      one BLOB column (105 bytes) instead of five: the store's statement since schema 5.
    """
    mapping = table_map(ps.NodeStateRecord)
    seed = mapping.encode_columns([node_state(n, 0) for n in range(nodes)])
    insert_cols = ", ".join(mapping.columns)
    marks = ", ".join("?" for _ in mapping.columns)
    carry = f"INSERT INTO node_states ({insert_cols}, log_seq, log_kind, leaf_hash, " \
        f"state_root, log_root) VALUES ({marks}, ?, ?, ?, ?, ?)"
    packed = f"INSERT INTO node_states ({insert_cols}, merkle_commit) VALUES ({marks}, ?)"
    update = "UPDATE sessions SET merkle_root = ?, updated_at = now() WHERE session_id = ?"
    root_only = "UPDATE sessions SET merkle_root = ? WHERE session_id = ?"
    cte_root_only = THREE_TABLES_SQL.replace(", updated_at = now()", "")
    assert cte_root_only != THREE_TABLES_SQL
    digest, entry = bytes(32), ENTRY
    seq = iter(range(10**9))

    def conn_for(name: str, extra: tuple[str, ...]) -> duckdb.DuckDBPyConnection:
        conn = duckdb.connect(str(fresh_path(root, f"layout_{name}_{nodes}.db")))
        ps.init_schema(conn)
        if extra == _LOG_TABLE:  # schema 4's merkle_log table in place of the view
            conn.execute("DROP VIEW merkle_log")
            conn.execute(MERKLE_LOG_SQL)
        else:
            for column in extra:
                conn.execute(f"ALTER TABLE node_states ADD COLUMN {column}")
        conn.execute("INSERT INTO sessions (session_id, task, working_dir) VALUES (?, 't', '/')",
                     [SESSION])
        conn.execute(mapping.bulk_insert_sql, seed)
        conn.execute("CHECKPOINT")
        return conn

    def log(p: list[Any]) -> list[Any]:
        return [*p, SESSION, next(seq), "node", "commit", digest, digest, digest]

    def carried(p: list[Any]) -> list[Any]:
        return [*p, next(seq), "commit", digest, digest, digest]

    variants: dict[str, tuple[duckdb.DuckDBPyConnection, Any]] = {}
    for number, (name, extra, make) in enumerate([
        ("bare INSERT", (), lambda p: (mapping.insert_sql, p)),
        ("bare INSERT + root UPDATE", (), lambda p: (
            f"WITH node AS ({mapping.insert_sql} RETURNING id) {update}", [*p, digest, SESSION])),
        ("three tables (schema 4)", _LOG_TABLE, lambda p: (
            THREE_TABLES_SQL, [*log(p), digest, SESSION])),
        ("three tables, root only", _LOG_TABLE, lambda p: (
            cte_root_only, [*log(p), digest, SESSION])),
        ("row carries its commit", _CARRY_COLUMNS, lambda p: (
            f"WITH node AS ({carry} RETURNING id) {update}", [*carried(p), digest, SESSION])),
        ("row carries its commit, root only", _CARRY_COLUMNS, lambda p: (
            f"WITH node AS ({carry} RETURNING id) {root_only}", [*carried(p), digest, SESSION])),
        ("row carries its commit, no root", _CARRY_COLUMNS, lambda p: (carry, carried(p))),
        ("row carries a packed commit (schema 5)", (), lambda p: (
            COMMIT_ONE_SQL, [*p, entry, digest, SESSION])),
        ("row carries a packed commit, no root", (), lambda p: (packed, [*p, entry])),
    ]):
        variants[name] = (conn_for(str(number), extra), make)
    params = [mapping.encode(node_state(i % nodes, 1 + i // nodes % 4))
              for i in range(rounds + 25)]
    times: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    shuffle = random.Random(14).shuffle

    def call(name: str, values: list[Any]) -> None:
        conn, make = variants[name]
        conn.execute(*make(values)).fetchall()

    for values in params[:25]:  # warm up
        for name in order:
            call(name, values)
    with gc_paused():
        for values in params[25:]:
            shuffle(order)
            for name in order:
                start = time.perf_counter()
                call(name, values)
                times[name].append(time.perf_counter() - start)
    for conn, _ in variants.values():
        conn.close()
    bare = times["bare INSERT"]
    return {
        "nodes": nodes,
        "rounds": rounds,
        "median_s": {name: statistics.median(t) for name, t in times.items()},
        "paired_s": {name: statistics.median(a - b for a, b in zip(t, bare, strict=True))
                     for name, t in times.items()},
    }


def bench_batched(root: Path, nodes: int, calls: int) -> dict[str, Any]:
    """record_node_state in a durability="batched" store: the commit is computed at the call
    and buffered; row, log entry and root are written by the group flush (timed at the end,
    with whatever the background flusher had not written yet)."""
    seed = [session_record(), *(node_state(n, 0) for n in range(nodes))]
    with ps.SessionStore.open(fresh_path(root, f"batched_{nodes}.db"), publish_interval=None,
                              durability="batched") as store:
        store.record_many(seed)
        rows = iter([node_state(i % nodes, 1 + i // nodes % 4) for i in range(calls + 25)])
        for _ in range(25):
            store.record_node_state(next(rows))
        with gc_paused():
            times = per_call(lambda: store.record_node_state(next(rows)), calls)
        flush = time_calls(store.flush, 1).median
        assert store.verify_session(SESSION).ok
    return {"nodes": nodes, "calls": calls, "call_s": statistics.median(times), "flush_s": flush}


def bench_verify(root: Path, commits: int, repeat: int) -> dict[str, Any]:
    nodes = max(1, commits // 5)
    rows = [session_record(), *(node_state(i % nodes, i // nodes % 5) for i in range(commits))]
    path = fresh_path(root, f"verify_{commits}.db")
    with ps.SessionStore.open(path, publish_interval=None) as store:
        store.record_many(rows)
    with ps.SessionStore.open(path, publish_interval=None) as store:  # cold: caches empty
        report = store.verify_session(SESSION)
        assert report.ok and report.log_size == commits
        timing = time_calls(lambda: store.verify_session(SESSION), repeat)
    return {"commits": commits, "verify_s": timing.median}


def run(quick: bool, root: Path) -> dict[str, Any]:
    sizes = [1000] if quick else [100, 1000, 10_000]
    calls = 300 if quick else 2_000
    commit = [bench_commit(root, n, calls) for n in sizes]
    verify = [bench_verify(root, c, 3 if quick else 5)
              for c in ([1000, 10_000] if quick else [1000, 10_000, 100_000])]
    layouts = bench_layouts(root, 1000, calls)
    batched = bench_batched(root, 1000, calls)
    report(commit, verify)
    report_layouts(layouts)
    print(f"\nrecord_node_state, batched, 1,000-node session: {fmt_seconds(batched['call_s'])} "
          f"per call (median of {batched['calls']}); the last flush "
          f"{fmt_seconds(batched['flush_s'])}")
    return {"commit": commit, "verify": verify, "layouts": layouts, "batched": batched}


def report(commit: list[dict[str, Any]], verify: list[dict[str, Any]]) -> None:
    print_table(
        "Merkle commit log in the store (file stores, medians; targets: overhead <= 1 ms at "
        "1,000 nodes, verify of 10,000 commits <= 1 s)",
        ["workload", "ours", "bare INSERT", "overhead", "paired overhead",
         "same statement in raw SQL"],
        [[f"record_node_state, {c['nodes']:,}-node session", fmt_seconds(c["ours_s"]),
          fmt_seconds(c["bare_s"]), fmt_seconds(c["overhead_s"]), fmt_seconds(c["paired_s"]),
          fmt_seconds(c["floor_s"])]
         for c in commit]
        + [[f"verify_session, {v['commits']:,} commits", fmt_seconds(v["verify_s"]), "", "", "",
            ""]
           for v in verify],
    )


def report_layouts(layouts: dict[str, Any]) -> None:
    medians, paired = layouts["median_s"], layouts["paired_s"]
    bare = medians["bare INSERT"]
    print_table(
        f"Commit layouts in raw SQL, {layouts['nodes']:,}-node session, durable autocommit "
        f"({layouts['rounds']} rounds, every variant once a round in shuffled order; overhead "
        "= minus the bare INSERT of the same row)",
        ["statement", "per call", "overhead", "paired overhead"],
        [[name, fmt_seconds(m)]
         + (["", ""] if name == "bare INSERT"
            else [fmt_seconds(m - bare), fmt_seconds(paired[name])])
         for name, m in medians.items()],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--layouts", type=int, metavar="ROUNDS",
                        help="only the raw-SQL commit layouts, with this many rounds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.layouts:
            report_layouts(bench_layouts(Path(tmp), 1000, args.layouts))
        else:
            run(args.quick, Path(tmp))


if __name__ == "__main__":
    main()

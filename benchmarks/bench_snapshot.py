"""Resume and summaries: ``load_session_snapshot`` vs upstream's per-node query pattern.

The session (see ``_common.session_rows``): per node 5 snapshots, 20 energy rows, 2 sheaf
validations and one each of verification, bundle, seal and provenance, plus one task-graph
edge per node and a budget envelope; built with ``record_many`` (timed too: it is the bulk
path with Merkle commits).

* ours: ``load_session_snapshot`` (12 statements, whatever the size);
* upstream: its ledger's pattern reimplemented with the store's public getters (SPEC §1):
  5 session-wide reads, then 6 per node, then the budget: 5 + 6·N + 1 statements. At 10,000
  nodes it is timed on a sample of nodes and scaled (said so in the output);
* floor: the same 12 SQL statements with ``fetchall()`` only (DuckDB's work plus building
  Python tuples), i.e. what is left if decoding into models were free;
* Arrow floor (the target's yardstick): the same 12 statements fetched as Arrow tables;
* ours, every node touched: the load plus reading every field of every node detail (the
  details are built lazily, on first access);
* peak memory of one load (tracemalloc: Python allocations; DuckDB's own buffers are not
  included; Arrow's buffers, held by a loaded snapshot until its nodes are touched, are
  reported beside it);
* ``session_summary`` and ``node_review_summary`` at each size;
* ``get_session_energy_history`` of 100,000 rows beside its Arrow floor (``--energy``).

Run alone: ``python benchmarks/bench_snapshot.py [--quick] [--nodes 100,1000,10000]
[--energy 100000]``.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import random
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from _common import SESSION, fmt_seconds, fresh_path, print_table, session_rows, time_calls

import perspt_store as ps
from perspt_store._mapping import table_map

SESSION_TABLES = (
    ps.TaskGraphEdgeRow, ps.ProvisionalBranchRow, ps.EscalationReportRecord, ps.BranchFlushRow,
    ps.EnergyRecord, ps.SheafValidationRow, ps.InterfaceSealRow,
)
LATEST_TABLES = (
    ps.NodeStateRecord, ps.VerificationResultRow, ps.ArtifactBundleRow,
    ps.ContextProvenanceRecord,
)


def upstream_node(store: ps.SessionStore, session_id: str,
                  record: ps.NodeStateRecord) -> ps.NodeSnapshotDetail:
    node_id = record.node_id
    return ps.NodeSnapshotDetail(
        record=record,
        energy_history=store.get_energy_history(session_id, node_id),
        verification=store.get_verification_result(session_id, node_id),
        artifact_bundle=store.get_artifact_bundle(session_id, node_id),
        sheaf_validations=store.get_sheaf_validations(session_id, node_id),
        interface_seals=store.get_interface_seals(session_id, node_id),
        context_provenance=store.get_context_provenance(session_id, node_id),
    )


def upstream_snapshot(store: ps.SessionStore, session_id: str,
                      sample: int | None = None) -> tuple[ps.SessionSnapshot, float]:
    """Upstream's ledger load: 5 + 6·N + 1 queries, and its time in seconds. With
    ``sample``, only that many nodes' per-node queries run and their time is scaled to all
    nodes (the per-node queries dominate; each costs about the same)."""
    start = time.perf_counter()
    nodes = store.get_latest_node_states(session_id)
    edges = store.get_task_graph_edges(session_id)
    branches = store.get_provisional_branches(session_id)
    escalations = store.get_escalation_reports(session_id)
    flushes = store.get_branch_flushes(session_id)
    budget = store.get_budget_envelope(session_id)
    session_wide = time.perf_counter() - start
    chosen = nodes if sample is None else random.Random(7).sample(nodes, sample)
    start = time.perf_counter()
    details = [upstream_node(store, session_id, record) for record in chosen]
    per_node = time.perf_counter() - start
    snapshot = ps.SessionSnapshot(session_id, details, edges, branches, escalations, flushes,
                                  budget)
    scale = len(nodes) / len(chosen) if chosen else 1.0
    return snapshot, session_wide + per_node * scale


def floor_queries(store: ps.SessionStore, session_id: str) -> None:
    """The 12 statements of load_session_snapshot, fetched as tuples, never decoded."""
    cursor = store._cursor()
    for model in SESSION_TABLES:
        m = table_map(model)
        cursor.execute(f"SELECT {m.select_list} FROM {m.table} WHERE session_id = ? "
                       "ORDER BY id", [session_id]).fetchall()
    for model in LATEST_TABLES:
        m = table_map(model)
        cursor.execute(
            f"SELECT {m.select_list} FROM {m.table} WHERE session_id = ? QUALIFY "
            "row_number() OVER (PARTITION BY node_id ORDER BY id DESC) = 1 ORDER BY id",
            [session_id]).fetchall()
    cursor.execute("SELECT * FROM sessions s LEFT JOIN budget_envelopes b USING (session_id) "
                   "WHERE s.session_id = ?", [session_id]).fetchall()


def arrow_floor(store: ps.SessionStore, session_id: str) -> None:
    """The 12 statements of load_session_snapshot, fetched as Arrow tables."""
    cursor = store._cursor()
    for model in SESSION_TABLES:
        m = table_map(model)
        cursor.sql(f"SELECT {m.select_list} FROM {m.table} WHERE session_id = ? ORDER BY id",
                   params=[session_id]).to_arrow_table()
    for model in LATEST_TABLES:
        m = table_map(model)
        cursor.sql(
            f"SELECT {m.select_list} FROM {m.table} WHERE session_id = ? QUALIFY "
            "row_number() OVER (PARTITION BY node_id ORDER BY id DESC) = 1 ORDER BY id",
            params=[session_id]).to_arrow_table()
    cursor.sql("SELECT * FROM sessions s LEFT JOIN budget_envelopes b USING (session_id) "
               "WHERE s.session_id = ?", params=[session_id]).to_arrow_table()


def touch_all(snapshot: ps.SessionSnapshot) -> int:
    """Read every field of every node detail (builds lazily built models)."""
    n = 0
    for detail in snapshot.node_details:
        n += len(detail.energy_history) + len(detail.sheaf_validations)
        n += len(detail.interface_seals)
        n += (detail.record is not None) + (detail.verification is not None)
        n += (detail.artifact_bundle is not None) + (detail.context_provenance is not None)
    return n


def arrow_held(snapshot: ps.SessionSnapshot) -> int:
    """Bytes of the Arrow columns a loaded snapshot holds for its untouched node details
    (DuckDB owns those buffers: tracemalloc does not see them). 0 for eager details."""
    lazy = snapshot.node_details[0].__dict__.get("_lazy") if snapshot.node_details else None
    if lazy is None:
        return 0
    rows = lazy[2]
    tables = [rows.states._arrow] + [columns._arrow for columns, _ in rows.grouped.values()]
    return sum(t.nbytes for t in tables if t is not None)


def peak_memory(run: Any) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        result = run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del result
    return peak


def bench_size(root: Path, nodes: int, repeat: int, upstream_repeat: int,
               upstream_sample: int | None) -> dict[str, Any]:
    path = fresh_path(root, f"snapshot_{nodes}.db")
    rows = list(session_rows(nodes))
    with ps.SessionStore.in_memory() as warm:  # one-time imports (pyarrow), untimed
        warm.record_many(list(session_rows(60)))
    with ps.SessionStore.open(path, publish_interval=None) as store:
        start = time.perf_counter()
        store.record_many(rows)
        build = time.perf_counter() - start
    # Reopen: reads start from a store that did not just write everything.
    with ps.SessionStore.open(path, publish_interval=None) as store:
        store.load_session_snapshot(SESSION)  # warm up (and check it loads)
        ours = time_calls(lambda: store.load_session_snapshot(SESSION), repeat)
        floor = time_calls(lambda: floor_queries(store, SESSION), repeat)
        floor_arrow = time_calls(lambda: arrow_floor(store, SESSION), repeat)
        touched = time_calls(lambda: touch_all(store.load_session_snapshot(SESSION)), repeat)
        held_arrow = arrow_held(store.load_session_snapshot(SESSION))
        snapshot = store.load_session_snapshot(SESSION)
        sample = upstream_sample if upstream_sample and upstream_sample < nodes else None
        up_times = []
        for _ in range(upstream_repeat):
            gc.collect()
            theirs, elapsed = upstream_snapshot(store, SESSION, sample)
            up_times.append(elapsed)
        if sample is None:
            assert theirs == snapshot, "both patterns load the same snapshot"
        memory = peak_memory(lambda: store.load_session_snapshot(SESSION))
        summary = time_calls(lambda: store.session_summary(SESSION), repeat)
        review = time_calls(lambda: store.node_review_summary(SESSION, "node-00001"), repeat)
    upstream = statistics.median(up_times)
    loaded = sum(1 + len(d.energy_history) + len(d.sheaf_validations) + 4
                 for d in snapshot.node_details)
    return {
        "nodes": nodes,
        "rows_in_db": len(rows),
        "rows_loaded": loaded,
        "build_s": build,
        "build_rows_per_s": len(rows) / build,
        "ours_s": ours.median,
        "floor_s": floor.median,
        "arrow_floor_s": floor_arrow.median,
        "touched_s": touched.median,
        "arrow_held_bytes": held_arrow,
        "upstream_s": upstream,
        "upstream_sampled_nodes": sample,
        "ratio": upstream / ours.median,
        "peak_bytes": memory,
        "session_summary_s": summary.median,
        "node_review_summary_s": review.median,
    }


def run(quick: bool, root: Path, sizes: list[int] | None = None) -> dict[str, Any]:
    sizes = sizes or ([100, 1000] if quick else [100, 1000, 10_000])
    repeat = 3 if quick else 7
    results = []
    for nodes in sizes:
        big = nodes >= 10_000
        results.append(bench_size(
            root, nodes, repeat=3 if big else repeat,
            upstream_repeat=1 if big or quick else 3,
            upstream_sample=500 if big else None,
        ))
    report(results)
    return {"sizes": results}


def report(results: list[dict[str, Any]]) -> None:
    rows = []
    for r in results:
        upstream = fmt_seconds(r["upstream_s"])
        if r["upstream_sampled_nodes"]:
            upstream += f" (scaled from {r['upstream_sampled_nodes']} nodes)"
        rows.append([
            f"{r['nodes']:,}", f"{r['rows_loaded']:,}", fmt_seconds(r["ours_s"]),
            fmt_seconds(r["arrow_floor_s"]), f"{r['ours_s'] / r['arrow_floor_s']:.1f}x",
            fmt_seconds(r["touched_s"]), f"{r['touched_s'] / r['arrow_floor_s']:.1f}x",
            fmt_seconds(r["floor_s"]), upstream, f"{r['ratio']:,.0f}x",
            f"{r['peak_bytes'] / 2**20:.1f} MiB",
            f"{r['arrow_held_bytes'] / 2**20:.1f} MiB", fmt_seconds(r["session_summary_s"]),
            fmt_seconds(r["node_review_summary_s"]),
            f"{r['build_rows_per_s']:,.0f} rows/s",
        ])
    print_table(
        "load_session_snapshot (file store, medians; 1,000 nodes: target <= 150 ms, >= 20x)",
        ["nodes", "rows loaded", "ours", "Arrow floor", "ours/floor", "ours, all touched",
         "touched/floor", "tuple floor", "upstream pattern", "ratio", "peak mem (Python)",
         "Arrow held", "session_summary", "node_review", "record_many build"],
        rows,
    )
    for prev, cur in itertools.pairwise(results):
        grow = cur["nodes"] / prev["nodes"]
        print(f"  {prev['nodes']:,} -> {cur['nodes']:,} nodes (x{grow:g}): ours "
              f"x{cur['ours_s'] / prev['ours_s']:.1f}, upstream "
              f"x{cur['upstream_s'] / prev['upstream_s']:.1f}, memory "
              f"x{cur['peak_bytes'] / prev['peak_bytes']:.1f}, session_summary "
              f"x{cur['session_summary_s'] / prev['session_summary_s']:.1f}")


def bench_energy(root: Path, rows: int, repeat: int) -> dict[str, Any]:
    """``get_session_energy_history`` of ``rows`` rows beside its Arrow and tuple floors."""
    from _common import energy_row, session_record

    path = fresh_path(root, f"energy_{rows}.db")
    with ps.SessionStore.open(path, publish_interval=None) as store:
        store.create_session(session_record())
        store.record_many([energy_row(i) for i in range(rows)])
    with ps.SessionStore.open(path, publish_interval=None) as store:
        m = table_map(ps.EnergyRecord)
        sql = f"SELECT {m.select_list} FROM {m.table} WHERE session_id = ? ORDER BY id"
        cursor = store._cursor()
        got = store.get_session_energy_history(SESSION)
        assert len(got) == rows

        def touched() -> float:  # every row's models built and a field read
            return sum(r.v_total for r in store.get_session_energy_history(SESSION))

        def tail() -> float:  # a convergence check: the last 20 measurements
            return sum(r.v_total for r in store.get_session_energy_history(SESSION)[-20:])

        def eager() -> list[ps.EnergyRecord]:  # the list built up front (before RowList)
            return store._select(ps.EnergyRecord, "session_id = ?", [SESSION], order_by="id")

        ours = time_calls(lambda: store.get_session_energy_history(SESSION), repeat)
        last = time_calls(tail, repeat)
        every = time_calls(touched, repeat)
        built = time_calls(eager, repeat)
        arrow = time_calls(lambda: cursor.sql(sql, params=[SESSION]).to_arrow_table(), repeat)
        tuples = time_calls(lambda: cursor.execute(sql, [SESSION]).fetchall(), repeat)
    floor = arrow.median
    print_table(
        f"get_session_energy_history, {rows:,} rows (file store, medians)",
        ["ours", "Arrow floor", "ours/floor", "last 20 read", "all read", "all/floor",
         "eager list", "eager/floor", "tuple floor"],
        [[fmt_seconds(ours.median), fmt_seconds(floor), f"{ours.median / floor:.1f}x",
          fmt_seconds(last.median), fmt_seconds(every.median),
          f"{every.median / floor:.1f}x", fmt_seconds(built.median),
          f"{built.median / floor:.1f}x", fmt_seconds(tuples.median)]],
    )
    return {"rows": rows, "ours_s": ours.median, "arrow_floor_s": floor,
            "tail_s": last.median, "all_read_s": every.median, "eager_s": built.median,
            "tuple_floor_s": tuples.median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 nodes only")
    parser.add_argument("--nodes", help="comma-separated sizes, e.g. 100,1000")
    parser.add_argument("--energy", default="",
                        help="also time get_session_energy_history of this many rows "
                             "(comma-separated sizes, e.g. 200,2000,100000)")
    args = parser.parse_args()
    sizes = [int(n) for n in args.nodes.split(",")] if args.nodes else None
    with tempfile.TemporaryDirectory() as tmp:
        if sizes != [0]:
            run(args.quick, Path(tmp), sizes)
        for rows in (int(n) for n in args.energy.split(",") if n):
            bench_energy(Path(tmp), rows, (3 if args.quick else 7) * max(1, 20_000 // rows))


if __name__ == "__main__":
    main()

"""Write paths, side by side on the same machine in one run.

* bulk ingest of N ``EnergyRecord`` rows with ``record_many`` vs a per-call ``record_energy``
  loop, and DuckDB's own floor for the same rows (pre-encoded lists through ``unnest``, and
  an Arrow table scan);
* per-call durable ``record_energy`` vs a bare parameterised DuckDB INSERT of the same row;
* group-commit ``record_energy`` (``durability="batched"``) vs LangGraph's ``SqliteSaver.put``
  with a payload of the same size.

All stores are files under one temporary directory; each figure is a median of repetitions.
Run alone: ``python benchmarks/bench_writes.py [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
from _common import (
    SESSION,
    energy_row,
    fmt_seconds,
    fresh_path,
    gc_paused,
    per_call,
    print_table,
    session_record,
    time_calls,
)

import perspt_store as ps
from perspt_store._mapping import table_map

ENERGY_INSERT = (
    "INSERT INTO energy_history (node_id, session_id, v_syn, v_str, v_log, v_boot, v_sheaf, "
    "v_total) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _open(path: Path, **options: Any) -> ps.SessionStore:
    store = ps.SessionStore.open(path, publish_interval=None, **options)
    store.create_session(session_record())
    return store


def _bare(path: Path) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect(str(path))
    ps.init_schema(conn)
    conn.execute(
        "INSERT INTO sessions (session_id, task, working_dir) VALUES (?, 'benchmark', '/')",
        [SESSION],
    )
    return conn


def bench_bulk(root: Path, rows: int, loop_calls: int, repeat: int) -> dict[str, Any]:
    """record_many of ``rows`` energy rows vs the per-call loop and DuckDB's floor."""
    data = [energy_row(i) for i in range(rows)]
    mapping = table_map(ps.EnergyRecord)
    columns = mapping.encode_columns(data)
    stores: list[ps.SessionStore] = []

    def new_store() -> None:
        for s in stores:
            s.close()
        stores[:] = [_open(fresh_path(root, "bulk.db"))]

    warm = _open(fresh_path(root, "warm.db"))  # imports and first-use costs, untimed
    warm.record_many(data[:2000])
    warm.close()
    bulk = time_calls(lambda: stores[0].record_many(data), repeat, setup=new_store)
    stores[0].close()

    # The per-call loop, on a sample (a full loop would take minutes): rows/s is the rate.
    loop_store = _open(fresh_path(root, "loop.db"))
    with gc_paused():
        rows_left = iter(data)
        loop_times = per_call(lambda: loop_store.record_energy(next(rows_left)), loop_calls)
    loop_store.close()
    loop_rate = 1 / statistics.mean(loop_times)

    # DuckDB's floor: the same rows already encoded as column lists, one unnest INSERT; and
    # an Arrow table (built untimed) scanned by one INSERT.
    conns: list[duckdb.DuckDBPyConnection] = []

    def new_conn() -> None:
        for c in conns:
            c.close()
        conns[:] = [_bare(fresh_path(root, "floor.db"))]

    floor_unnest = time_calls(
        lambda: conns[0].execute(mapping.bulk_insert_sql, columns), repeat, setup=new_conn
    )
    floor_arrow: float | None = None
    try:
        import pyarrow as pa

        table = pa.table(dict(zip(mapping.columns, columns, strict=True)))
        names = ", ".join(mapping.columns)

        def arrow_insert() -> None:
            conns[0].register("_floor", table)
            conns[0].execute(f"INSERT INTO energy_history ({names}) SELECT {names} FROM _floor")
            conns[0].unregister("_floor")

        floor_arrow = time_calls(arrow_insert, repeat, setup=new_conn).median
    except ImportError:  # pragma: no cover
        pass
    for c in conns:
        c.close()
    return {
        "rows": rows,
        "bulk_s": bulk.median,
        "bulk_rows_per_s": rows / bulk.median,
        "loop_rows_per_s": loop_rate,
        "loop_calls_sampled": loop_calls,
        "bulk_vs_loop": (rows / bulk.median) / loop_rate,
        "floor_unnest_s": floor_unnest.median,
        "floor_arrow_s": floor_arrow,
    }


def bench_per_call(root: Path, calls: int, blocks: int) -> dict[str, Any]:
    """Durable record_energy vs a bare parameterised INSERT of the same row, interleaved in
    blocks so both see the same machine."""
    store = _open(fresh_path(root, "percall.db"))
    conn = _bare(fresh_path(root, "percall_bare.db"))
    row = energy_row(1)
    params = table_map(ps.EnergyRecord).encode(row)
    for _ in range(50):  # warm up both
        store.record_energy(row)
        conn.execute(ENERGY_INSERT, params).fetchall()
    ours: list[float] = []
    bare: list[float] = []
    with gc_paused():
        for _ in range(blocks):
            ours += per_call(lambda: store.record_energy(row), calls // blocks)
            bare += per_call(lambda: conn.execute(ENERGY_INSERT, params).fetchall(),
                             calls // blocks)
    store.close()
    conn.close()
    m_ours, m_bare = statistics.median(ours), statistics.median(bare)
    return {"calls": len(ours), "ours_s": m_ours, "bare_s": m_bare, "ratio": m_ours / m_bare}


def _sqlite_saver_puts(path: Path, calls: int) -> list[float]:
    from langgraph.checkpoint.base import empty_checkpoint
    from langgraph.checkpoint.base.id import uuid6
    from langgraph.checkpoint.sqlite import SqliteSaver

    row = energy_row(1)
    payload = row.to_dict()  # the same fields and values as the energy row
    config: Any = {"configurable": {"thread_id": "bench", "checkpoint_ns": ""}}
    checkpoints = []
    for _ in range(calls + 20):
        checkpoint = empty_checkpoint()
        checkpoint["id"] = str(uuid6())
        checkpoint["channel_values"] = {"energy": payload}
        checkpoints.append(checkpoint)
    with SqliteSaver.from_conn_string(str(path)) as saver:
        saver.setup()
        it = iter(checkpoints)
        for _ in range(20):  # warm up
            saver.put(config, next(it), {"source": "loop", "step": 0}, {})
        with gc_paused():
            return per_call(
                lambda: saver.put(config, next(it), {"source": "loop", "step": 0}, {}), calls
            )


def bench_group_commit(root: Path, calls: int, repeat: int) -> dict[str, Any]:
    """Group-commit record_energy per call (and amortised with its flush) vs SqliteSaver."""
    row = energy_row(1)
    medians: list[float] = []
    amortised: list[float] = []
    for _ in range(repeat):
        store = _open(fresh_path(root, "batched.db"), durability="batched")
        store.record_energy(row)  # the session check happens once, on first use
        store.flush()
        with gc_paused():
            start = time.perf_counter()
            times = per_call(lambda s=store: s.record_energy(row), calls)
            store.flush()
            amortised.append((time.perf_counter() - start) / calls)
        medians.append(statistics.median(times))
        store.close()
    saver = _sqlite_saver_puts(fresh_path(root, "saver.sqlite"), max(200, calls // 10))
    ours, theirs = statistics.median(medians), statistics.median(saver)
    return {
        "calls": calls,
        "ours_s": ours,
        "ours_amortised_s": statistics.median(amortised),
        "sqlite_saver_s": theirs,
        "ratio": theirs / ours,
    }


def run(quick: bool, root: Path) -> dict[str, Any]:
    repeat = 3 if quick else 7
    results = {
        "bulk": bench_bulk(root, 20_000 if quick else 100_000, 300 if quick else 2_000, repeat),
        "per_call": bench_per_call(root, 600 if quick else 4_000, 6 if quick else 20),
        "group_commit": bench_group_commit(root, 5_000 if quick else 50_000, repeat),
    }
    report(results)
    return results


def report(results: dict[str, Any]) -> None:
    b, p, g = results["bulk"], results["per_call"], results["group_commit"]
    floor = f"unnest {fmt_seconds(b['floor_unnest_s'])}"
    if b["floor_arrow_s"] is not None:
        floor += f", Arrow {fmt_seconds(b['floor_arrow_s'])}"
    print_table(
        "Writes (file stores, medians)",
        ["workload", "ours", "reference", "ratio", "target"],
        [
            [f"record_many {b['rows']:,} EnergyRecords",
             f"{fmt_seconds(b['bulk_s'])} = {b['bulk_rows_per_s']:,.0f} rows/s",
             f"per-call loop {b['loop_rows_per_s']:,.0f} rows/s",
             f"{b['bulk_vs_loop']:,.0f}x faster", ">= 150k rows/s, >= 100x"],
            ["  DuckDB floor, same rows pre-encoded", "", floor, "", ""],
            ["durable record_energy, per call", fmt_seconds(p["ours_s"]),
             f"bare INSERT {fmt_seconds(p['bare_s'])}", f"{p['ratio']:.2f}x the bare cost",
             "<= 1.2x"],
            ["group-commit record_energy, per call", fmt_seconds(g["ours_s"]),
             f"SqliteSaver.put {fmt_seconds(g['sqlite_saver_s'])}",
             f"{g['ratio']:,.0f}x faster", "<= 20 µs, >= 10x"],
            ["  amortised incl. its flush", fmt_seconds(g["ours_amortised_s"]), "", "", ""],
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run(args.quick, Path(tmp))


if __name__ == "__main__":
    main()

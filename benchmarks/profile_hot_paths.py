"""Where the time goes: profiles of the hot paths, with pyinstrument if installed (else
cProfile), plus a breakdown of the snapshot load into SQL (fetch) and decoding per table.

Run: ``python benchmarks/profile_hot_paths.py [--nodes 1000]``.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import SESSION, energy_row, fresh_path, session_record, session_rows

import perspt_store as ps
from perspt_store._mapping import table_map


def profile(label: str, run: Callable[[], object], repeat: int = 5) -> None:
    print(f"\n=== {label} ===")
    try:
        from pyinstrument import Profiler
    except ImportError:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(repeat):
            run()
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(18)
        return
    pi = Profiler(interval=0.0005)
    pi.start()
    for _ in range(repeat):
        run()
    pi.stop()
    print(pi.output_text(unicode=False, color=False))


def snapshot_breakdown(store: ps.SessionStore) -> None:
    """Per table: the SQL statement with fetchall() vs decoding its rows into models."""
    print("\n=== load_session_snapshot, per table: SQL + fetch vs decode (best of 5) ===")
    cursor = store._cursor()
    tables = [(ps.NodeStateRecord, True), (ps.EnergyRecord, False),
              (ps.SheafValidationRow, False), (ps.InterfaceSealRow, False),
              (ps.VerificationResultRow, True), (ps.ArtifactBundleRow, True),
              (ps.ContextProvenanceRecord, True), (ps.TaskGraphEdgeRow, False)]
    totals = [0.0, 0.0]
    gc.disable()
    try:
        for model, latest in tables:
            m = table_map(model)
            sql, params = m.select(
                "session_id = ?", [SESSION], order_by="id",
                latest_per="node_id" if latest else None, extra=[f"({m.check_sql})"],
            )
            fetch, decode = [], []
            for _ in range(5):
                start = time.perf_counter()
                rows = cursor.execute(sql, params).fetchall()
                fetch.append(time.perf_counter() - start)
                start = time.perf_counter()
                m.read(rows, checked=True)
                decode.append(time.perf_counter() - start)
            f, d = min(fetch), min(decode)
            totals[0] += f
            totals[1] += d
            print(f"{m.table:22} {len(rows):7,} rows  SQL+fetch {f * 1e3:6.1f} ms  "
                  f"decode {d * 1e3:6.1f} ms ({d / max(1, len(rows)) * 1e6:.2f} µs/row)")
    finally:
        gc.enable()
    print(f"{'total':22} {'':12}  SQL+fetch {totals[0] * 1e3:6.1f} ms  "
          f"decode {totals[1] * 1e3:6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = fresh_path(root, "profile.db")
        with ps.SessionStore.open(path, publish_interval=None) as store:
            store.record_many(list(session_rows(args.nodes)))
        with ps.SessionStore.open(path, publish_interval=None) as store:
            store.load_session_snapshot(SESSION)
            snapshot_breakdown(store)
            profile(f"load_session_snapshot, {args.nodes:,} nodes",
                    lambda: store.load_session_snapshot(SESSION))

        rows = [energy_row(i) for i in range(100_000)]

        def ingest() -> None:
            with ps.SessionStore.open(fresh_path(root, "ingest.db"),
                                      publish_interval=None) as s:
                s.create_session(session_record())
                start = time.perf_counter()
                s.record_many(rows)
                print(f"  record_many: {time.perf_counter() - start:.3f} s")

        profile("record_many, 100,000 EnergyRecords (incl. opening a store)", ingest, 2)

        with ps.SessionStore.open(fresh_path(root, "batched.db"), durability="batched",
                                  publish_interval=None) as s:
            s.create_session(session_record())
            row = energy_row(1)

            def calls() -> None:
                for _ in range(20_000):
                    s.record_energy(row)
                s.flush()

            profile("group commit: 20,000 record_energy calls + flush()", calls, 2)


if __name__ == "__main__":
    main()

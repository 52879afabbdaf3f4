"""RowList chunk sizes: a full walk of a lazy snapshot, and the first read of one row.

A first read builds one chunk (``perspt_store.rowlist.CHUNK_ROWS`` rows) on the reading
thread, an event loop's included; smaller chunks answer sooner, larger ones cost less for a
walk over every row. Both are timed here for several sizes, interleaved round by round.

    python benchmarks/bench_chunks.py [--nodes 10000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _common import SESSION, energy_row, print_table, session_record, session_rows
from bench_snapshot import touch_all

import perspt_store as ps
from perspt_store import rowlist

SIZES = (1024, 2048, 4096)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    walk: dict[int, list[float]] = {size: [] for size in SIZES}
    first: dict[int, list[float]] = {size: [] for size in SIZES}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chunks.db"
        with ps.SessionStore.open(path, publish_interval=None) as store:
            store.record_many(list(session_rows(args.nodes)))
            store.create_session(session_record("energy"))
            store.record_many([energy_row(i, "energy") for i in range(100 * 2048)])
        with ps.SessionStore.open(path, publish_interval=None) as store:
            for _ in range(args.rounds):
                for size in SIZES:
                    rowlist.CHUNK_ROWS = size
                    start = time.perf_counter()
                    touch_all(store.load_session_snapshot(SESSION))
                    walk[size].append(time.perf_counter() - start)
                    history = store.get_session_energy_history("energy")
                    start = time.perf_counter()
                    history[len(history) // 2]  # a full chunk, whatever the size
                    first[size].append(time.perf_counter() - start)
    print_table(
        f"RowList chunk sizes (medians of {args.rounds} interleaved rounds)",
        ["chunk rows", f"walk of a {args.nodes:,}-node snapshot", "first read of one row"],
        [[f"{size:,}", f"{statistics.median(walk[size]):.2f} s",
          f"{statistics.median(first[size]) * 1e3:.1f} ms"] for size in SIZES],
    )


if __name__ == "__main__":
    main()

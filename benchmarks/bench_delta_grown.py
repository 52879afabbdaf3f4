"""The Delta lake's re-export of sessions that grew: what the check of rows outside the log
costs (docs/performance.md, "Re-exporting grown sessions").

A store with 20 demo sessions is exported into a fresh Delta lake; then, for each of
``--rounds`` rounds, every session gets a status update, a budget upsert, an energy row and
a commit, and the whole store is exported again (every session written: its log extends
the lake's, and its rows do too). Prints the median re-export time of each source tree, run
in alternating worker processes (``--baseline-src DIR`` adds the tree to compare with,
e.g. a checkout of main), so both see the same machine load.

Run: ``nice -n 10 python benchmarks/bench_delta_grown.py [--baseline-src DIR]``
(needs the ``lake`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SESSIONS = 20


def worker(rounds: int) -> None:
    import perspt_store as ps
    from perspt_store.delta import export_delta
    from perspt_store.demo import record_demo_session

    times = []
    with tempfile.TemporaryDirectory() as tmp, ps.SessionStore.in_memory() as store:
        lake = Path(tmp) / "lake"
        ids = [record_demo_session(store, seed=i + 1) for i in range(SESSIONS)]
        export_delta(store, lake)
        for r in range(rounds):
            for sid in ids:
                store.update_session_status(sid, f"ROUND-{r}")
                store.upsert_budget_envelope(ps.BudgetEnvelopeRow(session_id=sid,
                                                                  steps_used=r))
                store.record_energy(ps.EnergyRecord(session_id=sid, node_id="n0",
                                                    v_total=float(r)))
                store.record_node_state(ps.NodeStateRecord(session_id=sid, node_id=f"g{r}",
                                                           state="Running"))
            start = time.perf_counter()
            report = export_delta(store, lake)
            times.append(time.perf_counter() - start)
            assert report.ok and len(report.session_ids) == SESSIONS, report.conflicts
    print(json.dumps(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="re-exports per worker")
    parser.add_argument("--runs", type=int, default=3, help="workers per source tree")
    parser.add_argument("--baseline-src", type=Path, help="another source tree to compare")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.rounds)
        return
    here = Path(__file__).resolve().parent.parent / "src"
    trees = {"this tree": here}
    if args.baseline_src is not None:
        trees = {"baseline": args.baseline_src.resolve(), **trees}
    found: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(args.runs):
        for name, src in trees.items():
            env = {**os.environ, "PYTHONPATH": str(src)}
            out = subprocess.run(
                [sys.executable, __file__, "--worker", "--rounds", str(args.rounds)],
                env=env, capture_output=True, text=True, check=True).stdout
            found[name] += json.loads(out.strip().splitlines()[-1])
    print(f"re-export of {SESSIONS} grown demo sessions ({args.runs} x {args.rounds} rounds)")
    for name, times in found.items():
        print(f"{name:10s}  median {statistics.median(times):.3f} s  "
              f"(min {min(times):.3f}, max {max(times):.3f})")


if __name__ == "__main__":
    main()

"""Run every benchmark side by side, in one process, on this machine, and print the figures.

    python benchmarks/run.py            # full sizes (several minutes)
    python benchmarks/run.py --quick    # smaller sizes, fewer repetitions (about a minute)
    python benchmarks/run.py --json results.json

Needs the ``bench`` extra (``pip install -e '.[bench]'``: pymerkle, langgraph-checkpoint-sqlite)
and, for the Arrow figures, pyarrow (``frames`` extra). Every figure is a median of
repetitions; comparisons run interleaved or back to back on the same machine. On a busy or
small machine (the figures in docs/performance.md come from 2 noisy cores), run it twice and
look at the ratios rather than the absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

import perspt_store as ps

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_merkle_store  # noqa: E402
import bench_snapshot  # noqa: E402
import bench_writes  # noqa: E402


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "perspt_store": ps.__version__,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def merkle_tree(quick: bool) -> str:
    """The pure-tree benchmark (perspt_store.merkle vs pymerkle), run as its own process."""
    args = ["--leaves", "20000", "--proofs", "200", "--repeat", "3"] if quick else []
    result = subprocess.run(
        [sys.executable, str(HERE / "bench_merkle_tree.py"), *args],
        capture_output=True, text=True, check=False,
    )
    return result.stdout + (result.stderr if result.returncode else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--skip", default="", help="comma-separated: writes,snapshot,merkle,tree")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    results: dict[str, Any] = {"machine": machine(), "quick": args.quick}
    print(f"perspt-store benchmarks ({'quick' if args.quick else 'full'}): {results['machine']}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="perspt-bench-") as tmp:
        root = Path(tmp)
        if "writes" not in skip:
            results["writes"] = bench_writes.run(args.quick, root)
        if "snapshot" not in skip:
            results["snapshot"] = bench_snapshot.run(args.quick, root)
        if "merkle" not in skip:
            results["merkle_store"] = bench_merkle_store.run(args.quick, root)
    if "tree" not in skip:
        print("\nMerkle tree alone (benchmarks/bench_merkle_tree.py)")
        results["merkle_tree"] = merkle_tree(args.quick)
        print(results["merkle_tree"])
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()

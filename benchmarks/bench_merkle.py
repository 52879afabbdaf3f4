"""Every figure of the Merkle work in one run: the tree against pymerkle, then the commit log
inside the store (``record_node_state`` overhead, ``verify_session``).

    python benchmarks/bench_merkle.py            # full sizes
    python benchmarks/bench_merkle.py --quick    # smaller sizes, fewer repetitions

The same as ``python benchmarks/run.py --skip writes,snapshot``; the two halves live in
``bench_merkle_tree.py`` and ``bench_merkle_store.py``. Needs the ``bench`` extra (pymerkle).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import bench_merkle_store
from run import merkle_tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    args = parser.parse_args()
    print("Merkle tree alone (benchmarks/bench_merkle_tree.py)")
    print(merkle_tree(args.quick))
    with tempfile.TemporaryDirectory(prefix="perspt-bench-") as tmp:
        bench_merkle_store.run(args.quick, Path(tmp))


if __name__ == "__main__":
    main()

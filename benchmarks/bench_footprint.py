"""File footprint: DuckDB's default 256 KiB blocks against the 16 KiB blocks new stores use.

    python benchmarks/bench_footprint.py            # sizes and timings, both block sizes
    python benchmarks/bench_footprint.py --quick    # fewer calls and rounds

Every table and index of a DuckDB file claims whole blocks, so with 256 KiB blocks a store of
a few hundred rows weighs tens of megabytes. For each block size, in one run, this measures:
the file and its published snapshot for an empty store, the ``perspt-store demo`` session and
a 20-node session; and the per-call medians of a durable ``record_energy``, a node-state
commit and a 200-node ``load_session_snapshot``, the variants interleaved round by round so
machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

import perspt_store as ps
from perspt_store import _engine
from perspt_store.demo import record_demo_session

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    energy_row,
    fmt_seconds,
    fresh_path,
    node_state,
    per_call,
    print_table,
    session_record,
    session_rows,
)

OLD_BLOCK = 262_144
BLOCKS = (OLD_BLOCK, _engine.BLOCK_SIZE)


@contextmanager
def block_size(size: int) -> Iterator[None]:
    """New files (the store's and its snapshots') get ``size``-byte blocks meanwhile."""
    saved = _engine.NEW_FILE_CONFIG.copy(), _engine.NEW_FILE_ATTACH
    _engine.NEW_FILE_CONFIG["default_block_size"] = size
    _engine.NEW_FILE_ATTACH = (
        f"(STORAGE_VERSION '{_engine.UPSTREAM_STORAGE}', BLOCK_SIZE {size})"
    )
    try:
        yield
    finally:
        _engine.NEW_FILE_CONFIG.clear()
        _engine.NEW_FILE_CONFIG.update(saved[0])
        _engine.NEW_FILE_ATTACH = saved[1]


def sizes(path: Path) -> tuple[int, int]:
    snapshot = path.with_name(path.name + ".snapshot")
    return path.stat().st_size, snapshot.stat().st_size if snapshot.exists() else 0


def footprint(root: Path, size: int) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    with block_size(size):
        path = fresh_path(root, f"empty-{size}.db")
        ps.SessionStore.open(path).close()
        out["empty store"] = sizes(path)
        path = fresh_path(root, f"demo-{size}.db")
        with ps.SessionStore.open(path) as store:
            record_demo_session(store)
        out["demo session"] = sizes(path)
        path = fresh_path(root, f"run20-{size}.db")
        with ps.SessionStore.open(path) as store:
            store.create_session(session_record())
            store.record_many(list(session_rows(20))[1:])
        out["20-node session"] = sizes(path)
        # Where else bytes go: the WAL between DuckDB's automatic checkpoints
        # (wal_autocheckpoint, 16 MB by default) while an agent writes row by row.
        path = fresh_path(root, f"wal-{size}.db")
        wal = path.with_name(path.name + ".wal")
        largest = 0
        with ps.SessionStore.open(path, publish_interval=None) as store:
            store.create_session(session_record())
            for i in range(2_000):
                store.record_energy(energy_row(i))
                if i % 50 == 0 and wal.exists():
                    largest = max(largest, wal.stat().st_size)
        out["2,000 durable writes (largest WAL)"] = (path.stat().st_size, largest)
    return out


def timings(root: Path, size: int, calls: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    with block_size(size):
        path = fresh_path(root, f"timed-{size}.db")
        with ps.SessionStore.open(path, publish_interval=None) as store:
            store.create_session(session_record())
            counter = iter(range(10**9))
            out["record_energy (durable)"] = per_call(
                lambda: store.record_energy(energy_row(next(counter))), calls
            )
            nodes = iter(range(10**9))
            out["record_node_state"] = per_call(
                lambda: store.record_node_state(node_state(next(nodes) % 200, 1)), calls
            )
            store.create_session(session_record("snap"))
            store.record_many(list(session_rows(200, "snap"))[1:])
            out["load_session_snapshot (200 nodes)"] = per_call(
                lambda: store.load_session_snapshot("snap"), max(3, calls // 40)
            )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    calls, rounds = (60, 2) if args.quick else (200, 3)
    print(f"DuckDB {duckdb.__version__}, perspt-store {ps.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        feet = {size: footprint(root, size) for size in BLOCKS}
        samples: dict[int, dict[str, list[float]]] = {size: {} for size in BLOCKS}
        for _ in range(rounds):  # interleaved: each round runs both block sizes
            for size in BLOCKS:
                for name, values in timings(root, size, calls).items():
                    samples[size].setdefault(name, []).extend(values)
    kib = {size: f"{size // 1024} KiB blocks" for size in BLOCKS}
    print_table(
        "File and snapshot sizes",
        ["", *(f"{kib[s]}: file + snapshot (WAL)" for s in BLOCKS), "file ratio"],
        [
            [
                what,
                *(f"{feet[s][what][0] / 1e6:.2f} MB + {feet[s][what][1] / 1e6:.2f} MB"
                  for s in BLOCKS),
                f"{feet[OLD_BLOCK][what][0] / feet[_engine.BLOCK_SIZE][what][0]:.1f}x",
            ]
            for what in feet[OLD_BLOCK]
        ],
    )
    median: Callable[[list[float]], float] = statistics.median
    new, old = _engine.BLOCK_SIZE, OLD_BLOCK
    print_table(
        f"Per-call medians ({rounds} interleaved rounds)",
        ["", *(kib[s] for s in BLOCKS), "new / old"],
        [
            [
                name,
                *(fmt_seconds(median(samples[s][name])) for s in BLOCKS),
                f"{median(samples[new][name]) / median(samples[old][name]):.2f}",
            ]
            for name in samples[OLD_BLOCK]
        ],
    )


if __name__ == "__main__":
    main()

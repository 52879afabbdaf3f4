"""Benchmark perspt_store.merkle against pymerkle 7 (InmemoryTree), side by side.

Run: ``python benchmarks/bench_merkle_tree.py [--leaves N] [--proofs K] [--repeat R]``

Workloads, on the same random 32-byte entries:

* build: hash N entries into leaves, build the tree, read its root;
* append: the same, one ``append`` call per entry;
* inclusion: K proofs at random indices of the N-leaf tree, generated then verified;
* consistency: K proofs between random earlier sizes and N, generated then verified.

pymerkle supports only SHA-2/SHA-3, not BLAKE3, so the ratio column compares
our SHA-256 configuration with pymerkle's SHA-256 (apples to apples); the
BLAKE3 rows show what the store actually runs. Each figure is the median
of R repetitions; ratios above 1 mean we are faster.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import pymerkle

from perspt_store.merkle import (
    BLAKE3,
    SHA256,
    Hasher,
    MerkleTree,
    verify_consistency,
    verify_inclusion,
)


def median_seconds(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ours(
    hasher: Hasher, entries: list[bytes], indices: list[int], old_sizes: list[int]
) -> dict[str, Callable[[], object]]:
    leaf = hasher.leaf
    tree = MerkleTree((leaf(e) for e in entries), hasher=hasher)
    n, root = tree.size, tree.root()
    old_roots = {m: tree.root(m) for m in old_sizes}

    def build() -> bytes:
        return MerkleTree((leaf(e) for e in entries), hasher=hasher).root()

    def append() -> bytes:
        fresh = MerkleTree(hasher=hasher)
        for e in entries:
            fresh.append(leaf(e))
        return fresh.root()

    def inclusion() -> None:
        for i in indices:
            proof = tree.inclusion_proof(i)
            assert verify_inclusion(tree.leaf(i), i, n, proof, root, hasher=hasher)

    def consistency() -> None:
        for m in old_sizes:
            proof = tree.consistency_proof(m)
            assert verify_consistency(m, n, old_roots[m], root, proof, hasher=hasher)

    return {"build": build, "append": append, "inclusion": inclusion, "consistency": consistency}


def theirs(
    entries: list[bytes], indices: list[int], old_sizes: list[int]
) -> dict[str, Callable[[], object]]:
    tree = pymerkle.InmemoryTree(algorithm="sha256")
    for e in entries:
        tree.append_entry(e)
    root = tree.get_root()
    old_roots = {m: tree.get_root(m) for m in old_sizes}

    def build() -> bytes:
        fresh = pymerkle.InmemoryTree.init_from_entries(entries, algorithm="sha256")
        return bytes(fresh.get_root())

    def inclusion() -> None:
        for i in indices:  # pymerkle counts leaves from 1
            proof = tree.prove_inclusion(i + 1)
            pymerkle.verify_inclusion(tree.get_leaf(i + 1), root, proof)  # raises if invalid

    def consistency() -> None:
        for m in old_sizes:
            proof = tree.prove_consistency(m)
            pymerkle.verify_consistency(old_roots[m], root, proof)  # raises if invalid

    # pymerkle has no bulk path (init_from_entries appends one by one), so
    # both build rows time the same loop.
    return {"build": build, "append": build, "inclusion": inclusion, "consistency": consistency}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, default=100_000)
    parser.add_argument("--proofs", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    rng = random.Random(9162)
    entries = [rng.randbytes(32) for _ in range(args.leaves)]
    indices = [rng.randrange(args.leaves) for _ in range(args.proofs)]
    old_sizes = [rng.randrange(1, args.leaves) for _ in range(args.proofs)]

    # Same inputs, same roots: check the SHA-256 configurations agree first.
    sha_ours = ours(SHA256, entries, indices, old_sizes)
    sha_theirs = theirs(entries, indices, old_sizes)
    assert sha_ours["build"]() == sha_theirs["build"](), "roots differ from pymerkle"
    b3_ours = ours(BLAKE3, entries, indices, old_sizes)

    print(
        f"perspt_store.merkle vs pymerkle {pymerkle.__version__} InmemoryTree: "
        f"{args.leaves:,} leaves, {args.proofs:,} proofs, median of {args.repeat}"
    )
    header = f"{'workload':<30}{'pymerkle sha256':>17}{'ours sha256':>13}{'ratio':>8}"
    print(header + f"{'ours blake3':>13}")
    print("-" * (len(header) + 13))
    labels = {
        "build": "build + root (bulk)",
        "append": "build + root (append each)",
        "inclusion": "inclusion gen + verify",
        "consistency": "consistency gen + verify",
    }
    timed: dict[Callable[[], object], float] = {}
    for key, label in labels.items():
        if sha_theirs[key] not in timed:  # build and append share one pymerkle loop
            timed[sha_theirs[key]] = median_seconds(sha_theirs[key], args.repeat)
        t_theirs = timed[sha_theirs[key]]
        t_sha = median_seconds(sha_ours[key], args.repeat)
        t_b3 = median_seconds(b3_ours[key], args.repeat)
        print(
            f"{label:<30}{t_theirs * 1e3:>14.1f} ms{t_sha * 1e3:>10.1f} ms"
            f"{t_theirs / t_sha:>7.1f}x{t_b3 * 1e3:>10.1f} ms"
        )


if __name__ == "__main__":
    main()

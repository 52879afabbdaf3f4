"""A writer process for the crash and live-inspection tests, and the checks they share.

Run as a script, it waits for a line on stdin (so the parent can start it ahead of time and
the import cost does not count), opens the store, creates one session and then performs
operations ``0, 1, 2, ...`` from :func:`op_rows`, appending one line to ``--out`` after each
one *returns* (is acknowledged)::

    R <time>            the session exists; operations start
    A <i> <time>        operation i returned
    F <n> <time>        flush() returned: operations < n are durable (batched mode)
    C <time>            the store was closed (only with --ops)

Lines are written with one ``os.write`` each to a file opened with O_APPEND, so a SIGKILL
never leaves half a line and every line written before the kill is in the file. Times are
``time.time()`` (comparable across processes).

Every operation's rows are a pure function of its index, so the parent recomputes what each
acknowledged operation wrote and compares it with what the database holds
(:func:`committed_prefix`).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from blake3 import blake3

import perspt_store as ps

SESSION = "crash-session"
NODES = tuple(f"node-{k}" for k in range(7))
STATES = ("PENDING", "RUNNING", "VERIFYING", "COMPLETED", "FAILED")
HOSTILE = "ünïcødé ✓ 𝄞 '\"; DROP TABLE sessions; -- \\x00\t\n"
PROFILES: dict[str, tuple[str, ...]] = {
    "mixed": ("node_state", "energy", "llm", "many", "transaction", "step"),
    "appends": ("energy", "llm", "step"),
}
"""What operation ``i`` does under a profile: ``kinds[i % len(kinds)]``. ``appends`` has only
the writes that batched mode buffers (to measure its loss window)."""


def kind_of(i: int, profile: str = "mixed") -> str:
    kinds = PROFILES[profile]
    return kinds[i % len(kinds)]


def _text(i: int, n: int = 40) -> str:
    base = f"{HOSTILE}#{i} "
    return (base * (n // len(base) + 1))[:n]


def _node_state(i: int, j: int = 0) -> ps.NodeStateRecord:
    k = i * 31 + j
    return ps.NodeStateRecord(
        node_id=NODES[k % len(NODES)],
        session_id=SESSION,
        state=STATES[k % len(STATES)],
        v_total=k / 7,
        merkle_hash=blake3(str(k).encode()).digest(),
        attempt_count=k,
        node_class="Interface" if k % 2 else None,
        goal=_text(k, 120),
        parent_id=NODES[(k + 1) % len(NODES)] if k % 3 else None,
        children=[f"c{k}", "ü"] if k % 4 else None,
        last_error_type=None if k % 5 else "E'rr",
        committed_at=str(k),
    )


def _energy(i: int, j: int = 0) -> ps.EnergyRecord:
    k = i * 31 + j
    return ps.EnergyRecord(
        node_id=NODES[k % len(NODES)],
        session_id=SESSION,
        v_syn=k / 3,
        v_str=-k / 11,
        v_log=0.1 * k,
        v_boot=1e-300 * k,
        v_sheaf=k * 1.5e10,
        v_total=k / 7 + 1e-9,
    )


def _llm(i: int, j: int = 0) -> ps.LlmRequestRecord:
    k = i * 31 + j
    big = k % 17 == 2  # a 150 kB prompt now and then: writes that span many pages
    return ps.LlmRequestRecord(
        session_id=SESSION,
        node_id=NODES[k % len(NODES)] if k % 3 else None,
        model="model-'x'",
        prompt=_text(k, 150_000 if big else 200 + 37 * (k % 50)),
        response=_text(k + 1, 300),
        tokens_in=k,
        tokens_out=2**31 - 1 - k,
        latency_ms=k % 1000,
    )


def _step(i: int, j: int = 0) -> ps.SrbnStepRecord:
    k = i * 31 + j
    return ps.SrbnStepRecord(
        session_id=SESSION,
        node_id=NODES[k % len(NODES)],
        step=f"step-{k % 4}",
        outcome="ok" if k % 2 else "fail",
        energy_json=f'{{"v": {k}}}' if k % 3 else None,
        attempt_count=k % 5,
        duration_ms=k,
    )


def op_rows(i: int, profile: str = "mixed") -> list[ps.Row]:
    """The rows operation ``i`` writes, in the order each table receives them."""
    kind = kind_of(i, profile)
    if kind == "node_state":
        return [_node_state(i)]
    if kind == "energy":
        return [_energy(i)]
    if kind == "llm":
        return [_llm(i)]
    if kind == "many":  # a record_many batch of 4..40 rows over three or four tables
        n = 2 + i % 13
        rows: list[ps.Row] = [_energy(i, j) for j in range(n)]
        rows += [_llm(i, j) for j in range(n // 2 + 1)]
        rows += [_step(i, j) for j in range(n)]
        if i % 4 == 3:
            rows += [_node_state(i, j) for j in range(3)]
        return rows
    if kind == "transaction":
        return [_node_state(i), _energy(i), _step(i)]
    return [_step(i)]


def apply(store: ps.SessionStore, i: int, profile: str = "mixed") -> None:
    """Perform operation ``i``."""
    kind = kind_of(i, profile)
    rows = op_rows(i, profile)
    if kind == "many":
        store.record_many(rows)
    elif kind == "transaction":
        with store.transaction():
            _record(store, rows)
    else:
        _record(store, rows)


def _record(store: ps.SessionStore, rows: Sequence[ps.Row]) -> None:
    for row in rows:
        if isinstance(row, ps.NodeStateRecord):
            store.record_node_state(row)
        elif isinstance(row, ps.EnergyRecord):
            store.record_energy(row)
        elif isinstance(row, ps.LlmRequestRecord):
            store.record_llm_request(row)
        else:
            assert isinstance(row, ps.SrbnStepRecord)
            store.record_step(row)


def synchronous(i: int, profile: str = "mixed") -> bool:
    """True if operation ``i`` commits before it returns even in batched mode (record_many
    batches and transactions are never buffered; node states are, with their commits)."""
    return kind_of(i, profile) in ("many", "transaction")


# --- reading a run back ------------------------------------------------------------------

TABLES = ("node_states", "energy_history", "llm_requests", "srbn_step_records")


def read_tables(store: ps.SessionStore) -> dict[str, list[ps.Row]]:
    """Every row the session holds, per table, in insertion order."""
    return {
        "node_states": list(store.get_node_states(SESSION)),
        "energy_history": list(store.get_session_energy_history(SESSION)),
        "llm_requests": list(store.get_llm_requests(SESSION)),
        "srbn_step_records": list(store.get_session_steps(SESSION)),
    }


@dataclass
class Expected:
    """The rows of operations ``0..n-1`` per table, grown on demand."""

    profile: str = "mixed"

    per_table: dict[str, list[ps.Row]] = field(default_factory=lambda: {t: [] for t in TABLES})
    # totals[m] = rows written by operations 0..m-1; counts[t][m] likewise per table
    totals: list[int] = field(default_factory=lambda: [0])
    counts: dict[str, list[int]] = field(default_factory=lambda: {t: [0] for t in TABLES})

    # The crash tests check two files at a time, from two threads, against one Expected.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def extend_to(self, n: int) -> None:
        with self._lock:
            self._extend_to(n)

    def _extend_to(self, n: int) -> None:
        for i in range(len(self.totals) - 1, n):
            for row in op_rows(i, self.profile):
                self.per_table[row.__table__].append(row)
            for t in TABLES:
                self.counts[t].append(len(self.per_table[t]))
            self.totals.append(sum(len(rows) for rows in self.per_table.values()))


EXPECTED = {name: Expected(name) for name in PROFILES}
"""The rows of the operations, grown as far as any check needed."""


def committed_prefix(actual: dict[str, list[ps.Row]], limit: int, profile: str = "mixed") -> int:
    """The number ``m`` of operations whose rows the database holds, checking that it holds
    exactly the rows of operations ``0..m-1``, in order and equal field by field: nothing
    half-written (an operation is all or nothing), nothing out of order, nothing extra.

    Raises:
        AssertionError: The tables are not the exact prefix of any ``m <= limit``.
    """
    assert limit < 100_000, "an operation count this high means a runaway writer or a bug"
    expected = EXPECTED[profile]
    expected.extend_to(limit)
    total = sum(len(rows) for rows in actual.values())
    totals = expected.totals[: limit + 1]
    if total not in totals:
        sizes = {t: len(rows) for t, rows in actual.items()}
        raise AssertionError(
            f"the database holds {total} rows {sizes}, not the rows of any whole number of "
            f"operations <= {limit}: an operation was half-written"
        )
    m = totals.index(total)
    for t in TABLES:
        n = expected.counts[t][m]
        assert len(actual[t]) == n, f"{t}: {len(actual[t])} rows, expected {n} (ops < {m})"
        want = expected.per_table[t][:n]
        if actual[t] != want:
            bad = next(k for k, (a, b) in enumerate(zip(actual[t], want, strict=True)) if a != b)
            raise AssertionError(
                f"{t} row {bad} differs:\n got {actual[t][bad]!r}\nwant {want[bad]!r}"
            )
    return m


@dataclass
class Log:
    """The writer's output file, parsed."""

    first: int = 0
    """The first operation of this run."""
    ready: float | None = None
    acks: list[float] = field(default_factory=list)
    """acks[k] = when operation first + k returned."""
    flushed: int = 0
    """Operations < flushed were made durable by an explicit flush()."""

    @property
    def acked(self) -> int:
        """Operations < acked returned."""
        return self.first + len(self.acks)

    closed: float | None = None


def parse_log(path: Path, first: int = 0) -> Log:
    log = Log(first=first)
    for line in path.read_text().splitlines():
        tag, *rest = line.split()
        if tag == "R":
            log.ready = float(rest[0])
        elif tag == "A":
            assert int(rest[0]) == first + len(log.acks), f"acks out of order at {line!r}"
            log.acks.append(float(rest[1]))
        elif tag == "F":
            log.flushed = int(rest[0])
        elif tag == "C":
            log.closed = float(rest[0])
    return log


# --- the writer ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--durability", default="immediate", choices=("immediate", "batched"))
    parser.add_argument("--flush-interval", type=float, default=0.05)
    parser.add_argument("--flush-every", type=int, default=0, help="flush() every n ops")
    parser.add_argument("--publish-interval", type=float, default=0.0, help="0: none")
    parser.add_argument("--checkpoint-threshold", default="", help="e.g. 64KB")
    parser.add_argument("--ops", type=int, default=0, help="stop and close after n (0: never)")
    parser.add_argument("--pace", type=float, default=0.0, help="sleep between operations")
    parser.add_argument("--profile", default="mixed", choices=sorted(PROFILES))
    args = parser.parse_args(argv)
    go = sys.stdin.readline().split()  # wait for the go signal: "go [first op]"
    if not go:
        return  # the parent gave up on this writer
    first = int(go[1]) if len(go) > 1 else 0

    fd = os.open(args.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def say(line: str) -> None:
        os.write(fd, f"{line} {time.time():.6f}\n".encode())

    options: dict[str, object] = {"publish_interval": args.publish_interval or None}
    if args.durability == "batched":
        options.update(durability="batched", flush_interval=args.flush_interval)
    store = ps.SessionStore.open(args.db, **options)
    if args.checkpoint_threshold:  # checkpoint often, so kills land inside checkpoints too
        store.sql(f"SET checkpoint_threshold = '{args.checkpoint_threshold}'")
    if store.get_session(SESSION) is None:
        store.create_session(
            ps.SessionRecord(session_id=SESSION, task=HOSTILE, working_dir="/w", status="RUNNING")
        )
    say("R")
    i = first
    while not args.ops or i < first + args.ops:
        apply(store, i, args.profile)
        say(f"A {i}")
        i += 1
        if args.flush_every and i % args.flush_every == 0:
            store.flush()
            say(f"F {i}")
        if args.pace:
            time.sleep(args.pace)
    store.close()
    say("C")


if __name__ == "__main__":
    main()

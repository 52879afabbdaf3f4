"""Shared helpers for the benchmarks: timing, tables, and the synthetic session."""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import perspt_store as ps

SESSION = "bench-session"


def session_record(session_id: str = SESSION) -> ps.SessionRecord:
    return ps.SessionRecord(
        session_id=session_id, task="benchmark", working_dir="/tmp/bench", status="RUNNING"
    )


def energy_row(i: int, session_id: str = SESSION, nodes: int = 1000) -> ps.EnergyRecord:
    """An energy row like the orchestrator's (~100 bytes of payload)."""
    x = (i % 997) / 997
    return ps.EnergyRecord(
        node_id=f"node-{i % nodes:05d}",
        session_id=session_id,
        v_syn=x,
        v_str=x / 2,
        v_log=x / 3,
        v_boot=x / 4,
        v_sheaf=x / 5,
        v_total=x * 2.2833,
    )


def node_state(node: int, version: int, session_id: str = SESSION) -> ps.NodeStateRecord:
    return ps.NodeStateRecord(
        node_id=f"node-{node:05d}",
        session_id=session_id,
        state="Completed" if version == 4 else "Verifying",
        v_total=0.1 * version,
        merkle_hash=bytes([node % 256]) * 32 if node % 10 == 0 else None,
        attempt_count=version + 1,
        node_class="Implementation",
        owner_plugin="rust",
        goal=f"implement part {node} of the feature",
        parent_id=None if node == 0 else f"node-{(node - 1) // 4:05d}",
        children=[f"node-{c:05d}" for c in range(4 * node + 1, 4 * node + 5)],
        last_error_type=None,
        committed_at="2026-01-01T00:00:00Z",
    )


def session_rows(nodes: int, session_id: str = SESSION) -> Iterator[ps.Row]:
    """The snapshot benchmark's session: per node 5 snapshots, 20 energy rows, 2 sheaf
    validations and one each of verification, bundle, seal and provenance; plus one edge per
    node and a budget envelope."""
    yield session_record(session_id)
    for n in range(nodes):
        nid = f"node-{n:05d}"
        for v in range(5):
            yield node_state(n, v, session_id)
        for e in range(20):
            yield ps.EnergyRecord(
                node_id=nid, session_id=session_id, v_syn=0.01 * e, v_str=0.02,
                v_log=0.03, v_boot=0.0, v_sheaf=0.04, v_total=0.1 + 0.01 * e,
            )
        for k in range(2):
            yield ps.SheafValidationRow(
                session_id=session_id, node_id=nid, validator_class="ExportImportConsistency",
                plugin_source="rust", passed=k == 1, evidence_summary="checked 3 exports",
                affected_files=[f"src/mod_{n}.rs"], v_sheaf_contribution=0.05 * k,
                requeue_targets=[],
            )
        yield ps.VerificationResultRow(
            session_id=session_id, node_id=nid, result_json='{"ok":true}', syntax_ok=True,
            build_ok=True, tests_ok=True, lint_ok=True, diagnostics_count=0, tests_passed=12,
        )
        yield ps.ArtifactBundleRow(
            session_id=session_id, node_id=nid, bundle_json='{"artifacts":[]}',
            artifact_count=2, command_count=1, touched_files=[f"src/mod_{n}.rs"],
        )
        yield ps.InterfaceSealRow(
            seal_id=f"seal-{n}", session_id=session_id, node_id=nid,
            sealed_path=f"src/mod_{n}.rs", artifact_kind="interface",
            seal_hash=bytes([n % 256]) * 32,
        )
        yield ps.ContextProvenanceRecord(
            session_id=session_id, node_id=nid, context_package_id=f"ctx-{n}",
            structural_hashes=[f"sd-{n}:00ff"], summary_hashes=[], dependency_hashes=[],
            included_file_count=3, total_bytes=4096,
        )
        if n:
            yield ps.TaskGraphEdgeRow(
                session_id=session_id, parent_node_id=f"node-{(n - 1) // 4:05d}",
                child_node_id=nid, edge_type="depends_on",
            )
    yield ps.BudgetEnvelopeRow(session_id=session_id, max_steps=100_000, steps_used=nodes)


@dataclass
class Timing:
    """Per-repetition seconds of one workload."""

    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def time_calls(
    run: Callable[[], object], repeat: int, *, setup: Callable[[], object] | None = None
) -> Timing:
    """Median-friendly timing: ``repeat`` runs of ``run`` (``setup`` untimed before each)."""
    timing = Timing()
    for _ in range(repeat):
        if setup is not None:
            setup()
        gc.collect()
        start = time.perf_counter()
        run()
        timing.samples.append(time.perf_counter() - start)
    return timing


def per_call(run: Callable[[], object], calls: int) -> list[float]:
    """Seconds of each of ``calls`` calls."""
    out = []
    clock = time.perf_counter
    for _ in range(calls):
        start = clock()
        run()
        out.append(clock() - start)
    return out


@contextmanager
def gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def fresh_path(root: Path, name: str) -> Path:
    path = root / name
    for suffix in ("", ".wal", ".snapshot"):
        p = Path(str(path) + suffix)
        if p.exists():
            os.remove(p)
    return path


def fmt_seconds(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=False)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)))

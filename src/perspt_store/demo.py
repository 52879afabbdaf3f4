"""A small, realistic SRBN session recorded through the public API.

:func:`record_demo_session` writes what an orchestrator run writes (SPEC §1): a session that
goes from ``RUNNING`` to ``COMPLETED``, its feature charter, the initial plan revision, the
task graph of five nodes, and for every node the SRBN loop (speculate, verify, converge,
commit) with energies V(x) that fall to ~0 over 2-4 attempts, LLM calls, context provenance,
verification results, artifact bundles, a review and a final ``Completed`` snapshot. One node
(:data:`ESCALATED_NODE`) fails verification, is escalated, rewritten and repaired; its
speculative child branches are flushed. The Interface node seals its interface, and that
32-byte hash becomes the session's ``merkle_root``.

It is used by ``perspt-store demo``, by the docs and by tests that need a full session.
Everything is derived from ``seed`` (ids, energies, token counts, clock), so the same seed
gives the same rows; the columns the database fills in (``id``, ``created_at``, ...) are the
only exception. It imports nothing beyond the library.

Example:
    >>> import perspt_store as ps
    >>> from perspt_store.demo import record_demo_session
    >>> with ps.SessionStore.in_memory() as store:
    ...     session_id = record_demo_session(store, seed=1)
    ...     store.get_session(session_id).status
    'COMPLETED'
"""

from __future__ import annotations

import datetime as _dt
import json
import random
from collections.abc import Callable
from dataclasses import dataclass

import blake3

from .rows import (
    ArtifactBundleRow,
    BranchFlushRow,
    BranchLineageRow,
    BudgetEnvelopeRow,
    ContextProvenanceRecord,
    CorrectionAttemptRow,
    EnergyRecord,
    EscalationReportRecord,
    FeatureCharterRow,
    InterfaceSealRow,
    LlmRequestRecord,
    NodeStateRecord,
    PlanRevisionRow,
    ProvisionalBranchRow,
    RepairFootprintRow,
    ReviewOutcomeRow,
    RewriteRecordRow,
    SessionRecord,
    SheafValidationRow,
    SrbnStepRecord,
    TaskGraphEdgeRow,
    VerificationResultRow,
)
from .store import SessionStore

__all__ = [
    "DEMO_EDGES",
    "DEMO_NODES",
    "DEMO_TASK",
    "ESCALATED_NODE",
    "INTERFACE_NODE",
    "DemoNode",
    "demo_session_id",
    "record_demo_session",
]


@dataclass(frozen=True)
class DemoNode:
    """One node of the demo's task graph."""

    node_id: str
    node_class: str
    goal: str
    files: tuple[str, ...]


DEMO_TASK = "Add token-bucket rate limiting to the httpkit HTTP client"
"""The demo session's task."""

DEMO_NODES: tuple[DemoNode, ...] = (
    DemoNode(
        "rate_limiter_api",
        "Interface",
        "Define the RateLimiter protocol and its configuration",
        ("src/httpkit/ratelimit/api.py",),
    ),
    DemoNode(
        "token_bucket",
        "Implementation",
        "Implement a thread-safe token bucket behind the RateLimiter protocol",
        ("src/httpkit/ratelimit/bucket.py",),
    ),
    DemoNode(
        "client_middleware",
        "Implementation",
        "Throttle Client.send through the limiter and honour Retry-After on 429",
        ("src/httpkit/client.py", "src/httpkit/ratelimit/middleware.py"),
    ),
    DemoNode(
        "limiter_tests",
        "Integration",
        "Test bursts, refill timing and Retry-After handling",
        ("tests/test_ratelimit.py",),
    ),
    DemoNode(
        "usage_docs",
        "Implementation",
        "Document rate limiting in the user guide",
        ("docs/rate-limiting.md",),
    ),
)
"""The task graph's nodes, in the order they are executed (a topological order)."""

DEMO_EDGES: tuple[tuple[str, str, str], ...] = (
    ("rate_limiter_api", "token_bucket", "interface_boundary"),
    ("rate_limiter_api", "client_middleware", "interface_boundary"),
    ("token_bucket", "client_middleware", "depends_on"),
    ("token_bucket", "limiter_tests", "depends_on"),
    ("client_middleware", "limiter_tests", "depends_on"),
    ("client_middleware", "usage_docs", "depends_on"),
)
"""``(parent, child, edge_type)`` edges of the task graph."""

INTERFACE_NODE = "rate_limiter_api"
"""The Interface-class node: it gets an interface seal and sets the session's merkle_root."""

ESCALATED_NODE = "client_middleware"
"""The node that fails verification, is escalated, rewritten and repaired; its speculative
child branches are flushed."""

_MODEL = "claude-sonnet-4-5"
_PRICE_IN, _PRICE_OUT = 3e-6, 15e-6  # US dollars per token
_BASE_START = _dt.datetime(2026, 1, 5, 9, 0, 0, tzinfo=_dt.UTC)
_WORKING_DIR = "/home/dev/src/httpkit"


def demo_session_id(seed: int) -> str:
    """The session id :func:`record_demo_session` uses for ``seed`` when none is given."""
    return f"demo-{random.Random(seed).getrandbits(32):08x}"


def _iso(moment: _dt.datetime) -> str:
    return moment.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hash(text: str) -> bytes:
    return blake3.blake3(text.encode()).digest()


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


class _Recorder:
    """Plays the orchestrator: one method per phase of the run, all writes through ``store``."""

    def __init__(
        self, store: SessionStore, session_id: str, rng: random.Random, start: _dt.datetime
    ) -> None:
        self.store = store
        self.sid = session_id
        self.rng = rng
        self.clock = start
        # A short token that keeps the other tables' unique ids apart between sessions.
        self.token = blake3.blake3(session_id.encode()).hexdigest()[:8]
        self.steps_used = 0
        self.cost_usd = 0.0
        self.llm_calls = 0
        self.children = {n.node_id: [c for p, c, _ in DEMO_EDGES if p == n.node_id]
                         for n in DEMO_NODES}
        self.parents = {n.node_id: [p for p, c, _ in DEMO_EDGES if c == n.node_id]
                        for n in DEMO_NODES}
        self.seal_hash = b""
        self.branch_ids: dict[str, str] = {}

    # --- small helpers ------------------------------------------------------------------

    def tick(self, milliseconds: int) -> None:
        self.clock += _dt.timedelta(milliseconds=milliseconds)

    def llm(self, node_id: str, *, prompt: str = "", response: str = "") -> int:
        """One LLM call (usage-only unless prompt/response are given); returns its latency."""
        tokens_in = self.rng.randint(1800, 5200)
        tokens_out = self.rng.randint(350, 1600)
        latency = self.rng.randint(2500, 14000)
        self.store.record_llm_request(
            LlmRequestRecord(
                session_id=self.sid,
                node_id=node_id,
                model=_MODEL,
                prompt=prompt,
                response=response,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                latency_ms=latency,
            )
        )
        self.cost_usd += tokens_in * _PRICE_IN + tokens_out * _PRICE_OUT
        self.llm_calls += 1
        self.tick(latency)
        return latency

    def step(
        self,
        node_id: str,
        step: str,
        *,
        attempt: int,
        outcome: str = "ok",
        energy: dict[str, float] | None = None,
        parse_state: str | None = None,
        retry: str | None = None,
        duration_ms: int | None = None,
    ) -> None:
        duration = duration_ms if duration_ms is not None else self.rng.randint(40, 900)
        self.store.record_step(
            SrbnStepRecord(
                session_id=self.sid,
                node_id=node_id,
                step=step,
                outcome=outcome,
                energy_json=_json(energy) if energy is not None else None,
                parse_state=parse_state,
                retry_classification=retry,
                attempt_count=attempt,
                duration_ms=duration,
            )
        )
        self.steps_used += 1
        if duration_ms is None:
            self.tick(duration)

    def energies(self, node: DemoNode, attempts: int) -> list[dict[str, float]]:
        """Components per attempt: each falls geometrically, the last attempt is ~0."""
        rng = self.rng
        base = {
            "v_syn": rng.uniform(0.3, 1.2),
            "v_str": rng.uniform(0.2, 0.8),
            "v_log": rng.uniform(0.5, 2.0),
            "v_boot": rng.uniform(0.05, 0.3),
            "v_sheaf": rng.uniform(0.05, 0.4) if self.parents[node.node_id] else 0.0,
        }
        residual = round(rng.uniform(0.0, 0.01), 4)
        out = []
        for k in range(attempts):
            left = 1 - k / (attempts - 1)  # 1 on the first attempt, 0 on the last
            parts = {
                "v_syn": base["v_syn"] * left**3,  # syntax is fixed first
                "v_str": base["v_str"] * left**2,
                "v_log": base["v_log"] * left + (residual if k == attempts - 1 else 0.0),
                "v_boot": base["v_boot"] if k == 0 else 0.0,  # bootstrap only once
                "v_sheaf": base["v_sheaf"] * left,
            }
            rounded = {name: round(value, 4) for name, value in parts.items()}
            rounded["v_total"] = round(sum(rounded.values()), 4)
            out.append(rounded)
        return out

    # --- phases -------------------------------------------------------------------------

    def start(self) -> None:
        self.store.create_session(
            SessionRecord(
                session_id=self.sid, task=DEMO_TASK, working_dir=_WORKING_DIR, status="RUNNING"
            )
        )
        if self.store.get_feature_charter(self.sid) is None:  # one default charter per session
            self.store.record_feature_charter(
                FeatureCharterRow(
                    charter_id=f"charter-{self.token}",
                    session_id=self.sid,
                    scope_description="Client-side rate limiting for httpkit: a RateLimiter "
                    "protocol, a token bucket, client integration, tests and docs",
                    max_modules=4,
                    max_files=12,
                    max_revisions=3,
                    language_constraint="python",
                )
            )
        plan = {
            "goal": DEMO_TASK,
            "tasks": [
                {
                    "id": n.node_id,
                    "goal": n.goal,
                    "node_class": n.node_class,
                    "output_files": list(n.files),
                    "dependencies": self.parents[n.node_id],
                }
                for n in DEMO_NODES
            ],
        }
        self.store.record_plan_revision(
            PlanRevisionRow(
                revision_id=f"rev-{self.token}-1",
                session_id=self.sid,
                sequence=1,
                plan_json=_json(plan),
                reason="initial plan",
            )
        )
        self.budget(max_steps=80)
        for parent, child, edge_type in DEMO_EDGES:
            self.store.record_task_graph_edge(
                TaskGraphEdgeRow(
                    session_id=self.sid,
                    parent_node_id=parent,
                    child_node_id=child,
                    edge_type=edge_type,
                )
            )

    def budget(self, *, max_steps: int = 80) -> None:
        self.store.upsert_budget_envelope(
            BudgetEnvelopeRow(
                session_id=self.sid,
                max_steps=max_steps,
                steps_used=self.steps_used,
                max_revisions=3,
                revisions_used=0,
                max_cost_usd=2.5,
                cost_used_usd=round(self.cost_usd, 6),
            )
        )

    def branch(self, node_id: str, parent: str, *, seal: bytes | None) -> str:
        branch_id = f"br-{self.token}-{len(self.branch_ids) + 1}"
        self.branch_ids[node_id] = branch_id
        self.store.record_provisional_branch(
            ProvisionalBranchRow(
                branch_id=branch_id,
                session_id=self.sid,
                node_id=node_id,
                parent_node_id=parent,
                parent_seal_hash=seal,
                sandbox_dir=f".perspt/sandboxes/{branch_id}",
            )
        )
        self.store.record_branch_lineage(
            BranchLineageRow(
                lineage_id=f"lin_{branch_id}_{parent}",
                parent_branch_id=parent,  # the orchestrator stores the parent *node* id
                child_branch_id=branch_id,
                depends_on_seal=seal is not None,
                session_id=self.sid,
            )
        )
        return branch_id

    def run_node(self, node: DemoNode) -> None:
        nid = node.node_id
        escalated = nid == ESCALATED_NODE
        attempts = self.rng.randint(3 if escalated else 2, 4)
        energies = self.energies(node, attempts)
        for k, energy in enumerate(energies, start=1):
            if escalated and k == 2:
                self.correction(node, attempt=1, accepted=False)
            if escalated and k == 3:
                self.correction(node, attempt=2, accepted=True)
            full_log = nid == INTERFACE_NODE and k == 1
            latency = self.llm(
                nid,
                prompt=f"You are the actuator for node {nid}.\nGoal: {node.goal}\n"
                f"Write {', '.join(node.files)}." if full_log else "",
                response="```python\nclass RateLimiter(Protocol):\n"
                "    def acquire(self, cost: int = 1) -> float: ...\n```" if full_log else "",
            )
            self.step(
                nid, "speculate", attempt=k, parse_state="ok",
                retry="parse_error" if escalated and k == 2 else None, duration_ms=latency,
            )
            self.step(nid, "verify", attempt=k, energy=energy, duration_ms=None)
            self.store.record_energy(EnergyRecord(node_id=nid, session_id=self.sid, **energy))
            if escalated and k == 1:
                self.speculate_children(nid)
            if escalated and k == 2:
                self.escalate(node, energy)
        self.step(nid, "converge", attempt=attempts, energy=energies[-1])
        if escalated:
            self.sheaf_check(node, attempts)
        self.commit(node, attempts, energies[-1])

    def speculate_children(self, parent: str) -> None:
        """Children start on provisional branches before their parent is sealed."""
        self.branch("limiter_tests", parent, seal=None)
        docs_branch = self.branch("usage_docs", parent, seal=None)
        self.store.update_branch_state(docs_branch, "sealed", session_id=self.sid)

    def correction(self, node: DemoNode, *, attempt: int, accepted: bool) -> None:
        response = (
            f"--- a/{node.files[0]}\n+++ b/{node.files[0]}\n"
            "@@ class Client:\n+        wait = self._limiter.acquire()\n"
            "+        if response.status_code == 429:\n"
            "+            wait = float(response.headers.get('Retry-After', wait))\n"
        )
        self.llm(
            node.node_id,
            prompt=f"Correct {node.node_id}: 3 tests fail because 429 responses are retried "
            "immediately. Honour Retry-After." if accepted else "",
            response=response if accepted else "",
        )
        self.store.record_correction_attempt(
            CorrectionAttemptRow(
                session_id=self.sid,
                node_id=node.node_id,
                attempt=attempt,
                parse_state="ok" if accepted else "malformed",
                retry_classification=None if accepted else "parse_error",
                response_fingerprint=blake3.blake3(
                    f"{self.sid}:{node.node_id}:{attempt}".encode()
                ).hexdigest()[:16],
                response_length=len(response) if accepted else self.rng.randint(200, 900),
                energy_json=None,
                accepted=accepted,
                rejection_reason=None if accepted else "no fenced code block for "
                f"{node.files[0]} in the response",
                created_at=int(self.clock.timestamp()),
            )
        )

    def escalate(self, node: DemoNode, energy: dict[str, float]) -> None:
        nid = node.node_id
        category = "ContractMismatch"
        action = _json({"kind": "grounded_retry", "node_id": nid,
                        "note": "re-read the RateLimiter contract: acquire() returns the wait"})
        self.step(nid, "converge", attempt=2, outcome="escalated", energy=energy,
                  retry="stalled_energy")
        self.store.record_verification_result(
            VerificationResultRow(
                session_id=self.sid,
                node_id=nid,
                result_json=_json({"syntax": "ok", "build": "ok", "tests": "3 failed"}),
                syntax_ok=True,
                build_ok=True,
                tests_ok=False,
                lint_ok=True,
                diagnostics_count=2,
                tests_passed=6,
                tests_failed=3,
            )
        )
        affected = [nid, *self.children[nid]]
        self.store.record_escalation_report(
            EscalationReportRecord(
                session_id=self.sid,
                node_id=nid,
                category=category,
                action=action,
                energy_snapshot=_json(energy),
                stage_outcomes=_json([
                    {"stage": "syntax", "ok": True},
                    {"stage": "build", "ok": True},
                    {"stage": "tests", "ok": False, "failed": 3},
                ]),
                evidence="test_retry_after_honoured, test_burst_then_wait and test_429_backoff "
                "fail: 429 responses are retried immediately",
                affected_node_ids=affected,
            )
        )
        self.store.record_review_outcome(
            ReviewOutcomeRow(
                session_id=self.sid,
                node_id=nid,
                outcome="rejected",
                reviewer_note="Retry-After is ignored on 429; the limiter is bypassed on retry",
                degraded=False,
                escalation_category=category,
            )
        )
        # The parent escalated: speculative work built on it is discarded.
        flushed = self.store.flush_branches_for_parent(self.sid, nid)
        self.branch_ids = {n: b for n, b in self.branch_ids.items() if b not in flushed}
        self.store.record_branch_flush(
            BranchFlushRow(
                flush_id=f"flush-{self.token}-1",
                session_id=self.sid,
                parent_node_id=nid,
                flushed_branch_ids=flushed,
                requeue_node_ids=self.children[nid],
                reason=f"parent {nid} escalated ({category})",
            )
        )
        # The orchestrator stops rewriting a lineage after a few rewrites.
        if self.store.count_lineage_rewrites(self.sid, nid) < 3:
            self.store.record_rewrite(
                RewriteRecordRow(
                    session_id=self.sid,
                    node_id=nid,
                    action=action,
                    category=category,
                    requeued_nodes=affected,
                    inserted_nodes=[],
                )
            )
        self.store.record_repair_footprint(
            RepairFootprintRow(
                footprint_id=f"fp-{self.token}-{nid}-2",
                session_id=self.sid,
                node_id=nid,
                revision_id="initial",
                attempt=2,
                affected_files=list(node.files),
                bundle_json=_json({"artifacts": [{"path": p, "operation": "patch"}
                                                 for p in node.files]}),
                diagnosis="429 responses are retried immediately instead of after Retry-After",
            )
        )

    def sheaf_check(self, node: DemoNode, attempts: int) -> None:
        self.step(node.node_id, "sheaf_validate", attempt=attempts)
        self.store.record_sheaf_validation(
            SheafValidationRow(
                session_id=self.sid,
                node_id=node.node_id,
                validator_class="InterfaceConformance",
                plugin_source="python",
                passed=True,
                evidence_summary="Client calls RateLimiter.acquire() as sealed in "
                f"{DEMO_NODES[0].files[0]}",
                affected_files=[],
                v_sheaf_contribution=0.0,
                requeue_targets=[],
            )
        )

    def commit(self, node: DemoNode, attempts: int, energy: dict[str, float]) -> None:
        nid = node.node_id
        sid = self.sid
        seal = None
        if nid == INTERFACE_NODE:
            seal = _hash(f"{self.token}:{node.files[0]}:sealed interface")
            self.store.record_interface_seal(
                InterfaceSealRow(
                    seal_id=f"seal-{self.token}-{nid}",
                    session_id=sid,
                    node_id=nid,
                    sealed_path=node.files[0],
                    artifact_kind="interface",
                    seal_hash=seal,
                )
            )
            self.seal_hash = seal
        parents = self.parents[nid]
        self.store.record_context_provenance(
            ContextProvenanceRecord(
                session_id=sid,
                node_id=nid,
                context_package_id=f"ctx-{self.token}-{nid}",
                structural_hashes=[f"sd-{nid}-{i}:{_hash(path).hex()}"
                                   for i, path in enumerate(node.files)],
                summary_hashes=[f"sum-{p}:{_hash('summary ' + p).hex()}" for p in parents],
                dependency_hashes=[f"{INTERFACE_NODE}:{self.seal_hash.hex()}"]
                if INTERFACE_NODE in parents else [],
                included_file_count=len(node.files) + len(parents),
                total_bytes=self.rng.randint(4_000, 60_000),
            )
        )
        tests = self.rng.randint(4, 16) if node.node_class != "Interface" else 0
        degraded = node.files[0].endswith(".md")
        self.store.record_verification_result(
            VerificationResultRow(
                session_id=sid,
                node_id=nid,
                result_json=_json({"syntax": "ok", "build": "ok", "tests": f"{tests} passed",
                                   "lint": "skipped" if degraded else "ok"}),
                syntax_ok=True,
                build_ok=True,
                tests_ok=True,
                lint_ok=not degraded,
                tests_passed=tests,
                degraded=degraded,
                degraded_reason="no markdown linter on PATH" if degraded else None,
            )
        )
        commands = ["ruff check .", "pytest -q"]
        self.store.record_artifact_bundle(
            ArtifactBundleRow(
                session_id=sid,
                node_id=nid,
                bundle_json=_json({"artifacts": [{"path": p, "operation": "write"}
                                                 for p in node.files], "commands": commands}),
                artifact_count=len(node.files),
                command_count=len(commands),
                touched_files=list(node.files),
            )
        )
        self.step(nid, "commit", attempt=attempts)
        self.store.record_node_state(
            NodeStateRecord(
                node_id=nid,
                session_id=sid,
                state="Completed",
                v_total=energy["v_total"],
                merkle_hash=seal,
                attempt_count=attempts,
                node_class=node.node_class,
                owner_plugin="python",
                goal=node.goal,
                parent_id=parents[0] if parents else None,
                children=self.children[nid],
                last_error_type="TestFailure" if nid == ESCALATED_NODE else None,
                committed_at=_iso(self.clock),
            )
        )
        if seal is not None and len(seal) == 32:
            self.store.update_merkle_root(sid, seal)
        if nid == ESCALATED_NODE:
            self.store.resolve_repair_footprint(f"fp-{self.token}-{nid}-2")
        if nid in self.branch_ids:  # committed work on a live branch is merged
            self.store.update_branch_state(self.branch_ids[nid], "merged", session_id=sid)
        outcome, note = "auto_approved", None
        if nid == INTERFACE_NODE:
            outcome, note = "approved", "Protocol is minimal and documented"
        elif nid == ESCALATED_NODE:
            outcome = "approved"
        self.store.record_review_outcome(
            ReviewOutcomeRow(
                session_id=sid, node_id=nid, outcome=outcome, reviewer_note=note,
                degraded=degraded,
            )
        )
        self.budget()
        if nid == INTERFACE_NODE:  # the bucket starts on a branch built on the sealed API
            self.branch("token_bucket", nid, seal=seal)


def record_demo_session(
    store: SessionStore,
    session_id: str | None = None,
    *,
    seed: int = 0,
    started_at: _dt.datetime | None = None,
    progress: Callable[[str], None] | None = None,
) -> str:
    """Record a complete demo SRBN session into ``store`` and return its id.

    Everything is written in one transaction: the session appears complete or not at all.

    Args:
        store: A read-write store.
        session_id: The session's id; by default :func:`demo_session_id` of ``seed``. Every
            other id (charter, revision, branches, seals, ...) is derived from it, so
            several demo sessions can live in one store.
        seed: Drives every generated value: the same seed records the same rows.
        started_at: When the simulated run starts (it sets ``committed_at`` and the
            correction attempts' epoch seconds); a fixed date derived from ``seed`` by
            default, so the rows are reproducible.
        progress: Called with each node's id after the node is committed.

    Returns:
        The session id.

    Raises:
        DuplicateRecordError: A session with this id already exists (nothing is written).
        ReadOnlyStoreError: The store is read-only.
    """
    rng = random.Random(seed)
    sid = session_id if session_id is not None else demo_session_id(seed)
    start = started_at or _BASE_START + _dt.timedelta(days=seed % 3650)
    recorder = _Recorder(store, sid, rng, start)
    with store.transaction():
        recorder.start()
        for node in DEMO_NODES:
            recorder.run_node(node)
            if progress is not None:
                progress(node.node_id)
        store.update_session_status(sid, "COMPLETED")
    return sid

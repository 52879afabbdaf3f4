"""The web dashboard in-process: every route and API endpoint, hostile content, unknown ids,
login, the live stream, and that nothing is ever written.

The browser tests (a real Chromium) are in ``test_web_browser.py``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from markupsafe import escape
from starlette.testclient import TestClient

import perspt_store as ps
from perspt_store.cli import cli
from perspt_store.demo import DEMO_NODES, record_demo_session
from perspt_store.web import create_app
from perspt_store.web._svg import dag_svg, layered_layout

SCRIPT_TASK = "<script>alert(1)</script>"
IMG_NODE = '"><img src=x onerror=alert(1)>'
HOSTILE = "hostile-session"
PASSWORD = "correct horse battery staple"
SESSION_TABS = ("", "/dag", "/energy", "/llm", "/decisions", "/sandbox", "/merkle")


def _hostile(store: ps.SessionStore) -> None:
    """A session whose every text field an attacker chose."""
    store.create_session(
        ps.SessionRecord(
            session_id=HOSTILE, task=SCRIPT_TASK, working_dir=IMG_NODE, status=SCRIPT_TASK
        )
    )
    store.record_node_state(
        ps.NodeStateRecord(
            node_id=IMG_NODE,
            session_id=HOSTILE,
            state=SCRIPT_TASK,
            v_total=1.5,
            attempt_count=1,
            goal=SCRIPT_TASK,
        )
    )
    store.record_task_graph_edge(
        ps.TaskGraphEdgeRow(
            session_id=HOSTILE,
            parent_node_id=IMG_NODE,
            child_node_id=SCRIPT_TASK,
            edge_type=IMG_NODE,
        )
    )
    store.record_energy(
        ps.EnergyRecord(
            node_id=IMG_NODE,
            session_id=HOSTILE,
            v_syn=1,
            v_str=0.5,
            v_log=0,
            v_boot=0,
            v_sheaf=0,
            v_total=1.5,
        )
    )
    store.record_llm_request(
        ps.LlmRequestRecord(
            session_id=HOSTILE,
            node_id=IMG_NODE,
            model=SCRIPT_TASK,
            prompt=SCRIPT_TASK,
            response=IMG_NODE,
            tokens_in=3,
            tokens_out=4,
            latency_ms=5,
        )
    )
    store.record_review_outcome(
        ps.ReviewOutcomeRow(
            session_id=HOSTILE, node_id=IMG_NODE, outcome=SCRIPT_TASK, reviewer_note=IMG_NODE
        )
    )
    store.record_provisional_branch(
        ps.ProvisionalBranchRow(
            branch_id=IMG_NODE,
            session_id=HOSTILE,
            node_id=IMG_NODE,
            parent_node_id=SCRIPT_TASK,
            state=SCRIPT_TASK,
            sandbox_dir=SCRIPT_TASK,
        )
    )
    store.record_branch_flush(
        ps.BranchFlushRow(
            flush_id=SCRIPT_TASK,
            session_id=HOSTILE,
            parent_node_id=IMG_NODE,
            flushed_branch_ids=[IMG_NODE],
            requeue_node_ids=[SCRIPT_TASK],
            reason=SCRIPT_TASK,
        )
    )


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two demo sessions and a hostile one, in a file."""
    path = tmp_path_factory.mktemp("web") / "perspt.db"
    with ps.SessionStore.open(path) as store:
        record_demo_session(store, seed=1)
        record_demo_session(store, seed=2)
        _hostile(store)
    return path


@pytest.fixture(scope="module")
def demo_id(db: Path) -> str:
    from perspt_store.demo import demo_session_id

    return demo_session_id(1)


@pytest.fixture(scope="module")
def client(db: Path) -> Iterator[TestClient]:
    with TestClient(create_app(db)) as c:
        yield c


def ok(client: TestClient, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, (url, response.text[:500])
    return response.text


# --- overview ---------------------------------------------------------------------------------


def test_overview_lists_sessions_with_counts_and_global_llm_totals(
    client: TestClient, db: Path, demo_id: str
) -> None:
    page = ok(client, "/")
    with ps.SessionStore.open_read_only(db) as store:
        llm = store.get_global_llm_summary()
        ids = [s.session_id for s in store.list_sessions_paginated(10, 0)]
    for sid in ids:
        assert f'href="/sessions/{quote(sid, safe="")}"' in page
    assert f"{llm.tokens_in:,}" in page and f"{llm.count:,}" in page
    assert "COMPLETED" in page


def test_overview_filters_searches_sorts_and_pages(client: TestClient, demo_id: str) -> None:
    data = client.get("/api/sessions", params={"status": "completed"}).json()
    assert {s["status"] for s in data["sessions"]} == {"COMPLETED"}
    assert data["matching"] == 2 and data["total_sessions"] == 3

    by_id = client.get("/api/sessions", params={"q": demo_id[-6:].upper()}).json()
    assert [s["session_id"] for s in by_id["sessions"]] == [demo_id]
    by_task = client.get("/api/sessions", params={"q": "alert(1)"}).json()
    assert [s["session_id"] for s in by_task["sessions"]] == [HOSTILE]

    ascending = client.get("/api/sessions", params={"sort": "id", "order": "asc"}).json()
    ids = [s["session_id"] for s in ascending["sessions"]]
    assert ids == sorted(ids)
    descending = client.get("/api/sessions", params={"sort": "id"}).json()
    assert [s["session_id"] for s in descending["sessions"]] == ids[::-1]

    pages = [
        client.get("/api/sessions", params={"per_page": 1, "page": n, "sort": "id"}).json()
        for n in (1, 2, 3)
    ]
    assert [p["sessions"][0]["session_id"] for p in pages] == ids[::-1]
    assert pages[0]["pages"] == 3
    page_two = ok(client, "/?per_page=1&page=2&sort=id")
    assert 'rel="prev"' in page_two and 'rel="next"' in page_two


def test_overview_counts_nodes_by_latest_state(client: TestClient, demo_id: str) -> None:
    row = next(
        s for s in client.get("/api/sessions").json()["sessions"] if s["session_id"] == demo_id
    )
    assert row["nodes"] == {"total": len(DEMO_NODES), "completed": len(DEMO_NODES)}


@pytest.mark.parametrize(
    "query", ["page=abc", "per_page=-5", "sort=;DROP", "page=999999", "status=", "q=%00"]
)
def test_overview_bad_query_strings_fall_back_not_fail(client: TestClient, query: str) -> None:
    assert client.get("/?" + query).status_code == 200
    assert client.get("/api/sessions?" + query).status_code == 200


# --- session pages ----------------------------------------------------------------------------


def test_session_page_shows_verification_budget_plan_and_every_node(
    client: TestClient, db: Path, demo_id: str
) -> None:
    page = ok(client, f"/sessions/{demo_id}")
    assert "Budget" in page and "Revision 1" in page
    for node in DEMO_NODES:
        assert f'href="/sessions/{demo_id}/nodes/{node.node_id}"' in page
    for slug in ("dag", "energy", "llm", "decisions", "sandbox", "merkle"):
        assert f'href="/sessions/{demo_id}/{slug}"' in page
    data = client.get(f"/api/sessions/{demo_id}").json()
    assert [n["node_id"] for n in data["nodes"]] == [n.node_id for n in DEMO_NODES]
    assert all(n["duration_s"] is not None for n in data["nodes"])
    with ps.SessionStore.open_read_only(db) as store:
        for node in data["nodes"]:
            check = store.get_verification_result(demo_id, node["node_id"])
            assert check is not None and node["degraded"] == check.degraded
            assert node["verified"] == (check.syntax_ok and check.build_ok and check.tests_ok)
    assert data["budget"]["steps_used"] > 0


def test_the_verification_badge_comes_from_verify_session(db: Path, demo_id: str) -> None:
    with TestClient(create_app(db)) as client:
        first = ok(client, f"/sessions/{demo_id}")
        assert 'data-verify="/api/sessions/' in first and "verifying the log" in first
        verdict = client.get(f"/api/sessions/{demo_id}/verify").json()
        assert verdict["ok"] is True and verdict["problems"] == [] and verdict["log_size"] > 0
        assert "log verified" in ok(client, f"/sessions/{demo_id}")  # the verdict is kept
    with ps.SessionStore.open_read_only(db) as store:
        assert verdict["log_root"] == store.verify_session(demo_id).log_root.hex()


def test_a_running_session_shows_how_long_it_has_been_running(db: Path) -> None:
    path = db.with_name("running.db")
    with ps.SessionStore.open(path) as store:
        store.create_session(
            ps.SessionRecord(session_id="r", task="t", working_dir="/w", status="RUNNING")
        )
    with TestClient(create_app(path)) as client:
        assert "Running for" in ok(client, "/sessions/r")
        data = client.get("/api/sessions/r").json()
    assert data["running"] is True and data["duration_s"] >= 0 and data["nodes"] == []
    assert client.get("/api/sessions/r/verify").json()["log_size"] == 0


def test_dag_draws_every_node_and_edge_linked_to_its_history(
    client: TestClient, demo_id: str
) -> None:
    page = ok(client, f"/sessions/{demo_id}/dag")
    data = client.get(f"/api/sessions/{demo_id}/dag").json()
    assert {n["node_id"] for n in data["nodes"]} == {n.node_id for n in DEMO_NODES}
    for node in DEMO_NODES:
        assert f'href="/sessions/{demo_id}/nodes/{node.node_id}"' in page
    assert page.count('class="edge ') == len(data["edges"]) > 0


def test_energy_page_draws_a_chart_per_node_naming_the_components(
    client: TestClient, demo_id: str
) -> None:
    page = ok(client, f"/sessions/{demo_id}/energy")
    assert page.count('class="energy-chart"') == len(DEMO_NODES)
    for name in ("V_syn", "V_str", "V_log", "V_boot", "V_sheaf", "V(x) total"):
        assert name in page
    data = client.get(f"/api/sessions/{demo_id}/energy").json()
    assert all(n["last"] < n["first"] for n in data["nodes"])  # the demo converges


def test_llm_page_totals_per_node_and_model(client: TestClient, db: Path, demo_id: str) -> None:
    data = client.get(f"/api/sessions/{demo_id}/llm").json()
    with ps.SessionStore.open_read_only(db) as store:
        requests = store.get_llm_requests(demo_id)
        budget = store.get_budget_envelope(demo_id)
    assert data["totals"]["requests"] == len(requests)
    assert sum(n["requests"] for n in data["by_node"]) == len(requests)
    assert sum(m["requests"] for m in data["by_model"]) == len(requests)
    assert budget is not None
    assert sum(m["cost_usd"] for m in data["by_model"]) == pytest.approx(budget.cost_used_usd)
    page = ok(client, f"/sessions/{demo_id}/llm")
    assert requests[0].model in page and "Per node" in page


def test_decisions_is_one_timeline_including_reviews(client: TestClient, demo_id: str) -> None:
    data = client.get(f"/api/sessions/{demo_id}/decisions").json()
    kinds = {e["kind"] for e in data["events"]}
    assert {"escalation", "rewrite", "review", "verification", "correction", "plan"} <= kinds
    times = [e["time"] for e in data["events"]]
    assert times == sorted(times)
    assert ok(client, f"/sessions/{demo_id}/decisions").count("<tr>") == len(data["events"]) + 1


def test_sandbox_shows_branches_flushes_lineage_and_seals(client: TestClient, demo_id: str) -> None:
    data = client.get(f"/api/sessions/{demo_id}/sandbox").json()
    assert data["branches"] and data["flushes"] and data["seals"]
    page = ok(client, f"/sessions/{demo_id}/sandbox")
    for branch in data["branches"]:
        assert branch["branch_id"] in page
    assert data["flushes"][0]["reason"] in page


def test_merkle_page_and_downloads_verify(client: TestClient, db: Path, demo_id: str) -> None:
    data = client.get(f"/api/sessions/{demo_id}/merkle").json()
    assert data["ok"] is True and data["problems"] == []
    page = ok(client, f"/sessions/{demo_id}/merkle")
    assert "verify_session" in page
    for commit in data["commits"]:
        url = f"/sessions/{demo_id}/proofs/{commit['seq']}.json"
        assert f'href="{url}"' in page
        response = client.get(url)
        assert "attachment" in response.headers["content-disposition"]
        body = response.json()
        proof = ps.InclusionProof(
            session_id=body["session_id"],
            seq=body["seq"],
            log_size=body["log_size"],
            leaf_hash=bytes.fromhex(body["leaf_hash"]),
            path=[bytes.fromhex(p) for p in body["path"]],
            log_root=bytes.fromhex(body["log_root"]),
        )
        assert proof.verify() and proof.leaf_hash.hex() == commit["leaf_hash"]
    checkpoint = ps.Checkpoint.from_json(client.get(f"/sessions/{demo_id}/checkpoint.json").text)
    assert checkpoint.mac is None and checkpoint.size == len(data["commits"])
    with ps.SessionStore.open_read_only(db) as store:
        assert store.verify_session(demo_id, against=checkpoint).ok


def test_node_page_shows_the_nodes_history(client: TestClient, db: Path, demo_id: str) -> None:
    node = DEMO_NODES[1].node_id
    data = client.get(f"/api/sessions/{demo_id}/nodes/{node}").json()
    with ps.SessionStore.open_read_only(db) as store:
        states = [s for s in store.get_node_states(demo_id) if s.node_id == node]
        energy = store.get_energy_history(demo_id, node)
    assert len(data["states"]) == len(states) and len(data["energy"]) == len(energy)
    assert data["commits"] and data["timeline"]
    page = ok(client, f"/sessions/{demo_id}/nodes/{node}")
    assert 'class="energy-chart"' in page and "Snapshots" in page


def test_api_index_documents_the_endpoints(client: TestClient) -> None:
    endpoints = client.get("/api").json()["endpoints"]
    assert "/api/sessions" in endpoints and "/api/sessions/{id}" in endpoints


# --- hostile content, unknown ids, static files -----------------------------------------------

HOSTILE_URLS = [
    "/",
    "/?q=" + quote(SCRIPT_TASK),
    *(f"/sessions/{HOSTILE}{tab}" for tab in SESSION_TABS),
    f"/sessions/{HOSTILE}/nodes/{quote(IMG_NODE, safe='')}",
    f"/sessions/{HOSTILE}/nodes/{quote(SCRIPT_TASK, safe='')}",
]


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_hostile_values_render_as_text(client: TestClient, url: str) -> None:
    page = ok(client, url)
    assert "<script>alert" not in page
    assert "<img src=x" not in page and "onerror=alert(1)>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page or "&#34;&gt;&lt;img" in page
    # The only scripts are the dashboard's own file.
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/app.js" defer>']


def test_hostile_node_id_round_trips_through_links(client: TestClient) -> None:
    page = ok(client, f"/sessions/{HOSTILE}/dag")
    href = f"/sessions/{HOSTILE}/nodes/{quote(IMG_NODE, safe='')}"
    assert f'href="{href}"' in page
    data = client.get(f"/api/sessions/{HOSTILE}/nodes/{quote(IMG_NODE, safe='')}").json()
    assert data["node_id"] == IMG_NODE and data["states"][0]["state"] == SCRIPT_TASK
    summary = client.get(f"/api/sessions/{HOSTILE}").json()
    assert summary["session"]["task"] == SCRIPT_TASK  # JSON carries the raw value


@pytest.mark.parametrize(
    "url",
    [
        *(f"/sessions/nope{tab}" for tab in SESSION_TABS),
        "/sessions/nope/nodes/x",
        "/sessions/nope/proofs/0.json",
        "/sessions/nope/checkpoint.json",
        f"/sessions/{HOSTILE}/nodes/no-such-node",
        f"/sessions/{HOSTILE}/proofs/99.json",
        "/no/such/page",
    ],
)
def test_unknown_ids_are_404_pages_not_tracebacks(client: TestClient, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 404
    assert "Traceback" not in response.text and 'File "' not in response.text
    assert "Not found" in response.text


@pytest.mark.parametrize(
    "url",
    [
        *(f"/api/sessions/nope{tab}" for tab in SESSION_TABS),
        "/api/sessions/nope/nodes/x",
        "/sse/nope",
    ],
)
def test_unknown_ids_in_the_api_are_json_404s(client: TestClient, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 404
    assert response.json()["error"] == "Not found"


def test_static_files_are_served_and_never_escape_their_directory(client: TestClient) -> None:
    assert "EventSource" in ok(client, "/static/app.js")
    assert ok(client, "/static/app.css")
    for url in (
        "/static/../_app.py",
        "/static/%2e%2e/_app.py",
        "/static/..%2f_app.py",
        "/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/static//etc/passwd",
    ):
        response = client.get(url)
        assert response.status_code == 404, url
        assert "import" not in response.text


def test_pages_carry_a_strict_content_security_policy(client: TestClient) -> None:
    headers = client.get("/").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"


def test_no_endpoint_writes(db: Path, demo_id: str) -> None:
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    files = sorted(p.name for p in db.parent.iterdir())
    with TestClient(create_app(db)) as client:
        for url in [
            "/",
            "/api/sessions",
            *(f"/sessions/{demo_id}{t}" for t in SESSION_TABS),
            f"/sessions/{demo_id}/checkpoint.json",
            f"/sessions/{demo_id}/proofs/0.json",
        ]:
            assert client.get(url).status_code == 200
        for method in ("post", "put", "delete", "patch"):
            response = getattr(client, method)(f"/sessions/{demo_id}")
            assert response.status_code == 405
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in db.parent.iterdir()) == files


def test_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ps.StoreError, match="no database"):
        create_app(tmp_path / "missing.db")


# --- signing in -------------------------------------------------------------------------------


def test_with_a_password_everything_needs_signing_in(db: Path, demo_id: str) -> None:
    with TestClient(create_app(db, password=PASSWORD), follow_redirects=False) as client:
        response = client.get(f"/sessions/{demo_id}")
        assert response.status_code == 303
        assert response.headers["location"] == f"/login?next=/sessions/{demo_id}"
        assert client.get("/api/sessions").status_code == 401
        assert client.get(f"/sse/{demo_id}").status_code == 401
        assert client.get("/static/app.css").status_code == 200
        assert client.get("/login").status_code == 200

        wrong = client.post("/login", data={"password": PASSWORD + "x"})
        assert wrong.status_code == 401 and "Wrong password" in wrong.text
        assert client.get("/api/sessions").status_code == 401

        right = client.post("/login", data={"password": PASSWORD, "next": "//evil.example"})
        assert right.status_code == 303 and right.headers["location"] == "/"
        cookie = right.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert client.get("/api/sessions").status_code == 200
        assert client.get(f"/sessions/{demo_id}").status_code == 200

        client.post("/logout")
        assert client.get("/api/sessions").status_code == 401


def test_scripts_authenticate_with_a_bearer_token(db: Path) -> None:
    with TestClient(create_app(db, password=PASSWORD)) as client:
        good = client.get("/api/sessions", headers={"Authorization": f"Bearer {PASSWORD}"})
        assert good.status_code == 200
        bad = client.get("/api/sessions", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401


def test_serve_refuses_a_public_address_without_a_password(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PERSPT_STORE_PASSWORD", raising=False)
    result = CliRunner().invoke(cli, ["--db", str(db), "serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "without a password" in result.output
    empty = tmp_path / "empty"
    empty.write_text("\n")
    result = CliRunner().invoke(
        cli, ["--db", str(db), "serve", "--host", "0.0.0.0", "--password-file", str(empty)]
    )
    assert result.exit_code == 1 and "is empty" in result.output
    assert "--password " not in CliRunner().invoke(cli, ["serve", "--help"]).output


# --- live stream ------------------------------------------------------------------------------


def _events(text: str) -> list[tuple[str, dict[str, object]]]:
    found = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            found.append((fields["event"], json.loads(fields["data"])))
    return found


def test_stream_says_hello_when_the_page_is_current(db: Path, demo_id: str) -> None:
    app = create_app(db, poll_interval=0.05, stream_lifetime=0.3)
    with TestClient(app) as client:
        page = ok(client, f"/sessions/{demo_id}")
        stream = re.search(r'data-stream="([^"]+)"', page)
        assert stream is not None
        events = _events(client.get(stream.group(1).replace("&amp;", "&")).text)
    assert [name for name, _ in events] == ["hello"]
    assert events[0][1]["freshness"] == {"snapshot": False, "snapshot_time": None, "staleness": 0.0}


def test_stream_tells_a_stale_page_to_refresh(db: Path, demo_id: str) -> None:
    app = create_app(db, poll_interval=0.05, stream_lifetime=0.3)
    with TestClient(app) as client:
        events = _events(client.get(f"/sse/{demo_id}?v=older-page").text)
        overview = _events(client.get("/sse?v=older-page").text)
    assert [name for name, _ in events] == ["change"] and events[0][1]["full"] is True
    assert [name for name, _ in overview] == ["change"]


def test_stream_pushes_only_what_changed() -> None:
    from perspt_store.web._app import _diff

    node = {"state": "RUNNING", "attempts": 1}
    old = {"status": "RUNNING", "rows": {"llm_requests": 1}, "nodes": {"a": node, "b": node}}
    new = {
        "status": "RUNNING",
        "rows": {"llm_requests": 2},
        "nodes": {"a": node, "c": {**node, "state": "COMPLETED"}},
    }
    assert _diff(old, new) == {
        "nodes": {"c": {"state": "COMPLETED", "attempts": 1}},
        "removed": ["b"],
        "rows": {"llm_requests": 2},
    }
    assert _diff(new, new) == {}


# --- layout -----------------------------------------------------------------------------------


@given(
    st.integers(1, 40).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=80),
        )
    )
)
def test_layout_puts_every_child_below_its_parents(
    graph: tuple[int, list[tuple[int, int]]],
) -> None:
    n, pairs = graph
    ids = [f"n{i}" for i in range(n)]
    edges = [(ids[min(a, b)], ids[max(a, b)]) for a, b in pairs if a != b]  # acyclic
    places = layered_layout(ids, edges)
    assert set(places) == set(ids)
    for parent, child in edges:
        assert places[child][0] > places[parent][0]
    layers: dict[int, list[int]] = {}
    for layer, position in places.values():
        layers.setdefault(layer, []).append(position)
    for positions in layers.values():
        assert sorted(positions) == list(range(len(positions)))


def test_layout_survives_cycles_and_deep_chains() -> None:
    chain = [f"n{i}" for i in range(3000)]
    edges = [(a, b) for a, b in itertools.pairwise(chain)] + [(chain[-1], chain[0])]
    places = layered_layout(chain, edges)
    assert sorted(layer for layer, _ in places.values()) == list(range(3000))


def test_a_200_node_graph_draws_every_node() -> None:
    nodes = [
        {"node_id": f"node-{i}", "state": "RUNNING", "kind": "other", "v_total": 0.5, "goal": None}
        for i in range(200)
    ]
    edges = [
        {"parent": f"node-{i // 3}", "child": f"node-{i}", "type": "depends_on"}
        for i in range(1, 200)
    ]
    svg = str(dag_svg(nodes, edges, lambda n: f"/n/{n}"))
    assert svg.count('class="dag-node"') == 200 and svg.count('class="edge ') == 199


def test_long_lists_are_paged_in_pages_and_whole_in_the_api(tmp_path: Path) -> None:
    path = tmp_path / "big.db"
    with ps.SessionStore.open(path) as store:
        store.create_session(
            ps.SessionRecord(session_id="big", task="t", working_dir="/w", status="RUNNING")
        )
        store.record_many(
            ps.NodeStateRecord(
                node_id=f"n{i:03d}", session_id="big", state="RUNNING", v_total=1.0, attempt_count=1
            )
            for i in range(450)
        )
    with TestClient(create_app(path)) as client:
        first = ok(client, "/sessions/big/merkle")
        last = ok(client, "/sessions/big/merkle?page=3")
        assert first.count("inclusion proof</a>") == 200 and last.count("inclusion proof</a>") == 50
        assert "commits 401\u2013450 of 450" in last
        assert ok(client, "/sessions/big?page=2").count('<tr data-node="') == 200
        assert ok(client, "/sessions/big?page=oops").count('<tr data-node="') == 200
        assert len(client.get("/api/sessions/big/merkle").json()["commits"]) == 450
        assert ok(client, "/sessions/big/dag").count('class="dag-node"') == 450


def test_the_password_comes_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from perspt_store.cli._serve import resolve_password

    secret = tmp_path / "secret"
    secret.write_text(f"  {PASSWORD}  \nsecond line\n")
    monkeypatch.setenv("PERSPT_STORE_PASSWORD", "from-env")
    assert resolve_password(secret, "PERSPT_STORE_PASSWORD") == PASSWORD
    assert resolve_password(None, "PERSPT_STORE_PASSWORD") == "from-env"
    monkeypatch.delenv("PERSPT_STORE_PASSWORD")
    assert resolve_password(None, "PERSPT_STORE_PASSWORD") is None


def test_web_imports_nothing_from_the_cli() -> None:
    """The shaping helpers both use have one owner outside the CLI (``_shaping``)."""
    import ast

    import perspt_store.web as web

    for source in Path(web.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                module = ("." * node.level) + (node.module or "")
                assert not module.lstrip(".").startswith("cli"), f"{source.name}: {module}"
            elif isinstance(node, ast.Import):
                assert not any(".cli" in a.name for a in node.names), source.name


# --- the dashboard never stands in an agent's way ------------------------------------------

AGENT = """
import sys
import perspt_store as ps
try:
    store = ps.SessionStore.open(sys.argv[1], publish_interval=0.2)  # once: no retry
except ps.StoreLockedError as exc:
    print("locked:", exc)
    sys.exit(3)
with store:
    store.record_node_state(ps.NodeStateRecord(
        node_id=sys.argv[2], session_id="agent", state="RUNNING", v_total=1.0,
        attempt_count=1))
print("ok")
"""


def test_an_agent_opens_the_file_read_write_while_the_dashboard_is_polled(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys
    import threading

    path = tmp_path / "agent.db"
    with ps.SessionStore.open(path) as store:
        store.create_session(
            ps.SessionRecord(session_id="agent", task="t", working_dir="/w", status="RUNNING")
        )
    app = create_app(path, poll_interval=0.02, stream_lifetime=0.5)
    stop = threading.Event()
    statuses: list[int] = []
    streams: list[str] = []

    def poll(urls: tuple[str, ...]) -> None:
        with TestClient(app) as c:
            while not stop.is_set():
                for url in urls:
                    response = c.get(url)
                    statuses.append(response.status_code)
                    if url.startswith("/sse/"):
                        streams.append(response.text)

    pollers = [
        threading.Thread(target=poll, args=(("/", "/sessions/agent", "/api/sessions/agent"),)),
        threading.Thread(target=poll, args=(("/sse/agent",),)),
        threading.Thread(target=poll, args=(("/sse",),)),
    ]
    for thread in pollers:
        thread.start()
    try:
        results = [
            subprocess.run(
                [sys.executable, "-c", AGENT, str(path), f"n{i}"],
                capture_output=True, text=True, timeout=120,
            )
            for i in range(6)
        ]
    finally:
        stop.set()
        for thread in pollers:
            thread.join()
    assert [(r.returncode, r.stdout.strip()) for r in results] == [(0, "ok")] * 6, [
        r.stdout + r.stderr for r in results
    ]
    assert statuses and set(statuses) == {200}
    assert any("event: hello" in text for text in streams)
    with TestClient(app) as c:  # and the dashboard then shows what the agents wrote
        nodes = {n["node_id"] for n in c.get("/api/sessions/agent").json()["nodes"]}
    assert nodes == {f"n{i}" for i in range(6)}


# --- ids with URL-special characters --------------------------------------------------------

ODD_IDS = ["team/run-1", "a//b/", "what?x=1&y", "hash#frag", "pct%2F%41%", "with space",
           "ünïcødé/日本", "../etc", "./x", "+plus;semi"]


@pytest.fixture(scope="module")
def odd_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """Demo sessions whose ids (and one node id each) hold URL-special characters."""
    path = tmp_path_factory.mktemp("odd") / "perspt.db"
    with ps.SessionStore.open(path) as store:
        for sid in ODD_IDS:
            record_demo_session(store, session_id=sid)
            store.record_node_state(ps.NodeStateRecord(
                node_id=f"node {sid}", session_id=sid, state="RUNNING", v_total=1.0,
                attempt_count=1))
    with TestClient(create_app(path, stream_lifetime=0.2)) as c:
        yield c


@pytest.mark.parametrize("sid", ODD_IDS)
def test_every_route_reaches_a_session_whose_id_has_url_special_characters(
    odd_client: TestClient, sid: str
) -> None:
    q = quote(sid, safe="")
    node = quote(f"node {sid}", safe="")
    for tab in SESSION_TABS:
        assert str(escape(sid)) in ok(odd_client, f"/sessions/{q}{tab}")
        assert odd_client.get(f"/api/sessions/{q}{tab}").status_code == 200, tab
    assert odd_client.get(f"/api/sessions/{q}").json()["session"]["session_id"] == sid
    assert str(escape(f"node {sid}")) in ok(odd_client, f"/sessions/{q}/nodes/{node}")
    assert odd_client.get(f"/api/sessions/{q}/nodes/{node}").status_code == 200
    assert odd_client.get(f"/api/sessions/{q}/verify").json()["ok"] is True
    assert odd_client.get(f"/sessions/{q}/checkpoint.json").json()["session_id"] == sid
    assert odd_client.get(f"/sessions/{q}/proofs/1.json").status_code == 200
    assert "event: hello" in odd_client.get(f"/sse/{q}").text


def test_every_link_on_an_odd_sessions_pages_leads_somewhere(odd_client: TestClient) -> None:
    """Follow every same-site link of every page (from the overview) once."""
    seen: set[str] = set()
    todo = ["/?per_page=200"]
    while todo:
        url = todo.pop()
        page = ok(odd_client, url)
        for href in re.findall(r'(?:href|data-verify|data-stream)="(/[^"]*)"', page):
            href = href.replace("&amp;", "&")
            if href in seen or href.startswith(("/static/", "/sse")) or "?page=" in href:
                continue
            seen.add(href)
            if href.startswith("/api") or href.endswith(".json"):
                assert odd_client.get(href).status_code == 200, href
            else:
                todo.append(href)
    for sid in ODD_IDS:
        assert f"/sessions/{quote(sid, safe='')}/dag" in seen, sid


def test_decisions_read_by_sql_match_the_getters_rows(db: Path, demo_id: str) -> None:
    """The page reads decisions with plain SQL; the API adds the getters' rows: both agree
    on every event, in the same order."""
    from perspt_store.web._pages import decisions_page

    with ps.SessionStore.open_read_only(db) as store:
        for sid in (demo_id, HOSTILE):
            page = decisions_page(store, sid)
            full = decisions_page(store, sid, rows=True)
            assert [{k: v for k, v in e.items() if k != "row"} for e in full["events"]] == (
                page["events"]
            )
            assert full["counts"] == page["counts"] and full["reviews"] == page["reviews"]
            for event in full["events"]:
                row = event["row"]
                assert row.get("node_id") == event["node_id"]
                if event["kind"] != "correction":
                    assert row.get("created_at", row.get("timestamp")) == event["time"]
            assert page["counts"]["review"] == len(store.get_all_review_outcomes(sid))


def test_session_summary_read_by_sql_matches_the_getters(db: Path, demo_id: str) -> None:
    """The summary page reads with plain SQL; its node table and counts agree with the
    store's getters (row models)."""
    from perspt_store.store.reviews import count_reviews
    from perspt_store.web._pages import session_page

    with ps.SessionStore.open_read_only(db) as store:
        for sid in (demo_id, HOSTILE):
            data = session_page(store, sid)
            latest = store.get_latest_node_states(sid)
            shown = {n["node_id"]: n for n in data["nodes"]}
            assert [n["node_id"] for n in data["nodes"]][: len(latest)] == [
                s.node_id for s in latest
            ]
            for state in latest:
                node = shown[state.node_id]
                assert (node["state"], node["node_class"], node["attempts"],
                        node["committed_at"]) == (state.state, state.node_class,
                                                  state.attempt_count, state.committed_at)
            reviews = store.get_all_review_outcomes(sid)
            assert data["reviews"] == count_reviews(r.outcome for r in reviews)
            for review in reviews:
                assert shown[review.node_id]["review"] == store.get_latest_review_outcome(
                    sid, review.node_id).outcome  # type: ignore[union-attr]
            branches = store.get_provisional_branches(sid)
            assert data["branches"]["total"] == len(branches)
            assert data["branches"]["flushes"] == len(store.get_branch_flushes(sid))
            assert data["escalations"] == len(store.get_escalation_reports(sid))
            assert data["rewrites"] == len(store.get_rewrite_records(sid))
            assert data["llm_requests"] == len(store.get_llm_requests(sid))


def test_decisions_fall_back_to_the_getters_when_sql_columns_differ(
    db: Path, demo_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table whose raw values a summary cannot read (e.g. a malformed JSON list) is read
    through the getters, which decode leniently, with the same events."""
    from perspt_store.web import _pages

    with ps.SessionStore.open_read_only(db) as store:
        expected = _pages.decisions_page(store, demo_id)

        def no_such_column(*args: object) -> None:
            raise AttributeError("no column named like the field")

        monkeypatch.setattr(_pages, "_decision_events", no_such_column)
        assert _pages.decisions_page(store, demo_id) == expected


def test_pages_decode_rows_upstream_wrote_as_the_getters_do(tmp_path: Path) -> None:
    """The pages read with plain SQL; on a migrated upstream file they still decode its rows
    as the getters do: '' for None in optional text columns, hex-text hashes as bytes."""
    from perspt_store.web._pages import (
        OverviewQuery,
        node_page,
        overview_page,
        sandbox_page,
        session_page,
    )
    from upstream_files import write_upstream_062

    uf = write_upstream_062(tmp_path / "upstream.db")
    ps.SessionStore.open(uf.path).close()  # migrated in place
    with ps.SessionStore.open_read_only(uf.path) as store, store.consistent_read():
        listed = overview_page(store, OverviewQuery())["sessions"]
        toolchains = [s["detected_toolchain"] for s in listed]
        assert None in toolchains
        assert toolchains == [
            store.get_session(s["session_id"]).detected_toolchain  # type: ignore[union-attr]
            for s in listed
        ]
        seen: list[object] = []
        for sid in uf.session_ids:
            nodes = {n["node_id"]: n for n in session_page(store, sid)["nodes"]}
            for state in store.get_latest_node_states(sid):
                shown = nodes[state.node_id]
                assert (shown["node_class"], shown["committed_at"]) == (
                    state.node_class, state.committed_at)
                seen.append(state.node_class)
                history = node_page(store, sid, state.node_id)["states"]
                expected = [s for s in store.get_node_states(sid) if s.node_id == state.node_id]
                columns = ("node_class", "goal", "last_error_type", "committed_at")
                assert [tuple(h[c] for c in columns) for h in history] == [
                    tuple(getattr(s, c) for c in columns) for s in expected
                ]
            seals = sandbox_page(store, sid)["seals"]
            assert [s["seal_hash"] for s in seals] == [
                r.seal_hash  # type: ignore[attr-defined]
                for r in uf.rows("interface_seals", sid)
            ]
            assert all(len(s["seal_hash"]) == 32 for s in seals)
        assert None in seen


def test_a_copy_of_the_published_snapshot_says_when_it_was_taken(tmp_path: Path) -> None:
    from perspt_store.web._reader import StoreReader

    path = tmp_path / "agent.db"
    with ps.SessionStore.open(path, publish_interval=3600) as writer:
        writer.create_session(
            ps.SessionRecord(session_id="agent", task="t", working_dir="/w", status="RUNNING")
        )
        publisher = writer.publisher
        assert publisher is not None and publisher.publish_if_changed()
        reader = StoreReader(path)
        try:
            view = reader._copy_snapshot()  # what a request reads while an agent writes
            assert view.is_snapshot
            assert view.snapshot_time == publisher.last_published is not None
            assert view.store.get_session("agent") is not None
            view.close()
        finally:
            reader.close()

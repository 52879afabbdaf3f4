"""The dashboard in a real browser: headless Chromium (Debian's ``chromium`` package, installed
by ``scripts/install-browser``) driven by Playwright, against ``perspt-store serve`` running
as a separate process, as a person would use it.

Outside CI a machine without Chromium skips these tests; in CI (``$CI`` set) they fail
instead, so a missing browser can never pass unnoticed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import perspt_store as ps
from perspt_store.demo import DEMO_NODES, demo_session_id, record_demo_session

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None or not __import__("importlib").util.find_spec("playwright"):
    reason = "needs Debian's chromium (scripts/install-browser) and playwright"
    if os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WRITER = Path(__file__).with_name("web_writer.py")
SEEDS = (1, 2)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("browser") / "runs.db"
    with ps.SessionStore.open(path) as store:
        for seed in SEEDS:
            record_demo_session(store, seed=seed)
    return path


@pytest.fixture(scope="module")
def server(db: Path) -> Iterator[str]:
    """``perspt-store serve`` on a free port; yields the URL it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "perspt_store", "--db", str(db), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        raise AssertionError(f"serve did not print its URL: {line!r} {proc.communicate()[1]}")
    url = line.split("http://", 1)[1].split()[0]
    yield "http://" + url.rstrip("/")
    proc.terminate()
    _, errors = proc.communicate(timeout=10)  # closes the pipes
    assert "Traceback" not in errors, errors


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh page; fails the test on any console error or uncaught exception, and saves a
    screenshot of where it ended."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    pg.screenshot(path=str(tmp_path / f"{request.node.name}.png"))
    context.close()
    assert errors == [], errors


def test_overview_lists_the_demo_sessions_and_clicks_through(page: Page, server: str) -> None:
    page.goto(server + "/")
    links = page.locator("a.session-link")
    expect(links).to_have_count(len(SEEDS))
    for seed in SEEDS:
        expect(page.get_by_role("link", name=demo_session_id(seed))).to_be_visible()
    page.get_by_role("link", name=demo_session_id(1)).click()
    expect(page).to_have_url(f"{server}/sessions/{demo_session_id(1)}")
    expect(page.locator("#verify-badge")).to_contain_text("log verified")
    expect(page.locator("#nodes tbody tr")).to_have_count(len(DEMO_NODES))


def test_search_and_filter_narrow_the_list(page: Page, server: str) -> None:
    page.goto(server + "/")
    page.get_by_label("search").fill(demo_session_id(2)[-5:])
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("a.session-link")).to_have_count(1)
    expect(page.locator("a.session-link")).to_have_text(demo_session_id(2))


def test_dag_shows_every_node_and_a_click_opens_its_history(page: Page, server: str) -> None:
    sid = demo_session_id(1)
    page.goto(f"{server}/sessions/{sid}/dag")
    nodes = page.locator("a.dag-node")
    expect(nodes).to_have_count(len(DEMO_NODES))
    frame = page.locator("#dag-frame").bounding_box()
    assert frame is not None
    for node in DEMO_NODES:
        box = page.locator(f'a.dag-node[data-node="{node.node_id}"] rect').bounding_box()
        assert box is not None and box["width"] > 40  # drawn and readable
        assert frame["x"] <= box["x"] and box["x"] + box["width"] <= frame["x"] + frame["width"]
    page.get_by_role("button", name="+").click()  # zoom changes the view, not the page
    assert page.locator("#dag-svg").get_attribute("viewBox") != "0 0 " + " ".join(
        page.locator("#dag-svg").get_attribute(a) or "" for a in ("data-width", "data-height")
    )
    target = DEMO_NODES[2].node_id
    page.locator("#dag-frame").click(position={"x": 5, "y": 5})  # a click on the background
    page.get_by_role("button", name="fit").click()
    page.locator(f'a.dag-node[data-node="{target}"]').click()
    expect(page).to_have_url(f"{server}/sessions/{sid}/nodes/{target}")
    expect(page.locator("h1")).to_have_text(target)


def test_energy_charts_are_drawn(page: Page, server: str) -> None:
    page.goto(f"{server}/sessions/{demo_session_id(1)}/energy")
    charts = page.locator("svg.energy-chart")
    expect(charts).to_have_count(len(DEMO_NODES))
    box = charts.first.bounding_box()
    assert box is not None and box["width"] > 200 and box["height"] > 100
    lines = page.locator("svg.energy-chart polyline")
    assert lines.count() == 6 * len(DEMO_NODES)
    assert all(
        float(b["width"]) > 50
        for b in [lines.nth(i).bounding_box() or {"width": 0} for i in range(6)]
    )
    expect(page.locator(".legend")).to_contain_text("V_sheaf")


def test_every_tab_renders_without_errors(page: Page, server: str) -> None:
    sid = demo_session_id(2)
    for tab in ("", "/llm", "/decisions", "/sandbox", "/merkle"):
        page.goto(f"{server}/sessions/{sid}{tab}")
        expect(page.locator("main")).not_to_be_empty()
    expect(page.locator("#verdict")).to_contain_text("verify_session")


def _writer(db: Path, sid: str, node: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(db), sid, node],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "committed":
        proc.kill()
        raise AssertionError(f"the writer failed: {line!r} {proc.communicate()[1]}")
    return proc


def _stop(proc: subprocess.Popen[Any]) -> None:
    proc.communicate("", timeout=30)
    assert proc.returncode == 0


def test_a_commit_by_a_writer_appears_without_a_reload(page: Page, server: str, db: Path) -> None:
    sid = demo_session_id(1)
    page.goto(f"{server}/sessions/{sid}")
    expect(page.locator("#live")).to_have_class("live on")  # the stream is open
    page.evaluate("window.__sameDocument = true")
    proc = _writer(db, sid, "live_node")
    try:
        row = page.locator('#nodes tr[data-node="live_node"]')
        expect(row).to_be_visible(timeout=15_000)
        expect(row).to_contain_text("RUNNING")
        assert page.evaluate("window.__sameDocument") is True  # no reload happened
        expect(page.locator("#freshness")).to_contain_text("agent writing", timeout=10_000)
        page.goto(f"{server}/sessions/{sid}/dag")  # the graph reads the snapshot too
        expect(page.locator('a.dag-node[data-node="live_node"]')).to_have_count(1)
    finally:
        _stop(proc)

"""Plots: each returns a matplotlib Figure that renders with the Agg backend, with titles,
axis labels, legends and state colours a reader relies on; the command line writes them with
``--plot FILE.png``."""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import perspt_store as ps
from perspt_store import plots
from perspt_store.cli import cli
from perspt_store.demo import DEMO_EDGES, DEMO_NODES, ESCALATED_NODE, record_demo_session

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def render(fig: Figure) -> bytes:
    """Draw with the Agg backend and return the PNG."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=60)
    return buffer.getvalue()


def texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text)]


def legend_labels(fig: Figure) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[ps.SessionStore, str]]:
    with ps.SessionStore.in_memory() as store:
        yield store, record_demo_session(store, seed=0)


# --- energy ---------------------------------------------------------------------------------


def test_energy_plot_has_one_panel_per_node_with_v_total_and_its_components(
    demo: tuple[ps.SessionStore, str],
) -> None:
    store, sid = demo
    fig = plots.plot_energy(store, sid)
    assert isinstance(fig, Figure) and render(fig).startswith(PNG)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    assert [ax.get_title().split("\n")[0] for ax in panels] == [n.node_id for n in DEMO_NODES]
    assert fig.get_suptitle() == f"Energy convergence — session {sid}"
    assert legend_labels(fig) == ["V_total", *(label for _, label, _ in plots.COMPONENTS)]
    for ax, node in zip(panels, DEMO_NODES, strict=True):
        history = store.get_energy_history(sid, node.node_id)
        lines = {line.get_label(): line for line in ax.get_lines()}
        total = lines["V_total"]
        assert list(total.get_xdata()) == list(range(1, len(history) + 1))
        assert list(total.get_ydata()) == [e.v_total for e in history]
        assert list(lines["V_log (tests)"].get_ydata()) == [e.v_log for e in history]
        assert ax.get_xlabel() == "attempt"
        assert ax.get_title().endswith(f"final V = {history[-1].v_total:.4g}")
    assert panels[0].get_ylabel() == "energy V(x)"


def test_energy_plot_of_one_node(demo: tuple[ps.SessionStore, str]) -> None:
    store, sid = demo
    fig = plots.plot_energy(store, sid, ESCALATED_NODE)
    (ax,) = [ax for ax in fig.axes if ax.axison]
    assert ax.get_title().startswith(ESCALATED_NODE)
    assert ESCALATED_NODE in fig.get_suptitle()
    render(fig)


def test_a_session_without_measurements_gets_a_figure_that_says_so() -> None:
    with ps.SessionStore.in_memory() as store:
        store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
        for plot in (plots.plot_energy, plots.plot_task_graph, plots.plot_llm):
            fig = plot(store, "s")
            assert any(t.startswith("No ") for t in texts(fig)), plot
            render(fig)


def test_plotting_an_unknown_session_raises() -> None:
    with ps.SessionStore.in_memory() as store:
        for plot in (plots.plot_energy, plots.plot_task_graph, plots.plot_llm):
            with pytest.raises(ps.SessionNotFoundError):
                plot(store, "nope")


# --- task graph ---------------------------------------------------------------------------


def boxes(fig: Figure) -> list[FancyBboxPatch]:
    return [p for p in fig.axes[0].patches if isinstance(p, FancyBboxPatch)]


def test_task_graph_draws_every_node_and_edge(demo: tuple[ps.SessionStore, str]) -> None:
    store, sid = demo
    fig = plots.plot_task_graph(store, sid)
    render(fig)
    assert fig.get_suptitle() == f"Task graph — session {sid}"
    assert len(boxes(fig)) == len(DEMO_NODES)
    arrows = [p for p in fig.axes[0].patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) == len(DEMO_EDGES)
    dashed = [a for a in arrows if a.get_linestyle() not in ("-", "solid")]
    assert len(dashed) == sum(t == "interface_boundary" for *_, t in DEMO_EDGES)
    labels = texts(fig)
    for node in DEMO_NODES:
        assert node.node_id in labels
    assert set(legend_labels(fig)) == {"Completed", "interface_boundary", "depends_on"}


def test_task_graph_colours_nodes_by_their_latest_state() -> None:
    with ps.SessionStore.in_memory() as store:
        store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
        for node, state in (("a", "Running"), ("a", "COMPLETED"), ("b", "failed"),
                            ("c", "Escalated"), ("d", "Speculating")):
            store.record_node_state(ps.NodeStateRecord(session_id="s", node_id=node,
                                                       state=state))
        for parent, child in (("a", "b"), ("a", "c"), ("c", "d"), ("d", "e"), ("a", "e")):
            store.record_task_graph_edge(ps.TaskGraphEdgeRow(
                session_id="s", parent_node_id=parent, child_node_id=child))
        fig = plots.plot_task_graph(store, "s")
        png = render(fig)
    fills = [to_hex(b.get_facecolor()) for b in boxes(fig)]
    assert fills == [plots.STATE_COLOURS[k][0] for k in
                     ("completed", "failed", "escalated", "other", "none")]
    assert legend_labels(fig)[:5] == ["COMPLETED", "failed", "Escalated", "Speculating",
                                      "(no snapshot)"]
    assert png.startswith(PNG)


def test_a_cyclic_graph_still_draws() -> None:
    with ps.SessionStore.in_memory() as store:
        store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
        for parent, child in (("a", "b"), ("b", "a"), ("b", "b"), ("c", "a")):
            store.record_task_graph_edge(ps.TaskGraphEdgeRow(
                session_id="s", parent_node_id=parent, child_node_id=child))
        fig = plots.plot_task_graph(store, "s")
        assert len(boxes(fig)) == 3
        render(fig)


dags = st.integers(1, 9).flatmap(lambda n: st.tuples(
    st.just(n),
    st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1))
             .filter(lambda e: e[0] < e[1]), max_size=20),
))


@settings(max_examples=60, deadline=None)
@given(dag=dags)
def test_layout_puts_parents_above_children_and_routes_long_edges(
    dag: tuple[int, list[tuple[int, int]]],
) -> None:
    n, pairs = dag
    nodes = [f"n{i}" for i in range(n)]
    edges = [(f"n{a}", f"n{b}") for a, b in pairs]
    layout = plots._Layout(nodes, edges)
    placed = [node for layer in layout.layers for node in layer]
    assert sorted(p for p in placed if not layout.is_placeholder(p)) == sorted(nodes)
    assert len(placed) == len(set(placed))
    for parent, child in edges:
        assert layout.depth[parent] < layout.depth[child]
        route = layout.routes.get((parent, child), [])
        assert [layout.depth[d] for d in route] == list(
            range(layout.depth[parent] + 1, layout.depth[child]))
    for layer in layout.layers:  # positions in a layer are distinct and centred
        xs = [layout.position[node] for node in layer]
        assert len(set(xs)) == len(xs) and abs(sum(xs)) < 1e-9


# --- LLM ------------------------------------------------------------------------------------


def test_llm_plot_shows_tokens_and_latency_per_request(demo: tuple[ps.SessionStore, str]) -> None:
    store, sid = demo
    requests = store.get_llm_requests(sid)
    fig = plots.plot_llm(store, sid)
    render(fig)
    top, bottom = fig.axes[:2]
    lines = {line.get_label(): line for line in top.get_lines()}
    assert list(lines["tokens in"].get_ydata()) == [r.tokens_in for r in requests]
    assert list(lines["tokens out"].get_ydata()) == [r.tokens_out for r in requests]
    # The demo is one transaction: its timestamps tie, so x is the request number.
    assert bottom.get_xlabel().startswith("request number")
    assert list(lines["tokens in"].get_xdata()) == list(range(1, len(requests) + 1))
    assert top.get_ylabel() == "tokens per request" and bottom.get_ylabel() == "latency (s)"
    assert str(len(requests)) in fig.get_suptitle()
    nodes = legend_labels(fig)  # one figure legend beside both panels
    assert nodes[:-1] == [n.node_id for n in DEMO_NODES] and nodes[-1].startswith("median")


def test_llm_plot_uses_time_when_timestamps_differ() -> None:
    with ps.SessionStore.in_memory() as store:
        store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
        for i in range(4):  # one transaction each: their own timestamps
            store.record_llm_request(ps.LlmRequestRecord(
                session_id="s", node_id=None if i == 2 else "n", model="m", prompt="", response="",
                tokens_in=100 * i, tokens_out=10, latency_ms=500 * (i + 1)))
        times = [r.timestamp for r in store.get_llm_requests("s")]
        fig = plots.plot_llm(store, "s")
        render(fig)
        distinct = len(set(times)) == len(times)
        assert fig.axes[1].get_xlabel() == (
            f"time (UTC), {times[0].date().isoformat()}" if distinct
            else "request number, in recorded order (timestamps tie)")
        assert "(no node)" in legend_labels(fig)
        assert "all sessions" in plots.plot_llm(store).get_suptitle()


# --- without matplotlib ---------------------------------------------------------------------


def test_without_matplotlib_plots_say_how_to_install_it(
    demo: tuple[ps.SessionStore, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, sid = demo
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'perspt-store\[plot\]'"):
        plots.plot_energy(store, sid)


# --- command line ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plots") / "demo.db"
    with ps.SessionStore.open(path, publish_interval=None) as store:
        record_demo_session(store, seed=0)
    return path


def invoke(db: Path, *args: str) -> Any:
    runner = CliRunner(env={"COLUMNS": None, "PERSPT_STORE_DB": None})
    return runner.invoke(cli, ["--db", str(db), *args], prog_name="perspt-store")


@pytest.mark.parametrize("command", [["energy"], ["graph"], ["llm"],
                                     ["energy", "--node", ESCALATED_NODE]])
def test_cli_plot_writes_the_image_and_still_prints_the_listing(
    demo_db: Path, tmp_path: Path, command: list[str]
) -> None:
    from perspt_store.demo import demo_session_id

    image = tmp_path / "out.png"
    plain = invoke(demo_db, command[0], demo_session_id(0), *command[1:])
    result = invoke(demo_db, command[0], demo_session_id(0), *command[1:], "--plot", str(image))
    assert result.exit_code == 0, result.output
    assert result.stdout == plain.stdout
    what = {"energy": "the energy plot", "graph": "the task graph", "llm": "the LLM plot"}
    assert result.stderr == f"Wrote {what[command[0]]} to {image}\n"
    assert image.read_bytes().startswith(PNG)


def test_cli_plot_to_svg(demo_db: Path, tmp_path: Path) -> None:
    from perspt_store.demo import demo_session_id

    result = invoke(demo_db, "graph", demo_session_id(0), "--plot", str(tmp_path / "g.svg"))
    assert result.exit_code == 0
    assert (tmp_path / "g.svg").read_text().lstrip().startswith("<?xml")


def test_cli_plot_to_an_unknown_format_is_a_one_line_error(demo_db: Path, tmp_path: Path) -> None:
    from perspt_store.demo import demo_session_id

    result = invoke(demo_db, "energy", demo_session_id(0), "--plot", str(tmp_path / "e.xyz"))
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("Error: cannot write the energy plot") and \
        result.stderr.count("\n") == 1


def test_cli_plot_without_matplotlib_exits_1_with_the_hint(
    demo_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from perspt_store.demo import demo_session_id

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    result = invoke(demo_db, "llm", demo_session_id(0), "--plot", str(tmp_path / "l.png"))
    assert result.exit_code == 1
    assert "pip install 'perspt-store[plot]'" in result.stderr
    assert not (tmp_path / "l.png").exists()


# --- readable at 1, 5, 20 and 200 nodes -------------------------------------------------------

SIZES = [1, 5, 20, 200]


def session_of(store: ps.SessionStore, n: int) -> str:
    """A session of ``n`` nodes with long ids: a tree of task-graph edges (three children a
    node), 1-4 energy measurements and two LLM requests a node, spread over 25 minutes."""
    sid = f"session-of-{n}-nodes-with-a-long-id-0123456789"
    store.create_session(ps.SessionRecord(session_id=sid, task="t", working_dir="/w"))
    ids = [f"node_{i:03d}_implement_the_rate_limiter_part" for i in range(n)]
    states = ["Completed", "Failed", "Escalated", "Running", "Verifying"]
    with store.transaction():
        for i, node in enumerate(ids):
            for attempt in range(1 + i % 4):
                v = 1.0 / (attempt + 1) / (1 + i % 7)
                store.record_energy(ps.EnergyRecord(
                    session_id=sid, node_id=node, v_syn=v * 0.2, v_str=v * 0.3, v_log=v * 0.4,
                    v_boot=v * 0.05, v_sheaf=v * 0.05, v_total=v))
            store.record_node_state(ps.NodeStateRecord(
                session_id=sid, node_id=node, state=states[i % 5], node_class="Implementation",
                v_total=0.1))
            if i:
                store.record_task_graph_edge(ps.TaskGraphEdgeRow(
                    session_id=sid, parent_node_id=ids[(i - 1) // 3], child_node_id=node,
                    edge_type="interface_boundary" if i % 4 == 0 else "depends_on"))
            for k in range(2):
                store.record_llm_request(ps.LlmRequestRecord(
                    session_id=sid, node_id=node, model="m", prompt="p", response="r",
                    tokens_in=1000 + 37 * i + 500 * k, tokens_out=300 + 11 * i,
                    latency_ms=2000 + 150 * ((i * 7 + k) % 40)))
    store.sql("UPDATE llm_requests SET timestamp = TIMESTAMP '2026-12-02 17:00:00' "
              "+ to_seconds(id * 7) WHERE session_id = ?", [sid])
    return sid


@pytest.fixture(scope="module")
def sized() -> Iterator[tuple[ps.SessionStore, dict[int, str]]]:
    with ps.SessionStore.in_memory() as store:
        yield store, {n: session_of(store, n) for n in SIZES}


DRAWINGS = {
    "energy": lambda store, sid: plots.plot_energy(store, sid),
    "energy of one node": lambda store, sid: plots.plot_energy(
        store, sid, "node_000_implement_the_rate_limiter_part"),
    "llm": lambda store, sid: plots.plot_llm(store, sid),
    "task graph": lambda store, sid: plots.plot_task_graph(store, sid),
}


def clipped_texts(fig: Figure) -> list[str]:
    """What of the figure's text leaves it: each visible text artist's window extent (tick
    labels excepted: an axis keeps labels for ticks outside its view that are never drawn),
    and each axes' tight bounding box, which holds its drawn tick labels."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    inside = fig.bbox.padded(0.5)
    ticks = {id(label) for ax in fig.axes
             for label in [*ax.get_xticklabels(which="both"), *ax.get_yticklabels(which="both")]}
    clipped = []
    for text in fig.findobj(matplotlib.text.Text):
        if id(text) in ticks or not text.get_visible() or not text.get_text().strip():
            continue
        box = text.get_window_extent(renderer)
        if not inside.containsx(box.x0) or not inside.containsx(box.x1) \
                or not inside.containsy(box.y0) or not inside.containsy(box.y1):
            clipped.append(text.get_text())
    for ax in fig.axes:
        box = ax.get_tightbbox(renderer)
        if ax.get_visible() and box is not None and not (
                inside.containsx(box.x0) and inside.containsx(box.x1)
                and inside.containsy(box.y0) and inside.containsy(box.y1)):
            clipped.append(f"axes {ax.get_title()!r}")
    return clipped


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind", DRAWINGS)
def test_no_text_is_clipped_at_any_size(
    sized: tuple[ps.SessionStore, dict[int, str]], kind: str, n: int
) -> None:
    store, sids = sized
    fig = DRAWINGS[kind](store, sids[n])
    assert clipped_texts(fig) == []
    assert fig.get_suptitle()  # and a title says what and which session


@pytest.mark.parametrize("n", SIZES)
def test_task_graph_width_stays_bounded_with_readable_text(
    sized: tuple[ps.SessionStore, dict[int, str]], n: int
) -> None:
    store, sids = sized
    fig = plots.plot_task_graph(store, sids[n])
    assert fig.get_figwidth() <= 16  # inches: at most ~1,900 px at the CLI's 120 dpi
    sizes = [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]
    assert min(sizes) >= 7.5
    arrows = [p for p in fig.axes[0].patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) == n - 1 and all(a.get_mutation_scale() >= 14 for a in arrows)


def test_llm_plot_gives_up_to_20_nodes_distinct_colours_and_lists_them(
    sized: tuple[ps.SessionStore, dict[int, str]],
) -> None:
    store, sids = sized
    fig = plots.plot_llm(store, sids[20])
    bottom = fig.axes[1]
    colours = [to_hex(c.get_facecolor()[0]) for c in bottom.collections]
    assert len(colours) == 20 and len(set(colours)) == 20
    labels = legend_labels(fig)
    assert labels[:-1] == [f"node_{i:03d}_implement_the_rate_limiter_part" for i in range(20)]
    many = plots.plot_llm(store, sids[200])
    assert legend_labels(many) == [] and "200 nodes" in many.axes[1].get_title()


def test_llm_time_axis_reads_as_clock_times_without_an_offset(
    sized: tuple[ps.SessionStore, dict[int, str]],
) -> None:
    store, sids = sized
    fig = plots.plot_llm(store, sids[20])
    FigureCanvasAgg(fig).draw()
    bottom = fig.axes[1]
    ticks = [t.get_text() for t in bottom.get_xticklabels() if t.get_text()]
    assert ticks and all(re.fullmatch(r"\d\d:\d\d:\d\d", t) for t in ticks), ticks
    assert bottom.xaxis.get_offset_text().get_text() == ""
    assert bottom.get_xlabel() == "time (UTC), 2026-12-02"


def test_energy_of_many_nodes_is_one_overview(
    sized: tuple[ps.SessionStore, dict[int, str]],
) -> None:
    store, sids = sized
    fig = plots.plot_energy(store, sids[200])
    lines_ax = fig.axes[0]
    assert len(lines_ax.get_lines()) == 200 and "200 nodes" in lines_ax.get_title()
    assert fig.get_figheight() < 10

"""Plots of a session for notebooks and reports (needs the ``plot`` extra: matplotlib).

Each function reads what it draws from the store and returns a matplotlib
:class:`~matplotlib.figure.Figure`, built without pyplot (no global state, any backend):
a notebook displays it, ``fig.savefig("energy.png")`` writes it. matplotlib is imported when
a function is called, never when perspt_store is; without it they raise
ModuleNotFoundError saying ``pip install 'perspt-store[plot]'``.

* :func:`plot_energy`: energy convergence per node, V(x) and its components over attempts;
* :func:`plot_task_graph`: the task graph, nodes coloured by their latest state;
* :func:`plot_llm`: LLM tokens and latency per request, over time.

The command line draws the same figures with ``--plot FILE.png`` on ``energy``, ``graph`` and
``llm``.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import SessionNotFoundError
from .store import SessionStore
from .store.snapshot import state_kind

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "COMPONENTS",
    "INSTALL_HINT",
    "STATE_COLOURS",
    "plot_energy",
    "plot_llm",
    "plot_task_graph",
]

INSTALL_HINT = "pip install 'perspt-store[plot]'"
"""How to install matplotlib for the plots."""

COMPONENTS: tuple[tuple[str, str, str], ...] = (
    ("v_syn", "V_syn (syntax)", "#1f77b4"),
    ("v_str", "V_str (structure)", "#ff7f0e"),
    ("v_log", "V_log (tests)", "#2ca02c"),
    ("v_boot", "V_boot (bootstrap)", "#9467bd"),
    ("v_sheaf", "V_sheaf (sheaf)", "#8c564b"),
)
"""Energy components drawn by :func:`plot_energy`: column, legend label, colour."""

STATE_COLOURS: dict[str, tuple[str, str]] = {
    "completed": ("#c8e6c9", "#2e7d32"),
    "failed": ("#ffcdd2", "#c62828"),
    "escalated": ("#ffe0b2", "#ef6c00"),
    "other": ("#bbdefb", "#1565c0"),
    "none": ("#eeeeee", "#757575"),
}
"""Fill and edge colour of a task-graph node by the kind of its latest state
(:func:`~perspt_store.store.snapshot.state_kind`; ``none``: no snapshot yet)."""

_TOTAL_COLOUR = "#111111"


def _figure(**options: Any) -> Figure:
    """A new Figure (matplotlib imported here, with the install hint if missing)."""
    try:
        figure = importlib.import_module("matplotlib.figure")
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"plotting needs matplotlib: {INSTALL_HINT}", name="matplotlib"
        ) from exc
    fig: Figure = figure.Figure(layout="constrained", **options)
    return fig


def _require_session(store: SessionStore, session_id: str) -> None:
    if store.get_session(session_id) is None:
        raise SessionNotFoundError(session_id, table="sessions")


def _empty(fig: Figure, message: str) -> Figure:
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, color="#555555",
            transform=ax.transAxes)
    return fig


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- energy ---------------------------------------------------------------------------------


def plot_energy(store: SessionStore, session_id: str, node_id: str | None = None) -> Figure:
    """Energy convergence: one panel per node, V(x) and its components over attempts.

    Each measurement is one attempt (1, 2, … in the order recorded). V_total is the thick
    black line; the components V_syn, V_str, V_log, V_boot and V_sheaf are thin coloured
    ones. Panels share the y axis, so nodes compare at a glance.

    Args:
        store: The store to read.
        session_id: The session.
        node_id: Only this node's panel.

    Raises:
        SessionNotFoundError: No such session.
        ModuleNotFoundError: matplotlib is not installed.
    """
    _require_session(store, session_id)
    rows = store.energy_frame(session_id, node_id).fetchall()
    # id, session_id, node_id, attempt, v_syn, v_str, v_log, v_boot, v_sheaf, v_total, ts
    by_node: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        by_node.setdefault(row[2], []).append(row)
    where = f"session {session_id}" + (f", node {node_id}" if node_id else "")
    if not by_node:
        return _empty(_figure(figsize=(6.4, 3.0)), f"No energy measurements for {where}")
    count = len(by_node)
    ncols = min(3, count)
    nrows = math.ceil(count / ncols)
    fig = _figure(figsize=(4.4 * ncols + 0.4, 3.1 * nrows + 1.0))
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False)
    ticker = importlib.import_module("matplotlib.ticker")
    for index, (node, history) in enumerate(by_node.items()):
        ax: Axes = axes[index // ncols][index % ncols]
        attempts = [r[3] for r in history]
        for position, (_, label, colour) in enumerate(COMPONENTS):
            ax.plot(attempts, [r[4 + position] for r in history], label=label, color=colour,
                    linewidth=1.2, marker="o", markersize=3, alpha=0.85)
        ax.plot(attempts, [r[9] for r in history], label="V_total", color=_TOTAL_COLOUR,
                linewidth=2.4, marker="o", markersize=5)
        ax.set_title(f"{_short(node, 34)}\nfinal V = {history[-1][9]:.4g}", fontsize=10)
        ax.set_xlabel("attempt")
        if index % ncols == 0:
            ax.set_ylabel("energy V(x)")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.set_xlim(0.7, max(attempts) + 0.3)
        ax.grid(True, alpha=0.3)
    for index in range(count, nrows * ncols):
        axes[index // ncols][index % ncols].set_axis_off()
    handles, labels = axes[0][0].get_legend_handles_labels()
    order = [labels.index("V_total"), *range(len(COMPONENTS))]
    fig.legend([handles[i] for i in order], [labels[i] for i in order], loc="outside lower center",
               ncols=min(6, len(order)), frameon=False, fontsize=9)
    fig.suptitle(f"Energy convergence — {where}", fontsize=12, fontweight="bold")
    return fig


# --- task graph -----------------------------------------------------------------------------


class _Layout:
    """A layered drawing of a DAG (Sugiyama-style): each node's layer is its longest path
    from a source, an edge that skips layers runs through a placeholder in each layer it
    crosses (so it never passes behind a box), and each layer is ordered by the mean
    position of its parents, to keep edges short and uncrossed.

    Nodes on a cycle (a malformed graph) go to one extra layer at the bottom.
    """

    def __init__(self, nodes: Sequence[str], edges: Sequence[tuple[str, str]]) -> None:
        parents: dict[str, list[str]] = {n: [] for n in nodes}
        children: dict[str, list[str]] = {n: [] for n in nodes}
        for parent, child in dict.fromkeys(edges):
            if parent != child:
                parents[child].append(parent)
                children[parent].append(child)
        depth: dict[str, int] = {}
        waiting = {n: len(parents[n]) for n in nodes}
        ready = [n for n in nodes if waiting[n] == 0]
        while ready:
            node = ready.pop(0)
            depth[node] = max((depth[p] + 1 for p in parents[node]), default=0)
            for child in children[node]:
                waiting[child] -= 1
                if waiting[child] == 0:
                    ready.append(child)
        bottom = max(depth.values(), default=-1) + 1
        for node in nodes:
            depth.setdefault(node, bottom)
        # Placeholders ("\0" + parent + "\0" + child + "\0" + layer) for long edges.
        self.routes: dict[tuple[str, str], list[str]] = {}
        slots: dict[str, list[str]] = {n: list(parents[n]) for n in nodes}
        first = {n: i for i, n in enumerate(nodes)}
        for parent, child in dict.fromkeys(edges):
            if parent == child or depth[child] <= depth[parent] + 1:
                continue
            chain = []
            previous = parent
            for level in range(depth[parent] + 1, depth[child]):
                dummy = f"\0{parent}\0{child}\0{level}"
                depth[dummy], slots[dummy], first[dummy] = level, [previous], len(first)
                chain.append(dummy)
                previous = dummy
            slots[child] = [previous if p == parent else p for p in slots[child]]
            self.routes[(parent, child)] = chain
        self.layers: list[list[str]] = [[] for _ in range(max(depth.values()) + 1)]
        for node in sorted(depth, key=first.__getitem__):
            self.layers[depth[node]].append(node)
        self.position: dict[str, float] = {}
        for layer in self.layers:

            def barycentre(node: str) -> tuple[float, int]:
                placed = [self.position[p] for p in slots[node] if p in self.position]
                return (sum(placed) / len(placed) if placed else math.inf, first[node])

            layer.sort(key=barycentre)
            for i, node in enumerate(layer):
                self.position[node] = i - (len(layer) - 1) / 2
        self.depth = depth

    @staticmethod
    def is_placeholder(node: str) -> bool:
        return node.startswith("\0")


def plot_task_graph(store: SessionStore, session_id: str) -> Figure:
    """The session's task graph: one box per node, coloured by its latest state.

    Boxes show the node id, its class and latest state, and its V(x); parents are above
    their children (layered by the longest path from a root). ``interface_boundary`` edges
    are dashed. Nodes that appear only in edges (no snapshot yet) are grey.

    Raises:
        SessionNotFoundError: No such session.
        ModuleNotFoundError: matplotlib is not installed.
    """
    with store.consistent_read():  # the states and the edges of one moment
        _require_session(store, session_id)
        states = {s.node_id: s for s in store.get_latest_node_states(session_id)}
        edges = store.get_task_graph_edges(session_id)
    nodes = list(dict.fromkeys([*states, *(n for e in edges
                                           for n in (e.parent_node_id, e.child_node_id))]))
    if not nodes:
        return _empty(_figure(figsize=(6.4, 3.0)),
                      f"No nodes or edges recorded for session {session_id}")
    layout = _Layout(nodes, [(e.parent_node_id, e.child_node_id) for e in edges])
    widest = max(len(layer) for layer in layout.layers)
    box_w, box_h, step_x, step_y = 2.5, 1.0, 2.9, 1.9
    xy = {node: (x * step_x, -layout.depth[node] * step_y) for node, x in layout.position.items()}
    fig = _figure(figsize=(max(6.4, 2.75 * widest + 2.6),
                           max(3.2, 1.75 * len(layout.layers) + 1.3)))
    ax = fig.add_subplot()
    ax.set_axis_off()
    patches = importlib.import_module("matplotlib.patches")
    lines = importlib.import_module("matplotlib.lines")
    path_module = importlib.import_module("matplotlib.path")
    kinds_seen: dict[str, list[str]] = {}
    for node in nodes:
        x, y = xy[node]
        state = states.get(node)
        kind = "none" if state is None else state_kind(state.state)
        label_state = "(no snapshot)" if state is None else state.state
        kinds_seen.setdefault(kind, [])
        if label_state not in kinds_seen[kind]:
            kinds_seen[kind].append(label_state)
        fill, edge = STATE_COLOURS[kind]
        ax.add_patch(patches.FancyBboxPatch(
            (x - box_w / 2, y - box_h / 2), box_w, box_h,
            boxstyle="round,pad=0.02,rounding_size=0.15",
            facecolor=fill, edgecolor=edge, linewidth=1.6, zorder=2,
        ))
        detail = " · ".join(p for p in (state.node_class, state.state) if p) if state else \
            "no snapshot"
        ax.text(x, y + 0.2, _short(node, 26), ha="center", va="center", fontsize=8.5,
                fontweight="bold", zorder=3)
        ax.text(x, y - 0.07, _short(detail, 32), ha="center", va="center", fontsize=7.5,
                zorder=3)
        if state is not None:
            ax.text(x, y - 0.3, f"V = {state.v_total:.4g}", ha="center", va="center",
                    fontsize=7.5, color="#333333", zorder=3)
    edge_styles: dict[str, str] = {}
    for e in edges:
        (x1, y1), (x2, y2) = xy[e.parent_node_id], xy[e.child_node_id]
        style = "--" if e.edge_type == "interface_boundary" else "-"
        edge_styles.setdefault(e.edge_type, style)
        if e.parent_node_id == e.child_node_id:  # a self-loop: a small arc on the right
            points = [(x1 + box_w / 2, y1 + 0.2), (x1 + box_w / 2 + 0.5, y1),
                      (x1 + box_w / 2, y1 - 0.2)]
        else:
            points = [(x1, y1 - box_h / 2)]
            for dummy in layout.routes.get((e.parent_node_id, e.child_node_id), []):
                xd, yd = xy[dummy]
                points += [(xd, yd + box_h / 2), (xd, yd - box_h / 2)]
            points.append((x2, y2 + box_h / 2))
        ax.add_patch(patches.FancyArrowPatch(
            path=path_module.Path(points),
            arrowstyle="-|>", mutation_scale=12, linewidth=1.1, linestyle=style,
            color="#555555", zorder=1,
        ))
    xs = [p[0] for p in xy.values()]
    ys = [p[1] for p in xy.values()]
    ax.set_xlim(min(xs) - box_w / 2 - 0.3, max(xs) + box_w / 2 + 0.3)
    ax.set_ylim(min(ys) - box_h / 2 - 0.3, max(ys) + box_h / 2 + 0.3)
    handles: list[Any] = [
        patches.Patch(facecolor=STATE_COLOURS[k][0], edgecolor=STATE_COLOURS[k][1],
                      label=", ".join(kinds_seen[k]))
        for k in STATE_COLOURS
        if k in kinds_seen
    ]
    handles += [lines.Line2D([], [], color="#555555", linestyle=style, label=edge_type)
                for edge_type, style in edge_styles.items()]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)),
               frameon=False, fontsize=8.5)
    fig.suptitle(f"Task graph — session {session_id}", fontsize=12, fontweight="bold")
    return fig


# --- LLM requests ---------------------------------------------------------------------------


def plot_llm(store: SessionStore, session_id: str | None = None) -> Figure:
    """LLM tokens (in and out) and latency per request, over time.

    The x axis is the request's timestamp, or its number in recorded order when timestamps
    tie (rows written in one transaction share one). Latency points are coloured by node.
    Without ``session_id``, every session's requests.

    Raises:
        SessionNotFoundError: No such session.
        ModuleNotFoundError: matplotlib is not installed.
    """
    if session_id is not None:
        _require_session(store, session_id)
    rows = store.llm_frame(session_id).fetchall()
    # id, session_id, node_id, model, tokens_in, tokens_out, latency_ms, p_chars, r_chars, ts
    where = f"session {session_id}" if session_id is not None else "all sessions"
    if not rows:
        return _empty(_figure(figsize=(6.4, 3.0)), f"No LLM requests for {where}")
    times = [r[9] for r in rows]
    by_time = len(set(times)) == len(times)
    xs: list[Any] = times if by_time else list(range(1, len(rows) + 1))
    fig = _figure(figsize=(9.0, 6.0))
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(xs, [r[4] for r in rows], label="tokens in", color="#1f77b4", marker="o",
             markersize=3.5, linewidth=1.3)
    top.plot(xs, [r[5] for r in rows], label="tokens out", color="#ff7f0e", marker="s",
             markersize=3.5, linewidth=1.3)
    top.set_ylabel("tokens per request")
    top.set_ylim(bottom=0)
    top.grid(True, alpha=0.3)
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5, frameon=False)
    nodes = list(dict.fromkeys(r[2] if r[2] is not None else "(no node)" for r in rows))
    colours = importlib.import_module("matplotlib").colormaps["tab10"]
    latency_s = [r[6] / 1000 for r in rows]
    bottom.plot(xs, latency_s, color="#bbbbbb", linewidth=0.9, zorder=1)
    for i, node in enumerate(nodes):
        picked = [k for k, r in enumerate(rows) if (r[2] or "(no node)") == node]
        bottom.scatter([xs[k] for k in picked], [latency_s[k] for k in picked], s=22,
                       color=colours(i % 10), label=_short(node, 28), zorder=2)
    ordered = sorted(latency_s)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    bottom.axhline(median, color="#444444", linestyle=":", linewidth=1.0,
                   label=f"median {median:.3g} s")
    bottom.set_ylabel("latency (s)")
    bottom.set_ylim(bottom=0)
    bottom.grid(True, alpha=0.3)
    bottom.set_xlabel("time (UTC)" if by_time else
                      "request number, in recorded order (timestamps tie)")
    if by_time:
        dates = importlib.import_module("matplotlib.dates")
        locator = dates.AutoDateLocator()
        bottom.xaxis.set_major_locator(locator)
        bottom.xaxis.set_major_formatter(dates.ConciseDateFormatter(locator))
    else:
        ticker = importlib.import_module("matplotlib.ticker")
        bottom.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False,
                  title="node", title_fontsize=8.5)
    total_in = sum(r[4] for r in rows)
    total_out = sum(r[5] for r in rows)
    fig.suptitle(f"LLM requests — {where}: {len(rows)} requests, {total_in:,} tokens in, "
                 f"{total_out:,} out", fontsize=12, fontweight="bold")
    return fig

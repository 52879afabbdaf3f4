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

from ._display import shorten
from .errors import SessionNotFoundError
from .store import SessionStore
from .store._arguments import require_store
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
    require_store(store)
    if store.get_session(session_id) is None:
        raise SessionNotFoundError(session_id, table="sessions")


def _empty(fig: Figure, message: str) -> Figure:
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, color="#555555",
            transform=ax.transAxes)
    return fig


def _fitted(text: str, width_in: float, fontsize: float) -> str:
    """``text`` shortened to what fits ``width_in`` inches at ``fontsize`` points, line by
    line (a character of DejaVu Sans averages under 0.62 em; bold included)."""
    limit = max(8, int(width_in * 72 / (fontsize * 0.62)))
    return "\n".join(shorten(line, limit) for line in text.split("\n"))


def _title(fig: Figure, what: str, where: str) -> None:
    """The figure's title, ``what — where`` in bold: on one line if it fits the figure's
    width, else ``where`` (ids, long) on a second line, else one line per part of ``where``;
    a line still too long is cut."""
    width = fig.get_figwidth() - 0.3
    for text in (f"{what} — {where}", f"{what}\n{where}", "\n".join([what, *where.split(", ")])):
        if _fitted(text, width, 12) == text:
            break
    fig.suptitle(_fitted(text, width, 12), fontsize=12, fontweight="bold")


def _legend_columns(fig: Figure, labels: Sequence[str], fontsize: float, most: int) -> int:
    """How many legend columns fit the figure's width for these labels."""
    longest = max((len(label) for label in labels), default=1)
    entry_in = (longest * 0.6 * fontsize + 3.5 * fontsize) / 72  # text, marker and gap
    return max(1, min(most, len(labels), int((fig.get_figwidth() - 0.4) / entry_in)))


# --- energy ---------------------------------------------------------------------------------


def plot_energy(store: SessionStore, session_id: str, node_id: str | None = None) -> Figure:
    """Energy convergence: one panel per node, V(x) and its components over attempts.

    Each measurement is one attempt (1, 2, … in the order recorded). V_total is the thick
    black line; the components V_syn, V_str, V_log, V_boot and V_sheaf are thin coloured
    ones. Panels share the y axis, so nodes compare at a glance. A session of more than 24
    nodes gets one overview instead: every node's V_total over attempts, and a histogram of
    the final energies (pass ``node_id`` for one node's components).

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
    if len(by_node) > _MOST_PANELS:
        return _energy_overview(by_node, where)
    count = len(by_node)
    ncols = min(3, count)
    nrows = math.ceil(count / ncols)
    fig = _figure(figsize=(max(5.6, 4.4 * ncols + 0.4), 3.1 * nrows + 1.4))
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False)
    ticker = importlib.import_module("matplotlib.ticker")
    panel_in = (fig.get_figwidth() - 0.4) / ncols
    for index, (node, history) in enumerate(by_node.items()):
        ax: Axes = axes[index // ncols][index % ncols]
        attempts = [r[3] for r in history]
        for position, (_, label, colour) in enumerate(COMPONENTS):
            ax.plot(attempts, [r[4 + position] for r in history], label=label, color=colour,
                    linewidth=1.2, marker="o", markersize=3, alpha=0.85)
        ax.plot(attempts, [r[9] for r in history], label="V_total", color=_TOTAL_COLOUR,
                linewidth=2.4, marker="o", markersize=5)
        ax.set_title(f"{_fitted(node, panel_in - 0.5, 10)}\nfinal V = {history[-1][9]:.4g}",
                     fontsize=10)
        ax.set_xlabel("attempt")
        if index % ncols == 0:
            ax.set_ylabel("energy V(x)")
        # Whole attempts only, even for a node measured once.
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlim(0.5, max(attempts) + 0.5)
        ax.grid(True, alpha=0.3)
    for index in range(count, nrows * ncols):
        axes[index // ncols][index % ncols].set_axis_off()
    handles, labels = axes[0][0].get_legend_handles_labels()
    order = [labels.index("V_total"), *range(len(COMPONENTS))]
    shown = [labels[i] for i in order]
    fig.legend([handles[i] for i in order], shown, loc="outside lower center",
               ncols=_legend_columns(fig, shown, 9, 6), frameon=False, fontsize=9)
    _title(fig, "Energy convergence", where)
    return fig


_MOST_PANELS = 24
"""More nodes than this get one overview panel instead of a panel each."""


def _energy_overview(by_node: dict[str, list[tuple[Any, ...]]], where: str) -> Figure:
    """Many nodes: V_total of every node over attempts in one panel, and the final V of
    each node as a histogram (components: ``plot_energy(store, sid, node_id)``)."""
    fig = _figure(figsize=(10.0, 6.4))
    lines_ax, final_ax = fig.subplots(1, 2, width_ratios=[3, 2])
    colours = importlib.import_module("matplotlib").colormaps["viridis"]
    for index, history in enumerate(by_node.values()):
        lines_ax.plot([r[3] for r in history], [r[9] for r in history], linewidth=0.8,
                      alpha=0.6, color=colours(index / max(1, len(by_node) - 1)))
    ticker = importlib.import_module("matplotlib.ticker")
    lines_ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True, min_n_ticks=1))
    lines_ax.set_xlabel("attempt")
    lines_ax.set_ylabel("energy V_total")
    lines_ax.set_title(f"V_total per node ({len(by_node)} nodes, coloured in order)",
                       fontsize=10)
    lines_ax.grid(True, alpha=0.3)
    finals = [history[-1][9] for history in by_node.values()]
    final_ax.hist(finals, bins=min(30, max(5, len(finals) // 8)), color="#1f77b4")
    final_ax.set_xlabel("final V_total")
    final_ax.set_ylabel("nodes")
    final_ax.set_title("final energy", fontsize=10)
    final_ax.grid(True, alpha=0.3)
    _title(fig, "Energy convergence", where)
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
    require_store(store)
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
    # A layer wider than _GRAPH_ROW boxes wraps onto more rows, so the figure's width stays
    # bounded (text and arrowheads keep their size) and it grows downwards instead.
    box_w, box_h, step_x = 2.5, 1.0, 2.9
    xy: dict[str, tuple[float, float]] = {}
    y = 0.0
    for layer in layout.layers:
        for start in range(0, len(layer), _GRAPH_ROW):
            chunk = layer[start : start + _GRAPH_ROW]
            for j, node in enumerate(chunk):
                xy[node] = ((j - (len(chunk) - 1) / 2) * step_x, y)
            y -= 1.6  # the next row of the same layer
        y -= 0.4  # and a wider gap between layers
    columns = min(_GRAPH_ROW, max(len(layer) for layer in layout.layers))
    fig = _figure(figsize=(max(6.4, 2.75 * columns + 1.2), max(3.2, 0.95 * -y + 1.6)))
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
        ax.text(x, y + 0.2, shorten(node, 30), ha="center", va="center", fontsize=8.5,
                fontweight="bold", zorder=3)
        ax.text(x, y - 0.07, shorten(detail, 34), ha="center", va="center", fontsize=7.5,
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
            arrowstyle="-|>", mutation_scale=16, linewidth=1.3, linestyle=style,
            color="#444444", zorder=1,
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
    fig.legend(handles=handles, loc="outside lower center", frameon=False, fontsize=8.5,
               ncols=_legend_columns(fig, [h.get_label() for h in handles], 8.5, 4))
    _title(fig, "Task graph", f"session {session_id}")
    return fig


_GRAPH_ROW = 5
"""The most boxes side by side in the task graph."""


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
    else:
        require_store(store)
    rows = store.llm_frame(session_id).fetchall()
    # id, session_id, node_id, model, tokens_in, tokens_out, latency_ms, p_chars, r_chars, ts
    where = f"session {session_id}" if session_id is not None else "all sessions"
    if not rows:
        return _empty(_figure(figsize=(6.4, 3.0)), f"No LLM requests for {where}")
    times = [r[9] for r in rows]
    by_time = len(set(times)) == len(times)
    xs: list[Any] = times if by_time else list(range(1, len(rows) + 1))
    nodes = list(dict.fromkeys(r[2] if r[2] is not None else "(no node)" for r in rows))
    listed = len(nodes) <= _MOST_LISTED_NODES
    fig = _figure(figsize=(10.0 if listed and len(nodes) > 1 else 8.0, 6.4))
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(xs, [r[4] for r in rows], label="tokens in", color="#1f77b4", marker="o",
             markersize=3.5, linewidth=1.3)
    top.plot(xs, [r[5] for r in rows], label="tokens out", color="#ff7f0e", marker="s",
             markersize=3.5, linewidth=1.3)
    top.set_ylabel("tokens per request")
    top.set_ylim(bottom=0)
    top.grid(True, alpha=0.3)
    # Above the panel, not over its points (the layout makes room).
    top.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), fontsize=8.5, ncols=2,
               frameon=False, borderaxespad=0.2)
    mpl = importlib.import_module("matplotlib")
    # tab20 gives 20 distinct colours; more nodes than that are coloured along a colormap
    # and not listed one by one.
    palette = mpl.colormaps["tab10" if len(nodes) <= 10 else "tab20"]
    latency_s = [r[6] / 1000 for r in rows]
    bottom.plot(xs, latency_s, color="#bbbbbb", linewidth=0.9, zorder=1)
    for i, node in enumerate(nodes):
        picked = [k for k, r in enumerate(rows) if (r[2] or "(no node)") == node]
        colour = palette(i) if listed else mpl.colormaps["viridis"](i / (len(nodes) - 1))
        bottom.scatter([xs[k] for k in picked], [latency_s[k] for k in picked], s=22,
                       color=colour, label=node if listed else None, zorder=2)
    ordered = sorted(latency_s)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    bottom.axhline(median, color="#444444", linestyle=":", linewidth=1.0,
                   label=f"median {median:.3g} s")
    bottom.set_ylabel("latency (s)")
    bottom.set_ylim(bottom=0)
    bottom.grid(True, alpha=0.3)
    if by_time:
        _time_axis(bottom, times)
    else:
        bottom.set_xlabel("request number, in recorded order (timestamps tie)")
        ticker = importlib.import_module("matplotlib.ticker")
        bottom.xaxis.set_major_locator(ticker.MaxNLocator(integer=True, min_n_ticks=1))
    handles, labels = bottom.get_legend_handles_labels()
    if listed:  # beside the plots, in the layout (never off the figure)
        fig.legend(handles, labels, loc="outside right center", fontsize=8, frameon=False,
                   title="node", title_fontsize=8.5)
    else:
        bottom.legend([handles[-1]], [labels[-1]], loc="upper right", fontsize=8)
        bottom.set_title(f"latency; points coloured by node, {len(nodes)} nodes in order "
                         "(too many to list)", fontsize=9)
    total_in = sum(r[4] for r in rows)
    total_out = sum(r[5] for r in rows)
    _title(fig, f"LLM requests: {len(rows)}, {total_in:,} tokens in, {total_out:,} out", where)
    return fig


_MOST_LISTED_NODES = 20
"""Up to this many nodes, the LLM plot gives each its own colour and legend entry."""


def _time_axis(ax: Axes, times: Sequence[Any]) -> None:
    """Clock times on ``ax``'s x axis, to the precision the span needs, the date in the
    label (no offset text: every tick reads as a time)."""
    dates = importlib.import_module("matplotlib.dates")
    ticker = importlib.import_module("matplotlib.ticker")
    span = (max(times) - min(times)).total_seconds()
    if span >= 2 * 86400:
        pattern, digits = "%m-%d %H:%M", 0
    elif span >= 2 * 3600:
        pattern, digits = "%H:%M", 0
    elif span >= 20:
        pattern, digits = "%H:%M:%S", 0
    else:  # a short burst: fractions of a second
        pattern, digits = "%H:%M:%S.%f", 1 if span >= 2 else 3

    def label(value: float, _position: int) -> str:
        text: str = dates.num2date(value).strftime(pattern)
        return text[: len(text) - 6 + digits] if digits else text

    ax.xaxis.set_major_locator(dates.AutoDateLocator(minticks=3, maxticks=7))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(label))
    first, last = min(times).date(), max(times).date()
    day = first.isoformat() if first == last else f"{first.isoformat()} to {last.isoformat()}"
    ax.set_xlabel(f"time (UTC), {day}")

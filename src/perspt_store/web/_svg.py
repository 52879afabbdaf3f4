"""Server-rendered SVG: the task graph laid out in layers, and per-node energy charts.

No JavaScript library draws anything: the server computes the geometry and the page's own
small script only pans and zooms. Every text from the database goes through ``escape``.
Colours come from CSS classes (``state-*``, ``c-*``), so the content security policy can
forbid inline styles.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from markupsafe import Markup, escape

__all__ = ["COMPONENT_NAMES", "dag_svg", "energy_svg", "layered_layout"]

COMPONENT_NAMES = {
    "v_syn": "V_syn (syntax)",
    "v_str": "V_str (structure)",
    "v_log": "V_log (logic / tests)",
    "v_boot": "V_boot (bootstrap)",
    "v_sheaf": "V_sheaf (sheaf consistency)",
    "v_total": "V(x) total",
}
"""What each energy component is called on the charts."""

NODE_W, NODE_H = 180, 46
GAP_X, GAP_Y = 24, 70
MARGIN = 20
WRAP_MIN = 6
WRAP_ASPECT = 1.2  # columns ~ sqrt(1.2 n): about twice as wide as tall, like a screen
LABEL_CHARS = 22


def layered_layout(
    node_ids: Sequence[str], edges: Sequence[tuple[str, str]]
) -> dict[str, tuple[int, int]]:
    """``node_id -> (layer, position in layer)``: every node one layer below its deepest
    parent (a cycle's closing edge is ignored), then each layer ordered by the mean position
    of its parents (a few barycenter sweeps keep crossings down at hundreds of nodes)."""
    known = set(node_ids)
    parents: dict[str, list[str]] = defaultdict(list)
    children: dict[str, list[str]] = defaultdict(list)
    for parent, child in edges:
        if parent in known and child in known and parent != child:
            parents[child].append(parent)
            children[parent].append(child)
    layer: dict[str, int] = {}
    visiting: set[str] = set()

    def depth(node: str) -> int:  # iterative DFS: 1,000-deep chains exceed the recursion limit
        stack: list[tuple[str, int]] = [(node, 0)]
        while stack:
            current, index = stack.pop()
            if current in layer:
                continue
            visiting.add(current)
            ups = parents[current]
            while index < len(ups) and (ups[index] in layer or ups[index] in visiting):
                index += 1
            if index < len(ups):
                stack.append((current, index))
                stack.append((ups[index], 0))
                continue
            layer[current] = 1 + max((layer[p] for p in ups if p in layer), default=-1)
            visiting.discard(current)
        return layer[node]

    for node in node_ids:
        depth(node)
    layers: dict[int, list[str]] = defaultdict(list)
    for node in node_ids:
        layers[layer[node]].append(node)
    position = {n: i for row in layers.values() for i, n in enumerate(row)}
    for _ in range(4):
        for index in sorted(layers):
            row = layers[index]

            def center(n: str, index: int = index) -> float:
                ups = [position[p] for p in parents[n] if layer[p] < index]
                return sum(ups) / len(ups) if ups else position[n]

            row.sort(key=center)
            position.update({n: i for i, n in enumerate(row)})
    return {n: (layer[n], position[n]) for n in node_ids}


def _short(text: str, limit: int = LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def dag_svg(
    nodes: Sequence[Mapping[str, Any]],
    edges: Sequence[Mapping[str, str]],
    href: Callable[[str], str],
) -> Markup:
    """The task graph as an SVG: one linked box per node (coloured by state), arrows for
    edges. ``href(node_id)`` gives the link of a node's history page."""
    ids = [n["node_id"] for n in nodes]
    places = layered_layout(ids, [(e["parent"], e["child"]) for e in edges])
    # A layer wider than the drawing wraps onto several rows, so a wide graph (a 4-ary tree
    # of 200 nodes has 135 leaves in one layer) keeps a shape that fits a screen.
    columns = max(WRAP_MIN, round(math.sqrt(WRAP_ASPECT * len(ids))))
    layers: dict[int, list[str]] = defaultdict(list)
    for node_id, (layer, _) in sorted(places.items(), key=lambda item: item[1]):
        layers[layer].append(node_id)
    rows = [
        row[i : i + columns]
        for _, row in sorted(layers.items())
        for i in range(0, len(row), columns)
    ]
    widest = max((len(row) for row in rows), default=1)
    width = 2 * MARGIN + widest * (NODE_W + GAP_X) - GAP_X
    height = 2 * MARGIN + len(rows) * (NODE_H + GAP_Y) - GAP_Y
    xy: dict[str, tuple[float, float]] = {}
    row_of: dict[str, int] = {}
    for number, row in enumerate(rows):
        offset = (widest - len(row)) * (NODE_W + GAP_X) / 2  # centre each row
        for index, node_id in enumerate(row):
            row_of[node_id] = number
            xy[node_id] = (
                MARGIN + offset + index * (NODE_W + GAP_X),
                MARGIN + number * (NODE_H + GAP_Y),
            )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="dag" id="dag-svg" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" data-width="{width:.0f}" '
        f'data-height="{height:.0f}" role="img" aria-label="task graph">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'class="arrowhead"/></marker></defs><g id="dag-view">',
    ]
    for edge in edges:
        if edge["parent"] not in xy or edge["child"] not in xy:
            continue
        (px, py), (cx, cy) = xy[edge["parent"]], xy[edge["child"]]
        x1, y1, x2, y2 = px + NODE_W / 2, py + NODE_H, cx + NODE_W / 2, cy
        if y2 <= y1:  # an edge that closes a cycle or stays in its layer: curve around
            y2 = cy + NODE_H
        mid = (y1 + y2) / 2
        curve = f"C{x1:.0f},{mid:.0f} {x2:.0f},{mid:.0f}"
        if row_of[edge["child"]] - row_of[edge["parent"]] > 1:
            # It skips a layer: bow out through the gap beside the boxes it would cross.
            x1, x2 = x1 + NODE_W / 4, x2 + NODE_W / 4
            side = max(px, cx) + NODE_W + GAP_X / 2
            g = GAP_Y / 2
            curve = (
                f"C{x1:.0f},{y1 + g:.0f} {side:.0f},{y1:.0f} {side:.0f},{y1 + g:.0f} "
                f"L{side:.0f},{y2 - g:.0f} C{side:.0f},{y2:.0f} {x2:.0f},{y2 - g:.0f}"
            )
        parts.append(
            f'<path class="edge edge-{escape(edge["type"].lower())}" marker-end="url(#arrow)" '
            f'd="M{x1:.0f},{y1:.0f} {curve} {x2:.0f},{y2:.0f}">'
            f"<title>{escape(edge['parent'])} → {escape(edge['child'])} "
            f"({escape(edge['type'])})</title></path>"
        )
    for node in nodes:
        node_id = node["node_id"]
        x, y = xy[node_id]
        state = node["state"] or "(no snapshot)"
        detail = f"{node_id}\n{state}"
        if node.get("goal"):
            detail += f"\n{node['goal']}"
        energy = "" if node["v_total"] is None else f" V={node['v_total']:.3g}"
        parts.append(
            f'<a href="{escape(href(node_id))}" class="dag-node" data-node="{escape(node_id)}">'
            f"<title>{escape(detail)}</title>"
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{NODE_W}" height="{NODE_H}" rx="6" '
            f'class="state-{escape(node["kind"])}"/>'
            f'<text x="{x + 8:.0f}" y="{y + 19:.0f}" class="node-label">'
            f"{escape(_short(node_id))}</text>"
            f'<text x="{x + 8:.0f}" y="{y + 36:.0f}" class="node-sub">'
            f'<tspan class="node-state">{escape(_short(state, 14))}</tspan>'
            f"{escape(energy)}</text></a>"
        )
    parts.append("</g></svg>")
    return Markup("".join(parts))


CHART_W, CHART_H = 340, 170
PAD_L, PAD_R, PAD_T, PAD_B = 40, 10, 10, 28
MARKED_POINTS = 12


def energy_svg(node_id: str, series: Mapping[str, Sequence[float]]) -> Markup:
    """One node's convergence chart: each V(x) component against the attempt number."""
    count = max((len(v) for v in series.values()), default=0)
    top = max((max(v) for v in series.values() if v), default=0.0)
    top = top if top > 0 else 1.0
    plot_w, plot_h = CHART_W - PAD_L - PAD_R, CHART_H - PAD_T - PAD_B

    def px(i: int) -> float:
        return PAD_L + (plot_w * i / (count - 1) if count > 1 else plot_w / 2)

    def py(v: float) -> float:
        return PAD_T + plot_h * (1 - max(v, 0.0) / top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="energy-chart" viewBox="0 0 {CHART_W} '
        f'{CHART_H}" role="img" aria-label="energy of {escape(node_id)}">',
        f'<line class="axis" x1="{PAD_L}" y1="{PAD_T + plot_h}" x2="{PAD_L + plot_w}" '
        f'y2="{PAD_T + plot_h}"/><line class="axis" x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" '
        f'y2="{PAD_T + plot_h}"/>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = py(top * fraction)
        parts.append(
            f'<line class="grid" x1="{PAD_L}" y1="{y:.1f}" x2="{PAD_L + plot_w}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{PAD_L - 4}" y="{y + 4:.1f}" text-anchor="end">'
            f"{top * fraction:.3g}</text>"
        )
    for i in range(count):
        if count <= 12 or i in (0, count - 1):
            parts.append(
                f'<text class="tick" x="{px(i):.1f}" y="{PAD_T + plot_h + 14}" '
                f'text-anchor="middle">{i + 1}</text>'
            )
    parts.append(
        f'<text class="tick" x="{PAD_L + plot_w / 2:.0f}" y="{CHART_H - 2}" '
        'text-anchor="middle">measurement</text>'
    )
    for name, values in series.items():
        if not values:
            continue
        points = " ".join(f"{px(i):.1f},{py(v):.1f}" for i, v in enumerate(values))
        label = COMPONENT_NAMES.get(name, name)
        parts.append(
            f'<g class="series c-{escape(name)}"><title>{escape(label)}</title>'
            f'<polyline points="{points}"/>'
        )
        if count <= MARKED_POINTS:  # markers only while they stay apart
            parts.extend(
                f'<circle cx="{px(i):.1f}" cy="{py(v):.1f}" r="2.5">'
                f"<title>{escape(label)} #{i + 1}: {v:.4g}</title></circle>"
                for i, v in enumerate(values)
            )
        parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))

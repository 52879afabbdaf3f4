"""The ``graph`` command: a session's task graph as Mermaid or Graphviz DOT text."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import click

from .. import plots
from ..rows import NodeStateRecord, TaskGraphEdgeRow
from ._common import open_store, plot_option, require_session, save_plot, session_argument


def graph_nodes(states: Sequence[NodeStateRecord], edges: Sequence[TaskGraphEdgeRow]) -> list[str]:
    """Node ids of a task graph: snapshotted nodes first, then edge endpoints, in order."""
    ids = [s.node_id for s in states]
    for edge in edges:
        ids += [edge.parent_node_id, edge.child_node_id]
    return list(dict.fromkeys(ids))


def _node_label_parts(node_id: str, state: NodeStateRecord | None) -> list[str]:
    if state is None:
        return [node_id]
    detail = " · ".join(p for p in (state.node_class, state.state) if p)
    return [node_id, detail, f"V={state.v_total:.4f}"]


def render_mermaid(states: Sequence[NodeStateRecord], edges: Sequence[TaskGraphEdgeRow]) -> str:
    """The task graph as a Mermaid flowchart (``interface_boundary`` edges dotted)."""
    by_id = {s.node_id: s for s in states}
    names: dict[str, str] = {}
    taken = {"end", "graph", "subgraph", "style"}  # Mermaid keywords, then names given out
    for node_id in graph_nodes(states, edges):
        base = name = re.sub(r"[^A-Za-z0-9_]", "_", node_id) or "node"
        suffix = len(names)
        while name in taken:  # a suffix can itself collide with another node's name
            name = f"{base}_{suffix}"
            suffix += 1
        names[node_id] = name
        taken.add(name)

    def label(text: str) -> str:
        # One line per node or edge: line breaks and control characters become spaces.
        text = "".join(c if c.isprintable() else " " for c in text)
        return (
            text.replace("&", "#amp;")
            .replace('"', "#quot;")
            .replace("<", "#lt;")
            .replace(">", "#gt;")
        )

    lines = ["flowchart TD"]
    for node_id, name in names.items():
        parts = [label(p) for p in _node_label_parts(node_id, by_id.get(node_id))]
        lines.append(f'    {name}["{"<br/>".join(parts)}"]')
    for edge in edges:
        arrow = "-.->" if edge.edge_type == "interface_boundary" else "-->"
        edge_label = label(edge.edge_type).replace("|", "#124;")
        lines.append(
            f"    {names[edge.parent_node_id]} {arrow}|{edge_label}| {names[edge.child_node_id]}"
        )
    return "\n".join(lines) + "\n"


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def render_dot(
    states: Sequence[NodeStateRecord], edges: Sequence[TaskGraphEdgeRow], *, name: str = "tasks"
) -> str:
    """The task graph as Graphviz DOT (``interface_boundary`` edges dashed)."""
    by_id = {s.node_id: s for s in states}
    lines = [
        f"digraph {_dot_quote(name)} {{",
        "    rankdir=TB;",
        '    node [shape=box, style=rounded, fontname="Helvetica"];',
    ]
    for node_id in graph_nodes(states, edges):
        parts = _node_label_parts(node_id, by_id.get(node_id))
        lines.append(f"    {_dot_quote(node_id)} [label={_dot_quote(chr(10).join(parts))}];")
    for edge in edges:
        style = ", style=dashed" if edge.edge_type == "interface_boundary" else ""
        lines.append(
            f"    {_dot_quote(edge.parent_node_id)} -> {_dot_quote(edge.child_node_id)} "
            f"[label={_dot_quote(edge.edge_type)}{style}];"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


@click.command()
@session_argument
@click.option(
    "--format",
    "graph_format",
    type=click.Choice(["mermaid", "dot"]),
    default="mermaid",
    show_default=True,
    help="The text format.",
)
@plot_option("the graph, nodes coloured by state,")
@click.pass_context
def graph(
    ctx: click.Context, session_id: str, graph_format: str, plot_file: Path | None
) -> None:
    """Print a session's task graph as Mermaid or DOT.

    Nodes are labelled with their class, latest state and energy; interface_boundary
    edges are dashed. --plot also draws it as an image, nodes coloured by their latest
    state.

    \b
    Example:
        perspt-store graph SESSION > graph.mmd
        perspt-store graph SESSION --format dot | dot -Tsvg > graph.svg
        perspt-store graph SESSION --plot graph.png
    """
    with open_store(ctx) as store:
        require_session(store, session_id)
        states = store.get_latest_node_states(session_id)
        edges = store.get_task_graph_edges(session_id)
        save_plot(lambda: plots.plot_task_graph(store, session_id), plot_file, "the task graph")
    if graph_format == "dot":
        click.echo(render_dot(states, edges, name=session_id), nl=False)
    else:
        click.echo(render_mermaid(states, edges), nl=False)

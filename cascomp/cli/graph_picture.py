"""`cascomp analyze --graph groups.png`: the traced graph, each node coloured by the channel group of its output.

Nodes whose output spans several groups (a concatenation) are black; nodes whose channels are all frozen
(inputs, the head, reductions) are grey. Layers run left to right in topological order.
"""

from __future__ import annotations

import os

import networkx as nx
import numpy as np
import torch

from cascomp.export.atomic import atomic_output
from cascomp.ir.graph import Graph

_FROZEN_COLOUR = "#c8c8c8"
_MIXED_COLOUR = "#000000"
_LEGEND_GROUPS = 20  # a legend longer than this stops helping


def draw_groups(graph: Graph, path: str | os.PathLike) -> None:
    """Write a PNG of `graph` to `path` (whole or not at all; an existing file is replaced)."""
    import matplotlib  # a dependency of cascomp; imported here so that commands without --graph start faster

    matplotlib.use("Agg")  # files only: no display is needed or wanted
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    digraph = _digraph(graph)
    colours = _group_colours(len(graph.groups), plt)
    node_colours = [_node_colour(data["groups"], colours) for _, data in digraph.nodes(data=True)]
    layers = list(nx.topological_generations(digraph))
    for depth, layer in enumerate(layers):
        for node in layer:
            digraph.nodes[node]["layer"] = depth
    positions = nx.multipartite_layout(digraph, subset_key="layer")
    width = min(max(8.0, 0.9 * len(layers)), 200.0)
    height = min(max(5.0, 0.8 * max(len(layer) for layer in layers)), 60.0)
    figure, axes = plt.subplots(figsize=(width, height))
    try:
        nx.draw_networkx(digraph, positions, ax=axes, node_color=node_colours, node_size=300, font_size=6,
                         arrowsize=8, edge_color="#888888")
        legend = [Patch(color=colours[g.id], label=f"{g.id}: {g.name} ({g.size})")
                  for g in graph.groups[:_LEGEND_GROUPS]]
        legend += [Patch(color=_FROZEN_COLOUR, label="frozen"), Patch(color=_MIXED_COLOUR, label="several groups")]
        axes.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
        axes.set_title(f"{type(graph.gm).__name__}: nodes coloured by the channel group of their output")
        axes.axis("off")
        with atomic_output(path, force=True) as temporary:
            figure.savefig(temporary, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(figure)


def _digraph(graph: Graph) -> nx.DiGraph:
    groups_of = _output_groups(graph)
    digraph = nx.DiGraph()
    for node in graph.gm.graph.nodes:
        digraph.add_node(node.name, groups=groups_of.get(node.name, frozenset()))
        for source in node.all_input_nodes:
            digraph.add_edge(source.name, node.name)
    return digraph


def _output_groups(graph: Graph) -> dict[str, frozenset[int]]:
    """Node name -> ids of the groups its output channels belong to."""
    # Graph has no public label -> channel map yet; its grouping's table is the one source of truth.
    slot_of_label = graph._grouping.slot_of_label
    starts = np.asarray(graph.offsets)
    out = {}
    for name, labels in graph.record.labels.items():
        if not isinstance(labels, torch.Tensor):
            continue  # tuples (split outputs) and non-tensors are drawn uncoloured
        slots = slot_of_label[labels.reshape(-1).numpy()]
        channels = slots[slots > 0] - 1
        ids = np.searchsorted(starts, np.unique(channels), side="right") - 1
        out[name] = frozenset(int(i) for i in ids)
    return out


def _group_colours(count: int, plt) -> list:
    palette = plt.get_cmap("tab20")
    return [palette(i % 20) for i in range(count)]


def _node_colour(groups: frozenset[int], colours: list):
    if not groups:
        return _FROZEN_COLOUR
    return colours[next(iter(groups))] if len(groups) == 1 else _MIXED_COLOUR

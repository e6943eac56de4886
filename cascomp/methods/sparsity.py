"""What the sparsifying methods (group lasso, variational dropout, MorphNet) share: which channels a trained
network still uses, the cost of keeping just those, and the family of widths they propose.

A channel is alive while the method's own measure says so (a non-zero norm, a noise level under the drop
threshold). A group with no channel alive is removed with its residual branch where the depth analysis lets
it go (graph.depth.removable); elsewhere its strongest channel stays, as the plan's minimum width would.
"""

from __future__ import annotations

import torch

from cascomp.ir.graph import Graph
from cascomp.methods.families import Family, ranked_family


def alive_keep(graph: Graph, alive: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """0/1 per channel (global order): the alive channels, plus each dead non-removable group's best-scored."""
    keep = alive.detach().to(torch.float64).cpu().clone()
    for group, offset in zip(graph.groups, graph.offsets):
        part = slice(offset, offset + group.size)
        if not keep[part].any() and group.name not in graph.depth.removable:
            keep[offset + int(torch.argmax(scores[part]))] = 1.0
    return keep


def per_group(graph: Graph, values: torch.Tensor) -> dict[str, torch.Tensor]:
    """A global per-channel vector cut into the groups' pieces."""
    return {g.name: values[o:o + g.size] for g, o in zip(graph.groups, graph.offsets)}


def ranked_without_dead(graph: Graph, scores: torch.Tensor, alive: torch.Tensor) -> Family:
    """The top channels by score across groups (`ranked_family`), with every removable group that has no
    channel alive proposed at 0 in every member: its block goes."""
    ranked = ranked_family(graph, per_group(graph, scores))
    dead = {g.name for g, o in zip(graph.groups, graph.offsets)
            if g.name in graph.depth.removable and not alive[o:o + g.size].any()}
    return lambda s: {name: 0.0 if name in dead else fraction for name, fraction in ranked(s).items()}


def median_per_channel(graph: Graph, values: torch.Tensor) -> torch.Tensor:
    """Per channel, the median of its group's values (a group's scale, so layers of any scale compare)."""
    out = torch.empty_like(values)
    for group, offset in zip(graph.groups, graph.offsets):
        piece = values[offset:offset + group.size]
        out[offset:offset + group.size] = piece.median().clamp_min(1e-12)
    return out


def below_cut(graph: Graph, ratios, scores: torch.Tensor, goals: dict[str, float]) -> torch.Tensor:
    """True for the channels outside the best-scored set whose cost meets `goals` (ratios(keep) -> cost ratio
    per metric, monotone in keep): the channels a budget of `goals` would cut now."""
    order = torch.argsort(scores, descending=True, stable=True)

    def fits(count: int) -> bool:
        keep = torch.zeros_like(scores, dtype=torch.float64)
        keep[order[:count]] = 1.0
        reached = ratios(alive_keep(graph, keep > 0, scores))
        return all(float(reached[m]) <= goal for m, goal in goals.items() if m in reached)

    low, high = 0, len(scores)  # the largest count that fits: bisection (cost grows with the count)
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    cut = torch.ones(len(scores), dtype=torch.bool)
    cut[order[:low]] = False
    return cut

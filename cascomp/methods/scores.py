"""Channel importance from weights: the L1 norm of the filters that produce each channel."""

from __future__ import annotations

import torch
import torch.fx as fx

from cascomp.ir.graph import Graph


def filter_norms(graph: Graph, model: fx.GraphModule) -> dict[str, torch.Tensor]:
    """Per group, each channel's mean absolute weight over the conv/linear filters that produce it.

    Producers are weight members sliced along dim 0 (output rows); a group without one (e.g. an embedding)
    falls back to every weight member it has, and a group with no weights at all scores every channel 1.
    """
    params = dict(model.named_parameters())
    norms = {}
    for group in graph.groups:
        weights = [m for m in group.members if m.param in params and params[m.param].dim() >= 2]
        producers = [m for m in weights if m.dim == 0] or weights
        total = torch.zeros(group.size, dtype=torch.float64)
        for member in producers:
            tensor = params[member.param].detach().abs().double()
            for channel, positions in enumerate(member.indices):
                total[channel] += tensor.index_select(member.dim, torch.tensor(positions)).mean()
        norms[group.name] = total if producers else torch.ones(group.size, dtype=torch.float64)
    return norms


def normalised(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each group's scores divided by their mean, so groups of different scales can be ranked together."""
    return {name: s / s.mean().clamp_min(1e-12) for name, s in scores.items()}

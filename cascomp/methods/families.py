"""Families of widths: s in [0, 1] -> keep fraction per group, growing with s (s = 0: every group at its
minimum, s = 1: every group whole). Methods propose one; `cascomp.search.budget.fit_widths` rounds its members
to legal widths under the constraints it projects with and picks the member that meets the targets. A family
gives fractions rather than widths so that one proposal can be projected under several width multiples.
A fraction of exactly 0 proposes removing the group (its residual branch, where the depth analysis allows it;
the minimum width elsewhere): the families here never give it, a method that searches depth does."""

from __future__ import annotations

from collections.abc import Callable

import torch

from cascomp.ir.graph import Graph

Family = Callable[[float], dict[str, float]]


def uniform_family(graph: Graph) -> Family:
    """The same keep fraction s in every group."""
    return lambda s: {g.name: max(s, 1e-9) for g in graph.groups}


def scaled_family(graph: Graph, proposal: dict[str, float]) -> Family:
    """Every group's proposed width scaled by one factor; s = 1 / the largest size/proposal is the proposal. A
    group proposed at 0 stays at 0 in every member (removed, where the depth analysis allows it)."""
    widest = max((g.size / proposal[g.name] for g in graph.groups if proposal[g.name] > 0), default=1.0)
    return lambda s: {g.name: min(1.0, max(s, 1e-9) * widest * proposal[g.name] / g.size) for g in graph.groups}


def ranked_family(graph: Graph, scores: dict[str, torch.Tensor]) -> Family:
    """The top s fraction of all channels by score, across groups (scores must be comparable)."""
    everything = torch.cat([scores[g.name].double() for g in graph.groups]) if graph.groups else torch.zeros(0)
    ordered = torch.sort(everything, descending=True).values

    def fractions(s: float) -> dict[str, float]:
        count = int(round(s * len(ordered)))
        if count == 0:
            return {g.name: 1e-9 for g in graph.groups}  # every group at its minimum (0.0 would remove branches)
        threshold = ordered[min(count, len(ordered)) - 1]
        return {g.name: max(int((scores[g.name].double() >= threshold).sum()), 1) / g.size for g in graph.groups}

    return fractions

"""The core guarantee, checked one way for every test file: for a plan, the physically pruned model computes
what the masked reference computes, and costs what the cost model predicted."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import cascomp
from tests.models import ZOO, example_inputs


def traced_graphs(builders: dict[str, Callable[[], tuple]]) -> Callable[[str], cascomp.Graph]:
    """A look-up `name -> traced graph` that traces each model once per test session (seeded).
    builders[name]() returns (model, example_inputs) or (model, example_inputs, example_kwargs)."""
    graphs: dict[str, cascomp.Graph] = {}

    def graph_of(name: str) -> cascomp.Graph:
        if name not in graphs:
            torch.manual_seed(0)
            graphs[name] = cascomp.trace(*builders[name]())
        return graphs[name]

    return graph_of


zoo_graph = traced_graphs(  # the zoo models (tests/models.py)
    {name: (lambda name=name: (ZOO[name].build(), example_inputs(name))) for name in ZOO})


def first(value) -> torch.Tensor:
    """The first tensor of a model output (a tensor, or nested tuples/lists of them)."""
    return value if isinstance(value, torch.Tensor) else first(value[0])


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-6))


def check_exact(graph: cascomp.Graph, plan: cascomp.Plan, tolerance: float = 1e-4) -> torch.nn.Module:
    """Assert pruned == masked (relative error <= tolerance, finite reference) and predicted cost == the cost
    of the re-traced pruned model; returns the pruned model."""
    small = cascomp.apply_plan(graph, plan)
    reference = first(graph.run(cascomp.mask_model(graph, plan)))
    assert bool(torch.isfinite(reference).all())
    assert relative_error(first(graph.run(small)), reference) <= tolerance
    predicted = graph.cost(plan)
    measured = cascomp.trace(small, graph.example_inputs, graph.example_kwargs).cost()
    assert predicted.params == measured.params == sum(p.numel() for p in small.parameters())
    assert predicted.flops == pytest.approx(measured.flops, rel=1e-9)
    return small

"""The heart of the rewrite's guarantee: for any plan, the pruned model computes what the masked model
computes, and costs what the cost model predicted."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cascomp
from tests.models import ZOO, example_inputs

_GRAPHS: dict[str, cascomp.Graph] = {}


def graph_of(name: str) -> cascomp.Graph:
    if name not in _GRAPHS:
        torch.manual_seed(0)
        _GRAPHS[name] = cascomp.trace(ZOO[name].build(), example_inputs(name))
    return _GRAPHS[name]


def first(value) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else first(value[0])


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-6))


def random_plan(graph: cascomp.Graph, draw_keep, seed: int) -> cascomp.Plan:
    generator = torch.Generator().manual_seed(seed)
    keep = {}
    for group in graph.groups:
        width = max(1, round(draw_keep * group.size))
        keep[group.name] = tuple(sorted(torch.randperm(group.size, generator=generator)[:width].tolist()))
    return cascomp.Plan(keep)


@pytest.mark.parametrize("name", sorted(ZOO))
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keep=st.floats(0.05, 1.0), seed=st.integers(0, 2**16))
def test_pruned_equals_masked_and_cost_is_exact(name: str, keep: float, seed: int) -> None:
    graph = graph_of(name)
    plan = random_plan(graph, keep, seed)
    small = cascomp.apply_plan(graph, plan)
    reference = cascomp.mask_model(graph, plan)
    assert relative_error(first(graph.run(small)), first(graph.run(reference))) <= 1e-4
    rebuilt = cascomp.trace(small, graph.example_inputs, graph.example_kwargs)
    predicted, measured = graph.cost(plan), rebuilt.cost()
    assert predicted.params == measured.params == sum(p.numel() for p in small.parameters())
    assert predicted.flops == pytest.approx(measured.flops, rel=1e-9)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_full_plan_is_identity(name: str) -> None:
    graph = graph_of(name)
    small = cascomp.apply_plan(graph, cascomp.Plan.full(graph))
    assert relative_error(first(graph.run(small)), first(graph.run(graph.gm))) <= 1e-6
    assert cascomp.trace(small, graph.example_inputs, graph.example_kwargs).cost() == graph.cost()


def test_pruned_model_is_plain_torch(tmp_path) -> None:
    graph = graph_of("vit")
    small = cascomp.apply_plan(graph, cascomp.Plan.uniform(graph, 0.5))
    assert not any(type(m).__module__.startswith("cascomp") for m in small.modules())
    path = tmp_path / "small.pt"
    torch.save(small, path)
    loaded = torch.load(path, weights_only=False)
    assert torch.allclose(first(graph.run(loaded)), first(graph.run(small)))

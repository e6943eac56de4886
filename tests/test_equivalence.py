"""The heart of the rewrite's guarantee: for any plan, the pruned model computes what the masked model
computes, and costs what the cost model predicted."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cascomp
from tests.exactness import check_exact, first, relative_error, zoo_graph as graph_of
from tests.models import ZOO

@pytest.mark.parametrize("name", sorted(ZOO))
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keep=st.floats(0.05, 1.0), seed=st.integers(0, 2**16))
def test_pruned_equals_masked_and_cost_is_exact(name: str, keep: float, seed: int) -> None:
    graph = graph_of(name)
    check_exact(graph, cascomp.Plan.random(graph, keep, seed))


@pytest.mark.parametrize("name", sorted(ZOO))
def test_the_traced_graph_computes_what_the_model_computes(name: str) -> None:
    """Pruned ≡ masked compares two graphs of the trace: a trace that is not the model (an in-place op
    dropped as dead code) passes it. So the trace itself is checked against a model built the same way."""
    graph = graph_of(name)
    torch.manual_seed(0)  # what graph_of built and traced
    model = ZOO[name].build()
    with torch.no_grad():
        expected = first(model(*graph.example_inputs, **graph.example_kwargs))
    assert relative_error(first(graph.run(graph.gm)), expected) <= 1e-5


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

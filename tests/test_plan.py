"""Plans: construction under constraints, validation errors, JSON round trip, cost of a plan."""

from __future__ import annotations

import pytest
import torch

import cascomp
from tests.models import ZOO, example_inputs


@pytest.fixture(scope="module")
def graph() -> cascomp.Graph:
    return cascomp.trace(ZOO["resnet_basic"].build(), example_inputs("resnet_basic"))


def test_json_round_trip(graph) -> None:
    plan = cascomp.Plan.random(graph, 0.4, seed=1)
    assert cascomp.Plan.from_json(plan.to_json()) == plan


@pytest.mark.parametrize("plan, message", [
    (cascomp.Plan({"nope": (0,)}), "does not have"),
    (cascomp.Plan({"stem.0": (0, 0)}), "distinct"),
    (cascomp.Plan({"stem.0": (99,)}), "distinct channel indices"),
    (cascomp.Plan({"stem.0": ()}), "minimum"),
])
def test_invalid_plans_are_refused(graph, plan, message) -> None:
    with pytest.raises(cascomp.PlanError, match=message):
        plan.validate(graph)


def test_plans_of_format_1_still_load_and_operators_round_trip(graph) -> None:
    plan = cascomp.Plan.random(graph, 0.4, seed=1)
    old = {"format": 1, "keep": {k: list(v) for k, v in plan.keep.items()}}  # written before operators existed
    assert cascomp.Plan.from_dict(old) == plan and cascomp.Plan.from_dict(old).operators == {}
    substituting = cascomp.Plan(plan.keep, {"stages.0.0.conv1": "3x3DS"})
    data = substituting.to_dict()
    assert data["format"] == 2 and data["operators"] == {"stages.0.0.conv1": "3x3DS"}
    assert cascomp.Plan.from_json(substituting.to_json()) == substituting
    with pytest.raises(cascomp.PlanError, match="operators"):
        cascomp.Plan.from_dict({**data, "operators": {"stages.0.0.conv1": 3}})
    with pytest.raises(cascomp.PlanError, match="substitutes operators"):  # its groups are another network's
        substituting.validate(graph)


def test_bad_json_is_a_plan_error() -> None:
    with pytest.raises(cascomp.PlanError):
        cascomp.Plan.from_json("{not json")
    with pytest.raises(cascomp.PlanError):
        cascomp.Plan.from_json('{"keep": []}')


def test_round_to_and_min_keep() -> None:
    graph = cascomp.trace(ZOO["resnet_basic"].build(), example_inputs("resnet_basic"), round_to=8, min_keep=8)
    for group, width in cascomp.Plan.uniform(graph, 0.3).widths(graph).items():
        assert width % 8 == 0 and width >= 8
    group = graph.groups[0]
    with pytest.raises(cascomp.PlanError, match="multiple of round_to=8"):
        cascomp.Plan({group.name: tuple(range(12))}).validate(graph)


def test_ignore_patterns_freeze_matching_groups() -> None:
    model = ZOO["mlp"].build()
    full = cascomp.trace(model, example_inputs("mlp"))
    ignored = cascomp.trace(model, example_inputs("mlp"), ignore=[full.groups[0].modules[0]])
    assert len(ignored.groups) == len(full.groups) - 1
    assert any("ignored by pattern" in f.reason for f in ignored.frozen)


def test_cost_is_monotone_and_min_cost_is_a_floor(graph) -> None:
    full, half = graph.cost(), graph.cost(cascomp.Plan.uniform(graph, 0.5))
    assert half.flops < full.flops and half.params < full.params
    assert graph.min_cost().flops <= half.flops
    assert full.flops == 2 * full.macs


def test_expected_cost_is_differentiable(graph) -> None:
    keep = torch.full((sum(g.size for g in graph.groups),), 0.5, requires_grad=True)
    macs, params = graph.cost_model.evaluate(keep)
    (macs + params).backward()
    assert keep.grad is not None and bool((keep.grad > 0).all())


def test_conv_cost_matches_hand_count() -> None:
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    graph = cascomp.trace(torch.nn.Sequential(conv, torch.nn.Conv2d(8, 4, 1)), torch.randn(2, 3, 10, 10))
    assert graph.cost().macs == 10 * 10 * (8 * 3 * 9 + 4 * 8)
    plan = cascomp.Plan({graph.groups[0].name: (0, 1, 2)})
    assert graph.cost(plan).macs == 10 * 10 * (3 * 3 * 9 + 4 * 3)

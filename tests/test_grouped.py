"""Grouped convolutions and GroupNorm with 1 < G < C groups prune with equal widths per group, exactly.

Structure: the pruned layers keep their group count and shrink every group alike. Numerics: the pruned model
computes what the masked reference computes, and costs what the cost model predicted. The channels of
these layers are no longer frozen.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import cascomp
from cascomp.export import export_onnx
from cascomp.ir.keep import kept_along
from tests.exactness import check_exact, traced_graphs
from tests.models import ZOO, example_inputs


class TwoGroupNet(nn.Module):
    """Dense conv, GroupNorm(2, 8), a grouped conv with G=2 (8 -> 12 channels), BatchNorm, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.grouped = nn.Conv2d(8, 12, 3, padding=1, groups=2)
        self.bn = nn.BatchNorm2d(12)
        self.fc = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm(self.dense(x)))
        x = F.relu(self.bn(self.grouped(x)))
        return self.fc(x.mean((2, 3)))


class ExtrasNet(nn.Module):
    """A grouped transposed conv, functional group_norm, a depthwise conv with channel multiplier 2, a channel
    shuffle and a grouped 1x1 conv after it."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Conv2d(3, 12, 3, padding=1)
        self.up = nn.ConvTranspose2d(12, 16, 2, stride=2, groups=2)
        self.norm_weight = nn.Parameter(torch.rand(16) + 0.5)
        self.norm_bias = nn.Parameter(torch.randn(16) * 0.1)
        self.depthwise = nn.Conv2d(16, 32, 3, padding=1, groups=16)
        self.shuffle = nn.ChannelShuffle(2)
        self.pointwise = nn.Conv2d(32, 8, 1, groups=4)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.up(F.relu(self.dense(x))))
        x = F.group_norm(x, 4, self.norm_weight, self.norm_bias)
        x = self.shuffle(F.relu(self.depthwise(x)))
        return self.fc(self.pointwise(x).mean((2, 3)))


def _randomised(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_().mul_(0.1)
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_().mul_(0.1)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


MODELS = {
    "grouped_conv": lambda: (ZOO["grouped_conv"].build(), example_inputs("grouped_conv")),
    "groupnorm": lambda: (ZOO["groupnorm"].build(), example_inputs("groupnorm")),
    "two_group": lambda: (_randomised(TwoGroupNet()), (torch.randn(2, 3, 8, 8),)),
    "extras": lambda: (_randomised(ExtrasNet()), (torch.randn(2, 3, 6, 6),)),
}
graph_of = traced_graphs(MODELS)


def grouped_layers(module: nn.Module) -> dict[str, nn.Module]:
    """Convs that are neither dense nor depthwise, and GroupNorms with several channels per group."""
    found = {}
    for name, layer in module.named_modules():
        if isinstance(layer, nn.modules.conv._ConvNd) and 1 < layer.groups < layer.in_channels:
            found[name] = layer
        elif isinstance(layer, nn.GroupNorm) and 1 < layer.num_groups < layer.num_channels:
            found[name] = layer
    return found


# -- analysis ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MODELS))
def test_grouped_layers_are_not_frozen(name: str) -> None:
    graph = graph_of(name)
    assert not [f for f in graph.frozen if "group" in f.reason], graph.frozen
    layers = set(grouped_layers(graph.gm))
    assert layers and layers <= {m for group in graph.groups for m in group.modules}


def test_group_sizes_count_slots() -> None:
    graph = graph_of("two_group")
    sizes = {g.name: (g.size, g.unit) for g in graph.groups}
    # 8 dense channels in 2 groups of 4 slots; 12 grouped-conv outputs in 2 copies of 6 slots
    assert sizes == {"dense": (4, 2), "grouped": (6, 2)}
    zoo = graph_of("grouped_conv")
    assert zoo.group("blocks.0.reduce.0").size == 4 and zoo.group("blocks.0.grouped.0").size == 4


def test_conv_cost_is_per_pair_times_widths_over_groups() -> None:
    graph = graph_of("two_group")
    plan = cascomp.Plan({"dense": (0, 2, 3), "grouped": (1, 4)})
    # grouped conv: 8x8 positions x 3x3 kernel x (2 x 2 outputs) x (2 x 3 inputs) / 2 groups
    assert graph.node_costs(plan)["grouped"] == 64 * 9 * 4 * 6 / 2


# -- structure ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MODELS))
def test_pruned_layers_keep_their_group_count(name: str) -> None:
    graph = graph_of(name)
    plan = cascomp.Plan.random(graph, 0.5, seed=1)
    small = cascomp.apply_plan(graph, plan)
    before, after = grouped_layers(graph.gm), dict(small.named_modules())
    for path, layer in before.items():
        pruned = after[path]
        if isinstance(layer, nn.GroupNorm):
            assert pruned.num_groups == layer.num_groups and pruned.num_channels < layer.num_channels
            assert pruned.weight.shape == (pruned.num_channels,)
            continue
        assert pruned.groups == layer.groups
        assert pruned.in_channels < layer.in_channels and pruned.out_channels < layer.out_channels
        assert pruned.in_channels % pruned.groups == 0 and pruned.out_channels % pruned.groups == 0


@pytest.mark.parametrize("name", ["two_group", "grouped_conv", "groupnorm"])
def test_every_group_keeps_the_same_slots(name: str) -> None:
    graph = graph_of(name)
    label_keep = graph.label_keep(cascomp.Plan.random(graph, 0.5, seed=2))
    for node in graph.gm.graph.nodes:
        if node.op == "call_module" and node.target in grouped_layers(graph.gm):
            layer = graph.gm.get_submodule(node.target)
            groups = getattr(layer, "groups", None) or layer.num_groups
            for source in (node.args[0].name, node.name):
                kept = kept_along(graph.record.labels[source], 1, label_keep).reshape(groups, -1)
                assert bool((kept == kept[:1]).all()) and 0 < int(kept[0].sum()) < kept.shape[1]


def test_round_to_counts_slots() -> None:
    torch.manual_seed(0)
    graph = cascomp.trace(ZOO["grouped_conv"].build(), example_inputs("grouped_conv"), round_to=2)
    plan = cascomp.Plan.uniform(graph, 0.5)
    assert plan.widths(graph)["blocks.0.reduce.0"] == 2  # 2 of 4 slots: 8 of 16 channels
    grouped = cascomp.apply_plan(graph, plan).get_submodule("blocks.0.grouped.0")
    assert (grouped.in_channels, grouped.out_channels, grouped.groups) == (8, 8, 4)


# -- numerics ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MODELS))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keep=st.floats(0.05, 1.0), seed=st.integers(0, 2**16))
def test_pruned_equals_masked_and_cost_is_exact(name: str, keep: float, seed: int) -> None:
    graph = graph_of(name)
    check_exact(graph, cascomp.Plan.random(graph, keep, seed))


def test_masked_group_norm_uses_kept_channels_of_each_group() -> None:
    graph = graph_of("two_group")
    plan = cascomp.Plan({"dense": (1, 2)})
    reference = cascomp.mask_model(graph, plan)
    swapped = type(reference.get_submodule("norm")).__name__
    assert swapped == "MaskedGroupNorm"
    x = torch.randn(2, 8, 5, 5)
    kept = [1, 2, 5, 6]
    expected = F.group_norm(x[:, kept], 2, graph.gm.norm.weight[kept], graph.gm.norm.bias[kept])
    with torch.no_grad():
        assert torch.allclose(reference.get_submodule("norm")(x)[:, kept], expected, atol=1e-5)


# -- export ------------------------------------------------------------------------------------------------
def test_pruned_grouped_conv_exports_to_onnx(tmp_path) -> None:
    graph = graph_of("grouped_conv")
    small = cascomp.apply_plan(graph, cascomp.Plan.random(graph, 0.5, seed=3))
    result = export_onnx(small, graph.example_inputs, tmp_path / "grouped.onnx")
    assert result.max_abs_error <= 1e-4

"""Graphs of ATen ops (what `torch.export(...).module()` holds, as in a .pt2 file) are analysed like the
nn.Module they came from: the same channel groups and cost, and pruning them is exact. ATen ops without a
matching torch-level rule freeze their channels, say so, and leave their multiply-adds marked uncounted."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import cascomp
from tests.exactness import check_exact
from tests.models import ZOO, example_inputs

# Models whose ops all map onto torch-level rules (convnext, vit and groupnorm through aten.layer_norm and
# aten.group_norm, read as F.layer_norm and F.group_norm)
SAME_AS_THE_MODULE = ("resnet_bottleneck", "mobilenet_v2", "inception", "shufflenet_v2", "mha", "grouped_conv",
                      "groupnorm", "convnext", "vit")


def _exported(model: nn.Module, inputs: tuple) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(model, inputs).module()


@pytest.mark.parametrize("name", SAME_AS_THE_MODULE)
def test_an_exported_graph_is_analysed_like_its_module(name: str) -> None:
    torch.manual_seed(0)
    model, inputs = ZOO[name].build().eval(), example_inputs(name)
    module_graph = cascomp.trace(model, inputs)
    graph = cascomp.trace(_exported(model, inputs), inputs)
    assert [g.size for g in graph.groups] == [g.size for g in module_graph.groups]
    assert graph.cost() == module_graph.cost() and graph.frozen == () and graph.record.uncounted == []
    for seed in range(2):
        check_exact(graph, cascomp.Plan.random(graph, 0.5, seed))


def test_an_aten_op_without_a_rule_is_frozen_and_its_cost_counted_by_running_it() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    inputs = (torch.randn(2, 3, 8, 8),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        decomposed = torch.export.export(model, inputs).run_decompositions().module()
    graph = cascomp.trace(decomposed, inputs)
    assert graph.groups == () and graph.record.uncounted == []
    assert graph.cost().macs == 8 * 3 * 9 * 6 * 6 + 4 * 8 * 9 * 4 * 4  # per sample, as the modules would count
    assert [what for what, _ in graph.record.counted_opaque] == ["function 'aten.convolution'"] * 2


def test_a_view_of_a_feature_map_is_followed() -> None:
    """`x.view(batch, -1)` after a conv: the value is contiguous, its broadcast labels are not."""

    class ViewNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(4 * 6 * 6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv(x).view(x.shape[0], -1))

    torch.manual_seed(0)
    graph = cascomp.trace(ViewNet(), (torch.randn(2, 1, 8, 8),))
    assert [g.size for g in graph.groups] == [4]
    check_exact(graph, cascomp.Plan.random(graph, 0.5, 0))


def test_functional_batch_norm_is_per_channel() -> None:
    class FunctionalBatchNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.head = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 2, 1)
            self.weight, self.bias = nn.Parameter(torch.rand(8) + 0.5), nn.Parameter(torch.randn(8))
            self.register_buffer("mean", torch.randn(8))
            self.register_buffer("var", torch.rand(8) + 0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = nn.functional.batch_norm(self.conv(x), self.mean, self.var, weight=self.weight, bias=self.bias)
            return self.head(torch.relu(y))

    torch.manual_seed(0)
    graph = cascomp.trace(FunctionalBatchNorm(), (torch.randn(2, 3, 8, 8),))
    (group,) = graph.groups
    assert {("weight", 0), ("bias", 0), ("mean", 0), ("var", 0)} <= {(m.param, m.dim) for m in group.members}
    check_exact(graph, cascomp.Plan.random(graph, 0.5, 0))

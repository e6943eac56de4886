"""Norms and convolutions that model libraries compute in forward from their own parameters (issue 21,
classes 1 and 2) prune like their module forms: norm subclasses calling `F.batch_norm` / `F.layer_norm` /
`F.group_norm` / `F.instance_norm`, weight-standardised convs (NF-nets, BiT), weight norm, RepVGG blocks.

Per model: the channels are found (not frozen, nearly all the cost prunable), seeded random plans prune
exactly (pruned == masked, predicted cost == measured), the rewrite slices every parameter read in forward
and resizes the shapes baked into the graph, and the pruned model exports to ONNX as it computes."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

import cascomp
from cascomp.errors import CascompWarning
from tests.exactness import check_exact, first, traced_graphs, zoo_graph
from tests import zoo_norms
from tests.models import prepare

MODELS = sorted(zoo_norms.ENTRIES)


def _calls(gm: fx.GraphModule, name: str) -> list[fx.Node]:
    return [n for n in gm.graph.nodes if n.op in ("call_function", "call_method")
            and getattr(n.target, "__name__", str(n.target)).lstrip("_") == name]


def _training(node: fx.Node) -> bool:
    """F.batch_norm's `training` flag, however fx recorded it."""
    return node.kwargs["training"] if "training" in node.kwargs else node.args[5]


@pytest.mark.parametrize("name", MODELS)
def test_every_channel_but_the_output_is_prunable(name: str) -> None:
    graph = zoo_graph(name)
    assert graph.frozen == () and graph.record.uncounted == []
    share = graph.prunable_share()
    assert share["flops"] > 0.95 and share["params"] > 0.9


@pytest.mark.parametrize("name", MODELS)
def test_random_plans_prune_exactly_and_export(name: str, tmp_path) -> None:
    graph = zoo_graph(name)
    for seed in range(3):
        small = check_exact(graph, cascomp.Plan.random(graph, (0.3, 0.5, 0.8)[seed], seed))
    result = cascomp.export_onnx(small, graph.example_inputs, tmp_path / "small.onnx")
    session = onnxruntime.InferenceSession(result.path, providers=["CPUExecutionProvider"])
    inputs = {i.name: t.numpy() for i, t in zip(session.get_inputs(), graph.example_inputs)}
    expected = first(graph.run(small)).detach().numpy()
    np.testing.assert_allclose(session.run(None, inputs)[0], expected, rtol=1e-3, atol=1e-4)


def _half(graph: cascomp.Graph) -> tuple[cascomp.Plan, nn.Module]:
    plan = cascomp.Plan.random(graph, 0.5, seed=3)
    return plan, check_exact(graph, plan)


# -- class 1: functional norms ------------------------------------------------------------------------------
def test_batch_norm_act_slices_its_parameters_and_statistics() -> None:
    graph = zoo_graph("batchnorm_act")
    plan, small = _half(graph)
    kept = len(plan.keep["stem"])
    assert [tuple(small.get_parameter(f"stem_bn.{p}").shape) for p in ("weight", "bias")] == [(kept,)] * 2
    assert [tuple(small.get_buffer(f"stem_bn.{b}").shape) for b in ("running_mean", "running_var")] == [(kept,)] * 2
    norms = _calls(small, "batch_norm")
    assert len(norms) == 6 and not any(_training(n) for n in norms)  # traced in eval: running statistics


def test_batch_norm_act_without_running_statistics_uses_the_batch() -> None:
    graph = zoo_graph("batchnorm_act_batch_stats")
    _, small = _half(graph)
    assert all(n.args[1] is None and _training(n) for n in _calls(small, "batch_norm"))


def test_a_model_in_training_mode_is_traced_as_in_eval_and_left_training() -> None:
    model = zoo_norms.BatchNormActNet().train()
    graph = cascomp.trace(model, torch.randn(2, 3, 16, 16))
    assert model.training and all(m.training for m in model.modules())
    assert len(graph.groups) == 4 and not any(_training(n) for n in _calls(graph.gm, "batch_norm"))
    check_exact(graph, cascomp.Plan.random(graph, 0.5, seed=1))


def test_layer_norm_2d_shapes_follow_the_width() -> None:
    graph = zoo_graph("layernorm2d")
    plan, small = _half(graph)
    shapes = [n.args[1] for n in _calls(small, "layer_norm")]
    assert shapes == [(len(plan.keep["stem"]),)] * 3 + [(len(plan.keep["down"]),)]
    assert small.get_parameter("stem_norm.weight").shape == (len(plan.keep["stem"]),)


def test_group_norm_group_counts() -> None:
    """One group and four groups stay; one channel per group follows the width (a GroupNorm with 4 groups
    keeps them equally wide: its 16 channels are 4 slots)."""
    graph = zoo_graph("groupnorm_act")
    assert [(g.name, g.size) for g in graph.groups] == [("conv1", 4), ("conv3", 24), ("conv4", 24)]
    plan, small = _half(graph)
    groups = [n.args[1] for n in _calls(small, "group_norm")]
    assert groups == [1, 4, len(plan.keep["conv3"])]
    assert small.get_parameter("norm2.weight").shape == (4 * len(plan.keep["conv1"]),)


# -- class 2: weight-standardised and reparameterised convolutions ----------------------------------------
def test_standardised_weights_are_followed_to_their_conv() -> None:
    """Both ways of writing weight standardisation give the groups of the plain network, and the rewrite
    slices the weight and its gain alike and resizes `reshape(1, out_channels, -1)`."""
    sizes = [("stem", 16), ("blocks.0.conv1", 16), ("blocks.1.conv1", 16), ("widen", 24)]
    assert [(g.name, g.size) for g in zoo_graph("nf_resnet").groups] == sizes
    assert [(g.name, g.size) for g in zoo_graph("nf_resnet_moments").groups] == sizes
    graph = zoo_graph("nf_resnet")
    plan, small = _half(graph)
    kept, inner = len(plan.keep["stem"]), len(plan.keep["blocks.0.conv1"])
    assert small.get_parameter("stem.weight").shape == (kept, 3, 3, 3)
    assert small.get_parameter("stem.gain").shape == (kept, 1, 1, 1)
    assert small.get_parameter("blocks.0.conv1.weight").shape == (inner, kept, 3, 3)
    assert small.get_parameter("blocks.0.conv3.gain").shape == (kept, 1, 1, 1)
    assert _calls(small, "reshape")[0].args[1:] == (1, kept, -1)


def test_the_masked_reference_standardises_over_the_kept_inputs_only() -> None:
    """Pruning a conv's input channels changes its standardisation statistics; the masked reference must
    see that too, or pruned != masked (what check_exact holds it to)."""
    graph = zoo_graph("nf_resnet_moments")
    plan = cascomp.Plan({"stem": tuple(range(8))})
    masked = cascomp.mask_model(graph, plan)
    assert len(_calls(masked, "index_select")) == 6  # mean and std of the convs reading the stem's channels
    check_exact(graph, plan)


class BiTConv(nn.Conv2d):
    """BiT's form: `torch.var_mean`, biased, then a square root."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance, mean = torch.var_mean(self.weight, dim=[1, 2, 3], keepdim=True, unbiased=False)
        weight = (self.weight - mean) / torch.sqrt(variance + 1e-10)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class StdLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight - self.weight.mean(1, keepdim=True)
        return F.linear(x, weight / (weight.std(1, keepdim=True) + 1e-5), self.bias)


class Variants(nn.Module):
    """BiT convs (a 1x1 one: its fan-in is its input channels), weight-norm convs, a standardised linear."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = BiTConv(3, 12, 3, padding=1), BiTConv(12, 12, 1)
        self.c = weight_norm(nn.Conv2d(12, 8, 3, padding=1))
        self.d = weight_norm(nn.Conv2d(8, 8, 1))
        self.e = StdLinear(8, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.b(F.relu(self.a(x))))
        x = F.relu(self.d(F.relu(self.c(x)))).mean((2, 3))
        return self.head(F.relu(self.e(x)))


class OneByOne(nn.Module):
    """timm's form on a 1x1 conv: its statistics span its input channels only, and need two of them."""

    def __init__(self) -> None:
        super().__init__()
        self.a = zoo_norms.ScaledStdConv2d(3, 8, 3)
        self.b = zoo_norms.ScaledStdConv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(F.gelu(self.a(x))).mean((2, 3))


class CumulativeWeight(nn.Conv2d):
    """A weight computed by an op the analysis does not know."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, torch.cumsum(self.weight, 1), self.bias, self.stride, self.padding)


class Unfollowed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = CumulativeWeight(3, 8, 3, padding=1), CumulativeWeight(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(F.relu(self.a(x))).mean((2, 3))


class CombinedScales(nn.Module):
    """Parameters combined before they meet channels: a layer scale `a * b`, a conv bias times a gain."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.a, self.b = nn.Parameter(torch.rand(8) + 0.5), nn.Parameter(torch.rand(8, 1) + 0.5)
        self.gain = nn.Parameter(torch.rand(8) + 0.5)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.c1(x)) * (self.a * self.b.squeeze(1)).view(1, -1, 1, 1)
        y = F.conv2d(y, self.c2.weight, self.c2.bias * self.gain, padding=1)
        return self.fc(y.mean((2, 3)))


graph_of = traced_graphs({
    "combined": lambda: (CombinedScales(), (torch.randn(2, 3, 8, 8),)),
    "variants": lambda: (prepare(Variants()), (torch.randn(2, 3, 8, 8),)),
    "one_by_one": lambda: (prepare(OneByOne()), (torch.randn(2, 3, 8, 8),)),
})


def test_other_standardisations_and_weight_norm_prune_exactly(tmp_path) -> None:
    graph = graph_of("variants")
    assert [(g.name, g.size) for g in graph.groups] == [
        ("a", 12), ("b", 12), ("c.parametrizations.weight", 8), ("d.parametrizations.weight", 8), ("e", 16)]
    assert graph.frozen == () and graph.prunable_share()["flops"] > 0.95
    plan = cascomp.Plan({name: tuple(range(0, size, 2)) for name, size in
                         [("a", 12), ("b", 12), ("c.parametrizations.weight", 8), ("d.parametrizations.weight", 8), ("e", 16)]})
    small = check_exact(graph, plan)
    assert small.get_parameter("c.parametrizations.weight.original0").shape == (4, 1, 1, 1)  # g
    assert small.get_parameter("c.parametrizations.weight.original1").shape == (4, 6, 3, 3)  # v
    cascomp.export_onnx(small, graph.example_inputs, tmp_path / "small.onnx")
    for seed in range(3):
        check_exact(graph, cascomp.Plan.random(graph, 0.4, seed))


def test_parameters_combined_before_they_meet_channels_follow_them() -> None:
    graph = graph_of("combined")
    assert [[(m.param, m.dim) for m in g.members] for g in graph.groups] == [
        [("c1.weight", 0), ("c1.bias", 0), ("a", 0), ("b", 0), ("c2.weight", 1)],
        [("c2.weight", 0), ("c2.bias", 0), ("gain", 0), ("fc.weight", 1)]]
    for seed in range(3):
        check_exact(graph, cascomp.Plan.random(graph, 0.5, seed))


def test_a_statistic_over_one_position_is_refused_with_the_fix() -> None:
    graph = graph_of("one_by_one")
    check_exact(graph, cascomp.Plan({"a": (0, 5)}))
    with pytest.raises(cascomp.PlanError, match=r"leaves 1 position\(s\) of 'b.weight'.*group a .*--min-keep 2"):
        cascomp.apply_plan(graph, cascomp.Plan({"a": (3,)}))


def test_a_weight_the_analysis_cannot_follow_freezes_its_layer_with_the_reason() -> None:
    """Never 0 groups and 0 reasons: the layer's output channels are listed, with the op that made it."""
    with pytest.warns(CascompWarning, match=r"can be pruned .*function 'conv2d' with its weight from 'cumsum'"):
        graph = cascomp.trace(Unfollowed(), torch.randn(1, 3, 8, 8))
    assert graph.groups == ()
    reasons = [(f.node, f.channels) for f in graph.frozen if "weight from 'cumsum" in f.reason]
    assert reasons == [("conv2d", 8), ("conv2d_1", 8)]


def test_repvgg_branches_share_their_channels() -> None:
    """3x3 conv-BN + 1x1 conv-BN + identity BN summed: the branches are tied into one group per stage."""
    graph = zoo_graph("repvgg")
    assert [(g.name, g.size) for g in graph.groups] == [("blocks.0.conv3.0", 16), ("blocks.2.conv3.0", 24)]
    plan, small = _half(graph)
    assert small.get_buffer("blocks.1.identity.running_mean").shape == (len(plan.keep["blocks.0.conv3.0"]),)

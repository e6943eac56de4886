"""Depth removal: a group that keeps no channel removes its residual branch, which becomes a constant.

Checked four ways: which groups the analysis allows to go (and why the others may not), the structure of
the rewritten graph, its numerics against the masked reference, and its cost against the cost model.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cascomp
from cascomp.ir import depth
from cascomp.passes import RemoveBranchesPass
from cascomp.zoo.resnet import Bottleneck, ResNet
from tests.exactness import check_exact, zoo_graph as graph_of
from tests.models import ZOO

class BiasedBlock(nn.Module):
    """A residual branch whose constant is not trivial: conv bias, a layer scale, an in-place merge."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.gamma = nn.Parameter(torch.rand(8, 1, 1) + 0.5)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        out = self.conv2(F.relu(self.conv1(x)))
        x += F.gelu(out) * self.gamma
        return self.head(x)


class ConcatBranch(nn.Module):
    """The branch's channels meet other channels in a concatenation: not removable."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 4, 1)
        self.head = nn.Conv2d(7, 2, 1)

    def forward(self, x):
        return self.head(torch.cat([x, self.conv2(F.relu(self.conv1(x)))], 1))


class BranchToOutput(nn.Module):
    """The branch's constant would be the model's output: not removable."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 3, 1)

    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(x))), x * 2


class TwoBranches(nn.Module):
    """Two branches merged with each other: each one's constant would meet the other's (case 6)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1a, self.conv2a = nn.Conv2d(8, 6, 3, padding=1), nn.Conv2d(6, 8, 1)
        self.conv1b, self.conv2b = nn.Conv2d(8, 5, 3, padding=1), nn.Conv2d(5, 8, 1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        return self.head(self.conv2a(F.relu(self.conv1a(x))) + self.conv2b(F.relu(self.conv1b(x))))


# -- analysis ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, removable", [
    # each basic block's inner group: conv2 then sees nothing, bn2 maps its zero output to a constant
    ("resnet_basic", {"stages.0.0.conv1", "stages.0.1.conv1", "stages.1.0.conv1", "stages.1.1.conv1"}),
    # only the group before conv3: the group before conv2 would leave conv2 -> bn2 -> relu -> conv3
    ("resnet_bottleneck", {"stages.0.0.conv2", "stages.0.1.conv2", "stages.1.0.conv2"}),
    # the one expanding inverted residual with a skip; the others have no skip to merge into
    ("mobilenet_v2", {"blocks.2.block.0"}),
])
def test_analysis_finds_inner_groups_of_residual_blocks(name: str, removable: set[str]) -> None:
    graph = graph_of(name)
    assert graph.depth.removable == removable
    assert set(graph.depth.refused) == {g.name for g in graph.groups} - removable
    for group in removable:
        branch = graph.depth.branches[group]
        assert len(branch.folds) == 1 and branch.folds[0].merges and branch.folds[0].channel_dim == 1


def test_bottleneck_refusal_names_the_contraction() -> None:
    reason = graph_of("resnet_bottleneck").depth.refusal("stages.0.0.conv1")
    assert "stages.0.0.conv3" in reason and "neither a per-channel op nor a residual merge" in reason


def test_concatenation_and_output_are_refused() -> None:
    concat = cascomp.trace(ConcatBranch(), torch.randn(2, 3, 8, 8))
    assert not concat.depth.removable
    assert "cat" in concat.depth.refusal("conv1")
    output = cascomp.trace(BranchToOutput(), torch.randn(2, 3, 8, 8))
    assert "model output" in output.depth.refusal("conv1")
    assert "model output" in graph_of("mlp").depth.refusal("layers.2")


def test_branches_merged_with_each_other_are_refused() -> None:
    graph = cascomp.trace(TwoBranches(), torch.randn(2, 3, 8, 8))
    assert not graph.depth.removable
    assert graph.depth.refusal("conv1a") == "its branch is merged with the constant branch of group 'conv1b'"
    assert graph.depth.refusal("conv1b") == "its branch is merged with the constant branch of group 'conv1a'"


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_group_is_either_removable_or_refused_with_a_reason(name: str) -> None:
    graph = graph_of(name)
    analysis = graph.depth
    assert set(analysis.branches) | set(analysis.refused) == {g.name for g in graph.groups}
    assert not set(analysis.branches) & set(analysis.refused)
    assert all(isinstance(reason, str) and reason for reason in analysis.refused.values())
    nodes = {node.name: node for node in graph.gm.graph.nodes}
    for name, branch in analysis.branches.items():
        assert branch.group == name and branch.zero and not branch.zero & branch.constants
        assert set(branch.frontier) <= branch.constants and branch.folds
        for fold in branch.folds:
            assert fold.node in branch.constants and not set(fold.merges) & branch.removed
            assert all(nodes[fold.node] in nodes[merge].all_input_nodes for merge in fold.merges)


def test_analysis_work_grows_linearly_with_depth(monkeypatch) -> None:
    """Each group's scan visits its own branch, not the whole graph: doubling the blocks of a ResNet-50
    (177 -> 337 nodes, 37 -> 69 groups) about doubles the nodes visited. Narrow widths keep it quick."""
    visits = []
    visit = depth._Scan._visit

    def counting(scan, node):
        visits[-1] += 1
        return visit(scan, node)

    monkeypatch.setattr(depth._Scan, "_visit", counting)
    nodes = []
    for blocks in ([3, 4, 6, 3], [6, 8, 12, 6]):  # the stages of cascomp.zoo's resnet50 and resnet50_deep
        visits.append(0)
        model = ResNet(Bottleneck, blocks, [4, 4, 4, 4], 8, imagenet_stem=True)
        graph = cascomp.trace(model, torch.randn(1, 3, 32, 32))
        nodes.append(len(graph.gm.graph.nodes))
    assert nodes == [177, 337]
    assert visits[1] <= 2.2 * visits[0]
    assert visits[1] <= 2 * nodes[1]  # a scan of the whole graph per group would visit about groups x nodes


# -- rewrite: structure, numerics, cost -----------------------------------------------------------------------
def test_removed_block_leaves_a_constant() -> None:
    graph = graph_of("resnet_basic")
    small = check_exact(graph, cascomp.Plan({"stages.0.1.conv1": ()}))
    called = {str(n.target) for n in small.graph.nodes if n.op == "call_module"}
    block = {f"stages.0.1.{m}" for m in ("conv1", "bn1", "conv2", "bn2")}
    assert not called & block
    assert not any(name.startswith("stages.0.1.conv") for name, _ in small.named_parameters())
    constants = [n for n in small.graph.nodes if n.op == "get_attr"]
    assert [str(n.target) for n in constants] == ["cascomp_depth_stages_0_1_bn2"]
    assert tuple(small.get_buffer("cascomp_depth_stages_0_1_bn2").shape) == (1, 16, 1, 1)
    assert "stages.0.1.relu" in called  # the block's shared ReLU still runs after the merge
    assert graph.node_costs(cascomp.Plan({"stages.0.1.conv1": ()}))["stages_0_1_conv2"] == 0


def test_modified_flag() -> None:
    graph = graph_of("resnet_basic")
    keep = graph.label_keep(cascomp.Plan({"stages.0.0.conv1": ()}))
    branches = graph.depth.zeroed({"stages.0.0.conv1": 0})
    assert RemoveBranchesPass(graph.record, keep, branches)(graph.gm).modified
    assert not RemoveBranchesPass(graph.record, keep, ())(graph.gm).modified


def test_bias_layer_scale_and_in_place_merge_fold_exactly() -> None:
    torch.manual_seed(0)
    graph = cascomp.trace(BiasedBlock(), torch.randn(2, 3, 8, 8))
    assert graph.depth.removable == {"conv1"}
    small = check_exact(graph, cascomp.Plan({"conv1": (), "stem": (0, 2, 3, 7)}))
    assert tuple(small.get_buffer("cascomp_depth_mul").shape) == (1, 4, 1, 1)  # sliced to the kept channels
    assert not hasattr(small, "gamma") and not hasattr(small, "conv2")


@pytest.mark.parametrize("name", ["resnet_basic", "resnet_bottleneck", "mobilenet_v2", "efficientnet_mbconv",
                                  "vit"])
def test_every_removable_group_at_once(name: str) -> None:
    graph = graph_of(name)
    check_exact(graph, cascomp.Plan({group: () for group in graph.depth.removable}))


@pytest.mark.parametrize("name", ["resnet_basic", "resnet_bottleneck", "mobilenet_v2"])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keep=st.floats(0.05, 1.0), seed=st.integers(0, 2**16))
def test_random_plans_with_removed_branches(name: str, keep: float, seed: int) -> None:
    graph = graph_of(name)
    generator = torch.Generator().manual_seed(seed)
    chosen = {}
    for group in graph.groups:
        width = max(1, round(keep * group.size))
        chosen[group.name] = tuple(sorted(torch.randperm(group.size, generator=generator)[:width].tolist()))
        if group.name in graph.depth.removable and float(torch.rand((), generator=generator)) < 0.3:
            chosen[group.name] = ()
    check_exact(graph, cascomp.Plan(chosen))


# -- plans ---------------------------------------------------------------------------------------------------
def test_zeroing_a_group_that_is_not_removable_is_a_plan_error() -> None:
    graph = graph_of("resnet_basic")
    refusal = r"'stem.0' keeps 0 of 16 channels.*may not: its branch reaches node 'stages_\S+_conv2'"
    with pytest.raises(cascomp.PlanError, match=refusal):
        cascomp.Plan({"stem.0": ()}).validate(graph)
    cascomp.Plan({"stages.0.0.conv1": ()}).validate(graph)


def test_searches_never_reach_width_zero() -> None:
    graph = graph_of("resnet_basic")
    assert min(graph.constraints.smallest(g.size) for g in graph.groups) >= 1
    for plan in (cascomp.Plan.uniform(graph, 0.01), cascomp.Plan.random(graph, 0.01)):
        assert min(plan.widths(graph).values()) >= 1
    uniform = cascomp.Plan.uniform(graph, 0.01)
    assert graph.cost(uniform) == graph.min_cost()


def test_onnx_export_of_a_depth_pruned_model(tmp_path) -> None:
    graph = graph_of("resnet_basic")
    zeroed = {"stages.0.0.conv1": (), "stages.1.1.conv1": ()}
    plan = cascomp.Plan({**cascomp.Plan.uniform(graph, 0.5).keep, **zeroed})
    small = cascomp.apply_plan(graph, plan)
    result = cascomp.export_onnx(small, graph.example_inputs, tmp_path / "depth.onnx")
    assert result.max_abs_error <= 1e-4

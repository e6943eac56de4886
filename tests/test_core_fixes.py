"""Regression tests for the analysis and rewrite fixes: functional norms with keyword parameters, functional
depthwise / transposed convolutions, keyword and `None` example inputs, masks that meet -inf, and the
vectorised grouping (checked against the per-position reference it replaced).

Every rewrite is checked for structure (what the rewritten graph holds), numerics (the pruned model computes
what the masked reference computes, and costs what the cost model predicted) and, with hypothesis, for
random keep-sets.
"""

from __future__ import annotations

import fnmatch
from collections import Counter, defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from torch import nn

import cascomp
from cascomp.errors import TraceError
from cascomp.ir.analysis import analyze
from cascomp.ir.context import Record
from cascomp.ir.groups import ChannelGroup, FrozenChannels, GroupMember, build_groups
from cascomp.ir.labels import LabelSpace
from cascomp.passes import MaskChannelsPass, ResizeShapeArgsPass
from tests.exactness import check_exact, relative_error, traced_graphs
from tests.models import ZOO, example_inputs


# -- models ------------------------------------------------------------------------------------------------
class FunctionalLayerNormNet(nn.Module):
    """`F.layer_norm` with weight and bias by keyword (fx records them as keywords) between two Linears."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 12)
        self.norm_weight = nn.Parameter(torch.rand(12) + 0.5)
        self.norm_bias = nn.Parameter(torch.randn(12) * 0.1)
        self.fc2 = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(self.fc1(x), (12,), weight=self.norm_weight, bias=self.norm_bias)
        return self.fc2(F.gelu(x))


class FunctionalConvNet(nn.Module):
    """Functional convolutions: depthwise (groups = channels, multiplier 2, bias by keyword), grouped with
    a fixed G = 2, a depthwise transposed conv and a grouped transposed conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.depthwise = nn.Parameter(torch.randn(16, 1, 3, 3) * 0.3)
        self.depthwise_bias = nn.Parameter(torch.randn(16) * 0.1)
        self.grouped = nn.Parameter(torch.randn(8, 8, 1, 1) * 0.3)  # 16 -> 8 channels, G = 2
        self.up_depthwise = nn.Parameter(torch.randn(8, 1, 2, 2) * 0.3)  # (C_in, C_out / G, kH, kW), G = 8
        self.up_grouped = nn.Parameter(torch.randn(8, 3, 1, 1) * 0.3)  # 8 -> 6 channels, G = 2
        self.head = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = F.relu(F.conv2d(x, self.depthwise, bias=self.depthwise_bias, padding=1, groups=8))
        x = F.relu(F.conv2d(x, self.grouped, None, 1, 0, 1, 2))
        x = F.relu(F.conv_transpose2d(x, self.up_depthwise, stride=2, groups=8))
        x = F.conv_transpose2d(x, self.up_grouped, groups=2)
        return self.head(x.mean((2, 3)))


class ReshapedWeightConvNet(nn.Module):
    """A functional conv whose weight is a reshaped view: its output channels are the parameter's rows, but
    its input channels are spread with the kernel over one parameter dim, which the analysis freezes."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.flat_weight = nn.Parameter(torch.randn(6, 72) * 0.1)
        self.head = nn.Conv2d(6, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        return self.head(F.conv2d(x, self.flat_weight.view(6, 8, 3, 3), padding=1))


class KeywordInputsNet(nn.Module):
    """Optional inputs: a `None` bias, a float scale and a tensor mask, given by keyword."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x, bias=None, scale=1.0, mask=None):
        h = F.relu(self.fc1(x)) * scale
        if bias is not None:
            h = h + bias
        if mask is not None:
            h = h * mask.unsqueeze(-1)
        return self.fc2(h)


class NoneInTheMiddleNet(nn.Module):
    """A `None` positional input between two tensors: the tensor after it must stay in its own place."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x, extra=None, gate=None):
        h = F.relu(self.fc1(x))
        if extra is not None:
            h = h + extra
        return self.fc2(h * gate)


class CausalAttentionNet(nn.Module):
    """Hand-written attention whose scores get a float causal mask holding -inf before the softmax."""

    def __init__(self, dim: int = 16, heads: int = 4, tokens: int = 6) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.register_buffer("causal", torch.full((tokens, tokens), float("-inf")).triu(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        q = self.q(x).reshape(B, N, self.heads, self.head_dim).transpose(1, 2)
        k = self.k(x).reshape(B, N, self.heads, self.head_dim).transpose(1, 2)
        v = self.v(x).reshape(B, N, self.heads, self.head_dim).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5 + self.causal
        out = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, N, D)
        return self.proj(out)


def _keyword_case():
    torch.manual_seed(1)
    inputs = (torch.randn(2, 5, 8), None)
    return KeywordInputsNet(), inputs, {"mask": (torch.rand(2, 5) > 0.3).float(), "scale": 2.0}


MODELS = {
    "layer_norm": lambda: (FunctionalLayerNormNet(), (torch.randn(3, 8),), None),
    "functional_conv": lambda: (FunctionalConvNet(), (torch.randn(2, 3, 6, 6),), None),
    "keyword_inputs": _keyword_case,
    "none_in_the_middle": lambda: (NoneInTheMiddleNet(), (torch.randn(2, 8), None, torch.rand(2, 1)), None),
    "causal_attention": lambda: (CausalAttentionNet(), (torch.randn(2, 6, 16),), None),
}
graph_of = traced_graphs(MODELS)


def members(graph: cascomp.Graph) -> set[tuple[str, int]]:
    return {(m.param, m.dim) for group in graph.groups for m in group.members}


def call_nodes(gm, name: str) -> list:
    return [n for n in gm.graph.nodes if getattr(n.target, "__name__", None) == name]


# -- numerics for every model, random keep-sets ------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MODELS))
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keep=st.floats(0.05, 1.0), seed=st.integers(0, 2**16))
def test_pruned_equals_masked_and_cost_is_exact(name: str, keep: float, seed: int) -> None:
    graph = graph_of(name)
    check_exact(graph, cascomp.Plan.random(graph, keep, seed))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_has_prunable_groups(name: str) -> None:
    assert graph_of(name).groups


# -- 1. functional layer_norm ------------------------------------------------------------------------------
def test_functional_layer_norm_links_keyword_parameters() -> None:
    graph = graph_of("layer_norm")
    assert {("norm_weight", 0), ("norm_bias", 0)} <= set(
        (m.param, m.dim) for m in graph.group("fc1").members)
    small = cascomp.apply_plan(graph, cascomp.Plan({"fc1": (0, 3, 4, 9, 11)}))
    (norm,) = call_nodes(small, "layer_norm")
    assert norm.args[1] == (5,) and norm.kwargs["weight"].target == "norm_weight"
    assert small.norm_weight.shape == small.norm_bias.shape == (5,)
    assert torch.equal(small.norm_weight, graph.gm.norm_weight[[0, 3, 4, 9, 11]])


# -- 2. functional convolutions ------------------------------------------------------------------------------
def _groups_argument(node) -> int:
    return node.kwargs["groups"] if "groups" in node.kwargs else node.args[6]


def test_functional_depthwise_groups_follow_the_width() -> None:
    graph = graph_of("functional_conv")
    assert not graph.frozen, graph.frozen
    assert {("depthwise", 0), ("depthwise_bias", 0), ("up_depthwise", 0)} <= members(graph)
    sizes = {g.name: (g.size, g.unit) for g in graph.groups}
    assert sizes == {"stem": (4, 2), "grouped": (4, 2), "up_grouped": (3, 1)}  # G = 2: 2 channels per slot
    plan = cascomp.Plan({"stem": (1, 2), "grouped": (0, 2)})  # 2 of 4 slots in each of the G = 2 groups
    label_keep = graph.label_keep(plan)
    result = ResizeShapeArgsPass(graph.record, label_keep)(graph.gm)
    assert result.modified
    convs = call_nodes(result.gm, "conv2d") + call_nodes(result.gm, "conv_transpose2d")
    assert [_groups_argument(n) for n in convs] == [4, 2, 4, 2]  # depthwise follow the width, G = 2 stays
    small = cascomp.apply_plan(graph, plan)
    assert small.depthwise.shape == (8, 1, 3, 3) and small.depthwise_bias.shape == (8,)  # 4 channels x 2
    assert small.grouped.shape == (4, 4, 1, 1)  # 2 groups x 2 slots out, 8 / 2 inputs per group
    assert small.up_depthwise.shape == (4, 1, 2, 2) and small.up_grouped.shape == (4, 3, 1, 1)
    assert relative_error(graph.run(small), graph.run(cascomp.mask_model(graph, plan))) <= 1e-5


def test_functional_conv_with_an_unfollowed_weight_is_frozen_with_a_reason() -> None:
    torch.manual_seed(0)
    graph = cascomp.trace(ReshapedWeightConvNet().eval(), torch.randn(2, 3, 5, 5))
    assert [(g.name, g.size) for g in graph.groups] == [("flat_weight", 6)]  # its rows: the output channels
    assert [(f.node, f.channels) for f in graph.frozen if "read along several dims" in f.reason] == [("conv2d", 8)]
    check_exact(graph, cascomp.Plan({"flat_weight": (0, 2, 5)}))
    small = cascomp.apply_plan(graph, cascomp.Plan.full(graph))
    assert torch.allclose(graph.run(small), graph.run(graph.gm))


# -- 3. keyword and None example inputs --------------------------------------------------------------------
def test_keyword_tensor_input_becomes_a_placeholder_in_its_position() -> None:
    graph = graph_of("keyword_inputs")
    placeholders = [n.target for n in graph.gm.graph.nodes if n.op == "placeholder"]
    assert placeholders == ["x", "bias", "scale", "mask"]
    model, inputs, kwargs = _keyword_case()
    with torch.no_grad():
        expected = model.eval()(*inputs, **kwargs)
    assert torch.allclose(graph.run(graph.gm), expected)
    small = cascomp.apply_plan(graph, cascomp.Plan.uniform(graph, 0.5))
    with torch.no_grad():  # the pruned model takes the user's keywords
        assert torch.allclose(small(inputs[0], mask=kwargs["mask"], scale=2.0), graph.run(small))
    with pytest.raises(AssertionError, match="specialized to have value 2.0"):
        small(inputs[0], mask=kwargs["mask"])


def test_analyze_places_keyword_inputs() -> None:
    graph = graph_of("keyword_inputs")
    _, inputs, kwargs = _keyword_case()
    ctx = analyze(graph.gm, (inputs[0], None, 2.0), {"mask": kwargs["mask"]})
    assert ctx.record.shapes["mask"] == (2, 5)


def test_none_positional_input_keeps_later_inputs_in_place() -> None:
    graph = graph_of("none_in_the_middle")
    assert ["x", "extra", "gate"] == [n.target for n in graph.gm.graph.nodes if n.op == "placeholder"]
    assert graph.run(graph.gm).shape == (2, 4)
    assert graph.record.shapes["gate"] == (2, 1)


def test_unknown_keyword_input_is_reported() -> None:
    with pytest.raises(TraceError, match=r"forward\(x, bias=None, scale=1.0, mask=None\).*'weights'"):
        cascomp.trace(KeywordInputsNet(), (torch.randn(2, 5, 8),), {"weights": torch.ones(2)})


# -- 4. masks over -inf --------------------------------------------------------------------------------------
def test_masked_reference_of_causal_attention_has_no_nan() -> None:
    graph = graph_of("causal_attention")
    heads = [g for g in graph.groups if g.unit == 4]
    assert [g.size for g in heads] == [4]  # q, k, v and proj's input, head by head
    plan = cascomp.Plan({g.name: (1, 3) for g in heads})
    result = MaskChannelsPass(graph.record, graph.label_keep(plan))(graph.gm)
    assert result.modified
    wheres = call_nodes(result.gm, "where")
    assert wheres and len(call_nodes(result.gm, "mul")) == len(call_nodes(graph.gm, "mul"))  # a select only
    assert all(getattr(result.gm, n.args[0].target).dtype == torch.bool for n in wheres)
    reference = graph.run(result.gm)
    assert bool(torch.isfinite(reference).all())
    small = cascomp.apply_plan(graph, plan)
    reshapes = [n for n in small.graph.nodes if n.target == "reshape"]
    assert [n.args[3] for n in reshapes[:3]] == [2, 2, 2]  # 4 heads -> 2 in the graph
    assert relative_error(graph.run(small), reference) <= 1e-5


# -- 5. grouping: the vectorised build equals the per-position reference -----------------------------------
def _reference_build_groups(ctx, ignore: tuple[str, ...] = ()):
    """`build_groups` as it was before vectorisation: one Python step per linked position."""
    roots = ctx.space.roots()
    frozen_root = int(roots[0])
    positions: dict[int, dict[tuple[str, int], list[int]]] = defaultdict(lambda: defaultdict(list))
    for name, axes in ctx.record.param_axes.items():
        for dim, vector in enumerate(axes):
            if vector is None:
                continue
            for pos, root in enumerate(roots[vector.numpy()].tolist()):
                if root != frozen_root:
                    positions[root][(name, dim)].append(pos)
    by_signature: dict[tuple, list[int]] = defaultdict(list)
    for root, owned in positions.items():
        by_signature[tuple(owned)].append(root)
    hit = lambda param: any(fnmatch.fnmatchcase(param.rpartition(".")[0], p) for p in ignore)  # noqa: E731
    ignored = {sig: r for sig, r in by_signature.items() if ignore and any(hit(p) for p, _ in sig)}
    groups, slot_roots = [], []
    for signature, comp_roots in by_signature.items():
        if signature in ignored:
            continue
        comp_roots.sort(key=lambda r: positions[r][signature[0]][0])
        owned = tuple(GroupMember(p, d, tuple(tuple(positions[r][(p, d)]) for r in comp_roots))
                      for p, d in signature)
        groups.append(ChannelGroup(len(groups), "", len(comp_roots), owned))
        slot_roots.extend(comp_roots)
    seen: Counter = Counter()
    named = []
    for group in groups:
        base = group.members[0].param.rpartition(".")[0] or group.members[0].param
        seen[base] += 1
        named.append(ChannelGroup(group.id, base if seen[base] == 1 else f"{base}#{seen[base]}", group.size,
                                  group.members))
    slot_of_root = np.zeros(roots.max() + 1 if len(roots) else 1, dtype=np.int64)
    slot_of_root[np.asarray(slot_roots, dtype=np.int64)] = np.arange(1, len(slot_roots) + 1)
    sizes = [g.size for g in named]
    offsets = tuple(sum(sizes[:i]) for i in range(len(sizes)))
    ignored_frozen = tuple(FrozenChannels("", f"ignored by pattern ({', '.join(ignore)})", len(r))
                           for r in ignored.values())
    return tuple(named), ignored_frozen, slot_of_root[roots], offsets


@pytest.mark.parametrize("name", ["resnet_bottleneck", "densenet", "shufflenet_v2", "vit", "swin", "mha",
                                  "grouped_conv", "inception", "embedding_lm"])
@pytest.mark.parametrize("ignore", [(), ("blocks.0.*", "layer1.*", "stem*", "features.1*")])
def test_build_groups_matches_the_reference(name: str, ignore: tuple[str, ...]) -> None:
    torch.manual_seed(0)
    ctx = cascomp.trace(ZOO[name].build(), example_inputs(name))._ctx
    grouping = build_groups(ctx, ignore)
    groups, ignored, slot_of_label, offsets = _reference_build_groups(ctx, ignore)
    assert grouping.groups == groups
    assert grouping.offsets == offsets
    assert grouping.frozen[len(grouping.frozen) - len(ignored):] == ignored
    assert grouping.slot_of_label.dtype == slot_of_label.dtype
    assert np.array_equal(grouping.slot_of_label, slot_of_label)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_build_groups_matches_the_reference_on_random_label_tables(data) -> None:
    """Random parameters labelled with random classes: repeated labels give channels owning several,
    and unequally many, positions of one member; ties merge classes; label 0 is frozen."""
    space, record = LabelSpace(), Record()
    space.fresh(data.draw(st.integers(1, 30)))
    label = st.integers(0, space.count - 1)
    for index in range(data.draw(st.integers(1, 5))):
        axes = [torch.tensor(data.draw(st.lists(label, min_size=1, max_size=12)))
                if data.draw(st.booleans()) else None for _ in range(data.draw(st.integers(1, 3)))]
        record.param_axes[f"layer{index % 3}.{index}.weight"] = axes
    for a, b in data.draw(st.lists(st.tuples(label, label), max_size=10)):
        space.unify(torch.tensor([a]), torch.tensor([b]))
    ctx = SimpleNamespace(space=space, record=record)
    for ignore in ((), ("layer1.*",)):
        grouping = build_groups(ctx, ignore)
        groups, ignored, slot_of_label, offsets = _reference_build_groups(ctx, ignore)
        assert (grouping.groups, grouping.offsets, grouping.frozen[len(grouping.frozen) - len(ignored):]) == (
            groups, offsets, ignored)
        assert np.array_equal(grouping.slot_of_label, slot_of_label)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)),
                                                     max_size=6)), max_size=8))
def test_incremental_roots_equal_components_of_all_ties(batches) -> None:
    """`LabelSpace.roots` merges only new ties; it must number components as one run over all ties does."""
    space, rows, cols = LabelSpace(), [], []
    for fresh, ties in batches:
        space.fresh(fresh)
        ties = [(a % space.count, b % space.count) for a, b in ties]
        if ties:
            a, b = torch.tensor(ties).T
            space.unify(a, b)
            rows += a.tolist()
            cols += b.tolist()
        graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(space.count, space.count))
        assert np.array_equal(space.roots(), connected_components(graph, directed=False)[1])


class DictOutputNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return {"a": self.head(torch.relu(self.conv(x))), "b": x.mean()}


def test_dict_outputs_are_never_pruned():
    x = torch.randn(2, 3, 8, 8)
    graph = cascomp.trace(DictOutputNet().eval(), (x,))
    assert [g.size for g in graph.groups] == [8]  # the conv's channels; the head's outputs are model outputs
    small = cascomp.apply_plan(graph, cascomp.Plan.random(graph, 0.5, seed=0))
    reference = cascomp.mask_model(graph, cascomp.Plan.random(graph, 0.5, seed=0))
    assert torch.allclose(small(x)["a"], reference(x)["a"], atol=1e-5)

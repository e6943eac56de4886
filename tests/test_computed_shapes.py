"""Shapes computed at run time and normalising ops across channels (issue 21, classes 3 and 4): the zoo
models of tests/zoo_shapes.py are analysed, pruned exactly under random plans, and exported to ONNX; sizes
read from tensors are replaced, pinned or frozen as cascomp.ir.rules_sizes says."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cascomp
from tests.exactness import check_exact, first, relative_error, zoo_graph
from tests.models import example_inputs


def _owners(graph: cascomp.Graph) -> list[set[str]]:
    """The parameters each group slices."""
    return [{member.param for member in group.members} for group in graph.groups]


def _groups_with(graph: cascomp.Graph, *params: str) -> list[set[str]]:
    return [owned for owned in _owners(graph) if set(params) <= owned]


# What each model must prune (parameters sliced together by one group) beyond a non-zero prunable share.
PRUNED_TOGETHER = {
    "pit_pooling": [("embed.weight", "cls", "pool_conv.weight", "pool_fc.weight"),  # the stage-1 stream
                    ("blocks.1.qkv.weight", "blocks.1.proj.weight")],  # heads behind a cat of class token
    "edgenext_split": [("block.convs.0.weight", "block.convs.1.weight", "block.convs.2.weight"),
                       ("block.qkv.weight", "block.temperature")],  # split parts; heads of the attention
    "poolformer_scales": [("stage1.scale1", "stage1.scale2", "stem.weight"), ("stage1.scale3", "stage1.fc1.weight")],
    "beit_bias_cat": [("blocks.0.q_bias", "blocks.0.k_bias", "blocks.0.v_bias", "blocks.0.table"),
                      ("blocks.1.q_bias", "blocks.1.v_bias", "blocks.1.qkv.weight")],
    "window_relpos": [("attention.qkv.weight", "attention.table")],
    "sknet_select": [("block.paths.0.0.weight", "block.paths.1.0.weight", "block.select.weight")],
    "channel_softmax": [("convs.0.weight", "bn.weight")],
    # the stream, a bottleneck's reducing conv with the attention's qkv conv, HaloNet's heads (q and kv)
    "attention_bottlenecks": [("stem.0.weight", "blocks.0.6.weight", "blocks.1.6.weight", "head.weight"),
                              ("blocks.0.0.weight", "blocks.0.3.qkv.weight"),
                              ("blocks.1.3.q.weight", "blocks.1.3.kv.weight")],
}
# Channels each model must keep whole, by the op named in the reason.
FROZEN_BY = {"channel_softmax": ("softmax", "F.normalize", "sum", "norm", "logsumexp")}
# Other reasons a model may give: BoTNet's position term (one matrix for every head) meets q along two dims
ALSO_FROZEN = {"attention_bottlenecks": ("linear input carries channels along several dims",)}


@pytest.mark.parametrize("name", sorted(PRUNED_TOGETHER))
def test_groups_prune_what_is_safe_and_freeze_the_rest_with_the_op(name: str) -> None:
    graph = zoo_graph(name)
    assert graph.prunable_share()["flops"] > 0.1
    for params in PRUNED_TOGETHER[name]:
        assert _groups_with(graph, *params), f"{params} not pruned together: {_owners(graph)}"
    reasons = [reason for reason, _ in graph.frozen_reasons()]
    expected = [f"{op} across channels (removing one would change the others)" for op in FROZEN_BY.get(name, ())]
    assert sorted(r for r in reasons if "across channels" in r) == sorted(expected)
    assert not [r for r in reasons if ("several dims" in r or "not understood" in r) and r not in ALSO_FROZEN.get(name, ())]


@pytest.mark.parametrize("name", sorted(PRUNED_TOGETHER))
def test_random_plans_prune_exactly_and_export(name: str, tmp_path) -> None:
    graph = zoo_graph(name)
    for seed, keep in ((0, 0.5), (1, 0.3), (2, 0.8), (3, 0.05)):
        small = check_exact(graph, cascomp.Plan.random(graph, keep, seed))
    result = cascomp.export_onnx(small, example_inputs(name), tmp_path / f"{name}.onnx")
    assert result.max_abs_error < 1e-4
    other = torch.randn(3, *example_inputs(name)[0].shape[1:])  # another batch size: sizes stay computed
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: other.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(onnx_out, small(other).numpy(), rtol=1e-3, atol=1e-4)


# -- the three fates of a size read off a tensor (cascomp.ir.rules_sizes) ----------------------------------
class ComputedSizes(nn.Module):
    """Channel slices bounded by a size read off another tensor (replaced), a reshape to a whole shape read
    off a tensor (written out), a scale computed from the channel count and a tensor built with a computed
    channel count (both pinned: they compute what the masked reference computes)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 6, 3, padding=1)
        self.mix = nn.Conv2d(14, 8, 1)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.a(x), self.b(x)
        both = torch.cat((a, b), dim=1)
        y = self.mix(torch.cat((both[:, : a.shape[1]], both[:, a.shape[1]:]), dim=1)) * a.shape[1] ** -0.5
        y = y.flatten(2).reshape(y.shape)  # a whole shape read off a tensor
        count = y.new_ones(y.shape[0], y.shape[1]).sum(1, keepdim=True)  # the channel count, computed
        return self.head(y.mean((2, 3)) / count)


class BatchTimesChannels(nn.Module):
    """A number computed from the batch and the channel count: it cannot be pinned, so the channels freeze."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a(x)
        return self.b(a / (a.shape[0] * a.shape[1])).mean((2, 3))


def test_sizes_read_off_channels_are_replaced_or_pinned() -> None:
    torch.manual_seed(0)
    graph = cascomp.trace(ComputedSizes().eval(), torch.randn(2, 3, 8, 8))
    assert _groups_with(graph, "a.weight", "mix.weight") and _groups_with(graph, "b.weight", "mix.weight")
    assert graph.frozen == ()
    for seed in range(4):
        small = check_exact(graph, cascomp.Plan.random(graph, 0.5, seed))
    assert "new_ones(getitem" in small.code.replace(" ", "")  # the batch stays computed, the channels pinned
    assert small(torch.randn(5, 3, 8, 8)).shape == (5, 4)


def test_a_size_read_off_the_batch_and_the_channels_freezes_them() -> None:
    torch.manual_seed(0)
    graph = cascomp.trace(BatchTimesChannels().eval(), torch.randn(2, 3, 8, 8))
    assert [g.name for g in graph.groups] == []
    assert any("uses a size read off a dim that carries channels" in reason for reason, _ in graph.frozen_reasons())


class NormOverBranches(nn.Module):
    """F.normalize and a max over a stacked branch dim (fine: tied across branches), and over channels."""

    def __init__(self) -> None:
        super().__init__()
        self.left, self.right = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 3, padding=1)
        self.out = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack((self.left(x), self.right(x)), dim=1)
        y = F.normalize(stacked, dim=1).amax(1)
        return self.out(y)


def test_normalising_over_a_branch_dim_ties_the_branches() -> None:
    torch.manual_seed(0)
    graph = cascomp.trace(NormOverBranches().eval(), torch.randn(2, 3, 8, 8))
    assert _groups_with(graph, "left.weight", "right.weight", "out.weight")
    for seed in range(3):
        check_exact(graph, cascomp.Plan.random(graph, 0.5, seed))
    full = cascomp.apply_plan(graph, cascomp.Plan.full(graph))
    assert relative_error(first(graph.run(full)), first(graph.run(graph.gm))) <= 1e-6


# -- a float attention mask with a size per head (T5's position bias) ---------------------------------------
class BiasedAttention(nn.Module):
    """Heads split from one projection; a per-head bias on the scores passed to SDPA as its float mask: a
    parameter viewed per head, or looked up from a table by an embedding (T5's relative position bias)."""

    def __init__(self, dim: int = 16, heads: int = 4, tokens: int = 8, lookup: bool = False) -> None:
        super().__init__()
        self.heads, self.lookup = heads, lookup
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        if lookup:
            self.table = nn.Embedding(2 * tokens, heads)
            positions = torch.arange(tokens)
            self.register_buffer("relative", positions[None, :] - positions[:, None] + tokens, persistent=False)
        else:
            self.bias = nn.Parameter(torch.randn(heads, tokens, tokens) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        bias = self.table(self.relative).permute(2, 0, 1) if self.lookup else self.bias
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0))
        return self.out(out.transpose(1, 2).reshape(B, N, C))


@pytest.mark.parametrize("lookup", [False, True])
def test_a_per_head_attention_mask_is_pruned_with_its_heads(lookup: bool) -> None:
    torch.manual_seed(0)
    model = BiasedAttention(lookup=lookup).eval()
    graph = cascomp.trace(model, (torch.randn(2, 8, 16),))
    source = "table.weight" if lookup else "bias"  # the mask's heads: the table's columns, the bias's rows
    assert _groups_with(graph, "qkv.weight", "out.weight", source)
    for seed, keep in ((0, 0.5), (1, 0.3)):  # the mask once kept every head: the pruned model did not run
        check_exact(graph, cascomp.Plan.random(graph, keep, seed))

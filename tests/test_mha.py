"""nn.MultiheadAttention is traced through its decomposition (cascomp.ir.decompose): it computes what the
module computes, its heads prune as units, and the pruned model is plain torch."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cascomp
from cascomp.ir.decompose import MultiheadAttentionParts, ObservedCall
from cascomp.ir.trace import trace_module
from tests.models import ZOO, example_inputs
from tests.exactness import check_exact, traced_graphs

EMBED, HEADS, BATCH, TARGET, SOURCE = 16, 4, 3, 5, 7


class Call(nn.Module):
    """Calls `attention` with fixed flags; masks are inputs, so they reach the traced graph as inputs."""

    def __init__(self, attention: nn.MultiheadAttention, **flags) -> None:
        super().__init__()
        self.attention = attention
        self.flags = flags

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None):
        return self.attention(query, key, value, key_padding_mask=key_padding_mask, attn_mask=attn_mask,
                              **self.flags)


# (module options, call flags, key padding mask kind, attn_mask kind, unbatched)
CASES = {
    "batch_first": ({"batch_first": True}, {"need_weights": False}, None, None, False),
    "sequence_first": ({}, {"need_weights": False}, None, None, False),
    "weights_averaged": ({"batch_first": True}, {}, None, None, False),
    "weights_per_head": ({}, {"average_attn_weights": False}, None, None, False),
    "padding_bool": ({"batch_first": True}, {"need_weights": False}, "bool", None, False),
    "padding_float_with_weights": ({}, {}, "float", "2d_float", False),
    "mask_2d_bool": ({"batch_first": True}, {"need_weights": False}, None, "2d_bool", False),
    "mask_2d_and_padding_bool": ({}, {"need_weights": False}, "bool", "2d_bool", False),
    "mask_3d_float": ({"batch_first": True}, {"need_weights": False}, None, "3d_float", False),
    "mask_3d_bool_weights": ({}, {"average_attn_weights": False}, "bool", "3d_bool", False),
    "causal": ({"batch_first": True}, {"need_weights": False, "is_causal": True}, None, "causal", False),
    "causal_with_weights": ({}, {"is_causal": True}, None, "causal", False),
    "kdim_vdim": ({"batch_first": True, "kdim": 12, "vdim": 10}, {}, "bool", "2d_bool", False),
    "no_bias": ({"bias": False}, {"need_weights": False}, None, "2d_float", False),
    "dropout_in_eval": ({"dropout": 0.2, "batch_first": True}, {}, "bool", "causal", False),
    "unbatched": ({}, {}, "bool", "3d_float", True),
}


def make_case(name: str):
    torch.manual_seed(0)
    options, flags, padding, mask, unbatched = CASES[name]
    attention = nn.MultiheadAttention(EMBED, HEADS, **options).eval()
    with torch.no_grad():  # torch zeroes the biases at init; random ones check they land in the right slices
        for param_name, param in attention.named_parameters():
            if "bias" in param_name:
                param.normal_(std=0.1)
    source = TARGET if mask == "causal" else SOURCE
    shapes = ((TARGET, EMBED), (source, options.get("kdim", EMBED)), (source, options.get("vdim", EMBED)))
    batch_first = options.get("batch_first", False)
    inputs = tuple(torch.randn(_layout(*shape, unbatched, batch_first)) for shape in shapes)
    masks = {}
    if padding:
        hidden = torch.zeros((source,) if unbatched else (BATCH, source), dtype=torch.bool)
        hidden[..., -2:] = True
        float_mask = torch.zeros(hidden.shape).masked_fill(hidden, -1e4)
        masks["key_padding_mask"] = hidden if padding == "bool" else float_mask
    if mask:
        masks["attn_mask"] = _attn_mask(mask, source, 1 if unbatched else BATCH)
    return Call(attention, **flags).eval(), inputs, masks


def _layout(length: int, width: int, unbatched: bool, batch_first: bool) -> tuple[int, ...]:
    if unbatched:
        return (length, width)
    return (BATCH, length, width) if batch_first else (length, BATCH, width)


def _attn_mask(kind: str, source: int, batch: int) -> torch.Tensor:
    if kind == "causal":
        return torch.triu(torch.ones(TARGET, source, dtype=torch.bool), 1)
    shape = (TARGET, source) if kind.startswith("2d") else (batch * HEADS, TARGET, source)
    if kind.endswith("float"):
        return torch.randn(shape)
    hidden = torch.rand(shape) < 0.3
    hidden[..., 0] = False  # every query sees a key: fully masked rows are NaN in torch as well
    return hidden


def assert_same_outputs(actual, expected) -> None:
    torch.testing.assert_close(actual[0], expected[0], rtol=1e-5, atol=1e-5)
    if expected[1] is None:
        assert actual[1] is None
    else:
        torch.testing.assert_close(actual[1], expected[1], rtol=1e-5, atol=1e-5)


def observed(model: Call, inputs, masks) -> ObservedCall:
    flags = {"need_weights": True, "average_attn_weights": True, "is_causal": False, **model.flags}
    attn_mask, padding = masks.get("attn_mask"), masks.get("key_padding_mask")
    kind = lambda m: None if m is None else ("bool" if m.dtype == torch.bool else "float")  # noqa: E731
    return ObservedCall(batched=inputs[0].dim() == 3, attn_mask=kind(attn_mask),
                        attn_mask_dims=0 if attn_mask is None else attn_mask.dim(),
                        key_padding_mask=kind(padding), **flags)


# -- (a) the decomposition computes what the module computes -------------------------------------------------
@pytest.mark.parametrize("name", sorted(CASES))
def test_parts_equal_the_module(name: str) -> None:
    model, inputs, masks = make_case(name)
    parts = MultiheadAttentionParts(model.attention, observed(model, inputs, masks)).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about mixed mask dtypes and the is_causal hint
        assert_same_outputs(parts(*inputs, **masks, **model.flags), model(*inputs, **masks))


@pytest.mark.parametrize("name", sorted(CASES))
def test_traced_module_is_decomposed_and_equal(name: str) -> None:
    model, inputs, masks = make_case(name)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = trace_module(model, inputs, masks)
        assert_same_outputs(gm(*inputs, **masks), model(*inputs, **masks))
    kinds = {type(m) for m in gm.modules()}
    assert nn.MultiheadAttention not in kinds and not any(k.__module__.startswith("cascomp") for k in kinds)
    calls = [str(n.target) for n in gm.graph.nodes if n.op == "call_module"]
    assert calls[:3] == ["attention.q_proj", "attention.k_proj", "attention.v_proj"]


class OutputOnly(Call):
    def forward(self, query, key, value):
        output, _ = self.attention(query, key, value)  # need_weights=True by default, weights ignored
        return output


def test_ignored_weights_are_erased_and_sdpa_remains() -> None:
    model, inputs, _ = make_case("weights_averaged")
    names = [getattr(n.target, "__name__", str(n.target))
             for n in trace_module(OutputOnly(model.attention), inputs).graph.nodes]
    assert "scaled_dot_product_attention" in names
    assert "softmax" not in names and "mean" not in names


# -- (b) heads are groups now --------------------------------------------------------------------------------
def test_mha_zoo_model_prunes_whole_heads() -> None:
    torch.manual_seed(0)
    graph = cascomp.trace(ZOO["mha"].build(), example_inputs("mha"))
    assert not any("MultiheadAttention" in f.reason or f.node.startswith("attn") for f in graph.frozen)
    heads = graph.group("attn.q_proj")
    assert (heads.size, heads.unit) == (4, 8)  # 4 heads of head_dim 8
    projections = {f"attn.{name}.weight" for name in ("q_proj", "k_proj", "v_proj", "out_proj")}
    assert {m.param for m in heads.members} >= projections


class MaskOnly(Call):
    def forward(self, query, key, value, attn_mask):
        return self.attention(query, key, value, attn_mask=attn_mask, **self.flags)


@pytest.mark.parametrize("name", ["weights_averaged", "weights_per_head", "mask_3d_float"])
def test_read_weights_and_per_head_masks_keep_the_heads(name: str) -> None:
    model, inputs, masks = make_case(name)
    if "attn_mask" in masks:
        model, inputs = MaskOnly(model.attention, **model.flags), (*inputs, masks["attn_mask"])
    graph = cascomp.trace(model, inputs)
    assert not any(g.name.startswith("attention.q_proj") for g in graph.groups)


# -- (c) pruned == masked, cost exact ------------------------------------------------------------------------
class CrossAttentionModel(nn.Module):
    """Sequence-first cross attention with kdim/vdim, bool padding and attention masks, ignored weights.
    With dropout the probabilities are written out, so masked scores meet the channel masks."""

    def __init__(self, dropout: float) -> None:
        super().__init__()
        self.query_in, self.context_in = nn.Linear(8, 16), nn.Linear(8, 12)
        self.attn = nn.MultiheadAttention(16, 4, kdim=12, vdim=12, dropout=dropout)
        self.head = nn.Linear(16, 3)

    def forward(self, x, context, padding, mask):
        query, context = self.query_in(x).transpose(0, 1), self.context_in(context).transpose(0, 1)
        out, _ = self.attn(query, context, context, key_padding_mask=padding, attn_mask=mask)
        return self.head(out.relu()).mean(0)


def _cross_attention_case(dropout: float) -> tuple:
    padding = torch.zeros(2, 6, dtype=torch.bool)
    padding[:, -1] = True
    mask = torch.rand(5, 6) < 0.3
    mask[:, 0] = False
    inputs = (torch.randn(2, 5, 8), torch.randn(2, 6, 8), padding, mask)
    return CrossAttentionModel(dropout), inputs  # built after its inputs, as the seeded draws expect


graph_of = traced_graphs({"mha": lambda: (ZOO["mha"].build(), example_inputs("mha")),
                          "cross": lambda: _cross_attention_case(0.0),
                          "cross_dropout": lambda: _cross_attention_case(0.1)})


@pytest.mark.parametrize("name", ["mha", "cross", "cross_dropout"])
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keep=st.floats(0.05, 1.0), seed=st.integers(0, 2**16))
def test_pruned_equals_masked_and_cost_is_exact(name: str, keep: float, seed: int) -> None:
    graph = graph_of(name)
    assert graph.group("attn.q_proj").size == 4  # the heads are a group: there is something to prune
    check_exact(graph, cascomp.Plan.random(graph, keep, seed))


def test_removing_heads_resizes_the_head_split() -> None:
    graph = graph_of("mha")
    small = cascomp.apply_plan(graph, cascomp.Plan({"attn.q_proj": (1, 3)}))
    splits = [n.args[2] for n in small.graph.nodes if n.op == "call_method" and n.target == "unflatten"]
    assert splits == [(2, 8)] * 3
    assert small.attn.q_proj.weight.shape == (16, 32) and small.attn.out_proj.weight.shape == (32, 16)
    scales = {n.kwargs["scale"] for n in small.graph.nodes if "scaled_dot_product" in str(n.target)}
    assert scales == {8 ** -0.5}  # the original head_dim's scale


# -- (d) plain torch, (f) ONNX -------------------------------------------------------------------------------
def test_pruned_model_loads_without_cascomp(tmp_path) -> None:
    graph = graph_of("mha")
    small = cascomp.apply_plan(graph, cascomp.Plan.uniform(graph, 0.5))
    x = graph.example_inputs[0]
    torch.save(small, tmp_path / "small.pt")
    torch.save({"x": x, "y": small(x)}, tmp_path / "io.pt")
    code = ("import sys, torch; sys.modules['cascomp'] = None; "
            "m = torch.load('small.pt', weights_only=False); io = torch.load('io.pt'); "
            "assert torch.allclose(m(io['x']), io['y'], atol=1e-6); print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_pruned_model_exports_to_onnx(tmp_path) -> None:
    graph = graph_of("mha")
    small = cascomp.apply_plan(graph, cascomp.Plan.uniform(graph, 0.5))
    result = cascomp.export_onnx(small, graph.example_inputs, tmp_path / "small.onnx")
    assert result.max_abs_error <= 1e-4


# -- (e) options without a decomposition stay whole ----------------------------------------------------------
@pytest.mark.parametrize("option", [{"add_bias_kv": True}, {"add_zero_attn": True}])
def test_unsupported_option_keeps_the_module_frozen(option) -> None:
    torch.manual_seed(0)
    model = Call(nn.MultiheadAttention(EMBED, HEADS, batch_first=True, **option), need_weights=False).eval()
    x = torch.randn(BATCH, TARGET, EMBED)
    graph = cascomp.trace(nn.Sequential(nn.Linear(EMBED, EMBED), _SelfAttention(model)), (x,))
    assert isinstance(graph.gm.get_submodule("1.call.attention"), nn.MultiheadAttention)
    reasons = " ".join(f.reason for f in graph.frozen)
    assert f"{next(iter(option))}=True" in reasons and "kept whole" in reasons
    assert graph.groups == ()  # the Linear feeding it is frozen with it


class _SelfAttention(nn.Module):
    def __init__(self, call: Call) -> None:
        super().__init__()
        self.call = call

    def forward(self, x):
        return self.call(x, x, x)[0]


class UntraceableBlock(nn.Module):
    """Data-dependent control flow makes fx keep this block whole; the attention inside must stay torch's."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(EMBED, HEADS, batch_first=True)

    def forward(self, x):
        if x.sum() > 0:
            x = x * 2
        return self.attn(x, x, x, need_weights=False)[0]


def test_attention_inside_a_module_kept_whole_is_the_original() -> None:
    x = torch.randn(BATCH, TARGET, EMBED)
    gm = trace_module(nn.Sequential(nn.Linear(EMBED, EMBED), UntraceableBlock()), (x,))
    assert isinstance(gm.get_submodule("1.attn"), nn.MultiheadAttention)
    assert not any(type(m).__module__.startswith("cascomp") for m in gm.modules())


# -- compress end to end: the trained weights reach the decomposed projections -------------------------------
def test_compress_with_l1_on_the_mha_model(tmp_path) -> None:
    generator = np.random.default_rng(0)
    x = generator.normal(size=(96, 10, 32)).astype(np.float32)
    np.savez(tmp_path / "tokens.npz", x=x, y=(x[:, :, 0].mean(1) > 0).astype(np.int64))
    data = cascomp.load_data(f"tensors:{tmp_path / 'tokens.npz'}", batch_size=32, seed=0)
    torch.manual_seed(0)
    config = cascomp.CompressConfig(method="l1", targets=("flops=0.7",), search_epochs=0, finetune_epochs=0,
                                    latency_batch_sizes=(1,))
    result = cascomp.compress(ZOO["mha"].build(), config, data=data, progress=False)
    assert result.report["targets"]["flops"]["within_1pct"]
    assert result.model.attn.q_proj.weight.shape[0] < 32  # whole heads went


class TwoKindsOfCall(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(EMBED, HEADS, batch_first=True)
        self.head = nn.Linear(EMBED, 2)

    def forward(self, x):
        x = self.head(x).repeat(1, 1, EMBED // 2)
        first = self.attn(x, x, x, need_weights=False)[0]
        return self.attn(first, first, first, attn_mask=torch.zeros((x.shape[1], x.shape[1])))[0]


def test_an_instance_called_in_two_ways_stays_whole() -> None:
    graph = cascomp.trace(TwoKindsOfCall().eval(), (torch.randn(BATCH, TARGET, EMBED),))
    assert isinstance(graph.gm.get_submodule("attn"), nn.MultiheadAttention)
    assert any("kept whole (its calls on the example inputs differed" in f.reason for f in graph.frozen)

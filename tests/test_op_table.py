"""The op table (cascomp.ir.op_table): one entry per op, read by the analysis and every pass.

Checked: every listed name and class resolves to its entry, subclasses resolve as their torch base, the op
sets the analysis and the passes kept before the table (written out below as they were) are exactly what the
table's fields give, and registering a model's own module class is enough for the analysis and the rewrite.
"""

from __future__ import annotations

import ast
import inspect
import operator

import pytest
import torch
import torch.fx as fx
import torch.nn as nn

import cascomp
from cascomp.errors import CascompWarning
from cascomp.ir import op_table
from cascomp.ir.op_table import TABLE, function_op, module_op, op_name
from cascomp.ir.ops import UNKNOWN, Kind, Op, OpTable, ParamRule, ShapeArgs
from tests.exactness import check_exact

# -- the sets kept before the table, as they were -----------------------------------------------------------
POINTWISE = {
    "relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "hardtanh", "leaky_relu",
    "elu", "selu", "celu", "mish", "softplus", "softsign", "dropout", "dropout1d", "dropout2d", "dropout3d",
    "alpha_dropout", "feature_alpha_dropout", "contiguous", "clone", "detach", "float", "half", "double",
    "bfloat16", "to", "type", "type_as", "neg", "abs", "exp", "log", "sqrt", "rsqrt", "square", "reciprocal",
    "sign", "erf", "sin", "cos", "clamp", "clip", "clamp_min", "clamp_max", "logsigmoid", "tanhshrink",
    "identity", "floor", "ceil", "round", "pos", "invert", "not_", "logical_not", "isnan",
    "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like",
}
ELEMENTWISE = {
    "add", "sub", "mul", "truediv", "div", "floordiv", "mod", "pow", "maximum", "minimum", "where",
    "rsub", "iadd", "isub", "imul", "itruediv", "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_",
    "masked_fill", "lerp", "addcmul", "fmod", "remainder",
}
MOVEMENT = {
    "view", "reshape", "permute", "transpose", "flatten", "unflatten", "squeeze", "unsqueeze", "expand",
    "expand_as", "t", "pixel_shuffle", "pixel_unshuffle", "roll", "flip", "movedim", "moveaxis", "swapaxes",
    "swapdims", "narrow", "chunk", "split", "unbind", "repeat", "tile", "select", "view_as", "reshape_as",
    "unfold",  # Tensor.unfold's sliding windows; not F.unfold (im2col), nor ATen's
}
REDUCTIONS = {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "norm", "logsumexp", "prod", "any", "all"}
SPATIAL = {
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
    "adaptive_max_pool2d", "adaptive_max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "max_pool1d",
    "max_pool2d", "max_pool3d", "interpolate", "upsample", "upsample_nearest", "upsample_bilinear",
}
CREATION = {
    "new_zeros", "new_ones", "new_full", "new_empty", "new_tensor", "zeros", "ones", "full", "empty", "arange",
    "linspace", "logspace", "eye", "rand", "randn", "randint", "tensor", "as_tensor", "scalar_tensor",
}
SIZE_QUERIES = {"size", "dim", "numel", "getattr", "shape", "len"}  # and "__len__", which op_name never gave
CONVOLUTIONS = {"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}
STATISTICS = {"mean", "sum", "std", "var", "var_mean", "std_mean", "amax", "amin", "norm", "vector_norm",
              "logsumexp", "prod"}
NORMALISATIONS = {"batch_norm", "instance_norm", "weight_norm"}
ATEN_KNOWN = POINTWISE | ELEMENTWISE | (MOVEMENT - {"unfold"}) | (REDUCTIONS - {"norm"}) | SPATIAL | CONVOLUTIONS | CREATION | {
    "pad", "cat", "concat", "stack", "softmax", "log_softmax", "linear", "matmul", "bmm",
    "scaled_dot_product_attention", "batch_norm", "instance_norm", "layer_norm", "group_norm", "addmm", "embedding"}
ZERO_SAFE_FUNCTIONS = (POINTWISE - {"log", "rsqrt", "reciprocal"}) | SPATIAL | {
    "add", "sub", "mul", "rsub", "iadd", "isub", "imul", "maximum", "minimum", "truediv", "div", "itruediv",
    "pad", "flatten", "view", "reshape", "squeeze", "unsqueeze", "permute", "transpose", "getitem", "unfold",
    "mean", "sum", "amax", "amin"}
CHAIN_FUNCTIONS = POINTWISE | {"add", "sub", "mul", "truediv", "div", "rsub", "iadd", "isub", "imul", "itruediv",
                               "maximum", "minimum"}
MERGES = {"add", "sub", "mul", "iadd", "isub", "imul"}
ZERO_PRESERVING_FUNCTIONS = {"relu", "relu6", "gelu", "silu", "hardswish", "leaky_relu", "dropout", "mish", "elu"}

POINTWISE_MODULES = {
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh,
    nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Softplus, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
    nn.Dropout3d, nn.AlphaDropout, nn.Identity, nn.Softsign, nn.Tanhshrink, nn.LogSigmoid,
}
SPATIAL_MODULES = {
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d, nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
}
CONVS = {nn.Conv1d, nn.Conv2d, nn.Conv3d}
CONV_TRANSPOSES = {nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d}
BATCH_NORMS = {nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm}
INSTANCE_NORMS = {nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d}
ANALYSED_MODULES = (POINTWISE_MODULES | SPATIAL_MODULES | CONVS | CONV_TRANSPOSES | BATCH_NORMS | INSTANCE_NORMS | {
    nn.Softmax, nn.LogSoftmax, nn.PixelShuffle, nn.Flatten, nn.Unflatten, nn.PixelUnshuffle, nn.ChannelShuffle,
    nn.Linear, nn.LayerNorm, nn.GroupNorm, nn.PReLU, nn.Embedding, nn.MultiheadAttention})
ZERO_SAFE_MODULES = CONVS | CONV_TRANSPOSES | BATCH_NORMS | POINTWISE_MODULES | SPATIAL_MODULES | {nn.Linear, nn.Flatten}
ZERO_PRESERVING_MODULES = {nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.Dropout, nn.Identity,
                           nn.Mish, nn.ELU}
RESIZED_BASES = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm,
                 nn.Embedding, nn.PReLU)  # PruneChannelsPass._resize_module's isinstance chain


def _names_where(test) -> set[str]:
    return {name for name, op in TABLE.functions.items() if test(op)}


def _classes_where(test) -> set[type]:
    return {cls for cls, op in TABLE.modules.items() if test(op)}


def _method_node(name: str) -> fx.Node:
    graph = fx.Graph()
    return graph.call_method(name, (graph.placeholder("x"),))


# -- lookup ---------------------------------------------------------------------------------------------------
def test_every_listed_name_is_what_op_name_calls_its_nodes() -> None:
    for name, op in TABLE.functions.items():
        assert op_name(_method_node(name)) == name, name
        assert function_op(name) is op
    assert op_name(_method_node("relu_")) == "relu" and op_name(_method_node("add_")) == "add"
    graph = fx.Graph()
    x = graph.placeholder("x")
    assert op_name(graph.call_function(torch.nn.functional.relu, (x,))) == "relu"
    assert op_name(graph.call_function(operator.iadd, (x, x))) == "iadd"
    assert op_name(graph.call_function(torch.ops.aten.relu_.default, (x,))) == "relu"
    assert op_name(graph.call_function(torch.ops.aten.split_with_sizes.default, (x, [1]))) == "split"
    assert op_name(graph.call_function(torch.ops.aten.layer_norm.default, (x, [1]))) == "layer_norm"
    assert op_name(graph.call_function(torch.ops.aten.group_norm.default, (x, 1))) == "group_norm"
    native = graph.call_function(torch.ops.aten.native_group_norm.default, (x, None, None, 1, 1, 1, 1, 1e-5))
    assert op_name(native) == "aten.native_group_norm"  # decomposed: its group count is argument 6
    assert function_op("aten.native_group_norm") is UNKNOWN and function_op("no_such_op") is UNKNOWN


def test_every_op_is_listed_once() -> None:
    """A name or class written twice in the table's dict literals would silently take the later entry."""
    tree = ast.parse(inspect.getsource(op_table))
    for table in ("FUNCTIONS", "MODULES"):
        value = next(node.value for node in tree.body if isinstance(node, ast.AnnAssign) and node.target.id == table)
        listed = []
        for key, item in zip(value.keys, value.values):
            if key is None:  # **_names("a b", op) or **_classes((nn.A, nn.B), op)
                group = item.args[0]
                listed += group.value.split() if isinstance(group, ast.Constant) else [ast.unparse(e) for e in group.elts]
            else:
                listed.append(ast.unparse(key))
        assert len(listed) == len(set(listed)), sorted(n for n in listed if listed.count(n) > 1)
        assert len(listed) == len(getattr(op_table, table))


def test_every_listed_class_resolves_to_its_entry() -> None:
    for cls, op in TABLE.modules.items():
        assert TABLE.module(cls) is op and TABLE.registered(cls)
        assert op.rule is not None, cls


def test_subclasses_resolve_as_their_nearest_listed_base() -> None:
    class Norm(nn.BatchNorm2d):
        pass

    class Deeper(Norm):
        pass

    class Plain(nn.Module):
        pass

    assert TABLE.module(Norm) is TABLE.module(nn.BatchNorm2d) and not TABLE.registered(Norm)
    assert TABLE.module(Deeper) is TABLE.module(nn.BatchNorm2d)
    assert TABLE.module(nn.UpsamplingNearest2d) is TABLE.modules[nn.UpsamplingNearest2d]
    assert TABLE.module(nn.modules.linear.NonDynamicallyQuantizableLinear) is TABLE.module(nn.Linear)
    assert TABLE.module(Plain) is UNKNOWN and TABLE.module(nn.Bilinear) is UNKNOWN
    table = TABLE.copy()
    table.module(Norm)  # resolved once and remembered: registering forgets it
    table.register_module(Norm, table.module(nn.ReLU))
    assert table.module(Deeper) is table.module(nn.ReLU) and TABLE.module(Deeper) is TABLE.module(nn.BatchNorm2d)
    with pytest.raises(TypeError):
        table.register_module(len, UNKNOWN)


# -- the sets kept before the table ----------------------------------------------------------------------------
def test_function_families_are_the_sets_the_rules_kept() -> None:
    kinds = {
        Kind.POINTWISE: POINTWISE, Kind.ELEMENTWISE: ELEMENTWISE, Kind.CREATION: CREATION, Kind.SIZE: SIZE_QUERIES,
        Kind.SPATIAL: SPATIAL | {"pad"}, Kind.CONCAT: {"cat", "concat", "concatenate", "stack"},
        Kind.MOVEMENT: MOVEMENT | {"tensor_split", "aten.slice"}, Kind.REDUCTION: REDUCTIONS | {"var_mean", "std_mean", "vector_norm"},
    }
    for kind, names in kinds.items():
        assert _names_where(lambda op, kind=kind: op.kind is kind) == names, kind
    assert _names_where(lambda op: op.kind in (Kind.CONV, Kind.CONV_TRANSPOSE)) == CONVOLUTIONS
    assert _names_where(lambda op: op.aten) == ATEN_KNOWN | {"aten.slice"}
    parameters = {
        ParamRule.KEEP: POINTWISE, ParamRule.MOVE: MOVEMENT | {"getitem", "aten.slice"}, ParamRule.COMBINE: ELEMENTWISE,
        ParamRule.STATISTIC: STATISTICS, ParamRule.NORMALISE: NORMALISATIONS,
    }
    for rule, names in parameters.items():
        assert _names_where(lambda op, rule=rule: op.on_parameters is rule) == names, rule
    assert _names_where(lambda op: op.weight_from_parameters) == CONVOLUTIONS | {"linear"}


def test_function_flags_are_the_sets_the_depth_analysis_and_the_passes_kept() -> None:
    assert _names_where(lambda op: op.zero_safe) == ZERO_SAFE_FUNCTIONS | {"aten.slice"}
    assert _names_where(lambda op: op.divides) == {"truediv", "div", "itruediv"}
    assert _names_where(lambda op: op.chain) == CHAIN_FUNCTIONS
    assert _names_where(lambda op: op.merge) == MERGES
    assert {name for name in MERGES if function_op(name).in_place} == {"iadd", "isub", "imul"}
    assert _names_where(lambda op: op.zero_preserving) == ZERO_PRESERVING_FUNCTIONS
    assert _names_where(lambda op: not op.needs_gated_input) == {"batch_norm"}
    shape_args = {
        ShapeArgs.SHAPE: {"view", "reshape", "expand"}, ShapeArgs.UNFLATTEN: {"unflatten"},
        ShapeArgs.SECTIONS: {"split", "chunk"}, ShapeArgs.BOUNDS: {"narrow", "select"}, ShapeArgs.INDEX: {"getitem"},
        ShapeArgs.NORMALIZED_SHAPE: {"layer_norm"}, ShapeArgs.NUM_GROUPS: {"group_norm"},
        ShapeArgs.GROUPS: CONVOLUTIONS,
    }
    for kind, names in shape_args.items():
        assert _names_where(lambda op, kind=kind: op.shape_args is kind) == names, kind


def test_module_flags_are_the_sets_the_rules_and_the_passes_kept() -> None:
    assert set(TABLE.modules) == ANALYSED_MODULES
    assert _classes_where(lambda op: op.kind is Kind.POINTWISE) == POINTWISE_MODULES
    assert _classes_where(lambda op: op.zero_safe) == ZERO_SAFE_MODULES
    assert _classes_where(lambda op: op.chain) == BATCH_NORMS | POINTWISE_MODULES
    assert _classes_where(lambda op: op.zero_preserving) == ZERO_PRESERVING_MODULES
    assert _classes_where(lambda op: not op.needs_gated_input) == BATCH_NORMS
    assert _classes_where(lambda op: op.dense is not None) == CONVS | CONV_TRANSPOSES | {nn.Linear}
    assert _classes_where(lambda op: op.resize is not None) == {
        cls for cls in ANALYSED_MODULES if issubclass(cls, RESIZED_BASES)}
    assert _classes_where(lambda op: op.kind is Kind.LAYER_NORM) == {nn.LayerNorm}
    assert _classes_where(lambda op: op.kind is Kind.GROUP_NORM) == {nn.GroupNorm}
    assert [module_op(nn.Linear(2, 2)).channel_dim, module_op(nn.Conv2d(2, 2, 1)).channel_dim] == [-1, 1]
    assert not module_op(nn.Conv2d(4, 4, 1, groups=2)).dense(nn.Conv2d(4, 4, 1, groups=2))


# -- adding an op is one entry ------------------------------------------------------------------------------------
class Swish(nn.Module):
    """A model's own activation: x * sigmoid(x), elementwise on every channel."""

    def forward(self, x):
        return x * torch.sigmoid(x)


class WithSwish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.act, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), Swish(), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.conv2(self.act(self.conv1(x)))


def test_registering_a_module_class_makes_it_a_pointwise_leaf(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model, x = WithSwish().eval(), torch.randn(2, 3, 8, 8)
    traced_through = cascomp.trace(model, x)
    assert not any(node.op == "call_module" and node.target == "act" for node in traced_through.gm.graph.nodes)
    table = TABLE.copy()
    table.register_module(Swish, table.module(nn.SiLU))
    monkeypatch.setattr(op_table, "TABLE", table)
    graph = cascomp.trace(model, x)
    assert [node.target for node in graph.gm.graph.nodes if node.op == "call_module"] == ["conv1", "act", "conv2"]
    assert [group.size for group in graph.groups] == [8]
    assert graph.cost().flops == traced_through.cost().flops
    small = check_exact(graph, cascomp.Plan({graph.groups[0].name: (0, 3, 5)}))
    assert small.conv1.out_channels == small.conv2.in_channels == 3


def test_a_module_listed_without_a_rule_freezes_its_channels(monkeypatch: pytest.MonkeyPatch) -> None:
    table = TABLE.copy()
    table.register_module(Swish, Op(Kind.UNKNOWN))  # listed, so kept whole, but with no rule
    monkeypatch.setattr(op_table, "TABLE", table)
    with pytest.warns(CascompWarning, match="module 'act' \\(Swish\\) is not understood"):
        graph = cascomp.trace(WithSwish().eval(), torch.randn(2, 3, 8, 8))
    assert not graph.groups and any("'act'" in frozen.reason for frozen in graph.frozen)


def test_a_table_copy_is_independent() -> None:
    table = OpTable({}, {})
    table.register_function("swish", function_op("silu"))
    assert table.function("swish") is function_op("silu") and function_op("swish") is UNKNOWN

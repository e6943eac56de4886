"""The op table: every op the analysis and the passes know, each listed once (fields: cascomp.ir.ops).

Functions and tensor methods are listed by the name `op_name` gives a node, modules by class (a subclass
resolves as its nearest listed base). Adding an op is one entry here, or one `register_function` /
`register_module` call for a model's own op.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.fx as fx
import torch.nn as nn

from cascomp.ir import rules_modules as module_rules
from cascomp.ir import rules_ops as rules
from cascomp.ir.ops import UNKNOWN, Kind, Op, OpTable, ParamRule, ShapeArgs, Widths


# -- rewrites: a module's size attributes after pruning (PruneChannelsPass cases 2-3) ------------------------
def _resize_conv(module: nn.Module, widths: Widths) -> None:
    in_channels, out_channels = widths.input(1), widths.output(1)
    if module.groups == module.in_channels and module.groups > 1:  # case 3: depthwise
        module.groups = in_channels
    assert not (in_channels % module.groups or out_channels % module.groups), "unequal group widths"
    module.in_channels, module.out_channels = in_channels, out_channels


def _resize_linear(module: nn.Module, widths: Widths) -> None:
    module.in_features, module.out_features = widths.input(-1), widths.output(-1)


def _resize_num_features(module: nn.Module, widths: Widths) -> None:
    module.num_features = widths.input(1)


def _resize_layer_norm(module: nn.Module, widths: Widths) -> None:
    module.normalized_shape = tuple(module.normalized_shape[:-1]) + (widths.input(-1),)


def _resize_group_norm(module: nn.Module, widths: Widths) -> None:
    channels = widths.input(1)
    if module.num_groups == module.num_channels:  # case 3: one channel per group
        module.num_groups = channels
    assert channels % module.num_groups == 0, "unequal group widths"
    module.num_channels = channels


def _resize_embedding(module: nn.Module, widths: Widths) -> None:
    module.embedding_dim = widths.output(-1)


def _resize_prelu(module: nn.Module, widths: Widths) -> None:
    module.num_parameters = module.weight.numel()


def _ungrouped(module: nn.Module) -> bool:
    return module.groups == 1


def _always(module: nn.Module) -> bool:
    return True


# -- functions and tensor methods -----------------------------------------------------------------------------
def _names(names: str, op: Op) -> dict[str, Op]:
    return dict.fromkeys(names.split(), op)


_POINTWISE = Op(Kind.POINTWISE, rules.pointwise, ParamRule.KEEP, zero_safe=True, chain=True)
_ELEMENTWISE = Op(Kind.ELEMENTWISE, rules.elementwise, ParamRule.COMBINE)
_ARITHMETIC = replace(_ELEMENTWISE, zero_safe=True, chain=True)
_MOVEMENT = Op(Kind.MOVEMENT, rules.movement, ParamRule.MOVE)
_REDUCTION = Op(Kind.REDUCTION, rules.reduction)
_STATISTIC = replace(_REDUCTION, on_parameters=ParamRule.STATISTIC)
_CONV = Op(Kind.CONV, rules.conv, weight_from_parameters=True, shape_args=ShapeArgs.GROUPS)

FUNCTIONS: dict[str, Op] = {
    **_names("new_zeros new_ones new_full new_empty new_tensor zeros ones full empty arange linspace logspace eye "
             "rand randn randint tensor as_tensor scalar_tensor", Op(Kind.CREATION, rules.creation)),
    **_names("size dim numel getattr shape len", Op(Kind.SIZE, aten=False)),
    **_names("relu relu6 gelu silu hardswish leaky_relu dropout mish elu", replace(_POINTWISE, zero_preserving=True)),
    **_names("sigmoid tanh hardsigmoid hardtanh selu celu softplus softsign dropout1d dropout2d dropout3d "
             "alpha_dropout feature_alpha_dropout contiguous clone detach float half double bfloat16 to type type_as "
             "neg abs exp sqrt square sign erf sin cos clamp clip clamp_min clamp_max logsigmoid tanhshrink identity "
             "floor ceil round pos invert not_ logical_not isnan", _POINTWISE),
    # shaped like their input: position for position, so they carry its labels (BEiT's zeros_like(v_bias))
    **_names("zeros_like ones_like empty_like full_like rand_like randn_like", _POINTWISE),
    **_names("log rsqrt reciprocal", replace(_POINTWISE, zero_safe=False)),  # 0 -> inf: the reference holds NaN
    **_names("add sub mul", replace(_ARITHMETIC, merge=True)),
    **_names("iadd isub imul", replace(_ARITHMETIC, merge=True, in_place=True)),
    **_names("rsub maximum minimum", _ARITHMETIC),
    **_names("truediv div", replace(_ARITHMETIC, divides=True)),
    "itruediv": replace(_ARITHMETIC, divides=True, in_place=True),
    **_names("floordiv mod pow where eq ne lt le gt ge and_ or_ masked_fill lerp addcmul fmod remainder",
             _ELEMENTWISE),
    **_names("view reshape", replace(_MOVEMENT, shape_args=ShapeArgs.SHAPE, zero_safe=True)),
    "expand": replace(_MOVEMENT, shape_args=ShapeArgs.SHAPE),
    **_names("flatten squeeze unsqueeze permute transpose", replace(_MOVEMENT, zero_safe=True)),
    "unflatten": replace(_MOVEMENT, shape_args=ShapeArgs.UNFLATTEN),
    **_names("split chunk", replace(_MOVEMENT, shape_args=ShapeArgs.SECTIONS)),
    **_names("narrow select", replace(_MOVEMENT, shape_args=ShapeArgs.BOUNDS)),
    **_names("expand_as t pixel_unshuffle flip movedim moveaxis swapaxes swapdims unbind repeat tile view_as "
             "reshape_as", _MOVEMENT),
    "pixel_shuffle": replace(_MOVEMENT, rule=rules.pixel_shuffle),
    "roll": replace(_MOVEMENT, rule=rules.roll),
    "unfold": replace(_MOVEMENT, rule=rules.unfold, zero_safe=True, aten=False),
    "tensor_split": Op(Kind.MOVEMENT, rules.tensor_split, aten=False),
    "aten.slice": Op(Kind.MOVEMENT, rules.aten_slice, ParamRule.MOVE, zero_safe=True),
    "getitem": Op(Kind.INDEX, rules.getitem, ParamRule.MOVE, shape_args=ShapeArgs.INDEX, aten=False,
                  zero_safe=True),
    **_names("cat concat stack", Op(Kind.CONCAT, rules.cat)),
    "concatenate": Op(Kind.CONCAT, rules.cat, aten=False),
    **_names("mean sum amax amin", replace(_STATISTIC, zero_safe=True)),
    **_names("std var logsumexp prod", _STATISTIC),
    **_names("max min any all", _REDUCTION),
    "norm": replace(_STATISTIC, aten=False),  # ATen's norm has its dim as argument 2
    **_names("var_mean std_mean vector_norm", Op(Kind.REDUCTION, on_parameters=ParamRule.STATISTIC, aten=False)),
    **_names("softmax log_softmax", Op(Kind.SOFTMAX, rules.softmax)),
    "normalize": Op(Kind.SOFTMAX, rules.normalize, aten=False),
    **_names("adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d "
             "adaptive_max_pool3d avg_pool1d avg_pool2d avg_pool3d max_pool1d max_pool2d max_pool3d interpolate "
             "upsample upsample_nearest upsample_bilinear pad", Op(Kind.SPATIAL, rules.spatial, zero_safe=True)),
    **_names("conv1d conv2d conv3d", _CONV),
    **_names("conv_transpose1d conv_transpose2d conv_transpose3d", replace(_CONV, kind=Kind.CONV_TRANSPOSE)),
    "linear": Op(Kind.LINEAR, rules.linear, weight_from_parameters=True),
    **_names("matmul bmm", Op(Kind.MATMUL, rules.matmul)),
    "addmm": Op(Kind.MATMUL, rules.addmm),
    "embedding": Op(Kind.EMBEDDING, rules.embedding),
    "scaled_dot_product_attention": Op(Kind.ATTENTION, rules.attention),
    # ATen's layer_norm and group_norm (what torch.export keeps) read what F.layer_norm and F.group_norm read,
    # plus a trailing cudnn_enable(d) that MaskChannelsPass drops (native_group_norm, decomposed, is not listed)
    "layer_norm": Op(Kind.LAYER_NORM, rules.layer_norm, shape_args=ShapeArgs.NORMALIZED_SHAPE),
    "group_norm": Op(Kind.GROUP_NORM, rules.group_norm, shape_args=ShapeArgs.NUM_GROUPS),
    "batch_norm": Op(Kind.BATCH_NORM, rules.batch_norm, ParamRule.NORMALISE, needs_gated_input=False),
    "instance_norm": Op(Kind.INSTANCE_NORM, rules.batch_norm, ParamRule.NORMALISE),
    # torch._weight_norm(v, g, dim): followed on parameters only
    "weight_norm": Op(Kind.WEIGHT_NORM, on_parameters=ParamRule.NORMALISE, aten=False),
}

# ATen ops (a torch.export .pt2's graph) whose schema reads, at every position the rules look at, what the torch
# function of another name reads. Any other ATen op whose entry is not `aten` keeps its qualified name
# ("aten.slice"), so it has no entry and freezes the channels it touches.
ATEN_ALIASES = {
    "split_with_sizes": "split", "constant_pad_nd": "pad", "max_pool2d_with_indices": "max_pool2d",
    "upsample_nearest1d": "interpolate", "upsample_nearest2d": "interpolate", "upsample_nearest3d": "interpolate",
    "upsample_linear1d": "interpolate", "upsample_bilinear2d": "interpolate", "upsample_bicubic2d": "interpolate",
    "upsample_trilinear3d": "interpolate",
}


# -- modules ----------------------------------------------------------------------------------------------------
def _classes(classes: tuple[type, ...], op: Op) -> dict[type, Op]:
    return dict.fromkeys(classes, op)


_POINTWISE_MODULE = Op(Kind.POINTWISE, module_rules.pointwise, zero_safe=True, chain=True)
_CONV_MODULE = Op(Kind.CONV, module_rules.conv, resize=_resize_conv, channel_dim=1, dense=_ungrouped,
                  zero_safe=True)
_BATCH_NORM_MODULE = Op(Kind.BATCH_NORM, module_rules.per_channel_norm, resize=_resize_num_features,
                        channel_dim=1, zero_safe=True, chain=True, needs_gated_input=False)

MODULES: dict[type, Op] = {
    **_classes((nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.Dropout, nn.Identity, nn.Mish,
                nn.ELU), replace(_POINTWISE_MODULE, zero_preserving=True)),
    **_classes((nn.Sigmoid, nn.Tanh, nn.Hardsigmoid, nn.Hardtanh, nn.SELU, nn.CELU, nn.Softplus, nn.Dropout1d,
                nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Softsign, nn.Tanhshrink, nn.LogSigmoid),
               _POINTWISE_MODULE),
    **_classes((nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample, nn.UpsamplingNearest2d,
                nn.UpsamplingBilinear2d), Op(Kind.SPATIAL, module_rules.spatial, zero_safe=True)),
    **_classes((nn.Softmax, nn.LogSoftmax), Op(Kind.SOFTMAX, module_rules.softmax)),
    nn.PixelShuffle: Op(Kind.MOVEMENT, module_rules.pixel_shuffle),
    nn.Flatten: Op(Kind.MOVEMENT, module_rules.movement, zero_safe=True),
    **_classes((nn.Unflatten, nn.PixelUnshuffle, nn.ChannelShuffle), Op(Kind.MOVEMENT, module_rules.movement)),
    **_classes((nn.Conv1d, nn.Conv2d, nn.Conv3d), _CONV_MODULE),
    **_classes((nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d),
               replace(_CONV_MODULE, kind=Kind.CONV_TRANSPOSE, rule=module_rules.conv_transpose)),
    nn.Linear: Op(Kind.LINEAR, module_rules.linear, resize=_resize_linear, channel_dim=-1, dense=_always,
                  zero_safe=True),
    **_classes((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm), _BATCH_NORM_MODULE),
    **_classes((nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d),
               Op(Kind.INSTANCE_NORM, module_rules.per_channel_norm, resize=_resize_num_features, channel_dim=1)),
    nn.LayerNorm: Op(Kind.LAYER_NORM, module_rules.layer_norm, resize=_resize_layer_norm, channel_dim=-1),
    nn.GroupNorm: Op(Kind.GROUP_NORM, module_rules.group_norm, resize=_resize_group_norm, channel_dim=1),
    nn.PReLU: Op(Kind.PRELU, module_rules.prelu, resize=_resize_prelu, channel_dim=1),
    nn.Embedding: Op(Kind.EMBEDDING, module_rules.embedding, resize=_resize_embedding, channel_dim=-1),
    nn.MultiheadAttention: Op(Kind.ATTENTION, module_rules.attention),
}

TABLE = OpTable(FUNCTIONS, MODULES)


# -- lookup -------------------------------------------------------------------------------------------------------
def function_op(name: str) -> Op:
    return TABLE.function(name)


def module_op(module: nn.Module) -> Op:
    return TABLE.module(type(module))


def register_function(name: str, op: Op) -> None:
    """List a function or tensor method (under the name `op_name` gives its nodes), or replace its entry."""
    TABLE.register_function(name, op)


def register_module(cls: type[nn.Module], op: Op) -> None:
    """List a module class, or replace its entry: `register_module(Swish, TABLE.module(nn.SiLU))` makes a
    model's own activation pointwise, and the tracer keeps it whole (cascomp.ir.ops, lookup case 3)."""
    TABLE.register_module(cls, op)


def op_of(node: fx.Node, modules: dict[str, nn.Module]) -> Op:
    """The entry of a call node (`modules`: the graph module's submodules by path); UNKNOWN for others."""
    if node.op == "call_module":
        return TABLE.module(type(modules[str(node.target)]))
    if node.op in ("call_function", "call_method"):
        return TABLE.function(op_name(node))
    return UNKNOWN


def reads_sizes_only(node: fx.Node) -> bool:
    """A node that reads its tensor arguments' shapes, not their values (`x.size(1)`, `x.shape`)."""
    return TABLE.function(op_name(node)).kind is Kind.SIZE


_IN_PLACE_FORMS = (Kind.POINTWISE, Kind.ELEMENTWISE)  # relu_ and add_ read as relu and add


def _in_place_base(name: str) -> str:
    if name.endswith("_") and TABLE.function(name[:-1]).kind in _IN_PLACE_FORMS:
        return name[:-1]
    return name


def _aten_name(target: torch._ops.OpOverload) -> str:
    name = _in_place_base(target.overloadpacket.__name__.lstrip("_"))  # aten._softmax is softmax, same arguments
    if target.namespace != "aten":
        return f"{target.namespace}.{name}"
    if name in ATEN_ALIASES:
        return ATEN_ALIASES[name]
    if name in ("min", "max") and target._overloadname == "other":  # elementwise, as torch.minimum/maximum
        return f"{name}imum"
    return name if TABLE.function(name).aten else f"aten.{name}"


def op_name(node: fx.Node) -> str:
    """What a call node is called in the table: a torch function's or tensor method's name without leading
    underscores or an in-place trailing one, or the name of the torch function an ATen op stands for."""
    if node.op == "call_method":
        name = str(node.target)
    elif isinstance(node.target, torch._ops.OpOverload):
        return _aten_name(node.target)
    else:
        name = getattr(node.target, "__name__", str(node.target))
    name = _in_place_base(name.lstrip("_"))
    return "max" if name == "with_dim" else name

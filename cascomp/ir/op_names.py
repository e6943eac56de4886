"""What a graph node is called, for the rule tables: a torch function's or tensor method's name, or the
name of the torch function an ATen op (a torch.export .pt2's graph) stands for; and the op families the
rules know by name.
"""

from __future__ import annotations

import torch
import torch.fx as fx

POINTWISE = {
    "relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "hardtanh", "leaky_relu",
    "elu", "selu", "celu", "mish", "softplus", "softsign", "dropout", "dropout1d", "dropout2d", "dropout3d",
    "alpha_dropout", "feature_alpha_dropout", "contiguous", "clone", "detach", "float", "half", "double",
    "bfloat16", "to", "type", "type_as", "neg", "abs", "exp", "log", "sqrt", "rsqrt", "square", "reciprocal",
    "sign", "erf", "sin", "cos", "clamp", "clip", "clamp_min", "clamp_max", "logsigmoid", "tanhshrink",
    "identity", "floor", "ceil", "round", "pos", "invert", "not_", "logical_not", "isnan",
    # shaped like their input: position for position, so they carry its labels (BEiT's zeros_like(v_bias))
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
    "swapdims", "narrow", "chunk", "split", "unbind", "repeat", "tile", "select", "view_as",
    "reshape_as",
}
REDUCTIONS = {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "norm", "logsumexp", "prod", "any", "all"}
SPATIAL = {
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
    "adaptive_max_pool2d", "adaptive_max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "max_pool1d",
    "max_pool2d", "max_pool3d", "interpolate", "upsample", "upsample_nearest", "upsample_bilinear",
}
# New tensors: they read their tensor argument's dtype and device only, and hold no channel.
CREATION = {
    "new_zeros", "new_ones", "new_full", "new_empty", "new_tensor", "zeros", "ones", "full", "empty", "arange",
    "linspace", "logspace", "eye", "rand", "randn", "randint", "tensor", "as_tensor", "scalar_tensor",
}
SIZE_QUERIES = {"size", "dim", "numel", "getattr", "shape", "__len__", "len"}
CONVOLUTIONS = {"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}


# ATen ops (a torch.export .pt2's graph) whose schema reads, at every position the rules look at, what the
# torch function of the same name reads: they share its rule. Any other ATen op keeps its qualified name
# ("aten.slice") and so freezes the channels it touches. layer_norm and group_norm are left out: the passes
# that mask their statistics recognise the torch functions only. norm is left out: its dim is argument 2.
ATEN_ALIASES = {
    "split_with_sizes": "split", "constant_pad_nd": "pad", "max_pool2d_with_indices": "max_pool2d",
    "upsample_nearest1d": "interpolate", "upsample_nearest2d": "interpolate", "upsample_nearest3d": "interpolate",
    "upsample_linear1d": "interpolate", "upsample_bilinear2d": "interpolate", "upsample_bicubic2d": "interpolate",
    "upsample_trilinear3d": "interpolate",
}


def _aten_name(target: torch._ops.OpOverload) -> str:
    name = target.overloadpacket.__name__.lstrip("_")  # aten._softmax is softmax with the same arguments
    if name.endswith("_") and name[:-1] in POINTWISE | ELEMENTWISE:  # in place (relu_), as for torch's
        name = name[:-1]
    if target.namespace != "aten":
        return f"{target.namespace}.{name}"
    if name in ATEN_ALIASES:
        return ATEN_ALIASES[name]
    known = POINTWISE | ELEMENTWISE | MOVEMENT | (REDUCTIONS - {"norm"}) | SPATIAL | CONVOLUTIONS | CREATION | {
        "pad", "cat", "concat", "stack", "softmax", "log_softmax", "linear", "matmul", "bmm",
        "scaled_dot_product_attention", "batch_norm", "instance_norm"}
    return name if name in known else f"aten.{name}"


def op_name(node: fx.Node) -> str:
    if node.op == "call_method":
        name = str(node.target)
    elif isinstance(node.target, torch._ops.OpOverload):
        return _aten_name(node.target)
    else:
        name = getattr(node.target, "__name__", str(node.target))
    name = name.lstrip("_")
    if name.endswith("_") and name[:-1] in POINTWISE | ELEMENTWISE:
        name = name[:-1]
    return {"with_dim": "max"}.get(name, name)


"""Which rule each graph node gets: one table for functions and tensor methods, one for module types.

An op absent from both tables freezes the channels it touches (reported with its name) instead of failing.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn as nn
from torch.nn.utils import parametrize

from cascomp.ir import rules_layers as layers
from cascomp.ir import rules_params as params
from cascomp.ir import rules_sizes as sizes
from cascomp.ir import rules_tensor as tensor
from cascomp.ir.context import Context
from cascomp.ir.decompose import kept_whole_reason
from cascomp.ir.labels import Derived, ParamRef, along, frozen_like, place
from cascomp.ir.op_names import (CONVOLUTIONS, CREATION, ELEMENTWISE, MOVEMENT, POINTWISE, REDUCTIONS, SPATIAL,
                                 op_name)
from cascomp.ir.rules_tensor import align


def run_function(ctx: Context, node: fx.Node, args, kwargs, largs, lkwargs, out):
    """Rule for call_function and call_method nodes."""
    name = op_name(node)
    first, lfirst = (args[0], largs[0]) if args else (None, None)
    if not _has_tensor(out):  # a size, a shape or a number computed from them
        return sizes.size_labels(name, args, kwargs, largs, lkwargs, out)
    operands = params.tensor_operands(node, args, kwargs, largs, lkwargs)
    pairs = [(value, labels) for _, value, labels in operands]
    if params.claims(ctx, name, operands):  # parameters among themselves: weight standardisation, gains
        if name == "getitem" and isinstance(lfirst, (tuple, list)):
            return lfirst[args[1]]
        apply = (lambda t: t[args[1]]) if name == "getitem" else _reapply(node, args, kwargs)
        result = params.run(ctx, name, apply, args, kwargs, largs, lkwargs, out)
        return result if result is not None else _unknown(ctx, f"function {name!r}", _all(largs, lkwargs), out)
    if any(isinstance(labels, Derived) for _, labels in pairs):  # a tensor computed from parameters meets activations
        if name in ELEMENTWISE:
            return params.meet(ctx, pairs, out)
        if name not in CONVOLUTIONS and name != "linear":
            return _unknown(ctx, f"function {name!r} of a tensor computed from parameters", _all(largs, lkwargs), out)
    if name in CREATION:  # a constant (its sizes, if computed, are the business of rules_sizes)
        return frozen_like(out)
    if name in POINTWISE or (name == "softmax" or name == "log_softmax"):
        if name in ("softmax", "log_softmax") and isinstance(lfirst, torch.Tensor):
            return tensor.softmax(ctx, lfirst, _arg(args, kwargs, 1, "dim", -1), name)
        if isinstance(first, torch.Tensor):
            return lfirst if lfirst is not None else frozen_like(out)
    if name in ELEMENTWISE:
        operands = list(zip(args, largs)) + [(kwargs[k], lkwargs[k]) for k in kwargs]
        return tensor.elementwise(ctx, operands, out)
    if name == "getitem":
        if isinstance(first, torch.Tensor):
            if isinstance(lfirst, ParamRef):
                return tensor.movement(ctx, first, lfirst, lambda t: t[args[1]], out)
            return tensor.index(ctx, first, lfirst, args[1], out)
        return lfirst[args[1]] if isinstance(lfirst, (tuple, list)) else None
    if name == "pixel_shuffle" and isinstance(first, torch.Tensor):
        factor = _arg(args, kwargs, 1, "upscale_factor", 1)
        return _pixel_shuffle(ctx, first, lfirst, factor, _reapply(node, args, kwargs), out)
    if name in ("roll", "tensor_split") and isinstance(lfirst, torch.Tensor):
        dims = _arg(args, kwargs, 2, "dims", None) if name == "roll" else _arg(args, kwargs, 2, "dim", 0)
        dims = range(first.dim()) if dims is None else ((dims,) if isinstance(dims, int) else dims)
        if any(align(lfirst, first.dim()).shape[d] > 1 for d in dims):
            ctx.freeze(lfirst, f"{name} along a channel dim")
    if name in MOVEMENT and isinstance(first, torch.Tensor):
        return tensor.movement(ctx, first, lfirst, _reapply(node, args, kwargs), out)
    if name in ("cat", "concat", "concatenate", "stack"):
        return _cat(ctx, name, args, kwargs, largs, out)
    if name in REDUCTIONS and isinstance(first, torch.Tensor) and isinstance(lfirst, torch.Tensor):
        if any(isinstance(a, torch.Tensor) for a in args[1:]):  # torch.max(a, b): elementwise
            return tensor.elementwise(ctx, list(zip(args, largs)), out)
        # read as torch reads them: norm(x, p, dim, keepdim), var(x, dim, unbiased, keepdim)
        dims, keepdim = params._reduction_dims(name, args, kwargs, first.dim())
        return tensor.reduce(ctx, lfirst, dims, keepdim, out, name)
    if name == "normalize" and isinstance(lfirst, torch.Tensor):  # F.normalize(x, p, dim): x / norm along dim
        return tensor.softmax(ctx, lfirst, _arg(args, kwargs, 2, "dim", 1), "F.normalize")
    if name in SPATIAL or name == "pad":
        return _spatial(ctx, name, args, kwargs, lfirst, out)
    return _layer_function(ctx, name, args, kwargs, largs, lkwargs, out)


def _layer_function(ctx, name, args, kwargs, largs, lkwargs, out):
    """Functional layers. fx records what the caller wrote: parameters passed by keyword
    (`F.layer_norm(x, s, weight=w)`) are in `lkwargs`, so every operand is read through `_operand`."""
    weight, bias = _operand(largs, lkwargs, 1, "weight"), _operand(largs, lkwargs, 2, "bias")
    bias_name = bias.name if isinstance(bias, ParamRef) else bias if isinstance(bias, Derived) else None
    weight_value = _arg(args, kwargs, 1, "weight", None)
    if name in CONVOLUTIONS and (_whole(weight, weight_value) or isinstance(weight, Derived)):
        transposed = name.startswith("conv_transpose")  # weight (C_in, C_out/G, ...) vs (C_out, C_in/G, ...)
        w = layers.Weights(_weights(weight), bias_name, out_dim=int(transposed), in_dim=int(not transposed))
        groups = int(_arg(args, kwargs, 6, "groups", 1))  # 7th argument of both conv and conv_transpose
        result = layers.conv(ctx, w, args[0], largs[0], out, groups, transposed=transposed)
        return _computed_bias(ctx, result, bias, out, 1)
    if name == "linear" and (_whole(weight, weight_value) or isinstance(weight, Derived)):
        result = layers.linear(ctx, layers.Weights(_weights(weight), bias_name), args[0], largs[0], out)
        return _computed_bias(ctx, result, bias, out, out.dim() - 1)
    if name == "matmul" or name == "bmm":
        return layers.matmul(ctx, args[0], largs[0], args[1], largs[1], out)
    if name == "scaled_dot_product_attention":
        return layers.attention(ctx, args[0], largs[0], args[1], largs[1], args[2], largs[2], out)
    if name == "layer_norm":  # F.layer_norm(x, normalized_shape, weight, bias, eps)
        shape = _arg(args, kwargs, 1, "normalized_shape", None)
        normalized = 1 if isinstance(shape, int) else len(shape)
        return layers.layer_norm(ctx, _norm_params(largs, lkwargs), args[0], largs[0], normalized)
    if name == "group_norm":  # F.group_norm(x, num_groups, weight, bias, eps)
        groups = int(_arg(args, kwargs, 1, "num_groups", 1))
        return layers.group_norm(ctx, _norm_params(largs, lkwargs), args[0], largs[0], groups)
    if name in ("batch_norm", "instance_norm"):  # F.*(x, mean, var, weight, bias), aten.*(x, weight, bias, mean, var)
        operands = [_operand(largs, lkwargs, position, keyword) for position, keyword in
                    enumerate(("running_mean", "running_var", "weight", "bias"), start=1)]
        params = tuple(_param_name(labels) for labels in operands)
        if all(param is not None or labels is None for param, labels in zip(params, operands)):
            return layers.per_channel(ctx, params, args[0], largs[0], 1, name.replace("_", " "))
    if (name in CONVOLUTIONS or name == "linear") and isinstance(out, torch.Tensor) and out.dim() > 1:
        return _unfollowed_layer(ctx, name, _all(largs, lkwargs), out)
    return _unknown(ctx, f"function {name!r}", list(largs) + list(lkwargs.values()), out)


def _unfollowed_layer(ctx: Context, name: str, operands: list, out: torch.Tensor):
    """A conv or linear layer whose weight is computed in a way the analysis does not follow: its output
    channels are frozen with that reason, so a model made of such layers never prunes nothing in silence."""
    source = ctx.node.args[1] if len(ctx.node.args) > 1 else ctx.node.kwargs.get("weight")
    what = f"function {name!r} with its weight from {getattr(source, 'name', 'an input')!r}"
    result = _unknown(ctx, what, operands, out)
    dim = 1 if name in CONVOLUTIONS else out.dim() - 1
    ctx.freeze(place(ctx.space.fresh(out.shape[dim]), out.dim(), dim), f"{what} is not understood by the channel analysis")
    return result


def _computed_bias(ctx: Context, labels: torch.Tensor, bias, out: torch.Tensor, dim: int) -> torch.Tensor:
    """A bias computed in forward from parameters and constants (`torch.cat((q_bias, zeros, v_bias))`, see
    rules_tensor.cat_vectors) is added to the output channels: its positions tie to them (a constant bias freezes
    them)."""
    if isinstance(bias, torch.Tensor):
        ctx.space.unify(along(labels, dim, out.shape[dim]), bias.reshape(-1))
    return labels


def _weights(labels: ParamRef | Derived) -> str | Derived:
    """A layer's weight: a parameter's name, or the tensor computed from parameters (a standardised weight)."""
    return labels.name if isinstance(labels, ParamRef) else labels


def _all(largs, lkwargs) -> list:
    return list(largs) + list(lkwargs.values())


def _operand(largs, lkwargs, position: int, keyword: str):
    """Labels of an op's argument, passed positionally or by keyword (None when absent)."""
    return largs[position] if len(largs) > position else lkwargs.get(keyword)


def _norm_params(largs, lkwargs) -> tuple[str | None, str | None]:
    """Weight and bias of `F.layer_norm` / `F.group_norm` (3rd and 4th arguments, usually keywords)."""
    weight, bias = _operand(largs, lkwargs, 2, "weight"), _operand(largs, lkwargs, 3, "bias")
    return _param_name(weight), _param_name(bias)


def _whole(labels, value) -> bool:
    """A weight read straight from a parameter, every dim in place (not a slice or a reshaped view)."""
    return (isinstance(labels, ParamRef) and isinstance(value, torch.Tensor)
            and labels.dims == tuple(range(value.dim())))


def _param_name(labels) -> str | None:
    return labels.name if isinstance(labels, ParamRef) and labels.dims == (0,) else None


def _cat(ctx, name, args, kwargs, largs, out):
    tensors, ltensors = args[0], largs[0]
    dim = _arg(args, kwargs, 1, "dim", 0)
    if name == "stack":
        dim = dim % out.dim()
        tensors = [t.unsqueeze(dim) for t in tensors]
        ltensors = [lt.unsqueeze(dim) if isinstance(lt, torch.Tensor) else lt for lt in ltensors]
        if any(isinstance(lt, ParamRef) for lt in ltensors):
            return _unknown(ctx, "stack of parameters", largs, out)
    kinds = [tensor.vector_piece(ctx, lt) for lt in ltensors]
    if out.dim() == 1 and None not in kinds and any(kinds):  # parameter vectors and constants
        return tensor.cat_vectors(ctx, list(tensors), list(ltensors))
    return tensor.cat(ctx, list(tensors), list(ltensors), dim, out)


def _spatial(ctx, name, args, kwargs, lfirst, out):
    if isinstance(out, tuple):  # max pooling with indices
        return tuple(tensor.channelwise(ctx, lfirst, o) for o in out)
    if name == "pad":
        pads = _arg(args, kwargs, 1, "pad", ())
        keep = tuple(range(args[0].dim() - len(pads) // 2))
        return tensor.channelwise(ctx, lfirst, out, keep)
    return tensor.channelwise(ctx, lfirst, out)


def _pixel_shuffle(ctx, x, lx, factor: int, apply, out):
    """Pixel shuffle folds factor^2 channels into one output channel: such a block moves as a unit."""
    if isinstance(lx, torch.Tensor) and lx.dim() > 1 and lx.shape[1] > 1:
        blocks = tensor.channel_vector(ctx, lx, x, 1, "pixel shuffle").reshape(-1, factor * factor)
        ctx.space.unify(blocks, blocks[:, :1])
        lx = place(blocks[:, :1].expand_as(blocks).reshape(-1), x.dim(), 1)
    return tensor.movement(ctx, x, lx, apply, out)


def _reapply(node: fx.Node, args, kwargs):
    """The node's own op, to be applied to a label tensor instead of its first argument. A view is applied
    as a reshape: labels are broadcast (stride 0), so a view the value allows may not fit their strides, and
    where both work they place every element alike."""
    if op_name(node) == "view" and len(args) > 1 and not isinstance(args[1], torch.dtype):
        return lambda t: t.reshape(*args[1:], **{"shape" if k == "size" else k: v for k, v in kwargs.items()})
    if node.op == "call_method":
        return lambda t: getattr(t, node.target)(*args[1:], **kwargs)
    return lambda t: node.target(t, *args[1:], **kwargs)


def _unknown(ctx: Context, what: str, largs, out, module: nn.Module | None = None):
    ctx.freeze(list(largs) if isinstance(largs, (tuple, list)) else largs, f"{what} is not understood by the channel analysis")
    # An op with a weight matrix or kernel does multiply-adds the cost model cannot count: say so, not 0.
    if module is not None:
        weighted = any(p.dim() >= 2 for p in module.parameters())
    else:
        weighted = any((isinstance(labels, ParamRef) and len(labels.dims) >= 2)
                       or (isinstance(labels, Derived) and len(labels.shape) >= 2) for labels in _flat(largs))
    if weighted:
        ctx.record.uncounted.append((what, ctx.node.name if ctx.node is not None else ""))
    return ctx.frozen_output(out)


def _flat(value) -> list:
    if isinstance(value, (tuple, list)):
        return [item for part in value for item in _flat(part)]
    if isinstance(value, dict):
        return _flat(list(value.values()))
    return [value]


def _arg(args, kwargs, position: int, name: str, default):
    if name in kwargs:
        return kwargs[name]
    return args[position] if len(args) > position else default


def _has_tensor(value) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (tuple, list)):
        return any(_has_tensor(v) for v in value)
    return False


# -- modules ------------------------------------------------------------------------------------------------
POINTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh,
    nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Softplus, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
    nn.Dropout3d, nn.AlphaDropout, nn.Identity, nn.Softsign, nn.Tanhshrink, nn.LogSigmoid,
)
SPATIAL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d, nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
)
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TRANSPOSES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def run_module(ctx: Context, node: fx.Node, args, kwargs, largs, lkwargs, out):
    """Rule for call_module nodes."""
    module = ctx.module(node.target)
    path = str(node.target)
    x, lx = (args[0], largs[0]) if args else (None, None)
    names = lambda *attrs: tuple(f"{path}.{a}" if getattr(module, a, None) is not None else None for a in attrs)  # noqa: E731
    if not type(module).forward.__module__.startswith("torch."):
        # a subclass of a torch layer with a forward of its own reaches here only when torch.fx could not trace
        # that forward (it was kept whole): its layer type says nothing of what it computes
        return _unknown(ctx, f"module {path!r} ({type(module).__name__}, kept whole: torch.fx cannot trace its "
                        "forward)", list(largs) + list(lkwargs.values()), out, module)
    if isinstance(module, POINTWISE_MODULES):
        return lx
    if any(isinstance(labels, Derived) for labels in _all(largs, lkwargs)):
        return _unknown(ctx, f"module {path!r} ({type(module).__name__}) on a tensor computed from parameters",
                        _all(largs, lkwargs), out, module)
    if parametrize.is_parametrized(module):  # kept whole: its weight is computed, not a parameter
        return _unknown(ctx, f"module {path!r} (parametrized {type(module).__name__})", _all(largs, lkwargs), out,
                        module)
    if isinstance(module, (nn.Softmax, nn.LogSoftmax)):
        return tensor.softmax(ctx, lx, module.dim if module.dim is not None else -1, type(module).__name__)
    if isinstance(module, SPATIAL_MODULES):
        return _spatial(ctx, "pool", args, kwargs, lx, out)
    if isinstance(module, nn.PixelShuffle):
        return _pixel_shuffle(ctx, x, lx, module.upscale_factor, module, out)
    if isinstance(module, (nn.Flatten, nn.Unflatten, nn.PixelUnshuffle, nn.ChannelShuffle)):
        return tensor.movement(ctx, x, lx, module, out)
    if isinstance(module, CONVS):
        w = layers.Weights(f"{path}.weight", names("bias")[0])
        return layers.conv(ctx, w, x, lx, out, module.groups)
    if isinstance(module, CONV_TRANSPOSES):
        w = layers.Weights(f"{path}.weight", names("bias")[0], out_dim=1, in_dim=0)
        return layers.conv(ctx, w, x, lx, out, module.groups, transposed=True)
    if isinstance(module, nn.Linear):
        return layers.linear(ctx, layers.Weights(f"{path}.weight", names("bias")[0]), x, lx, out)
    if isinstance(module, BATCH_NORMS + INSTANCE_NORMS):
        params = names("weight", "bias", "running_mean", "running_var")
        return layers.per_channel(ctx, params, x, lx, 1, type(module).__name__)
    if isinstance(module, nn.LayerNorm):
        return layers.layer_norm(ctx, names("weight", "bias"), x, lx, len(module.normalized_shape))
    if isinstance(module, nn.GroupNorm):
        return layers.group_norm(ctx, names("weight", "bias"), x, lx, module.num_groups)
    if isinstance(module, nn.PReLU):
        return layers.per_channel(ctx, names("weight"), x, lx, 1, "PReLU")
    if isinstance(module, nn.Embedding):
        return layers.embedding(ctx, f"{path}.weight", out)
    if isinstance(module, nn.MultiheadAttention):  # only instances the tracer could not decompose get here
        why = kept_whole_reason(module) or ("its calls on the example inputs differed in mask dtype or input rank, "
                                            "or it sits inside a submodule fx cannot trace")
        return _unknown(ctx, f"nn.MultiheadAttention {path!r} kept whole ({why}; write the block with q/k/v "
                        "Linear layers and F.scaled_dot_product_attention to prune it)",
                        list(largs) + list(lkwargs.values()), out, module)
    return _unknown(ctx, f"module {path!r} ({type(module).__name__})", list(largs) + list(lkwargs.values()), out,
                    module)


__all__ = ["op_name", "run_function", "run_module", "operator"]

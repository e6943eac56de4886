"""The channel rules of the op table's function and tensor-method entries (modules: rules_modules): each reads
one call (`cascomp.ir.ops.Call`) the way torch reads it, and hands its tensors and labels to rules_tensor /
rules_layers.

`cascomp.ir.op_table` says which op gets which rule, `cascomp.ir.dispatch` what comes before any rule. A rule
whose op is called in a way it does not follow (a pointwise function of a number) freezes the channels the op
touches, with the op's name, as an op without a rule does.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from cascomp.ir import rules_layers as layers
from cascomp.ir import rules_params as params
from cascomp.ir import rules_tensor as tensor
from cascomp.ir.context import Context
from cascomp.ir.labels import Derived, ParamRef, along, frozen_like, place
from cascomp.ir.ops import Call
from cascomp.ir.rules_tensor import align


# -- functions and tensor methods ---------------------------------------------------------------------------
def unknown_function(call: Call):
    return unknown(call.ctx, f"function {call.name!r}", call.operand_labels, call.out)


def creation(call: Call):
    return frozen_like(call.out)  # a constant (its sizes, if computed, are the business of rules_sizes)


def pointwise(call: Call):
    if isinstance(call.first, torch.Tensor):
        return call.lfirst if call.lfirst is not None else frozen_like(call.out)
    return unknown_function(call)


def softmax(call: Call):
    if isinstance(call.lfirst, torch.Tensor):
        return tensor.softmax(call.ctx, call.lfirst, argument(call, 1, "dim", -1), call.name)
    return pointwise(call)


def normalize(call: Call):
    """F.normalize(x, p, dim): x / norm along dim."""
    if isinstance(call.lfirst, torch.Tensor):
        return tensor.softmax(call.ctx, call.lfirst, argument(call, 2, "dim", 1), "F.normalize")
    return unknown_function(call)


def elementwise(call: Call):
    operands = list(zip(call.args, call.largs)) + [(call.kwargs[k], call.lkwargs[k]) for k in call.kwargs]
    return tensor.elementwise(call.ctx, operands, call.out)


def getitem(call: Call):
    first, lfirst, index = call.first, call.lfirst, call.args[1]
    if isinstance(first, torch.Tensor):
        if isinstance(lfirst, ParamRef):
            return tensor.movement(call.ctx, first, lfirst, lambda t: t[index], call.out)
        return tensor.index(call.ctx, first, lfirst, index, call.out)
    return lfirst[index] if isinstance(lfirst, (tuple, list)) else None


def aten_slice(call: Call):
    """ATen's `slice(x, dim, start, end, step)` (what torch.export makes of `x[..., a:b]`): followed as that
    index where it leaves every channel of `dim` (a position dim cut, as T5's position bias), frozen where it
    cuts channels (its bounds are not resized by the rewrite)."""
    first, lfirst = call.first, call.lfirst
    if not isinstance(first, torch.Tensor) or isinstance(lfirst, ParamRef):
        return unknown_function(call)
    dim = argument(call, 1, "dim", 0) % first.dim()
    window = slice(argument(call, 2, "start", None), argument(call, 3, "end", None), argument(call, 4, "step", 1))
    index = (slice(None),) * dim + (window,)
    if isinstance(lfirst, torch.Tensor) and align(lfirst, first.dim()).shape[dim] > 1 \
            and len(range(*window.indices(first.shape[dim]))) != first.shape[dim]:
        return unknown(call.ctx, "aten.slice along a channel dim", call.largs, call.out)
    return tensor.index(call.ctx, first, lfirst, index, call.out)


def movement(call: Call):
    if isinstance(call.first, torch.Tensor):
        return tensor.movement(call.ctx, call.first, call.lfirst, reapply(call), call.out)
    return unknown_function(call)


def pixel_shuffle(call: Call):
    if isinstance(call.first, torch.Tensor):
        factor = argument(call, 1, "upscale_factor", 1)
        return shuffle_pixels(call.ctx, call.first, call.lfirst, factor, reapply(call), call.out)
    return unknown_function(call)


def unfold(call: Call):
    """`Tensor.unfold(dim, size, step)`: sliding windows along one dim, each a new last dim; its labels move
    as the values do (a channel dim cut into windows shows a channel at several places, which the movement
    rule freezes). `F.unfold` (im2col, of the same name) mixes channels and positions: not followed."""
    if call.node.op == "call_method":
        return movement(call)
    return unknown_function(call)


def roll(call: Call):
    _freeze_shifted_channels(call, argument(call, 2, "dims", None))
    return movement(call)


def tensor_split(call: Call):
    _freeze_shifted_channels(call, argument(call, 2, "dim", 0))
    return unknown_function(call)


def _freeze_shifted_channels(call: Call, dims) -> None:
    """Rolling or splitting along a channel dim moves channels to other positions."""
    first, lfirst = call.first, call.lfirst
    if not isinstance(lfirst, torch.Tensor):
        return
    dims = range(first.dim()) if dims is None else ((dims,) if isinstance(dims, int) else dims)
    if any(align(lfirst, first.dim()).shape[d] > 1 for d in dims):
        call.ctx.freeze(lfirst, f"{call.name} along a channel dim")


def cat(call: Call):
    ctx, out = call.ctx, call.out
    tensors, ltensors = call.args[0], call.largs[0]
    dim = argument(call, 1, "dim", 0)
    if call.name == "stack":
        dim = dim % out.dim()
        tensors = [t.unsqueeze(dim) for t in tensors]
        ltensors = [lt.unsqueeze(dim) if isinstance(lt, torch.Tensor) else lt for lt in ltensors]
        if any(isinstance(lt, ParamRef) for lt in ltensors):
            return unknown(ctx, "stack of parameters", call.largs, out)
    if out.dim() > 1:  # torch.cat skips legacy empty 1-d operands (an empty key-value cache's start): so do we;
        # an operand empty along the cat dim (a shift's block whose channels were all pruned) adds nothing either
        along = dim % out.dim()
        kept = [i for i, t in enumerate(tensors) if not ((t.dim() == 1 and t.numel() == 0)
                                                         or (t.dim() == out.dim() and t.shape[along] == 0))]
        tensors, ltensors = [tensors[i] for i in kept], [ltensors[i] for i in kept]
    kinds = [tensor.vector_piece(ctx, lt) for lt in ltensors]
    if out.dim() == 1 and None not in kinds and any(kinds):  # parameter vectors and constants
        return tensor.cat_vectors(ctx, list(tensors), list(ltensors))
    return tensor.cat(ctx, list(tensors), list(ltensors), dim, out)


def reduction(call: Call):
    first, lfirst = call.first, call.lfirst
    if not (isinstance(first, torch.Tensor) and isinstance(lfirst, torch.Tensor)):
        return unknown_function(call)
    if any(isinstance(a, torch.Tensor) for a in call.args[1:]):  # torch.max(a, b): elementwise
        return tensor.elementwise(call.ctx, list(zip(call.args, call.largs)), call.out)
    # read as torch reads them: norm(x, p, dim, keepdim), var(x, dim, unbiased, keepdim)
    dims, keepdim = params._reduction_dims(call.name, call.args, call.kwargs, first.dim())
    return tensor.reduce(call.ctx, lfirst, dims, keepdim, call.out, call.name)


def spatial(call: Call):
    lfirst, out = call.lfirst, call.out
    if isinstance(out, tuple):  # max pooling with indices
        return tuple(tensor.channelwise(call.ctx, lfirst, o) for o in out)
    if call.name == "pad":
        pads = argument(call, 1, "pad", ())
        keep = tuple(range(call.args[0].dim() - len(pads) // 2))
        return tensor.channelwise(call.ctx, lfirst, out, keep)
    return tensor.channelwise(call.ctx, lfirst, out)


# Functional layers. fx records what the caller wrote: parameters passed by keyword
# (`F.layer_norm(x, s, weight=w)`) are in `lkwargs`, so every operand is read through `_operand`.
def conv(call: Call):
    weight = _operand(call, 1, "weight")
    if not (_whole(weight, argument(call, 1, "weight", None)) or isinstance(weight, Derived)):
        return _unfollowed_layer(call)
    transposed = call.name.startswith("conv_transpose")  # weight (C_in, C_out/G, ...) vs (C_out, C_in/G, ...)
    w = layers.Weights(_weights(weight), _bias_name(call), out_dim=int(transposed), in_dim=int(not transposed))
    groups = int(argument(call, 6, "groups", 1))  # 7th argument of both conv and conv_transpose
    result = layers.conv(call.ctx, w, call.args[0], call.largs[0], call.out, groups, transposed=transposed)
    return _computed_bias(call.ctx, result, _operand(call, 2, "bias"), call.out, 1)


def linear(call: Call):
    weight, out = _operand(call, 1, "weight"), call.out
    if not (_whole(weight, argument(call, 1, "weight", None)) or isinstance(weight, Derived)):
        return _unfollowed_layer(call)
    w = layers.Weights(_weights(weight), _bias_name(call))
    result = layers.linear(call.ctx, w, call.args[0], call.largs[0], out)
    return _computed_bias(call.ctx, result, _operand(call, 2, "bias"), out, out.dim() - 1)


def matmul(call: Call):
    args, largs = call.args, call.largs
    return layers.matmul(call.ctx, args[0], largs[0], args[1], largs[1], call.out)


def addmm(call: Call):
    """torch.addmm(input, mat1, mat2): input + mat1 @ mat2 (GPT-2's Conv1D: a bias plus x @ W)."""
    args, largs = call.args, call.largs
    if any(argument(call, position, name, 1) != 1 for position, name in ((3, "beta"), (4, "alpha"))):
        return unknown_function(call)  # scaled forms: not met in practice, not followed
    product = layers.matmul(call.ctx, args[1], largs[1], args[2], largs[2], call.out)
    return tensor.elementwise(call.ctx, [(args[0], largs[0]), (call.out, product)], call.out)


def embedding(call: Call):
    """F.embedding(indices, weight) and aten.embedding(weight, indices): the weight is the floating operand;
    its columns are the output's channels, as nn.Embedding's."""
    for value, labels in zip(call.args[:2], call.largs[:2]):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            if isinstance(labels, ParamRef) and labels.dims == tuple(range(value.dim())) and value.dim() == 2:
                return layers.embedding(call.ctx, labels.name, call.out)
    return unknown_function(call)


def attention(call: Call):
    args, largs = call.args, call.largs
    mask = argument(call, 3, "attn_mask", None)  # added to the scores: a mask per head ties to the heads
    mask = (mask, _operand(call, 3, "attn_mask")) if isinstance(mask, torch.Tensor) else None
    return layers.attention(call.ctx, args[0], largs[0], args[1], largs[1], args[2], largs[2], call.out, mask)


def layer_norm(call: Call):
    """F.layer_norm(x, normalized_shape, weight, bias, eps)."""
    shape = argument(call, 1, "normalized_shape", None)
    normalized = 1 if isinstance(shape, int) else len(shape)
    return layers.layer_norm(call.ctx, _norm_params(call), call.args[0], call.largs[0], normalized)


def group_norm(call: Call):
    """F.group_norm(x, num_groups, weight, bias, eps)."""
    groups = int(argument(call, 1, "num_groups", 1))
    return layers.group_norm(call.ctx, _norm_params(call), call.args[0], call.largs[0], groups)


def batch_norm(call: Call):
    """F.batch_norm / F.instance_norm(x, mean, var, weight, bias), aten.*(x, weight, bias, mean, var)."""
    operands = [_operand(call, position, keyword) for position, keyword in
                enumerate(("running_mean", "running_var", "weight", "bias"), start=1)]
    names = tuple(_param_name(labels) for labels in operands)
    if all(name is not None or labels is None for name, labels in zip(names, operands)):
        return layers.per_channel(call.ctx, names, call.args[0], call.largs[0], 1, call.name.replace("_", " "))
    return unknown_function(call)


def _unfollowed_layer(call: Call):
    """A conv or linear layer whose weight is computed in a way the analysis does not follow: its output
    channels are frozen with that reason, so a model made of such layers never prunes nothing in silence."""
    ctx, out = call.ctx, call.out
    if not (isinstance(out, torch.Tensor) and out.dim() > 1):
        return unknown_function(call)
    source = ctx.node.args[1] if len(ctx.node.args) > 1 else ctx.node.kwargs.get("weight")
    what = f"function {call.name!r} with its weight from {getattr(source, 'name', 'an input')!r}"
    result = unknown(ctx, what, call.operand_labels, out)
    dim = out.dim() - 1 if call.name == "linear" else 1
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


def _bias_name(call: Call) -> str | Derived | None:
    bias = _operand(call, 2, "bias")
    return bias.name if isinstance(bias, ParamRef) else bias if isinstance(bias, Derived) else None


def _operand(call: Call, position: int, keyword: str):
    """Labels of an op's argument, passed positionally or by keyword (None when absent)."""
    return call.largs[position] if len(call.largs) > position else call.lkwargs.get(keyword)


def _norm_params(call: Call) -> tuple[str | None, str | None]:
    """Weight and bias of `F.layer_norm` / `F.group_norm` (3rd and 4th arguments, usually keywords)."""
    return _param_name(_operand(call, 2, "weight")), _param_name(_operand(call, 3, "bias"))


def _whole(labels, value) -> bool:
    """A weight read straight from a parameter, every dim in place (not a slice or a reshaped view)."""
    return (isinstance(labels, ParamRef) and isinstance(value, torch.Tensor)
            and labels.dims == tuple(range(value.dim())))


def _param_name(labels) -> str | None:
    return labels.name if isinstance(labels, ParamRef) and labels.dims == (0,) else None


def shuffle_pixels(ctx, x, lx, factor: int, apply, out):
    """Pixel shuffle folds factor^2 channels into one output channel: such a block moves as a unit."""
    if isinstance(lx, torch.Tensor) and lx.dim() > 1 and lx.shape[1] > 1:
        blocks = tensor.channel_vector(ctx, lx, x, 1, "pixel shuffle").reshape(-1, factor * factor)
        ctx.space.unify(blocks, blocks[:, :1])
        lx = place(blocks[:, :1].expand_as(blocks).reshape(-1), x.dim(), 1)
    return tensor.movement(ctx, x, lx, apply, out)


def reapply(call: Call):
    """The node's own op, to be applied to a label tensor instead of its first argument. A view is applied
    as a reshape: labels are broadcast (stride 0), so a view the value allows may not fit their strides, and
    where both work they place every element alike."""
    node, args, kwargs = call.node, call.args, call.kwargs
    if call.name == "view" and len(args) > 1 and not isinstance(args[1], torch.dtype):
        return lambda t: t.reshape(*args[1:], **{"shape" if k == "size" else k: v for k, v in kwargs.items()})
    if node.op == "call_method":
        return lambda t: getattr(t, node.target)(*args[1:], **kwargs)
    return lambda t: node.target(t, *args[1:], **kwargs)


def unknown(ctx: Context, what: str, largs, out, module: nn.Module | None = None):
    """Freeze what an op the analysis does not understand touches, with the reason."""
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


def argument(call: Call, position: int, name: str, default):
    """An argument of the call, passed by keyword or by position."""
    if name in call.kwargs:
        return call.kwargs[name]
    return call.args[position] if len(call.args) > position else default

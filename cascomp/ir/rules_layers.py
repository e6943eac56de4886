"""Propagation rules for layers with weights and for contractions: conv, linear, matmul, attention, norms,
embeddings. Shared by the module form (`nn.Conv2d`) and the functional form (`F.conv2d(x, self.w)`).

A weight is described by `WeightRef`s: which parameter, and which of its dims is the output / input axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cascomp.ir.context import Context
from cascomp.ir.labels import Derived, ParamRef, along, frozen_like, place, varying_dims
from cascomp.ir.rules_params import link
from cascomp.ir.rules_tensor import align, channel_vector, elementwise


@dataclass(frozen=True)
class Weights:
    """Parameter names of one layer (any may be None) and where its output/input axes are. A weight or bias
    computed in forward from parameters (a standardised weight) is a `Derived`; its dims are the value's."""

    weight: str | Derived | None
    bias: str | Derived | None = None
    out_dim: int = 0
    in_dim: int = 1
    per_channel: tuple[str, ...] = ()  # parameters indexed by the output channel only (norm stats)


def conv(ctx: Context, w: Weights, x, labels, out: torch.Tensor, groups: int, transposed: bool = False):
    """Convolution, plain or transposed.

    Cases:
    1. dense (groups=1): input channels tie to the weight's input axis, output channels are fresh;
    2. depthwise (groups = input channels, any channel multiplier m): output channel c*m+k follows input
       channel c, so a channel and its m outputs go together;
    3. grouped (any other group count G): per-group widths must stay equal, so slot j of every input group
       is tied to slot j of group 0, and the output is G copies of C_out/G fresh labels (output channel
       g*(C_out/G)+j gets label j); the weight's per-group axis follows the slots, its full axis every
       channel, and MACs are kernel x positions x C_out' x C_in'/G.
    """
    kernel = w.weight.shape[2:] if isinstance(w.weight, Derived) else ctx.param(w.weight).shape[2:]
    in_channels, out_channels = x.shape[1], out.shape[1]
    # MACs per (output channel, input channel) pair: kernel size times the positions it slides over
    sliding = x if transposed else out
    positions = sliding.numel() // sliding.shape[1]  # all samples (ctx.macs divides by the batch), one channel
    per_pair = positions * math.prod(kernel)
    vin = channel_vector(ctx, labels, x, 1, "convolution")
    if groups == 1:  # case 1
        vout = ctx.space.fresh(out_channels)
        _link(ctx, w.weight, w.in_dim, vin)
        _link(ctx, w.weight, w.out_dim, vout)
        ctx.macs(per_pair, vout, vin)
    elif groups == in_channels:  # case 2
        vout = vin.repeat_interleave(out_channels // in_channels)
        # the weight's full axis is its output axis, or its input axis when transposed
        _link(ctx, w.weight, w.in_dim if transposed else w.out_dim, vin if transposed else vout)
        ctx.macs(per_pair, vout)
    else:  # case 3
        vout, in_slots = _grouped_conv(ctx, w, vin, out_channels, groups, transposed)
        ctx.macs(per_pair, vout, in_slots)
    if w.bias:
        _link(ctx, w.bias, 0, vout)
    return place(vout, out.dim(), 1)


def _link(ctx: Context, weight: str | Derived, dim: int, vector: torch.Tensor) -> None:
    """Dim `dim` of a layer's weight or bias follows the channel labels `vector`."""
    if isinstance(weight, Derived):
        link(ctx, weight, dim, vector)
    else:
        ctx.link_param(weight, dim, vector)


def tie_slots(ctx: Context, vector: torch.Tensor, groups: int) -> torch.Tensor:
    """Tie position j of every one of `groups` equal blocks of `vector` to position j of the first block
    (so every block keeps the same positions); returns the first block's labels."""
    slots = vector.reshape(groups, -1)
    ctx.space.unify(slots, slots[:1])
    return slots[0]


def _grouped_conv(ctx: Context, w: Weights, vin, out_channels: int, groups: int, transposed: bool):
    """Case 3 of `conv`: links the weight; returns the output labels and the input slot labels."""
    in_slots = tie_slots(ctx, vin, groups)
    out_slots = ctx.space.fresh(out_channels // groups)
    vout = out_slots.repeat(groups)
    if transposed:  # weight is (C_in, C_out/G, ...)
        _link(ctx, w.weight, w.in_dim, vin)
        _link(ctx, w.weight, w.out_dim, out_slots)
    else:  # weight is (C_out, C_in/G, ...)
        _link(ctx, w.weight, w.in_dim, in_slots)
        _link(ctx, w.weight, w.out_dim, vout)
    return vout, in_slots


def linear(ctx: Context, w: Weights, x: torch.Tensor, labels, out: torch.Tensor) -> torch.Tensor:
    """Linear over the last dim: input features tie to weight columns, output features are fresh."""
    vin = channel_vector(ctx, labels, x, -1, "linear")
    vout = ctx.space.fresh(out.shape[-1])
    _link(ctx, w.weight, w.in_dim, vin)
    _link(ctx, w.weight, w.out_dim, vout)
    if w.bias:
        _link(ctx, w.bias, 0, vout)
    ctx.macs(out.numel() / out.shape[-1], vout, vin)
    return place(vout, out.dim(), out.dim() - 1)


def per_channel(ctx: Context, params: tuple[str | None, ...], x: torch.Tensor, labels, dim: int, op: str):
    """Norms and scales whose parameters are indexed by the channel (BatchNorm, InstanceNorm, PReLU)."""
    vector = channel_vector(ctx, labels, x, dim, op)
    for name in params:
        if name is not None and ctx.param(name).numel() > 1:
            ctx.link_param(name, 0, vector)
    return labels if not isinstance(labels, ParamRef) else frozen_like(x)


def layer_norm(ctx: Context, params: tuple[str | None, ...], x: torch.Tensor, labels, normalized: int):
    """LayerNorm over the last `normalized` dims; only a single channel dim can be pruned through it."""
    if isinstance(labels, ParamRef):
        ctx.freeze(labels, "layer norm of a parameter")
        return frozen_like(x)
    inner = [d for d in varying_dims(labels) if d >= x.dim() - normalized]
    if normalized != 1 and inner:
        ctx.freeze(labels, "layer norm over several dims that carry channels")
        return labels
    return per_channel(ctx, params, x, labels, -1, "layer norm") if normalized == 1 else labels


def group_norm(ctx: Context, params: tuple[str | None, ...], x: torch.Tensor, labels, num_groups: int):
    """GroupNorm: with one group, or one channel per group, channels prune freely; with 1 < G < C groups
    the statistics of a group span its channels, so slot j of every group is tied to slot j of group 0
    and the pruned layer keeps G groups of equal width (statistics over the kept channels of each)."""
    channels = x.shape[1]
    if 1 < num_groups < channels and isinstance(labels, torch.Tensor):
        tie_slots(ctx, channel_vector(ctx, labels, x, 1, "group norm"), num_groups)
    return per_channel(ctx, params, x, labels, 1, "group norm")


def embedding(ctx: Context, weight: str, out: torch.Tensor) -> torch.Tensor:
    vout = ctx.space.fresh(out.shape[-1])
    ctx.link_param(weight, 1, vout)
    return place(vout, out.dim(), out.dim() - 1)


# -- contractions between tensors --------------------------------------------------------------------------
def matmul(ctx: Context, a, la, b, lb, out: torch.Tensor) -> torch.Tensor:
    """`a @ b` for rank >= 2 (attention scores, attention times values, x @ W).

    Cases:
    1. a parameter operand behaves as a linear layer's weight;
    2. channels along the batch dims (attention heads): everything inside one head ties into one unit,
       since the head dim of the product can only shrink by whole heads;
    3. otherwise the contracted positions tie pairwise and the free dims pass their labels through.
    """
    if a.dim() < 2 or b.dim() < 2:
        ctx.freeze([la, lb], "matrix-vector product")
        return frozen_like(out)
    if isinstance(lb, ParamRef) or isinstance(la, ParamRef):  # case 1
        return _matmul_param(ctx, a, la, b, lb, out)
    ndim = out.dim()
    la, lb = align(la, ndim), align(lb, ndim)
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    batch_value = math.prod(out.shape[:-2])
    if any(s > 1 for s in la.shape[:-2]) or any(s > 1 for s in lb.shape[:-2]):  # case 2
        head_a, head_b = la[..., :1, :1], lb[..., :1, :1]
        ctx.space.unify(la, head_a)
        ctx.space.unify(lb, head_b)
        ctx.space.unify(head_a, head_b)
        heads = torch.broadcast_tensors(head_a, head_b)[0]
        cells = math.prod(heads.shape)
        ctx.macs(batch_value / cells * m * k * n, heads.reshape(-1))
        return heads
    ka, kb = along(la, ndim - 1, k), along(lb, ndim - 2, k)  # case 3
    if la.shape[-1] > 1 or lb.shape[-2] > 1:
        ctx.space.unify(ka, kb)
    rows = la.shape[-2] > 1
    cols = lb.shape[-1] > 1
    if rows and cols:
        ctx.freeze([la, lb], "matrix product with channels on both free dims")
        ctx.macs(batch_value * m * n, ka)  # frozen, but its multiply-adds still count
        return frozen_like(out)
    if rows:
        result = la[..., :, :1]
        ctx.macs(batch_value * n, along(la, ndim - 2, m), ka)
    elif cols:
        result = lb[..., :1, :]
        ctx.macs(batch_value * m, along(lb, ndim - 1, n), ka)
    else:
        result = frozen_like(out)
        ctx.macs(batch_value * m * n, ka)
    return result


def _matmul_param(ctx: Context, a, la, b, lb, out: torch.Tensor) -> torch.Tensor:
    if isinstance(la, ParamRef) and isinstance(lb, ParamRef):
        ctx.freeze([la, lb], "product of two parameters")
        return frozen_like(out)
    if isinstance(lb, ParamRef) and b.dim() == 2 and None not in lb.dims:  # x @ W
        w = Weights(lb.name, out_dim=lb.dims[1], in_dim=lb.dims[0])
        return linear(ctx, w, a, la, out)
    if isinstance(la, ParamRef) and a.dim() == 2 and None not in la.dims and b.dim() == 2:  # W @ x
        vin = channel_vector(ctx, lb, b, 0, "matrix product")
        vout = ctx.space.fresh(out.shape[0])
        ctx.link_param(la.name, la.dims[1], vin)
        ctx.link_param(la.name, la.dims[0], vout)
        ctx.macs(out.shape[1], vout, vin)
        return place(vout, 2, 0)
    ctx.freeze([la, lb], "matrix product with a batched parameter")
    return frozen_like(out)


def attention(ctx: Context, q, lq, k, lk, v, lv, out: torch.Tensor, mask: tuple | None = None) -> torch.Tensor:
    """`F.scaled_dot_product_attention`: two products, scores = q @ k^T and out = scores @ v; a float
    `mask` (value, labels) is added to the scores, elementwise (T5's position bias has a size per head: its
    heads tie to the scores', or freeze them where the analysis cannot follow where it came from)."""
    scores = torch.empty(q.shape[:-1] + (k.shape[-2],))
    lkt = lk.transpose(-2, -1) if isinstance(lk, torch.Tensor) else lk
    score_labels = matmul(ctx, q, lq, k.transpose(-2, -1), lkt, scores)
    if mask is not None and isinstance(score_labels, torch.Tensor):
        score_labels = elementwise(ctx, [(scores, score_labels), mask], scores)
    return matmul(ctx, scores, score_labels, v, lv, out)

"""Propagation rules shared by functions, methods and modules: elementwise, data movement, reductions,
contractions.

Rules take concrete values (the analysis runs the model) and label tensors, and return the output labels.
"""

from __future__ import annotations

from typing import Callable

import torch

from cascomp.ir.context import Context, SelectFact
from cascomp.ir.labels import FROZEN, ParamRef, along, compress, expand_to, frozen_like, place, varying_dims


def align(labels: torch.Tensor, ndim: int) -> torch.Tensor:
    return labels.reshape((1,) * (ndim - labels.dim()) + tuple(labels.shape))


def padded_shape(shape: torch.Size, ndim: int) -> tuple[int, ...]:
    return (1,) * (ndim - len(shape)) + tuple(shape)


# -- elementwise --------------------------------------------------------------------------------------------
def elementwise(ctx: Context, operands: list[tuple[object, object]], out: torch.Tensor) -> torch.Tensor:
    """Pointwise op over broadcast operands (add, mul, where, ...).

    Cases:
    1. operands equal in size along a dim where labels vary must keep the same channels: their labels tie;
    2. an operand broadcast (size 1) along a dim where another operand's channels vary does not constrain
       them (a per-sample gate, a scalar);
    3. a parameter read with `get_attr` adopts the labels it meets (layer scale, positional embedding);
    4. two operands broadcast against each other's channels would form an outer product: frozen.
    """
    ndim = out.dim()
    acts, params = [], []
    for value, labels in operands:
        if not isinstance(value, torch.Tensor):
            continue
        if isinstance(labels, ParamRef):
            params.append((labels, padded_shape(value.shape, ndim)))
        elif isinstance(labels, torch.Tensor):
            acts.append((align(labels, ndim), padded_shape(value.shape, ndim)))
    if not acts:
        return _params_only(ctx, params)
    carrying, passive = [], []
    for i, (labels, shape) in enumerate(acts):
        blocked = any(
            shape[d] == 1 and out.shape[d] > 1 and other.shape[d] > 1
            for j, (other, _) in enumerate(acts) if j != i for d in range(ndim)
        )
        (passive if blocked else carrying).append((labels, shape))
    if not carrying:  # case 4
        for labels, _ in acts:
            ctx.freeze(labels, "outer product of channels in an elementwise op")
        return frozen_like(out)
    result = carrying[0][0]
    for labels, _ in carrying[1:]:  # case 1
        ctx.space.unify(result, labels)
        if labels.dim() and labels.shape != result.shape:
            result = torch.broadcast_tensors(result, labels)[0]
    for labels, shape in passive:  # case 2
        if any(labels.shape[d] > 1 and result.shape[d] == 1 for d in range(ndim)):
            ctx.freeze(labels, "channels broadcast against other channels")
            ctx.freeze(result, "channels broadcast against other channels")
    for ref, shape in params:  # case 3
        adopt(ctx, ref, shape, result, out.shape)
    return compress(result)


def _params_only(ctx: Context, params: list[tuple[ParamRef, tuple[int, ...]]]) -> object:
    if len(params) == 1:
        return params[0][0]  # arithmetic on one parameter (gamma.exp(), 2 * scale) keeps it a parameter
    for ref, _ in params:
        ctx.freeze_param(ref.name, "parameters combined with each other before meeting activations")
    return frozen_like(torch.empty((1,) * max(len(s) for _, s in params)))


def adopt(ctx: Context, ref: ParamRef, shape: tuple[int, ...], labels: torch.Tensor, out_shape) -> None:
    """Parameter dims follow the activation labels along the dims they are aligned with."""
    offset = len(out_shape) - len(ref.dims)
    for i, pdim in enumerate(ref.dims):
        d = i + offset
        if pdim is None or shape[d] == 1 or labels.shape[d] == 1:
            continue
        others = [k for k in varying_dims(labels) if k != d]
        if any(shape[k] > 1 for k in others):
            ctx.freeze(labels, "parameter spans several channel dims")
            ctx.freeze_param(ref.name, "parameter spans several channel dims")
            return
        ctx.link_param(ref.name, pdim, along(labels, d, shape[d]))


# -- data movement ------------------------------------------------------------------------------------------
def movement(ctx: Context, value: torch.Tensor, labels: object, apply: Callable, out: object) -> object:
    """View-like ops: the same op applied to the label tensor says exactly where every channel goes."""
    if isinstance(labels, ParamRef):
        return _move_param(ctx, labels, value, apply, out)
    moved = apply(expand_to(labels, value.shape))
    return _compress_all(ctx, moved)


def _compress_all(ctx: Context, moved: object) -> object:
    if isinstance(moved, torch.Tensor):
        result = compress(moved)
        ctx.grid(result)
        return result
    return type(moved)(_compress_all(ctx, m) for m in moved)


def _move_param(ctx: Context, ref: ParamRef, value: torch.Tensor, apply: Callable, out: object) -> object:
    """Follow a parameter through broadcast-only views; anything else freezes it."""
    probes = {}
    for i, pdim in enumerate(ref.dims):
        if pdim is not None and value.shape[i] > 1:
            probes[pdim] = expand_to(place(torch.arange(value.shape[i]), value.dim(), i), value.shape)
    if not isinstance(out, torch.Tensor):
        ctx.freeze_param(ref.name, "parameter split into several tensors")
        return ctx.frozen_output(out)
    dims: list[int | None] = [None] * out.dim()
    for pdim, probe in probes.items():
        moved = compress(apply(probe))
        vary = varying_dims(moved)
        ok = len(vary) == 1 and torch.equal(along(moved, vary[0], moved.shape[vary[0]]),
                                             torch.arange(moved.shape[vary[0]]))
        if not ok or dims[vary[0]] is not None or moved.shape[vary[0]] != value.shape[ref.dims.index(pdim)]:
            ctx.freeze_param(ref.name, "parameter reshaped in a way the analysis does not follow")
            return frozen_like(out)
        dims[vary[0]] = pdim
    return ParamRef(ref.name, tuple(dims))


def cat(ctx: Context, values: list[torch.Tensor], labels: list[object], dim: int, out: torch.Tensor) -> object:
    """Concatenation: channels keep their identity at shifted offsets; other dims must line up."""
    dim = dim % out.dim()
    acts = [(v, l) for v, l in zip(values, labels) if isinstance(l, torch.Tensor)]
    # one-wide operands of a cat along channels (a shift's blocks of one channel) are channels of their own,
    # not tied to each other: along a dim where another operand's channels vary, or any dim but the batch's
    channel_cat = dim != 0 or any(align(lab, out.dim()).shape[dim] > 1 for _, lab in acts)
    single = {id(lab) for value, lab in acts if channel_cat and value.shape[dim] == 1 and lab.numel() == 1}
    profile = None
    for value, lab in acts:  # tie the non-concatenated dims across inputs
        if id(lab) in single:
            continue
        lab = align(lab, out.dim())
        if lab.shape[dim] > 1:  # channels along the cat dim itself just shift; a grid is settled later
            continue
        other = lab
        if profile is None:
            profile = other
        else:
            ctx.space.unify(profile, other)
    if profile is None:
        profile = frozen_like(out)
    pieces = []
    for value, lab in zip(values, labels):
        if isinstance(lab, ParamRef):
            adopt(ctx, lab, padded_shape(value.shape, out.dim()), profile, out.shape)
            lab = profile
        elif isinstance(lab, torch.Tensor) and align(lab, out.dim()).shape[dim] == 1 and id(lab) not in single:
            lab = profile  # tied to it above: the same classes, so the result does not vary along `dim`
        shape = list(torch.broadcast_shapes(align(lab, out.dim()).shape, profile.shape))
        shape[dim] = value.shape[dim]
        pieces.append(align(lab, out.dim()).expand(shape))
    result = compress(torch.cat(pieces, dim))
    ctx.grid(result)
    return result


def index(ctx: Context, value: torch.Tensor, labels: torch.Tensor, idx: object, out: object) -> object:
    """Indexing `x[...]`: slices with step 1 shift channels; steps, tensors and ints on channel dims are
    checked (an int index is only safe on a dim whose channels move as one unit)."""
    items = idx if isinstance(idx, tuple) else (idx,)
    consumed = sum(1 for it in items if it is not None and it is not Ellipsis)
    dim = 0
    for item in items:
        if item is Ellipsis:
            dim += value.dim() - consumed
            continue
        if item is None:
            continue
        if dim < labels.dim() and labels.shape[dim] > 1:
            _check_index(ctx, labels, dim, item)
        dim += 1
    return movement(ctx, value, labels, lambda t: t[idx], out)


def _check_index(ctx: Context, labels: torch.Tensor, dim: int, item: object) -> None:
    if isinstance(item, slice):
        if item.step not in (None, 1):
            ctx.freeze(labels, "strided slice across channels")
    elif isinstance(item, int):
        ctx.record.selects.append(SelectFact(ctx.node.name, labels.select(dim, item), labels))
    else:
        ctx.freeze(labels, "tensor index across channels")


def vector_piece(ctx: Context, labels) -> bool | None:
    """A piece `cat_vectors` takes: True for a parameter or buffer vector, False for a constant, None else."""
    if isinstance(labels, ParamRef):
        return labels.dims == (0,) and ctx.has_param(labels.name)
    if isinstance(labels, torch.Tensor) and not bool((labels != 0).any()):
        return False
    return None


def cat_vectors(ctx: Context, tensors: list[torch.Tensor], ltensors: list) -> torch.Tensor:
    """A vector concatenated from parameter vectors and constants (BEiT's qkv bias `cat((q_bias, zeros,
    v_bias))`): fresh labels, each parameter linked to its slice, constant slices frozen. Where it meets
    activations (a linear layer's bias, rules_ops._computed_bias; an elementwise op) they tie to them."""
    pieces = []
    for value, labels in zip(tensors, ltensors):
        if vector_piece(ctx, labels):
            pieces.append(ctx.space.fresh(value.shape[0]))
            ctx.link_param(labels.name, 0, pieces[-1])
        else:
            pieces.append(torch.zeros(value.shape[0], dtype=torch.int64))
    return torch.cat(pieces)


# -- reductions and channel-wise ops -----------------------------------------------------------------------
def reduce(ctx: Context, labels: torch.Tensor, dims: object, keepdim: bool, out: object,
           op: str = "reduction") -> object:
    """Reductions over dims that carry no channels keep the labels; over channels see `across`."""
    ndim = labels.dim()
    if dims is None or (isinstance(dims, (tuple, list)) and len(dims) == 0):
        dims = tuple(range(ndim))
    dims = tuple(d % ndim for d in ((dims,) if isinstance(dims, int) else dims)) if ndim else ()
    result = across(ctx, labels, dims, op)
    if result is None:
        return ctx.frozen_output(out)
    for d in sorted(dims, reverse=True):
        result = result if keepdim else result.squeeze(d)
    if isinstance(out, (tuple, list)):
        return tuple(result for _ in out)
    return result


def across(ctx: Context, labels: torch.Tensor, dims: tuple[int, ...], op: str) -> torch.Tensor | None:
    """Labels after an op that mixes positions along `dims` (a reduction, softmax, F.normalize). Cases:
    1. no channels along `dims`: the labels pass;
    2. channels along `dims` and along another dim (branches stacked before a softmax over them, heads x
       head_dim): every slice along `dims` is tied to the first, so those dims never shrink and the op is
       exact; the labels of the first slice pass;
    3. channels only along `dims` (softmax or a sum over the channel dim): removing a channel would change
       every other channel's value, so they are frozen (None: the result carries none)."""
    inside = [d for d in dims if labels.shape[d] > 1]
    if not inside:  # case 1
        return labels
    if not any(labels.shape[d] > 1 for d in range(labels.dim()) if d not in dims):  # case 3
        ctx.freeze(labels, f"{op} across channels (removing one would change the others)")
        return None
    for d in inside:  # case 2
        first = labels.narrow(d, 0, 1)
        ctx.space.unify(labels, first)
        labels = first
    return labels


def channelwise(ctx: Context, labels: object, out: object, keep: tuple[int, ...] = (0, 1)) -> object:
    """Ops that act on each channel separately but reshape the other dims (pooling, interpolation)."""
    if isinstance(labels, ParamRef) or not isinstance(out, torch.Tensor):
        ctx.freeze(labels, "parameter used where activations were expected")
        return ctx.frozen_output(out)
    if any(labels.shape[d] > 1 for d in range(labels.dim()) if d not in keep):
        ctx.freeze(labels, "spatial op over a dim that carries channels")
        return frozen_like(out)
    if labels.dim() != out.dim():
        return frozen_like(out)
    return labels


def channel_vector(ctx: Context, labels: object, value: torch.Tensor, dim: int, op: str) -> torch.Tensor:
    """Labels along the channel dim of an op's input; channels spread over other dims are frozen."""
    if isinstance(labels, ParamRef) or labels is None:
        ctx.freeze(labels, f"{op} applied to a parameter")
        return torch.zeros(value.shape[dim], dtype=torch.int64)
    dim = dim % value.dim()
    if any(s > 1 for d, s in enumerate(labels.shape) if d != dim):
        ctx.freeze(labels, f"{op} input carries channels along several dims")
        return torch.zeros(value.shape[dim], dtype=torch.int64)
    return along(labels, dim, value.shape[dim])


def softmax(ctx: Context, labels: torch.Tensor, dim: int, op: str = "softmax") -> torch.Tensor:
    """softmax / log_softmax / F.normalize along `dim`: the labels keep their shape (see `across`)."""
    dim = dim % labels.dim() if labels.dim() else 0
    result = across(ctx, labels, (dim,), op) if labels.dim() else labels
    return labels if result is None else result  # case 3 froze them


__all__ = [
    "FROZEN", "across", "adopt", "align", "cat", "cat_vectors", "channel_vector", "channelwise",
    "elementwise", "index", "movement", "reduce", "softmax", "vector_piece",
]

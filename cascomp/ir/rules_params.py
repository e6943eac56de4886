"""Propagation rules for tensors computed from parameters alone, before they meet activations: weight
standardisation (`(w - w.mean(dims)) / w.std(dims) * gain`, `F.batch_norm(w.reshape(1, C_out, -1), ...)`),
reparameterised or combined weights, weight norm.

Such a tensor is described by a `Derived`: per parameter dim it reads, an index tensor saying which position
along that dim every element comes from (a `ParamRef` is the special case of one parameter in place).

Cases:
1. views and reshapes (the op table's `on_parameters` MOVE) apply to the index tensors, as to label
   tensors, so a merged dim holds the positions of every dim merged into it; a slice or an index that leaves
   some positions of a parameter dim unread freezes that dim (the positions read would move when others are
   pruned);
2. pointwise ops (KEEP) keep the index tensors; elementwise ops (COMBINE) of parameters and constants keep those of every
   operand (parameters aligned along a dim are tied there once the result meets channels, case 5); a
   constant varying along a dim that holds parameter positions freezes them (it cannot be pruned);
3. reductions (the op table's `on_parameters` STATISTIC) and batch-statistics norms (NORMALISE) over
   dims holding a parameter dim's positions are statistics over its channels: recorded as a
   `ParamStatistic`, so the masked reference computes them over the positions that survive, as the pruned
   parameter does; a parameter dim spread over a reduced and a kept dim cannot be sliced so, and is frozen;
4. a result showing one parameter with each dim in place (or dims reduced away) is a `ParamRef` again, so
   every rule for parameters applies: a standardised weight is a conv's whole weight;
5. where a derived tensor meets activations (an elementwise op, a conv's or a linear layer's weight), every
   parameter dim read along a dim that carries channels follows them (`link`), its positions in the order
   read; dims that carry none (kernel taps) are left alone; a parameter dim read along several dims, or
   with positions repeated or missing, is frozen;
6. any other op freezes the parameter dims it reads, with the reason (rules_ops.unknown).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.fx as fx

from cascomp.ir.context import Context, ParamStatistic
from cascomp.ir.labels import Derived, ParamAxis, ParamRef, along, compress, expand_to, frozen_like, place
from cascomp.ir.labels import varying_dims
from cascomp.ir.ops import ParamRule
from cascomp.ir.rules_tensor import align, elementwise


def tensor_operands(node: fx.Node, args, kwargs, largs, lkwargs) -> list[tuple[object, torch.Tensor, object]]:
    """(node or literal, value, labels) of every tensor an op reads, lists (cat's) flattened."""
    keys = list(kwargs)
    triples = list(zip(node.args, args, largs)) + [(node.kwargs[k], kwargs[k], lkwargs.get(k)) for k in keys]
    flat = []
    for source, value, labels in triples:
        if isinstance(value, (tuple, list)) and isinstance(labels, (tuple, list)) and isinstance(source, (tuple, list)):
            flat.extend(zip(source, value, labels))
        else:
            flat.append((source, value, labels))
    return [(source, value, labels) for source, value, labels in flat if isinstance(value, torch.Tensor)]


def claims(ctx: Context, rule: ParamRule, operands) -> bool:
    """Whether this file's rules apply to an op its table entry says they follow (`rule`): the op reads
    parameters and constants only (nothing computed from a model input), and either one of them is a
    `Derived` or the op is one a `ParamRef` would not survive in rules_tensor."""
    params, derived = 0, False
    for source, _, labels in operands:
        if isinstance(source, fx.Node) and ctx.reads_inputs(source):
            return False
        if isinstance(labels, Derived):
            derived = True
        elif isinstance(labels, ParamRef) and ctx.has_param(labels.name):
            params += 1
    if derived:
        return True
    if rule is ParamRule.COMBINE:
        return params >= 1 and len(operands) > 1  # a second parameter or a constant tensor beside it
    return params >= 1 and rule is not ParamRule.KEEP


def run(ctx: Context, rule: ParamRule, name: str, apply: Callable, args, kwargs, largs, lkwargs, out) -> object:
    """Rule for an op `claims` accepts; None for an op it does not follow (the caller freezes, case 6)."""
    x, lx = (args[0], largs[0]) if args else (None, None)
    if rule is ParamRule.KEEP:  # case 2
        return lx if isinstance(x, torch.Tensor) else None
    if rule is ParamRule.MOVE:  # case 1 (a constant moved, `c.expand_as(w)`, stays one)
        derived = of(ctx, lx, x) if isinstance(x, torch.Tensor) else None
        return ctx.frozen_output(out) if derived is None else movement(ctx, derived, x, apply, out)
    if rule is ParamRule.COMBINE:  # case 2
        return combine(ctx, [(v, labels) for _, v, labels in tensor_operands(ctx.node, args, kwargs, largs, lkwargs)],
                       out)
    if rule is ParamRule.STATISTIC and isinstance(x, torch.Tensor) and of(ctx, lx, x) is not None:  # case 3
        if any(isinstance(a, torch.Tensor) for a in list(args[1:]) + list(kwargs.values())):
            return None
        dims, keepdim = _reduction_dims(name, args, kwargs, x.dim())
        return reduce(ctx, of(ctx, lx, x), x, dims, keepdim, out, _fewest_positions(name, args, kwargs))
    if rule is ParamRule.NORMALISE and isinstance(x, torch.Tensor) and of(ctx, lx, x) is not None:  # case 3
        return normalise(ctx, name, args, kwargs, largs, lkwargs, out)
    return None


def of(ctx: Context, labels, value: torch.Tensor) -> Derived | None:
    """The `Derived` form of a parameter operand (None for constants and activations)."""
    if isinstance(labels, Derived):
        return labels
    if isinstance(labels, ParamRef) and ctx.has_param(labels.name):
        return axes_of(labels, tuple(value.shape))
    return None


def axes_of(labels, shape: tuple[int, ...]) -> Derived | None:
    """A `ParamRef` or `Derived` seen as a `Derived` of a value of `shape`."""
    if isinstance(labels, Derived):
        return labels
    if not isinstance(labels, ParamRef):
        return None
    axes = tuple(ParamAxis(labels.name, pdim, place(torch.arange(shape[i]), len(shape), i))
                 for i, pdim in enumerate(labels.dims) if pdim is not None and shape[i] > 1)
    return Derived(axes, tuple(shape))


# -- parameters among themselves -----------------------------------------------------------------------------
def movement(ctx: Context, derived: Derived, value: torch.Tensor, apply: Callable, out) -> object:
    """Case 1: the op applied to every index tensor."""
    moved = [apply(expand_to(axis.index, value.shape)) for axis in derived.axes]
    if isinstance(out, torch.Tensor):
        return settle(ctx, [ParamAxis(a.name, a.dim, compress(m)) for a, m in zip(derived.axes, moved)], out)
    if isinstance(out, (tuple, list)) and all(isinstance(o, torch.Tensor) for o in out):
        return tuple(settle(ctx, [ParamAxis(a.name, a.dim, compress(m[j])) for a, m in zip(derived.axes, moved)],
                            part) for j, part in enumerate(out))
    ctx.freeze(derived, "parameter split into values of several kinds")
    return ctx.frozen_output(out)


def combine(ctx: Context, pairs, out: torch.Tensor) -> object:
    """Case 2: an elementwise op over parameters and constants."""
    axes = []
    for value, labels in pairs:
        derived = of(ctx, labels, value)
        if derived is not None:
            axes.extend(_aligned(derived, out.dim()))
    for value, labels in pairs:
        if of(ctx, labels, value) is None:  # a constant: where it varies, parameter positions stay
            shape = (1,) * (out.dim() - value.dim()) + tuple(value.shape)
            for axis in axes:
                if any(shape[d] > 1 for d in varying_dims(axis.index)):
                    ctx.freeze_param_dim(axis.name, axis.dim, "parameter combined with a constant tensor of its size")
    return settle(ctx, axes, out)


def reduce(ctx: Context, derived: Derived, value: torch.Tensor, dims: tuple[int, ...], keepdim: bool, out,
           minimum: int = 1):
    """Case 3: a reduction; parameter dims read along reduced dims are statistics, the others stay."""
    stays, statistic = _split_reduced(ctx, derived, dims)
    if statistic:
        ctx.record.statistics.append(ParamStatistic(ctx.node.name, tuple(statistic), False, minimum))
    if not keepdim:
        stays = [ParamAxis(a.name, a.dim, _squeeze(a.index, dims)) for a in stays]
    if isinstance(out, (tuple, list)):  # var_mean, std_mean
        return tuple(settle(ctx, stays, part) for part in out)
    return settle(ctx, stays, out)


def normalise(ctx: Context, name: str, args, kwargs, largs, lkwargs, out: torch.Tensor) -> object:
    """Case 3: a norm computed from the parameter tensor itself; its affine and running statistics read
    parameters along dim 1 (batch and instance norm) or, for weight norm, `g` shaped like the weight."""
    x = args[0]
    derived = of(ctx, largs[0], x)
    extras = []
    batch = False  # batch statistics: a variance, over two positions at least
    if name == "weight_norm":  # torch._weight_norm(v, g, dim): v / ||v|| (over every dim but `dim`) * g
        dim = _argument(args, kwargs, 2, "dim", 0)
        reduced = tuple(range(x.dim())) if dim == -1 else tuple(d for d in range(x.dim()) if d != dim % x.dim())
        extras.append((_argument(args, kwargs, 1, "g", None), _argument(largs, lkwargs, 1, "g", None)))
    else:  # F.*(x, mean, var, weight, bias, training|use_input_stats), aten.*(x, weight, bias, mean, var, ...)
        keys = ("running_mean", "running_var", "weight", "bias")
        per_channel = [(_argument(args, kwargs, i, k, None), _argument(largs, lkwargs, i, k, None))
                       for i, k in enumerate(keys, start=1)]
        if name == "batch_norm":
            batch = bool(_argument(args, kwargs, 5, "training", False)) or per_channel[0][0] is None
            reduced = tuple(d for d in range(x.dim()) if d != 1) if batch else ()
        else:
            batch = _argument(args, kwargs, 5, "use_input_stats", True) or per_channel[0][0] is None
            reduced = tuple(range(2, x.dim())) if batch else ()
        extras = [(value, labels) for value, labels in per_channel if isinstance(value, torch.Tensor)]
    axes = list(derived.axes)
    if reduced:
        stays, statistic = _split_reduced(ctx, derived, reduced)
        axes = stays + statistic
        if statistic:
            ctx.record.statistics.append(ParamStatistic(ctx.node.name, tuple(statistic), True, 2 if batch else 1))
    for value, labels in extras:
        extra = of(ctx, labels, value) if isinstance(value, torch.Tensor) else None
        if extra is not None:
            axes.extend(_placed(extra, x.dim()))
    return settle(ctx, axes, out)


def settle(ctx: Context, axes: list[ParamAxis], value: torch.Tensor) -> object:
    """The labels of a result: parameter dims read only in part are frozen (case 1), duplicates merged,
    a single parameter in place becomes a ParamRef (case 4), and a result reading no parameter dim is a
    constant."""
    kept: list[ParamAxis] = []
    for axis in axes:
        size = ctx.param(axis.name).shape[axis.dim]
        if len(torch.unique(axis.index)) < size:
            ctx.freeze_param_dim(axis.name, axis.dim, "a slice or an index of a parameter dim")
        elif not any(a.name == axis.name and a.dim == axis.dim and _same(a.index, axis.index) for a in kept):
            kept.append(axis)
    if not kept:
        return frozen_like(value)
    return _as_param_ref(ctx, kept, value) or Derived(tuple(kept), tuple(value.shape))


def _as_param_ref(ctx: Context, axes: list[ParamAxis], value: torch.Tensor) -> ParamRef | None:
    name = axes[0].name
    if any(a.name != name for a in axes):
        return None
    dims: list[int | None] = [None] * value.dim()
    for axis in axes:
        vary = varying_dims(axis.index)
        if len(vary) != 1 or dims[vary[0]] is not None:
            return None
        size = value.shape[vary[0]]
        if not torch.equal(along(axis.index, vary[0], size), torch.arange(size)):
            return None
        dims[vary[0]] = axis.dim
    if tuple(value.shape) == tuple(ctx.param(name).shape) and all(d in (None, i) for i, d in enumerate(dims)):
        return ParamRef(name, tuple(range(value.dim())))  # the whole parameter, a 1x1 kernel's dims included
    return ParamRef(name, tuple(dims))


def _split_reduced(ctx: Context, derived: Derived, reduced: tuple[int, ...]):
    """Axes read along no reduced dim (they stay) and axes read along reduced dims only (statistics)."""
    stays, statistic = [], []
    for axis in derived.axes:
        vary = varying_dims(axis.index)
        inside = [d for d in vary if d in reduced]
        if not inside:
            stays.append(axis)
        elif len(vary) == 1:
            statistic.append(axis)
        else:
            ctx.freeze_param_dim(axis.name, axis.dim, "a statistic over a parameter dim spread over several dims")
    return stays, statistic


# -- parameters meeting activations (case 5) ---------------------------------------------------------------
def meet(ctx: Context, pairs, out: torch.Tensor) -> object:
    """An elementwise op where derived tensors meet activations: the activations' rule gives the labels,
    then every derived operand's parameter dims follow them."""
    derived = [(value, labels) for value, labels in pairs if isinstance(labels, Derived)]
    result = elementwise(ctx, [p for p in pairs if not isinstance(p[1], Derived)], out)
    labels = align(result, out.dim()) if isinstance(result, torch.Tensor) else frozen_like(out)
    for _, operand in derived:
        aligned = Derived(tuple(_aligned(operand, out.dim())), tuple(out.shape))
        for dim in range(out.dim()):
            if labels.shape[dim] > 1:
                link(ctx, aligned, dim, along(labels, dim, out.shape[dim]))
            else:  # activations that keep every channel there: so must the parameter
                for axis in aligned.axes:
                    if dim in varying_dims(axis.index):
                        ctx.freeze_param_dim(axis.name, axis.dim, "parameter meets activations that keep all channels")
    return result


def link(ctx: Context, derived: Derived, dim: int, vector: torch.Tensor) -> None:
    """Dim `dim` of a derived tensor follows the channel labels `vector`: so does every parameter dim read
    along it, position by position. A dim the parameters do not make (a constant's, an expanded one) or
    one read in a way that cannot be pruned keeps its channels."""
    why = "parameter read along several dims, or with positions repeated or missing, where it meets channels"
    followed, failed = False, False
    for axis in derived.axes:
        vary = varying_dims(axis.index)
        if dim not in vary:
            continue
        size = ctx.param(axis.name).shape[axis.dim]
        index = along(axis.index, dim, derived.shape[dim])
        if vary != [dim] or len(index) != size or not torch.equal(torch.sort(index).values, torch.arange(size)):
            ctx.freeze_param_dim(axis.name, axis.dim, why)
            failed = True
        else:
            ctx.link_param(axis.name, axis.dim, vector[torch.argsort(index)])
            followed = True
    if failed or (derived.shape[dim] > 1 and not followed):
        ctx.freeze(vector, why if failed else "channels meet a dim of a tensor computed from parameters that no "
                   "parameter dim makes (a constant's, an expanded one)")


# -- helpers --------------------------------------------------------------------------------------------------
def _aligned(derived: Derived, ndim: int) -> list[ParamAxis]:
    return [ParamAxis(a.name, a.dim, align(a.index, ndim)) for a in derived.axes]


def _placed(derived: Derived, ndim: int) -> list[ParamAxis]:
    """A norm's operand: a per-channel vector (C,) goes along dim 1, anything else aligns from the right."""
    if len(derived.shape) != 1 or ndim < 2:
        return _aligned(derived, ndim)
    return [ParamAxis(a.name, a.dim, a.index.reshape((1, -1) + (1,) * (ndim - 2))) for a in derived.axes]


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    try:
        a, b = torch.broadcast_tensors(a, b)
    except RuntimeError:
        return False
    return bool(torch.equal(a, b))


def _squeeze(index: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    for d in sorted(dims, reverse=True):
        index = index.squeeze(d)
    return index


def _argument(args, kwargs, position: int, name: str, default):
    if name in kwargs:
        return kwargs[name]
    return args[position] if len(args) > position else default


def _fewest_positions(name: str, args, kwargs) -> int:
    """A standard deviation or variance with Bessel's correction needs two positions (one gives NaN)."""
    if name not in ("std", "var", "var_mean", "std_mean"):
        return 1
    unbiased = args[2] if len(args) > 2 and isinstance(args[2], bool) else kwargs.get("unbiased", True)
    if len(args) > 1 and isinstance(args[1], bool):  # var(x, unbiased)
        unbiased = args[1]
    return 2 if kwargs.get("correction", 1 if unbiased else 0) else 1


def _reduction_dims(name: str, args, kwargs, ndim: int) -> tuple[tuple[int, ...], bool]:
    """(reduced dims, keepdim) of a reduction, its overloads read as torch reads them."""
    dim_at, keep_at = (2, 3) if name in ("norm", "vector_norm") else (1, 2)
    dims = _argument(args, kwargs, dim_at, "dim", None)
    if name in ("std", "var", "var_mean", "std_mean"):
        if isinstance(dims, bool):  # var(x, unbiased)
            dims = None
        keep_at = 3  # var(x, dim, unbiased, keepdim); var(x, dim, correction=..., keepdim=...)
    keepdim = bool(_argument(args, kwargs, keep_at, "keepdim", False))
    if dims is None or (isinstance(dims, (tuple, list)) and len(dims) == 0):
        return tuple(range(ndim)), keepdim
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    return tuple(d % ndim for d in dims), keepdim

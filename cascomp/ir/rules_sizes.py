"""Sizes computed at run time: Python numbers the traced graph computes from tensor shapes.

fx records `B, C, H, W = x.shape` and `C // heads` as nodes, so after pruning they would evaluate to the
pruned sizes. Each such node carries a `SizeOf` instead of a label tensor: its value on the example inputs,
the dims carrying channels it reads, and whether it also reads a dim without them (batch, space). Cases:
1. a size where `ResizeShapeArgsPass` writes the new size in its place (a view's or reshape's dim that
   carries channels, split sections, slice bounds and indices on a channel dim) becomes that constant;
2. a size that reads channel dims only, used anywhere else (a dim without channels, a scale `C ** -0.5`,
   `torch.zeros(B, C)`), is pinned to its example value by the rewrite: the masked reference computes
   with the original sizes, and so does the pruned model;
3. a size that reads channels and other dims (`x.numel()`, `B * C`) cannot be pinned without fixing the
   batch: `settle` freezes the channels it reads unless their classes are constant along the dim (heads
   tied into units never shrink the head dim), so its value cannot change.
Sizes that read no channel stay computed at run time (dynamic batch and spatial sizes keep working).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx

from cascomp.ir.context import Context
from cascomp.ir.labels import Derived, ParamRef, varying_dims
from cascomp.ir.ops import ShapeArgs
from cascomp.ir.rules_tensor import align


@dataclass(frozen=True, eq=False)  # compared by identity: they hold tensors
class SizeRead:
    """Dim `dim` of a tensor with labels `labels` (aligned to its rank), or of parameter `param`."""

    dim: int
    labels: torch.Tensor | None = None
    param: str | None = None


@dataclass(frozen=True, eq=False)
class SizeOf:
    """The labels of a number computed from sizes: its example value, the channel dims it reads, and whether
    it reads any other dim."""

    value: object
    reads: tuple[SizeRead, ...] = ()
    other: bool = False

    @property
    def pinned(self) -> bool:
        """Case 2: the rewrite replaces it by its example value wherever case 1 does not apply."""
        return bool(self.reads) and not self.other


@dataclass(frozen=True)
class SizeUse:
    """A computed size the rewrite leaves in place although it reads channels (case 3)."""

    node: str
    op: str
    reads: tuple[SizeRead, ...]


def size_labels(name: str, args, kwargs, largs, lkwargs, out) -> object:
    """Labels of a node whose value holds no tensor: a SizeOf for numbers, a tuple of them for shapes."""
    if args and isinstance(args[0], torch.Tensor) and (name in ("size", "aten.sym_size") or (
            name == "getattr" and args[1] == "shape")):
        dims = [_read(args[0], largs[0], d, v) for d, v in enumerate(args[0].shape)]
        if isinstance(out, int):  # x.size(d)
            return dims[args[1] if len(args) > 1 else kwargs["dim"]]
        return tuple(dims)
    if name == "numel" and args and isinstance(args[0], torch.Tensor):
        return _combine(out, [_read(args[0], largs[0], d, v) for d, v in enumerate(args[0].shape)])
    if name == "getitem" and isinstance(largs[0], tuple):
        return largs[0][args[1]]
    if not isinstance(out, (int, float, bool, tuple, list)):
        return None
    if name == "add" and isinstance(out, tuple) and all(isinstance(a, (tuple, list)) for a in args[:2]):
        return tuple(_as_size(v, la) for a, la in zip(args[:2], largs[:2]) for v, la in _pairs(a, la))
    sizes = _flat(list(largs) + list(lkwargs.values()))
    if isinstance(out, (tuple, list)):
        return tuple(_combine(v, sizes) for v in out)
    return _combine(out, sizes)


def _read(value: torch.Tensor, labels, dim: int, size: int) -> SizeOf:
    if isinstance(labels, ParamRef):
        pdim = labels.dims[dim] if dim < len(labels.dims) else None
        if pdim is None:
            return SizeOf(size, (), True)
        return SizeOf(size, (SizeRead(pdim, param=labels.name),))
    labels = align(labels, value.dim()) if isinstance(labels, torch.Tensor) else None
    if labels is None or labels.shape[dim] == 1:
        return SizeOf(size, (), True)
    return SizeOf(size, (SizeRead(dim, labels),))


def _combine(value, sizes: list[SizeOf]) -> SizeOf:
    return SizeOf(value, tuple(r for s in sizes for r in s.reads), any(s.other for s in sizes))


def _pairs(values, labels):
    labels = labels if isinstance(labels, (tuple, list)) else (None,) * len(values)
    return zip(values, labels)


def _as_size(value, labels) -> SizeOf:
    return labels if isinstance(labels, SizeOf) else SizeOf(value)


def _flat(labels) -> list[SizeOf]:
    if isinstance(labels, SizeOf):
        return [labels]
    if isinstance(labels, (tuple, list)):
        return [s for item in labels for s in _flat(item)]
    if isinstance(labels, slice):
        return _flat([labels.start, labels.stop, labels.step])
    if isinstance(labels, dict):
        return _flat(list(labels.values()))
    return []


# -- where a computed size is used ---------------------------------------------------------------------
def record_uses(ctx: Context, node: fx.Node, name: str, shape_args: ShapeArgs | None, args, kwargs, largs, lkwargs,
                labels) -> None:
    """Case 3: remember every computed size that reads channels and other dims and that the rewrite leaves
    in place, at the ops that make tensors (arithmetic on sizes only passes the reads on). `shape_args`: what
    the op table says the rewrite replaces in this op's arguments."""
    if labels is None or isinstance(labels, SizeOf) or (
            isinstance(labels, tuple) and all(isinstance(item, SizeOf) for item in labels)):
        return
    left = _flat(list(largs) + list(lkwargs.values()))
    for size in _replaced(shape_args, args, kwargs, largs, lkwargs, labels):  # case 1
        left.remove(size)  # one occurrence: the same size may also sit where it is not replaced
    for size in left:
        if size.reads and size.other:  # case 3; case 2 when it reads channels only
            ctx.record.size_uses.append(SizeUse(node.name, name, size.reads))


def _replaced(shape_args: ShapeArgs | None, args, kwargs, largs, lkwargs, out_labels) -> list[SizeOf]:
    """The SizeOf arguments `ResizeShapeArgsPass` overwrites with constants (case 1); a shape computed whole
    (`x.reshape(y.shape)`) is written out element by element, so the same holds for its elements."""
    if shape_args is ShapeArgs.SHAPE and len(args) > 1:
        key = "size" if "size" in kwargs else "shape" if "shape" in kwargs else None
        value = kwargs[key] if key else args[1] if len(args) == 2 else args[1:]
        shape = lkwargs[key] if key else largs[1] if len(args) == 2 else largs[1:]
        return _at_channel_dims((shape,) if isinstance(value, int) else shape, out_labels, 0)  # view(n): one size
    if shape_args is ShapeArgs.UNFLATTEN and len(args) > 2:
        return _at_channel_dims(largs[2], out_labels, args[1] % args[0].dim())
    if shape_args not in (ShapeArgs.SECTIONS, ShapeArgs.BOUNDS, ShapeArgs.INDEX):
        return []
    if not args or not isinstance(args[0], torch.Tensor) or not isinstance(largs[0], torch.Tensor):
        return []
    vary = set(varying_dims(align(largs[0], args[0].dim())))
    if shape_args is ShapeArgs.SECTIONS and len(args) > 1:  # every section is rewritten
        dim = kwargs.get("dim", args[2] if len(args) > 2 else 0)
        return _flat(largs[1]) if dim % args[0].dim() in vary else []
    if shape_args is ShapeArgs.BOUNDS and len(args) > 2:  # start, length / index are rewritten
        return _flat(list(largs[2:])) if args[1] % args[0].dim() in vary else []
    if shape_args is ShapeArgs.INDEX and len(largs) > 1:
        return _indices_on_channels(args, largs, vary)
    return []


def _at_channel_dims(shape, out_labels, offset: int) -> list[SizeOf]:
    found = []
    for i, size in enumerate(shape if isinstance(shape, (tuple, list)) else ()):
        dim = offset + i
        if isinstance(size, SizeOf) and _carries(out_labels, dim):
            found.append(size)
    return found


def _carries(labels, dim: int) -> bool:
    """Whether output dim `dim` carries channels or shows a parameter dim (the rewrite resizes it)."""
    if isinstance(labels, torch.Tensor):
        return dim < labels.dim() and labels.shape[dim] > 1
    if isinstance(labels, ParamRef):
        return dim < len(labels.dims) and labels.dims[dim] is not None
    if isinstance(labels, Derived):
        return any(dim in varying_dims(axis.index) for axis in labels.axes)
    return False


def _indices_on_channels(args, largs, vary: set[int]) -> list[SizeOf]:
    values = args[1] if isinstance(args[1], tuple) else (args[1],)
    items = largs[1] if isinstance(args[1], tuple) else (largs[1],)
    consumed = sum(1 for it in values if it is not None and it is not Ellipsis)
    found, dim = [], 0
    for value, item in zip(values, items):
        if value is Ellipsis:
            dim += args[0].dim() - consumed
        elif value is not None:
            if dim in vary and isinstance(value, (int, slice)):
                found.extend(_flat(item))
            dim += 1
    return found


def settle_sizes(ctx: Context) -> bool:
    """Case 3: freeze the channels of every dim whose size is used in place and could shrink (its classes
    differ along it); True when something was frozen."""
    changed = False
    for use in ctx.record.size_uses:
        for read in use.reads:
            labels, dim = read.labels, read.dim
            if read.param is not None:
                axes = ctx.record.param_axes.get(read.param)
                labels, dim = (axes[read.dim], 0) if axes and axes[read.dim] is not None else (None, 0)
            if labels is None:
                continue
            roots = torch.from_numpy(ctx.space.roots()[labels.numpy()])
            if bool((roots == roots.narrow(dim, 0, 1)).all()):
                continue
            ctx.space.freeze(labels, use.node, f"{use.op} uses a size read off a dim that carries channels "
                             "(x.shape, x.size()), which pruning would change")
            changed = True
    return changed


__all__ = ["SizeOf", "SizeRead", "SizeUse", "record_uses", "size_labels", "settle_sizes"]

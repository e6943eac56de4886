"""ResizeShapeArgsPass: rewrite the sizes that forward code passes to ops, after channels are pruned.

fx bakes Python ints (`self.num_heads`, `C // groups`) into the graph, so the rewrite updates them here and
the user never has to. Which case an op gets is its op table entry's `shape_args`. Cases:
1. view / reshape / expand / unflatten: every output dim that carries channels gets its new size (-1 stays);
   a view of a parameter (`gamma.view(C, 1, 1)`) likewise, each dim showing a pruned parameter dim;
2. split / chunk: section sizes become the surviving counts per section (chunk turns into split);
3. narrow / select / integer and slice indexing: bounds move to where the surviving channels now sit;
4. functional layer_norm / group_norm: normalized_shape and a per-channel group count follow the width;
5. functional depthwise conv / conv_transpose (`groups` = input channels): `groups` follows the width; any
   other group count stays, since the analysis kept every group equally wide;
6. a size computed at run time (a node: `x.shape[1] // 2`) is read at its example value where a case above
   rewrites it; anywhere else, one that reads channel dims only is pinned to its example value (what the
   masked reference computes with), and one that reads no channel, or channels the analysis froze
   because it also reads the batch, stays a node (cascomp.ir.rules_sizes). A whole shape passed as one
   node (`x.reshape(y.shape)`) is written out element by element, by the same rule. A dim that shrinks
   whose size is computed from the batch or space as well (`B * C * patches` with C a constant, as
   torch.export writes MobileViT's unfolding) stays computed, scaled by new / old.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx

from cascomp.ir.context import Record
from cascomp.ir.keep import kept_along, kept_before, new_size, parameter_view_sizes
from cascomp.ir.labels import Derived, ParamRef
from cascomp.ir.op_table import function_op, op_name
from cascomp.ir.ops import ShapeArgs
from cascomp.ir.rules_sizes import SizeOf
from cascomp.passes.base import Pass, PassResult


class ResizeShapeArgsPass(Pass):
    def __init__(self, record: Record, label_keep: torch.Tensor) -> None:
        self.record = record
        self.label_keep = label_keep

    def call(self, gm: fx.GraphModule) -> PassResult:
        modified = False
        for node in list(gm.graph.nodes):
            if node.op not in ("call_function", "call_method", "call_module"):
                continue
            before = (node.args, dict(node.kwargs), node.target)
            source = node.args[0].name if node.args and isinstance(node.args[0], fx.Node) else None
            labels = self.record.labels.get(source)
            name = op_name(node) if node.op != "call_module" else ""
            shape_args = function_op(name).shape_args if name else None
            if shape_args is ShapeArgs.SHAPE and isinstance(labels, (ParamRef, Derived)):  # case 1
                self._resize_out_dims(node)
            elif shape_args is not None and isinstance(labels, torch.Tensor):
                self._rewrite(gm, node, name, shape_args, labels, self.record.shapes[source])
            self._pin_sizes(node)
            modified |= before != (node.args, dict(node.kwargs), node.target)
        return PassResult(gm, modified)

    def _pin_sizes(self, node: fx.Node) -> None:
        """Case 6: a size computed from channel dims only, still an argument after the cases above, becomes
        its example value where the node makes a tensor (size arithmetic itself is left as it is)."""
        own = self.record.labels.get(node.name)
        if isinstance(own, SizeOf) or (isinstance(own, tuple) and own and isinstance(own[0], SizeOf)):
            return

        def pin(arg: fx.Node):
            labels = self.record.labels.get(arg.name)
            return labels.value if isinstance(labels, SizeOf) and labels.pinned else arg

        node.args, node.kwargs = fx.node.map_arg(node.args, pin), fx.node.map_arg(node.kwargs, pin)

    def _rewrite(self, gm, node: fx.Node, name: str, shape_args: ShapeArgs, labels: torch.Tensor,
                 shape: tuple) -> None:
        """The rewrite the op table's `shape_args` names."""
        if shape_args is ShapeArgs.SHAPE:  # case 1
            self._resize_out_dims(node)
        elif shape_args is ShapeArgs.UNFLATTEN:
            self._unflatten(node)
        elif shape_args is ShapeArgs.SECTIONS:  # case 2
            self._split(gm, node, name, labels, shape)
        elif shape_args in (ShapeArgs.BOUNDS, ShapeArgs.INDEX):  # case 3
            self._index(node, name, labels, shape)
        elif shape_args is ShapeArgs.NORMALIZED_SHAPE:  # case 4
            normalized = self._value(_get(node, 1, "normalized_shape", None))
            normalized = [normalized] if isinstance(normalized, int) else list(normalized)
            normalized[-1] = new_size(labels, len(shape) - 1, shape[-1], self.label_keep)
            _set(node, 1, "normalized_shape", tuple(normalized))
        elif shape_args is ShapeArgs.NUM_GROUPS and self._value(_get(node, 1, "num_groups", None)) == shape[1]:
            _set(node, 1, "num_groups", new_size(labels, 1, shape[1], self.label_keep))
        elif shape_args is ShapeArgs.GROUPS and 1 < self._value(_get(node, 6, "groups", 1)) == shape[1]:  # case 5
            _set(node, 6, "groups", new_size(labels, 1, shape[1], self.label_keep))

    def _value(self, arg):
        """Case 6: the example value of a size computed by a node; anything else as it is."""
        if isinstance(arg, fx.Node):
            labels = self.record.labels.get(arg.name)
            if isinstance(labels, tuple) and labels and all(isinstance(item, SizeOf) for item in labels):
                return tuple(item.value for item in labels)  # a shape
            return labels.value if isinstance(labels, SizeOf) else arg
        if isinstance(arg, (tuple, list)):
            return type(arg)(self._value(a) for a in arg)
        if isinstance(arg, slice):
            return slice(self._value(arg.start), self._value(arg.stop), self._value(arg.step))
        return arg

    def _out_sizes(self, node: fx.Node) -> list[int | None]:
        """New size of each output dim that carries channels (or shows a pruned parameter dim) and loses
        some, None for the others: a dim that keeps its size keeps the argument the code gave for it, so a
        size computed from the batch (`B * self.num_heads` on a dim that mixes batch and frozen heads) stays
        computed rather than becoming the example's value."""
        labels, shape = self.record.labels[node.name], self.record.shapes[node.name]
        if isinstance(labels, (ParamRef, Derived)):  # computed from parameters (cascomp.ir.rules_params)
            return parameter_view_sizes(self.record.param_axes, self.label_keep, labels, shape)
        sizes = [new_size(labels, d, shape[d], self.label_keep) if labels.shape[d] > 1 else None
                 for d in range(len(shape))]
        return [None if size == shape[d] else size for d, size in enumerate(sizes)]

    def _resize_out_dims(self, node: fx.Node) -> None:
        sizes = self._out_sizes(node)
        if "size" in node.kwargs or "shape" in node.kwargs:
            key = "size" if "size" in node.kwargs else "shape"
            node.kwargs = {**node.kwargs, key: self._shape(node, node.kwargs[key], sizes)}
        elif len(node.args) == 2 and isinstance(self._value(node.args[1]), (tuple, list)):
            node.args = (node.args[0], self._shape(node, node.args[1], sizes))
        else:
            node.args = (node.args[0],) + _replace(node.args[1:], sizes, lambda a, new: self._sized(node, a, new))

    def _shape(self, node: fx.Node, shape, sizes: list[int | None]):
        """A shape argument with the new sizes in. A shape computed whole (`x.reshape(y.shape)`, case 6) is
        written out: new sizes, pinned values, and for the sizes that stay computed, their element of it."""
        if not isinstance(shape, fx.Node):
            return _replace(shape, sizes, lambda a, new: self._sized(node, a, new))
        out = []
        for i, (size, new) in enumerate(zip(self.record.labels[shape.name], sizes)):
            if new is not None and not (size.value == -1 and not size.reads):
                if size.other and not size.pinned:
                    with node.graph.inserting_before(node):
                        item = node.graph.call_function(operator.getitem, (shape, i))
                    new = self._scaled(node, item, size, new)
                out.append(new)
            elif size.pinned or not size.other:
                out.append(size.value)
            else:
                with node.graph.inserting_before(node):
                    out.append(node.graph.call_function(operator.getitem, (shape, i)))
        return tuple(out)

    def _sized(self, node: fx.Node, arg, new: int):
        """The argument for a dim that carries channels and shrinks to `new` at the example: a size computed
        from the batch or a spatial dim as well (`B * C * patches`, where torch.export made C a constant) keeps
        being computed, scaled by new / old, so the batch stays dynamic; anything else becomes `new`."""
        labels = self.record.labels.get(arg.name) if isinstance(arg, fx.Node) else None
        if isinstance(labels, SizeOf) and labels.other and not labels.pinned:
            return self._scaled(node, arg, labels, new)
        return new

    @staticmethod
    def _scaled(node: fx.Node, arg: fx.Node, size: SizeOf, new: int):
        """`arg * new // old` before `node`: exact where the dim is the batch (or space) times a part that
        holds the channels, as a merged batch-and-channels dim is."""
        if not isinstance(size.value, int) or size.value <= 0:
            return new
        with node.graph.inserting_before(node):
            product = node.graph.call_function(operator.mul, (arg, new))
            return node.graph.call_function(operator.floordiv, (product, size.value))

    def _unflatten(self, node: fx.Node) -> None:
        dim = node.args[1] if len(node.args) > 1 else node.kwargs["dim"]
        dim = dim % len(self.record.shapes[node.args[0].name])
        sizes = self._out_sizes(node)
        old = node.args[2] if len(node.args) > 2 else node.kwargs["sizes"]
        new = self._shape(node, old, sizes[dim:dim + len(self._value(old))])
        node.args = (node.args[0], node.args[1], new) if len(node.args) > 2 else node.args
        if "sizes" in node.kwargs:
            node.kwargs = {**node.kwargs, "sizes": new}

    def _split(self, gm, node: fx.Node, name: str, labels, shape) -> None:
        dim = self._value(_get(node, 2, "dim", 0)) % len(shape)
        if labels.shape[dim] == 1:
            return
        sections = [part[dim] for part in self.record.shapes[node.name]]  # what the op made, however asked
        keep = kept_along(labels, dim, self.label_keep)
        bounds = torch.tensor([0] + sections).cumsum(0).tolist()
        new = [int(keep[a:b].sum()) for a, b in zip(bounds[:-1], bounds[1:])]
        node.target, node.op = torch.split, "call_function"
        node.args, node.kwargs = (node.args[0], new, dim), {}

    def _index(self, node: fx.Node, name: str, labels, shape) -> None:
        if name == "narrow":
            dim = node.args[1] % len(shape)
            start, length = self._value(node.args[2]), self._value(node.args[3])
            new_start = kept_before(labels, dim, start, self.label_keep)
            new_len = kept_before(labels, dim, start + length, self.label_keep) - new_start
            node.args = (node.args[0], node.args[1], new_start, new_len)
        elif name == "select":
            dim, index = node.args[1] % len(shape), self._value(node.args[2]) % shape[node.args[1]]
            node.args = (node.args[0], node.args[1], kept_before(labels, dim, index, self.label_keep))
        elif isinstance(self._value(node.args[1]), (tuple, slice, int)) or node.args[1] is Ellipsis:
            node.args = (node.args[0], self._reindex(node.args[1], labels, shape))

    def _reindex(self, idx, labels, shape):
        items = idx if isinstance(idx, tuple) else (idx,)
        consumed = sum(1 for it in items if it is not None and it is not Ellipsis)
        out, dim = [], 0
        for item in items:
            if item is Ellipsis:
                dim += len(shape) - consumed
            elif item is not None:
                if dim < labels.dim() and labels.shape[dim] > 1:
                    item = self._move(self._value(item), labels, dim, shape[dim])
                dim += 1
            out.append(item)
        return tuple(out) if isinstance(idx, tuple) else out[0]

    def _move(self, item, labels, dim: int, size: int):
        if isinstance(item, int):
            return kept_before(labels, dim, item % size, self.label_keep)
        if isinstance(item, slice):
            bound = lambda b: None if b is None else kept_before(labels, dim, min(max(b % size if b < 0 else b, 0), size), self.label_keep)  # noqa: E731
            return slice(bound(item.start), bound(item.stop), item.step)
        return item


def _replace(old, sizes: list[int | None], sized=lambda arg, new: new):
    """Put the new sizes into a shape argument (`sized(argument, new size)` for a changed one), keeping -1 and
    the dims that carry no channels."""
    if not isinstance(old, (tuple, list)):  # case 6: a shape computed by a node stays
        return old
    return type(old)(a if (s is None or (isinstance(a, int) and a == -1)) else sized(a, s) for a, s in zip(old, sizes))


def _set(node: fx.Node, position: int, name: str, value) -> None:
    """Replace an argument where the caller wrote it: by position or by keyword."""
    if len(node.args) > position:
        node.args = node.args[:position] + (value,) + node.args[position + 1:]
    else:
        node.kwargs = {**node.kwargs, name: value}


def _get(node: fx.Node, position: int, name: str, default):
    if name in node.kwargs:
        return node.kwargs[name]
    return node.args[position] if len(node.args) > position else default

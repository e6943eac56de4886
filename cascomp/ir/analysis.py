"""Channel dependency analysis: run the traced model once, propagating channel labels beside the values.

`analyze(gm, example_inputs)` returns the `Record` of facts plus the label space; `cascomp.ir.groups` turns
them into `ChannelGroup`s. The analysis never changes the graph and never writes `node.meta`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
from torch.utils.flop_counter import FlopCounterMode

from cascomp.errors import AnalysisError
from cascomp.ir import dispatch, op_table, rules_sizes
from cascomp.ir.context import OUTPUT, Context
from cascomp.ir.labels import ParamRef, frozen_like


class _Propagator(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, ctx: Context) -> None:
        super().__init__(gm, garbage_collect_values=True)
        self.ctx = ctx
        self.labels: dict[fx.Node, Any] = {}

    def run_node(self, node: fx.Node) -> Any:
        # Interpreter.run_node without its per-node context (it attributes errors for re-tracing, which never
        # happens here), fetching the arguments once for both the op and its rule
        try:
            args, kwargs = self.fetch_args_kwargs_from_env(node)
            value = getattr(self, node.op)(node.target, args, kwargs)
        except Exception as error:
            raise AnalysisError(f"running the traced model failed at node {node.name!r}: {type(error).__name__}: "
                                f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}; check that the "
                                "example inputs have the shapes and dtypes the model expects") from error
        self.ctx.node = node
        try:
            labels = self._rule(node, value, args, kwargs)
        except Exception as error:  # a bug in a rule must name the node it broke on
            raise AnalysisError(f"channel analysis failed at {self.ctx.where}: {type(error).__name__}: {error}; "
                                "please report this with the model (CASCOMP_DEBUG=1 shows the traceback)") from error
        self.labels[node] = labels
        self.ctx.record.labels[node.name] = labels
        self.ctx.record.shapes[node.name] = _shapes(value)
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            self.ctx.record.floating.add(node.name)
        return value

    def call_module(self, target, args, kwargs) -> Any:
        return self.ctx.module(target)(*args, **kwargs)  # a dict lookup where fetch_attr walks the path

    def _rule(self, node: fx.Node, value: Any, args: tuple, kwargs: dict) -> Any:
        if node.op == "placeholder":
            return self.ctx.frozen_output(value)
        if node.op == "get_attr":
            return ParamRef(str(node.target), tuple(range(value.dim()))) if isinstance(value, torch.Tensor) else None
        if node.op == "output":
            self.ctx.freeze(fx.node.map_arg(node.args[0], self.labels.get), OUTPUT)
            return None
        largs = fx.node.map_arg(node.args, self.labels.get)
        lkwargs = fx.node.map_arg(node.kwargs, self.labels.get)
        largs = tuple(_literal_labels(a, la) for a, la in zip(args, largs))
        uncounted = len(self.ctx.record.uncounted)
        if node.op == "call_module":
            labels = dispatch.run_module(self.ctx, node, args, kwargs, largs, lkwargs, value)
        else:
            labels = dispatch.run_function(self.ctx, node, args, kwargs, largs, lkwargs, value)
        if len(self.ctx.record.uncounted) > uncounted:
            self._count_opaque(node, args, kwargs, uncounted)
        name = "module" if node.op == "call_module" else op_table.op_name(node)
        shape_args = None if node.op == "call_module" else op_table.function_op(name).shape_args
        rules_sizes.record_uses(self.ctx, node, name, shape_args, args, kwargs, largs, lkwargs, labels)
        return labels

    def _count_opaque(self, node: fx.Node, args, kwargs, first: int) -> None:
        """An op the rules do not understand froze its channels, but its multiply-adds still count: run it
        again under torch's FLOP counter (a kept-whole submodule, a function with a weight) and record them
        as a constant. What the counter cannot run stays in `record.uncounted` (the cost is then a bound)."""
        try:
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                if node.op == "call_module":
                    self.fetch_attr(str(node.target))(*args, **kwargs)
                elif node.op == "call_method":
                    getattr(args[0], str(node.target))(*args[1:], **kwargs)
                else:
                    node.target(*args, **kwargs)
        except Exception:  # whatever the op raises when run again, its cost stays unknown, and is said to be
            return
        flops = counter.get_total_flops()
        if flops:
            self.ctx.macs(flops / 2)
            self.ctx.record.counted_opaque.extend(self.ctx.record.uncounted[first:])
            del self.ctx.record.uncounted[first:]


def _literal_labels(value: Any, labels: Any) -> Any:
    """Tensors that are constants in the graph (not produced by a node) carry no prunable channel."""
    if labels is None and isinstance(value, torch.Tensor):
        return frozen_like(value)
    if isinstance(value, (list, tuple)) and isinstance(labels, (list, tuple)):
        return type(labels)(_literal_labels(v, la) for v, la in zip(value, labels))
    return labels


def _shapes(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, (tuple, list)):
        return tuple(_shapes(v) for v in value)
    return None


def analyze(gm: fx.GraphModule, example_inputs: tuple, example_kwargs: dict | None = None) -> Context:
    """Propagate labels through `gm` on the example inputs and settle the rectangularity constraints.

    `example_kwargs` go to the placeholders of those names (fx's Interpreter takes positional inputs only).
    """
    inputs = placeholder_inputs(gm, tuple(example_inputs), dict(example_kwargs or {}))
    tensors = [x for x in inputs if isinstance(x, torch.Tensor)]
    batch = tensors[0].shape[0] if tensors and tensors[0].dim() else 1
    ctx = Context(gm, batch, op_table.reads_sizes_only)
    with torch.no_grad():
        _Propagator(gm, ctx).run(*inputs)
    settle(ctx)
    return ctx


def placeholder_inputs(gm: fx.GraphModule, args: tuple, kwargs: dict) -> tuple:
    """Line keyword inputs up with the graph's placeholders; a placeholder given nothing takes its default."""
    if not kwargs:
        return args
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder" and not str(n.target).startswith("*")]
    names = [str(n.target) for n in placeholders]
    unknown = sorted(set(kwargs) - set(names[len(args):]))
    if unknown:
        raise AnalysisError(f"example_kwargs {unknown} match no input of the traced graph after the "
                            f"{len(args)} positional ones (inputs: {', '.join(names)}); pass them by position")
    inputs = list(args)
    for node in placeholders[len(args):]:
        if str(node.target) not in kwargs and not node.args:
            raise AnalysisError(f"no example value for input {node.target!r} of the traced graph; pass one")
        inputs.append(kwargs[node.target] if node.target in kwargs else node.args[0])
    return tuple(inputs)


def settle(ctx: Context) -> None:
    """Add the ties that keep every pruned tensor rectangular.

    Cases:
    1. a tensor whose channels vary along several dims (heads x head_dim, channel shuffle groups) must keep
       a product of per-dim selections: all dims but one are tied, keeping free the dim with most positions;
    2. an integer index into a channel dim is only safe when every slice holds the same classes;
    3. a size read off a dim that carries channels and used where the rewrite does not replace it must
       not change: the channels of that dim freeze unless their classes are constant along it.
    """
    space = ctx.space
    for _ in range(8):
        changed = False
        for _node, labels in ctx.record.grids:  # case 1
            roots = torch.from_numpy(space.roots()[labels.numpy()])
            vary = [d for d in range(roots.dim()) if roots.shape[d] > 1 and not _constant_along(roots, d)]
            if len(vary) < 2:
                continue
            free = max(vary, key=lambda d: labels.shape[d])
            slices = labels.movedim(free, 0).reshape(labels.shape[free], -1)
            space.unify(slices, slices[:, :1])  # each slice along `free` becomes one class
            changed = True
        for fact in ctx.record.selects:  # case 2
            roots = space.roots()
            inside = set(roots[fact.labels.reshape(-1).numpy()].tolist())
            everywhere = set(roots[fact.others.reshape(-1).numpy()].tolist())
            if inside != everywhere and inside != {int(roots[0])}:
                ctx.node = None
                space.freeze(fact.labels, fact.node, "integer index into a channel dim")
                changed = True
        changed |= rules_sizes.settle_sizes(ctx)  # case 3
        if not changed:
            return
    raise AnalysisError("channel constraints did not settle after 8 rounds; please report this model")


def _constant_along(tensor: torch.Tensor, dim: int) -> bool:
    return bool((tensor == tensor.narrow(dim, 0, 1)).all())

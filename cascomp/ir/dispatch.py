"""Which rule each graph node gets: its op table entry's (cascomp.ir.op_table), after the checks that hold
for every op. An op without an entry, or whose entry has no rule, freezes the channels it touches (reported
with its name) instead of failing.

Functions and tensor methods, in order:
1. a node whose value holds no tensor (a size, a shape, a number computed from them): rules_sizes;
2. an op whose operands are parameters and constants alone, followed on them (`on_parameters`):
   rules_params (weight standardisation, gains);
3. a tensor computed from parameters meeting activations: an elementwise op (`on_parameters` COMBINE) ties
   them (rules_params.meet), a conv or linear layer (`weight_from_parameters`) takes it as its weight, any
   other op freezes what it touches;
4. the entry's channel rule.
Modules, in order:
1. a module whose class the table lists through a base class only and whose forward is not torch's reaches
   here only when torch.fx could not trace that forward (it was kept whole): its layer type says nothing of
   what it computes, so it is frozen (a class registered itself is trusted);
2. a pointwise module passes on whatever its input carries;
3. a module reading a tensor computed from parameters, or a parametrized one (kept whole: its weight is
   computed, not a parameter), is frozen;
4. the entry's channel rule.
"""

from __future__ import annotations

import torch
import torch.fx as fx
from torch.nn.utils import parametrize

from cascomp.ir import op_table
from cascomp.ir import rules_params as params
from cascomp.ir import rules_sizes as sizes
from cascomp.ir.context import Context
from cascomp.ir.labels import Derived
from cascomp.ir.ops import Call, Kind, ParamRule
from cascomp.ir.rules_modules import unknown_module
from cascomp.ir.rules_ops import reapply, unknown, unknown_function


def run_function(ctx: Context, node: fx.Node, args, kwargs, largs, lkwargs, out):
    """Rule for call_function and call_method nodes (function cases 1-4)."""
    name = op_table.op_name(node)
    if not _has_tensor(out):  # case 1
        return sizes.size_labels(name, args, kwargs, largs, lkwargs, out)
    op = op_table.function_op(name)
    call = Call(ctx, node, name, args, kwargs, largs, lkwargs, out)
    operands = params.tensor_operands(node, args, kwargs, largs, lkwargs)
    if op.on_parameters is not None and params.claims(ctx, op.on_parameters, operands):  # case 2
        if op.kind is Kind.INDEX and isinstance(call.lfirst, (tuple, list)):
            return call.lfirst[args[1]]
        result = params.run(ctx, op.on_parameters, name, reapply(call), args, kwargs, largs, lkwargs, out)
        return result if result is not None else unknown_function(call)
    if any(isinstance(labels, Derived) for _, _, labels in operands):  # case 3
        if op.on_parameters is ParamRule.COMBINE:
            return params.meet(ctx, [(value, labels) for _, value, labels in operands], out)
        if not op.weight_from_parameters:
            return unknown(ctx, f"function {name!r} of a tensor computed from parameters", call.operand_labels, out)
    return op.rule(call) if op.rule is not None else unknown_function(call)  # case 4


def run_module(ctx: Context, node: fx.Node, args, kwargs, largs, lkwargs, out):
    """Rule for call_module nodes (module cases 1-4)."""
    module = ctx.module(node.target)
    cls = type(module)
    op = op_table.TABLE.module(cls)
    call = Call(ctx, node, "module", args, kwargs, largs, lkwargs, out, module, str(node.target))
    if not op_table.TABLE.registered(cls) and not cls.forward.__module__.startswith("torch."):  # case 1
        return unknown(ctx, f"module {call.path!r} ({cls.__name__}, kept whole: torch.fx cannot trace its forward, "
                            "torch.export did not capture it)",
                       call.operand_labels, out, module)
    if op.kind is Kind.POINTWISE:  # case 2
        return op.rule(call)
    if any(isinstance(labels, Derived) for labels in call.operand_labels):  # case 3
        return unknown(ctx, f"module {call.path!r} ({cls.__name__}) on a tensor computed from parameters",
                       call.operand_labels, out, module)
    if parametrize.is_parametrized(module):
        return unknown(ctx, f"module {call.path!r} (parametrized {cls.__name__})", call.operand_labels, out, module)
    return op.rule(call) if op.rule is not None else unknown_module(call)  # case 4


def _has_tensor(value) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (tuple, list)):
        return any(_has_tensor(v) for v in value)
    return False

"""Copying modules as `copy.deepcopy` does, at a fraction of its cost.

`copy.deepcopy` rebuilds every module through the pickle protocol, including the dozen hook dictionaries
each one carries (empty in nearly every model): on a network of a few hundred modules that costs more than
tracing it. `copy_module` copies the same state with the same memo semantics, but builds each plain module
directly:
1. a module whose class changes what is copied (its own `__deepcopy__`, `__reduce__`, `__reduce_ex__` or
   `__getstate__`, or slots: parametrized modules, GraphModules, scripted modules) is left to
   `copy.deepcopy`; the state of any other goes through its `__setstate__`, as deepcopy passes it;
2. an empty dict, OrderedDict or set becomes a new empty one; a string, number, None or a tuple of them
   (kernel sizes, strides) is kept: that is what deepcopy returns for them;
3. submodules are copied the same way, through the shared memo, so a module reachable twice is copied once;
4. parameters and buffers are deep-copied, or with `share_tensors` kept as they are (the caller replaces
   the ones it changes);
5. every other attribute goes to `copy.deepcopy` with the shared memo.
`copy_graph_module` is `copy.deepcopy` of a GraphModule with its modules copied so; `copy_for_rewrite` is the
working copy `apply_plan` rewrites, whose code is generated once, after the rewrite.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

import torch.fx as fx
import torch.nn as nn

_ATOMS = (str, int, float, bool, type(None))  # exact types: a subclass may copy itself differently
_CONTAINERS = (dict, OrderedDict, set)


def copy_module(module: nn.Module, *, share_tensors: bool = False) -> nn.Module:
    """A deep copy of `module`; with `share_tensors`, every parameter and buffer is the original tensor."""
    return _copy(module, _memo(module, share_tensors))


def copy_graph_module(gm: fx.GraphModule, *, share_tensors: bool = False) -> fx.GraphModule:
    """`copy.deepcopy(gm)` (its graph copied, its code generated again), with the submodules copied as
    `copy_module` does: they are in the memo when deepcopy reaches them, so it takes them from there."""
    memo = _memo(gm, share_tensors)
    for child in gm.children():
        _copy(child, memo)
    return copy.deepcopy(gm, memo)


def copy_for_rewrite(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of `gm` to rewrite, sharing its tensors, whose code is not generated yet: the caller changes its
    graph and recompiles it before anything runs it (`run_passes` does). GraphModule() and deepcopy generate
    and compile code that a rewrite replaces unread, which costs more than copying the modules does; so the
    copy is built around an empty graph, the module tree copied as `copy_module` copies it, the nodes after.
    Hooks on `gm` itself are not copied (a traced module has none)."""
    memo = _memo(gm, share_tensors=True)
    source = gm.graph
    graph = fx.Graph(tracer_cls=source._tracer_cls, tracer_extras=source._tracer_extras)
    copied = fx.GraphModule(nn.Module(), graph)  # nothing to generate for an empty graph; named as deepcopy names
    copied.train(gm.training)
    for name, child in gm.named_children():
        copied.add_module(name, _copy(child, memo))
    for name, parameter in gm.named_parameters(recurse=False):
        copied.register_parameter(name, parameter)
    for name, buffer in gm.named_buffers(recurse=False):
        copied.register_buffer(name, buffer, persistent=name not in gm._non_persistent_buffers_set)
    for node in source.nodes:  # other objects read by get_attr on the root (constants fx made attributes)
        if node.op == "get_attr" and "." not in node.target and not hasattr(copied, node.target):
            setattr(copied, node.target, copy.deepcopy(getattr(gm, node.target), memo))
    output = graph.graph_copy(source, {}, return_output_node=True)
    graph.set_codegen(copy.deepcopy(source._codegen))
    if output is not None:
        value, node = output
        graph.output(value, type_expr=getattr(node, "type", None)).meta = copy.copy(node.meta)
    copied.meta = copy.deepcopy(gm.meta, memo)
    return copied


def _memo(module: nn.Module, share_tensors: bool) -> dict[int, Any]:
    if not share_tensors:
        return {}
    return {id(t): t for t in [*module.parameters(), *module.buffers()]}


def _copy(module: nn.Module, memo: dict[int, Any]) -> nn.Module:
    if id(module) in memo:
        return memo[id(module)]
    cls = type(module)
    if not _plain(cls):  # case 1
        return copy.deepcopy(module, memo)
    result = cls.__new__(cls)
    memo[id(module)] = result
    state = {}
    for key, value in module.__getstate__().items():
        if key == "_modules":  # case 3
            state[key] = {name: None if child is None else _copy(child, memo) for name, child in value.items()}
        elif key in ("_parameters", "_buffers"):  # case 4
            state[key] = {name: copy.deepcopy(tensor, memo) for name, tensor in value.items()}
        elif type(value) in _ATOMS or (type(value) is tuple and all(type(v) in _ATOMS for v in value)):
            state[key] = value  # case 2
        elif type(value) in _CONTAINERS and not value:  # case 2
            state[key] = type(value)()
        else:  # case 5
            state[key] = copy.deepcopy(value, memo)
    result.__setstate__(state)
    return result


_PLAIN: dict[type, bool] = {}


def _plain(cls: type) -> bool:
    """Does `cls` copy and pickle as nn.Module does (case 1)? Cached per class."""
    if cls not in _PLAIN:
        # a __setstate__ of its own is fine (convolutions fill in attributes of old checkpoints there):
        # deepcopy hands the copied state to it, and so does `_copy`
        same = (getattr(cls, "__deepcopy__", None) is None and cls.__reduce_ex__ is object.__reduce_ex__
                and cls.__reduce__ is object.__reduce__ and cls.__getstate__ is nn.Module.__getstate__)
        _PLAIN[cls] = same and not any("__slots__" in vars(base) for base in cls.__mro__[:-1])
    return _PLAIN[cls]

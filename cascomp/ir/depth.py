"""Depth removal: which channel groups may keep no channel, because zeroing them removes a branch exactly.

With every channel of a group G zero, the tensors of G are zero in the masked reference, a dense layer fed
by them outputs its bias at every position, and ops that map per-channel constants to per-channel
constants keep it so until it is merged into the rest of the network. The rewrite then drops the branch
and merges a constant buffer instead. `removable_branches` finds the groups for which that is exact.
A group is *removable* when all of these hold (otherwise it is refused, with the reason):
1. every tensor that carries a channel of G carries only G's channels, along at most one dim, is
   floating, is made by an op that maps zeros to finite values, and no LayerNorm, attention or
   concatenation sees it; none of them is a model output;
2. every other consumer of those tensors is a dense convolution or linear module (groups=1, one input):
   its output is then its bias (or zero) at every position, a per-channel constant (the *frontier*);
3. from there on, a *chain* of ops that map per-channel constants to per-channel constants: eval
   BatchNorm over dim 1, activations, dropout, identity, arithmetic with Python numbers or with parameters
   that broadcast per channel; every chain tensor keeps the frontier's shape;
4. a chain ends where it is merged (add, sub, mul; never in place into the constant) with a tensor that
   does not depend on G and has the merge's full shape (a *fold*: the constant, shaped (1, C, 1, ...),
   broadcasts there); chain values may also feed tensors of G (a squeeze-excite gate), which go anyway;
5. parameters that follow G's channels are read by nothing that stays;
6. a merge partner is not itself a constant of another removable group (two folded constants would no
   longer broadcast to the merge's shape).
What goes when G keeps nothing is `Branch.removed` plus every node then left without a user:
`dead_nodes` (in cascomp.ir.graph_index) gives that closure to both the cost model and RemoveBranchesPass,
so predicted and measured cost agree.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn as nn

from cascomp.ir.context import Record
from cascomp.ir.graph_index import (by_group, dead_closure, describe_node, groups_of_nodes, groups_of_params,
                                    tensor_users)
from cascomp.ir.groups import Grouping
from cascomp.ir.labels import ParamRef, varying_dims
from cascomp.ir.op_table import op_of


@dataclass(frozen=True)
class Fold:
    """Chain node `node` is replaced, where the merges `merges` read it, by its value at one position
    along every dim but `channel_dim`."""

    node: str
    merges: tuple[str, ...]
    channel_dim: int


@dataclass(frozen=True)
class Branch:
    """What keeping no channel of `group` removes: its `zero` tensors and the `constants` made from them
    (the `frontier` layers and the chain after them), and where the constant is merged back (`folds`)."""

    group: str
    zero: frozenset[str]
    constants: frozenset[str]
    frontier: tuple[str, ...]
    folds: tuple[Fold, ...]

    @property
    def removed(self) -> frozenset[str]:
        return self.zero | self.constants


@dataclass(frozen=True)
class DepthAnalysis:
    """Per group: the branch it removes when it keeps no channel, or why it may not keep none."""

    branches: dict[str, Branch]
    refused: dict[str, str]

    @property
    def removable(self) -> frozenset[str]:
        return frozenset(self.branches)

    def refusal(self, group: str) -> str | None:
        """Why `group` may not keep zero channels (None when it may)."""
        return None if group in self.branches else self.refused.get(group, "it is not a channel group")

    def zeroed(self, widths: dict[str, int]) -> tuple[Branch, ...]:
        """The branches a plan with these widths removes."""
        return tuple(branch for name, branch in self.branches.items() if widths.get(name) == 0)


def removable_branches(gm: fx.GraphModule, record: Record, grouping: Grouping) -> DepthAnalysis:
    """Cases 1-6 of the module docstring, for every group of `grouping`.

    Each group's scan starts at its own tensors and follows their users only, and every table is built
    once, so the work grows with the graph's size rather than with groups x nodes."""
    touched = groups_of_nodes(record, grouping)
    tensors_of_group = by_group(touched)
    params_of_group = by_group(groups_of_params(record, grouping))
    users = tensor_users(gm)
    nodes = {node.name: node for node in gm.graph.nodes}
    position = {node: index for index, node in enumerate(nodes.values())}
    modules = dict(gm.named_modules(remove_duplicate=False))  # get_submodule walks the path on every call
    branches, refused = {}, {}
    for index, group in enumerate(grouping.groups):
        zero = tensors_of_group.get(index, set())
        mixed = {name for name in zero if touched[name] != {index}}
        outcome = _Scan(gm, record, zero, mixed, nodes, position, modules).run(group.name)
        if isinstance(outcome, Branch):  # case 5
            dead = dead_closure(nodes[name] for name in outcome.removed if name in nodes)
            readers = {name: users.get(name, frozenset()) - dead for name in params_of_group.get(index, ())}
            staying = sorted((name, min(alive)) for name, alive in readers.items() if alive)
            if staying:
                outcome = (f"parameter {staying[0][0]!r} follows its channels and is also read by "
                           f"{staying[0][1]!r}, which stays")
        (branches if isinstance(outcome, Branch) else refused)[group.name] = outcome
    refused.update(_clashing_merges(branches, nodes))
    return DepthAnalysis({k: v for k, v in branches.items() if k not in refused}, refused)


def _clashing_merges(branches: dict[str, Branch], nodes: dict[str, fx.Node]) -> dict[str, str]:
    """Case 6: the groups whose branch is merged with a constant of another removable group."""
    order = {name: index for index, name in enumerate(branches)}
    owners: dict[str, list[str]] = {}
    for name, branch in branches.items():
        for constant in branch.constants:
            owners.setdefault(constant, []).append(name)
    refused = {}
    for name, branch in branches.items():
        partners = {i.name for fold in branch.folds for merge in fold.merges
                    for i in nodes[merge].all_input_nodes if i.name != fold.node}
        clash = sorted({other for partner in partners for other in owners.get(partner, ()) if other != name},
                       key=order.get)
        if clash:
            refused[name] = f"its branch is merged with the constant branch of group {clash[0]!r}"
    return refused


class _Scan:
    """One group's walk, in graph order, over its tensors and the nodes that read them or the constants made
    from them: zero tensors, frontier, chain, merges (cases 1-4). No other node can change the outcome."""

    def __init__(self, gm: fx.GraphModule, record: Record, zero: set[str], mixed: set[str],
                 nodes: dict[str, fx.Node], position: dict[fx.Node, int],
                 modules: dict[str, nn.Module]) -> None:
        self.gm, self.record, self.modules = gm, record, modules
        self.zero, self.mixed = zero, mixed
        self.nodes, self.position = nodes, position
        self.constants: dict[str, tuple[tuple[int, ...], int]] = {}  # node -> (shape, channel dim)
        self.frontier: list[str] = []
        self.merges: dict[str, list[str]] = {}  # constant node -> merges reading it

    def run(self, group: str) -> Branch | str:
        if not self.zero:
            return "no tensor carries its channels"
        queued = {self.nodes[name] for name in self.zero if name in self.nodes}
        pending = [(self.position[node], node) for node in queued]  # positions differ: no node compared
        heapq.heapify(pending)
        while pending:
            _, node = heapq.heappop(pending)
            problem = self._visit(node)
            if problem:
                return problem
            if node.name in self.zero or node.name in self.constants:
                for user in node.users:
                    if user not in queued:
                        queued.add(user)
                        heapq.heappush(pending, (self.position[user], user))
        folds = tuple(Fold(n, tuple(m), self.constants[n][1]) for n, m in self.merges.items())
        return Branch(group, frozenset(self.zero), frozenset(self.constants), tuple(self.frontier), folds)

    def _visit(self, node: fx.Node) -> str | None:
        inputs = node.all_input_nodes
        if node.name in self.mixed:  # case 1
            return f"{describe_node(self.gm, node)} holds its channels together with other channels"
        if node.name in self.zero:
            return _zero_problem(self.gm, self.modules, self.record, node)
        if any(i.name in self.zero for i in inputs):
            return self._frontier(node)  # case 2
        if any(i.name in self.constants for i in inputs):
            problem = self._chain(node)  # case 3
            return self._merge(node) if problem else None  # case 4
        return None

    def _frontier(self, node: fx.Node) -> str | None:
        if node.op == "output":
            return "its channels reach the model output"
        op = op_of(node, self.modules) if node.op == "call_module" else None
        dense = op is not None and op.dense is not None and op.dense(self.modules[str(node.target)])
        if not dense or len(node.all_input_nodes) != 1 or node.kwargs:
            return (f"its channels reach {describe_node(self.gm, node)}, which is not a dense convolution or "
                    "linear layer")
        shape = self.record.shapes.get(node.name)
        self.constants[node.name] = (shape, op.channel_dim % len(shape))
        self.frontier.append(node.name)
        return None

    def _chain(self, node: fx.Node) -> str | None:
        op = op_of(node, self.modules)
        if not op.chain:
            return "not a per-channel op"
        inputs = node.all_input_nodes
        known = {self.constants[i.name] for i in inputs if i.name in self.constants}
        shape, dim = next(iter(known))
        if len(known) > 1 or self.record.shapes.get(node.name) != shape:
            return f"{describe_node(self.gm, node)} changes the shape of the constant its branch becomes"
        if op.channel_dim is not None and dim != op.channel_dim % len(shape):  # BatchNorm: dim 1
            return f"{describe_node(self.gm, node)} normalises another dim than the constant's channels"
        for other in inputs:
            if other.name not in self.constants and not _per_channel_parameter(self.record, other, shape, dim):
                return f"{describe_node(self.gm, node)} combines the branch's constant with {other.name!r}"
        self.constants[node.name] = (shape, dim)
        return None

    def _merge(self, node: fx.Node) -> str | None:
        inputs = node.all_input_nodes
        op = op_of(node, self.modules) if node.op in ("call_function", "call_method") else None
        ours = [i for i in inputs if i.name in self.constants]
        others = [i for i in inputs if i.name not in self.constants]
        if node.op == "output":
            return "its branch reaches the model output without being merged"
        if op is None or not op.merge or len(ours) != 1 or len(others) != 1 or len(node.args) != 2:
            return (f"its branch reaches {describe_node(self.gm, node)}, which is neither a per-channel op "
                    "nor a residual merge")
        if op.in_place and node.args[0] is ours[0]:
            return f"{describe_node(self.gm, node)} adds into the branch's constant in place"
        shape = self.record.shapes.get(node.name)
        if not isinstance(shape, tuple) or self.record.shapes.get(others[0].name) != shape:
            return f"{describe_node(self.gm, node)} merges with a tensor of another shape than its result"
        self.merges.setdefault(ours[0].name, []).append(node.name)
        return None


def _zero_problem(gm: fx.GraphModule, modules: dict[str, nn.Module], record: Record,
                  node: fx.Node) -> str | None:
    labels = record.labels.get(node.name)
    if not isinstance(labels, torch.Tensor) or len(varying_dims(labels)) > 1:
        return f"{describe_node(gm, node)} holds its channels along several dims or in several outputs"
    if node.name not in record.floating:
        return f"{describe_node(gm, node)} holds its channels in a non-floating tensor"
    op = op_of(node, modules)
    divisor = node.args[1] if node.op != "call_module" and len(node.args) > 1 else None
    if op.zero_safe and not (op.divides and isinstance(divisor, fx.Node)):
        return None
    return f"{describe_node(gm, node)} would see only zeros in its channels and is not known to stay finite"


def _per_channel_parameter(record: Record, node: fx.Node, shape: tuple[int, ...], dim: int) -> bool:
    """A value computed from parameters only that broadcasts along every dim but the channel dim."""
    if not _parameter_expression(record, node):
        return False
    own = record.shapes.get(node.name)
    if not isinstance(own, tuple) or len(own) > len(shape):
        return False
    padded = (1,) * (len(shape) - len(own)) + own
    return all(size == 1 or (d == dim and size == shape[d]) for d, size in enumerate(padded))


def _parameter_expression(record: Record, node: fx.Node) -> bool:
    if node.op == "get_attr":
        return True
    return isinstance(record.labels.get(node.name), ParamRef) and all(
        _parameter_expression(record, i) for i in node.all_input_nodes)

"""What the propagation rules write to while the analysis walks the graph.

Rules never touch `node.meta`; they call these methods, and the analysis turns the record into typed
results (groups, cost terms, rewrite facts) at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.fx as fx

from cascomp.ir.labels import FROZEN, Derived, LabelSpace, ParamAxis, ParamRef, frozen_like


OUTPUT = "model output (every channel of the result is kept)"  # the reason the output's channels are frozen


@dataclass(frozen=True)
class MacsTerm:
    """MACs of one op for one sample: `scale` times the product of the kept counts of `factors`.

    A factor is a 1-D label vector (its kept count is the number of its positions whose class is kept)
    or a plain int.
    """

    node: str
    scale: float
    factors: tuple[torch.Tensor | int, ...]


@dataclass(frozen=True)
class SelectFact:
    """An integer index into a dim whose labels vary: the index moves when channels before it go."""

    node: str
    labels: torch.Tensor  # labels of the selected slice
    others: torch.Tensor  # labels of the whole indexed dim, for the check after grouping


@dataclass(frozen=True, eq=False)
class ParamStatistic:
    """A statistic over positions of parameter dims (weight standardisation: a mean or a norm over a conv
    weight's input channels). The masked reference computes it over the positions that survive, which is
    what the pruned parameter gives: `axes` (of node's first input, each along one dim of it) say which."""

    node: str
    axes: tuple[ParamAxis, ...]
    same_shape: bool  # a normalisation (output shaped like the input) rather than a reduction
    minimum: int = 1  # fewest positions it is defined over (2 for a variance with Bessel's correction)


@dataclass
class Record:
    """Everything the analysis learned, keyed by node name."""

    labels: dict[str, object] = field(default_factory=dict)
    shapes: dict[str, object] = field(default_factory=dict)
    param_axes: dict[str, list[torch.Tensor | None]] = field(default_factory=dict)
    macs: list[MacsTerm] = field(default_factory=list)
    grids: list[tuple[str, torch.Tensor]] = field(default_factory=list)
    selects: list[SelectFact] = field(default_factory=list)
    statistics: list[ParamStatistic] = field(default_factory=list)
    floating: set[str] = field(default_factory=set)
    # Ops the analysis did not understand that hold weights: their multiply-adds are missing from `macs`.
    uncounted: list[tuple[str, str]] = field(default_factory=list)  # (what, node)
    # Such ops whose multiply-adds were counted by running them (their channels are frozen all the same).
    counted_opaque: list[tuple[str, str]] = field(default_factory=list)  # (what, node)
    # Sizes computed from shapes and used where the rewrite does not replace them (rules_sizes.SizeUse).
    size_uses: list = field(default_factory=list)


class Context:
    """Handed to every rule: the label space, the modules, and the record being written."""

    def __init__(self, gm: fx.GraphModule, batch_size: int, reads_sizes_only: Callable[[fx.Node], bool]) -> None:
        self.gm = gm
        self._reads_sizes_only = reads_sizes_only  # the op table's size queries (x.shape): not a value read
        self.space = LabelSpace()
        self.record = Record()
        self.batch_size = batch_size
        self.node: fx.Node | None = None
        self._modules = dict(gm.named_modules(remove_duplicate=False))  # get_submodule walks the path each call
        self._params = dict(gm.named_parameters())
        self._params.update(dict(gm.named_buffers()))
        self._param_freezes: dict[tuple[str, int], tuple[str, str]] = {}  # (param, dim) -> (node, reason)
        self._from_inputs: set[fx.Node] | None = None

    # -- where we are -------------------------------------------------------------------------------------
    @property
    def where(self) -> str:
        node = self.node
        if node is None:
            return "<graph>"
        trace = node.meta.get("stack_trace") if node.meta else None
        line = ""
        if trace:
            lines = [ln.strip() for ln in trace.strip().splitlines() if ln.strip()]
            if lines:
                line = f" ({lines[-2] if len(lines) > 1 else lines[-1]})"
        return f"node {node.name!r}{line}"

    def module(self, target: str) -> torch.nn.Module:
        return self._modules[target] if target in self._modules else self.gm.get_submodule(target)

    def param(self, name: str) -> torch.Tensor:
        return self._params[name]

    def reads_inputs(self, node: fx.Node) -> bool:
        """Whether `node`'s value depends on the values of a model input; if not, it is computed from
        parameters and constants alone (sizes read off an input, `x.shape`, are not its values)."""
        if self._from_inputs is None:
            self._from_inputs = set()
            for n in self.gm.graph.nodes:
                if n.op == "placeholder" or (not self._reads_sizes_only(n) and n.op != "get_attr"
                                             and any(i in self._from_inputs for i in n.all_input_nodes)):
                    self._from_inputs.add(n)
        return node in self._from_inputs

    def has_param(self, name: str) -> bool:
        """A parameter or buffer (fx also reads tensor constants of the graph through get_attr)."""
        return name in self._params

    # -- facts ---------------------------------------------------------------------------------------------
    def freeze(self, labels: object, reason: str) -> None:
        if isinstance(labels, torch.Tensor):
            self.space.freeze(labels, self.node.name if self.node else "", reason)
        elif isinstance(labels, ParamRef):
            self.freeze_param(labels.name, reason)
        elif isinstance(labels, Derived):
            for axis in labels.axes:
                self.freeze_param_dim(axis.name, axis.dim, reason)
        elif isinstance(labels, (tuple, list)):
            for item in labels:
                self.freeze(item, reason)
        elif isinstance(labels, dict):  # a model returning a dict of outputs
            for item in labels.values():
                self.freeze(item, reason)

    def freeze_param(self, name: str, reason: str) -> None:
        if not self.has_param(name):  # a tensor constant: never pruned
            return
        for dim, size in enumerate(self.param(name).shape):
            if size > 1:
                self.freeze_param_dim(name, dim, reason)

    def freeze_param_dim(self, name: str, dim: int, reason: str) -> None:
        """Keep every position of `name` along `dim`. The reason is recorded for the channels linked there,
        now or later (`link_param`): a parameter frozen before it meets channels freezes them with it."""
        if (name, dim) in self._param_freezes or not self.has_param(name):
            return
        where = self.node.name if self.node else ""
        self._param_freezes[(name, dim)] = (where, reason)
        axes = self.record.param_axes.get(name)
        if axes is not None and axes[dim] is not None:
            self.space.freeze(axes[dim], where, reason)
        self.link_param(name, dim, torch.zeros(self.param(name).shape[dim], dtype=torch.int64))

    def link_param(self, name: str, dim: int, vector: torch.Tensor, reason: str | None = None) -> None:
        """Parameter `name`'s positions along `dim` follow the channel labels in `vector`."""
        param = self.param(name)
        size = param.shape[dim]
        if vector.numel() == 1 and size != 1:
            vector = vector.reshape(1).expand(size)
        vector = vector.reshape(-1).contiguous()
        if vector.numel() != size:
            raise AssertionError(f"{name} dim {dim}: {vector.numel()} labels for {size} positions")
        axes = self.record.param_axes.setdefault(name, [None] * param.dim())
        if axes[dim] is None:
            axes[dim] = vector
        else:
            self.space.unify(axes[dim], vector)
        if reason is None and (name, dim) in self._param_freezes:  # channels meeting a frozen parameter dim
            where, reason = self._param_freezes[(name, dim)]
            if bool((vector != FROZEN).any()):
                self.space.freeze(vector, where, reason)
        elif reason is not None and bool((vector != FROZEN).any()):
            self.space.freeze(vector, self.node.name if self.node else "", reason)

    def macs(self, scale: float, *factors: torch.Tensor | int) -> None:
        name = self.node.name if self.node else ""
        self.record.macs.append(MacsTerm(name, float(scale) / self.batch_size, tuple(factors)))

    def grid(self, labels: torch.Tensor) -> None:
        """Remember a label tensor that varies along several dims: it must stay rectangular when pruned."""
        if sum(1 for s in labels.shape if s > 1) >= 2 and self.node is not None:
            self.record.grids.append((self.node.name, labels))

    def frozen_output(self, value: object) -> object:
        if isinstance(value, torch.Tensor):
            return frozen_like(value)
        if isinstance(value, (tuple, list)):
            return type(value)(self.frozen_output(v) for v in value) if isinstance(value, tuple) else [
                self.frozen_output(v) for v in value
            ]
        return None

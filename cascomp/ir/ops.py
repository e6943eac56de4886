"""What an entry of the op table says about an op, and how an op finds its entry.

The table (`cascomp.ir.op_table.TABLE`) lists every op the analysis and the passes know, each once: torch
functions and tensor methods by name (`op_table.op_name` names `F.relu`, `torch.relu`, `x.relu_()` and ATen's
`relu` all "relu"), modules by class. Nothing else keeps a list of ops: the channel analysis, the depth
analysis, the passes and the tracer read the entry.

Fields of an `Op` (F: read for function entries, M: for module entries), and who reads them:
- kind (F, M): the op's family (`Kind`). The dispatch (pointwise modules), MaskChannelsPass (layer and group
  norms) and `op_name` (in-place forms of pointwise and elementwise ops) read it.
- rule (F, M): the channel rule the analysis calls, `rule(call) -> labels` (cascomp.ir.rules_ops); None: the
  op is not understood and freezes the channels it touches.
- on_parameters (F): how rules_params follows the op on parameters and constants alone (`ParamRule`;
  dispatch case 2); None: it does not.
- weight_from_parameters (F): takes a weight computed from parameters (conv, linear; dispatch case 3).
- shape_args (F): which size arguments ResizeShapeArgsPass rewrites (`ShapeArgs`); rules_sizes knows them
  replaced.
- aten (F): an ATen op of this name (a .pt2 graph) reads its arguments as the torch function does, so
  `op_name` gives it this entry.
- resize (M): `resize(module, widths)` sets the module's size attributes from the widths after pruning
  (`Widths`; PruneChannelsPass cases 2-3).
- channel_dim (M): the dim of its channels (1: conv, norms; -1: linear, LayerNorm); None: it acts alike on
  every element. dense (M): `dense(module)`: on zeros it outputs its bias at every position. Depth cases 2-3.
- zero_safe (F, M), divides (F): maps zeros to finite values (unless it divides by a tensor; depth case 1).
- chain (F, M): maps per-channel constants to per-channel constants (depth case 3).
- merge, in_place (F): a residual merge (add, sub, mul), in place into its first argument (depth case 4).
- zero_preserving (F, M): zero wherever its input is, so a gated input needs no second gate after it
  (InsertChannelGatesPass case 5).
- needs_gated_input (F, M): False for ops per channel whose output is gated (BatchNorm): a tensor only they
  read is not gated (InsertChannelGatesPass case 4).

Lookup:
1. a name: its entry, or `UNKNOWN` (no rule, every field at its default);
2. a module: the entry of the first class along its type's MRO that the table lists, so a subclass of a torch
   layer resolves as the layer (`isinstance`), or `UNKNOWN`; resolved once per class;
3. `registered(cls)`: the class itself is listed (not through a base). The tracer keeps such modules whole
   (a custom class registered with an entry is a leaf whose rule the entry gives), and the dispatch trusts
   their forward; a subclass with a forward of its own is frozen (dispatch, module case 1);
4. `register_function` / `register_module` add or replace an entry (and forget resolved classes): adding an
   op is one entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Callable, Protocol

import torch.fx as fx
import torch.nn as nn

if TYPE_CHECKING:
    from cascomp.ir.context import Context


class Kind(Enum):
    """The op families."""

    UNKNOWN = "unknown"
    CREATION = "creation"  # a new tensor: reads its argument's dtype and device only
    SIZE = "size"  # reads a tensor's shape, not its values
    POINTWISE = "pointwise"
    ELEMENTWISE = "elementwise"  # several operands, broadcast
    MOVEMENT = "movement"  # views, permutations, splits
    INDEX = "index"  # x[...]
    CONCAT = "concat"
    REDUCTION = "reduction"
    SOFTMAX = "softmax"  # normalises along one dim
    SPATIAL = "spatial"  # pooling, resampling, padding: per channel
    CONV = "conv"
    CONV_TRANSPOSE = "conv_transpose"
    LINEAR = "linear"
    MATMUL = "matmul"
    ATTENTION = "attention"
    BATCH_NORM = "batch_norm"
    INSTANCE_NORM = "instance_norm"
    LAYER_NORM = "layer_norm"
    GROUP_NORM = "group_norm"
    WEIGHT_NORM = "weight_norm"
    PRELU = "prelu"
    EMBEDDING = "embedding"


class ParamRule(Enum):
    """How rules_params follows an op whose operands are parameters and constants alone (its cases)."""

    KEEP = "keep"  # case 2: pointwise, the positions stay
    MOVE = "move"  # case 1: views and indexing move them
    COMBINE = "combine"  # case 2 (and case 5 where it meets activations): elementwise
    STATISTIC = "statistic"  # case 3: a reduction over parameter positions
    NORMALISE = "normalise"  # case 3: a norm with batch statistics (batch, instance, weight norm)


class ShapeArgs(Enum):
    """Which size arguments ResizeShapeArgsPass rewrites (its cases; rules_sizes case 1 knows them replaced)."""

    SHAPE = "shape"  # case 1: view / reshape / expand sizes
    UNFLATTEN = "unflatten"  # case 1: unflatten's sizes
    SECTIONS = "sections"  # case 2: split / chunk sections
    BOUNDS = "bounds"  # case 3: narrow's start and length, select's index
    INDEX = "index"  # case 3: integer and slice indices
    NORMALIZED_SHAPE = "normalized_shape"  # case 4: layer_norm
    NUM_GROUPS = "num_groups"  # case 4: group_norm with one channel per group
    GROUPS = "groups"  # case 5: a depthwise conv's groups


class Widths(Protocol):
    """A module call's widths after pruning, along a dim of its input or of its output."""

    def input(self, dim: int) -> int: ...

    def output(self, dim: int) -> int: ...


@dataclass(slots=True)
class Call:
    """One node as a channel rule sees it: the values of its arguments and output, their labels, and for a
    module call the module and its path."""

    ctx: Context
    node: fx.Node
    name: str
    args: tuple
    kwargs: dict
    largs: tuple
    lkwargs: dict
    out: object
    module: nn.Module | None = None
    path: str = ""

    @property
    def first(self):
        return self.args[0] if self.args else None

    @property
    def lfirst(self):
        return self.largs[0] if self.args else None

    @property
    def operand_labels(self) -> list:
        return list(self.largs) + list(self.lkwargs.values())


@dataclass(frozen=True)
class Op:
    """One entry of the op table; the module docstring says who reads which field."""

    kind: Kind
    rule: Callable[[Call], object] | None = None
    on_parameters: ParamRule | None = None
    weight_from_parameters: bool = False
    shape_args: ShapeArgs | None = None
    aten: bool = True
    resize: Callable[[nn.Module, Widths], None] | None = None
    channel_dim: int | None = None
    dense: Callable[[nn.Module], bool] | None = None
    zero_safe: bool = False
    divides: bool = False
    chain: bool = False
    merge: bool = False
    in_place: bool = False
    zero_preserving: bool = False
    needs_gated_input: bool = True


UNKNOWN = Op(Kind.UNKNOWN, aten=False)


class OpTable:
    """Entries by function or method name and by module class (lookup cases 1-4 of the module docstring)."""

    def __init__(self, functions: dict[str, Op], modules: dict[type, Op]) -> None:
        self._functions = dict(functions)
        self._modules = dict(modules)
        self._resolved: dict[type, Op] = {}

    @property
    def functions(self) -> dict[str, Op]:
        return dict(self._functions)

    @property
    def modules(self) -> dict[type, Op]:
        return dict(self._modules)

    def function(self, name: str) -> Op:  # case 1
        return self._functions.get(name, UNKNOWN)

    def module(self, cls: type) -> Op:  # case 2
        op = self._resolved.get(cls)
        if op is None:
            op = next((self._modules[c] for c in cls.__mro__ if c in self._modules), UNKNOWN)
            self._resolved[cls] = op
        return op

    def registered(self, cls: type) -> bool:  # case 3
        return cls in self._modules

    def register_function(self, name: str, op: Op) -> None:  # case 4
        self._functions[name] = op

    def register_module(self, cls: type, op: Op) -> None:  # case 4
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise TypeError(f"register_module takes an nn.Module subclass, got {cls!r}")
        self._modules[cls] = op
        self._resolved.clear()

    def copy(self) -> "OpTable":
        return OpTable(self._functions, self._modules)

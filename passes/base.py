"""The shape of a pass: knobs in `__init__`, one `call(gm) -> PassResult`, checked by the base class."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch.fx as fx

from cascomp.errors import CascompError, PassError


@dataclass(frozen=True)
class PassResult:
    gm: fx.GraphModule
    modified: bool


class Pass:
    """Base class. `in_place` says whether `call` mutates its input; `__call__` runs it on a copy when it
    does not own the input, lints and recompiles the result, and names the pass in any failure."""

    in_place = True

    def call(self, gm: fx.GraphModule) -> PassResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, gm: fx.GraphModule, *, copy_input: bool = True) -> PassResult:
        target = copy.deepcopy(gm) if (self.in_place and copy_input) else gm
        try:
            result = self.call(target)
            result.gm.graph.lint()
            result.gm.recompile()
        except CascompError:
            raise
        except Exception as error:
            raise PassError(f"{type(self).__name__} failed: {type(error).__name__}: {error}") from error
        return result

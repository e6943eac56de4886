"""InsertOperatorChoicesPass: put an operator choice (DARC) where each chosen layer is.

Rule:
1. for every `path -> {name: candidate}` given, the module at `path` becomes an `OperatorChoice` whose
   first option is that very module (with its weights) and whose other options are the candidates; the
   graph's nodes still call `path`, so nothing else in the graph changes;
2. a path that names no module, or a module already replaced, is an error naming the path;
3. with alpha one-hot on the original (init="original") the model computes exactly what it computed before.
"""

from __future__ import annotations

import torch.fx as fx
from torch import nn

from cascomp.kernels.operator_choice import OperatorChoice
from cascomp.passes.base import Pass, PassResult


class InsertOperatorChoicesPass(Pass):
    def __init__(self, candidates: dict[str, dict[str, nn.Module]], *, init: str = "uniform") -> None:
        self.candidates = candidates
        self.init = init

    def call(self, gm: fx.GraphModule) -> PassResult:
        for path, options in self.candidates.items():
            original = _module(gm, path)
            if isinstance(original, OperatorChoice):
                raise ValueError(f"{path!r} is already an operator choice")
            _replace(gm, path, OperatorChoice(original, options, init=self.init))  # case 1
        return PassResult(gm, bool(self.candidates))


def _module(gm: fx.GraphModule, path: str) -> nn.Module:
    try:
        return gm.get_submodule(path)
    except AttributeError as error:
        raise ValueError(f"no module at {path!r}") from error  # case 2


def _replace(gm: fx.GraphModule, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, name, module)

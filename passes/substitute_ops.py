"""SubstituteOpsPass: replace each decided operator choice by its winning option (DARC's selection).

Rule:
1. for every `path -> index` given, the module at `path` must be an `OperatorChoice`; it is replaced by its
   option `index` (the original layer or a candidate, with the weights it trained), a plain module, at the
   same path, so the graph's nodes now call the winner;
2. the substituted model computes what the choice computes with alpha one-hot at `index` (the property test
   in tests/test_operator_choices.py checks it on the test zoo);
3. a choice not named is left as it is; a path that is not a choice is an error naming the path;
4. a path given a candidate's name instead (`{"layer1.conv": "3x3DS"}`, a Plan's `operators`) must hold an
   eligible plain convolution; it is replaced by that candidate built for it, started from its weights by
   kernels/candidates.py's analytic fit (the architecture a plan records; trained weights are loaded after).
The result is traced again for the channel analysis: a candidate's depthwise convolution ties its channels to
its input's, so width pruning applies to the substituted network as to any other.
"""

from __future__ import annotations

import torch.fx as fx

from cascomp.kernels.candidates import NAMES, candidates_for, eligible
from cascomp.kernels.operator_choice import OperatorChoice
from cascomp.passes.base import Pass, PassResult
from cascomp.passes.insert_operator_choices import _module, _replace


class SubstituteOpsPass(Pass):
    def __init__(self, winners: dict[str, int | str]) -> None:
        self.winners = winners

    def call(self, gm: fx.GraphModule) -> PassResult:
        for path, index in self.winners.items():
            choice = _module(gm, path)
            if isinstance(index, str):  # case 4
                problem = eligible(choice)
                if problem:
                    raise ValueError(f"{path!r} cannot become {index!r}: {problem}")
                if index not in NAMES:
                    raise ValueError(f"{path!r}: no candidate operator {index!r} (there are {', '.join(NAMES)})")
                _replace(gm, path, candidates_for(choice, (index,))[index])
                continue
            if not isinstance(choice, OperatorChoice):
                raise ValueError(f"{path!r} is not an operator choice")  # case 3
            if not 0 <= index < len(choice.options):
                raise ValueError(f"{path!r} has {len(choice.options)} options, not {index + 1}")
            _replace(gm, path, choice.options[index])  # case 1
        return PassResult(gm, bool(self.winners))

"""The shape of a pass: knobs in `__init__`, one `call(gm) -> PassResult`, checked by the base class."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch.fx as fx

from cascomp.errors import CascompError, PassError
from cascomp.ir.module_copy import copy_graph_module


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
        target = copy_graph_module(gm) if (self.in_place and copy_input) else gm
        result = self._run(target)
        result.gm.recompile()
        return result

    def _run(self, gm: fx.GraphModule, *, lint_unmodified: bool = True) -> PassResult:
        """`call`, then lint its graph; any failure becomes a PassError naming the pass."""
        try:
            result = self.call(gm)
            if result.modified or lint_unmodified:
                result.gm.graph.lint()
        except CascompError:
            raise
        except Exception as error:
            raise PassError(f"{type(self).__name__} failed: {type(error).__name__}: {error}") from error
        return result


def run_passes(gm: fx.GraphModule, passes: Sequence[Pass]) -> PassResult:
    """Run `passes` in order on `gm`, which the caller owns (each pass mutates it or returns a new module),
    and recompile once after the last: generating Python for every intermediate module would cost more than
    most passes do, and nothing runs those modules. A pass's graph is linted as `Pass.__call__` lints it
    when the pass reports a change; one that changed nothing leaves the graph as it came (the caller's, or
    the one linted after the last change). `modified`: whether any pass changed the module."""
    modified = False
    for graph_pass in passes:
        result = graph_pass._run(gm, lint_unmodified=False)
        gm, modified = result.gm, modified or result.modified
    try:
        gm.recompile()
    except Exception as error:
        raise PassError(f"generating the code of the rewritten module failed: {type(error).__name__}: "
                        f"{error}") from error
    return PassResult(gm, modified)

"""The tests' zoo: cascomp.zoo's tiny models plus the failure reproducers of tests/zoo_norms.py,
tests/zoo_shapes.py and tests/zoo_capture.py, each built with non-trivial normalisation and in eval mode.

Every model in ``ZOO`` is small enough to build and run in milliseconds on a CPU, traces with
``torch.fx.symbolic_trace`` in eval mode (or, where ``fx_traceable`` is False, defeats it on purpose), and is
built deterministically under ``torch.manual_seed``. Normalisation statistics and affine parameters are
randomised after construction, because freshly initialised BatchNorm (mean 0, variance 1, weight 1, bias 0)
is the identity in eval mode and would let bugs in BatchNorm slicing or folding go unnoticed.

The full-size networks (``cascomp.zoo.names("imagenet")``) are not in ``ZOO``; ``prepare(zoo.build(name))``
builds one the same way.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from cascomp import zoo
from cascomp.zoo import ZooEntry
from tests import zoo_capture, zoo_norms, zoo_shapes

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_AFFINE_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def _randomise_normalisation(model: nn.Module) -> None:
    """Give every normalisation layer and layer-scale parameter non-trivial values, in place."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _BATCH_NORMS):
                if module.running_mean is not None:  # None without running statistics (batch statistics)
                    module.running_mean.normal_().mul_(0.1)
                    module.running_var.uniform_(0.5, 2.0)
                if module.affine:
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.normal_().mul_(0.1)
            elif isinstance(module, _AFFINE_NORMS):
                # LayerNorm calls its flag elementwise_affine, the others call it affine.
                if getattr(module, "weight", None) is not None:
                    module.weight.uniform_(0.5, 1.5)
                if getattr(module, "bias", None) is not None:
                    module.bias.normal_().mul_(0.1)
            elif isinstance(module, nn.MultiheadAttention):
                # Its biases start at zero, which would hide mistakes in how a pruner slices them.
                if module.in_proj_bias is not None:
                    module.in_proj_bias.normal_().mul_(0.1)
                if module.out_proj.bias is not None:
                    module.out_proj.bias.normal_().mul_(0.1)
        for name, parameter in model.named_parameters():
            # Layer scales start near zero in real models, which would make their blocks vanish.
            if name.rsplit(".", 1)[-1] == "gamma":
                parameter.uniform_(0.5, 1.5)


def prepare(model: nn.Module) -> nn.Module:
    """Randomise normalisation layers and switch to eval mode, as every test model must."""
    _randomise_normalisation(model)
    return model.eval()


def _prepared(entry: ZooEntry) -> ZooEntry:
    """The entry with a builder that returns prepared models."""
    construct = entry.build

    def build(**kwargs) -> nn.Module:
        return prepare(construct(**kwargs))

    return replace(entry, build=build)


ZOO: dict[str, ZooEntry] = {name: _prepared(zoo.ZOO[name]) for name in zoo.names("tiny")}
# Models that reproduce classes of failures seen on real model libraries (test fixtures, not zoo families).
for _fixtures in (zoo_norms.ENTRIES, zoo_shapes.ENTRIES, zoo_capture.ENTRIES):
    ZOO.update({name: _prepared(entry) for name, entry in _fixtures.items()})


def example_inputs(name: str, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs for test-zoo model ``name``, reproducible for a given seed."""
    return ZOO[name].example_inputs(seed)

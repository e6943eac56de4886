"""ZooEntry: how to build one zoo model and what to feed it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

SUITES = ("tiny", "mnist", "imagenet")


@dataclass(frozen=True)
class ZooEntry:
    """How to build one zoo model and what to feed it.

    ``build(**kwargs)`` constructs the model (keyword arguments go to its constructor, e.g. ``num_classes``).
    ``input_dtypes`` gives one dtype per input; ``None`` means every input is float32. Integer inputs are
    drawn uniformly from ``[0, integer_input_high)`` (for token ids, the vocabulary size). ``suite`` says what
    the model is for: ``"tiny"``, one channel-dependency pattern, built and run in milliseconds on a CPU;
    ``"mnist"``, a classifier for 1x28x28 images (the demo network and the benchmarks' baselines);
    ``"imagenet"``, a full-size network at 224x224, for timing.
    """

    build: Callable[..., nn.Module]
    input_shapes: tuple[tuple[int, ...], ...]
    description: str
    input_dtypes: tuple[torch.dtype, ...] | None = None
    integer_input_high: int = 50
    fx_traceable: bool = True  # False: torch.fx.symbolic_trace fails on purpose (cascomp's capture fallbacks)
    suite: str = "tiny"

    def __post_init__(self) -> None:
        assert self.suite in SUITES, f"suite {self.suite!r} is not one of {SUITES}"  # our own tables only

    def example_inputs(self, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """Random inputs of the entry's shapes and dtypes, reproducible for a given seed."""
        generator = torch.Generator().manual_seed(seed)
        dtypes = self.input_dtypes or (torch.float32,) * len(self.input_shapes)
        inputs = []
        for shape, dtype in zip(self.input_shapes, dtypes, strict=True):
            if dtype.is_floating_point:
                inputs.append(torch.randn(shape, generator=generator, dtype=dtype))
            else:
                high = self.integer_input_high
                inputs.append(torch.randint(0, high, shape, generator=generator, dtype=dtype))
        return tuple(inputs)

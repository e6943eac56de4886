"""The arrays profile feeds to onnxruntime: the graph's inputs with the batch dimension filled in.

Case 1: example tensors were given: their samples are repeated (cycled) up to the batch size, so integer
        inputs such as token ids stay in range and torch sees exactly what onnxruntime sees.
Case 2: otherwise random data of the input's dtype: standard normal floats, ints in {0, 1} (valid indices
        for any embedding), random bools. Dims other than the batch come from the graph or input_shapes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from cascomp.export.arguments import named, setting
from cascomp.errors import ConfigError, ProfileError

_ONNX_TO_NUMPY = {"float": "float32", "double": "float64", "float16": "float16", "bool": "bool",
                  **{name: name for name in ("int8", "int16", "int32", "int64", "uint8", "uint16",
                                             "uint32", "uint64")}}


def batch_feeds(graph_inputs: Sequence, batch_size: int, *, examples: Mapping[str, Tensor] | None,
                input_shapes: Mapping[str, Sequence[int]] | None, seed: int = 0) -> dict[str, np.ndarray]:
    """One array per onnxruntime input (objects with .name, .type, .shape) for `batch_size` samples."""
    generator = np.random.default_rng(seed)
    feeds = {}
    for graph_input in graph_inputs:
        dtype = _numpy_dtype(graph_input.name, graph_input.type)
        if examples is not None:  # case 1
            feeds[graph_input.name] = repeat_samples(examples[graph_input.name], batch_size).numpy() \
                .astype(dtype, copy=False)
        else:  # case 2
            shape = _shape(graph_input, batch_size, input_shapes or {})
            feeds[graph_input.name] = _random(generator, shape, dtype)
    return feeds


def repeat_samples(example: Tensor, batch_size: int) -> Tensor:
    """`batch_size` samples cycled from the example's batch (dim 0); 0-d examples are returned as is."""
    example = example.detach().cpu()
    if example.dim() == 0:
        return example
    return example[torch.arange(batch_size) % example.shape[0]]


def _numpy_dtype(name: str, onnx_type: str) -> np.dtype:
    match = re.fullmatch(r"tensor\((\w+)\)", onnx_type)
    if not match or match.group(1) not in _ONNX_TO_NUMPY:
        raise ProfileError(f"input {name!r} has type {onnx_type}, for which profile cannot make data; "
                           "profile a model whose inputs are float, int or bool tensors")
    return np.dtype(_ONNX_TO_NUMPY[match.group(1)])


def _shape(graph_input, batch_size: int, input_shapes: Mapping[str, Sequence[int]]) -> tuple[int, ...]:
    name, dims = graph_input.name, list(graph_input.shape)
    if not dims:
        return ()  # a scalar input has no batch dimension to fill
    if name in input_shapes:
        dims = [dims[0], *_given_sample_shape(name, input_shapes[name], len(dims))]
    if isinstance(dims[0], int) and dims[0] != batch_size:
        raise ConfigError(
            f"input {name!r} has a fixed batch size of {dims[0]} in the ONNX file, so batch size {batch_size} "
            f"cannot run; profile {setting('batch_sizes', (dims[0],))}, or export the model again with a dynamic "
            f"batch ({setting('dynamic_batch', True)})"
        )
    dynamic = [(axis, dim) for axis, dim in enumerate(dims) if axis > 0 and not isinstance(dim, int)]
    if dynamic:
        listed = ", ".join(f"dim {axis} ({dim!r})" for axis, dim in dynamic)
        example = tuple(d if isinstance(d, int) else 16 for d in dims[1:])
        raise ConfigError(f"input {name!r} has dynamic {listed} besides the batch; give its shape, e.g. "
                          f"{setting('input_shapes', {name: example})}")
    return (batch_size, *dims[1:])


def _given_sample_shape(name: str, given: Sequence[int], rank: int) -> list[int]:
    """input_shapes may give the shape per sample (rank - 1 dims) or in full (its dim 0 is ignored)."""
    dims = list(given)
    if len(dims) not in (rank - 1, rank) or not all(isinstance(d, int) and d > 0 for d in dims):
        raise ConfigError(f"{named('input_shapes')}[{name!r}] must be {rank - 1} positive ints (the shape "
                          f"without the batch dimension), got {given!r}")
    return dims[1:] if len(dims) == rank else dims


def _random(generator: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if dtype == np.bool_:
        return generator.random(shape) < 0.5
    if np.issubdtype(dtype, np.integer):
        return generator.integers(0, 2, size=shape, dtype=dtype)
    return generator.standard_normal(shape).astype(dtype)

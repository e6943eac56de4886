"""Will a run fit in memory? Asked before allocating, so that a batch size or input shape far too large is a
clear error naming the argument to lower, instead of the kernel's out-of-memory killer or a MemoryError
from deep inside torch or onnxruntime.

The estimates are lower bounds (inputs, plus twice the largest tensor the model makes, since a layer's input
and output live together), so they refuse only what cannot fit; an allocation that fails anyway is turned
into the same kind of error by `is_out_of_memory` at the places that run the model.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import onnx
import torch
from torch import Tensor, nn

from cascomp.errors import ConfigError

_ONNX_ELEMENT_BYTES = {onnx.TensorProto.DOUBLE: 8, onnx.TensorProto.INT64: 8, onnx.TensorProto.UINT64: 8,
                       onnx.TensorProto.FLOAT16: 2, onnx.TensorProto.BFLOAT16: 2, onnx.TensorProto.INT16: 2,
                       onnx.TensorProto.UINT16: 2, onnx.TensorProto.INT8: 1, onnx.TensorProto.UINT8: 1,
                       onnx.TensorProto.BOOL: 1}  # anything else: 4 bytes
_LARGE_INITIALIZER = 1 << 16  # bytes; shape inference needs only the small ones (reshape targets and such)


def available_bytes() -> int | None:
    """Memory the process can still get (Linux MemAvailable, else free pages); None where unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def refuse_if_too_large(needed: float, what: str, fix: str) -> None:
    """ConfigError when `needed` bytes exceed the memory available: "{what} needs about N GiB ...; {fix}"."""
    available = available_bytes()
    if available is not None and needed > available:
        raise ConfigError(f"{what} needs at least {_size(needed)} of memory, and this machine has "
                          f"{_size(available)} available; {fix}")


def _size(count: float) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def tensor_bytes(shape: Sequence[int], dtype: torch.dtype) -> int:
    return math.prod(shape) * torch.empty((), dtype=dtype).element_size()


def torch_bytes_per_sample(model: nn.Module, inputs: tuple[Tensor, ...]) -> int | None:
    """Inputs plus twice the largest module output, per sample, measured on the first sample; None when the
    model does not run on one sample (a fixed batch size) or has no batch dimension."""
    if not inputs or not all(t.dim() for t in inputs) or inputs[0].shape[0] <= 1:
        return None
    largest = [0]

    def record(module, arguments, output) -> None:
        for value in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(value, Tensor):
                largest[0] = max(largest[0], value.numel() * value.element_size())

    hooks = [module.register_forward_hook(record) for module in model.modules()]
    training_flags = [(module, module.training) for module in model.modules()]
    model.eval()  # train mode would update batch-norm statistics: the model stays as it was
    try:
        with torch.no_grad():
            model(*(t[:1] for t in inputs))
    except Exception:  # the full batch runs later and reports its own failure in its own words
        return None
    finally:
        for hook in hooks:
            hook.remove()
        for module, flag in training_flags:
            module.training = flag
    return sum(t[:1].numel() * t.element_size() for t in inputs) + 2 * largest[0]


def onnx_bytes_per_sample(path: str) -> int:
    """Inputs plus twice the largest tensor of the graph, per sample, from ONNX shape inference; tensors
    whose size is unknown are left out."""
    model = onnx.load(path, load_external_data=False)
    for initializer in model.graph.initializer:  # weights are loaded once, not per sample
        if len(initializer.raw_data) > _LARGE_INITIALIZER:
            initializer.ClearField("raw_data")
    try:
        graph = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # a graph onnx cannot infer still runs in onnxruntime: estimate from what is known
        graph = model.graph
    weights = {initializer.name for initializer in graph.initializer}
    inputs = sum(_per_sample(value) for value in graph.input if value.name not in weights)
    made = [_per_sample(value) for value in (*graph.value_info, *graph.output)]
    return inputs + 2 * max(made, default=0)


def _per_sample(value: onnx.ValueInfoProto) -> int:
    tensor = value.type.tensor_type
    dims = list(tensor.shape.dim)[1:]  # dim 0 is the batch
    if not tensor.HasField("shape") or not all(d.HasField("dim_value") for d in dims):
        return 0
    return math.prod(d.dim_value for d in dims) * _ONNX_ELEMENT_BYTES.get(tensor.elem_type, 4)

"""The argument and input checks of `cascomp.profile`: each raises the error that says what to pass instead."""

from __future__ import annotations

import os
from collections.abc import Sequence

import onnxruntime
from torch import Tensor

from cascomp.errors import ConfigError, ModelLoadError, ProfileError
from cascomp.export.onnx import OnnxExportResult

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def check_batch_sizes(exported: OnnxExportResult, examples: tuple[Tensor, ...], batch_sizes: tuple[int, ...]) -> None:
    """A static-batch export runs only at the batch size it was exported with."""
    if exported.dynamic_batch:
        return
    fixed = examples[0].shape[0] if examples and examples[0].dim() else None
    other = [b for b in batch_sizes if b != fixed]
    if other:
        raise ConfigError(f"{exported.path} was exported with dynamic_batch=False (batch {fixed}), so it cannot "
                          f"run at batch size(s) {', '.join(map(str, other))}; export with dynamic_batch=True "
                          f"or profile batch_sizes=({fixed},)")


def examples_by_name(examples, graph_inputs) -> dict[str, Tensor] | None:
    """The example inputs keyed by the file's input names (a tuple is matched by position)."""
    if examples is None or isinstance(examples, dict):
        return examples
    if not isinstance(examples, tuple) or len(examples) != len(graph_inputs) \
            or not all(isinstance(t, Tensor) for t in examples):
        raise ConfigError("example_inputs must hold one tensor per input of the file "
                          f"({', '.join(i.name for i in graph_inputs)}), got {_describe(examples)}")
    return {graph_input.name: example for graph_input, example in zip(graph_inputs, examples)}


def _describe(examples) -> str:
    if isinstance(examples, tuple):
        return f"{len(examples)} values: " + ", ".join(type(t).__name__ for t in examples)
    return f"a {type(examples).__name__}"


def valid_batch_sizes(batch_sizes: Sequence[int]) -> tuple[int, ...]:
    sizes = (batch_sizes,) if isinstance(batch_sizes, int) else tuple(batch_sizes)
    if not sizes or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in sizes):
        raise ConfigError(f"batch_sizes must be positive ints, got {batch_sizes!r}; e.g. batch_sizes=(1, 32)")
    return sizes


def count(value: int, name: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def valid_threads(threads: int | None) -> int | None:
    return None if threads is None else count(threads, "threads", 1)


def available_provider(provider: str) -> str:
    if provider not in PROVIDERS:
        raise ConfigError(f"unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
    name = PROVIDERS[provider]
    if name not in onnxruntime.get_available_providers():
        raise ProfileError(
            f"provider {provider!r} needs onnxruntime's {name}, which this onnxruntime lacks (it has "
            f"{', '.join(onnxruntime.get_available_providers())}); install onnxruntime-gpu on a machine "
            "with a GPU (pip install 'cascomp[gpu]') or use provider='cpu'"
        )
    return name


def existing_file(path: str | os.PathLike) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"profile needs an nn.Module or a path to an .onnx file, got {type(path).__name__}")
    if not os.path.isfile(path):
        raise ModelLoadError(f"no ONNX file at {os.fspath(path)!r}; export one with export_onnx first")
    return os.fspath(path)

"""The argument and input checks of `cascomp.profile`: each raises the error that says what to pass instead,
naming arguments through cascomp.export.arguments (so the command line reads its own flags)."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence

import onnxruntime
from torch import Tensor

from cascomp.export.arguments import named, setting
from cascomp.errors import ConfigError, ModelLoadError, ProfileError
from cascomp.export._memory import onnx_bytes_per_sample, refuse_if_too_large
from cascomp.export.onnx import OnnxExportResult

# An ONNX file is a serialised ModelProto, and every writer puts field 1 (ir_version, a varint) first.
# torch's files start otherwise: a zip archive ("PK") or, before torch 1.6, a pickle (0x80).
_ONNX_FIRST_BYTE = b"\x08"
_PICKLE_FIRST_BYTE = b"\x80"

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
                          f"or profile {setting('batch_sizes', (fixed,))}")


def examples_by_name(examples, graph_inputs) -> dict[str, Tensor] | None:
    """The example inputs keyed by the file's input names (a tuple is matched by position)."""
    if examples is None or isinstance(examples, dict):
        return examples
    if not isinstance(examples, tuple) or len(examples) != len(graph_inputs) \
            or not all(isinstance(t, Tensor) for t in examples):
        raise ConfigError(f"the file has {len(graph_inputs)} input(s) ({', '.join(i.name for i in graph_inputs)}) "
                          f"but {named('example_inputs')} gave {_describe(examples)}; give one per input")
    return {graph_input.name: example for graph_input, example in zip(graph_inputs, examples)}


def _describe(examples) -> str:
    if isinstance(examples, tuple) and all(isinstance(t, Tensor) for t in examples):
        return str(len(examples))
    if isinstance(examples, tuple):
        return f"{len(examples)} values: " + ", ".join(type(t).__name__ for t in examples)
    return f"a {type(examples).__name__}"


def valid_batch_sizes(batch_sizes: Sequence[int]) -> tuple[int, ...]:
    sizes = (batch_sizes,) if isinstance(batch_sizes, int) else tuple(batch_sizes)
    if not sizes or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in sizes):
        raise ConfigError(f"{named('batch_sizes')} must be positive ints, got {batch_sizes!r}; e.g. "
                          f"{setting('batch_sizes', (1, 32))}")
    return sizes


def count(value: int, name: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{named(name)} must be an int >= {minimum}, got {value!r}")
    return value


def valid_threads(threads: int | None) -> int | None:
    return None if threads is None else count(threads, "threads", 1)


def available_provider(provider: str) -> str:
    if provider not in PROVIDERS:
        raise ConfigError(f"unknown {named('provider')} {provider!r}; choose one of {', '.join(PROVIDERS)}")
    name = PROVIDERS[provider]
    if name not in onnxruntime.get_available_providers():
        raise ProfileError(
            f"{named('provider')} {provider!r} needs onnxruntime's {name}, which this onnxruntime lacks (it has "
            f"{', '.join(onnxruntime.get_available_providers())}); install onnxruntime-gpu on a machine "
            f"with a GPU (pip install 'cascomp[gpu]') or use {setting('provider', 'cpu')}"
        )
    return name


def existing_file(path: str | os.PathLike) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"profile needs an nn.Module or a path to an .onnx file, got {type(path).__name__}")
    if not os.path.isfile(path):
        raise ModelLoadError(f"no ONNX file at {os.fspath(path)!r}; check the path, or export the model first")
    if file_format(path) == "torch":
        raise ModelLoadError(f"{os.fspath(path)!r} is a torch file, not an ONNX file; load the model and profile "
                             "the nn.Module with example_inputs, or export it with export_onnx first")
    return os.fspath(path)


def file_format(path: str | os.PathLike) -> str | None:
    """"onnx" or "torch" by the file's first bytes, whatever its name; None for anything else."""
    if not os.path.isfile(path):
        return None
    if zipfile.is_zipfile(path) or _first_byte(path) == _PICKLE_FIRST_BYTE:
        return "torch"
    return "onnx" if _first_byte(path) == _ONNX_FIRST_BYTE else None


def _first_byte(path: str | os.PathLike) -> bytes:
    try:
        with open(path, "rb") as stream:
            return stream.read(1)
    except OSError:
        return b""


def check_memory(path: str, batch_sizes: tuple[int, ...]) -> None:
    """The largest batch size must fit in memory, before any input for it is made."""
    largest = max(batch_sizes)
    refuse_if_too_large(onnx_bytes_per_sample(path) * largest, f"batch size {largest}",
                        f"lower {named('batch_sizes')}")

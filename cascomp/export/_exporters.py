"""The two torch.onnx exporters behind one call, with their console noise captured.

Both exporters talk a lot: TorchScript warns that it is deprecated and its C++ side prints the whole IR
graph on failure (straight to file descriptor 2, whatever sys.stderr is); dynamo prints progress lines,
logs opset and torchvision notices and dumps version-converter tracebacks. None of it helps a cascomp user,
whose error message carries the exporter's one-line reason instead.

One warning matters: TorchScript traces by running forward once, and where the user's code turns a tensor
into a Python value (`if x.mean() > 0`, int(), .item(), iterating), it warns (TracerWarning) and records the
value as a constant, so the file takes that branch for every input. `run_exporter` returns those places;
dynamo refuses such code itself, and `user_frame` finds the line it names.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import linecache
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

_NOISY_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
# The TracerWarnings that mean a Python value was taken from a tensor and fixed in the trace.
_TRACE_CONSTANT = re.compile(r"Converting a tensor to an? (Python \w+|NumPy array)|Iterating over a tensor")
# dynamo's errors quote the user's line after this header.
_USER_CALL = re.compile(r'The following call raised this error:\s*File "([^"]+)", line (\d+), in \S+\s*\n\s*(.*)')
_TORCH_DIRECTORY = os.path.dirname(torch.__file__) + os.sep


def run_exporter(name: str, model: nn.Module, inputs: tuple[Tensor, ...], destination: str, *,
                 input_names: tuple[str, ...], output_names: tuple[str, ...], opset: int,
                 dynamic_batch: bool) -> list[str]:
    """Write `model` to `destination` with exporter `name` ("torchscript" or "dynamo"); raises on failure.

    Returns where the user's code made the trace fix a value (see the module doc), e.g.
    "model.py:12 (`if x.mean() > 0:`) converts a tensor to a Python boolean"; empty for dynamo."""
    with quiet(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        if name == "torchscript":
            _export_torchscript(model, inputs, destination, input_names, output_names, opset, dynamic_batch)
        else:
            _export_dynamo(model, inputs, destination, input_names, output_names, opset, dynamic_batch)
    return trace_constants(caught)


def trace_constants(caught: Sequence[warnings.WarningMessage]) -> list[str]:
    """The TracerWarnings about the user's code, once per line. torch's own functions check shapes this way
    (MultiheadAttention, instance_norm) and those values are fixed anyway, so their warnings are left out."""
    places = {}
    for warning in caught:
        match = _TRACE_CONSTANT.search(str(warning.message))
        if not issubclass(warning.category, torch.jit.TracerWarning) or match is None \
                or warning.filename.startswith(_TORCH_DIRECTORY):
            continue
        what = f"converts a tensor to a {match.group(1)}" if match.group(1) else "iterates over a tensor"
        places.setdefault((warning.filename, warning.lineno), what)
    return [f"{_place(file, line)} {what}" for (file, line), what in places.items()]


def user_frame(error: BaseException) -> str:
    """" at FILE:LINE (`code`)" when dynamo's error quotes the user's line that it could not export, else ""."""
    while error is not None:
        match = _USER_CALL.search(_ANSI_ESCAPE.sub("", str(error)))
        if match:
            return f" at {match.group(1)}:{match.group(2)} (`{match.group(3).strip()}`)"
        error = error.__cause__
    return ""


def _place(file: str, line: int) -> str:
    code = linecache.getline(file, line).strip()
    return f"{file}:{line}" + (f" (`{code}`)" if code else "")


def _export_torchscript(model, inputs, destination, input_names, output_names, opset, dynamic_batch):
    # The validator of dynamic_axes reads `model.graph.outputs()` when output_names is empty, which breaks
    # on fx GraphModules (their .graph is an fx Graph): always pass full name lists, as lists.
    batched = [name for name, value in zip(input_names, inputs) if value.dim() > 0] + list(output_names)
    options = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    torch.onnx.export(
        model, inputs, destination, input_names=list(input_names), output_names=list(output_names),
        opset_version=opset, do_constant_folding=True,
        dynamic_axes={name: {0: "batch"} for name in batched} if dynamic_batch else None, **options,
    )


def _export_dynamo(model, inputs, destination, input_names, output_names, opset, dynamic_batch):
    if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
        raise RuntimeError(f"torch {torch.__version__} has no dynamo ONNX exporter; it needs torch >= 2.5")
    batch = torch.export.Dim("batch")  # one symbol shared by all inputs: they share the batch size
    shapes = tuple({0: batch} if value.dim() > 0 else None for value in inputs) if dynamic_batch else None
    torch.onnx.export(
        model, inputs, destination, dynamo=True, input_names=list(input_names),
        output_names=list(output_names), opset_version=opset, dynamic_shapes=shapes,
        external_data=False,  # weights inside the one file, so os.replace moves the whole model
    )


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Swallow Python prints, warnings, log records of the exporters and C++ output on fds 1 and 2."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(_raised_log_levels())
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        stack.enter_context(_captured_file_descriptors())
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
        yield


@contextlib.contextmanager
def _raised_log_levels() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR + 10)  # the version converter logs tracebacks at ERROR
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextlib.contextmanager
def _captured_file_descriptors() -> Iterator[None]:
    """Point fds 1 and 2 at a scratch file; skipped where the process has no such descriptors."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def one_line_reason(error: BaseException, limit: int = 300) -> str:
    """The innermost cause's type and first line: dynamo wraps the useful part (e.g. "No ONNX function
    found for aten.cummax") under pages of generic advice."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = _ANSI_ESCAPE.sub("", str(error)).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    reason = f"{type(error).__name__}: {first}" if first else type(error).__name__
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."

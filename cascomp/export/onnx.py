"""Export a torch model to ONNX and prove that the file computes what the model computes.

`export_onnx` runs these steps in order; nothing is left at `path` when any of them fails:
  1. validate the arguments; run the model in eval mode on the examples (and, with dynamic_batch, on a
     batch one larger) for reference outputs;
  2. export to a temporary file beside `path`, first with the TorchScript exporter, then with the
     torch.export-based ("dynamo") one if any later step fails for the first;
  3. onnx.checker, then onnxruntime (CPU) on every reference batch, compared with allclose(rtol, atol);
  4. os.replace the temporary file onto `path`.

Why TorchScript first (measured with torch 2.13 on small conv, attention, roll/permute, MultiheadAttention,
two-input and embedding models, plain and fx-traced): both exporters got every one right, but TorchScript
took 0.01-0.13 s where dynamo took 1-4 s, it honours opset 17 (dynamo leaves some models at 18 when its
down-conversion fails) and it prints no progress lines. Dynamo exports ops TorchScript lacks (antialiased
interpolate, rfft) and is where torch's work goes, so it is the fallback rather than the default.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from cascomp.errors import ConfigError, ExportError
from cascomp.export._check import AttemptFailed, Batch, check_file
from cascomp.export._exporters import one_line_reason, run_exporter

MIN_OPSET = 17
EXPORTERS = ("torchscript", "dynamo")
_PROTOBUF_LIMIT_BYTES = 2**31  # one ONNX file cannot hold more; we do not write external data


@dataclass(frozen=True)
class OnnxExportResult:
    """What export_onnx wrote and how closely onnxruntime reproduced torch on the checked batches."""

    path: str
    opset: int
    exporter: str
    max_abs_error: float
    max_rel_error: float  # over elements with |torch| > atol; smaller ones are judged by atol alone
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    seconds: float
    dynamic_batch: bool  # dim 0 of every input and output is symbolic (checked at batch + 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class _Job:
    label: str
    batches: tuple[Batch, ...]  # the examples first, then batch + 1 when dynamic_batch
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    opset: int
    dynamic_batch: bool
    check: bool
    rtol: float
    atol: float


def export_onnx(
    model: nn.Module,
    example_inputs: tuple[Tensor, ...] | Tensor,
    path: str | os.PathLike,
    *,
    opset: int = MIN_OPSET,
    dynamic_batch: bool = True,
    check: bool = True,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    exporter: str = "auto",
) -> OnnxExportResult:
    """Export `model` (any nn.Module, fx GraphModules included) to `path` and check it in onnxruntime.

    dynamic_batch makes dim 0 of every input and output symbolic and checks a batch one larger than the
    examples. check=False skips onnx.checker and the onnxruntime comparison (errors are then NaN).
    exporter: "auto" (TorchScript, then dynamo), "torchscript" or "dynamo". The model is not changed: its
    modules' training flags are restored afterwards. Raises ExportError naming what failed.
    """
    start = time.perf_counter()
    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    _validate_arguments(model, inputs, opset, rtol, atol, exporter)
    target = _target_path(path)
    label = type(model).__name__  # fx keeps the traced class's name, so this names GraphModules well too
    _refuse_oversized(model, label)
    training_flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        batches = _reference_batches(model, inputs, dynamic_batch, label)
        job = _Job(
            label=label,
            batches=batches,
            input_names=_names(input_names, _default_input_names(model, len(inputs)), "input_names"),
            output_names=_names(output_names, [f"output_{i}" for i in range(len(batches[0].outputs))],
                                "output_names"),
            opset=opset, dynamic_batch=dynamic_batch, check=check, rtol=rtol, atol=atol,
        )
        order = EXPORTERS if exporter == "auto" else (exporter,)
        used, opset_used, max_abs, max_rel = _first_that_works(model, job, order, target)
    finally:
        for module, flag in training_flags:
            module.training = flag
    return OnnxExportResult(
        path=os.fspath(path), opset=opset_used, exporter=used, max_abs_error=max_abs,
        max_rel_error=max_rel, input_names=job.input_names, output_names=job.output_names,
        seconds=time.perf_counter() - start, dynamic_batch=job.dynamic_batch,
    )


def _validate_arguments(model, inputs: tuple, opset, rtol, atol, exporter) -> None:
    if not isinstance(model, nn.Module):
        raise ConfigError(f"export_onnx needs a torch.nn.Module, got {type(model).__name__}")
    if not inputs or not all(isinstance(t, Tensor) for t in inputs):
        kinds = ", ".join(type(t).__name__ for t in inputs) or "nothing"
        raise ConfigError(f"example_inputs must be a Tensor or a non-empty tuple of Tensors, got {kinds}")
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise ConfigError(f"opset must be an int >= {MIN_OPSET}, got {opset!r}; e.g. opset=17")
    if not all(isinstance(t, (int, float)) and t >= 0 for t in (rtol, atol)):  # also rejects NaN
        raise ConfigError(f"rtol and atol must be >= 0, got rtol={rtol!r}, atol={atol!r}")
    if exporter not in ("auto", *EXPORTERS):
        raise ConfigError(f"unknown exporter {exporter!r}; choose one of auto, {', '.join(EXPORTERS)}")


def _target_path(path: str | os.PathLike) -> Path:
    target = Path(path)
    if not target.parent.is_dir():
        raise ExportError(
            f"cannot write {os.fspath(path)!r}: directory {os.fspath(target.parent)!r} does not exist; "
            "create it first (os.makedirs) or choose another path"
        )
    if target.is_dir():
        raise ExportError(f"cannot write {os.fspath(path)!r}: it is a directory; give a file name such as "
                          "model.onnx")
    return target


def _refuse_oversized(model: nn.Module, label: str) -> None:
    size = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    if size >= _PROTOBUF_LIMIT_BYTES:
        raise ExportError(f"{label} holds {size / 2**30:.1f} GiB of weights; one ONNX file holds under 2 GiB "
                          "and export_onnx does not write external data; prune or quantize it first")


def _flatten_outputs(value, label: str) -> tuple[Tensor, ...]:
    """Tensors in the order the exporters flatten them: tuples/lists in order, dicts by value order."""
    if isinstance(value, Tensor):
        return (value,)
    if isinstance(value, (tuple, list)):
        return tuple(t for item in value for t in _flatten_outputs(item, label))
    if isinstance(value, dict):
        return tuple(t for item in value.values() for t in _flatten_outputs(item, label))
    if value is None:
        return ()
    raise ExportError(f"{label} returned a {type(value).__name__}; ONNX outputs must be tensors (in "
                      "tuples, lists or dicts); return tensors from forward")


def _reference_batches(model: nn.Module, inputs: tuple[Tensor, ...], dynamic_batch: bool,
                       label: str) -> tuple[Batch, ...]:
    input_batches = [inputs]
    if dynamic_batch:
        sizes = {t.shape[0] if t.dim() else None for t in inputs}
        if len(sizes) != 1 or None in sizes:
            shapes = ", ".join(str(tuple(t.shape)) for t in inputs)
            raise ExportError(f"{label}: dynamic_batch needs dim 0 of every input to be the same batch size, "
                              f"got shapes {shapes}; pass dynamic_batch=False")
        # One more sample than the examples: proves the batch axis really is symbolic in the file.
        input_batches.append(tuple(torch.cat([t, t[:1]]) for t in inputs))
    batches = []
    for batch_inputs in input_batches:
        try:
            with torch.no_grad():
                outputs = _flatten_outputs(model(*batch_inputs), label)
        except ExportError:
            raise
        except Exception as error:
            shapes = ", ".join(str(tuple(t.shape)) for t in batch_inputs)
            raise ExportError(f"{label} failed on inputs of shape {shapes} before export: "
                              f"{one_line_reason(error)}; fix the model or the example inputs") from error
        if not outputs:
            raise ExportError(f"{label} returned no tensors; ONNX needs at least one output")
        batches.append(Batch(batch_inputs, tuple(t.detach().cpu() for t in outputs)))
    return tuple(batches)


def _default_input_names(model: nn.Module, count: int) -> list[str]:
    """forward's parameter names when they fit (fx GraphModules: the placeholders), else input_<i>."""
    try:
        parameters = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    names = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return names[:count] if len(names) >= count else [f"input_{i}" for i in range(count)]


def _names(given: Sequence[str] | None, default: list[str], what: str) -> tuple[str, ...]:
    if given is None:
        return tuple(default)
    names = tuple(given) if not isinstance(given, str) else (given,)
    if len(names) != len(default) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"{what} must be {len(default)} non-empty strings (one per tensor), got {given!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{what} must be unique, got {given!r}")
    return names


def _first_that_works(model: nn.Module, job: _Job, order: tuple[str, ...],
                      target: Path) -> tuple[str, int, float, float]:
    """Try each exporter into a temporary file beside `target`; move the first that passes into place."""
    reasons = []
    for name in order:
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(handle)
        try:
            _export_with(name, model, job, temporary)
            opset, max_abs, max_rel = check_file(temporary, job.batches, job.input_names, job.output_names,
                                                  check=job.check, rtol=job.rtol, atol=job.atol)
            os.replace(temporary, target)
            return name, opset, max_abs, max_rel
        except AttemptFailed as failure:
            reasons.append(f"{name} exporter: {failure}")
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
    raise ExportError(
        f"could not export {job.label} to ONNX (opset {job.opset}): " + "; ".join(reasons)
        + ". Replace the op named there, pass dynamic_batch=False if the model fixes its batch size, "
        "or loosen rtol/atol if the errors are small"
    )


def _export_with(name: str, model: nn.Module, job: _Job, destination: str) -> None:
    examples = job.batches[0].inputs
    # torch.export specialises size-1 dims, so dynamo traces the larger batch when the examples hold one.
    if name == "dynamo" and job.dynamic_batch and examples[0].dim() and examples[0].shape[0] == 1:
        examples = job.batches[1].inputs
    try:
        run_exporter(name, model, examples, destination, input_names=job.input_names,
                     output_names=job.output_names, opset=job.opset, dynamic_batch=job.dynamic_batch)
    except Exception as error:  # the exporters raise anything from TypeError to their own error types
        raise AttemptFailed(f"export failed: {one_line_reason(error)}") from error

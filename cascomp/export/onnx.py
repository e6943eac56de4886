"""Export a torch model to ONNX and prove that the file computes what the model computes.

`export_onnx` runs these steps in order; nothing is left at `path` when any of them fails:
  1. validate the arguments; run the model in eval mode for reference outputs on the examples, with
     dynamic_batch on a batch one larger, and on other input values (cascomp.export._references);
  2. export to a temporary file beside `path`, first with the TorchScript exporter, then with the
     torch.export-based ("dynamo") one if any later step fails for the first. A TorchScript trace that
     fixed a value the user's code took from a tensor (`if x.mean() > 0`) fails here, naming the line;
  3. onnx.checker, then onnxruntime (CPU) on every reference batch, compared with allclose(rtol, atol);
  4. os.replace the temporary file onto `path` (cascomp.export.atomic: mode 0o666 less the umask).

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
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
from torch import Tensor, nn

from cascomp.export.arguments import named, setting
from cascomp.export.atomic import publish, temporary_beside
from cascomp.errors import ConfigError, ExportError
from cascomp.export._check import AttemptFailed, Batch, check_file, data_dependent_advice
from cascomp.export._exporters import one_line_reason, run_exporter, user_frame
from cascomp.errors import is_out_of_memory
from cascomp.export._references import reference_batches

MIN_OPSET = 17
EXPORTERS = ("torchscript", "dynamo")
_PROTOBUF_LIMIT_BYTES = 2**31  # one ONNX file cannot hold more; we do not write external data


@dataclass(frozen=True)
class OnnxExportResult:
    """What export_onnx wrote and how closely onnxruntime reproduced torch on the checked batches."""

    path: str
    opset: int  # the file's; dynamo may raise opsets below 18 to 18 when it cannot convert down
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
    batches: tuple[Batch, ...]  # the examples first, then batch + 1 when dynamic_batch, then other values
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

    The file is checked on the examples, on other values of the float inputs (negated and rescaled) and,
    with dynamic_batch, on a batch one larger; dynamic_batch makes dim 0 of every input and output
    symbolic. A trace that fixed a value the model's code took from a tensor is refused, naming the line.
    check=False skips onnx.checker and the onnxruntime comparison (errors are then NaN).
    opset: from 17 to the installed onnx's newest; the result's opset is the file's (dynamo may write 18
    where it cannot convert down to 17). exporter: "auto" (TorchScript, then dynamo), "torchscript" or
    "dynamo". The model is not changed: its modules' training flags are restored afterwards. Raises
    ExportError naming what failed, ConfigError for arguments, paths the OS refuses and sizes beyond memory.
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
        batches = reference_batches(model, inputs, dynamic_batch, label)
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
    newest = onnx.defs.onnx_opset_version()  # the exporters write no opset onnx does not know
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= newest:
        raise ConfigError(f"{named('opset')} must be from {MIN_OPSET} to {newest} (the newest opset of the "
                          f"installed onnx {onnx.__version__}), got {opset!r}; e.g. {setting('opset', MIN_OPSET)}")
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:  # also NaN
            raise ConfigError(f"{named(name)} must be a number >= 0, got {value!r}")
    if exporter not in ("auto", *EXPORTERS):
        raise ConfigError(f"unknown exporter {exporter!r}; choose one of auto, {', '.join(EXPORTERS)}")


def _target_path(path: str | os.PathLike) -> Path:
    target = Path(path)
    if target.parent.exists() and not target.parent.is_dir():
        raise ExportError(f"cannot write {os.fspath(path)!r}: {os.fspath(target.parent)!r} is a file, not a "
                          "directory; choose another path")
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
    reasons, advice = [], []
    for name in order:
        with temporary_beside(target) as temporary:
            try:
                _export_with(name, model, job, temporary)
                opset, max_abs, max_rel = check_file(temporary, job.batches, job.input_names, job.output_names,
                                                      check=job.check, rtol=job.rtol, atol=job.atol)
            except AttemptFailed as failure:
                reasons.append(f"{name} exporter: {failure}")
                advice.append(failure.advice)
                continue
            publish(temporary, target)
            return name, opset, max_abs, max_rel
    fixes = "; ".join(dict.fromkeys(a for a in advice if a))
    raise ExportError(f"could not export {job.label} to ONNX (opset {job.opset}): " + "; ".join(reasons)
                      + (f". To fix: {fixes}" if fixes else ""))


def _export_with(name: str, model: nn.Module, job: _Job, destination: str) -> None:
    examples = job.batches[0].inputs
    # torch.export specialises size-1 dims, so dynamo traces the larger batch when the examples hold one.
    if name == "dynamo" and job.dynamic_batch and examples[0].dim() and examples[0].shape[0] == 1:
        examples = job.batches[1].inputs
    try:
        constants = run_exporter(name, model, examples, destination, input_names=job.input_names,
                                 output_names=job.output_names, opset=job.opset, dynamic_batch=job.dynamic_batch)
    except Exception as error:  # the exporters raise anything from TypeError to their own error types
        if is_out_of_memory(error):
            raise ConfigError(f"the {name} exporter ran out of memory on {job.label}; give smaller "
                              f"{named('example_inputs')}") from error
        reason = one_line_reason(error)
        data_dependent = "data-dependent" in reason or "data dependent" in reason
        raise AttemptFailed(f"export failed{user_frame(error)}: {reason}",
                            data_dependent_advice() if data_dependent else "replace the op or construct named there"
                            ) from error
    if constants:  # the file would take the examples' branch for every input: refuse it, whatever it matches
        raise AttemptFailed(f"the trace fixed Python values that the code takes from tensors: {'; '.join(constants)}",
                            data_dependent_advice())

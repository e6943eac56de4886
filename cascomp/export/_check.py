"""Does an exported ONNX file compute what torch computed? onnx.checker, then onnxruntime on each batch.

Each failure says on which batch it happened, and its advice follows from the batch's role:
  1. "example": the examples themselves; a numerical mismatch here is about tolerances;
  2. "batch": the examples plus one sample, which proves the batch axis symbolic; a failure here means the
     model fixes its batch size;
  3. "values": other input values at the examples' shapes (negated, rescaled); a failure here, with the
     examples passing, means the trace fixed something that depends on the values (an `if` on a tensor).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime
import torch
from torch import Tensor

from cascomp.export.arguments import named, setting
from cascomp.errors import ConfigError
from cascomp.export._exporters import one_line_reason
from cascomp.errors import is_out_of_memory


class AttemptFailed(Exception):
    """One exporter's attempt failed; the message is the one-line reason shown to the user, `advice` what
    to do about it (empty when the reason says it all).

    Private control flow of export_onnx, which turns the collected reasons into one ExportError.
    """

    def __init__(self, reason: str, advice: str = "") -> None:
        super().__init__(reason)
        self.advice = advice


@dataclass(frozen=True)
class Batch:
    """Inputs of one checked batch, torch's flattened outputs on them, and what the batch checks."""

    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    description: str  # for messages: "the example inputs", "the example inputs negated", ...
    role: str = "example"  # "example", "batch" or "values": see the module doc


def fixed_batch_advice() -> str:
    return f"if the model only runs at the batch size of its examples, use {setting('dynamic_batch', False)}"


def data_dependent_advice() -> str:
    return ("compute without turning tensors into Python values (if on a tensor, int(), float(), .item(), "
            "iterating over a tensor): pick between branches with torch.where or torch.cond")


def _advice(role: str) -> str:
    if role == "batch":
        return fixed_batch_advice()
    if role == "values":
        return data_dependent_advice()
    return f"if errors this size are acceptable, loosen {named('atol')} or {named('rtol')}"


def check_file(path: str, batches: tuple[Batch, ...], input_names: tuple[str, ...],
               output_names: tuple[str, ...], *, check: bool, rtol: float,
               atol: float) -> tuple[int, float, float]:
    """(opset, max abs error, max rel error) of the file at `path`; raises AttemptFailed.

    With check=False only the opset is read and the errors are NaN.
    """
    try:
        proto = onnx.load(path)
        opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
        if not check:
            return opset, float("nan"), float("nan")
        onnx.checker.check_model(proto)
    except Exception as error:
        raise AttemptFailed(f"onnx.checker rejected the file: {one_line_reason(error)}") from error
    session = _cpu_session(path)
    graph_inputs = [i.name for i in session.get_inputs()]
    unknown = [name for name in graph_inputs if name not in input_names]
    if unknown:
        raise AttemptFailed(f"the file has inputs {unknown} that match none of {list(input_names)}")
    max_abs = max_rel = 0.0
    for batch in batches:
        # An exporter may drop an input the graph never reads; feed only what the file asks for.
        feeds = {name: value.detach().cpu().numpy() for name, value in zip(input_names, batch.inputs)
                 if name in graph_inputs}
        try:
            produced = session.run(list(output_names), feeds)
        except Exception as error:
            if is_out_of_memory(error):
                raise ConfigError(f"onnxruntime ran out of memory on {batch.description}; give smaller "
                                  f"{named('example_inputs')}") from error
            raise AttemptFailed(f"onnxruntime failed on {batch.description}: {one_line_reason(error)}",
                                _advice(batch.role) if batch.role != "example" else "") from error
        for name, expected, actual in zip(output_names, batch.outputs, produced):
            abs_error, rel_error = _compare(name, expected, actual, batch, rtol, atol)
            max_abs, max_rel = max(max_abs, abs_error), max(max_rel, rel_error)
    return opset, max_abs, max_rel


def _cpu_session(path: str) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # fatal only: a failed run is raised and reported by the check, in one line
    try:
        return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise AttemptFailed(f"onnxruntime could not load the file: {one_line_reason(error)}") from error


def _compare(name: str, expected: Tensor, actual: np.ndarray, batch: Batch, rtol: float,
             atol: float) -> tuple[float, float]:
    """(max abs error, max rel error); fails where numpy.allclose would, naming the worst element.

    The relative error is taken over elements with |torch| > atol: smaller ones are judged by atol alone,
    and dividing by them would report noise.
    """
    reference = expected.to(torch.float64).numpy() if expected.is_floating_point() else expected.numpy()
    reference = np.asarray(reference, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if reference.shape != actual.shape:
        raise AttemptFailed(f"output {name!r} on {batch.description} has shape {actual.shape} in "
                            f"onnxruntime but {reference.shape} in torch",
                            _advice(batch.role) if batch.role != "example" else "")
    if reference.size == 0:
        return 0.0, 0.0
    same = (actual == reference) | (np.isnan(actual) & np.isnan(reference))  # equal infinities too
    with np.errstate(invalid="ignore"):
        difference = np.where(same, 0.0, np.abs(actual - reference))
    excess = np.nan_to_num(difference - (atol + rtol * np.abs(reference)), nan=np.inf)
    worst = np.unravel_index(int(np.argmax(excess)), excess.shape)
    if excess[worst] > 0:
        why = " (it matches on the examples, so the trace fixed something that depends on the input values)" \
            if batch.role == "values" else ""
        raise AttemptFailed(
            f"output {name!r} on {batch.description} differs from torch{why}: |onnx - torch| = "
            f"{difference[worst]:.3g} at index {tuple(int(i) for i in worst)} (torch {reference[worst]:.6g}, "
            f"onnx {actual[worst]:.6g}), more than atol + rtol*|torch| with {named('atol')}={atol:g}, "
            f"{named('rtol')}={rtol:g}",
            _advice(batch.role),
        )
    significant = np.abs(reference) > atol
    max_rel = float((difference[significant] / np.abs(reference[significant])).max()) if significant.any() \
        else 0.0
    return float(difference.max()), max_rel

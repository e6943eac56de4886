"""The batches an exported file is checked on, and torch's outputs on them (step 1 of export_onnx).

A trace records one run of forward, so a file can match torch on the examples and be wrong elsewhere. The
checked batches cover the ways it can be (see cascomp.export._check for the roles):
  1. the examples ("example");
  2. with dynamic_batch, the examples plus one sample ("batch"): the batch axis is really symbolic;
  3. other values at the examples' shapes ("values"): the examples negated, then seeded random draws at a
     tenth of their scale and at four times it, so that a branch on the sign or size of the data flips.
     Only float inputs change: integer and bool inputs (token ids, masks, lengths) keep the examples'
     values, the only ones known to be valid. With dynamic_batch these batches hold at most 2 samples,
     which keeps them cheap for large examples.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cascomp.export.arguments import named, setting
from cascomp.errors import ConfigError, ExportError
from cascomp.export._check import Batch, fixed_batch_advice
from cascomp.export._exporters import one_line_reason
from cascomp.errors import is_out_of_memory
from cascomp.export._memory import refuse_if_too_large, torch_bytes_per_sample

_VALUE_SCALES = (0.1, 4.0)  # case 3: relative to the examples' root mean square
_VALUE_SAMPLES = 2


def reference_batches(model: nn.Module, inputs: tuple[Tensor, ...], dynamic_batch: bool,
                      label: str) -> tuple[Batch, ...]:
    """torch's outputs on every batch of the module doc; raises ExportError or ConfigError (memory)."""
    batch = _batch_size(inputs, dynamic_batch, label)
    _refuse_oversized_batches(model, inputs, label, batch + 1 if dynamic_batch else batch)
    batches = [_run(model, inputs, "the example inputs", "example", label)]  # case 1
    if dynamic_batch:  # case 2
        larger = tuple(torch.cat([t, t[:1]]) for t in inputs)
        batches.append(_run(model, larger, f"a batch of {batch + 1} (the examples and one more)", "batch", label))
    if any(t.is_floating_point() for t in inputs):  # case 3
        few = tuple(t[:_VALUE_SAMPLES] for t in inputs) if dynamic_batch else inputs
        for description, values in _value_variants(few):
            try:
                batches.append(_run(model, values, description, "values", label))
            except ExportError:  # torch itself refuses these values (a check in forward): not the file's fault
                continue
    return tuple(batches)


def _batch_size(inputs: tuple[Tensor, ...], dynamic_batch: bool, label: str) -> int | None:
    """The examples' common batch size; None without dynamic_batch when they have none."""
    sizes = {t.shape[0] if t.dim() else None for t in inputs}
    common = sizes.pop() if len(sizes) == 1 else None
    if dynamic_batch and common is None:
        shapes = ", ".join(str(tuple(t.shape)) for t in inputs)
        raise ExportError(f"{label}: a dynamic batch needs dim 0 of every input to be the same batch size, got "
                          f"shapes {shapes}; use {setting('dynamic_batch', False)}")
    return common


def _refuse_oversized_batches(model: nn.Module, inputs: tuple[Tensor, ...], label: str,
                              largest: int | None) -> None:
    """The largest batch must fit in memory; measured on one sample first, so the check is cheap."""
    per_sample = torch_bytes_per_sample(model, inputs)
    if per_sample is not None and largest is not None:
        refuse_if_too_large(per_sample * largest, f"running {label} on a batch of {largest}",
                            f"give smaller {named('example_inputs')}")


def _value_variants(inputs: tuple[Tensor, ...]) -> list[tuple[str, tuple[Tensor, ...]]]:
    generator = torch.Generator().manual_seed(0)
    variants = [("the example inputs negated", tuple(-t if t.is_floating_point() else t for t in inputs))]
    for scale in _VALUE_SCALES:
        draws = []
        for t in inputs:
            if not t.is_floating_point():
                draws.append(t)
                continue
            spread = float(t.detach().double().pow(2).mean().sqrt()) if t.numel() else 1.0
            noise = torch.randn(t.shape, generator=generator, dtype=torch.float64)
            draws.append((noise * scale * (spread or 1.0)).to(dtype=t.dtype, device=t.device))
        variants.append((f"random inputs at {scale:g} times the examples' scale", tuple(draws)))
    return variants


def _run(model: nn.Module, inputs: tuple[Tensor, ...], description: str, role: str, label: str) -> Batch:
    try:
        with torch.no_grad():
            outputs = flatten_outputs(model(*inputs), label)
    except ExportError:
        raise
    except Exception as error:
        shapes = ", ".join(str(tuple(t.shape)) for t in inputs)
        if is_out_of_memory(error):
            raise ConfigError(f"{label} ran out of memory on inputs of shape {shapes}: "
                              f"{one_line_reason(error)}; give smaller {named('example_inputs')}") from error
        fix = fixed_batch_advice() if role == "batch" else f"fix the model or the {named('example_inputs')}"
        raise ExportError(f"{label} failed on inputs of shape {shapes} ({description}) before export: "
                          f"{one_line_reason(error)}; {fix}") from error
    if not outputs:
        raise ExportError(f"{label} returned no tensors; ONNX needs at least one output")
    return Batch(inputs, tuple(t.detach().cpu() for t in outputs), description, role)


def flatten_outputs(value, label: str) -> tuple[Tensor, ...]:
    """Tensors in the order the exporters flatten them: tuples/lists in order, dicts by value order."""
    if isinstance(value, Tensor):
        return (value,)
    if isinstance(value, (tuple, list)):
        return tuple(t for item in value for t in flatten_outputs(item, label))
    if isinstance(value, dict):
        return tuple(t for item in value.values() for t in flatten_outputs(item, label))
    if value is None:
        return ()
    raise ExportError(f"{label} returned a {type(value).__name__}; ONNX outputs must be tensors (in "
                      "tuples, lists or dicts); return tensors from forward")

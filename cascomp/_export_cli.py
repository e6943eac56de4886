"""The command line's side of `export` and `profile`: the flags their messages name, and the checks that run
before any tensor is made.

FLAGS maps the keywords of export_onnx and profile to each command's flags (see cascomp._arguments), so a
check shared with the API tells a command-line user "--threads must be ...", not "threads must be ...".
Keywords a command has no flag for point to the command that has one.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from cascomp._arguments import Flag
from cascomp.errors import ConfigError
from cascomp.export._memory import refuse_if_too_large, tensor_bytes, torch_bytes_per_sample
from cascomp.export._profile_checks import file_format
from cascomp.io import DTYPES


def _shapes(shapes: dict) -> str:
    """input_shapes={name: shape without the batch} as --input-shape flags, with a batch of 1."""
    return " ".join("--input-shape " + ",".join(map(str, (1, *shape))) for shape in shapes.values())


_INPUTS = {"example_inputs": Flag("--input-shape"), "input_shapes": Flag("--input-shape", _shapes)}
FLAGS = {
    "export": {
        **_INPUTS,
        "opset": Flag("--opset"), "rtol": Flag("--rtol"), "atol": Flag("--atol"),
        "dynamic_batch": Flag("--static-batch",
                              lambda dynamic: "a dynamic batch (no --static-batch)" if dynamic else "--static-batch"),
    },
    "profile": {
        **_INPUTS,
        "batch_sizes": Flag("--batch-sizes", lambda sizes: "--batch-sizes " + ",".join(map(str, sizes))),
        "threads": Flag("--threads"), "repeats": Flag("--repeats"), "warmup": Flag("--warmup"),
        "provider": Flag("--provider"), "torch_latency": Flag("--torch", lambda on: "--torch"),
        # profile exports with export's defaults; the flags to change them are export's
        "rtol": Flag("`cascomp export --rtol`"), "atol": Flag("`cascomp export --atol`"),
        "dynamic_batch": Flag("--static-batch", lambda dynamic: "`cascomp export` (no --static-batch)" if dynamic
                              else "`cascomp export --static-batch` and profile its .onnx file"),
    },
}


def refuse_huge_inputs(shapes: list[tuple[int, ...]], dtypes: list[str] | None) -> None:
    """--input-shape values whose tensors alone would not fit in memory, refused before they are made (the
    model's work needs at least as much again: its first layer's output)."""
    if not shapes:
        return
    kinds = [DTYPES.get(name) for name in dtypes or ["float32"]]
    kinds = kinds * len(shapes) if len(kinds) == 1 else kinds
    if len(kinds) != len(shapes) or None in kinds:
        return  # make_inputs explains a wrong --input-dtype
    needed = 2 * sum(tensor_bytes(shape, kind) for shape, kind in zip(shapes, kinds))
    given = " ".join("--input-shape " + ",".join(map(str, shape)) for shape in shapes)
    elements = sum(math.prod(shape) for shape in shapes)
    refuse_if_too_large(needed, f"{given} ({elements:,} values)", "give a smaller --input-shape (batch first; "
                        "a batch of 1 is enough to export)")


def refuse_oversized_run(module, inputs) -> None:
    """The model's work on the whole --input-shape batch must fit in memory: measured on one sample first,
    before the whole batch runs."""
    per_sample = torch_bytes_per_sample(module, inputs)
    if per_sample is not None:
        batch = inputs[0].shape[0]
        refuse_if_too_large(per_sample * batch, f"running the model on a batch of {batch:,}",
                            "give a smaller batch in --input-shape (a batch of 1 is enough to export)")


def refuse_overwriting_model(model: str | None, output: str, flag: str = "-o", written: str = "the ONNX file") -> None:
    """An output naming the model file itself would replace the model, --force or not."""
    if model and os.path.exists(model) and os.path.exists(output) and os.path.samefile(model, output):
        raise ConfigError(f"{flag} {output} is the model file itself, so writing {written} would replace the "
                          "model; choose another path")


def profiled_as(model: str | None) -> str:
    """"onnx" or "torch", by the file's content, so model.ONNX or an ONNX file named .pt is profiled as what it
    is; content that is neither goes by the name (any case), and the loader it names says what is wrong."""
    kind = file_format(model) if model else None
    if kind is None:
        return "onnx" if model and Path(model).suffix.lower() == ".onnx" else "torch"
    return kind

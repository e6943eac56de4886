"""MODEL, --factory, --safe, --input-shape and --input-dtype: the flags analyze, export and profile share,
and what they turn into: a loaded model and inputs it runs on, with every check made before the slow work.

INPUT_FLAGS names the input keywords of export_onnx and profile as these flags (see cascomp.export.arguments),
so a check shared with the API tells a command-line user "--input-shape ...", not "example_inputs ...".
"""

from __future__ import annotations

import math
import os
import sys

from cascomp.cli.model_loading import (DTYPES, LoadedModel, check_runs, load_model, make_inputs,
                                       parse_input_shape)
from cascomp.errors import ConfigError
from cascomp.export._memory import refuse_if_too_large, tensor_bytes, torch_bytes_per_sample
from cascomp.export.arguments import Flag


def add_model_arguments(command, what: str = "a model file: .pt/.pth (torch.save), .pt2 (torch.export) or, "
                        "with --factory, a state dict") -> None:
    command.add_argument("model", nargs="?", metavar="MODEL", help=what)
    command.add_argument("--factory", metavar="PKG.MODULE:FUNCTION",
                         help="a function that builds the model; MODEL is then its state dict (optional)")
    command.add_argument("--safe", action="store_true", help="refuse pickles, which run code when loaded")
    command.add_argument("--input-shape", action="append", metavar="N,N,...",
                         help="input shape, batch first, e.g. 1,3,32,32 (once per input; a .pt2 knows its own)")
    command.add_argument("--input-dtype", action="append", metavar="DTYPE",
                         help="float32 (default), int64, ... (once for all inputs, or once per input)")


def _shapes(shapes: dict) -> str:
    """input_shapes={name: shape without the batch} as --input-shape flags, with a batch of 1."""
    return " ".join("--input-shape " + ",".join(map(str, (1, *shape))) for shape in shapes.values())


INPUT_FLAGS = {"example_inputs": Flag("--input-shape"), "input_shapes": Flag("--input-shape", _shapes)}


def input_shapes(args) -> list[tuple[int, ...]]:
    """The --input-shape values, checked; call it first, so a typo in a flag fails before the slow load."""
    if args.input_dtype and not args.input_shape:
        raise ConfigError("--input-dtype needs --input-shape; give both, e.g. --input-shape 1,16 --input-dtype int64")
    return [parse_input_shape(text) for text in args.input_shape or ()]


def load(args, shapes: list[tuple[int, ...]]) -> tuple[LoadedModel, tuple]:
    """The model and its inputs (from --input-shape, else the .pt2's own), run once to check they fit."""
    loaded = load_model(args.model, factory=args.factory, safe=args.safe)
    if loaded.warning:
        print(f"cascomp: warning: {loaded.warning}", file=sys.stderr)  # once, before the long work
    inputs = make_inputs(shapes, args.input_dtype) if shapes else loaded.example_inputs
    if inputs is None:
        raise ConfigError(f"the input shape of {model_name(args)} is unknown; pass --input-shape with the batch "
                          "first, e.g. --input-shape 1,3,224,224 (once per input)")
    refuse_oversized_run(loaded.module, inputs)  # before check_runs runs the whole batch
    check_runs(loaded, inputs)
    return loaded, inputs


def describe(inputs: tuple) -> list[dict]:
    return [{"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")} for t in inputs]


def model_name(args) -> str:
    return str(args.model) if args.model else f"--factory {args.factory}"


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

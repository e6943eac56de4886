"""`cascomp export`: a model to ONNX, checked against torch in onnxruntime (cascomp.export.export_onnx)."""

from __future__ import annotations

import sys

from rich.console import Console

from cascomp.cli.command import FORMATTER, Output, add_json_argument, wrapped
from cascomp.cli.model_arguments import (INPUT_FLAGS, add_model_arguments, describe, input_shapes, load,
                                         model_name, refuse_huge_inputs, refuse_overwriting_model)
from cascomp.export import export_onnx
from cascomp.export.arguments import Flag, cli_flags
from cascomp.export.atomic import check_output_path

NAME = "export"
# export_onnx's keywords as this command's flags, for the messages of the checks it shares with the API
FLAGS = {
    **INPUT_FLAGS,
    "opset": Flag("--opset"), "rtol": Flag("--rtol"), "atol": Flag("--atol"),
    "dynamic_batch": Flag("--static-batch",
                          lambda dynamic: "a dynamic batch (no --static-batch)" if dynamic else "--static-batch"),
}


def add_parser(commands) -> None:
    command = commands.add_parser(
        NAME, help="export a model to ONNX, checked against torch in onnxruntime", formatter_class=FORMATTER,
        description=wrapped("Export a model to ONNX (batch dimension dynamic) and check "
        "that onnxruntime computes what torch computes, on the example inputs, a batch one larger and other "
        "input values. The file appears only when the check passed."), epilog="example:\n  cascomp export demo.pt --input-shape 1,1,28,28 -o demo.onnx")
    add_model_arguments(command)
    command.add_argument("-o", "--output", required=True, metavar="PATH", help="the ONNX file to write")
    command.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 up to the installed onnx's newest "
                         "(default 17)")
    command.add_argument("--static-batch", action="store_true", help="keep the batch size of --input-shape fixed "
                         "in the file, for models that only run at that size")
    command.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance of the check against torch "
                         "(default 0.001)")
    command.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance of the check against torch "
                         "(default 0.0001)")
    command.add_argument("--force", action="store_true", help="overwrite PATH if it exists")
    add_json_argument(command)


def run(args) -> Output:
    shapes = input_shapes(args)
    refuse_huge_inputs(shapes, args.input_dtype)
    check_output_path(args.output, force=args.force)
    refuse_overwriting_model(args.model, args.output)
    loaded, inputs = load(args, shapes)
    # A .pt2 exported with a static batch size only runs at that size, so its ONNX file keeps it fixed.
    dynamic_batch = loaded.fixed_batch is None and not args.static_batch
    with cli_flags(FLAGS):
        result = export_onnx(loaded.module, inputs, args.output, opset=args.opset, dynamic_batch=dynamic_batch,
                             rtol=args.rtol, atol=args.atol)
    if result.opset != args.opset:  # dynamo keeps opset 18 where it cannot convert down: say so
        print(f"cascomp: warning: the {result.exporter} exporter wrote opset {result.opset}, not --opset "
              f"{args.opset}", file=sys.stderr)
    data = {"model": model_name(args), "source": loaded.source, "inputs": describe(inputs),
            "opset_requested": args.opset, **result.to_dict()}

    def render(console: Console) -> None:
        console.print(f"wrote {result.path}: opset {result.opset}, {result.exporter} exporter, {result.seconds:.2f} s")
        console.print(f"inputs {', '.join(result.input_names)}; outputs {', '.join(result.output_names)}; "
                      f"batch dimension {'dynamic' if dynamic_batch else 'fixed'}")
        console.print(f"onnxruntime matches torch: max abs error {result.max_abs_error:.2g}, "
                      f"max rel error {result.max_rel_error:.2g}")
    return Output(data, render)

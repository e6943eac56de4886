"""`cascomp profile`: time a model, or an ONNX file, in onnxruntime per batch size (cascomp.export.profile)."""

from __future__ import annotations

from pathlib import Path

from cascomp.cli.command import FORMATTER, Output, add_json_argument, wrapped
from cascomp.cli.model_arguments import (INPUT_FLAGS, add_model_arguments, input_shapes, load, model_name,
                                         refuse_huge_inputs)
from cascomp.cli.model_loading import make_inputs
from cascomp.errors import ConfigError
from cascomp.export import profile
from cascomp.export._profile_checks import file_format
from cascomp.export.arguments import Flag, cli_flags

NAME = "profile"
# profile's keywords as this command's flags; keywords it has no flag for point to the command that has one
FLAGS = {
    **INPUT_FLAGS,
    "batch_sizes": Flag("--batch-sizes", lambda sizes: "--batch-sizes " + ",".join(map(str, sizes))),
    "threads": Flag("--threads"), "repeats": Flag("--repeats"), "warmup": Flag("--warmup"),
    "provider": Flag("--provider"), "torch_latency": Flag("--torch", lambda on: "--torch"),
    # profile exports with export's defaults; the flags to change them are export's
    "rtol": Flag("`cascomp export --rtol`"), "atol": Flag("`cascomp export --atol`"),
    "dynamic_batch": Flag("--static-batch", lambda dynamic: "`cascomp export` (no --static-batch)" if dynamic
                          else "`cascomp export --static-batch` and profile its .onnx file"),
}


def add_parser(commands) -> None:
    command = commands.add_parser(
        NAME, help="time a model (or an .onnx file) in onnxruntime per batch size", formatter_class=FORMATTER,
        description=wrapped("Time a model in onnxruntime: median, p90, mean and min latency "
        "per batch size. A torch model is exported to a temporary ONNX file first."),
        epilog="examples:\n  cascomp profile demo.onnx --batch-sizes 1,32 --threads 1\n"
        "  cascomp profile demo.pt --input-shape 1,1,28,28 --by-node --torch")
    add_model_arguments(command, "a model file (.pt, .pth, .pt2) or an ONNX file (told apart by content)")
    command.add_argument("--batch-sizes", default="1,32", metavar="N,N", help="batch sizes to time (default 1,32)")
    command.add_argument("--threads", type=int, metavar="N", help="onnxruntime intra-op threads (default: its own)")
    command.add_argument("--provider", choices=("cpu", "cuda"), default="cpu", help="execution provider")
    command.add_argument("--repeats", type=int, default=30, metavar="N", help="timed runs per batch size")
    command.add_argument("--warmup", type=int, default=5, metavar="N", help="untimed runs first")
    command.add_argument("--by-node", action="store_true", help="also time each ONNX node")
    command.add_argument("--torch", action="store_true", help="also time the torch model (not for .onnx files)")
    add_json_argument(command)


def run(args) -> Output:
    batch_sizes = _batch_sizes(args.batch_sizes)
    shapes = input_shapes(args)
    refuse_huge_inputs(shapes, args.input_dtype)
    options = {"warmup": args.warmup, "repeats": args.repeats, "threads": args.threads,
               "provider": args.provider, "by_node": args.by_node, "torch_latency": args.torch}
    with cli_flags(FLAGS):
        if _profiled_as(args.model) == "onnx":
            if args.factory:
                raise ConfigError("--factory builds a torch model; it does not apply to an ONNX file")
            examples = make_inputs(shapes, args.input_dtype) if shapes else None
            report = profile(args.model, batch_sizes, example_inputs=examples, **options)
        else:
            loaded, inputs = load(args, shapes)
            if loaded.fixed_batch is not None:
                raise ConfigError(f"{args.model} was exported with its batch size fixed at {loaded.fixed_batch}, "
                                  "and profile needs a model that runs at any batch size; export it again with a "
                                  "dynamic batch (torch.export dynamic_shapes with torch.export.Dim), or profile "
                                  f"its .onnx export with --batch-sizes {loaded.fixed_batch}")
            report = profile(loaded.module, batch_sizes, example_inputs=inputs, **options)
    data = {"model": model_name(args), **report.to_dict()}
    return Output(data, lambda console: console.out(report.format_table()))


def _batch_sizes(text: str) -> tuple[int, ...]:
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() and int(part) > 0 for part in parts):
        raise ConfigError(f"--batch-sizes {text!r} must be positive integers separated by commas, e.g. 1,32")
    return tuple(int(part) for part in parts)


def _profiled_as(model: str | None) -> str:
    """"onnx" or "torch", by the file's content, so model.ONNX or an ONNX file named .pt is profiled as what it
    is; content that is neither goes by the name (any case), and the loader it names says what is wrong."""
    kind = file_format(model) if model else None
    if kind is None:
        return "onnx" if model and Path(model).suffix.lower() == ".onnx" else "torch"
    return kind

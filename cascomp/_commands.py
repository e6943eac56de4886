"""What each `cascomp` command does: check its arguments, call the API, return what to print.

A command gets the parsed arguments and returns an `Output`: the dict that --json prints and a function
that renders it for a person. cli.py parses and prints; nothing here touches stdout.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console

from cascomp._analysis_report import analysis_report, render_analysis
from cascomp._arguments import cli_flags
from cascomp._atomic import check_output_path
from cascomp._export_cli import (FLAGS, profiled_as, refuse_huge_inputs, refuse_oversized_run,
                                 refuse_overwriting_model)
from cascomp._graph_picture import draw_groups, require_matplotlib
from cascomp.api import trace
from cascomp.demo import INPUT_SHAPE, save_demo_model
from cascomp.data import load_data
from cascomp.errors import ConfigError
from cascomp.export import export_onnx, profile
from cascomp.io import LoadedModel, check_runs, load_model, make_inputs, parse_input_shape


@dataclass(frozen=True)
class Output:
    data: dict  # what --json prints
    render: Callable[[Console], None]  # what a person reads


def _demo_model(args) -> Output:
    _check_demo_arguments(args)
    check_output_path(args.output, force=args.force)  # before the data, which may take a while to load
    bundle = None
    if args.train:
        bundle = load_data(args.train, limit_train=args.limit_train, limit_val=args.limit_val, seed=0)
    log = lambda text: print(text, file=sys.stderr)  # noqa: E731
    epochs = (1 if args.epochs is None else args.epochs) if bundle is not None else 0
    model = save_demo_model(args.output, force=args.force, data=bundle, epochs=epochs, log=log)
    params = sum(p.numel() for p in model.parameters())
    input_shape = (1, *bundle.input_shape) if bundle is not None else INPUT_SHAPE
    shape = ",".join(map(str, input_shape))
    trained = f"trained {epochs} epoch(s) on {args.train}" if bundle is not None else "random weights"
    data = {"path": args.output, "model_class": type(model).__name__, "input_shape": list(input_shape),
            "params": params, "trained_on": args.train}
    return Output(data, lambda console: console.print(
        f"wrote {args.output}: {type(model).__name__}, {params} parameters, {trained}\n"
        f"next: cascomp analyze {args.output} --input-shape {shape}"))


def _check_demo_arguments(args) -> None:
    training = {"--epochs": args.epochs, "--limit-train": args.limit_train, "--limit-val": args.limit_val}
    for flag, value in training.items():
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be a positive integer, got {value}; give one, or leave the flag out")
    given = [flag for flag, value in training.items() if value is not None]
    if given and not args.train:
        raise ConfigError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} only with --train; give "
                          "the data to train on, e.g. "
                          "--train fashion-mnist:/path/to/fashion-mnist, or leave them out for random weights")


def _analyze(args) -> Output:
    shapes = _input_shapes(args)  # a typo in a flag fails before the slow load
    refuse_huge_inputs(shapes, args.input_dtype)
    if args.graph:
        require_matplotlib()
        check_output_path(args.graph, force=True)
        refuse_overwriting_model(args.model, args.graph, "--graph", "the picture")
    loaded, inputs = _load(args, shapes)
    graph = trace(loaded.module, inputs, ignore=tuple(args.ignore), round_to=args.round_to, min_keep=args.min_keep)
    config = {"ignore": list(args.ignore), "round_to": args.round_to, "min_keep": args.min_keep,
              "factory": args.factory, "safe": args.safe, "input_shapes": args.input_shape,
              "input_dtypes": args.input_dtype}
    report = analysis_report(graph, model=_model_name(args), source=loaded.source, inputs=_describe(inputs),
                             config=config)
    if args.graph:
        draw_groups(graph, args.graph)
        report["graph"] = args.graph

    def render(console: Console) -> None:
        render_analysis(report, console)
        if args.graph:
            console.print(f"graph drawn to {args.graph}")
    return Output(report, render)


def _export(args) -> Output:
    shapes = _input_shapes(args)
    refuse_huge_inputs(shapes, args.input_dtype)
    check_output_path(args.output, force=args.force)
    refuse_overwriting_model(args.model, args.output)
    loaded, inputs = _load(args, shapes)
    # A .pt2 exported with a static batch size only runs at that size, so its ONNX file keeps it fixed.
    dynamic_batch = loaded.fixed_batch is None and not args.static_batch
    with cli_flags(FLAGS["export"]):
        result = export_onnx(loaded.module, inputs, args.output, opset=args.opset, dynamic_batch=dynamic_batch,
                             rtol=args.rtol, atol=args.atol)
    if result.opset != args.opset:  # dynamo keeps opset 18 where it cannot convert down: say so
        print(f"cascomp: warning: the {result.exporter} exporter wrote opset {result.opset}, not --opset "
              f"{args.opset}", file=sys.stderr)
    data = {"model": _model_name(args), "source": loaded.source, "inputs": _describe(inputs),
            "opset_requested": args.opset, **result.to_dict()}

    def render(console: Console) -> None:
        console.print(f"wrote {result.path}: opset {result.opset}, {result.exporter} exporter, {result.seconds:.2f} s")
        console.print(f"inputs {', '.join(result.input_names)}; outputs {', '.join(result.output_names)}; "
                      f"batch dimension {'dynamic' if dynamic_batch else 'fixed'}")
        console.print(f"onnxruntime matches torch: max abs error {result.max_abs_error:.2g}, "
                      f"max rel error {result.max_rel_error:.2g}")
    return Output(data, render)


def _profile(args) -> Output:
    batch_sizes = _batch_sizes(args.batch_sizes)
    shapes = _input_shapes(args)
    refuse_huge_inputs(shapes, args.input_dtype)
    options = {"warmup": args.warmup, "repeats": args.repeats, "threads": args.threads,
               "provider": args.provider, "by_node": args.by_node, "torch_latency": args.torch}
    with cli_flags(FLAGS["profile"]):
        if profiled_as(args.model) == "onnx":
            if args.factory:
                raise ConfigError("--factory builds a torch model; it does not apply to an ONNX file")
            examples = make_inputs(shapes, args.input_dtype) if shapes else None
            report = profile(args.model, batch_sizes, example_inputs=examples, **options)
        else:
            loaded, inputs = _load(args, shapes)
            if loaded.fixed_batch is not None:
                raise ConfigError(f"{args.model} was exported with its batch size fixed at {loaded.fixed_batch}, "
                                  "and profile needs a model that runs at any batch size; export it again with a "
                                  "dynamic batch (torch.export dynamic_shapes with torch.export.Dim), or profile "
                                  f"its .onnx export with --batch-sizes {loaded.fixed_batch}")
            report = profile(loaded.module, batch_sizes, example_inputs=inputs, **options)
    data = {"model": _model_name(args), **report.to_dict()}
    return Output(data, lambda console: console.out(report.format_table()))


COMMANDS = {"demo-model": _demo_model, "analyze": _analyze, "export": _export, "profile": _profile}


def _load(args, shapes: list[tuple[int, ...]]) -> tuple[LoadedModel, tuple]:
    loaded = load_model(args.model, factory=args.factory, safe=args.safe)
    if loaded.warning:
        print(f"cascomp: warning: {loaded.warning}", file=sys.stderr)  # once, before the long work
    inputs = make_inputs(shapes, args.input_dtype) if shapes else loaded.example_inputs
    if inputs is None:
        raise ConfigError(f"the input shape of {_model_name(args)} is unknown; pass --input-shape with the batch "
                          "first, e.g. --input-shape 1,3,224,224 (once per input)")
    refuse_oversized_run(loaded.module, inputs)  # before check_runs runs the whole batch
    check_runs(loaded, inputs)
    return loaded, inputs


def _input_shapes(args) -> list[tuple[int, ...]]:
    if args.input_dtype and not args.input_shape:
        raise ConfigError("--input-dtype needs --input-shape; give both, e.g. --input-shape 1,16 --input-dtype int64")
    return [parse_input_shape(text) for text in args.input_shape or ()]


def _batch_sizes(text: str) -> tuple[int, ...]:
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() and int(part) > 0 for part in parts):
        raise ConfigError(f"--batch-sizes {text!r} must be positive integers separated by commas, e.g. 1,32")
    return tuple(int(part) for part in parts)


def _describe(inputs: tuple) -> list[dict]:
    return [{"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")} for t in inputs]


def _model_name(args) -> str:
    return str(args.model) if args.model else f"--factory {args.factory}"

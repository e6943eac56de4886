"""`cascomp analyze`: trace a model and show what can be pruned (see cascomp/cli/analysis_report.py)."""

from __future__ import annotations

from rich.console import Console

from cascomp.api import trace
from cascomp.cli.analysis_report import analysis_report, render_analysis
from cascomp.cli.command import FORMATTER, Output, add_json_argument, wrapped
from cascomp.cli.graph_picture import draw_groups
from cascomp.cli.model_arguments import (add_model_arguments, describe, input_shapes, load, model_name,
                                         refuse_huge_inputs, refuse_overwriting_model)
from cascomp.export.atomic import check_output_path
from cascomp.export.latency_table import format_table, latency_table
from cascomp.export.profile import profile

NAME = "analyze"


def add_parser(commands) -> None:
    command = commands.add_parser(
        NAME, help="show a model's cost, channel groups, frozen channels and search space",
        formatter_class=FORMATTER, description=wrapped("Trace a model and show what can be pruned: cost per "
        "sample, the channel groups (channels that must be removed together), the channels that must stay, "
        "and the smallest cost reachable."), epilog="examples:\n  cascomp analyze demo.pt --input-shape 1,1,28,28\n"
        "  cascomp analyze weights.pt --factory mymodels:resnet18 --input-shape 1,3,224,224 --json\n"
        "  cascomp analyze model.pt2 --ignore 'head.*' --round-to 8 --graph groups.png\n"
        "  cascomp analyze demo.pt --input-shape 1,1,28,28 --latency --threads 4")
    add_model_arguments(command)
    command.add_argument("--ignore", action="append", default=[], metavar="PATTERN",
                         help="module-name patterns whose channels stay, e.g. 'head.*' (repeatable)")
    command.add_argument("--round-to", type=int, default=1, metavar="N",
                         help="every pruned width is a multiple of N (default 1)")
    command.add_argument("--min-keep", type=int, default=1, metavar="N",
                         help="no group is pruned below N channels (default 1)")
    command.add_argument("--graph", metavar="PNG", help="also draw the graph, nodes coloured by channel group "
                         "(needs matplotlib; overwrites PNG)")
    command.add_argument("--latency", action="store_true",
                         help="also time every convolution and linear layer alone in onnxruntime at a few widths "
                         "(cached per machine) and print the per-layer table beside the whole model's latency")
    command.add_argument("--latency-batch", type=int, default=1, metavar="N",
                         help="batch size of the latency table (default 1)")
    command.add_argument("--threads", type=int, default=1, metavar="N",
                         help="onnxruntime threads of the latency table (default 1)")
    add_json_argument(command)


def run(args) -> Output:
    shapes = input_shapes(args)  # a typo in a flag fails before the slow load
    refuse_huge_inputs(shapes, args.input_dtype)
    if args.graph:
        check_output_path(args.graph, force=True)
        refuse_overwriting_model(args.model, args.graph, "--graph", "the picture")
    loaded, inputs = load(args, shapes)
    graph = trace(loaded.module, inputs, ignore=tuple(args.ignore), round_to=args.round_to, min_keep=args.min_keep)
    config = {"ignore": list(args.ignore), "round_to": args.round_to, "min_keep": args.min_keep,
              "factory": args.factory, "safe": args.safe, "input_shapes": args.input_shape,
              "input_dtypes": args.input_dtype}
    report = analysis_report(graph, model=model_name(args), source=loaded.source, inputs=describe(inputs),
                             config=config)
    if args.graph:
        draw_groups(graph, args.graph)
        report["graph"] = args.graph
    table = measured = None
    if args.latency:
        table = latency_table(graph, batch=args.latency_batch, threads=args.threads)
        whole = profile(graph.gm, (args.latency_batch,), example_inputs=inputs, threads=args.threads)
        measured = whole.results[0].median_ms
        report["latency_table"] = {**table.to_dict(), "measured_ms": measured}

    def render(console: Console) -> None:
        render_analysis(report, console)
        if table is not None:
            console.print(format_table(table, measured), highlight=False, markup=False)
        if args.graph:
            console.print(f"graph drawn to {args.graph}")
    return Output(report, render)

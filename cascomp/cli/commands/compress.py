"""`cascomp compress`: build a CompressConfig from the flags, load model and data, call `cascomp.compress`.

A new run records itself in OUT/run.json; `--resume OUT` continues one from that record alone. The rules for
the output folder (every check before anything is written; nothing replaced without --force, no input ever)
are in cascomp/cli/run_folder.py. Under torchrun every process runs this command; rank 0 alone checks and
claims the folder, writes into it and prints.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

from rich.console import Console

from cascomp.api import compress
from cascomp.cli.command import FORMATTER, Output
from cascomp.cli.run_folder import RUN_FILE, check_output_folder, claimed, resumable_run
from cascomp.cli.run_options import (DEFAULTS, add_budget, add_model, add_schedule, add_training, load_inputs,
                                     run_record, with_defaults)
from cascomp.config import METHOD_CONFIGS, command_line_options
from cascomp.data import SPEC_HELP
from cascomp.errors import ConfigError
from cascomp.methods import title
from cascomp.train.distributed import Cluster

NAME = "compress"


def add_parser(commands) -> None:
    command = commands.add_parser(
        NAME, help="search, prune and fine-tune a model to a FLOPs/params budget; ONNX, report and plots out",
        formatter_class=FORMATTER,
        description="Compress a trained classifier to a budget: the method searches which channels to keep, the "
                    "plan is projected to land within 1 % below every target, the pruned model is fine-tuned with "
                    "distillation from the original, then exported to ONNX and timed in onnxruntime.",
        epilog="examples:\n  cascomp compress model.pt --method figs --target flops=0.33 \\\n"
               "      --data fashion-mnist:/usr/share/datasets/fashion-mnist -o out/\n"
               "  cascomp compress --resume out/          # continue an interrupted run\n\n" + SPEC_HELP)
    add_model(command, "the trained model (torch.save of the module, or a state dict with --factory)")
    command.add_argument("--method", help=f"one of {', '.join(sorted(METHOD_CONFIGS))} (default sensitivity)")
    add_budget(command)
    command.add_argument("-o", "--output", metavar="OUT", help="output folder (model.pt, model.onnx, report.json, ...)")
    command.add_argument("--resume", metavar="OUT", help="continue the interrupted run whose output folder is OUT")
    command.add_argument("--force", action="store_true", help="replace the outputs of an earlier run in OUT")
    add_schedule(command)
    for flag, (field, _) in method_flags().items():  # each method's own options, from its config
        _add_method_option(command, flag, field)
    add_training(command)
    command.add_argument("--json", action="store_true", help="print report.json on stdout instead of a summary")


def method_flags() -> dict[str, tuple[dataclasses.Field, list[str]]]:
    """Every registered method's command-line options: flag -> (its config field, the methods taking it)."""
    flags: dict[str, tuple[dataclasses.Field, list[str]]] = {}
    for name in sorted(METHOD_CONFIGS):
        for field in command_line_options(METHOD_CONFIGS[name]):
            flags.setdefault(field.metadata["flag"], (field, []))[1].append(name)
    return flags


def _add_method_option(command, flag: str, field: dataclasses.Field) -> None:
    meta = field.metadata
    if meta["value"] is not None:
        command.add_argument(flag, action="store_true", help=meta["help"])
    elif meta["choices"]:
        command.add_argument(flag, choices=meta["choices"], help=meta["help"])
    else:
        kind = type(field.default) if isinstance(field.default, (int, float)) else str
        command.add_argument(flag, type=kind, help=meta["help"])


def _method_options(args, method: str) -> dict:
    """The chosen method's config fields set on the command line; another method's flag, or a flag whose
    setting the chosen options would not read, is refused."""
    flags = method_flags()
    given = {flag: value for flag in flags if (value := getattr(args, _dest(flag))) not in (None, False)}
    fields = {f.metadata["flag"]: f for f in command_line_options(METHOD_CONFIGS[method])}
    for flag in given:
        if flag not in fields:
            owners = " or ".join(title(name) for name in flags[flag][1])
            raise ConfigError(f"{flag} is a {owners} option; method {method!r} does not take it (drop it, or "
                              f"choose that method)")
    options = {fields[flag].name: value if fields[flag].metadata["value"] is None else fields[flag].metadata["value"]
               for flag, value in given.items()}
    by_name = {field.name: field for field in fields.values()}
    for flag in given:
        if fields[flag].metadata["requires"] is None:
            continue
        name, wanted = fields[flag].metadata["requires"]
        needed = by_name[name]
        if options.get(name, needed.default) != wanted:
            raise ConfigError(f"{flag} sets what only {needed.metadata['flag']} {wanted} reads (the default is "
                              f"{needed.default!r}); add {needed.metadata['flag']} {wanted} or drop {flag}")
    return options


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def run(args) -> Output:
    out, run = (Path(args.resume), _resumed_run(args)) if args.resume else (Path(args.output or ""), _new_run(args))
    inputs = load_inputs(run, warn=not args.resume)
    main = Cluster.from_environment().is_main
    if not args.resume and main:
        check_output_folder(out, run, force=args.force)
    with claimed(out, None if args.resume else run) if main else contextlib.nullcontext():
        result = compress(inputs.model.module, inputs.config, data=inputs.data, example_inputs=inputs.example,
                          out_dir=out, resume=bool(args.resume), progress=True)
    files = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))

    def render(console: Console) -> None:
        console.print(f"wrote {out}/: {', '.join(files)}")
    return Output(result.report, render)


def _new_run(args) -> dict:
    if args.model is None and args.factory is None:
        raise ConfigError("give the model to compress (MODEL, or --factory), or --resume OUT to continue a run")
    if not args.data:
        raise ConfigError(f"--data is required, e.g. --data fashion-mnist:/usr/share/datasets/fashion-mnist; {SPEC_HELP}")
    if not args.output:
        raise ConfigError("-o OUT is required: the folder for the compressed model, ONNX file and report")
    options = with_defaults(args)
    method = options.method
    if method not in METHOD_CONFIGS:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(sorted(METHOD_CONFIGS))}")
    return run_record(args, options, method, _method_options(args, method))


def _resumed_run(args) -> dict:
    """The run's record in --resume OUT; the flags that would change the run are refused (it is resumed as
    recorded)."""
    given = [f"--{name.replace('_', '-')}" for name, value in vars(args).items()
             if (name in DEFAULTS or name in ("limit_train", "limit_val", "factory")) and value is not None]
    given += [flag for flag in method_flags() if getattr(args, _dest(flag)) not in (None, False)]
    given += [flag for flag, value in (("MODEL", args.model), ("--data", args.data), ("-o", args.output),
                                       ("--force", args.force), ("--safe", args.safe),
                                       ("--reconstruct", args.reconstruct), ("--amp", args.amp)) if value]
    if given:
        raise ConfigError(f"--resume continues the run as {RUN_FILE} in {args.resume} records it, so it takes no "
                          f"{', '.join(sorted(given))}; drop them, or start a new run with them (-o NEW_OUT)")
    return resumable_run(args.resume)

"""`cascomp compress`: build a CompressConfig from the flags, load model and data, call `cascomp.compress`.

A new run records itself in OUT/run.json; `--resume OUT` continues one from that record alone. The rules for
the output folder (every check before anything is written; nothing replaced without --force, no input ever)
are in cascomp/cli/run_folder.py. Under torchrun every process runs this command; rank 0 alone checks and
claims the folder, writes into it and prints.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
from pathlib import Path

from rich.console import Console

from cascomp.api import compress
from cascomp.cli.command import FORMATTER, Output
from cascomp.cli.model_loading import check_runs, load_model
from cascomp.cli.run_folder import (RUN_FILE, RUN_FORMAT, absolute, check_output_folder, claimed, resumable_run,
                                    sha256)
from cascomp.config import (DEVICE_FORMS, METHOD_CONFIGS, CompressConfig, DistillConfig, Target, command_line_options,
                            resolve_device)
from cascomp.data import SPEC_HELP, absolute_spec, load_data
from cascomp.data.bundle import default_workers
from cascomp.errors import ConfigError
from cascomp.methods import title
from cascomp.train.distributed import Cluster

NAME = "compress"
# The run's options: parsed with default None, so an option given on the command line can be told from one
# left out (a resumed run refuses the former); the real defaults are applied here.
DEFAULTS = {"method": "sensitivity", "target": ["flops=0.33"], "epochs": None, "search_epochs": None,
            "finetune_epochs": None, "lr": 0.01,
            "batch_size": 128, "seed": 0, "kd_weight": 0.9, "kd_temperature": 4.0, "round_to": "auto",
            "min_keep": 1, "ignore": [], "output_index": None, "device": "auto", "workers": None}


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
    command.add_argument("model", nargs="?", metavar="MODEL", help="the trained model (torch.save of the module, "
                         "or a state dict with --factory)")
    command.add_argument("--factory", metavar="PKG.MODULE:FUNCTION", help="builds the model; MODEL is its state dict")
    command.add_argument("--safe", action="store_true", help="refuse pickles, which run code when loaded")
    command.add_argument("--method", help=f"one of {', '.join(sorted(METHOD_CONFIGS))} (default sensitivity)")
    command.add_argument("--target", action="append", metavar="METRIC=VALUE",
                         help="budget: flops=0.33 (ratio of the baseline), params=1.5M (absolute); repeatable "
                              "(default flops=0.33)")
    command.add_argument("--data", metavar="SPEC", help="training and validation data, e.g. fashion-mnist:DIR")
    command.add_argument("-o", "--output", metavar="OUT", help="output folder (model.pt, model.onnx, report.json, ...)")
    command.add_argument("--resume", metavar="OUT", help="continue the interrupted run whose output folder is OUT")
    command.add_argument("--force", action="store_true", help="replace the outputs of an earlier run in OUT")
    command.add_argument("--epochs", type=int, metavar="N", help="the budget: N passes over the training data in "
                         "all, search and fine-tuning, split by the method (a method without a search "
                         "fine-tunes for all of them)")
    command.add_argument("--search-epochs", type=int, metavar="N", help="search epochs (default 3 without --epochs)")
    command.add_argument("--finetune-epochs", type=int, metavar="N", help="fine-tuning epochs (default 3 without "
                         "--epochs); methods without a search fine-tune for the search epochs too")
    command.add_argument("--lr", type=float, help="weights' learning rate (default 0.01)")
    command.add_argument("--batch-size", type=int, metavar="N", help="(default 128)")
    command.add_argument("--limit-train", type=int, metavar="N", help="train on a seeded random subset of N samples")
    command.add_argument("--limit-val", type=int, metavar="N", help="validate on a seeded random subset of N samples")
    command.add_argument("--seed", type=int, help="(default 0)")
    for flag, (field, _) in method_flags().items():  # each method's own options, from its config
        _add_method_option(command, flag, field)
    command.add_argument("--kd-weight", type=float, help="weight of the distillation loss (default 0.9)")
    command.add_argument("--kd-temperature", type=float, help="distillation temperature (default 4)")
    command.add_argument("--round-to", type=_round_to, metavar="N|auto",
                         help="pruned widths are multiples of N; 'auto' (default) takes 8, else 4, 2 or 1, the "
                              "largest that still hits the budget within 1 %% (odd widths run slower)")
    command.add_argument("--min-keep", type=int, metavar="N", help="no group below N channels (default 1)")
    command.add_argument("--ignore", action="append", metavar="PATTERN",
                         help="module-name patterns whose channels stay, e.g. 'fc' (repeatable)")
    command.add_argument("--reconstruct", action="store_true",
                         help="before fine-tuning, refit the pruned conv/linear layers by least squares to the "
                              "baseline's outputs (forward passes on 8 training batches)")
    command.add_argument("--output-index", type=_index_or_key, metavar="N|KEY",
                         help="when forward returns a tuple or dict: which output is the logits (the compressed "
                              "model returns it alone)")
    command.add_argument("--device", help=f"where search and fine-tuning run: {DEVICE_FORMS} (default auto: "
                         "CUDA when available, else the CPU); the outputs are CPU modules either way")
    command.add_argument("--amp", action="store_true",
                         help="mixed precision for the forward passes of search and fine-tuning: bfloat16 on the "
                              "CPU and on GPUs that have it, else float16 with loss scaling; the budget "
                              "arithmetic stays in float32/float64")
    command.add_argument("--workers", type=int, metavar="N",
                         help="data loader worker processes (default: 0 on the CPU, up to 4 on a GPU); the "
                              "batches are the same for any N")
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


def _round_to(text: str) -> int | str:
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, got {text!r}")
    return int(text)


def _index_or_key(text: str) -> int | str:
    return int(text) if text.lstrip("-").isdigit() else text


def run(args) -> Output:
    out, run = (Path(args.resume), _resumed_run(args)) if args.resume else (Path(args.output or ""), _new_run(args))
    config = CompressConfig.from_dict(run["config"])
    device = resolve_device(config.device)
    workers = run.get("workers")
    data = load_data(run["data"], batch_size=run["batch_size"], seed=config.seed, limit_train=run["limit_train"],
                     limit_val=run["limit_val"], workers=default_workers(device) if workers is None else workers,
                     pin_memory=device.type == "cuda")
    loaded = load_model(run["model"], factory=run["factory"], safe=run["safe"])
    if loaded.warning and not args.resume:
        print(f"cascomp: warning: {loaded.warning}", file=sys.stderr)
    example = (next(iter(data.val))[0][:1].clone(),)
    check_runs(loaded, example, inputs_from=f"the samples of {run['data']}")
    main = Cluster.from_environment().is_main
    if not args.resume and main:
        check_output_folder(out, run, force=args.force)
    with claimed(out, None if args.resume else run) if main else contextlib.nullcontext():
        result = compress(loaded.module, config, data=data, example_inputs=example, out_dir=out,
                          resume=bool(args.resume), progress=True)
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
    given = {name: value for name, value in vars(args).items() if name in DEFAULTS and value is not None}
    options = argparse.Namespace(**{**DEFAULTS, **given})
    method = options.method
    if method not in METHOD_CONFIGS:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(sorted(METHOD_CONFIGS))}")
    method_options = _method_options(args, method)
    config = CompressConfig(
        method=method, targets=tuple(Target.parse(t) for t in options.target),
        method_config=METHOD_CONFIGS[method](**method_options), epochs=options.epochs,
        search_epochs=options.search_epochs,
        finetune_epochs=options.finetune_epochs, lr=options.lr, seed=options.seed, round_to=options.round_to,
        min_keep=options.min_keep, ignore=tuple(options.ignore), output_index=options.output_index,
        reconstruct=args.reconstruct, device=options.device, amp=args.amp,
        distill=DistillConfig(weight=options.kd_weight, temperature=options.kd_temperature))
    model = absolute(args.model)
    return {"format": RUN_FORMAT, "model": model, "model_sha256": sha256(model), "factory": args.factory,
            "safe": args.safe, "data": absolute_spec(args.data), "working_directory": os.getcwd(),
            "batch_size": options.batch_size, "limit_train": args.limit_train, "limit_val": args.limit_val,
            "workers": options.workers, "config": config.to_dict()}


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

"""`cascomp compress`: build a CompressConfig from the flags, load model and data, call `cascomp.compress`.

OUT/run.json records what the run was started with (model, data, loader options, config), so
`cascomp compress --resume OUT` needs nothing else.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from cascomp._atomic import atomic_output
from cascomp._commands import Output
from cascomp.api import compress
from cascomp.config import METHOD_CONFIGS, CompressConfig, DistillConfig, Target
from cascomp.data import SPEC_HELP, load_data
from cascomp.errors import ConfigError
from cascomp.io import check_runs, load_model
from cascomp.search.checkpoint import FILE as CHECKPOINT

RUN_FILE = "run.json"


def add_compress(commands, formatter) -> None:
    command = commands.add_parser(
        "compress", help="search, prune and fine-tune a model to a FLOPs/params budget; ONNX, report and plots out",
        formatter_class=formatter,
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
    command.add_argument("--method", default="figs", help=f"one of {', '.join(sorted(METHOD_CONFIGS))} (default figs)")
    command.add_argument("--target", action="append", metavar="METRIC=VALUE",
                         help="budget: flops=0.33 (ratio of the baseline), params=1.5M (absolute); repeatable")
    command.add_argument("--data", metavar="SPEC", help="training and validation data, e.g. fashion-mnist:DIR")
    command.add_argument("-o", "--output", metavar="OUT", help="output folder (model.pt, model.onnx, report.json, ...)")
    command.add_argument("--resume", metavar="OUT", help="continue the interrupted run whose output folder is OUT")
    command.add_argument("--force", action="store_true", help="reuse an output folder that holds a finished run")
    command.add_argument("--search-epochs", type=int, default=3, metavar="N", help="search epochs (default 3)")
    command.add_argument("--finetune-epochs", type=int, default=3, metavar="N", help="fine-tuning epochs (default 3); "
                         "methods without a search fine-tune for the search epochs too")
    command.add_argument("--lr", type=float, default=0.01, help="weights' learning rate (default 0.01)")
    command.add_argument("--batch-size", type=int, default=128, metavar="N")
    command.add_argument("--limit-train", type=int, metavar="N", help="train on a seeded random subset of N samples")
    command.add_argument("--limit-val", type=int, metavar="N", help="validate on a seeded random subset of N samples")
    command.add_argument("--seed", type=int, default=0)
    command.add_argument("--temperature", type=float, help="FiGS gate temperature (default 1e-3)")
    command.add_argument("--keep-search-weights", action="store_true",
                         help="FiGS: fine-tune from the weights trained during the search (default: the baseline's "
                              "weights of the kept channels)")
    command.add_argument("--kd-weight", type=float, default=0.9, help="weight of the distillation loss (default 0.9)")
    command.add_argument("--kd-temperature", type=float, default=4.0, help="distillation temperature (default 4)")
    command.add_argument("--round-to", type=_round_to, default="auto", metavar="N|auto",
                         help="pruned widths are multiples of N; 'auto' (default) takes 8, else 4, 2 or 1, the "
                              "largest that still hits the budget within 1 %% (odd widths run slower)")
    command.add_argument("--min-keep", type=int, default=1, metavar="N", help="no group below N channels")
    command.add_argument("--ignore", action="append", default=[], metavar="PATTERN",
                         help="module-name patterns whose channels stay, e.g. 'fc' (repeatable)")
    command.add_argument("--json", action="store_true", help="print report.json on stdout instead of a summary")


def _round_to(text: str) -> int | str:
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, got {text!r}")
    return int(text)


def compress_command(args) -> Output:
    run = _resumed_run(args) if args.resume else _new_run(args)
    out = Path(run["output"])
    data = load_data(run["data"], batch_size=run["batch_size"], seed=run["config"]["seed"],
                     limit_train=run["limit_train"], limit_val=run["limit_val"])
    loaded = load_model(run["model"], factory=run["factory"], safe=run["safe"])
    example = (next(iter(data.val))[0][:1].clone(),)
    check_runs(loaded, example)
    if not args.resume:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_output(out / RUN_FILE, force=True) as temporary:
            Path(temporary).write_text(json.dumps(run, indent=1))
    config = CompressConfig.from_dict(run["config"])
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
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"-o {out}: it is a file; give a folder")
    if (out / CHECKPOINT).exists() and not args.force:
        raise ConfigError(f"{out} holds an interrupted run; continue it with --resume {out}, or pass --force "
                          "to start over")
    if (out / "report.json").exists() and not args.force:
        raise ConfigError(f"{out} already holds a finished run; pass --force to overwrite it, or choose another -o")
    method = args.method
    if method not in METHOD_CONFIGS:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(sorted(METHOD_CONFIGS))}")
    method_options = {"temperature": args.temperature} if args.temperature is not None and method == "figs" else {}
    if args.keep_search_weights and method == "figs":
        method_options["weights"] = "search"
    for flag, given in (("--temperature", args.temperature is not None), ("--keep-search-weights", args.keep_search_weights)):
        if given and method != "figs":
            raise ConfigError(f"{flag} is a FiGS option; method {method!r} has no search")
    config = CompressConfig(
        method=method, targets=tuple(Target.parse(t) for t in (args.target or ["flops=0.33"])),
        method_config=METHOD_CONFIGS[method](**method_options), search_epochs=args.search_epochs,
        finetune_epochs=args.finetune_epochs, lr=args.lr, seed=args.seed, round_to=args.round_to,
        min_keep=args.min_keep, ignore=tuple(args.ignore),
        distill=DistillConfig(weight=args.kd_weight, temperature=args.kd_temperature))
    return {"model": args.model, "factory": args.factory, "safe": args.safe, "data": args.data,
            "batch_size": args.batch_size, "limit_train": args.limit_train, "limit_val": args.limit_val,
            "output": str(out), "config": config.to_dict()}


def _resumed_run(args) -> dict:
    if args.model or args.data or args.output:
        raise ConfigError("--resume OUT takes everything from OUT/run.json; drop MODEL, --data and -o")
    path = Path(args.resume) / RUN_FILE
    if not path.is_file():
        raise ConfigError(f"{args.resume} is not the output folder of a cascomp compress run (no {RUN_FILE})")
    if not (Path(args.resume) / CHECKPOINT).is_file():
        raise ConfigError(f"{args.resume} holds no checkpoint: the run finished, or never completed an epoch; "
                          "start it again without --resume")
    try:
        run = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"cannot read {path}: {error}") from error
    print(f"cascomp: resuming the run in {args.resume} ({run['config']['method']}, data {run['data']})", file=sys.stderr)
    return run

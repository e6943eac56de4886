"""`cascomp compress`: build a CompressConfig from the flags, load model and data, call `cascomp.compress`.

The output folder is the user's, so the rules are:
  1. every check (flags, data, model, model-data fit, the folder) runs before anything is written;
  2. a file cascomp would write is never replaced unless --force, and an input (the model, its weights,
     a data file) is never written over at all; --force first invalidates the old run's outputs, so an
     interrupted rerun cannot pass for the finished old one;
  3. OUT/run.json records what the run was started with, with absolute paths, the model file's sha256 and
     the working directory, so `cascomp compress --resume OUT` needs nothing else, works from any working
     directory and on a copied folder, and refuses a model that changed;
  4. a run that fails before its first checkpoint takes away what it wrote (and OUT, if it made it); one
     that fails after it stays resumable.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console

from cascomp._atomic import atomic_output
from cascomp._commands import Output
from cascomp.api import compress
from cascomp.config import METHOD_CONFIGS, CompressConfig, DistillConfig, Target
from cascomp.data import SPEC_HELP, absolute_spec, load_data, spec_path
from cascomp.errors import ConfigError
from cascomp.io import check_runs, load_model
from cascomp.report import Outputs
from cascomp.search.checkpoint import FILE as CHECKPOINT

RUN_FILE = "run.json"
RUN_FORMAT = 2
# The run's options: parsed with default None, so an option given on the command line can be told from one
# left out (a resumed run refuses the former); the real defaults are applied here.
DEFAULTS = {"method": "figs", "target": ["flops=0.33"], "epochs": None, "search_epochs": None,
            "finetune_epochs": None, "lr": 0.01,
            "batch_size": 128, "seed": 0, "kd_weight": 0.9, "kd_temperature": 4.0, "round_to": "auto",
            "min_keep": 1, "ignore": [], "output_index": None}


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
    command.add_argument("--method", help=f"one of {', '.join(sorted(METHOD_CONFIGS))} (default figs)")
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
    command.add_argument("--temperature", type=float, help="FiGS gate temperature (default 1e-3)")
    command.add_argument("--keep-search-weights", action="store_true",
                         help="FiGS: fine-tune from the weights trained during the search (default: the baseline's "
                              "weights of the kept channels)")
    command.add_argument("--kd-weight", type=float, help="weight of the distillation loss (default 0.9)")
    command.add_argument("--kd-temperature", type=float, help="distillation temperature (default 4)")
    command.add_argument("--round-to", type=_round_to, metavar="N|auto",
                         help="pruned widths are multiples of N; 'auto' (default) takes 8, else 4, 2 or 1, the "
                              "largest that still hits the budget within 1 %% (odd widths run slower)")
    command.add_argument("--min-keep", type=int, metavar="N", help="no group below N channels (default 1)")
    command.add_argument("--ignore", action="append", metavar="PATTERN",
                         help="module-name patterns whose channels stay, e.g. 'fc' (repeatable)")
    command.add_argument("--output-index", type=_index_or_key, metavar="N|KEY",
                         help="when forward returns a tuple or dict: which output is the logits (the compressed "
                              "model returns it alone)")
    command.add_argument("--json", action="store_true", help="print report.json on stdout instead of a summary")


def _round_to(text: str) -> int | str:
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, got {text!r}")
    return int(text)


def _index_or_key(text: str) -> int | str:
    return int(text) if text.lstrip("-").isdigit() else text


def compress_command(args) -> Output:
    out, run = (Path(args.resume), _resumed_run(args)) if args.resume else (Path(args.output or ""), _new_run(args))
    data = load_data(run["data"], batch_size=run["batch_size"], seed=run["config"]["seed"],
                     limit_train=run["limit_train"], limit_val=run["limit_val"])
    loaded = load_model(run["model"], factory=run["factory"], safe=run["safe"])
    if loaded.warning and not args.resume:
        print(f"cascomp: warning: {loaded.warning}", file=sys.stderr)
    example = (next(iter(data.val))[0][:1].clone(),)
    check_runs(loaded, example, inputs_from=f"the samples of {run['data']}")
    config = CompressConfig.from_dict(run["config"])
    if not args.resume:
        _check_output_folder(out, run, force=args.force)
    with _claimed(out, None if args.resume else run):
        result = compress(loaded.module, config, data=data, example_inputs=example, out_dir=out,
                          resume=bool(args.resume), progress=True)
    files = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))

    def render(console: Console) -> None:
        console.print(f"wrote {out}/: {', '.join(files)}")
    return Output(result.report, render)


# -- a new run -------------------------------------------------------------------------------------------------
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
    for flag, was_given in (("--temperature", args.temperature is not None),
                            ("--keep-search-weights", args.keep_search_weights)):
        if was_given and method != "figs":
            raise ConfigError(f"{flag} is a FiGS option; method {method!r} has no search")
    method_options = {"temperature": args.temperature} if args.temperature is not None else {}
    if args.keep_search_weights:
        method_options["weights"] = "search"
    config = CompressConfig(
        method=method, targets=tuple(Target.parse(t) for t in options.target),
        method_config=METHOD_CONFIGS[method](**method_options), epochs=options.epochs,
        search_epochs=options.search_epochs,
        finetune_epochs=options.finetune_epochs, lr=options.lr, seed=options.seed, round_to=options.round_to,
        min_keep=options.min_keep, ignore=tuple(options.ignore), output_index=options.output_index,
        distill=DistillConfig(weight=options.kd_weight, temperature=options.kd_temperature))
    model = _absolute(args.model)
    return {"format": RUN_FORMAT, "model": model, "model_sha256": _sha256(model), "factory": args.factory,
            "safe": args.safe, "data": absolute_spec(args.data), "working_directory": os.getcwd(),
            "batch_size": options.batch_size, "limit_train": args.limit_train, "limit_val": args.limit_val,
            "config": config.to_dict()}


def _check_output_folder(out: Path, run: dict, *, force: bool) -> None:
    """Rule 2: what the run would replace, and the inputs it must never write over."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"-o {out}: it is a file; give a folder")
    written = [out / name for name in (*Outputs.FILES, RUN_FILE, CHECKPOINT)]
    inputs = [run["model"], spec_path(run["data"])]
    for path in written:
        for given in inputs:
            if given is not None and path.exists() and os.path.exists(given) and os.path.samefile(path, given):
                raise ConfigError(f"-o {out} would write over the input {given} (as {path.name}); choose another "
                                  "output folder")
    if force:
        return
    if (out / CHECKPOINT).exists():
        raise ConfigError(f"{out} holds an interrupted run; continue it with --resume {out}, or pass --force "
                          "to start over")
    if (out / "report.json").exists():
        raise ConfigError(f"{out} already holds a finished run; pass --force to overwrite it, or choose another -o")
    existing = [path.name for path in written if path.exists()]
    if existing == [RUN_FILE]:
        raise ConfigError(f"{out} holds a run that stopped before its first checkpoint; pass --force to start "
                          "over, or choose another -o")
    if existing:
        raise ConfigError(f"{out} already holds {', '.join(existing)}, which compress would replace; pass --force "
                          "to replace them, or choose another -o")


@contextlib.contextmanager
def _claimed(out: Path, run: dict | None) -> Iterator[None]:
    """Rules 2 and 4 for the run's time in OUT. `run`: a new run's record (written to OUT/run.json after the old
    outputs are invalidated); None when resuming."""
    made = not out.exists()
    if run is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot create output folder {str(out)!r}: {error.strerror or error}") from error
        Outputs.clear(out, (RUN_FILE, CHECKPOINT))  # the finished-run marker, report.json, goes first
        with atomic_output(out / RUN_FILE, force=True) as temporary:
            Path(temporary).write_text(json.dumps(run, indent=1))
    try:
        yield
    except BaseException:
        if (out / CHECKPOINT).exists():
            print(f"cascomp: the run stopped after a checkpoint; continue it with: cascomp compress --resume {out}",
                  file=sys.stderr)
        elif run is not None:  # nothing to resume: take away what this run wrote
            Outputs.clear(out, (RUN_FILE,))
            if made:
                with contextlib.suppress(OSError):
                    out.rmdir()
        raise


# -- a resumed run ---------------------------------------------------------------------------------------------
_RUN_KEYS = {"format": int, "model": (str, type(None)), "model_sha256": (str, type(None)),
             "factory": (str, type(None)), "safe": bool, "data": str, "working_directory": str,
             "batch_size": int, "limit_train": (int, type(None)), "limit_val": (int, type(None)), "config": dict}


def _resumed_run(args) -> dict:
    given = [f"--{name.replace('_', '-')}" for name, value in vars(args).items()
             if (name in DEFAULTS or name in ("limit_train", "limit_val", "temperature", "factory")) and value is not None]
    given += [flag for flag, value in (("MODEL", args.model), ("--data", args.data), ("-o", args.output),
                                       ("--force", args.force), ("--safe", args.safe),
                                       ("--keep-search-weights", args.keep_search_weights)) if value]
    if given:
        raise ConfigError(f"--resume continues the run as {RUN_FILE} in {args.resume} records it, so it takes no "
                          f"{', '.join(sorted(given))}; drop them, or start a new run with them (-o NEW_OUT)")
    folder = Path(args.resume)
    path = folder / RUN_FILE
    if not path.is_file():
        raise ConfigError(f"{args.resume} is not the output folder of a cascomp compress run (no {RUN_FILE})")
    if not (folder / CHECKPOINT).is_file():
        if (folder / "report.json").is_file():
            raise ConfigError(f"the run in {args.resume} finished (its report.json is there): nothing to resume")
        raise ConfigError(f"the run in {args.resume} stopped before its first checkpoint: nothing to resume; start "
                          f"it again with -o {args.resume} --force")
    run = _read_run_file(path)
    if run["working_directory"] not in sys.path:  # a factory (model or data) imports as it did at the start
        sys.path.insert(0, run["working_directory"])
    if run["model"] is not None:
        if not os.path.isfile(run["model"]):
            raise ConfigError(f"the model file the run started from, {run['model']}, is gone; put it back to "
                              "resume, or start a new run")
        if _sha256(run["model"]) != run["model_sha256"]:
            raise ConfigError(f"the model file {run['model']} changed since the run started (its sha256 differs "
                              f"from {RUN_FILE}'s); resume needs the same file: restore it, or start a new run on "
                              "the new model (-o NEW_OUT)")
    print(f"cascomp: resuming the run in {args.resume} ({run['config'].get('method')}, data {run['data']})",
          file=sys.stderr)
    return run


def _read_run_file(path: Path) -> dict:
    fix = "start the run again (-o NEW_OUT, or --force to reuse the folder)"
    try:
        run = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"cannot read {path}: {error}; {fix}") from error
    if not isinstance(run, dict) or run.get("format") != RUN_FORMAT:
        raise ConfigError(f"{path} was not written by this version of cascomp compress; {fix}")
    for key, kinds in _RUN_KEYS.items():
        if key not in run:
            raise ConfigError(f"{path} lacks {key!r} (damaged or edited); {fix}")
        if not isinstance(run[key], kinds) or (kinds is int and isinstance(run[key], bool)):
            raise ConfigError(f"{path}: {key!r} is {run[key]!r}, not what compress wrote (damaged or edited); {fix}")
    try:
        CompressConfig.from_dict(run["config"])
    except (ConfigError, TypeError) as error:
        raise ConfigError(f"{path}: its config is not valid ({error}); {fix}") from error
    return run


# -- paths -----------------------------------------------------------------------------------------------------
def _absolute(path: str | None) -> str | None:
    return None if path is None else os.path.abspath(os.path.expanduser(path))


def _sha256(path: str | None) -> str | None:
    if path is None or not os.path.isfile(path):
        return None  # load_model says what is wrong with the path
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

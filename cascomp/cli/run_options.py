"""The options `cascomp compress` and `cascomp compare` share: their flags, the run record they turn into
(model, data and a CompressConfig, as compress's run.json holds it) and the model and data that record names,
loaded and checked against each other before any training.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import torch

from cascomp.cli.model_loading import LoadedModel, check_runs, load_model
from cascomp.cli.run_folder import RUN_FORMAT, absolute, sha256
from cascomp.config import DEVICE_FORMS, METHOD_CONFIGS, CompressConfig, DistillConfig, Target, resolve_device
from cascomp.data import DataBundle, absolute_spec, load_data
from cascomp.data.bundle import default_workers

# The run's options: parsed with default None, so an option given on the command line can be told from one
# left out (a resumed run refuses the former); the real defaults are applied here.
DEFAULTS = {"method": "sensitivity", "target": ["flops=0.33"], "epochs": None, "search_epochs": None,
            "finetune_epochs": None, "lr": 0.01,
            "batch_size": 128, "seed": 0, "kd_weight": 0.9, "kd_temperature": 4.0, "round_to": "auto",
            "min_keep": 1, "ignore": [], "output_index": None, "device": "auto", "workers": None,
            "latency_threads": 1, "latency_device": "cpu"}


def add_model(command, what: str) -> None:
    """MODEL, --factory, --safe."""
    command.add_argument("model", nargs="?", metavar="MODEL", help=what)
    command.add_argument("--factory", metavar="PKG.MODULE:FUNCTION", help="builds the model; MODEL is its state dict")
    command.add_argument("--safe", action="store_true", help="refuse pickles, which run code when loaded")


def add_budget(command) -> None:
    """--target, --data."""
    command.add_argument("--target", action="append", metavar="METRIC=VALUE",
                         help="budget: flops=0.33 (ratio of the baseline), params=1.5M (absolute), latency=0.5 or "
                              "latency=12ms (onnxruntime, predicted by a per-layer table); or the accuracy tolerance "
                              "drop=0.5 (top-1 points, gensynth); repeatable (default flops=0.33)")
    command.add_argument("--data", metavar="SPEC", help="training and validation data, e.g. fashion-mnist:DIR")


def add_schedule(command) -> None:
    """--epochs, --search-epochs, --finetune-epochs, --lr, --batch-size, --limit-train, --limit-val, --seed."""
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


def add_training(command) -> None:
    """Distillation, widths, the device and the loaders: --kd-weight ... --workers."""
    command.add_argument("--kd-weight", type=float, help="weight of the distillation loss (default 0.9)")
    command.add_argument("--kd-temperature", type=float, help="distillation temperature (default 4)")
    command.add_argument("--round-to", type=_round_to, metavar="N|auto",
                         help="pruned widths are multiples of N; 'auto' (default) takes 8, else 4, 2 or 1, the "
                              "largest that still hits the budget within 1 %% (odd widths run slower)")
    command.add_argument("--min-keep", type=int, metavar="N", help="no group below N channels (default 1)")
    command.add_argument("--latency-threads", type=int, metavar="N", help="onnxruntime threads of the per-layer "
                         "latency table a latency target is priced with, at batch 1 (default 1)")
    command.add_argument("--latency-device", choices=("cpu", "cuda"), help="onnxruntime provider of that table: "
                         "where the model will run (default cpu; cuda needs onnxruntime-gpu)")
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


def _round_to(text: str) -> int | str:
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, got {text!r}")
    return int(text)


def _index_or_key(text: str) -> int | str:
    return int(text) if text.lstrip("-").isdigit() else text


def with_defaults(args) -> argparse.Namespace:
    """The run's options: those given on the command line, DEFAULTS for the rest."""
    given = {name: value for name, value in vars(args).items() if name in DEFAULTS and value is not None}
    return argparse.Namespace(**{**DEFAULTS, **given})


def run_record(args, options: argparse.Namespace, method: str, method_options: dict) -> dict:
    """What compress's run.json holds: the model file (absolute, with its sha256), the data spec (absolute),
    the loader settings and the CompressConfig of `method` with `method_options`."""
    config = CompressConfig(
        method=method, targets=tuple(Target.parse(t) for t in options.target),
        method_config=METHOD_CONFIGS[method](**method_options), epochs=options.epochs,
        search_epochs=options.search_epochs,
        finetune_epochs=options.finetune_epochs, lr=options.lr, seed=options.seed, round_to=options.round_to,
        min_keep=options.min_keep, ignore=tuple(options.ignore), output_index=options.output_index,
        reconstruct=args.reconstruct, device=options.device, amp=args.amp, latency_threads=options.latency_threads,
        latency_device=options.latency_device,
        distill=DistillConfig(weight=options.kd_weight, temperature=options.kd_temperature))
    model = absolute(args.model)
    return {"format": RUN_FORMAT, "model": model, "model_sha256": sha256(model), "factory": args.factory,
            "safe": args.safe, "data": absolute_spec(args.data), "working_directory": os.getcwd(),
            "batch_size": options.batch_size, "limit_train": args.limit_train, "limit_val": args.limit_val,
            "workers": options.workers, "config": config.to_dict()}


@dataclass(frozen=True)
class RunInputs:
    config: CompressConfig
    data: DataBundle
    model: LoadedModel
    example: tuple[torch.Tensor, ...]  # one validation sample, the model's example input


def load_inputs(run: dict, *, warn: bool) -> RunInputs:
    """The config, data and model a run record names, the model tried once on a sample of the data. `warn`:
    print the model's loading warning (pickles run code) on stderr."""
    config = CompressConfig.from_dict(run["config"])
    device = resolve_device(config.device)
    workers = run.get("workers")
    data = load_data(run["data"], batch_size=run["batch_size"], seed=config.seed, limit_train=run["limit_train"],
                     limit_val=run["limit_val"], workers=default_workers(device) if workers is None else workers,
                     pin_memory=device.type == "cuda")
    loaded = load_model(run["model"], factory=run["factory"], safe=run["safe"])
    if loaded.warning and warn:
        print(f"cascomp: warning: {loaded.warning}", file=sys.stderr)
    example = (next(iter(data.val))[0][:1].clone(),)
    check_runs(loaded, example, inputs_from=f"the samples of {run['data']}")
    return RunInputs(config=config, data=data, model=loaded, example=example)

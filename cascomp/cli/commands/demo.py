"""`cascomp demo-model`: save the small demo CNN, with random weights or trained on --train data."""

from __future__ import annotations

import sys

from cascomp.cli.command import FORMATTER, Output, wrapped
from cascomp.data import load_data
from cascomp.train.demo import save_demo_model
from cascomp.zoo.demo import INPUT_SHAPE
from cascomp.errors import ConfigError
from cascomp.export.atomic import check_output_path

NAME = "demo-model"


def add_parser(commands) -> None:
    command = commands.add_parser(
        NAME, help="save a small demo CNN (1x28x28 inputs) to try the other commands on",
        formatter_class=FORMATTER, description=wrapped("Save a small ResNet-style CNN for 1x28x28 images (10 "
        "classes) with torch.save."), epilog="example:\n  cascomp demo-model -o demo.pt")
    command.add_argument("-o", "--output", required=True, metavar="PATH", help="where to save it (.pt)")
    command.add_argument("--force", action="store_true", help="overwrite PATH if it exists")
    command.add_argument("--train", metavar="SPEC", help="train it first on this data, e.g. "
                         "fashion-mnist:/usr/share/datasets/fashion-mnist (default: random weights)")
    command.add_argument("--epochs", type=int, metavar="N", help="training epochs with --train (default 1)")
    command.add_argument("--limit-train", type=int, metavar="N", help="train on a seeded subset of N samples")
    command.add_argument("--limit-val", type=int, metavar="N", help="validate on a seeded subset of N samples")


def run(args) -> Output:
    _check_arguments(args)
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


def _check_arguments(args) -> None:
    training = {"--epochs": args.epochs, "--limit-train": args.limit_train, "--limit-val": args.limit_val}
    for flag, value in training.items():
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be a positive integer, got {value}; give one, or leave the flag out")
    given = [flag for flag, value in training.items() if value is not None]
    if given and not args.train:
        raise ConfigError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} only with --train; give "
                          "the data to train on, e.g. "
                          "--train fashion-mnist:/path/to/fashion-mnist, or leave them out for random weights")

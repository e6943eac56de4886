"""`cascomp compare`: several methods on one trained baseline with the same data, targets, seed and epoch budget,
and one table of what each gave (the survey's Table 1 -- MFLOPs, #Parameters, Top-1 % -- and more columns).

Each method runs as `cascomp compress` would with that method's default options, in its own folder under OUT
(OUT/<method>/, or OUT/<method>/seed-<k>/ with --seeds); OUT/compare.md, compare.json and compare.png hold the
table and its plot, OUT/compare-run.json the settings the runs share (cascomp/export/comparison_folder.py).
Stopped, the same command again continues: finished runs are reused, an interrupted one resumes from its
checkpoint. A run that fails (a budget it cannot reach, ...) gets a "failed: ..." row and the others go on;
the command then exits with status 3, after writing the table. Every check runs before the first run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from cascomp.api import checked_methods, compare
from cascomp.config import CompressConfig
from cascomp.cli.command import FORMATTER, Output, add_json_argument, wrapped
from cascomp.cli.run_options import (add_budget, add_model, add_schedule, add_training, load_inputs, run_record,
                                     with_defaults)
from cascomp.data import SPEC_HELP
from cascomp.errors import ConfigError
from cascomp.methods import METHODS

NAME = "compare"
FAILED_STATUS = 3  # the table is written, but some run failed


def add_parser(commands) -> None:
    command = commands.add_parser(
        NAME, help="run several methods on one model with the same data, seed and budget; one table of results",
        formatter_class=FORMATTER,
        description=wrapped("Compress one trained classifier with each of several methods, each with its default "
                            "options and the same targets, data, seed and epoch budget, each in its own folder "
                            "under OUT; then tabulate MFLOPs, parameters, top-1, its change, the budget reached, "
                            "onnxruntime latency and wall time per method (OUT/compare.md, compare.json) and plot "
                            "top-1 against FLOPs and latency (OUT/compare.png). Rerun the same command to continue "
                            "a compare that stopped; exit status 3 when some run failed (its row says why)."),
        epilog="examples:\n  cascomp compare model.pt --methods l1,uniform,figs,sensitivity --target flops=0.33 \\\n"
               "      --data fashion-mnist:/usr/share/datasets/fashion-mnist --epochs 2 -o compare/\n"
               "  cascomp compare model.pt --methods l1,uniform --seeds 3 --data fashion-mnist:DIR -o seeds/\n\n"
               + SPEC_HELP)
    add_model(command, "the trained baseline (torch.save of the module, or a state dict with --factory)")
    command.add_argument("--methods", metavar="A,B,...", help="the methods to run, comma-separated (default: "
                         f"every registered one: {','.join(sorted(METHODS))})")
    add_budget(command)
    command.add_argument("-o", "--output", metavar="OUT",
                         help="output folder: a run folder per method, compare.md, compare.json, compare.png")
    command.add_argument("--force", action="store_true",
                         help="start OUT afresh: remove the runs and tables of an earlier compare there")
    command.add_argument("--seeds", type=_positive, default=1, metavar="N",
                         help="run every method N times, with seeds SEED, SEED+1, ...; top-1 is then the mean "
                              "± the sample standard deviation (default 1)")
    add_schedule(command)
    add_training(command)
    add_json_argument(command)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def run(args) -> Output:
    if args.model is None and args.factory is None:
        raise ConfigError("give the trained model to compare the methods on (MODEL, or --factory)")
    if not args.data:
        raise ConfigError(f"--data is required, e.g. --data fashion-mnist:/usr/share/datasets/fashion-mnist; {SPEC_HELP}")
    if not args.output:
        raise ConfigError("-o OUT is required: the folder for the runs and the table")
    methods, out = _methods(args.methods), Path(args.output)
    record = run_record(args, with_defaults(args), methods[0], {})  # the method is each run's own
    checked_methods(methods, CompressConfig.from_dict(record["config"]))  # every method takes these settings
    _check_output_folder(out, record["model"])
    inputs = load_inputs(record, warn=True)
    try:
        result = compare(inputs.model.module, inputs.config, data=inputs.data, example_inputs=inputs.example,
                         out_dir=out, methods=methods, seeds=args.seeds, force=args.force)
    except KeyboardInterrupt:
        print("cascomp: compare stopped; run the same command again to continue where it stopped", file=sys.stderr)
        raise
    table = result.files["md"].read_text(encoding="utf-8")

    def render(console: Console) -> None:
        console.print(table, end="", soft_wrap=True)  # a markdown table: never wrapped
        console.print(f"\nwrote {out}/: {', '.join(path.name for path in result.files.values())}")
        if result.failed:
            console.print(f"failed: {', '.join(result.failed)} (exit status {FAILED_STATUS}; see the table)")
    document = json.loads(result.files["json"].read_text(encoding="utf-8"))
    return Output(document, render, status=FAILED_STATUS if result.failed else 0)


def _methods(text: str | None) -> tuple[str, ...]:
    """--methods, checked against the registry before anything runs (by the API's own check)."""
    if text is None:
        return checked_methods(None)
    try:
        return checked_methods([name.strip() for name in text.split(",") if name.strip()])
    except ConfigError as error:
        raise ConfigError(f"--methods: {error}") from None


def _check_output_folder(out: Path, model: str | None) -> None:
    """OUT must be a folder, and hold no input where the runs write (their folders are OUT's subfolders)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"-o {out}: it is a file; give a folder")
    if model is not None and out.resolve() in Path(model).resolve().parents[1:]:
        raise ConfigError(f"the model {model} lies in a subfolder of -o {out}, where the runs write their "
                          "outputs; choose another -o, or move the model out of it")

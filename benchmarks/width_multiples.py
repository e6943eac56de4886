"""What width multiples buy in onnxruntime: a ResNet-20 pruned to a FLOPs target with widths in multiples of
1, 4, 8 (and 16 where the target allows it), timed against the unpruned baseline.

Each model is the uniform method's projection onto the target under that multiple (the widths `compress`
builds; latency does not depend on the weights, so none are trained). The models are timed in interleaved
rounds (median of the rounds' medians) at batch 1 and 32, on one thread and on onnxruntime's default
threads. Run it on an otherwise idle machine.

    python benchmarks/width_multiples.py [--targets flops=0.33,flops=0.5] [--rounds 3] [--repeats 50]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cascomp  # noqa: E402
from cascomp.config import Target  # noqa: E402
from cascomp.errors import SearchError  # noqa: E402
from cascomp.methods import METHODS  # noqa: E402
from cascomp.search.budget import Fit, fit_widths, target_ratios  # noqa: E402
from cascomp.zoo.resnet20 import ResNet20  # noqa: E402
from _results import RESULTS, recorded  # noqa: E402
from fashion_mnist import interleaved_latency  # noqa: E402

MULTIPLES = (1, 4, 8, 16)


def pruned_models(graph, target: str) -> dict[str, tuple[torch.nn.Module, Fit]]:
    """"x<multiple>" -> (pruned module, its fit) for every multiple under which the target is reachable."""
    decision = METHODS["uniform"](graph, None).decide(graph.gm)
    models = {}
    for multiple in MULTIPLES:
        view = graph.with_width_multiple(multiple)
        try:
            goals = target_ratios(view, (Target.parse(target),))
        except SearchError as error:
            print(f"{target}, multiple {multiple}: skipped ({str(error).split(':')[0]})")
            continue
        fit = fit_widths(view, decision.scores, decision.family, goals)
        models[f"x{multiple}"] = (cascomp.apply_plan(view, fit.plan), fit)
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="flops=0.33,flops=0.5")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--results", default=str(RESULTS),
                        help="the Markdown file whose width-multiples section is regenerated ('' leaves it)")
    args = parser.parse_args()
    with recorded(Path(args.results) if args.results else None, "width_multiples.py",
                  "Width multiples and latency (`benchmarks/width_multiples.py`)", "python benchmarks/width_multiples.py"):
        measure(args)


def measure(args) -> None:
    torch.manual_seed(0)
    baseline, x = ResNet20().eval(), torch.zeros(1, 1, 28, 28)
    graph = cascomp.trace(baseline, x)
    for target in args.targets.split(","):
        pruned = pruned_models(graph, target)
        models = {"baseline": baseline, **{name: module for name, (module, _) in pruned.items()}}
        median = interleaved_latency(models, args.rounds, warmup=10, repeats=args.repeats, example_inputs=(x,))
        print(f"\n{target}: latency in ms (ratio to the baseline)")
        print(f"{'widths':<9} {'FLOPs':>6} {'1 thread b1':>16} {'b32':>16} {'default b1':>16} {'b32':>16}  widths")
        for name in models:
            cells = []
            for threads in (1, None):
                for batch in (1, 32):
                    ms = median[(name, threads, batch)]
                    cells.append(f"{ms:8.3f} ({ms / median[('baseline', threads, batch)]:.2f})")
            flops, widths = (1.0, "") if name == "baseline" else (pruned[name][1].reached["flops"],
                                                                  list(pruned[name][1].widths.values()))
            print(f"{name:<9} {flops:>6.3f} {cells[0]:>16} {cells[1]:>16} {cells[2]:>16} {cells[3]:>16}  {widths}")


if __name__ == "__main__":
    main()

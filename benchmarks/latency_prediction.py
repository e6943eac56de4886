"""How well the per-layer latency table predicts what a compressed model's latency becomes.

A latency target (`--target latency=R`) is landed on the table's prediction (cascomp.export.latency_table:
every convolution and linear layer timed alone in onnxruntime, ms = a + b x MACs fitted over its widths, plus
one run's own cost). This script sets that prediction beside the measured latency ratio for the models of the
"mnist" zoo suite (the demo network, ResNet-20, VGG, WRN-10-2; untrained weights: latency does not depend on
them) under several plans: the same fraction of every group kept (0.75, 0.5, 0.25), a random plan, and the
network with every eligible convolution made depthwise-separable ("3x3DS", darc's substitution, at full
width and at half). The measured ratio is the median over interleaved rounds of the two exported models
(one thread, as the table), with its spread; the error is predicted - measured.

    python benchmarks/latency_prediction.py [--rounds 5] [--batch 1] [--results '']
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cascomp  # noqa: E402
from cascomp.kernels.candidates import eligible  # noqa: E402
from cascomp.zoo import build, example_inputs, names  # noqa: E402
from _results import RESULTS, recorded  # noqa: E402
from _timing import interleaved_latency, predicted_ms, ratio_with_spread  # noqa: E402


def plans(graph: cascomp.Graph) -> dict[str, cascomp.Plan]:
    """The plans every model is measured under (see the module docstring)."""
    operators = {path: "3x3DS" for path, module in graph.gm.named_modules()
                 if path and isinstance(module, torch.nn.Conv2d) and eligible(module) is None}
    substituted = cascomp.substitute_operators(graph, operators)
    return {"keep 0.75": cascomp.Plan.uniform(graph, 0.75), "keep 0.5": cascomp.Plan.uniform(graph, 0.5),
            "keep 0.25": cascomp.Plan.uniform(graph, 0.25), "random 0.5": cascomp.Plan.random(graph, 0.5, seed=0),
            "3x3DS": cascomp.Plan(cascomp.Plan.full(substituted).keep, operators),
            "3x3DS, keep 0.5": cascomp.Plan(cascomp.Plan.uniform(substituted, 0.5).keep, operators)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per model (default 5)")
    parser.add_argument("--batch", type=int, default=1, help="the batch the table and the timing use (default 1)")
    parser.add_argument("--models", nargs="*", default=names("mnist"))
    parser.add_argument("--results", default=str(RESULTS), help="the results file whose section this rewrites "
                        "('' to only print)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    command = "python benchmarks/latency_prediction.py" + (f" --batch {args.batch}" if args.batch != 1 else "")
    with recorded(Path(args.results) if args.results else None, "latency_prediction.py",
                  "Latency targets: the per-layer table's prediction against the measured latency", command):
        print(f"onnxruntime, one thread, batch {args.batch}; ratios of the baseline's latency; measured: median of "
              f"{args.rounds} interleaved rounds (± half the spread)\n")
        print("| model | plan | FLOPs | predicted | measured | error |\n|---|---|--:|--:|--:|--:|")
        errors = []
        for name in args.models:
            inputs = example_inputs(name)
            graph = cascomp.trace(build(name).eval(), inputs)
            base = predicted_ms(graph, args.batch)
            x = (torch.zeros((1,) + tuple(inputs[0].shape[1:])),)
            with tempfile.TemporaryDirectory() as scratch:
                paths = {"baseline": f"{scratch}/baseline.onnx", "compressed": f"{scratch}/small.onnx"}
                cascomp.export_onnx(graph.gm, x, paths["baseline"])  # once per model: the reference of every plan
                for label, plan in plans(graph).items():
                    small = cascomp.apply_plan(graph, plan).eval()
                    traced = cascomp.trace(small, inputs)
                    predicted = predicted_ms(traced, args.batch) / base
                    cascomp.export_onnx(small, x, paths["compressed"])
                    samples = interleaved_latency(paths, args.rounds, warmup=5, repeats=20, batches=(args.batch,),
                                                  threads=(1,))
                    measured, spread = ratio_with_spread(samples, "compressed", "baseline", 1, args.batch)
                    flops = traced.cost().flops / graph.cost().flops
                    errors.append(predicted - measured)
                    print(f"| {name} | {label} | {flops:.3f} | {predicted:.3f} | {measured:.3f} ±{spread / 2:.3f} | "
                          f"{predicted - measured:+.3f} |", flush=True)
        print(f"\nerror over {len(errors)} plans: mean {statistics.mean(errors):+.3f}, mean absolute "
              f"{statistics.mean(abs(e) for e in errors):.3f}, largest {max(errors, key=abs):+.3f}")


if __name__ == "__main__":
    main()

"""How FLOPs savings turn into onnxruntime latency savings on this machine.

Profiles every test-zoo model and a 50 %-pruned copy (`Plan.uniform(graph, 0.5)`) with onnxruntime at
batch 1 and 32 and prints FLOPs ratio, latency ratio and latency ratio / FLOPs ratio (1.0 = time falls as
fast as FLOPs; above 1 = overheads that pruning does not remove).

    python benchmarks/latency.py [--repeats 30] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cascomp  # noqa: E402
from tests.models import ZOO, example_inputs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    print(f"{'model':22} {'FLOPs ratio':>11} {'b1 base ms':>10} {'b1 ratio':>8} {'b32 base ms':>11} {'b32 ratio':>9} "
          f"{'b1 lat/FLOPs':>12} {'b32 lat/FLOPs':>13}")
    for name in ZOO:
        inputs = example_inputs(name)
        graph = cascomp.trace(ZOO[name].build(), inputs)
        plan = cascomp.Plan.uniform(graph, 0.5)
        small = cascomp.apply_plan(graph, plan)
        flops = graph.cost(plan).flops / graph.cost().flops
        reports = [cascomp.profile(m, (1, 32), example_inputs=inputs, repeats=args.repeats, warmup=5,
                                   threads=args.threads) for m in (graph.gm, small)]
        base1, base32 = reports[0].latency_ms(1), reports[0].latency_ms(32)
        r1, r32 = reports[1].latency_ms(1) / base1, reports[1].latency_ms(32) / base32
        print(f"{name:22} {flops:11.3f} {base1:10.3f} {r1:8.3f} {base32:11.3f} {r32:9.3f} {r1 / flops:12.2f} "
              f"{r32 / flops:13.2f}", flush=True)


if __name__ == "__main__":
    main()

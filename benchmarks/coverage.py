"""Coverage of the compiler core over the test zoo, and analysis speed on ResNet-50-sized models.

For every zoo model: trace -> groups -> random 50 % plan -> rewrite -> equivalence with the masked model ->
ONNX export -> onnxruntime match. A model passes when all of that holds and the plan removes at least 10 % of
its FLOPs: one that traces and rewrites but prunes (almost) nothing is a failure, not a pass. Prints one table
(with the share of each model's FLOPs in prunable layers), then the ResNet-50 timings (224x224 input) and the same
network with twice the blocks, to show how analysis time grows with the number of nodes.

    python benchmarks/coverage.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cascomp  # noqa: E402
from tests.models import ZOO, example_inputs, resnet50, resnet50_deep  # noqa: E402


MIN_REMOVED = 0.10  # a random half-width plan removing less of the FLOPs than this counts as pruning nothing


def first(value):
    return value if isinstance(value, torch.Tensor) else first(value[0])


def run_model(name: str, workdir: Path) -> dict:
    row: dict = {"model": name}
    model = ZOO[name].build()
    inputs = example_inputs(name)
    start = time.perf_counter()
    graph = cascomp.trace(model, inputs)
    row["analyse_s"] = time.perf_counter() - start
    row["params"] = sum(p.numel() for p in model.parameters())
    row["groups"] = len(graph.groups)
    row["prunable"] = graph.prunable_share()["flops"] or 0.0
    row["frozen"] = "; ".join(sorted({f"{f.reason.split(' (')[0]} ({f.channels})" for f in graph.frozen})) or "-"
    plan = cascomp.Plan.random(graph, 0.5, seed=0)
    start = time.perf_counter()
    small = cascomp.apply_plan(graph, plan)
    row["rewrite_s"] = time.perf_counter() - start
    start = time.perf_counter()
    a, b = first(graph.run(small)), first(graph.run(cascomp.mask_model(graph, plan)))
    error = float((a - b).abs().max() / b.abs().max().clamp_min(1e-6))
    row["equiv_s"] = time.perf_counter() - start
    start = time.perf_counter()
    result = cascomp.export_onnx(small, inputs, workdir / f"{name}.onnx")
    row["onnx_s"] = time.perf_counter() - start
    row["flops_ratio"] = graph.cost(plan).flops / graph.cost().flops
    row["ok"] = error <= 1e-4 and result.max_abs_error <= 1e-3 and row["flops_ratio"] <= 1 - MIN_REMOVED
    row["rel_err"] = error
    return row


def main() -> None:
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ZOO:
            try:
                rows.append(run_model(name, Path(tmp)))
            except cascomp.CascompError as error:
                rows.append({"model": name, "ok": False, "frozen": f"FAILED: {error}"})
    header = f"{'model':22} {'params':>7} {'groups':>6} {'prunable':>8} {'flops@50%':>9} {'analyse':>8} {'rewrite':>8} {'equiv':>7} {'onnx':>6} {'rel.err':>8}  result  frozen (why, channels)"
    print(header)
    print("-" * len(header))
    for r in rows:
        if "params" not in r:
            print(f"{r['model']:22} FAIL  {r['frozen']}")
            continue
        print(f"{r['model']:22} {r['params']:7d} {r['groups']:6d} {r['prunable']:8.1%} {r['flops_ratio']:9.3f} {r['analyse_s']:7.2f}s {r['rewrite_s']:7.2f}s "
              f"{r['equiv_s']:6.2f}s {r['onnx_s']:5.2f}s {r['rel_err']:8.1e}  {'pass' if r['ok'] else 'FAIL'}    {r['frozen']}")
    print(f"\n{sum(r['ok'] for r in rows)}/{len(rows)} models pass\n")
    for build in (resnet50, resnet50_deep):
        model, x = build(), torch.randn(1, 3, 224, 224)
        cascomp.trace(model, x)  # warm-up: first convolutions pay for kernel selection
        start = time.perf_counter()
        graph = cascomp.trace(model, x)
        analyse = time.perf_counter() - start
        start = time.perf_counter()
        cascomp.apply_plan(graph, cascomp.Plan.random(graph, 0.5, seed=0))
        rewrite = time.perf_counter() - start
        cost = graph.cost()
        print(f"{build.__name__:14} {len(graph.gm.graph.nodes):4d} nodes  {cost.params / 1e6:6.2f} M params  "
              f"{cost.flops / 1e9:5.2f} GFLOPs  {len(graph.groups):3d} groups  analysis {analyse:5.2f} s  "
              f"rewrite {rewrite:5.2f} s  total {analyse + rewrite:5.2f} s")


if __name__ == "__main__":
    main()

"""Coverage of the compiler core over the test zoo, and analysis speed on ResNet-50-sized models.

For every zoo model: trace -> groups -> random 50 % plan -> rewrite -> equivalence with the masked model ->
ONNX export -> onnxruntime match. A model passes when all of that holds and the plan removes at least 10 % of
its FLOPs: one that traces and rewrites but prunes (almost) nothing is a failure, not a pass. Prints one table
(with the share of each model's FLOPs in prunable layers), then the ResNet-50 timings (224x224 input) and the same
network with twice the blocks, to show how analysis time grows with the number of nodes.

    python benchmarks/coverage.py
    python benchmarks/coverage.py --vs-torch-pruning

`--vs-torch-pruning` prints only the speed comparison with Torch-Pruning (needs `pip install torch-pruning`,
never a dependency of cascomp) on five full-size ImageNet families at 224x224, batch 1 (cascomp.zoo's imagenet suite):
cascomp's trace + analysis and its rewrite of a random 50 % plan (`trace`, `Plan.random`, `apply_plan`, which
also runs the result once to check it) against Torch-Pruning building its DependencyGraph and pruner and taking
one 50 % magnitude step (it does not run the result). One thread, a fresh model per run, one untimed run of each
tool per model first, the garbage of earlier runs collected before each run (a full collection of torch's heap
takes ~0.2 s and would land in a random run), the two tools alternating run by run so that machine drift hits
both alike; medians of 3 runs.
"""

from __future__ import annotations

import argparse
import functools
import gc
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cascomp  # noqa: E402
from cascomp import zoo  # noqa: E402
from tests.models import ZOO, example_inputs, prepare  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import RESULTS, recorded  # noqa: E402

# name -> the final classifier's attribute path: the layer a peer pruner must be told to leave
FULL_SIZE = {"resnet50": "head.fc", "densenet121": "classifier", "efficientnet_b0": "classifier", "vit_b16": "head",
             "convnext_tiny": "head"}


MIN_REMOVED = 0.10  # a random half-width plan removing less of the FLOPs than this counts as pruning nothing
PEER_RUNS = 3


def full_size(name: str) -> torch.nn.Module:
    """A full-size zoo model with randomised normalisation, in eval mode (as the test zoo's are)."""
    return prepare(zoo.build(name))


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
    for name in ("resnet50", "resnet50_deep"):
        model, x = full_size(name), torch.randn(1, 3, 224, 224)
        cascomp.trace(model, x)  # warm-up: first convolutions pay for kernel selection
        start = time.perf_counter()
        graph = cascomp.trace(model, x)
        analyse = time.perf_counter() - start
        start = time.perf_counter()
        cascomp.apply_plan(graph, cascomp.Plan.random(graph, 0.5, seed=0))
        rewrite = time.perf_counter() - start
        cost = graph.cost()
        print(f"{name:14} {len(graph.gm.graph.nodes):4d} nodes  {cost.params / 1e6:6.2f} M params  "
              f"{cost.flops / 1e9:5.2f} GFLOPs  {len(graph.groups):3d} groups  analysis {analyse:5.2f} s  "
              f"rewrite {rewrite:5.2f} s  total {analyse + rewrite:5.2f} s")


# -- against Torch-Pruning -----------------------------------------------------------------------------------
def cascomp_seconds(build) -> tuple[float, float]:
    """(trace + analysis, rewrite of a random 50 % plan) in seconds, on a fresh model."""
    model, x = build(), torch.randn(1, 3, 224, 224)
    gc.collect()  # garbage left by earlier runs is collected now, not in the middle of this one
    start = time.perf_counter()
    graph = cascomp.trace(model, (x,))
    analysed = time.perf_counter()
    cascomp.apply_plan(graph, cascomp.Plan.random(graph, 0.5, seed=0))
    return analysed - start, time.perf_counter() - analysed


def torch_pruning_seconds(tp, build, classifier: str) -> float:
    """Torch-Pruning's DependencyGraph (built with the pruner) and one 50 % step, on a fresh model. Attention
    modules are named with their head count, as Torch-Pruning's ViT example does: without it the step fails."""
    model, x = build(), torch.randn(1, 3, 224, 224)
    heads = {m.qkv: m.heads for m in model.modules() if hasattr(m, "qkv") and hasattr(m, "heads")}
    gc.collect()
    start = time.perf_counter()
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.5,
                                  ignored_layers=[model.get_submodule(classifier)], num_heads=heads)
    pruner.step()
    return time.perf_counter() - start


def compare_with_torch_pruning() -> None:
    try:
        import torch_pruning as tp
    except ImportError:
        sys.exit("--vs-torch-pruning needs Torch-Pruning, which cascomp does not depend on: pip install torch-pruning")
    warnings.filterwarnings("ignore", module="torch_pruning")  # its note on ViT's class token and positions
    torch.set_num_threads(1)  # the two tools must not differ by how well they use a shared machine
    header = (f"{'model':16} {'cascomp trace+analysis':>22} {'rewrite':>8} {'total':>7} "
              f"{'Torch-Pruning graph+step':>24} {'ratio':>6}")
    print(header)
    print("-" * len(header))
    for name, classifier in FULL_SIZE.items():
        build = functools.partial(full_size, name)
        # untimed: the first calls pay for lazy imports and for the kernels picked per new shape
        cascomp_seconds(build), torch_pruning_seconds(tp, build, classifier)
        ours, theirs = [], []
        for _ in range(PEER_RUNS):  # interleaved, so drift during the runs hits both tools alike
            ours.append(cascomp_seconds(build))
            theirs.append(torch_pruning_seconds(tp, build, classifier))
        analyse = statistics.median(a for a, _ in ours)
        rewrite = statistics.median(r for _, r in ours)
        total, peer = statistics.median(a + r for a, r in ours), statistics.median(theirs)
        print(f"{name:16} {analyse:21.2f}s {rewrite:7.2f}s {total:6.2f}s {peer:23.2f}s {total / peer:5.2f}x", flush=True)
    print(f"\nmedians of {PEER_RUNS} runs, one thread, 224x224, batch 1; ratio = cascomp total / Torch-Pruning")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vs-torch-pruning", action="store_true",
                        help="only compare speed with Torch-Pruning on five full-size models")
    parser.add_argument("--results", default=str(RESULTS),
                        help="the Markdown file whose section is regenerated ('' leaves it)")
    args = parser.parse_args()
    name = "coverage.py --vs-torch-pruning" if args.vs_torch_pruning else "coverage.py"
    with recorded(Path(args.results) if args.results else None, name, f"`benchmarks/{name}`",
                  "python benchmarks/" + name):
        compare_with_torch_pruning() if args.vs_torch_pruning else main()

"""FiGS vs the reference methods on real Fashion-MNIST at one third of the baseline's FLOPs.

Trains a ResNet-20-style baseline (cached in --cache), then compresses it to flops=0.33 with each method at
the same epoch budget (FiGS: search + fine-tune epochs; l1 and uniform spend all of them fine-tuning) and
prints one table: FLOPs ratio reached, params, top-1, onnxruntime latency ratio, wall time. With --seeds N
every method runs with seeds 0..N-1 (data order, random draws; the baseline stays the same) and the table
adds each method's mean and standard deviation of top-1: single runs differ by a few tenths of a point.

    python benchmarks/fashion_mnist.py                       # 20k training images, 1 + 3 epochs
    python benchmarks/fashion_mnist.py --limit-train 0 --search-epochs 5 --finetune-epochs 5   # full data
    python benchmarks/fashion_mnist.py --seeds 3             # each method with seeds 0, 1, 2: mean ± std
    python benchmarks/fashion_mnist.py --time-only           # re-time the saved models back to back (idle machine)

Needs Debian's dataset-fashion-mnist package (apt-get install -y dataset-fashion-mnist).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

import cascomp
from cascomp.zoo.resnet20 import ResNet20
from _baselines import baseline  # noqa: E402 (benchmarks/ is on sys.path when run as a script)
from _results import RESULTS, recorded  # noqa: E402
from _timing import interleaved_latency, median_latency  # noqa: E402


def train_baseline(data, epochs: int, cache: Path) -> nn.Module:
    model = baseline("resnet20", data, epochs=epochs, cache=cache, log=lambda line: print(line, flush=True))
    print(f"baseline: {cache}", flush=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="fashion-mnist:/usr/share/datasets/fashion-mnist")
    parser.add_argument("--limit-train", type=int, default=20000, help="0: all 60k training images")
    parser.add_argument("--baseline-epochs", type=int, default=4)
    parser.add_argument("--search-epochs", type=int, default=1)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--target", default="flops=0.33")
    parser.add_argument("--methods", default="figs,l1,uniform")
    parser.add_argument("--cache", default=".cache/benchmarks")
    parser.add_argument("--out", default="out/benchmark")
    parser.add_argument("--time-only", action="store_true",
                        help="only re-time the baseline and the compressed models already in OUT/<method>/ "
                             "(run it on an idle machine; rounds interleave the models so drift hits all alike)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=1, help="runs per method, with seeds 0..N-1 (default 1)")
    parser.add_argument("--results", default=str(RESULTS),
                        help="the Markdown file whose section is regenerated ('' leaves it)")
    args = parser.parse_args()
    name = "fashion_mnist.py --time-only" if args.time_only else "fashion_mnist.py"
    with recorded(Path(args.results) if args.results else None, name,
                  f"`benchmarks/{name}`", "python benchmarks/" + name):
        run(args)


def run(args) -> None:
    if args.time_only:
        time_models(args)
        return
    data = cascomp.load_data(args.data, limit_train=args.limit_train or None, batch_size=128, seed=0)
    cache = Path(args.cache) / f"resnet20-fmnist-{args.limit_train}-{args.baseline_epochs}.pt"
    baseline = train_baseline(data, args.baseline_epochs, cache)
    rows = []
    for method in args.methods.split(","):
        for seed in range(args.seeds):
            config = cascomp.CompressConfig(method=method, targets=(args.target,), search_epochs=args.search_epochs,
                                            finetune_epochs=args.finetune_epochs, seed=seed)
            started = time.perf_counter()
            out_dir = Path(args.out) / (method if seed == 0 else f"{method}-seed{seed}")
            report = cascomp.compress(baseline, config, data=data, out_dir=out_dir).report
            rows.append({"method": method, "seed": seed, "flops": report["ratios"]["flops"],
                         "params": report["compressed"]["params"], "top1": report["compressed"]["top1"],
                         "baseline_top1": report["baseline"]["top1"], "latency_b1": report["ratios"]["latency_b1"],
                         "latency_b32": report["ratios"]["latency_b32"], "seconds": time.perf_counter() - started})
    base = cascomp.trace(baseline, torch.zeros(1, 1, 28, 28)).cost()
    print(f"\nbaseline ResNet-20: {base.flops / 1e6:.2f} MFLOPs, {base.params:,.0f} params, "
          f"top-1 {rows[0]['baseline_top1']:.4f}; {data.train_size} training images, {data.val_size} validation")
    print(f"{'method':<8} {'seed':>4} {'FLOPs ratio':>11} {'params':>8} {'top-1':>7} {'Δ top-1':>8} {'lat b1':>7} "
          f"{'lat b32':>8} {'wall s':>7}")
    for row in rows:
        print(f"{row['method']:<8} {row['seed']:>4} {row['flops']:>11.4f} {row['params']:>8,.0f} {row['top1']:>7.4f} "
              f"{100 * (row['top1'] - row['baseline_top1']):>+7.2f}pt {row['latency_b1']:>7.3f} "
              f"{row['latency_b32']:>8.3f} {row['seconds']:>7.0f}")
    if args.seeds > 1:
        print(f"\n{'method':<8} {'runs':>4} {'mean top-1':>10} {'std':>6} {'Δ mean':>8}")
        for method, summary in summarise(rows).items():
            print(f"{method:<8} {summary['runs']:>4} {summary['mean']:>10.4f} {summary['std']:>6.4f} "
                  f"{100 * summary['delta']:>+7.2f}pt")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "table.json").write_text(json.dumps(rows, indent=1))


def summarise(rows: list[dict]) -> dict[str, dict]:
    """Per method: number of runs, mean and sample standard deviation of top-1, mean change from the baseline."""
    summary = {}
    for method in dict.fromkeys(row["method"] for row in rows):
        top1 = [row["top1"] for row in rows if row["method"] == method]
        mean = statistics.mean(top1)
        spread = statistics.stdev(top1) if len(top1) > 1 else 0.0
        summary[method] = {"runs": len(top1), "mean": mean, "std": spread, "delta": mean - rows[0]["baseline_top1"]}
    return summary


def time_models(args) -> None:
    """Median onnxruntime latency (batch 1 and 32, one thread and the default) of the baseline and of every
    compressed model in OUT/<method>/model.onnx, in interleaved rounds."""
    out = Path(args.out)
    cache = Path(args.cache) / f"resnet20-fmnist-{args.limit_train}-{args.baseline_epochs}.pt"
    if not cache.is_file():
        raise SystemExit(f"no cached baseline at {cache}; run the benchmark first")
    baseline = ResNet20()
    baseline.load_state_dict(torch.load(cache, weights_only=True))
    out.mkdir(parents=True, exist_ok=True)
    cascomp.export_onnx(baseline.eval(), (torch.zeros(1, 1, 28, 28),), out / "baseline.onnx")
    models = {"baseline": out / "baseline.onnx"}
    models.update({m: out / m / "model.onnx" for m in args.methods.split(",") if (out / m / "model.onnx").is_file()})
    median = median_latency(interleaved_latency(models, args.rounds, warmup=5, repeats=40))
    print(f"{'model':<9} {'1 thread b1 ms':>14} {'b32 ms':>8} {'ratio b1':>8} {'b32':>6}   "
          f"{'default threads b1 ms':>21} {'b32 ms':>8} {'ratio b1':>8} {'b32':>6}")
    for name in models:
        cells = []
        for threads in (1, None):
            b1, b32 = median[(name, threads, 1)], median[(name, threads, 32)]
            r1, r32 = b1 / median[("baseline", threads, 1)], b32 / median[("baseline", threads, 32)]
            cells.append(f"{b1:14.3f} {b32:8.3f} {r1:8.3f} {r32:6.3f}")
        print(f"{name:<9} {cells[0]}   {cells[1]:>47}")


if __name__ == "__main__":
    main()

"""Throughput of cascomp's training steps (images per second) with 1, 2, ... processes under torchrun.

For each process count the script launches itself with `python -m torch.distributed.run --standalone
--nproc-per-node P`; every process runs the real loops of `compress` (cascomp.train.loops): a FiGS search
epoch (weights and gates, DDP over both) of a ResNet-20 (the zoo's, 28x28, 10 classes) and a fine-tune epoch
(distillation from it) of the ResNet-20 cut uniformly to a third of its FLOPs, each over the same `--steps`
global batches of Fashion-MNIST. Only the training steps are
timed (from the first batch to the last), not the per-epoch BN recalibration and evaluation; the first
`--warmup` steps are left out. The machine's cores are split evenly between the processes (torch threads).

    python benchmarks/scaling.py                       # 1 and 2 processes on this CPU: ~3 min here
    python benchmarks/scaling.py --device cuda --processes 1   # one GPU

Needs Debian's dataset-fashion-mnist package (apt-get install -y dataset-fashion-mnist).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cascomp  # noqa: E402
import cascomp.zoo  # noqa: E402
from cascomp.api import apply_plan, trace  # noqa: E402
from cascomp.methods import METHODS  # noqa: E402
from cascomp.search.budget import fit_preferring_multiples, target_ratios  # noqa: E402
from cascomp.train.distributed import Cluster  # noqa: E402
from cascomp.train.loops import FinetuneLoop, SearchLoop  # noqa: E402
from cascomp.train.progress import Reporter  # noqa: E402
from _results import RESULTS, recorded  # noqa: E402

DATA = "fashion-mnist:/usr/share/datasets/fashion-mnist"


class StepClock(Reporter):
    """A silent reporter that times the training steps of each epoch (the loops' batch iteration)."""

    def __init__(self, warmup: int) -> None:
        super().__init__(enabled=False)
        self.warmup, self.seconds = warmup, []

    def batches(self, loader, title, describe):
        started = None
        for step, batch in enumerate(loader):
            if step == self.warmup:
                started = time.perf_counter()
            yield batch
        if started is not None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.seconds.append(time.perf_counter() - started)


def worker(args) -> None:
    """One process of a run: both loops over `steps` global batches; rank 0 writes the timings."""
    cluster_size = int(os.environ.get("WORLD_SIZE", 1))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // cluster_size) if args.device == "cpu" else 1)
    config = cascomp.CompressConfig(method="figs", targets=("flops=0.33",), search_epochs=1, finetune_epochs=1,
                                    device=args.device, amp=args.amp)
    cluster = Cluster.join(torch.device(args.device if args.device != "auto" else "cpu"))
    data = cascomp.load_data(DATA, batch_size=args.batch_size, seed=0, limit_train=args.steps * args.batch_size,
                             limit_val=args.batch_size)
    torch.manual_seed(0)  # the same baseline in every process
    graph = trace(cascomp.zoo.build("resnet20"), cascomp.zoo.example_inputs("resnet20"))
    goals = target_ratios(graph, config.targets)
    method = METHODS["figs"](graph, config.method_config, goals)
    timings = {}
    search = StepClock(args.warmup)
    SearchLoop(method, method.prepare(), data, config, goals, search, graph.gm, cluster).run(None, None)
    timings["search"] = search.seconds[0]
    uniform = METHODS["uniform"](graph, None, goals).decide(graph.gm)  # the student: ResNet-20 at a third
    graph, fit = fit_preferring_multiples(graph, uniform.scores, uniform.family, goals, (8,))
    finetune = StepClock(args.warmup)
    FinetuneLoop(apply_plan(graph, fit.plan), graph.gm, data, config, 1, finetune, cluster).run(None, None)
    timings["finetune"] = finetune.seconds[0]
    if cluster.is_main:
        images = (args.steps - args.warmup) * args.batch_size
        Path(args.out).write_text(json.dumps({phase: images / s for phase, s in timings.items()}))
    Cluster.leave()


def run(processes: int, args) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "timings.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                   __file__, "--worker", "--out", str(out), "--device", args.device, "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--batch-size", str(args.batch_size)] + (["--amp"] if args.amp else [])
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{processes} processes failed:\n{done.stderr[-3000:]}")
        return json.loads(out.read_text())


def main(args) -> None:
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {os.cpu_count()} cores"
    print(f"ResNet-20 on Fashion-MNIST 28x28, global batch {args.batch_size}, {args.steps - args.warmup} timed "
          f"steps after {args.warmup} warm-up, {device}{', amp' if args.amp else ''}")
    print(f"{'processes':>9}  {'threads each':>12}  {'search img/s':>12}  {'fine-tune img/s':>15}  {'speed-up':>8}")
    first = None
    for processes in args.processes:
        rates = run(processes, args)
        first = first or rates
        threads = max(1, (os.cpu_count() or 1) // processes) if args.device == "cpu" else "-"
        print(f"{processes:>9}  {threads:>12}  {rates['search']:>12.0f}  {rates['finetune']:>15.0f}  "
              f"{rates['finetune'] / first['finetune']:>7.2f}x", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=lambda text: [int(p) for p in text.split(",")], default=[1, 2],
                        help="process counts, comma-separated (default 1,2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (each process takes cuda:LOCAL_RANK)")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--steps", type=int, default=40, help="global batches per phase (default 40)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--results", default=str(RESULTS),
                        help="the Markdown file whose section is regenerated ('' leaves it)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        worker(arguments)
    else:
        with recorded(Path(arguments.results) if arguments.results else None, "scaling.py",
                      "`benchmarks/scaling.py`", "python benchmarks/scaling.py"):
            main(arguments)

"""Is the compressed model faster? Two models timed in interleaved rounds on the same machine.

Timing the baseline and then the compressed model lets any change in the machine's load between the two
(another process starting, a CPU clocking down) pass for a change of the model: a compressed ResNet-20 once
measured 1.5x *slower* than its baseline that way, and 0.54x in the next run. So each round times both models,
one after the other, and the ratio is taken within a round, where both saw the same machine; the result is
the median of the rounds' ratios with their spread (largest minus smallest), which says how far to trust it.

Three runtimes (`RUNTIMES`): onnxruntime on the CPU (every run's report), and, when compress trained on a
CUDA device, torch on that device (CUDA events around each forward pass after a warm-up; median and 90th
percentile) and onnxruntime's CUDA provider (when onnxruntime-gpu is installed).
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from cascomp.export._inputs import repeat_samples
from cascomp.export.onnx import OnnxExportResult
from cascomp.export.profile import profile

RUNTIMES = ("onnxruntime-cpu", "torch-cuda", "onnxruntime-cuda")

UNTRUSTED_SPREAD = 0.25  # rounds whose ratios differ by more than this share of their median disagree


@dataclass(frozen=True)
class LatencyComparison:
    baseline_ms: dict[int, float]  # per batch size: median over rounds
    compressed_ms: dict[int, float]
    ratio: dict[int, float]  # per batch size: median of the per-round ratios compressed / baseline
    spread: dict[int, float]  # per batch size: largest minus smallest per-round ratio
    rounds: int
    threads: int | str  # onnxruntime's intra-op threads ("default": onnxruntime's choice; "-" on a GPU)
    runtime: str = "onnxruntime-cpu"  # one of RUNTIMES
    device: str = "cpu"
    p90_ms: dict[str, dict[int, float]] = field(default_factory=dict)  # torch-cuda: "baseline"/"compressed"

    def trusted(self, batch: int) -> bool:
        return self.spread[batch] <= UNTRUSTED_SPREAD * self.ratio[batch]


def compare_latency(baseline: tuple[nn.Module, OnnxExportResult], compressed: tuple[nn.Module, OnnxExportResult],
                    example_inputs, batch_sizes: Sequence[int], *, rounds: int = 5, warmup: int = 3,
                    repeats: int = 10, threads: int | None = None, runtime: str = "onnxruntime-cpu",
                    device: torch.device | str = "cpu") -> LatencyComparison:
    """Each round times the baseline and the compressed model in turn: their checked exports in onnxruntime
    (CPU or CUDA provider), or, for "torch-cuda", copies of the modules on the CUDA `device`."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r} is not one of {RUNTIMES}")
    if runtime == "torch-cuda":
        timers = {name: _cuda_timer(module, example_inputs, batch_sizes, torch.device(device), warmup, repeats)
                  for name, (module, _) in (("baseline", baseline), ("compressed", compressed))}
    else:
        provider = "cuda" if runtime == "onnxruntime-cuda" else "cpu"
        timers = {name: _onnxruntime_timer(module, exported, example_inputs, batch_sizes, warmup, repeats, threads,
                                           provider)
                  for name, (module, exported) in (("baseline", baseline), ("compressed", compressed))}
    samples: dict[str, dict[int, list[tuple[float, float]]]] = {"baseline": {}, "compressed": {}}
    for _ in range(rounds):
        for name in ("baseline", "compressed"):
            for batch, times in timers[name]().items():
                samples[name].setdefault(batch, []).append(times)
    median = {name: {b: statistics.median(t[0] for t in samples[name][b]) for b in batch_sizes} for name in samples}
    ratios = {b: [c[0] / a[0] for a, c in zip(samples["baseline"][b], samples["compressed"][b])] for b in batch_sizes}
    on_gpu = runtime != "onnxruntime-cpu"
    return LatencyComparison(
        baseline_ms=median["baseline"], compressed_ms=median["compressed"],
        ratio={b: statistics.median(values) for b, values in ratios.items()},
        spread={b: max(values) - min(values) for b, values in ratios.items()},
        rounds=rounds, threads="-" if on_gpu else threads if threads is not None else "default", runtime=runtime,
        device=str(device) if on_gpu else "cpu",
        p90_ms={name: {b: statistics.median(t[1] for t in samples[name][b]) for b in batch_sizes}
                for name in samples} if runtime == "torch-cuda" else {})


# one round: per batch size, (median, 90th percentile or None where the runtime reports no percentile) ms
Timer = Callable[[], dict[int, tuple[float, float | None]]]


def _onnxruntime_timer(module, exported, example_inputs, batch_sizes, warmup, repeats, threads, provider) -> Timer:
    def timer():
        report = profile(module, batch_sizes, example_inputs=example_inputs, warmup=warmup, repeats=repeats,
                         threads=threads, exported=exported, provider=provider)
        return {b: (report.latency_ms(b), None) for b in batch_sizes}
    return timer


def _cuda_timer(module: nn.Module, example_inputs, batch_sizes, device: torch.device, warmup: int,
                repeats: int) -> Timer:
    """Forward passes of a copy of `module` on `device` in eval mode, each timed by a pair of CUDA events."""
    model = copy.deepcopy(module).eval().to(device)
    examples = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    inputs = {b: tuple(repeat_samples(t, b).to(device) for t in examples) for b in batch_sizes}

    def timer():
        times = {}
        with torch.inference_mode():
            for batch in batch_sizes:
                for _ in range(warmup):
                    model(*inputs[batch])
                runs = []
                for _ in range(repeats):
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    model(*inputs[batch])
                    end.record()
                    end.synchronize()
                    runs.append(start.elapsed_time(end))
                runs.sort()
                times[batch] = (statistics.median(runs), runs[min(len(runs) - 1, int(0.9 * len(runs)))])
        return times
    return timer

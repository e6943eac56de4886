"""Is the compressed model faster? Two models timed in interleaved rounds on the same machine.

Timing the baseline and then the compressed model lets any change in the machine's load between the two
(another process starting, a CPU clocking down) pass for a change of the model: a compressed ResNet-20 once
measured 1.5x *slower* than its baseline that way, and 0.54x in the next run. So each round times both models,
one after the other, and the ratio is taken within a round, where both saw the same machine; the result is
the median of the rounds' ratios with their spread (largest minus smallest), which says how far to trust it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from cascomp.export.onnx import OnnxExportResult
from cascomp.export.profile import profile

UNTRUSTED_SPREAD = 0.25  # rounds whose ratios differ by more than this share of their median disagree


@dataclass(frozen=True)
class LatencyComparison:
    baseline_ms: dict[int, float]  # per batch size: median over rounds
    compressed_ms: dict[int, float]
    ratio: dict[int, float]  # per batch size: median of the per-round ratios compressed / baseline
    spread: dict[int, float]  # per batch size: largest minus smallest per-round ratio
    rounds: int
    threads: int | str  # onnxruntime's intra-op threads ("default": onnxruntime's choice)

    def trusted(self, batch: int) -> bool:
        return self.spread[batch] <= UNTRUSTED_SPREAD * self.ratio[batch]


def compare_latency(baseline: tuple[nn.Module, OnnxExportResult], compressed: tuple[nn.Module, OnnxExportResult],
                    example_inputs, batch_sizes: Sequence[int], *, rounds: int = 5, warmup: int = 3,
                    repeats: int = 10, threads: int | None = None) -> LatencyComparison:
    """Each round profiles the baseline's and the compressed model's checked exports in turn."""
    samples: dict[str, dict[int, list[float]]] = {"baseline": {}, "compressed": {}}
    for _ in range(rounds):
        for name, (module, exported) in (("baseline", baseline), ("compressed", compressed)):
            report = profile(module, batch_sizes, example_inputs=example_inputs, warmup=warmup, repeats=repeats,
                             threads=threads, exported=exported)
            for batch in batch_sizes:
                samples[name].setdefault(batch, []).append(report.latency_ms(batch))
    ratios = {b: [c / a for a, c in zip(samples["baseline"][b], samples["compressed"][b])] for b in batch_sizes}
    return LatencyComparison(
        baseline_ms={b: statistics.median(samples["baseline"][b]) for b in batch_sizes},
        compressed_ms={b: statistics.median(samples["compressed"][b]) for b in batch_sizes},
        ratio={b: statistics.median(values) for b, values in ratios.items()},
        spread={b: max(values) - min(values) for b, values in ratios.items()},
        rounds=rounds, threads=threads if threads is not None else "default")

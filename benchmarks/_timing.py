"""Latency of several models measured in interleaved rounds, so drift of the machine hits all of them alike."""

from __future__ import annotations

import statistics

import cascomp
from cascomp.export.latency_table import latency_table


def interleaved_latency(models: dict, rounds: int, *, warmup: int, repeats: int, example_inputs=None,
                        batches=(1, 32), threads=(1, None)) -> dict[tuple[str, int | None, int], list[float]]:
    """(name, threads, batch) -> onnxruntime latencies in ms, one per round; each round times every model (an
    .onnx path, or a module with `example_inputs`) under each thread count in turn."""
    samples: dict[tuple[str, int | None, int], list[float]] = {}
    for _ in range(rounds):
        for name, model in models.items():
            for count in threads:
                report = cascomp.profile(model, batches, example_inputs=example_inputs, warmup=warmup,
                                         repeats=repeats, threads=count)
                for batch in batches:
                    samples.setdefault((name, count, batch), []).append(report.latency_ms(batch))
    return samples


def median_latency(samples: dict) -> dict:
    return {key: statistics.median(values) for key, values in samples.items()}


def ratio_with_spread(samples: dict, name: str, reference: str, threads, batch: int) -> tuple[float, float]:
    """Median over rounds of `name`'s latency divided by `reference`'s in the same round, and the spread of
    those per-round ratios (max - min): rounds interleave the models, so a round's ratio shares its drift."""
    ratios = [a / b for a, b in zip(samples[(name, threads, batch)], samples[(reference, threads, batch)])]
    return statistics.median(ratios), max(ratios) - min(ratios)


def predicted_ms(graph: cascomp.Graph, batch: int = 1, threads: int = 1) -> float:
    """The per-layer latency table's prediction (ms) for `graph`, as compress prices a latency target (the
    table attached to its cost model; layer timings cached per shape)."""
    graph.cost_model.attach_latency(latency_table(graph, batch=batch, threads=threads))
    return graph.cost().latency

"""How fast does a model run in onnxruntime? Latency per batch size, optionally time per node and torch's own.

`profile` runs these steps in order:
  1. an nn.Module is exported to a temporary ONNX file with export_onnx (dynamic batch, checked), unless
     the caller passes that export as `exported`;
  2. inputs per batch size (see cascomp.export._inputs): cycled examples, or random data of each input's
     dtype with the batch dimension filled in; made one batch size at a time, after checking that the
     largest fits in memory (cascomp.export._memory);
  3. per batch size, `warmup` untimed runs, then `repeats` runs timed with time.perf_counter;
  4. by_node: a second session with onnxruntime's profiler on repeats the runs. It uses the "extended"
     graph optimisations: the full level also rewrites convolutions into the NCHWc layout and renames
     them after their outputs, which would attribute a conv's time to the activation after it;
  5. torch_latency: the same runs on the torch model in eval mode under torch.inference_mode.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime
import torch
from torch import Tensor, nn

from cascomp.export.arguments import named, setting
from cascomp.errors import ConfigError, ModelLoadError, ProfileError
from cascomp.export._exporters import one_line_reason
from cascomp.export._inputs import batch_feeds, repeat_samples
from cascomp.errors import is_out_of_memory
from cascomp.export._node_times import NodeTime, module_namer, node_times
from cascomp.export._profile_checks import (available_provider, check_batch_sizes, check_memory, count,
                                             examples_by_name, existing_file, valid_batch_sizes, valid_threads)
from cascomp.export.onnx import OnnxExportResult, export_onnx

_TABLE_NODES = 15


@dataclass(frozen=True)
class BatchLatency:
    """Wall-clock latency of one batch size over the timed runs, in milliseconds."""

    batch_size: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    throughput: float  # samples per second at the median latency
    repeats: int


@dataclass(frozen=True)
class LatencyReport:
    provider: str  # the onnxruntime execution provider that ran the model
    threads: int | str  # intra-op threads; "default" leaves the choice to onnxruntime
    batch_sizes: tuple[int, ...]
    results: tuple[BatchLatency, ...]
    by_node: tuple[NodeTime, ...]  # empty unless asked for; largest total first
    torch_results: tuple[BatchLatency, ...] | None
    onnx_path: str | None  # None when profile exported the module to a temporary file, now removed

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def latency_ms(self, batch_size: int) -> float:
        """The median onnxruntime latency at `batch_size`."""
        for result in self.results:
            if result.batch_size == batch_size:
                return result.median_ms
        raise ProfileError(f"batch size {batch_size} was not profiled; profiled: "
                           f"{', '.join(map(str, self.batch_sizes))}")

    def format_table(self) -> str:
        """A plain-text table for humans: latency per batch size, then the costliest nodes."""
        repeats = self.results[0].repeats if self.results else 0
        lines = [f"onnxruntime {self.provider}, threads={self.threads}, median of {repeats} timed runs",
                 f"{'batch':>6} {'median ms':>10} {'p90 ms':>9} {'mean ms':>9} {'min ms':>9} "
                 f"{'samples/s':>11}" + (f" {'torch ms':>9}" if self.torch_results else "")]
        torch_by_batch = {r.batch_size: r for r in self.torch_results or ()}
        for r in self.results:
            line = (f"{r.batch_size:>6} {r.median_ms:>10.3f} {r.p90_ms:>9.3f} {r.mean_ms:>9.3f} "
                    f"{r.min_ms:>9.3f} {r.throughput:>11.1f}")
            if r.batch_size in torch_by_batch:
                line += f" {torch_by_batch[r.batch_size].median_ms:>9.3f}"
            lines.append(line)
        if self.by_node:
            lines += ["", f"time by node, top {min(_TABLE_NODES, len(self.by_node))} of {len(self.by_node)} "
                      "(timed runs of all batch sizes, extended graph optimisations)",
                      f"{'share':>6} {'total ms':>9}  {'op type':<20} module"]
            lines += [f"{n.share:>6.1%} {n.total_ms:>9.3f}  {n.op_type:<20} {n.module}"
                      for n in self.by_node[:_TABLE_NODES]]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Settings:
    batch_sizes: tuple[int, ...]
    warmup: int
    repeats: int
    threads: int | None
    provider: str  # onnxruntime's name for it
    input_shapes: Mapping[str, Sequence[int]] | None


def profile(
    model_or_path: nn.Module | str | os.PathLike,
    batch_sizes: Sequence[int] = (1, 32),
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    example_inputs: tuple[Tensor, ...] | Tensor | None = None,
    warmup: int = 5,
    repeats: int = 30,
    threads: int | None = None,
    provider: str = "cpu",
    by_node: bool = False,
    torch_latency: bool = False,
    exported: OnnxExportResult | None = None,
) -> LatencyReport:
    """Time a model (an .onnx path, or an nn.Module plus example_inputs) in onnxruntime per batch size.

    input_shapes: {input name: shape without the batch dim} for inputs with dynamic dims besides the batch.
    threads: onnxruntime's intra-op threads (inter-op is 1); None leaves onnxruntime's default.
    provider: "cpu", or "cuda" (needs onnxruntime-gpu and a GPU; never falls back to the CPU).
    by_node: also time each ONNX node and name the torch module it came from.
    torch_latency: also time the torch model (needs an nn.Module).
    exported: export_onnx's result for this very module (with dynamic_batch), when the caller keeps that
    file: it is timed instead of a fresh export, and the report's onnx_path names it.
    Raises ConfigError, ProfileError, ExportError (the module's export) or ModelLoadError (the file).
    """
    settings = _Settings(batch_sizes=valid_batch_sizes(batch_sizes), warmup=count(warmup, "warmup", 0),
                         repeats=count(repeats, "repeats", 1), threads=valid_threads(threads),
                         provider=available_provider(provider), input_shapes=input_shapes)
    examples = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else example_inputs
    examples = (examples,) if isinstance(examples, Tensor) else examples
    if not isinstance(model_or_path, nn.Module):
        if exported is not None:
            raise ConfigError("exported= goes with the nn.Module it was exported from; a file is timed as is")
        if torch_latency:
            raise ConfigError(f"{setting('torch_latency', True)} needs the torch model, which an ONNX file does not "
                              "hold; drop it, or profile the torch model instead of its ONNX file")
        return _profile_file(existing_file(model_or_path), settings, examples, None, by_node,
                             onnx_path=os.fspath(model_or_path))
    if examples is None:
        raise ConfigError("profiling an nn.Module needs example_inputs to export it, e.g. "
                          "example_inputs=torch.randn(1, 3, 224, 224)")
    if exported is not None:
        if not isinstance(exported, OnnxExportResult):
            raise ConfigError(f"exported must be what export_onnx returned, got {type(exported).__name__}")
        check_batch_sizes(exported, examples, settings.batch_sizes)
        return _profile_export(model_or_path, exported, examples, settings, by_node, torch_latency,
                               onnx_path=existing_file(exported.path))
    with tempfile.TemporaryDirectory(prefix="cascomp-profile-") as directory:
        path = os.path.join(directory, "model.onnx")
        exported = export_onnx(model_or_path, examples, path, dynamic_batch=True)
        return _profile_export(model_or_path, exported, examples, settings, by_node, torch_latency,
                               onnx_path=None)


def _profile_export(model: nn.Module, exported: OnnxExportResult, examples: tuple[Tensor, ...],
                    settings: _Settings, by_node: bool, torch_latency: bool, *,
                    onnx_path: str | None) -> LatencyReport:
    by_name = dict(zip(exported.input_names, examples))
    return _profile_file(exported.path, settings, by_name, model if torch_latency else None, by_node,
                         onnx_path=onnx_path, known_modules=[n for n, _ in model.named_modules()])


def _profile_file(path: str, settings: _Settings, examples, model: nn.Module | None, by_node: bool, *,
                  onnx_path: str | None, known_modules: Sequence[str] = ()) -> LatencyReport:
    session = _session(path, settings)
    graph_inputs = session.get_inputs()
    by_name = examples_by_name(examples, graph_inputs)
    check_memory(path, settings.batch_sizes)

    def feeds(batch: int) -> dict[str, np.ndarray]:  # one batch size at a time: the largest may be large
        return batch_feeds(graph_inputs, batch, examples=by_name, input_shapes=settings.input_shapes)

    results = tuple(_latency(batch, _runner(session, feeds(batch), batch), settings)
                    for batch in settings.batch_sizes)
    nodes = _profile_nodes(path, settings, feeds, module_namer(path, known_modules)) if by_node else ()
    return LatencyReport(
        provider=settings.provider, threads=settings.threads if settings.threads is not None else "default",
        batch_sizes=settings.batch_sizes, results=results, by_node=nodes,
        torch_results=_torch_latencies(model, tuple(by_name.values()), settings) if model is not None else None,
        onnx_path=onnx_path,
    )


def _session(path: str, settings: _Settings, profile_prefix: str | None = None):
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = settings.threads or 0  # 0 asks onnxruntime for its default
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_prefix is not None:  # see step 4 of the module doc for the lower level
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    try:
        session = onnxruntime.InferenceSession(path, options, providers=[settings.provider])
    except Exception as error:
        raise ModelLoadError(f"onnxruntime could not load {path}: {one_line_reason(error)}") from error
    if session.get_providers()[0] != settings.provider:
        raise ProfileError(f"onnxruntime placed the model on {session.get_providers()[0]}, not "
                           f"{settings.provider}; check the onnxruntime-gpu install and the GPU driver")
    return session


def _runner(session, feeds: dict[str, np.ndarray], batch: int) -> Callable[[], object]:
    def run():
        try:
            return session.run(None, feeds)
        except Exception as error:
            if is_out_of_memory(error):
                raise _out_of_memory("onnxruntime", batch) from error
            shapes = ", ".join(f"{name}{list(array.shape)}" for name, array in feeds.items())
            raise ProfileError(f"onnxruntime failed at batch size {batch} with inputs {shapes}: "
                               f"{one_line_reason(error)}; check {named('example_inputs')}") from error
    return run


def _out_of_memory(runtime: str, batch: int) -> ConfigError:
    return ConfigError(f"{runtime} ran out of memory at batch size {batch}; lower {named('batch_sizes')}")


def _latency(batch: int, run: Callable[[], object], settings: _Settings) -> BatchLatency:
    for _ in range(settings.warmup):
        run()
    times = []
    for _ in range(settings.repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    median = float(np.median(times))
    return BatchLatency(batch_size=batch, median_ms=median, p90_ms=float(np.percentile(times, 90)),
                        mean_ms=float(np.mean(times)), min_ms=float(np.min(times)),
                        throughput=batch * 1000 / max(median, 1e-9), repeats=settings.repeats)


def _profile_nodes(path: str, settings: _Settings, feeds: Callable[[int], dict[str, np.ndarray]],
                   module_of) -> tuple[NodeTime, ...]:
    # A separate session: the profiler's bookkeeping must not slow the headline timings down.
    with tempfile.TemporaryDirectory(prefix="cascomp-ort-profile-") as directory:
        session = _session(path, settings, profile_prefix=os.path.join(directory, "trace"))
        for batch in settings.batch_sizes:
            run = _runner(session, feeds(batch), batch)
            for _ in range(settings.warmup + settings.repeats):
                run()
        with open(session.end_profiling()) as trace:
            events = json.load(trace)
    return node_times(events, settings.warmup + settings.repeats, settings.warmup, module_of)


def _torch_latencies(model: nn.Module, examples: tuple[Tensor, ...],
                     settings: _Settings) -> tuple[BatchLatency, ...]:
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    training_flags = [(module, module.training) for module in model.modules()]
    threads_before = torch.get_num_threads()
    model.eval()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)  # the same thread budget as onnxruntime's, for a fair race
    try:
        results = []
        with torch.inference_mode():
            for batch in settings.batch_sizes:
                try:
                    inputs = tuple(repeat_samples(t, batch).to(device) for t in examples)
                    results.append(_latency(batch, lambda: (model(*inputs), synchronize()), settings))
                except Exception as error:  # the model ran at the examples' batch size; only memory differs
                    if is_out_of_memory(error):
                        raise _out_of_memory("torch", batch) from error
                    raise
        return tuple(results)
    finally:
        torch.set_num_threads(threads_before)
        for module, flag in training_flags:
            module.training = flag

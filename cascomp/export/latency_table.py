"""Per-layer latency table: how long each convolution and linear layer of a traced model takes in
onnxruntime, alone, at its real input shape, and a fitted model of that time against the layer's width.

Every `nn.Conv2d` and `nn.Linear` the graph calls (the layers whose MACs the cost model counts) is rebuilt
alone at `fractions` of its input and output channels (widths rounded to multiples of 8 where its channels
are: the widths compress prefers, and onnxruntime runs others markedly slower, which a fit over them would
spread onto every width; a depthwise convolution keeps one filter per channel), exported to ONNX and timed
in onnxruntime with the provider, thread count and batch size the user will deploy with: the median of
`repeats` runs after `warmup`. The fit is least squares
    ms = a + b x MACs
over the timed widths (a: the layer's fixed cost, b: its time per multiply-accumulate at this shape), so a
search can price any width it may choose. Every time is net of onnxruntime's cost of a run itself (a model
that only copies its input, timed the same way), which a whole model pays once, not once per layer. The
layers' total at full width is the table's prediction; `cascomp analyze --latency` sets it beside the whole
model's measured latency (the difference is what the layers do not account for: elementwise ops, norms,
pooling, copies between layers). `module_latency` times the layers of a module the model does not hold yet
(a search's candidate operators) the same way.

Cache: one JSON file per layer entry under `cache_dir` (default `$CASCOMP_CACHE/latency`, else
`~/.cache/cascomp/latency`), named by the SHA-256 of its key: the machine (platform, processor, CPU count),
onnxruntime's version, provider and threads, the batch, the layer's kind, hyper-parameters and input shape,
and the fractions, warm-up and repeats. The same layer on the same machine is timed once, across runs and
models; any change of the key is a new entry. Entries are written atomically.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import tempfile
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from torch import nn

from cascomp.errors import ConfigError
from cascomp.export.atomic import atomic_output
from cascomp.export.profile import _latency, _session, _Settings
from cascomp.ir.graph import Graph

FRACTIONS = (0.25, 0.5, 0.75, 1.0)
ROUNDING = 8  # timed widths are multiples of this where the layer's channels are
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


@dataclass(frozen=True)
class LayerLatency:
    node: str  # the graph node that calls the layer
    module: str  # its module path
    kind: str  # "conv" or "linear"
    input_shape: tuple[int, ...]  # at the table's batch
    widths: tuple[float, ...]  # the fractions of its channels timed
    macs: tuple[float, ...]  # per batch, at each width
    ms: tuple[float, ...]  # median time at each width
    intercept: float  # a (ms)
    slope: float  # b (ms per MAC)
    cached: bool  # read from the cache rather than timed now

    def predict(self, macs: float) -> float:
        """The fitted time (ms) of this layer doing `macs` multiply-accumulates per batch."""
        return max(self.intercept + self.slope * macs, 0.0)

    @property
    def full_ms(self) -> float:
        return self.ms[self.widths.index(1.0)] if 1.0 in self.widths else self.predict(max(self.macs))


@dataclass(frozen=True)
class LatencyTable:
    layers: tuple[LayerLatency, ...]
    batch: int
    threads: int
    provider: str
    onnxruntime: str
    run_ms: float  # onnxruntime's cost of one run, taken out of every layer's time
    # how it was timed, so that more layers (a search's candidate operators) are timed alike: module_latency
    fractions: tuple[float, ...] = FRACTIONS
    warmup: int = 5
    repeats: int = 20
    cache_dir: str | None = None

    @property
    def total_ms(self) -> float:
        """The layers' time at full width and one run's cost: the table's prediction of the model's latency."""
        return sum(layer.full_ms for layer in self.layers) + self.run_ms

    def to_dict(self) -> dict:
        return {"batch": self.batch, "threads": self.threads, "provider": self.provider,
                "onnxruntime": self.onnxruntime, "run_ms": self.run_ms, "total_ms": self.total_ms,
                "layers": [asdict(layer) for layer in self.layers]}


def default_cache_dir() -> Path:
    root = os.environ.get("CASCOMP_CACHE")
    return Path(root) / "latency" if root else Path.home() / ".cache" / "cascomp" / "latency"


def latency_table(graph: Graph, *, batch: int = 1, threads: int = 1, device: str = "cpu",
                  fractions: tuple[float, ...] = FRACTIONS, warmup: int = 5, repeats: int = 20,
                  cache_dir: str | os.PathLike | None = None) -> LatencyTable:
    """The table of `graph`'s layers (see the module docstring)."""
    if batch < 1 or threads < 1 or repeats < 1 or warmup < 0:
        raise ConfigError(f"latency table: batch ({batch}), threads ({threads}) and repeats ({repeats}) must be ≥ 1")
    if device not in PROVIDERS:
        raise ConfigError(f"latency table: device must be one of {sorted(PROVIDERS)}, got {device!r}")
    provider = PROVIDERS[device]
    if provider not in onnxruntime.get_available_providers():
        raise ConfigError(f"onnxruntime has no {provider} here; install onnxruntime-gpu for --device cuda")
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise ConfigError(f"latency table: fractions must be in (0, 1], got {fractions!r}")
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    timing = LatencyTable((), batch, threads, provider, onnxruntime.__version__, 0.0, tuple(fractions), warmup,
                          repeats, str(folder))
    timing = replace(timing, run_ms=_entry(timing, "", "", "run", None, (batch, 1), (1.0,)).full_ms)
    layers = []
    for node in graph.gm.graph.nodes:
        if node.op != "call_module":
            continue
        module = graph.gm.get_submodule(str(node.target))
        shape = graph.record.shapes.get(node.args[0].name) if node.args and hasattr(node.args[0], "name") else None
        if _kind(module) is None or not isinstance(shape, tuple):
            continue
        layers.append(_entry(timing, node.name, str(node.target), _kind(module), module, (batch,) + tuple(shape[1:])))
    return replace(timing, layers=tuple(layers))


def module_latency(table: LatencyTable, module: nn.Module, input_shape: tuple[int, ...]) -> float:
    """The fitted time (ms, without a run's own cost) of every convolution and linear layer in `module` run on
    an input of `input_shape` (any batch: the table's is used), each timed alone as `table`'s layers were (same
    provider, threads, batch, widths and cache): how a search prices an operator the model does not have yet,
    consistently with the table's layers (the same layer at the same shape is the same cached entry)."""
    shapes: list[tuple[nn.Module, tuple[int, ...]]] = []
    hooks = [layer.register_forward_pre_hook(lambda layer, args: shapes.append((layer, tuple(args[0].shape))))
             for layer in module.modules() if _kind(layer) is not None]
    try:
        with torch.no_grad():
            module(torch.zeros((1,) + tuple(input_shape[1:])))
    finally:
        for hook in hooks:
            hook.remove()
    total = 0.0
    for layer, shape in shapes:
        entry = _entry(table, "", "", _kind(layer), layer, (table.batch,) + shape[1:])
        total += entry.predict(max(entry.macs))
    return total


def _kind(module: nn.Module) -> str | None:
    return "conv" if type(module) is nn.Conv2d else "linear" if type(module) is nn.Linear else None


def format_table(table: LatencyTable, measured_ms: float | None = None) -> str:
    """The table as text, the slowest layers first, with the prediction against `measured_ms`."""
    rows = [f"per-layer latency in onnxruntime ({table.provider}, {table.threads} thread(s), batch {table.batch}; "
            f"ms = a + b x MACs fitted over widths {', '.join(f'{w:g}' for w in table.layers[0].widths)})"
            if table.layers else "no convolution or linear layer to time"]
    rows.append(f"{'layer':<32} {'kind':<6} {'MMACs':>9} {'ms':>8} {'a (ms)':>8} {'b (ms/MMAC)':>12} {'share':>6}")
    total = max(table.total_ms, 1e-12)
    for layer in sorted(table.layers, key=lambda entry: -entry.full_ms):
        rows.append(f"{layer.module[:32]:<32} {layer.kind:<6} {max(layer.macs) / 1e6:>9.3f} {layer.full_ms:>8.4f} "
                    f"{layer.intercept:>8.4f} {layer.slope * 1e6:>12.5f} {layer.full_ms / total:>6.1%}")
    rows.append(f"layers' total plus one run's own cost ({table.run_ms:.4f} ms), the prediction: "
                f"{table.total_ms:.4f} ms")
    if measured_ms is not None:
        rows.append(f"whole model, measured: {measured_ms:.4f} ms (prediction / measured = "
                    f"{table.total_ms / max(measured_ms, 1e-12):.2f})")
    return "\n".join(rows)


def _hyper(module: nn.Module) -> dict:
    if isinstance(module, nn.Conv2d):
        return {"in": module.in_channels, "out": module.out_channels, "kernel": list(module.kernel_size),
                "stride": list(module.stride), "padding": list(module.padding) if not isinstance(module.padding, str)
                else module.padding, "dilation": list(module.dilation), "groups": module.groups,
                "bias": module.bias is not None}
    return {"in": module.in_features, "out": module.out_features, "bias": module.bias is not None}


@functools.cache
def _machine() -> dict:
    """The machine part of every cache key (platform.processor() runs `uname -p`: once per process)."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count()}


def _entry(table: LatencyTable, node: str, path: str, kind: str, module: nn.Module | None,
           shape: tuple[int, ...], fractions: tuple[float, ...] | None = None) -> LayerLatency:
    """The layer's entry timed as `table` says (its run_ms taken out), from the cache when there."""
    fractions = table.fractions if fractions is None else fractions
    key = {**_machine(), "onnxruntime": onnxruntime.__version__, "provider": table.provider,
           "threads": table.threads, "batch": table.batch, "fractions": list(table.fractions),
           "warmup": table.warmup, "repeats": table.repeats, "kind": kind, "rounding": ROUNDING}
    if module is not None:
        key.update(layer=_hyper(module), input_shape=list(shape))
    folder = Path(table.cache_dir) if table.cache_dir is not None else default_cache_dir()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    file = folder / f"{digest}.json"
    if file.exists():
        try:
            saved = json.loads(file.read_text())
            if saved.get("key") == key:
                return _layer(node, path, kind, shape, saved, table.run_ms, cached=True)
        except (OSError, ValueError):
            pass  # an unreadable entry is timed again and rewritten
    widths, macs, ms = [], [], []
    for fraction in fractions:
        layer, x = _at_width(module, shape, fraction) if module is not None else (_Copy(), torch.randn(shape))
        widths.append(fraction)
        macs.append(_macs(layer, x))
        ms.append(_time(layer, x, table.provider, table.threads, table.warmup, table.repeats))
    saved = {"key": key, "widths": widths, "macs": macs, "ms": ms}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_output(file, force=True) as temporary:
            Path(temporary).write_text(json.dumps(saved))
    except (OSError, ConfigError):  # an unwritable cache costs a re-timing next time, not the run
        pass
    return _layer(node, path, kind, shape, saved, table.run_ms, cached=False)


class _Copy(nn.Module):
    """A model that only copies its input: what one onnxruntime run costs by itself."""

    def forward(self, x):
        return x * 1.0


def _layer(node: str, path: str, kind: str, shape, saved: dict, overhead: float, *, cached: bool) -> LayerLatency:
    macs = np.array(saved["macs"], dtype=float)
    ms = np.maximum(np.array(saved["ms"], dtype=float) - overhead, 0.0)
    if len(set(macs.tolist())) > 1:
        slope, intercept = np.polyfit(macs, ms, 1)
        slope = max(float(slope), 0.0)
        intercept = float(np.mean(ms - slope * macs))
    else:
        slope, intercept = 0.0, float(ms.mean())
    return LayerLatency(node=node, module=path, kind=kind, input_shape=tuple(shape), widths=tuple(saved["widths"]),
                        macs=tuple(saved["macs"]), ms=tuple(ms.tolist()), intercept=intercept, slope=slope,
                        cached=cached)


def _at_width(module: nn.Module, shape: tuple[int, ...], fraction: float) -> tuple[nn.Module, torch.Tensor]:
    """The layer alone with `fraction` of its input and output channels, and an input of its shape. Widths are
    rounded to multiples of ROUNDING where the layer's channels are (the widths compress prefers: onnxruntime
    runs other widths markedly slower, which a fit over them would spread onto every width)."""
    def scaled(count: int, unit: int = 1) -> int:
        if unit == 1 and count % ROUNDING == 0 and count >= 2 * ROUNDING:
            unit = ROUNDING
        return unit * max(1, round(count / unit * fraction))

    if isinstance(module, nn.Conv2d):
        groups = module.groups
        depthwise = groups == module.in_channels == module.out_channels and groups > 1
        inputs = scaled(module.in_channels, 1 if depthwise else groups)
        outputs = inputs if depthwise else scaled(module.out_channels, groups)
        layer = nn.Conv2d(inputs, outputs, module.kernel_size, module.stride, module.padding, module.dilation,
                          groups=inputs if depthwise else groups, bias=module.bias is not None,
                          padding_mode=module.padding_mode)
        return layer.eval(), torch.randn(shape[0], inputs, *shape[2:])
    inputs, outputs = scaled(module.in_features), scaled(module.out_features)
    return nn.Linear(inputs, outputs, bias=module.bias is not None).eval(), torch.randn(*shape[:-1], inputs)


def _macs(layer: nn.Module, x: torch.Tensor) -> float:
    if isinstance(layer, _Copy):
        return 0.0
    with torch.no_grad():
        out = layer(x)
    if isinstance(layer, nn.Conv2d):
        kernel = layer.kernel_size[0] * layer.kernel_size[1]
        return float(out.numel() * (layer.in_channels // layer.groups) * kernel)
    return float(out.numel() * layer.in_features)


def _time(layer: nn.Module, x: torch.Tensor, provider: str, threads: int, warmup: int, repeats: int) -> float:
    with tempfile.TemporaryDirectory(prefix="cascomp-latency-") as scratch:
        path = os.path.join(scratch, "layer.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(layer, (x,), path, dynamo=False, input_names=["x"])
        settings = _Settings(batch_sizes=(len(x),), warmup=warmup, repeats=repeats, threads=threads,
                             provider=provider, input_shapes=None)
        session, feeds = _session(path, settings), {"x": x.numpy()}
        return _latency(len(x), lambda: session.run(None, feeds), settings).median_ms

"""Per-node time from onnxruntime's profiler, attributed to torch module paths.

The profiler's trace (Chrome trace JSON) has one "model_run" event per session.run and one
"<node>_kernel_time" event per node executed. Only nodes inside the timed runs are summed; warm-up runs
are recognised by their position (the first `warmup` runs of each batch size).

Module paths, in order of preference:
  1. the dynamo exporter's node metadata "pkg.torch.onnx.name_scopes" (e.g. ['', 'layer1', 'layer1.0',
     'conv2d']): the last entry is the aten op, the one before it the module;
  2. the TorchScript exporter's scoped node name "/layer1/layer1.0/conv1/Conv": each segment but the op
     names a module, either fully qualified ("layer1.0") or relative to its parent ("conv1");
  3. the ONNX node name itself (root-level ops such as "/Add", nodes onnxruntime inserted).
When the torch model is at hand, a path is cut back to its deepest prefix that names a real module.
"""

from __future__ import annotations

import ast
import bisect
from collections.abc import Callable, Collection
from dataclasses import dataclass

import onnx

_KERNEL_SUFFIX = "_kernel_time"
_SCOPES_KEY = "pkg.torch.onnx.name_scopes"


@dataclass(frozen=True)
class NodeTime:
    """Time one ONNX node took, summed over the timed runs of every profiled batch size."""

    name: str  # the node's name as onnxruntime ran it (after its graph optimisations)
    op_type: str  # onnxruntime's kernel, e.g. FusedConv for a Conv with its activation folded in
    module: str  # dotted torch module path, or the node name when none could be derived
    total_ms: float
    share: float  # of the summed time of all nodes, in [0, 1]
    calls: int


def node_times(events: list[dict], runs_per_batch: int, warmup: int,
               module_of: Callable[[str], str]) -> tuple[NodeTime, ...]:
    """Aggregate the profiler's events into NodeTimes sorted by total time, largest first."""
    windows = _timed_run_windows(events, runs_per_batch, warmup)
    starts = [start for start, _ in windows]
    totals: dict[str, list] = {}  # node name -> [op type, total microseconds, calls]
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith(_KERNEL_SUFFIX):
            continue
        index = bisect.bisect_right(starts, event["ts"]) - 1
        if index < 0 or event["ts"] > windows[index][1]:
            continue  # a warm-up run's node
        name = event["name"][: -len(_KERNEL_SUFFIX)]
        entry = totals.setdefault(name, [event.get("args", {}).get("op_name", "?"), 0.0, 0])
        entry[1] += event.get("dur", 0)
        entry[2] += 1
    overall = sum(entry[1] for entry in totals.values()) or 1.0
    rows = [NodeTime(name=name, op_type=op_type, module=module_of(name), total_ms=micros / 1000,
                     share=micros / overall, calls=calls)
            for name, (op_type, micros, calls) in totals.items()]
    return tuple(sorted(rows, key=lambda row: (-row.total_ms, row.name)))


def _timed_run_windows(events: list[dict], runs_per_batch: int, warmup: int) -> list[tuple[int, int]]:
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])
    windows = [(run["ts"], run["ts"] + run["dur"]) for index, run in enumerate(runs)
               if index % runs_per_batch >= warmup]
    if runs and runs_per_batch and len(runs) % runs_per_batch == 0:
        return windows
    # Not the runs we made (another onnxruntime's trace layout): count every run rather than guess.
    return [(run["ts"], run["ts"] + run["dur"]) for run in runs]


def module_namer(onnx_path: str, known_modules: Collection[str] = ()) -> Callable[[str], str]:
    """A function from an ONNX node name to the torch module path it came from (see the module doc)."""
    graph = onnx.load(onnx_path, load_external_data=False).graph
    from_graph = {node.name: _module_from_metadata(node) or module_from_scoped_name(node.name)
                  for node in graph.node}
    known = set(known_modules)

    def module_of(node_name: str) -> str:
        module = from_graph.get(node_name) or module_from_scoped_name(node_name)  # case 1, 2
        if not module:
            return node_name  # case 3
        return _deepest_known(module, known) if known else module

    return module_of


def _module_from_metadata(node: onnx.NodeProto) -> str | None:
    raw = next((prop.value for prop in node.metadata_props if prop.key == _SCOPES_KEY), None)
    if raw is None:
        return None
    try:
        scopes = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return None
    modules = [scope for scope in scopes[:-1] if isinstance(scope, str) and scope]
    return modules[-1] if modules else None


def module_from_scoped_name(node_name: str) -> str | None:
    """'/layer1/layer1.0/conv1/Conv' -> 'layer1.0.conv1'; None for names without module scopes."""
    if not node_name.startswith("/"):
        return None
    path = ""
    for segment in node_name.strip("/").split("/")[:-1]:
        path = segment if not path or segment.startswith(path + ".") else f"{path}.{segment}"
    return path or None


def _deepest_known(module: str, known: set[str]) -> str:
    candidate = module
    while candidate and candidate not in known:
        candidate = candidate.rpartition(".")[0]
    return candidate or module  # nothing matched: keep what the exporter said rather than nothing

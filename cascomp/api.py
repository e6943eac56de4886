"""The cascomp pipeline, top to bottom: trace -> method -> search -> decide -> rewrite -> fine-tune -> measure
(cost, accuracy, latency) -> write. Also the steps alone: trace, apply_plan, mask_model; and `compare`, which
runs the pipeline once per method (and seed) on one baseline and tabulates the results.

Every entry point copies the caller's model once at the boundary; nothing here mutates user objects.
Tracing, the decision and the rewrite run on the CPU; search, probes, reconstruction, fine-tuning and the
top-1 measurements run on config.device; export, latency and every output are of the CPU module.
Launched by torchrun, every process runs this pipeline: training is data-parallel, the plan is decided on
rank 0 and broadcast, and rank 0 alone writes (cascomp.train.distributed says how the processes agree).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.fx as fx
import torch.nn as nn
from torch.utils.data import TensorDataset

from cascomp.config import CompressConfig, resolve_device
from cascomp.data import load_data
from cascomp.data.bundle import default_workers
from cascomp.errors import CascompError, ConfigError, PassError, PlanError
from cascomp.export import OnnxExportResult, export_onnx
from cascomp.export.compare import compare_latency
from cascomp.export.latency_table import latency_table
from cascomp.export.comparison import ComparisonRow, RunOutcome, summarise, write_comparison
from cascomp.export.comparison_folder import ComparisonFolder, weights_sha256
from cascomp.export.outputs import Outputs
from cascomp.export.report import Measurements, build_report, summary_table
from cascomp.ir.graph import Constraints, Graph
from cascomp.ir.module_copy import copy_for_rewrite
from cascomp.ir.plan import Plan
from cascomp.methods import METHODS
from cascomp.passes import (EliminateDeadCodePass, MaskChannelsPass, PruneChannelsPass, RemoveBranchesPass,
                            ResizeShapeArgsPass, SubstituteOpsPass, run_passes)
from cascomp.search.budget import PREFERRED_MULTIPLES, Fit, fit_of_plan, fit_preferring_multiples, target_ratios
from cascomp.train.checkpoint import FILE as CHECKPOINT
from cascomp.train.checkpoint import CheckpointStore
from cascomp.train.device import Placement, tensors_in
from cascomp.train.distributed import Cluster
from cascomp.train.loops import FinetuneLoop, History, SearchLoop, evaluate, recalibrate_batch_norm, seed_epoch
from cascomp.train.probe import measure_probes
from cascomp.train.reconstruct import reconstruct
from cascomp.train.progress import Reporter


def trace(model: nn.Module, example_inputs, example_kwargs: dict | None = None, *, ignore=(), round_to: int = 1,
          min_keep: int = 1) -> Graph:
    """Trace `model` (a copy, in eval mode) on `example_inputs` and analyse its channel groups.

    `ignore`: module-name patterns whose channels stay (e.g. ["head.*"]); `round_to`: every pruned width is
    a multiple of this (heads count as units); `min_keep`: smallest width of any group.
    """
    if isinstance(ignore, str):
        raise ConfigError(f"ignore must be a sequence of patterns, got the string {ignore!r}; e.g. ignore=({ignore!r},)")
    constraints = Constraints(ignore=tuple(ignore), round_to=round_to, min_keep=min_keep)
    return Graph(model, example_inputs, example_kwargs, constraints=constraints)


def substitute_operators(graph: Graph, operators: dict[str, str]) -> Graph:
    """`graph`'s network with the convolutions named in `operators` replaced by those candidate operators
    (kernels/candidates.py, started from each convolution's weights by their analytic fit), traced again with
    the same inputs and constraints: the graph a plan's `keep` names when the plan has `operators`."""
    try:
        gm = SubstituteOpsPass(dict(operators))(copy.deepcopy(graph.gm)).gm
    except PassError as error:
        raise PlanError(f"plan operators: {error}") from error
    return Graph(gm, graph.example_inputs, graph.example_kwargs, constraints=graph.constraints)


def _widths_of(graph: Graph, plan: Plan) -> tuple[Graph, Plan]:
    """The graph a plan's widths apply to (its operators substituted first) and the plan of widths alone."""
    if not plan.operators:
        return graph, plan
    return substitute_operators(graph, plan.operators), Plan(plan.keep)


def apply_plan(graph: Graph, plan: Plan) -> fx.GraphModule:
    """A new, physically smaller module computing what `mask_model(graph, plan)` computes (with `operators`,
    what the substituted network's computes: candidates started from the analytic fit; load the trained
    weights of the run that made the plan into it)."""
    graph, plan = _widths_of(graph, plan)
    label_keep = graph.label_keep(plan)
    # the prune pass gives every parameter and buffer a fresh tensor, so the copy may share them; its code is
    # generated once, after the last pass
    gm = copy_for_rewrite(graph.gm)
    removed = graph.depth.zeroed(plan.widths(graph))  # groups keeping no channel: their branches become constants
    gm = run_passes(gm, [RemoveBranchesPass(graph.record, label_keep, removed),
                         PruneChannelsPass(graph.record, label_keep),
                         ResizeShapeArgsPass(graph.record, label_keep),
                         EliminateDeadCodePass()]).gm
    _verify_runs(graph, gm)
    return gm


def mask_model(graph: Graph, plan: Plan) -> fx.GraphModule:
    """Same sizes as the traced model, with every dropped channel zeroed on every tensor of its group."""
    graph, plan = _widths_of(graph, plan)
    label_keep = graph.label_keep(plan)
    return MaskChannelsPass(graph.record, label_keep)(graph.gm).gm


def _verify_runs(graph: Graph, gm: fx.GraphModule) -> None:
    """The rewritten model must run and give outputs of the original shapes on the example inputs."""
    try:
        out = graph.run(gm)
    except Exception as error:
        raise PassError(f"the pruned model does not run on the example inputs: {type(error).__name__}: {error}; "
                        "please report this model") from error
    shapes = [tuple(t.shape) for t in tensors_in(out)]
    expected = graph.output_shapes()  # recorded by the analysis; running the original again costs as much
    if expected is None:
        expected = [tuple(t.shape) for t in tensors_in(graph.run(graph.gm))]
    if shapes != expected:
        raise PassError(f"the pruned model's outputs have shapes {shapes}, expected {expected}")


# -- compress: the whole pipeline ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CompressResult:
    model: fx.GraphModule  # the compressed, fine-tuned plain module (eval mode, on the CPU)
    plan: Plan
    report: dict  # what report.json holds


def compress(model: nn.Module, config: CompressConfig | None = None, *, data, example_inputs=None,
             out_dir: str | os.PathLike | None = None, resume: bool = False, force: bool = False,
             progress: bool = True, on_epoch: Callable[[str, int], None] | None = None) -> CompressResult:
    """Compress `model` to `config.targets` with `config.method`, fine-tune it with distillation, measure it.

    data: a `DataBundle` or a spec string such as "fashion-mnist:/usr/share/datasets/fashion-mnist".
    out_dir: where the model, ONNX file, report and plots go (and the per-epoch checkpoint; `resume=True`
    continues an interrupted run from it). A folder holding another run's outputs is refused unless
    `force=True`, which removes them first. The caller's model is never modified.
    """
    config = config or CompressConfig()
    if not isinstance(config, CompressConfig):
        raise ConfigError(f"config must be a cascomp.CompressConfig, got {type(config).__name__}")
    cluster = Cluster.join(resolve_device(config.device))  # one process, or torchrun's group
    placement = Placement.of(config, cluster)  # where training runs
    reporter, clock = Reporter(progress and cluster.is_main), Clock()
    if placement.caution():
        reporter.line(placement.caution())
    if isinstance(data, str):
        data = load_data(data, seed=config.seed, workers=default_workers(placement.device),
                         pin_memory=placement.device.type == "cuda")
    cluster.check_batch(getattr(data.train, "batch_size", None))
    example_inputs = example_inputs if example_inputs is not None else _example_batch(data)
    if config.output_index is not None:
        model = LogitsOf(model, config.output_index)
        _check_output_index(model.model, example_inputs, config.output_index)
    store = CheckpointStore(out_dir) if out_dir is not None else None
    state = store.load() if resume else None  # every process reads it; rank 0 alone writes
    writes = out_dir is not None and cluster.is_main
    out = Outputs(out_dir, force=force, resume=resume, run_files=(CHECKPOINT,)) if writes else None
    store = store if writes else None

    with clock("trace"):  # 1. trace and analyse
        multiples = PREFERRED_MULTIPLES if config.round_to == "auto" else (config.round_to,)
        graph = trace(model, example_inputs, ignore=config.ignore, round_to=multiples[-1], min_keep=config.min_keep)
        teacher = copy.deepcopy(graph.gm).eval()
        _check_classifier(teacher, example_inputs, data)
        teacher.to(placement.device)  # the teacher of search, probes, reconstruction and fine-tuning
        if _latency_target(config):  # priced by a per-layer table (cached)
            table = _attach_latency(graph, config)
            reporter.line(f"latency table: {len(table.layers)} layers, {table.total_ms:.3f} ms predicted at batch "
                          f"{table.batch}, {table.threads} thread(s)")
        goals = target_ratios(graph, config.targets)
        tolerance = {} if config.drop is None else {"drop": config.drop}  # its methods take it (config checks)
        method = METHODS[config.method](graph, config.method_config, goals, **tolerance)
    resumed = state is not None and state["phase"] == "finetune"  # the plan is settled; only fine-tuning is left
    with clock("search"):  # 2. search: train the method's search nodes against the controlled penalty
        if resumed:
            trained, search_history = None, History(**state["search_history"])
        else:
            trained, search_history = _search(method, graph, teacher, data, config, goals, reporter, store, state,
                                              on_epoch, cluster)
    # 3. decide what survives and project it onto the budget under the largest width multiple that lands it;
    # from here on the graph carries that multiple (the plan validates against it)
    with clock("decide"):
        # a method that substitutes operators (DARC) hands back another network: traced again, it is what the
        # widths are projected on, with the user's budgets as ratios of ITS cost (they are the baseline's)
        original = graph
        substituted = method.substitute(trained, state.get("substitution") if resumed else None)
        if substituted is not None:
            graph = trace(substituted, example_inputs, ignore=config.ignore, round_to=multiples[-1],
                          min_keep=config.min_keep)
            if _latency_target(config):  # its layers priced as the search priced them (the same cached entries)
                _attach_latency(graph, config)
            method.rebase(graph)
            trained = graph.gm
            if not resumed:  # the report records what was substituted (the search's summary predates it)
                search_history.method = method.summary()
        plan_goals = _relative_goals(goals, original, graph)
        if resumed:
            graph = graph.with_width_multiple(state.get("round_to", multiples[-1]))
            fit = fit_of_plan(graph, Plan.from_dict(state["plan"]), plan_goals)
            probes = state.get("probes")
        else:
            probes = _measure_probes(method, graph, teacher, data, config, reporter, cluster)
            graph, fit = _decide(method, trained, graph, plan_goals, multiples, cluster)
            if method.keeps_search_weights:
                _take_trained_weights(graph.gm, trained)
        if substituted is not None:
            fit = _of_baseline(fit, original, graph, goals)
        small = apply_plan(graph, fit.plan).to(placement.device)  # 4. physical rewrite
        # the plan the run writes: of the baseline, its substitutions recorded (apply_plan(original, written)
        # rebuilds the compressed architecture)
        written = fit.plan if substituted is None else Plan(fit.plan.keep, {
            path: name for path, name in method.substitution.items() if name != "original"})
        if not resumed:
            if config.reconstruct:
                refit = reconstruct(teacher, small, graph, fit.plan, data, seed=config.seed)
                reporter.line(f"reconstruction: {len(refit)} layers refit to the baseline's outputs")
            seed_epoch(data, config.seed, 3, 0)
            recalibrate_batch_norm(small, data.train)  # statistics of the pruned network, before fine-tuning
    with clock("finetune"):  # 5. fine-tune with distillation from the baseline
        epochs = config.finetune_epochs + (0 if method.searches else config.search_epochs)
        loop = FinetuneLoop(small, teacher, data, config, epochs, reporter, cluster)
        if resumed:
            loop.load_state_dict(state["finetune"])
        checkpoint = {"phase": "finetune", "plan": fit.plan.to_dict(), "round_to": graph.constraints.round_to,
                      "search_history": vars(search_history), "probes": probes,
                      "substitution": method.substitution_indices() if substituted is not None else None}
        save = None if store is None else (lambda finetune: store.save({**checkpoint, "finetune": finetune}))
        finetune_history = loop.run(save, on_epoch)
    with clock("measure"):  # 6. top-1 where they trained (every process scores its share of the batches)
        top1 = evaluate(teacher, data.val, cluster), evaluate(small, data.val, cluster)
        small, teacher = small.cpu(), teacher.cpu()  # the result is a CPU module, whatever the device
    report = None
    if cluster.is_main:
        with tempfile.TemporaryDirectory(prefix="cascomp-") as scratch:  # the two models' ONNX export each: 6, 7
            with clock("export"):  # export the result (checked against torch), time both
                exported = export_onnx(small, example_inputs, os.path.join(scratch, "model.onnx"))
                baseline_exported = export_onnx(teacher, example_inputs, os.path.join(scratch, "baseline.onnx"))
                measured = _measure(graph, fit.plan, (teacher, baseline_exported), (small, exported), top1,
                                    example_inputs, config.latency_batch_sizes, placement.device, original)
            report = build_report(graph=graph, fit=fit, data=data, config=config, measured=measured,
                                  search=search_history, finetune=finetune_history, probes=probes)
            report["timings"] = clock.seconds
            report["environment"].update(placement.describe(), processes=cluster.world_size)
            if out is not None:  # 7. write everything, each file whole or not at all
                out.write(small, written, report, exported)
                store.remove()
    report = cluster.broadcast(report)  # the other processes return rank 0's report
    reporter.line(summary_table(report))
    return CompressResult(model=small, plan=written, report=report)


def _search(method, graph: Graph, teacher, data, config: CompressConfig, goals, reporter, store, state, on_epoch,
            cluster: Cluster):
    """Run the method's search; methods without one are decided from the baseline's weights."""
    if not method.searches or config.search_epochs == 0:
        return graph.gm, History()
    loop = SearchLoop(method, method.prepare(), data, config, goals, reporter, teacher, cluster)
    if state is not None:
        loop.load_state_dict(state["search"])
    history = loop.run(store, on_epoch)
    return loop.model.cpu(), history  # the decision reads it (and its gates) on the CPU


def _decide(method, trained, graph: Graph, goals, multiples, cluster: Cluster):
    """What survives, projected onto the budget under the largest width multiple that lands it: decided on
    rank 0 and broadcast, so every process rewrites the same plan."""
    settled = None
    if cluster.is_main:
        decision = method.decide(trained)
        graph, fit = fit_preferring_multiples(graph, decision.scores, decision.family, method.projection_goals(goals),
                                              multiples)
        settled = (fit.plan.to_dict(), graph.constraints.round_to)
    settled = cluster.broadcast(settled)
    if not cluster.is_main:
        graph = graph.with_width_multiple(settled[1])
    return graph, fit_of_plan(graph, Plan.from_dict(settled[0]), goals)  # measured against the user's budgets


def _measure_probes(method, graph: Graph, teacher, data, config: CompressConfig, reporter,
                    cluster: Cluster) -> dict | None:
    """Measure the plans the method asks about (none for most methods) on the traced baseline; what it cost."""
    plans = method.probes()
    if not plans:
        return None
    options = config.method_config
    result = measure_probes(plans, lambda plan: apply_plan(graph, plan), teacher, data, config, reporter,
                            calibration_batches=options.calibration_batches, scoring_batches=options.scoring_batches,
                            cluster=cluster)
    reporter.line(f"probes: {len(plans)} measured on {result.images:,} images in {result.seconds:.0f} s")
    method.take_measurements(result.losses)
    return {"count": len(plans), "images": result.images, "seconds": round(result.seconds, 3),
            "epochs_of_forward_passes": result.images / max(data.train_size, 1)}


def _latency_target(config: CompressConfig) -> bool:
    return any(target.metric == "latency" for target in config.targets)


def _attach_latency(graph: Graph, config: CompressConfig):
    table = latency_table(graph, batch=config.latency_batch_sizes[0], threads=config.latency_threads,
                          device=config.latency_device)
    graph.cost_model.attach_latency(table)
    return table


def _relative_goals(goals: dict[str, float], original: Graph, graph: Graph) -> dict[str, float]:
    """The budgets (ratios of `original`'s cost) as ratios of `graph`'s cost (the same graph: unchanged)."""
    if graph is original:
        return dict(goals)
    before, after = original.cost(), graph.cost()
    return {m: goal * getattr(before, m) / max(getattr(after, m), 1e-12) for m, goal in goals.items()}


def _of_baseline(fit: Fit, original: Graph, graph: Graph, goals: dict[str, float]) -> Fit:
    """`fit` (ratios of `graph`'s cost) with its ratios of the baseline's, against the user's `goals`."""
    before, after = original.cost(), graph.cost()
    reached = {m: r * getattr(after, m) / max(getattr(before, m), 1e-12) for m, r in fit.reached.items()}
    return Fit(plan=fit.plan, widths=fit.widths, reached=reached, goals=dict(goals))


def _measure(graph: Graph, plan: Plan, baseline: tuple[nn.Module, OnnxExportResult],
             compressed: tuple[nn.Module, OnnxExportResult], top1: tuple[float, float], example_inputs,
             batch_sizes, device: torch.device, reference: Graph | None = None) -> Measurements:
    """Cost and latency (interleaved rounds of the two checked exports) of both models, with their top-1; on a
    CUDA device also their latency there, in torch and in onnxruntime's CUDA provider if it is installed.
    `reference`: the baseline's graph when `graph` is a substituted network's (its cost is the baseline's)."""
    reference = reference or graph
    gpu, unavailable = [], {}
    if device.type == "cuda":
        gpu.append(compare_latency(baseline, compressed, example_inputs, batch_sizes, runtime="torch-cuda",
                                   device=device))
        try:
            gpu.append(compare_latency(baseline, compressed, example_inputs, batch_sizes, runtime="onnxruntime-cuda",
                                       device=device))
        except CascompError as error:  # no onnxruntime-gpu: the report says so rather than failing the run
            unavailable["onnxruntime-cuda"] = str(error)
    return Measurements(baseline_cost=reference.cost(), cost=graph.cost(plan), baseline_top1=top1[0], top1=top1[1],
                        latency=compare_latency(baseline, compressed, example_inputs, batch_sizes),
                        prunable_share=reference.prunable_share(), gpu=tuple(gpu), gpu_unavailable=unavailable)


def _take_trained_weights(target: fx.GraphModule, trained: nn.Module) -> None:
    """Copy the search-trained weights and statistics into the traced graph the rewrite slices."""
    if trained is target:
        return
    own = target.state_dict()
    target.load_state_dict({k: v for k, v in trained.state_dict().items() if k in own})


class LogitsOf(nn.Module):
    """`model` with its forward's output `index` (a tuple/list index or a dict key) as its only output; one
    input, as compress feeds the data's samples (fx cannot trace through *args)."""

    def __init__(self, model: nn.Module, index: int | str) -> None:
        super().__init__()
        self.model, self.index = model, index

    def forward(self, x):
        return self.model(x)[self.index]


def _check_output_index(model: nn.Module, example_inputs, index) -> None:
    """--output-index must name an output of the model; said before tracing, in the user's terms."""
    flags = [(module, module.training) for module in model.modules()]
    try:
        with torch.no_grad():
            output = model.eval()(*example_inputs)
    finally:
        for module, flag in flags:  # the caller's model is theirs: leave its train/eval flags as they were
            module.training = flag
    if isinstance(output, dict):
        if index not in output:
            raise ConfigError(f"--output-index {index!r}: the model returns a dict with the keys "
                              f"{', '.join(map(repr, output))}; give the key of the logits")
    elif isinstance(output, (tuple, list)):
        if not isinstance(index, int) or not -len(output) <= index < len(output):
            raise ConfigError(f"--output-index {index!r}: the model returns a {type(output).__name__} of "
                              f"{len(output)} outputs; give the index of the logits, 0..{len(output) - 1}")
    else:
        raise ConfigError(f"--output-index {index!r}: the model returns a {type(output).__name__}, not a tuple "
                          "or dict; leave --output-index out")


def _check_classifier(model: nn.Module, example_inputs, data) -> None:
    """compress trains and scores a classifier: its forward must return logits (batch, classes) with a class
    for every label of both splits; anything else would fail deep in the loss, or score nonsense."""
    with torch.no_grad():
        output = model(*example_inputs)
    fix = ("compress needs a classifier whose forward returns the logits, a tensor of shape (batch, classes); "
           "name them with --output-index (output_index=) when forward returns several outputs, or wrap the "
           "model so that forward returns them")
    if not isinstance(output, torch.Tensor):
        raise ConfigError(f"the model returns a {type(output).__name__}, not a tensor; {fix}")
    if output.dim() != 2 or not output.is_floating_point():
        raise ConfigError(f"the model returns a {output.dtype} tensor of shape {tuple(output.shape)}; {fix}")
    classes = output.shape[1]
    for split in ("train", "val"):
        largest = _largest_label(getattr(data, split))
        if largest is not None and largest >= classes:
            raise ConfigError(f"the {'training' if split == 'train' else 'validation'} data holds label {largest}, "
                              f"but the model has {classes} outputs (classes 0..{classes - 1}); give a model with "
                              "one output per class of this data, or data whose labels it covers")


def _largest_label(loader, batches: int = 16) -> int | None:
    """The largest label of an in-memory split, or of its first `batches` batches for other loaders."""
    dataset = getattr(loader, "dataset", None)
    tensors = getattr(dataset, "tensors", None)
    if isinstance(dataset, TensorDataset) and len(tensors) >= 2 and len(tensors[1]):
        return int(tensors[1].max())
    largest = None
    for index, (_, y) in enumerate(loader):
        if index == batches:
            break
        if len(y):
            largest = max(int(y.max()), largest if largest is not None else int(y.max()))
    return largest


def _example_batch(data) -> tuple[torch.Tensor]:
    x, _ = next(iter(data.val))
    return (x[:1].clone(),)


class Clock:
    """Wall time of each pipeline stage, for the report."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, stage: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = round(time.perf_counter() - started, 3)
            self.seconds["total"] = round(time.perf_counter() - self._start, 3)


# -- compare: the pipeline once per method (and seed) on one baseline ----------------------------------------
@dataclass(frozen=True)
class CompareResult:
    baseline: ComparisonRow
    rows: tuple[ComparisonRow, ...]  # one per method, in the order run
    runs: tuple[RunOutcome, ...]  # every compress run: method, seed, folder, and its report or its error
    files: dict[str, Path]  # "png", "md", "json": the plot and the table in out_dir

    @property
    def failed(self) -> tuple[str, ...]:
        """The methods with a failed run; their rows say why."""
        return tuple(row.method for row in self.rows if row.failures)


def compare(model: nn.Module, config: CompressConfig | None = None, *, data, out_dir: str | os.PathLike,
            methods: Sequence[str] | None = None, seeds: int = 1, example_inputs=None, force: bool = False,
            progress: bool = True, on_epoch: Callable[[str, int, str, int], None] | None = None) -> CompareResult:
    """`compress` with each of `methods` (default: every registered one, sorted) on the same model, data,
    targets, epoch budget and seed, each in its own folder under out_dir; then the table (compare.md,
    compare.json) and its plot (compare.png) in out_dir.

    config: what every run shares; its method and method_config are not used (each method runs with its
    defaults) and, with `epochs`, each method splits that total its own way. seeds: each method runs with
    config.seed, config.seed + 1, ... (in out_dir/<method>/seed-<k>/). A run failing with a CascompError is
    recorded in its row and the compare goes on. Called again with the same settings, finished runs are
    reused and an interrupted one continues from its checkpoint; other settings are refused unless
    force=True, which starts out_dir afresh. on_epoch(method, seed, phase, epoch) follows every run.
    """
    config = config or CompressConfig()
    if not isinstance(config, CompressConfig):
        raise ConfigError(f"config must be a cascomp.CompressConfig, got {type(config).__name__}")
    methods, seed_list = checked_methods(methods, config), _seeds_to_compare(config, seeds)
    if isinstance(data, str):  # loaded once: every run sees the same split
        device = resolve_device(config.device)
        data = load_data(data, seed=config.seed, workers=default_workers(device), pin_memory=device.type == "cuda")
    example_inputs = example_inputs if example_inputs is not None else _example_batch(data)
    folder = ComparisonFolder(out_dir, _comparison_settings(model, config, data, seed_list), force=force,
                              run_files=(CHECKPOINT,))
    reporter, jobs, runs = Reporter(progress), [(m, s) for m in methods for s in seed_list], []
    for index, (method, seed) in enumerate(jobs, 1):
        reporter.line(f"compare: [{index}/{len(jobs)}] {method} (seed {seed})")
        run_folder = folder.run_folder(method, seed if len(seed_list) > 1 else None)
        hook = None if on_epoch is None else functools.partial(on_epoch, method, seed)
        runs.append(_compare_run(model, _run_config(config, method, seed), data, example_inputs, run_folder,
                                 reporter, progress, hook))
    comparison = summarise(runs, data=data.name, seeds=seed_list)
    files = write_comparison(comparison, runs, folder.directory)
    reporter.line(f"compare: wrote {', '.join(path.name for path in files.values())} in {folder.directory}")
    return CompareResult(baseline=comparison.baseline, rows=comparison.rows, runs=tuple(runs), files=files)


def _compare_run(model: nn.Module, config: CompressConfig, data, example_inputs, folder: Path, reporter,
                 progress: bool, on_epoch) -> RunOutcome:
    """One run of a compare: reused when it finished earlier, resumed from its checkpoint, else started."""
    outcome = functools.partial(RunOutcome, config.method, config.seed, str(folder))
    report = ComparisonFolder.finished_report(folder)
    if report is not None:
        reporter.line(f"compare: finished earlier; reusing {folder / 'report.json'}")
        return outcome(report=report)
    resume = CheckpointStore(folder).exists()
    if resume:
        reporter.line(f"compare: continuing the interrupted run in {folder}")
    try:
        result = compress(model, config, data=data, example_inputs=example_inputs, out_dir=folder, resume=resume,
                          force=not resume, progress=progress, on_epoch=on_epoch)
    except CascompError as error:
        reporter.line(f"compare: {config.method} (seed {config.seed}) failed: {error}")
        return outcome(error=str(error))
    return outcome(report=result.report)


def checked_methods(methods: Sequence[str] | None, config: CompressConfig | None = None) -> tuple[str, ...]:
    """The methods a compare runs: every registered one (sorted) for None, else the names, each registered;
    with the compare's `config`, each method must take its settings too (e.g. --target drop, which only some
    methods understand), so that nothing runs before a mistake is found."""
    if methods is None:
        return tuple(sorted(METHODS))
    if isinstance(methods, str):
        raise ConfigError(f"methods must be a sequence of names, got the string {methods!r}; e.g. "
                          f"methods=({methods!r},)")
    methods = tuple(dict.fromkeys(methods))
    for name in methods:
        if name not in METHODS:
            raise ConfigError(f"unknown method {name!r}; choose from {', '.join(sorted(METHODS))}")
    if not methods:
        raise ConfigError(f"give at least one method to compare; choose from {', '.join(sorted(METHODS))}")
    for name in methods if config is not None else ():
        _run_config(config, name, config.seed)
    return methods


def _seeds_to_compare(config: CompressConfig, seeds: int) -> tuple[int, ...]:
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"seeds must be a whole number >= 1, got {seeds!r}; e.g. --seeds 3")
    return tuple(range(config.seed, config.seed + seeds))


def _run_config(config: CompressConfig, method: str, seed: int) -> CompressConfig:
    """One run's config: the method with its default options, the seed; a total of `epochs` split anew."""
    schedule = {"search_epochs": None, "finetune_epochs": None} if config.epochs is not None else {}
    return replace(config, method=method, method_config=None, seed=seed, **schedule)


def _comparison_settings(model: nn.Module, config: CompressConfig, data, seeds: tuple[int, ...]) -> dict:
    """What every run of a compare shares (recorded in out_dir; a rerun must share it too)."""
    per_run = {"method", "method_config", "seed", "device"}
    if config.epochs is not None:  # each method's own split of them
        per_run |= {"search_epochs", "finetune_epochs"}
    shared = {key: value for key, value in config.to_dict().items() if key not in per_run}
    return {"model_sha256": weights_sha256(model), "data": data.name, "train_size": data.train_size,
            "val_size": data.val_size, "batch_size": getattr(data.train, "batch_size", None),
            "seeds": list(seeds), **shared}

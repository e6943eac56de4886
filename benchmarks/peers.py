"""cascomp against Torch-Pruning, side by side, on baselines trained to convergence on full Fashion-MNIST.

Every contender starts from the same cached baseline, prunes it to the same budget and is fine-tuned by the
same loop (cascomp's: SGD, cosine decay, distillation from the baseline) for the same number of epochs, so the
table compares the pruning decisions, not the fine-tune recipes. A searching method spends part of the epochs
searching (a search epoch is one full pass over the training data; the wall time column shows what it costs).

Contenders: every cascomp method (`cascomp:figs`, `cascomp:l1`, ...; the table marks the one `compress`
runs without --method) and Torch-Pruning 1.6's group-L1 magnitude (`tp:l1`) and first-order Taylor
(`tp:taylor`) importances, one shot, with the same pruning ratio in every layer (its default, local
pruning), the ratio bisected until the budget holds.

Rows (baseline, contender, budget, epochs, seed) are saved one by one under --cache as they finish, and all
of them in docs/peers-rows.json (kept in git) whenever the results are regenerated; a row in either is never
rerun, so the table fills in over several runs and survives a fresh checkout; `--only` picks rows by pattern (e.g. `--only 'resnet20/*/flops=0.33/2e/*'`).
Two runs may go side by side with `--threads 1` each. Baselines train on first use (`--baselines-only`).

    pip install -e '.[bench]'                      # Torch-Pruning, for the benchmark only
    python benchmarks/peers.py --baselines-only    # ResNet-20 (8 epochs) and VGG (8 epochs): ~40 min here
    python benchmarks/peers.py                     # every row (hours: each row is ~5 min per epoch budget 2)
    python benchmarks/peers.py --table             # print the table from the rows saved so far

Needs Debian's dataset-fashion-mnist package (apt-get install -y dataset-fashion-mnist).
"""

from __future__ import annotations

import argparse
import hashlib
import copy
import fnmatch
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cascomp  # noqa: E402
from cascomp.methods import METHODS, DarcConfig, FigsConfig, SensitivityConfig, TasConfig  # noqa: E402
from cascomp.train.loops import FinetuneLoop, evaluate, recalibrate_batch_norm, seed_epoch  # noqa: E402
from cascomp.train.progress import Reporter  # noqa: E402
from _baselines import BASELINES, INPUT, baseline  # noqa: E402
from _results import update_section, write_text  # noqa: E402
from _timing import interleaved_latency, predicted_ms, ratio_with_spread  # noqa: E402

DATA = "fashion-mnist:/usr/share/datasets/fashion-mnist"
BASELINE_EPOCHS = 8
# (budget, epochs, seeds): the main comparison with three seeds, the others with one
BUDGETS = (("flops=0.33", 2, (0, 1, 2)), ("flops=0.5", 2, (0,)), ("params=0.33", 2, (0,)), ("flops=0.33", 6, (0,)),
           ("latency=0.5", 2, (0,)))


# contender variants: `cascomp:METHOD+OPTION` runs METHOD with these CompressConfig fields
OPTIONS = {
    "reconstruct": {"reconstruct": True},  # refit the pruned layers to the baseline's outputs first
    "any-width": {"round_to": 1},  # widths of any size, as Torch-Pruning's (the default prefers multiples of 8)
    # sensitivity only: no residual block probed at width 0 or removed (sensitivity's default before 2026-12-07)
    "keep-blocks": {"method_config": SensitivityConfig(remove_blocks=False)},
    # tas only: widths searched, no stage depth (tas's only search before 2026-12-07)
    "widths-only": {"method_config": TasConfig(depth=False)},
    # tas only: the paper's channel-wise interpolation instead of the masks
    "cwi": {"method_config": TasConfig(alignment="cwi")},
    # figs only: a gate on every removable residual branch too, so the search may remove blocks
    "branch-gates": {"method_config": FigsConfig(branch_gates=True)},
    # darc only: the shift candidate offered too (flops and params targets)
    "shift": {"method_config": DarcConfig(shift=True)},
}


def contenders() -> list[str]:
    """Every cascomp method (the default one is marked in the table, not run twice) and Torch-Pruning's."""
    methods = [f"cascomp:{name}" for name in METHODS]
    variants = [f"cascomp:{name}+{option}" for name in ("l1", "sensitivity") for option in ("reconstruct", "any-width")]
    return methods + variants + ["cascomp:uniform+any-width", "cascomp:sensitivity+keep-blocks", "cascomp:tas+widths-only",
                                 "cascomp:tas+cwi", "cascomp:figs+branch-gates", "cascomp:darc+shift", "tp:l1",
                                 "tp:taylor"]


def all_rows() -> list[str]:
    """Row keys in the order they run: the main budget's first seed on every baseline first."""
    keys = []
    for budget, epochs, seeds in BUDGETS:
        for seed in seeds:
            for name in BASELINES:
                keys += [f"{name}/{who}/{budget}/{epochs}e/s{seed}" for who in contenders()]
    return keys


# -- contenders --------------------------------------------------------------------------------------------
def run_cascomp(method: str, model, data, target: str, epochs: int, seed: int) -> tuple[torch.nn.Module, dict]:
    """compress with the total epoch budget, which the method splits between search and fine-tuning;
    `method+option+...` runs it with those of OPTIONS."""
    method, *options = method.split("+")
    settings = {key: value for option in options for key, value in OPTIONS[option].items()}
    config = cascomp.CompressConfig(method=method, targets=(target,), seed=seed, epochs=epochs, **settings)
    result = cascomp.compress(model, config, data=data, progress=False)
    probes = result.report["search"]["probes"] or {}
    return result.model, {"method": config.method, "search_epochs": config.search_epochs,
                          "finetune_epochs": config.finetune_epochs,
                          # forward passes only (BN calibration and scoring), in passes over the training data
                          "probe_epochs": probes.get("epochs_of_forward_passes", 0.0),
                          "probe_seconds": probes.get("seconds", 0.0),
                          # residual blocks removed (groups kept at width 0)
                          "removed_blocks": sum(w["after"] == 0 for w in result.report["widths"].values()),
                          # operator substitutions (darc): how many layers became each operator
                          **({"operators": result.report["search"]["method"]["chosen"]}
                             if "chosen" in (result.report["search"].get("method") or {}) else {})}


def run_torch_pruning(importance: str, model, data, target: str, epochs: int, seed: int):
    """Torch-Pruning one shot at the smallest uniform ratio that meets the target, then cascomp's fine-tune."""
    import torch_pruning as tp

    teacher = copy.deepcopy(model).eval()
    metric, goal = cascomp.Target.parse(target).metric, cascomp.Target.parse(target).value
    base = _cost(model, metric == "latency")[metric]
    student = copy.deepcopy(model)
    if importance == "taylor":
        _accumulate_gradients(student, data, seed, batches=16)
    scorer = tp.importance.MagnitudeImportance(p=1) if importance == "l1" else tp.importance.TaylorImportance()

    def pruned(ratio: float):
        candidate = copy.deepcopy(student)
        for source, copied in zip(student.parameters(), candidate.parameters()):  # deepcopy drops .grad
            copied.grad = None if source.grad is None else source.grad.clone()
        pruner = tp.pruner.MetaPruner(candidate, torch.zeros(INPUT), importance=scorer, pruning_ratio=ratio,
                                      ignored_layers=[candidate.fc])
        pruner.step()
        return candidate, _cost(candidate, metric == "latency")[metric] / base

    # the cost falls as the ratio grows up to where a layer would keep no channel (Torch-Pruning then skips
    # it: 0.95 prunes nothing on ResNet-20); bisect for the smallest ratio under the goal
    low, high = 0.0, 0.9
    best, reached = pruned(high)
    if reached > goal:
        raise RuntimeError(f"Torch-Pruning cannot reach {target} (ratio 0.9 gives {reached:.3f})")
    for _ in range(14):
        middle = (low + high) / 2
        candidate, value = pruned(middle)
        if value <= goal:
            high, best = middle, candidate
        else:
            low = middle
    best.zero_grad(set_to_none=True)
    seed_epoch(data, seed, 3, 0)
    recalibrate_batch_norm(best, data.train)
    config = cascomp.CompressConfig(targets=(target,), seed=seed, search_epochs=0, finetune_epochs=epochs)
    FinetuneLoop(best, teacher, data, config, epochs, Reporter(False)).run(None, None)
    return best.eval().cpu(), {"method": f"torch-pruning {importance}", "pruning_ratio": round(high, 4),
                         "search_epochs": 0, "finetune_epochs": epochs}


def _accumulate_gradients(model, data, seed: int, batches: int) -> None:
    """Cross-entropy gradients of `batches` training batches (Taylor importance reads weight * grad)."""
    seed_epoch(data, seed, 4, 0)
    model.eval()  # the baseline's statistics, as Torch-Pruning's examples score a trained model
    for index, (x, y) in enumerate(data.train):
        if index == batches:
            break
        torch.nn.functional.cross_entropy(model(x), y).backward()


def _cost(model, latency: bool = False) -> dict:
    """FLOPs and parameters; with `latency`, also the per-layer latency table's prediction (ms) at batch 1 on
    one thread, as compress prices a latency target (cached per layer shape)."""
    graph = cascomp.trace(model, (torch.zeros(INPUT),))
    cost = graph.cost()
    return {"flops": cost.flops, "params": cost.params, **({"latency": predicted_ms(graph)} if latency else {})}


# -- rows --------------------------------------------------------------------------------------------------
def run_row(key: str, models: dict, data, rows_dir: Path, rounds: int, version: str) -> dict:
    name, who, target, epochs, seed = key.split("/")
    epochs, seed = int(epochs[:-1]), int(seed[1:])
    tool, method = who.split(":")
    model = models[name]
    started = time.perf_counter()
    runner = run_cascomp if tool == "cascomp" else run_torch_pruning
    small, details = runner(method, model, data, target, epochs, seed)
    seconds = time.perf_counter() - started
    timed = cascomp.Target.parse(target).metric == "latency"
    base, cost = _cost(model, timed), _cost(small, timed)
    row = {"key": key, "baseline": name, "baseline_sha": version, "contender": who, "target": target,
           "epochs": epochs, "seed": seed,
           **details, "flops": cost["flops"] / base["flops"], "params": cost["params"] / base["params"],
           "top1": evaluate(small, data.val), "baseline_top1": evaluate(model, data.val), "seconds": seconds,
           "threads": torch.get_num_threads(), **_latency(model, small, rounds),
           **({"latency_predicted": cost["latency"] / base["latency"]} if timed else {})}
    _write_json(rows_dir / (key.replace("/", "__") + ".json"), row)
    return row


def _latency(model, small, rounds: int) -> dict:
    """onnxruntime latency ratio to the baseline at batch 1 and 32 on one thread: median of per-round ratios
    over interleaved rounds, and their spread."""
    with tempfile.TemporaryDirectory() as scratch:
        paths = {}
        for label, module in (("baseline", model), ("compressed", small)):
            paths[label] = os.path.join(scratch, f"{label}.onnx")
            cascomp.export_onnx(module, (torch.zeros(INPUT),), paths[label])
        samples = interleaved_latency(paths, rounds, warmup=5, repeats=20, threads=(1,))
    result = {}
    for batch in (1, 32):
        ratio, spread = ratio_with_spread(samples, "compressed", "baseline", 1, batch)
        result[f"latency_b{batch}"], result[f"latency_b{batch}_spread"] = ratio, spread
    return result


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(value, indent=1))


# -- tables ------------------------------------------------------------------------------------------------
def tables(rows: list[dict]) -> str:
    """Markdown: every row, then mean ± std over seeds per (baseline, contender, budget, epochs)."""
    default = f"cascomp:{cascomp.CompressConfig().method}"
    rows = [{**row, "contender": row["contender"] + (" (default)" if row["contender"] == default else "")}
            for row in rows]
    order = {key: index for index, key in enumerate(all_rows())}
    rows = sorted(rows, key=lambda row: order.get(row["key"], len(order)))
    lines = ["| baseline | contender | budget | epochs: search + fine-tune | seed | FLOPs | params | blocks removed | "
             "top-1 | Δ top-1 | latency predicted | latency b1 | latency b32 | wall s |", "|" + "---|" * 14]
    for row in rows:
        schedule = f"{row['search_epochs']} + {row['finetune_epochs']}"
        if row.get("probe_epochs"):
            schedule += f" (probes: {row['probe_epochs']:.2f} in forward passes)"
        # the per-layer table's prediction at batch 1, one thread (latency targets only: what they are landed on)
        predicted = f"{row['latency_predicted']:.3f}" if "latency_predicted" in row else "—"
        lines.append(f"| {row['baseline']} ({row['baseline_top1']:.2%}) | {row['contender']} | {row['target']} | "
                     f"{schedule} | {row['seed']} | {row['flops']:.3f} | {row['params']:.3f} | "
                     # rows from before blocks could be removed removed none (no method proposed it)
                     f"{row.get('removed_blocks', 0)} | {row['top1']:.2%} | {100 * (row['top1'] - row['baseline_top1']):+.2f} pt | "
                     f"{predicted} | {row['latency_b1']:.2f} ±{row['latency_b1_spread']:.2f} | "
                     f"{row['latency_b32']:.2f} ±{row['latency_b32_spread']:.2f} | {row['seconds']:.0f} |")
    lines += ["", "| baseline | contender | budget | epochs | seeds | top-1 per seed | mean ± std | Δ mean |",
              "|" + "---|" * 8]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:  # a retrained baseline (another top-1) is another network: its rows are averaged apart
        label = f"{row['baseline']} ({row['baseline_top1']:.2%})"
        groups.setdefault((label, row["contender"], row["target"], row["epochs"]), []).append(row)
    for (name, who, target, epochs), members in groups.items():
        top1 = [row["top1"] for row in members]
        spread = statistics.stdev(top1) if len(top1) > 1 else 0.0
        mean = statistics.mean(top1)
        lines.append(f"| {name} | {who} | {target} | {epochs} | {len(top1)} | "
                     f"{', '.join(f'{t:.2%}' for t in top1)} | {mean:.2%} ± {100 * spread:.2f} | "
                     f"{100 * (mean - members[0]['baseline_top1']):+.2f} pt |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--cache", default=".cache/peers", help="baselines and finished rows (default .cache/peers)")
    parser.add_argument("--out", default="out/peers", help="where table.md and table.json go")
    parser.add_argument("--results", default="docs/results.md",
                        help="the Markdown file whose peers section is regenerated from the table ('' leaves it "
                             "and --rows)")
    parser.add_argument("--rows", default="docs/peers-rows.json",
                        help="every finished row, kept in git beside the results (a row there is not rerun; "
                             "rewritten with the results)")
    parser.add_argument("--only", action="append", help="run only rows whose key matches (fnmatch); repeatable")
    parser.add_argument("--baselines-only", action="store_true")
    parser.add_argument("--baseline", action="append", choices=sorted(BASELINES),
                        help="only this baseline (repeatable; default all)")
    parser.add_argument("--table", action="store_true", help="only print the table of the rows saved so far")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved latency rounds per row")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cache, rows_dir = Path(args.cache), Path(args.cache) / "rows"
    finished = finished_rows(rows_dir, Path(args.rows))
    if not args.table:
        data = cascomp.load_data(args.data, batch_size=128, seed=0)
        files = {name: cache / f"{name}-{BASELINE_EPOCHS}e.pt" for name in args.baseline or BASELINES}
        models = {name: baseline(name, data, epochs=BASELINE_EPOCHS, cache=path,
                                 log=lambda line: print(line, flush=True)) for name, path in files.items()}
        versions = {name: hashlib.sha256(path.read_bytes()).hexdigest()[:12] for name, path in files.items()}
        top1 = functools.cache(lambda name: evaluate(models[name], data.val))
        if not args.baselines_only:
            for key in all_rows():
                name = key.split("/")[0]
                if (name not in models or _same_baseline(finished.get(key), versions[name], lambda: top1(name))
                        or (args.only and not any(fnmatch.fnmatch(key, p) for p in args.only))):
                    continue
                print(f"{key}: running", flush=True)
                row = finished[key] = run_row(key, models, data, rows_dir, args.rounds, versions[name])
                print(f"{key}: FLOPs {row['flops']:.3f}, top-1 {row['top1']:.4f} "
                      f"({100 * (row['top1'] - row['baseline_top1']):+.2f} pt), {row['seconds']:.0f} s", flush=True)
    rows = list(finished.values())
    if rows:
        table = tables(rows)
        print(table)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        _write_json(Path(args.out) / "table.json", rows)
        write_text(Path(args.out) / "table.md", table + "\n")
        if args.results:
            update_results(Path(args.results), table, rows)
            _write_json(Path(args.rows), sorted(rows, key=lambda row: row["key"]))


def _same_baseline(row: dict | None, version: str, top1) -> bool:
    """Whether finished `row` compressed this machine's cached baseline (a baseline retrained on a fresh
    checkout is another network: its rows run again, replacing the old ones). Rows from before the baseline's
    hash was recorded are matched by the baseline's top-1."""
    if row is None:
        return False
    if "baseline_sha" in row:
        return row["baseline_sha"] == version
    return round(top1(), 4) == round(row["baseline_top1"], 4)


def finished_rows(rows_dir: Path, committed: Path) -> dict[str, dict]:
    """key -> row: those kept in git (`committed`), and those of this machine's cache (which win: the cache
    holds every row this machine finished, the committed file what was published)."""
    rows = {row["key"]: row for row in (json.loads(committed.read_text()) if committed.is_file() else [])}
    rows.update((row["key"], row) for row in (json.loads(path.read_text()) for path in sorted(rows_dir.glob("*.json"))))
    return rows


def update_results(path: Path, table: str, rows: list[dict]) -> None:
    """Replace the peers section of `path` (appended when absent) by the table."""
    # rows rebuilt from an earlier table (their JSON lost) carry the thread counts that table stated
    threads = sorted({row["threads"] for row in rows if row.get("threads") is not None}
                     | {count for row in rows for count in row.get("threads_of_table", ())})
    body = (f"_Regenerated by `python benchmarks/peers.py` from {len(rows)} finished rows (torch threads per row: "
            f"{', '.join(map(str, threads))}; latency: onnxruntime, one thread, median of per-round ratios over "
            "interleaved rounds ± their spread)._\n\n" + table)
    update_section(path, "peers.py", "cascomp against Torch-Pruning (`benchmarks/peers.py`)", body)


if __name__ == "__main__":
    main()

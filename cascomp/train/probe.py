"""Probes: how much a candidate plan hurts, measured without training.

A method may ask for a list of plans to be measured before it decides (`Method.probes()`). Each is rewritten
to its physically smaller model, its BatchNorm statistics are re-estimated on a few fixed training batches
(a pruned network with its old statistics scores far worse than it will after fine-tuning, and not in the
same order: Li et al., EagleEye), and its distillation loss against the baseline is averaged over other
fixed training batches. The same batches serve every probe, so differences between probes are not batch
noise. The validation split is never read: what it scores must stay an unbiased measure of the result.
Probes run in full precision on the teacher's device: the batches go there once, each probe's model too.
With several processes each measures every N-th plan on the same batches, and the losses are gathered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from cascomp.config import CompressConfig
from cascomp.ir.plan import Plan
from cascomp.train.device import module_device, to_device
from cascomp.train.distributed import Cluster
from cascomp.train.distill import distillation_loss
from cascomp.train.loops import first_batches, recalibrate_batch_norm
from cascomp.train.progress import Reporter

PROBE_PHASE = 5  # the seed phase of the probe batches (search 1, fine-tune 2, recalibration 3)


@dataclass(frozen=True)
class ProbeResult:
    losses: list[float]  # per probe, in the order asked
    images: int  # forward passes spent (calibration + scoring, over all probes)
    seconds: float


def measure_probes(plans: list[Plan], rewrite: Callable[[Plan], nn.Module], teacher: nn.Module, data,
                   config: CompressConfig, reporter: Reporter, *, calibration_batches: int,
                   scoring_batches: int, cluster: Cluster = Cluster()) -> ProbeResult:
    """The distillation loss (config.distill's temperature and weight) of each plan's rewritten model after BN
    recalibration; batches drawn once from the training split with config.seed. `images` counts the forward
    passes of all processes."""
    started = time.perf_counter()
    calibration, scoring = _fixed_batches(data, config.seed, calibration_batches, scoring_batches)
    device = module_device(teacher)
    calibration, scoring = to_device(calibration, device), to_device(scoring, device)
    with torch.no_grad():
        targets = [teacher(x) for x, _ in scoring]
    losses, images = {}, 0
    for done, index in enumerate(cluster.share(len(plans))):
        model = rewrite(plans[index]).to(device)
        recalibrate_batch_norm(model, calibration, batches=len(calibration))
        model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for (x, y), target in zip(scoring, targets):
                loss = distillation_loss(model(x), target, y, temperature=config.distill.temperature,
                                         weight=config.distill.weight)
                total, count = total + float(loss) * len(y), count + len(y)
        losses[index] = total / max(count, 1)
        images += sum(len(y) for _, y in calibration) + count
        if reporter is not None and (done + 1) % 20 == 0:
            reporter.line(f"probes: {(done + 1) * cluster.world_size}/{len(plans)} measured")
    for share in cluster.gather(losses):  # every process's measurements (this one's alone without others)
        losses.update(share)
    images = int(cluster.sum([images])[0])
    return ProbeResult(losses=[losses[index] for index in range(len(plans))], images=images,
                       seconds=time.perf_counter() - started)


def _fixed_batches(data, seed: int, calibration: int, scoring: int) -> tuple[list, list]:
    """The first batches of a seeded pass over the training split; a split too small for both sets shares its
    batches between them (in proportion, at least one each)."""
    batches = first_batches(data, seed, PROBE_PHASE, calibration + scoring)
    if len(batches) < 2:
        return batches, batches
    cut = min(max(1, round(len(batches) * calibration / (calibration + scoring))), len(batches) - 1)
    return batches[:cut], batches[cut:]

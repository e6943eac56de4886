"""`gensynth`: a generator-inquisitor loop in the spirit of Generative Synthesis (the survey's §2.4,
../shared/papers/survey-*). The original is closed and learns a generator network; this is not it. What it
keeps is the loop the survey describes: probe the current network, synthesise a more compact one under the
targets and the operational requirements, inherit its weights, train it briefly, repeat until the targets
hold; and the survey's accuracy tolerance.

1. Inquisitor: every channel's importance, the first-order loss change when it goes, |Σ activation ×
   gradient| of its gate (kernels/channel_mask.py), gathered over the training batches since the last stage
   (`inquire_on="training"`, the default), or probed before every stage on `held_out` samples of the
   training split that the search never trains on (`"held-out"`, cascomp.train.held_out; on the converged
   ResNet-20 at a third of the FLOPs it gave 92.64 % against 92.78 % from the training batches, one seed:
   2048 samples are fewer than the ~4,700 a stage trains on).
2. Generator: `iterations` stages spaced over the first 60 % of the search; stage k removes the channels of
   least importance per unit of cost (the cost model's derivative at the current architecture, so a channel
   counts its alive neighbours) until the cost is at 1 - k/K of the way from the baseline to the target.
   Each architecture is a subset of the one before (the loop shrinks monotonically), a group keeps its
   minimum width unless its residual branch may go, and the weights are inherited: the search keeps
   training the same network under the new mask, which is the brief fine-tuning between stages.
3. Accuracy tolerance (`--target drop=D`, top-1 points): the loop looks for the most compact network whose
   top-1 on the validation split stays within D points of the baseline's (the survey's criterion; the
   held-out training samples cannot judge it: the baseline trained on them). Cost targets, when given, are
   upper bounds: the first half of the stages reach them as above, the others cut a further `step` of the
   cost each; with none, every stage cuts `step` of the FLOPs. Before each stage the architecture the stage
   before made is scored, after its brief training (the last one at 80 % of the search); the first that
   misses the tolerance (among those within the cost targets) ends the loop, and the search goes back to
   the last architecture that held it (with a tolerance alone, at worst the baseline's) and trains that one.
   Its cost is what the core projects onto (`projection_goals`), so the export is that architecture under
   the channel multiples. The final top-1 is measured on the same split after fine-tuning: it was used to
   choose, so hold out a test set of your own for an unbiased figure.
4. Without a tolerance, the exported architecture is the last stage's, projected by the core onto the budget
   under its channel multiples (`round_to`), within 1 % below every target; fine-tuning starts from the
   search's weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from cascomp.config import check_choice, check_share, option
from cascomp.errors import ConfigError
from cascomp.kernels.channel_mask import ChannelMask
from cascomp.methods.base import Decision, Method
from cascomp.methods.sparsity import alive_keep, below_cut, per_group, ranked_without_dead
from cascomp.passes import InsertChannelGatesPass
from cascomp.passes.insert_channel_gates import GATES

SHRINKING = 0.6  # the share of the search over which the stages are spaced; the rest trains the last one
LAST_CHECK = 0.8  # with a tolerance: where the last stage's architecture is checked
# the loop's state, in the model's buffers so that a resumed search goes on from its checkpoint's
STAGE = "cascomp_gensynth_stage"  # stages generated so far
STOPPED = "cascomp_gensynth_stopped"  # 1 once the tolerance ended the loop
HELD = "cascomp_gensynth_held"  # the last architecture that held the tolerance (its keep mask); HELD_STAGE: its stage
HELD_STAGE = "cascomp_gensynth_held_stage"  # -1: none yet
IMPORTANCE = "cascomp_gensynth_importance"  # the last inquiry's channel importance (the decision's tie-break)
LOG = "cascomp_gensynth_log"  # one row per inquiry: COLUMNS, NaN until made
COLUMNS = ("stage", "flops", "params", "held_out_top1", "images", "seconds", "val_top1")


@dataclass(frozen=True, kw_only=True)
class GenSynthConfig:
    """GenSynth: how many generator stages, the held-out samples the inquisitor probes, how far a stage
    beyond the cost targets cuts (with `--target drop`), and where fine-tuning starts."""

    accuracy_tolerance: ClassVar[bool] = True  # understands --target drop=...
    iterations: int = option(8, "--stages", "gensynth: generator stages, each a more compact network (default 8)")
    inquire_on: str = option("training", "--inquire-on", "gensynth: where the inquisitor measures importance: "
                             "'training' (default; the search's own batches since the last stage) or 'held-out' "
                             "(--held-out samples the search does not train on)", choices=("training", "held-out"))
    held_out: int = option(2048, "--held-out", "gensynth with --inquire-on held-out: training samples held out "
                           "for the inquisitor (default 2048; at most a fifth of the split)")
    step: float = option(0.2, "--stage-step", "gensynth with --target drop: the share of the cost each stage "
                         "beyond the budgets cuts (default 0.2)")
    weights: str = "search"
    search_share: float = 0.5  # of a total --epochs budget, the share spent searching (rounded down)

    def __post_init__(self) -> None:
        for name in ("iterations", "held_out"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"GenSynthConfig.{name} must be a whole number >= 1, got {value!r}")
        if not 0 < self.step < 1:
            raise ConfigError(f"GenSynthConfig.step is the share of the cost a stage cuts, in (0, 1); got {self.step!r}")
        check_choice(self, "weights", ("search", "baseline"))
        check_choice(self, "inquire_on", ("training", "held-out"))
        check_share(self, "search_share")


class GenSynth(Method):
    title = "GenSynth-style loop"
    config_type = GenSynthConfig
    searches = True

    def __init__(self, graph, config, goals=None, drop: float | None = None) -> None:
        super().__init__(graph, config, goals)
        self.keeps_search_weights = config.weights == "search"
        self.held_out = config.held_out if config.inquire_on == "held-out" else 0
        self.drop = drop  # the accuracy tolerance in top-1 points, or None
        self.validates = drop is not None
        self.mask = ChannelMask(graph.channels)
        self.inquire = self.validate = None
        self.model = None
        self.history: list[dict[str, float]] = []  # the cost after every stage generated in this process

    def prepare(self):
        self.model = InsertChannelGatesPass(self.graph.record, self.graph.slot_of_label, self.mask)(self.graph.gm).gm
        rows = self.config.iterations + 2
        for name, value in ((STAGE, torch.zeros((), dtype=torch.long)), (STOPPED, torch.zeros((), dtype=torch.long)),
                            (HELD, torch.ones(self.graph.channels)),
                            # with a tolerance alone, the baseline's architecture holds it; under a budget, none yet
                            (HELD_STAGE, torch.full((), 0 if self.drop is not None and not self.goals else -1,
                                                    dtype=torch.long)),
                            (IMPORTANCE, torch.zeros(self.graph.channels, dtype=torch.float64)),
                            (LOG, torch.full((rows, len(COLUMNS)), math.nan, dtype=torch.float64))):
            self.model.register_buffer(name, value)
        return self.model

    def use_held_out(self, inquire, validate) -> None:
        self.inquire, self.validate = inquire, validate
        self.mask.measuring = inquire is None  # with held-out samples, importance from their inquiries only

    def penalty(self) -> dict[str, torch.Tensor]:  # what the progress line shows: the current architecture's cost
        return self.expected_ratios(self.mask.keep.detach().double())

    def on_step(self, progress: float) -> None:  # cases 1-3
        iterations = self.config.iterations
        ticks = min(iterations, math.floor(progress / SHRINKING * iterations + 1e-9))
        if self.drop is not None and progress >= LAST_CHECK - 1e-9:
            ticks = iterations + 1  # the last stage's check
        done = getattr(self.model, STAGE)
        if self.inquire is None and self.validate is None:  # importance from training, no tolerance to check
            while int(done) < min(ticks, iterations):
                done += 1
                self.generate(self._stage_goals(int(done)))
            return
        if self._inquiries() == 0:
            self._inquiry()  # the baseline, before any stage
        while self._inquiries() <= ticks and not int(getattr(self.model, STOPPED)):
            top1 = self._inquiry()  # the architecture of the stage before, after its brief training
            if self.drop is not None and int(done) > 0:
                self._check(top1)
            if int(done) < iterations and not int(getattr(self.model, STOPPED)):
                done += 1
                self.generate(self._stage_goals(int(done)))

    def _inquiries(self) -> int:
        return int(torch.isnan(getattr(self.model, LOG)[:, 0]).logical_not().sum())

    def _stage_goals(self, stage: int) -> dict[str, float]:
        iterations = self.config.iterations
        if self.drop is None:
            return {m: 1 - (1 - goal) * stage / iterations for m, goal in self.goals.items()}
        if not self.goals:  # a tolerance alone: every stage cuts `step` of the FLOPs
            return {"flops": (1 - self.config.step) ** stage}
        reach = math.ceil(iterations / 2)  # the stages that reach the budgets; the later ones go beyond them
        if stage <= reach:
            return {m: 1 - (1 - goal) * stage / reach for m, goal in self.goals.items()}
        return {m: goal * (1 - self.config.step) ** (stage - reach) for m, goal in self.goals.items()}

    def _inquiry(self):
        """Take the importance for the next stage — probed on the held-out samples, or gathered by the
        training steps since the last stage — and, with a tolerance, the network's top-1 on the validation
        split; log both."""
        gathered = self.mask.take_importance()  # since the last inquiry, by the training steps
        inquiry = None
        if self.inquire is not None:
            self.mask.measuring = True
            try:
                inquiry = self.inquire()
            finally:
                self.mask.measuring = False
            gathered = self.mask.take_importance()
        getattr(self.model, IMPORTANCE).copy_(gathered.to(torch.float64))
        log, row = getattr(self.model, LOG), self._inquiries()
        ratios = self._ratios(self.mask.keep)
        val = self.validate() if self.drop is not None else math.nan
        probe = (inquiry.top1, inquiry.images, inquiry.seconds) if inquiry is not None else (math.nan, 0, 0.0)
        log[row] = torch.tensor([float(getattr(self.model, STAGE)), ratios["flops"], ratios["params"], *probe, val],
                                dtype=torch.float64)
        return val

    def _check(self, top1: float) -> None:
        """With a tolerance: does the architecture the last stage made hold it (`top1` on the validation
        split)? The first that misses it within the cost targets ends the loop, back at the last one that held."""
        keep = self.mask.keep
        if not all(self._ratios(keep)[m] <= goal + 1e-9 for m, goal in self.goals.items()):
            return  # the budgets are upper bounds: the tolerance counts once they hold
        baseline = float(getattr(self.model, LOG)[0, COLUMNS.index("val_top1")])
        if 100 * (baseline - top1) <= self.drop + 1e-9:
            getattr(self.model, HELD).copy_(keep)
            getattr(self.model, HELD_STAGE).fill_(int(getattr(self.model, STAGE)))
            return
        getattr(self.model, STOPPED).fill_(1)
        if int(getattr(self.model, HELD_STAGE)) >= 0:
            with torch.no_grad():
                keep.copy_(getattr(self.model, HELD))

    def _ratios(self, keep: torch.Tensor) -> dict[str, float]:
        return {m: float(r) for m, r in self.expected_ratios(keep.detach().cpu().double()).items()}

    def generate(self, goals: dict[str, float]) -> None:
        """One generator stage: drop the least important channels per unit of cost until `goals` hold."""
        driven = self.inquire is None and self.validate is None  # no inquiries: what training gathered
        importance = self.mask.take_importance() if driven else getattr(self.model, IMPORTANCE).cpu()
        keep = self.mask.keep.detach().cpu().double()
        alive = keep > 0
        with torch.enable_grad():
            point = alive_keep(self.graph, alive, importance).requires_grad_(True)
            ratios = self.expected_ratios(point)
            (cost,) = torch.autograd.grad(sum(ratios[m] for m in goals if m in ratios), point)
        value = importance / importance[alive].mean().clamp_min(1e-30) / cost.clamp_min(1e-12)
        value = torch.where(alive, value, torch.full_like(value, -1.0))  # the dead stay dead
        cut = below_cut(self.graph, self.expected_ratios, value, goals)
        kept = alive & ~cut
        with torch.no_grad():
            self.mask.keep.copy_((alive_keep(self.graph, kept, value) > 0).to(self.mask.keep.dtype))
        self.history.append(self._ratios(self.mask.keep))

    def projection_goals(self, goals: dict[str, float]) -> dict[str, float]:
        """With a tolerance: the cost of the architecture the loop settled on (within every budget)."""
        if self.drop is None:
            return goals
        settled = self._ratios(self.model.get_submodule(GATES).keep if self.model is not None else self.mask.keep)
        return {m: settled[m] + 1e-9 for m in (goals or {"flops": 1.0})}

    def decide(self, model) -> Decision:  # case 4
        gates = model.get_submodule(GATES)
        # the last inquiry's importance and what the training steps gathered since (either may be zero)
        importance = (getattr(model, IMPORTANCE) + gates.importance).detach().cpu()
        alive = gates.keep.detach().cpu() > 0
        scores = alive.double() + 1e-6 * importance / importance.max().clamp_min(1e-30)
        return Decision(scores=per_group(self.graph, scores), family=ranked_without_dead(self.graph, scores, alive))

    def summary(self) -> dict:
        """The inquiries (cost of the architecture probed, its held-out top-1) and, with a tolerance, where
        the loop settled."""
        if self.model is None:
            return {}
        log = getattr(self.model, LOG).cpu()
        rows = [dict(zip(COLUMNS, (float(v) for v in row))) for row in log if not math.isnan(float(row[0]))]
        for row in rows:
            row["stage"], row["images"] = int(row["stage"]), int(row["images"])
        summary = {"inquire_on": self.config.inquire_on, "held_out_samples": rows[0]["images"] if rows else 0,
                   "inquiries": rows,
                   "inquiry_images": sum(r["images"] for r in rows),
                   "inquiry_seconds": round(sum(r["seconds"] for r in rows), 3)}
        if self.drop is not None and rows:
            stage = int(getattr(self.model, HELD_STAGE))
            baseline = rows[0]["val_top1"]
            held = [r for r in rows if r["stage"] == stage and r is not rows[0]] if stage > 0 else rows[:1]
            summary["tolerance"] = {
                "drop": self.drop, "held": stage >= 0, "stage": stage, "stopped": bool(int(getattr(self.model, STOPPED))),
                "baseline_val_top1": baseline,
                "val_drop": 100 * (baseline - held[-1]["val_top1"]) if stage >= 0 and held else None}
        return summary

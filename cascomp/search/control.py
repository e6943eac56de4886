"""Budget control during search: λ is set every step from the gap between expected cost and target.

The target is annealed from the starting expected cost to the budget over the first `RAMP` of the search
(channels go gradually), then held. Each step the controller asks for a decrease d of the expected cost
ratio r: the scheduled decrease of this step (feed-forward, so tracking the annealed target needs no
integral build-up that would overshoot the budget when the annealing ends) plus a proportional-integral law
on the gap to the next step's scheduled target g:
    d = (g_now - g) + gain_proportional * (r - g) + I,   I += gain_integral * (r - g)   (d clipped at 0)
and converts it into a penalty weight with the first-order effect of the penalty step, which the driver
takes directly (outside the optimiser's momentum): a step along the penalty gradient lowers r by
lr * λ * |∂r/∂θ|², so
    λ = d / (lr * |∂r/∂θ|²).
The proportional part does the tracking; the integral part absorbs the steady push of the task loss (which
wants channels back). No hand sweep of λ: the budget itself sets it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

RAMP = 0.6  # fraction of the search over which the target is annealed to the budget
INTEGRAL_LIMIT = 0.01  # most of a step's asked decrease that the integral term may hold (anti-windup)


@dataclass
class PenaltyController:
    gain_proportional: float = 0.3
    gain_integral: float = 0.02
    integral: float = 0.0
    last_weight: float = 0.0

    def weight(self, expected: float, goal: float, lr: float, squared_gradient: float,
               scheduled_decrease: float = 0.0) -> float:
        """λ for this step; also updates the integral term."""
        gap = expected - goal
        self.integral = max(-INTEGRAL_LIMIT, min(INTEGRAL_LIMIT, self.integral + self.gain_integral * gap))
        decrease = max(0.0, scheduled_decrease + self.gain_proportional * gap + self.integral)
        self.last_weight = decrease / (lr * squared_gradient) if squared_gradient > 0 else 0.0
        return self.last_weight

    def state_dict(self) -> dict:
        return {"integral": self.integral, "last_weight": self.last_weight}

    def load_state_dict(self, state: dict) -> None:
        self.integral = float(state["integral"])
        self.last_weight = float(state["last_weight"])


def scheduled_target(start: float, target: float, progress: float, ramp: float = RAMP) -> float:
    """Target at `progress` (0..1 of the search): linear from `start` to `target`, then held."""
    if start <= target:
        return target
    fraction = min(1.0, progress / ramp) if ramp > 0 else 1.0
    return start + (target - start) * fraction


@dataclass
class StrengthController:
    """The strength λ of a method's sparsifying regulariser (group lasso, variational dropout's KL, MorphNet's
    cost-weighted ℓ1), set every step from the cost of the architecture the method would export now.

    That cost falls only when channels die, long after λ has risen, so λ is integral-controlled in log space:
        log λ += rate * clip((r - g) / g, -1, 1)
    with r the measured cost ratio and g the scheduled target (annealed like the penalty's, see
    `scheduled_target`): λ grows geometrically while the network is above the schedule and shrinks while it
    is below, so no hand sweep of λ is needed. Bounded to [start * 1e-3, start * 1e4]: a run that cannot
    make channels die (or one that has too many dead) does not drive λ to over- or underflow."""

    start: float = 1.0
    rate: float = 0.05
    strength: float = 0.0

    def __post_init__(self) -> None:
        if not self.strength:
            self.strength = self.start

    def update(self, measured: dict[str, float], goals: dict[str, float]) -> float:
        """λ for this step, from the measured cost ratio and this step's scheduled target per metric (the
        metric furthest above its target decides)."""
        gaps = [(measured[m] - goals[m]) / max(goals[m], 1e-9) for m in goals if m in measured]
        if gaps:
            gap = max(-1.0, min(1.0, max(gaps)))
            self.strength = min(self.start * 1e4, max(self.start * 1e-3, self.strength * math.exp(self.rate * gap)))
        return self.strength

    def state_dict(self) -> dict:
        return {"strength": self.strength}

    def load_state_dict(self, state: dict) -> None:
        self.strength = float(state["strength"])

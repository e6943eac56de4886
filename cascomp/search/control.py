"""Budget control during search: λ follows the gap between expected cost and target, no hand sweep.

Each target has its own λ, a proportional-integral controller in log space:
    e = (expected ratio - scheduled target) / target
    log λ_I += gain_integral * e          (every step)
    λ = exp(log λ_I + gain_proportional * e)
A constant gap makes λ grow (or shrink) geometrically until the expected cost follows the target; the
proportional part damps the oscillation a pure integral controller would have, because the expected cost
itself integrates λ through the optimiser. The target is annealed from the starting expected cost to the
budget over the first `ramp` fraction of the search, so channels are removed gradually.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

RAMP = 0.6  # fraction of the search over which the target is annealed to the budget


@dataclass
class PenaltyController:
    target: float
    log_integral: float = 0.0
    gain_integral: float = 0.05
    gain_proportional: float = 2.0
    error: float = 0.0

    def weight(self) -> float:
        return math.exp(self.log_integral + self.gain_proportional * self.error)

    def update(self, expected: float, goal: float) -> None:
        self.error = max(-5.0, min(5.0, (expected - goal) / self.target))
        self.log_integral = max(-20.0, min(20.0, self.log_integral + self.gain_integral * self.error))

    def state_dict(self) -> dict:
        return {"log_integral": self.log_integral, "error": self.error}

    def load_state_dict(self, state: dict) -> None:
        self.log_integral = float(state["log_integral"])
        self.error = float(state["error"])


def scheduled_target(start: float, target: float, progress: float, ramp: float = RAMP) -> float:
    """Target at `progress` (0..1 of the search): linear from `start` to `target`, then held."""
    if start <= target:
        return target
    fraction = min(1.0, progress / ramp) if ramp > 0 else 1.0
    return start + (target - start) * fraction

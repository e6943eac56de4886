"""`uniform`: the same keep fraction in every group, solved to hit the target; within a group the channels
with the largest filter norms stay. A reference floor every searched method must beat."""

from __future__ import annotations

from dataclasses import dataclass

from cascomp.methods.base import Decision, Method
from cascomp.methods.scores import filter_norms, normalised
from cascomp.methods.families import uniform_family


@dataclass(frozen=True, kw_only=True)
class UniformConfig:
    """Uniform: the same keep ratio in every group; channels chosen by filter norm within a group."""


class Uniform(Method):
    config_type = UniformConfig
    def decide(self, model) -> Decision:
        return Decision(scores=normalised(filter_norms(self.graph, model)), family=uniform_family(self.graph))

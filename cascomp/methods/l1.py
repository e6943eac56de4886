"""`l1`: one-shot filter-norm pruning ranked across groups (Li et al.'s criterion, global). Each channel's
L1 filter norm is divided by its group's mean so layers of different scales compete fairly; the lowest go
first until the target holds. A reference floor every searched method must beat."""

from __future__ import annotations

from dataclasses import dataclass

from cascomp.methods.base import Decision, Method
from cascomp.methods.scores import filter_norms, normalised
from cascomp.methods.families import ranked_family


@dataclass(frozen=True, kw_only=True)
class L1Config:
    """L1: filter-norm ranking of all channels across groups, each norm divided by its group's mean."""


class L1(Method):
    config_type = L1Config
    def decide(self, model) -> Decision:
        scores = normalised(filter_norms(self.graph, model))
        return Decision(scores=scores, family=ranked_family(self.graph, scores))

"""`l1`: one-shot filter-norm pruning ranked across groups (Li et al.'s criterion, global). Each channel's
L1 filter norm is divided by its group's mean so layers of different scales compete fairly; the lowest go
first until the target holds. A reference floor every searched method must beat."""

from __future__ import annotations

from cascomp.methods.base import Decision, Method
from cascomp.methods.scores import filter_norms, normalised
from cascomp.methods.families import ranked_family


class L1(Method):
    def decide(self, model) -> Decision:
        scores = normalised(filter_norms(self.graph, model))
        return Decision(scores=scores, family=ranked_family(self.graph, scores))

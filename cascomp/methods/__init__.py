"""Compression methods, one file each, in one explicit table (adding a method is one file and one line)."""

from cascomp.methods.base import Decision, Method
from cascomp.methods.figs import Figs
from cascomp.methods.l1 import L1
from cascomp.methods.sensitivity import Sensitivity
from cascomp.methods.uniform import Uniform

METHODS: dict[str, type[Method]] = {"figs": Figs, "l1": L1, "uniform": Uniform, "sensitivity": Sensitivity}

__all__ = ["METHODS", "Decision", "Method"]

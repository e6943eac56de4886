"""cascomp: graph-level model compression compiler for PyTorch."""

from cascomp.api import apply_plan, mask_model, trace
from cascomp.errors import CascompError, ConfigError, ExportError, PlanError, TraceError
from cascomp.export import export_onnx, profile
from cascomp.ir.cost import Cost
from cascomp.ir.graph import Constraints, Graph
from cascomp.ir.groups import ChannelGroup, FrozenChannels, GroupMember
from cascomp.ir.plan import Plan

__version__ = "0.1.0"

__all__ = [
    "CascompError", "ChannelGroup", "ConfigError", "Constraints", "Cost", "ExportError", "FrozenChannels", "Graph",
    "GroupMember", "Plan", "PlanError", "TraceError", "apply_plan", "export_onnx", "mask_model", "profile", "trace",
]

"""cascomp: graph-level model compression compiler for PyTorch."""

from cascomp.api import (CompareResult, CompressResult, apply_plan, compare, compress, mask_model,
                         substitute_operators, trace)
from cascomp.config import CompressConfig, DistillConfig, Target
from cascomp.data import DataBundle, load_data
from cascomp.errors import (CascompError, ConfigError, DataError, ExportError, PlanError, SearchError,
                            TraceError)
from cascomp.export import export_onnx, profile
from cascomp.ir.cost import Cost
from cascomp.ir.graph import Constraints, Graph
from cascomp.ir.groups import ChannelGroup, FrozenChannels, GroupMember
from cascomp.ir.plan import Plan
from cascomp.methods import METHODS, FigsConfig, L1Config, SensitivityConfig, TasConfig, UniformConfig

__version__ = "0.1.0"

__all__ = [
    "METHODS", "CascompError", "ChannelGroup", "CompareResult", "CompressConfig", "CompressResult", "ConfigError",
    "Constraints", "Cost", "DataBundle", "DataError", "DistillConfig", "ExportError", "FigsConfig",
    "FrozenChannels", "Graph", "GroupMember", "L1Config", "Plan", "PlanError", "SearchError",
    "SensitivityConfig", "Target", "TasConfig", "TraceError", "UniformConfig", "apply_plan", "compare", "compress",
    "export_onnx", "load_data", "mask_model", "profile", "substitute_operators", "trace",
]

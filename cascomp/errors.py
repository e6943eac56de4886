"""The one error hierarchy of cascomp.

Every message says what went wrong, where (node, module path, the user's source line when known) and what
to do about it. The CLI prints a CascompError as one line on stderr and exits non-zero.
"""

from __future__ import annotations


class CascompError(Exception):
    """Base class of every error cascomp raises on purpose."""


class ConfigError(CascompError):
    """A configuration, plan or command-line value is invalid."""


class TraceError(CascompError):
    """The model could not be traced or shape-propagated."""


class AnalysisError(CascompError):
    """Channel dependency analysis could not make sense of the graph."""


class PlanError(CascompError):
    """A plan does not fit the graph it is applied to."""


class PassError(CascompError):
    """A graph pass failed or produced an invalid graph."""


class ExportError(CascompError):
    """ONNX export, checking or the onnxruntime comparison failed."""


class ModelLoadError(CascompError):
    """A model file or factory could not be loaded."""


class ProfileError(CascompError):
    """onnxruntime could not run or time a model as asked (provider missing, inputs it cannot build)."""


class DataError(CascompError):
    """A dataset spec, file or factory could not be read as asked."""


class SearchError(CascompError):
    """The search or fine-tuning could not run as configured (unreachable target, diverged training)."""

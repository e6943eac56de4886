"""The one error hierarchy of cascomp.

Every message says what went wrong, where (node, module path, the user's source line when known) and what
to do about it. The CLI prints a CascompError as one line on stderr and exits non-zero.
"""

from __future__ import annotations

import errno


class CascompWarning(UserWarning):
    """Something the user should know that does not stop the work (the CLI prints it as `cascomp: warning:`)."""


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


_USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EROFS, errno.ENOSPC,
                errno.EDQUOT, errno.ENAMETOOLONG, errno.EEXIST, errno.ENOTEMPTY}
_OUT_OF_MEMORY = ("out of memory", "can't allocate memory", "not enough memory", "failed to allocate memory",
                  "bad_alloc", "bad allocation")


def is_out_of_memory(error: BaseException) -> bool:
    """An allocation failure, as torch (RuntimeError), numpy (MemoryError) or onnxruntime report it."""
    return isinstance(error, MemoryError) or any(text in str(error).lower() for text in _OUT_OF_MEMORY)


def as_user_error(error: BaseException) -> CascompError | None:
    """The user's mistake behind an exception cascomp did not raise on purpose, or None for a bug.

    The two classes that are the user's wherever they surface: the operating system refusing a path the user
    gave (permissions, a missing folder, a file where a folder should be, a full or read-only disk), and
    running out of memory on sizes the user gave (batch sizes, input shapes, data)."""
    if isinstance(error, OSError) and error.errno in _USER_ERRNOS:
        where = f" {error.filename!r}" if error.filename else ""
        return ConfigError(f"cannot use{where}: {error.strerror or error}; check the path, its folder and their "
                           "permissions, or the free disk space")
    if isinstance(error, (MemoryError, RuntimeError)) and is_out_of_memory(error):
        return ConfigError("ran out of memory: the batch size, input shape or data asked for more than this "
                           "machine has; lower --batch-size, --batch-sizes or --input-shape")
    return None

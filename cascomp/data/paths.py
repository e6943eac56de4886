"""Why a path the user named cannot be read, phrased for the one-line DataError messages."""

from __future__ import annotations

from pathlib import Path


def missing_reason(path: Path, *, directory: bool) -> str | None:
    """Why `path` is not an existing directory (directory=True) or file, or None when it is one."""
    if not path.exists():
        return "does not exist"
    if directory and not path.is_dir():
        return "is a file, not a directory"
    if not directory and not path.is_file():
        return "is a directory, not a file"
    return None

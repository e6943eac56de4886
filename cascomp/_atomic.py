"""Output files of the command line: checked before any work is done, and written whole or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cascomp.errors import ConfigError


def check_output_path(path: str | os.PathLike, *, force: bool) -> Path:
    """Refuse an output path that cannot be written, or that exists without `force`."""
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"cannot write {str(target)!r}: it is a directory; give a file name")
    if not target.parent.is_dir():
        raise ConfigError(f"cannot write {str(target)!r}: directory {str(target.parent)!r} does not exist; create "
                          "it first or choose another path")
    if target.exists() and not force:
        raise ConfigError(f"{str(target)!r} already exists; pass --force to overwrite it, or choose another path")
    return target


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, force: bool) -> Iterator[str]:
    """Yield a temporary path beside `path`; it replaces `path` only when the block succeeds, so a failure
    or Ctrl-C never leaves a half-written file."""
    target = check_output_path(path, force=force)
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as error:
        raise ConfigError(f"cannot write {str(target)!r}: {error.strerror or error}") from error
    os.close(handle)
    try:
        yield temporary
        os.chmod(temporary, 0o644)  # mkstemp makes it private; an output is as readable as any other file
        os.replace(temporary, target)
    except OSError as error:  # a full disk or a read-only directory is the user's to fix, not a bug
        raise ConfigError(f"cannot write {str(target)!r}: {error.strerror or error}") from error
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)

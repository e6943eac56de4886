"""Output files: checked before any work is done, and written whole or not at all.

Every file cascomp writes goes through here (`atomic_output`, or `temporary_beside` + `publish` where the
writer tries more than once), so every output gets the same guarantees:
  1. the path is checked up front: its folder exists and is a folder, the file exists only with force, and
     the operating system lets us create a file there (a probe, so /proc or a read-only disk fails before
     a long run, not after it);
  2. the data goes to a temporary file beside the target and replaces it with os.replace only when complete;
  3. the result has the mode of any new file (0o666 less the umask), not mkstemp's private 0o600;
  4. the operating system refusing the user's path (permissions, a full disk, a file where a folder should
     be) is a ConfigError naming the path and the reason, never an internal error.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cascomp.errors import ConfigError


def check_output_path(path: str | os.PathLike, *, force: bool) -> Path:
    """Refuse an output path that cannot be written, or that exists without `force` (case 1)."""
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"cannot write {str(target)!r}: it is a directory; give a file name")
    if not target.parent.exists():
        raise ConfigError(f"cannot write {str(target)!r}: directory {str(target.parent)!r} does not exist; create "
                          "it first or choose another path")
    if not target.parent.is_dir():
        raise ConfigError(f"cannot write {str(target)!r}: {str(target.parent)!r} is a file, not a directory; "
                          "choose another path")
    if target.exists() and not force:
        raise ConfigError(f"{str(target)!r} already exists; pass --force to overwrite it, or choose another path")
    with temporary_beside(target):
        pass
    return target


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, force: bool) -> Iterator[str]:
    """Yield a temporary path beside `path`; it replaces `path` only when the block succeeds, so a failure
    or Ctrl-C never leaves a half-written file."""
    target = check_output_path(path, force=force)
    with temporary_beside(target) as temporary:
        try:
            yield temporary
        except OSError as error:  # a full disk while writing is the user's to fix, not a bug
            raise cannot_write(target, error) from error
        publish(temporary, target)


@contextlib.contextmanager
def temporary_beside(target: Path) -> Iterator[str]:
    """A new empty file in `target`'s folder, so that os.replace onto `target` is atomic (case 2); removed
    on exit unless `publish` moved it."""
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as error:
        raise cannot_write(target, error) from error
    os.close(handle)
    try:
        yield temporary
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)


def publish(temporary: str, target: Path) -> None:
    """Move a complete temporary file onto `target` with the mode of any new file (case 3)."""
    try:
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, target)
    except OSError as error:
        raise cannot_write(target, error) from error


def cannot_write(target: Path, error: OSError) -> ConfigError:
    """Case 4: the operating system's reason, on the path the user gave."""
    return ConfigError(f"cannot write {str(target)!r}: {error.strerror or error}; check the path and the "
                       "permissions and free space of its folder, or choose another path")


def _umask() -> int:
    # Python has no way to read the umask without setting it; the two calls are back to back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask

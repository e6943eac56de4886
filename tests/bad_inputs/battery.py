"""The bad-input battery: each case is a command line a user might type, run in-process through
`cascomp.cli.main` in a fresh copy of a workspace of input files, and held to the same rules:

1. the exit status is the one declared (2 for a user mistake, never 1 "internal error");
2. stderr has exactly one error line (`cascomp: error:`, or `cascomp COMMAND: error:` for a usage error)
   for a failure, and it names the problem; a success says `says` on stdout or stderr; nothing on stderr is
   a traceback or an "internal error";
3. no file that existed before the run changed (sha256 before and after), except those the case declares;
4. a failed run leaves nothing behind: no new file or folder (a half-written output would pass for a
   complete one), and no temporary file anywhere.

The case tables live in the test modules beside this one (test_compress.py, test_export_profile.py, ...).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from cascomp.cli import main
from tests.search_fixtures import TinyNet, quadrant_task

ERROR_LINE = re.compile(r"cascomp( [a-z-]+)?: error: ")
WARNING = "cascomp: warning:"


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]  # "{dir}" stands for the case's own folder (also the working directory)
    says: str  # what the error line (or, for status 0, the output) must contain; "{dir}" as in argv
    status: int = 2
    setup: Callable[[Path], None] | None = None  # makes the case's extra input files in its folder
    changes: tuple[str, ...] = ()  # files (relative to the folder) the run may change
    leaves: tuple[str, ...] = ()  # new files or folders a failed run may leave (e.g. a kept run folder)
    cwd: str = "."  # working directory, relative to the folder


def make_workspace(directory: Path) -> Path:
    """The inputs every case starts from: a pickled model, its state dict, a .pt2, and a small data set.

    tiny.pt: tests.search_fixtures.TinyNet (1x8x8 inputs, 4 classes); data.npz: 128 labelled samples."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = TinyNet().eval()
    torch.save(model, directory / "tiny.pt")
    torch.save(model.state_dict(), directory / "weights.pt")
    batch = torch.export.Dim("batch")
    example = torch.randn(2, 1, 8, 8)
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: batch},)), directory / "tiny.pt2")
    quadrant_task(directory / "data.npz", samples=128)
    return directory


def fingerprint(directory: Path) -> dict[str, str]:
    """relative path -> sha256 of every file (a folder maps to "dir")."""
    prints = {}
    for path in sorted(directory.rglob("*")):
        key = str(path.relative_to(directory))
        prints[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return prints


def run_case(case: Case, workspace: Path, directory: Path, capsys, monkeypatch) -> str:
    """Run `case` in a copy of `workspace` at `directory`; check rules 1-4; return stderr."""
    shutil.copytree(workspace, directory)
    if case.setup is not None:
        case.setup(directory)
    before = fingerprint(directory)
    monkeypatch.chdir(directory / case.cwd)
    monkeypatch.setattr(sys, "path", list(sys.path))  # main() may add the working directory
    monkeypatch.delenv("CASCOMP_DEBUG", raising=False)
    capsys.readouterr()
    status = main([argument.replace("{dir}", str(directory)) for argument in case.argv])
    captured = capsys.readouterr()
    err = captured.err
    after = fingerprint(directory)

    assert status == case.status, f"exit {status}, expected {case.status}; stderr:\n{err}"
    assert "Traceback" not in err and "internal error" not in err, err
    errors = [line for line in err.splitlines() if ERROR_LINE.match(line)]
    says = case.says.replace("{dir}", str(directory))
    if case.status == 0:
        assert errors == [] and says in captured.out + err, err
    else:
        assert len(errors) == 1 and says in errors[0], err
    changed = sorted(key for key, digest in before.items() if after.get(key) != digest)
    assert set(changed) <= set(case.changes), f"input files changed or removed: {changed}"
    temporary = [key for key in after if Path(key).name.endswith(".tmp")]
    assert temporary == [], f"temporary files left behind: {temporary}"
    if case.status != 0:
        new = sorted(key for key in after if key not in before and not _under(key, case.leaves))
        assert new == [], f"a failed run left {new}"
    return err


def _under(key: str, roots: tuple[str, ...]) -> bool:
    return any(key == root or key.startswith(root.rstrip("/") + "/") for root in roots)


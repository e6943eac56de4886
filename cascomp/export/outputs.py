"""The files of a compress run's output folder, each written whole or not at all."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
import torch.nn as nn

from cascomp.errors import ConfigError
from cascomp.export.atomic import atomic_output
from cascomp.export.onnx import OnnxExportResult
from cascomp.export.plots import plot_search, plot_widths
from cascomp.ir.plan import Plan


class Outputs:
    """The files of OUT/: model.pt (torch.save of the plain module), state_dict.pt, model.onnx, plan.json,
    widths.png, search.png and, last, report.json: a folder holding report.json holds a finished run.

    A folder holding any of them (or a checkpoint) is another run's: refused unless `force` (its outputs are
    then removed before the run starts, so an interrupted rerun never passes for the finished old one) or
    `resume` (the run is that one). `run_files`: what an unfinished run leaves in the folder (the search
    checkpoint): refused like the outputs, and removed with them under `force`."""

    FILES = ("report.json", "model.pt", "state_dict.pt", "model.onnx", "plan.json", "widths.png", "search.png")

    def __init__(self, directory: str | os.PathLike, *, force: bool = False, resume: bool = False,
                 run_files: tuple[str, ...] = ()) -> None:
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise ConfigError(f"output folder {str(self.directory)!r} is a file; choose a folder with -o")
        existing = [name for name in (*self.FILES, *run_files) if (self.directory / name).exists()]
        if existing and not (force or resume):
            raise ConfigError(f"output folder {str(self.directory)!r} already holds {', '.join(existing)} of another "
                              "run; pass force=True to replace them, resume=True to continue an interrupted run, "
                              "or choose another folder")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot create output folder {str(self.directory)!r}: {error.strerror}") from error
        if force and not resume:
            self.clear(self.directory, run_files)

    @classmethod
    def clear(cls, directory: Path, extra: tuple[str, ...] = ()) -> None:
        """Remove the outputs of a run from `directory`, report.json first, then the `extra` files."""
        for name in (*cls.FILES, *extra):
            path = Path(directory) / name
            try:
                if path.is_file() or path.is_symlink():
                    path.unlink()
            except OSError as error:
                raise ConfigError(f"cannot remove {str(path)!r} of an earlier run: {error.strerror or error}; "
                                  "remove it yourself or choose another output folder") from error

    def write(self, model: nn.Module, plan: Plan, report: dict, exported: OnnxExportResult) -> None:
        """`exported`: the model's ONNX export, already checked against torch; model.onnx is a copy of it."""
        model = model.eval()
        self._save(lambda path: torch.save(model, path), "model.pt")
        self._save(lambda path: torch.save(model.state_dict(), path), "state_dict.pt")
        self._save(lambda path: shutil.copyfile(exported.path, path), "model.onnx")
        self._save(lambda path: Path(path).write_text(plan.to_json()), "plan.json")
        self._save(lambda path: plot_widths(report, path), "widths.png")
        if report["search"]["trajectory"]:
            self._save(lambda path: plot_search(report, path), "search.png")
        self._save(lambda path: Path(path).write_text(json.dumps(report, indent=1)), "report.json")

    def _save(self, write, name: str) -> None:
        with atomic_output(self.directory / name, force=True) as temporary:
            write(temporary)

"""The output folder of `cascomp compare`: a compress run folder per method (per seed) and the table.

The rules:
  1. OUT/compare-run.json records the settings every run shares (the model weights' sha256, the data, the
     config less the method, the seeds), written before the first run; a rerun into OUT with other settings
     is refused, so every row of the table compares like with like (more methods may be added);
  2. a run folder holding report.json holds a finished run (compress writes it last), reused as it is; one
     holding a checkpoint is an interrupted run, to be resumed;
  3. a folder that holds something and no compare-run.json is not a compare's: refused unless `force`;
  4. `force` first removes the cascomp outputs of the earlier compare (the run folders' files, the table),
     and only then replaces the record, so an interrupted forced start never passes for the old compare;
     files cascomp does not write stay.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import torch
import torch.nn as nn

from cascomp.errors import ConfigError
from cascomp.export.atomic import atomic_output
from cascomp.export.comparison import FILES as TABLE_FILES
from cascomp.export.outputs import Outputs

RECORD = "compare-run.json"
RECORD_FORMAT = 1


class ComparisonFolder:
    """OUT of a compare, checked (rules 1, 3) and claimed (rule 4, then the record) on construction.
    `run_files`: what an unfinished compress run leaves in its folder (its checkpoint)."""

    def __init__(self, directory: str | os.PathLike, settings: dict, *, force: bool,
                 run_files: tuple[str, ...] = ()) -> None:
        if directory is None:
            raise ConfigError("a compare needs an output folder (out_dir=, -o OUT) for its runs and its table")
        self.directory, self.run_files = Path(directory), run_files
        if self.directory.exists() and not self.directory.is_dir():
            raise ConfigError(f"output folder {str(self.directory)!r} is a file; give a folder (-o OUT)")
        # as the record reads back: lists, string keys
        settings = json.loads(json.dumps({"format": RECORD_FORMAT, **settings}))
        if force:
            self._clear()
        else:
            self._check(settings)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot create output folder {str(self.directory)!r}: {error.strerror or error}; "
                              "choose another -o") from error
        with atomic_output(self.directory / RECORD, force=True) as temporary:
            Path(temporary).write_text(json.dumps(settings, indent=1), encoding="utf-8")

    def run_folder(self, method: str, seed: int | None) -> Path:
        """OUT/<method>/, or OUT/<method>/seed-<seed>/ when the compare repeats every method over seeds."""
        return self.directory / method if seed is None else self.directory / method / f"seed-{seed}"

    @staticmethod
    def finished_report(folder: Path) -> dict | None:
        """Rule 2: the report of the finished run in `folder`, or None."""
        path = folder / "report.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigError(f"cannot read {str(path)!r} ({error}); remove {str(folder)!r} to run that method "
                              "again, or pass --force to start the compare afresh") from error

    def _check(self, settings: dict) -> None:
        """Rules 1 and 3."""
        path = self.directory / RECORD
        if not path.is_file():
            if self.directory.is_dir() and any(self.directory.iterdir()):
                raise ConfigError(f"{str(self.directory)!r} holds files but no {RECORD}, so it is not the folder "
                                  "of a cascomp compare; choose a new or empty folder, or pass --force to use it "
                                  "(cascomp's outputs in it are replaced, other files stay)")
            return
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigError(f"cannot read {str(path)!r} ({error}); pass --force to start the compare "
                              "afresh") from error
        changed = [key for key in {**recorded, **settings} if recorded.get(key) != settings.get(key)]
        if changed:
            told = "; ".join(f"{key}: {_brief(recorded.get(key))} then, {_brief(settings.get(key))} now"
                             for key in changed[:3])
            raise ConfigError(f"{str(self.directory)!r} holds a compare with other settings ({told}); rerun it "
                              "with its own settings to continue it, pass --force to start afresh, or choose "
                              "another folder")

    def _clear(self) -> None:
        """Rule 4: the run folders' outputs, then the table, then the record."""
        if not self.directory.is_dir():
            return
        for method_folder in sorted(path for path in self.directory.iterdir() if path.is_dir()):
            for folder in (*sorted(method_folder.glob("seed-*")), method_folder):
                if folder.is_dir():
                    Outputs.clear(folder, self.run_files)
                    with contextlib.suppress(OSError):  # a folder holding other files stays
                        folder.rmdir()
        for name in (*TABLE_FILES, RECORD):
            path = self.directory / name
            try:
                path.unlink(missing_ok=True)
            except OSError as error:
                raise ConfigError(f"cannot remove {str(path)!r} of an earlier compare: {error.strerror or error}; "
                                  "remove it yourself or choose another output folder") from error


def weights_sha256(model: nn.Module) -> str:
    """A fingerprint of the model's state: every parameter's and buffer's name, dtype, shape and values."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _brief(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."

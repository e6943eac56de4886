"""Checkpoints of a compress run: one file, replaced whole at the end of every epoch, so a crash or Ctrl-C
loses at most the epoch in progress and `--resume OUT` picks up from the last finished one. Its tensors are
saved on the CPU and loaded there (the loops move them to their device), so a run trained on a GPU resumes on
any machine."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from cascomp.errors import SearchError
from cascomp.train.device import on_cpu

FILE = "checkpoint.pt"


class CheckpointStore:
    def __init__(self, directory: str | os.PathLike) -> None:
        self.path = Path(directory) / FILE

    def save(self, state: dict) -> None:
        handle, temporary = tempfile.mkstemp(prefix=f".{FILE}.", suffix=".tmp", dir=self.path.parent)
        os.close(handle)
        try:
            torch.save(on_cpu(state), temporary)
            os.replace(temporary, self.path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)

    def load(self) -> dict:
        if not self.path.is_file():
            raise SearchError(f"no checkpoint at {str(self.path)!r}; --resume needs the OUT folder of an "
                              "interrupted run (it holds checkpoint.pt)")
        try:
            return torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as error:
            raise SearchError(f"checkpoint {str(self.path)!r} cannot be read ({type(error).__name__}); "
                              "start the run again without --resume") from error

    def exists(self) -> bool:
        return self.path.is_file()

    def remove(self) -> None:
        if self.path.is_file():
            self.path.unlink()

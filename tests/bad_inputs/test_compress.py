"""The battery's compress and resume cases (see battery.py for the rules every case is held to)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn

from cascomp.cli import main
from tests.bad_inputs.battery import Case, fingerprint, run_case
from tests.search_fixtures import TinyNet

QUICK = ("--search-epochs", "0", "--finetune-epochs", "0", "--batch-size", "32")
DATA = ("--data", "tensors:{dir}/data.npz")
COMPRESS = ("compress", "{dir}/tiny.pt", *DATA, *QUICK)
HALF = ("--target", "flops=0.5")
OUTPUTS = ("report.json", "model.pt", "state_dict.pt", "model.onnx", "plan.json", "widths.png")


class TupleNet(TinyNet):
    def forward(self, x):
        return super().forward(x), x.mean()


class DictNet(TinyNet):
    def forward(self, x):
        return {"logits": super().forward(x), "x": x}


class TwoInputNet(TinyNet):
    def forward(self, x, mask):
        return super().forward(x * mask)


class ColourNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def _save(model_class, name: str = "tiny.pt"):
    return lambda folder: torch.save(model_class().eval(), folder / name)


def _finished_run(folder: Path, out: str = "out") -> None:
    """A finished compress run in folder/out."""
    assert main(["compress", str(folder / "tiny.pt"), "--data", f"tensors:{folder}/data.npz", *QUICK,
                 "-o", str(folder / out)]) == 0


def _interrupted_run(folder: Path, out: str = "run1") -> None:
    """A compress run in folder/out stopped after its last checkpoint, before its outputs were written."""
    with mock.patch("cascomp.export.outputs.Outputs.write", side_effect=KeyboardInterrupt):
        code = main(["compress", str(folder / "tiny.pt"), "--data", f"tensors:{folder}/data.npz", "--batch-size", "32",
                     "--finetune-epochs", "1", "-o", str(folder / out)])
    assert code == 130 and (folder / out / "checkpoint.pt").is_file()


def _then(*steps):
    def setup(folder: Path) -> None:
        for step in steps:
            step(folder)
    return setup


def _copy_run(folder: Path) -> None:
    shutil.copytree(folder / "run1", folder / "run1_copy")


def _edit_run_file(change):
    def setup(folder: Path) -> None:
        path = folder / "run1" / "run.json"
        run = json.loads(path.read_text())
        change(run)
        path.write_text(json.dumps(run))
    return setup


def _labels(y_train_max: int, y_val_max: int):
    def setup(folder: Path) -> None:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(64, 1, 8, 8)).astype(np.float32)
        y = np.arange(64) % 4
        y_train, y_val = y.copy(), y.copy()
        y_train[0], y_val[0] = y_train_max, y_val_max
        np.savez(folder / "data.npz", x=x, y=y_train, x_val=x, y_val=y_val)
    return setup


def _killed_early(folder: Path) -> None:
    """What a rerun killed (SIGKILL, no clean-up) before its first checkpoint leaves: its run.json alone."""
    for path in (folder / "out").iterdir():
        if path.name != "run.json":
            path.unlink()


def _mkdir(name: str):
    return lambda folder: (folder / name).mkdir()


RUN_CHANGES = tuple(f"run1/{name}" for name in ("checkpoint.pt", *OUTPUTS))
CASES = {
    # rule 2: nothing replaced without --force, the input never
    "output folder is the input model's": Case(
        ("compress", "model.pt", "--data", "tensors:data.npz", *QUICK, "-o", "."), "would write over the input",
        setup=_save(TinyNet, "model.pt")),
    "output folder is the input model's, with --force": Case(
        ("compress", "model.pt", "--data", "tensors:data.npz", *QUICK, "-o", ".", "--force"),
        "would write over the input", setup=_save(TinyNet, "model.pt")),
    "output folder holds a file compress writes": Case(
        (*COMPRESS, "-o", "{dir}/mine"), "already holds model.onnx, which compress would replace",
        setup=lambda folder: (folder / "mine").mkdir() or (folder / "mine" / "model.onnx").write_bytes(b"mine")),
    "output folder holds a finished run": Case((*COMPRESS, "-o", "{dir}/out"), "already holds a finished run",
                                               setup=_finished_run),
    "output folder holds an interrupted run": Case((*COMPRESS, "-o", "{dir}/run1"), "--resume",
                                                   setup=_interrupted_run),
    "output is a file": Case((*COMPRESS, "-o", "{dir}/data.npz"), "it is a file"),
    "output under a file": Case((*COMPRESS, "-o", "{dir}/data.npz/out"), "data.npz"),
    "output under /proc": Case((*COMPRESS, "-o", "/proc/cascomp-out"), "/proc/cascomp-out"),
    "output folder of other files": Case(("compress", "tiny.pt", "--data", "tensors:data.npz", *QUICK, "-o", "."),
                                         "wrote", status=0),
    # rule 4: a failed run takes away what it wrote
    "target below the floor": Case((*COMPRESS, "-o", "{dir}/out", "--target", "flops=0.0001"),
                                   "below this model's floor"),
    "forced rerun that fails removes the old outputs": Case(
        (*COMPRESS, "-o", "{dir}/out", "--force", "--target", "flops=0.0001"), "below this model's floor",
        setup=_finished_run, changes=tuple(f"out/{name}" for name in (*OUTPUTS, "run.json"))),
    # rule 3: resume
    "resume from another working directory": Case(("compress", "--resume", "../run1"), "wrote", status=0,
                                                  setup=_then(_interrupted_run, _mkdir("elsewhere")),
                                                  cwd="elsewhere", changes=RUN_CHANGES),
    "resume a copied run folder": Case(("compress", "--resume", "{dir}/run1_copy"), "resuming the run in",
                                       status=0, setup=_then(_interrupted_run, _copy_run),
                                       changes=tuple(name.replace("run1", "run1_copy") for name in RUN_CHANGES)),
    "resume after the model changed": Case(("compress", "--resume", "{dir}/run1"), "changed since the run started",
                                           setup=_then(_interrupted_run, _save(TupleNet))),
    "resume after the model is gone": Case(("compress", "--resume", "{dir}/run1"), "is gone",
                                           setup=_then(_interrupted_run, lambda f: (f / "tiny.pt").unlink()),
                                           changes=("tiny.pt",)),
    "resume with run.json missing a key": Case(("compress", "--resume", "{dir}/run1"), "lacks 'data'",
                                               setup=_then(_interrupted_run, _edit_run_file(lambda r: r.pop("data")))),
    "resume with run.json not json": Case(("compress", "--resume", "{dir}/run1"), "cannot read",
                                          setup=_then(_interrupted_run,
                                                      lambda f: (f / "run1" / "run.json").write_text("{"))),
    "resume with run.json of a bad config": Case(
        ("compress", "--resume", "{dir}/run1"), "config is not valid",
        setup=_then(_interrupted_run, _edit_run_file(lambda r: r["config"].update(lr=-1)))),
    "resume a run made on a device this machine lacks": Case(
        ("compress", "--resume", "{dir}/run1"), "trains on --device cuda:999, which this machine lacks (it has",
        setup=_then(_interrupted_run, _edit_run_file(lambda r: r["config"].update(device="cuda:999")))),
    "resume with a new target": Case(("compress", "--resume", "{dir}/run1", "--target", "flops=0.3"),
                                     "takes no --target", setup=_interrupted_run),
    "resume with a new seed and epochs": Case(
        ("compress", "--resume", "{dir}/run1", "--seed", "0", "--finetune-epochs", "3"),
        "takes no --finetune-epochs, --seed", setup=_interrupted_run),
    "resume with --reconstruct": Case(("compress", "--resume", "{dir}/run1", "--reconstruct"),
                                      "takes no --reconstruct", setup=_interrupted_run),
    "resume on another device, with amp": Case(("compress", "--resume", "{dir}/run1", "--device", "cpu", "--amp"),
                                               "takes no --amp, --device", setup=_interrupted_run),
    "resume with --force": Case(("compress", "--resume", "{dir}/run1", "--force"), "takes no --force",
                                setup=_interrupted_run),
    "resume a finished run": Case(("compress", "--resume", "{dir}/out"), "finished (its report.json is there)", setup=_finished_run),
    "resume a run killed before its first checkpoint": Case(("compress", "--resume", "{dir}/out"),
                                                            "stopped before its first checkpoint",
                                                            setup=_then(_finished_run, _killed_early)),
    "output folder of a run killed before its first checkpoint": Case(
        (*COMPRESS, "-o", "{dir}/out"), "stopped before its first checkpoint; pass --force",
        setup=_then(_finished_run, _killed_early)),
    "resume a folder of no run": Case(("compress", "--resume", "{dir}"), "not the output folder"),
    # the model and the data must make a classifier
    "model returns a tuple": Case((*COMPRESS, "-o", "{dir}/out"), "returns a tuple", setup=_save(TupleNet)),
    "output index of a tuple": Case((*COMPRESS, "-o", "{dir}/out", "--output-index", "0"), "wrote", status=0,
                                    setup=_save(TupleNet)),
    "output index out of range": Case((*COMPRESS, "-o", "{dir}/out", "--output-index", "2"),
                                      "tuple of 2 outputs; give the index of the logits, 0..1", setup=_save(TupleNet)),
    "output index of a tensor": Case((*COMPRESS, "-o", "{dir}/out", "--output-index", "logits"),
                                     "not a tuple or dict; leave --output-index out"),
    "output key of a dict": Case((*COMPRESS, "-o", "{dir}/out", "--output-index", "scores"), "keys 'logits', 'x'",
                                 setup=_save(DictNet)),
    "model takes two inputs": Case((*COMPRESS, "-o", "{dir}/out"), "takes 2 inputs (x, mask)",
                                   setup=_save(TwoInputNet)),
    "model wants other samples": Case((*COMPRESS, "-o", "{dir}/out"), "takes 3 input channels",
                                      setup=_save(ColourNet)),
    "training labels beyond the outputs": Case((*COMPRESS, "-o", "{dir}/out"), "label 7", setup=_labels(7, 3)),
    "validation labels beyond the outputs": Case((*COMPRESS, "-o", "{dir}/out"), "label 5", setup=_labels(3, 5)),
    # flags
    "unknown method": Case((*COMPRESS, "-o", "{dir}/out", "--method", "darts"), "unknown method 'darts'"),
    "no data": Case(("compress", "{dir}/tiny.pt", "-o", "{dir}/out"), "--data is required"),
    "no output": Case(("compress", "{dir}/tiny.pt", *DATA), "-o OUT is required"),
    "no model": Case(("compress", *DATA, "-o", "{dir}/out"), "give the model to compress"),
    "temperature without the concrete estimator": Case(
        (*COMPRESS, "-o", "{dir}/out", "--method", "figs", "--temperature", "0.1"), "only --estimator concrete reads"),
    "FiGS estimator with l1": Case((*COMPRESS, "-o", "{dir}/out", "--method", "l1", "--estimator", "concrete"),
                                   "--estimator is a FiGS option"),
    "FiGS option with l1": Case((*COMPRESS, "-o", "{dir}/out", "--method", "l1", "--temperature", "0.1"),
                                "FiGS option"),
    "epochs that disagree with their parts": Case(
        ("compress", "{dir}/tiny.pt", *DATA, "--epochs", "2", "--search-epochs", "2", "--finetune-epochs", "2",
         "-o", "{dir}/out"), "epochs=2 is the total of search and fine-tuning epochs"),
    "no epochs at all": Case((*COMPRESS, "-o", "{dir}/out", "--epochs", "0"), "epochs must be a whole number"),
    "unknown device": Case((*COMPRESS, "-o", "{dir}/out", "--device", "gpu"),
                           "unknown device 'gpu'; give auto, cpu, cuda, cuda:N or mps"),
    "device this machine lacks": Case((*COMPRESS, "-o", "{dir}/out", "--device", "cuda:999"),
                                      "device 'cuda:999' is not available: this machine has cpu"),
    "negative workers": Case((*COMPRESS, "-o", "{dir}/out", "--workers", "-1"), "workers (--workers) must be"),
    "bad round-to": Case((*COMPRESS, "-o", "{dir}/out", "--round-to", "0"), "expected 'auto' or a positive integer"),
    "ratio target of 2": Case((*COMPRESS, "-o", "{dir}/out", "--target", "flops=2"), "needs a suffix"),
    "unknown target metric": Case((*COMPRESS, "-o", "{dir}/out", "--target", "energy=0.3"), "unknown target metric"),
    "multiple too coarse for the target": Case((*COMPRESS, "-o", "{dir}/out", "--round-to", "8", "--target",
                                                "flops=0.05"), "lower --round-to (now 8; 1 allows any width)"),
    "data folder missing": Case(("compress", "{dir}/tiny.pt", "--data", "mnist:{dir}/nowhere", "-o", "{dir}/out"),
                                "nowhere"),
    "missing model file": Case(("compress", "{dir}/nope.pt", *DATA, *QUICK, "-o", "{dir}/out"), "no model file"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_compress_battery(name, workspace, tmp_path, capsys, monkeypatch):
    run_case(CASES[name], workspace, tmp_path / "case", capsys, monkeypatch)


def test_a_forced_rerun_invalidates_the_old_outputs_before_it_starts(workspace, tmp_path, capsys):
    """Killed at any point of its work, a --force rerun must not leave the old run's report beside its run.json."""
    folder = tmp_path / "case"
    shutil.copytree(workspace, folder)
    _finished_run(folder)
    seen = {}

    def killed(*args, **kwargs):
        seen.update(fingerprint(folder / "out"))
        raise KeyboardInterrupt

    with mock.patch("cascomp.cli.commands.compress.compress", side_effect=killed):
        assert main(["compress", str(folder / "tiny.pt"), "--data", f"tensors:{folder}/data.npz", *QUICK, "--force",
                     "-o", str(folder / "out")]) == 130
    assert sorted(seen) == ["run.json"]
    capsys.readouterr()

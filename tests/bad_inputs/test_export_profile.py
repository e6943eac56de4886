"""The battery's export and profile cases (see battery.py for the rules every case is held to), and the
checks the battery cannot make: file modes, and memory estimates on a machine pretending to be small."""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import sys
import warnings

import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper
from onnx import save as save_onnx
from torch import nn

from cascomp.cli import main
from cascomp.errors import ConfigError
from cascomp.export import _memory, export_onnx, profile
from tests.bad_inputs.battery import Case, run_case
from tests.search_fixtures import TinyNet


# -- models with the problems users met (pickled by setup, so they live at module level) ------------------
class Branchy(nn.Module):
    """A data-dependent branch: a trace keeps the examples' branch for every input."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 4)

    def forward(self, x):
        x = x.flatten(1)
        if x.mean() > 0:
            return self.fc(x)
        return self.fc(-x) * 2


class QuietBranchy(Branchy):
    """The same branch with the tracer's warning silenced: only checking other input values finds it."""

    def forward(self, x):
        x = x.flatten(1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            positive = bool(x.mean() > 0)
        return self.fc(x) if positive else self.fc(-x) * 2


class Noisy(Branchy):
    def forward(self, x):
        return self.fc(x.flatten(1) + torch.rand_like(x.flatten(1)))  # onnxruntime draws other numbers


class FixedBatch(Branchy):
    def forward(self, x):
        return self.fc(x.reshape(1, 64))


class OutOfMemoryAbove(Branchy):
    """Stands for a model too large for the batch sizes asked: fails as torch does when memory runs out."""

    limit = 1

    def forward(self, x):
        if not torch.jit.is_tracing() and not torch.compiler.is_compiling() and x.shape[0] > self.limit:
            raise RuntimeError(f"DefaultCPUAllocator: can't allocate memory: you tried to allocate "
                               f"{x.shape[0] * 2**34} bytes. Error code 12 (Cannot allocate memory)")
        return self.fc(x.flatten(1))


class OutOfMemoryAboveFour(OutOfMemoryAbove):
    limit = 4


# -- setups --------------------------------------------------------------------------------------------------
def _saves(model_class, name: str = "model.pt"):
    def setup(directory):
        torch.manual_seed(0)
        torch.save(model_class().eval(), directory / name)
    return setup


def _onnx(name: str = "tiny.onnx", **options):
    def setup(directory):
        export_onnx(torch.load(directory / "tiny.pt", weights_only=False), torch.randn(2, 1, 8, 8),
                    directory / name, **options)
    return setup


def _copy(source: str, name: str, make=None):
    def setup(directory):
        if make is not None:
            make(directory)
        shutil.copyfile(directory / source, directory / name)
    return setup


def _two_dynamic_dims(directory):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "tokens"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "tokens"])])
    save_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(directory / "tokens.onnx"))


def _static_pt2(directory):
    program = torch.export.export(TinyNet().eval(), (torch.randn(2, 1, 8, 8),))
    torch.export.save(program, directory / "static.pt2")


SHAPE = ("--input-shape", "1,1,8,8")
EXPORT = ("export", "tiny.pt", *SHAPE)
QUICK = ("--warmup", "0", "--repeats", "1")
PROFILE = ("profile", "tiny.pt", *SHAPE, *QUICK)
BIG = "1000000000000"  # a batch whose inputs alone would take terabytes: refused on any machine

CASES = {
    # 1. a trace that fixed a data-dependent branch, found by the warning or by checking other values
    "export data-dependent branch": Case(("export", "model.pt", *SHAPE, "-o", "m.onnx"),
                                         "`if x.mean() > 0:`) converts a tensor to a Python boolean",
                                         setup=_saves(Branchy)),
    "export branch without a warning": Case(("export", "model.pt", *SHAPE, "-o", "m.onnx"),
                                            "on the example inputs negated differs from torch",
                                            setup=_saves(QuietBranchy)),
    "profile data-dependent branch": Case(("profile", "model.pt", *SHAPE, *QUICK),
                                          "converts a tensor to a Python boolean", setup=_saves(Branchy)),
    "export mismatch names the tolerance flags": Case(("export", "model.pt", *SHAPE, "-o", "m.onnx"),
                                                      "loosen --atol or --rtol", setup=_saves(Noisy)),
    "export model fixing its batch": Case(("export", "model.pt", *SHAPE, "-o", "m.onnx"),
                                          "use --static-batch", setup=_saves(FixedBatch)),
    "export static batch": Case(("export", "model.pt", *SHAPE, "-o", "m.onnx", "--static-batch"),
                                "batch dimension fixed", status=0, setup=_saves(FixedBatch)),
    # 2. the operating system refusing the output path
    "export output under a file": Case((*EXPORT, "-o", "tiny.pt/x.onnx"), "'tiny.pt' is a file, not a directory"),
    "export output in /proc": Case((*EXPORT, "-o", "/proc/x.onnx"), "cannot write '/proc/x.onnx'"),
    "export output is a directory": Case((*EXPORT, "-o", "{dir}"), "it is a directory"),
    "export output directory missing": Case((*EXPORT, "-o", "nodir/x.onnx"), "directory 'nodir' does not exist"),
    "export output exists": Case((*EXPORT, "-o", "weights.pt"), "already exists; pass --force"),
    "export output is the model": Case((*EXPORT, "-o", "tiny.pt", "--force"), "is the model file itself"),
    # 3. sizes beyond memory, refused before anything that large is made
    "export input shape beyond memory": Case(("export", "tiny.pt", "--input-shape", "1,1,1000000,1000000",
                                              "-o", "m.onnx"), "give a smaller --input-shape"),
    "export batch beyond memory": Case(("export", "tiny.pt", "--input-shape", f"{BIG},1,8,8", "-o", "m.onnx"),
                                       "give a smaller --input-shape"),
    "profile batch sizes beyond memory": Case((*PROFILE, "--batch-sizes", "1," + BIG), "lower --batch-sizes"),
    "profile onnx batch sizes beyond memory": Case(("profile", "tiny.onnx", "--batch-sizes", "100000000", *QUICK),
                                                   "lower --batch-sizes", setup=_onnx()),
    "profile input shape beyond memory": Case(("profile", "tiny.pt", "--input-shape", "1,1,1000000,1000000",
                                               *QUICK), "give a smaller --input-shape"),
    "export runs out of memory": Case(("export", "model.pt", *SHAPE, "-o", "m.onnx"),
                                      "ran out of memory on inputs of shape (2, 1, 8, 8)",
                                      setup=_saves(OutOfMemoryAbove)),
    "profile torch runs out of memory": Case(("profile", "model.pt", *SHAPE, *QUICK, "--torch",
                                              "--batch-sizes", "1,8"),
                                             "torch ran out of memory at batch size 8; lower --batch-sizes",
                                             setup=_saves(OutOfMemoryAboveFour)),
    # 4. opsets the installed exporter cannot write
    "export opset too new": Case((*EXPORT, "-o", "m.onnx", "--opset", "99"), "--opset must be from 17 to"),
    "export opset too old": Case((*EXPORT, "-o", "m.onnx", "--opset", "16"), "--opset must be from 17 to"),
    "export negative tolerance": Case((*EXPORT, "-o", "m.onnx", "--rtol", "-1"), "--rtol must be a number >= 0"),
    # 5. ONNX told by content, not by the name's case
    "profile upper-case .ONNX": Case(("profile", "T.ONNX", *QUICK), "median ms", status=0,
                                     setup=_copy("tiny.onnx", "T.ONNX", _onnx())),
    "profile ONNX file named .pt": Case(("profile", "exported.pt", *QUICK), "median ms", status=0,
                                        setup=_copy("tiny.onnx", "exported.pt", _onnx())),
    "profile torch file named .onnx": Case(("profile", "model.onnx", *SHAPE, *QUICK), "median ms", status=0,
                                           setup=_copy("tiny.pt", "model.onnx")),
    "profile factory with an ONNX file": Case(("profile", "tiny.onnx", "--factory", "tests.search_fixtures:TinyNet",
                                               *QUICK), "--factory builds a torch model", setup=_onnx()),
    # 7. messages name the flags a command-line user typed
    "profile --torch on an ONNX file": Case(("profile", "tiny.onnx", "--torch", *QUICK), "--torch needs the torch "
                                            "model", setup=_onnx()),
    "profile --threads 0": Case((*PROFILE, "--threads", "0"), "--threads must be an int >= 1"),
    "profile --warmup -1": Case((*PROFILE, "--warmup", "-1"), "--warmup must be an int >= 0"),
    "profile --repeats 0": Case(("profile", "tiny.pt", *SHAPE, "--repeats", "0"), "--repeats must be an int >= 1"),
    "profile ONNX file with fixed batch": Case(("profile", "fixed.onnx", "--batch-sizes", "1,3", *QUICK),
                                               "profile --batch-sizes 2",
                                               setup=_onnx("fixed.onnx", dynamic_batch=False)),
    "profile ONNX file with other dynamic dims": Case(("profile", "tokens.onnx", *QUICK), "--input-shape 1,16",
                                                      setup=_two_dynamic_dims),
    "profile ONNX file with extra --input-shape": Case(("profile", "tiny.onnx", *SHAPE, *SHAPE, *QUICK),
                                                       "but --input-shape gave 2", setup=_onnx()),
    "profile ONNX file with wrong --input-shape": Case(("profile", "tiny.onnx", "--input-shape", "1,3,8,8", *QUICK),
                                                       "check --input-shape", setup=_onnx()),
    # already handled: kept so the battery covers export and profile whole
    "export malformed input shape": Case(("export", "tiny.pt", "--input-shape", "1,x", "-o", "m.onnx"),
                                         "'x' is not a positive integer"),
    "export wrong input shape": Case(("export", "tiny.pt", "--input-shape", "1,3,8,8", "-o", "m.onnx"),
                                     "does not run on inputs of shape"),
    "export without input shape": Case(("export", "tiny.pt", "-o", "m.onnx"), "pass --input-shape"),
    "export missing model": Case(("export", "absent.pt", *SHAPE, "-o", "m.onnx"), "no model file"),
    "profile missing ONNX file": Case(("profile", "absent.onnx", *QUICK), "no ONNX file at 'absent.onnx'; check the "
                                      "path"),
    "profile malformed batch sizes": Case((*PROFILE, "--batch-sizes", "1,0"), "--batch-sizes '1,0' must be"),
    "profile static-batch .pt2": Case(("profile", "static.pt2", *QUICK), "batch size fixed at 2",
                                      setup=_static_pt2),
    "export .pt2": Case(("export", "tiny.pt2", "-o", "m.onnx"), "batch dimension dynamic", status=0),
}
if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
    CASES["profile --provider cuda without a GPU"] = Case((*PROFILE, "--provider", "cuda"), "use --provider cpu")


@pytest.mark.parametrize("name", sorted(CASES))
def test_export_profile_battery(name, workspace, tmp_path, capsys, monkeypatch):
    run_case(CASES[name], workspace, tmp_path / "case", capsys, monkeypatch)


# -- what the battery does not check ---------------------------------------------------------------------------
def test_exported_files_get_the_mode_of_any_new_file(workspace, tmp_path, monkeypatch):
    shutil.copytree(workspace, tmp_path / "case")
    monkeypatch.chdir(tmp_path / "case")
    monkeypatch.setattr(sys, "path", list(sys.path))
    previous = os.umask(0o022)
    try:
        assert main(["export", "tiny.pt2", "-o", "m.onnx"]) == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat("m.onnx").st_mode) == 0o644


def test_memory_estimates_refuse_before_running(tmp_path, monkeypatch):
    """On a machine with 0.5 MiB free, a batch of 64 TinyNet samples (about 1 MiB of activations) is refused
    by export (measured on one sample in torch) and by profile (from the ONNX file's shapes)."""
    model, example = TinyNet().eval(), torch.randn(64, 1, 8, 8)
    path = export_onnx(model, example[:1], tmp_path / "tiny.onnx").path
    monkeypatch.setattr(_memory, "available_bytes", lambda: 2**19)
    with pytest.raises(ConfigError, match=r"batch of 65 needs at least 1\.0 MiB.*give smaller example_inputs"):
        export_onnx(model, example, tmp_path / "big.onnx")
    with pytest.raises(ConfigError, match=r"batch size 64 needs at least.*lower batch_sizes"):
        profile(path, (1, 64), warmup=0, repeats=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.onnx"]


def test_api_messages_keep_the_python_names(tmp_path):
    path = export_onnx(TinyNet().eval(), torch.randn(2, 1, 8, 8), tmp_path / "tiny.onnx").path
    with pytest.raises(ConfigError, match=r"^threads must be an int >= 1"):
        profile(path, (1,), threads=0)
    with pytest.raises(ConfigError, match=r"^torch_latency=True needs the torch model"):
        profile(path, (1,), torch_latency=True)
    with pytest.raises(ConfigError, match=r"^opset must be from 17 to \d+ .*e\.g\. opset=17"):
        export_onnx(TinyNet(), torch.randn(2, 1, 8, 8), tmp_path / "m.onnx", opset=99)


def test_an_opset_the_exporter_changed_is_told(workspace, tmp_path, monkeypatch, capsys):
    """dynamo writes opset 18 where it cannot convert down to 17: the command says so, it does not hide it."""
    from cascomp.cli.commands import export

    def dynamo_at_18(*args, **kwargs):
        return dataclasses.replace(export_onnx(*args, **kwargs), opset=18, exporter="dynamo")

    shutil.copytree(workspace, tmp_path / "case")
    monkeypatch.chdir(tmp_path / "case")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(export, "export_onnx", dynamo_at_18)
    assert main(["export", "tiny.pt2", "-o", "m.onnx", "--json"]) == 0
    captured = capsys.readouterr()
    assert "cascomp: warning: the dynamo exporter wrote opset 18, not --opset 17" in captured.err
    assert '"opset_requested": 17' in captured.out and '"opset": 18' in captured.out

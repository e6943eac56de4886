"""The cascomp command as a user runs it: `python -m cascomp ...` in a subprocess, on every model format.

Each run starts a Python with torch (about 3 s here), so the runs are declared in two tables and started
together on a small thread pool once per module; the tests then check one run each. A few checks of
`main` itself (help, exit statuses of bugs and Ctrl-C) run in-process, where they cost nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from cascomp import cli
from cascomp.cli.commands import analyze, export
from cascomp.export import export_onnx
from tests.cli_factory import build

ROOT = Path(__file__).resolve().parents[1]
FACTORY = "tests.cli_factory:build"
DEMO_SHAPE = ["--input-shape", "1,1,28,28"]
TINY_SHAPE = ["--input-shape", "1,1,8,8"]
TIMING = ["--batch-sizes", "1,2", "--repeats", "2", "--warmup", "1", "--threads", "1"]
WARNING = "cascomp: warning:"

# name -> argv; "{dir}" is the module's working directory. Every run here must succeed. Each model format
# (a torch.save pickle, a torch.export .pt2, --factory with a state dict) goes through every command.
GOOD = {
    "analyze": ["analyze", "{dir}/demo.pt", *DEMO_SHAPE],
    "analyze json": ["analyze", "{dir}/demo.pt", *DEMO_SHAPE, "--json"],
    "export": ["export", "{dir}/demo.pt", *DEMO_SHAPE, "-o", "{dir}/demo.onnx", "--json"],
    "profile": ["profile", "{dir}/demo.pt", *DEMO_SHAPE, *TIMING, "--torch", "--json"],
    "profile onnx": ["profile", "{dir}/tiny.onnx", *TIMING, "--json"],
    "analyze pt2": ["analyze", "{dir}/tiny.pt2", "--json"],
    "export pt2": ["export", "{dir}/tiny.pt2", "-o", "{dir}/pt2.onnx"],
    "profile pt2": ["profile", "{dir}/tiny.pt2", *TIMING, "--json"],
    "analyze factory": ["analyze", "{dir}/weights.pt", "--factory", FACTORY, *TINY_SHAPE, "--json"],
    "export factory": ["export", "{dir}/weights.pt", "--factory", FACTORY, *TINY_SHAPE, "-o", "{dir}/f.onnx",
                       "--json"],
    "profile factory": ["profile", "{dir}/weights.pt", "--factory", FACTORY, *TINY_SHAPE, *TIMING, "--by-node"],
}
# name -> (argv, what the one error line must say, the output that must not appear)
BAD = {
    "missing model": (["analyze", "{dir}/nope.pt", *TINY_SHAPE], "no model file at", None),
    "empty file": (["analyze", "{dir}/empty.pt", *TINY_SHAPE], "is empty (0 bytes)", None),
    "corrupt file": (["analyze", "{dir}/corrupt.pt", *TINY_SHAPE], "neither a torch.save nor a torch.export", None),
    "state dict without factory": (["analyze", "{dir}/weights.pt", *TINY_SHAPE], "pass --factory", None),
    "state dict not fitting": (["export", "{dir}/weights.pt", "--factory", "tests.cli_factory:build_wide",
                                *TINY_SHAPE, "-o", "{dir}/unfit.onnx"], "shape mismatch: conv1.weight",
                               "unfit.onnx"),
    "malformed input shape": (["export", "{dir}/tiny.pt", "--input-shape", "1,3,x", "-o", "{dir}/typo.onnx"],
                              "'x' is not a positive integer", "typo.onnx"),
    "wrong input shape": (["export", "{dir}/tiny.pt", "--input-shape", "1,5,8,8", "-o", "{dir}/wrong.onnx"],
                          "takes 1 input channels, e.g. --input-shape 1,1,H,W", "wrong.onnx"),
    "existing output": (["export", "{dir}/tiny.pt", *TINY_SHAPE, "-o", "{dir}/existing.onnx"],
                        "already exists; pass --force", None),
    "missing output directory": (["export", "{dir}/tiny.pt", *TINY_SHAPE, "-o", "{dir}/nodir/out.onnx"],
                                 "does not exist; create it first", "nodir"),
    "onnx file onnxruntime cannot load": (["profile", "{dir}/bad.onnx", *TIMING], "onnxruntime could not load",
                                          None),
    "safe with a pickle": (["analyze", "{dir}/tiny.pt", "--safe", *TINY_SHAPE], "refusing to load", None),
}
GOOD["graph"] = ["analyze", "{dir}/tiny.pt", *TINY_SHAPE, "--graph", "{dir}/g.png"]


def _cascomp(argv: list[str], directory: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}  # runs share two cores; more threads each would only fight
    env.pop("CASCOMP_DEBUG", None)
    command = [sys.executable, "-m", "cascomp", *(a.replace("{dir}", str(directory)) for a in argv)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """Input files of every format, made in-process (cheaper than a subprocess each)."""
    directory = tmp_path_factory.mktemp("cli")
    model = build()
    torch.save(model, directory / "tiny.pt")
    torch.save(model.state_dict(), directory / "weights.pt")
    batch = torch.export.Dim("batch")
    example = torch.randn(2, 1, 8, 8)
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: batch},)), directory / "tiny.pt2")
    export_onnx(model, example, directory / "tiny.onnx")
    (directory / "empty.pt").write_bytes(b"")
    (directory / "corrupt.pt").write_bytes(b"\x00" + os.urandom(300))
    (directory / "bad.onnx").write_bytes(b"\x00" + os.urandom(300))
    (directory / "existing.onnx").write_bytes(b"keep me")
    demo = _cascomp(["demo-model", "-o", "{dir}/demo.pt"], directory)
    assert demo.returncode == 0, demo.stderr
    assert "cascomp analyze" in demo.stdout and demo.stderr == ""
    return directory


@pytest.fixture(scope="module")
def runs(workdir) -> dict[str, subprocess.CompletedProcess]:
    commands = {**GOOD, **{name: argv for name, (argv, _, _) in BAD.items()}}
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(_cascomp, argv, workdir) for name, argv in commands.items()}
        return {name: future.result() for name, future in futures.items()}


def _errors(run: subprocess.CompletedProcess) -> list[str]:
    """stderr without the one pickle warning, which must appear at most once."""
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert sum(line.startswith(WARNING) for line in lines) <= 1, run.stderr
    return [line for line in lines if not line.startswith(WARNING)]


def _succeeded(run: subprocess.CompletedProcess) -> None:
    assert run.returncode == 0, run.stderr
    assert _errors(run) == [], run.stderr


def test_analyze_prints_totals_groups_frozen_channels_and_search_space(runs):
    run = runs["analyze"]
    _succeeded(run)
    assert run.stderr.startswith(f"{WARNING} ") and "pickle" in run.stderr  # demo.pt is a pickle
    out = run.stdout
    for expected in ("DemoNet", "1x1x28x28", "82.4 K params", "FLOPs per sample", "Channel groups: 7 groups",
                     "layer3.conv2", "Frozen channels", "Search space", "79.9 K of 25.9 M (0.31%)"):
        assert expected in out, out
    assert max(len(line) for line in out.splitlines()) <= 100


def test_analyze_json_is_one_object_with_the_whole_report(runs):
    run = runs["analyze json"]
    _succeeded(run)
    report = json.loads(run.stdout)
    assert report["source"] == "pickle" and report["inputs"] == [{"shape": [1, 1, 28, 28], "dtype": "float32"}]
    assert report["totals"]["params"] == 82426 and report["totals"]["flops"] == 2 * report["totals"]["macs"]
    assert len(report["groups"]) == 7 and report["groups"][0]["modules"][:2] == ["stem.0", "stem.1"]
    assert all(0 < g["flops_share"] <= 1 for g in report["groups"])
    assert 0 < report["search_space"]["smallest_ratio"]["flops"] < 0.01
    assert report["config"] == {"ignore": [], "round_to": 1, "min_keep": 1, "factory": None, "safe": False,
                                "input_shapes": ["1,1,28,28"], "input_dtypes": None}


def test_export_writes_a_checked_onnx_file(runs, workdir):
    run = runs["export"]
    _succeeded(run)
    result = json.loads(run.stdout)
    assert result["path"].endswith("demo.onnx") and (workdir / "demo.onnx").stat().st_size > 0
    assert result["dynamic_batch"] and result["opset"] == 17 and result["max_abs_error"] < 1e-4


def test_profile_times_a_torch_model_and_an_onnx_file(runs):
    run = runs["profile"]
    _succeeded(run)
    report = json.loads(run.stdout)
    assert [r["batch_size"] for r in report["results"]] == [1, 2] and report["threads"] == 1
    assert all(r["repeats"] == 2 and r["median_ms"] > 0 for r in report["results"])
    assert [r["batch_size"] for r in report["torch_results"]] == [1, 2]
    run = runs["profile onnx"]
    _succeeded(run)
    report = json.loads(run.stdout)
    assert report["onnx_path"].endswith("tiny.onnx") and len(report["results"]) == 2


def test_torch_export_file_needs_no_input_shape(runs, workdir):
    run = runs["analyze pt2"]
    assert run.returncode == 0 and run.stderr == "", run.stderr  # a .pt2 is safe: no pickle warning
    report = json.loads(run.stdout)
    assert report["source"] == "torch.export" and report["inputs"][0]["shape"] == [2, 1, 8, 8]
    run = runs["export pt2"]
    _succeeded(run)
    assert "batch dimension dynamic" in run.stdout and (workdir / "pt2.onnx").is_file()
    run = runs["profile pt2"]
    _succeeded(run)
    assert [r["batch_size"] for r in json.loads(run.stdout)["results"]] == [1, 2]


def test_factory_with_a_state_dict(runs, workdir):
    for name in ("analyze factory", "export factory", "profile factory"):
        assert runs[name].returncode == 0 and runs[name].stderr == "", runs[name].stderr  # safe: no warning
    report = json.loads(runs["analyze factory"].stdout)
    assert report["source"] == "factory" and [g["name"] for g in report["groups"]] == ["conv1", "conv2"]
    assert json.loads(runs["export factory"].stdout)["source"] == "factory" and (workdir / "f.onnx").is_file()
    assert "time by node" in runs["profile factory"].stdout and "conv1" in runs["profile factory"].stdout


def test_graph_is_drawn_as_png(runs, workdir):
    _succeeded(runs["graph"])
    assert (workdir / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", sorted(BAD))
def test_user_mistakes_give_one_line_and_leave_no_file(runs, workdir, name):
    _, message, output = BAD[name]
    run = runs[name]
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    errors = _errors(run)
    assert len(errors) == 1 and errors[0].startswith("cascomp: error: "), run.stderr
    assert message in errors[0], errors[0]
    assert run.stdout == ""
    if output is not None:
        assert not (workdir / output).exists()
    assert (workdir / "existing.onnx").read_bytes() == b"keep me"
    assert not list(workdir.rglob("*.tmp"))


# -- main() in-process -------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["demo-model", "analyze", "export", "profile"])
def test_every_command_has_help_with_an_example(command, capsys):
    assert cli.main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "example" in out and f"cascomp {command} " in out


def test_usage_errors_are_one_line_with_status_2(capsys):
    assert cli.main(["analyze", "--round-to", "x"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "cascomp analyze: error: argument --round-to: invalid int value: 'x'; see 'cascomp analyze --help'"]
    assert cli.main([]) == 2


def test_a_bug_is_one_line_with_status_1_and_debug_shows_the_traceback(monkeypatch, capsys):
    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(analyze, "run", broken)
    monkeypatch.delenv("CASCOMP_DEBUG", raising=False)
    assert cli.main(["analyze", "x.pt"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cascomp: error: internal error") and "ZeroDivisionError" in err
    assert len(err.splitlines()) == 1
    monkeypatch.setenv("CASCOMP_DEBUG", "1")
    assert cli.main(["analyze", "x.pt"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_ctrl_c_exits_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "run", interrupted)
    assert cli.main(["export", "x.pt", "-o", "y.onnx"]) == 130
    assert capsys.readouterr().err == "cascomp: interrupted\n"

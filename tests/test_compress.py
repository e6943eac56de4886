"""`cascomp.compress` end to end on a tiny task: outputs, budgets, resume, target control, the CLI."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import onnxruntime as ort
import pytest
import torch

import cascomp
from cascomp.cli import main
from cascomp.export import onnx as onnx_export
from tests.search_fixtures import quadrant_task, quick_config, stopped_and_resumed, trained_tiny


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    spec = quadrant_task(tmp_path_factory.mktemp("data") / "quadrants.npz", samples=640)
    data = cascomp.load_data(spec, batch_size=64, seed=0)
    model = trained_tiny(data)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    torch.save(model, path)
    return spec, data, model, path


@pytest.mark.parametrize("method", ["figs", "l1", "uniform", "sensitivity"])
def test_compress_meets_the_budget_and_writes_every_output(task, tmp_path, method):
    _, data, model, _ = task
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = tmp_path / "out"
    result = cascomp.compress(model, quick_config(method=method), data=data, out_dir=out, progress=False)
    report = result.report
    assert 0.5 * 0.99 <= report["ratios"]["flops"] <= 0.5
    assert report["targets"]["flops"]["within_1pct"]
    multiple = report["round_to"]  # round_to="auto": the largest multiple of 8, 4, 2, 1 that lands the budget
    assert multiple in (8, 4, 2, 1)
    assert all(w["after"] % multiple == 0 or w["after"] == w["before"] for w in report["widths"].values())
    assert {"model.pt", "state_dict.pt", "model.onnx", "plan.json", "report.json", "widths.png"} <= {
        p.name for p in out.iterdir()}
    assert ("search.png" in {p.name for p in out.iterdir()}) == (method == "figs")
    assert not (out / "checkpoint.pt").exists() and not list(out.glob(".*"))
    assert json.loads((out / "report.json").read_text())["method"] == method
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the input model is untouched
    x = next(iter(data.val))[0]
    loaded = torch.load(out / "model.pt", weights_only=False)
    assert torch.allclose(loaded(x), result.model(x), atol=1e-5)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert torch.allclose(torch.from_numpy(onnx_out), result.model(x), atol=1e-4)
    real = cascomp.trace(result.model, x[:1]).cost().flops / cascomp.trace(model, x[:1]).cost().flops
    assert real == pytest.approx(report["ratios"]["flops"], rel=1e-6)  # the rewritten model costs what was planned
    assert set(report["baseline"]) >= {"flops", "params", "top1", "latency_ms"}


def test_the_compressed_model_loads_without_cascomp(task, tmp_path):
    _, data, model, _ = task
    result = cascomp.compress(model, quick_config(method="l1", search_epochs=0, finetune_epochs=0), data=data,
                              out_dir=tmp_path, progress=False)
    code = ("import sys, torch; sys.modules['cascomp'] = None; "
            f"m = torch.load({str(tmp_path / 'model.pt')!r}, weights_only=False); print(m(torch.zeros(1, 1, 8, 8)).shape)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "torch.Size([1, 4])" in done.stdout
    assert result.report["finetune"]["epochs"] == []


def test_the_compressed_model_is_exported_to_onnx_once(task, tmp_path, monkeypatch):
    """Its latency is measured on the very file written to OUT/model.onnx, checked once against torch."""
    _, data, model, _ = task
    exported, checked = [], []
    real_exporter, real_check = onnx_export.run_exporter, onnx_export.check_file

    def exporter(name, module, *args, **kwargs):
        exported.append(module)
        return real_exporter(name, module, *args, **kwargs)

    def check(path, *args, **kwargs):
        checked.append(path)
        return real_check(path, *args, **kwargs)

    monkeypatch.setattr(onnx_export, "run_exporter", exporter)
    monkeypatch.setattr(onnx_export, "check_file", check)
    out = tmp_path / "out"
    result = cascomp.compress(model, quick_config(method="l1", search_epochs=0, finetune_epochs=0), data=data,
                              out_dir=out, progress=False)
    assert sum(module is result.model for module in exported) == 1
    assert len(exported) == 2 and len(checked) == 2  # the baseline once more, for its own latency
    x = next(iter(data.val))[0]
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert torch.allclose(torch.from_numpy(onnx_out), result.model(x), atol=1e-4)
    assert not list(out.glob(".*"))


@pytest.mark.parametrize("stop_at", [("search", 1), ("finetune", 1)])
def test_resume_after_an_interruption_gives_the_same_result(task, tmp_path, stop_at):
    _, data, model, _ = task
    config = quick_config(search_epochs=2, finetune_epochs=2)
    straight, resumed = stopped_and_resumed(model, config, data, tmp_path, stop_at)  # checks the checkpoint too
    assert resumed.plan == straight.plan and resumed.report["round_to"] == straight.report["round_to"]
    for key, value in straight.model.state_dict().items():
        assert torch.allclose(resumed.model.state_dict()[key].float(), value.float(), atol=1e-6), key
    untimed = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]  # noqa: E731
    assert untimed(resumed.report["search"]["epochs"]) == untimed(straight.report["search"]["epochs"])


@pytest.mark.slow  # trains a baseline for an epoch, then searches three on 2048 samples
def test_target_control_brings_the_expected_cost_to_the_target(tmp_path):
    spec = quadrant_task(tmp_path / "big.npz", samples=2048, seed=1)
    data = cascomp.load_data(spec, batch_size=64, seed=0)
    model = trained_tiny(data, epochs=1)
    config = quick_config(targets=("flops=0.4",), search_epochs=3, finetune_epochs=0)
    report = cascomp.compress(model, config, data=data, progress=False).report
    last = report["search"]["epochs"][-1]
    assert last["expected_flops"] == pytest.approx(0.4, abs=0.04)
    start = report["search"]["trajectory"][0]
    assert start["expected_flops"] > 0.7 and last["lambda_flops"] != start["lambda_flops"]


# -- the command line -----------------------------------------------------------------------------------------
def test_cli_compress_and_resume_errors(task, tmp_path, capsys):
    spec, _, _, path = task
    out = tmp_path / "cli"
    code = main(["compress", str(path), "--method", "uniform", "--target", "flops=0.5", "--data", spec, "-o", str(out),
                 "--search-epochs", "0", "--finetune-epochs", "1", "--batch-size", "64"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "model.onnx" in captured.out and "report.json" in captured.out
    assert json.loads((out / "run.json").read_text())["config"]["method"] == "uniform"
    assert main(["compress", str(path), "--data", spec, "-o", str(out)]) == 2  # a finished run is not overwritten
    assert "already holds a finished run" in capsys.readouterr().err
    assert main(["compress", "--resume", str(out)]) == 2
    assert "finished (its report.json is there)" in capsys.readouterr().err


def test_cli_compress_with_the_whole_budget_and_reconstruction(task, tmp_path, capsys):
    spec, data, model, path = task
    out = tmp_path / "cli"
    code = main(["compress", str(path), "--method", "sensitivity", "--target", "flops=0.5", "--data", spec,
                 "-o", str(out), "--epochs", "1", "--reconstruct", "--batch-size", "64"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["reconstruct"] and report["config"]["epochs"] == 1
    assert (report["config"]["search_epochs"], report["config"]["finetune_epochs"]) == (0, 1)
    probes = report["search"]["probes"]
    assert probes["count"] > 1 and probes["images"] > 0
    assert 0.5 * 0.99 <= report["ratios"]["flops"] <= 0.5
    assert set(report["latency"]["spread"]) == {"1", "32"} and report["latency"]["rounds"] == 5


@pytest.mark.parametrize("weights", ["baseline", "search"])
def test_figs_starts_fine_tuning_from_the_chosen_weights(task, weights):
    _, data, model, _ = task
    config = quick_config(search_epochs=1, finetune_epochs=0, method_config=cascomp.FigsConfig(weights=weights))
    result = cascomp.compress(model, config, data=data, progress=False)
    kept = result.plan.keep
    stem_out = next(name for name in kept if name.startswith("stem"))
    baseline = model.stem[0].weight[list(kept[stem_out])]
    same = torch.equal(result.model.get_submodule("stem.0").weight, baseline)
    assert same == (weights == "baseline")  # the search trains the weights; only "search" keeps them


def test_output_index_picks_the_logits_of_a_model_with_several_outputs(task):
    spec, data, model, _ = task

    class WithAux(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = copy.deepcopy(model)

        def forward(self, x):
            return {"aux": x.mean(), "logits": self.net(x)}

    wrapped = WithAux().train()
    config = quick_config(method="l1", search_epochs=0, finetune_epochs=0, output_index="logits")
    result = cascomp.compress(wrapped, config, data=data, progress=False)
    x = next(iter(data.val))[0]
    assert isinstance(result.model(x), torch.Tensor) and result.model(x).shape == (len(x), 4)
    assert result.report["targets"]["flops"]["within_1pct"]
    assert wrapped.training and all(m.training for m in wrapped.modules())  # the caller's model is untouched
    with pytest.raises(cascomp.ConfigError, match="returns a dict"):
        cascomp.compress(wrapped, quick_config(method="l1", search_epochs=0, finetune_epochs=0), data=data,
                         progress=False)

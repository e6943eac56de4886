"""Devices, mixed precision and loader workers (issue 16, item 1): CompressConfig.device/amp, load_data's
workers, checkpoints that load anywhere, a CPU result whatever the device. The CUDA paths run in the tests
marked `cuda`, which skip (visibly) where torch sees no CUDA device. The command line's refusals of a bad
--device or --workers are cases of the bad-input battery (tests/bad_inputs/test_compress.py)."""

from __future__ import annotations

import json
from unittest import mock

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import cascomp
import cascomp.train.device as device_module
from cascomp.cli import main
from cascomp.config import resolve_device
from cascomp.data.bundle import default_workers, seed_worker
from cascomp.train.device import Placement, on_cpu
from tests.search_fixtures import quick_config, saved_tiny_task


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return saved_tiny_task(tmp_path_factory.mktemp("device"), samples=384)


@pytest.fixture(scope="module")
def on_the_cpu(task):
    """The reference: FiGS (a search, the gates trained) with device="cpu" given explicitly."""
    _, data, model, _ = task
    return cascomp.compress(model, quick_config(device="cpu", search_epochs=1), data=data, progress=False)


@pytest.fixture
def cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")


def _same_result(one, other) -> None:
    assert one.plan == other.plan
    assert one.model.state_dict().keys() == other.model.state_dict().keys()
    for key, value in one.model.state_dict().items():
        assert torch.equal(other.model.state_dict()[key], value), key


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


# -- the device ----------------------------------------------------------------------------------------------
def test_auto_is_cuda_when_there_is_one_else_the_cpu():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert cascomp.CompressConfig().device == "auto" and not cascomp.CompressConfig().amp


def test_cpu_given_and_auto_give_the_same_plan_and_weights(task, on_the_cpu):
    if torch.cuda.is_available():
        pytest.skip("auto picks CUDA on this machine")
    _, data, model, _ = task
    auto = cascomp.compress(model, quick_config(device="auto", search_epochs=1), data=data, progress=False)
    _same_result(on_the_cpu, auto)
    assert "latency_gpu" not in auto.report  # GPU latency only for runs trained on a GPU
    assert auto.report["config"]["device"] == "auto" and on_the_cpu.report["config"]["device"] == "cpu"
    assert auto.report["environment"]["device"] == on_the_cpu.report["environment"]["device"] == "cpu"
    assert auto.report["environment"]["amp"] is None
    assert cascomp.CompressConfig.from_dict(auto.report["config"]).device == "auto"


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "cuda:01", "CUDA", "cpu:0", "", 0])
def test_a_device_that_is_no_device_is_refused(name):
    with pytest.raises(cascomp.ConfigError, match="unknown device .*give auto, cpu, cuda, cuda:N or mps"):
        cascomp.CompressConfig(device=name)


def test_a_device_this_machine_lacks_is_refused_naming_those_it_has():
    absent = "cuda:999" if torch.cuda.is_available() else "cuda"
    with pytest.raises(cascomp.ConfigError, match=f"device '{absent}' is not available: this machine has cpu"):
        cascomp.CompressConfig(device=absent)
    if not torch.backends.mps.is_available():
        with pytest.raises(cascomp.ConfigError, match="'mps' is not available"):
            cascomp.CompressConfig(device="mps")
    with pytest.raises(cascomp.ConfigError, match="amp must be True or False"):
        cascomp.CompressConfig(amp="yes")


def test_cli_device_amp_and_workers_run_and_are_recorded(task, tmp_path, capsys):
    spec, _, _, path = task
    out = tmp_path / "out"
    code = main(["compress", str(path), "--method", "l1", "--target", "flops=0.5", "--data", spec, "-o", str(out),
                 "--epochs", "1", "--batch-size", "64", "--device", "cpu", "--amp", "--workers", "2"])
    assert code == 0, capsys.readouterr().err
    run, report = (json.loads((out / name).read_text()) for name in ("run.json", "report.json"))
    assert run["workers"] == 2 and run["config"]["device"] == "cpu" and run["config"]["amp"]
    assert report["environment"]["device"] == "cpu" and report["environment"]["amp"] == "bfloat16"
    assert report["targets"]["flops"]["within_1pct"]


# -- mixed precision -----------------------------------------------------------------------------------------
def test_amp_on_the_cpu_is_bfloat16_and_keeps_the_budget_exact(task, on_the_cpu):
    _, data, model, _ = task
    amp = cascomp.compress(model, quick_config(device="cpu", search_epochs=1, amp=True), data=data, progress=False)
    for metric, target in on_the_cpu.report["targets"].items():
        assert amp.report["targets"][metric]["within_1pct"] == target["within_1pct"] is True
        assert amp.report["targets"][metric]["reached"] <= target["goal"]
    assert {p.dtype for p in amp.model.parameters()} == {torch.float32}
    assert {b.dtype for b in amp.model.buffers() if b.is_floating_point()} == {torch.float32}
    assert amp.report["environment"]["amp"] == "bfloat16" and amp.report["config"]["amp"] is True
    assert all(p.device.type == "cpu" for p in amp.model.parameters())


def test_autocast_covers_the_forward_pass_and_hands_back_float32():
    seen = []
    layer = nn.Linear(4, 3)
    layer.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    placement = Placement(device=torch.device("cpu"), amp_dtype=torch.bfloat16)
    output = placement.forward(layer, torch.randn(2, 4))
    assert seen == [torch.bfloat16] and output.dtype == torch.float32
    assert placement.grad_scaler() is None  # bfloat16 has float32's range: nothing to scale
    assert Placement(device=torch.device("cpu")).forward(layer, torch.randn(2, 4)).dtype == torch.float32
    assert isinstance(Placement(device=torch.device("cpu"), amp_dtype=torch.float16).grad_scaler(),
                      torch.amp.GradScaler)


FLOAT16 = quick_config(device="cpu", amp=True, search_epochs=2, finetune_epochs=2)


@pytest.fixture
def float16():
    """The precision of GPUs without bfloat16 (float16 with a GradScaler), taken on the CPU."""
    with mock.patch.object(device_module, "amp_dtype", lambda device: torch.float16):
        yield


@pytest.fixture(scope="module")
def float16_straight(task):
    _, data, model, _ = task
    with mock.patch.object(device_module, "amp_dtype", lambda device: torch.float16):
        return cascomp.compress(model, FLOAT16, data=data, progress=False)


@pytest.mark.parametrize("stop_at", [("search", 1), ("finetune", 1)])
def test_float16_with_loss_scaling_checkpoints_on_the_cpu_and_resumes(task, tmp_path, float16, float16_straight,
                                                                      stop_at):
    """The checkpoint holds CPU tensors and the scaler's state; the resumed run ends where the straight one
    does."""
    _, data, model, _ = task
    config, straight = FLOAT16, float16_straight

    def interrupt(phase, epoch):
        if (phase, epoch) == stop_at:
            raise Interrupt

    with pytest.raises(Interrupt):
        cascomp.compress(model, config, data=data, out_dir=tmp_path / "broken", progress=False, on_epoch=interrupt)
    state = torch.load(tmp_path / "broken" / "checkpoint.pt", weights_only=False)
    assert "scaler" in state[stop_at[0]] and all(t.device.type == "cpu" for t in _tensors(state))
    resumed = cascomp.compress(model, config, data=data, out_dir=tmp_path / "broken", resume=True, progress=False)
    assert straight.report["environment"]["amp"] == "float16"
    assert straight.report["targets"]["flops"]["within_1pct"]
    _same_result(straight, resumed)


def test_checkpoint_tensors_go_to_the_cpu_and_those_there_are_kept():
    nested = {"a": [torch.ones(2), (torch.zeros(1), 3)], "b": "text"}
    moved = on_cpu(nested)
    assert moved["a"][0] is nested["a"][0] and moved["a"][1][0] is nested["a"][1][0] and moved["b"] == "text"
    assert isinstance(moved["a"][1], tuple) and moved["a"][1][1] == 3


# -- loader workers ------------------------------------------------------------------------------------------
def _first_epoch(bundle) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in bundle.train]


def test_workers_give_the_same_batches_as_the_main_process(task):
    spec = task[0]
    two = [_first_epoch(cascomp.load_data(spec, batch_size=32, seed=3, workers=2)) for _ in range(2)]
    none = _first_epoch(cascomp.load_data(spec, batch_size=32, seed=3))
    for batches in (two[1], none):
        assert len(batches) == len(two[0])
        assert all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(two[0], batches))
    other_seed = _first_epoch(cascomp.load_data(spec, batch_size=32, seed=4, workers=2))
    assert not torch.equal(other_seed[0][1], two[0][0][1])
    assert cascomp.load_data(spec, workers=2).val.num_workers == 2


def test_compress_with_workers_gives_the_result_of_the_main_process(task, on_the_cpu):
    spec, _, model, _ = task
    data = cascomp.load_data(spec, batch_size=64, seed=0, workers=2)
    _same_result(on_the_cpu, cascomp.compress(model, quick_config(device="cpu", search_epochs=1), data=data,
                                              progress=False))


class _Draws(Dataset):
    """Samples drawn in the worker from Python's and NumPy's generators, as a random transform would."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index):
        import random

        import numpy as np
        return torch.tensor([random.random(), float(np.random.rand())])


def test_workers_are_seeded_from_the_loader_generator():
    def draws(seed: int) -> torch.Tensor:
        loader = DataLoader(_Draws(), batch_size=2, num_workers=2, worker_init_fn=seed_worker,
                            generator=torch.Generator().manual_seed(seed))
        return torch.cat(list(loader))

    assert torch.equal(draws(0), draws(0)) and not torch.equal(draws(0), draws(1))


def test_worker_defaults_and_bad_counts():
    assert default_workers(torch.device("cpu")) == 0
    assert 1 <= default_workers(torch.device("cuda")) <= 4
    for bad in (-1, 1.5, True):
        with pytest.raises(cascomp.DataError, match=r"workers \(--workers\) must be a whole number"):
            cascomp.load_data("digits:", workers=bad)


# -- CUDA (skipped, visibly, without a CUDA device) ----------------------------------------------------------
@pytest.mark.cuda
def test_cuda_search_and_fine_tuning_give_a_cpu_result(task, tmp_path, cuda):
    spec, _, model, _ = task
    data = cascomp.load_data(spec, batch_size=64, seed=0, workers=2, pin_memory=True)
    config = quick_config(device="cuda", search_epochs=2, finetune_epochs=1)

    def interrupt(phase, epoch):
        if (phase, epoch) == ("search", 1):
            raise Interrupt

    with pytest.raises(Interrupt):
        cascomp.compress(model, config, data=data, out_dir=tmp_path, progress=False, on_epoch=interrupt)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)  # no map_location: it must be CPU already
    assert all(t.device.type == "cpu" for t in _tensors(state))
    result = cascomp.compress(model, config, data=data, out_dir=tmp_path, resume=True, progress=False)
    assert all(t.device.type == "cpu" for t in (*result.model.parameters(), *result.model.buffers()))
    assert result.report["environment"]["device"].startswith("cuda")
    assert result.report["targets"]["flops"]["within_1pct"]
    gpu = result.report["latency_gpu"]  # beside the CPU figures: torch on the GPU, and onnxruntime's provider
    assert gpu["torch-cuda"]["device"].startswith("cuda") and gpu["torch-cuda"]["p90_ms"]["compressed"]["1"] > 0
    assert "ratio" in gpu["onnxruntime-cuda"] or "unavailable" in gpu["onnxruntime-cuda"]
    assert "latency_b1" in result.report["ratios"]
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    assert all(p.device.type == "cpu" for p in loaded.parameters())
    x = next(iter(data.val))[0]
    assert torch.allclose(loaded(x), result.model(x), atol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("method", ["sensitivity", "figs"])
def test_cuda_amp_probes_and_reconstruction(task, cuda, method):
    _, data, model, _ = task
    config = quick_config(method=method, device="cuda:0", amp=True, reconstruct=True, search_epochs=1)
    result = cascomp.compress(model, config, data=data, progress=False)
    expected = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    assert result.report["environment"]["amp"] == expected
    assert result.report["targets"]["flops"]["within_1pct"] and result.report["ratios"]["flops"] <= 0.5
    assert {p.dtype for p in result.model.parameters()} == {torch.float32}
    assert all(p.device.type == "cpu" for p in (*result.model.parameters(), *model.parameters()))

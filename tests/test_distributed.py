"""Several processes under torchrun (issue 16, item 2): the batch slices, the one-process cluster's no-ops,
and two-process gloo runs on this CPU that compute what the one-process run computes (tests/distributed_job.py
runs them): the same plan and, within all-reduce rounding, the same weights; rank 0 alone writes and prints;
a run stopped after a checkpoint resumes as one process and as two; an error names its rank."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cascomp.errors import ConfigError
from cascomp.train.distributed import Cluster, has_unused_parameters
from tests.distributed_job import write_data

ROOT = Path(__file__).resolve().parent.parent
JOB = ROOT / "tests" / "distributed_job.py"


# -- slices and the cluster, in one process ------------------------------------------------------------------
def _loader(samples: int, batch_size: int, seed: int = 0) -> DataLoader:
    data = TensorDataset(torch.arange(samples).float(), torch.arange(samples))
    return DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("samples", [40, 45, 41])
def test_training_slices_are_the_one_process_batches(world, samples):
    """Rank r's k-th slice is the r-th equal part of the one-process run's k-th batch, drawn from the same
    seeded order; only the remainder of the last batch (size mod world) is left out."""
    reference = [y.tolist() for _, y in _loader(samples, 12)]
    slices = []
    for rank in range(world):
        loader = _loader(samples, 12)
        sharded = Cluster(rank, world).shard(loader, train=True)
        slices.append([y.tolist() for _, y in sharded])
        assert len(sharded) == len(slices[-1])
    for step, batch in enumerate(reference):
        size = len(batch) // world
        if size == 0:
            assert all(len(rank_slices) == step for rank_slices in slices)
            continue
        assert [rank_slices[step] for rank_slices in slices] == [batch[r * size:(r + 1) * size] for r in range(world)]


@pytest.mark.parametrize("world", [2, 3, 5])
def test_evaluation_slices_keep_every_sample_once(world):
    loader = DataLoader(TensorDataset(torch.zeros(13), torch.arange(13)), batch_size=4)
    seen = sorted(int(v) for rank in range(world) for _, y in Cluster(rank, world).shard(loader, train=False) for v in y)
    assert seen == list(range(13))


def test_one_process_cluster_changes_nothing():
    cluster = Cluster()
    loader = _loader(10, 4)
    assert not cluster.distributed and cluster.is_main and cluster.tag == ""
    assert cluster.shard(loader, train=True) is loader
    model = nn.Linear(2, 2)
    assert cluster.wrap(model, lambda: pytest.fail("no example is needed")) is model
    assert cluster.sum([1.0, 2.5]) == [1.0, 2.5] and cluster.broadcast({"a": 1}) == {"a": 1}
    assert cluster.gather(3) == [3] and list(cluster.share(3)) == [0, 1, 2]


def test_torchrun_environment():
    with mock.patch.dict(os.environ, {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}):
        cluster = Cluster.from_environment()
    assert (cluster.rank, cluster.world_size, cluster.local_rank, cluster.tag) == (1, 2, 1, "rank 1/2")
    assert list(cluster.share(5)) == [1, 3]
    assert cluster.device(torch.device("cpu")) == torch.device("cpu")
    assert cluster.device(torch.device("cuda")) == torch.device("cuda", 1)
    cluster.check_batch(64)
    with pytest.raises(ConfigError, match="--batch-size 33 is the global batch.*multiple of 2"):
        cluster.check_batch(33)
    with mock.patch.dict(os.environ, {"RANK": "x", "WORLD_SIZE": "2"}), pytest.raises(ConfigError, match="torchrun"):
        Cluster.from_environment()
    with mock.patch.dict(os.environ, {"RANK": "2", "WORLD_SIZE": "2"}), pytest.raises(ConfigError, match="below"):
        Cluster.from_environment()


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body, self.norm = nn.Linear(3, 4), nn.BatchNorm1d(4)
        self.head, self.other = nn.Linear(4, 2), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(nn.functional.dropout(self.norm(self.body(x)), 0.5))


def test_unused_parameters_are_found_and_the_check_leaves_no_trace():
    model = TwoHeads().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(3)
    assert has_unused_parameters(model, torch.randn(4, 3))
    draw = torch.rand(1)
    torch.manual_seed(3)
    torch.randn(4, 3)
    assert torch.equal(draw, torch.rand(1))  # the check's dropout draws were undone
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics too
    model.other.requires_grad_(False)
    assert not has_unused_parameters(model, torch.randn(4, 3))


# -- two processes ------------------------------------------------------------------------------------------
def _launch(folder: Path, out: str, processes: int, *options: str, expect: int = 0) -> str:
    command = [sys.executable, str(JOB), str(folder), out, *options]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                   *command[1:]]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment, cwd=folder)
    assert done.returncode == expect, done.stderr[-3000:]
    return done.stderr


def _result(folder: Path) -> tuple[dict, dict, dict]:
    model = torch.load(folder / "model.pt", weights_only=False)
    return (json.loads((folder / "plan.json").read_text()), model.state_dict(),
            json.loads((folder / "report.json").read_text()))


def _same(one: Path, other: Path) -> None:
    plan, weights, report = _result(one)
    other_plan, other_weights, other_report = _result(other)
    assert plan == other_plan
    assert weights.keys() == other_weights.keys()
    for key, value in weights.items():
        torch.testing.assert_close(other_weights[key], value, rtol=1e-4, atol=1e-5, msg=key)
    for phase in ("search", "finetune"):
        for row, other_row in zip(report[phase]["epochs"], other_report[phase]["epochs"]):
            assert other_row["val_acc"] == row["val_acc"]
            assert other_row["train_acc"] == pytest.approx(row["train_acc"])
            assert other_row["loss"] == pytest.approx(row["loss"], rel=1e-5)
    for field in ("flops", "params", "top1"):
        assert other_report["compressed"][field] == report["compressed"][field], field
    assert other_report["widths"] == report["widths"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """FiGS (weights and gates trained, random gate draws) as one process and as two."""
    folder = tmp_path_factory.mktemp("distributed")
    write_data(folder)
    logs = {"one": _launch(folder, "one", 1), "two": _launch(folder, "two", 2)}
    return folder, logs


def test_two_processes_compute_what_one_computes(runs):
    folder, _ = runs
    _same(folder / "one", folder / "two")
    assert _result(folder / "two")[2]["environment"]["processes"] == 2


def test_rank_zero_alone_writes_and_prints(runs):
    folder, logs = runs
    assert sorted(os.listdir(folder / "two")) == sorted(os.listdir(folder / "one"))
    for line in ("search 1/2", "search 2/2", "fine-tune 1/1", "compressed"):
        assert logs["two"].count(line) == 1, line


def test_stopped_run_resumes_as_one_process_and_as_two(runs):
    folder, _ = runs
    _launch(folder, "stopped", 2, "--stop-after", "1", expect=1)  # torchrun's status for a failed worker
    stopped = folder / "stopped"
    assert (stopped / "checkpoint.pt").exists() and not (stopped / "report.json").exists()
    for processes in (1, 2):
        shutil.copytree(stopped, folder / f"resumed{processes}")
        _launch(folder, f"resumed{processes}", processes, "--resume")
        _same(folder / "two", folder / f"resumed{processes}")


def test_probes_are_shared_out(tmp_path):
    """sensitivity's probes, every other one measured by each process, decide what one process decides."""
    write_data(tmp_path)
    _launch(tmp_path, "one", 1, "--method", "sensitivity")
    log = _launch(tmp_path, "two", 2, "--method", "sensitivity")
    _same(tmp_path / "one", tmp_path / "two")
    report = _result(tmp_path / "two")[2]
    assert report["search"]["probes"]["images"] == _result(tmp_path / "one")[2]["search"]["probes"]["images"]
    assert log.count("probes:") == 1


def test_darc_drops_options_under_two_processes(tmp_path):
    """darc stops computing the options it drops after a block: DDP must look for unused parameters every
    step (it stopped with "Expected to have finished reduction" before), and two processes decide what one does."""
    write_data(tmp_path)
    _launch(tmp_path, "one", 1, "--method", "darc")
    _launch(tmp_path, "two", 2, "--method", "darc")
    _same(tmp_path / "one", tmp_path / "two")
    report = _result(tmp_path / "two")[2]
    assert report["search"]["method"]["operators"] == _result(tmp_path / "one")[2]["search"]["method"]["operators"]


def _torchrun_cascomp(folder: Path, *arguments: str) -> subprocess.CompletedProcess:
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10))
    torch.save(model, folder / "model.pt")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "cascomp",
               "compress", "model.pt", "--data", "digits:", "-o", "out", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=folder,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})


def test_command_line_under_torchrun(tmp_path):
    """`torchrun ... -m cascomp compress`: rank 0 claims the folder, writes it and prints; one summary."""
    done = _torchrun_cascomp(tmp_path, "--method", "l1", "--epochs", "1", "--limit-train", "320", "--batch-size", "32")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote out/") == 1 and done.stderr.count("fine-tune 1/1") == 1
    assert {"run.json", "report.json", "model.onnx"} <= set(os.listdir(tmp_path / "out"))
    assert json.loads((tmp_path / "out" / "report.json").read_text())["environment"]["processes"] == 2


def test_command_line_error_names_each_rank(tmp_path):
    done = _torchrun_cascomp(tmp_path, "--batch-size", "33")
    assert done.returncode != 0
    for rank in (0, 1):
        assert f"cascomp: error: rank {rank}/2: --batch-size 33 is the global batch" in done.stderr
    assert "internal error" not in done.stderr  # (the traceback below the lines is torchrun's own summary)
    assert not (tmp_path / "out" / "report.json").exists()

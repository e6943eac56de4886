"""A compress run of a tiny model on tiny data, for tests/test_distributed.py: run as one process
(`python tests/distributed_job.py ...`) or as several (`python -m torch.distributed.run --nproc-per-node 2
tests/distributed_job.py ...`). Every process builds the same data and baseline from the seed.

The baseline has no BatchNorm: DDP normalises each process's slice of the batch on its own, so only a model
without BatchNorm computes exactly what the one-process run computes (see cascomp.train.distributed).

--stop-after N ends every process right after the N-th epoch's checkpoint, as a kill would (os._exit after a
barrier, so that rank 0 has written it); the test then resumes the run with --resume.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cascomp  # noqa: E402
from tests.search_fixtures import fit_classifier, quadrant_task  # noqa: E402

STOPPED = 3  # the exit status of a run ended by --stop-after
DATA = "quadrants.npz"


def write_data(folder: Path) -> None:
    """The task every run reads (400 samples: 360 for training, 40 for validation)."""
    quadrant_task(folder / DATA, samples=400)


class PlainNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(nn.functional.avg_pool2d(x, 4).flatten(1))  # one value per quadrant and channel


def baseline(data) -> PlainNet:
    torch.manual_seed(0)
    return fit_classifier(PlainNet(), data, epochs=3, lr=0.1)  # 70 % validation top-1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path, help="holds the task's data (write_data); outputs go to folder/OUT")
    parser.add_argument("out")
    parser.add_argument("--method", default="figs")
    parser.add_argument("--stop-after", type=int)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = cascomp.load_data(f"tensors:{args.folder / DATA}", batch_size=40, seed=0)  # 360 training samples: 9 batches
    config = cascomp.CompressConfig(method=args.method, targets=("flops=0.5",), search_epochs=2, finetune_epochs=1,
                                    lr=0.02, latency_batch_sizes=(1,), device="cpu")
    done = [0]

    def stop(phase: str, epoch: int) -> None:
        done[0] += 1
        if args.stop_after is not None and done[0] == args.stop_after:
            if dist.is_initialized():
                dist.barrier()
            os._exit(STOPPED)

    cascomp.compress(baseline(data), config, data=data, out_dir=args.folder / args.out, resume=args.resume,
                     progress=True, on_epoch=stop)


if __name__ == "__main__":
    main()

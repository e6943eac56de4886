"""Zoo models whose forward torch.fx cannot trace (see ENTRIES): captured by the fallback paths of
cascomp.ir.trace (a submodule kept whole; torch.export for the top-level forward).

tests.models merges ENTRIES into its ZOO, whose builders randomise the normalisation and switch to eval
mode."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cascomp.zoo import ZooEntry


class ShapeBranchNet(nn.Module):
    """A top-level forward that branches on its input's size (as multi-scale models do): fx cannot trace it,
    torch.export specialises the branch to the example's size."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU())
        self.small = nn.Conv2d(24, 24, 1)
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(self.stem(x))
        if x.shape[-1] > 8:  # large inputs are pooled first
            x = F.avg_pool2d(x, 2)
        else:
            x = self.small(x)
        return self.head(x.mean(dim=(2, 3)))


class ChunkScaled(nn.Module):
    """Loops over its input's channels in chunks (`range` of a size): torch.fx cannot trace that, so it is
    kept whole as a leaf; an ONNX trace unrolls the loop."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)
        return torch.cat([y[:, i:i + 4] * (1 + i / 4) for i in range(0, x.shape[1], 4)], dim=1)


class OpaqueBlockNet(nn.Module):
    """A prunable stem and head around a submodule kept whole: its channels are frozen, its cost counted."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.inner = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 16, 3, padding=1))
        self.gate = ChunkScaled(16)
        self.head = nn.Sequential(nn.Conv2d(16, 32, 1), nn.ReLU())
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gate(self.inner(self.stem(x)))
        return self.fc(self.head(x).mean(dim=(2, 3)))


ENTRIES: dict[str, ZooEntry] = {
    "shape_branch": ZooEntry(ShapeBranchNet, ((2, 3, 16, 16),),
                             "Top-level forward branching on the input size: captured by torch.export.",
                             fx_traceable=False),
    "opaque_block": ZooEntry(OpaqueBlockNet, ((2, 3, 16, 16),),
                             "A submodule fx cannot trace, kept whole between prunable layers.",
                             fx_traceable=False),
}

"""The benchmarks' baseline networks for 1x28x28 images (from cascomp.zoo), and their cached training.

`resnet20`: He et al.'s CIFAR ResNet-20, where residual adds tie most widths together and every layer is about
equally redundant. `vgg`: a plain VGG-style net whose layers are far from equally redundant (16 channels at
28x28, 128 at 3x3), so how a method allocates widths across layers matters. `wrn10_2`: Zagoruyko and Komodakis's WRN-10-2, twice
ResNet-20's widths with one block per stage (about ResNet-20's FLOPs, so it trains here in the same time):
where replacing a 3x3 convolution by a cheaper operator pays (DARC's best results are on WRNs).
"""

from __future__ import annotations

import os
from functools import partial
import tempfile
from pathlib import Path

import torch
from torch import nn

from cascomp.train.demo import train_demo_model  # the demo's training recipe
from cascomp.zoo.resnet20 import ResNet20
from cascomp.zoo.vgg import VGG
from cascomp.zoo.wide_resnet import WideResNet


BASELINES = {"resnet20": ResNet20, "vgg": VGG, "wrn10_2": partial(WideResNet, 10, 2)}
INPUT = (1, 1, 28, 28)


def baseline(name: str, data, *, epochs: int, cache: Path, log=print) -> nn.Module:
    """The trained baseline `name`: loaded from `cache` when there, else trained (seed 0, SGD with cosine decay,
    lr 0.05) on `data` for `epochs` epochs and saved there atomically."""
    model = BASELINES[name]()
    if cache.is_file():
        model.load_state_dict(torch.load(cache, weights_only=True))
        return model.eval()
    torch.manual_seed(0)
    train_demo_model(model, data, epochs, lr=0.05, log=lambda line: log(line), label=f"baseline {name}")
    cache.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=cache.parent, prefix=cache.name, suffix=".part")
    os.close(handle)
    torch.save(model.state_dict(), temporary)
    os.replace(temporary, cache)
    return model.eval()

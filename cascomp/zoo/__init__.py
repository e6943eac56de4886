"""Model families for tests, benchmarks, the demo and the README, importable after a plain install.

    from cascomp.zoo import build, example_inputs, names
    model = build("resnet_basic")            # a fresh nn.Module, as its constructor leaves it (train mode)
    x = example_inputs("resnet_basic")       # a tuple of random inputs, reproducible for a seed

One file per family (``cascomp.zoo.resnet``, ``.mobilenet``, ``.vit``, ...) holds its modules; ``ZOO`` below
names the configurations, each with its inputs. Suites (``names(suite)``): ``"tiny"`` models cover the
channel-dependency patterns a pruner must handle (residual adds, depthwise and grouped convolutions,
concatenations, channel shuffles, squeeze-excite gates, attention heads, windows, embeddings, several inputs)
and build and run in milliseconds on a CPU; ``"mnist"`` models are classifiers for 1x28x28 images (the demo
network, the benchmarks' ResNet-20 and VGG baselines); ``"imagenet"`` models are full-size networks at
224x224, written from the published architectures, for timing. Every model traces with
``torch.fx.symbolic_trace``. This package depends on torch only.
"""

from __future__ import annotations

import difflib
from functools import partial
from types import MappingProxyType
from typing import Mapping

import torch
from torch import nn

from cascomp.errors import ConfigError
from cascomp.zoo.attention import MultiheadAttentionBlockModel
from cascomp.zoo.convnext import ConvNeXt, convnext_tiny
from cascomp.zoo.demo import DemoNet
from cascomp.zoo.densenet import DenseNet, densenet121
from cascomp.zoo.efficientnet import EfficientNetMBConv, efficientnet_b0
from cascomp.zoo.entry import SUITES, ZooEntry
from cascomp.zoo.inception import InceptionNet
from cascomp.zoo.language import EmbeddingLanguageModel
from cascomp.zoo.misc import MLP, GroupNormNet, MultiInputNet, PixelShuffleNet
from cascomp.zoo.mobilenet import MobileNetV2, MobileNetV3
from cascomp.zoo.resnet import (BasicBlock, Bottleneck, GroupedConvNet, PreActResNet, ResNet, resnet50,
                                resnet50_deep)
from cascomp.zoo.resnet20 import ResNet20
from cascomp.zoo.shufflenet import ShuffleNetV2
from cascomp.zoo.swin import Swin
from cascomp.zoo.unet import UNet
from cascomp.zoo.vgg import VGG
from cascomp.zoo.wide_resnet import WideResNet
from cascomp.zoo.vit import FusedQkvAttention, SeparateQkvAttention, VisionTransformer, vit_b16

__all__ = ["SUITES", "ZOO", "ZooEntry", "build", "example_inputs", "names"]

_IMAGE_16 = ((2, 3, 16, 16),)
_IMAGE_32 = ((2, 3, 32, 32),)
_MNIST = ((2, 1, 28, 28),)
_IMAGENET = ((1, 3, 224, 224),)

_ENTRIES: dict[str, ZooEntry] = {
    # -- tiny: one channel-dependency pattern each ----------------------------------------------------------
    "mlp": ZooEntry(MLP, ((2, 20),), "Linear-ReLU chain."),
    "resnet_basic": ZooEntry(
        partial(ResNet, BasicBlock, [2, 2], [16, 32], stem_width=16),
        _IMAGE_16,
        "Basic residual blocks, identity and strided 1x1-projection shortcuts.",
    ),
    "resnet_bottleneck": ZooEntry(
        partial(ResNet, Bottleneck, [2, 1], [8, 12], stem_width=16),
        _IMAGE_16,
        "Bottleneck blocks; first block of each stage has a projection shortcut.",
    ),
    "preact_resnet": ZooEntry(PreActResNet, _IMAGE_16, "Pre-activation residual blocks."),
    "mobilenet_v2": ZooEntry(MobileNetV2, _IMAGE_16, "Inverted residuals, depthwise convolutions, ReLU6."),
    "mobilenet_v3": ZooEntry(
        MobileNetV3, _IMAGE_16, "Depthwise blocks, squeeze-excite with hardsigmoid, Hardswish."
    ),
    "efficientnet_mbconv": ZooEntry(
        EfficientNetMBConv, _IMAGE_16, "MBConv with sigmoid squeeze-excite and stochastic depth."
    ),
    "inception": ZooEntry(
        InceptionNet, _IMAGE_16, "Four-branch concatenations and a concatenation of concatenations."
    ),
    "densenet": ZooEntry(DenseNet, _IMAGE_16, "Dense blocks with growing concatenation, transition."),
    "shufflenet_v2": ZooEntry(
        ShuffleNetV2, _IMAGE_16, "Channel split by chunk, concatenation, channel shuffle via view."
    ),
    "unet": ZooEntry(
        UNet, _IMAGE_16, "Encoder-decoder, transposed convolutions, skip concatenations; outputs a map."
    ),
    "convnext": ZooEntry(
        ConvNeXt, _IMAGE_32, "Depthwise 7x7, channels-last LayerNorm and Linear, layer scale."
    ),
    "vit": ZooEntry(
        partial(VisionTransformer, FusedQkvAttention, use_class_token=True),
        _IMAGE_32,
        "Vision transformer with class token, fused qkv and scaled_dot_product_attention.",
    ),
    "vit_manual_attention": ZooEntry(
        partial(VisionTransformer, SeparateQkvAttention, use_class_token=False),
        _IMAGE_32,
        "Vision transformer with separate q/k/v, hand-written attention, mean pooling.",
    ),
    "swin": ZooEntry(
        Swin, _IMAGE_32, "Window partition/reverse, torch.roll shift, patch merging concatenation."
    ),
    "mha": ZooEntry(
        MultiheadAttentionBlockModel,
        ((2, 10, 32),),
        "Transformer block using nn.MultiheadAttention (packed in_proj_weight, batch_first); heads prune.",
    ),
    "embedding_lm": ZooEntry(
        EmbeddingLanguageModel,
        ((2, 12),),
        "Embedding on integer tokens, residual MLP, LayerNorm, head to vocabulary.",
        input_dtypes=(torch.int64,),
        integer_input_high=50,
    ),
    "pixel_shuffle": ZooEntry(
        PixelShuffleNet, _IMAGE_16, "PixelShuffle and PixelUnshuffle inside a residual."
    ),
    "multi_input": ZooEntry(
        MultiInputNet,
        ((2, 3, 16, 16), (2, 8)),
        "Two tensor inputs and a defaulted float keyword, fused by concatenation.",
    ),
    "grouped_conv": ZooEntry(GroupedConvNet, _IMAGE_16, "ResNeXt blocks with a groups=4 3x3 convolution."),
    "groupnorm": ZooEntry(GroupNormNet, _IMAGE_16, "GroupNorm and affine InstanceNorm2d with a residual."),
    # -- mnist: classifiers for 1x28x28 images -------------------------------------------------------------
    "demo": ZooEntry(
        DemoNet, _MNIST, "The demo CNN: stem, three residual stages of 16, 32 and 64 channels.", suite="mnist"
    ),
    "resnet20": ZooEntry(
        ResNet20, _MNIST, "CIFAR-style ResNet-20 (3 stages x 3 blocks, 16/32/64 channels).", suite="mnist"
    ),
    "vgg": ZooEntry(
        VGG, _MNIST, "Plain VGG-style net: seven 3x3 conv-BN-ReLU layers, 16 to 128 channels.", suite="mnist"
    ),
    "wrn10_2": ZooEntry(
        partial(WideResNet, 10, 2), _MNIST, "Wide ResNet WRN-10-2: pre-activation blocks, one per stage, 32/64/128 channels.",
        suite="mnist",
    ),
    # -- imagenet: full-size networks at 224x224 ------------------------------------------------------------
    "resnet50": ZooEntry(resnet50, _IMAGENET, "ResNet-50, about 25.6 M parameters.", suite="imagenet"),
    "resnet50_deep": ZooEntry(
        resnet50_deep, _IMAGENET, "ResNet-50 with twice the blocks per stage: 6, 8, 12, 6.", suite="imagenet"
    ),
    "densenet121": ZooEntry(
        densenet121, _IMAGENET, "DenseNet-121, about 7.98 M parameters.", suite="imagenet"
    ),
    "efficientnet_b0": ZooEntry(
        efficientnet_b0, _IMAGENET, "EfficientNet-B0, about 5.29 M parameters.", suite="imagenet"
    ),
    "vit_b16": ZooEntry(
        vit_b16, _IMAGENET, "ViT-B/16 (197 tokens), about 86.6 M parameters.", suite="imagenet"
    ),
    "convnext_tiny": ZooEntry(
        convnext_tiny, _IMAGENET, "ConvNeXt-T, about 28.6 M parameters.", suite="imagenet"
    ),
}

ZOO: Mapping[str, ZooEntry] = MappingProxyType(_ENTRIES)
"""Every zoo model by name, read-only, in the order above."""


def names(suite: str | None = None) -> tuple[str, ...]:
    """The zoo's model names, all of them or those of one suite ("tiny", "mnist" or "imagenet")."""
    if suite is not None and suite not in SUITES:
        raise ConfigError(f"unknown zoo suite {suite!r}; choose one of {', '.join(SUITES)}")
    return tuple(name for name, entry in ZOO.items() if suite is None or entry.suite == suite)


def _entry(name: str) -> ZooEntry:
    if name not in ZOO:
        close = difflib.get_close_matches(str(name), list(ZOO), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown zoo model {name!r}{hint}; choose one of {', '.join(ZOO)}")
    return ZOO[name]


def build(name: str, **kwargs) -> nn.Module:
    """A freshly constructed zoo model `name` (train mode, the constructor's initialisation: seed torch first
    for the same weights); `kwargs` go to its constructor, e.g. ``build("resnet_basic", num_classes=5)``."""
    return _entry(name).build(**kwargs)


def example_inputs(name: str, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs for zoo model `name`: a tuple, one tensor per forward argument, the same for a seed."""
    return _entry(name).example_inputs(seed)

"""cascomp.zoo: every model builds, runs and traces; the registry's look-ups and errors; the zoo imports only
torch and cascomp.errors. (tests/test_models.py checks the tests' prepared zoo, fixtures included.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torch.fx

from cascomp import zoo
from cascomp.errors import ConfigError

SMALL = zoo.names("tiny") + zoo.names("mnist")


def _build(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return zoo.build(name, **kwargs)


@pytest.mark.parametrize("name", SMALL)
def test_zoo_model_builds_runs_and_traces(name: str) -> None:
    model = _build(name)
    assert model.training, "build returns the model as its constructor leaves it"
    model.eval()
    inputs = zoo.example_inputs(name)
    with torch.no_grad():
        eager = model(*inputs)
        traced = torch.fx.symbolic_trace(model)(*inputs)
    assert torch.isfinite(eager).all()
    assert traced.shape == eager.shape and torch.allclose(traced, eager, atol=1e-5)
    again = _build(name).state_dict()
    assert all(torch.equal(value, again[key]) for key, value in model.state_dict().items())


@pytest.mark.parametrize("name, expected", [("resnet_basic", (2, 5)), ("vit", (2, 5)), ("demo", (2, 5))])
def test_build_passes_keywords_to_the_constructor(name: str, expected: tuple[int, ...]) -> None:
    with torch.no_grad():
        assert _build(name, num_classes=5).eval()(*zoo.example_inputs(name)).shape == expected


@pytest.mark.parametrize("name, millions", [("resnet50", 25.6), ("densenet121", 7.98),
                                            ("efficientnet_b0", 5.29), ("vit_b16", 86.6),
                                            ("convnext_tiny", 28.6)])
def test_full_size_models_have_their_published_sizes(name: str, millions: float) -> None:
    with torch.device("meta"):  # no memory, no initialisation: only the architecture is checked
        model = zoo.build(name)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(millions, rel=0.01)
    torch.fx.symbolic_trace(model.eval())
    assert zoo.ZOO[name].input_shapes == ((1, 3, 224, 224),)


def test_the_benchmark_baselines_keep_their_parameter_names() -> None:
    """benchmarks/peers.py loads cached trained state dicts into them: renaming a module breaks the cache."""
    resnet20, vgg = zoo.build("resnet20").state_dict(), zoo.build("vgg").state_dict()
    assert (len(resnet20), sum(v.numel() for v in resnet20.values())) == (128, 273_775)
    assert list(resnet20)[:3] == ["stem.0.weight", "stem.1.weight", "stem.1.bias"]
    assert "stages.1.0.shortcut.0.weight" in resnet20 and list(resnet20)[-1] == "fc.bias"
    assert (len(vgg), sum(v.numel() for v in vgg.values())) == (44, 148_001)
    assert list(vgg)[:2] == ["features.0.weight", "features.1.weight"] and list(vgg)[-1] == "fc.bias"


def test_names_and_suites() -> None:
    assert set(zoo.names()) == set(zoo.ZOO) == set().union(*(zoo.names(s) for s in zoo.SUITES))
    assert len(zoo.names()) == sum(len(zoo.names(s)) for s in zoo.SUITES)
    assert {"resnet_basic", "mobilenet_v2", "inception", "densenet", "shufflenet_v2", "convnext", "vit",
            "swin"} <= set(zoo.names("tiny"))
    assert zoo.names("mnist") == ("demo", "resnet20", "vgg", "wrn10_2")
    with pytest.raises(TypeError):
        zoo.ZOO["mine"] = zoo.ZOO["mlp"]  # read-only
    with pytest.raises(ConfigError, match="unknown zoo suite 'huge'; choose one of tiny, mnist, imagenet"):
        zoo.names("huge")


def test_unknown_name_lists_the_names() -> None:
    listed = r"unknown zoo model 'resnet' .*choose one of mlp, resnet_basic, .*vgg"
    with pytest.raises(ConfigError, match=listed):
        zoo.build("resnet")
    with pytest.raises(ConfigError, match=r"did you mean 'swin'"):
        zoo.example_inputs("swim")


def test_example_inputs_are_reproducible() -> None:
    first, again, other = (zoo.example_inputs("multi_input", seed) for seed in (0, 0, 1))
    assert [t.shape for t in first] == [(2, 3, 16, 16), (2, 8)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])
    (tokens,) = zoo.example_inputs("embedding_lm")
    assert tokens.dtype == torch.int64 and 0 <= int(tokens.min()) and int(tokens.max()) < 50


def test_the_zoo_imports_only_torch_and_cascomp_errors() -> None:
    """zoo depends on nothing above it in cascomp (STYLE.md: imports point one way)."""
    allowed = ("torch", "cascomp.errors", "cascomp.zoo", "__future__", "dataclasses", "typing", "types",
               "functools", "difflib")
    for path in sorted((Path(zoo.__file__).parent).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                assert module.startswith(allowed), f"{path.name} imports {module}"

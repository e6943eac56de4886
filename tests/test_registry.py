"""The method registry (issue 17, "one registry"): a method is its file — the Method subclass with its config
dataclass beside it, whose `option(...)` fields are its command-line flags — plus one line in
cascomp/methods/__init__.py. Proven here by registering a throwaway method at run time: CompressConfig,
compress, its flag on the command line and the refusals of flags that are not its own all come from it."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

import cascomp
from cascomp import cli
from cascomp.config import METHOD_CONFIGS, option
from cascomp.methods import METHODS, Decision, Method, register
from cascomp.methods.families import uniform_family
from cascomp.methods.scores import filter_norms, normalised
from tests.search_fixtures import saved_tiny_task


@dataclass(frozen=True, kw_only=True)
class LowestFirstConfig:
    invert: bool = option(False, "--lowest-first", "keep the channels of smallest filter norm", value=True)


class LowestFirst(Method):
    """Uniform widths; `invert` keeps the smallest filter norms instead of the largest."""

    title = "lowest-first"
    config_type = LowestFirstConfig

    def decide(self, model) -> Decision:
        scores = normalised(filter_norms(self.graph, model))
        if self.config.invert:
            scores = {name: -score for name, score in scores.items()}
        return Decision(scores=scores, family=uniform_family(self.graph))


@pytest.fixture
def registered():
    register("lowest", LowestFirst)
    yield
    METHODS.pop("lowest")
    METHOD_CONFIGS.pop("lowest")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return saved_tiny_task(tmp_path_factory.mktemp("registry"), samples=256)


def test_the_built_in_methods_are_registered_with_their_configs():
    assert sorted(METHODS) == sorted(METHOD_CONFIGS) == ["darc", "figs", "gensynth", "group-lasso", "l1", "morphnet", "sensitivity", "tas", "uniform",
                                                           "vardrop"]
    for name, method in METHODS.items():
        assert METHOD_CONFIGS[name] is method.config_type
        assert type(cascomp.CompressConfig(method=name).method_config) is method.config_type


def test_a_registered_method_runs_from_the_api(registered, task):
    _, data, model, _ = task
    config = cascomp.CompressConfig(method="lowest", method_config=LowestFirstConfig(invert=True),
                                    targets=("flops=0.5",), search_epochs=0, finetune_epochs=0,
                                    latency_batch_sizes=(1,))
    assert cascomp.CompressConfig.from_dict(config.to_dict()) == config
    result = cascomp.compress(model, config, data=data, progress=False)
    assert result.report["method"] == "lowest" and result.report["targets"]["flops"]["reached"] <= 0.5
    with pytest.raises(cascomp.ConfigError, match="method 'lowest' takes a LowestFirstConfig"):
        cascomp.CompressConfig(method="lowest", method_config=cascomp.FigsConfig())


def test_a_registered_method_and_its_flag_on_the_command_line(registered, task, tmp_path, capsys):
    spec, _, _, model_path = task
    common = ["compress", str(model_path), "--data", spec, "--target", "flops=0.5", "--epochs", "1"]
    assert cli.main([*common, "--method", "lowest", "--lowest-first", "-o", str(tmp_path / "out"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"] == "lowest" and report["config"]["method_config"] == {"invert": True}
    assert cli.main([*common, "--method", "figs", "--lowest-first", "-o", str(tmp_path / "figs")]) == 2
    assert "--lowest-first is a lowest-first option; method 'figs' does not take it" in capsys.readouterr().err
    assert cli.main([*common, "--method", "lowest", "--estimator", "concrete", "-o", str(tmp_path / "est")]) == 2
    assert "--estimator is a FiGS option; method 'lowest' does not take it" in capsys.readouterr().err


def test_unregistered_and_malformed_methods_are_refused():
    with pytest.raises(cascomp.ConfigError, match="unknown method 'lowest'"):
        cascomp.CompressConfig(method="lowest")
    with pytest.raises(cascomp.ConfigError, match="Method subclass with a config_type"):
        register("broken", type("Broken", (), {}))


def test_a_flag_that_turns_a_default_off(task, tmp_path, capsys):
    """sensitivity removes residual blocks by default; --keep-blocks (an option whose value is False) stops it."""
    spec, _, _, model_path = task
    assert cli.main(["compress", str(model_path), "--data", spec, "--target", "flops=0.5", "--epochs", "1",
                     "--method", "sensitivity", "--keep-blocks", "-o", str(tmp_path / "out"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"]["method_config"]["remove_blocks"] is False
    assert all(width["after"] > 0 for width in report["widths"].values())

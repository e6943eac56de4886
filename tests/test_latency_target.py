"""Latency as a budget (issue 18, item 5): `--target latency=R` or `latency=12ms`, priced by the per-layer
latency table through the cost model (exact at 0/1 keep), landed by the projection for any method, and the
report's prediction beside the measured ratio."""

from __future__ import annotations

import copy
import json

import onnxruntime
import pytest
import torch

import cascomp
from cascomp.cli.main import main
from cascomp.config import Target
from cascomp.errors import ConfigError
from cascomp.export import latency_table as table_module
from cascomp.export.latency_table import latency_table
from cascomp.methods import METHODS, DarcConfig, L1Config
from cascomp.passes import SubstituteOpsPass
from tests.exactness import zoo_graph
from tests.search_fixtures import TinyNet, quadrant_task, quick_config, saved_tiny_task, trained_tiny


@pytest.fixture(autouse=True)
def fake_timing(monkeypatch, tmp_path):
    """Timings that are a function of the layer (a run's cost plus a ms per MMAC): deterministic tests, and
    the cache in the test's own folder."""
    monkeypatch.setenv("CASCOMP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(table_module, "_time", lambda layer, x, *rest: 0.02 + 1e-6 * table_module._macs(layer, x))


def test_latency_targets_parse_and_round_trip():
    assert Target.parse("latency=0.5") == Target(metric="latency", value=0.5)
    assert Target.parse("latency=12ms") == Target(metric="latency", value=12.0, absolute=True)
    assert str(Target.parse("latency=12ms")) == "latency=12ms" and str(Target.parse("latency=0.4")) == "latency=0.4"
    for bad, message in (("latency=2", "must be below 1"), ("flops=3ms", "only latency takes"),
                         ("latency=5M", "only latency takes")):
        with pytest.raises(ConfigError, match=message):
            Target.parse(bad)
    config = cascomp.CompressConfig(targets=("latency=12ms",), latency_threads=2)
    assert cascomp.CompressConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="latency_threads"):
        cascomp.CompressConfig(latency_threads=0)
    with pytest.raises(ConfigError, match="latency_device must be 'cpu' or 'cuda'"):
        cascomp.CompressConfig(latency_device="tpu")
    assert cascomp.CompressConfig.from_dict(cascomp.CompressConfig(latency_device="cuda").to_dict()).latency_device == "cuda"


@pytest.mark.parametrize("name", ["resnet_basic", "mobilenet_v2"])
def test_the_predicted_latency_is_exact_at_zero_one_keep(name):
    graph = zoo_graph(name)
    table = latency_table(graph, batch=2)
    model = graph.cost_model
    model.attach_latency(table)
    try:
        by_node = {layer.node: layer for layer in table.layers}
        full = graph.cost()
        assert full.latency == pytest.approx(table.run_ms + sum(layer.predict(max(layer.macs)) for layer in table.layers))
        plan = cascomp.Plan.random(graph, 0.5, seed=3)
        node_macs = graph.node_costs(plan)
        expected = table.run_ms + sum(by_node[n].predict(2 * macs) if n in by_node else 0.0
                                      for n, macs in node_macs.items())
        unmatched = [n for n in node_macs if n not in by_node and node_macs[n]]
        if not unmatched:  # convolutions and linear layers only: every term has its own fit
            assert graph.cost(plan).latency == pytest.approx(expected, rel=1e-9)
        method = METHODS["l1"](graph, L1Config(), {"latency": 0.5})
        keep = plan.kept_channels(graph).double()
        ratios = method.expected_ratios(keep)
        assert float(ratios["latency"]) == pytest.approx(graph.cost(plan).latency / full.latency, rel=1e-9)
    finally:
        model.latency_table, model._latency = None, None  # the graph is shared with other tests


def test_a_latency_target_is_landed_and_reported(tmp_path):
    data = cascomp.load_data(quadrant_task(tmp_path / "q.npz", samples=256), batch_size=32, seed=0)
    model = trained_tiny(data, epochs=1)
    config = quick_config(method="l1", targets=("latency=0.6",), search_epochs=0, finetune_epochs=1)
    report = cascomp.compress(model, config, data=data, progress=False).report
    target = report["targets"]["latency"]
    assert target["within_1pct"] and 0.594 <= target["reached"] <= 0.6
    prediction = report["latency"]["prediction"]
    assert prediction["batch"] == 1 and prediction["threads"] == 1 and prediction["ratio"] == target["reached"]
    assert prediction["compressed_ms"] < prediction["baseline_ms"] and prediction["measured_ratio"] > 0
    assert report["baseline"]["latency_predicted_ms"] == prediction["baseline_ms"]
    with pytest.raises(ConfigError, match="darc: a latency target needs the baseline's latency table"):
        graph = cascomp.trace(TinyNet(), torch.randn(2, 1, 8, 8))
        METHODS["darc"](graph, DarcConfig(), {"latency": 0.5})


def test_darc_prices_every_operator_as_the_substituted_networks_table_does():
    """DARC(T): the latency of any choice of operators, as the search prices it (each option timed alone at its
    input shape), is the table prediction of the network those operators are substituted into."""
    x = torch.randn(2, 1, 8, 8)
    graph = cascomp.trace(TinyNet(), x)
    table = latency_table(graph)
    graph.cost_model.attach_latency(table)
    method = METHODS["darc"](graph, DarcConfig(), {"latency": 0.5})
    model = method.prepare()
    by_module = {layer.module: layer for layer in table.layers}
    for i, path in enumerate(method.choices):  # the original option is the table's own entry
        assert float(method._costs["latency"][i, 0]) == pytest.approx(by_module[path].predict(max(by_module[path].macs)))
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):
        winners = {path: int(torch.randint(len(choice.options), (1,), generator=generator))
                   for path, choice in method.choices.items()}
        substituted = cascomp.trace(SubstituteOpsPass(winners)(copy.deepcopy(model)).gm, x)
        substituted.cost_model.attach_latency(latency_table(substituted))
        predicted = method._ratios(winners)["latency"] * graph.cost().latency
        assert predicted == pytest.approx(substituted.cost().latency, rel=1e-9)
        for i, (path, choice) in enumerate(method.choices.items()):  # the penalty at a one-hot alpha agrees
            choice.alpha.data.zero_()
            choice.alpha.data[winners[path]] = 1.0
        assert float(method.penalty()["latency"].detach()) == pytest.approx(method._ratios(winners)["latency"], rel=1e-9)


def test_a_darc_run_lands_a_latency_target(tmp_path):
    data = cascomp.load_data(quadrant_task(tmp_path / "q.npz", samples=256), batch_size=32, seed=0)
    model = trained_tiny(data, epochs=1)
    config = quick_config(method="darc", method_config=DarcConfig(mimic_batches=2), targets=("latency=0.5",),
                          search_epochs=1, finetune_epochs=1)
    report = cascomp.compress(model, config, data=data, progress=False).report
    target = report["targets"]["latency"]
    assert target["within_1pct"] and 0.495 <= target["reached"] <= 0.5
    assert report["latency"]["prediction"]["ratio"] == pytest.approx(target["reached"])
    assert set(report["search"]["method"]["operators"]) == {"conv1", "conv2"}


def test_the_command_line_takes_a_latency_target(tmp_path, capsys):
    spec, _, _, path = saved_tiny_task(tmp_path, samples=256)
    out = tmp_path / "out"
    code = main(["compress", str(path), "--method", "uniform", "--target", "latency=0.7", "--latency-threads", "2",
                 "--data", spec, "-o", str(out), "--search-epochs", "0", "--finetune-epochs", "1", "--batch-size", "64"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["latency_threads"] == 2 and report["latency"]["prediction"]["threads"] == 2
    assert report["config"]["targets"] == ["latency=0.7"] and report["targets"]["latency"]["reached"] <= 0.7
    assert main(["compress", str(path), "--target", "latency=3ms", "--target", "flops=7ms", "--data", spec,
                 "-o", str(tmp_path / "bad")]) == 2
    assert "only latency takes the suffix ms" in capsys.readouterr().err
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():  # one line, exit 2, not a traceback
        assert main(["compress", str(path), "--target", "latency=0.7", "--latency-device", "cuda", "--data", spec,
                     "-o", str(tmp_path / "gpu"), "--search-epochs", "0", "--finetune-epochs", "1"]) == 2
        assert "onnxruntime has no CUDAExecutionProvider here" in capsys.readouterr().err

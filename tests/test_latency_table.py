"""The per-layer latency table (issue 18, item 5, first part): one entry per convolution and linear layer,
timed at several widths and fitted, cached per machine and key, printed by `cascomp analyze --latency`."""

from __future__ import annotations

import json

import pytest
import torch

import cascomp
from cascomp.cli.main import main
from cascomp.errors import ConfigError
from cascomp.export import latency_table as module
from cascomp.export.latency_table import format_table, latency_table
from tests.search_fixtures import TinyNet


@pytest.fixture()
def graph():
    return cascomp.trace(TinyNet().eval(), torch.randn(2, 1, 8, 8))


def _fake_time(calls):
    def timed(layer, x, provider, threads, warmup, repeats):
        calls.append(threads)
        return 0.01 + 1e-6 * module._macs(layer, x)  # a run's own cost plus a microsecond per MAC
    return timed


def test_every_layer_is_fitted_net_of_a_run_s_own_cost(graph, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(module, "_time", _fake_time(calls))
    table = latency_table(graph, cache_dir=tmp_path)
    assert [layer.module for layer in table.layers] == ["stem.0", "conv1", "conv2", "head.0", "fc"]
    assert table.run_ms == pytest.approx(0.01) and len(calls) == 1 + 5 * 4  # the run, then 4 widths per layer
    for layer in table.layers:
        assert layer.widths == (0.25, 0.5, 0.75, 1.0) and not layer.cached
        assert layer.intercept == pytest.approx(0.0, abs=1e-9) and layer.slope == pytest.approx(1e-6)
        assert layer.full_ms == pytest.approx(1e-6 * max(layer.macs))
        assert layer.predict(1000.0) == pytest.approx(1e-3)
    # conv1, 16 -> 32 channels, 3x3, 8x8, timed at widths in multiples of 8: a quarter is 8 of its 16 inputs and
    # 8 of its 32 outputs (1/8 of the MACs), three quarters 16 and 24; the stem's single input stays 1
    conv1, stem = table.layers[1], table.layers[0]
    assert max(conv1.macs) == 16 * 32 * 9 * 64
    assert [m / max(conv1.macs) for m in conv1.macs] == pytest.approx([1 / 8, 1 / 4, 3 / 4, 1])
    assert stem.macs[0] == pytest.approx(max(stem.macs) / 2)  # 1 input; 8 of its 16 outputs
    assert table.total_ms == pytest.approx(sum(layer.full_ms for layer in table.layers) + 0.01)
    text = format_table(table, measured_ms=2 * table.total_ms)
    assert "conv1" in text and "prediction / measured = 0.50" in text


def test_the_table_is_cached_and_a_changed_key_is_timed_again(graph, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(module, "_time", _fake_time(calls))
    first = latency_table(graph, cache_dir=tmp_path)
    timed = len(calls)
    again = latency_table(graph, cache_dir=tmp_path)
    assert len(calls) == timed and all(layer.cached for layer in again.layers)
    assert [layer.ms for layer in again.layers] == [layer.ms for layer in first.layers]
    latency_table(graph, cache_dir=tmp_path, threads=2)  # another thread count: every entry anew
    assert len(calls) == 2 * timed and calls[-1] == 2
    latency_table(graph, cache_dir=tmp_path, batch=4)  # another batch: the shapes differ
    assert len(calls) == 3 * timed
    key = lambda file: json.loads(file.read_text())["key"]  # noqa: E731
    entry = next(file for file in tmp_path.iterdir()
                 if key(file)["kind"] == "conv" and key(file)["threads"] == 1 and key(file)["batch"] == 1)
    entry.write_text("not json")  # a damaged layer entry is timed again (four widths), not trusted
    latency_table(graph, cache_dir=tmp_path)
    assert len(calls) == 3 * timed + 4
    with pytest.raises(ConfigError, match="batch"):
        latency_table(graph, cache_dir=tmp_path, batch=0)
    with pytest.raises(ConfigError, match="device"):
        latency_table(graph, cache_dir=tmp_path, device="tpu")


def test_real_timings_and_the_analyze_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CASCOMP_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "tiny.pt"
    torch.save(TinyNet().eval(), path)
    assert main(["analyze", str(path), "--input-shape", "1,1,8,8", "--latency", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    table = report["latency_table"]
    assert table["batch"] == 1 and table["threads"] == 1 and table["measured_ms"] > 0
    assert len(table["layers"]) == 5 and all(min(layer["ms"]) >= 0 for layer in table["layers"])
    assert table["total_ms"] > 0 and any((tmp_path / "cache" / "latency").iterdir())
    assert main(["analyze", str(path), "--input-shape", "1,1,8,8", "--latency"]) == 0
    assert "per-layer latency in onnxruntime" in capsys.readouterr().out

"""`cascomp compare` and `cascomp.compare`: the table from hand-made runs (means, sample std over seeds, failed
rows), atomic files, two cheap methods end to end on the tiny task, reruns that reuse finished runs and resume
an interrupted one, refusals, and the command line (exit statuses 2 and 3, --help)."""

from __future__ import annotations

import json
import re
import shutil

import pytest

import cascomp
from cascomp import api
from cascomp.cli import main
from cascomp.errors import SearchError
from cascomp.export import comparison as comparison_module
from cascomp.export.comparison import RunOutcome, summarise, write_comparison
from cascomp.methods import METHODS
from tests.search_fixtures import saved_tiny_task

QUICK = cascomp.CompressConfig(targets=("flops=0.5",), epochs=1)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return saved_tiny_task(tmp_path_factory.mktemp("compare"), samples=128)


@pytest.fixture(scope="module")
def compared(task, tmp_path_factory):
    """l1 and uniform compared on the tiny task, one fine-tuning epoch each: (result, its folder)."""
    _, data, model, _ = task
    out = tmp_path_factory.mktemp("compared") / "out"
    return cascomp.compare(model, QUICK, data=data, out_dir=out, methods=["l1", "uniform"], progress=False), out


def _report(top1: float, *, seconds: float = 3.0) -> dict:
    """What the table reads of a report.json."""
    return {"baseline": {"flops": 4e5, "params": 1e4, "top1": 0.9, "latency_ms": {"1": 0.04, "32": 0.6}},
            "compressed": {"flops": 2e5, "params": 5e3, "top1": top1, "latency_ms": {"1": 0.02, "32": 0.3}},
            "targets": {"flops": {"goal": 0.5, "reached": 0.495, "within_1pct": True}},
            "timings": {"total": seconds}}


def _hand_made() -> list[RunOutcome]:
    return [RunOutcome("l1", 0, "o/l1/seed-0", report=_report(0.80, seconds=2.0)),
            RunOutcome("l1", 1, "o/l1/seed-1", report=_report(0.84, seconds=4.0)),
            RunOutcome("figs", 0, "o/figs/seed-0", error="target flops=0.01 cannot be reached | try\nflops=0.1"),
            RunOutcome("figs", 1, "o/figs/seed-1", error="target flops=0.01 cannot be reached"),
            RunOutcome("uniform", 0, "o/uniform/seed-0", report=_report(0.70)),
            RunOutcome("uniform", 1, "o/uniform/seed-1", error="training diverged")]


# -- the table ------------------------------------------------------------------------------------------------
def test_the_table_gives_means_the_sample_std_over_seeds_and_failed_rows():
    comparison = summarise(_hand_made(), data="tensors:x.npz", seeds=(0, 1))
    l1, figs, uniform = comparison.rows
    assert (l1.top1_percent, l1.delta_top1_points, l1.seconds) == pytest.approx((82.0, -8.0, 3.0))
    assert l1.top1_std_percent == pytest.approx(2.8284, abs=1e-4)  # sample std (n - 1) of 80 and 84
    assert figs.runs == 0 and len(figs.failures) == 2 and uniform.runs == 1 and uniform.top1_std_percent is None
    lines = comparison.markdown().splitlines()
    assert lines[0] == "# cascomp compare · tensors:x.npz"
    assert "mean ± the sample standard deviation (n - 1) over the 2 seeds 0, 1" in lines[2]
    assert lines[4] == ("| method | MFLOPs | #Parameters | Top-1 (%) | Δ top-1 (pt) | FLOPs reached / target | "
                        "latency b1 (ms) | latency b32 (ms) | wall time (s) |")
    assert lines[6] == "| baseline | 0.40 | 10.0K | 90.00 |  |  | 0.040 | 0.600 |  |"
    assert lines[7] == "| l1 | 0.20 | 5.0K | 82.00 ± 2.83 | -8.00 | 0.495 / 0.500 | 0.020 | 0.300 | 3.0 |"
    assert lines[8] == ("| figs | failed: target flops=0.01 cannot be reached \\| try flops=0.1 |  |  |  |  |  |  |  |")
    assert lines[9].startswith("| uniform (1 of 2 runs) | 0.20 | 5.0K | 70.00 | -20.00 |")
    assert "- uniform, seed 1: training diverged" in lines
    assert all(len(re.findall(r"(?<!\\)\|", line)) == lines[4].count("|") for line in lines[4:10])  # cells
    assert json.loads(json.dumps(comparison.to_dict()))["methods"][0]["top1_std_percent"] == pytest.approx(2.8284,
                                                                                                         abs=1e-4)


def test_one_seed_says_so_and_has_no_std():
    comparison = summarise([RunOutcome("l1", 3, "o/l1", report=_report(0.8))], data="d", seeds=(3,))
    text = comparison.markdown()
    assert "One run per method, seed 3." in text and "±" not in text and "Failed runs" not in text


def test_the_files_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    comparison = summarise(_hand_made(), data="d", seeds=(0, 1))
    files = write_comparison(comparison, _hand_made(), tmp_path)
    assert sorted(path.name for path in files.values()) == ["compare.json", "compare.md", "compare.png"]
    assert files["png"].read_bytes().startswith(b"\x89PNG")
    assert json.loads(files["json"].read_text())["runs"][2]["error"].startswith("target flops=0.01")
    before = {name: path.read_bytes() for name, path in files.items()}

    def broken_plot(comparison, path):
        with open(path, "wb") as stream:
            stream.write(b"half a png")
        raise RuntimeError("the disk went away")

    monkeypatch.setattr(comparison_module, "plot_comparison", broken_plot)
    with pytest.raises(RuntimeError, match="disk went away"):
        write_comparison(summarise(_hand_made()[:1], data="d", seeds=(0,)), _hand_made()[:1], tmp_path)
    assert {name: path.read_bytes() for name, path in files.items()} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["compare.json", "compare.md", "compare.png"]


# -- the API --------------------------------------------------------------------------------------------------
def test_compare_runs_each_method_in_its_folder_and_writes_the_table(compared):
    result, out = compared
    assert [row.method for row in result.rows] == ["l1", "uniform"] and result.failed == ()
    assert result.files == {"png": out / "compare.png", "md": out / "compare.md", "json": out / "compare.json"}
    for row in result.rows:
        assert (out / row.method / "report.json").is_file() and (out / row.method / "model.onnx").is_file()
        assert row.runs == 1 and 0 <= row.top1_percent <= 100 and row.targets["flops"]["reached"] <= 0.5
        assert set(row.latency_ms) == {"1", "32"} and row.seconds > 0
    assert result.baseline.mflops > result.rows[0].mflops
    table = (out / "compare.md").read_text()
    assert "| baseline |" in table and "| l1 |" in table and "latency b32 (ms)" in table
    document = json.loads((out / "compare.json").read_text())
    assert [row["method"] for row in document["methods"]] == ["l1", "uniform"]
    assert (out / "compare.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads((out / "compare-run.json").read_text())["targets"] == ["flops=0.5"]


def test_a_rerun_reuses_the_finished_runs(task, compared, monkeypatch):
    _, data, model, _ = task
    first, out = compared
    stamps = {row.method: (out / row.method / "report.json").stat().st_mtime_ns for row in first.rows}

    def ran_again(*args, **kwargs):
        raise AssertionError("a finished run ran again")

    monkeypatch.setattr(api, "compress", ran_again)
    again = cascomp.compare(model, QUICK, data=data, out_dir=out, methods=["l1", "uniform"], progress=False)
    assert again.rows == first.rows and again.baseline == first.baseline
    assert {row.method: (out / row.method / "report.json").stat().st_mtime_ns for row in again.rows} == stamps


def test_a_rerun_with_other_settings_is_refused_and_force_starts_afresh(task, compared, tmp_path, monkeypatch):
    _, data, model, _ = task
    out = tmp_path / "out"
    shutil.copytree(compared[1], out)
    other = cascomp.CompressConfig(targets=("flops=0.4",), epochs=1)
    with pytest.raises(cascomp.ConfigError, match=r"other settings \(targets: \[\"flops=0.5\"\] then"):
        cascomp.compare(model, other, data=data, out_dir=out, methods=["l1"], progress=False)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "compress", killed)
    with pytest.raises(KeyboardInterrupt):
        cascomp.compare(model, other, data=data, out_dir=out, methods=["l1"], progress=False, force=True)
    assert sorted(path.name for path in out.iterdir()) == ["compare-run.json"]  # the old runs and table: gone
    assert json.loads((out / "compare-run.json").read_text())["targets"] == ["flops=0.4"]


def test_a_killed_compare_continues_where_it_stopped(task, tmp_path, monkeypatch):
    """Killed after l1's first of two epochs: the rerun resumes l1 from its checkpoint, then runs uniform."""
    _, data, model, _ = task
    config = cascomp.CompressConfig(targets=("flops=0.5",), epochs=2, latency_batch_sizes=(1,))

    def kill(method, seed, phase, epoch):
        if (method, phase, epoch) == ("l1", "finetune", 1):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cascomp.compare(model, config, data=data, out_dir=tmp_path, methods=["l1", "uniform"], progress=False,
                        on_epoch=kill)
    assert (tmp_path / "l1" / "checkpoint.pt").is_file() and not (tmp_path / "l1" / "report.json").exists()
    calls, epochs, real = [], [], api.compress

    def spy(model, config, **kwargs):
        calls.append((config.method, kwargs["resume"]))
        return real(model, config, **kwargs)

    monkeypatch.setattr(api, "compress", spy)
    result = cascomp.compare(model, config, data=data, out_dir=tmp_path, methods=["l1", "uniform"], progress=False,
                             on_epoch=lambda *args: epochs.append(args))
    assert calls == [("l1", True), ("uniform", False)]
    assert epochs == [("l1", 0, "finetune", 2), ("uniform", 0, "finetune", 1), ("uniform", 0, "finetune", 2)]
    assert result.failed == () and all(row.runs == 1 for row in result.rows)
    assert not (tmp_path / "l1" / "checkpoint.pt").exists()
    assert len(json.loads((tmp_path / "l1" / "report.json").read_text())["finetune"]["epochs"]) == 2


def test_seeds_run_each_method_in_a_folder_per_seed(task, tmp_path, monkeypatch):
    """Without training (compress stands in): every registered method by default, seeds seed, seed+1, and the
    same epoch total for each, split the method's own way."""
    _, data, model, _ = task
    calls = []

    def fake(model, config, *, out_dir, **kwargs):
        calls.append((config.method, config.seed, out_dir, config.search_epochs + config.finetune_epochs))
        return api.CompressResult(model=None, plan=None, report=_report(0.8 + 0.01 * config.seed))

    monkeypatch.setattr(api, "compress", fake)
    config = cascomp.CompressConfig(targets=("flops=0.5",), epochs=2, seed=5)
    result = cascomp.compare(model, config, data=data, out_dir=tmp_path, seeds=2, progress=False)
    assert calls == [(method, seed, tmp_path / method / f"seed-{seed}", 2) for method in sorted(METHODS)
                     for seed in (5, 6)]
    assert [row.method for row in result.rows] == sorted(METHODS)
    assert all(row.top1_std_percent == pytest.approx(0.7071, abs=1e-4) for row in result.rows)
    with pytest.raises(cascomp.ConfigError, match="unknown method 'nope'; choose from"):
        cascomp.compare(model, config, data=data, out_dir=tmp_path, methods=["l1", "nope"], progress=False)
    with pytest.raises(cascomp.ConfigError, match="seeds must be a whole number"):
        cascomp.compare(model, config, data=data, out_dir=tmp_path, seeds=0, progress=False)
    with pytest.raises(cascomp.ConfigError, match=r"got the string 'l1'; e.g. methods=\('l1',\)"):
        cascomp.compare(model, config, data=data, out_dir=tmp_path, methods="l1", progress=False)


# -- the command line ------------------------------------------------------------------------------------------
def test_cli_compare_records_a_failed_method_and_exits_3(task, tmp_path, capsys, monkeypatch):
    spec, _, _, path = task
    real = api.compress

    def uniform_fails(model, config, **kwargs):
        if config.method == "uniform":
            raise SearchError("target flops=0.5 cannot be reached | by uniform")
        return real(model, config, **kwargs)

    monkeypatch.setattr(api, "compress", uniform_fails)
    out = tmp_path / "cli"
    code = main(["compare", str(path), "--methods", "uniform,l1", "--target", "flops=0.5", "--data", spec,
                 "--epochs", "1", "--batch-size", "64", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 3, captured.err
    assert "compare: [1/2] uniform (seed 0)" in captured.err and "compare: [2/2] l1 (seed 0)" in captured.err
    assert "fine-tune 1/1" in captured.err  # compress's own progress
    table = (out / "compare.md").read_text()
    assert "| uniform | failed: target flops=0.5 cannot be reached \\| by uniform |" in table
    assert "| l1 | " in table and table in captured.out and "failed: uniform (exit status 3" in captured.out
    assert [run["error"] is None for run in json.loads((out / "compare.json").read_text())["runs"]] == [False, True]


@pytest.mark.parametrize("argv, message", [
    (["--methods", "l1,nope"], "--methods: unknown method 'nope'; choose from"),
    (["--target", "flops=x"], "cannot read target"),
    (["--model", "missing.pt"], "no model file at"),
    (["-o", "a-file"], "it is a file; give a folder"),
    (["--methods", "gensynth,l1", "--target", "drop=1"], "not understood by method 'l1'"),  # before gensynth runs
])
def test_cli_refuses_a_mistake_in_one_line_before_anything_runs(task, tmp_path, capsys, argv, message):
    spec, _, _, path = task
    (tmp_path / "a-file").write_text("")
    model = str(tmp_path / argv[1]) if argv[0] == "--model" else str(path)
    given = [] if argv[0] == "--model" else [arg if arg != "a-file" else str(tmp_path / arg) for arg in argv]
    out = [] if "-o" in given else ["-o", str(tmp_path / "out")]
    assert main(["compare", model, "--data", spec, *given, *out]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1 and error.startswith("cascomp: error:")
    assert not (tmp_path / "out").exists()


def test_cli_compare_help(capsys):
    assert main(["compare", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--methods A,B,..." in text and "--seeds N" in text and "exit status 3" in text

"""cascomp.cli.model_loading: every model format loads, every broken file gives one clear line; inputs and
atomic outputs (cascomp.export.atomic)."""

from __future__ import annotations

import random
import warnings

import pytest
import torch

from cascomp.cli.model_loading import check_runs, load_model, make_inputs, parse_input_shape
from cascomp.train.demo import save_demo_model
from cascomp.zoo.demo import INPUT_SHAPE
from cascomp.errors import ConfigError, ModelLoadError
from cascomp.export.atomic import atomic_output
from cascomp.zoo.demo import demo_model
from tests.cli_factory import TinyNet, build

FACTORY = "tests.cli_factory:build"
X = torch.randn(2, 1, 8, 8)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One file of every kind, written once for the module."""
    root = tmp_path_factory.mktemp("io")
    model = build()
    torch.save(model, root / "model.pt")
    torch.save(model.state_dict(), root / "weights.pt")
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}},
               root / "checkpoint.pt")
    torch.save({"epoch": 3, "lr": 0.1}, root / "not_a_model.pt")
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (X,), dynamic_shapes=({0: batch},))
    torch.export.save(program, root / "dynamic.pt2")
    torch.export.save(torch.export.export(model, (X[:1],)), root / "static_named.pt")  # content, not name, counts
    with warnings.catch_warnings():  # torch.jit says it is deprecated; users still hold such files
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model), root / "scripted.pt")
    (root / "empty.pt").write_bytes(b"")
    (root / "corrupt.pt").write_bytes(b"\x00" + random.Random(0).randbytes(300))
    (root / "truncated.pt").write_bytes((root / "model.pt").read_bytes()[:400])
    return root


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    with torch.no_grad():
        return torch.allclose(a.eval()(X), b.eval()(X))


def test_pickled_module_loads_with_a_one_line_warning(files):
    loaded = load_model(files / "model.pt")
    assert isinstance(loaded.module, TinyNet) and loaded.source == "pickle"
    assert loaded.example_inputs is None
    assert "pickle" in loaded.warning and "--safe" in loaded.warning and "\n" not in loaded.warning
    assert _same_outputs(loaded.module, build())


def test_safe_refuses_a_pickle_and_says_what_to_use(files):
    with pytest.raises(ModelLoadError, match=r"--safe.*\.pt2.*--factory"):
        load_model(files / "model.pt", safe=True)


def test_torch_export_file_is_safe_and_carries_its_examples(files):
    loaded = load_model(files / "dynamic.pt2", safe=True)
    assert loaded.source == "torch.export" and loaded.warning is None and loaded.fixed_batch is None
    assert [tuple(t.shape) for t in loaded.example_inputs] == [(2, 1, 8, 8)]
    loaded.module.eval()  # torch.export forbids this on .module(); export_onnx needs it
    assert _same_outputs(loaded.module, build())
    static = load_model(files / "static_named.pt")
    assert static.source == "torch.export" and static.fixed_batch == 1


def test_factory_loads_a_state_dict_or_builds_alone(files):
    loaded = load_model(files / "weights.pt", factory=FACTORY, safe=True)
    assert loaded.source == "factory" and loaded.warning is None
    assert _same_outputs(loaded.module, build())
    # A training checkpoint saved from nn.DataParallel: weights under "state_dict", keys under "module.".
    assert _same_outputs(load_model(files / "checkpoint.pt", factory=FACTORY).module, build())
    assert isinstance(load_model(None, factory=FACTORY).module, TinyNet)


@pytest.mark.parametrize("name, factory, message", [
    ("missing.pt", None, r"no model file at .*missing\.pt"),
    ("empty.pt", None, r"is empty \(0 bytes\)"),
    ("corrupt.pt", None, r"neither a torch\.save nor a torch\.export file"),
    ("truncated.pt", None, r"neither a torch\.save nor a torch\.export file \(corrupt or truncated"),
    ("scripted.pt", None, r"TorchScript archive"),
    ("weights.pt", None, r"holds a state dict .* pass --factory"),
    ("not_a_model.pt", None, r"holds a dict, not an nn\.Module"),
    ("weights.pt", "tests.cli_factory:build_wide", r"does not fit .* shape mismatch: conv1\.weight is \(4, 1, 3, 3\) "
                                                   r"in the file but \(8, 1, 3, 3\) in the model"),
    ("model.pt", FACTORY, r"with --factory, .* must be a state dict"),
    ("weights.pt", "tests.no_such_module:build", r"cannot import --factory .*No module named"),
    ("weights.pt", "tests.cli_factory:no_such_function", r"cannot import --factory .*no_such_function"),
    ("weights.pt", "tests.cli_factory:not_a_model", r"returned a str, not an nn\.Module"),
])
def test_broken_inputs_give_one_line_that_says_what_to_do(files, name, factory, message):
    with pytest.raises(ModelLoadError, match=message) as caught:
        load_model(files / name, factory=factory)
    assert "\n" not in str(caught.value)


def test_state_dict_that_does_not_fit_names_missing_and_unexpected_keys(files, tmp_path):
    state = build().state_dict()
    state["extra.weight"] = state.pop("fc.weight")
    torch.save(state, tmp_path / "renamed.pt")
    with pytest.raises(ModelLoadError, match=r"missing keys fc\.weight; unexpected keys extra\.weight"):
        load_model(tmp_path / "renamed.pt", factory=FACTORY)


def test_factory_spec_and_missing_model_are_config_errors():
    with pytest.raises(ConfigError, match="pkg.module:function"):
        load_model(None, factory="no_colon")
    with pytest.raises(ConfigError, match="give a model file"):
        load_model(None)


@pytest.mark.parametrize("text, shape", [("1,3,32,32", (1, 3, 32, 32)), (" 2, 20 ", (2, 20)), ("7", (7,))])
def test_parse_input_shape(text, shape):
    assert parse_input_shape(text) == shape


@pytest.mark.parametrize("text", ["1,3,x", "", "1,,3", "1,0,3", "1,-3", "1.5,3", "1x3x32"])
def test_parse_input_shape_rejects_malformed_values(text):
    with pytest.raises(ConfigError, match=r"--input-shape .* is not a positive integer; .* e\.g\."):
        parse_input_shape(text)


def test_make_inputs_is_seeded_and_typed():
    first, second = make_inputs([(2, 3), (2, 5)], ["float32", "int64"]), make_inputs([(2, 3), (2, 5)],
                                                                                    ["float32", "int64"])
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert first[0].dtype == torch.float32 and first[1].dtype == torch.int64
    assert set(first[1].unique().tolist()) <= {0, 1}  # valid token ids for any embedding
    assert [t.dtype for t in make_inputs([(1, 2), (1, 2)], ["bool"])] == [torch.bool, torch.bool]
    with pytest.raises(ConfigError, match="2 --input-dtype values for 3 --input-shape"):
        make_inputs([(1,), (1,), (1,)], ["float32", "int64"])
    with pytest.raises(ConfigError, match="unknown --input-dtype 'int7'"):
        make_inputs([(1,)], ["int7"])


def test_check_runs_says_what_the_model_expected(files):
    loaded = load_model(files / "weights.pt", factory=FACTORY)
    check_runs(loaded, (X,))
    with pytest.raises(ConfigError, match=r"shape \(1, 5, 8, 8\).*'conv1' takes 1 input channels, e\.g\. "
                                          r"--input-shape 1,1,H,W"):
        check_runs(loaded, make_inputs([(1, 5, 8, 8)]))
    exported = load_model(files / "static_named.pt")
    with pytest.raises(ConfigError, match=r"exported for --input-shape 1,1,8,8"):
        check_runs(exported, make_inputs([(3, 1, 8, 8)]))


def test_atomic_output_writes_whole_files_or_nothing(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_output(target, force=False) as temporary:
            open(temporary, "wb").write(b"half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with atomic_output(target, force=False) as temporary:
        open(temporary, "wb").write(b"whole")
    assert target.read_bytes() == b"whole"
    with pytest.raises(ConfigError, match="already exists; pass --force"):
        with atomic_output(target, force=False):
            pass
    with pytest.raises(ConfigError, match="does not exist; create it first"):
        with atomic_output(tmp_path / "missing" / "out.bin", force=False):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_demo_model_is_deterministic_and_saved_whole(tmp_path):
    x = torch.randn(INPUT_SHAPE)
    with torch.no_grad():
        assert torch.equal(demo_model()(x), demo_model()(x))
        assert demo_model()(x).shape == (1, 10)
    save_demo_model(tmp_path / "demo.pt")
    assert _same_outputs_at(load_model(tmp_path / "demo.pt").module, demo_model(), x)
    with pytest.raises(ConfigError, match="already exists"):
        save_demo_model(tmp_path / "demo.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.pt"]


def _same_outputs_at(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> bool:
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))

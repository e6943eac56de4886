"""The battery's compress and resume cases (see battery.py for the rules every case is held to)."""

from __future__ import annotations

import pytest

from tests.bad_inputs.battery import Case, run_case

QUICK = ("--search-epochs", "0", "--finetune-epochs", "0", "--batch-size", "32", "--target", "flops=0.5")
COMPRESS = ("compress", "{dir}/tiny.pt", "--data", "tensors:{dir}/data.npz", *QUICK)

CASES = {
    "unknown method": Case((*COMPRESS, "-o", "{dir}/out", "--method", "darts"), "unknown method 'darts'"),
    "output is the input's folder": Case(("compress", "tiny.pt", "--data", "tensors:data.npz", *QUICK, "-o", "."),
                                         "would replace"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_compress_battery(name, workspace, tmp_path, capsys, monkeypatch):
    run_case(CASES[name], workspace, tmp_path / "case", capsys, monkeypatch)

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bad_inputs.battery import make_workspace


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Path:
    """The bad-input battery's inputs (tests/bad_inputs/battery.py), made once; every case runs in its own copy."""
    return make_workspace(tmp_path_factory.mktemp("battery") / "workspace")

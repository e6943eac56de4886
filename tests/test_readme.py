"""The README's Python examples run as written after a plain install: every ```python block, each in a fresh
interpreter, in an empty working directory, with nothing of the repository on the path (so `tests` and
`benchmarks` cannot be imported, only the installed cascomp)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"),
                    flags=re.DOTALL | re.MULTILINE)


def test_the_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index: int, tmp_path: Path) -> None:
    script = tmp_path / f"readme_block_{index}.py"
    script.write_text(BLOCKS[index], encoding="utf-8")
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    # -I (isolated mode): neither the script's folder nor PYTHON* variables nor the user's site on the path
    done = subprocess.run([sys.executable, "-I", str(script)], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"README block {index}:\n{BLOCKS[index]}\n--- stderr ---\n{done.stderr}"

"""Imports point one way (../shared/STYLE.md): ir ← passes ← methods ← search ← train ← api ← cli, with
errors, config, kernels, data, zoo and export depending on nothing above them. Imports made only for type
annotations (under `if TYPE_CHECKING:`) do not count: they run no code."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"cascomp": ROOT / "cascomp", "cascomp.passes": ROOT / "passes", "cascomp.kernels": ROOT / "kernels"}
# a part may import only from parts of a strictly lower rank (and from itself)
RANK = {"errors": 0, "config": 1, "kernels": 2, "data": 2, "zoo": 2, "ir": 2, "export": 3, "passes": 3,
        "methods": 4, "search": 5, "train": 6, "api": 7, "cascomp": 8, "cli": 9, "__main__": 10}
# "cascomp": the package's __init__, the public facade over api (the CLI reads its __version__)


def _part(module: str) -> str:
    """The part of cascomp a dotted module name belongs to ('cascomp' for the package's __init__)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "cascomp"


def _modules():
    for package, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            relative = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *relative)).removesuffix(".__init__")
            yield name, path


def _runtime_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every cascomp import that runs: at module level or inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    annotation_only = {id(node) for block in ast.walk(tree)
                       if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                       for node in ast.walk(block)}
    found = []
    for node in ast.walk(tree):
        if id(node) in annotation_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [(node.lineno, name) for name in names if name == "cascomp" or name.startswith("cascomp.")]
    return found


def test_every_part_has_a_rank():
    parts = {_part(name) for name, _ in _modules()}
    assert parts <= set(RANK), f"give these parts a rank in RANK: {sorted(parts - set(RANK))}"


def test_imports_point_one_way():
    wrong = []
    for name, path in _modules():
        importer = _part(name)
        for line, module in _runtime_imports(path):
            imported = _part(module)
            if imported != importer and RANK[imported] >= RANK[importer]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({importer}) imports {module} ({imported})")
    assert not wrong, "imports pointing up the layers:\n" + "\n".join(wrong)


def test_the_check_sees_an_upward_import(tmp_path):
    """The rule would catch an ir module importing the search (a check that can fail)."""
    source = tmp_path / "bad.py"
    source.write_text("from cascomp.search.budget import fit_widths\n"
                      "from typing import TYPE_CHECKING\n"
                      "if TYPE_CHECKING:\n    from cascomp.api import compress\n")
    assert _runtime_imports(source) == [(1, "cascomp.search.budget")]
    assert RANK[_part("cascomp.search.budget")] >= RANK[_part("cascomp.ir.graph")]

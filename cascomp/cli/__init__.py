"""The `cascomp` command line: `main` (cascomp/cli/main.py) and one module per command in commands/."""

from cascomp.cli.main import main

__all__ = ["main"]

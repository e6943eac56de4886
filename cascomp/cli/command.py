"""What every command module in cascomp/cli/commands/ provides, and the parser pieces they share.

A command module has `NAME` (the word on the command line), `add_parser(commands)` (adds its subparser to
argparse's subparsers) and `run(args) -> Output`: it checks its arguments, calls the API and returns what to
print. cli/main.py parses and prints; nothing a command does touches stdout.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console

FORMATTER = argparse.RawDescriptionHelpFormatter  # keeps the examples in the epilogs as written


@dataclass(frozen=True)
class Output:
    data: dict  # what --json prints
    render: Callable[[Console], None]  # what a person reads
    status: int = 0  # the exit status once it is printed (compare: 3 when some of its runs failed)


def wrapped(text: str) -> str:
    """A description for FORMATTER, which does not wrap it."""
    return textwrap.fill(text, 88)


def add_json_argument(command) -> None:
    command.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of tables")

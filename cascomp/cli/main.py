"""The `cascomp` command: parsing, exit codes and printing. What each command does is its module's business
(cascomp/cli/commands/, see cascomp/cli/command.py); `main` runs the one named on the command line and
prints its Output, as rich tables or (--json) one JSON object.

Exit status: 0 done; 2 a user mistake (a CascompError or a usage error), told in one line on stderr;
1 a bug in cascomp, told in one line (CASCOMP_DEBUG=1 shows the traceback); 3 `compare` finished, table
written, but some of its runs failed (their rows say why); 130 interrupted. Under torchrun, rank 0 alone
prints the output, and an error line names the process it comes from.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import traceback
import warnings
from collections.abc import Iterator

from rich.console import Console

from cascomp import __version__
from cascomp.cli.command import FORMATTER, Output
from cascomp.cli.commands import analyze, compare, compress, demo, export, profile
from cascomp.errors import CascompError, CascompWarning, as_user_error
from cascomp.train.distributed import Cluster

# The commands, in the order --help lists them; `run` is looked up when the command runs.
COMMANDS = {command.NAME: command for command in (demo, compress, compare, analyze, export, profile)}


class _Parser(argparse.ArgumentParser):
    """argparse prints its whole usage block before an error; here a usage error is one line, like the rest."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit:  # --help, --version, and usage errors already told in one line
        return exit.code if isinstance(exit.code, int) else 2
    debug = os.environ.get("CASCOMP_DEBUG", "") not in ("", "0")
    # `python -m cascomp` puts the working directory on sys.path and the console script does not; a
    # --factory module or a pickled model's class should import the same way from both.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        # Library chatter on stdout would corrupt --json, so while the work runs stdout goes to stderr.
        with _quiet_warnings(debug), contextlib.redirect_stdout(sys.stderr):
            try:
                output = COMMANDS[args.command].run(args)
            finally:
                Cluster.leave()
        if Cluster.from_environment().is_main:
            _print(output, json_output=getattr(args, "json", False))
        return output.status
    except CascompError as error:
        return _fail(error, 2, "", debug)
    except KeyboardInterrupt:
        print("cascomp: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cascomp analyze ... | head` closed the pipe: nothing left to tell
        sys.stdout = open(os.devnull, "w")
        return 1
    except Exception as error:
        user_error = as_user_error(error)
        if user_error is not None:
            return _fail(user_error, 2, "", debug)
        prefix = f"internal error, please report it (CASCOMP_DEBUG=1 shows the traceback): {type(error).__name__}: "
        return _fail(error, 1, prefix, debug)


def _fail(error: BaseException, status: int, prefix: str, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    # Messages that quote torch's multi-line errors keep their first line (what) and last (what to do).
    message = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    tag = _process_tag()
    print(f"cascomp: error: {tag + ': ' if tag else ''}{prefix}{message}", file=sys.stderr)
    return status


def _process_tag() -> str:
    """'rank R/N' under torchrun, else ''; a broken torchrun environment is not this error's story."""
    try:
        return Cluster.from_environment().tag
    except CascompError:
        return ""


@contextlib.contextmanager
def _quiet_warnings(debug: bool) -> Iterator[None]:
    """Deprecation notices from torch's internals are nothing a cascomp user can act on; cascomp's own
    warnings are one `cascomp: warning:` line each."""
    with warnings.catch_warnings():
        show = warnings.showwarning

        def one_line(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, CascompWarning):
                print(f"cascomp: warning: {message}", file=sys.stderr)
            else:
                show(message, category, filename, lineno, file, line)
        warnings.showwarning = one_line
        if not debug:
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            # cascomp.ir.cost turns a gradient into a float without detach(): harmless, and not the user's.
            warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True")
        yield


def _print(output: Output, *, json_output: bool) -> None:
    if json_output:
        sys.stdout.write(json.dumps(_finite(output.data), indent=2) + "\n")
        return
    width = None if sys.stdout.isatty() else 100  # rich would assume 80 columns for a pipe or a file
    output.render(Console(file=sys.stdout, width=width, markup=False, highlight=False, emoji=False))


def _finite(value):
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cascomp", formatter_class=FORMATTER,
                     description="cascomp: graph-level model compression for PyTorch.",
                     epilog="start here:\n  cascomp demo-model -o demo.pt\n"
                            "  cascomp analyze demo.pt --input-shape 1,1,28,28")
    parser.add_argument("--version", action="version", version=f"cascomp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for command in COMMANDS.values():
        command.add_parser(commands)
    return parser

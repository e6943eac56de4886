"""The `cascomp` command: argument parsing only. Each command (cascomp/_commands.py) checks its arguments,
calls the API and returns what to print; `main` prints it, as rich tables or (--json) one JSON object.

Exit status: 0 done; 2 a user mistake (a CascompError or a usage error), told in one line on stderr;
1 a bug in cascomp, told in one line (CASCOMP_DEBUG=1 shows the traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import textwrap
import traceback
import warnings
from collections.abc import Iterator

from rich.console import Console

from cascomp import __version__
from cascomp._commands import COMMANDS, Output
from cascomp._compress_command import add_compress, compress_command
from cascomp.errors import CascompError, CascompWarning, as_user_error

_RAW = argparse.RawDescriptionHelpFormatter  # keeps the examples in the epilogs as written


def _wrapped(text: str) -> str:
    """A description for _RAW, which does not wrap it."""
    return textwrap.fill(text, 88)


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
            output = {**COMMANDS, "compress": compress_command}[args.command](args)
        _print(output, json_output=getattr(args, "json", False))
        return 0
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
    print(f"cascomp: error: {prefix}{message}", file=sys.stderr)
    return status


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


# -- the parser ------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cascomp", formatter_class=_RAW,
                     description="cascomp: graph-level model compression for PyTorch.",
                     epilog="start here:\n  cascomp demo-model -o demo.pt\n"
                            "  cascomp analyze demo.pt --input-shape 1,1,28,28")
    parser.add_argument("--version", action="version", version=f"cascomp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    _add_demo_model(commands)
    add_compress(commands, _RAW)
    _add_analyze(commands)
    _add_export(commands)
    _add_profile(commands)
    return parser


def _add_demo_model(commands) -> None:
    command = commands.add_parser(
        "demo-model", help="save a small demo CNN (1x28x28 inputs) to try the other commands on",
        formatter_class=_RAW, description=_wrapped("Save a small ResNet-style CNN for 1x28x28 images (10 "
        "classes) with torch.save."), epilog="example:\n  cascomp demo-model -o demo.pt")
    command.add_argument("-o", "--output", required=True, metavar="PATH", help="where to save it (.pt)")
    command.add_argument("--force", action="store_true", help="overwrite PATH if it exists")
    command.add_argument("--train", metavar="SPEC", help="train it first on this data, e.g. "
                         "fashion-mnist:/usr/share/datasets/fashion-mnist (default: random weights)")
    command.add_argument("--epochs", type=int, metavar="N", help="training epochs with --train (default 1)")
    command.add_argument("--limit-train", type=int, metavar="N", help="train on a seeded subset of N samples")
    command.add_argument("--limit-val", type=int, metavar="N", help="validate on a seeded subset of N samples")


def _add_analyze(commands) -> None:
    command = commands.add_parser(
        "analyze", help="show a model's cost, channel groups, frozen channels and search space",
        formatter_class=_RAW, description=_wrapped("Trace a model and show what can be pruned: cost per "
        "sample, the channel groups (channels that must be removed together), the channels that must stay, "
        "and the smallest cost reachable."), epilog="examples:\n  cascomp analyze demo.pt --input-shape 1,1,28,28\n"
        "  cascomp analyze weights.pt --factory mymodels:resnet18 --input-shape 1,3,224,224 --json\n"
        "  cascomp analyze model.pt2 --ignore 'head.*' --round-to 8 --graph groups.png")
    _model_arguments(command)
    command.add_argument("--ignore", action="append", default=[], metavar="PATTERN",
                         help="module-name patterns whose channels stay, e.g. 'head.*' (repeatable)")
    command.add_argument("--round-to", type=int, default=1, metavar="N",
                         help="every pruned width is a multiple of N (default 1)")
    command.add_argument("--min-keep", type=int, default=1, metavar="N",
                         help="no group is pruned below N channels (default 1)")
    command.add_argument("--graph", metavar="PNG", help="also draw the graph, nodes coloured by channel group "
                         "(needs matplotlib; overwrites PNG)")
    _json_argument(command)


def _add_export(commands) -> None:
    command = commands.add_parser(
        "export", help="export a model to ONNX, checked against torch in onnxruntime", formatter_class=_RAW,
        description=_wrapped("Export a model to ONNX (batch dimension dynamic) and check "
        "that onnxruntime computes what torch computes, on the example inputs, a batch one larger and other "
        "input values. The file appears only when the check passed."), epilog="example:\n  cascomp export demo.pt --input-shape 1,1,28,28 -o demo.onnx")
    _model_arguments(command)
    command.add_argument("-o", "--output", required=True, metavar="PATH", help="the ONNX file to write")
    command.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 up to the installed onnx's newest "
                         "(default 17)")
    command.add_argument("--static-batch", action="store_true", help="keep the batch size of --input-shape fixed "
                         "in the file, for models that only run at that size")
    command.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance of the check against torch "
                         "(default 0.001)")
    command.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance of the check against torch "
                         "(default 0.0001)")
    command.add_argument("--force", action="store_true", help="overwrite PATH if it exists")
    _json_argument(command)


def _add_profile(commands) -> None:
    command = commands.add_parser(
        "profile", help="time a model (or an .onnx file) in onnxruntime per batch size", formatter_class=_RAW,
        description=_wrapped("Time a model in onnxruntime: median, p90, mean and min latency "
        "per batch size. A torch model is exported to a temporary ONNX file first."),
        epilog="examples:\n  cascomp profile demo.onnx --batch-sizes 1,32 --threads 1\n"
        "  cascomp profile demo.pt --input-shape 1,1,28,28 --by-node --torch")
    _model_arguments(command, "a model file (.pt, .pth, .pt2) or an ONNX file (told apart by content)")
    command.add_argument("--batch-sizes", default="1,32", metavar="N,N", help="batch sizes to time (default 1,32)")
    command.add_argument("--threads", type=int, metavar="N", help="onnxruntime intra-op threads (default: its own)")
    command.add_argument("--provider", choices=("cpu", "cuda"), default="cpu", help="execution provider")
    command.add_argument("--repeats", type=int, default=30, metavar="N", help="timed runs per batch size")
    command.add_argument("--warmup", type=int, default=5, metavar="N", help="untimed runs first")
    command.add_argument("--by-node", action="store_true", help="also time each ONNX node")
    command.add_argument("--torch", action="store_true", help="also time the torch model (not for .onnx files)")
    _json_argument(command)


def _model_arguments(command, what: str = "a model file: .pt/.pth (torch.save), .pt2 (torch.export) or, with "
                     "--factory, a state dict") -> None:
    command.add_argument("model", nargs="?", metavar="MODEL", help=what)
    command.add_argument("--factory", metavar="PKG.MODULE:FUNCTION",
                         help="a function that builds the model; MODEL is then its state dict (optional)")
    command.add_argument("--safe", action="store_true", help="refuse pickles, which run code when loaded")
    command.add_argument("--input-shape", action="append", metavar="N,N,...",
                         help="input shape, batch first, e.g. 1,3,32,32 (once per input; a .pt2 knows its own)")
    command.add_argument("--input-dtype", action="append", metavar="DTYPE",
                         help="float32 (default), int64, ... (once for all inputs, or once per input)")


def _json_argument(command) -> None:
    command.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of tables")

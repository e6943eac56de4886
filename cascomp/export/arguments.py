"""How an error message names an argument: as the Python keyword for an API caller, as the flag for a
command-line user.

The checks of export_onnx and profile serve both audiences, and "threads must be an int >= 1" is wrong for
someone who typed --threads. So a message names an argument with `named("threads")` ("threads" or
"--threads") and a value for it with `setting("batch_sizes", (2,))` ("batch_sizes=(2,)" or "--batch-sizes 2").
A command calls the API under `cli_flags(table)`, which maps the keywords it sets to its flags; outside that
block, and for keywords the table lacks, messages keep the Python spelling.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Flag:
    """The command-line spelling of one API keyword.

    name: what `named` gives, e.g. "--batch-sizes". write: how `setting` spells a value, the flag included
    (e.g. `lambda sizes: "--batch-sizes " + ",".join(map(str, sizes))`); None writes "NAME VALUE".
    """

    name: str
    write: Callable[[object], str] | None = None


_CLI_FLAGS: contextvars.ContextVar[Mapping[str, Flag]] = contextvars.ContextVar("cascomp_cli_flags", default={})


def named(keyword: str) -> str:
    """The argument `keyword` as the caller spells it."""
    flag = _CLI_FLAGS.get().get(keyword)
    return keyword if flag is None else flag.name


def setting(keyword: str, value: object) -> str:
    """`keyword` set to `value`, as the caller would write it."""
    flag = _CLI_FLAGS.get().get(keyword)
    if flag is None:
        return f"{keyword}={value!r}"
    return flag.write(value) if flag.write is not None else f"{flag.name} {value}"


@contextlib.contextmanager
def cli_flags(table: Mapping[str, Flag]) -> Iterator[None]:
    """Messages raised inside the block name the command's flags instead of the API's keywords."""
    token = _CLI_FLAGS.set(table)
    try:
        yield
    finally:
        _CLI_FLAGS.reset(token)

"""Import the object a "pkg.module:function" spec names (model factories, dataset functions).

Callers turn an `ImportFailure` into their own error, in their own words (--factory, python:...)."""

from __future__ import annotations

import importlib


class ImportFailure(Exception):
    """`reason` is one line; `malformed`: the spec is not "module:attribute"; `raised`: the module was found
    and raised while being imported (otherwise it, or the attribute, does not exist)."""

    def __init__(self, reason: str, *, malformed: bool = False, raised: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.malformed, self.raised = reason, malformed, raised


def import_object(spec: str) -> object:
    """The object `spec` ("pkg.module:attribute", the attribute may be dotted) names."""
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise ImportFailure(f"{spec!r} does not look like pkg.module:function", malformed=True)
    try:
        found = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as error:
        raise ImportFailure(error_reason(error)) from error
    except Exception as error:  # the user's module ran and raised while importing
        raise ImportFailure(error_reason(error), raised=True) from error
    return found


def error_reason(error: BaseException) -> str:
    """`Type: first line of the message`, for one-line error messages."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__

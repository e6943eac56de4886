"""The output folder of `cascomp compress` and its run.json: what a run may write there, and what it needs to
be resumed.

The output folder is the user's, so the rules are:
  1. every check (flags, data, model, model-data fit, the folder) runs before anything is written;
  2. a file cascomp would write is never replaced unless --force, and an input (the model, its weights,
     a data file) is never written over at all; --force first invalidates the old run's outputs, so an
     interrupted rerun cannot pass for the finished old one;
  3. OUT/run.json records what the run was started with, with absolute paths, the model file's sha256 and
     the working directory, so `cascomp compress --resume OUT` needs nothing else, works from any working
     directory and on a copied folder, and refuses a model that changed;
  4. a run that fails before its first checkpoint takes away what it wrote (and OUT, if it made it); one
     that fails after it stays resumable.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from cascomp.config import CompressConfig, devices, resolve_device
from cascomp.data import spec_path
from cascomp.errors import ConfigError
from cascomp.export.atomic import atomic_output
from cascomp.export.outputs import Outputs
from cascomp.train.checkpoint import FILE as CHECKPOINT

RUN_FILE = "run.json"
RUN_FORMAT = 2
_RUN_KEYS = {"format": int, "model": (str, type(None)), "model_sha256": (str, type(None)),
             "factory": (str, type(None)), "safe": bool, "data": str, "working_directory": str,
             "batch_size": int, "limit_train": (int, type(None)), "limit_val": (int, type(None)), "config": dict}


def check_output_folder(out: Path, run: dict, *, force: bool) -> None:
    """Rule 2: what the run would replace, and the inputs it must never write over."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"-o {out}: it is a file; give a folder")
    written = [out / name for name in (*Outputs.FILES, RUN_FILE, CHECKPOINT)]
    inputs = [run["model"], spec_path(run["data"])]
    for path in written:
        for given in inputs:
            if given is not None and path.exists() and os.path.exists(given) and os.path.samefile(path, given):
                raise ConfigError(f"-o {out} would write over the input {given} (as {path.name}); choose another "
                                  "output folder")
    if force:
        return
    if (out / CHECKPOINT).exists():
        raise ConfigError(f"{out} holds an interrupted run; continue it with --resume {out}, or pass --force "
                          "to start over")
    if (out / "report.json").exists():
        raise ConfigError(f"{out} already holds a finished run; pass --force to overwrite it, or choose another -o")
    existing = [path.name for path in written if path.exists()]
    if existing == [RUN_FILE]:
        raise ConfigError(f"{out} holds a run that stopped before its first checkpoint; pass --force to start "
                          "over, or choose another -o")
    if existing:
        raise ConfigError(f"{out} already holds {', '.join(existing)}, which compress would replace; pass --force "
                          "to replace them, or choose another -o")


@contextlib.contextmanager
def claimed(out: Path, run: dict | None) -> Iterator[None]:
    """Rules 2 and 4 for the run's time in OUT. `run`: a new run's record (written to OUT/run.json after the old
    outputs are invalidated); None when resuming."""
    made = not out.exists()
    if run is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot create output folder {str(out)!r}: {error.strerror or error}") from error
        Outputs.clear(out, (RUN_FILE, CHECKPOINT))  # the finished-run marker, report.json, goes first
        with atomic_output(out / RUN_FILE, force=True) as temporary:
            Path(temporary).write_text(json.dumps(run, indent=1))
    try:
        yield
    except BaseException:
        if (out / CHECKPOINT).exists():
            print(f"cascomp: the run stopped after a checkpoint; continue it with: cascomp compress --resume {out}",
                  file=sys.stderr)
        elif run is not None:  # nothing to resume: take away what this run wrote
            Outputs.clear(out, (RUN_FILE,))
            if made:
                with contextlib.suppress(OSError):
                    out.rmdir()
        raise


def resumable_run(resume: str) -> dict:
    """Rule 3: the record of the interrupted run in the folder `resume`, checked against what it needs."""
    folder = Path(resume)
    path = folder / RUN_FILE
    if not path.is_file():
        raise ConfigError(f"{resume} is not the output folder of a cascomp compress run (no {RUN_FILE})")
    if not (folder / CHECKPOINT).is_file():
        if (folder / "report.json").is_file():
            raise ConfigError(f"the run in {resume} finished (its report.json is there): nothing to resume")
        raise ConfigError(f"the run in {resume} stopped before its first checkpoint: nothing to resume; start "
                          f"it again with -o {resume} --force")
    run = _read_run_file(path)
    if run["working_directory"] not in sys.path:  # a factory (model or data) imports as it did at the start
        sys.path.insert(0, run["working_directory"])
    if run["model"] is not None:
        if not os.path.isfile(run["model"]):
            raise ConfigError(f"the model file the run started from, {run['model']}, is gone; put it back to "
                              "resume, or start a new run")
        if sha256(run["model"]) != run["model_sha256"]:
            raise ConfigError(f"the model file {run['model']} changed since the run started (its sha256 differs "
                              f"from {RUN_FILE}'s); resume needs the same file: restore it, or start a new run on "
                              "the new model (-o NEW_OUT)")
    print(f"cascomp: resuming the run in {resume} ({run['config'].get('method')}, data {run['data']})",
          file=sys.stderr)
    return run


def _read_run_file(path: Path) -> dict:
    fix = "start the run again (-o NEW_OUT, or --force to reuse the folder)"
    try:
        run = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"cannot read {path}: {error}; {fix}") from error
    if not isinstance(run, dict) or run.get("format") != RUN_FORMAT:
        raise ConfigError(f"{path} was not written by this version of cascomp compress; {fix}")
    for key, kinds in _RUN_KEYS.items():
        if key not in run:
            raise ConfigError(f"{path} lacks {key!r} (damaged or edited); {fix}")
        if not isinstance(run[key], kinds) or (kinds is int and isinstance(run[key], bool)):
            raise ConfigError(f"{path}: {key!r} is {run[key]!r}, not what compress wrote (damaged or edited); {fix}")
    device = run["config"].get("device", "auto")
    if isinstance(device, str) and device != "auto":
        try:
            resolve_device(device)
        except ConfigError:  # a valid record, made on another machine
            raise ConfigError(f"the run in {path.parent} trains on --device {device}, which this machine lacks "
                              f"(it has {', '.join(devices())}); resume it where that device is") from None
    try:
        CompressConfig.from_dict(run["config"])
    except (ConfigError, TypeError) as error:
        raise ConfigError(f"{path}: its config is not valid ({error}); {fix}") from error
    return run


def absolute(path: str | None) -> str | None:
    return None if path is None else os.path.abspath(os.path.expanduser(path))


def sha256(path: str | None) -> str | None:
    """The file's sha256, recorded in run.json so a resumed run can refuse a changed model (rule 3)."""
    if path is None or not os.path.isfile(path):
        return None  # load_model says what is wrong with the path
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

"""Compression methods, one file each, in one explicit table: adding a method is its file (the Method subclass
and, beside it, its config dataclass, whose `option(...)` fields become `cascomp compress` flags) and one line
in METHODS below. `register` adds one at run time (a plug-in, or a test's throwaway method)."""

from cascomp.config import METHOD_CONFIGS, register_method_config
from cascomp.errors import ConfigError
from cascomp.methods.base import Decision, Method
from cascomp.methods.darc import Darc, DarcConfig
from cascomp.methods.figs import Figs, FigsConfig
from cascomp.methods.gensynth import GenSynth, GenSynthConfig
from cascomp.methods.group_lasso import GroupLasso, GroupLassoConfig
from cascomp.methods.l1 import L1, L1Config
from cascomp.methods.morphnet import MorphNet, MorphNetConfig
from cascomp.methods.sensitivity import Sensitivity, SensitivityConfig
from cascomp.methods.tas import Tas, TasConfig
from cascomp.methods.uniform import Uniform, UniformConfig
from cascomp.methods.vardrop import Vardrop, VardropConfig

METHODS: dict[str, type[Method]] = {}


def register(name: str, method: type[Method]) -> None:
    """Make `method` available as `name` to CompressConfig, compress and the command line."""
    if not (isinstance(method, type) and issubclass(method, Method)) or not hasattr(method, "config_type"):
        raise ConfigError(f"method {name!r} must be a cascomp.methods.Method subclass with a config_type")
    METHODS[name] = method
    register_method_config(name, method.config_type)


def title(name: str) -> str:
    """How messages name the registered method `name`."""
    return METHODS[name].title or name


for _name, _method in {"figs": Figs, "l1": L1, "uniform": Uniform, "sensitivity": Sensitivity, "tas": Tas,
                       "group-lasso": GroupLasso, "morphnet": MorphNet, "vardrop": Vardrop, "gensynth": GenSynth,
                       "darc": Darc}.items():
    register(_name, _method)

__all__ = ["METHODS", "METHOD_CONFIGS", "DarcConfig", "Decision", "FigsConfig", "GenSynthConfig", "GroupLassoConfig", "L1Config", "Method", "MorphNetConfig", "SensitivityConfig",
           "TasConfig", "UniformConfig", "VardropConfig", "register", "title"]

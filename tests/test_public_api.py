import cascomp


def test_public_names_are_pinned() -> None:
    assert sorted(cascomp.__all__) == sorted([
        "METHODS", "CascompError", "ChannelGroup", "CompareResult", "CompressConfig", "CompressResult", "ConfigError",
        "Constraints", "Cost", "DataBundle", "DataError", "DistillConfig", "ExportError", "FigsConfig",
        "FrozenChannels", "Graph", "GroupMember", "L1Config", "Plan", "PlanError", "SearchError",
        "SensitivityConfig", "Target", "TasConfig",
        "TraceError", "UniformConfig", "apply_plan", "compare", "compress", "export_onnx", "load_data", "mask_model",
        "profile", "substitute_operators", "trace",
    ])


def test_every_public_name_exists() -> None:
    for name in cascomp.__all__:
        assert getattr(cascomp, name) is not None


def test_methods_registry_matches_the_configs() -> None:
    from cascomp.config import METHOD_CONFIGS
    assert sorted(cascomp.METHODS) == sorted(METHOD_CONFIGS) == ["darc", "figs", "gensynth", "group-lasso", "l1", "morphnet", "sensitivity", "tas", "uniform",
                                                           "vardrop"]


def test_the_default_method_is_pinned() -> None:
    """compress without a method runs `sensitivity`: the best cascomp method of benchmarks/peers.py. Changing
    it needs the benchmark's table (docs/results.md) to say so."""
    from cascomp.cli.commands.compress import DEFAULTS
    assert cascomp.CompressConfig().method == DEFAULTS["method"] == "sensitivity"
    assert isinstance(cascomp.CompressConfig().method_config, cascomp.SensitivityConfig)
    assert cascomp.CompressConfig().method_config.remove_blocks  # residual blocks removed where cheapest

import cascomp


def test_public_names_are_pinned() -> None:
    assert sorted(cascomp.__all__) == sorted([
        "CascompError", "ChannelGroup", "ConfigError", "Constraints", "Cost", "ExportError", "FrozenChannels",
        "Graph", "GroupMember", "Plan", "PlanError", "TraceError", "apply_plan", "export_onnx", "mask_model",
        "profile", "trace",
    ])

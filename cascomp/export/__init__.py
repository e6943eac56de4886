"""ONNX export with a numerical check against torch, and onnxruntime latency profiling."""

from cascomp.export.onnx import OnnxExportResult, export_onnx
from cascomp.export.profile import BatchLatency, LatencyReport, NodeTime, profile

__all__ = ["BatchLatency", "LatencyReport", "NodeTime", "OnnxExportResult", "export_onnx", "profile"]

"""Export: strategies, fallback chain, dynamic dims, naming, diagnostics and metadata."""

from onnxship.export._api import export
from onnxship.export._config import CandidateRecord, ExportConfig, ExportResult
from onnxship.export._diagnostics import RULES, Diagnostic, DiagnosticRule, classify, classify_log

__all__ = [
    "RULES",
    "CandidateRecord",
    "Diagnostic",
    "DiagnosticRule",
    "ExportConfig",
    "ExportResult",
    "classify",
    "classify_log",
    "export",
]

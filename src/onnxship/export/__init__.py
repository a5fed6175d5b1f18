"""Export: strategies, fallback chain, dynamic dims, naming, diagnostics and metadata."""

from onnxship._util import verb_module
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

verb_module(__name__, "export")

"""Verification: runners, comparison and the shape-sweep parity gate."""

from onnxship.runtime._data import (
    Batch,
    DataSource,
    GoldenSource,
    ImageFolderSource,
    NpzSource,
    SyntheticSource,
    open_source,
)
from onnxship.runtime._golden import GOLDEN_SCHEMA, Golden, GoldenRunner, read_golden, write_golden
from onnxship.runtime._preprocess import PreprocessConfig, preprocess_images
from onnxship.runtime._runners import OnnxRuntimeRunner, Runner, TorchRunner, flatten_outputs
from onnxship.runtime._table import TableSource
from onnxship.verify._compare import (
    PRECISION_TOLERANCES,
    OutputStats,
    Tolerance,
    compare_arrays,
    compare_outputs,
)
from onnxship.verify._metrics import OutputAccumulator, OutputSummary
from onnxship.verify._parity import ParityResult, ShapeCheck, check_parity
from onnxship.verify._policy import PRECISIONS, TASKS, GatePolicy, resolve_policy
from onnxship.verify._report import REPORT_SCHEMA, VerifyReport, load_report_schema
from onnxship.verify._sampling import MODES, SampleConfig, SamplePlan, add_hard_samples, plan_samples
from onnxship.verify._tasks import (
    ClassificationAgreement,
    ClassificationMetric,
    DetectionAgreement,
    DetectionMetric,
    Detections,
    NmsConfig,
    SequenceAgreement,
    SequenceMetric,
    TaskGate,
    box_iou,
    classification_agreement,
    decode_detections,
    detection_agreement,
    mean_average_precision,
    nms,
    sequence_agreement,
    softmax,
    softmax_margin,
)
from onnxship.verify._verify import VerifyConfig, verify

__all__ = [
    "MODES",
    "PRECISIONS",
    "REPORT_SCHEMA",
    "TASKS",
    "Batch",
    "DataSource",
    "GatePolicy",
    "GoldenSource",
    "ImageFolderSource",
    "NpzSource",
    "OutputAccumulator",
    "OutputSummary",
    "PreprocessConfig",
    "SampleConfig",
    "SamplePlan",
    "SyntheticSource",
    "TableSource",
    "VerifyConfig",
    "VerifyReport",
    "add_hard_samples",
    "load_report_schema",
    "open_source",
    "plan_samples",
    "preprocess_images",
    "resolve_policy",
    "verify",
    "ClassificationAgreement",
    "ClassificationMetric",
    "DetectionAgreement",
    "DetectionMetric",
    "Detections",
    "NmsConfig",
    "SequenceAgreement",
    "SequenceMetric",
    "TaskGate",
    "box_iou",
    "classification_agreement",
    "decode_detections",
    "detection_agreement",
    "mean_average_precision",
    "nms",
    "sequence_agreement",
    "softmax",
    "softmax_margin",
    "GOLDEN_SCHEMA",
    "Golden",
    "GoldenRunner",
    "read_golden",
    "write_golden",
    "PRECISION_TOLERANCES",
    "OnnxRuntimeRunner",
    "OutputStats",
    "ParityResult",
    "Runner",
    "ShapeCheck",
    "Tolerance",
    "TorchRunner",
    "check_parity",
    "compare_arrays",
    "compare_outputs",
    "flatten_outputs",
]

from onnxship._util import verb_module  # noqa: E402

verb_module(__name__, "verify")

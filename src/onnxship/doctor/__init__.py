"""Doctor: training logs (loss / grad_norm / lr) and export logs turned into findings a person can act on.

Example:
    >>> from onnxship.doctor import diagnose_train_log
    >>> result = diagnose_train_log("trainer_state.json", plot="out/train.png")  # doctest: +SKIP
    >>> [f.code for f in result.alarms]  # doctest: +SKIP
    ['TRN003', 'TRN005']
"""

from __future__ import annotations

from pathlib import Path

from onnxship.doctor._export_log import ExplainedCode, ExportLogResult, explain_export_log
from onnxship.doctor._findings import CODES, Finding, Phase, TrainLogConfig, TrainLogResult
from onnxship.doctor._readers import FORMATS, TrainLog, read_train_log

__all__ = [
    "CODES",
    "FORMATS",
    "ExplainedCode",
    "ExportLogResult",
    "Finding",
    "Phase",
    "TrainLog",
    "TrainLogConfig",
    "TrainLogResult",
    "diagnose_train_log",
    "explain_export_log",
    "plot_train_log",
    "read_train_log",
]


def diagnose_train_log(
    path: str | Path, config: TrainLogConfig | None = None, *, plot: str | Path | None = None
) -> TrainLogResult:
    """Read a training log, find what went wrong (or right), and optionally write a PNG plot of it.

    Args:
        path: trainer_state.json, trainer stdout, MLflow/Lightning CSV or an onnxship JSON-lines log.
        config: format override and thresholds (defaults suit most runs).
        plot: where to write the PNG (needs the ``logs`` extra: matplotlib).
    """
    from onnxship.doctor._analysis import analyze

    config = config or TrainLogConfig()
    result = analyze(read_train_log(path, config.format), config)
    if plot is not None:
        result.plot = str(plot_train_log(result, plot))
    return result


def plot_train_log(result: TrainLogResult, out: str | Path) -> Path:
    """Write ``result`` as a PNG (loss, grad_norm on a log scale, lr; findings marked). Needs matplotlib."""
    from onnxship.doctor._plot import plot_train_log as _plot

    return _plot(result, out)

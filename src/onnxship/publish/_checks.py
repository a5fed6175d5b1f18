"""What ``publish`` checks before anything reaches MLflow: the release's golden file through the ONNX model under its
precision's tolerance, and the verdict a run records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onnxship._errors import VerificationError
from onnxship.publish._bundle import BundleView
from onnxship.publish._config import (
    PublishConfig,
)

__all__ = ["GoldenCheck", "golden_check"]


class GoldenCheck:
    """The bundle's ONNX model re-run on golden.npz with onnxruntime, compared with the stored PyTorch outputs."""

    def __init__(self, golden: Any, stats: list[Any]) -> None:
        self.golden = golden
        self.stats = stats

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.stats)

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {"golden.passed": float(self.passed)}
        for s in self.stats:
            for key in ("max_abs", "max_rel", "mse", "cosine", "mismatch_count"):
                out[f"golden.{s.name}.{key}"] = float(getattr(s, key))
        return out


def golden_check(model_path: Path, golden_path: Path, precision: str = "fp32") -> GoldenCheck:
    """Run ``golden_path``'s inputs through the ONNX model and compare with its outputs (the precision's tolerance).

    Raises:
        VerificationError: the model does not reproduce the golden outputs.
    """
    from onnxship.verify import PRECISION_TOLERANCES, OnnxRuntimeRunner, compare_outputs, read_golden

    golden = read_golden(golden_path)
    got = OnnxRuntimeRunner(model_path).infer(dict(golden.inputs))
    tol = PRECISION_TOLERANCES.get(precision, PRECISION_TOLERANCES["fp32"])
    check = GoldenCheck(golden, compare_outputs(golden.outputs, got, tol))
    if not check.passed:
        worst = "; ".join(f"{s.name}: {s.reason}" for s in check.stats if not s.passed)
        raise VerificationError(
            f"{model_path.name} does not reproduce {golden_path.name} ({worst})",
            hint="the bundle is damaged or was built from another model: ship a new release",
        )
    return check


def _pre_checks(view: BundleView, config: PublishConfig) -> GoldenCheck | None:
    if view.passed is False:
        raise VerificationError(
            f"release {view.version} failed its verification gate; it is not published",
            hint="fix the model and ship a new release (see its report.json)",
        )
    if config.verify_golden and view.golden_path is not None:
        return golden_check(view.model_path, view.golden_path, str(view.meta.get("precision", "fp32")))
    return None


def _verdict(view: BundleView, check: GoldenCheck | None) -> str:
    report_passed = (view.report or {}).get("passed")
    if view.passed is False or report_passed is False:
        return "failed"
    if view.passed or report_passed is True or (check is not None and check.passed):
        return "passed"
    return "unknown"

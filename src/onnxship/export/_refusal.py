"""The refusal when no candidate verifies: every candidate with its reason, and a hint that matches the causes."""

from __future__ import annotations

from onnxship._errors import ExportError
from onnxship.export._config import CandidateRecord, ExportConfig

__all__ = ["no_candidate_error"]


def _dims_are_the_problem(c: CandidateRecord) -> bool:
    """The candidate is right at the export shape and wrong (or static) elsewhere: a static export would do."""
    if c.specialized:
        return True
    p = c.parity
    if p is None or p.passed or p.inconclusive:
        return False
    failed = [x for x in p.checks if x.status == "failed"]
    export_ok = any(x.is_export_shape and x.kind == "shape" and x.status == "passed" for x in p.checks)
    return export_ok and bool(failed) and all(x.kind == "shape" and not x.is_export_shape for x in failed)


def no_candidate_error(
    candidates: list[CandidateRecord], has_dynamic: bool, config: ExportConfig
) -> ExportError:
    """One error that lists every candidate, with a hint that matches the causes (never a generic "fix it")."""
    lines = [f"{c.label}: {c.outcome} — {c.reason}" for c in candidates]
    hints: list[str] = []
    frozen = [f for c in candidates for f in c.frozen if c.reason and "Python branch" in c.reason]
    if frozen:
        hints.append(
            f"forward() branches on tensor values at {frozen[0]}: rewrite it with torch.where, or torch.cond "
            "(dynamo exporter)"
        )
    unsupported = [d for c in candidates for d in c.diagnostics if d.code in ("ONX107", "ONX120", "ONX122")]
    if unsupported:
        hints.append(
            f"an operator has no ONNX translation ({unsupported[0].message[:160]}): try another opset "
            "(--opset 18, 20), replace the op in forward(), or register a custom translation "
            "(torch.onnx.export(custom_translation_table=...) / a custom op in onnxruntime)"
        )
    numeric = [c for c in candidates if c.parity is not None and not c.parity and not c.parity.inconclusive]
    if numeric and not frozen:
        worst = [
            f"{o.name} (max abs {o.max_abs:.3g}, atol={o.tolerance.get('atol', 0):g} "
            f"rtol={o.tolerance.get('rtol', 0):g})"
            for c in numeric
            for x in c.parity.checks  # type: ignore[union-attr]
            for o in x.outputs
            if not o.passed
        ]
        if worst:
            hints.append("outputs differ from PyTorch: " + ", ".join(dict.fromkeys(worst[:3])))
    inconclusive = [c for c in candidates if c.parity is not None and c.parity.inconclusive]
    if inconclusive and not numeric:
        hints.append(
            "the checks could not run enough shapes: give each input a value kind or range, a dim step "
            "(name=N..MAX/STEP), or real samples (--data); the candidate itself was not found wrong"
        )
    if has_dynamic and not config.allow_static and any(_dims_are_the_problem(c) for c in candidates):
        hints.append(
            "the dims are the problem: pass --allow-static to accept a static model (recorded loudly)"
        )
    return ExportError(
        "no export candidate produced a verified ONNX model:\n  " + "\n  ".join(lines),
        hint="; ".join(hints) or "see the candidates above; each reason says what failed",
        candidates=candidates,
    )

"""report.html: one self-contained page (inline CSS + SVG, no scripts, no network) rendered from report.json's dict.

Verdict first, then the candidates, per-output error histograms, per-shape error plots, worst samples and
diagnostics with advice. The renderer reads the report dict defensively (``.get``) so any schema-valid report, a
failed one included, renders. This module assembles the page (verdict, summary, evidence); the sections live in
``_html_sections``, the tables and SVG plots in ``_html_plots``.
"""

from __future__ import annotations

import math
import re
from typing import Any

from onnxship.verify._html_plots import _e, _kv, _num
from onnxship.verify._html_sections import (
    _candidates_section,
    _diagnostics_section,
    _outputs_section,
    _shapes_section,
    _task_section,
    _worst_section,
)

__all__ = ["render_html"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d8dce3;padding-bottom:4px}
.verdict{border-radius:8px;padding:16px 20px;color:#fff;margin-bottom:16px}
.pass{background:#1f8a4c} .fail{background:#c0392b}
.verdict .big{font-size:26px;font-weight:700;letter-spacing:.5px}
.verdict p{margin:6px 0 0}
table{border-collapse:collapse;width:100%;background:#fff;margin:6px 0 10px}
th,td{border:1px solid #e1e4ea;padding:5px 8px;text-align:left;vertical-align:top;font-size:13px}
th{background:#eef0f4;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.ok{color:#1f8a4c;font-weight:600} .bad{color:#c0392b;font-weight:600} .muted{color:#6b7280}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:12px}
.card{background:#fff;border:1px solid #e1e4ea;border-radius:6px;padding:10px}
.card h3{font-size:14px;margin:0 0 6px}
.diag{background:#fff;border-left:4px solid #9ca3af;padding:8px 12px;margin:8px 0}
.diag.error{border-color:#c0392b} table.confusion{width:auto} .bad.num{background:#fdecea} .diag.warning{border-color:#d99a00} .diag.info{border-color:#2f6fb3}
code{background:#eef0f4;padding:1px 4px;border-radius:3px}
svg text{font:10px system-ui,sans-serif;fill:#374151}
"""


def _verdict(r: dict[str, Any]) -> str:
    passed = bool(r.get("passed"))
    compare = r.get("compare") or {}
    reason = r.get("failure_reason") or compare.get("failure_reason")
    outputs = [o for o in r.get("outputs") or [] if isinstance(o, dict)]
    named = r.get("worst_output")
    named = named.get("name") if isinstance(named, dict) else named
    worst = next((o for o in outputs if named is not None and o.get("name") == named), None)
    if worst is None:
        worst = max(
            outputs,
            key=lambda o: o.get("max_abs") if isinstance(o.get("max_abs"), (int, float)) else math.inf,
            default=None,
        )
    lines = [
        f'<div class="big">{"PASS" if passed else "FAIL"}</div>',
        f"<p>{_e(r.get('model_name') or r.get('backbone') or 'model')} — ONNX matches the reference "
        f"({_e(r.get('reference') or 'torch')})"
        if passed
        else f"<p>{_e(r.get('model_name') or r.get('backbone') or 'model')}: {_e(reason or 'the gate failed')}</p>",
    ]
    if passed:
        lines[-1] += f" at precision {_e(r.get('precision') or compare.get('precision') or 'fp32')}</p>"
    if worst is not None:
        smallest = worst.get("smallest_passing") or {}
        tol = ", ".join(f"{k}={_num(v)}" for k, v in smallest.items() if v is not None)
        lines.append(
            f"<p>worst output <b>{_e(worst.get('name'))}</b>: max abs {_num(worst.get('max_abs'))}, "
            f"MSE mean {_num(worst.get('mse_mean'))}"
            + (f"; smallest passing: {_e(tol)}" if tol else "")
            + "</p>"
        )
    causes = r.get("likely_causes") or []
    if causes and not passed:
        lines.append("<p>likely causes: " + "; ".join(_e(c) for c in causes) + "</p>")
    if r.get("hint") and not passed:
        lines.append(f"<p>hint: {_e(r.get('hint'))}</p>")
    return f'<section class="verdict {"pass" if passed else "fail"}">{"".join(lines)}</section>'


def _synthetic(r: dict[str, Any]) -> str | None:
    """The description of the inputs when they were generated from the input specs, not real data."""
    data = r.get("data")
    kind = data.get("kind") if isinstance(data, dict) else None
    text = _data_label(data) or ""
    ids = [str(w.get("id") or "") for w in r.get("worst_samples") or [] if isinstance(w, dict)]
    if (
        kind == "synthetic"
        or "random samples" in text
        or text.startswith("synthetic")
        or any(i.startswith("synthetic#") for i in ids)
    ):
        return text or "random samples from the input specs"
    return None


def _synthetic_warning(r: dict[str, Any]) -> str:
    text = _synthetic(r)
    if text is None:
        return ""
    return (
        '<div class="diag warning synthetic"><b>Inputs were synthetic</b> '
        f"({_e(text)}). Agreement on random inputs says little about the inputs the model will see: "
        "verify with real data (<code>--data</code>: an image folder, <code>.npz</code> or parquet/CSV).</div>"
    )


_OPSET_RAISED = re.compile(r"operator set version (\d+)")


def _opset_text(r: dict[str, Any]) -> Any:
    """The file's opset; when the exporter built at a higher one and converted down, both, so the diagnostics
    that mention the higher one do not contradict the summary."""
    opset = r.get("opset")
    for d in r.get("diagnostics") or []:
        if not isinstance(d, dict):
            continue
        m = _OPSET_RAISED.search(str(d.get("message") or ""))
        if m and opset is not None and int(m.group(1)) != opset:
            return f"{opset} in the file (built at {m.group(1)} by the exporter, converted to {opset})"
    return opset


def _data_label(data: Any) -> str | None:
    if isinstance(data, dict):
        return data.get("description") or data.get("kind")
    return None if data is None else str(data)


def _summary(r: dict[str, Any]) -> str:
    compare = r.get("compare") or {}
    env = r.get("environment") or {}
    shape = r.get("input_shape")
    return _kv(
        [
            ("model", r.get("model_name") or r.get("backbone")),
            ("ONNX file", r.get("onnx_path")),
            ("checkpoint", r.get("ckpt_path")),
            ("reference", r.get("reference")),
            ("precision", r.get("precision")),
            ("task", r.get("task")),
            ("mode", compare.get("mode")),
            ("sample policy", compare.get("sample_policy")),
            ("samples compared", compare.get("sample_count")),
            ("classes sampled", compare.get("sampled_classes")),
            ("input shape", str(shape) if shape is not None else None),
            ("opset", _opset_text(r)),
            ("dynamic axes", r.get("dynamic_axes")),
            ("parameters (M)", r.get("params_million")),
            ("providers", ", ".join(r.get("providers") or []) or None),
            ("exported at (UTC)", r.get("exported_at_utc")),
            ("git sha", r.get("git_sha")),
            ("data", _data_label(r.get("data"))),
            ("seconds", (r.get("timing") or {}).get("seconds")),
            ("samples / s", (r.get("timing") or {}).get("samples_per_second")),
            ("verified at (UTC)", r.get("verified_at_utc")),
            ("onnxruntime", env.get("onnxruntime")),
            ("torch", env.get("torch")),
            ("report schema", r.get("schema")),
        ],
        columns=2,
    )


def _evidence_line(r: dict[str, Any]) -> str:
    """What the verdict rests on (synthetic inputs, sweep counts, class coverage); weak evidence is flagged."""
    ev = r.get("evidence") or {}
    parts = [str(p) for p in (ev.get("inputs"), ev.get("sweep")) if p]
    weak = [str(w) for w in ev.get("weak") or []]
    for name, n in (ev.get("nonfinite") or {}).items():
        parts.append(
            f"{name}: {n.get('reference')} NaN/Inf in the reference, {n.get('candidate')} in onnxruntime"
        )
    if not parts and not weak:
        return ""
    flag = f" <b>weak evidence:</b> {_e('; '.join(weak))}" if weak else ""
    return f"<p class='evidence'>evidence: {_e('; '.join(parts))}.{flag}</p>"


def render_html(report: dict[str, Any]) -> str:
    """Render a verification report dict (``VerifyReport.to_dict()``) as one self-contained HTML page.

    Example:
        >>> page = render_html({"passed": True, "model_name": "deeplog", "outputs": []})
        >>> page.startswith("<!DOCTYPE html>")
        True
    """
    title = f"onnxship verify — {report.get('model_name') or report.get('backbone') or 'model'}"
    body = "".join(
        [
            f"<h1>{_e(title)}</h1>",
            _verdict(report),
            _synthetic_warning(report),
            "<h2>Summary</h2>",
            _evidence_line(report),
            _summary(report),
            _task_section(report),
            _candidates_section(report),
            _outputs_section(report),
            _shapes_section(report),
            _worst_section(report),
            _diagnostics_section(report),
            f"<p class='muted'>generated by onnxship {_e((report.get('environment') or {}).get('onnxship'))}</p>",
        ]
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}</style></head><body><main>{body}</main></body></html>\n"
    )

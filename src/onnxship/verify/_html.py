"""report.html: one self-contained page (inline CSS + SVG, no scripts, no network) rendered from report.json's dict.

Verdict first, then the candidates, per-output error histograms, per-shape error plots, worst samples and
diagnostics with advice. The renderer reads the report dict defensively (``.get``) so any schema-valid report, a
failed one included, renders.
"""

from __future__ import annotations

import html
import math
import re
from typing import Any

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

_LABEL_PX = 6.2  # width of one character of the 10px SVG font, rounded up (for label spacing)
_COLORS = ("#2f6fb3", "#d35400", "#1f8a4c", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d", "#b7950b")


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _num(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf"
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    return _e(value)


def _status(ok: Any) -> str:
    if ok is None:
        return '<span class="muted">—</span>'
    return '<span class="ok">pass</span>' if ok else '<span class="bad">FAIL</span>'


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kv(pairs: list[tuple[str, Any]], columns: int = 1) -> str:
    cells = [f"<th>{_e(k)}</th><td>{_num(v)}</td>" for k, v in pairs if v is not None]
    rows = "".join("<tr>" + "".join(cells[i : i + columns]) + "</tr>" for i in range(0, len(cells), columns))
    return f"<table>{rows}</table>"


def _histogram_svg(hist: dict[str, Any], marker: float | None) -> str:
    """Bars of |got - ref| counts per log10 bin; a dashed line at the tolerance."""
    counts = [int(c) for c in hist.get("counts") or []]
    edges = [float(x) for x in hist.get("log10_edges") or []]
    if not counts or not any(counts):
        zeros = hist.get("zeros")
        return (
            f'<p class="muted">all compared elements are identical ({_num(zeros)} exact zeros)</p>'
            if zeros
            else '<p class="muted">no error histogram</p>'
        )
    w, h, pad_l, pad_b = 320, 140, 34, 32  # ticks at h - pad_b + 12, the caption below them
    n = len(counts)
    bw = (w - pad_l - 6) / n
    top = max(counts)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" '
        f'aria-label="error histogram">'
    ]
    parts.append(f'<line x1="{pad_l}" y1="{h - pad_b}" x2="{w - 4}" y2="{h - pad_b}" stroke="#9ca3af"/>')
    for i, c in enumerate(counts):
        if not c:
            continue
        bh = (h - pad_b - 10) * math.log10(1 + c) / math.log10(1 + top)
        x = pad_l + i * bw
        parts.append(
            f'<rect x="{x:.1f}" y="{h - pad_b - bh:.1f}" width="{max(bw - 1, 1):.1f}" height="{bh:.1f}" '
            f'fill="#2f6fb3"><title>{c} elements</title></rect>'
        )
    # x labels: decades far enough apart for their text (edges[k] is the left edge of bar k + 1)
    per_decade = sum(1 for e in edges if 0 <= e - edges[0] < 1) or 1
    every = max(1, math.ceil(_LABEL_PX * 6 / (bw * per_decade)))  # "1e-12" is ~6 characters wide
    for k, edge in enumerate(edges):
        if float(edge).is_integer() and int(edge) % every == 0:
            x = pad_l + (k + 1) * bw
            parts.append(f'<text x="{x:.1f}" y="{h - pad_b + 12}" text-anchor="middle">1e{int(edge)}</text>')
    if marker is not None and marker > 0 and edges:
        pos = math.log10(marker)
        k = sum(1 for e in edges if e <= pos)
        frac = 0.0
        if 0 < k < len(edges):
            frac = (pos - edges[k - 1]) / (edges[k] - edges[k - 1])
        x = pad_l + (k + frac) * bw
        parts.append(
            f'<line x1="{x:.1f}" y1="6" x2="{x:.1f}" y2="{h - pad_b}" stroke="#c0392b" '
            f'stroke-dasharray="4 3"/><text x="{x + 3:.1f}" y="14" fill="#c0392b">atol</text>'
        )
    parts.append(f'<text x="{pad_l}" y="{h - 3}">|onnx − ref| per element (log bins)</text>')
    parts.append(f'<text x="2" y="14">{top}</text></svg>')
    return "".join(parts)


def _shape_plot_svg(
    points: list[tuple[str, dict[str, float | None]]],
    statuses: list[str] | None = None,
    atol: float | None = None,
    axis_title: str | None = None,
) -> str:
    """Max abs error (log scale) per shape, one polyline per output; skipped shapes marked, the atol dashed."""
    statuses = statuses or ["passed"] * len(points)
    outputs = sorted({o for _, vals in points for o in vals})
    vals = [v for _, d in points for v in d.values() if v is not None and v > 0 and math.isfinite(v)]
    if not points or (not outputs and "skipped" not in statuses):
        return '<p class="muted">no shape points</p>'
    if atol is not None and atol > 0:
        vals.append(atol)
    lo = math.floor(math.log10(min(vals))) if vals else -8
    hi = math.ceil(math.log10(max(vals))) if vals else 0
    lo, hi = min(lo, hi - 1), max(hi, lo + 1)
    w, pad_l, pad_r, plot_h = 760, 60, 70, 154
    step = (w - pad_l - pad_r) / max(len(points) - 1, 1)
    labels = [label[:30] for label, _ in points]
    longest = max((len(t) for t in labels), default=0) * _LABEL_PX
    rotate = len(points) > 1 and longest > step - 8  # labels that would touch their neighbours stand upright
    label_h = (longest + 8) if rotate else 14
    title_h = 14 if axis_title else 0
    legend_y = plot_h + label_h + title_h + 18
    h = int(legend_y + 8)

    def y(v: float) -> float:
        if not math.isfinite(v):
            return 8.0  # an infinite error (shape mismatch, NaN in one engine) sits on the top edge
        lv = math.log10(v) if v > 0 else lo  # exact zeros sit on the bottom line
        return plot_h - (plot_h - 14) * (lv - lo) / (hi - lo)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" '
        f'aria-label="error per shape">'
    ]
    for d in range(lo, hi + 1):
        yy = y(10.0**d)
        parts.append(
            f'<line x1="{pad_l}" y1="{yy:.1f}" x2="{w - 10}" y2="{yy:.1f}" stroke="#eceff3"/>'
            f'<text x="{pad_l - 4}" y="{yy + 3:.1f}" text-anchor="end">1e{d}</text>'
        )
    if atol is not None and atol > 0:
        ya = y(atol)
        parts.append(
            f'<line class="tolerance" x1="{pad_l}" y1="{ya:.1f}" x2="{w - 10}" y2="{ya:.1f}" '
            f'stroke="#c0392b" stroke-dasharray="5 3"/>'
            f'<text x="{w - 10}" y="{ya - 3:.1f}" text-anchor="end" fill="#c0392b">atol {_num(atol)}</text>'
        )
    for i, label in enumerate(labels):
        x = pad_l + i * step
        ty = plot_h + 14
        if rotate:
            parts.append(
                f'<text x="{x + 3:.1f}" y="{plot_h + 6:.1f}" text-anchor="end" '
                f'transform="rotate(-90 {x + 3:.1f} {plot_h + 6:.1f})">{_e(label)}</text>'
            )
        else:
            parts.append(f'<text x="{x:.1f}" y="{ty:.1f}" text-anchor="middle">{_e(label)}</text>')
        if statuses[i] == "skipped":
            yy = plot_h - 6
            parts.append(
                f'<g class="skipped"><line x1="{x - 4:.1f}" y1="{yy - 4:.1f}" x2="{x + 4:.1f}" y2="{yy + 4:.1f}" '
                f'stroke="#6b7280" stroke-width="2"/><line x1="{x - 4:.1f}" y1="{yy + 4:.1f}" x2="{x + 4:.1f}" '
                f'y2="{yy - 4:.1f}" stroke="#6b7280" stroke-width="2"/><title>{_e(label)}: skipped (the '
                f"reference model does not accept this shape)</title></g>"
            )
    for k, name in enumerate(outputs):
        color = _COLORS[k % len(_COLORS)]
        # points where this output was not compared are left out (not drawn as zero)
        coords = [
            (pad_l + i * step, y(d[name]), label, d[name], statuses[i])
            for i, (label, d) in enumerate(points)
            if d.get(name) is not None
        ]
        if len(coords) > 1:
            path = " ".join(f"{x:.1f},{yy:.1f}" for x, yy, _, _, _ in coords)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        for x, yy, label, v, status in coords:
            ring = ' stroke="#c0392b" stroke-width="2"' if status == "failed" else ""
            parts.append(
                f'<circle cx="{x:.1f}" cy="{yy:.1f}" r="3.5" fill="{color}"{ring}><title>{_e(name)} @ '
                f"{_e(label)}: {_num(v)} ({_e(status)})</title></circle>"
            )
    if axis_title:
        parts.append(
            f'<text x="{(pad_l + w - pad_r) / 2:.1f}" y="{plot_h + label_h + 14:.1f}" text-anchor="middle" '
            f'fill="#6b7280">{_e(axis_title)}</text>'
        )
    legend_x = pad_l
    items = [(name, _COLORS[k % len(_COLORS)]) for k, name in enumerate(outputs)]
    for name, color in items:
        text = name[:24]
        parts.append(
            f'<rect x="{legend_x}" y="{legend_y - 9:.1f}" width="10" height="10" fill="{color}"/>'
            f'<text x="{legend_x + 14}" y="{legend_y:.1f}">{_e(text)}</text>'
        )
        legend_x += int(24 + len(text) * _LABEL_PX)
    if "skipped" in statuses:
        parts.append(f'<text x="{legend_x}" y="{legend_y:.1f}" fill="#6b7280">× skipped shape</text>')
    parts.append("</svg>")
    return "".join(parts)


def _dims_label(shape: dict[str, Any]) -> str:
    dims = shape.get("dims")
    if isinstance(dims, dict) and dims:
        return ", ".join(f"{k}={v}" for k, v in dims.items())
    shapes = shape.get("input_shapes")
    if isinstance(shapes, dict) and shapes:
        return "; ".join("x".join(str(d) for d in s) for s in shapes.values())
    return str(shape.get("label") or shape.get("group") or "export shape")


def _shape_output_value(entry: Any) -> float | None:
    if isinstance(entry, dict):
        v = entry.get("max_abs")
        return float(v) if isinstance(v, (int, float)) else None
    return float(entry) if isinstance(entry, (int, float)) else None


def _shape_outputs(shape: dict[str, Any]) -> dict[str, float | None]:
    outs = shape.get("outputs") or {}
    if isinstance(outs, list):
        return {str(o.get("name")): _shape_output_value(o) for o in outs if isinstance(o, dict)}
    return {str(k): _shape_output_value(v) for k, v in outs.items()}


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


def _task_section(r: dict[str, Any]) -> str:
    t = r.get("task_metrics")
    if not isinstance(t, dict) or not t:
        return ""
    skip = {"per_class_top10", "gate", "nms", "task"}
    pairs = [(k, v) for k, v in t.items() if k not in skip and not isinstance(v, (dict, list))]
    out = [
        f"<h2>Task agreement: {_e(t.get('task') or r.get('task'))} {_status(t.get('passed'))}</h2>",
        _kv(pairs, columns=2),
    ]
    if t.get("gate"):
        out.append(
            "<p class='muted'>gate: "
            + ", ".join(f"{_e(k)} ≤ {_num(v)}" for k, v in t["gate"].items())
            + "</p>"
        )
    if t.get("nms"):
        out.append(
            "<p class='muted'>shared NMS (both engines): "
            + ", ".join(f"{_e(k)}={_num(v)}" for k, v in t["nms"].items())
            + "</p>"
        )
    confusion = [c for c in t.get("worst_confusion") or [] if isinstance(c, dict)]
    if confusion:
        out.append(_confusion(confusion))
    top = t.get("per_class_top10") or []
    if top:
        out.append("<h3>Classes with the most top-1 mismatches</h3>")
        out.append(
            _table(
                ["class", "mismatches", "samples", "rate"],
                [
                    [
                        _e(p.get("class")),
                        _num(p.get("mismatches")),
                        _num(p.get("samples")),
                        _num(p.get("rate")),
                    ]
                    for p in top
                ],
                {1, 2, 3},
            )
        )
    return "".join(out)


def _confusion(pairs: list[dict[str, Any]]) -> str:
    """Reference class x ONNX class for the samples with the largest probability error."""
    ref = sorted({int(p["reference"]) for p in pairs})
    got = sorted({int(p["onnx"]) for p in pairs})
    counts = {(int(p["reference"]), int(p["onnx"])): int(p.get("count") or 0) for p in pairs}
    total = sum(counts.values())
    off = sum(c for (a, b), c in counts.items() if a != b)
    if len(ref) > 15 or len(got) > 15:  # too many classes for a matrix: the pairs
        rows = [[_e(p["reference"]), _e(p["onnx"]), _num(p.get("count"))] for p in pairs[:20]]
        table = _table(["reference class", "ONNX class", "samples"], rows, {2})
    else:
        head = "<tr><th>reference ↓ / ONNX →</th>" + "".join(f"<th>{g}</th>" for g in got) + "</tr>"
        body = "".join(
            f"<tr><th>{a}</th>"
            + "".join(
                f'<td class="num{" bad" if a != b and counts.get((a, b)) else ""}">{counts.get((a, b), "")}</td>'
                for b in got
            )
            + "</tr>"
            for a in ref
        )
        table = f'<table class="confusion">{head}{body}</table>'
    return (
        f"<h3>Confusion of the {total} worst samples (by probability error)</h3>"
        f"<p class='muted'>{off} of them change class between PyTorch and ONNX</p>{table}"
    )


def _outputs_section(r: dict[str, Any]) -> str:
    outputs = [o for o in r.get("outputs") or [] if isinstance(o, dict)]
    if not outputs:
        return "<h2>Outputs</h2><p class='muted'>no outputs were compared</p>"
    rows = []
    for o in outputs:
        smallest = o.get("smallest_passing") or {}
        rows.append(
            [
                _e(o.get("name")),
                _status(o.get("passed")),
                _num(o.get("samples")),
                _num(o.get("max_abs")),
                _num(o.get("max_rel")),
                _num(o.get("mse_mean")),
                _num(o.get("mse_p99")),
                _num(o.get("cosine_min")),
                _num(smallest.get("atol")),
                _e("; ".join(o.get("failures") or [])),
            ]
        )
    cards = []
    for o in outputs:
        tol = o.get("tolerance") or {}
        marker = tol.get("atol") if isinstance(tol, dict) else None
        cards.append(
            f'<div class="card"><h3>{_e(o.get("name"))} {_status(o.get("passed"))}</h3>'
            f"{_histogram_svg(o.get('histogram') or {}, marker)}</div>"
        )
    return (
        "<h2>Outputs</h2>"
        + _table(
            [
                "output",
                "verdict",
                "samples",
                "max abs",
                "max rel",
                "MSE mean",
                "MSE p99",
                "cosine min",
                "smallest passing atol",
                "failures",
            ],
            rows,
            {2, 3, 4, 5, 6, 7, 8},
        )
        + "<h3>Error histograms</h3><div class='grid'>"
        + "".join(cards)
        + "</div>"
    )


def _shapes_section(r: dict[str, Any]) -> str:
    shapes = [s for s in r.get("shapes") or [] if isinstance(s, dict)]
    if not shapes:
        return ""
    points = [(_dims_label(s), _shape_outputs(s)) for s in shapes]
    rows = [
        [
            _e(label),
            _e(s.get("status")),
            _e(s.get("kind") or s.get("source") or ""),
            _e(
                "; ".join(
                    f"{k}: {'x'.join(str(d) for d in v)}" for k, v in (s.get("input_shapes") or {}).items()
                )
            ),
            _e(", ".join(f"{k}={_num(v)}" for k, v in vals.items())),
            _e(s.get("error") or ""),
        ]
        for (label, vals), s in zip(points, shapes, strict=True)
    ]
    statuses = [str(s.get("status") or "passed") for s in shapes]
    short, axis_title = _short_labels(shapes)
    plot_points = [(lab, vals) for lab, (_, vals) in zip(short, points, strict=True)] if short else points
    for row, status in zip(rows, statuses, strict=True):
        if status == "skipped":
            row[1] = '<span class="muted">skipped</span>'
        elif status == "failed":
            row[1] = '<span class="bad">failed</span>'
    return (
        "<h2>Shapes</h2><div class='card'>"
        + _shape_plot_svg(plot_points, statuses, _common_atol(r), axis_title)
        + "</div>"
        + _table(["dims", "status", "kind", "input shapes", "max abs per output", "error"], rows)
        + _shape_histograms(shapes, points, r)
    )


def _short_labels(shapes: list[dict[str, Any]]) -> tuple[list[str] | None, str | None]:
    """``2×10`` per shape with ``batch × seq`` as the axis title, when every shape has the same named dims."""
    dims = [s.get("dims") for s in shapes]
    if not dims or not all(isinstance(d, dict) and d for d in dims):
        return None, None
    keys = list(dims[0])
    if any(list(d) != keys for d in dims):
        return None, None
    return ["×".join(str(d[k]) for k in keys) for d in dims], " × ".join(keys)


def _tolerances(r: dict[str, Any]) -> dict[str, float]:
    out = {}
    for o in r.get("outputs") or []:
        tol = o.get("tolerance") if isinstance(o, dict) else None
        if isinstance(tol, dict) and isinstance(tol.get("atol"), (int, float)):
            out[str(o.get("name"))] = float(tol["atol"])
    return out


def _common_atol(r: dict[str, Any]) -> float | None:
    """The atol the shape plot draws: the one every output shares, else the smallest (the strictest)."""
    tols = _tolerances(r)
    return min(tols.values()) if tols else None


_MAX_SHAPE_CARDS = 12


def _shape_histograms(shapes: list[dict[str, Any]], points: list[Any], r: dict[str, Any]) -> str:
    """One error histogram per shape and output (when the report holds them), the atol dashed."""
    tols = _tolerances(r)
    cards = []
    for s, (label, _) in zip(shapes, points, strict=True):
        outs = s.get("outputs") or {}
        if not isinstance(outs, dict):
            continue
        for name, entry in outs.items():
            hist = entry.get("histogram") if isinstance(entry, dict) else None
            if isinstance(hist, dict) and hist.get("counts"):
                cards.append(
                    f'<div class="card"><h3>{_e(label)} · {_e(name)} {_status(entry.get("passed"))}</h3>'
                    f"{_histogram_svg(hist, tols.get(str(name)))}</div>"
                )
    if not cards:
        return ""
    more = len(cards) - _MAX_SHAPE_CARDS
    return (
        "<h3>Error histograms per shape</h3><div class='grid'>"
        + "".join(cards[:_MAX_SHAPE_CARDS])
        + "</div>"
        + (f"<p class='muted'>{more} more in report.json</p>" if more > 0 else "")
    )


def _worst_section(r: dict[str, Any]) -> str:
    worst = [w for w in r.get("worst_samples") or [] if isinstance(w, dict)]
    if not worst:
        return ""
    keys = [
        k for k in ("output", "index", "id", "group", "label", "max_abs", "mse") if any(k in w for w in worst)
    ]
    rows = [[_num(w.get(k)) if k in ("max_abs", "mse") else _e(w.get(k)) for k in keys] for w in worst[:20]]
    return "<h2>Worst samples</h2>" + _table(
        keys, rows, {i for i, k in enumerate(keys) if k in ("max_abs", "mse")}
    )


def _candidates_section(r: dict[str, Any]) -> str:
    cands = [c for c in r.get("candidates") or [] if isinstance(c, dict)]
    if not cands:
        return ""
    rows = [
        [
            _e(c.get("strategy")),
            _e(c.get("opset")),
            _e("dynamic" if c.get("dynamic", True) else "static"),
            f'<span class="{"ok" if c.get("outcome") == "accepted" else "bad"}">{_e(c.get("outcome"))}</span>',
            _num(c.get("export_seconds")),
            _num(c.get("verify_seconds")),
            _e(c.get("reason") or ""),
        ]
        for c in cands
    ]
    return "<h2>Export candidates</h2>" + _table(
        ["strategy", "opset asked", "dims", "outcome", "export s", "verify s", "reason"], rows, {4, 5}
    )


def _diagnostics_section(r: dict[str, Any]) -> str:
    diags = [d for d in r.get("diagnostics") or [] if isinstance(d, dict)]
    notes = r.get("notes") or (r.get("compare") or {}).get("notes")
    issues = r.get("shape_issues") or {}
    issue_lines = [
        str(i) if not isinstance(i, dict) else (i.get("message") or str(i))
        for key in ("static_axes", "output_dims")
        for i in (issues.get(key) or [])
    ]
    if not diags and not notes and not issue_lines:
        return ""
    out = ["<h2>Diagnostics and advice</h2>"]
    if issue_lines:
        out.append(
            '<div class="diag error"><b>shape issues</b><ul>'
            + "".join(f"<li>{_e(t)}</li>" for t in issue_lines)
            + "</ul></div>"
        )
    for d in diags:
        sev = str(d.get("severity") or "info")
        out.append(
            f'<div class="diag {_e(sev)}"><b>{_e(d.get("code") or "")} {_e(d.get("title") or "")}</b> '
            f'<span class="muted">({_e(sev)})</span><br>{_e(d.get("message") or "")}'
            + (f"<br><i>advice:</i> {_e(d.get('advice'))}" if d.get("advice") else "")
            + "</div>"
        )
    if notes:
        items = notes if isinstance(notes, list) else [notes]
        out.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in items) + "</ul>")
    return "".join(out)


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

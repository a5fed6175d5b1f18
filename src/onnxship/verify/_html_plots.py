"""report.html building blocks: escaping and number formatting, tables and key/value grids, and the inline SVG
plots (per-output error histograms, per-shape error plots) with the shape labels they are drawn against.
"""

from __future__ import annotations

import html
import math
from typing import Any

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

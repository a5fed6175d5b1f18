"""report.html sections below the verdict and summary: task agreement (with the confusion table), candidates,
per-output errors, per-shape errors, worst samples and diagnostics with advice.

Each section reads the report dict defensively (``.get``) and renders to nothing when its part is absent.
"""

from __future__ import annotations

from typing import Any

from onnxship.verify._html_plots import (
    _dims_label,
    _e,
    _histogram_svg,
    _kv,
    _num,
    _shape_outputs,
    _shape_plot_svg,
    _status,
    _table,
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

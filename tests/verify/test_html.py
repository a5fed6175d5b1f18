"""report.html: self-contained, verdict first, every section present; rendered in headless Debian chromium."""

from __future__ import annotations

import re

import numpy as np
import pytest

from onnxship.verify._html import render_html


def sample_report(passed: bool = False) -> dict:
    """A report dict shaped like VerifyReport.to_dict(): two outputs, a sweep, task metrics, candidates."""
    edges = [float(x) for x in np.arange(-12.0, 2.01, 0.5)]
    counts = [0] * (len(edges) + 1)
    counts[10:16] = [3, 40, 900, 2500, 300, 12]
    return {
        "schema": "onnxship.verify-report/1",
        "passed": passed,
        "failure_reason": None
        if passed
        else "output 'logits': 12 of 4000 elements outside atol=1e-4 rtol=1e-3",
        "hint": None if passed else "would pass with atol=3.2e-4; likely causes: op conversion differences",
        "worst_output": "logits",
        "model_name": "deeplog <script>alert(1)</script>",
        "onnx_path": "/tmp/deeplog.onnx",
        "precision": "fp32",
        "task": "sequence",
        "reference": "torch",
        "opset": 17,
        "dynamic_axes": True,
        "input_shape": [2, 10],
        "providers": ["CPUExecutionProvider"],
        "exported_at_utc": "2026-11-23T12:00:00Z",
        "git_sha": "abc1234",
        "params_million": 0.05,
        "data": "synthetic: 32 samples from the input specs",
        "compare": {"mode": "smoke", "sample_policy": "random", "sample_count": 32, "failed": not passed},
        "outputs": [
            {
                "name": "logits",
                "passed": passed,
                "samples": 32,
                "max_abs": 3.2e-4,
                "max_rel": 2e-3,
                "mse_mean": 1e-9,
                "mse_p99": 4e-9,
                "cosine_min": 0.99999,
                "failures": [] if passed else ["12 elements outside"],
                "tolerance": {"atol": 1e-4, "rtol": 1e-3},
                "smallest_passing": {"atol": 3.2e-4, "rtol": 1e-3},
                "histogram": {"log10_edges": edges, "counts": counts, "zeros": 5},
            },
            {
                "name": "hidden",
                "passed": True,
                "samples": 32,
                "max_abs": 0.0,
                "max_rel": 0.0,
                "mse_mean": 0.0,
                "mse_p99": 0.0,
                "cosine_min": 1.0,
                "failures": [],
                "tolerance": {"atol": 1e-4, "rtol": 1e-3},
                "histogram": {"log10_edges": edges, "counts": [0] * len(counts), "zeros": 640},
            },
        ],
        "shapes": [
            {
                "group": "batch=2, seq=10",
                "kind": "sweep",
                "dims": {"batch": 2, "seq": 10},
                "status": "passed",
                "input_shapes": {"input_sequence": [2, 10]},
                "outputs": {"logits": {"max_abs": 2e-7}, "hidden": {"max_abs": 0.0}},
            },
            {
                "group": "batch=1, seq=1",
                "kind": "sweep",
                "dims": {"batch": 1, "seq": 1},
                "status": "passed",
                "input_shapes": {"input_sequence": [1, 1]},
                "outputs": {"logits": {"max_abs": 1e-7}},
            },
            {
                "group": "batch=16, seq=32",
                "kind": "sweep",
                "dims": {"batch": 16, "seq": 32},
                "status": "failed",
                "input_shapes": {"input_sequence": [16, 32]},
                "error": "logits: 12 elements outside",
                "outputs": {"logits": {"max_abs": 3.2e-4}},
            },
        ],
        "task_metrics": {
            "task": "sequence",
            "samples": 32,
            "top_g": 9,
            "decision_agreement": 1.0,
            "passed": True,
            "gate": {"decision_disagreement": 0.01},
        },
        "worst_samples": [
            {"output": "logits", "index": 7, "id": "row 7", "group": "data", "max_abs": 3.2e-4, "mse": 1e-8}
        ],
        "shape_issues": {
            "static_axes": [],
            "output_dims": ["output 'logits' declares dim 1 = 10, observed 32"],
        },
        "candidates": [
            {
                "strategy": "dynamo",
                "opset": 17,
                "dynamic": True,
                "outcome": "rejected",
                "reason": "requested dynamic dims were made static",
            },
            {"strategy": "torchscript", "opset": 17, "dynamic": True, "outcome": "accepted"},
        ],
        "diagnostics": [
            {
                "code": "ONX101",
                "severity": "warning",
                "title": "python value frozen by tracing",
                "message": "Converting a tensor to a Python number",
                "advice": "verify at other shapes",
            }
        ],
        "environment": {"onnxship": "0.1.0", "onnxruntime": "1.32", "torch": "2.13.0"},
        "timing": {"seconds": 1.5, "samples_per_second": 21.3},
    }


def test_render_puts_the_verdict_first_and_has_every_section():
    page = render_html(sample_report(passed=False))
    assert page.startswith("<!DOCTYPE html>")
    first = page.index('class="verdict fail"')
    for section in (
        "Summary",
        "Task agreement",
        "Export candidates",
        "Outputs",
        "Error histograms",
        "Shapes",
        "Worst samples",
        "Diagnostics and advice",
    ):
        assert page.index(f"{section}") > first, section
    assert "worst output <b>logits</b>" in page and "smallest passing: atol=3.200e-04" in page
    assert page.count("<svg") == 2  # the histogram of 'logits' and the shape plot ('hidden' has no errors)
    assert "all compared elements are identical" in page
    assert "output &#x27;logits&#x27; declares dim 1 = 10" in page


def test_render_is_self_contained_and_escapes():
    page = render_html(sample_report(passed=True))
    assert "<script" not in page  # the model name's script tag is escaped
    assert "&lt;script&gt;" in page
    # no resource is fetched: the only URL is the SVG namespace
    assert not re.search(r"\b(src|href)\s*=", page) and "url(" not in page and "@import" not in page
    assert set(re.findall(r"https?://[^\"' ]+", page)) == {"http://www.w3.org/2000/svg"}
    assert 'class="verdict pass"' in page


def test_render_survives_a_minimal_report():
    page = render_html({"passed": False, "failure_reason": "onnxruntime cannot load it"})
    assert "FAIL" in page and "onnxruntime cannot load it" in page and "no outputs were compared" in page


@pytest.mark.component
def test_chromium_detects_console_errors(tmp_path, chromium_screenshot):
    """Negative control: the console check below does catch a broken page."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>undefinedFunction()</script></body></html>")
    console = chromium_screenshot(bad, tmp_path / "bad.png")
    assert any("undefinedFunction" in line for line in console)


@pytest.mark.component
def test_report_renders_in_headless_chromium(tmp_path, chromium_screenshot):
    from PIL import Image

    page = tmp_path / "report.html"
    page.write_text(render_html(sample_report(passed=False)), encoding="utf-8")
    png = tmp_path / "report.png"
    console = chromium_screenshot(page, png)
    assert console == []
    img = np.asarray(Image.open(png).convert("RGB"))
    assert img.shape[0] == 2400 and img.shape[1] == 1200
    # the red FAIL banner is rendered near the top (#c0392b)
    top = img[:250]
    red = (np.abs(top[..., 0].astype(int) - 0xC0) < 8) & (np.abs(top[..., 1].astype(int) - 0x39) < 8)
    assert red.sum() > 5000
    # histogram bars (#2f6fb3) are drawn somewhere below
    blue = (np.abs(img[..., 0].astype(int) - 0x2F) < 8) & (np.abs(img[..., 2].astype(int) - 0xB3) < 8)
    assert blue.sum() > 200


# --------------------------------------------------------------------------------------------------------------
# Layout checked in a real browser: 1280 px wide, the bounding boxes of every SVG text measured by chromium itself.

_MEASURE = """
<script>
addEventListener('load', () => {
  const boxes = [];
  document.querySelectorAll('svg').forEach((svg, s) => {
    svg.querySelectorAll('text').forEach(t => {
      const b = t.getBoundingClientRect();
      boxes.push({svg: s, text: t.textContent, x: b.left, y: b.top, w: b.width, h: b.height});
    });
  });
  const out = document.createElement('pre');
  out.id = 'measured';
  out.textContent = JSON.stringify({boxes: boxes, scrollWidth: document.documentElement.scrollWidth,
                                    svgs: document.querySelectorAll('svg').length});
  document.body.appendChild(out);
});
</script>
"""


def _wide_report() -> dict:
    """Many shapes with long labels (one skipped, one failed), per-shape histograms, a classification confusion."""
    r = sample_report(passed=False)
    edges = r["outputs"][0]["histogram"]["log10_edges"]
    counts = r["outputs"][0]["histogram"]["counts"]
    shapes = []
    for i, (b, q) in enumerate([(1, 1), (2, 10), (3, 11), (7, 33), (16, 32), (31, 63), (64, 64), (128, 512)]):
        status = "skipped" if i == 7 else ("failed" if i == 4 else "passed")
        outputs = (
            {}
            if status == "skipped"
            else {
                "logits": {
                    "max_abs": 2e-7 * (i + 1),
                    "passed": status == "passed",
                    "histogram": {"log10_edges": edges, "counts": counts, "zeros": 1},
                },
                "hidden": {"max_abs": 1e-9 * (i + 1), "passed": True},
            }
        )
        shapes.append(
            {
                "group": f"sweep: batch={b}, seq={q}",
                "kind": "sweep",
                "dims": {"batch": b, "sequence_length": q},
                "status": status,
                "input_shapes": {"input_sequence": [b, q]},
                "outputs": outputs,
                "error": "reference cannot run this shape" if status == "skipped" else None,
            }
        )
    r["shapes"] = shapes
    r["task"] = "classification"
    r["task_metrics"] = {
        "task": "classification",
        "samples": 200,
        "top1_mismatch_rate": 0.02,
        "passed": False,
        "worst_confusion": [
            {"reference": 3, "onnx": 5, "count": 2},
            {"reference": 1, "onnx": 1, "count": 40},
            {"reference": 3, "onnx": 3, "count": 8},
        ],
    }
    r["diagnostics"].append(
        {
            "code": "ONX112",
            "severity": "info",
            "title": "opset raised by the dynamo exporter",
            "message": "Setting ONNX exporter to use operator set version 18 because the requested opset_version 17 "
            "is a lower version than we have implementations for.",
        }
    )
    return r


def test_report_marks_what_a_reader_needs():
    page = render_html(_wide_report())
    assert "Inputs were synthetic" in page  # the data were random samples from the specs
    assert "17 in the file (built at 18 by the exporter, converted to 17)" in page  # no opset contradiction
    assert page.count('class="skipped"') == 1 and "× skipped shape" in page
    assert 'class="tolerance"' in page and "atol 1.000e-04" in page  # the atol line on the per-shape plot
    assert "Error histograms per shape" in page and page.count("batch=2, sequence_length=10 · logits") == 1
    assert "Confusion of the 50 worst samples" in page and "2 of them change class" in page
    real = render_html(
        {**sample_report(passed=True), "data": "images in /data/val (120 files)", "worst_samples": []}
    )
    assert "Inputs were synthetic" not in real


def _overlaps(boxes: list[dict]) -> list[tuple[str, str]]:
    bad = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            if a["svg"] != b["svg"] or not a["w"] or not b["w"]:
                continue
            dx = min(a["x"] + a["w"], b["x"] + b["w"]) - max(a["x"], b["x"])
            dy = min(a["y"] + a["h"], b["y"] + b["h"]) - max(a["y"], b["y"])
            if dx > 0.5 and dy > 0.5:
                bad.append((a["text"], b["text"]))
    return bad


@pytest.mark.component
def test_report_layout_in_chromium_at_1280_px(tmp_path, require_component):
    """Screenshot at 1280 px, and no SVG label (axes, ticks, legends, markers) overlaps another one."""
    import json
    import shutil
    import subprocess

    exe = shutil.which("chromium")
    require_component(exe is not None, "chromium is not installed (scripts/components.sh component_chromium)")
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,3000",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]  # fmt: skip
    page = render_html(_wide_report())
    mixed = _wide_report()  # a data group (no dims) among the sweep shapes: full labels, stood upright
    mixed["shapes"].insert(
        0, {**mixed["shapes"][1], "group": "data: input_sequence[10]", "kind": "data", "dims": {}}
    )
    page = page.replace(
        "</main>", render_html(mixed).split("<main>", 1)[1].split("</main>", 1)[0] + "</main>"
    )
    report = tmp_path / "report.html"
    report.write_text(page, encoding="utf-8")
    png = tmp_path / "report.png"
    shot = subprocess.run(
        [exe, *flags, f"--screenshot={png}", report.as_uri()], capture_output=True, timeout=90
    )
    assert shot.returncode == 0 and png.stat().st_size > 0, shot.stderr[-2000:]
    from PIL import Image

    assert Image.open(png).size == (1280, 3000)

    probe = tmp_path / "probe.html"  # the same page plus a measuring script (the report itself has none)
    probe.write_text(page.replace("</body>", _MEASURE + "</body>"), encoding="utf-8")
    dump = subprocess.run(
        [exe, *flags, "--virtual-time-budget=3000", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert dump.returncode == 0, dump.stderr[-2000:]
    found = re.search(r'<pre id="measured">(.*?)</pre>', dump.stdout, re.DOTALL)
    assert found, dump.stdout[-2000:]
    measured = json.loads(html_unescape(found.group(1)))
    assert measured["svgs"] >= 4 and len(measured["boxes"]) > 40
    assert measured["scrollWidth"] <= 1280, "the page scrolls sideways at 1280 px"
    assert _overlaps(measured["boxes"]) == []
    # the negative control: the same check catches labels drawn on top of each other
    crowded = [
        {"svg": 0, "text": t, "x": 10.0 + i, "y": 5.0, "w": 30.0, "h": 10.0} for i, t in enumerate("ab")
    ]
    assert _overlaps(crowded) == [("a", "b")]


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)


def test_classification_confusion_of_the_worst_samples_is_measured_and_shown():
    from onnxship.verify._tasks import ClassificationMetric

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(300, 5)).astype(np.float32)
    got = ref + rng.normal(scale=1e-4, size=ref.shape).astype(np.float32)
    flip = [3, 17]  # two samples whose top-1 changes: the largest probability errors
    for i in flip:
        top = int(ref[i].argmax())
        got[i, (top + 1) % 5] = ref[i, top] + 5.0
    metric = ClassificationMetric()
    metric.update(ref, got)
    result = metric.result().to_dict()
    pairs = result["worst_confusion"]
    assert sum(p["count"] for p in pairs) == 50  # the 50 worst samples
    changed = [p for p in pairs if p["reference"] != p["onnx"]]
    assert sum(p["count"] for p in changed) == 2 and pairs[0] in changed  # class changes listed first
    page = render_html({**sample_report(passed=False), "task": "classification", "task_metrics": result})
    assert "Confusion of the 50 worst samples" in page and "2 of them change class" in page

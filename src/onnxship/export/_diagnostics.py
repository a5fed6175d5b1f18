"""Export diagnostics: every warning and log line captured during export, classified into a code with advice.

One classifier serves the exporter (live capture) and ``onnxship doctor export-log`` (saved logs).
The rules reflect what was measured on torch 2.13 (see EXPORTER-NOTES.md): most exporter warnings are noise or
"verify at other shapes" signals; the dangerous behaviours are silent and are caught by the shape sweep instead.

Size: over 400 lines on purpose: most of it is the classifier's rule table (pattern, code, severity, advice):
data, read rule by rule.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from onnxship import _progress

__all__ = [
    "RULES",
    "Diagnostic",
    "DiagnosticRule",
    "capture_diagnostics",
    "classify",
    "classify_log",
    "merge_diagnostics",
    "root_cause",
]

SEVERITIES = ("error", "warning", "info", "noise")


@dataclass(frozen=True)
class DiagnosticRule:
    """A pattern over a warning/log message and what it means for the user."""

    code: str  # stable identifier, e.g. ONX101
    title: str  # short name
    pattern: str  # regex searched in the message (case-insensitive)
    severity: str  # error | warning | info | noise
    advice: str  # what to do about it
    category: str | None = None  # warning class name to require (e.g. TracerWarning)


# Codes ONX101-ONX139 classify exporter messages; ONX140-ONX159 are onnxship's own export notes (export/_api.py).
RULES: tuple[DiagnosticRule, ...] = (
    DiagnosticRule(
        "ONX101",
        "python value from a tensor frozen by tracing",
        r"Converting a tensor to a Python (boolean|number|integer|float|index)",
        "warning",
        "TorchScript tracing turned a tensor into a Python value (bool(x), int(x), float(x.shape[..]), `if tensor:`);"
        " the value is baked in at the traced shape. It is harmless when it does not depend on input values or "
        "dynamic dims; onnxship's shape sweep decides. If the sweep fails, keep shapes as tensors "
        "(x.size(1) without float()/int()) or use torch.where instead of Python branches.",
        "TracerWarning",
    ),
    DiagnosticRule(
        "ONX102",
        "torch.tensor() constant baked into the trace",
        r"torch\.tensor results are registered as constants",
        "info",
        "torch.tensor(...) inside forward() becomes a constant in the trace. torch.tensor(x.shape[1]) alone stayed "
        "dynamic in measurements, so this is often a false alarm; the shape sweep verifies it. Prefer tensor ops "
        "(x.new_tensor, torch.full_like) for values that depend on inputs.",
    ),
    DiagnosticRule(
        "ONX103",
        "shape value frozen by tracing",
        r"(Iterating over a tensor|trace might not generalize|Converting a tensor to a NumPy array|"
        r"is treated as a constant|will be treated as a constant)",
        "warning",
        "Tracing recorded a concrete shape or value. Run-time inputs of other shapes may give wrong results; the "
        "shape sweep checks it. Avoid Python loops over tensors and numpy conversions inside forward().",
    ),
    DiagnosticRule(
        "ONX104",
        "legacy TorchScript exporter deprecation",
        r"(legacy TorchScript-based ONNX export|TorchScript-based ONNX export.*deprecated|"
        r"torch\.onnx\.dynamo_export is deprecated|The feature will be removed)",
        "noise",
        "The TorchScript exporter is deprecated but still the most robust fallback. onnxship tries the dynamo "
        "exporter first and records why it fell back; nothing to do unless you want dynamo to win.",
    ),
    DiagnosticRule(
        "ONX105",
        "RNN batch-size warning",
        r"batch_size other than 1.*(LSTM|GRU|RNN)|with LSTM can cause an error",
        "info",
        "The TorchScript exporter warns about LSTM/GRU with batch > 1 and variable length. Measured: a false alarm "
        "every time it was checked; the shape sweep runs the model at other batch sizes to prove it.",
    ),
    DiagnosticRule(
        "ONX106",
        "Slice constant folding",
        r"(Constant folding.*Slice|Slice.*constant folding|only steps=1 can be constant folded)",
        "info",
        "Constant folding skipped a Slice with steps > 1. The op stays in the graph; only a tiny speed cost.",
    ),
    DiagnosticRule(
        "ONX107",
        "operator has no ONNX implementation (dynamo)",
        r"(No ONNX function found|Unsupported FX nodes|is not supported in opset|UnsupportedOperatorError|"
        r"Exporting the operator .* is not supported|has no ONNX function)",
        "error",
        "The exporter has no ONNX translation for an operator at this opset. onnxship retries with the next opset "
        "and then the other exporter. If all fail, replace the op in forward() or register a custom translation "
        "(torch.onnx.export(custom_translation_table=...)).",
    ),
    DiagnosticRule(
        "ONX108",
        "data-dependent control flow",
        r"(GuardOnDataDependentSymNode|data[- ]dependent|Could not guard on data-dependent|"
        r"could not extract specialized integer from data-dependent)",
        "error",
        "forward() branches on tensor values (a Python `if` on data). torch.export cannot trace it: rewrite it with "
        "torch.where, or torch.cond (dynamo only). The TorchScript fallback records only the branch taken at "
        "export time, which the sweep checks with other data.",
    ),
    DiagnosticRule(
        "ONX109",
        "dynamic dim specialized by torch.export",
        r"(Constraints violated|specialized|Not all values of .* satisfy the generated guard|"
        r"marked as dynamic but|suggested fixes|0/1 specialization)",
        "error",
        "torch.export proved a dim you asked to be dynamic is constant (often a batch-1 example, or the dim used in "
        "Python arithmetic like float(x.shape[1])). The dynamo ONNX exporter then silently exports it static. "
        "Use an export value ≥ 2 for dynamic dims and keep shape math in tensor ops; onnxship compares the "
        "exported input dims with the requested ones and rejects such candidates.",
    ),
    DiagnosticRule(
        "ONX110",
        "copy construct from a tensor",
        r"To copy construct from a tensor, use sourceTensor\.clone\(\)\.detach\(\)",
        "warning",
        "forward() calls torch.tensor(t) on a tensor. Under tracing this may bake the value in as a constant. "
        "Use t.clone().detach() (or t.to(dtype)) instead.",
    ),
    DiagnosticRule(
        "ONX111",
        "internal exporter FutureWarning",
        r"(_check_is_size will be removed|isinstance\(treespec, LeafSpec\)|guard_size_oblivious|"
        r"torch\._dynamo|pytree|LeafSpec)",
        "noise",
        "An internal deprecation inside torch's exporter. Not about your model; nothing to do.",
    ),
    DiagnosticRule(
        "ONX112",
        "opset raised by the dynamo exporter",
        r"(Setting ONNX exporter to use operator set version|version conversion is not supported|"
        r"Automatic version conversion)",
        "info",
        "The dynamo exporter implements opset ≥ 18 and converts down to the requested opset. If your runtime "
        "supports opset 18 (onnxruntime ≥ 1.14 does), ask for --opset 18 to skip the conversion.",
    ),
    DiagnosticRule(
        "ONX113",
        "tensor attributes assigned during export",
        r"were assigned during export\. Such attributes must be registered as buffers",
        "noise",
        "torch.export noticed module attributes set in forward() (nn.LSTM's flat weights do this). Harmless for "
        "built-in RNNs; for your own modules, register such tensors with register_buffer().",
    ),
    DiagnosticRule(
        "ONX114",
        "dim name not used",
        r"axis name:? .* will not be used|dynamic_axes.*will not be used",
        "noise",
        "One named dim is shared across inputs; torch.export names it after the first input. The shapes still "
        "agree; nothing to do.",
    ),
    DiagnosticRule(
        "ONX115",
        "optional dependency skipped by the exporter",
        r"torchvision is not installed\. Skipping",
        "noise",
        "The exporter skips translations for torchvision ops because torchvision is not installed. Only matters "
        "for models that call torchvision.ops (nms, roi_align).",
    ),
    DiagnosticRule(
        "ONX116",
        "model too large for one protobuf",
        r"(exceeds.*2 ?GB|larger than 2GB|ByteSize|external data)",
        "info",
        "The model is above protobuf's 2 GB limit; onnxship stores weights as external data beside the .onnx "
        "(<name>.onnx.data). Ship both files together.",
    ),
    DiagnosticRule(
        "ONX117",
        "keyword inputs turned into graph inputs",
        r"(multiple values for argument|got an unexpected keyword argument)",
        "error",
        "The exporter mixed positional and keyword inputs. onnxship binds named inputs to forward()'s parameters "
        "by name; pass only the inputs the graph needs and give other forward() arguments defaults.",
    ),
    DiagnosticRule(
        "ONX122",
        "onnxruntime refuses an operator of the exported file",
        r"(Unrecognized attribute: \w+ for operator|Could not find an implementation for|No Op registered for)",
        "warning",
        "The file uses an operator (or attribute) this onnxruntime does not implement at the file's opset, often "
        "after a down-conversion by the dynamo exporter. onnxship retries at another opset, ending with the "
        "exporter's own; otherwise export at an opset your runtime supports, or register a custom-op library.",
    ),
    DiagnosticRule(
        "ONX123",
        "opset down-conversion failed: the file keeps the exporter's opset",
        r"(Failed to convert the model to the target version|Skipping version conversion for node|"
        r"version conver\w+ .*The model was not modified)",
        "warning",
        "The dynamo exporter writes opset 18 and could not convert it to the opset asked for, so the file is "
        "opset 18 (onnxship reports the opset in the file, not the one asked for). Leave --opset at its "
        "default, or export with the TorchScript exporter if your runtime needs the lower opset.",
    ),
    # The dynamo exporter's own summary line for each of its three steps (torch/onnx/_internal/exporter/_core.py).
    # Seen in saved logs (`doctor export-log`): "TorchExportError: Failed to export ..." has no "error" word
    # boundary, so without these rules the one line naming the failed step was dropped as progress output.
    DiagnosticRule(
        "ONX118",
        "dynamo step 1/3 failed: torch.export could not capture the model",
        r"Failed to export the model with torch\.export",
        "error",
        "torch.export could not trace forward(); the cause is the exception summary that follows it in the log "
        "(often a data-dependent branch, ONX108). onnxship falls back to the TorchScript exporter; to let dynamo "
        "win, rewrite the construct the cause names (see the torch.export exportdb).",
    ),
    DiagnosticRule(
        "ONX119",
        "dynamo step 2/3 failed: decomposition",
        r"Failed to decompose the FX graph for ONNX compatibility",
        "error",
        "torch.export captured the model but decomposing it to core ATen ops failed (e.g. a view of an "
        "incompatible shape). onnxship falls back to the TorchScript exporter; try another opset or simplify the "
        "op named in the log.",
    ),
    DiagnosticRule(
        "ONX120",
        "dynamo step 3/3 failed: ONNX translation",
        r"Failed to convert the exported program to an ONNX model",
        "error",
        "The graph was captured but an op has no ONNX translation at this opset (see ONX107). onnxship retries "
        "with the next opset, then the TorchScript exporter; or register a custom translation.",
    ),
)

_COMPILED = [(r, re.compile(r.pattern, re.IGNORECASE | re.DOTALL)) for r in RULES]
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


@dataclass
class Diagnostic:
    """One classified message (repeats are counted, not duplicated)."""

    code: str
    severity: str
    title: str
    message: str
    advice: str
    source: str = "warning"  # warning | log | exception | onnxship
    count: int = 1
    stage: str | None = None  # e.g. "dynamo/opset17"

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "title": self.title,
            "message": self.message,
            "advice": self.advice,
            "source": self.source,
            "count": self.count,
            "stage": self.stage,
        }


def classify(
    message: str, category: str | None = None, *, source: str = "warning", stage: str | None = None
) -> Diagnostic:
    """Classify one message; unknown messages become ONX199 (info) with the raw text kept.

    For a multi-line message (an exception with a traceback-like body) the line that matched is reported.
    """
    message = strip_ansi(message)
    for rule, rx in _COMPILED:
        if rule.category and category and rule.category != category:
            continue
        m = rx.search(message)
        if m:
            start = message.rfind("\n", 0, m.start()) + 1
            line = message[start:].split("\n", 1)[0]
            return Diagnostic(
                rule.code,
                rule.severity,
                rule.title,
                _first_line(line or message),
                rule.advice,
                source,
                stage=stage,
            )
    severity = (
        "warning"
        if category and "Warning" in category and category not in ("FutureWarning", "DeprecationWarning")
        else "info"
    )
    return Diagnostic(
        "ONX199",
        severity,
        "unclassified message",
        _first_line(message),
        "Not a known exporter pattern. If the shape sweep passes, the export is verified anyway.",
        source,
        stage=stage,
    )


def _first_line(message: str, limit: int = 300) -> str:
    line = message.strip().splitlines()[0] if message.strip() else ""
    return line[:limit]


def merge_diagnostics(items: list[Diagnostic]) -> list[Diagnostic]:
    """Collapse repeats (same code + message + stage) into one entry with a count."""
    merged: dict[tuple[str, str, str | None], Diagnostic] = {}
    for d in items:
        key = (d.code, d.message, d.stage)
        if key in merged:
            merged[key].count += d.count
        else:
            merged[key] = Diagnostic(**{**d.__dict__})
    order = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(merged.values(), key=lambda d: (order.get(d.severity, 9), d.code))


class _ListHandler(logging.Handler):
    def __init__(self, sink: list[tuple[str, str]]) -> None:
        super().__init__(level=logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # never raise from logging
            self.sink.append((record.getMessage(), record.levelname))


@dataclass
class Capture:
    """What one capture_diagnostics() block saw."""

    stage: str | None = None
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (message, category)
    logs: list[tuple[str, str]] = field(default_factory=list)  # (message, level)
    printed: str = ""  # what the exporter printed (progress lines), kept for the export log
    stderr: str = ""  # what went to stderr; classified line by line like a saved log
    frozen: list[str] = field(default_factory=list)  # "file.py:7 (`if x.mean() > 0:`)": values tracing froze

    def diagnostics(self) -> list[Diagnostic]:
        out = [classify(m, c, source="warning", stage=self.stage) for m, c in self.warnings]
        out += [classify(m, None, source="log", stage=self.stage) for m, _ in self.logs]
        out += classify_log(self.stderr, stage=self.stage)
        return merge_diagnostics(out)

    def text(self) -> str:
        lines = [f"[{c}] {m}" for m, c in self.warnings] + [f"[{lvl}] {m}" for m, lvl in self.logs]
        return "\n".join(lines)


@contextlib.contextmanager
def capture_diagnostics(
    stage: str | None = None,
    loggers: tuple[str, ...] = (
        "",
        "torch",
        "onnxscript",
        "torch.onnx",
        "torch.onnx._internal.exporter._compat",
        "torch.onnx._internal.exporter._registration",
        "onnxscript.version_converter",
    ),
) -> Iterator[Capture]:
    """Record every warning, WARNING+ log line and Python-level print inside the block; none reaches the console.

    The loggers' own handlers (torch installs some) are detached for the duration and restored afterwards.
    """
    import io

    cap = Capture(stage=stage)
    handler = _ListHandler(cap.logs)
    saved: list[tuple[logging.Logger, list[logging.Handler], bool]] = []
    known = logging.root.manager.loggerDict
    extra = [
        n
        for n, lg in list(known.items())
        if isinstance(lg, logging.Logger) and lg.handlers and n.startswith(("torch", "onnxscript", "onnx_ir"))
    ]
    for name in dict.fromkeys([*loggers, *extra]):
        lg = logging.getLogger(name)
        saved.append((lg, list(lg.handlers), lg.propagate))
        for h in list(lg.handlers):
            lg.removeHandler(h)
        lg.addHandler(handler)
        if name:
            lg.propagate = False
    out, err = _progress.StageStream((stage or "export").split("/")[0]), io.StringIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                yield cap
        finally:
            for w in caught:
                cap.warnings.append((str(w.message), w.category.__name__))
                if w.category.__name__ == "TracerWarning" and _FROZEN.search(str(w.message)):
                    site = _site(w.filename, w.lineno)
                    if site not in cap.frozen:
                        cap.frozen.append(site)
            for lg, handlers, prop in saved:
                lg.removeHandler(handler)
                for h in handlers:
                    lg.addHandler(h)
                lg.propagate = prop
            out.close_stages()
            cap.stderr = err.getvalue()
            cap.printed = out.getvalue() + cap.stderr


_FROZEN = re.compile(r"Converting a tensor to a Python (boolean|number|integer|float|index)", re.IGNORECASE)


def _site(filename: str, lineno: int) -> str:
    """``file.py:7: <the source line>`` of a warning (the user's code line the tracer pointed at)."""
    import linecache

    code = linecache.getline(filename, lineno).strip()
    return f"{filename}:{lineno}" + (f" (`{code}`)" if code else "")


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of a chain (``raise ... from``/during handling): the exporter's real reason.

    The dynamo exporter wraps every failure in "Failed to ... This is step N/3 ... Next steps" boilerplate; the
    exception it wraps says what actually went wrong (a data-dependent guard, a view of an incompatible shape).
    """
    seen = {id(exc)}
    cur = exc
    while True:
        nxt = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
        if nxt is None or id(nxt) in seen:
            return cur
        seen.add(id(nxt))
        cur = nxt


_LOG_LINE = re.compile(
    r"^(?:(?P<file>[^\s:]+\.py):\d+:\s*)?(?P<cat>[A-Z][A-Za-z]*(?:Warning|Error))?:?\s*(?P<msg>.*)$"
)


_EXC_LINE = re.compile(
    r"^(?:[A-Za-z_][\w.]*\.)?(?P<type>[A-Z]\w*(?:Error|Exception|SymNode|Exit))(?::\s*(?P<msg>.*))?$"
)
_CHAINED = (
    "The above exception was the direct cause of the following exception",
    "During handling of the above exception, another exception occurred",
)


def _log_root_cause(text: str, stage: str | None) -> Diagnostic | None:
    """In a traceback with chained exceptions, the first exception printed is the innermost: the root cause."""
    if not any(c in text for c in _CHAINED):
        return None
    lines = strip_ansi(text).splitlines()
    in_tb = False
    for i, raw in enumerate(lines):
        line = raw.strip()
        if line.startswith("Traceback (most recent call last)"):
            in_tb = True
            continue
        if in_tb and not raw.startswith((" ", "\t")):
            m = _EXC_LINE.match(line)
            if m and m["msg"]:
                rest = "\n".join(lines[i:])
                if not any(c in rest for c in _CHAINED):
                    return None  # the only exception: classified as usual
                inner = classify(line, m["type"], source="log", stage=stage)
                return Diagnostic(
                    "ONX121",
                    "error",
                    "root cause of the export failure",
                    _first_line(line),
                    (f"{inner.title}: {inner.advice}" if inner.code != "ONX199" else "")
                    + ' This is the innermost exception; the lines after it ("Failed to ... step N/3", '
                    '"Next steps") only wrap it.',
                    "log",
                    stage=stage,
                )
    return None


def classify_log(text: str, *, stage: str | None = None) -> list[Diagnostic]:
    """Classify a saved export log (stderr of torch.onnx.export or onnxship's own log)."""
    items: list[Diagnostic] = []
    cause = _log_root_cause(text, stage)
    if cause is not None:
        items.append(cause)
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("warnings.warn", "Traceback", "File ")):
            continue
        m = _LOG_LINE.match(line)
        cat = m["cat"] if m and m["cat"] else None
        d = classify(line, cat, source="log", stage=stage)
        if d.code == "ONX199" and not (
            cat or re.search(r"\b(warn|warning|error|W\d{4})\b", line, re.IGNORECASE)
        ):
            continue  # plain progress output, not a diagnostic
        items.append(d)
    return merge_diagnostics(items)

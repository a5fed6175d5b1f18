"""Training-log readers: one table of (step, epoch, loss, grad_norm, learning_rate) from any supported format.

Formats (auto-detected, or forced with ``format=``):

- ``trainer-state``  Hugging Face Trainer ``trainer_state.json`` (its ``log_history``)
- ``trainer-stdout`` Trainer console lines ``{'loss': 18305.97, 'grad_norm': 1495043.6, ...}`` (python-dict syntax,
  parsed with ``ast.literal_eval``; bare ``nan``/``inf`` are accepted)
- ``jsonl``          one JSON object per line (onnxship's own training log: step, epoch, loss, grad_norm, learning_rate)
- ``mlflow-csv``     MLflow metric export in long format: ``key,value,step,timestamp``
- ``lightning-csv``  Lightning ``CSVLogger`` ``metrics.csv`` (wide: one column per metric, ``step``/``epoch`` columns)

Values that were not logged at a row stay NaN and are marked in ``TrainLog.logged``; NaN/Inf values that *were*
logged are kept as such (they are findings, not parse errors).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxship._errors import DoctorError
from onnxship.doctor._parsers import (
    ALIASES,
    HF_SUMMARY_KEYS,
    LR_PREFIX,
    METRICS,
    dict_start,
    has_metric,
    pick,
    rows_dict_lines,
    rows_mlflow_csv,
    rows_wide_csv,
    split_lines,
)

__all__ = ["FORMATS", "METRICS", "TrainLog", "read_train_log"]

FORMATS = ("auto", "trainer-state", "trainer-stdout", "jsonl", "mlflow-csv", "lightning-csv")
_GARBLED = "the log is garbled at that entry; fix or remove it"


@dataclass
class TrainLog:
    """A training log as columns; ``x`` is what the rows are indexed by (step, or the line number)."""

    path: str
    format: str
    step: np.ndarray  # float64; the log line number (1-based) when the log has no steps
    epoch: np.ndarray  # float64, NaN where unknown
    values: dict[str, np.ndarray]  # metric -> float64 (NaN where not logged, or logged as NaN)
    logged: dict[str, np.ndarray]  # metric -> bool, True where the row carried the metric
    x_label: str = "step"  # "step" or "log line"
    columns: dict[str, str] = field(default_factory=dict)  # metric -> the name it had in the file
    skipped_lines: int = 0  # lines/entries without any training metric (eval entries, progress output)
    eval_loss: np.ndarray = field(
        default_factory=lambda: np.zeros((0, 2))
    )  # (step, eval_loss) per evaluation

    def __len__(self) -> int:
        return len(self.step)

    def has(self, metric: str) -> bool:
        return bool(self.logged[metric].any())

    def where(self, row: int) -> str:
        """Human position of a row: ``step 120 (epoch 0.22)``."""
        label = f"{self.x_label} {_num(self.step[row])}"
        if np.isfinite(self.epoch[row]):
            label += f" (epoch {_num(self.epoch[row])})"
        return label


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.4g}"


def read_train_log(path: str | Path, format: str = "auto") -> TrainLog:
    """Read a training log into a TrainLog; DoctorError for a missing, empty, truncated or unknown file.

    Example:
        >>> log = read_train_log("trainer_state.json")  # doctest: +SKIP
        >>> log.format, len(log)  # doctest: +SKIP
        ('trainer-state', 120)
    """
    if format not in FORMATS:
        raise DoctorError(f"unknown training-log format {format!r}", hint=f"use one of: {', '.join(FORMATS)}")
    path = Path(path)
    text = _read_text(path)
    fmt = _detect(text, path) if format == "auto" else format
    if fmt == "trainer-state":
        rows, skipped, step_known = _rows_trainer_state(text, path), 0, True
        rows, skipped = [r for r in rows if r is not None], sum(r is None for r in rows)
    elif fmt in ("trainer-stdout", "jsonl"):
        rows, skipped = rows_dict_lines(text, path)
        step_known = any(pick(r, "step")[1] is not None for r in rows)
    elif fmt == "mlflow-csv":
        rows, skipped, step_known = rows_mlflow_csv(text, path), 0, True
    else:
        rows, skipped = rows_wide_csv(text, path)
        step_known = any(pick(r, "step")[1] is not None for r in rows)
    log = _to_log(rows, path, fmt, skipped, step_known)
    if fmt == "trainer-state":
        log.eval_loss = _eval_loss(text, path)
    return log


def _eval_loss(text: str, path: Path) -> np.ndarray:
    """The Trainer's evaluation entries (``eval_loss`` at a ``step``) as (step, value) rows, in step order."""
    pairs = []
    for entry in _load_json(text, path).get("log_history") or []:
        step, value = entry.get("step"), entry.get("eval_loss")
        if isinstance(step, (int, float)) and isinstance(value, (int, float)) and not isinstance(value, bool):
            pairs.append((float(step), float(value)))
    return np.asarray(sorted(pairs), dtype=np.float64).reshape(-1, 2)


def _read_text(path: Path) -> str:
    if not path.exists():
        raise DoctorError(f"training log {str(path)!r} does not exist", hint="pass the path of a log file")
    if not path.is_file():
        raise DoctorError(f"{str(path)!r} is not a file", hint="pass the path of a log file, not a folder")
    data = path.read_bytes()
    if b"\x00" in data[:4096]:
        raise DoctorError(
            f"{str(path)!r} is a binary file, not a training log",
            hint="pass trainer_state.json, the trainer's stdout, a metrics CSV or a JSON-lines log",
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DoctorError(
            f"{str(path)!r} is not UTF-8 text (byte {exc.start})", hint="save the log as UTF-8 text"
        ) from None
    if not text.strip():
        raise DoctorError(
            f"training log {str(path)!r} is empty",
            hint="the run may not have logged yet; HF Trainer logs every `logging_steps` steps",
        )
    return text


def _detect(text: str, path: Path) -> str:
    head = text.lstrip()
    first = head.splitlines()[0].strip()
    if head[0] in "{[" and first in ("{", "["):  # a multi-line JSON document
        doc = _load_json(text, path)
        if isinstance(doc, dict) and "log_history" in doc:
            return "trainer-state"
        raise DoctorError(
            f"{str(path)!r} is JSON but has no 'log_history'",
            hint="pass the Trainer's trainer_state.json, or a JSON-lines log with one object a line",
        )
    if head[0] == "{":
        try:
            doc = json.loads(head)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and "log_history" in doc:
            return "trainer-state"
    if "{" not in first and "," in first:
        header = [h.strip().lower() for h in next(csv.reader([first]))]
        if {"key", "value"} <= set(header):
            return "mlflow-csv"
        known = {a.lower() for names in ALIASES.values() for a in names}
        if any(h in known or h.startswith(LR_PREFIX) for h in header):
            return "lightning-csv"
    lines = [ln for ln in split_lines(text) if dict_start(ln) >= 0]
    if lines:
        return "jsonl" if all(ln.lstrip().startswith('{"') for ln in lines) else "trainer-stdout"
    raise DoctorError(
        f"{str(path)!r} is not a training log onnxship knows: no metric dicts, CSV header or trainer_state.json",
        hint="supported: trainer_state.json, trainer stdout ({'loss': ...} lines), MLflow/Lightning CSV, "
        "JSON lines; force one with --format",
    )


def _load_json(text: str, path: Path) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise DoctorError(
            f"{str(path)!r} is not valid JSON at line {getattr(exc, 'lineno', '?')}, column "
            f"{getattr(exc, 'colno', '?')}: {getattr(exc, 'msg', exc)}",
            hint="the file looks truncated (copied while training was still writing it?); copy it again",
        ) from None


def _rows_trainer_state(text: str, path: Path) -> list[dict[str, Any] | None]:
    doc = _load_json(text, path)
    history = doc.get("log_history") if isinstance(doc, dict) else None
    if not isinstance(history, list):
        raise DoctorError(
            f"{str(path)!r} has no 'log_history' list",
            hint="pass the Trainer's trainer_state.json (in the output_dir or a checkpoint folder)",
        )
    rows: list[dict[str, Any] | None] = []
    for i, entry in enumerate(history):
        if not isinstance(entry, dict):
            raise DoctorError(
                f"{str(path)!r}: log_history[{i}] is {type(entry).__name__}, expected an object",
                hint="the file is not a Trainer state, or it was edited; copy it from the run again",
            )
        summary = any(k in entry for k in HF_SUMMARY_KEYS)
        rows.append(None if summary or not has_metric(entry) else entry)
    return rows


def _to_log(rows: list[dict[str, Any]], path: Path, fmt: str, skipped: int, step_known: bool) -> TrainLog:
    if not rows:
        raise DoctorError(
            f"no training metrics in {str(path)!r} (read as {fmt}): no loss, grad_norm or learning_rate values",
            hint=f"expected names: {', '.join(ALIASES['loss'][:3])}, grad_norm, learning_rate/lr; "
            f"force another format with --format ({', '.join(FORMATS[1:])})",
        )
    n = len(rows)
    values = {m: np.full(n, np.nan) for m in METRICS}
    logged = {m: np.zeros(n, dtype=bool) for m in METRICS}
    step = np.arange(1, n + 1, dtype=np.float64)
    epoch = np.full(n, np.nan)
    columns: dict[str, str] = {}
    for i, row in enumerate(rows):
        for m in METRICS:
            name, v = pick(row, m)
            if v is None:
                continue
            values[m][i] = _number(v, path, m, i)
            logged[m][i] = True
            columns.setdefault(m, name or m)
        if step_known:
            _, s = pick(row, "step")
            step[i] = _number(s, path, "step", i) if s is not None else np.nan
        _, e = pick(row, "epoch")
        if e is not None:
            epoch[i] = _number(e, path, "epoch", i)
    if step_known and np.isnan(step).any():
        step = np.arange(1, n + 1, dtype=np.float64)  # steps only on some rows: fall back to the row order
        step_known = False
    order = np.argsort(step, kind="stable")
    return TrainLog(
        path=str(path),
        format=fmt,
        step=step[order],
        epoch=epoch[order],
        values={m: v[order] for m, v in values.items()},
        logged={m: v[order] for m, v in logged.items()},
        x_label="step" if step_known else "log line",
        columns=columns,
        skipped_lines=skipped,
    )


def _number(v: Any, path: Path, what: str, row: int) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise DoctorError(f"{str(path)!r} entry {row + 1}: {what} is {v!r}, expected a number", hint=_GARBLED)
    try:
        return float(v)
    except ValueError:
        raise DoctorError(
            f"{str(path)!r} entry {row + 1}: {what} is {v!r}, expected a number", hint=_GARBLED
        ) from None

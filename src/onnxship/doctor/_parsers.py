"""Parsers behind the training-log readers: metric-dict lines (JSON or python-dict syntax, never eval) and CSV
(MLflow long format, Lightning wide format), plus the names each quantity goes by."""

from __future__ import annotations

import ast
import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Any

from onnxship._errors import DoctorError

__all__ = [
    "ALIASES",
    "HF_SUMMARY_KEYS",
    "LR_PREFIX",
    "METRICS",
    "dict_start",
    "has_metric",
    "pick",
    "rows_dict_lines",
    "rows_mlflow_csv",
    "rows_wide_csv",
    "split_lines",
]

METRICS = ("loss", "grad_norm", "learning_rate")

# Names each quantity goes by in the formats above (first match wins). Lightning's LearningRateMonitor logs
# "lr-<Optimizer>" and is matched by prefix.
ALIASES: dict[str, tuple[str, ...]] = {
    "loss": (
        "loss",
        "train_loss",
        "train/loss",
        "training_loss",
        "train_loss_step",
        "loss_step",
        "trainer/loss",
    ),
    "grad_norm": (
        "grad_norm",
        "train/grad_norm",
        "gradient_norm",
        "grad_norm_total",
        "total_grad_norm",
        "grad_2.0_norm_total",
    ),
    "learning_rate": ("learning_rate", "lr", "train/learning_rate", "learning-rate"),
    "epoch": ("epoch", "train/epoch"),
    "step": ("step", "global_step", "train/global_step", "_step"),
}

LR_PREFIX = "lr-"

HF_SUMMARY_KEYS = ("train_runtime", "total_flos")  # the Trainer's final summary entry, not a training step

_DICT_START = re.compile(r"\{\s*['\"]")

_NAMES = {
    "nan": math.nan,
    "inf": math.inf,
    "infinity": math.inf,
    "true": True,
    "false": False,
    "null": None,
    "none": None,
}


def split_lines(text: str) -> list[str]:
    # tqdm rewrites its bar with \r; the metric dict may follow it on the same physical line
    return [part for line in text.splitlines() for part in line.split("\r")]


def dict_start(line: str) -> int:
    m = _DICT_START.search(line)
    if not m:
        return -1
    keys = line[m.start() :]
    names = [a for k in ("loss", "grad_norm", "learning_rate") for a in ALIASES[k]]
    return m.start() if any(f"'{n}'" in keys or f'"{n}"' in keys for n in names) or LR_PREFIX in keys else -1


def rows_dict_lines(text: str, path: Path) -> tuple[list[dict[str, Any]], int]:
    rows: list[dict[str, Any]] = []
    skipped = 0
    for lineno, line in enumerate(split_lines(text), start=1):
        start = dict_start(line)
        if start < 0:
            skipped += bool(line.strip())
            continue
        body = line[start : line.rfind("}") + 1] if "}" in line[start:] else line[start:]
        obj = _parse_dict(body)
        if not isinstance(obj, dict):
            raise DoctorError(
                f"{str(path)!r} line {lineno} is not a complete metrics dict: {line.strip()[:120]!r}",
                hint="the log looks truncated or garbled at that line; fix or remove it",
            )
        if has_metric(obj) and not any(k in obj for k in HF_SUMMARY_KEYS):
            rows.append(obj)
        else:
            skipped += 1
    return rows, skipped


def _parse_dict(body: str) -> Any:
    """JSON first (accepts NaN/Infinity), then ``ast.literal_eval``, then a literal walker that also takes bare
    ``nan``/``inf``/``true``/``null`` names. Never ``eval``."""
    try:
        return json.loads(body)
    except ValueError:
        pass
    try:
        return ast.literal_eval(body)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    try:
        return _literal(ast.parse(body, mode="eval").body)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def _literal(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id.lower() in _NAMES:
        return _NAMES[node.id.lower()]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _literal(node.operand)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.Dict):
        return {
            _literal(k) if k is not None else None: _literal(v)
            for k, v in zip(node.keys, node.values, strict=True)
        }
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    raise ValueError(f"not a literal: {ast.dump(node)[:60]}")


def _csv_rows(text: str, path: Path) -> tuple[list[str], list[list[str]]]:
    reader = csv.reader(io.StringIO(text))
    try:
        table = [r for r in reader if r and any(c.strip() for c in r)]
    except csv.Error as exc:
        raise DoctorError(
            f"{str(path)!r} is not valid CSV: {exc}",
            hint="export the metrics again, or force another format with --format",
        ) from None
    header = [h.strip() for h in table[0]]
    body = table[1:]
    for i, r in enumerate(body, start=2):
        if len(r) != len(header):
            raise DoctorError(
                f"{str(path)!r} row {i} has {len(r)} fields, the header has {len(header)}",
                hint="the CSV looks truncated or garbled at that row; fix or remove it",
            )
    return header, body


def rows_mlflow_csv(text: str, path: Path) -> list[dict[str, Any]]:
    header, body = _csv_rows(text, path)
    col = {h.lower(): i for i, h in enumerate(header)}
    missing = [c for c in ("key", "value", "step") if c not in col]
    if missing:
        raise DoctorError(
            f"{str(path)!r} has no {', '.join(missing)} column(s); found {', '.join(header)}",
            hint="an MLflow metric export has key,value,step,timestamp columns",
        )
    if "run_id" in col:
        runs = sorted({r[col["run_id"]].strip() for r in body})
        if len(runs) > 1:
            raise DoctorError(
                f"{str(path)!r} holds the metrics of {len(runs)} runs ({', '.join(runs[:3])}...)",
                hint="export one run's metrics per file (filter on run_id)",
            )
    by_step: dict[float, dict[str, Any]] = {}
    order = sorted(
        range(len(body)),
        key=lambda r: (
            _float(body[r][col["timestamp"]], path, r + 2, "timestamp") if "timestamp" in col else r
        ),
    )
    for r in order:
        row = body[r]
        step = _float(row[col["step"]], path, r + 2, "step")
        entry = by_step.setdefault(step, {"step": step})
        entry[row[col["key"]].strip()] = _float(row[col["value"]], path, r + 2, "value")
    return [by_step[s] for s in sorted(by_step)]


def rows_wide_csv(text: str, path: Path) -> tuple[list[dict[str, Any]], int]:
    header, body = _csv_rows(text, path)
    rows: list[dict[str, Any]] = []
    for r, raw in enumerate(body, start=2):
        rows.append({h: _float(v, path, r, h) for h, v in zip(header, raw, strict=True) if v.strip()})
    has_step = any(h in ALIASES["step"] for h in header)
    if not has_step:
        return [r for r in rows if has_metric(r)], sum(not has_metric(r) for r in rows)
    # Lightning writes one row per log call: the same step can be split over several rows; merge them
    merged: dict[float, dict[str, Any]] = {}
    for row in rows:
        _, step = pick(row, "step")
        if step is None:
            continue
        merged.setdefault(step, {}).update(row)
    kept = [merged[s] for s in sorted(merged) if has_metric(merged[s])]
    return kept, len(merged) - len(kept)


def _float(value: str, path: Path, row: int, column: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise DoctorError(
            f"{str(path)!r} row {row}, column {column!r}: {value.strip()[:40]!r} is not a number",
            hint="the CSV looks garbled at that row; fix or remove it",
        ) from None


def pick(row: dict[str, Any], what: str) -> tuple[str | None, Any]:
    for name in ALIASES[what]:
        if name in row and row[name] is not None:
            return name, row[name]
    if what == "learning_rate":
        for name in row:
            if isinstance(name, str) and name.startswith(LR_PREFIX) and row[name] is not None:
                return name, row[name]
    return None, None


def has_metric(row: dict[str, Any]) -> bool:
    return any(pick(row, m)[1] is not None for m in METRICS)

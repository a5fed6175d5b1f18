"""``build``: parsed lines -> a vocabulary keyed by template strings + sliding windows -> ``sequences.parquet``.

The vocabulary is ``{"template string": id}`` with the strings sorted and ids 0..N-1. A vocabulary keyed by the
Drain3 template id (``{"1": 0}``) leaves an inference engine unable to find any template: such vocabularies are refused here
(through the same check the release bundle applies), with the fix.

DO NOT import pandas at module level (the ``logs`` extra).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxship._errors import ConfigError, PackagingError, require
from onnxship._util import atomic_write_json

__all__ = [
    "SESSION_KINDS",
    "NEXT_COL",
    "UNKNOWN_ID",
    "WINDOW_COL",
    "BuildConfig",
    "BuildResult",
    "build_sequences",
    "load_vocab",
    "make_vocab",
    "read_sequences",
    "session_windows",
]

SESSION_KINDS = ("auto", "block", "node", "time", "stream")
# Column names double as a verify data source: `onnxship verify --data sequences.parquet --task sequence` reads
# the model input from the column named after it and the next-event label from "next_event".
WINDOW_COL = "input_sequence"
NEXT_COL = "next_event"
UNKNOWN_ID = -1  # a template the vocabulary does not know (detect flags such windows)
_ID_KEY_FIX = (
    "build the vocabulary from the template strings: --template-col template (keying by "
    "template_id breaks the inference engine), then retrain"
)


@dataclass
class BuildConfig:
    """How to turn parsed lines into training windows."""

    parsed: Path  # parsed.parquet from parse
    out_dir: Path = Path("work")  # gets sequences.parquet, vocab.json, build.json
    window: int = 10  # events per window (the model's seq_len)
    template_col: str = "template"  # column holding the template STRING
    session: str = "auto"  # auto (block for HDFS, stream for BGL) | block | node | time | stream
    time_window: int = 3600  # seconds per session when session == "time"

    def __post_init__(self) -> None:
        self.parsed, self.out_dir = Path(self.parsed), Path(self.out_dir)
        if self.window < 1:
            raise ConfigError(f"--window {self.window} must be >= 1", hint="DeepLog uses 10")
        if self.session not in SESSION_KINDS:
            raise ConfigError(
                f"unknown session kind {self.session!r}", hint=f"valid: {', '.join(SESSION_KINDS)}"
            )
        if self.time_window < 1:
            raise ConfigError(f"--time-window {self.time_window} must be >= 1 second", hint="e.g. 3600")


@dataclass
class BuildResult:
    """What build wrote."""

    sequences: Path
    vocab: Path
    vocab_size: int
    windows: int
    sessions: int  # sessions in the log
    sessions_used: int  # sessions long enough for one window
    session: str  # the session kind used
    window: int
    alert_windows: int  # windows whose next event is an alert (BGL)
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sequences": str(self.sequences),
            "vocab": str(self.vocab),
            "vocab_size": self.vocab_size,
            "windows": self.windows,
            "sessions": self.sessions,
            "sessions_used": self.sessions_used,
            "session": self.session,
            "window": self.window,
            "alert_windows": self.alert_windows,
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
        }


def make_vocab(templates: list[str]) -> dict[str, int]:
    """``{template: id}`` over the distinct template strings, sorted, ids 0..N-1 (validated like a bundle asset).

    Example:
        >>> make_vocab(["b <*>", "a", "b <*>"])
        {'a': 0, 'b <*>': 1}
    """
    from onnxship.package._assets import validate_vocab

    unique = sorted({str(t) for t in templates if t is not None and str(t).strip()})
    if not unique:
        raise ConfigError(
            "no templates to build a vocabulary from", hint="check the parsed file's template column"
        )
    vocab = {t: i for i, t in enumerate(unique)}
    try:
        validate_vocab(vocab, what="vocab")
    except PackagingError as exc:
        raise ConfigError(exc.message, hint=_ID_KEY_FIX) from None
    return vocab


def load_vocab(path: str | Path) -> dict[str, int]:
    """Read and validate a training-form vocabulary ``{"template": id}`` (id-keyed ones are refused)."""
    from onnxship.package._assets import validate_vocab

    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"vocab {str(path)!r} does not exist", hint="run `onnxship recipes deeplog build` first"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"vocab {str(path)!r} is not valid JSON ({exc})", hint="re-run build") from None
    vocab, _ = validate_vocab(data, what=f"vocab {str(path)!r}")
    return vocab


def _session_kind(df: Any, kind: str) -> str:
    if kind != "auto":
        return kind
    fmt = str(df["log_format"].iloc[0]) if "log_format" in df.columns and len(df) else ""
    if fmt == "hdfs":
        return "block"
    return "stream"


def _sessions(df: Any, kind: str, time_window: int) -> list[tuple[str, Any]]:
    """(key, rows in time order) per session."""
    df = df.sort_values(["timestamp", "line_id"], kind="stable")
    if kind == "stream":
        return [("all", df)]
    if kind == "block":
        if "block_ids" not in df.columns or not df["block_ids"].fillna("").str.len().any():
            raise ConfigError(
                "--session block needs HDFS block ids, and this parsed file has none",
                hint="use --session stream, node or time for BGL logs",
            )
        exploded = df.assign(_key=df["block_ids"].fillna("").str.split()).explode("_key")
        exploded = exploded[exploded["_key"].notna() & (exploded["_key"] != "")]
        return [(str(k), g) for k, g in exploded.groupby("_key", sort=True)]
    if kind == "node":
        if "node" not in df.columns or df["node"].isna().all():
            raise ConfigError(
                "--session node needs a node column, and this parsed file has none",
                hint="use --session block for HDFS, or stream/time",
            )
        return [(str(k), g) for k, g in df.groupby("node", sort=True)]
    bucket = (df["timestamp"] // time_window) * time_window
    return [(str(int(k)), g) for k, g in df.assign(_key=bucket).groupby("_key", sort=True)]


def session_windows(
    df: Any,
    vocab: dict[str, int],
    window: int,
    *,
    session: str = "auto",
    time_window: int = 3600,
    template_col: str = "template",
) -> tuple[Any, dict[str, Any]]:
    """Sliding windows of ``window`` event ids -> next id, per session; unknown templates get ``UNKNOWN_ID``.

    Returns the windows (a DataFrame: session, input_sequence, next_event, next_line_id, alert_label, is_alert,
    window_alert) and
    counts (sessions, sessions_used, session kind).
    """
    pd = require("pandas", "logs")
    if template_col not in df.columns:
        raise ConfigError(
            f"column {template_col!r} is not in the parsed file (columns: {list(df.columns)})",
            hint="use --template-col template (the template string)",
        )
    kind = _session_kind(df, session)
    groups = _sessions(df, kind, time_window)
    has_labels = "is_alert" in df.columns and df["is_alert"].notna().any()
    rows: list[dict[str, Any]] = []
    used = 0
    for key, g in groups:
        ids = [vocab.get(str(t), UNKNOWN_ID) for t in g[template_col].tolist()]
        if len(ids) <= window:
            continue
        used += 1
        line_ids = g["line_id"].tolist()
        labels = g["label"].tolist() if "label" in g.columns else [None] * len(ids)
        alerts = [
            bool(a) if has_labels and a is not pd.NA and a is not None else False
            for a in (g["is_alert"].tolist() if "is_alert" in g.columns else [None] * len(ids))
        ]
        for i in range(len(ids) - window):
            nxt = i + window
            rows.append(
                {
                    "session": key,
                    WINDOW_COL: ids[i:nxt],
                    NEXT_COL: ids[nxt],
                    "next_line_id": int(line_ids[nxt]),
                    "alert_label": labels[nxt],
                    "is_alert": alerts[nxt] if has_labels else None,
                    "window_alert": any(alerts[i : nxt + 1]) if has_labels else None,
                }
            )
    out = pd.DataFrame(
        rows,
        columns=["session", WINDOW_COL, NEXT_COL, "next_line_id", "alert_label", "is_alert", "window_alert"],
    )
    out["is_alert"] = out["is_alert"].astype("boolean")
    out["window_alert"] = out["window_alert"].astype("boolean")
    longest = max((len(g) for _, g in groups), default=0)
    return out, {"sessions": len(groups), "sessions_used": used, "session": kind, "longest_session": longest}


def build_sequences(config: BuildConfig) -> BuildResult:
    """Build ``vocab.json`` (template string -> id) and ``sequences.parquet`` (windows -> next event).

    Raises:
        ConfigError: a missing column, an id-keyed vocabulary (``--template-col template_id``), or no session
            longer than the window.

    Example:
        >>> build_sequences(BuildConfig(Path("work/parsed.parquet"), Path("work"), window=10))  # doctest: +SKIP
    """
    from onnxship.recipes.deeplog._parse import _write_parquet, read_parsed

    start = time.perf_counter()
    cfg = config
    df = read_parsed(cfg.parsed)
    if cfg.template_col not in df.columns:
        raise ConfigError(
            f"column {cfg.template_col!r} is not in {str(cfg.parsed)!r} (columns: {list(df.columns)})",
            hint="use --template-col template (the template string)",
        )
    vocab = make_vocab(df[cfg.template_col].tolist())
    windows, counts = session_windows(
        df, vocab, cfg.window, session=cfg.session, time_window=cfg.time_window, template_col=cfg.template_col
    )
    if windows.empty:
        raise ConfigError(
            f"no {counts['session']} session is longer than --window {cfg.window} (longest: "
            f"{counts['longest_session']} events in {counts['sessions']} sessions)",
            hint=f"use --window {max(1, counts['longest_session'] - 1)} or fewer, or --session stream (one "
            "chronological stream)",
        )
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    seq_path, vocab_path = cfg.out_dir / "sequences.parquet", cfg.out_dir / "vocab.json"
    _write_parquet(windows, seq_path)
    atomic_write_json(vocab_path, vocab)
    alert = int(windows["is_alert"].fillna(False).sum())
    notes = []
    if counts["sessions_used"] < counts["sessions"]:
        notes.append(
            f"{counts['sessions'] - counts['sessions_used']} of {counts['sessions']} {counts['session']} "
            f"sessions have <= {cfg.window} events and give no window"
        )
    atomic_write_json(
        cfg.out_dir / "build.json",
        {
            "parsed": str(cfg.parsed),
            "window": cfg.window,
            "template_col": cfg.template_col,
            **counts,
            "windows": len(windows),
            "vocab_size": len(vocab),
            "alert_windows": alert,
        },
    )
    return BuildResult(
        sequences=seq_path,
        vocab=vocab_path,
        vocab_size=len(vocab),
        windows=len(windows),
        sessions=counts["sessions"],
        sessions_used=counts["sessions_used"],
        session=counts["session"],
        window=cfg.window,
        alert_windows=alert,
        seconds=time.perf_counter() - start,
        notes=notes,
    )


def read_sequences(path: str | Path) -> Any:
    """Read ``sequences.parquet`` and check its columns."""
    pd = require("pandas", "logs")
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"sequences {str(path)!r} does not exist", hint="run `onnxship recipes deeplog build` first"
        )
    df = pd.read_parquet(path)
    missing = [c for c in (WINDOW_COL, NEXT_COL) if c not in df.columns]
    if missing or df.empty:
        raise ConfigError(
            f"{str(path)!r} has no windows (missing columns {missing}, {len(df)} rows)",
            hint="pass the sequences.parquet written by build",
        )
    return df

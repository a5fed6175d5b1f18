"""``parse``: raw loghub lines -> fields + Drain3 templates -> ``parsed.parquet`` (and the grouping accuracy).

DO NOT import drain3 or pandas at module level (the ``logs`` extra).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxship._errors import ConfigError, MissingDependencyError, require
from onnxship._util import atomic_write
from onnxship.recipes.deeplog._formats import get_format

__all__ = ["PARSED_COLUMNS", "ParseConfig", "ParseResult", "grouping_accuracy", "parse_logs", "read_parsed"]

PARSED_COLUMNS = [
    "line_id",
    "timestamp",
    "level",
    "component",
    "node",
    "block_id",
    "block_ids",
    "label",
    "is_alert",
    "content",
    "template_id",
    "template",
    "log_format",
]


@dataclass
class ParseConfig:
    """How to parse one raw log file."""

    log: Path  # the raw log (e.g. ../shared/data/loghub/BGL_2k.log)
    format: str  # hdfs | bgl
    out: Path = Path("work/parsed.parquet")  # where parsed.parquet goes
    sim_th: float = 0.5  # Drain similarity threshold
    depth: int = 4  # Drain parse-tree depth
    max_children: int = 100  # Drain max children per tree node
    reference: Path | None = None  # loghub *_structured.csv to score against (default: <log>_structured.csv)

    def __post_init__(self) -> None:
        self.log, self.out = Path(self.log), Path(self.out)
        get_format(self.format)
        if not 0.0 < self.sim_th < 1.0:
            raise ConfigError(f"sim_th={self.sim_th} is outside (0, 1)", hint="Drain uses 0.4-0.7; try 0.5")
        if self.depth < 3:
            raise ConfigError(
                f"depth={self.depth} is below 3", hint="Drain needs depth >= 3; the default is 4"
            )


@dataclass
class ParseResult:
    """What parse wrote and how well the templates match the reference."""

    out: Path
    lines: int  # lines read
    parsed: int  # lines with the format's header
    skipped: int  # lines without it (not written)
    templates: int  # distinct templates mined
    grouping_accuracy: float | None  # vs the reference EventIds (None without a reference)
    reference: Path | None
    reference_templates: int | None
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "lines": self.lines,
            "parsed": self.parsed,
            "skipped": self.skipped,
            "templates": self.templates,
            "grouping_accuracy": self.grouping_accuracy,
            "reference": str(self.reference) if self.reference else None,
            "reference_templates": self.reference_templates,
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
        }


_DRAIN3_HINT = (
    "pip install 'onnxship[drain]'; beside mlflow (whose cachetools>=5 clashes with drain3's "
    "cachetools==4.2.1 pin) use pip install --no-deps 'drain3==0.9.11' jsonpickle, as "
    "scripts/components.sh does"
)


def _miner(cfg: ParseConfig) -> Any:
    try:
        drain3 = require("drain3", "drain")
    except MissingDependencyError as exc:
        raise MissingDependencyError(exc.message, hint=_DRAIN3_HINT) from None
    from drain3.masking import MaskingInstruction
    from drain3.template_miner_config import TemplateMinerConfig

    mc = TemplateMinerConfig()
    mc.drain_sim_th = cfg.sim_th
    mc.drain_depth = cfg.depth
    mc.drain_max_children = cfg.max_children
    mc.masking_instructions = [MaskingInstruction(rx, name) for rx, name in get_format(cfg.format).masks]
    mc.profiling_enabled = False
    return drain3.TemplateMiner(config=mc)


def grouping_accuracy(predicted: list[Any], reference: list[Any]) -> float:
    """Loghub's grouping accuracy: the fraction of lines whose predicted group holds exactly the lines of their
    reference group (a group split or merged counts every line in it as wrong).

    Example:
        >>> grouping_accuracy([1, 1, 2, 3], ["a", "a", "b", "b"])
        0.5
    """
    if len(predicted) != len(reference):
        raise ConfigError(
            f"{len(predicted)} predicted groups for {len(reference)} reference lines",
            hint="score the same lines on both sides",
        )
    if not predicted:
        return 0.0
    pred_groups: dict[Any, set[int]] = {}
    ref_groups: dict[Any, set[int]] = {}
    for i, (p, r) in enumerate(zip(predicted, reference, strict=True)):
        pred_groups.setdefault(p, set()).add(i)
        ref_groups.setdefault(r, set()).add(i)
    correct = 0
    for members in pred_groups.values():
        first = reference[next(iter(members))]
        if ref_groups[first] == members:
            correct += len(members)
    return correct / len(predicted)


def _reference(cfg: ParseConfig) -> Path | None:
    if cfg.reference is not None:
        if not Path(cfg.reference).is_file():
            raise ConfigError(
                f"reference {str(cfg.reference)!r} does not exist",
                hint="pass a loghub *_structured.csv (LineId, EventId columns) or leave it out",
            )
        return Path(cfg.reference)
    guess = cfg.log.with_name(cfg.log.name + "_structured.csv")
    return guess if guess.is_file() else None


def _score(ref_path: Path, line_ids: list[int], template_ids: list[int]) -> tuple[float, int]:
    pd = require("pandas", "logs")
    ref = pd.read_csv(ref_path, usecols=["LineId", "EventId"])
    by_line = dict(zip(ref["LineId"].astype(int), ref["EventId"].astype(str), strict=True))
    missing = [i for i in line_ids if i not in by_line]
    if missing:
        raise ConfigError(
            f"reference {str(ref_path)!r} has no rows for lines {missing[:5]}",
            hint="the reference must come from the same log file (LineId is 1-based)",
        )
    return grouping_accuracy(template_ids, [by_line[i] for i in line_ids]), ref["EventId"].nunique()


def parse_logs(config: ParseConfig) -> ParseResult:
    """Parse a raw log with its header format, mine templates with Drain3 and write ``parsed.parquet``.

    Templates are read back after the last line, so every line carries its cluster's final template.

    Raises:
        ConfigError: missing file, or no line has the format's header (wrong ``--format``).

    Example:
        >>> parse_logs(ParseConfig(Path("BGL_2k.log"), "bgl", Path("work/parsed.parquet")))  # doctest: +SKIP
    """
    start = time.perf_counter()
    cfg = config
    fmt = get_format(cfg.format)
    if not cfg.log.is_file():
        raise ConfigError(f"log file {str(cfg.log)!r} does not exist", hint="pass --log path/to/HDFS_2k.log")
    pd = require("pandas", "logs")
    require("pyarrow", "logs")
    miner = _miner(cfg)
    rows: list[dict[str, Any]] = []
    cluster_ids: list[int] = []
    n_lines = 0
    with cfg.log.open(encoding="utf-8", errors="replace") as fh:
        for n_lines, raw in enumerate(fh, start=1):
            line = raw.rstrip("\r\n")
            rec = fmt.parse_line(line)
            if rec is None:
                continue
            rec["line_id"] = n_lines
            cluster_ids.append(miner.add_log_message(rec["content"])["cluster_id"])
            rows.append(rec)
    if not rows:
        raise ConfigError(
            f"no line of {str(cfg.log)!r} ({n_lines} lines) has the {fmt.name!r} header",
            hint=f"check --format (valid: hdfs, bgl); a {fmt.name} line looks like: {fmt.example}",
        )
    templates = {c.cluster_id: c.get_template() for c in miner.drain.clusters}
    for rec, cid in zip(rows, cluster_ids, strict=True):
        rec["template_id"] = int(cid)
        rec["template"] = templates[cid]
        rec["is_alert"] = None if rec["label"] is None else rec["label"] != "-"
        rec["log_format"] = fmt.name
    df = pd.DataFrame(rows, columns=PARSED_COLUMNS)
    df["is_alert"] = df["is_alert"].astype("boolean")
    notes = []
    skipped = n_lines - len(rows)
    if skipped:
        notes.append(f"{skipped} line(s) without the {fmt.name} header were skipped")
    ref_path = _reference(cfg)
    accuracy, ref_templates = None, None
    if ref_path is not None:
        accuracy, ref_templates = _score(ref_path, df["line_id"].tolist(), cluster_ids)
    _write_parquet(df, cfg.out)
    return ParseResult(
        out=cfg.out,
        lines=n_lines,
        parsed=len(rows),
        skipped=skipped,
        templates=len(templates),
        grouping_accuracy=accuracy,
        reference=ref_path,
        reference_templates=ref_templates,
        seconds=time.perf_counter() - start,
        notes=notes,
    )


def _write_parquet(df: Any, out: Path) -> None:
    """Write next to the target and rename (atomic_write), so a failure never leaves half a file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: df.to_parquet(tmp, index=False))


def read_parsed(path: str | Path) -> Any:
    """Read a ``parsed.parquet`` and check it has the columns build/detect need."""
    pd = require("pandas", "logs")
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"parsed file {str(path)!r} does not exist",
            hint="run `onnxship recipes deeplog parse --log ... --format ... --out` first",
        )
    try:
        df = pd.read_parquet(path)
    except Exception as exc:
        raise ConfigError(
            f"{str(path)!r} is not a readable parquet file ({type(exc).__name__})",
            hint="re-run `onnxship recipes deeplog parse`",
        ) from None
    missing = [c for c in ("line_id", "timestamp", "template") if c not in df.columns]
    if missing:
        raise ConfigError(
            f"{str(path)!r} lacks the columns {missing} (has {list(df.columns)[:12]})",
            hint="pass a parsed.parquet written by `onnxship recipes deeplog parse`",
        )
    return df

"""Raw loghub line formats: a header with fixed fields, then the free-text content that Drain3 mines.

HDFS: ``<Date> <Time> <Pid> <Level> <Component>: <Content>`` (``081109 203615 148 INFO dfs.DataNode$...: ...``);
the block ids ``blk_<n>`` in the content are the sessions. BGL: ``<Label> <Timestamp> <Date> <Node> <Time>
<NodeRepeat> <Type> <Component> <Level> <Content>``; the first field is the alert label, ``-`` for normal lines.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

__all__ = ["FORMATS", "LogFormat", "get_format", "parse_bgl_line", "parse_hdfs_line"]

_HDFS = re.compile(
    r"^(?P<date>\d{6}) (?P<time>\d{6}) (?P<pid>\d+) (?P<level>[A-Z]+) (?P<component>[^:\s]+): "
    r"(?P<content>.*)$"
)
_BLOCK = re.compile(r"blk_-?\d+")


def parse_hdfs_line(line: str) -> dict[str, Any] | None:
    """One HDFS line -> its fields, or None when the line does not have the HDFS header."""
    m = _HDFS.match(line)
    if m is None:
        return None
    try:
        ts = datetime.strptime(m["date"] + m["time"], "%y%m%d%H%M%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    blocks = list(dict.fromkeys(_BLOCK.findall(m["content"])))
    return {
        "timestamp": int(ts.timestamp()),
        "level": m["level"],
        "component": m["component"],
        "node": None,
        "block_id": blocks[0] if blocks else None,
        "block_ids": " ".join(blocks),
        "label": None,
        "content": m["content"],
    }


def parse_bgl_line(line: str) -> dict[str, Any] | None:
    """One BGL line -> its fields (label ``-`` = normal), or None when the header is not BGL's."""
    parts = line.split(" ", 9)
    if len(parts) < 9 or not parts[1].isdigit() or not re.fullmatch(r"\d{4}\.\d{2}\.\d{2}", parts[2]):
        return None
    return {
        "timestamp": int(parts[1]),
        "level": parts[8],
        "component": parts[7],
        "node": parts[3],
        "block_id": None,
        "block_ids": "",
        "label": parts[0],
        "content": parts[9] if len(parts) > 9 else "",
    }


@dataclass(frozen=True)
class LogFormat:
    """A line format: its parser, the Drain3 masks that help its content, and its default session key."""

    name: str
    parse_line: Callable[[str], dict[str, Any] | None]
    masks: tuple[tuple[str, str], ...]  # (regex, mask name) applied by Drain3 before mining
    default_session: str  # block | node | time | stream
    example: str  # one line, for error messages


_IP = (r"((?<=[^A-Za-z0-9])|^)(\d{1,3}\.){3}\d{1,3}(:\d+)?((?=[^A-Za-z0-9])|$)", "IP")
_HEX = (r"((?<=[^A-Za-z0-9])|^)(0x[a-fA-F0-9]+)((?=[^A-Za-z0-9])|$)", "HEX")
_NUM = (r"((?<=[^A-Za-z0-9])|^)([\-\+]?\d+)((?=[^A-Za-z0-9])|$)", "NUM")

FORMATS: dict[str, LogFormat] = {
    "hdfs": LogFormat(
        "hdfs",
        parse_hdfs_line,
        ((r"blk_-?\d+", "BLK"), _IP, _NUM),
        "block",
        "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_1 terminating",
    ),
    "bgl": LogFormat(
        "bgl",
        parse_bgl_line,
        ((r"core\.\d+", "CORE"), _IP, _HEX, _NUM),
        "stream",
        "- 1117838570 2005.06.03 R02-M1-N0-C:J12-U11 2005-06-03-15.42.50.675872 R02-M1-N0-C:J12-U11 "
        "RAS KERNEL INFO instruction cache parity error corrected",
    ),
}


def get_format(name: str) -> LogFormat:
    """The format called ``name``; an unknown name lists the valid ones."""
    from onnxship._errors import ConfigError

    fmt = FORMATS.get(name.lower())
    if fmt is None:
        raise ConfigError(f"unknown log format {name!r}", hint=f"valid formats: {', '.join(FORMATS)}")
    return fmt

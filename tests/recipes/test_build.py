"""build: a vocabulary keyed by template STRINGS, sliding windows per session, alert labels kept."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from onnxship._errors import ConfigError
from onnxship.recipes.deeplog import BuildConfig, build_sequences, load_vocab, make_vocab
from onnxship.recipes.deeplog._build import NEXT_COL, WINDOW_COL


def _parsed(tmp_path, rows):
    """A tiny parsed.parquet: rows of (line_id, timestamp, node, label, template)."""
    df = pd.DataFrame(rows, columns=["line_id", "timestamp", "node", "label", "template"])
    df["block_ids"] = ""
    df["is_alert"] = (df["label"] != "-").astype("boolean")
    df["template_id"] = df["template"].map({t: i + 1 for i, t in enumerate(sorted(set(df["template"])))})
    df["log_format"] = "bgl"
    path = tmp_path / "parsed.parquet"
    df.to_parquet(path, index=False)
    return path


def test_make_vocab_is_sorted_contiguous():
    assert make_vocab(["b <*>", "a", "b <*>", "c"]) == {"a": 0, "b <*>": 1, "c": 2}


def test_id_keyed_vocab_is_refused():
    # a vocab built from the template_id column ({"1": 0, ...}) breaks the inference engine
    with pytest.raises(ConfigError, match="keys are ids") as exc:
        make_vocab(["1", "2", "3"])
    assert "--template-col template" in exc.value.hint


def test_windows_by_stream_with_labels(tmp_path):
    rows = [
        (i + 1, 100 + i, f"n{i % 2}", "-" if i != 5 else "KERNDTLB", "AB"[i % 2] if i != 5 else "C")
        for i in range(8)
    ]
    result = build_sequences(BuildConfig(_parsed(tmp_path, rows), tmp_path / "out", window=3))
    vocab = json.loads(result.vocab.read_text())
    assert vocab == {"A": 0, "B": 1, "C": 2} and load_vocab(result.vocab) == vocab
    df = pd.read_parquet(result.sequences)
    assert result.windows == len(df) == 5 and result.session == "stream"
    ids = [0, 1, 0, 1, 0, 2, 0, 1]
    for i, row in df.iterrows():
        assert list(row[WINDOW_COL]) == ids[i : i + 3] and row[NEXT_COL] == ids[i + 3]
        assert row["next_line_id"] == i + 4
    assert df["is_alert"].tolist() == [False, False, True, False, False]
    assert df["alert_label"].tolist() == ["-", "-", "KERNDTLB", "-", "-"]
    # window_alert: an alert anywhere in the window or its next event
    assert df["window_alert"].tolist() == [False, False, True, True, True]
    assert result.alert_windows == 1


def test_windows_by_node_and_time(tmp_path):
    rows = [(i + 1, 1000 * (i // 4) + i, f"n{i % 2}", "-", "ABCD"[i % 4]) for i in range(12)]
    path = _parsed(tmp_path, rows)
    by_node = build_sequences(BuildConfig(path, tmp_path / "node", window=2, session="node"))
    assert by_node.sessions == 2 and by_node.windows == 2 * (6 - 2)
    by_time = build_sequences(
        BuildConfig(path, tmp_path / "time", window=2, session="time", time_window=1000)
    )
    assert by_time.sessions == 3 and by_time.windows == 3 * (4 - 2)


def test_template_id_column_is_refused(tmp_path):
    rows = [(i + 1, i, "n", "-", "AB"[i % 2]) for i in range(6)]
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="keys are ids") as exc:
        build_sequences(BuildConfig(_parsed(tmp_path, rows), out, window=2, template_col="template_id"))
    assert "template_col" in exc.value.hint or "--template-col template" in exc.value.hint
    assert not (out / "vocab.json").exists()


def test_too_short_sessions(tmp_path):
    rows = [(i + 1, i, "n", "-", "AB"[i % 2]) for i in range(4)]
    with pytest.raises(ConfigError, match="longer than --window 10") as exc:
        build_sequences(BuildConfig(_parsed(tmp_path, rows), tmp_path / "out", window=10))
    assert "--window 3" in exc.value.hint


def test_block_sessions_on_hdfs(loghub, drain3_available, tmp_path):
    from onnxship.recipes.deeplog import ParseConfig, parse_logs

    parse_logs(ParseConfig(loghub / "HDFS_2k.log", "hdfs", tmp_path / "parsed.parquet"))
    # HDFS_2k is a random sample: its blocks have at most 2 lines, so window 10 finds nothing and says so
    with pytest.raises(ConfigError, match="no block session is longer than --window 10"):
        build_sequences(BuildConfig(tmp_path / "parsed.parquet", tmp_path, window=10))
    result = build_sequences(BuildConfig(tmp_path / "parsed.parquet", tmp_path, window=1))
    assert result.session == "block" and result.windows > 0
    df = pd.read_parquet(result.sequences)
    assert df["session"].str.startswith("blk_").all() and df["is_alert"].isna().all()
    stream = build_sequences(
        BuildConfig(tmp_path / "parsed.parquet", tmp_path / "s", window=10, session="stream")
    )
    assert stream.windows == 2000 - 10


def test_bad_config(tmp_path):
    with pytest.raises(ConfigError, match="--window 0"):
        BuildConfig(tmp_path / "p.parquet", window=0)
    with pytest.raises(ConfigError, match="unknown session kind 'user'"):
        BuildConfig(tmp_path / "p.parquet", session="user")
    with pytest.raises(ConfigError, match="does not exist"):
        build_sequences(BuildConfig(tmp_path / "missing.parquet"))

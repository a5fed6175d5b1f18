"""Faults while shipping: kill -9 at seeded random moments, and a full disk under the releases folder.

tests/package/test_ship_cli.py kills `ship` at two fixed points (staging created, model exported); here the moment
is drawn from a seeded RNG over the whole run (export, verify, bundle write, the `latest` swap), several times into
the same releases folder, and the next `ship` must succeed and clean up.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onnxship.package import current_latest, list_releases, read_release

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = f"{ROOT / 'examples/deeplog/model.py'}:build_model"
ONNXSHIP = str(Path(sys.executable).with_name("onnxship"))
SHIP = ["ship", "--model", EXAMPLE, "--strategy", "torchscript", "--golden-samples", "2"]


def _ship(releases: Path, cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONNXSHIP_")}
    return subprocess.Popen(
        [ONNXSHIP, *SHIP, "--releases", str(releases)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _assert_consistent(name_dir: Path) -> list[str]:
    """Every visible entry is a complete, sha-checked release; ``latest`` names one of them (or none exists)."""
    if not name_dir.exists():
        return []
    visible = sorted(p.name for p in name_dir.iterdir() if not p.name.startswith("."))
    versions = [v for v in visible if v not in ("latest", "LATEST")]
    for v in versions:
        read_release(name_dir / v, check=True)  # raises on a half bundle
    latest = current_latest(name_dir)
    if versions:
        rows = list_releases(name_dir)
        assert all(r.error is None for r in rows), [(r.version, r.error) for r in rows]
        assert latest in versions, (latest, versions)
        assert read_release(name_dir / "latest", check=True).version == latest
    else:
        assert latest is None and "latest" not in visible
    return versions


@pytest.fixture(scope="module")
def one_ship(tmp_path_factory) -> tuple[float, Path]:
    """One uninterrupted `ship`: how long it takes here (the kill moments are drawn over this span) and its
    releases folder."""
    d = tmp_path_factory.mktemp("timing")
    start = time.monotonic()
    proc = _ship(d / "releases", d)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    _assert_consistent(d / "releases/deeplog")
    return time.monotonic() - start, d / "releases"


@pytest.fixture
def ship_seconds(one_ship) -> float:
    return one_ship[0]


def test_kill_9_at_random_moments(ship_seconds, tmp_path):
    rng = random.Random(20261123)
    releases = tmp_path / "releases"
    name_dir = releases / "deeplog"
    # one moment per quarter of the run, plus one near its end (bundle rename, `latest` swap)
    moments = [rng.uniform(i / 4, (i + 1) / 4) * ship_seconds for i in range(4)] + [ship_seconds * 0.97]
    killed = 0
    for delay in moments:
        proc = _ship(releases, tmp_path)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        proc.communicate(timeout=60)
        _assert_consistent(name_dir)
        time.sleep(1.0)  # the next version tag is a new second
    assert killed >= 2, "ship finished before most kill moments: the run is too fast to be interrupted"
    before = _assert_consistent(name_dir)
    proc = _ship(releases, tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    after = _assert_consistent(name_dir)
    assert len(after) == len(before) + 1 and current_latest(name_dir) == max(after)
    assert not list(name_dir.glob(".staging-*")), "the next ship removes the killed runs' staging folders"


@pytest.fixture
def small_disk(tmp_path, require_component):
    """A 2 MiB tmpfs, unmounted afterwards; skipped (failed under CI) where mounting is not allowed."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    ok = (
        os.geteuid() == 0
        and shutil.which("mount") is not None
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True
        ).returncode
        == 0
    )
    require_component(ok, "mounting a tmpfs needs root (mount -t tmpfs)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False, capture_output=True)


@pytest.mark.parametrize(
    "free_kib", [64, 400]
)  # the export fails / the model fits, later bundle files do not
def test_full_disk_gives_a_clear_error_and_keeps_the_previous_release(
    small_disk, tmp_path, one_ship, free_kib
):
    releases = small_disk / "releases"
    shutil.copytree(one_ship[1], releases, symlinks=True)  # the previous release, on the small disk
    previous = _assert_consistent(releases / "deeplog")
    stat = os.statvfs(small_disk)
    free = stat.f_bavail * stat.f_frsize
    (small_disk / "filler").write_bytes(b"\0" * max(0, free - free_kib * 1024))
    time.sleep(1.0)
    proc = _ship(releases, tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, out + err
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "space" in lines[0].lower(), err
    assert _assert_consistent(releases / "deeplog") == previous
    assert current_latest(releases / "deeplog") == previous[0]
    assert not list((releases / "deeplog").glob(".staging-*")), "the failed run removed its staging folder"
    (small_disk / "filler").unlink()
    time.sleep(1.0)
    proc = _ship(releases, tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    assert len(_assert_consistent(releases / "deeplog")) == 2


def _fill(disk: Path, leave: int) -> None:
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize
    (disk / "filler").write_bytes(b"\0" * max(0, free - leave))


def _one_space_error(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "space" in lines[0].lower(), proc.stderr


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.mark.parametrize("leave", [0.3, 1.4], ids=["candidate-does-not-fit", "final-write-does-not-fit"])
def test_full_disk_during_export_is_one_error_and_leaves_nothing(small_disk, tmp_path, deeplog_export, leave):
    """Too little room for the first candidate, then room for the candidate but not for the final copy."""
    size = Path(deeplog_export[1].path).stat().st_size
    _fill(small_disk, int(size * leave))
    out = small_disk / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONNXSHIP_") or k == "ONNXSHIP_CACHE_DIR"}
    cmd = [ONNXSHIP, "export", "--model", EXAMPLE, "--strategy", "torchscript", "--out", str(out)]
    cmd += ["--input", "input_sequence:batch=2..8 x seq=10..16:int64:0..30", "--opset", "17"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    _one_space_error(proc)
    assert _entries(out) == [], "nothing half-written: no model, no sidecar, no scratch"


def test_full_disk_during_optimize_is_one_error_and_leaves_nothing(small_disk, tmp_path, deeplog_export):
    model = tmp_path / "deeplog.onnx"
    model.write_bytes(Path(deeplog_export[1].path).read_bytes())
    _fill(small_disk, 8 * 1024)
    variants = small_disk / "variants"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONNXSHIP_") or k == "ONNXSHIP_CACHE_DIR"}
    cmd = [ONNXSHIP, "optimize", str(model), "--quantize", "int8-dynamic", "--out-dir", str(variants)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    _one_space_error(proc)
    assert [n for n in _entries(variants) if not n.endswith(".json")] == [], (
        "no half-written variant or scratch"
    )


@pytest.fixture
def readonly_disk(tmp_path, require_component):
    """A read-only tmpfs (root ignores folder permissions, not a read-only mount)."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    ok = (
        os.geteuid() == 0
        and shutil.which("mount") is not None
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)], capture_output=True
        ).returncode
        == 0
    )
    require_component(ok, "mounting a tmpfs needs root (mount -t tmpfs)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False, capture_output=True)


@pytest.mark.parametrize(
    "args, needle",
    [
        (("export", "--out", "{ro}"), "read-only"),
        (("export", "--out", "{ro}/sub/out"), "read-only"),
        (("ship", "--releases", "{ro}/releases"), "read-only"),
    ],
    ids=["export-into-it", "export-below-it", "ship"],
)
def test_read_only_output_is_one_error(readonly_disk, tmp_path, args, needle):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONNXSHIP_") or k == "ONNXSHIP_CACHE_DIR"}
    cmd = [
        ONNXSHIP,
        *[a.format(ro=readonly_disk) for a in args],
        "--model",
        EXAMPLE,
        "--strategy",
        "torchscript",
    ]
    cmd += ["--input", "input_sequence:batch=2..8 x seq=10..16:int64:0..30"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and needle in lines[0].lower(), proc.stderr

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

"""Fixtures of the verification tests: headless Debian chromium to render report.html."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-logging=stderr",
    "--v=0",
    "--window-size=1200,2400",
]


@pytest.fixture
def chromium_screenshot(tmp_path, require_component) -> Callable[[Path, Path], list[str]]:
    """``chromium_screenshot(html, png)`` renders a page with a fresh profile and returns its console lines."""
    exe = shutil.which("chromium")
    require_component(exe is not None, "chromium is not installed (scripts/components.sh component_chromium)")

    def shoot(html: Path, png: Path) -> list[str]:
        profile = tmp_path / f"chromium-profile-{png.stem}"
        cmd = [
            str(exe),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={png}",
            html.resolve().as_uri(),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
        assert out.returncode == 0, out.stderr[-2000:]
        assert png.is_file() and png.stat().st_size > 0
        return [line for line in out.stderr.splitlines() if ":CONSOLE" in line]

    return shoot

"""`import onnxship` and `onnxship --help` stay light: no torch, no onnxruntime (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "onnxruntime", "mlflow", "tritonclient", "fastapi", "pika", "timm", "drain3", "onnxscript")


def _loaded_after(code: str) -> list[str]:
    probe = code + f"\nimport sys, json\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_onnxship_is_light():
    assert _loaded_after("import onnxship") == []


def test_cli_help_is_light():
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom onnxship.cli import app\n"
        "r = CliRunner().invoke(app, ['--help'])\nassert r.exit_code == 0, r.output\n"
        "for cmd in [c.name for c in app.registered_commands]:\n"
        "    r = CliRunner().invoke(app, [cmd, '--help'])\n    assert r.exit_code == 0, (cmd, r.output)\n"
    )
    assert _loaded_after(code) == []


def test_console_script_help():
    exe = sys.executable.replace("python", "onnxship") if sys.executable.endswith("python") else "onnxship"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "export" in out.stdout


def test_public_surface_is_pinned():
    import onnxship

    assert set(onnxship.__all__) >= {
        "export",
        "ExportConfig",
        "ExportResult",
        "inspect_model",
        "OnnxshipError",
    }
    for name in onnxship.__all__:
        assert getattr(onnxship, name) is not None

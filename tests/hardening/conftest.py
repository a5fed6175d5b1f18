"""The hardening suite reuses the serve tests' real-server fixtures (started with the venv's own executable on
127.0.0.1, stopped by PID)."""

from __future__ import annotations

from ..serve.conftest import start_server  # noqa: F401, TID252  (the serve fixture, re-exported here)

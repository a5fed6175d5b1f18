"""ONNX Runtime sessions and execution-provider policy."""

from onnxship.runtime._session import PROVIDER_PREFERENCE, SessionConfig, create_session, resolve_providers

__all__ = ["PROVIDER_PREFERENCE", "SessionConfig", "create_session", "resolve_providers"]

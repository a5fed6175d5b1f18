"""Secret checks every layer may need: is a key a credential, does a URL carry a password.

Ground floor (imports only ``onnxship._errors``): ``ship`` refuses secret-looking metadata before the export and
``publish`` refuses them before anything reaches MLflow, with the same rule.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from onnxship._errors import ConfigError

__all__ = ["check_no_secrets", "looks_secret", "mask_url"]

_SECRET_KEY = re.compile(
    r"(password|passwd|secret|token|credential|access[_-]?key|api[_-]?key|private[_-]?key)", re.IGNORECASE
)


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe to print)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def looks_secret(key: str) -> bool:
    """Whether a key names a credential (password, token, access key, ...)."""
    return bool(_SECRET_KEY.search(str(key)))


def check_no_secrets(values: dict[str, Any], what: str) -> None:
    """Refuse keys that name secrets: they would end up readable by anyone with access to the tracking server."""
    bad = sorted(str(k) for k in values if looks_secret(k))
    if bad:
        raise ConfigError(
            f"{what} {bad} look like secrets; onnxship does not log secrets to MLflow",
            hint="pass credentials through the environment (AWS_ACCESS_KEY_ID, ...), not as metadata",
        )
    urls = sorted(str(k) for k, v in values.items() if isinstance(v, str) and "@" in v and mask_url(v) != v)
    if urls:
        raise ConfigError(
            f"{what} {urls} hold URLs with a password; onnxship does not write secrets into "
            "metadata or MLflow",
            hint="drop the password from the URL (user@host) or leave it out",
        )

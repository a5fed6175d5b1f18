"""Announce a published model: RabbitMQ (pika; durable exchange, persistent message, publisher confirms) or webhook.

The message follows ``notification.schema.json`` (``onnxship.notification/1``). A broker or webhook that is down
(or answers 5xx) is retried ``retries`` times in all with a doubling delay; then PublishError names it.
DO NOT import pika at module level. A notification that cannot be delivered raises PublishError: never swallowed.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

from onnxship._errors import MissingDependencyError, PublishError, require
from onnxship.publish._config import NotifyConfig, NotifyResult, mask_url

__all__ = ["NOTIFICATION_SCHEMA", "notification_schema", "notify", "preflight"]

NOTIFICATION_SCHEMA = "onnxship.notification/1"


def notification_schema() -> dict[str, Any]:
    """The JSON Schema every notification message validates against (``notification.schema.json``)."""
    from importlib import resources

    text = (
        resources.files("onnxship.publish").joinpath("notification.schema.json").read_text(encoding="utf-8")
    )
    return json.loads(text)


class _Transient(Exception):
    """A failure worth another attempt (the PublishError to raise when attempts run out)."""

    def __init__(self, error: PublishError) -> None:
        super().__init__(error.message)
        self.error = error


def preflight(config: NotifyConfig | str) -> None:
    """Before any training: webhook headers resolve from the environment and the broker/webhook host accepts a
    TCP connection (within ``timeout``, ``retries`` attempts). Raises PublishError/ConfigError naming it."""
    if isinstance(config, str):
        config = NotifyConfig(config)
    if config.kind == "webhook":
        config.resolved_headers()
    else:
        _pika()  # a missing client library fails now, not after training
    host, port = config.host_port
    what = "RabbitMQ broker" if config.kind == "rabbitmq" else "webhook"
    last: OSError | None = None
    for attempt in range(config.retries):
        if attempt:
            time.sleep(config.retry_delay * 2 ** (attempt - 1))
        try:
            with socket.create_connection((host, port), timeout=config.timeout):
                return
        except OSError as exc:
            last = exc
    raise PublishError(
        f"{what} {mask_url(config.url)} is unreachable ({type(last).__name__}: {last}; "
        f"{config.retries} attempt(s))",
        hint="start it or fix the notification URL (ONNXSHIP_NOTIFY_URL / notify=) before training",
    )


def notify(event: dict[str, Any], config: NotifyConfig | str) -> NotifyResult:
    """Send ``event`` (JSON) to RabbitMQ or a webhook and wait for the broker's confirm / a 2xx answer.

    Raises:
        PublishError: the broker or webhook is unreachable, refused the message, or did not confirm it in time.

    Example:
        >>> notify({"model_name": "deeplog"}, "amqp://guest:guest@127.0.0.1:5672/%2F")  # doctest: +SKIP
    """
    if isinstance(config, str):
        config = NotifyConfig(config)
    body = json.dumps(event, default=str, sort_keys=True).encode("utf-8")
    send = _amqp if config.kind == "rabbitmq" else _webhook
    for attempt in range(config.retries):
        if attempt:
            time.sleep(config.retry_delay * 2 ** (attempt - 1))
        try:
            return send(body, event, config)
        except _Transient as exc:
            last = exc.error
    raise PublishError(
        f"{last.message} after {config.retries} attempt(s)" if config.retries > 1 else last.message,
        hint=last.hint,
    )


def _pika() -> Any:
    try:
        return require("pika", "notify")
    except MissingDependencyError as exc:
        raise MissingDependencyError(
            "pika is not installed (needed for RabbitMQ notifications)", hint="pip install 'onnxship[notify]'"
        ) from exc.__cause__


def _amqp(body: bytes, event: dict[str, Any], config: NotifyConfig) -> NotifyResult:
    pika = _pika()
    from pika import exceptions as pex

    target = f"{mask_url(config.url)} exchange={config.exchange!r} routing_key={config.routing_key!r}"
    try:
        params = pika.URLParameters(config.url)
    except (ValueError, TypeError) as exc:
        raise PublishError(
            f"notification URL {mask_url(config.url)!r} is not a valid AMQP URL ({exc})",
            hint="amqp://user:pass@host:5672/vhost (vhost '/' is %2F)",
        ) from None
    params.socket_timeout = config.timeout
    params.stack_timeout = config.timeout
    params.blocked_connection_timeout = config.timeout
    params.connection_attempts = 1
    params.retry_delay = 0
    try:
        connection = pika.BlockingConnection(params)
    except pex.AMQPError as exc:
        raise _Transient(
            PublishError(
                f"RabbitMQ broker {mask_url(config.url)} is unreachable "
                f"({type(exc).__name__}: {exc or 'no answer'})",
                hint="start the broker or fix --notify / ONNXSHIP_NOTIFY_URL; the run is marked FAILED, "
                "publish again when the broker is up",
            )
        ) from None
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.exchange_declare(exchange=config.exchange, exchange_type=config.exchange_type, durable=True)
        props = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=str(event.get("message_id") or uuid.uuid4()),
            type=str(event.get("event", "")),
        )
        channel.basic_publish(
            exchange=config.exchange,
            routing_key=config.routing_key,
            body=body,
            properties=props,
            mandatory=config.mandatory,
        )
    except pex.UnroutableError:
        raise PublishError(
            f"RabbitMQ returned the notification: no queue is bound to {target}",
            hint="bind a queue to the exchange with this routing key, or drop --notify-mandatory",
        ) from None
    except pex.NackError:
        raise _Transient(
            PublishError(
                f"RabbitMQ broker refused the notification (nack) at {target}",
                hint="check the broker's logs (disk or memory alarm, policies)",
            )
        ) from None
    except (pex.AMQPConnectionError, pex.StreamLostError, pex.ConnectionClosed) as exc:
        raise _Transient(
            PublishError(
                f"RabbitMQ broker connection to {target} was lost ({type(exc).__name__}: {exc})",
                hint="check the broker; the run is marked FAILED",
            )
        ) from None
    except pex.AMQPError as exc:
        raise PublishError(
            f"RabbitMQ notification to {target} failed ({type(exc).__name__}: {exc})",
            hint="check the exchange (an existing one with another type cannot be re-declared)",
        ) from None
    finally:
        if connection.is_open:
            # the message is already confirmed (or the error above is the one to report)
            with contextlib.suppress(pex.AMQPError):
                connection.close()
    return NotifyResult(kind="rabbitmq", target=target, event=event, confirmed=True)


def _webhook(body: bytes, event: dict[str, Any], config: NotifyConfig) -> NotifyResult:
    req = urllib.request.Request(
        config.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "onnxship",
            **config.resolved_headers(),
        },
    )
    target = mask_url(config.url)
    try:
        with urllib.request.urlopen(req, timeout=config.timeout) as resp:
            status = int(resp.status)
    except urllib.error.HTTPError as exc:
        error = PublishError(
            f"webhook {target} answered HTTP {exc.code} to the notification",
            hint="check the receiver (401/403: the auth header, see ONNXSHIP_NOTIFY_TOKEN); the run is "
            "marked FAILED",
        )
        if exc.code >= 500 or exc.code == 429:
            raise _Transient(error) from None
        raise error from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Transient(
            PublishError(
                f"webhook {target} is unreachable ({type(reason).__name__}: {reason})",
                hint="start the receiver or fix --notify / ONNXSHIP_NOTIFY_URL; the run is marked FAILED",
            )
        ) from None
    if not 200 <= status < 300:
        raise PublishError(f"webhook {target} answered HTTP {status} to the notification")
    return NotifyResult(kind="webhook", target=target, event=event, confirmed=True, status=status)

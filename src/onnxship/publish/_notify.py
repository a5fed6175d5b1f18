"""Announce a published model: RabbitMQ (pika; durable exchange, persistent message, publisher confirms) or webhook.

DO NOT import pika at module level. A notification that cannot be delivered raises PublishError: never swallowed.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
import uuid
from typing import Any

from onnxship._errors import MissingDependencyError, PublishError, require
from onnxship.publish._config import NotifyConfig, NotifyResult, mask_url

__all__ = ["notify"]


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
    if config.kind == "rabbitmq":
        return _amqp(body, event, config)
    return _webhook(body, event, config)


def _amqp(body: bytes, event: dict[str, Any], config: NotifyConfig) -> NotifyResult:
    try:
        pika = require("pika", "notify")
    except MissingDependencyError as exc:
        raise MissingDependencyError(
            "pika is not installed (needed for RabbitMQ notifications)", hint="pip install 'onnxship[notify]'"
        ) from exc.__cause__
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
        raise PublishError(
            f"RabbitMQ at {mask_url(config.url)} is unreachable ({type(exc).__name__}: {exc or 'no answer'})",
            hint="start the broker or fix --notify; the MLflow run is recorded, re-send with "
            "`onnxship publish` or onnxship.publish.notify",
        ) from None
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.exchange_declare(exchange=config.exchange, exchange_type=config.exchange_type, durable=True)
        props = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=str(uuid.uuid4()),
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
        raise PublishError(
            f"RabbitMQ refused the notification (nack) at {target}",
            hint="check the broker's logs (disk or memory alarm, policies)",
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
        headers={"Content-Type": "application/json", "User-Agent": "onnxship"},
    )
    target = mask_url(config.url)
    try:
        with urllib.request.urlopen(req, timeout=config.timeout) as resp:
            status = int(resp.status)
    except urllib.error.HTTPError as exc:
        raise PublishError(
            f"webhook {target} answered HTTP {exc.code} to the notification",
            hint="check the receiver; the MLflow run is recorded",
        ) from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PublishError(
            f"webhook {target} is unreachable ({type(reason).__name__}: {reason})",
            hint="start the receiver or fix --notify; the MLflow run is recorded",
        ) from None
    if not 200 <= status < 300:
        raise PublishError(f"webhook {target} answered HTTP {status} to the notification")
    return NotifyResult(kind="webhook", target=target, event=event, confirmed=True, status=status)

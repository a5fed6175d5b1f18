"""Notifications after a publish: RabbitMQ (real broker on 127.0.0.1) and a webhook (a real HTTP receiver)."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from onnxship._errors import ConfigError, PublishError
from onnxship.publish import NotifyConfig, notify, publish, resolve_tracking

mlflow = pytest.importorskip("mlflow")


def bound_queue(rabbit, exchange: str, routing_key: str):
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(rabbit.url))
    ch = conn.channel()
    ch.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
    q = ch.queue_declare(queue="", exclusive=True).method.queue
    ch.queue_bind(queue=q, exchange=exchange, routing_key=routing_key)
    return conn, ch, q


@pytest.mark.component
def test_publish_notifies_rabbitmq(released, store, rabbitmq):
    conn, ch, q = bound_queue(rabbitmq, "onnxship", "model.published")
    try:
        result = publish(released.latest, store_dir=store, notify=NotifyConfig(rabbitmq.url))
        method, props, body = ch.basic_get(q, auto_ack=True)
    finally:
        conn.close()
    assert method is not None, "no message arrived"
    assert props.delivery_mode == 2 and props.content_type == "application/json"
    event = json.loads(body)
    assert event["model_name"] == "deeplog" and event["version_tag"] == released.version
    assert event["run_id"] == result.run_id and event["verdict"] == "passed"
    assert event["artifact_uri"] == result.artifact_uri and event["metrics"]["golden.passed"] == 1.0
    assert result.notification.confirmed and "guest:***@" in result.notification.target
    run = mlflow.MlflowClient(tracking_uri=resolve_tracking(store_dir=store).uri).get_run(result.run_id)
    assert run.data.tags["onnxship.notify"] == "rabbitmq"


@pytest.mark.component
def test_mandatory_without_queue_is_an_error(rabbitmq):
    with pytest.raises(PublishError, match="no queue is bound"):
        notify(
            {"event": "x"},
            NotifyConfig(rabbitmq.url, exchange="onnxship-empty", routing_key="nobody.home", mandatory=True),
        )


def test_broker_down_is_loud_and_run_still_recorded(released, store):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"amqp://bob:hunter2@127.0.0.1:{port}/%2F"
    pytest.importorskip("pika")
    with pytest.raises(PublishError) as info:
        publish(released.latest, store_dir=store, notify=NotifyConfig(url, timeout=2))
    err = info.value
    assert "unreachable" in err.message and "hunter2" not in str(err) and "bob:***@" in err.message
    assert err.result.run_id in err.message
    run = mlflow.MlflowClient(tracking_uri=resolve_tracking(store_dir=store).uri).get_run(err.result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["onnxship.notify"] == "failed"


class _Receiver(BaseHTTPRequestHandler):
    status = 200
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append({"type": self.headers["Content-Type"], "event": json.loads(body)})
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def webhook():
    class Handler(_Receiver):
        received: list[dict] = []

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", Handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_webhook_receives_the_event(released, store, webhook):
    url, handler = webhook
    result = publish(released.latest, store_dir=store, log_model=False, notify=url)
    assert result.notification.kind == "webhook" and result.notification.status == 200
    (got,) = handler.received
    assert got["type"] == "application/json" and got["event"]["run_id"] == result.run_id
    assert got["event"]["event"] == "onnxship.model.published"


def test_webhook_error_status_is_an_error(webhook):
    url, handler = webhook
    handler.status = 500
    with pytest.raises(PublishError, match="HTTP 500"):
        notify({"event": "x"}, url)


def test_notify_config_checks():
    with pytest.raises(ConfigError, match="scheme"):
        NotifyConfig("ftp://x")
    with pytest.raises(ConfigError, match="exchange type"):
        NotifyConfig("amqp://h", exchange_type="nope")


def test_cli_notify_failure_exits_1_naming_the_run(released, store):
    from typer.testing import CliRunner

    from onnxship.cli import app

    pytest.importorskip("pika")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = CliRunner().invoke(
        app,
        [
            "publish",
            str(released.latest),
            "--store-dir",
            str(store),
            "--no-model",
            "--notify",
            f"amqp://bob:hunter2@127.0.0.1:{port}/%2F",
        ],
    )
    assert res.exit_code == 1 and "only the notification failed" in res.output
    assert "hunter2" not in res.output and "Traceback" not in res.output

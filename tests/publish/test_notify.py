"""Notifications after a publish: RabbitMQ (real broker on 127.0.0.1) and a webhook (a real HTTP receiver)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from onnxship._errors import ConfigError, PublishError
from onnxship.publish import NotifyConfig, notification_schema, notify, publish, resolve_tracking

mlflow = pytest.importorskip("mlflow")
jsonschema = pytest.importorskip("jsonschema")


def valid(event: dict) -> dict:
    """Every message a test receives is checked against the published contract."""
    jsonschema.Draft202012Validator(notification_schema()).validate(event)
    return event


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
    event = valid(json.loads(body))
    assert props.message_id == event["message_id"]
    assert event["model"]["name"] == "deeplog" and event["model"]["version_tag"] == released.version
    assert event["run_id"] == result.run_id and event["verification"]["verdict"] == "passed"
    assert event["artifact_uri"] == result.artifact_uri
    assert event["verification"]["golden_passed"] is True
    assert event["verification"]["metrics"]["golden.passed"] == 1.0
    # the model URI is the ONNX file itself, stored once (in the logged model)
    assert event["model"]["uri"] == result.onnx_uri and event["model"]["uri"].endswith("/model.onnx")
    assert event["model"]["mlflow_uri"] == result.model_uri
    assert event["io"]["inputs"] == [
        {"name": "input_sequence", "dtype": "int64", "dims": [-1, -1], "dim_names": ["batch", "seq"]}
    ]
    assert event["io"]["outputs"][0]["dims"] == [-1, 30]
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


@pytest.mark.component
def test_broker_down_after_training_retries_then_fails_the_run(store, rabbitmq, tmp_path):
    """The broker is up when the run starts and gone when the message is sent (a real broker, stopped)."""
    import time

    import torch

    from onnxship.publish import trace_pytorch

    from .conftest import free_port

    # a TCP proxy in front of the real broker: it forwards until the "broker" goes down mid-training
    proxy = socket.socket()
    proxy.bind(("127.0.0.1", free_port()))
    proxy.listen(8)
    port = proxy.getsockname()[1]
    stop = threading.Event()

    def pump(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = proxy.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", rabbitmq.port))
            threading.Thread(target=pump, args=(conn, up), daemon=True).start()
            threading.Thread(target=pump, args=(up, conn), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    url = f"amqp://guest:guest@127.0.0.1:{port}/%2F"

    @trace_pytorch(
        "broker-down",
        torch.randn(2, 4),
        store_dir=store,
        strategy="torchscript",
        enable_autolog=False,
        notify=NotifyConfig(url, timeout=2, retries=3, retry_delay=0.2),
    )
    def train():
        stop.set()
        with contextlib.suppress(OSError):
            proxy.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the proxy thread (Linux)
        proxy.close()  # the broker goes away during training
        return torch.nn.Linear(4, 2)

    t0 = time.monotonic()
    with pytest.raises(PublishError) as info:
        train()
    err = info.value
    assert time.monotonic() - t0 < 60
    assert "RabbitMQ broker" in err.message and f"127.0.0.1:{port}" in err.message
    assert "after 3 attempt(s)" in err.message and "marked FAILED" in err.message
    assert isinstance(err.model, torch.nn.Linear)
    run = mlflow.MlflowClient(tracking_uri=resolve_tracking(store_dir=store).uri).get_run(err.result.run_id)
    assert run.info.status == "FAILED" and run.data.tags["onnxship.notify"] == "failed"


def test_broker_down_fails_publish_before_the_run(released, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"amqp://bob:hunter2@127.0.0.1:{port}/%2F"
    pytest.importorskip("pika")
    with pytest.raises(PublishError) as info:
        publish(
            released.latest, store_dir=tmp_path / "s", notify=NotifyConfig(url, timeout=2, retry_delay=0.1)
        )
    err = info.value
    assert "RabbitMQ broker" in err.message and "unreachable" in err.message and "3 attempt" in err.message
    assert "hunter2" not in str(err) and "bob:***@" in err.message
    assert not (tmp_path / "s").exists()  # refused before a run (or a store) exists


def test_notify_retries_then_names_the_broker(rabbitmq_or_closed_port):
    url = rabbitmq_or_closed_port
    with pytest.raises(PublishError, match=r"RabbitMQ broker .* unreachable .* after 2 attempt\(s\)"):
        notify({"event": "x"}, NotifyConfig(url, timeout=1, retries=2, retry_delay=0.05))


@pytest.fixture
def rabbitmq_or_closed_port():
    pytest.importorskip("pika")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"amqp://127.0.0.1:{s.getsockname()[1]}/%2F"


class _Receiver(BaseHTTPRequestHandler):
    status = 200
    statuses: list[int] = []  # answers for the next requests, then `status`
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(
            {
                "type": self.headers["Content-Type"],
                "auth": self.headers.get("Authorization"),
                "event": json.loads(body),
            }
        )
        status = type(self).statuses.pop(0) if type(self).statuses else type(self).status
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def webhook():
    class Handler(_Receiver):
        received: list[dict] = []
        statuses: list[int] = []

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", Handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_webhook_receives_the_event_with_auth_from_env(released, store, webhook, monkeypatch):
    url, handler = webhook
    monkeypatch.setenv("HOOK_TOKEN_FOR_TEST", "tok-123")
    hook = NotifyConfig(url, headers={"Authorization": "Bearer ${HOOK_TOKEN_FOR_TEST}"}, retry_delay=0.05)
    handler.statuses = [503]  # a receiver that is restarting: retried
    result = publish(released.latest, store_dir=store, log_model=False, notify=hook)
    assert result.notification.kind == "webhook" and result.notification.status == 200
    first, got = handler.received
    assert first["event"]["message_id"] == got["event"]["message_id"]  # the same message, re-sent
    assert got["type"] == "application/json" and got["auth"] == "Bearer tok-123"
    event = valid(got["event"])
    assert event["run_id"] == result.run_id and event["event"] == "onnxship.model.published"
    assert event["model"]["mlflow_uri"] is None  # no logged model: the ONNX file is in bundle/
    assert event["model"]["uri"] == f"{result.artifact_uri}/bundle/deeplog.onnx"
    assert "tok-123" not in json.dumps(result.to_dict(), default=str)
    run = mlflow.MlflowClient(tracking_uri=resolve_tracking(store_dir=store).uri).get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["onnxship.notify"] == "webhook"


def test_webhook_token_variable_and_refusal(released, store, webhook, monkeypatch):
    url, handler = webhook
    monkeypatch.setenv("ONNXSHIP_NOTIFY_TOKEN", "env-tok")
    notify({"event": "x"}, url)
    assert handler.received[-1]["auth"] == "Bearer env-tok"
    handler.status = 401
    with pytest.raises(PublishError, match="HTTP 401") as info:
        publish(released.latest, store_dir=store, log_model=False, notify=url)
    assert len(handler.received) == 2  # a refusal is not retried
    assert "env-tok" not in str(info.value)
    run = mlflow.MlflowClient(tracking_uri=resolve_tracking(store_dir=store).uri).get_run(
        info.value.result.run_id
    )
    assert run.info.status == "FAILED"


def test_webhook_error_status_is_an_error(webhook):
    url, handler = webhook
    handler.status = 500
    with pytest.raises(PublishError, match="HTTP 500 .* after 2 attempt"):
        notify({"event": "x"}, NotifyConfig(url, retries=2, retry_delay=0.01))
    assert len(handler.received) == 2


def test_notify_config_checks():
    with pytest.raises(ConfigError, match="scheme"):
        NotifyConfig("ftp://x")
    with pytest.raises(ConfigError, match="exchange type"):
        NotifyConfig("amqp://h", exchange_type="nope")
    with pytest.raises(ConfigError, match="retries"):
        NotifyConfig("amqp://h", retries=0)


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
            "--notify-retries",
            "1",
        ],
    )
    assert res.exit_code == 1 and "RabbitMQ broker" in res.output and "unreachable" in res.output
    assert "hunter2" not in res.output and "Traceback" not in res.output


def test_cli_webhook_header_from_env(released, store, webhook, monkeypatch):
    from typer.testing import CliRunner

    from onnxship.cli import app

    url, handler = webhook
    monkeypatch.setenv("CLI_HOOK_TOKEN", "cli-tok-9")
    res = CliRunner().invoke(
        app,
        [
            "publish",
            str(released.latest),
            "--store-dir",
            str(store),
            "--no-model",
            "--notify",
            url,
            "--notify-header",
            "Authorization=Bearer ${CLI_HOOK_TOKEN}",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    (got,) = handler.received
    assert got["auth"] == "Bearer cli-tok-9" and "cli-tok-9" not in res.output
    assert valid(got["event"])["run_id"] == json.loads(res.stdout)["run_id"]
    monkeypatch.delenv("CLI_HOOK_TOKEN")
    res = CliRunner().invoke(
        app,
        [
            "publish",
            str(released.latest),
            "--store-dir",
            str(store),
            "--no-model",
            "--notify",
            url,
            "--notify-header",
            "Authorization=Bearer ${CLI_HOOK_TOKEN}",
        ],
    )
    assert res.exit_code == 1 and "CLI_HOOK_TOKEN" in res.output and "Traceback" not in res.output

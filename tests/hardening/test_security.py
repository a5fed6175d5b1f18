"""Security defaults: loopback bind, bearer-token auth, no shell=True, and no secrets in bundles or output."""

from __future__ import annotations

import ast
import json
import socket
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from onnxship.cli import app

from ..serve.conftest import infer_body, write_bundle  # noqa: TID252  (the serve tests own these helpers)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = f"{ROOT / 'examples/deeplog/model.py'}:build_model"
SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAHARDENINGTEST42",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-hardening-secret-value",
    "ONNXSHIP_TOKEN": "tok-hardening-5ecret",
    "MLFLOW_TRACKING_PASSWORD": "mlflow-pw-hardening",
    "RABBITMQ_PASSWORD": "broker-pw-hardening",
}
BROKER_PW = SECRETS["RABBITMQ_PASSWORD"]


def _leaks(text: str) -> list[str]:
    return [k for k, v in SECRETS.items() if v in text]


def _listening(port: int) -> list[str]:
    """Local addresses of the listening TCP sockets on ``port`` (from /proc/net/tcp and tcp6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        p = Path(table)
        if not p.exists():
            continue
        for line in p.read_text().splitlines()[1:]:
            fields = line.split()
            addr, hexport = fields[1].split(":")
            if int(hexport, 16) == port and fields[3] == "0A":
                found.append(addr)
    return found


@pytest.fixture(scope="module")
def token_server(tmp_path_factory, start_server):
    root = tmp_path_factory.mktemp("sec") / "releases"
    write_bundle(root, 0, 1, latest=True)
    return start_server(["--releases", str(root)], env={"ONNXSHIP_TOKEN": SECRETS["ONNXSHIP_TOKEN"]})


def test_server_binds_loopback_by_default(token_server, require_component):
    port = int(token_server.url.rsplit(":", 1)[1])
    addrs = _listening(port)
    require_component(bool(addrs), "/proc/net/tcp (Linux) to read the listening address")
    # 127.0.0.1, and nothing on 0.0.0.0 or :: (one listening socket per worker process: SO_REUSEPORT)
    assert set(addrs) == {"0100007F"}, addrs
    try:
        others = {a for a in socket.gethostbyname_ex(socket.gethostname())[2] if not a.startswith("127.")}
    except OSError:  # the hostname does not resolve: no other address to try
        others = set()
    for addr in others:  # another local address of this host does not reach it
        with pytest.raises(OSError), socket.create_connection((addr, port), timeout=2):
            pass


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": "Bearer " + SECRETS["ONNXSHIP_TOKEN"][:-1]}, 401),  # a prefix of the token
        ({"Authorization": "Bearer " + SECRETS["ONNXSHIP_TOKEN"] + "x"}, 401),  # the token plus one byte
        ({"Authorization": "Token " + SECRETS["ONNXSHIP_TOKEN"]}, 401),  # the right token, the wrong scheme
        ({"Authorization": "Bearer " + SECRETS["ONNXSHIP_TOKEN"]}, 200),
        ({"Authorization": "bearer " + SECRETS["ONNXSHIP_TOKEN"]}, 200),  # the scheme is case-insensitive
    ],
)
def test_bearer_token(token_server, headers, status):
    x = np.zeros((1, 10), np.int64)
    got, _, raw = token_server.request(
        "POST", "/v2/models/deeplog/infer", json.dumps(infer_body(x)).encode(), headers
    )
    assert got == status, raw[:200]
    if status == 401:
        assert SECRETS["ONNXSHIP_TOKEN"] not in raw.decode() and "bearer token" in json.loads(raw)["error"]
    assert token_server.request("GET", "/v2/health/ready")[0] == 200  # probes stay open
    assert not _leaks(token_server.output())


def test_token_compare_is_constant_time():
    """The comparison itself: hmac.compare_digest, never == on the token."""
    src = (ROOT / "src/onnxship/serve/_app.py").read_text()
    tree = ast.parse(src)
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "compare_digest"
    ]
    assert calls, "the bearer token must be compared with hmac.compare_digest"
    token_eq = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Compare)
        and any(isinstance(o, (ast.Eq, ast.NotEq)) for o in n.ops)
        and "_token" in ast.unparse(n)
        and "None" not in ast.unparse(n)
    ]
    assert not token_eq, [ast.unparse(n) for n in token_eq]


def test_no_shell_true_in_src():
    offenders = []
    for path in sorted((ROOT / "src/onnxship").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                if name in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
                for kw in node.keywords:
                    if kw.arg == "shell" and not (
                        isinstance(kw.value, ast.Constant) and kw.value.value is False
                    ):
                        offenders.append(
                            f"{path.relative_to(ROOT)}:{node.lineno} shell={ast.unparse(kw.value)}"
                        )
    assert offenders == []


@pytest.fixture(scope="module")
def shipped_with_secrets(tmp_path_factory):
    """`onnxship ship` run with credentials in its environment."""
    d = tmp_path_factory.mktemp("secrets")
    result = CliRunner().invoke(
        app,
        [
            "ship",
            "--model",
            EXAMPLE,
            "--strategy",
            "torchscript",
            "--releases",
            str(d / "releases"),
            "--meta",
            "broker=amqp://user@broker.local/vh",
            "--golden-samples",
            "2",
            "--json",
        ],
        env=SECRETS,
    )
    assert result.exit_code == 0, result.output
    return d, Path(json.loads(result.stdout)["path"]), result.output


def test_ship_writes_and_prints_no_secrets(shipped_with_secrets):
    _, bundle, output = shipped_with_secrets
    assert not _leaks(output)
    for f in bundle.rglob("*"):
        if f.is_file():
            assert not _leaks(f.read_bytes().decode("latin-1")), (
                f.name
            )  # report.json, meta.json, the .onnx, ...


@pytest.mark.parametrize(
    ("meta", "needle"),
    [
        ("db_password=hunter2", "look like secrets"),
        ("api_token=abc", "look like secrets"),
        (f"broker=amqp://user:{BROKER_PW}@broker.local/vh", "hold URLs with a password"),
    ],
)
def test_ship_refuses_secret_metadata(tmp_path, meta, needle):
    result = CliRunner().invoke(
        app,
        [
            "ship",
            "--model",
            EXAMPLE,
            "--strategy",
            "torchscript",
            "--releases",
            str(tmp_path / "releases"),
            "--meta",
            meta,
        ],
    )
    assert result.exit_code == 1 and needle in result.stderr, result.output
    assert BROKER_PW not in result.output and "hunter2" not in result.output
    assert not (tmp_path / "releases").exists()


def test_publish_prints_and_logs_no_secrets(shipped_with_secrets, require_component):
    """Publish to the embedded MLflow store with a broker URL holding a password (the broker is down)."""
    import importlib.util

    require_component(
        importlib.util.find_spec("mlflow") is not None, "mlflow (pip install 'onnxship[mlflow]')"
    )
    d, bundle, _ = shipped_with_secrets
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    store = d / "store"
    result = CliRunner().invoke(
        app,
        [
            "publish",
            str(bundle),
            "--store-dir",
            str(store),
            "--no-model",
            "--no-triton",
            "--notify",
            f"amqp://user:{BROKER_PW}@127.0.0.1:{closed}/vh",
        ],
        env=SECRETS,
    )
    assert result.exit_code == 1 and "unreachable" in result.stderr, result.output
    assert "amqp://user:***@127.0.0.1" in result.stderr
    assert not _leaks(result.output)
    for f in store.rglob("*"):
        if f.is_file():
            assert not _leaks(f.read_bytes().decode("latin-1")), f  # params, tags and artifacts in the store


def test_server_opens_files_only_through_the_model_root_gate():
    """Every file the server reads goes through serve/_files.py (resolved, confined, opened by descriptor): no other
    serve module opens paths itself, and onnxruntime only ever gets bytes."""
    banned_attrs = {"read_bytes", "read_text", "open", "load_model", "InferenceSession", "readlink"}
    banned_names = {
        "open",
        "read_release",
        "read_golden",
        "load_onnx_checked",
        "current_latest",
        "resolve_release",
    }
    offenders = []
    for path in sorted((ROOT / "src/onnxship/serve").glob("*.py")):
        if path.name == "_files.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = ast.unparse(func.value) if isinstance(func, ast.Attribute) else ""
            through_gate = owner in ("root", "folder", "files", "self.files")  # ModelRoot instances
            reads_bytes = name == "load" and owner == "np" and "BytesIO" in ast.unparse(node.args[0])
            if through_gate or reads_bytes:
                continue
            loads = name == "load" and owner in ("np", "numpy", "onnx", "json")
            if (
                loads
                or (isinstance(func, ast.Attribute) and name in banned_attrs)
                or (isinstance(func, ast.Name) and name in banned_names)
            ):
                offenders.append(f"{path.name}:{node.lineno} {ast.unparse(func)}")
    assert offenders == [], offenders

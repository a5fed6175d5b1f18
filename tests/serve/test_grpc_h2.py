"""The gRPC server's own HTTP/2 layer against real clients and a raw-socket peer: several raw inputs, concurrent
calls merged by the batcher (seen in /metrics), the peer's flow-control window and frame limits, PING, compressed
requests, unknown and streaming methods, undecodable messages, deadlines, the HPACK table, protocol errors (GOAWAY
with the right code, the worker keeps serving), and an HTTP/1.1 client on the gRPC port."""

from __future__ import annotations

import gzip
import re
import socket
import struct
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc")
grpc = pytest.importorskip("grpc")
hpack = pytest.importorskip("hpack")
onnx = pytest.importorskip("onnx")

from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402

from .test_grpc import _infer, grpc_address  # noqa: E402

RNG = np.random.default_rng(11)
X1 = np.zeros((1, 10), np.int64)
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


def _two_input_model():
    """sum = a + b (FP32) and scaled = a * Cast(k) (k INT32): two inputs of two datatypes, two outputs."""
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 3])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 3])
    k = helper.make_tensor_value_info("k", TensorProto.INT32, ["batch", 3])
    total = helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", 3])
    scaled = helper.make_tensor_value_info("scaled", TensorProto.FLOAT, ["batch", 3])
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["a", "b"], ["sum"]),
            helper.make_node("Cast", ["k"], ["kf"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["a", "kf"], ["scaled"]),
        ],
        "two",
        [a, b, k],
        [total, scaled],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def two_input_server(tmp_path_factory, start_server):
    folder = tmp_path_factory.mktemp("two") / "two"
    folder.mkdir()
    onnx.save_model(_two_input_model(), str(folder / "two.onnx"))
    return start_server(
        ["--model-path", str(folder / "two.onnx"), "--no-golden-check", "--grpc-port", "0", "--workers", "1"]
    )


@pytest.fixture(scope="module")
def one_worker(bundles, start_server):
    return start_server(["--releases", str(bundles.root), "--grpc-port", "0", "--workers", "1"])


def test_raw_contents_with_several_inputs_in_any_order(two_input_server):
    a = RNG.standard_normal((4, 3)).astype(np.float32)
    b = RNG.standard_normal((4, 3)).astype(np.float32)
    k = RNG.integers(-5, 5, size=(4, 3)).astype(np.int32)
    with grpc.insecure_channel(grpc_address(two_input_server)) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        req = service_pb2.ModelInferRequest(model_name="two")
        for name, arr, datatype in (("k", k, "INT32"), ("b", b, "FP32"), ("a", a, "FP32")):
            req.inputs.add(name=name, datatype=datatype, shape=list(arr.shape))
            req.raw_input_contents.append(arr.tobytes())
        resp = stub.ModelInfer(req, timeout=30)
        got = {
            o.name: np.frombuffer(raw, np.float32).reshape(list(o.shape))
            for o, raw in zip(resp.outputs, resp.raw_output_contents, strict=True)
        }
        assert set(got) == {"sum", "scaled"}
        np.testing.assert_allclose(got["sum"], a + b, rtol=1e-6)
        np.testing.assert_allclose(got["scaled"], a * k, rtol=1e-6)
        req.outputs.add(name="scaled")  # only the output asked for comes back
        resp = stub.ModelInfer(req, timeout=30)
        assert [o.name for o in resp.outputs] == ["scaled"] and len(resp.raw_output_contents) == 1
        del req.raw_input_contents[-1]  # one raw entry short
        with pytest.raises(grpc.RpcError) as exc:
            stub.ModelInfer(req, timeout=30)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "raw_input_contents has 2 entries for 3 inputs" in exc.value.details()


def _metric(server, name: str) -> float:
    text = server.request("GET", "/metrics")[2].decode()
    m = re.search(rf"^{name} (\S+)", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_concurrent_grpc_calls_share_batches(one_worker, bundles):
    """Calls that arrive together are merged into one model run (the batcher REST uses), answers split back."""
    xs = [RNG.integers(0, 30, size=(1, 10)).astype(np.int64) for _ in range(48)]
    runs0 = _metric(one_worker, "onnxship_batch_requests_count")
    reqs0 = _metric(one_worker, "onnxship_batch_requests_sum")
    with grpc.insecure_channel(grpc_address(one_worker)) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        calls = []
        for i, x in enumerate(xs):
            req = service_pb2.ModelInferRequest(model_name="deeplog", id=f"call-{i}")
            req.inputs.add(name="input_sequence", datatype="INT64", shape=[1, 10])
            req.raw_input_contents.append(x.tobytes())
            calls.append(stub.ModelInfer.future(req, timeout=30))
        answers = [c.result() for c in calls]
    for i, (x, resp) in enumerate(zip(xs, answers, strict=True)):
        assert resp.id == f"call-{i}"
        got = np.frombuffer(resp.raw_output_contents[0], np.float32).reshape(1, 30)
        np.testing.assert_allclose(got, bundles.expected(bundles.v1.name, {"input_sequence": x}), atol=1e-5)
    runs = _metric(one_worker, "onnxship_batch_requests_count") - runs0
    reqs = _metric(one_worker, "onnxship_batch_requests_sum") - reqs0
    assert reqs == len(xs)
    assert runs < len(xs), f"{len(xs)} concurrent calls took {runs} model runs: none were merged"
    text = one_worker.request("GET", "/metrics")[2].decode()
    assert re.search(
        r'onnxship_requests_total\{model="deeplog",endpoint="grpc_model_infer",code="200"\} 48\b', text
    )


# -- a raw HTTP/2 peer ----------------------------------------------------------------------------------------------
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


class Peer:
    def __init__(self, address: str, settings: dict[int, int]) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.buf = b""
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        body = b"".join(struct.pack(">HI", k, v) for k, v in settings.items())
        self.sock.sendall(PREFACE + _frame(4, 0, 0, body))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, sid: int, message: bytes, path: str = MODEL_INFER) -> None:
        block = self.encoder.encode(
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", path),
                (":authority", "test"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ]
        )
        body = b"\0" + struct.pack(">I", len(message)) + message
        self.send(_frame(1, 0x4, sid, block) + _frame(0, 0x1, sid, body))

    def frame(self) -> tuple[int, int, int, bytes]:
        while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
            chunk = self.sock.recv(65536)
            assert chunk, "the server closed the connection"
            self.buf += chunk
        length = int.from_bytes(self.buf[:3], "big")
        ftype, flags = self.buf[3], self.buf[4]
        sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
        payload, self.buf = self.buf[9 : 9 + length], self.buf[9 + length :]
        return ftype, flags, sid, payload

    def stream_frames(
        self, sid: int, until_end: bool = True, limit: int = 50
    ) -> list[tuple[int, int, bytes]]:
        """Frames of stream ``sid`` (answering the server's SETTINGS on the way), up to END_STREAM."""
        out = []
        for _ in range(limit):
            ftype, flags, fsid, payload = self.frame()
            if ftype == 4 and not flags & 1:
                self.send(_frame(4, 1, 0))
            if fsid != sid:
                continue
            out.append((ftype, flags, payload))
            if until_end and flags & 1 and ftype in (0, 1):
                return out
            if not until_end and ftype == 0:
                return out
        raise AssertionError(f"no END_STREAM in {limit} frames: {out}")

    def close(self) -> None:
        self.sock.close()


def _deeplog_request(x: np.ndarray) -> bytes:
    req = service_pb2.ModelInferRequest(model_name="deeplog")
    req.inputs.add(name="input_sequence", datatype="INT64", shape=list(x.shape))
    req.raw_input_contents.append(x.tobytes())
    return req.SerializeToString()


def test_response_waits_for_the_peers_window_and_ping_is_answered(one_worker, bundles):
    """A peer with a 10-byte stream window gets the response in pieces, each after its WINDOW_UPDATE."""
    x = RNG.integers(0, 30, size=(2, 10)).astype(np.int64)
    peer = Peer(grpc_address(one_worker), {0x4: 10})  # SETTINGS_INITIAL_WINDOW_SIZE = 10
    try:
        peer.send(_frame(6, 0, 0, b"12345678"))  # PING
        peer.request(1, _deeplog_request(x))
        frames = peer.stream_frames(1, until_end=False)
        assert frames[0][0] == 1 and frames[0][1] & 0x4  # response headers
        data = b"".join(p for t, _, p in frames if t == 0)
        assert len(data) == 10  # exactly the window: nothing more until the peer opens it
        while True:
            peer.send(_frame(8, 0, 1, struct.pack(">I", 7)))  # WINDOW_UPDATE stream 1 by 7 bytes
            ftype, flags, payload = peer.stream_frames(1, until_end=False, limit=200)[-1]
            if ftype == 0:
                assert len(payload) <= 7
                data += payload
            if len(data) >= 5 and len(data) == 5 + struct.unpack(">I", data[1:5])[0]:
                break
        trailers = peer.stream_frames(1)
        block = peer.decoder.decode(trailers[-1][2])
        assert ("grpc-status", "0") in block
        resp = service_pb2.ModelInferResponse.FromString(data[5:])
        got = np.frombuffer(resp.raw_output_contents[0], np.float32).reshape(2, 30)
        np.testing.assert_allclose(got, bundles.expected(bundles.v1.name, {"input_sequence": x}), atol=1e-5)
    finally:
        peer.close()
    peer = Peer(grpc_address(one_worker), {})
    try:
        peer.send(_frame(6, 0, 0, b"abcdefgh"))
        for _ in range(10):
            ftype, flags, sid, payload = peer.frame()
            if ftype == 6:
                assert flags & 1 and payload == b"abcdefgh"  # PING ACK with the same payload
                break
        else:
            raise AssertionError("no PING ACK")
    finally:
        peer.close()


def test_request_split_over_frames_and_connection_is_reused(one_worker, bundles):
    """A message in many small DATA frames, and several calls one after another on one connection."""
    peer = Peer(grpc_address(one_worker), {})
    try:
        for sid in (1, 3, 5):
            x = RNG.integers(0, 30, size=(3, 12)).astype(np.int64)
            message = _deeplog_request(x)
            body = b"\0" + struct.pack(">I", len(message)) + message
            block = peer.encoder.encode(
                [(":method", "POST"), (":scheme", "http"), (":path", MODEL_INFER), (":authority", "t")]
                + [("content-type", "application/grpc")]
            )
            peer.send(_frame(1, 0x4, sid, block))
            for i in range(0, len(body), 17):
                last = i + 17 >= len(body)
                peer.send(_frame(0, 0x1 if last else 0, sid, body[i : i + 17]))
            frames = peer.stream_frames(sid)
            data = b"".join(p for t, _, p in frames if t == 0)
            assert ("grpc-status", "0") in peer.decoder.decode(frames[-1][2])
            resp = service_pb2.ModelInferResponse.FromString(data[5:])
            got = np.frombuffer(resp.raw_output_contents[0], np.float32).reshape(3, 30)
            np.testing.assert_allclose(
                got, bundles.expected(bundles.v1.name, {"input_sequence": x}), atol=1e-5
            )
    finally:
        peer.close()


def test_gzip_compressed_request(one_worker, bundles):
    x = RNG.integers(0, 30, size=(2, 10)).astype(np.int64)
    g = grpcclient.InferenceServerClient(grpc_address(one_worker))
    try:
        got = _infer(g, grpcclient, x, compression_algorithm="gzip").as_numpy("output_0")
    finally:
        g.close()
    np.testing.assert_allclose(got, bundles.expected(bundles.v1.name, {"input_sequence": x}), atol=1e-5)
    # a gzip bomb past the size limit is refused, not inflated
    peer = Peer(grpc_address(one_worker), {})
    try:
        bomb = gzip.compress(b"\0" * (20 * 1024 * 1024))
        block = peer.encoder.encode(
            [(":method", "POST"), (":scheme", "http"), (":path", MODEL_INFER), (":authority", "t")]
            + [("content-type", "application/grpc"), ("grpc-encoding", "gzip")]
        )
        body = b"\1" + struct.pack(">I", len(bomb)) + bomb
        peer.send(_frame(1, 0x4, 1, block))
        for i in range(0, len(body), 16384):
            peer.send(_frame(0, 0x1 if i + 16384 >= len(body) else 0, 1, body[i : i + 16384]))
        headers = dict(peer.decoder.decode(peer.stream_frames(1)[-1][2]))
        assert headers["grpc-status"] == "8", headers  # RESOURCE_EXHAUSTED
    finally:
        peer.close()


def test_unknown_method_and_undecodable_message(one_worker):
    with grpc.insecure_channel(grpc_address(one_worker)) as channel:
        with pytest.raises(grpc.RpcError) as exc:
            channel.unary_unary("/inference.GRPCInferenceService/RepositoryIndex")(b"", timeout=10)
        assert exc.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # a streaming RPC is refused at once, not left waiting for a unary answer
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        with pytest.raises(grpc.RpcError) as exc:
            list(stream(iter([_deeplog_request(np.zeros((1, 10), np.int64))] * 3), timeout=10))
        assert exc.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.RpcError) as exc:
            channel.unary_unary(MODEL_INFER)(b"\xff\xff\xff", timeout=10)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid ModelInferRequest" in exc.value.details()
        # the connection still serves after both refusals, and many calls in parallel threads as well
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        x = np.zeros((1, 10), np.int64)

        def one(_: int) -> int:
            return len(stub.ModelInfer(service_pb2.ModelInferRequest.FromString(_deeplog_request(x))).outputs)

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(one, range(64))) == [1] * 64


def test_http1_client_on_the_grpc_port_gets_one_line(one_worker):
    host, port = grpc_address(one_worker).rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 ")
    assert b"this port serves gRPC" in data and b"--port" in data


def test_grpc_timeout_gives_deadline_exceeded(one_worker):
    """A call whose message does not arrive before its grpc-timeout is answered DEADLINE_EXCEEDED."""
    peer = Peer(grpc_address(one_worker), {})
    try:
        block = peer.encoder.encode(
            [(":method", "POST"), (":scheme", "http"), (":path", MODEL_INFER), (":authority", "t")]
            + [("content-type", "application/grpc"), ("grpc-timeout", "20m")]
        )
        peer.send(_frame(1, 0x4, 1, block))  # headers only: the message never comes
        headers = dict(peer.decoder.decode(peer.stream_frames(1)[-1][2]))
        assert headers["grpc-status"] == "4" and "deadline" in headers["grpc-message"], headers
    finally:
        peer.close()


def test_cached_header_blocks_follow_the_hpack_table(one_worker):
    """The same header block bytes mean other headers once the peer's HPACK table changed: never a stale method."""
    content_type = b"\x0f\x10\x10application/grpc"  # literal without indexing: leaves the table as it is

    def path_indexed(path: str) -> bytes:  # ':path' (static name 4), literal with incremental indexing
        return b"\x44" + bytes([len(path)]) + path.encode()

    live = "/inference.GRPCInferenceService/ServerLive"
    metadata = "/inference.GRPCInferenceService/ServerMetadata"
    by_index = b"\x83\x86\xbe" + content_type  # POST, http, dynamic entry 62 (the newest)
    peer = Peer(grpc_address(one_worker), {})

    def call(sid: int, block: bytes) -> bytes:
        peer.send(_frame(1, 0x4, sid, block) + _frame(0, 0x1, sid, b"\0\0\0\0\0"))
        frames = peer.stream_frames(sid)
        assert ("grpc-status", "0") in peer.decoder.decode(frames[-1][2]), frames
        return b"".join(p for t, _, p in frames if t == 0)[5:]

    try:
        assert call(1, b"\x83\x86" + path_indexed(live) + content_type) == b"\x08\x01"  # live: true
        assert call(3, by_index) == b"\x08\x01"  # entry 62 is ServerLive's path (now cached)
        assert b"onnxship" in call(5, b"\x83\x86" + path_indexed(metadata) + content_type)
        assert b"onnxship" in call(7, by_index)  # the same bytes: entry 62 is ServerMetadata's path now
    finally:
        peer.close()


def _goaway_code(peer: Peer) -> int | None:
    """The error code of the server's GOAWAY (None if it closed without one)."""
    try:
        for _ in range(20):
            ftype, _, _, payload = peer.frame()
            if ftype == 7:
                return struct.unpack(">I", payload[4:8])[0]
    except (AssertionError, OSError):
        return None
    return None


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        (_frame(0, 0, 1, b"x" * 20000), 6),  # a frame over the 16 KiB maximum: FRAME_SIZE_ERROR
        (_frame(1, 0x4, 1, b"\xff\xff\xff\xff\xff"), 9),  # an undecodable header block: COMPRESSION_ERROR
        (_frame(0, 0, 0, b"abc"), 1),  # DATA on stream 0: PROTOCOL_ERROR
        (_frame(1, 0x4, 2, b"\x83"), 1),  # a client stream with an even id
        (_frame(9, 0x4, 1, b"\x83"), 1),  # CONTINUATION without HEADERS
        (_frame(1, 0, 1, b"\x83") + _frame(0, 0, 1, b"x"), 1),  # DATA where CONTINUATION must come
        (_frame(6, 0, 0, b"short"), 1),  # PING that is not 8 bytes
    ],
)
def test_protocol_errors_end_the_connection_with_goaway(one_worker, frames, code):
    peer = Peer(grpc_address(one_worker), {})
    try:
        peer.send(frames)
        assert _goaway_code(peer) == code
    finally:
        peer.close()


def test_random_frames_never_take_the_worker_down(one_worker):
    rng = np.random.default_rng(5)
    for _ in range(25):
        peer = Peer(grpc_address(one_worker), {})
        try:
            for _ in range(8):
                ftype = int(rng.integers(0, 12))
                flags = int(rng.integers(0, 256))
                sid = int(rng.integers(0, 8))
                payload = rng.bytes(int(rng.integers(0, 64)))
                peer.send(_frame(ftype, flags, sid, payload))
        except OSError:
            pass  # the server already closed this connection
        finally:
            peer.close()
    # the worker still serves, on a fresh connection
    with grpc.insecure_channel(grpc_address(one_worker)) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        resp = stub.ModelInfer(service_pb2.ModelInferRequest.FromString(_deeplog_request(X1)), timeout=30)
        assert resp.outputs[0].name == "output_0"
    assert "Traceback" not in one_worker.output()


# -- the gRPC port's connection limits (the same flags as the REST port's) ---------------------------------------


@pytest.fixture(scope="module")
def short_timeouts(bundles, start_server):
    flags = ["--header-timeout", "0.5", "--body-timeout", "0.5", "--keep-alive", "0.8"]
    return start_server(["--releases", str(bundles.root), "--grpc-port", "0", "--workers", "1", *flags])


def test_a_connection_without_the_preface_is_closed_after_the_header_timeout(short_timeouts):
    host, port = grpc_address(short_timeouts).rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(PREFACE[:10])  # a slow client: part of the preface, then nothing
        assert sock.recv(100) == b""  # closed by the server, well before the socket's own 10 s timeout


def test_a_request_message_that_never_arrives_gets_deadline_exceeded(short_timeouts):
    peer = Peer(grpc_address(short_timeouts), {})
    try:
        block = peer.encoder.encode(
            [(":method", "POST"), (":scheme", "http"), (":path", MODEL_INFER), (":authority", "t")]
            + [("content-type", "application/grpc")]
        )
        peer.send(_frame(1, 0x4, 1, block))  # headers without grpc-timeout; the message never comes
        headers = dict(peer.decoder.decode(peer.stream_frames(1)[-1][2]))
        assert headers["grpc-status"] == "4" and "--body-timeout" in headers["grpc-message"], headers
    finally:
        peer.close()


def test_an_idle_connection_gets_goaway_after_the_keep_alive(short_timeouts):
    peer = Peer(grpc_address(short_timeouts), {})
    try:
        peer.request(1, _deeplog_request(X1))
        assert ("grpc-status", "0") in peer.decoder.decode(peer.stream_frames(1)[-1][2])
        assert _goaway_code(peer) == 0  # NO_ERROR, then the server closes the connection
        with pytest.raises(AssertionError, match="closed"):
            peer.frame()
    finally:
        peer.close()


def test_past_max_connections_the_oldest_idle_connection_makes_room(bundles, start_server):
    server = start_server(
        ["--releases", str(bundles.root), "--grpc-port", "0", "--workers", "1", "--max-connections", "2"]
    )
    first, second = Peer(grpc_address(server), {}), Peer(grpc_address(server), {})
    third = None
    try:
        for peer in (first, second):  # both established (a call answered on each)
            peer.request(1, _deeplog_request(X1))
            assert ("grpc-status", "0") in peer.decoder.decode(peer.stream_frames(1)[-1][2])
        third = Peer(grpc_address(server), {})
        third.request(1, _deeplog_request(X1))
        assert ("grpc-status", "0") in third.decoder.decode(third.stream_frames(1)[-1][2])
        assert _goaway_code(first) == 0  # the oldest idle one went away
        second.request(3, _deeplog_request(X1))  # the newer one still serves
        assert ("grpc-status", "0") in second.decoder.decode(second.stream_frames(3)[-1][2])
    finally:
        for peer in (first, second, third):
            if peer is not None:
                peer.close()

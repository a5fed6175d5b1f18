"""HTTP/2 for gRPC unary calls, served as an asyncio protocol on the worker's own event loop.

Why not grpcio's server: its asyncio server hands every call through a poller thread and several completion-queue
round trips; on this server's budget a bare grpcio echo handler cost more CPU per call than the whole REST infer
path, so gRPC was 4x slower than REST. This module speaks just what a gRPC client needs for unary calls (cleartext
HTTP/2 with prior knowledge, RFC 9113) and nothing more:

- frames: SETTINGS (+ACK), PING (+ACK), HEADERS/CONTINUATION (header blocks decoded with ``hpack``; a block whose
  decoding leaves the dynamic table unchanged, the steady state of a keep-alive client, is decoded once and
  cached until a block changes the table), DATA with padding,
  WINDOW_UPDATE, RST_STREAM, GOAWAY; PRIORITY and unknown frame types are ignored, as the RFC asks;
- flow control both ways: the receive windows are opened wide (a request up to the size limit never waits for a
  window update) and replenished as data arrives; sends respect the peer's connection and stream windows and its
  maximum frame size, queueing what does not fit until the peer opens its window;
- gRPC framing: one length-prefixed request message (``identity``, ``gzip`` or ``deflate`` compressed), responses
  as HEADERS + DATA + trailers in one write, refusals as trailers-only responses with ``grpc-status`` and a
  percent-encoded ``grpc-message``; ``grpc-timeout`` gives DEADLINE_EXCEEDED; an HTTP/1.1 client gets a one-line
  400 that names the REST port;
- the same connection limits as the REST port: a new connection must send the client preface within
  ``--header-timeout``, a request message must arrive within ``--body-timeout`` of its headers (else
  DEADLINE_EXCEEDED), a connection idle for ``--keep-alive`` gets GOAWAY and is closed, and past
  ``--max-connections`` (per worker) the oldest idle connection is closed to make room (none idle: the new one is).

The calls themselves (protobuf messages, auth, validation, batching, metrics) are ``_grpc.GrpcService``'s.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import zlib
from collections.abc import Callable
from typing import Any

__all__ = ["Call", "H2Connection", "H2Server", "percent_encode"]

log = logging.getLogger("onnxship.serve")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    range(10)
)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 5, 6, 7, 8, 9

MAX_FRAME = 16384  # our SETTINGS_MAX_FRAME_SIZE (the protocol default): larger frames are refused
MAX_WINDOW = 2**31 - 1
CONN_WINDOW = 1 << 24  # receive window of the connection, replenished as data is consumed

_FRAME = struct.Struct(">IBI")  # 24-bit length and 8-bit type share the first word
_U32 = struct.Struct(">I")
_SETTING = struct.Struct(">HI")

# gRPC status codes
OK, CANCELLED, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND = 0, 1, 3, 4, 5
PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, UNAUTHENTICATED = (
    7,
    8,
    12,
    13,
    14,
    16,
)


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return _FRAME.pack((len(payload) << 8) | ftype, flags, sid) + payload


def _hpack_int(value: int, prefix: int, first: int = 0) -> bytes:
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: bytes, value: bytes) -> bytes:
    """A header field as 'literal without indexing, new name' (no Huffman): our blocks never touch the peer's table."""
    return b"\x00" + _hpack_int(len(name), 7) + name + _hpack_int(len(value), 7) + value


# ':status: 200' (static index 8) and content-type (static name 31) with a literal value
RESPONSE_HEAD = b"\x88\x0f\x10" + _hpack_int(16, 7) + b"application/grpc"
TRAILERS_OK = _literal(b"grpc-status", b"0")
_SAFE = frozenset(range(0x20, 0x7F)) - {ord("%")}


def percent_encode(text: str) -> bytes:
    """grpc-message encoding: UTF-8, with bytes outside printable ASCII (and '%') as %XX."""
    raw = text.encode("utf-8")
    if all(b in _SAFE for b in raw):
        return raw
    return b"".join(bytes([b]) if b in _SAFE else b"%%%02X" % b for b in raw)


def status_block(code: int, message: str, head: bool = True) -> bytes:
    block = (RESPONSE_HEAD if head else b"") + _literal(b"grpc-status", str(code).encode())
    if message:
        block += _literal(b"grpc-message", percent_encode(message))
    return block


_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


class Head:
    """What a call's request headers say (decoded once per distinct header block)."""

    __slots__ = ("authorization", "content_type", "encoding", "method", "path", "timeout")

    def __init__(self, headers: Any) -> None:
        self.method = self.path = self.content_type = self.encoding = self.authorization = None
        self.timeout: float | None = None
        for name, value in headers:
            if name == b":path":
                self.path = value
            elif name == b":method":
                self.method = value
            elif name == b"content-type":
                self.content_type = value
            elif name == b"authorization":
                self.authorization = value
            elif name == b"grpc-encoding":
                self.encoding = value
            elif name == b"grpc-timeout":
                unit = _TIMEOUT_UNITS.get(value[-1:])
                if unit is not None and value[:-1].isdigit() and len(value) <= 9:
                    self.timeout = int(value[:-1]) * unit


class Call:
    """One stream: a unary call being received, run, or answered."""

    __slots__ = (
        "answered",
        "block",
        "body",
        "conn",
        "end_after_headers",
        "head",
        "pending",
        "remote_closed",
        "send_window",
        "sid",
        "t0",
        "timer",
    )

    def __init__(self, conn: H2Connection, sid: int, send_window: int) -> None:
        self.conn = conn
        self.sid = sid
        self.send_window = send_window
        self.head: Head | None = None
        self.block: bytearray | None = None  # header block awaiting CONTINUATION frames
        self.end_after_headers = False
        self.body = bytearray()
        self.remote_closed = False
        self.answered = False
        self.pending: list[Any] | None = (
            None  # [data left to send, trailer block] while the peer's window is shut
        )
        self.timer: asyncio.TimerHandle | None = None
        self.t0 = conn.last_active  # when its headers arrived (the body timeout counts from here)

    # -- answering (used by the service) ---------------------------------------------------------------------
    def respond(self, message: bytes) -> None:
        """Send one response message and the OK trailers (dropped if the call was cancelled or timed out)."""
        if self.answered:
            return
        self.conn.send_response(self, b"\x00" + _U32.pack(len(message)) + message)

    def fail(self, code: int, message: str) -> None:
        """Answer with a trailers-only response carrying ``code`` and ``message``."""
        if self.answered:
            return
        self.conn.send_trailers_only(self, status_block(code, message))

    @property
    def live(self) -> bool:
        return not self.answered


class H2Server:
    """Listening socket -> H2Connection per client; ``dispatch(call, message)`` handles each complete request.

    A call to any other path than ``methods`` (e.g. a streaming RPC) is answered UNIMPLEMENTED as soon as its
    headers arrive, so a streaming client is not left waiting for a unary answer.
    """

    def __init__(
        self,
        dispatch: Callable[[Call, bytes], None],
        methods: frozenset[bytes],
        max_message: int,
        max_streams: int,
        head_timeout: float = 10.0,
        body_timeout: float = 60.0,
        idle_timeout: float = 30.0,
        max_connections: int = 1024,
    ) -> None:
        self.dispatch = dispatch
        self.head_timeout = head_timeout  # the client preface must arrive within this
        self.body_timeout = body_timeout  # a call's request message must arrive within this of its headers
        self.idle_timeout = (
            idle_timeout  # a connection without calls and without bytes for this long is closed
        )
        self.max_connections = max(1, max_connections)
        # how often an established connection checks its timeouts: one timer per connection, none per call
        self.tick = max(0.05, min(body_timeout, idle_timeout) / 4)
        self.methods = methods  # the :path of every unary method served: others are refused at their headers
        self.max_message = max_message
        self.max_streams = max_streams
        self.connections: dict[H2Connection, None] = {}  # insertion order: oldest first
        self._server: asyncio.AbstractServer | None = None
        # stream window: a request up to the size limit (plus framing) never waits for a window update
        self.stream_window = min(MAX_WINDOW, max(65535, max_message + 5 + MAX_FRAME))
        settings = b"".join(
            _SETTING.pack(k, v)
            for k, v in (
                (0x3, max_streams),  # MAX_CONCURRENT_STREAMS
                (0x4, self.stream_window),  # INITIAL_WINDOW_SIZE
            )
        )
        self.preface = frame(SETTINGS, 0, 0, settings) + frame(
            WINDOW_UPDATE, 0, 0, _U32.pack(CONN_WINDOW - 65535)
        )

    async def start(self, sock: Any) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: H2Connection(self), sock=sock)

    async def stop(self, grace: float) -> None:
        """Stop accepting, tell every client to go away, let calls in flight finish (up to ``grace`` seconds)."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.go_away(NO_ERROR)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while any(c.busy for c in self.connections) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.close()


class H2Connection(asyncio.Protocol):
    """The server side of one HTTP/2 connection carrying gRPC unary calls."""

    def __init__(self, server: H2Server) -> None:
        self.server = server
        self.transport: Any = None
        self.buf = b""
        self.started = False  # the client preface arrived
        self.streams: dict[int, Call] = {}
        self.last_sid = 0
        self.cont: Call | None = None  # the stream whose header block continues in CONTINUATION frames
        self.send_window = 65535
        self.peer_window = 65535  # the peer's SETTINGS_INITIAL_WINDOW_SIZE
        self.peer_frame = 16384  # the peer's SETTINGS_MAX_FRAME_SIZE
        self.received = 0  # DATA bytes consumed since the last connection WINDOW_UPDATE
        self.blocked: list[Call] = []  # calls with response data waiting for the peer's window
        self.going_away = False
        self.closed = False
        self.out: list[bytes] | None = None  # writes held until the end of this loop iteration (see _write)
        from hpack import Decoder

        self.decoder = Decoder()
        self.heads: dict[bytes, Head] = {}  # header blocks that leave the HPACK table as it is -> their Head
        self.timer: asyncio.TimerHandle | None = None  # the connection's timeout check (see _check_timeouts)
        self.last_active = 0.0  # loop time of the last bytes received
        self._clock: Callable[[], float] = lambda: 0.0

    # -- asyncio.Protocol --------------------------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        server = self.server
        if len(server.connections) >= server.max_connections:
            idle = next((c for c in server.connections if not c.busy), None)
            if idle is None:  # every connection has calls in flight: this one cannot be served
                log.warning(
                    "gRPC: --max-connections (%d) reached, none idle: refusing one", server.max_connections
                )
                self.closed = True
                transport.close()
                return
            idle.go_away(NO_ERROR, "making room for a new connection (--max-connections)")
            idle.close()
        server.connections[self] = None
        loop = asyncio.get_running_loop()
        self._clock = loop.time
        self.last_active = loop.time()
        self.timer = loop.call_later(server.head_timeout, self._check_timeouts)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.server.connections.pop(self, None)
        for call in self.streams.values():
            self._forget(call)
        self.streams.clear()
        self.blocked.clear()

    def data_received(self, data: bytes) -> None:
        self.last_active = self._clock()
        if self.buf:
            data = self.buf + data
            self.buf = b""
        i = 0
        n = len(data)
        if not self.started:
            if n < len(PREFACE):
                if PREFACE.startswith(data):
                    self.buf = data
                    return
            elif data.startswith(PREFACE):
                self.started = True
                i = len(PREFACE)
                # ours goes after the client's: an HTTP/1.1 client gets plain text only
                self.transport.write(self.server.preface)
            if not self.started:
                self._not_http2()
                return
        try:
            while n - i >= 9 and not self.closed:
                word, flags, sid = _FRAME.unpack_from(data, i)
                length = word >> 8
                if length > MAX_FRAME:
                    raise _ConnectionError(FRAME_SIZE_ERROR, f"frame of {length} bytes")
                end = i + 9 + length
                if end > n:
                    break
                payload = data[i + 9 : end]
                i = end
                ftype = word & 0xFF
                sid &= 0x7FFFFFFF
                if self.cont is not None and (ftype != CONTINUATION or sid != self.cont.sid):
                    raise _ConnectionError(PROTOCOL_ERROR, "expected a CONTINUATION frame")
                if ftype == DATA:
                    self._data(sid, flags, payload)
                elif ftype == HEADERS:
                    self._headers(sid, flags, payload)
                elif ftype == CONTINUATION:
                    self._continuation(flags, payload)
                elif ftype == SETTINGS:
                    self._settings(flags, payload)
                elif ftype == WINDOW_UPDATE:
                    self._window_update(sid, payload)
                elif ftype == PING:
                    if sid or length != 8:
                        raise _ConnectionError(PROTOCOL_ERROR, "bad PING")
                    if not flags & ACK:
                        self._write(frame(PING, ACK, 0, payload))
                elif ftype == RST_STREAM:
                    call = self.streams.pop(sid, None)
                    if call is not None:
                        self._forget(call)
                elif ftype == GOAWAY:
                    self.going_away = True
                    if not self.busy:
                        self.close()
                        return
                elif ftype == PUSH_PROMISE:
                    raise _ConnectionError(PROTOCOL_ERROR, "a client cannot push")
                # PRIORITY and unknown frame types: ignored
        except _ConnectionError as exc:
            log.debug("gRPC connection error: %s", exc.detail)
            self.go_away(exc.code, exc.detail)
            self.close()
            return
        if i < n:
            self.buf = data[i:]

    # -- frames ------------------------------------------------------------------------------------------------
    def _headers(self, sid: int, flags: int, payload: bytes) -> None:
        if sid == 0 or not sid & 1:
            raise _ConnectionError(PROTOCOL_ERROR, "HEADERS on an even stream id")
        if flags & PADDED:
            pad = payload[0] if payload else 256
            if pad >= len(payload):
                raise _ConnectionError(PROTOCOL_ERROR, "bad padding")
            payload = payload[1 : len(payload) - pad]
        if flags & PRIORITY_FLAG:
            payload = payload[5:]
        call = self.streams.get(sid)
        if call is None:
            if sid <= self.last_sid:  # trailers for a stream we already closed: decode to keep HPACK in step
                call = Call(self, sid, 0)
                call.answered = True
            else:
                self.last_sid = sid
                call = Call(self, sid, self.peer_window)
                if self.going_away or len(self.streams) >= self.server.max_streams:
                    call.answered = True
                    self._write(frame(RST_STREAM, 0, sid, _U32.pack(REFUSED_STREAM)))
                else:
                    self.streams[sid] = call
        if flags & END_HEADERS:
            self._header_block(call, payload, flags & END_STREAM)
        else:
            call.block = bytearray(payload)
            call.end_after_headers = bool(flags & END_STREAM)
            self.cont = call

    def _continuation(self, flags: int, payload: bytes) -> None:
        call = self.cont
        if call is None or call.block is None:
            raise _ConnectionError(PROTOCOL_ERROR, "CONTINUATION without HEADERS")
        call.block += payload
        if len(call.block) > 65536:
            raise _ConnectionError(PROTOCOL_ERROR, "header block over 64 KiB")
        if flags & END_HEADERS:
            block, call.block, self.cont = bytes(call.block), None, None
            self._header_block(call, block, call.end_after_headers)

    def _header_block(self, call: Call, block: bytes, end_stream: int) -> None:
        head = self.heads.get(block)
        if head is None:
            from hpack import HPACKError

            table = self.decoder.header_table
            entries = table.dynamic_entries
            before = (len(entries), entries[0] if entries else None, table.maxsize)
            try:
                headers = self.decoder.decode(block, raw=True)
            except HPACKError as exc:
                raise _ConnectionError(COMPRESSION_ERROR, f"header block: {exc}") from None
            head = Head(headers)
            entries = table.dynamic_entries
            if (len(entries), entries[0] if entries else None, table.maxsize) == before and (
                not entries or entries[0] is before[1]
            ):
                # decoding left the dynamic table as it was (indexed fields, literals without indexing): the same
                # bytes mean the same headers until a block that changes the table arrives
                if len(self.heads) < 64:
                    self.heads[block] = head
            elif self.heads:
                self.heads.clear()
        if call.head is None:
            call.head = head
            if not call.answered:
                self._check_head(call, head)
        if end_stream:
            self._end(call)

    def _check_head(self, call: Call, head: Head) -> None:
        if head.method != b"POST":
            self._http_refusal(call, b"405")
        elif head.content_type is None or not head.content_type.startswith(b"application/grpc"):
            self._http_refusal(call, b"415")
        elif head.path not in self.server.methods:
            path = (head.path or b"").decode("latin-1")
            call.fail(
                UNIMPLEMENTED, f"method {path!r} is not served (served: unary calls of the inference service)"
            )
        elif head.encoding not in (None, b"identity", b"gzip", b"deflate"):
            call.fail(
                UNIMPLEMENTED,
                f"grpc-encoding {head.encoding.decode('latin-1')!r} is not supported; use identity, gzip or deflate",
            )
        elif head.timeout is not None:
            call.timer = asyncio.get_running_loop().call_later(head.timeout, self._expire, call)

    def _data(self, sid: int, flags: int, payload: bytes) -> None:
        if sid == 0:
            raise _ConnectionError(PROTOCOL_ERROR, "DATA on stream 0")
        self.received += len(payload)  # the whole frame payload (padding included) counts
        if self.received >= CONN_WINDOW // 2:
            self._write(frame(WINDOW_UPDATE, 0, 0, _U32.pack(self.received)))
            self.received = 0
        call = self.streams.get(sid)
        if call is None:
            return  # a stream we already answered or reset: its data is dropped (the window still counts)
        if flags & PADDED:
            pad = payload[0] if payload else 256
            if pad >= len(payload):
                raise _ConnectionError(PROTOCOL_ERROR, "bad padding")
            payload = payload[1 : len(payload) - pad]
        if not call.answered:
            body = call.body
            body += payload
            if len(body) >= 5:
                size = _U32.unpack_from(body, 1)[0]
                limit = self.server.max_message
                if size > limit:
                    call.fail(
                        RESOURCE_EXHAUSTED,
                        f"request message of {size} bytes exceeds the limit of {limit} bytes (--max-body-bytes)",
                    )
                    call.body = bytearray()
                elif len(body) > size + 5:
                    call.fail(INVALID_ARGUMENT, "a unary call carries exactly one request message")
                    call.body = bytearray()
        if flags & END_STREAM:
            self._end(call)

    def _end(self, call: Call) -> None:
        """The client finished sending: run the call (or drop the stream if it was answered already)."""
        call.remote_closed = True
        if call.answered:
            if call.pending is None:
                self.streams.pop(call.sid, None)
            return
        body = call.body
        call.body = bytearray()
        if len(body) < 5 or len(body) != 5 + _U32.unpack_from(body, 1)[0]:
            call.fail(INVALID_ARGUMENT, "the call carries no complete request message")
            return
        message = bytes(body[5:])
        if body[0]:
            encoding = call.head.encoding if call.head is not None else None
            if encoding in (None, b"identity"):
                call.fail(INVALID_ARGUMENT, "the message is flagged compressed but grpc-encoding is identity")
                return
            message = self._inflate(
                call, message, 16 + zlib.MAX_WBITS if encoding == b"gzip" else zlib.MAX_WBITS
            )
            if message is None:
                return
        self.server.dispatch(call, message)

    def _inflate(self, call: Call, data: bytes, wbits: int) -> bytes | None:
        limit = self.server.max_message
        z = zlib.decompressobj(wbits)
        try:
            out = z.decompress(data, limit + 1)
        except zlib.error as exc:
            call.fail(INVALID_ARGUMENT, f"the compressed message cannot be inflated: {exc}")
            return None
        if len(out) > limit:
            call.fail(
                RESOURCE_EXHAUSTED,
                f"the decompressed request message exceeds the limit of {limit} bytes (--max-body-bytes)",
            )
            return None
        return out

    def _settings(self, flags: int, payload: bytes) -> None:
        if flags & ACK:
            return
        if len(payload) % 6:
            raise _ConnectionError(FRAME_SIZE_ERROR, "SETTINGS length")
        for k in range(0, len(payload), 6):
            key, value = _SETTING.unpack_from(payload, k)
            if key == 0x4:  # INITIAL_WINDOW_SIZE: applies to every open stream
                if value > MAX_WINDOW:
                    raise _ConnectionError(FLOW_CONTROL_ERROR, "initial window too large")
                delta = value - self.peer_window
                self.peer_window = value
                for call in self.streams.values():
                    call.send_window += delta
            elif key == 0x5:
                if not 16384 <= value <= 16777215:
                    raise _ConnectionError(PROTOCOL_ERROR, "bad MAX_FRAME_SIZE")
                self.peer_frame = value
        self._write(frame(SETTINGS, ACK, 0))
        if self.blocked:
            self._flush_blocked()

    def _window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ConnectionError(FRAME_SIZE_ERROR, "WINDOW_UPDATE length")
        inc = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if sid == 0:
            self.send_window += inc
            if self.send_window > MAX_WINDOW:
                raise _ConnectionError(FLOW_CONTROL_ERROR, "window over 2^31-1")
        else:
            call = self.streams.get(sid)
            if call is None:
                return
            call.send_window += inc
        if self.blocked:
            self._flush_blocked()

    # -- sending -----------------------------------------------------------------------------------------------
    def send_response(self, call: Call, data: bytes) -> None:
        self._answered(call)
        if self.closed:
            return
        sid = call.sid
        size = len(data)
        if (
            not self.blocked
            and size <= self.send_window
            and size <= call.send_window
            and size <= self.peer_frame
        ):
            self.send_window -= size
            call.send_window -= size
            self._write(
                frame(HEADERS, END_HEADERS, sid, RESPONSE_HEAD)
                + frame(DATA, 0, sid, data)
                + frame(HEADERS, END_STREAM | END_HEADERS, sid, TRAILERS_OK)
            )
            self._done(call)
            return
        self._write(frame(HEADERS, END_HEADERS, sid, RESPONSE_HEAD))
        call.pending = [memoryview(data), TRAILERS_OK]
        self.blocked.append(call)
        self._flush_blocked()

    def send_trailers_only(self, call: Call, block: bytes) -> None:
        self._answered(call)
        if self.closed:
            return
        self._write(frame(HEADERS, END_STREAM | END_HEADERS, call.sid, block))
        self._done(call)

    def _http_refusal(self, call: Call, status: bytes) -> None:
        self._answered(call)
        if self.closed:
            return
        block = b"\x08" + _hpack_int(len(status), 7) + status  # ':status' (static name 8), literal value
        self._write(frame(HEADERS, END_STREAM | END_HEADERS, call.sid, block))
        self._done(call)

    def _flush_blocked(self) -> None:
        still: list[Call] = []
        out: list[bytes] = []
        for call in self.blocked:
            if call.pending is None:
                continue
            data = call.pending[0]
            while data and self.send_window > 0 and call.send_window > 0:
                size = min(len(data), self.send_window, call.send_window, self.peer_frame)
                out.append(frame(DATA, 0, call.sid, bytes(data[:size])))
                data = data[size:]
                self.send_window -= size
                call.send_window -= size
            if data:
                call.pending[0] = data
                still.append(call)
            else:
                out.append(frame(HEADERS, END_STREAM | END_HEADERS, call.sid, call.pending[1]))
                call.pending = None
                self._done(call, out)
        self.blocked = still
        if out and not self.closed:
            self._write(b"".join(out))
        if self.going_away and not self.busy:
            self.close()

    def _answered(self, call: Call) -> None:
        call.answered = True
        call.body = bytearray()
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None

    def _done(self, call: Call, out: list[bytes] | None = None) -> None:
        """The response is fully sent: close the stream (asking the client to stop sending if it has not ended)."""
        if call.pending is not None:
            return
        if not call.remote_closed and self.streams.get(call.sid) is call:
            rst = frame(RST_STREAM, 0, call.sid, _U32.pack(NO_ERROR))
            if out is not None:
                out.append(rst)
            else:
                self._write(rst)
        self.streams.pop(call.sid, None)
        if self.going_away and not self.busy:
            self.close()

    def _expire(self, call: Call) -> None:
        call.timer = None
        if not call.answered and not self.closed:
            call.fail(DEADLINE_EXCEEDED, "deadline exceeded (grpc-timeout)")

    @staticmethod
    def _forget(call: Call) -> None:
        """The client reset the stream (or went away): whatever the call produces later is dropped."""
        call.answered = True
        call.pending = None
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None

    # -- connection ------------------------------------------------------------------------------------------
    def _check_timeouts(self) -> None:
        """The connection's one timer: the preface deadline, then every ``tick`` the body and idle timeouts."""
        self.timer = None
        if self.closed:
            return
        server = self.server
        if not self.started:  # no client preface within --header-timeout
            self.close()
            return
        now = self._clock()
        for call in list(self.streams.values()):
            if not call.remote_closed and not call.answered and now - call.t0 > server.body_timeout:
                call.fail(
                    DEADLINE_EXCEEDED,
                    f"the request message did not arrive within {server.body_timeout:g} s of its headers "
                    "(--body-timeout)",
                )
        if not self.busy and now - self.last_active >= server.idle_timeout:
            self.go_away(NO_ERROR, "idle (--keep-alive)")
            self.close()
            return
        self.timer = asyncio.get_running_loop().call_later(server.tick, self._check_timeouts)

    @property
    def busy(self) -> bool:
        return bool(self.streams) or bool(self.blocked)

    def go_away(self, code: int, detail: str = "") -> None:
        if self.closed:
            return
        self.going_away = True
        self._write(frame(GOAWAY, 0, 0, _U32.pack(self.last_sid) + _U32.pack(code) + detail.encode()[:200]))

    def close(self) -> None:
        if not self.closed:
            self._flush_out()
            self.closed = True
            self.transport.close()

    def _write(self, data: bytes) -> None:
        """Write now, or, while other calls of this connection are in flight (their answers are likely to come
        in this same loop iteration, from one batch), hold the bytes and write them all at once when the
        iteration's callbacks are done: one send() for many responses. Every write goes through here, so frames
        keep their order."""
        out = self.out
        if out is not None:
            out.append(data)
        elif len(self.streams) > 1:
            self.out = [data]
            asyncio.get_running_loop().call_soon(self._flush_out)
        else:
            self.transport.write(data)

    def _flush_out(self) -> None:
        out, self.out = self.out, None
        if out and not self.closed:
            self.transport.write(b"".join(out))

    def _not_http2(self) -> None:
        msg = b"this port serves gRPC (HTTP/2 with prior knowledge); send REST requests to the server's --port\n"
        self.transport.write(
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(msg), msg)
        )
        self.close()


class _ConnectionError(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail

"""WebSocket over the HTTP server, driven by the ``websockets`` client library (and raw
frames where a client library will not send a bad one) over loopback."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
import threading

import pytest
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import fibernet as fn
from fibernet.http import Response, WebSocketClosed
from fibernet.server.http import http_handler
from fibernet.testing import serve

pytestmark = pytest.mark.timeout(30)


def url(server, path: str = "/") -> str:
    host, port = server.address[:2]
    return f"ws://{host}:{port}{path}"


def echo(request):
    ws = request.accept_websocket()
    for message in ws:
        ws.send(message)


@pytest.fixture
def echo_server():
    with serve(echo, "http") as server:
        yield server


def test_echo_text_and_binary(echo_server):
    with connect(url(echo_server)) as ws:
        ws.send("héllo")
        assert ws.recv(timeout=5) == "héllo"
        ws.send(b"\x00\x01\xff")
        assert ws.recv(timeout=5) == b"\x00\x01\xff"
        big = os.urandom(200_000)
        ws.send(big)
        assert ws.recv(timeout=5) == big


def test_fragmented_messages_are_joined(echo_server):
    with connect(url(echo_server), compression=None) as ws:
        ws.send(["frag", "mented ", "text"])
        assert ws.recv(timeout=5) == "fragmented text"
        ws.send([b"a" * 1000, b"b" * 70_000, b"c"])
        assert ws.recv(timeout=5) == b"a" * 1000 + b"b" * 70_000 + b"c"


def test_permessage_deflate_is_negotiated(echo_server):
    with connect(url(echo_server), compression="deflate") as ws:
        assert "permessage-deflate" in (ws.response.headers.get("Sec-WebSocket-Extensions") or "")
        ws.send("x" * 100_000)
        assert ws.recv(timeout=5) == "x" * 100_000


def test_client_ping_gets_a_pong(echo_server):
    with connect(url(echo_server)) as ws:
        pong = ws.ping(b"are you there")
        assert pong.wait(5)


def test_close_codes_both_ways():
    seen: list = []

    def app(request):
        ws = request.accept_websocket()
        first = ws.recv()
        if first == "close me":
            ws.close(4001, "as asked")
            return
        try:
            ws.recv()
        except WebSocketClosed as closed:
            seen.append((closed.code, closed.reason))

    with serve(app, "http") as server:
        with connect(url(server)) as ws:
            ws.send("close me")
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=5)
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "as asked")
        with connect(url(server)) as ws:
            ws.send("wait")
            ws.close(4000, "bye")
            assert ws.close_code == 4000  # the server replied to the close
        for _ in range(100):
            if seen:
                break
            fn.run(fn.sleep, 0.01)
        assert seen == [(4000, "bye")]


def test_a_close_code_no_endpoint_may_send_is_refused():
    refused: list = []

    def app(request):
        ws = request.accept_websocket()
        for code in (999, 1005, 1006, 2000, 5000):
            try:
                ws.close(code)
            except ValueError as exc:
                refused.append(code)
                assert str(code) in str(exc)
        ws.close(4999, "fine")

    with serve(app, "http") as server, connect(url(server)) as ws:
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
        assert info.value.rcvd.code == 4999
    assert refused == [999, 1005, 1006, 2000, 5000]


def test_app_return_closes_with_1000_and_error_with_1011():
    def app(request):
        ws = request.accept_websocket()
        if ws.recv() == "fail":
            raise RuntimeError("boom")
        ws.send("done")

    with serve(app, "http") as server:
        with connect(url(server)) as ws:
            ws.send("ok")
            assert ws.recv(timeout=5) == "done"
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=5)
            assert info.value.rcvd.code == 1000
        with connect(url(server)) as ws:
            ws.send("fail")
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=5)
            assert info.value.rcvd.code == 1011


def test_message_over_the_limit_closes_with_1009():
    with serve(echo, "http", ws_max_size=1000) as server:
        with connect(url(server), compression=None) as ws:
            ws.send("y" * 1000)
            assert ws.recv(timeout=5) == "y" * 1000
            ws.send(["y" * 600, "y" * 600])  # over the limit in pieces
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=5)
            assert info.value.rcvd.code == 1009


def test_compressed_message_over_the_limit_closes_with_1009():
    with serve(echo, "http", ws_max_size=10_000) as server:
        with connect(url(server), compression="deflate", max_size=None) as ws:
            ws.send("z" * 50_000)  # a few hundred bytes on the wire
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=5)
            assert info.value.rcvd.code == 1009


# -- raw frames: what a well-behaved client library never sends ---------------------------


def _handshake(address) -> socket.socket:
    sock = socket.create_connection(address[:2], timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _frame(opcode: int, payload: bytes, masked: bool = True, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    mask = os.urandom(4) if masked else b""
    length = len(payload)
    head = bytes([first, (0x80 if masked else 0) | length]) if length < 126 else \
        bytes([first, (0x80 if masked else 0) | 126]) + struct.pack("!H", length)
    if masked:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + payload


def _read_frame(sock: socket.socket) -> tuple[int, bytes]:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError(f"closed after {data!r}")
            data += chunk
        return data

    first, second = exactly(2)
    length = second & 0x7F
    if length == 126:
        length = struct.unpack("!H", exactly(2))[0]
    return first & 0x0F, exactly(length)


def _close_code(sock: socket.socket) -> int:
    while True:
        opcode, payload = _read_frame(sock)
        if opcode == 0x8:
            return struct.unpack("!H", payload[:2])[0]


def test_frames_sent_with_the_upgrade_request_reach_the_websocket(echo_server):
    # A client may send frames right behind its upgrade request, before the 101 comes (and
    # TCP may hand them over in the same read): they are the WebSocket's, not HTTP's.
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    with socket.create_connection(echo_server.address[:2], timeout=5) as sock:
        sock.sendall(request + _frame(0x1, b"first") + _frame(0x2, b"second"))
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        assert _read_frame(sock) == (0x1, b"first")
        assert _read_frame(sock) == (0x2, b"second")


def test_unmasked_client_frame_closes_with_1002(echo_server):
    with _handshake(echo_server.address) as sock:
        sock.sendall(_frame(0x1, b"hello", masked=False))
        assert _close_code(sock) == 1002


def test_invalid_utf8_text_closes_with_1007(echo_server):
    with _handshake(echo_server.address) as sock:
        sock.sendall(_frame(0x1, b"\xff\xfe bad"))
        assert _close_code(sock) == 1007


def test_raw_echo_and_the_server_closes_after_the_handshake(echo_server):
    with _handshake(echo_server.address) as sock:
        sock.sendall(_frame(0x1, b"raw"))
        assert _read_frame(sock) == (0x1, b"raw")
        sock.sendall(_frame(0x8, struct.pack("!H", 1000)))
        assert _read_frame(sock)[0] == 0x8
        assert sock.recv(10) == b""  # then the server ends the TCP connection


def test_a_close_the_peer_never_answers_is_cut_at_the_deadline():
    closed = threading.Event()

    def app(request):
        ws = request.accept_websocket()
        ws.close(1001, "going away")  # the peer never replies: close() gives up at the deadline
        closed.set()

    with serve(app, "http", ws_close_timeout=0.3) as server:
        with _handshake(server.address) as sock:
            assert _close_code(sock) == 1001
            assert sock.recv(10) == b""  # cut, without our close reply
            assert closed.wait(5)


def test_silent_peer_is_pinged_then_dropped():
    with serve(echo, "http", ws_ping_interval=0.2, ws_ping_timeout=0.2) as server:
        with _handshake(server.address) as sock:
            opcode, payload = _read_frame(sock)
            assert opcode == 0x9  # a ping, since we said nothing
            # ... and no answer: the server gives up (1011 if the close frame gets out)
            assert _close_code(sock) == 1011
            assert sock.recv(10) == b""


def test_answering_pings_keeps_the_connection():
    with serve(echo, "http", ws_ping_interval=0.1, ws_ping_timeout=0.2) as server:
        with _handshake(server.address) as sock:
            for _ in range(3):
                opcode, payload = _read_frame(sock)
                assert opcode == 0x9
                sock.sendall(_frame(0xA, payload))
            sock.sendall(_frame(0x1, b"still here"))
            while (frame := _read_frame(sock))[0] == 0x9:
                pass
            assert frame == (0x1, b"still here")


# -- the HTTP side -----------------------------------------------------------------------


def _http(address, request: bytes) -> bytes:
    with socket.create_connection(address[:2], timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


def test_not_an_upgrade_gets_400(echo_server):
    reply = _http(echo_server.address, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert b"not a WebSocket upgrade" in reply


def test_upgrade_without_a_key_gets_400(echo_server):
    reply = _http(
        echo_server.address,
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert b"Sec-WebSocket-Key" in reply


def test_an_upgrade_the_app_does_not_take_is_answered_normally():
    with serve(lambda request: Response.text("plain " + request.path), "http") as server:
        reply = _http(
            server.address,
            b"GET /up HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            b"GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert b"plain /up" in reply and reply.endswith(b"plain /next")  # and the connection goes on


# -- recv_op in a choice --------------------------------------------------------------------


def test_recv_op_in_a_choice_with_a_timeout_and_a_channel():
    news: fn.Channel = fn.Channel(capacity=10)

    def app(request):
        ws = request.accept_websocket()
        while True:
            got = fn.perform(
                fn.choice(
                    fn.wrap(ws.recv_op(), lambda m: ("ws", m)),
                    fn.wrap(news.get_op(), lambda m: ("news", m)),
                    fn.wrap(fn.wait_op(0.3), lambda: ("idle", None)),
                )
            )
            if got[0] == "idle":
                ws.send("idle")
            elif got[1] == "publish":
                news.put("news!")
            elif got[1] == "bye":
                return
            else:
                ws.send(f"{got[0]}:{got[1]}")

    with serve(app, "http") as server:
        with connect(url(server)) as ws:
            ws.send("hello")
            assert ws.recv(timeout=5) == "ws:hello"
            ws.send("publish")
            assert ws.recv(timeout=5) == "news:news!"
            assert ws.recv(timeout=5) == "idle"  # nothing for 0.3 s
            ws.send("after idle")  # a message that came while the choice lost is not lost
            assert ws.recv(timeout=5) == "ws:after idle"
            ws.send("bye")
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=5)


def test_push_only_app_sees_the_close():
    """The reader fiber answers the peer's close while the app only sends."""
    ended = threading.Event()

    def app(request):
        ws = request.accept_websocket()
        try:
            while True:
                ws.send("tick")
                fn.sleep(0.01)
        except WebSocketClosed as closed:
            assert closed.code == 1000
            ended.set()

    with serve(app, "http") as server:
        with connect(url(server)) as ws:
            assert ws.recv(timeout=5) == "tick"
        assert ended.wait(5)


# -- many at once ------------------------------------------------------------------------------


def test_1000_concurrent_websockets(nofile):
    count = 1000

    async def one(address, i, opened):
        async with aconnect(address, open_timeout=20, ping_interval=None, compression=None) as ws:
            opened.append(i)
            await ws.send(f"hi {i}")
            assert await ws.recv() == f"hi {i}"
            await asyncio.sleep(0)
            await ws.send(b"%d" % i)
            return await ws.recv()

    async def main(address):
        opened: list[int] = []
        sem = asyncio.Semaphore(250)  # bounded connect rate; all stay open together

        async def gated(i):
            async with sem:
                pass
            return await one(address, i, opened)

        return await asyncio.wait_for(asyncio.gather(*(gated(i) for i in range(count))), 50)

    with serve(echo, "http", threads=2) as server:
        results = asyncio.run(main(url(server)))
    assert results == [b"%d" % i for i in range(count)]


def test_a_deflate_bomb_is_refused_without_inflating_it_whole():
    """100 MB of zeros, ~100 KB compressed: closed with 1009, and the server never holds more
    than a few MB of it inflated (wsproto inflates what it is fed, so it is fed little)."""
    import tracemalloc
    import zlib

    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(1 << 20)
    compressed = b"".join(squeeze.compress(zeros) for _ in range(100)) + squeeze.flush(zlib.Z_SYNC_FLUSH)
    compressed = compressed[:-4]  # (RFC 7692: the sync flush's 00 00 ff ff is left off)
    mask = os.urandom(4)
    head = bytes([0xC2, 0x80 | 127]) + struct.pack("!Q", len(compressed)) + mask  # FIN, RSV1, binary
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(compressed))

    with serve(echo, "http", ws_max_size=1 << 20) as server:
        sock = socket.create_connection(server.address[:2], timeout=5)
        with sock:
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall(
                f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n".encode()
            )
            reply = b""
            while b"\r\n\r\n" not in reply:
                reply += sock.recv(1)
            assert b"permessage-deflate" in reply
            tracemalloc.start()
            try:
                with contextlib.suppress(OSError):  # (the server may close before taking it all)
                    sock.sendall(head + payload)
                assert _close_code(sock) == 1009
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
    assert peak < 24 * 1024 * 1024, f"{peak / 1e6:.0f} MB inflated at once"


def test_a_draining_server_closes_websockets_with_1001():
    ended: list = []

    def app(request):
        ws = request.accept_websocket()
        try:
            for message in ws:
                ws.send(message)
        finally:
            ended.append(ws.close_code)

    server = fn.Server(http_handler(app), "127.0.0.1", 0, threads=2).start()
    try:
        with contextlib.ExitStack() as stack:
            clients = [stack.enter_context(connect(url(server))) for _ in range(4)]  # (both schedulers)
            for ws in clients:
                ws.send("up")
                assert ws.recv(timeout=5) == "up"
            server.stop(30)  # a long grace: only the WebSockets' closes end it early
            for ws in clients:
                with pytest.raises(ConnectionClosed) as info:
                    ws.recv(timeout=10)
                assert info.value.rcvd.code == 1001
        assert server.wait(10), "the server waited for its grace period"
    finally:
        server.stop(0)
        server.wait()
    assert ended == [1001] * 4


def test_a_peer_that_does_not_read_is_cut_at_the_send_deadline():
    """Pings off; the peer sends but never reads, so the server's send blocks, and the reader
    wakes meanwhile (which clears the stream's wait deadline): the send is still cut."""
    ended = threading.Event()
    codes: list = []

    def app(request):
        ws = request.accept_websocket()
        try:
            while True:
                ws.send(b"x" * 65536)
        except WebSocketClosed as closed:
            codes.append(closed.code)
            ended.set()

    with serve(app, "http", ws_ping_interval=None, send_timeout=0.5) as server:
        with _handshake(server.address) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            with contextlib.suppress(OSError):  # (until the server cuts the connection)
                while not ended.wait(0.02):
                    sock.sendall(_frame(0x1, b"still sending, never reading"))
            assert ended.wait(10), "the server's send was never cut"
    assert codes == [1006]

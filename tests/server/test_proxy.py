"""The proxy in front (fibernet/server/proxy.py): PROXY protocol v1 and v2 on TCP and HTTP
listeners (and before TLS), and X-Forwarded-For/-Proto and Forwarded from trusted peers only.
(The real HAProxy in front: tests/deploy/test_haproxy.py.)"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import struct
import time

import pytest

from fibernet.http import Headers, Request, Response
from fibernet.net.tls import TLSConfig
from fibernet.server import http_server
from fibernet.server.proxy import V2_SIGNATURE, ForwardedPolicy, ProxyHeaderError, parse_proxy_header

from ..tls_support import make_certs
from ._support import recv_until_eof

pytestmark = pytest.mark.timeout(30)


def v2(src: str, sport: int, dport: int = 80, command: int = 1, tlv: bytes = b"") -> bytes:
    """A PROXY v2 header as HAProxy's send-proxy-v2 writes it (TCP over IPv4 or IPv6)."""
    ip = ipaddress.ip_address(src)
    family = 0x11 if ip.version == 4 else 0x21
    dst = ipaddress.ip_address("127.0.0.1" if ip.version == 4 else "::1")
    body = ip.packed + dst.packed + struct.pack("!HH", sport, dport) + tlv
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


# -- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 8000\r\nGET", (45, ("203.0.113.7", 51234))),
        (b"PROXY TCP6 2001:db8::1 ::1 443 8000\r\n", (37, ("2001:db8::1", 443))),
        (b"PROXY UNKNOWN\r\n", (15, None)),
        (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", (35, None)),
        (v2("198.51.100.9", 40000) + b"rest", (28, ("198.51.100.9", 40000))),
        (v2("2001:db8::9", 4711), (52, ("2001:db8::9", 4711))),
        (v2("198.51.100.9", 1, tlv=b"\x05\x00\x02ab"), (33, ("198.51.100.9", 1))),  # a TLV skipped
        (v2("198.51.100.9", 1, command=0), (28, None)),  # LOCAL: HAProxy's own health check
        (V2_SIGNATURE + b"\x21\x00\x00\x00", (16, None)),  # PROXY, UNSPEC: keep the peer's
    ],
)
def test_parse_complete_headers(data, expected):
    assert parse_proxy_header(data) == expected


@pytest.mark.parametrize(
    "data",
    [
        b"", b"PRO", b"PROXY TCP4 1.2.3.4", V2_SIGNATURE[:5], V2_SIGNATURE + b"\x21\x11\x00",
        v2("1.2.3.4", 5)[:27],
    ],
)
def test_parse_incomplete_headers_ask_for_more(data):
    assert parse_proxy_header(data) is None


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00",  # a TLS ClientHello
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 ::1 ::1 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 " + b"1" * 120,
        V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12),  # version 3
        V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12),  # command 2
        V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4),  # IPv4 addresses in 4 bytes
        V2_SIGNATURE + b"\x21\x51\x00\x00",  # family 5
    ],
)
def test_parse_malformed_headers_raise(data):
    with pytest.raises(ProxyHeaderError):
        parse_proxy_header(data)


# -- on a listener ------------------------------------------------------------------------------


def tell_peer(conn) -> None:
    """A TCP handler: say who the peer is, then echo what follows (proves no byte was lost)."""
    host, port = conn.getpeername()[:2]
    conn.sendall(f"{host} {port}\n".encode())
    while data := conn.recv(65536):
        conn.sendall(data)


def exchange(port: int, *pieces: bytes) -> bytes:
    """Send the pieces, then all that comes back; b"" if the server closed (or reset: it
    closed with our bytes unread; or it closed before our last send: a broken pipe) without
    a word."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            for piece in pieces:
                sock.sendall(piece)
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError as exc:  # ENOTCONN: the server reset it already (what it sent is
                if exc.errno != errno.ENOTCONN:  # still read below, if anything)
                    raise
            return recv_until_eof(sock)
        except (ConnectionResetError, BrokenPipeError):
            return b""
        except OSError as exc:
            if exc.errno == errno.ENOTCONN:
                return b""
            raise


def test_tcp_handler_sees_the_client_of_a_v1_or_v2_header(servers):
    port = servers(tell_peer, proxy_protocol=True).address[1]
    header = b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 8000\r\n"
    assert exchange(port, header + b"payload") == b"203.0.113.7 51234\npayload"
    assert exchange(port, v2("2001:db8::9", 4711) + b"payload") == b"2001:db8::9 4711\npayload"
    # A header in pieces, and the client's bytes right behind it in the same segment.
    header = v2("198.51.100.1", 9)
    assert exchange(port, header[:7], header[7:20], header[20:] + b"x") == b"198.51.100.1 9\nx"
    # LOCAL (a health check): the real peer.
    assert exchange(port, v2("1.2.3.4", 5, command=0)).startswith(b"127.0.0.1 ")


def test_a_missing_or_malformed_header_closes_that_connection_only(servers, caplog):
    caplog.set_level(logging.INFO, logger="fibernet.server")
    port = servers(tell_peer, proxy_protocol=True).address[1]
    assert exchange(port, b"hello without a header\n") == b""
    assert exchange(port, b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n") == b""
    assert exchange(port, b"PROX") == b""  # the client ended inside it
    failures = [r for r in caplog.records if "PROXY header from" in r.getMessage()]
    assert len(failures) == 3 and all(r.exc_info is None for r in failures), caplog.text
    assert exchange(port, b"PROXY TCP4 10.0.0.1 127.0.0.1 1 2\r\nok") == b"10.0.0.1 1\nok"


def test_a_header_that_does_not_come_is_cut_at_the_deadline(servers):
    port = servers(tell_peer, proxy_protocol=True, handshake_timeout=0.5).address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"PROXY TCP4 ")  # and then nothing
        try:
            assert sock.recv(100) == b""
        except ConnectionResetError:
            pass  # (closed with the bytes unread: a reset)
        waited = time.monotonic() - started
    assert 0.45 <= waited < 5, waited


def test_http_request_client_comes_from_the_header_even_before_tls(servers, tmp_path):
    certs = make_certs(tmp_path)

    def who(request):
        return Response(200, f"{request.scheme} {request.client[0]}:{request.client[1]}".encode())

    plain = http_server(who, proxy_protocol=True).start()
    tls = http_server(who, proxy_protocol=True, ssl=TLSConfig(certs.server_pem)).start()
    try:
        get = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        answer = exchange(plain.address[1], v2("192.0.2.44", 1234) + get)
        assert answer.endswith(b"http 192.0.2.44:1234")
        with socket.create_connection(("127.0.0.1", tls.address[1]), timeout=10) as raw:
            raw.sendall(b"PROXY TCP4 192.0.2.45 127.0.0.1 777 443\r\n")
            with certs.client_context().wrap_socket(raw, server_hostname="localhost") as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert recv_until_eof(sock).endswith(b"https 192.0.2.45:777")
    finally:
        for server in (plain, tls):
            server.stop(0)
            server.wait(10)


# -- X-Forwarded-For, X-Forwarded-Proto, Forwarded -----------------------------------------------


def request(peer: str, **fields: str) -> Request:
    headers = Headers([(name.replace("_", "-"), value) for name, value in fields.items()])
    return Request("GET", "/", headers, client=(peer, 5555))


def forwarded(policy: ForwardedPolicy, peer: str, **fields: str) -> tuple[str, object]:
    req = request(peer, **fields)
    if policy.trusts(req.client):
        policy.apply(req)
    return req.scheme, req.client


def test_x_forwarded_headers_from_a_trusted_peer_name_the_client_and_scheme():
    policy = ForwardedPolicy()  # 127.0.0.1, uvicorn's default
    assert forwarded(policy, "127.0.0.1", x_forwarded_for="203.0.113.5", x_forwarded_proto="https") == (
        "https", ("203.0.113.5", 0))
    # A chain: the right-most address that is not a trusted proxy is the client.
    chain = ForwardedPolicy("127.0.0.1, 10.0.0.0/8")
    assert forwarded(chain, "127.0.0.1", x_forwarded_for="198.51.100.1, 203.0.113.5, 10.1.2.3")[1] == (
        "203.0.113.5", 0)
    # Every hop trusted: the first one is the client.
    assert forwarded(chain, "127.0.0.1", x_forwarded_for="10.0.0.1, 10.0.0.2")[1] == ("10.0.0.1", 0)
    # "*": every peer trusted, the first address is the client.
    assert forwarded(ForwardedPolicy("*"), "192.0.2.1", x_forwarded_for="198.51.100.1, 203.0.113.5")[1] == (
        "198.51.100.1", 0)
    # A scheme that is not one: ignored.
    assert forwarded(policy, "127.0.0.1", x_forwarded_proto="gopher")[0] == "http"


def test_forwarded_field_rfc7239():
    policy = ForwardedPolicy(["127.0.0.1"])
    assert forwarded(policy, "127.0.0.1", forwarded='for=192.0.2.60;proto=https;by=203.0.113.43') == (
        "https", ("192.0.2.60", 0))
    assert forwarded(policy, "127.0.0.1", forwarded='for="[2001:db8:cafe::17]:4711", for=127.0.0.1')[1] == (
        "2001:db8:cafe::17", 0)
    assert forwarded(policy, "127.0.0.1", forwarded="for=192.0.2.60:8080")[1] == ("192.0.2.60", 0)


def test_headers_from_an_untrusted_peer_are_ignored():
    policy = ForwardedPolicy("10.0.0.1")
    fields = {"x_forwarded_for": "203.0.113.5", "x_forwarded_proto": "https", "forwarded": "for=1.2.3.4"}
    assert forwarded(policy, "127.0.0.1", **fields) == ("http", ("127.0.0.1", 5555))
    assert not policy.trusts(None)  # a Unix socket's peer: only with "*"
    assert ForwardedPolicy("*").trusts(None)


def test_http_server_applies_the_policy_per_connection(servers):
    def who(request):
        return Response(200, f"{request.scheme} {request.client[0]}".encode())

    def ask(port: int, **fields: str) -> bytes:
        head = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in fields.items())
        return exchange(port, f"GET / HTTP/1.1\r\nHost: x\r\n{head}Connection: close\r\n\r\n".encode())

    trusting = http_server(who, forwarded=ForwardedPolicy("127.0.0.1")).start()
    distrusting = http_server(who, forwarded=ForwardedPolicy("10.0.0.1")).start()
    try:
        xff = {"x_forwarded_for": "203.0.113.5", "x_forwarded_proto": "https"}
        assert ask(trusting.address[1], **xff).endswith(b"https 203.0.113.5")
        assert ask(trusting.address[1]).endswith(b"http 127.0.0.1")
        assert ask(distrusting.address[1], **xff).endswith(b"http 127.0.0.1")
    finally:
        for server in (trusting, distrusting):
            server.stop(0)
            server.wait(10)


def test_a_connection_asks_the_policy_about_its_peer_once_though_it_parks_between_requests():
    """The peer of a connection does not change: whether it is a trusted proxy is decided
    when the connection starts, not again each time it resumes after parking (which parsed
    its address every request)."""
    asked = []

    class Counting(ForwardedPolicy):
        def trusts(self, peer):
            asked.append(peer)
            return super().trusts(peer)

    def who(request):
        return Response(200, f"{request.scheme} {request.client[0]}".encode())

    server = http_server(who, forwarded=Counting("127.0.0.1"), park_after=0.0).start()
    try:
        with socket.create_connection(("127.0.0.1", server.address[1]), timeout=10) as sock:
            for i, xff in enumerate(["203.0.113.5", None, "198.51.100.7"]):
                field = f"X-Forwarded-For: {xff}\r\n" if xff else ""
                sock.sendall(f"GET /{i} HTTP/1.1\r\nHost: x\r\n{field}\r\n".encode())
                reply = b""
                while not reply.endswith((b"203.0.113.5", b"http 127.0.0.1", b"198.51.100.7")):
                    chunk = sock.recv(4096)
                    assert chunk, reply
                    reply += chunk
                assert reply.endswith(f"http {xff or '127.0.0.1'}".encode()), reply
    finally:
        server.stop(0)
        server.wait(10)
    assert len(asked) == 1, asked

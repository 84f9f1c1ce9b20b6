"""Server TLS (fibernet/net/tls.py through the TCP and HTTP servers) against real clients:
curl, openssl s_client, Python's ssl module; client certificates required and refused; a
plain-text client, a stalled handshake and a trickled one; the TLS 1.2 floor and ALPN."""

from __future__ import annotations

import http.client
import logging
import shutil
import socket
import ssl
import subprocess
import threading
import time
import warnings

import pytest

from fibernet.http import Response
from fibernet.net.streams import Stream
from fibernet.net.tls import TLSConfig, server_context
from fibernet.server import http_server

from ..tls_support import make_certs
from ._support import LogEvent, recv_until_eof

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def certs(tmp_path):
    return make_certs(tmp_path)


@pytest.fixture
def https(certs):
    """An HTTP server over TLS answering "<scheme> <client host> <TLS version>"."""
    started = []

    def start(app=None, **options):
        def describe(request):
            return Response(200, f"{request.scheme} {request.client[0]}\n".encode())

        options.setdefault("ssl", TLSConfig(certs.server_pem))
        server = http_server(app or describe, **options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop(0)
        server.wait(10)


def answer_line(conn) -> None:
    """A TCP handler: answer one line with the TLS version and the line, then close."""
    line = Stream(conn).readline()
    conn.sendall(conn.version().encode() + b" " + line)


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (apt-get install {tool})")
    return path


# -- real clients ---------------------------------------------------------------------------


def test_curl_with_cacert(https, certs):
    curl = need("curl")
    port = https().address[1]
    url = f"https://localhost:{port}/"
    result = subprocess.run(
        [curl, "-sS", "--cacert", certs.ca_pem, "--resolve", f"localhost:{port}:127.0.0.1",
         "-w", "%{http_code} %{ssl_verify_result}", url, url],
        capture_output=True, text=True, timeout=20,
    )
    assert result.returncode == 0, result.stderr
    # Two requests over one connection (keep-alive over TLS), the certificate verified (0).
    assert result.stdout == "https 127.0.0.1\n200 0https 127.0.0.1\n200 0", result.stdout


def test_curl_refuses_a_server_it_does_not_trust(https, tmp_path):
    curl = need("curl")
    port = https().address[1]
    other = make_certs(tmp_path, "other-")
    result = subprocess.run(
        [curl, "-sS", "--cacert", other.ca_pem, "--resolve", f"localhost:{port}:127.0.0.1",
         f"https://localhost:{port}/"], capture_output=True, text=True, timeout=20,
    )
    assert result.returncode == 60, result  # CURLE_PEER_FAILED_VERIFICATION


def test_openssl_s_client_on_a_tcp_server_negotiates_alpn_and_tls13(servers, certs):
    openssl = need("openssl")
    server = servers(answer_line, ssl=TLSConfig(certs.server_pem))
    result = subprocess.run(
        [openssl, "s_client", "-connect", f"127.0.0.1:{server.address[1]}", "-servername", "localhost",
         "-CAfile", certs.ca_pem, "-verify_return_error", "-alpn", "http/1.1", "-ign_eof"],
        input="hello\n", capture_output=True, text=True, timeout=20,
    )
    assert result.returncode == 0, result.stderr
    assert "Verify return code: 0 (ok)" in result.stdout
    assert "ALPN protocol: http/1.1" in result.stdout
    assert "TLSv1.3 hello" in result.stdout


def test_openssl_s_client_at_tls12_with_the_configured_ciphers(servers, certs):
    openssl = need("openssl")
    cipher = "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256"
    server = servers(answer_line, ssl=TLSConfig(certs.server_pem, ciphers=cipher))
    base = [openssl, "s_client", "-connect", f"127.0.0.1:{server.address[1]}", "-CAfile", certs.ca_pem,
            "-tls1_2", "-ign_eof"]
    ok = subprocess.run([*base, "-cipher", cipher], input="x\n", capture_output=True, text=True, timeout=20)
    assert ok.returncode == 0, ok.stderr
    assert "TLSv1.2 x" in ok.stdout
    # A TLS 1.2 cipher the server's list leaves out: no handshake.
    refused = subprocess.run([*base, "-cipher", "AES256-SHA256"], input="x\n", capture_output=True,
                             text=True, timeout=20)
    assert refused.returncode != 0 and "TLSv1.2 x" not in refused.stdout


def test_python_ssl_clients_http_client_and_raw_sockets(https, certs):
    port = https().address[1]
    ctx = certs.client_context()
    ctx.set_alpn_protocols(["http/1.1"])
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", "/", headers={"Host": "localhost"})
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, b"https 127.0.0.1\n")
        assert conn.sock.selected_alpn_protocol() == "http/1.1"
        assert conn.sock.version() == "TLSv1.3"
    finally:
        conn.close()
    # TLS 1.2 from a client that allows no more.
    ctx12 = certs.client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx12.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() == "TLSv1.2"
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert recv_until_eof(tls).endswith(b"https 127.0.0.1\n")


def test_a_large_body_both_ways(https, certs):
    def echo_body(request):
        return Response(200, request.body())

    port = https(echo_body, max_body_size=8 << 20).address[1]
    body = bytes(range(256)) * 16384  # 4 MiB
    conn = http.client.HTTPSConnection("localhost", port, context=certs.client_context(), timeout=20)
    try:
        conn.request("POST", "/", body=body)
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == body
    finally:
        conn.close()


def test_tls_below_1_2_is_refused(https, certs):
    """The server's floor is TLS 1.2: a client that offers at most TLS 1.1 gets no handshake
    (client and server allow TLS 1.0/1.1 ciphers here, at OpenSSL's security level 0, so
    only the floor refuses it)."""
    assert server_context().minimum_version == ssl.TLSVersion.TLSv1_2
    port = https(ssl=TLSConfig(certs.server_pem, ciphers="DEFAULT:@SECLEVEL=0")).address[1]
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(certs.ca_pem)
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # (what this client is about)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError):
            old.wrap_socket(raw, server_hostname="localhost")


# -- client certificates --------------------------------------------------------------------


def test_client_certificate_required_and_refused(servers, certs):
    seen = []

    def who(conn):
        names = conn.getpeercert()["subjectAltName"]
        seen.append(names)
        conn.sendall(b"hello " + names[0][1].encode() + b"\n")

    config = TLSConfig(certs.server_pem, ca_certs=certs.ca_pem, cert_reqs=ssl.CERT_REQUIRED)
    port = servers(who, ssl=config).address[1]
    # With a certificate the CA signed: served, and the handler sees who it is.
    ctx = certs.client_context()
    ctx.load_cert_chain(certs.client_pem)
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                         server_hostname="localhost") as tls:
        assert recv_until_eof(tls) == b"hello client@example.org\n"
    # Without one: refused (TLS 1.3 reports it on the client's first read), the handler never runs.
    with LogEvent("fibernet.server", "TLS handshake from") as failed:
        with certs.client_context().wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                                server_hostname="localhost") as tls:
            with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED|certificate required"):
                tls.recv(100)
        assert failed.event.wait(10)
    assert len(seen) == 1


def test_client_certificate_from_another_ca_is_refused(servers, certs, tmp_path):
    config = TLSConfig(certs.server_pem, ca_certs=certs.ca_pem, cert_reqs=ssl.CERT_REQUIRED)
    port = servers(lambda conn: conn.sendall(b"served\n"), ssl=config).address[1]
    stranger = make_certs(tmp_path, "stranger-")
    ctx = certs.client_context()
    ctx.load_cert_chain(stranger.client_pem)
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                         server_hostname="localhost") as tls:
        with pytest.raises(ssl.SSLError, match="UNKNOWN_CA|unknown ca"):
            tls.recv(100)  # the server's alert says why


# -- bad clients cost their own connection only ----------------------------------------------


def test_a_plain_text_client_on_a_tls_port_is_closed_with_one_log_line(https, certs, caplog):
    port = https().address[1]
    caplog.set_level(logging.INFO, logger="fibernet.server")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = recv_until_eof(plain)
        except ConnectionResetError:
            answer = b""
    assert b"HTTP/1.1" not in answer  # (at most a TLS alert record)
    records = [r for r in caplog.records if "TLS handshake from 127.0.0.1" in r.getMessage()]
    assert len(records) == 1, caplog.text
    assert records[0].levelno == logging.INFO and records[0].exc_info is None
    # The server goes on.
    conn = http.client.HTTPSConnection("localhost", port, context=certs.client_context(), timeout=10)
    conn.request("GET", "/")
    assert conn.getresponse().read() == b"https 127.0.0.1\n"
    conn.close()


def _handshake_ok(port: int, certs) -> bool:
    with certs.client_context().wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                            server_hostname="localhost") as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return recv_until_eof(tls).endswith(b"https 127.0.0.1\n")


def test_a_stalled_handshake_is_cut_at_its_deadline_and_blocks_no_one(https, certs):
    """One scheduler thread: while a client that sends nothing holds its handshake open,
    other clients handshake and are served; the silent one is closed at the deadline."""
    deadline = 1.0
    port = https(handshake_timeout=deadline, threads=1).address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as stalled:
        started = time.monotonic()
        assert all(_handshake_ok(port, certs) for _ in range(5))
        assert stalled.recv(100) == b""  # closed by the server (the client's timeout is 10 s)
        waited = time.monotonic() - started
    assert deadline * 0.9 <= waited < deadline + 5, waited


def test_a_trickled_handshake_is_cut_at_its_deadline_too(https, certs):
    """The deadline bounds the whole handshake, not each read: a client that sends one byte
    of its ClientHello every 100 ms never completes and is cut at the deadline."""
    deadline = 1.0
    port = https(handshake_timeout=deadline).address[1]
    hello = _client_hello(certs)
    closed = threading.Event()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
        started = time.monotonic()

        def trickle():
            for byte in hello:
                if closed.wait(0.1):
                    return
                try:
                    slow.send(bytes([byte]))
                except OSError:
                    return

        sender = threading.Thread(target=trickle)
        sender.start()
        try:
            assert slow.recv(100) == b""
            waited = time.monotonic() - started
        finally:
            closed.set()
            sender.join()
    assert len(hello) * 0.1 > deadline * 3  # (the hello alone would take this long)
    assert deadline * 0.9 <= waited < deadline + 5, waited


def _client_hello(certs) -> bytes:
    """The bytes of a real ClientHello (an SSLObject's first flight)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = certs.client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_a_handler_error_over_tls_is_logged_and_costs_that_connection(servers, certs, caplog):
    def handler(conn):
        line = Stream(conn).readline()
        if line == b"boom\n":
            raise RuntimeError("boom")
        conn.sendall(line)

    port = servers(handler, ssl=TLSConfig(certs.server_pem)).address[1]
    ctx = certs.client_context()
    for message, expected in ((b"boom\n", b""), (b"fine\n", b"fine\n")):
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                             server_hostname="localhost") as tls:
            tls.sendall(message)
            assert recv_until_eof(tls) == expected
    assert "RuntimeError: boom" in caplog.text


def test_ssl_must_be_a_context_or_a_config(servers):
    with pytest.raises(TypeError, match="ssl must be"):
        servers(answer_line, ssl="cert.pem")

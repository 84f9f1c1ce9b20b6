"""TLS over patched sockets: ``ssl`` sockets made by ``SSLContext.wrap_socket`` cooperate.

The server is a plain threaded TLS server in the test process (one thread per connection,
each answering after 0.5 s), with a certificate from a throw-away CA (trustme).
"""

from __future__ import annotations

import socket
import ssl
import threading
import time

import pytest

from .conftest import DELAY, run_script

trustme = pytest.importorskip("trustme")

FIBERS = 100


@pytest.fixture
def tls_server(tmp_path):
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    listener = socket.create_server(("127.0.0.1", 0), backlog=FIBERS * 2)
    threads: list[threading.Thread] = []

    def answer(conn: socket.socket) -> None:
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(20)
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = tls.recv(4096)
                    if not chunk:
                        return
                    request += chunk
                time.sleep(DELAY)
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nslow")
        except OSError:
            pass  # a client gone is not this test's business

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            t = threading.Thread(target=answer, args=(conn,), daemon=True)
            threads.append(t)
            t.start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    yield listener.getsockname()[1], str(tmp_path / "ca.pem")
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    acceptor.join(5)
    for t in threads:
        t.join(5)


SCRIPT = """
import http.client, json, ssl, sys, time
import fibernet
if sys.argv[3] == "patch":
    fibernet.patch_all()
port, cafile, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[4])
context = ssl.create_default_context(cafile=cafile)

def one(i):
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=20)
    try:
        conn.request("GET", f"/{i}")
        kind = type(conn.sock).__name__
        response = conn.getresponse()
        return [response.status, response.read().decode(), kind]
    finally:
        conn.close()

def main():
    start = time.monotonic()
    results = [f.join() for f in [fibernet.spawn(one, i) for i in range(count)]]
    return {"wall": time.monotonic() - start, "results": results}

print(json.dumps(fibernet.run(main)))
"""


def _run(port: int, cafile: str, patch: bool, count: int) -> dict:
    import json

    proc = run_script(["-c", SCRIPT, str(port), cafile, "patch" if patch else "no", str(count)])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_https_requests_cooperate_when_patched(tls_server):
    report = _run(*tls_server, patch=True, count=FIBERS)
    assert report["results"] == [[200, "slow", "CooperativeSSLSocket"]] * FIBERS
    assert report["wall"] < 2.0 + FIBERS * 0.01, report  # the handshakes cost CPU, not waits


def test_https_requests_block_the_scheduler_unpatched(tls_server):
    report = _run(*tls_server, patch=False, count=3)
    assert [r[:2] for r in report["results"]] == [[200, "slow"]] * 3
    assert report["wall"] >= 3 * DELAY * 0.9, report

"""Real clients over loopback: curl, Python's http.client, h2load (pipelined HTTP/1.1) and wrk.

The command-line tools come from the Debian packages curl, nghttp2-client (h2load) and wrk,
which .ci/run installs; a test skips, naming the package, when its tool is missing
(tests/conftest.py's ``program``).
"""

from __future__ import annotations

import http.client
import re
import subprocess

import pytest

from fibernet.http import Response, Router

from ..conftest import program
from .conftest import CLIENT_TIMEOUT, Recorder

TOOL_TIMEOUT = 30


def run(*argv: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=TOOL_TIMEOUT, check=False)


def make_app() -> Recorder:
    router = Router()
    router.add("/hello", lambda r: Response(200, b"Hello, World!"))
    router.add("/echo", lambda r: Response(200, r.body(), {"X-Length": str(len(r.body()))}), ("POST", "PUT"))
    router.add("/stream", lambda r: Response(200, (b"part%d;" % i for i in range(50))))
    router.add("/json", lambda r: Response.json({"query": r.query_params}))
    return Recorder(router, read_body=False)


def url(server, path: str) -> str:
    host, port = server.address[:2]
    return f"http://{host}:{port}{path}"


# -- curl -----------------------------------------------------------------------------------------


def test_curl_get_reuses_the_connection(http_server):
    curl = program("curl")
    app = make_app()
    server = http_server(app)
    result = run(curl, "-sS", "--fail", url(server, "/hello"), url(server, "/json?a=1&a=2"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == b'Hello, World!{"query":{"a":["1","2"]}}'
    assert len({r.client for r in app.calls}) == 1, "curl kept the connection alive for the second URL"


def test_curl_post_with_expect_100_continue(http_server):
    curl = program("curl")
    server = http_server(make_app())
    body = bytes(range(256)) * 40
    result = run(curl, "-sS", "-v", "--fail", "--expect100-timeout", "20", "-H", "Expect: 100-continue",
                 "--data-binary", "@-", url(server, "/echo"), stdin=body)
    assert result.returncode == 0, result.stderr
    assert result.stdout == body
    assert b"< HTTP/1.1 100 Continue" in result.stderr, "curl did not get its go-ahead from the server"


def test_curl_chunked_upload_and_chunked_download(http_server):
    curl = program("curl")
    server = http_server(make_app())
    body = b"z" * 100_000
    up = run(curl, "-sS", "--fail", "-H", "Transfer-Encoding: chunked", "--data-binary", "@-",
             url(server, "/echo"), stdin=body)
    assert up.returncode == 0, up.stderr
    assert up.stdout == body
    down = run(curl, "-sS", "--fail", "--raw", "-D", "-", url(server, "/stream"))
    assert down.returncode == 0, down.stderr
    assert b"transfer-encoding: chunked" in down.stdout.lower()
    plain = run(curl, "-sS", "--fail", url(server, "/stream"))
    assert plain.stdout == b"".join(b"part%d;" % i for i in range(50))


def test_curl_head_http10_and_errors(http_server):
    curl = program("curl")
    server = http_server(make_app())
    head = run(curl, "-sS", "-I", url(server, "/hello"))
    assert head.returncode == 0, head.stderr
    assert head.stdout.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 13\r\n" in head.stdout
    old = run(curl, "-sS", "--http1.0", url(server, "/hello"))
    assert old.returncode == 0 and old.stdout == b"Hello, World!"
    missing = run(curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", url(server, "/missing"))
    assert missing.stdout == b"404"
    wrong = run(curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "DELETE", url(server, "/hello"))
    assert wrong.stdout == b"405"


# -- http.client ----------------------------------------------------------------------------------


def test_http_client_keep_alive_methods_and_bodies(http_server):
    app = make_app()
    server = http_server(app)
    conn = http.client.HTTPConnection(*server.address[:2], timeout=CLIENT_TIMEOUT)
    try:
        conn.request("GET", "/hello")
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, b"Hello, World!")
        conn.request("POST", "/echo", body=b"posted")
        r = conn.getresponse()
        assert (r.status, r.read(), r.getheader("X-Length")) == (200, b"posted", "6")
        conn.request("PUT", "/echo", body=iter([b"chunk-one,", b"chunk-two"]), encode_chunked=True)
        r = conn.getresponse()
        assert r.read() == b"chunk-one,chunk-two"
        conn.request("GET", "/stream")
        r = conn.getresponse()
        assert r.getheader("Transfer-Encoding") == "chunked"
        assert r.read() == b"".join(b"part%d;" % i for i in range(50))
        conn.request("HEAD", "/hello")
        r = conn.getresponse()
        assert (r.status, r.getheader("Content-Length"), r.read()) == (200, "13", b"")
        conn.request("GET", "/json?x=%20y")
        r = conn.getresponse()
        assert r.read() == b'{"query":{"x":[" y"]}}'
    finally:
        conn.close()
    assert len(app.calls) == 6
    assert len({r.client for r in app.calls}) == 1, "http.client reused one connection throughout"


# -- h2load (pipelined HTTP/1.1) -------------------------------------------------------------------

H2LOAD_LINE = re.compile(rb"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                         rb"(\d+) errored")


@pytest.mark.parametrize("threads", [1, 2])
def test_h2load_pipelined_h1_no_failures(http_server, threads):
    h2load = program("h2load")
    app = make_app()
    server = http_server(app, threads=threads)
    n = 2000
    result = run(h2load, "--h1", "-n", str(n), "-c", "8", "-m", "8", url(server, "/hello"))
    assert result.returncode == 0, result.stdout + result.stderr
    match = H2LOAD_LINE.search(result.stdout)
    assert match, result.stdout
    total, started, done, succeeded, failed, errored = map(int, match.groups())
    assert (total, started, done, succeeded) == (n, n, n, n), match.group(0)
    assert (failed, errored) == (0, 0), match.group(0)
    assert re.search(rb"status codes: %d 2xx, 0 3xx, 0 4xx, 0 5xx" % n, result.stdout), result.stdout
    assert len(app.calls) == n


# -- wrk ------------------------------------------------------------------------------------------


def test_wrk_short_run_no_errors(http_server, spin_until):
    wrk = program("wrk")
    server = http_server(make_app(), threads=2)
    result = run(wrk, "-d1s", "-c10", "-t1", url(server, "/hello"))
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    match = re.search(r"(\d+) requests in ", out)
    assert match, out
    done = int(match.group(1))
    assert done > 0
    assert "Non-2xx" not in out, out
    assert "Socket errors" not in out, out
    # the server counts a connection's requests when it ends: wait for wrk's to end
    spin_until(lambda: server.stats()["connections_open"] == 0, "wrk's connections to close")
    assert server.stats()["requests"] >= done

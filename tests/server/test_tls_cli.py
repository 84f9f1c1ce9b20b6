"""``fibernet serve --ssl-*`` in a child process: the flags and FIBERNET_* variables, a bad
certificate as a usage error, and certificates reloaded on SIGHUP -- in place without
workers, by new workers with --workers."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import sys

import pytest

from ..cli.conftest import ServerProcess
from ..tls_support import make_certs

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def serve(tmp_path):
    started: list[ServerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
        p = ServerProcess(list(args), tmp_path, env, own_group=True)
        started.append(p)
        return p

    yield start
    for p in started:
        p.close()


def peer_certificate(port: int, certs) -> bytes:
    """The server's certificate, from a client that trusts ``certs``'s CA (else SSLError)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with certs.client_context().wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"Hello, World!"), answer
            return tls.getpeercert(binary_form=True)


def replace_certificate(path: str, new_pem: str) -> None:
    """Put new contents at ``path`` the way deploy tools do: a new file renamed over it."""
    tmp = path + ".new"
    with open(new_pem, "rb") as src, open(tmp, "wb") as dst:
        dst.write(src.read())
    os.replace(tmp, path)


def test_flags_serve_https_and_sighup_reloads_the_certificate_in_place(serve, tmp_path, free_port):
    first = make_certs(tmp_path, "first-")
    second = make_certs(tmp_path, "second-")
    live = str(tmp_path / "live.pem")
    replace_certificate(live, first.server_pem)
    server = serve("fibernet.examples.hello:app", "--port", str(free_port), "--ssl-certfile", live)
    server.wait_for(f"serving fibernet.examples.hello:app on 127.0.0.1:{free_port}")
    before = peer_certificate(free_port, first)
    replace_certificate(live, second.server_pem)
    # Until the signal the old certificate stays (the file is read at start and on SIGHUP only).
    assert peer_certificate(free_port, first) == before
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for("SIGHUP: TLS certificates reloaded")
    after = peer_certificate(free_port, second)
    assert after != before
    with pytest.raises(ssl.SSLCertVerificationError):
        peer_certificate(free_port, first)  # (a client of the old CA no longer trusts it)
    # A broken file on SIGHUP: an error line, and the certificate in use stays.
    with open(live, "w") as f:
        f.write("not a certificate\n")
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for("SIGHUP: the TLS certificates did not load")
    assert peer_certificate(free_port, second) == after
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0, server.log


def test_with_workers_sighup_starts_workers_with_the_new_certificate(serve, tmp_path, free_port):
    first = make_certs(tmp_path, "first-")
    second = make_certs(tmp_path, "second-")
    live_key, live_cert = str(tmp_path / "key.pem"), str(tmp_path / "cert.pem")
    replace_certificate(live_key, first.server_key)
    replace_certificate(live_cert, first.server_cert)
    env = {"FIBERNET_SSL_CERTFILE": live_cert, "FIBERNET_SSL_KEYFILE": live_key}  # the variables
    server = serve("fibernet.examples.hello:app", "--port", str(free_port), "--workers", "2", env=env)
    server.wait_lines(r"worker \d+ ready \(generation 0\)", count=2)
    before = peer_certificate(free_port, first)
    replace_certificate(live_key, second.server_key)
    replace_certificate(live_cert, second.server_cert)
    server.proc.send_signal(signal.SIGHUP)
    server.wait_lines(r"worker \d+ ready \(generation 1\)", count=2)
    old = [int(m.group(1)) for m in server.wait_lines(r"started worker (\d+) \(generation 0\)", count=2)]
    for pid in old:
        server.wait_for(f"worker {pid} stopped")
    # Only new workers are left, and they loaded the files as they are now.
    assert peer_certificate(free_port, second) != before
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0, server.log


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_certificate_that_does_not_load_is_a_usage_error(tmp_path, workers, free_port):
    import subprocess

    missing = str(tmp_path / "nope.pem")
    result = subprocess.run(
        [sys.executable, "-m", "fibernet_cli.main", "serve", "fibernet.examples.hello:app", "--port",
         str(free_port), "--workers", workers, "--ssl-certfile", missing],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("FIBERNET_")},
    )
    assert result.returncode == 2, result.stderr
    assert "TLS" in result.stderr and "nope.pem" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr

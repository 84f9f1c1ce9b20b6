"""The TLS client on fiber sockets: ``fibernet.net.connect(..., ssl=, server_hostname=)``
against a fibernet TLS server (and its name check), streams and choices over TLS."""

from __future__ import annotations

import ssl

import pytest

import fibernet as fn
from fibernet.net import connect
from fibernet.net.streams import Stream
from fibernet.net.tls import TLSConfig, TLSSocket
from fibernet.server import Server

from ..tls_support import make_certs

pytestmark = pytest.mark.timeout(30)


def echo(conn) -> None:
    while data := conn.recv(65536):
        conn.sendall(data)


@pytest.fixture
def certs(tmp_path):
    return make_certs(tmp_path)


@pytest.fixture
def tls_echo(certs):
    with Server(echo, ssl=TLSConfig(certs.server_pem)) as server:
        yield server.address[1]


def test_connect_with_ssl_checks_the_name_and_moves_megabytes(tls_echo, certs):
    payload = bytes(range(256)) * 8192  # 2 MiB: many records, both ways at once

    def main():
        conn = connect(
            "127.0.0.1", tls_echo, timeout=10, ssl=certs.client_context(), server_hostname="localhost"
        )
        try:
            assert isinstance(conn, TLSSocket) and conn.version() == "TLSv1.3"
            writer = fn.spawn(conn.sendall, payload)
            got = bytearray()
            while len(got) < len(payload):
                got += conn.recv(65536)
            writer.join()
            assert got == payload
            conn.shutdown()  # close_notify, then our end of stream: the server's handler ends
            assert conn.recv(100) == b""
        finally:
            conn.close()

    fn.run(main, threads=2)


def test_a_name_the_certificate_does_not_carry_is_refused(tls_echo, certs):
    def main():
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch|doesn't match"):
            connect(
                "127.0.0.1", tls_echo, timeout=10, ssl=certs.client_context(), server_hostname="example.org"
            )

    fn.run(main)


def test_a_stream_over_tls_reads_lines_and_its_ops_sit_in_a_choice(tls_echo, certs):
    def main():
        with Stream.connect("127.0.0.1", tls_echo, 10, ssl=certs.client_context(),
                            server_hostname="localhost") as stream:
            # Nothing sent yet: a readline op loses to a timer, and loses nothing.
            soon = fn.wrap(fn.wait_op(0.05), lambda: "timeout")
            assert fn.perform(fn.choice(stream.readline_op(), soon)) == "timeout"
            stream.write(b"one\ntwo\nthr")
            assert stream.readline() == b"one\n"
            assert fn.perform(stream.readline_op()) == b"two\n"
            stream.write(b"ee\n")
            late = fn.wrap(fn.wait_op(10), lambda: "timeout")
            assert fn.perform(fn.choice(stream.readline_op(), late)) == b"three\n"

    fn.run(main)


def test_a_plain_server_gives_the_client_a_clear_error(certs):
    with Server(echo) as plain:

        def main():
            with pytest.raises(ssl.SSLError):
                connect("127.0.0.1", plain.address[1], timeout=10, ssl=certs.client_context(),
                        server_hostname="localhost")

        fn.run(main)


def test_200_concurrent_tls_clients_on_two_scheduler_threads(certs):
    """Handshakes and echoes at once, client fibers and server connections spread over two
    scheduler threads each: every client gets its own bytes back."""
    with Server(echo, ssl=TLSConfig(certs.server_pem), threads=2) as server:
        port = server.address[1]
        ctx = certs.client_context()

        def one(i: int) -> bool:
            conn = connect("127.0.0.1", port, timeout=30, ssl=ctx, server_hostname="localhost")
            try:
                payload = b"%d " % i * (1 + i % 50)
                conn.sendall(payload)
                got = b""
                while len(got) < len(payload):
                    got += conn.recv(65536)
                return got == payload
            finally:
                conn.close()

        def main():
            return fn.parallel_map(one, range(200))

        assert fn.run(main, threads=2) == [True] * 200

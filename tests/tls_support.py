"""Certificates made for a test with ``trustme``: a CA, a server certificate for localhost
and 127.0.0.1, and a client certificate, as PEM files in a directory."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest

trustme = pytest.importorskip("trustme", reason="pip install trustme (the test extra)")


@dataclass
class Certs:
    ca: object
    dir: Path
    ca_pem: str  # the CA's certificate (what clients trust)
    server_pem: str  # the server's key and certificate chain in one file
    server_key: str
    server_cert: str  # the chain without the key
    client_pem: str  # a client certificate and its key, signed by the same CA

    def client_context(self, **options) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_pem)
        for name, value in options.items():
            setattr(ctx, name, value)
        return ctx


def make_certs(directory: Path, name: str = "") -> Certs:
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("client@example.org")
    files = {
        "ca_pem": ca.cert_pem,
        "server_pem": server.private_key_and_cert_chain_pem,
        "server_key": server.private_key_pem,
        "client_pem": client.private_key_and_cert_chain_pem,
    }
    paths = {}
    for key, blob in files.items():
        path = directory / f"{name}{key}.pem"
        blob.write_to_path(str(path))
        paths[key] = str(path)
    chain = directory / f"{name}server_cert.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    return Certs(ca, directory, server_cert=str(chain), **paths)

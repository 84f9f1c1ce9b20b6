"""``http_hello`` over TLS: fibernet against uvicorn under ``wrk -t1 -c100 https://...`` with one
self-signed certificate: the server's CPU time per request, medians over interleaved rounds;
--close: a full handshake per request (docs/pages/benchmarks.md, "HTTPS hello world").  It runs
``http_hello.py --tls``, whose options it takes.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # its own modules

import http_hello  # noqa: E402

if __name__ == "__main__":
    sys.exit(http_hello.main(["--tls", *sys.argv[1:]]))

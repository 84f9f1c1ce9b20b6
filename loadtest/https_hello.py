"""``http_hello`` over TLS: fibernet against uvicorn under ``wrk -t1 -c100 https://...`` with one
self-signed certificate: the server's CPU time per request, medians over interleaved rounds;
--close: a full handshake per request (docs/pages/benchmarks.md, "HTTPS hello world").
"""

from __future__ import annotations

import argparse
import os
import ssl
import subprocess
import sys
import tempfile
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # its own modules, and fibernet from the checkout

import _bench  # noqa: E402
import _proc  # noqa: E402
import _wrk  # noqa: E402
from _server import FIBERNET_FROM_CHECKOUT, HOST, ServerProcess, hello  # noqa: E402
from peers._serve import BODY  # noqa: E402

IMPLS = ("fibernet", "uvicorn")


def make_certificate(directory: str) -> tuple[str, str]:
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", f"subjectAltName=DNS:localhost,IP:{HOST}",
                    "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


def wrk(args, port: int, duration: float) -> dict:
    cmd = _wrk.command("wrk", f"https://{HOST}:{port}/hello", 1, args.connections, duration,
                       *(["-H", "Connection: close"] if args.close else []))
    return _wrk.run(["taskset", "-c", str(args.wrk_cpu), *cmd], duration)[0]


def measure(impl: str, args, cert: str, key: str) -> dict:
    port = _bench.free_port(HOST)
    cmd = hello(impl, port, ["--ssl-certfile", cert, "--ssl-keyfile", key], cli=FIBERNET_FROM_CHECKOUT)
    with ServerProcess(cmd, args.server_cpu, port, name=impl) as server:
        context = ssl.create_default_context(cafile=cert)
        with urllib.request.urlopen(f"https://{HOST}:{port}/hello", context=context, timeout=10) as answer:
            if answer.read() != BODY:
                raise RuntimeError(f"{impl} does not answer Hello, World!")
        wrk(args, port, 1.0)
        before = sum(_proc.cpu_times(server.pid, descendants=True))
        result = wrk(args, port, args.duration)
        used = sum(_proc.cpu_times(server.pid, descendants=True)) - before
        result["cpu_us"] = used / max(1, result["requests"]) * 1e6
        server.stop()
    result["error_total"] = sum(result["errors"].values())
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of wrk per measurement")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--close", action="store_true", help="Connection: close (a handshake per request)")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--wrk-cpu", type=int, default=1)
    parser.add_argument("--impls", default=",".join(IMPLS))
    args = parser.parse_args(argv)
    impls = _bench.comma_list(parser, args.impls, IMPLS, "--impls")
    samples = _bench.Samples()
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_certificate(tmp)
        for n in range(args.rounds):
            for impl in impls:
                result = measure(impl, args, cert, key)
                samples.results.setdefault(("tls", impl), []).append(result)
                print(f"round {n + 1} {impl}: {result['rps']:.0f} req/s, {result['cpu_us']:.1f} us CPU/req, "
                      f"errors {result['errors']}", file=sys.stderr, flush=True)
    mode = "a handshake per request (Connection: close)" if args.close else "keep-alive"
    print(f"GET /hello over TLS, {mode}, wrk -t1 -c{args.connections}, {args.rounds} x {args.duration:g} s")
    rows = [[r["impl"], f"{r['rps']:.0f}", _bench.fmt_fixed(r["cpu_us"]), _bench.fmt_pct(r["spread"]),
             sum(samples.values("tls", r["impl"], "error_total")), _bench.fmt_ratio(r["ratio"])]
            for r in _bench.summary_rows(samples, "tls", impls, "cpu_us", ("rps",))]
    print(_bench.format_table(["server", "req/s", "CPU us/req", "spread", "errors", "fibernet ratio"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

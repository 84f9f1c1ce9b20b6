"""``http_hello`` over TLS: fibernet against uvicorn with the same certificate, under
``wrk -t1 -c100 https://...``; the server's CPU time per request and fibernet's ratio.

Run from the repository root, the peers from their own environment::

    fibernet loadtest --make-env /tmp/peers https_hello
    fibernet loadtest --peers-python /tmp/peers/bin/python https_hello --close

Both servers get one self-signed certificate (``openssl req``, RSA 2048, made in a temporary
directory) through the same flags (``--ssl-certfile``/``--ssl-keyfile``: uvicorn's names are
fibernet's), and both answer ``GET /hello`` with ``Hello, World!``: fibernet runs
``fibernet serve fibernet.examples.hello:app --threads 1``, uvicorn ``http_hello.asgi_app``
on httptools and uvloop (as ``http_hello.py`` runs them).

One measurement: start the server pinned to ``--server-cpu``, wait until a TLS request is
answered, warm up (1 s of wrk), read the server's utime+stime, run wrk (pinned to
``--wrk-cpu``) for ``--duration`` s, read them again: CPU time per request = delta / wrk's
request count.  Rounds are interleaved (for round: for server), the table shows medians.
With ``--close`` every request asks ``Connection: close``, so every request pays a full
handshake (wrk does not resume sessions): the handshake's cost instead of the record layer's.
"""

from __future__ import annotations

import argparse
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _bench  # noqa: E402
import _proc  # noqa: E402
import _wrk  # noqa: E402
import http_hello as hh  # noqa: E402
from _server import ServerProcess  # noqa: E402

IMPLS = ("fibernet", "uvicorn")
# fibernet's CLI from this checkout on any interpreter with its dependencies (the peers'):
# the ``cli`` directory is the ``fibernet_cli`` package.
FIBERNET_FROM_CHECKOUT = [
    sys.executable,
    "-c",
    f"import sys; sys.path.insert(0, {ROOT!r}); import cli; sys.modules['fibernet_cli'] = cli; "
    "from fibernet_cli.main import cli as main; sys.exit(main())",
]


def make_certificate(directory: str) -> tuple[str, str]:
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", f"subjectAltName=DNS:localhost,IP:{hh.HOST}", "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )
    return cert, key


def server_command(impl: str, port: int, cert: str, key: str) -> list[str]:
    tls = ["--ssl-certfile", cert, "--ssl-keyfile", key]
    if impl == "fibernet":
        return hh.fibernet_serve(FIBERNET_FROM_CHECKOUT, "fibernet.examples.hello:app", port, *tls)
    command = hh.uvicorn_serve(hh._exe("uvicorn", [sys.executable, "-m", "uvicorn"]), port)
    return [*command[:-1], *tls, command[-1]]


def wait_ready(proc: subprocess.Popen, port: int, cert: str, timeout: float = 30.0) -> None:
    ctx = ssl.create_default_context(cafile=cert)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(f"https://{hh.HOST}:{port}{hh.PATH}", context=ctx, timeout=2) as r:
                if r.read() != hh.BODY:
                    raise RuntimeError("the server does not answer Hello, World!")
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def wrk(args, port: int, duration: float) -> dict:
    extra = ["-H", "Connection: close"] if args.close else []
    url = f"https://{hh.HOST}:{port}{hh.PATH}"
    cmd = _wrk.command("wrk", url, 1, args.connections, duration, *extra)
    out = subprocess.run(["taskset", "-c", str(args.wrk_cpu), *cmd], capture_output=True, text=True,
                         timeout=duration + 60, check=True).stdout
    return _wrk.result(out)


def measure(impl: str, args, cert: str, key: str) -> dict:
    port = _bench.free_port(hh.HOST)
    with ServerProcess(server_command(impl, port, cert, key), args.server_cpu, port) as server:
        wait_ready(server.proc, port, cert)
        wrk(args, port, 1.0)
        before = sum(_proc.cpu_times(server.pid, descendants=True))
        result = wrk(args, port, args.duration)
        used = sum(_proc.cpu_times(server.pid, descendants=True)) - before
        server.stop()
    result["cpu_us"] = used / max(1, result["requests"]) * 1e6
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
    impls = [x.strip() for x in args.impls.split(",")]
    samples: dict[str, list[dict]] = {impl: [] for impl in impls}
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_certificate(tmp)
        for n in range(args.rounds):
            for impl in impls:
                result = measure(impl, args, cert, key)
                samples[impl].append(result)
                print(f"round {n + 1} {impl}: {result['rps']:.0f} req/s, {result['cpu_us']:.1f} us CPU/req, "
                      f"errors {result['errors']}", file=sys.stderr, flush=True)
    mode = "a handshake per request (Connection: close)" if args.close else "keep-alive"
    print(f"GET /hello over TLS, {mode}, wrk -t1 -c{args.connections}, {args.rounds} x {args.duration:g} s")
    print(f"{'server':10} {'req/s':>9} {'CPU us/req':>11} {'errors':>7}")
    cpu = {}
    for impl in impls:
        cpu[impl] = statistics.median(r["cpu_us"] for r in samples[impl])
        rps = statistics.median(r["rps"] for r in samples[impl])
        errors = sum(sum(r["errors"].values()) for r in samples[impl])
        print(f"{impl:10} {rps:9.0f} {cpu[impl]:11.1f} {errors:7d}")
    if "fibernet" in cpu and "uvicorn" in cpu:
        print(f"fibernet / uvicorn CPU per request: {cpu['fibernet'] / cpu['uvicorn']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

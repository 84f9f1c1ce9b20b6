"""Instructions per request under callgrind: the ``--callgrind`` mode of ``http_hello.py`` and
``echo.py``.

A count of user-space instructions (callgrind's ``Ir``) is the same every run, where CPU time
moves with the machine's load.  Each server runs under ``valgrind --tool=callgrind`` twice: it
serves ``warmup`` requests, then N1 (or N2) more, from a small closed-loop client here (16
keep-alive connections, one request in flight each, every answer checked; the standard library
only, so it runs on the peers' interpreter too), and is stopped with SIGTERM; callgrind
writes its total at exit.  What the two runs share (start-up, warm-up, shutdown) cancels out:

    instructions per request = (Ir(N2) - Ir(N1)) / (N2 - N1)

Time-driven work (a timer that fires every so often) runs for as long as the run lasts, and
under callgrind a run lasts some 50 times longer than without it: fibernet is measured with
its scheduler monitor off (``--block-warning 0``) for that reason.  ``PYTHONHASHSEED`` is
fixed so that both runs hash alike.
"""

from __future__ import annotations

import os
import re
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

HOST = "127.0.0.1"
CONNECTIONS = 16
START_TIMEOUT = 600.0  # a Python server starts some 50 times slower under callgrind
_TOTALS = re.compile(rb"^(?:totals|summary):\s*(\d+)", re.M)


@dataclass
class Target:
    """One server to count: ``command(port)`` is its command line."""

    name: str
    command: Callable[[int], list[str]]
    env: dict[str, str] = field(default_factory=dict)


def valgrind() -> str | None:
    return shutil.which("valgrind")


def totals(path: str) -> int:
    """The ``Ir`` total of a callgrind output file."""
    with open(path, "rb") as fh:
        found = _TOTALS.findall(fh.read())
    if not found:
        raise RuntimeError(f"no totals in {path}")
    return int(found[-1])


def _wait_listening(proc: subprocess.Popen, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((HOST, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not listen on port {port} within {timeout:g}s") from None
            time.sleep(0.2)


class Exchange:
    """What one request is: its bytes, and how to tell that its whole answer has come."""

    def __init__(self, request: bytes, answer_size: Callable[[bytes], int | None]) -> None:
        self.request = request
        self.answer_size = answer_size  # bytes of the answer at the head of a buffer, None: not all yet


def http_exchange(path: str) -> Exchange:
    def answer_size(buf: bytes) -> int | None:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = buf[:end].decode("latin-1").lower()
        if not head.startswith("http/1.1 200"):
            raise RuntimeError(f"unexpected answer: {head.splitlines()[0]!r}")
        match = re.search(r"^content-length:\s*(\d+)", head, re.M)
        if match is None:
            raise RuntimeError("an answer without Content-Length")
        size = end + 4 + int(match.group(1))
        return size if len(buf) >= size else None

    return Exchange(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode(), answer_size)


def echo_exchange(size: int) -> Exchange:
    return Exchange(bytes(i % 251 for i in range(size)), lambda buf: size if len(buf) >= size else None)


def drive(exchange: Exchange, port: int, count: int) -> None:
    """``count`` requests over CONNECTIONS keep-alive connections, one in flight on each
    (closed loop); every answer is checked, and anything wrong raises."""
    sel = selectors.DefaultSelector()
    conns = []
    try:
        for _ in range(CONNECTIONS):
            sock = socket.create_connection((HOST, port), timeout=300)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conns.append(sock)
        sent = done = 0
        buffers: dict[socket.socket, bytearray] = {}
        for sock in conns:
            if sent < count:
                sock.sendall(exchange.request)
                sent += 1
                buffers[sock] = bytearray()
                sel.register(sock, selectors.EVENT_READ)
        while done < count:
            events = sel.select(300)
            if not events:
                raise RuntimeError(f"no answer for 300 s ({done} of {count} done)")
            for key, _ in events:
                sock = key.fileobj
                data = sock.recv(1 << 20)
                if not data:
                    raise RuntimeError("the server closed a connection")
                buf = buffers[sock]
                buf += data
                size = exchange.answer_size(bytes(buf))
                if size is None:
                    continue
                if size != len(buf):
                    raise RuntimeError(f"{len(buf) - size} bytes more than one answer")
                buf.clear()
                done += 1
                if sent < count:
                    sock.sendall(exchange.request)
                    sent += 1
                else:
                    sel.unregister(sock)
    finally:
        sel.close()
        for sock in conns:
            sock.close()


def run_once(target: Target, exchange: Exchange, warmup: int, count: int, out_dir: str) -> int:
    """Ir of one server run: start under callgrind, warm up, ``count`` requests, SIGTERM."""
    port = _free_port()
    out = os.path.join(out_dir, f"{target.name}.{count}.out")
    cmd = [valgrind() or "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
           *target.command(port)]
    env = dict(os.environ, PYTHONHASHSEED="0", **target.env)
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
        try:
            _wait_listening(proc, port, START_TIMEOUT)
            if warmup:
                drive(exchange, port, warmup)
            drive(exchange, port, count)
            proc.send_signal(signal.SIGTERM)
            proc.wait(600)
        except BaseException as exc:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.seek(0)
            raise RuntimeError(f"{exc}\nserver: {shlex.join(cmd)}\n{log.read()[-3000:]}") from None
    return totals(out)


def per_request(target: Target, exchange: Exchange, n1: int, n2: int, warmup: int) -> dict:
    """(Ir(n2) - Ir(n1)) / (n2 - n1) for one server, and the two totals."""
    with tempfile.TemporaryDirectory(prefix="callgrind-") as out_dir:
        ir1 = run_once(target, exchange, warmup, n1, out_dir)
        ir2 = run_once(target, exchange, warmup, n2, out_dir)
    return {"impl": target.name, "ir_n1": ir1, "ir_n2": ir2, "n1": n1, "n2": n2,
            "per_request": (ir2 - ir1) / (n2 - n1)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def measure_all(targets: Sequence[Target], exchange: Exchange, n1: int, n2: int, warmup: int,
                report: Callable[[str], None] = print) -> dict[str, dict]:
    """Every target in turn; a target that fails is reported and left out."""
    results = {}
    for target in targets:
        try:
            results[target.name] = row = per_request(target, exchange, n1, n2, warmup)
            report(f"{target.name}: {row['per_request'] / 1000:.1f}k instructions per request")
        except RuntimeError as exc:
            report(f"{target.name}: FAILED: {exc}")
    return results


def render(workload: str, results: dict[str, dict], ours: str, bars: dict[str, float]) -> str:
    """A table: instructions per request, fibernet's ratio to each, and the bars."""
    mine = results.get(ours, {}).get("per_request")
    lines = [f"{workload}: instructions per request (callgrind Ir, (Ir(N2) - Ir(N1)) / (N2 - N1))",
             f"{'server':<28} {'Ir/req':>10} {ours + ' / it':>18}  bar"]
    for name, row in results.items():
        value = row["per_request"]
        ratio = mine / value if mine and value else None
        bar = bars.get(name)
        verdict = "" if bar is None or ratio is None else (
            f"<= {bar:.2f}x: {'PASS' if ratio <= bar else 'FAIL'}")
        shown = "-" if ratio is None else f"{ratio:.2f}x"
        lines.append(f"{name:<28} {value / 1000:>9.1f}k {shown:>18}  {verdict}")
    return "\n".join(lines)


def main(args, workloads: Sequence[tuple[str, Sequence[Target], Exchange]], bars: dict[str, float]) -> int:
    """A benchmark's ``--callgrind`` mode: each workload's table, from ``args.callgrind_counts``
    ("N1,N2") and ``args.callgrind_warmup``; the results saved to ``args.json``.  The exit
    status is 1 if a server failed (a bar that fails is reported, not an error)."""
    import _bench

    if not valgrind():
        raise SystemExit("valgrind not found: apt-get install -y valgrind")
    n1, n2 = (int(x) for x in args.callgrind_counts.split(","))
    command = _bench.command_line()
    print(f"command: {command}", flush=True)
    tables, everything, failed = [], {}, False
    for label, targets, exchange in workloads:
        print(f"{label}:", flush=True)
        results = measure_all(targets, exchange, n1, n2, args.callgrind_warmup)
        failed |= len(results) != len(targets)
        everything[label] = results
        tables.append(render(label, results, "fibernet", bars))
    print("\n" + "\n\n".join(tables) + f"\ncommand: {command}")
    _bench.save_json(args.json, {"command": command, "results": everything})
    return 1 if failed else 0

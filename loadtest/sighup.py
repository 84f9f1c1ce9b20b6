"""A rolling restart under load: ``kill -HUP`` to a 2-worker server (fibernet serve; with
--peers-python also gunicorn -k gevent) while wrk or h2load runs: failed requests and how long
until every old worker was gone.  Exit status 1 when a run of fibernet's failed
(docs/pages/benchmarks.md, "Rolling restarts").
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import _bench
import _proc
import _wrk
from _server import ServerProcess
from peers import _serve

TOOLS = ("wrk", "h2load")


@dataclass
class Run:
    server: str
    tool: str
    requests: int
    failed: int
    detail: str
    reload_s: float | None  # from the SIGHUP until every old worker was gone, if within the run

    @property
    def reloaded(self) -> bool:
        return self.reload_s is not None

    @property
    def ok(self) -> bool:
        return self.reloaded and self.failed == 0 and self.requests > 0


def server_command(server: str, port: int, peers_python: str | None) -> list[str]:
    if server == "fibernet":
        return [sys.executable, "-m", "fibernet_cli.main", "serve", "fibernet.examples.hello:app",
                "--port", str(port), "--workers", "2"]
    if server == "gunicorn":
        return [peers_python or sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "2",
                "-b", f"127.0.0.1:{port}", "--chdir", _serve.HERE, "hello_wsgi:app"]
    raise ValueError(f"unknown server {server!r}")


def tool_command(tool: str, port: int, duration: float) -> list[str]:
    url = f"http://127.0.0.1:{port}/"
    if tool == "wrk":
        return _wrk.command("wrk", url, 2, 50, duration)
    if tool == "h2load":
        return ["h2load", "--h1", "-t2", "-c50", f"-D{duration:g}", url]
    raise ValueError(f"unknown tool {tool!r}")


def failures(tool: str, output: str) -> tuple[int, int, str]:
    """(requests, failed, the tool's lines that say so) from wrk's or h2load's report."""
    if tool == "wrk":
        done = _wrk.result(output)
        e = done["errors"]
        said = []  # in the words of wrk's own report
        if e["connect"] + e["read"] + e["write"] + e["timeout"]:
            said.append(f"Socket errors: connect {e['connect']}, read {e['read']}, write {e['write']}, "
                        f"timeout {e['timeout']}")
        if e["non2xx"]:
            said.append(f"Non-2xx or 3xx responses: {e['non2xx']}")
        return done["requests"], sum(e.values()), "; ".join(said) or "no errors"
    line = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                     r"(\d+) errored, (\d+) timeout", output)
    if not line:
        return 0, 0, "no h2load summary"
    total, _started, _done, succeeded, failed, errored, timeout = map(int, line.groups())
    codes = re.search(r"status codes: .*", output)
    return succeeded, failed + errored + timeout, line.group(0) + (f"; {codes.group(0)}" if codes else "")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return c.recv(12).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def run_once(server: str, tool: str, duration: float = 5.0, hup_at: float = 1.0,
             peers_python: str | None = None, workers: int = 2, log_dir: str | None = None) -> Run:
    """One run of ``tool`` against ``server`` with a SIGHUP ``hup_at`` seconds in."""
    port = _bench.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIBERNET_")}
    cmd = server_command(server, port, peers_python)
    with ServerProcess(cmd, port=port, name=server, env=env, log_dir=log_dir) as proc:
        deadline = time.monotonic() + 30
        while not (_answers(port) and len(_proc.children(proc.pid)) >= workers):
            proc.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server} did not start:\n{proc.tail()}")
            time.sleep(0.05)
        before = _proc.children(proc.pid)
        load = subprocess.Popen(tool_command(tool, port, duration), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(hup_at)  # a point in the run, by design: the load is running there
        proc.proc.send_signal(signal.SIGHUP)
        hup, reload_s = time.monotonic(), None
        while load.poll() is None:  # watch the old workers go while the load runs
            kids = _proc.children(proc.pid)
            if reload_s is None and not before & kids and len(kids) >= workers:
                reload_s = time.monotonic() - hup
            time.sleep(0.05)
        output, _ = load.communicate()
        proc.stop()
    return Run(server, tool, *failures(tool, output), reload_s)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=5.0, help="seconds of load per run")
    p.add_argument("--hup-at", type=float, default=1.0, help="seconds into the run to send SIGHUP")
    p.add_argument("--tools", default=",".join(TOOLS))
    p.add_argument("--servers", default=None, help="fibernet,gunicorn (gunicorn when --peers-python)")
    p.add_argument("--peers-python", help="an interpreter with gunicorn and gevent")
    args = p.parse_args(argv)
    servers = (args.servers or ("fibernet,gunicorn" if args.peers_python else "fibernet")).split(",")
    tools = [t for t in args.tools.split(",") if shutil.which(t) or print(f"{t}: not installed, skipped")]
    print(f"SIGHUP at {args.hup_at:g}s of {args.duration:g}s, {args.runs} run(s) each; "
          "2 workers, 50 connections")
    bad = 0
    for tool in tools:
        for server in servers:
            runs = [run_once(server, tool, args.duration, args.hup_at, args.peers_python)
                    for _ in range(args.runs)]
            bad += sum(not r.ok for r in runs) if server == "fibernet" else 0  # peers: measured only
            took = [f"{r.reload_s:.1f}s" if r.reloaded else "not within the run" for r in runs]
            print(f"{server:9} {tool:7} failed {[r.failed for r in runs]} of {[r.requests for r in runs]} "
                  f"requests; old workers gone after {took}")
            for r in runs:
                print(f"    {r.detail}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

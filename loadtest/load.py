"""fibernet's load generator, written on fibernet's own client side::

    fibernet loadtest load -w http -p 8000 --path /hello -c 50 -d 10
    fibernet loadtest load -w echo -p 9000 --size 1024 -c 100 --count 100000
    fibernet loadtest load -w http -p 8000 --rate 5000 -d 30 --plot lat.png --json run.json

Closed loop (``-c``, ``--pipeline``) or open loop (``--rate``, latency from the intended send);
docs/pages/benchmarks.md, "The load generator".  From Python:
``run_load(Config(workload="http", port=8000, count=1000)) -> Result``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import ipaddress
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # its own modules, and fibernet from the checkout

import _bench  # noqa: E402
from _load_engine import run_local, wait_for_go  # noqa: E402
from _load_stats import Progress, Result, dumps, plot, render  # noqa: E402
from _load_workloads import WORKLOADS, make_workload  # noqa: E402

CHILD_FLAG = "--_child"


@dataclass
class Config:
    workload: str = "echo"
    host: str = "127.0.0.1"
    port: int = 8000
    connections: int = 10
    duration: float | None = None
    count: int | None = None
    rate: float | None = None
    processes: int = 1
    size: int = 64
    line: str | None = None
    expect: str = "echo"
    method: str = "GET"
    path: str = "/"
    headers: list = field(default_factory=list)  # [(name, value)]
    body: str = ""
    keepalive: bool = True
    pipeline: int = 1
    timeout: float = 10.0
    allow_remote: bool = False
    progress: bool = False
    progress_interval: float = 1.0

    def validate(self) -> Config:
        if self.workload not in WORKLOADS:
            raise ValueError(f"workload must be one of {', '.join(WORKLOADS)}, not {self.workload!r}")
        if (self.duration is None) == (self.count is None):
            raise ValueError("give exactly one of duration and count: every run must stop by itself")
        if self.duration is not None and not 0 < self.duration <= 24 * 3600:
            raise ValueError("duration must be > 0 and at most a day")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1")
        if self.connections < 1 or self.processes < 1:
            raise ValueError("connections and processes must be at least 1")
        if self.processes > self.connections:
            raise ValueError("every load process needs a connection: processes <= connections")
        if self.rate is not None and not self.rate > 0:
            raise ValueError("rate must be > 0 requests/s")
        if self.pipeline < 1:
            raise ValueError("pipeline depth must be at least 1")
        if self.timeout is None or not self.timeout > 0:
            raise ValueError("timeout must be > 0 (every wait is bounded)")
        if self.pipeline > 1 and (self.workload == "churn" or not self.keepalive):
            raise ValueError("pipelining needs kept connections (not churn, not --no-keepalive)")
        if not self.allow_remote and not is_loopback(self.host):
            raise ValueError(f"{self.host} is not a loopback address (pass allow_remote / --allow-remote)")
        make_workload(self)  # checks the workload's own options
        return self

    def describe(self) -> str:
        return make_workload(self).describe()

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["headers"] = [list(h) for h in self.headers]
        data["description"] = self.describe()
        return data


def is_loopback(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def child_configs(cfg: Config) -> list[Config]:
    """The configs of P load processes: connections, rate and count split between them."""
    p = cfg.processes
    share = lambda total, i: None if total is None else total // p + (i < total % p)  # noqa: E731
    rate = None if cfg.rate is None else cfg.rate / p
    out = [dataclasses.replace(cfg, processes=1, connections=share(cfg.connections, i),
                               count=share(cfg.count, i), rate=rate) for i in range(p)]
    return [c for c in out if c.count is None or c.count > 0]


# --------------------------------------------------------------------------
# running


def run_load(config: Config) -> Result:
    """Run the load ``config`` describes (in this process, or in ``processes`` children)
    and return the merged :class:`Result`."""
    cfg = config.validate()
    if cfg.processes == 1:
        progress = Progress() if cfg.progress else None
        emit = (lambda p: progress.show(p["elapsed"], p["ok"], p["errors"])) if progress else None
        try:
            part = run_local(cfg, emit)
        finally:
            if progress:
                progress.close()
        return Result.merge(cfg.to_dict(), [part])
    return Result.merge(cfg.to_dict(), run_children(cfg))


def run_children(cfg: Config) -> list[dict]:
    """Run ``cfg`` in load processes (``load.py --_child``, a JSON line each way): started
    together once all are connected, their progress summed, their records returned."""
    configs = child_configs(cfg)
    command = [sys.executable, os.path.abspath(__file__), CHILD_FLAG]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True}
    procs = [subprocess.Popen(command, **pipes) for _ in configs]
    events: queue.Queue = queue.Queue()

    def read(i: int, proc: subprocess.Popen) -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.startswith("{"):
                events.put((i, json.loads(line)))
        events.put((i, None))

    readers = [threading.Thread(target=read, args=x, daemon=True) for x in enumerate(procs)]
    parts: dict[int, dict] = {}
    progress = Progress() if cfg.progress else None
    try:
        for proc, child, reader in zip(procs, configs, readers, strict=True):
            send(proc, json.dumps(dataclasses.asdict(child)))
            reader.start()
        ready: set[int] = set()
        ended: set[int] = set()
        latest: dict[int, dict] = {}
        shown = 0
        while len(ended) < len(procs):
            i, event = events.get()
            if event is None:
                ended.add(i)
                if i not in ready:
                    break  # a child died before it was ready: nothing to wait for
            elif "ready" in event:
                ready.add(i)
                if len(ready) == len(procs):  # all connected: start together
                    for proc in procs:
                        send(proc, "go")
            elif "progress" in event:
                latest[i] = event["progress"]
                tick = min(p["tick"] for p in latest.values())
                if progress and len(latest) == len(procs) and tick > shown:  # all have reported it
                    shown = tick
                    snap = latest.values()
                    ok, errors = sum(p["ok"] for p in snap), sum(p["errors"] for p in snap)
                    progress.show(tick * cfg.progress_interval, ok, errors)
            elif "part" in event:
                parts[i] = event["part"]
    finally:
        if progress:
            progress.close()
        for proc in procs:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # type: ignore[union-attr]
        for proc in procs:
            try:
                proc.wait(timeout=cfg.timeout + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()  # type: ignore[union-attr]
        for t in readers:
            t.join(5)
    if failed := [i for i in range(len(procs)) if i not in parts]:
        codes = ", ".join(f"#{i} exit {procs[i].returncode}" for i in failed)
        raise RuntimeError(f"load process(es) {codes} gave no result (see their output above)")
    return [parts[i] for i in sorted(parts)]


def send(proc: subprocess.Popen, line: str) -> None:
    proc.stdin.write(line + "\n")  # type: ignore[union-attr]
    proc.stdin.flush()  # type: ignore[union-attr]


def child_main() -> int:
    """``load.py --_child``: config on the first stdin line; JSON lines on stdout:
    {"ready"}, then {"progress"} every progress_interval, then {"part"}."""
    cfg = Config(**json.loads(sys.stdin.buffer.readline()))
    cfg.headers = [tuple(h) for h in cfg.headers]

    def say(obj: dict) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def before_start() -> None:
        say({"ready": True})
        wait_for_go()

    part = run_local(cfg, lambda p: say({"progress": p}), before_start)
    say({"part": part})
    return 0


# --------------------------------------------------------------------------
# command line


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"a header is 'name: value', not {text!r}")
    return name.strip(), value.strip()


def parse_args(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="load.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Every run stops by itself: --duration (default 10 s) or --count.")
    p.add_argument("--workload", "-w", choices=WORKLOADS, default="echo")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", "-p", type=int, required=True)
    p.add_argument("--connections", "-c", type=int, default=10)
    bound = p.add_mutually_exclusive_group()
    bound.add_argument("--duration", "-d", type=float, help="seconds (default 10 if no --count)")
    bound.add_argument("--count", "-n", type=int, help="requests in all (attempts: failed connects count)")
    p.add_argument("--rate", "-r", type=float, help="open loop: requests/s over all connections")
    p.add_argument("--processes", "-P", type=int, default=1, help="load processes (default 1)")
    p.add_argument("--size", "-s", type=int, default=64, help="echo/churn message, line length (bytes)")
    p.add_argument("--line", help="line workload: the request line (default: generated, --size bytes)")
    p.add_argument("--expect", default="echo", help="line workload: 'echo' (default), 'any' or a line")
    p.add_argument("--method", "-m", default="GET")
    p.add_argument("--path", default="/")
    p.add_argument("--header", "-H", dest="headers", type=_header, action="append", default=[],
                   metavar="'NAME: VALUE'")
    p.add_argument("--body", default="", help="HTTP request body (text)")
    p.add_argument("--keepalive", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--pipeline", type=int, default=1, help="requests in flight per connection")
    p.add_argument("--timeout", type=float, default=10.0, help="bound of each socket wait (s)")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")
    p.add_argument("--json", metavar="PATH", help="write the result as JSON ('-': stdout)")
    p.add_argument("--plot", metavar="FILE.png", help="latency percentiles and throughput over time")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--progress-interval", type=float, default=1.0)
    args = p.parse_args(argv)
    if args.duration is None and args.count is None:
        args.duration = 10.0
    if args.progress is None:
        args.progress = sys.stderr.isatty()
    cfg = Config(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Config)})
    try:
        cfg.validate()
    except ValueError as exc:
        p.error(str(exc))
    return cfg, args


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    started = time.time()
    result = run_load(cfg)
    table = render(result)
    print(table, file=sys.stderr if args.json == "-" else sys.stdout, flush=True)
    if args.json:
        extra = {
            "command": _bench.command_line(), "environment": _bench.environment(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        }
        text = dumps(result, extra)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as fh:
                fh.write(text + "\n")
    if args.plot:
        try:
            plot(result, args.plot)
        except ImportError:
            print("--plot needs matplotlib: pip install 'fibernet[loadtest]'", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CHILD_FLAG:
        sys.exit(child_main())
    sys.exit(main())

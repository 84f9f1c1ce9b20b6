"""Bus benchmark: cross-process pub/sub over its own redis-server (or --url), fibernet's bus
against redis-py (pubsub flat out, pubsub-paced at --rate), and a remote actor call against a
local one (call).  docs/pages/benchmarks.md, "Bus".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # its own modules, and fibernet from the checkout

import _bench  # noqa: E402

TOPIC = "bench"
TIMEOUT = 5.0


def percentiles(seconds: list[float]) -> dict:
    us = [s * 1e6 for s in seconds] * (2 if len(seconds) == 1 else 1)  # (quantiles want two)
    q = statistics.quantiles(us, n=100, method="inclusive")
    return {"p50_us": q[49], "p90_us": q[89], "p99_us": q[98], "max_us": max(us)}


def paced(n: int, rate: float | None, sleep, send) -> float:
    """``send(i)`` n times, at ``rate`` per second (or flat out); the rate offered."""
    start = time.monotonic()
    for i in range(n):
        if rate is not None and (ahead := start + i / rate - time.monotonic()) > 0:
            sleep(ahead)
        send(i)
    return n / (time.monotonic() - start)


def received(n: int, get) -> dict:
    """n messages from ``get()``, each with its latency from its stamp."""
    print("ready", flush=True)
    lat, first = [], None
    for _ in range(n):
        t = get()["t"]
        lat.append(time.monotonic() - t)
        first = t if first is None else first
    return {"seconds": time.monotonic() - first, "lat": lat}


# -- the child: a subscriber, or the host of the remote actor ---------------------------------


def child_fibernet(url: str, n: int) -> dict:
    import fibernet as fn
    import fibernet.bus as fb

    def main() -> dict:
        bus = fb.connect(url, wait=10)
        result = received(n, bus.subscribe(TOPIC, capacity=n + 1).get)
        bus.close()
        return {**result, "lost": bus.stats["lost"]}

    return fn.run(main)


def child_redispy(url: str, n: int) -> dict:
    import redis

    with redis.Redis.from_url(url) as r, r.pubsub() as p:
        p.subscribe(TOPIC)
        p.get_message(timeout=10)  # the subscribe confirmation
        messages = (json.loads(m["data"]) for m in p.listen() if m["type"] == "message")
        return {**received(n, messages.__next__), "lost": 0}


def child_host(url: str, n: int) -> dict:
    import fibernet as fn
    import fibernet.bus as fb
    from fibernet.actors import start
    from fibernet.net.threadpool import run_in_thread

    def main() -> dict:
        bus = fb.connect(url, wait=10)
        bus.register(start(lambda mailbox: [m.reply(m.body) for m in mailbox], name="bench-echo"))
        print("ready", flush=True)
        run_in_thread(sys.stdin.readline)  # until the parent is done
        bus.close()
        return {}

    return fn.run(main)


CHILDREN = {"fibernet": child_fibernet, "redis-py": child_redispy, "host": child_host}


def start_child(kind: str, url: str, n: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, __file__, "--child", kind, url, str(n)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    if (line := proc.stdout.readline().strip()) != "ready":
        proc.kill()
        raise RuntimeError(f"child {kind} did not start: {line!r}")
    return proc


def finish_child(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=120)
    return json.loads(out.strip().splitlines()[-1])


# -- the parent: publishers and callers ----------------------------------------------------------


def publish_fibernet(url: str, n: int, rate: float | None) -> float:
    import fibernet as fn
    import fibernet.bus as fb

    def main() -> float:
        bus = fb.connect(url, wait=10)

        def send(i: int) -> None:
            while not bus.publish(TOPIC, {"t": time.monotonic(), "i": i}):
                fn.yield_now()  # the outbox is full: let the connection's fiber send

        sent = paced(n, rate, fn.sleep, send)
        bus.close()  # sends what is queued, then closes
        return sent

    return fn.run(main)


def publish_redispy(url: str, n: int, rate: float | None) -> float:
    import redis

    with redis.Redis.from_url(url) as r:
        send = lambda i: r.publish(TOPIC, json.dumps({"t": time.monotonic(), "i": i}))  # noqa: E731
        return paced(n, rate, time.sleep, send)


def run_pubsub(impl: str, url: str, n: int, rate: float | None = None) -> dict:
    proc = start_child(impl, url, n)
    sent = (publish_fibernet if impl == "fibernet" else publish_redispy)(url, n, rate)
    result = finish_child(proc)
    return {"workload": "pubsub" if rate is None else "pubsub-paced", "impl": impl, "n": n,
            "rate": n / result["seconds"], "sent": sent, "lost": result["lost"], **percentiles(result["lat"])}


def run_calls(url: str, n: int) -> list[dict]:
    import fibernet as fn
    import fibernet.bus as fb
    from fibernet.actors import start

    proc = start_child("host", url, n)

    def main() -> dict[str, list[float]]:
        bus = fb.connect(url, wait=10)
        local = start(lambda mailbox: [m.reply(m.body) for m in mailbox], name="local-echo")
        times: dict[str, list[float]] = {"remote": [], "local": []}
        for name, ref in (("remote", bus.whereis("bench-echo")), ("local", local)):
            for i in range(n):
                t0 = time.perf_counter()
                assert ref.call(i, timeout=TIMEOUT) == i
                times[name].append(time.perf_counter() - t0)
        local.stop()
        bus.close()
        return times

    times = fn.run(main)
    proc.stdin.write("done\n")
    proc.stdin.flush()
    finish_child(proc)
    return [{"workload": "call", "impl": f"fibernet-{name}", "n": n, "rate": n / sum(t), **percentiles(t)}
            for name, t in times.items()]


def start_redis(directory: str) -> tuple[subprocess.Popen, str]:
    port = _bench.free_port()
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    options = ["--bind", "127.0.0.1", "--dir", directory, "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen([exe, "--port", str(port), *options], stdout=subprocess.DEVNULL)
    for _ in range(500):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: small N")
    parser.add_argument("--messages", type=int, default=None, help="messages per pub/sub run (50,000)")
    parser.add_argument("--calls", type=int, default=None, help="calls per call run (5,000)")
    parser.add_argument("--rate", type=float, default=2000.0, help="messages per second, pubsub-paced")
    parser.add_argument("--url", default=None, help="use this Redis instead of starting one")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    messages = args.messages or (2_000 if args.quick else 50_000)
    calls = args.calls or (200 if args.quick else 5_000)
    print(f"$ {_bench.command_line()}", flush=True)
    with tempfile.TemporaryDirectory() as directory:
        redis_proc, url = (None, args.url) if args.url else start_redis(directory)
        try:
            rows = [run_pubsub(impl, url, messages) for impl in ("fibernet", "redis-py")]
            rows += [run_pubsub(impl, url, messages // 5, args.rate) for impl in ("fibernet", "redis-py")]
            rows += run_calls(url, calls)
        finally:
            if redis_proc is not None:
                redis_proc.kill()
                redis_proc.wait()
    num = lambda r, key: _bench.fmt_num(r[key]) if key in r else "-"  # noqa: E731
    keys = ("rate", "sent", "p50_us", "p90_us", "p99_us", "max_us")
    table = [[r["workload"], r["impl"], r["n"], *(num(r, k) for k in keys), r.get("lost", "-")] for r in rows]
    headers = ["workload", "impl", "n", "per second", "sent/s", *(f"{k[:-3]} us" for k in keys[2:]), "lost"]
    print(_bench.format_table(headers, table))
    _bench.save_json(args.json, {"environment": _bench.environment(), "results": rows})
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(CHILDREN[sys.argv[2]](sys.argv[3], int(sys.argv[4]))), flush=True)
        sys.exit(0)
    sys.exit(main())

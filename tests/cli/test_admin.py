"""``fibernet serve --admin-port`` and ``fibernet inspect`` against real processes, in one
process and with ``--workers 2`` (where the supervisor serves the workers' snapshots).

The snapshots behind /metrics and /fibers are taken once a second, so a test that waits for a
change there (a connection now open, a fiber now blocked) asks again until it shows, with a
deadline (``until``); everything else waits on log lines and answers.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from .conftest import WORKER_APP, connect, http_get, read_line, until

pytestmark = pytest.mark.timeout(20)

READY = r"worker (\d+) ready \(generation 0\)"


@pytest.fixture
def app(app_dir):
    return app_dir.module(WORKER_APP.format(version="one"))


@pytest.fixture
def admin_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(serve_process, app, app_dir, free_port, admin_port):
    """``start(workers)``: the server and the pids of the processes that serve (the server
    itself, or its workers), once the admin endpoint and the app are ready."""

    def start(workers: int = 1, *extra: str):
        proc = serve_process(f"{app}:handle", "--app-dir", str(app_dir.path), "--port", str(free_port),
                             "--admin-port", str(admin_port), "--workers", str(workers), *extra,
                             own_group=True)
        if workers == 1:
            proc.wait_for(f"serving admin on 127.0.0.1:{admin_port}")
            proc.wait_for(f"serving {app}:handle on 127.0.0.1:{free_port}")
            pids = {proc.proc.pid}
        else:
            pids = {int(m.group(1)) for m in proc.wait_lines(READY, count=workers)}
        return proc, pids

    start.port = free_port
    start.admin = admin_port
    return start


def families(text: str) -> dict[str, Metric]:
    """Prometheus text, parsed by prometheus_client's own parser: {family name: family}.  Every
    family has its HELP and TYPE; a counter's samples end in _total."""
    assert text.endswith("\n")
    found = {}
    for family in text_string_to_metric_families(text):
        assert family.name not in found, f"{family.name} twice"
        assert family.documentation and family.type in ("gauge", "counter", "histogram"), family
        if family.type == "counter":
            assert all(s.name == family.name + "_total" for s in family.samples), family.samples
        found[family.name] = family
    return found


def parse_metrics(text: str) -> dict[str, dict[int, float]]:
    """The per-worker samples: {sample name: {pid: value}} (one sample per worker each)."""
    metrics: dict[str, dict[int, float]] = {}
    for family in families(text).values():
        for sample in family.samples:
            if set(sample.labels) != {"worker"}:
                continue
            pid = int(sample.labels["worker"])
            assert pid not in metrics.setdefault(sample.name, {}), f"two samples of {sample.name} for {pid}"
            metrics[sample.name][pid] = sample.value
    return metrics


def metrics(port: int) -> dict[str, dict[int, float]]:
    status, content_type, body = http_get(port, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    return parse_metrics(body.decode())


def fibers(port: int) -> list[dict]:
    status, content_type, body = http_get(port, "/fibers")
    assert status == 200 and content_type.startswith("application/json")
    return json.loads(body)


@pytest.mark.parametrize("workers", [1, 2])
def test_healthz_readyz_metrics_and_fibers(server, workers):
    proc, pids = server(workers)
    assert http_get(server.admin, "/healthz")[::2] == (200, b"ok\n")
    assert http_get(server.admin, "/readyz")[::2] == (200, b"ready\n")
    assert http_get(server.admin, "/nothing")[0] == 404

    # One series per worker (each worker's first snapshot reaches the supervisor within a second).
    found = until(lambda: (m := metrics(server.admin)) and set(m["fibernet_connections_open"]) == pids and m,
                  "a series for every worker")
    for name, series in found.items():
        assert set(series) == pids, (name, series)
    for name in ("connections_open", "connections_accepted_total", "received_bytes_total",
                 "sent_bytes_total", "fibers", "schedulers", "draining"):
        assert f"fibernet_{name}" in found
    assert all(v == 0 for v in found["fibernet_draining"].values())
    assert all(v == 1 for v in found["fibernet_schedulers"].values())

    # A connection held open shows in fibernet_connections_open of the worker that took it.
    with connect(server.port) as held:
        pid = int(read_line(held).split()[0])
        assert pid in pids
        until(lambda: metrics(server.admin)["fibernet_connections_open"] == {p: int(p == pid) for p in pids},
              "the open connection in the metrics")
    until(lambda: all(v == 0 for v in metrics(server.admin)["fibernet_connections_open"].values()),
          "the closed connection gone from the metrics")
    accepted = metrics(server.admin)["fibernet_connections_accepted_total"]
    assert accepted[pid] >= 1

    snaps = fibers(server.admin)
    assert {s["pid"] for s in snaps} == pids
    for snap in snaps:
        assert snap["schedulers"] and snap["schedulers"][0]["name"]
        assert snap["fibers_total"] == len(snap["fibers"]) > 0
        names = {f["name"] for f in snap["fibers"]}
        assert any(name.endswith(f":accept@{snap['schedulers'][0]['name']}") for name in names), names
        assert not snap["draining"]

    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(15) == 0, proc.log
    assert "Traceback" not in proc.log


def test_metrics_stay_current_with_a_thousand_connections(server):
    """With a thousand connection fibers a worker's snapshot is larger than a pipe holds by
    default (64 KiB); it must still reach the supervisor whole, so /metrics counts them all."""
    proc, pids = server(2)
    conns: list[socket.socket] = []
    try:
        for _ in range(1000):
            conns.append(connect(server.port))
        by_pid = {p: 0 for p in pids}
        for c in conns:
            by_pid[int(read_line(c).split()[0])] += 1
        until(lambda: metrics(server.admin)["fibernet_connections_open"] == by_pid,
              f"{by_pid} open connections in the metrics")
        assert sum(s["fibers_total"] for s in fibers(server.admin)) > 1000
    finally:
        for c in conns:
            c.close()
    until(lambda: set(metrics(server.admin)["fibernet_connections_open"].values()) == {0},
          "the connections closed in the metrics")
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(15) == 0, proc.log


@pytest.mark.parametrize("workers", [1, 2])
def test_readyz_is_503_while_draining(server, workers):
    proc, pids = server(workers, "--graceful-timeout", "15")
    with connect(server.port) as slow:
        pid = int(read_line(slow).split()[0])
        slow.sendall(b"slow\n")
        assert read_line(slow) == b"started\n"
        status, _, body = http_get(server.admin, "/readyz")
        assert (status, body) == (200, b"ready\n")
        proc.proc.send_signal(signal.SIGTERM)
        proc.wait_for(f"[{pid}] fibernet.server: draining 1 connection(s)")
        conn_status = http_get(server.admin, "/readyz")
        assert conn_status[::2] == (503, b"draining\n")
        assert http_get(server.admin, "/healthz")[0] == 200  # alive, only not ready
        if workers == 1:
            until(lambda: metrics(server.admin)["fibernet_draining"] == {pid: 1}, "draining in the metrics")
            assert fibers(server.admin)[0]["draining"] is True
        slow.sendall(b"go\n")
        assert read_line(slow) == b"finished\n"
    assert proc.proc.wait(15) == 0, proc.log
    assert "Traceback" not in proc.log


def test_admin_status_lines_carry_the_reason(server):
    """The supervisor answers admin requests itself: a 503 says "Service Unavailable"."""
    proc, _ = server(2)
    for path, status, reason in (("/readyz", 200, "OK"), ("/nothing", 404, "Not Found")):
        with socket.create_connection(("127.0.0.1", server.admin), timeout=10) as c:
            c.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
            assert read_line(c) == f"HTTP/1.1 {status} {reason}\r\n".encode()
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(15) == 0, proc.log


def test_a_slow_admin_client_does_not_stall_the_supervisor(server):
    """The supervisor reads admin requests itself, in its loop, without blocking: a client
    that sends a byte now and then must not keep it from its signals (and is dropped at its
    1 s deadline)."""
    proc, _ = server(2, "--graceful-timeout", "5")
    stop, reading = threading.Event(), threading.Event()

    def trickle():
        with socket.create_connection(("127.0.0.1", server.admin), timeout=10) as c:
            for i, byte in enumerate(b"GET /healthz HTTP/1.1\r\nhost: x\r\n"):
                try:
                    c.send(bytes([byte]))
                except OSError:
                    return
                if i == 2:
                    reading.set()
                if stop.wait(0.2):  # a slow client, on purpose: a byte every 0.2 s
                    return

    t = threading.Thread(target=trickle, name="trickle")
    t.start()
    try:
        assert reading.wait(10)
        t0 = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(10) == 0, proc.log
        assert time.monotonic() - t0 < 4, "the slow admin client held the supervisor up"
        proc.wait_for("supervisor: SIGTERM, stopping 2 worker(s)")
    finally:
        stop.set()
        t.join(10)


# -- fibernet inspect -------------------------------------------------------------------------------


def inspect(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fibernet_cli.main", "inspect", *args],
                          capture_output=True, text=True, timeout=15, stdin=subprocess.DEVNULL)


def rows(output: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in output.splitlines()]


@pytest.mark.parametrize("workers", [1, 2])
def test_inspect_shows_schedulers_and_fibers_with_what_they_wait_on(server, app, workers):
    proc, pids = server(workers)
    with connect(server.port) as blocked:
        pid = int(read_line(blocked).split()[0])  # the handler now waits in recv for a line
        conn_fiber = f"{app}:handle:conn 127.0.0.1:{blocked.getsockname()[1]}"

        def blocked_in_recv():
            snap = next((s for s in fibers(server.admin) if s["pid"] == pid), None)
            row = snap and next((f for f in snap["fibers"] if f["name"] == conn_fiber), None)
            return row if row and (row["waiting_on"] or "").startswith("readable fd") else None

        until(blocked_in_recv, "the connection's fiber blocked in recv")
        result = inspect("--admin", f"127.0.0.1:{server.admin}")
        assert result.returncode == 0, result.stderr
        out = result.stdout
        for p in pids:
            assert re.search(rf"^worker {p}: \d+ fibers$", out, re.M), out
        assert re.search(r"^  scheduler \S+: \d+ fibers, \d+ runnable, \d+ timers, \d+ descriptors$", out,
                         re.M), out
        assert ["FIBER", "STATE", "SCHEDULER", "WAITING ON", "FOR"] in rows(out), out
        row = next(r for r in rows(out) if r[0] == conn_fiber)
        assert row[1] == "suspended", row
        fd = re.fullmatch(r"readable fd (\d+)", row[3])
        assert fd, row
        assert re.fullmatch(r"\d+\.\ds", row[4]), row
        # The descriptor it names is a socket of the worker that holds the connection.
        assert os.readlink(f"/proc/{pid}/fd/{fd.group(1)}").startswith("socket:")

        as_json = inspect("--admin", f"127.0.0.1:{server.admin}", "--json")
        assert as_json.returncode == 0, as_json.stderr
        assert {s["pid"] for s in json.loads(as_json.stdout)} == pids
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(15) == 0, proc.log


def test_inspect_with_nothing_listening_exits_1_with_a_clear_error(free_port):
    result = inspect("--admin", f"127.0.0.1:{free_port}")
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"Error: cannot read http://127.0.0.1:{free_port}/fibers: " in result.stderr
    assert "Connection refused" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("address", ["127.0.0.1:notaport", "127.0.0.1", ":9100", "127.0.0.1:70000"])
def test_inspect_with_an_address_that_is_not_host_port_exits_2(address):
    result = inspect("--admin", address)
    assert result.returncode == 2
    assert f"Invalid value for '--admin': '{address}' is not host:port" in result.stderr
    assert "Traceback" not in result.stderr


def test_inspect_pointed_at_a_port_that_does_not_speak_http_exits_1(server, app):
    """The app's own port (a TCP greeting, then an echo) instead of the admin port."""
    proc, _ = server(1)
    result = inspect("--admin", f"127.0.0.1:{server.port}")
    assert result.returncode == 1
    assert f"Error: cannot read http://127.0.0.1:{server.port}/fibers: not an HTTP answer" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(15) == 0, proc.log


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_an_admin_port_in_use_exits_2_with_a_message(serve_process, app, app_dir, free_port, workers):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        proc = serve_process(f"{app}:handle", "--app-dir", str(app_dir.path), "--port", str(free_port),
                             "--admin-port", str(port), "--workers", str(workers), own_group=True)
        assert proc.proc.wait(10) == 2, proc.log
        proc.wait_eof()
    assert f"127.0.0.1:{port} is already in use" in proc.log
    assert "--admin-port" in proc.log
    assert "Traceback" not in proc.log and "started worker" not in proc.log, proc.log


@pytest.mark.parametrize("workers", [1, 2])
def test_an_admin_host_that_is_not_local_exits_2_with_a_message(serve_process, app, app_dir, free_port,
                                                                 admin_port, workers):
    proc = serve_process(f"{app}:handle", "--app-dir", str(app_dir.path), "--port", str(free_port),
                         "--admin-port", str(admin_port), "--admin-host", "192.0.2.1",  # TEST-NET-1
                         "--workers", str(workers), own_group=True)
    assert proc.proc.wait(10) == 2, proc.log
    proc.wait_eof()
    assert f"cannot listen on 192.0.2.1:{admin_port}" in proc.log
    assert "Traceback" not in proc.log, proc.log


# -- the supervisor's admin port: concurrent, bounded, never in the way of the workers --------------


def test_idle_admin_connections_delay_neither_healthz_nor_a_worker_replacement(server):
    """Idle connections to the admin port (a port scanner, a stuck probe) each wait for their
    own deadline (1 s); /healthz on another connection is answered at once, and a worker
    killed meanwhile is replaced after its back-off (0.1 s), not after theirs."""
    proc, pids = server(2)
    idle = [socket.create_connection(("127.0.0.1", server.admin), timeout=10) for _ in range(10)]
    try:
        status, _, body = http_get(server.admin, "/healthz", timeout=2.0)  # 10 s when served in turn
        assert (status, body) == (200, b"ok\n")
        idle += [socket.create_connection(("127.0.0.1", server.admin), timeout=10) for _ in range(10)]
        victim = min(pids)
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        proc.wait_for(f"worker {victim} died (killed by SIGKILL)")
        replacement = int(proc.wait_lines(r"started worker (\d+) \(generation 0\)", count=3)[2].group(1))
        assert time.monotonic() - killed < 3, "the replacement waited for the idle admin connections"
        proc.wait_for(f"worker {replacement} ready")
        for c in idle:  # each dropped at its deadline: bounded, not held
            assert c.recv(16) == b""
    finally:
        for c in idle:
            c.close()
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(15) == 0, proc.log
    assert "Traceback" not in proc.log


def _http_server(serve_process, app, app_dir, port, admin, workers, *extra):
    proc = serve_process(f"{app}:app", "--protocol", "http", "--app-dir", str(app_dir.path), "--port",
                         str(port), "--admin-port", str(admin), "--workers", str(workers), *extra,
                         own_group=True)
    if workers == 1:
        proc.wait_for(f"serving {app}:app on 127.0.0.1:{port}")
        return proc, {proc.proc.pid}
    return proc, {int(m.group(1)) for m in proc.wait_lines(READY, count=workers)}


def _total(family: Metric, suffix: str, **labels: str) -> float:
    return sum(s.value for s in family.samples
               if s.name == family.name + suffix and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_count_requests_by_status_class_and_their_latency(serve_process, app, app_dir, free_port,
                                                                 admin_port, workers):
    proc, pids = _http_server(serve_process, app, app_dir, free_port, admin_port, workers)
    for _ in range(30):
        assert http_get(free_port, "/")[0] == 200
    bad = socket.create_connection(("127.0.0.1", free_port), timeout=10)
    with bad:
        bad.sendall(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
        assert read_line(bad).startswith(b"HTTP/1.1 400")

    def counted():
        found = families(http_get(admin_port, "/metrics")[2].decode())
        requests = found["fibernet_http_requests"]
        if _total(requests, "_total", status="2xx") == 30 and _total(requests, "_total", status="4xx") == 1:
            return found
        return None

    found = until(counted, "30 requests answered 200 and one 400 in the metrics")
    requests, latency = found["fibernet_http_requests"], found["fibernet_http_request_duration_seconds"]
    assert requests.type == "counter" and latency.type == "histogram"
    assert {s.labels["worker"] for s in requests.samples} == {str(p) for p in pids}
    assert {s.labels["status"] for s in requests.samples} == {"1xx", "2xx", "3xx", "4xx", "5xx"}
    assert _total(requests, "_total", status="5xx") == 0
    # The histogram: cumulative buckets up to +Inf, which is the count; the 30 answered requests.
    assert _total(latency, "_count") == 30
    assert 0 < _total(latency, "_sum") < 30 * 10
    for pid in pids:
        buckets = [(s.labels["le"], s.value) for s in latency.samples
                   if s.name.endswith("_bucket") and s.labels["worker"] == str(pid)]
        assert buckets[-1][0] == "+Inf"
        assert [v for _, v in buckets] == sorted(v for _, v in buckets), buckets
        assert buckets[-1][1] == _total(latency, "_count", worker=str(pid))
    assert ("fibernet_worker_restarts" in found) == (workers > 1)  # only a supervisor restarts workers
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(15) == 0, proc.log


def test_metrics_count_worker_restarts_by_cause(serve_process, app, app_dir, free_port, admin_port):
    proc, pids = _http_server(serve_process, app, app_dir, free_port, admin_port, 2)

    def restarts() -> dict[str, float]:
        family = families(http_get(admin_port, "/metrics")[2].decode())["fibernet_worker_restarts"]
        return {s.labels["cause"]: s.value for s in family.samples}

    assert restarts() == {"killed": 0, "failed": 0, "exited": 0, "reload": 0}
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    proc.wait_for(f"worker {victim} died (killed by SIGKILL)")
    assert restarts() == {"killed": 1, "failed": 0, "exited": 0, "reload": 0}
    proc.wait_lines(READY, count=3)
    other = max(pids)
    os.kill(other, signal.SIGTERM)  # a worker that ends on its own, cleanly
    proc.wait_for(f"worker {other} exited on its own")
    assert restarts() == {"killed": 1, "failed": 0, "exited": 1, "reload": 0}
    proc.wait_lines(READY, count=4)
    proc.proc.send_signal(signal.SIGHUP)
    proc.wait_lines(r"retiring worker \d+ of generation 0", count=2)
    assert restarts() == {"killed": 1, "failed": 0, "exited": 1, "reload": 2}
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(15) == 0, proc.log


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_a_supervisor_out_of_descriptors_does_not_spin_on_its_admin_port(server):
    """With no descriptor left for an admin connection, it stays queued and the port stays
    readable: the supervisor must look again later, not poll it in a loop (a CPU at 100 %);
    once the idle connections are dropped at their deadline, the port answers again."""
    proc, _ = server(2)
    pid = proc.proc.pid
    open_now = len(os.listdir(f"/proc/{pid}/fd"))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (open_now + 2, hard))
    idle = [socket.create_connection(("127.0.0.1", server.admin), timeout=10) for _ in range(6)]
    try:
        until(lambda: len(os.listdir(f"/proc/{pid}/fd")) >= open_now + 2, "the supervisor out of descriptors")
        before, t0 = _cpu_seconds(pid), time.monotonic()
        time.sleep(0.5)  # a window of time is what is measured here
        used = (_cpu_seconds(pid) - before) / (time.monotonic() - t0)
        assert used < 0.5, f"the supervisor used {used:.0%} of a CPU while out of descriptors"
    finally:
        for c in idle:
            c.close()
    until(lambda: http_get(server.admin, "/healthz", timeout=5)[::2] == (200, b"ok\n"), "/healthz again")
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(15) == 0, proc.log

"""deploy/haproxy/haproxy.cfg with a real HAProxy (Debian's 2.6) in front of two real fibernet
instances, all on loopback.  HAProxy runs the shipped file unchanged: the addresses come from
the environment variables it reads (FRONTEND_BIND is a listening socket this test made and
passes as a descriptor, FIBERNET1/FIBERNET2 the instances' ports).

Instance one runs `fibernet.examples.hello:app` itself; instance two runs a module written to
tmp_path that answers as hello does plus an ``x-instance: two`` header, which tells them apart.

1. requests are spread over both;
2. SIGTERM to one instance while clients send keep-alive requests through HAProxy: not one
   request fails (with a 5 s grace period, and with none: every connection cut at once);
3. the instance started again on its port is back in rotation, under load, without a failure;
4. the TCP service (``listen tcp-service``, send-proxy-v2) gives a ``--proxy-protocol`` fibernet
   the client's address, and the HTTP frontend's X-Forwarded-For is taken by an instance that
   trusts HAProxy (the default 127.0.0.1) and ignored by one that does not.  The clients there
   connect from 127.0.0.2, so their address is not HAProxy's.
"""

from __future__ import annotations

import collections
import http.client
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from .conftest import DEPLOY, need_tool

pytestmark = pytest.mark.timeout(90)

CONFIG = DEPLOY / "haproxy" / "haproxy.cfg"
HELLO = b"Hello, World!"
GRACE = 5.0

INSTANCE_TWO = '''\
"""hello, plus a header saying which instance answered."""
from fibernet.examples.hello import PROTOCOL, app as hello
from fibernet.http import Response


def app(request):
    response = hello(request)
    headers = [*response.headers.items(), ("x-instance", "two")]
    return Response(response.status, response.body, headers=headers)
'''

# HAProxy's httplog line: ... act/fe/be/srv/retries (a "+" before retries: redispatched) ...
RETRIES = re.compile(r" \d+/\d+/\d+/\d+/(\+?)(\d+) \d+/\d+ \"")


def down(server: str) -> str:
    return rf"Server fibernet/{server} is DOWN"


def up(server: str) -> str:
    return rf"Server fibernet/{server} is UP"


@pytest.fixture
def haproxy_exe():
    return need_tool("haproxy", "apt-get install -y haproxy")


@pytest.fixture
def cluster(haproxy_exe, fibernet, procs, tmp_path):
    """Two fibernet instances and HAProxy in front; returns a namespace of the three."""
    (tmp_path / "instance_two.py").write_text(INSTANCE_TWO)
    common = ("--keepalive-timeout", "5", "--threads", "1")

    class Cluster:
        def start_one(self, port: int = 0, grace: float = GRACE):
            return fibernet("fibernet.examples.hello:app", *common, "--graceful-timeout", str(grace),
                            port=port, name="fibernet-one")

        def start_two(self, port: int = 0, grace: float = GRACE):
            return fibernet("instance_two:app", *common, "--graceful-timeout", str(grace),
                            "--app-dir", str(tmp_path), port=port, name="fibernet-two")

        def start_haproxy(self, tcp_service: int | None = None):
            """HAProxy in front of instances one and two (HTTP), and of ``tcp_service`` (a
            port) for its TCP service -- without one, of a port where nothing listens."""
            with socket.create_server(("127.0.0.1", 0), backlog=1024) as front, \
                    socket.create_server(("127.0.0.1", 0), backlog=1024) as tcp_front:
                self.port = front.getsockname()[1]
                self.tcp_port = tcp_front.getsockname()[1]
                tcp = f"127.0.0.1:{tcp_service or closed_port()}"
                env = {**os.environ, "FRONTEND_BIND": f"fd@{front.fileno()}",
                       "FIBERNET1": f"127.0.0.1:{self.one.port}", "FIBERNET2": f"127.0.0.1:{self.two.port}",
                       "TCP_FRONTEND_BIND": f"fd@{tcp_front.fileno()}", "FIBERNET_TCP1": tcp,
                       "FIBERNET_TCP2": tcp}
                self.haproxy = procs([haproxy_exe, "-f", str(CONFIG), "-db"], env=env,
                                     pass_fds=(front.fileno(), tcp_front.fileno()), name="haproxy")
            # HAProxy owns the listening sockets now; the copies here are closed.

    c = Cluster()
    c.tmp_path = tmp_path
    return c


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Load:
    """Clients in threads, each sending GET /hello over one keep-alive connection to HAProxy
    (a new one after a failure), until stopped -- or after ``limit`` seconds or ``max_requests``
    each, whatever comes first.  Every answer but a 200 "Hello, World!" is a failure."""

    def __init__(self, port: int, clients: int = 4, limit: float = 40.0, max_requests: int = 200_000) -> None:
        self.port = port
        self.limit = limit
        self.max_requests = max_requests
        self.by_instance: collections.Counter[str] = collections.Counter()
        self.failures: list[str] = []
        self.total = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, name=f"load-{i}") for i in range(clients)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)
        assert not any(t.is_alive() for t in self._threads), "a load thread did not stop"

    def _record(self, instance: str | None, failure: str | None) -> None:
        with self._cond:
            if failure is None:
                self.by_instance[instance] += 1
                self.total += 1
            else:
                self.failures.append(failure)
            self._cond.notify_all()

    def _client(self) -> None:
        deadline = time.monotonic() + self.limit
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            for _ in range(self.max_requests):
                if self._stop.is_set() or time.monotonic() > deadline:
                    break
                try:
                    conn.request("GET", "/hello")
                    response = conn.getresponse()
                    body = response.read()
                except Exception as exc:  # noqa: BLE001 - every way a request fails is counted
                    self._record(None, f"{time.monotonic():.3f} {exc!r}")
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                    continue
                if response.status != 200 or body != HELLO:
                    self._record(None, f"{time.monotonic():.3f} {response.status} {body[:200]!r}")
                else:
                    self._record(response.getheader("x-instance", "one"), None)
        finally:
            conn.close()

    def wait_until(self, predicate, what: str, timeout: float = 20.0) -> None:
        """Wait (on the clients' notifications, not by sleeping) until ``predicate(self)``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0 or not any(t.is_alive() for t in self._threads):
                    raise AssertionError(f"load: timed out waiting for {what}; "
                                         f"served {dict(self.by_instance)}, failures {self.failures[:5]}")
                self._cond.wait(left)

    def wait_more(self, count: int, timeout: float = 20.0) -> None:
        target = self.total + count
        self.wait_until(lambda load: load.total >= target, f"{count} more requests", timeout)

    def snapshot(self) -> collections.Counter[str]:
        with self._cond:
            return collections.Counter(self.by_instance)


def retried(haproxy) -> collections.Counter[str]:
    """How many requests HAProxy retried, by number of retries (+N: sent to another server)."""
    counts: collections.Counter[str] = collections.Counter()
    for line in haproxy.lines:
        match = RETRIES.search(line)
        if match and match.group(2) != "0":
            counts[match.group(1) + match.group(2)] += 1
    return counts


def test_config_is_valid(haproxy_exe):
    result = subprocess.run([haproxy_exe, "-c", "-f", str(CONFIG)], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_requests_are_spread_over_both_instances(cluster):
    cluster.one = cluster.start_one()
    cluster.two = cluster.start_two()
    cluster.start_haproxy()
    seen: collections.Counter[str] = collections.Counter()
    conn = http.client.HTTPConnection("127.0.0.1", cluster.port, timeout=10)
    try:
        for _ in range(40):
            conn.request("GET", "/hello")
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, HELLO)
            seen[response.getheader("x-instance", "one")] += 1
    finally:
        conn.close()
    # Round robin over a keep-alive client connection: every request is balanced anew.
    assert seen["one"] >= 10 and seen["two"] >= 10, seen


@pytest.mark.parametrize("grace", [GRACE, 0.0], ids=["grace-5s", "grace-0s"])
def test_sigterm_to_one_instance_under_load_fails_no_request(cluster, grace):
    cluster.one = cluster.start_one()
    cluster.two = cluster.start_two(grace=grace)
    cluster.start_haproxy()
    two = cluster.two
    with Load(cluster.port) as load:
        # Both instances are answering the clients before the stop.
        load.wait_until(lambda ld: min(ld.by_instance["one"], ld.by_instance["two"]) >= 200, "both serving")
        mark = cluster.haproxy.mark()
        two.send(signal.SIGTERM)
        two.wait_for(r"SIGTERM: draining")
        cluster.haproxy.wait_for(down("fibernet2"), timeout=10, start=mark)
        assert two.wait(grace + 10) == 0
        two.wait_for(r"server \S+ stopped")
        after_exit = load.snapshot()
        # The clients go on, through the one instance left.
        load.wait_more(1000)
        load.stop()
        assert load.failures == [], (f"{len(load.failures)} failed of {load.total + len(load.failures)}: "
                                     f"{load.failures[:10]}")
        assert load.by_instance["two"] == after_exit["two"]
        assert load.by_instance["one"] >= after_exit["one"] + 1000
    print(f"\n{grace=}: {load.total} requests, by instance {dict(load.by_instance)}, "
          f"HAProxy retries {dict(retried(cluster.haproxy))}")


def test_restarted_instance_is_back_in_rotation(cluster):
    cluster.one = cluster.start_one()
    cluster.two = cluster.start_two()
    port_two = cluster.two.port
    cluster.start_haproxy()
    mark = cluster.haproxy.mark()
    assert cluster.two.stop(signal.SIGTERM, timeout=GRACE + 10) == 0
    cluster.haproxy.wait_for(down("fibernet2"), timeout=10, start=mark)
    with Load(cluster.port) as load:
        load.wait_more(200)
        assert load.by_instance["two"] == 0
        mark = cluster.haproxy.mark()
        cluster.two = cluster.start_two(port=port_two)  # the same port: HAProxy's server address
        # HAProxy marks it up after "rise" good checks (~1 s with the config's downinter);
        # wait for its log line, then for the clients to get answers from it.
        cluster.haproxy.wait_for(up("fibernet2"), timeout=15, start=mark)
        load.wait_until(lambda ld: ld.by_instance["two"] >= 100, "answers from the restarted instance")
        load.wait_more(200)
        load.stop()
        assert load.failures == [], load.failures[:10]
    assert load.by_instance["one"] > 0 and load.by_instance["two"] >= 100


# -- the proxy in front: the client's address reaches fibernet -----------------------------------

WHOAMI = '''\
"""Who the client is, as fibernet sees it: over TCP a line with the peer address (then an
echo), over HTTP the request's client host and scheme."""
from fibernet.http import Response


def handle(conn):
    host, port = conn.getpeername()[:2]
    conn.sendall(f"{host} {port}\\n".encode())
    while data := conn.recv(65536):
        conn.sendall(data)


def app(request):
    return Response(200, f"{request.client[0]} {request.scheme}".encode())
'''

CLIENT_ADDRESS = "127.0.0.2"  # (all of 127/8 is loopback: a client address HAProxy's is not)


def from_client_address(port: int) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(10)
    sock.bind((CLIENT_ADDRESS, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def test_tcp_service_gets_the_client_address_in_a_proxy_v2_header(cluster, fibernet):
    (cluster.tmp_path / "whoami.py").write_text(WHOAMI)
    cluster.one = cluster.start_one()
    cluster.two = cluster.start_two()
    tcp = fibernet("whoami:handle", "--protocol", "tcp", "--proxy-protocol",
                   "--app-dir", str(cluster.tmp_path),
                   name="fibernet-tcp")
    cluster.start_haproxy(tcp_service=tcp.port)
    for _ in range(3):
        with from_client_address(cluster.tcp_port) as sock:
            reader = sock.makefile("rb")
            # The address and port of this very socket, not HAProxy's.
            assert reader.readline() == f"{CLIENT_ADDRESS} {sock.getsockname()[1]}\n".encode()
            sock.sendall(b"echo, untouched by the header\n")
            assert reader.readline() == b"echo, untouched by the header\n"
            reader.close()
    # HAProxy's health checks send a header too (LOCAL): not one connection failed it.
    assert "PROXY header from" not in "".join(tcp.lines)


def test_http_x_forwarded_for_from_haproxy_is_trusted_only_as_configured(cluster, fibernet):
    (cluster.tmp_path / "whoami.py").write_text(WHOAMI)
    common = ("--app-dir", str(cluster.tmp_path), "--protocol", "http")
    # One trusts HAProxy (127.0.0.1, the default); two trusts another proxy only.
    cluster.one = fibernet("whoami:app", *common, name="fibernet-one")
    cluster.two = fibernet("whoami:app", *common, "--forwarded-allow-ips", "10.9.9.9", name="fibernet-two")
    cluster.start_haproxy()
    answers = collections.Counter()
    for _ in range(20):
        with from_client_address(cluster.port) as sock:
            sock.sendall(b"GET /who HTTP/1.1\r\nHost: fibernet\r\nConnection: close\r\n\r\n")
            reader = sock.makefile("rb")
            answer = reader.read()
            reader.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer
        answers[answer.rpartition(b"\r\n\r\n")[2].decode()] += 1
    # Round robin: each instance answered, one with the client's address, two with HAProxy's.
    assert set(answers) == {f"{CLIENT_ADDRESS} http", "127.0.0.1 http"}, answers

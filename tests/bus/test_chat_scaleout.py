"""The chat example as one room over the bus: across two worker processes of one server, and
across two servers (instances); every line reaches every member, each sender's in order.
Also /readyz: 503 while the bus is lost, 200 again once it is back."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess

import pytest

from tests.cli.conftest import ServerProcess, http_get, until

from .conftest import free_port

pytestmark = pytest.mark.timeout(90)

LINES = 10


class Member:
    def __init__(self, port: int | str) -> None:
        if isinstance(port, str):  # a Unix socket's path
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.settimeout(20)
            self.sock.connect(port)
        else:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buf = b""
        greeting = self.readline()
        assert greeting.startswith("* you are "), greeting
        self.name = greeting[len("* you are "):]

    def readline(self) -> str:
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(f"connection closed; unparsed {self.buf!r}")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def serve(tmp_path):
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        p = ServerProcess(["fibernet.examples.chat:handle", *args], tmp_path)
        started.append(p)
        return p

    yield start
    for p in started:
        p.close()


@pytest.fixture
def members():
    made: list[Member] = []
    yield made
    for m in made:
        m.close()


def join(members: list[Member], port: int | str) -> Member:
    """A new member; returns once everyone in the room (it included) has seen it join."""
    m = Member(port)
    members.append(m)
    for everyone in members:
        assert everyone.readline() == f"* {m.name} joined"
    return m


def talk(members: list[Member]) -> None:
    """Every member says LINES lines; every member must get them all, each sender's in order."""
    for m in members:
        for k in range(LINES):
            m.sock.sendall(f"line {k}\n".encode())
    for m in members:
        got = [m.readline() for _ in range(LINES * len(members))]
        for sender in members:
            said = [line for line in got if line.startswith(f"{sender.name}: ")]
            assert said == [f"{sender.name}: line {k}" for k in range(LINES)], (m.name, sender.name)


def test_one_room_across_two_instances(redis, serve, members):
    ports = [free_port(), free_port()]
    for port in ports:
        serve("--port", str(port), "--bus", redis.url).wait_for("serving")
    for i in range(6):
        join(members, ports[i % 2])
    talk(members)


def test_members_without_an_address_get_names_unique_across_instances(redis, serve, members, tmp_path):
    """Clients of a Unix socket have no address to be named by: each instance counted
    local-1, local-2 ... on its own, so two instances sharing a room had two local-1s."""
    paths = [str(tmp_path / "chat-a.sock"), str(tmp_path / "chat-b.sock")]
    for path in paths:
        serve("--uds", path, "--bus", redis.url).wait_for("serving")
    for i in range(4):
        join(members, paths[i % 2])
    names = [m.name for m in members]
    assert len(set(names)) == 4, names
    assert all(name.startswith("local-") for name in names), names
    talk(members)


CHAT_CFG = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "haproxy" / "chat.cfg"


def members_of(admin: int) -> int:
    """How many chat members an instance holds (its writer fibers, from its admin endpoint)."""
    snaps = json.loads(http_get(admin, "/fibers")[2])
    return sum(f["name"].startswith("chat-writer") for s in snaps for f in s["fibers"])


def test_one_room_across_two_instances_behind_haproxy(redis, serve, members, requires):
    haproxy = requires("haproxy")
    ports, admins = [free_port(), free_port()], [free_port(), free_port()]
    for port, admin in zip(ports, admins, strict=True):
        serve("--port", str(port), "--admin-port", str(admin), "--bus", redis.url).wait_for("serving")
    with socket.create_server(("127.0.0.1", 0)) as front:
        front_port = front.getsockname()[1]
        env = {**os.environ, "CHAT_BIND": f"fd@{front.fileno()}",
               "CHAT1": f"127.0.0.1:{ports[0]}", "CHAT2": f"127.0.0.1:{ports[1]}"}
        proxy = subprocess.Popen([haproxy, "-f", str(CHAT_CFG), "-db"], env=env, pass_fds=(front.fileno(),),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(6):
            join(members, front_port)
        until(lambda: [members_of(a) for a in admins] == [3, 3], "three members on each instance")
        talk(members)
    finally:
        proxy.terminate()
        proxy.wait(10)


def test_one_room_across_worker_processes(redis, serve, members):
    port, admin = free_port(), free_port()
    server = serve("--port", str(port), "--workers", "4", "--admin-port", str(admin), "--bus", redis.url)
    server.wait_lines(r"worker \d+ ready", 4)

    def workers_with_members() -> set[int]:
        _, _, body = http_get(admin, "/fibers")
        snaps = json.loads(body)
        return {s["pid"] for s in snaps for f in s["fibers"] if f["name"].startswith("chat-writer")}

    for _ in range(20):  # the kernel picks the worker: join until both have members
        join(members, port)
        if len(members) >= 4:
            try:  # (a worker's snapshot reaches the supervisor once a second)
                until(lambda: len(workers_with_members()) >= 2, "members in two workers", 2.5)
                break
            except AssertionError:
                continue
    assert len(workers_with_members()) >= 2, "every member landed on one worker"
    talk(members)


def test_pubsub_topics_are_shared_by_two_instances(redis, tmp_path):
    ports = [free_port(), free_port()]
    app = "fibernet.examples.pubsub:handle"
    servers = [ServerProcess([app, "--port", str(p), "--bus", redis.url], tmp_path) for p in ports]
    try:
        for server in servers:
            server.wait_for("serving")
        subscriber, publisher = Member.__new__(Member), Member.__new__(Member)
        for m, port in ((subscriber, ports[0]), (publisher, ports[1])):
            m.sock, m.buf = socket.create_connection(("127.0.0.1", port), timeout=20), b""
        subscriber.sock.sendall(b"SUB news\n")
        assert subscriber.readline() == "OK SUB news"
        publisher.sock.sendall(b"PUB news hello there\n")
        assert publisher.readline() == "OK PUB news *"
        assert subscriber.readline() == "MSG news hello there"
        for m in (subscriber, publisher):
            m.close()
    finally:
        for server in servers:
            server.close()


def test_readyz_reports_a_lost_bus(redis, serve, members):
    port, admin = free_port(), free_port()
    serve("--port", str(port), "--admin-port", str(admin), "--bus", redis.url).wait_for("serving")
    join(members, port)  # the room connects the bus
    until(lambda: http_get(admin, "/readyz")[0] == 200, "ready")
    redis.stop()
    until(lambda: http_get(admin, "/readyz")[0] == 503, "503 while the bus is lost")
    assert "bus redis://127.0.0.1" in http_get(admin, "/readyz")[2].decode()
    redis.start()
    until(lambda: http_get(admin, "/readyz")[0] == 200, "ready again")

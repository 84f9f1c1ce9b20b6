"""deploy/systemd: the units pass `systemd-analyze verify` and its offline security review, and
their command lines really work, socket activation included: the test plays systemd's part
(it owns the listening socket, hands it over as descriptor 3 with LISTEN_FDS=1 and
LISTEN_PID=<the service's pid>, stops the service with its KillSignal) around the unit's own
ExecStart= and Environment=, on loopback instead of port 8000."""

from __future__ import annotations

import http.client
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from .conftest import DEPLOY, SERVING, fibernet_command, need_tool
from .deployfiles import parse_serve, unit_entries, unit_environment, unit_value

pytestmark = pytest.mark.timeout(60)

UNITS = DEPLOY / "systemd"
SOCKET = UNITS / "fibernet.socket"
SERVICE = UNITS / "fibernet.service"
TEMPLATE = UNITS / "fibernet@.service"
INSTALLED = "/opt/fibernet/bin/fibernet"  # where deploy/README.md installs it


@pytest.fixture
def analyze():
    return need_tool("systemd-analyze", "apt-get install -y systemd")


@pytest.fixture
def unit_root(analyze, tmp_path):
    """A root for `systemd-analyze --root`: this machine's own units (sysinit.target and the
    other defaults the units depend on), ours in /etc/systemd/system, and a stand-in
    executable at the ExecStart= path, which verify checks."""
    root = tmp_path / "root"
    system = root / "usr/lib/systemd/system"
    shutil.copytree("/usr/lib/systemd/system", system, symlinks=True)
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    for unit in (SOCKET, SERVICE, TEMPLATE):
        shutil.copy(unit, etc / unit.name)
    exe = root / INSTALLED.lstrip("/")
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    return root


def test_units_pass_systemd_analyze_verify(analyze, unit_root):
    # verify exits 0 even on an unknown key or a bad value (it only warns), so any output fails.
    result = subprocess.run(
        [analyze, "verify", f"--root={unit_root}", "--man=no",
         "fibernet.socket", "fibernet.service", "fibernet@8001.service"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout == "", result.stderr + result.stdout


@pytest.mark.parametrize("unit", ["fibernet.service", "fibernet@8001.service"])
def test_units_are_hardened(analyze, unit_root, unit):
    """`systemd-analyze security` (offline, on the unit file): exposure at most 2.0 of 10."""
    result = subprocess.run(
        [analyze, "security", "--offline=true", f"--root={unit_root}", "--threshold=20",
         "--no-pager", unit],
        capture_output=True, text=True, timeout=30, cwd=unit_root / "etc/systemd/system",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


def test_units_agree_with_each_other():
    sock = unit_entries(SOCKET)
    service = unit_entries(SERVICE)
    assert unit_value(sock, "Socket", "ListenStream") == "8000"
    assert unit_value(sock, "Socket", "Service") == SERVICE.name
    assert SOCKET.name in unit_value(service, "Unit", "Requires").split()
    assert SOCKET.name in unit_value(service, "Unit", "After").split()
    for unit in (SERVICE, TEMPLATE):
        entries = unit_entries(unit)
        assert unit_value(entries, "Service", "Type") == "notify"  # ready once it accepts
        assert unit_value(entries, "Service", "NotifyAccess") == "main"  # workers never speak
        assert unit_value(entries, "Service", "KillSignal") == "SIGTERM"
        grace = float(unit_environment(entries)["FIBERNET_GRACEFUL_TIMEOUT"])
        stop = unit_value(entries, "Service", "TimeoutStopSec")
        assert stop.isdigit() and int(stop) > grace + 1, f"TimeoutStopSec={stop}: no room after {grace}s"
        assert unit_value(entries, "Service", "DynamicUser") == "yes"
        assert unit_value(entries, "Service", "NoNewPrivileges") == "yes"
        assert unit_value(entries, "Service", "ProtectSystem") == "strict"


def unit_command(unit, instance: str | None = None) -> tuple[list[str], dict[str, str]]:
    """ExecStart= of ``unit`` (the installed path replaced by this machine's fibernet, %i by
    ``instance``) and its Environment=, after checking `fibernet serve` accepts both."""
    entries = unit_entries(unit)
    command = unit_value(entries, "Service", "ExecStart")
    if instance is not None:
        command = command.replace("%i", instance)
    argv = shlex.split(command)
    assert argv[0] == INSTALLED
    env = unit_environment(entries)
    parse_serve(["fibernet", *argv[1:]], env)
    return [*fibernet_command(), *argv[1:]], env


# The small part of systemd this test plays: put the socket at descriptor 3, say so in
# LISTEN_FDS/LISTEN_FDNAMES and LISTEN_PID (the pid of the process that will read them: exec
# keeps it), and exec the service's command.
ACTIVATE = """\
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.set_inheritable(3, True)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="fibernet.socket")
os.execvp(sys.argv[2], sys.argv[2:])
"""


def activate(procs, listener: socket.socket, argv: list[str], env: dict[str, str]):
    fd = listener.fileno()
    return procs([sys.executable, "-c", ACTIVATE, str(fd), *argv], env={**os.environ, **env},
                 pass_fds=(fd,), name="fibernet.service")


def roundtrip(conn: http.client.HTTPConnection) -> tuple[int, bytes]:
    conn.request("GET", "/hello")
    response = conn.getresponse()
    return response.status, response.read()


def test_socket_activation(procs, fake_systemd):
    """fibernet.socket + fibernet.service, emulated: the service says READY=1 (Type=notify)
    once it serves on the socket it is given, stops on SIGTERM with status 0, and the socket
    -- still listening in "systemd" -- queues a connection made while the service is down,
    which the next start answers."""
    argv, env = unit_command(SERVICE)
    env["NOTIFY_SOCKET"] = fake_systemd.address
    backlog = int(unit_value(unit_entries(SOCKET), "Socket", "Backlog"))
    service_unit = unit_entries(SERVICE)
    kill = getattr(signal, unit_value(service_unit, "Service", "KillSignal"))
    stop_timeout = float(unit_value(service_unit, "Service", "TimeoutStopSec"))
    with socket.create_server(("127.0.0.1", 0), backlog=backlog) as listener:
        port = listener.getsockname()[1]
        service = activate(procs, listener, argv, env)
        pid, fields = fake_systemd.receive()
        assert (pid, fields["READY"], fields["MAINPID"]) == (service.pid, "1", str(service.pid))
        assert f":{port} " in fields["STATUS"], "it should serve on the inherited socket, not bind its own"
        match = service.wait_for(SERVING)
        assert int(match.group(2)) == port

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            assert roundtrip(conn) == (200, b"Hello, World!")
            assert roundtrip(conn) == (200, b"Hello, World!")  # keep-alive
        finally:
            conn.close()

        assert service.stop(kill, timeout=stop_timeout) == 0
        assert fake_systemd.receive()[1]["STOPPING"] == "1"
        service.wait_for(r"server \S+ stopped")

        # Between two runs of the service the socket still listens: a client connects and
        # sends its request; it waits in the backlog...
        waiting = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            waiting.request("GET", "/hello")
            # ... until the service starts again and answers it.
            again = activate(procs, listener, argv, env)
            again.wait_for(SERVING)
            response = waiting.getresponse()
            assert (response.status, response.read()) == (200, b"Hello, World!")
        finally:
            waiting.close()
        assert again.stop(kill) == 0


def test_template_unit_serves_on_its_instance_port(procs, http_get):
    """fibernet@PORT.service runs `fibernet serve ... --host 127.0.0.1 --port PORT`."""
    with socket.socket() as probe:  # a port free a moment ago; the unit binds it itself
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv, env = unit_command(TEMPLATE, str(port))
    service = procs(argv, env={**os.environ, **env}, name="fibernet@")
    assert service.wait_for(SERVING).group(0).endswith(f"127.0.0.1:{port} with")
    assert http_get(port)[::2] == (200, b"Hello, World!")
    assert service.stop(signal.SIGTERM) == 0

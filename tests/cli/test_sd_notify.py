"""systemd's readiness protocol: ``fibernet serve`` under ``Type=notify``.

A test plays systemd: it binds an AF_UNIX datagram socket with SO_PASSCRED (so each message
carries the sender's pid, as systemd sees it) and hands its path to the server in
``$NOTIFY_SOCKET``.  Waits are on messages and log lines, each bounded by a socket timeout.
"""

from __future__ import annotations

import logging
import os
import signal
import socket

import pytest

from fibernet.server import systemd
from tests.conftest import FakeSystemd

from .conftest import WORKER_APP, ask_pid, children

pytestmark = pytest.mark.timeout(30)


# -- the protocol -----------------------------------------------------------------------------


def test_notify_sends_nothing_without_the_variable(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False


def test_notify_sends_the_fields_as_one_datagram(monkeypatch, fake_systemd):
    monkeypatch.setenv("NOTIFY_SOCKET", fake_systemd.address)
    assert systemd.ready("serving x") is True
    pid, fields = fake_systemd.receive()
    assert pid == os.getpid()
    assert fields == {"READY": "1", "MAINPID": str(os.getpid()), "STATUS": "serving x"}
    assert systemd.reloading() is True
    _, fields = fake_systemd.receive()
    assert fields["RELOADING"] == "1" and int(fields["MONOTONIC_USEC"]) > 0
    assert systemd.stopping() is True
    assert fake_systemd.receive()[1] == {"STOPPING": "1", "STATUS": "stopping"}


def test_notify_reaches_an_abstract_socket(monkeypatch, tmp_path):
    listener = FakeSystemd(f"fibernet-test-{os.getpid()}-{tmp_path.name}", abstract=True)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", listener.address)
        assert systemd.notify("READY=1") is True
        assert listener.receive()[1] == {"READY": "1"}
    finally:
        listener.close()


def test_a_notify_socket_nobody_listens_on_is_logged_not_raised(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody.sock"))
    with caplog.at_level(logging.WARNING, logger="fibernet.server"):
        assert systemd.notify("READY=1") is False
    assert "could not notify systemd" in caplog.text


def test_a_malformed_notify_socket_is_refused_with_a_warning(monkeypatch, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/path")
    with caplog.at_level(logging.WARNING, logger="fibernet.server"):
        assert systemd.notify("READY=1") is False
    assert "neither a path nor an abstract socket name" in caplog.text


def test_forget_takes_the_variable_out_of_the_environment(monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/x")
    systemd.forget()
    assert "NOTIFY_SOCKET" not in os.environ


# -- fibernet serve -------------------------------------------------------------------------


def test_one_process_says_ready_once_it_accepts_and_stopping_on_sigterm(
    serve_process, fake_systemd, free_port
):
    server = serve_process("--port", str(free_port), env={"NOTIFY_SOCKET": fake_systemd.address})
    pid, fields = fake_systemd.receive()
    assert pid == server.proc.pid
    assert fields["READY"] == "1" and fields["MAINPID"] == str(server.proc.pid)
    assert f"127.0.0.1:{free_port}" in fields["STATUS"]
    # Ready means accepting: the echo handler answers now.
    with socket.create_connection(("127.0.0.1", free_port), timeout=10) as conn:
        conn.sendall(b"ping")
        assert conn.recv(16) == b"ping"
    server.proc.send_signal(signal.SIGTERM)
    assert fake_systemd.receive() == (server.proc.pid, {"STOPPING": "1", "STATUS": "stopping"})
    assert server.proc.wait(15) == 0
    assert fake_systemd.nothing_more()


def test_the_supervisor_alone_speaks_ready_reloading_and_stopping(
    serve_process, fake_systemd, free_port, app_dir
):
    app = app_dir.module(WORKER_APP.format(version="one"))
    server = serve_process(
        f"{app}:handle", "--app-dir", str(app_dir.path), "--port", str(free_port), "--workers", "2",
        env={"NOTIFY_SOCKET": fake_systemd.address}, own_group=True,
    )
    supervisor = server.proc.pid
    pid, fields = fake_systemd.receive()
    assert (pid, fields["READY"], fields["MAINPID"]) == (supervisor, "1", str(supervisor))
    assert "2 worker(s) of generation 0" in fields["STATUS"]
    # Both workers had said they accept before the supervisor said READY.
    # (The supervisor logs each before it tells systemd; the log pipe may lag the datagram.)
    assert len(server.wait_lines(r"worker (\d+) ready \(generation 0\)", count=2)) >= 2
    old = children(supervisor)
    assert ask_pid(free_port)[0] in old

    server.proc.send_signal(signal.SIGHUP)
    pid, fields = fake_systemd.receive()
    assert pid == supervisor and fields["RELOADING"] == "1"
    pid, fields = fake_systemd.receive()
    assert pid == supervisor and fields["READY"] == "1" and "generation 1" in fields["STATUS"]
    new = set(m.group(1) for m in server.wait_lines(r"worker (\d+) ready \(generation 1\)", count=2))
    assert not new & {str(p) for p in old}

    server.proc.send_signal(signal.SIGTERM)
    assert fake_systemd.receive() == (supervisor, {"STOPPING": "1", "STATUS": "stopping"})
    assert server.proc.wait(20) == 0
    server.wait_eof()
    assert fake_systemd.nothing_more(), "a worker spoke to systemd"

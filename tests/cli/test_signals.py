"""Signals a production user sends: job-control signals to a single process, and a new
connection while a supervisor stops.  Real processes; readiness is a log line or an answer."""

from __future__ import annotations

import os
import signal
import socket

import pytest

from .conftest import WORKER_APP, children, connect, read_line

pytestmark = pytest.mark.timeout(40)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]


def _echo(port: int, line: bytes, timeout: float = 5.0) -> bytes:
    """WORKER_APP's handle: a greeting line, then the line echoed (a stopped process answers
    neither: the connection waits in the kernel's queue and the read times out)."""
    with connect(port) as c:
        c.settimeout(timeout)
        read_line(c)
        c.sendall(line)
        return read_line(c)


@pytest.mark.parametrize("sig", [signal.SIGTTIN, signal.SIGTTOU], ids=["TTIN", "TTOU"])
def test_ttin_and_ttou_do_not_stop_a_single_process_server(serve_process, app_dir, free_port, sig):
    """Without --workers there is no worker count to change: SIGTTIN/SIGTTOU (whose default
    action stops a process: state T) are ignored, and the log says so once."""
    app = app_dir.module(WORKER_APP.format(version="one"))
    server = serve_process(f"{app}:handle", "--app-dir", str(app_dir.path), "--port", str(free_port),
                           own_group=True)  # a group in this session: job control acts as in a shell
    server.wait_for(f"serving {app}:handle on 127.0.0.1:{free_port}")
    for _ in range(2):  # the first is logged, the second ignored by the kernel
        os.kill(server.proc.pid, sig)
        assert _echo(free_port, b"still here\n") == b"still here\n"
        assert _state(server.proc.pid) != "T"
    line = server.wait_for(f"{sig.name} ignored")
    assert "--workers" in line, line
    assert server.log.count(f"{sig.name} ignored") == 1, server.log
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0, server.log
    assert "Traceback" not in server.log


def test_after_sigterm_a_new_connection_is_refused_at_once_not_left_hanging(
    serve_process, app_dir, free_port
):
    """While the workers drain (one holds a slow request for up to the grace period), the
    supervisor must not keep the listening socket open: the kernel would complete a new
    connection's handshake and queue it where no one accepts, until a reset at the end."""
    app = app_dir.module(WORKER_APP.format(version="one"))
    server = serve_process(f"{app}:handle", "--app-dir", str(app_dir.path), "--port", str(free_port),
                           "--workers", "2", "--graceful-timeout", "30", own_group=True)
    pids = {int(m.group(1)) for m in server.wait_lines(r"worker (\d+) ready \(generation 0\)", count=2)}
    with connect(free_port) as slow:
        pid = int(read_line(slow).split()[0])
        slow.sendall(b"slow\n")
        assert read_line(slow) == b"started\n"
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for(f"[{pid}] fibernet.server: draining 1 connection(s)")
        other = (pids - {pid}).pop()
        server.wait_for(f"worker {other} stopped")
        assert children(server.proc.pid) == {pid}, "the draining worker is still there"
        # Now no process accepts on the port any more.
        with socket.socket() as late:
            late.settimeout(5)
            try:
                late.connect(("127.0.0.1", free_port))
            except ConnectionRefusedError:
                outcome = "refused"
            else:
                try:
                    outcome = "served" if read_line(late) else "closed"
                except TimeoutError:
                    outcome = "hanging"
        assert outcome in ("refused", "served"), f"a new connection after SIGTERM was {outcome}"
        slow.sendall(b"go\n")
        assert read_line(slow) == b"finished\n"
    assert server.proc.wait(15) == 0, server.log
    assert "Traceback" not in server.log

"""Where ``fibernet serve`` listens, as real processes: ``--fd`` (a listening socket it
inherits), ``--uds PATH``, and systemd's ``LISTEN_FDS`` with ``--workers`` (socket activation
of a single process is tests/deploy/test_systemd.py's); each in one process and with
``--workers 2``; and each bad binding exits 2 with its message, without a traceback."""

from __future__ import annotations

import signal
import socket
import sys

import pytest

from .conftest import WORKER_APP, pids_answering

pytestmark = pytest.mark.timeout(20)

READY = r"worker (\d+) ready \(generation 0\)"

# The part of systemd the test plays: the socket at descriptor 3, LISTEN_FDS=1 and LISTEN_PID
# (the pid of the process that reads them: exec keeps it), then exec the command.
ACTIVATE = """\
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.set_inheritable(3, True)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execvp(sys.argv[2], sys.argv[2:])
"""


@pytest.fixture
def app(app_dir):
    return app_dir.module(WORKER_APP.format(version="one"))


@pytest.fixture
def serve(serve_process, app, app_dir):
    """``serve(workers, *args, **options)``: the server and the pids that will answer, once
    it accepts."""

    def start(workers: int, *args: str, where: str, **options):
        proc = serve_process(f"{app}:handle", "--app-dir", str(app_dir.path), "--workers", str(workers),
                             *args, own_group=True, **options)
        if workers == 1:
            proc.wait_for(f"serving {app}:handle on {where} with")
            return proc, {proc.proc.pid}
        pids = {int(m.group(1)) for m in proc.wait_lines(READY, count=workers)}
        for line in proc.wait_lines(rf"serving {app}:handle on (\S+) with", count=workers):
            assert line.group(1) == where
        return proc, pids

    return start


def stop(proc) -> None:
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(15) == 0, proc.log
    assert "Traceback" not in proc.log, proc.log


@pytest.fixture
def listener():
    """A listening socket on loopback, owned by the test (as systemd or a parent would)."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock


@pytest.mark.parametrize("workers", [1, 2])
def test_fd_serves_on_the_inherited_socket(serve, listener, workers):
    port = listener.getsockname()[1]
    fd = listener.fileno()
    proc, pids = serve(workers, "--fd", str(fd), where=f"127.0.0.1:{port}", pass_fds=(fd,))
    seen = pids_answering(port, pids)
    assert set(seen) == pids
    stop(proc)


@pytest.mark.parametrize("workers", [1, 2])
def test_uds_serves_on_a_unix_socket_and_replaces_a_stale_one(serve, tmp_path, workers):
    path = tmp_path / "fibernet.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:  # a crashed server's leftover
        stale.bind(str(path))
    proc, pids = serve(workers, "--uds", str(path), where=str(path))
    seen = pids_answering(path, pids)
    assert set(seen) == pids
    stop(proc)


def test_listen_fds_with_workers(serve, listener):
    port = listener.getsockname()[1]
    fd = listener.fileno()
    proc, pids = serve(2, where=f"127.0.0.1:{port}", pass_fds=(fd,),
                       prefix=[sys.executable, "-c", ACTIVATE, str(fd)])
    pids_answering(port, pids)
    stop(proc)


def test_listen_fds_for_another_process_is_ignored(serve, listener, free_port):
    """LISTEN_PID names another process (systemd's variables leaked into a child): not ours."""
    proc, pids = serve(2, "--port", str(free_port), where=f"127.0.0.1:{free_port}",
                       env={"LISTEN_FDS": "1", "LISTEN_PID": "1"})
    pids_answering(free_port, pids)
    stop(proc)


# -- bad bindings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    "case",
    ["fd-not-open", "fd-not-a-socket", "fd-not-listening", "uds-and-fd", "uds-missing-directory",
     "uds-over-a-file", "host-not-local", "port-in-use"],
)
def test_a_bad_binding_exits_2_with_its_message(serve_process, app, app_dir, tmp_path, case, workers):
    pass_fds: tuple[int, ...] = ()
    a, b = socket.socketpair()
    with a, b, socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        (tmp_path / "a-file").write_text("not a socket\n")
        args, message = {
            "fd-not-open": (["--fd", "99"], "Invalid value for --fd: descriptor 99 is not open"),
            "fd-not-a-socket": (["--fd", "0"], "Invalid value for --fd: descriptor 0 is not a socket"),
            "fd-not-listening": (["--fd", str(a.fileno())],
                                 f"descriptor {a.fileno()} is not a listening stream socket"),
            "uds-and-fd": (["--uds", str(tmp_path / "s"), "--fd", "0"], "--uds and --fd exclude each other"),
            "uds-missing-directory": (["--uds", str(tmp_path / "no" / "s")],
                                      f"cannot listen on {tmp_path / 'no' / 's'}: No such file or directory"),
            "uds-over-a-file": (["--uds", str(tmp_path / "a-file")],
                                f"cannot listen on {tmp_path / 'a-file'}: Address already in use"),
            "host-not-local": (["--host", "192.0.2.1", "--port", "8000"],  # TEST-NET-1: not ours
                               "cannot listen on 192.0.2.1:8000: Cannot assign requested address"),
            "port-in-use": (["--port", str(port)], f"127.0.0.1:{port} is already in use"),
        }[case]
        if case == "fd-not-listening":
            pass_fds = (a.fileno(),)
        proc = serve_process(f"{app}:handle", "--app-dir", str(app_dir.path), "--workers", str(workers),
                             *args, own_group=True, pass_fds=pass_fds)
        assert proc.proc.wait(10) == 2, proc.log
        proc.wait_eof()
    assert message in proc.log, proc.log
    assert "Traceback" not in proc.log and "started worker" not in proc.log, proc.log
    if case == "uds-over-a-file":
        assert (tmp_path / "a-file").read_text() == "not a socket\n"

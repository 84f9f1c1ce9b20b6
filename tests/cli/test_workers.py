"""``fibernet serve --workers N`` as real processes: a supervisor and its pre-forked workers.

The app (``WORKER_APP``) answers with the pid of the process that served the connection, so
a test tells the workers apart.  The supervisor's log says what it does ("started worker",
"worker P ready (generation G)", "died (killed by SIGKILL)", "exited on its own", "retiring",
"stopped"); the tests wait for those lines and for answers, never for time to pass.  Every
server runs in a process group of its own, killed whole at teardown, so no worker outlives
its test.
"""

from __future__ import annotations

import collections
import http.client
import os
import signal
import socket
import threading
import time

import pytest

from .conftest import WORKER_APP, ask_pid, children, connect, http_get, pids_answering, read_line, until

pytestmark = pytest.mark.timeout(20)

READY = r"worker (\d+) ready \(generation {gen}\)"


@pytest.fixture
def app(app_dir):
    """The pid app, as module name; ``app.rewrite(version)`` changes the code on disk."""

    class App:
        name = app_dir.module(WORKER_APP.format(version="one"))
        path = app_dir.path

        def rewrite(self, version: str) -> None:
            (self.path / f"{self.name}.py").write_text(WORKER_APP.format(version=version))

    return App()


@pytest.fixture
def supervisor(serve_process, app, free_port):
    """``start(*extra, workers=2)``: the supervisor process and its workers' pids, once all are
    ready (each said so to the supervisor, which logs it)."""

    def start(*extra: str, workers: int = 2, attr: str = "handle"):
        server = serve_process(f"{app.name}:{attr}", "--app-dir", str(app.path), "--port", str(free_port),
                               "--workers", str(workers), *extra, own_group=True)
        ready = server.wait_lines(READY.format(gen=0), count=workers)
        pids = {int(m.group(1)) for m in ready}
        assert len(pids) == workers
        assert pids == children(server.proc.pid), "the ready workers are the supervisor's children"
        return server, pids

    start.port = free_port
    return start


def assert_clean(server) -> None:
    assert "Traceback" not in server.log, server.log


def test_two_workers_both_accept(supervisor):
    server, pids = supervisor()
    assert server.proc.pid not in pids
    seen = pids_answering(supervisor.port, pids)
    assert seen.keys() == pids, seen
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0, server.log
    server.wait_lines(r"all workers stopped")
    assert_clean(server)


def test_a_killed_worker_is_replaced_after_a_back_off(supervisor):
    server, pids = supervisor()
    victim, survivor = sorted(pids)
    os.kill(victim, signal.SIGKILL)
    server.wait_for(f"worker {victim} died (killed by SIGKILL)")
    assert "replacing it in 0.1s" in server.wait_for(f"worker {victim} died")
    started = server.wait_lines(r"started worker (\d+) \(generation 0\)", count=3)
    replacement = int(started[2].group(1))
    server.wait_for(f"worker {replacement} ready (generation 0)")
    assert replacement not in pids
    assert children(server.proc.pid) == {survivor, replacement}
    seen = pids_answering(supervisor.port, {survivor, replacement})
    assert victim not in seen

    # Killed again soon after: the back-off doubles.
    os.kill(replacement, signal.SIGKILL)
    assert "replacing it in 0.2s" in server.wait_for(f"worker {replacement} died (killed by SIGKILL)")
    started = server.wait_lines(r"started worker (\d+) \(generation 0\)", count=4)
    third = int(started[3].group(1))
    server.wait_for(f"worker {third} ready (generation 0)")
    pids_answering(supervisor.port, {survivor, third})

    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0, server.log
    assert_clean(server)


def test_a_worker_that_exits_is_replaced_and_its_exit_code_logged(supervisor, app):
    """A worker ending on its own (here: SIGTERM sent to it, not to the supervisor, so it drains
    and exits 0) was not asked to stop: it is replaced, and the log says how it ended."""
    server, pids = supervisor()
    victim = min(pids)
    os.kill(victim, signal.SIGTERM)
    line = server.wait_for(f"worker {victim} exited on its own (exit code 0)")
    assert "WARNING" in line and "died" not in server.log, "a clean exit is no crash"
    started = server.wait_lines(r"started worker (\d+) \(generation 0\)", count=3)
    replacement = int(started[2].group(1))
    server.wait_for(f"worker {replacement} ready")
    pids_answering(supervisor.port, (pids - {victim}) | {replacement})
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0, server.log


def test_sigttin_adds_a_worker_and_sigttou_removes_one(supervisor):
    server, pids = supervisor()
    server.proc.send_signal(signal.SIGTTIN)
    server.wait_for("supervisor: SIGTTIN, 3 worker(s)")
    started = server.wait_lines(r"started worker (\d+) \(generation 0\)", count=3)
    added = int(started[2].group(1))
    assert added not in pids
    server.wait_for(f"worker {added} ready (generation 0)")
    assert children(server.proc.pid) == pids | {added}
    pids_answering(supervisor.port, pids | {added})

    server.proc.send_signal(signal.SIGTTOU)
    server.wait_for("supervisor: SIGTTOU, 2 worker(s)")
    server.wait_for(f"worker {added} stopped (exit code 0)")  # the newest goes, drained
    assert children(server.proc.pid) == pids
    seen = pids_answering(supervisor.port, pids)
    assert added not in seen
    assert "died" not in server.log, "a worker removed on purpose is not replaced"
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0, server.log
    assert_clean(server)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]


def test_signals_sent_to_the_whole_group_act_once_through_the_supervisor(supervisor):
    """SIGTTIN, SIGHUP and SIGTTOU sent to every process (kill -SIG -PGID; pkill -f matches the
    workers' command line too) mean to the supervisor what they mean; the workers neither stop
    (SIGTTIN/SIGTTOU's default action) nor die."""
    server, pids = supervisor()
    group = os.getpgid(server.proc.pid)
    assert group == server.proc.pid != os.getpgrp()  # its own group, not this test's
    os.killpg(group, signal.SIGTTIN)
    server.wait_for("supervisor: SIGTTIN, 3 worker(s)")
    added = int(server.wait_lines(r"started worker (\d+) \(generation 0\)", count=3)[2].group(1))
    server.wait_for(f"worker {added} ready")
    assert all(_state(pid) != "T" for pid in pids), "a worker was stopped by SIGTTIN"
    pids_answering(supervisor.port, pids | {added})

    os.killpg(group, signal.SIGHUP)
    server.wait_for("supervisor: SIGHUP, starting generation 1")
    new = {int(m.group(1)) for m in server.wait_lines(READY.format(gen=1), count=3)}
    for pid in pids | {added}:
        server.wait_for(f"worker {pid} stopped (exit code 0)")
    pids_answering(supervisor.port, new)

    os.killpg(group, signal.SIGTTOU)
    server.wait_for("supervisor: SIGTTOU, 2 worker(s)")
    server.wait_lines(r"worker \d+ stopped \(exit code 0\)", count=4)
    assert len(children(server.proc.pid)) == 2
    assert "died" not in server.log and "ignored" not in server.log, server.log
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0, server.log
    assert_clean(server)


def test_sigterm_lets_a_slow_request_finish_and_exits_0(supervisor):
    server, pids = supervisor("--graceful-timeout", "15")
    with connect(supervisor.port) as c:
        pid = read_line(c).decode().split()[0]
        assert int(pid) in pids
        c.sendall(b"slow\n")
        assert read_line(c) == b"started\n"
        t0 = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for("supervisor: SIGTERM, stopping 2 worker(s)")
        server.wait_for(f"[{pid}] fibernet.server: SIGTERM: draining (up to 15.0s)")
        drain = server.wait_lines(rf"\[{pid}\] fibernet.server: draining 1 connection\(s\) for up to (\S+)s")
        assert float(drain[0].group(1)) > 10, "the worker was not given the grace period"
        # The other worker had nothing to finish: it is gone; this one waits for us.
        other = (pids - {int(pid)}).pop()
        server.wait_for(f"worker {other} stopped (exit code 0)")
        assert server.proc.poll() is None
        c.sendall(b"go\n")
        assert read_line(c) == b"finished\n"
        assert c.recv(16) == b""
    assert server.proc.wait(15) == 0, server.log
    assert time.monotonic() - t0 < 10, "it waited out the grace period"
    server.wait_for(f"worker {pid} stopped (exit code 0)")
    server.wait_for("all workers stopped")
    server.wait_eof()  # no worker is left holding the log
    assert "did not stop in time" not in server.log
    assert_clean(server)


def test_a_sigterm_to_the_whole_process_group_still_drains(supervisor):
    """A group SIGTERM (``kill -TERM -PGID``) reaches each worker twice, from the supervisor and
    directly: that must not count as "a second SIGTERM, stop at once".  The two copies are
    sent one after the other here, so the kernel cannot merge them."""
    server, pids = supervisor("--graceful-timeout", "15")
    with connect(supervisor.port) as c:
        pid = read_line(c).decode().split()[0]
        c.sendall(b"slow\n")
        assert read_line(c) == b"started\n"
        server.proc.send_signal(signal.SIGTERM)  # the supervisor's copy: it forwards it
        server.wait_for("supervisor: SIGTERM, stopping 2 worker(s)")
        server.wait_lines(rf"\[{pid}\] fibernet.server: draining 1 connection\(s\) for up to (\S+)s")
        os.kill(int(pid), signal.SIGTERM)  # the copy the group signal delivers directly
        other = (pids - {int(pid)}).pop()
        server.wait_for(f"worker {other} stopped (exit code 0)")
        c.sendall(b"go\n")
        assert read_line(c) == b"finished\n"  # the slow request was let finish
    assert server.proc.wait(15) == 0, server.log
    server.wait_for(f"worker {pid} stopped (exit code 0)")
    assert "again" not in server.log, server.log
    assert_clean(server)


def test_a_group_sigterm_stops_every_process_with_exit_code_0(supervisor):
    server, pids = supervisor("--graceful-timeout", "15")
    os.killpg(server.proc.pid, signal.SIGTERM)
    assert server.proc.wait(15) == 0, server.log
    for pid in pids:  # not "killed by SIGTERM": a late forwarded copy finds it ignoring SIGTERM
        server.wait_lines(rf"worker {pid} (stopped|exited on its own) \(exit code 0\)")
    assert_clean(server)


def test_sigint_stops_fast_and_exits_0(supervisor):
    server, pids = supervisor("--graceful-timeout", "60")
    with connect(supervisor.port) as c:
        assert read_line(c)  # served; the handler now waits for a line that never comes
        t0 = time.monotonic()
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(10) == 0, server.log
        assert c.recv(16) == b""
    assert time.monotonic() - t0 < 6, "SIGINT waited for the connection"
    server.wait_for("supervisor: SIGINT, stopping 2 worker(s)")
    for pid in pids:
        server.wait_for(f"[{pid}] fibernet.server: SIGINT: stopping")
        server.wait_for(f"worker {pid} stopped (exit code 0)")
    server.wait_eof()
    assert "KeyboardInterrupt" not in server.log
    assert_clean(server)


def test_workers_stop_when_the_supervisor_is_killed(supervisor):
    server, pids = supervisor()
    os.kill(server.proc.pid, signal.SIGKILL)
    assert server.proc.wait(10) == -signal.SIGKILL
    for pid in pids:
        server.wait_for(f"[{pid}] fibernet.server: supervisor {server.proc.pid} is gone; stopping")
    server.wait_eof()  # both workers ended: nothing holds the log's pipe any more


def test_a_module_that_does_not_import_fails_fast_in_the_probe(serve_process, app_dir, free_port):
    name = app_dir.module("raise RuntimeError('the database is down')\n")
    server = serve_process(f"{name}:handle", "--app-dir", str(app_dir.path), "--port", str(free_port),
                           "--workers", "2", own_group=True)
    assert server.proc.wait(10) == 2
    server.wait_eof()
    log = server.log
    assert f"importing '{name}' failed: RuntimeError: the database is down" in log, log
    assert log.count("Invalid value for APP") == 1, log
    assert "Traceback" not in log and "started worker" not in log, log


@pytest.mark.parametrize(
    "args, message",
    [
        (["nomodule_for_sure_xyz:handle"], "no module named 'nomodule_for_sure_xyz'"),
        (["{app}:nothing"], "module '{app}' has no attribute 'nothing'"),
        (["{app}"], "is not module:attribute"),
        (["{app}:handle", "--workers", "0"], "--workers"),
        (["{app}:handle", "--workers", "257"], "--workers"),
    ],
    ids=["no-module", "no-attribute", "not-module-colon-attr", "zero-workers", "too-many-workers"],
)
def test_bad_app_with_workers_exits_2_with_its_message(serve_process, app, free_port, args, message):
    args = [a.format(app=app.name) for a in args]
    server = serve_process(*args, "--app-dir", str(app.path), "--port", str(free_port),
                           *(["--workers", "2"] if "--workers" not in args else []), own_group=True)
    assert server.proc.wait(10) == 2
    server.wait_eof()
    assert message.format(app=app.name) in server.log, server.log
    assert "Traceback" not in server.log and "started worker" not in server.log, server.log


# -- SIGHUP: new workers with the code as it is on disk now, and no request fails ---------------


class Load:
    """Client threads sending GET / to the HTTP pid app, until stopped (or 15 s, or 50,000
    requests each): half over keep-alive connections of at most ``per_connection`` requests,
    half over a new connection each.

    Every request that fails is a failure, with no retry: a draining worker must not close a
    keep-alive connection under a request its client is sending (it answers it, with
    ``Connection: close``, after which http.client connects anew by itself).

    Each answer is recorded with the ``phase`` the test had set when its request was sent."""

    def __init__(self, port: int, clients: int = 4, per_connection: int = 50) -> None:
        self.port = port
        self.per_connection = per_connection
        self.answers: list[tuple[int, str, str]] = []  # (pid, version, phase)
        self.phase = "before"
        self.failures: list[str] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(i % 2 == 0,), name=f"load-{i}")
                         for i in range(clients)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)
        assert not any(t.is_alive() for t in self._threads), "a load thread did not stop"

    def _new(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def _once(self, conn: http.client.HTTPConnection) -> tuple[int, str]:
        conn.request("GET", "/")
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise AssertionError(f"status {response.status}: {body[:100]!r}")
        pid, version = body.decode().split()
        return int(pid), version

    def _client(self, keep_alive: bool) -> None:
        deadline = time.monotonic() + 15
        conn, used = self._new(), 0
        try:
            for _ in range(50_000):
                if self._stop.is_set() or time.monotonic() > deadline:
                    break
                if conn.sock is None:  # http.client reconnects by itself after "connection: close"
                    used = 0
                if not keep_alive or used >= self.per_connection:
                    conn.close()
                    conn, used = self._new(), 0
                phase = self.phase
                try:
                    answer = self._once(conn)
                except Exception as exc:  # noqa: BLE001 - every way a request fails is counted
                    with self._cond:
                        self.failures.append(f"{'keep-alive' if keep_alive else 'new'} #{used}: {exc!r}")
                        self._cond.notify_all()
                    conn.close()
                    conn, used = self._new(), 0
                    continue
                used += 1
                with self._cond:
                    self.answers.append((*answer, phase))
                    self._cond.notify_all()
        finally:
            conn.close()

    def count(self) -> int:
        with self._cond:
            return len(self.answers)

    def wait_for(self, total: int, timeout: float = 10.0) -> None:
        """Until ``total`` answers have come (waiting on the clients' notifications)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.answers) < total:
                left = deadline - time.monotonic()
                if left <= 0 or not any(t.is_alive() for t in self._threads):
                    raise AssertionError(f"load: {len(self.answers)} of {total} answers; "
                                         f"failures {self.failures[:5]}")
                self._cond.wait(left)


def test_sighup_under_load_loads_new_code_and_fails_no_request(supervisor, app):
    server, old = supervisor("--protocol", "http", "--graceful-timeout", "10", attr="app")
    with Load(supervisor.port) as load:
        load.wait_for(200)
        # New code on disk (a different length too, so no stale bytecode can stand in for it).
        app.rewrite("generation-two")
        load.phase = "switch"
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for("supervisor: SIGHUP, starting generation 1")
        new = {int(m.group(1)) for m in server.wait_lines(READY.format(gen=1), count=2)}
        assert not new & old
        for pid in old:
            server.wait_for(f"retiring worker {pid} of generation 0")
        for pid in old:
            server.wait_for(f"worker {pid} stopped (exit code 0)")
        # The old workers are gone: a request sent from here on can only be answered by new ones.
        load.phase = "after"
        load.wait_for(load.count() + 300)
        load.stop()
    assert load.failures == [], f"{len(load.failures)} failed: {load.failures[:10]}"
    by = collections.Counter((pid in new, version, phase) for pid, version, phase in load.answers)
    # Old workers answer with the old code, new ones with the code on disk at SIGHUP.
    assert {(is_new, version) for is_new, version, _ in by} <= {(False, "one"), (True, "generation-two")}, by
    assert {phase for is_new, _, phase in by if not is_new} <= {"before", "switch"}, by
    assert by[(True, "generation-two", "after")] >= 300, by
    during = by[(False, "one", "switch")] + by[(True, "generation-two", "switch")]
    assert during, "the load stood still while the workers were replaced"
    assert {pid for pid, _, _ in load.answers} <= old | new
    assert children(server.proc.pid) == new
    assert "died" not in server.log
    print(f"\nSIGHUP under load: {len(load.answers)} answers ({during} during the switch)")
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0, server.log
    assert_clean(server)


def test_a_connection_accepted_before_the_drain_gets_its_first_request_answered(
    serve_process, app, free_port
):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        admin = s.getsockname()[1]
    server = serve_process(f"{app.name}:app", "--protocol", "http", "--app-dir", str(app.path), "--port",
                           str(free_port), "--graceful-timeout", "10", "--admin-port", str(admin),
                           own_group=True)
    server.wait_for(f"serving {app.name}:app on 127.0.0.1:{free_port}")
    with connect(free_port) as c:
        # Accepted (the server counts it open), nothing sent yet; then the drain begins.
        until(lambda: b'fibernet_connections_open{worker="%d"} 1.0' % server.proc.pid
              in http_get(admin, "/metrics")[2], "the connection accepted")
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for("draining 1 connection(s)")
        try:
            c.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            answer = read_line(c)
        except OSError as exc:
            answer = repr(exc).encode()
    assert answer == b"HTTP/1.1 200 OK\r\n", answer
    assert server.proc.wait(15) == 0, server.log


def test_sighup_serves_new_code_over_tcp(supervisor, app):
    """The same over the TCP protocol, with nothing in flight: the new generation answers."""
    server, old = supervisor()
    assert {ask_pid(supervisor.port)[1] for _ in range(4)} == {"one"}
    app.rewrite("version-three")
    server.proc.send_signal(signal.SIGHUP)
    new = {int(m.group(1)) for m in server.wait_lines(READY.format(gen=1), count=2)}
    for pid in old:
        server.wait_for(f"worker {pid} stopped (exit code 0)")
    answers = [ask_pid(supervisor.port) for _ in range(20)]
    assert {pid for pid, _ in answers} <= new
    assert {v for _, v in answers} == {"version-three"}
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0, server.log


def test_sighup_with_code_that_does_not_load_keeps_the_old_workers(supervisor, app):
    """New code that fails to import: the new workers die (and are retried after a back-off),
    the old ones are not retired and go on serving; SIGTERM still stops everything."""
    server, old = supervisor("--graceful-timeout", "5")
    (app.path / f"{app.name}.py").write_text("raise RuntimeError('half-deployed')\n")
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for("supervisor: SIGHUP, starting generation 1")
    died = server.wait_lines(r"worker (\d+) died \(exit code 1\)", count=2)
    assert not {int(m.group(1)) for m in died} & old
    for m in died:
        server.wait_for(f"worker {m.group(1)} cannot load {app.name}:handle: importing '{app.name}' failed: "
                        "RuntimeError: half-deployed")
    answers = [ask_pid(supervisor.port) for _ in range(10)]
    assert {pid for pid, _ in answers} <= old and {v for _, v in answers} == {"one"}
    assert "retiring" not in server.log
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0, server.log
    assert_clean(server)

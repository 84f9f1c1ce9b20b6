"""``--block-warning`` and ``--worker-timeout`` against real processes: a handler that blocks
its scheduler in ``time.sleep`` is logged, shown by ``fibernet inspect`` and /healthz (503)
while it lasts (the admin endpoint does not run on the blocked scheduler), and counted in
/metrics; with ``--workers 2 --worker-timeout``, the stuck worker is killed and replaced while
the other keeps answering."""

from __future__ import annotations

import http.client
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from .conftest import http_get, until
from .test_admin import metrics

pytestmark = pytest.mark.timeout(40)

APP = '''
import os
import time

from fibernet.http import Response


def stuck_handler(seconds):
    time.sleep(seconds)  # blocks the scheduler's thread


def app(request):
    if request.path.startswith("/block/"):
        stuck_handler(float(request.path.rsplit("/", 1)[1]))
    return Response(200, str(os.getpid()).encode())
'''


@pytest.fixture
def admin_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        return listener.getsockname()[1]


def _send_in_background(port: int, path: str) -> threading.Thread:
    """A request whose answer (or reset) nobody waits for until teardown."""

    def ask() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("GET", path)
            conn.getresponse().read()
        except OSError:
            pass  # the worker it went to was killed
        finally:
            conn.close()

    t = threading.Thread(target=ask, daemon=True)
    t.start()
    return t


def _inspect(port: int) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "fibernet_cli.main", "inspect", "--admin", f"127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=15,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_blocked_scheduler_is_logged_inspected_unhealthy_and_counted(
    serve_process, app_dir, free_port, admin_port
):
    app = app_dir.module(APP)
    proc = serve_process(f"{app}:app", "--protocol", "http", "--app-dir", str(app_dir.path),
                         "--port", str(free_port), "--admin-port", str(admin_port))
    proc.wait_for(f"serving {app}:app on 127.0.0.1:{free_port}")
    assert http_get(admin_port, "/healthz")[::2] == (200, b"ok\n")
    request = _send_in_background(free_port, "/block/3")

    line = proc.wait_for("by fiber", timeout=10)
    assert re.search(r"scheduler \S+ blocked for 0\.\d+s by fiber", line)
    proc.wait_for("in stuck_handler")
    shown = until(lambda: (out := _inspect(admin_port)) and "BLOCKED" in out and out, "inspect to show it")
    assert "stuck_handler" in shown
    status, _, body = http_get(admin_port, "/healthz")
    assert status == 503 and b"blocked for" in body
    assert http_get(admin_port, "/readyz")[0] == 503
    assert list(metrics(admin_port)["fibernet_scheduler_blocks_total"].values()) == [1]
    assert list(metrics(admin_port)["fibernet_schedulers_blocked"].values()) == [1]

    request.join(30)
    proc.wait_for("was blocked for")
    until(lambda: http_get(admin_port, "/healthz")[0] == 200, "healthz back to 200")
    assert list(metrics(admin_port)["fibernet_schedulers_blocked"].values()) == [0]


def test_a_stuck_worker_is_killed_and_replaced_while_the_other_answers(
    serve_process, app_dir, free_port, admin_port
):
    timeout = 1.0
    app = app_dir.module(APP)
    proc = serve_process(f"{app}:app", "--protocol", "http", "--app-dir", str(app_dir.path),
                         "--port", str(free_port), "--admin-port", str(admin_port), "--workers", "2",
                         "--worker-timeout", str(timeout), own_group=True)
    pids = {int(m.group(1)) for m in proc.wait_lines(r"worker (\d+) ready", count=2)}
    sent = time.monotonic()
    _send_in_background(free_port, "/block/30")

    proc.wait_for("blocked for", timeout=10)
    # While it is stuck, /healthz says so and the other worker answers every request.
    until(lambda: http_get(admin_port, "/healthz")[0] == 503, "healthz 503")
    answers = {http_get(free_port, "/", timeout=5)[2] for _ in range(5)}
    assert answers and all(int(a) in pids for a in answers)

    proc.wait_for("worker timeout", timeout=10)
    killed_at = time.monotonic()
    assert killed_at - sent < timeout + 2.0
    stuck = int(re.search(r"worker (\d+) died", proc.wait_for("died", timeout=10)).group(1))
    assert stuck in pids
    new = {int(m.group(1)) for m in proc.wait_lines(r"worker (\d+) ready", count=3)} - pids
    assert len(new) == 1
    until(lambda: http_get(admin_port, "/healthz")[0] == 200, "healthz back to 200")
    assert {int(http_get(free_port, "/")[2]) for _ in range(4)} <= (pids | new) - {stuck}

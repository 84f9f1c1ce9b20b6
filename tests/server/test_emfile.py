"""Running out of descriptors (EMFILE) on accept: the server backs off instead of spinning,
and serves again once descriptors are free.  In a subprocess with a low RLIMIT_NOFILE."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from ._support import client, roundtrip

LIMIT = 48  # the child's RLIMIT_NOFILE: a few for Python and the runtime, the rest for clients
EXTRA = 40  # connections beyond what the child can accept

CHILD = textwrap.dedent(
    """
    import logging, resource, sys
    import fibernet as fn
    from fibernet.examples import echo

    class Retries(logging.Handler):
        # Counts the server's EMFILE warnings and passes only the first one on to stderr, so
        # that a spinning acceptor spins (rather than waits on a full stderr pipe).
        count = 0

        def emit(self, record):
            if "Too many open files" in record.getMessage():
                Retries.count += 1
                if Retries.count == 1:
                    print("EMFILE:", record.getMessage(), file=sys.stderr, flush=True)
            else:
                print(record.levelname, record.getMessage(), file=sys.stderr, flush=True)

    logging.getLogger("fibernet").addHandler(Retries(logging.WARNING))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), hard))
    server = fn.Server(echo.handle, threads=1).start()
    print(server.address[1], flush=True)
    for command in sys.stdin:  # the parent asks for the count, then says when to stop
        if command == "retries\\n":
            print(Retries.count, flush=True)
        else:
            break
    server.stop(0)
    sys.exit(0 if server.wait(10) else 1)
    """
)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


@pytest.mark.timeout(40)
def test_emfile_on_accept_backs_off_without_spinning_and_recovers(tmp_path):
    script = tmp_path / "emfile_child.py"
    script.write_text(CHILD)
    lines: queue.Queue[str] = queue.Queue()
    emfile = threading.Event()
    proc = subprocess.Popen(
        [sys.executable, str(script), str(LIMIT)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )

    def read_stderr():
        for line in proc.stderr:
            lines.put(line)
            if "Too many open files" in line:
                emfile.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    conns = []
    try:
        port = int(proc.stdout.readline())
        address = ("127.0.0.1", port)
        with client(address) as c:
            assert roundtrip(c, b"before") == b"before"

        # More connections than the child has descriptors for: the kernel completes them
        # all (the backlog), the server accepts until EMFILE.
        conns = [client(address) for _ in range(LIMIT + EXTRA)]
        assert emfile.wait(15), "the server never ran out of descriptors"

        # The exhaustion window: connections wait in the backlog and the acceptor retries.
        # A spinning acceptor would burn a whole core here; one that backs off, almost none.
        cpu0, wall0 = _cpu_seconds(proc.pid), time.monotonic()
        time.sleep(1.5)  # the measuring window itself, not a synchronisation
        cpu1, wall1 = _cpu_seconds(proc.pid), time.monotonic()
        share = (cpu1 - cpu0) / (wall1 - wall0)
        proc.stdin.write("retries\n")
        proc.stdin.flush()
        retries = int(proc.stdout.readline())
        # Back-off from 10 ms doubling to 1 s: a handful of retries so far, not thousands.
        assert retries < 30, f"{retries} accept retries: no back-off"
        assert share < 0.3, f"the server used {share:.0%} of a CPU while out of descriptors"

        # Free the descriptors: the server accepts again and serves new clients.
        for c in conns:
            c.close()
        conns = []
        with client(address, timeout=15) as c:
            assert roundtrip(c, b"after the storm") == b"after the storm"

        proc.stdin.write("stop\n")
        proc.stdin.flush()
        assert proc.wait(15) == 0
    finally:
        for c in conns:
            c.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        reader.join(10)
        proc.stdin.close()
        proc.stdout.close()
        proc.stderr.close()
    assert not any("Traceback" in line for line in lines.queue), "".join(lines.queue)
